"""The operating-system sandbox of the notebook run and the exercise processes: bubblewrap + limits.

Every process that runs student code starts as::

    /bin/sh -c 'echo $$ > <cgroup>/cgroup.procs; exec "$@"'   # only when a pids cgroup can be made
    prlimit --as=... --nproc=... --fsize=... --cpu=... --core=0 --
    bwrap --unshare-all --unshare-user --uid 65534 --gid 65534 --die-with-parent --new-session
          --ro-bind <the Python installation, its site-packages, the pristine course_lib, ...>
          --bind <one private per-submission folder>  --tmpfs /tmp (size-capped) --remount-ro /
          -- python ...

i.e. an unprivileged identity (uid/gid 65534 inside a new user namespace, no capability), private
mount, PID, IPC, UTS, cgroup and network namespaces (no network interface but a loopback that is
down), a read-only root made only of what is bound (never the submissions, the results, the checkout,
the hidden tests of the notebook run, the virtual environment's writable state), a size-capped private
``/tmp``; memory (address space), process count, file size and CPU time limited. The sandbox's PID 1
is bwrap's own init: when it ends, the kernel kills every process of the namespace (``setsid`` or
double-forking escapes nothing). Where a ``pids`` cgroup can be created (the grader runs as root, or
the cgroup is delegated), the process count is limited there too and :meth:`Cgroup.kill` ends every
process of the sandbox; ``RLIMIT_NPROC`` does not apply to a sandbox whose user namespace maps to root.

:func:`sandbox_problem` says why the sandbox cannot start here (None: it can).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SANDBOX_UID", "BoxLimits", "sandbox_problem", "system_binds", "bwrap_command", "Cgroup",
           "sandbox_env"]

SANDBOX_UID = 65534  # "nobody" inside the sandbox's user namespace
PROXY = "http://127.0.0.1:9"


@dataclass(frozen=True)
class BoxLimits:
    """Resource limits of one sandbox (MiB, seconds, processes)."""

    memory_mb: int = 2560  # address space (RLIMIT_AS) of every process: torch + a kernel need ~0.8 GiB
    nproc: int = 64  # processes of one sandbox (pids cgroup; RLIMIT_NPROC 16x this for the whole grading user)
    fsize_mb: int = 64  # largest file a process may write (RLIMIT_FSIZE)
    cpu_s: int = 3600  # CPU seconds of each process (RLIMIT_CPU): a backstop, the wall-clock limits act first
    tmp_mb: int = 256  # size of the private /tmp


def _run_quiet(cmd: list[str], env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


_PROBLEM: dict[str, str | None] = {}


def sandbox_problem() -> str | None:
    """None when bubblewrap can start Python in the sandbox here; otherwise what is missing."""
    if "result" not in _PROBLEM:
        _PROBLEM["result"] = _probe()
    return _PROBLEM["result"]


def _probe() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux (this is {sys.platform})"
    if not shutil.which("bwrap"):
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if not shutil.which("prlimit"):
        return "prlimit (util-linux) is not installed"
    cmd = bwrap_command([sys.executable, "-I", "-c", "import os; print(os.getuid())"], ro=[], rw=[],
                        limits=BoxLimits())
    try:
        res = _run_quiet(cmd, env=sandbox_env(True, "1"))
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not start: {exc}"
    if res.returncode != 0 or res.stdout.strip() != str(SANDBOX_UID).encode():
        err = res.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        return (f"bwrap could not start a sandbox ({err[0]}): unprivileged user namespaces are needed "
                "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0) or run the grader as root")
    return None


def sandbox_env(fast: bool, threads: str = "1", home: str = "/tmp/home") -> dict[str, str]:
    """The whole environment of a sandboxed process (nothing of the grader's environment is passed on)."""
    bin_dirs = [str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]
    env = {"PATH": os.pathsep.join(dict.fromkeys(bin_dirs)), "HOME": home, "LANG": "C.UTF-8",
           "COURSE_FAST": "1" if fast else "0", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "MPLCONFIGDIR": f"{home}/.mpl", "XDG_CACHE_HOME": f"{home}/.cache", "PIP_NO_INDEX": "1",
           "HF_HUB_OFFLINE": "1", "JUPYTER_PLATFORM_DIRS": "1"}
    for k in ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[k] = PROXY
    if os.environ.get("COURSE_DATA"):
        env["COURSE_DATA"] = os.environ["COURSE_DATA"]
    return env


def system_binds() -> list[str]:
    """Host folders bound read-only at the same path: the OS's programs and libraries, the Python
    installation and the folders of its import path (site-packages), nothing else."""
    roots = ["/usr", "/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives", "/etc/ssl/certs", "/opt/conda"]
    roots += [sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))]
    roots += [p for p in sys.path if p and os.path.isdir(p) and ("site-packages" in p or "dist-packages" in p
                                                                  or p.startswith(sys.base_prefix))]
    out: list[str] = []
    for path in sorted({os.path.realpath(r) for r in roots if os.path.exists(r)}, key=len):
        if not any(path == o or path.startswith(o + os.sep) for o in out):
            out.append(path)
    return out


