"""The submissions folder, read as hostile input: only regular files, capped in size, safe student ids.

:func:`find_submissions` lists ``<student>.ipynb`` files and ``<student>/**/*.ipynb`` (the suffix in any
case) without following symbolic links; everything it does not grade is returned as a :class:`Skipped`
entry with the reason (symbolic links, FIFOs, devices, sockets, dot-files, files over the size cap,
other files). :func:`read_submission` opens a file with ``O_NOFOLLOW | O_NONBLOCK`` and checks with
``fstat`` that it is still a regular file under the cap (a FIFO never blocks the grader, a file swapped
for a symlink after the listing is refused). :func:`student_id` turns a file or folder name into an id
of safe characters, with a short hash of the original name when anything had to be changed, so that
``Zoë`` and ``Zoé`` stay two students.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_SUBMISSION_BYTES", "Submission", "Skipped", "student_id", "safe_name", "find_submissions",
           "read_submission"]

MAX_SUBMISSION_BYTES = 50 * 1024 * 1024  # a course notebook with outputs is a few MB


@dataclass
class Submission:
    student: str
    path: Path


@dataclass
class Skipped:
    student: str
    name: str  # the entry's path relative to the submissions folder (printable)
    reason: str
    notebook_like: bool  # named *.ipynb: gets a gradebook row


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "student"


def student_id(name: str) -> str:
    """A student id of ``[A-Za-z0-9._-]`` from a file or folder name; names that had to be changed get a
    6-character hash of the original, so different names never give the same id."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    safe = safe_name(ascii_name)[:60].lstrip("-")  # no leading "-" (spreadsheets, command lines)
    if safe != name or not safe:
        safe = f"{safe or 'student'}-{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()[:6]}"
    return safe


def printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


def _kind(st: os.stat_result) -> str:
    for test, word in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(st.st_mode):
            return word
    return "not a regular file"


def _check_entry(path: Path, rel: str, student: str) -> Submission | Skipped | None:
    """A regular ``*.ipynb`` file, the reason it is skipped, or None (a folder)."""
    st = os.lstat(path)
    notebook = path.name.lower().endswith(".ipynb")
    if path.name.startswith("."):
        return Skipped(student, rel, "a hidden (dot) file or folder: rename it if it is a submission", notebook)
    if stat.S_ISDIR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        return Skipped(student, rel, f"{_kind(st)}, not a regular file: not graded", notebook)
    if not notebook:
        return Skipped(student, rel, "not a .ipynb notebook", False)
    if st.st_size > MAX_SUBMISSION_BYTES:
        return Skipped(student, rel, f"{st.st_size} bytes, over the cap of {MAX_SUBMISSION_BYTES} bytes: "
                       "clear the outputs and submit again", True)
    return Submission(student, path)


def find_submissions(folder, exclude: Iterable[Path] = ()) -> tuple[list[Submission], list[Skipped]]:
    """``(submissions, skipped)`` of ``folder`` (see the module doc); symbolic links are never followed."""
    folder = Path(folder)
    excluded = {Path(p).resolve() for p in exclude}
    subs, skipped = [], []
    for entry in sorted(folder.iterdir()):
        if entry.resolve() in excluded and not entry.is_symlink():
            continue
        stem = entry.name[:-6] if entry.name.lower().endswith(".ipynb") else entry.name
        found = _check_entry(entry, printable(entry.name), student_id(stem))
        if found is not None:
            (subs if isinstance(found, Submission) else skipped).append(found)
            continue
        student = student_id(entry.name)
        for root, dirs, files in os.walk(entry, followlinks=False):
            for name in sorted(dirs + files):
                path = Path(root) / name
                rel = printable(path.relative_to(folder).as_posix())
                found = _check_entry(path, rel, student)
                if found is not None:
                    (subs if isinstance(found, Submission) else skipped).append(found)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (Path(root) / d).is_symlink())
    return subs, skipped


def read_submission(path: Path, limit: int = MAX_SUBMISSION_BYTES) -> bytes:
    """The bytes of a regular file, opened without following links and without blocking (ValueError if not)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ValueError(f"the submission could not be opened ({exc.strerror}): not a regular file?") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"the submission is {_kind(st)}, not a regular file: not graded")
        if st.st_size > limit:
            raise ValueError(f"the submission has {st.st_size} bytes, over the cap of {limit}")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ValueError(f"the submission grew over the cap of {limit} bytes while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)
