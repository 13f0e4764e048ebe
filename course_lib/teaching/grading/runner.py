"""The exercise processes, parent side: start them, feed them a job, collect the result, kill them.

The child side is :mod:`course_lib.teaching.grading.child`, always run from the pristine copy.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from course_lib.teaching.grading.child import CHILD_FLAG, SERVER_FLAG, cap_text
from course_lib.teaching.grading.protocol import validate_result
from course_lib.teaching.grading.sandbox import Cgroup
from course_lib.teaching.grading.sandbox import sandbox_env as boxed_env
from course_lib.teaching.grading.session import Session, sandbox_env

__all__ = ["CHILD_PATH", "ExerciseRunner", "kill_group"]

#: The exercise process's program, relative to a ``course_lib`` folder (run from the pristine copy).
CHILD_PATH = Path("teaching", "grading", "child.py")


class ExerciseRunner:
    """Runs the exercises of one submission, each in its own process.

    Where ``os.fork`` exists, a per-submission server process (``--exercise-server``) imports the
    student's copy of course_lib and the notebook's imports once, never runs student code itself, and
    forks one child per exercise: each child starts from that clean state, in its own session, with its
    own output file, and is killed at the time limit. Elsewhere (or if the server fails) each exercise
    gets a new ``python -I`` process (``--exercise-child``) that does the same setup itself.
    """

    def __init__(self, session: Session, work: Path, setup: dict, hidden_file: Path | None = None):
        self.s = session
        self.work = work
        self.setup = dict(setup, output_limit=session.limits.output_limit, pristine=str(session.pristine),
                          pristine_hashes=session.pristine_hashes, sandboxed=session.sandboxed)
        self.cwd = work / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.xfer = work / "ex"  # the only folder of the host an exercise sandbox may write
        self.xfer.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.hidden_file = hidden_file
        self.cgroup: Cgroup | None = None
        self.env = boxed_env(session.limits.fast, "1") if session.sandboxed else sandbox_env(session.limits.fast, "1")
        self.server: subprocess.Popen | None = None
        self._buffer = b""
        if hasattr(os, "fork") and sys.platform.startswith("linux"):
            self._start_server()

    def _cmd(self, flag: str) -> list[str]:
        argv = [sys.executable, "-I", "-B", str(self.s.pristine / CHILD_PATH), flag]
        if not self.s.sandboxed:
            return [*self.s.prefix, *argv]
        if self.cgroup is None:
            self.cgroup = Cgroup(self.s.limits.box.nproc)
        return self.s.boxed(argv, rw=[self.xfer], ro=self.hidden_files(), cgroup=self.cgroup)

    def hidden_files(self) -> list[Path]:
        """What the exercise sandbox may read of the instructor's material: this notebook's hidden tests and
        their reference solutions (``reference/nbNN.py`` beside them), nothing else of the hidden folder."""
        if self.hidden_file is None:
            return []
        reference = self.hidden_file.parent / "reference" / self.hidden_file.name
        return [self.hidden_file, *([reference] if reference.is_file() else [])]

    def _start_server(self) -> None:
        try:
            log = open(self.work / "server.log", "wb")  # noqa: SIM115 - owned by the server process
            self.server = subprocess.Popen(self._cmd(SERVER_FLAG), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=log, cwd=self.cwd, env=self.env, start_new_session=True)
            log.close()
            self._send(self.setup)
            line = self._read_line(max(120.0, self.s.limits.exercise_timeout))
            if line != "ready":
                raise RuntimeError(f"exercise server did not start ({line!r})")
        except Exception:  # noqa: BLE001 - fall back to one process per exercise
            self.close()

    def _send(self, obj: dict) -> None:
        assert self.server is not None and self.server.stdin is not None
        self.server.stdin.write((json.dumps(obj) + "\n").encode())
        self.server.stdin.flush()

    def _read_line(self, timeout: float) -> str | None:
        import select

        assert self.server is not None and self.server.stdout is not None
        fd = self.server.stdout.fileno()
        end = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self.server is not None:
            try:
                self.server.stdin.close()
                self.server.wait(timeout=10)
            except Exception:  # noqa: BLE001
                pass
            kill_group(self.server)
            self.server = None
            self._buffer = b""
        if self.cgroup is not None:
            self.cgroup.kill()
            self.cgroup = None

    def run(self, job: dict, name: str) -> dict:
        """The exercise's result, validated (:func:`course_lib.teaching.grading.protocol.validate_result`)."""
        return validate_result(self._run(job, name), self.s.limits.output_limit)

    def _run(self, job: dict, name: str) -> dict:
        work = self.xfer / f"{name}-{secrets.token_hex(8)}"
        work.mkdir(mode=0o700)
        token = secrets.token_hex(16)
        result, output = work / "result.json", work / "output.txt"
        job = dict(job, token=token, result=str(result), output=str(output))
        if self.server is None and self.s.sandboxed and hasattr(os, "fork") and sys.platform.startswith("linux"):
            self._start_server()  # the sandbox was ended after a time-out: a fresh one
        if self.server is not None:
            code = self._run_forked(job)
        else:
            code = self._run_process(job)
        limit = self.s.limits.output_limit
        text = output.read_bytes()[: 4 * limit].decode("utf-8", "replace") if output.is_file() else ""
        text = cap_text(text, limit)
        if code == "timeout":
            return {"status": "timeout", "output": text, "message": (
                f"your code did not finish within {self.s.limits.exercise_timeout:g} s (an infinite loop, or far "
                "too slow?); the grader stopped it")}
        try:
            data = json.loads(result.read_text(encoding="utf-8"))
            if data.pop("token", None) != token:
                raise ValueError("bad token")
        except (OSError, ValueError):
            tail = text.strip().splitlines()[-1:] if text.strip() else []
            return {"status": "error", "output": text, "message": (
                f"the grading process ended without a result ({code}): does your code exit, crash Python or kill "
                "the process?" + (f" Last output: {tail[0][:200]}" if tail else ""))}
        if text.strip():
            data["output"] = (data.get("output", "") + "\n" + text).strip()
        return data

    def _run_forked(self, job: dict) -> str:
        try:
            self._send(job)
            line = self._read_line(60.0) or ""
            if not line.startswith("started "):
                raise RuntimeError(line)
            pid = int(line.split()[1])
        except Exception:  # noqa: BLE001 - the server is gone: use a fresh process for this job and the next
            self.close()
            return self._run_process(job)
        line = self._read_line(self.s.limits.exercise_timeout)
        if line is None and self.s.sandboxed:  # the pid is the sandbox's own: end the whole sandbox
            self.close()
            return "timeout"
        if line is None:
            for kill in (lambda: os.killpg(pid, 9), lambda: os.kill(pid, 9)):
                try:
                    kill()
                except OSError:
                    pass
            if (self._read_line(15.0) or "").split()[:2] != ["exited", str(pid)]:
                self.close()
            return "timeout"
        if not self.s.sandboxed:  # (in the sandbox, the server itself ends every other process after each job)
            try:
                os.killpg(pid, 9)  # whatever the student's code left running in the exercise's session
            except OSError:
                pass
        return f"exit status {line.split()[-1]}" if line.startswith("exited") else f"server said {line!r}"

    def _run_process(self, job: dict) -> str:
        with open(job["output"], "wb") as log:
            try:
                proc = subprocess.Popen(self._cmd(CHILD_FLAG), stdin=subprocess.PIPE, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env, start_new_session=True)
            except OSError as exc:
                return f"could not start Python: {exc}"
            try:
                proc.stdin.write(json.dumps({"setup": self.setup, "job": job}).encode())
                proc.stdin.close()
            except OSError:
                pass
            try:
                code = proc.wait(timeout=self.s.limits.exercise_timeout)
            except subprocess.TimeoutExpired:
                return "timeout"
            finally:
                kill_group(proc)
                if self.cgroup is not None:
                    self.cgroup.kill()
                    self.cgroup = None
        return f"exit code {code}"


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
