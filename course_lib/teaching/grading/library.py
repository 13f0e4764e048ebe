"""The installed ``course_lib``: snapshot of its files, verify, restore, pristine copy."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

__all__ = ["LIB_DIR", "library_files", "file_hash", "LibraryGuard"]

#: The ``course_lib`` package folder of this grader (``course_lib/teaching/grading/library.py`` -> ``course_lib``):
#: the installed library, protected during grading.
LIB_DIR = Path(__file__).resolve().parents[2]


def library_files(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LibraryGuard:
    """Snapshot of a package's files; :meth:`verify` reports changes and restores the snapshot."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.files = library_files(self.root)
        self.hashes = {k: file_hash(v) for k, v in self.files.items()}
        self._lock = threading.Lock()

    def changed(self) -> list[str]:
        now = {p.relative_to(self.root).as_posix(): p for p in self.root.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
        out = [rel for rel in sorted(set(now) | set(self.hashes))
               if rel not in now or rel not in self.hashes or file_hash(now[rel].read_bytes()) != self.hashes[rel]]
        return out

    def verify(self) -> list[str]:
        """Files changed since the snapshot (restored to the snapshot before returning)."""
        with self._lock:
            changed = self.changed()
            for rel in changed:
                path = self.root / rel
                if rel in self.files:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(self.files[rel])
                elif path.is_file():
                    path.unlink()
            return changed

    def copy_to(self, dest: Path) -> dict[str, str]:
        """Write the snapshot into ``dest`` (the pristine copy); return its hashes."""
        for rel, data in self.files.items():
            path = Path(dest) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return dict(self.hashes)
