"""The exercise processes, parent side: two sandboxes per submission, one job each per exercise.

For every exercise the parent starts two processes that never share an interpreter:

* the **student process** (:mod:`.child`, in the student's sandbox): the notebook's imports and the
  exercise cell, then it answers requests about the object the cell defines; it sees no hidden test;
* the **checker process** (:mod:`.checker`, in a second sandbox that binds this notebook's hidden tests
  and a result folder the student's sandbox cannot see): runs the hidden test on plain data received
  from the student process (:mod:`.bridge`), scores it and writes the result.

They meet on a Unix socket in the job's folder. Both programs run from the pristine copy of the package.
Where ``os.fork`` exists, each sandbox holds a per-submission server that imports once and forks one
process per exercise; after a time-out, or when either side misbehaves, both sandboxes are ended and
fresh ones started for the next exercise. Elsewhere each exercise starts new interpreters.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from course_lib.teaching.exercises import grading_timeout
from course_lib.teaching.grading.checker import CHECKER_JOB_FLAG, CHECKER_SERVER_FLAG
from course_lib.teaching.grading.child import CHILD_FLAG, SERVER_FLAG, cap_text
from course_lib.teaching.grading.protocol import validate_result
from course_lib.teaching.grading.sandbox import Cgroup
from course_lib.teaching.grading.sandbox import sandbox_env as boxed_env
from course_lib.teaching.grading.session import Session, sandbox_env

__all__ = ["CHILD_PATH", "CHECKER_PATH", "ExerciseRunner", "kill_group"]

#: The programs, relative to a ``course_lib`` folder (run from the pristine copy).
CHILD_PATH = Path("teaching", "grading", "child.py")
CHECKER_PATH = Path("teaching", "grading", "checker.py")
#: seconds the student process may still take after the checker finished (its last answer, exit)
GRACE = 5.0


class _Server:
    """One sandboxed server process (student or checker side): start, send a job line, read its lines."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict, log: Path, setup: dict, start_timeout: float,
                 cgroup: Cgroup | None):
        self.cgroup = cgroup
        self._buffer = b""
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=fh, cwd=cwd,
                                         env=env, start_new_session=True)
        try:
            self.send(setup)
            line = self.read_line(start_timeout)
            if line != "ready":
                raise RuntimeError(f"the grading server did not start ({line!r})")
        except Exception:
            self.close()
            raise

    def send(self, obj: dict) -> None:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def read_line(self, timeout: float) -> str | None:
        line, self._buffer = _read_line(self.proc.stdout.fileno(), self._buffer, timeout)
        return line

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass
        kill_group(self.proc)
        if self.cgroup is not None:
            self.cgroup.kill()
            self.cgroup = None