def bwrap_command(argv: list[str], ro: list[str], rw: list[str], limits: BoxLimits, cwd: str = "/tmp/work",
                  extra_ro: list[tuple[str, str]] = ()) -> list[str]:
    """``prlimit ... bwrap ... -- argv``: ``ro`` / ``rw`` host paths bound at the same path (read-only /
    writable), ``extra_ro`` ``(host, inside)`` pairs bound read-only."""
    mib = 1024 * 1024
    # RLIMIT_NPROC counts every process of the grading user (not only this sandbox's), and does not apply
    # when the grader is root: a loose backstop; the pids cgroup gives the per-sandbox limit
    cmd = [shutil.which("prlimit") or "prlimit", f"--as={limits.memory_mb * mib}", f"--nproc={16 * limits.nproc}",
           f"--fsize={limits.fsize_mb * mib}", f"--cpu={limits.cpu_s}", "--core=0", "--",
           shutil.which("bwrap") or "bwrap", "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID),
           "--gid", str(SANDBOX_UID), "--die-with-parent", "--new-session", "--hostname", "sandbox",
           "--unsetenv", "JPY_PARENT_PID"]  # the kernel's parent is not in its PID namespace
    for link in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{link}"):
            cmd += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
    # /tmp first: the grader's own folders (under the host's /tmp) are then bound inside the private /tmp
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_mb * mib), "--perms", "1777",
            "--tmpfs", "/tmp", "--dir", "/tmp/home", "--dir", cwd]
    for path in system_binds():
        cmd += ["--ro-bind", path, path]
    for path in ro:
        cmd += ["--ro-bind", str(path), str(path)]
    for host, inside in extra_ro:
        cmd += ["--ro-bind", str(host), str(inside)]
    for path in rw:
        cmd += ["--bind", str(path), str(path)]
    cmd += ["--remount-ro", "/", "--chdir", cwd, "--", *argv]
    return cmd


# --------------------------------------------------------------------------------------------
# the pids cgroup of one sandbox
# --------------------------------------------------------------------------------------------

_COUNTER = itertools.count()


class Cgroup:
    """A ``pids`` cgroup for one sandbox (v1 ``/sys/fs/cgroup/pids`` or v2), when this machine lets the
    grader create one; :meth:`wrap` starts a command inside it, :meth:`kill` ends all its processes."""

    def __init__(self, max_pids: int):
        self.path: Path | None = None
        for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
            if not (base / "cgroup.procs").is_file() or not os.access(base, os.W_OK):
                continue
            if base.name != "pids" and "pids" not in _read(base / "cgroup.subtree_control"):
                continue
            path = base / f"course-grader-{os.getpid()}-{next(_COUNTER)}"
            try:
                path.mkdir()
                (path / "pids.max").write_text(str(max_pids))
            except OSError:
                try:
                    path.rmdir()
                except OSError:
                    pass
                continue
            self.path = path
            break

    def wrap(self, cmd: list[str]) -> list[str]:
        if self.path is None:
            return cmd
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *cmd]

    def pids(self) -> list[int]:
        if self.path is None:
            return []
        return [int(p) for p in _read(self.path / "cgroup.procs").split() if p.strip().isdigit()]

    def kill(self) -> None:
        """SIGKILL every process of the cgroup (until none is left), then remove it."""
        if self.path is None:
            return
        end = time.monotonic() + 10
        while time.monotonic() < end:
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        try:
            self.path.rmdir()
        except OSError:
            pass
        self.path = None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
