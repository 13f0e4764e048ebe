"""The checker process of the grader: the hidden test of one exercise, on plain data from the student process.

Run by :class:`course_lib.teaching.grading.runner.ExerciseRunner` from the pristine, hash-checked copy of
the package, in its own sandbox (which binds the hidden tests of the notebook being graded; the student's
sandbox never does)::

    python -I -B <pristine>/course_lib/teaching/grading/checker.py --checker-server   # Linux: fork per job
    python -I -B <pristine>/course_lib/teaching/grading/checker.py --checker-job      # one job on stdin

No student code ever runs in this process: it listens on the job's Unix socket, the student process
(:mod:`.child`) connects after running the exercise cell and answers requests (:mod:`.bridge`); the
student's function is a :class:`~course_lib.teaching.grading.bridge.Remote` here, and what comes back
is plain data. This process computes the references, compares, scores and writes the result file
(a folder the student's sandbox cannot see); the parent validates it
(:func:`course_lib.teaching.grading.protocol.validate_result`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path

CHECKER_SERVER_FLAG = "--checker-server"
CHECKER_JOB_FLAG = "--checker-job"
HELLO_STATUSES = ("ready", "error", "missing", "flagged")
HERE = Path(__file__).resolve().parent


class IntegrityError(Exception):
    """The pristine copy of the checking code cannot be trusted (changed)."""


def setup_process(setup: dict) -> dict:
    """Import the checking code from the pristine copy (no student code anywhere in this process)."""
    import importlib

    try:
        import resource

        cap = 8 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    sys.dont_write_bytecode = True
    pristine = Path(setup["pristine"])
    verify(setup)
    sys.path.insert(0, str(pristine.parent))
    notes = []
    for name in ("course_lib", "course_lib.teaching.checks", "course_lib.teaching.grading.api",
                 "course_lib.teaching.grading.bridge", setup["checker_module"]):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{name} could not be imported: {type(exc).__name__}: {exc}")
    for name, mod in list(sys.modules.items()):
        origin = getattr(mod, "__file__", None) or ""
        if (name == "course_lib" or name.startswith("course_lib.")) and origin \
                and not Path(origin).resolve().is_relative_to(pristine.resolve()):
            raise IntegrityError(f"grader integrity: {name} was loaded from outside the pristine copy")
    return {"notes": notes}


def verify(setup: dict) -> None:
    pristine = Path(setup["pristine"])
    for rel, digest in setup["pristine_hashes"].items():
        if hashlib.sha256((pristine / rel).read_bytes()).hexdigest() != digest:
            raise IntegrityError(f"grader integrity: the pristine copy of {rel} changed")


def listen(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    return sock


def run_job(setup: dict, ctx: dict, job: dict, listener: socket.socket) -> None:
    """Wait for the student process, run the hidden test, write the result file."""
    try:
        res = check_exercise(setup, ctx, job, listener)
    except BaseException as exc:  # noqa: BLE001 - report, never crash silently
        res = {"status": "error", "message": f"internal grader error: {type(exc).__name__}: {exc}"}
    res["token"] = job["token"]
    tmp = job["result"] + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(res, fh)
    os.replace(tmp, job["result"])


def check_exercise(setup: dict, ctx: dict, job: dict, listener: socket.socket) -> dict:
    from course_lib.teaching.grading import bridge

    verify(setup)
    listener.settimeout(float(job["timeout"]))
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        return {"status": "timeout", "message": "your exercise cell did not finish (the grader waited "
                f"{float(job['timeout']):g} s for it)"}
    finally:
        listener.close()
        try:
            os.unlink(job["socket"])
        except OSError:
            pass
    conn.settimeout(None)
    end = bridge.CheckerEnd(conn)
    notes = list(ctx["notes"])
    try:
        hello = bridge.recv_frame(conn)
        status = hello.get("status")
        if status not in HELLO_STATUSES:
            raise bridge.ProtocolError("an invalid first message")
        flags = _strings(hello.get("flags"))
        notes += _strings(hello.get("notes"))
        if status != "ready":
            message = hello.get("message") if isinstance(hello.get("message"), str) else ""
            if status == "flagged":
                message = "the hidden tests were not run (the library was changed)"
            return {"status": status, "flags": flags, "notes": notes, "message": message[:2000]}
        target = end.remote(hello.get("target") or {})
    except (bridge.ProtocolError, OSError) as exc:
        return {"status": "error", "notes": notes, "message": f"the student process ended or sent something "
                f"unreadable before the test started ({exc}): does your code exit, crash Python or print to "
                "the grader's channel?"}
    try:
        hidden_fn, source = load_test(job)
        res = run_hidden_test(hidden_fn, target, job)
    finally:
        end.close()
        conn.close()
    res["flags"] = list(dict.fromkeys(res["flags"] + flags + end.flags))
    return dict(res, notes=notes, source=source)


def _strings(value) -> list[str]:
    return [v[:2000] for v in value[:200] if isinstance(v, str)] if isinstance(value, list) else []


def load_test(job: dict):
    """``(hidden_fn, source)``: the exercise's hidden test (or its public check)."""
    import importlib.util

    from course_lib.teaching import checks
    from course_lib.teaching.grading import api

    hidden_fn, source = None, "public check only (no hidden test module)"
    if job.get("hidden"):
        spec = importlib.util.spec_from_file_location(f"_course_hidden_{job['slug']}", job["hidden"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        hidden_fn = getattr(module, "HIDDEN", {}).get(job["exercise"])
        source = "hidden tests" if hidden_fn else "public check only (no hidden test for this exercise)"
    if hidden_fn is None:
        public = checks.EXERCISES[job["exercise"]].checker
        hidden_fn = lambda o, f: api.run_cases(f, o, [("public check", public, {})])  # noqa: E731
    return hidden_fn, source


def run_hidden_test(hidden_fn, obj, job: dict) -> dict:
    """The hidden test on ``obj`` (the student's object, a Remote) and its score."""
    from course_lib.teaching import checks
    from course_lib.teaching.grading import api, bridge

    fb = checks.Feedback()
    error, not_implemented = None, False
    try:
        hidden_fn(obj, fb)
    except checks.StopChecking:
        fb.__dict__.setdefault("stopped", True)
    except NotImplementedError:
        not_implemented = True
    except (bridge.RemoteError, bridge.ProtocolError) as exc:
        error = f"your code raised {checks.describe_exception(exc)}"
    except Exception as exc:  # noqa: BLE001
        if api.student_in_traceback(exc, [job.get("hidden") or ""]):
            error = f"your code raised {checks.describe_exception(exc)}"
        else:
            error = (f"the hidden test itself failed ({type(exc).__name__}: {exc}); not your fault: tell your "
                     "instructor")
    cases = fb.__dict__.get("cases")
    total = len(fb.passed) + len(fb.failed)
    if cases:
        fraction = sum(score for _, score in cases) / len(cases)
    else:
        fraction = 0.0 if fb.__dict__.get("stopped") or not total else fb.score()
    return {"status": "checked", "flags": [], "n_passed": len(fb.passed), "n_total": total,
            "failed": list(fb.failed), "fraction": 0.0 if error or not_implemented else fraction, "error": error,
            "not_implemented": not_implemented, "n_cases": len(cases or []),
            "test_errors": list(fb.__dict__.get("test_errors", []))}


def server_main() -> int:
    """``--checker-server``: setup once, then one forked checker per job line on stdin."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    setup = json.loads(stdin.readline().decode("utf-8"))
    try:
        ctx = setup_process(setup)
    except IntegrityError as exc:
        stdout.write(f"failed {exc}\n".encode())
        stdout.flush()
        return 1
    stdout.write(b"ready\n")
    stdout.flush()
    while True:
        line = stdin.readline()
        if not line.strip():
            return 0
        job = json.loads(line.decode("utf-8"))
        listener = listen(job["socket"])  # before the fork: the socket exists when "started" is read
        pid = os.fork()
        if pid == 0:
            try:
                fd = os.open(job["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                run_job(setup, ctx, job, listener)
            finally:
                os._exit(0)
        listener.close()
        stdout.write(f"started {pid}\n".encode())
        stdout.flush()
        _, status = os.waitpid(pid, 0)
        stdout.write(f"exited {pid} {status}\n".encode())
        stdout.flush()


def job_main() -> int:
    """``--checker-job``: setup and one job, read as JSON from stdin (where ``os.fork`` is missing)."""
    payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    ctx = setup_process(payload["setup"])
    listener = listen(payload["job"]["socket"])
    print("listening", flush=True)
    run_job(payload["setup"], ctx, payload["job"], listener)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == [CHECKER_SERVER_FLAG]:
        return server_main()
    if argv[:1] == [CHECKER_JOB_FLAG]:
        return job_main()
    print(f"usage: python -I -B checker.py {CHECKER_SERVER_FLAG}|{CHECKER_JOB_FLAG} (started by the grader)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
