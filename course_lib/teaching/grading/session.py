"""One grading session: its limits, the pristine copy of course_lib, the sandbox of its processes.

A :class:`Session` is shared by the submissions of one grading run: the course, the hidden-tests
folder, the :class:`Limits`, the pristine copy of the installed ``course_lib`` (the checking code)
and the kernel spec of the notebook runs (in a network namespace when :func:`namespace_available`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from course_lib.teaching.grading.library import LIB_DIR, LibraryGuard
from course_lib.teaching.grading.sandbox import BoxLimits, Cgroup, bwrap_command, sandbox_problem

__all__ = ["Limits", "PROXY", "sandbox_env", "namespace_available", "Session"]


@dataclass(frozen=True)
class Limits:
    """Time and size limits of one grading session (seconds, characters)."""

    cell_timeout: float = 300.0
    notebook_timeout: float = 1800.0
    exercise_timeout: float = 60.0
    output_limit: int = 20_000  # characters of output kept per cell / per exercise process
    fast: bool = True
    box: BoxLimits = BoxLimits()  # memory, processes, file size, CPU time of each sandbox


# --------------------------------------------------------------------------------------------
# the environment of the kernel and of the exercise processes
# --------------------------------------------------------------------------------------------


PROXY = "http://127.0.0.1:9"


def sandbox_env(fast: bool, threads: str | None = None) -> dict[str, str]:
    """Environment of the kernel and the exercise processes: fast mode, no proxy escape, no secrets."""
    secret = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|CREDENTIAL|^AWS_|^GH_|^GITHUB_", re.IGNORECASE)
    env = {k: v for k, v in os.environ.items() if not secret.search(k)}
    env.update({
        "COURSE_FAST": "1" if fast else "0",
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "http_proxy": PROXY, "https_proxy": PROXY, "all_proxy": PROXY, "ftp_proxy": PROXY,
        "HTTPPROXY": PROXY, "HTTPSPROXY": PROXY, "ALLPROXY": PROXY, "no_proxy": "", "NOPROXY": "",
        "PIP_NO_INDEX": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    })
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
    return env


_NAMESPACE_OK: bool | None = None


def namespace_available() -> bool:
    """True when ``unshare -rn`` can start a process in a new user + network namespace here."""
    global _NAMESPACE_OK
    if _NAMESPACE_OK is None:
        exe = shutil.which("unshare")
        ok = False
        if exe and sys.platform.startswith("linux"):
            try:
                ok = subprocess.run([exe, "-rn", sys.executable, "-c", "pass"], capture_output=True,
                                    timeout=30).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
        _NAMESPACE_OK = ok
    return _NAMESPACE_OK


# --------------------------------------------------------------------------------------------
# the session
# --------------------------------------------------------------------------------------------


class Session:
    """Everything shared by the submissions of one grading run."""

    def __init__(self, course, hidden: Path | None, limits: Limits, out: Path, run_notebooks: bool,
                 network: str, tmp: Path, unsafe: bool = False):
        self.course = course
        self.hidden = hidden
        self.limits = limits
        self.out = out
        self.run_notebooks = run_notebooks
        self.tmp = tmp
        self.submissions: Path | None = None
        # the installed course_lib as it is now: the source of the pristine copy (checking code) and of
        # each submission's private copy (what the student's code imports)
        self.library = LibraryGuard(LIB_DIR)
        self.pristine = tmp / "pristine" / "course_lib"
        self.pristine_hashes = self.library.copy_to(self.pristine)
        problem = sandbox_problem()
        if problem is not None and not unsafe:
            raise RuntimeError(f"the sandbox cannot start on this machine: {problem}. Student code must not run "
                               "without it; fix that (see INSTRUCTORS.md), or pass --unsafe to grade anyway (every "
                               "gradebook row then says so)")
        self.sandboxed = problem is None
        self.unsafe_reason = problem
        self._bind_course_data()
        if network == "namespace" and not self.sandboxed and not namespace_available():
            raise RuntimeError("--network namespace: `unshare -rn` does not work on this machine")
        self.namespace = not self.sandboxed and (network == "namespace" or (network == "auto" and
                                                                            namespace_available()))
        self.prefix = [shutil.which("unshare") or "unshare", "-rn"] if self.namespace else []
        self.kernel_dir = tmp / "kernels"
        spec_dir = self.kernel_dir / "course-grader"
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {"argv": [*self.prefix, sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "course grader", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")

    def _bind_course_data(self) -> None:
        """Empty mount points next to the pristine copy for the checkout's ``data/`` and ``benchmarks/results/``
        (the shipped data sets and trained models, public course material: ``08.md_setup`` runs MD with a shipped
        model), bound read-only, so that ``repo_file`` finds them in the sandboxes as in the checkout.

        The checkout is the one course_lib comes from; when course_lib is an installed wheel, the checkout
        that holds the hidden tests (``--hidden <checkout>/grading/hidden``) lends its folders instead (a
        sandbox has no network, so ``repo_file`` could not download them there)."""
        self.course_binds: list[tuple[str, str]] = []
        repo = LIB_DIR.parent
        if not (repo / "pyproject.toml").is_file():
            hidden = self.hidden.resolve() if self.hidden is not None else None
            if hidden is None or not (hidden.parent.parent / "pyproject.toml").is_file():
                return
            repo = hidden.parent.parent
        for rel in ("data", "benchmarks/results"):
            if (repo / rel).is_dir():
                (self.pristine.parent / rel).mkdir(parents=True, exist_ok=True)
                self.course_binds.append((str((repo / rel).resolve()), str(self.pristine.parent / rel)))

    def boxed(self, argv: list[str], rw: list[Path], ro: list[Path] = (), cgroup: Cgroup | None = None,
              cwd: str = "/tmp/work") -> list[str]:
        """``argv`` in the sandbox (see :mod:`course_lib.teaching.grading.sandbox`): the pristine course_lib and
        ``ro`` read-only, ``rw`` writable; in a pids cgroup when ``cgroup`` is given."""
        cmd = bwrap_command(argv, ro=[str(self.pristine.parent), *map(str, ro)], rw=[str(p) for p in rw],
                            limits=self.limits.box, cwd=cwd, extra_ro=self.course_binds)
        return cgroup.wrap(cmd) if cgroup is not None else cmd

    def describe(self) -> str:
        if self.sandboxed:
            return "bubblewrap sandbox (uid 65534, no network, read-only system, limits)"
        return f"UNSAFE: no sandbox ({self.unsafe_reason}; graded with --unsafe)"

    def student_library(self, work: Path) -> LibraryGuard:
        """A private copy of course_lib for one submission (``work/lib/course_lib``); the kernel and the
        student phase import this copy. When course_lib comes from a checkout, the checkout's other
        top-level files and folders (``data/``, ``benchmarks/``, ``pyproject.toml``, ...) are linked next to
        it, so that paths relative to the repository keep working; never ``grading/`` (hidden tests),
        the results folder, or hidden entries."""
        lib = work / "lib"
        self.library.copy_to(lib / "course_lib")
        repo = LIB_DIR.parent
        if not (repo / "pyproject.toml").is_file():
            return LibraryGuard(lib / "course_lib")
        avoid = [p.resolve() for p in (self.hidden, self.out, self.submissions) if p is not None]
        for entry in sorted(repo.iterdir()):
            real = entry.resolve()
            if (entry.name in ("course_lib", "grading") or entry.name.startswith(".") or entry.suffix == ".egg-info"
                    or any(real == a or a.is_relative_to(real) or real.is_relative_to(a) for a in avoid)):
                continue
            try:
                (lib / entry.name).symlink_to(real, target_is_directory=entry.is_dir())
            except OSError:
                pass
        return LibraryGuard(lib / "course_lib")

    def hidden_lines(self, number: str) -> frozenset[str]:
        """The lines (20 characters or more, stripped) of the hidden test module ``nbNN.py``."""
        path = self.hidden / f"nb{number}.py" if self.hidden else None
        if path is None or not path.is_file():
            return frozenset()
        return frozenset(x.strip() for x in path.read_text(encoding="utf-8", errors="replace").splitlines()
                         if len(x.strip()) >= 20)

    def protected(self, lib: LibraryGuard | None) -> list[str]:
        return [*([str(lib.root)] if lib else []), str(LIB_DIR), str(self.pristine)]
