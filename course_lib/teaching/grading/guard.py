"""The guard of the kernel and of the exercise processes: network block and audit hook.

:func:`install_guard` blocks non-local network connections and installs an audit hook
(``sys.addaudithook``, which student code cannot remove) refusing reads of the hidden tests and
writes into ``course_lib``. It runs in two places, never imported from the package there:

* the notebook kernel: :func:`kernel_startup_source` writes the function's source (read from this
  file) into the IPython startup file of the kernel, followed by the call;
* the exercise process: :mod:`course_lib.teaching.grading.child` loads this file by path from the
  pristine copy (standard library only) and installs it with :func:`install_from_source`.

The functions of :data:`GUARD_PROGRAM` import what they need themselves and use nothing else of this
module, so that their source alone is a complete program.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = [
    "STUDENT_FILES", "GUARD_FILENAME", "GUARD_PROGRAM", "block_network", "make_audit_hook", "student_policy",
    "install_guard", "fork_safe_kernel",
    "guard_source", "install_from_source", "kernel_startup_source",
]

#: Code-object file names of the student's code in the exercise process (``<exercise cell 00.x>``).
STUDENT_FILES = ("<exercise cell", "<imports cell")
#: File name of the guard's code in the exercise process (tracebacks show it, the checks skip it).
GUARD_FILENAME = "<autograder guard>"
#: The functions that make the guard program (they use nothing else of this module).
GUARD_PROGRAM = ("block_network", "make_audit_hook", "student_policy", "install_guard", "fork_safe_kernel")


def block_network():
    """Refuse connections to anything but localhost (``socket.connect``, ``connect_ex``, ``sendto``,
    ``getaddrinfo``): raises ``OSError(101)`` / ``socket.gaierror``."""
    import socket

    message = "network access is disabled while grading"
    inet = (socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET))
    local = {None, "", "localhost", "127.0.0.1", "::1", b"localhost", b"127.0.0.1", b"::1"}
    _connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    _getaddrinfo = socket.getaddrinfo

    def connect(self, address, _orig=_connect):
        if self.family in inet and address[0] not in local:
            raise OSError(101, message)
        return _orig(self, address)

    def connect_ex(self, address, _orig=_connect_ex):
        if self.family in inet and address[0] not in local:
            return 101
        return _orig(self, address)

    def sendto(self, data, *args, _orig=_sendto):
        address = args[-1] if args else None
        if self.family in inet and isinstance(address, tuple) and address[0] not in local:
            raise OSError(101, message)
        return _orig(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if host not in local:
            raise socket.gaierror(-3, message)
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
    socket.getaddrinfo = getaddrinfo


def make_audit_hook(hidden_dirs, protected_dirs, log_path, student_files):
    """``(hook, state, events)``: the audit hook refusing reads of the hidden tests and writes into course_lib."""
    import os
    import sys

    hidden = tuple(os.path.realpath(p) for p in hidden_dirs)
    protected = tuple(os.path.realpath(p) for p in protected_dirs)
    prefixes = tuple(student_files)
    state = {"busy": False, "phase": "student"}
    events = []
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if log_path else None
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    reading = {"os.listdir", "os.scandir", "glob.glob", "os.chdir"}
    two_paths = {"os.rename", "shutil.move", "shutil.copyfile", "shutil.copytree", "os.link", "os.symlink"}
    writing = {"os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.chown", "os.utime", "os.mkdir",
               "shutil.rmtree", "shutil.copymode", "shutil.copystat"} | two_paths

    def inside(path, roots):
        return any(path == r or path.startswith(r + os.sep) for r in roots)

    def student_on_stack():
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename.startswith(prefixes):
                return True
            frame = frame.f_back
        return False

    def record(text):
        if text not in events:
            events.append(text)
        if log_fd is not None:
            try:
                os.write(log_fd, (text + "\n").encode())
            except OSError:
                pass

    policy_events, policy = student_policy(state, record, prefixes, student_on_stack)

    def hook(event, args):
        if state["busy"] or not (event == "open" or event in reading or event in writing or event in policy_events):
            return
        state["busy"] = True
        try:
            if event in policy_events:
                policy(event, args)
                return
            if event == "open":
                mode = args[1] if len(args) > 1 else None
                flags = args[2] if len(args) > 2 else 0
                write = bool(isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(
                    isinstance(flags, int) and flags & write_flags)
                paths = args[:1]
            else:
                write = event in writing
                paths = args[:2] if event in two_paths else args[:1]
            for i, path in enumerate(paths):
                if path is None or isinstance(path, int):
                    continue
                try:
                    real = os.path.realpath(os.fsdecode(path))
                except Exception:
                    continue
                if hidden and state["phase"] != "loading" and inside(real, hidden):
                    if state["phase"] == "student" or (prefixes and student_on_stack()):
                        root = next(r for r in hidden if inside(real, (r,)))
                        rel = os.path.relpath(real, root)
                        record("read the hidden tests" + ("" if rel == "." else f" ({rel})"))
                    raise PermissionError(13, "[autograder] the hidden tests may not be read", os.path.basename(real))
                if (write and (event != "shutil.copyfile" or i == 1) and protected and inside(real, protected)
                        and "__pycache__" not in real):
                    record(f"wrote into course_lib ({os.path.basename(real)})")
                    raise PermissionError(13, "[autograder] course_lib is read-only while grading",
                                          os.path.basename(real))
        finally:
            state["busy"] = False

    return hook, state, events


def student_policy(state, record, prefixes, student_on_stack):
    """``(events, policy)``: in the exercise process (``prefixes`` set), student code may neither start a
    process nor inspect frames or objects of the grader (``sys._getframe``, ``gc.get_referrers``, a
    traceback's ``tb_frame``, ctypes): ``policy(event, args)`` records it and raises ``PermissionError``."""
    import sys

    spawning = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                "pty.spawn", "os.kill", "os.killpg"}
    inspecting = {"sys._getframe", "sys._current_frames", "gc.get_referrers", "gc.get_referents", "gc.get_objects",
                  "ctypes.dlopen", "ctypes.dlsym", "ctypes.addressof", "ctypes.cdata", "object.__getattr__",
                  "sys.settrace", "sys.setprofile"}
    frame_attrs = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals", "f_locals"}

    def caller_is_student():
        frame = sys._getframe(3)
        return frame is not None and frame.f_code.co_filename.startswith(prefixes)

    def policy(event, args):
        if not prefixes or state["phase"] == "loading":
            return
        if event in spawning and (state["phase"] == "student" or student_on_stack()):
            record("started a process (" + event + ") in the exercise process")
            raise PermissionError(1, "[autograder] exercise code may not start processes")
        if event in inspecting and caller_is_student() and (
                event != "object.__getattr__" or (len(args) > 1 and args[1] in frame_attrs)):
            record("inspected the grader's frames or objects (" + event + ")")
            raise PermissionError(1, "[autograder] frame and object inspection is not allowed")

    return spawning | inspecting, policy


