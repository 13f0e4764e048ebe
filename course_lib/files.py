"""Files of the course: where they live, how they are fetched, how data files are written.

- :func:`repository_url` reads the one place that names the repository (``[project.urls] Repository``
  in ``pyproject.toml``, which becomes the installed package's metadata).
- :func:`repo_file` finds a file of the repository (a shipped checkpoint, a benchmark's results): in
  the checkout when ``course_lib`` is used from one, else in the user cache, downloading it from the
  repository when it is missing (Colab installs ``course_lib`` without the rest of the repository).
- :func:`write_npz` writes a compressed ``.npz`` whose bytes depend only on the arrays, so data sets
  regenerate bit-identically and their SHA-256 can be checked.
- :func:`torch_save_atomic` is ``torch.save`` that never leaves a half-written file (checkpoints, training
  states of resumable runs).
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["REPO_ROOT", "repository_url", "raw_url", "cache_dir", "download", "repo_file", "write_npz",
           "torch_save_atomic"]

#: Environment variable that replaces the repository URL (testing hook of the Colab simulation only).
REPOSITORY_ENV = "COURSE_LIB_REPOSITORY"

#: The repository checkout this ``course_lib`` was imported from (it may not exist for a pip install).
REPO_ROOT = Path(__file__).resolve().parents[1]

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamp of every zip entry: same bytes on every run
_ZIP_LEVEL = 9


def _pyproject_repository(pyproject: Path) -> str | None:
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = None
    if tomllib is not None:
        data = tomllib.loads(text)
        if data.get("project", {}).get("name") != "course_lib":
            return None
        return data["project"].get("urls", {}).get("Repository")
    m = re.search(r'^\s*Repository\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    return m.group(1) if m and re.search(r'^name\s*=\s*"course_lib"', text, flags=re.MULTILINE) else None


def repository_url() -> str:
    """The repository URL, e.g. ``https://github.com/OWNER/REPO`` (no trailing slash or ``.git``).

    Read from ``pyproject.toml`` (``[project.urls] Repository``) in a checkout; when course_lib is
    installed without the repository (Colab), from the installed package metadata. The environment
    variable ``COURSE_LIB_REPOSITORY`` replaces it: a hook for ``tests/test_colab.py`` only, which serves
    the repository from a loopback HTTP server (``/archive/refs/heads/main.zip`` and ``/raw/main/<path>``).
    """
    url = os.environ.get(REPOSITORY_ENV)  # a testing hook: the course's Colab test serves a local copy
    pyproject = REPO_ROOT / "pyproject.toml"
    if not url and pyproject.is_file():
        url = _pyproject_repository(pyproject)
    if not url:
        try:
            for entry in importlib.metadata.metadata("course_lib").get_all("Project-URL") or []:
                label, _, value = entry.partition(",")
                if label.strip().lower() == "repository":
                    url = value.strip()
        except importlib.metadata.PackageNotFoundError:
            pass
    if not url:
        raise RuntimeError("no repository URL: set [project.urls] Repository in pyproject.toml")
    url = url.strip().rstrip("/")
    return url[: -len(".git")] if url.endswith(".git") else url


def raw_url(relpath: str, ref: str = "main") -> str:
    """The download URL of a repository file (GitHub raw content; ``<url>/raw/<ref>/<path>`` for the
    loopback stand-in of the Colab test)."""
    url = repository_url()
    prefix = "https://github.com/"
    if os.environ.get(REPOSITORY_ENV) and re.match(r"http://(127\.0\.0\.1|localhost)[:/]", url):
        return f"{url}/raw/{ref}/{relpath}"
    if not url.startswith(prefix):
        raise RuntimeError(f"cannot download from {url}: not a GitHub repository")
    owner_repo = url[len(prefix):].removesuffix(".git")
    return f"https://raw.githubusercontent.com/{owner_repo}/{ref}/{relpath}"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/course_lib`` (default ``~/.cache/course_lib``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "course_lib"


def download(relpath: str, dest: Path, what_to_do: str = "") -> Path:
    """Download a repository file to ``dest`` (atomically). Raises RuntimeError with advice when offline."""
    url = raw_url(relpath)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
    except (urllib.error.URLError, OSError) as err:
        tmp.unlink(missing_ok=True)
        advice = what_to_do or "clone the repository and install course_lib from it (pip install -e .)"
        raise RuntimeError(f"could not download {url} ({err}); if you are offline, {advice}") from err
    tmp.replace(dest)
    return dest


def repo_file(relpath: str, sha256: str | None = None) -> Path:
    """Path of a file of the repository, e.g. ``"benchmarks/results/energy_mpnn.pt"``.

    From the checkout if present, else from the cache (downloaded when missing). With ``sha256``
    the file is verified (:func:`course_lib.data.verify_checksum`).
    """
    local = REPO_ROOT / relpath
    path = local if local.exists() else cache_dir() / "repo" / relpath
    if not path.exists():
        download(relpath, path)
    if sha256 is not None:
        from course_lib.data import verify_checksum

        verify_checksum(path, expected=sha256)
    return path


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` (in the given order) as a compressed ``.npz`` that is byte-for-byte reproducible.

    ``np.savez_compressed`` stamps every zip entry with the current time; here each entry gets a fixed
    date, fixed permissions and host system, a fixed compression level, and the file is written
    atomically. ``np.load`` reads the result as usual.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=_ZIP_LEVEL) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # "Unix" everywhere (the default would differ on Windows)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=_ZIP_LEVEL)
    os.replace(tmp, path)


def torch_save_atomic(obj, path: str | Path) -> Path:
    """``torch.save(obj, path)`` written to a temporary file in the same folder, then renamed over ``path``.

    A process killed while writing leaves the previous file (or none), never a truncated one that a later
    ``torch.load`` would fail on; the rename is atomic on one file system (``os.replace``).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