class ExerciseRunner:
    """Runs the exercises of one submission: a student process and a checker process per exercise."""

    def __init__(self, session: Session, work: Path, setup: dict, hidden_file: Path | None = None):
        self.s = session
        self.work = work
        self.setup = dict(setup, output_limit=session.limits.output_limit, pristine=str(session.pristine),
                          pristine_hashes=session.pristine_hashes, sandboxed=session.sandboxed)
        self.checker_setup = {k: self.setup[k] for k in ("pristine", "pristine_hashes", "checker_module",
                                                          "output_limit", "sandboxed")}
        self.cwd = work / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.xfer = work / "ex"  # the only folder of the host the student's sandbox may write
        self.xfer.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.chk = work / "chk"  # the checker's results: never bound into the student's sandbox
        self.chk.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.hidden_file = hidden_file
        self.env = boxed_env(session.limits.fast, "1") if session.sandboxed else sandbox_env(session.limits.fast, "1")
        self.student: _Server | None = None
        self.checker: _Server | None = None
        self.forking = hasattr(os, "fork") and sys.platform.startswith("linux")

    # ---- commands
    def _argv(self, program: Path, flag: str) -> list[str]:
        return [sys.executable, "-I", "-B", str(self.s.pristine / program), flag]

    def _student_cmd(self, flag: str) -> tuple[list[str], Cgroup | None]:
        argv = self._argv(CHILD_PATH, flag)
        if not self.s.sandboxed:
            return [*self.s.prefix, *argv], None
        cgroup = Cgroup(self.s.limits.box.nproc)
        return self.s.boxed(argv, rw=[self.xfer], cgroup=cgroup), cgroup

    def _checker_cmd(self, flag: str) -> tuple[list[str], Cgroup | None]:
        argv = self._argv(CHECKER_PATH, flag)
        if not self.s.sandboxed:
            return [*self.s.prefix, *argv], None
        cgroup = Cgroup(self.s.limits.box.nproc)
        return self.s.boxed(argv, rw=[self.xfer, self.chk], ro=self.hidden_files(), cgroup=cgroup), cgroup

    def hidden_files(self) -> list[Path]:
        """What the checker's sandbox may read of the instructor's material: this notebook's hidden tests, their
        reference solutions (``reference/nbNN.py`` beside them) and their hidden data (the folder ``data/nbNN/``
        beside them, e.g. frames that must not be in the public ``data/``), nothing else of the hidden folder."""
        if self.hidden_file is None:
            return []
        beside = (self.hidden_file.parent / "reference" / self.hidden_file.name,
                  self.hidden_file.parent / "data" / self.hidden_file.stem)
        return [self.hidden_file, *(p for p in beside if p.exists())]

    # ---- servers
    def _start_servers(self) -> None:
        timeout = max(120.0, self.s.limits.exercise_timeout)
        try:
            if self.checker is None:
                cmd, cgroup = self._checker_cmd(CHECKER_SERVER_FLAG)
                self.checker = _Server(cmd, self.cwd, self.env, self.work / "checker.log", self.checker_setup,
                                       timeout, cgroup)
            if self.student is None:
                cmd, cgroup = self._student_cmd(SERVER_FLAG)
                self.student = _Server(cmd, self.cwd, self.env, self.work / "server.log", self.setup, timeout, cgroup)
        except Exception:  # noqa: BLE001 - fall back to new processes per exercise
            self.close()
            self.forking = False

    def close(self) -> None:
        for server in (self.student, self.checker):
            if server is not None:
                server.close()
        self.student = self.checker = None

    # ---- one exercise
    def run(self, job: dict, name: str) -> dict:
        """The exercise's result, validated (:func:`course_lib.teaching.grading.protocol.validate_result`)."""
        return validate_result(self._run(job, name), self.s.limits.output_limit)

    def _run(self, job: dict, name: str) -> dict:
        tag = f"{name}-{secrets.token_hex(8)}"
        work, chk = self.xfer / tag, self.chk / tag
        work.mkdir(mode=0o700)
        chk.mkdir(mode=0o700)
        token = secrets.token_hex(16)
        output, result = work / "output.txt", chk / "result.json"
        sock = work / "channel"
        timeout = grading_timeout(job["exercise"], self.s.limits.exercise_timeout)
        student_job = dict(job, output=str(output), socket=str(sock))
        student_job.pop("hidden", None)  # the student's side never learns where the hidden tests are
        checker_job = {k: job[k] for k in ("exercise", "slug", "hidden")}
        checker_job.update(token=token, result=str(result), output=str(chk / "checker.txt"), socket=str(sock),
                           timeout=timeout)
        if self.forking:
            self._start_servers()
        if self.forking and self.student is not None and self.checker is not None:
            code = self._run_forked(student_job, checker_job, timeout)
        else:
            code = self._run_processes(student_job, checker_job, timeout)
        limit = self.s.limits.output_limit
        text = output.read_bytes()[: 4 * limit].decode("utf-8", "replace") if output.is_file() else ""
        text = cap_text(text, limit)
        if code == "timeout":
            return {"status": "timeout", "output": text, "message": (
                f"your code did not finish within {timeout:g} s (an infinite loop, or far too slow?); the grader "
                "stopped it")}
        try:
            data = json.loads(result.read_text(encoding="utf-8"))
            if data.pop("token", None) != token:
                raise ValueError("bad token")
        except (OSError, ValueError):
            tail = text.strip().splitlines()[-1:] if text.strip() else []
            return {"status": "error", "output": text, "message": (
                f"the grading process ended without a result ({code}): does your code exit, crash Python or kill "
                "the process?" + (f" Last output: {tail[0][:200]}" if tail else ""))}
        if data.get("status") == "timeout":
            return {"status": "timeout", "output": text, "message": data.get("message", "")}
        data["output"] = text.strip()
        return data

    def _run_forked(self, student_job: dict, checker_job: dict, timeout: float) -> str:
        """Both jobs on the servers; ``"timeout"`` or how the checker ended."""
        try:
            self.checker.send(checker_job)
            if not (self.checker.read_line(60.0) or "").startswith("started "):
                raise RuntimeError("the checker did not start")
            self.student.send(student_job)
            started = (self.student.read_line(60.0) or "").split()
            if started[:1] != ["started"]:
                raise RuntimeError("the student process did not start")
            pid = int(started[1])
        except Exception:  # noqa: BLE001 - a server is gone: new ones next time, new processes now
            self.close()
            return self._run_processes(student_job, checker_job, timeout)
        line = self.checker.read_line(timeout + GRACE)
        if line is None:  # the student's code is still running (or the checker waits for it): end both sandboxes
            self.close()
            return "timeout"
        if (self.student.read_line(GRACE) or "").split()[:1] != ["exited"]:
            self.close()  # the student's process outlived the test: end its sandbox (a fresh one next time)
        elif not self.s.sandboxed:  # (in the sandbox the server ends every other process after each job)
            try:
                os.killpg(pid, 9)  # whatever the student's code left running in the exercise's session
            except OSError:
                pass
        return f"checker {line}"

    def _run_processes(self, student_job: dict, checker_job: dict, timeout: float) -> str:
        """One new checker and one new student process (no fork server)."""
        setup = {"setup": self.checker_setup, "job": checker_job}
        cmd, cgroup_c = self._checker_cmd(CHECKER_JOB_FLAG)
        with open(checker_job["output"], "wb") as log:
            try:
                checker = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                           cwd=self.cwd, env=self.env, start_new_session=True)
            except OSError as exc:
                return f"could not start Python: {exc}"
        procs: list = [(checker, cgroup_c)]
        try:
            checker.stdin.write(json.dumps(setup).encode())
            checker.stdin.close()
            if (_read_line(checker.stdout.fileno(), b"", max(120.0, timeout))[0] or "") != "listening":
                return "the checker did not start"
            cmd, cgroup_s = self._student_cmd(CHILD_FLAG)
            with open(student_job["output"], "wb") as log:
                student = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                           cwd=self.cwd, env=self.env, start_new_session=True)
            procs.append((student, cgroup_s))
            try:
                student.stdin.write(json.dumps({"setup": self.setup, "job": student_job}).encode())
                student.stdin.close()
            except OSError:
                pass
            try:
                code = checker.wait(timeout=timeout + GRACE)
            except subprocess.TimeoutExpired:
                return "timeout"
            return f"checker exit code {code}"
        finally:
            for proc, cgroup in procs:
                kill_group(proc)
                if cgroup is not None:
                    cgroup.kill()


def _read_line(fd: int, buffer: bytes, timeout: float) -> tuple[str | None, bytes]:
    """One line from ``fd`` within ``timeout`` seconds: ``(line, or None at a time-out or EOF; what is left)``."""
    import select

    end = time.monotonic() + timeout
    while b"\n" not in buffer:
        left = end - time.monotonic()
        if left <= 0:
            return None, buffer
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                return None, buffer
            buffer += chunk
    line, buffer = buffer.split(b"\n", 1)
    return line.decode("utf-8", "replace").strip(), buffer


def kill_group(proc) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, 9)
        else:  # pragma: no cover - Windows
            proc.kill()
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
