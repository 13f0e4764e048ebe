"""Colab, end to end, simulated: a clean virtual environment with a torch already installed (as Colab has),
the stamped setup cell run as on Colab, then every notebook in fast mode.

- the environment: a fresh venv, torch installed first (in CI the local CPU wheel, ``-c .ci/constraints.txt``)
  with ipykernel, nbclient and nbformat (Colab's kernel); its torch version is recorded;
- the repository: served from a loopback HTTP server as GitHub serves it (``/archive/refs/heads/main.zip``
  holds the tracked files of this checkout; ``/raw/main/<path>`` serves single files, as
  ``course_lib.files.repo_file`` downloads them); the setup cell and ``repo_file`` are pointed at it by
  ``COURSE_LIB_REPOSITORY``, a variable meant for this test only;
- a stand-in ``google.colab`` module, imported before the setup cell (see ``tests/colab_sim.py``);
- each notebook runs in its own empty folder outside the checkout, with an empty cache, so a file that
  the installed package does not have and cannot download fails the notebook;
- the first notebook's setup cell installs course_lib; the others find it installed and say so (on Colab
  each notebook gets a fresh runtime and installs; a second run of the cell in one runtime does not).

It fails when a notebook fails (a missing import, a missing file), when the setup cell changed the
installed torch, or when the setup cell did not say what it installed and how long it took.

Slow (a pip install from the package index, then all notebooks: about 5 minutes): it runs where
``COURSE_COLAB_TEST=1`` (CI sets it) and is skipped otherwise.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import venv
import zipfile
from pathlib import Path

import pytest

from course_lib.files import REPO_ROOT, REPOSITORY_ENV
from course_lib.teaching.assign import source_files

pytestmark = pytest.mark.skipif(os.environ.get("COURSE_COLAB_TEST") != "1",
                                reason="slow (about 5 min): set COURSE_COLAB_TEST=1 to simulate Colab (CI does)")

ARCHIVE = "/archive/refs/heads/main.zip"
NOTEBOOK_TIMEOUT = 900


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (REPO_ROOT / p).is_file()]


def _archive(dest: Path) -> Path:
    """A zip of the tracked files as they are in the work tree, in GitHub's layout (``REPO-main/...``)."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for rel in _tracked_files():
            zf.write(REPO_ROOT / rel, f"course-main/{rel}")
    return dest


class _Repository(http.server.SimpleHTTPRequestHandler):
    """GitHub's two URLs that Colab meets: the archive of ``main`` and raw files (only tracked ones)."""

    archive: Path
    tracked: frozenset
    served: list

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        path = self.path.split("?", 1)[0]
        if path == ARCHIVE:
            return self._send(self.archive)
        rel = path.removeprefix("/raw/main/")
        if path.startswith("/raw/main/") and rel in self.tracked:
            self.served.append(rel)
            return self._send(REPO_ROOT / rel)
        self.send_error(404, f"not in the repository: {path}")

    def _send(self, file: Path):
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    _Repository.archive = _archive(tmp_path_factory.mktemp("repo") / "main.zip")
    _Repository.tracked = frozenset(_tracked_files())
    _Repository.served = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Repository)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Repository.served
    httpd.shutdown()


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True)


def _torch_version(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def colab_python(tmp_path_factory):
    """A clean venv with torch and the Jupyter kernel, as a Colab runtime has them (course_lib absent)."""
    env_dir = tmp_path_factory.mktemp("colab-venv")
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    constraints = REPO_ROOT / ".ci" / "constraints.txt"
    _pip(python, "-c", str(constraints), "torch")
    _pip(python, "ipykernel", "nbclient", "nbformat")
    yield python
    shutil.rmtree(env_dir, ignore_errors=True)  # about 1 GB


def test_colab_setup_cell_then_every_notebook(colab_python, repository, tmp_path):
    url, served = repository
    torch_before = _torch_version(colab_python)
    stand_in = tmp_path / "colab-stand-in"
    (stand_in / "google" / "colab").mkdir(parents=True)
    (stand_in / "google" / "colab" / "__init__.py").write_text('"""Stand-in of Colab\'s module (a test)."""\n')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "COURSE_FAST")}
    env.update({REPOSITORY_ENV: url, "COURSE_FAST": "1", "PYTHONPATH": str(stand_in),
                "XDG_CACHE_HOME": str(tmp_path / "cache"), "MPLBACKEND": "agg"})
    notebooks = [str(s.with_suffix(".ipynb")) for s in source_files()]
    driver = Path(__file__).with_name("colab_sim.py")
    proc = subprocess.run([str(colab_python), str(driver), str(tmp_path / "run"), str(NOTEBOOK_TIMEOUT), *notebooks],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and len(results) == len(notebooks), proc.stderr[-3000:]
    for r in results:
        print(f"{r['notebook']}: {'ok' if r['ok'] else 'FAILED'} in {r['seconds']} s")
    failed = {r["notebook"]: r["error"] for r in results if not r["ok"]}
    assert not failed, failed
    first = results[0]["setup"]
    assert "installing course_lib[" in first and "installed in" in first, first  # says what and how long
    for r in results:  # the runtime is shared here, as when a student runs the cell again: no second install
        assert "No GPU on this runtime" in r["setup"] and "Change runtime type" in r["setup"], r
        if r is not results[0]:
            assert "installing" not in r["setup"] and "is already installed on this runtime" in r["setup"], r
    assert _torch_version(colab_python) == torch_before, "the setup cell changed the installed torch"
    code = "import course_lib, tblite, ipywidgets; print(course_lib.__file__)"
    installed = subprocess.run([str(colab_python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                               check=True).stdout
    assert str(REPO_ROOT) not in installed, installed  # the notebooks used the pip-installed copy
