"""The student process of an exercise: run the student's cell, then answer the checker's requests.

Run by :class:`course_lib.teaching.grading.runner.ExerciseRunner` from the pristine, hash-checked copy
of the package, in the student's sandbox (no hidden test is bound there)::

    python -I -B <pristine>/course_lib/teaching/grading/child.py --exercise-server   # Linux: fork per job
    python -I -B <pristine>/course_lib/teaching/grading/child.py --exercise-child    # one job on stdin

This file is a standalone program: standard library only, and it imports nothing of the installed
package. Before the student's code runs it loads three files of its own copy by path (``guard.py``:
the audit hook, ``../notebook.py``: the cell parsing, ``bridge.py``: the channel). After the
notebook's imports and the exercise cell ran, it connects to the job's socket, says ``ready`` (or why
not, with what the runtime snapshot saw the student's code change) and answers the checker process's
requests about the object the cell defined (:class:`.bridge.StudentEnd`). It decides nothing: the
verdict is the checker's (:mod:`.checker`).

Also importable (the runtime snapshot and the capped output are used and tested in the parent).
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CHILD_FLAG", "SERVER_FLAG", "CappedText", "cap_text", "snapshot", "snapshot_diff", "student_phase",
           "main"]

CHILD_FLAG = "--exercise-child"
SERVER_FLAG = "--exercise-server"
#: This file's folder in the pristine copy (``.../course_lib/teaching/grading``).
HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# capped output
# --------------------------------------------------------------------------------------------


class CappedText(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters written and counts the rest."""

    def __init__(self, limit: int = 20_000):
        super().__init__()
        self.limit = limit
        self._parts: list[str] = []
        self._kept = 0
        self.dropped = 0
        self.buffer = _CappedBytes(self)

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        s = s if isinstance(s, str) else str(s)
        room = self.limit - self._kept
        if room > 0:
            self._parts.append(s[:room])
            self._kept += min(room, len(s))
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def getvalue(self) -> str:
        text = "".join(self._parts)
        if self.dropped:
            text += f"\n[... {self.dropped} more characters of output dropped by the autograder]"
        return text


class _CappedBytes:
    def __init__(self, text: CappedText):
        self._text = text

    def write(self, b) -> int:
        self._text.write(bytes(b).decode("utf-8", "replace"))
        return len(b)

    def flush(self) -> None:
        pass


def cap_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a note saying how much was dropped."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters of output dropped by the autograder]"


# --------------------------------------------------------------------------------------------
# runtime snapshot
# --------------------------------------------------------------------------------------------

WATCHED_EXTRA = ("builtins", "math", "importlib", "importlib.util", "importlib._bootstrap",
                 "importlib._bootstrap_external", "torch", "torch.linalg", "torch.nn.functional", "torch.overrides",
                 "json", "json.encoder", "json.decoder", "os", "io", "gc", "linecache", "traceback", "numpy")


def _ident(obj) -> tuple:
    code = getattr(obj, "__code__", None)
    return (id(obj), id(code) if code is not None else 0)


def snapshot(prefixes: tuple[str, ...] = ("course_lib",), extra: Iterable[str] = WATCHED_EXTRA) -> dict:
    """Identity of every attribute of the watched modules (and of their classes' attributes).

    Modules whose name is or starts with one of ``prefixes`` are watched entirely (attributes added,
    changed or removed); ``extra`` modules (builtins, torch, ...) for changed or removed attributes.
    The object ids are only meaningful inside the same process.
    """
    snap: dict = {"modules": {}, "strict": set(), "sys": {}}
    mods = {n: m for n, m in list(sys.modules.items()) if m is not None
            and any(n == p or n.startswith(p + ".") for p in prefixes)}
    for name in extra:
        if name in sys.modules:
            mods.setdefault(name, sys.modules[name])
    for name, mod in mods.items():
        entries = {}
        strict = any(name == p or name.startswith(p + ".") for p in prefixes)
        for attr, value in list(vars(mod).items()):
            entries[attr] = _ident(value)
            own_class = isinstance(value, type) and getattr(value, "__module__", None) == name
            if own_class and (strict or name not in ("torch", "numpy", "builtins")):
                for k, v in list(vars(value).items()):
                    entries[f"{attr}.{k}"] = _ident(getattr(v, "__func__", v))
            elif strict and isinstance(value, dict) and not attr.startswith("__"):
                for k, v in list(value.items()):
                    entries[f"{attr}[{k!r}]"] = _ident(v)
        if name == "torch" and "Tensor" in vars(mod):
            for k, v in list(vars(mod.Tensor).items()):
                entries[f"Tensor.{k}"] = _ident(v)
        snap["modules"][name] = (id(mod), entries)
        if strict:
            snap["strict"].add(name)
    snap["sys"] = {"path": list(sys.path), "meta_path": [id(f) for f in sys.meta_path],
                   "path_hooks": [id(h) for h in sys.path_hooks]}
    return snap