def install_guard(hidden_dirs=(), protected_dirs=(), log_path=None, student_files=()):
    """Block non-local network connections, reads of the hidden tests and writes into course_lib.

    Returns ``(state, events)``: ``state["phase"]`` is "student" (every read of the hidden tests is the
    student's), "loading" (the grader loads the hidden tests) or "check" (a read is the student's only
    when a frame of a file named ``student_files*`` is on the stack; others are refused silently);
    ``events`` lists what was refused and recorded.
    """
    import sys

    block_network()
    hook, state, events = make_audit_hook(hidden_dirs, protected_dirs, log_path, student_files)
    sys.addaudithook(hook)
    return state, events


def fork_safe_kernel():
    """Make a process forked from the notebook kernel harmless to the kernel's channel.

    A cell that calls ``os.fork()`` and whose child does not ``exec`` (or fails to: the process limit also
    applies to ``execve``) leaves a copy of the kernel running the rest of the cell and then the kernel's
    loop, on copies of the kernel's ZeroMQ sockets: its replies garble the channel (the kernel client fails
    with "Invalid Signature") or steal the next request. In such a child, the kernel's session sends only
    through the output pipe (the child's prints still reach the cell) and the child exits when its copy of
    the cell ends. Runs in the kernel only (IPython start-up file).
    """
    import os

    def after_in_child():
        try:
            from ipykernel.iostream import BackgroundSocket, IOPubThread
            from IPython import get_ipython
            from jupyter_client.session import Session
        except Exception:  # noqa: BLE001, S110 - not a kernel: nothing to protect
            return
        send = Session.send

        def child_send(self, stream, *args, **kwargs):
            if isinstance(stream, (IOPubThread, BackgroundSocket)):
                return send(self, stream, *args, **kwargs)  # piped to the kernel, which forwards it
            return None  # the kernel's own sockets: only the kernel may reply on them

        Session.send = child_send
        shell = get_ipython()
        if shell is not None:
            def leave(*_):
                import sys

                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:  # noqa: BLE001, S110
                        pass
                os._exit(0)

            shell.events.register("post_run_cell", leave)

    os.register_at_fork(after_in_child=after_in_child)


def guard_source(parse=ast.parse) -> str:
    """The source of the functions of :data:`GUARD_PROGRAM`, read from this file: a complete program.

    ``parse`` parses this file. The grader's threads (``--jobs``) pass
    :func:`course_lib.teaching.notebook.parse_python`: CPython 3.11's AST constructor is not thread-safe
    (gh-106905), so every parse of the grading process holds that one lock (an unlocked parse here, beside a
    submission parsed in another thread, is the likely cause of a whole submission failed by an internal grader
    error in CI). The exercise process (one thread) loads this file by path and keeps ``ast.parse``."""
    text = Path(__file__).read_text(encoding="utf-8")
    nodes = [n for n in parse(text).body if isinstance(n, ast.FunctionDef) and n.name in GUARD_PROGRAM]
    return "\n" + "\n\n\n".join(ast.get_source_segment(text, n) for n in nodes) + "\n"


def install_from_source(hidden_dirs, protected_dirs, log_path=None, student_files=()):
    """Install the guard in this process from :func:`guard_source` (compiled as ``<autograder guard>``).

    Returns :func:`install_guard`'s ``(state, events)``.
    """
    namespace: dict = {}
    exec(compile(guard_source(), GUARD_FILENAME, "exec"), namespace)  # noqa: S102 - our own code
    return namespace["install_guard"](tuple(map(str, hidden_dirs)), tuple(map(str, protected_dirs)), log_path,
                                      tuple(student_files))


def kernel_startup_source(hidden_dirs, protected_dirs, log_path, parse=ast.parse) -> str:
    """The IPython startup file of the grading kernel: the guard, installed, then its name deleted (``parse``:
    see :func:`guard_source`)."""
    return (guard_source(parse) + f"\ninstall_guard({tuple(map(str, hidden_dirs))!r}, "
            f"{tuple(map(str, protected_dirs))!r}, {str(log_path)!r})\nfork_safe_kernel()\n"
            f"del {', '.join(GUARD_PROGRAM)}\n")