def snapshot_diff(before: dict, after: dict) -> list[str]:
    """What changed between two :func:`snapshot` calls, as readable reasons (empty: nothing)."""
    reasons = []
    for name, (mod_id, entries) in sorted(before["modules"].items()):
        if name not in after["modules"] or after["modules"][name][0] != mod_id:
            reasons.append(f"replaced the module `{name}` in sys.modules")
            continue
        now = after["modules"][name][1]
        changed = sorted(a for a, ident in entries.items() if a in now and now[a] != ident)
        removed = sorted(a for a in entries if a not in now)
        added = sorted(a for a in now if a not in entries and "[" not in a) if name in before["strict"] else []
        mod = sys.modules.get(name)
        added = [a for a in added if not (mod is not None and sys.modules.get(f"{name}.{a}") is getattr(mod, a, 0))]
        for what, attrs in (("replaced", changed), ("deleted", removed), ("added", added)):
            if attrs:
                shown = ", ".join(f"`{name}.{a}`" for a in attrs[:4]) + (" ..." if len(attrs) > 4 else "")
                reasons.append(f"{what} {shown}")
    for key in ("meta_path", "path_hooks"):
        if before["sys"][key] != after["sys"][key]:
            reasons.append(f"changed `sys.{key}` (import machinery)")
    return reasons



# --------------------------------------------------------------------------------------------
# the process: setup (no student code), then one job per process
# --------------------------------------------------------------------------------------------


def load_file(path: Path, name: str):
    """The module of the Python file ``path``, executed by path (not put in ``sys.modules``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def setup_process(setup: dict) -> dict:
    """Limits, guard, and the clean state every exercise starts from (no student code runs here)."""
    import importlib

    try:
        import resource
        import signal

        cap = 8 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    except (ImportError, ValueError, OSError, AttributeError):
        pass
    sys.dont_write_bytecode = True
    if setup.get("sandboxed"):
        not_dumpable()
    guard = load_file(HERE / "guard.py", "_autograder_guard_file")
    notebook = load_file(HERE.parent / "notebook.py", "_autograder_notebook_file")
    bridge = load_file(HERE / "bridge.py", "_autograder_bridge_file")
    state, events = guard.install_from_source([setup["hidden_dir"]] if setup.get("hidden_dir") else [],
                                              setup["protected"], student_files=guard.STUDENT_FILES)
    state["phase"] = "loading"  # the grader's own setup (and the server's forks); "student" from grade_exercise on
    sys.path.insert(0, setup["student_lib"])
    notes = []
    for name in ("course_lib.teaching.checks", "course_lib.symmetry", setup["checker_module"]):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{name} could not be imported: {type(exc).__name__}: {exc}")
    try:
        exec(compile(setup["instructor_imports"], "<instructor imports>", "exec"),  # noqa: S102
             {"__name__": "__autograder_baseline__"})
    except Exception as exc:  # noqa: BLE001
        notes.append(f"the notebook's imports raised {type(exc).__name__}: {exc}")
    if "torch" in sys.modules:
        TENSOR_ATTRS.update(vars(sys.modules["torch"].Tensor))
    return {"state": state, "events": events, "notes": notes, "strip_magics": notebook.strip_magics, "bridge": bridge}


def run_job(setup: dict, ctx: dict, job: dict) -> None:
    """Run the student's exercise cell, then answer the checker's requests on the job's socket.

    The student's output goes to this process's stdout (the output file the parent reads, capped);
    nothing this process sends is a verdict: the checker process computes it.
    """
    bridge = ctx["bridge"]
    try:
        hello, obj = student_phase(setup, ctx, job)
    except BaseException as exc:  # noqa: BLE001 - report, never crash silently
        hello, obj = {"status": "error", "message": f"internal grader error: {type(exc).__name__}: {exc}"}, None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(job["socket"])
    end = bridge.StudentEnd(sock, cell_files=(f"<exercise cell {job['exercise']}>",), events=ctx["events"])
    if hello["status"] == "ready":
        hello["target"] = end.handle(obj)
    bridge.send_frame(sock, hello)
    if hello["status"] == "ready":
        end.serve()
    sys.stdout.flush()


def child_main() -> int:
    """``--exercise-child``: setup and one job, read as JSON from stdin."""
    payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    ctx = setup_process(payload["setup"])
    run_job(payload["setup"], ctx, payload["job"])
    os._exit(0)  # skip interpreter shutdown: no student __del__ runs after the verdict


def server_main() -> int:
    """``--exercise-server``: setup once, then fork one exercise process per job line on stdin."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    setup = json.loads(stdin.readline().decode("utf-8"))
    ctx = setup_process(setup)
    stdout.write(b"ready\n")
    stdout.flush()
    while True:
        line = stdin.readline()
        if not line.strip():
            return 0
        job = json.loads(line.decode("utf-8"))
        pid = os.fork()
        if pid == 0:  # the exercise process
            try:
                os.setsid()
                fd = os.open(job["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                run_job(setup, ctx, job)
            finally:
                os._exit(0)
        stdout.write(f"started {pid}\n".encode())
        stdout.flush()
        _, status = os.waitpid(pid, 0)
        if setup.get("sandboxed"):
            end_other_processes()
        stdout.write(f"exited {pid} {status}\n".encode())
        stdout.flush()


def end_other_processes() -> None:
    """SIGKILL every process of the sandbox's PID namespace but its init (1) and this server: whatever the
    student's code left running (``setsid``, double fork) ends before the next exercise starts."""
    import signal

    me = os.getpid()
    for _ in range(200):
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) not in (1, me)]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


def not_dumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: other processes of the sandbox (the student's) cannot open this
    process's ``/proc/<pid>/fd`` or memory (inherited by the forked exercise processes)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------------------------
# one exercise: the student's code, then the checking code from the pristine copy, then the test
# --------------------------------------------------------------------------------------------


def student_phase(setup: dict, ctx: dict, job: dict) -> tuple[dict, object]:
    """``(hello, obj)``: run the student's imports and exercise cell; the first message to the checker
    (``ready``, or why not: ``error`` / ``missing``; ``flags``: tampering seen in this process, shown to the
    instructor) and the object the exercise defines."""
    state, events = ctx["state"], ctx["events"]
    before = snapshot()
    notes = list(ctx["notes"])
    state["phase"] = "student"
    obj, failure = run_student_code(setup, ctx, job, notes)
    flags = list(dict.fromkeys(snapshot_diff(before, snapshot()) + events + torch_tampering()))
    if failure is not None:
        return {"status": failure[0], "flags": flags, "notes": notes, "message": failure[1]}, None
    if flags:
        return {"status": "flagged", "flags": flags, "notes": notes}, None
    return {"status": "ready", "flags": [], "notes": notes}, obj


def torch_tampering() -> list[str]:
    """Reasons to flag a torch left in a lying state: active torch-function / dispatch modes, attributes
    added to ``torch.Tensor`` (values compared by the checker would then not be the computed ones)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    reasons = []
    try:
        if torch._C._len_torch_function_stack():
            reasons.append("left a torch function mode active (torch.overrides.TorchFunctionMode)")
    except AttributeError:
        pass
    try:
        if torch._C._len_torch_dispatch_stack():
            reasons.append("left a torch dispatch mode active (TorchDispatchMode)")
    except AttributeError:
        pass
    added = sorted(set(vars(torch.Tensor)) - TENSOR_ATTRS) if TENSOR_ATTRS else []
    if added:
        reasons.append("added attributes to torch.Tensor (" + ", ".join(added[:4]) + ")")
    return reasons


TENSOR_ATTRS: set = set()  # the attributes of torch.Tensor before student code (set by setup_process)


def run_student_code(setup: dict, ctx: dict, job: dict, notes: list[str]):
    """``(obj, None)``, or ``(None, (status, message))`` when the student's cell or target fails."""
    import builtins
    import linecache
    import types

    strip_magics = ctx["strip_magics"]
    main = types.ModuleType("__main__")  # `import __main__` gives the student's namespace, never this program
    sys.modules["__main__"] = main
    ns: dict = main.__dict__
    ns["__builtins__"] = builtins

    def run_code(source: str, label: str):
        source = strip_magics(source)
        linecache.cache[label] = (len(source), None, source.splitlines(True), label)
        exec(compile(source, label, "exec"), ns)  # noqa: S102 - running the student's code is the point

    for k, chunk in enumerate([setup["instructor_imports"], *job["submission_imports"]]):
        try:
            run_code(chunk, f"<imports cell {k}>")
        except BaseException as exc:  # noqa: BLE001
            notes.append(f"an import cell raised {type(exc).__name__}: {exc}")
    try:
        run_code(job["cell"], f"<exercise cell {job['exercise']}>")
    except BaseException as exc:  # noqa: BLE001
        return None, ("error", (
            f"your exercise cell raised {type(exc).__name__}: {str(exc)[:300]} when run on its own (the grader "
            "runs each exercise cell with only the notebook's imports: define every helper inside the cell)"))
    try:
        return eval(job["target"], ns), None  # noqa: S307 - the expression comes from the instructor notebook
    except NameError:
        return None, ("missing", (
            f"your exercise cell does not define `{job['name']}` (renamed?): keep the name of the distributed "
            "notebook"))
    except BaseException as exc:  # noqa: BLE001
        return None, ("error", f"`{job['target']}` could not be evaluated: {type(exc).__name__}: {exc}")


def main(argv: list[str]) -> int:
    if argv[:1] == [CHILD_FLAG]:
        return child_main()
    if argv[:1] == [SERVER_FLAG]:
        return server_main()
    print(f"usage: python -I -B child.py {CHILD_FLAG}|{SERVER_FLAG} (started by the grader)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
