"""The notebook run: a submission's copy, top to bottom, in a fresh Jupyter kernel.

Per-cell and per-notebook time limits, outputs capped in size, the kernel's audit log read after
every cell (the guard of :mod:`course_lib.teaching.grading.guard` is the kernel's startup file) and
the private ``course_lib`` verified after every cell. The run gives the per-cell errors and
time-outs of the feedback (``runs.json``); it never decides points.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from course_lib.teaching.grading.guard import kernel_startup_source
from course_lib.teaching.grading.library import LibraryGuard
from course_lib.teaching.grading.sandbox import Cgroup
from course_lib.teaching.grading.sandbox import sandbox_env as boxed_env
from course_lib.teaching.grading.session import Session, sandbox_env
from course_lib.teaching.notebook import cell_source, parse_python

__all__ = ["CellRun", "RunReport", "cell_head", "make_client_class", "error_line", "run_notebook", "NotebookRun"]


@dataclass
class CellRun:
    index: int  # position in the notebook, from 0, markdown cells included
    status: str  # ok | error | timeout | not run
    detail: str = ""
    head: str = ""  # the first code line of the cell


def cell_head(cell) -> str:
    for line in cell_source(cell).split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            return line if len(line) <= 60 else line[:57] + "..."
    return ""


@dataclass
class RunReport:
    status: str  # ok | error | timeout | crashed | not run
    message: str
    cells: list[CellRun] = field(default_factory=list)
    events: list[tuple[int, str]] = field(default_factory=list)  # (cell index, tamper reason)

    def record(self) -> dict:
        return {"status": self.status, "message": self.message, "cells": [asdict(c) for c in self.cells],
                "events": [list(e) for e in self.events]}


def make_client_class():
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        """nbclient's NotebookClient keeping at most ``output_limit`` characters of output per cell."""

        output_limit = 20_000

        def output(self, outs, msg, display_id, cell_index):
            used = self.__dict__.setdefault("_used", {})
            content = msg.get("content", {})
            size = len(content.get("text", "")) + sum(len(str(v)) for v in (content.get("data") or {}).values())
            size += sum(len(str(x)) for x in content.get("traceback", []) or [])
            room = self.output_limit - used.get(cell_index, 0)
            if msg.get("msg_type") == "stream" and size > room > 0:  # keep the head of a huge stream message
                note = f"\n[autograder: output beyond {self.output_limit} characters dropped]\n"
                content["text"] = content.get("text", "")[:room] + note
                self.__dict__.setdefault("_dropped", {})[cell_index] = size - room
                size = room
            if used.get(cell_index, 0) + size > self.output_limit and msg.get("msg_type") != "error":
                dropped = self.__dict__.setdefault("_dropped", {})
                if cell_index not in dropped:
                    import nbformat

                    outs.append(nbformat.v4.new_output("stream", name="stderr", text=(
                        f"\n[autograder: output beyond {self.output_limit} characters dropped]\n")))
                dropped[cell_index] = dropped.get(cell_index, 0) + size
                return None
            used[cell_index] = used.get(cell_index, 0) + size
            return super().output(outs, msg, display_id, cell_index)

    return CappedClient


def error_line(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = str(out.get("evalue", "")).strip().split("\n")[0]
            return f"{out.get('ename', 'Error')}: {value[:300]}"
    return None


def run_notebook(session: Session, nb, work: Path, lib: LibraryGuard | None) -> RunReport:
    """Run ``nb`` (cwd ``work/run``, the private ``lib`` first on the path); the executed cells stay in ``nb``."""
    return NotebookRun(session, nb, work, lib).run()


class NotebookRun:
    """One notebook run; :meth:`run` executes the code cells in order and reports them."""

    def __init__(self, session: Session, nb, work: Path, lib: LibraryGuard | None):
        self.s, self.nb, self.work, self.lib = session, nb, work, lib
        self.limits = session.limits
        self.kdir = work / "kernel"  # the only folder of the host the sandboxed kernel may write
        self.audit_log = self.kdir / "audit.log"
        self.cgroup: Cgroup | None = None
        self.cells: list[CellRun] = []
        self.events: list[tuple[int, str]] = []
        self.status, self.stop = "ok", ""
        self.code_indices = [i for i, c in enumerate(nb.cells) if c.get("cell_type") == "code"]
        self._log_offset = 0

    def _kernel(self) -> tuple[dict, object]:
        """The kernel's environment and kernel manager (startup file with the guard written first)."""
        from jupyter_client import AsyncKernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        self.kdir.mkdir(mode=0o700, exist_ok=True)
        ipython = self.kdir / "ipython"  # IPython wants it writable (else it skips the startup files)
        startup = ipython / "profile_default" / "startup"
        startup.mkdir(parents=True, exist_ok=True)
        self.audit_log.touch()
        hidden = [self.s.hidden] if self.s.hidden else []
        (startup / "00-autograder.py").write_text(
            kernel_startup_source(hidden, self.s.protected(self.lib), self.audit_log, parse=parse_python),
            encoding="utf-8")
        if self.s.sandboxed:
            env = boxed_env(self.limits.fast, "1")
            lib_root = self.s.pristine.parent
        else:
            env = sandbox_env(self.limits.fast, os.environ.get("OMP_NUM_THREADS", "1"))
            lib_root = self.lib.root.parent
        env["IPYTHONDIR"] = str(ipython)
        env["PYTHONPATH"] = os.pathsep.join([str(lib_root), *filter(None, [env.get("PYTHONPATH")])])
        ksm = KernelSpecManager(kernel_dirs=[str(self._kernel_spec())])
        km_kwargs = {"kernel_name": "course-grader", "kernel_spec_manager": ksm}
        if self.s.namespace or self.s.sandboxed:  # Unix-socket IPC: TCP would not cross the network namespace
            km_kwargs.update(transport="ipc", ip=str(self.kdir / "k"))
        km = AsyncKernelManager(**km_kwargs)
        km.connection_file = str(self.kdir / "connection.json")
        return env, km

    def _kernel_spec(self) -> Path:
        """The kernel spec folder of this run: the kernel started in the sandbox (or as before with --unsafe)."""
        if not self.s.sandboxed:
            return self.s.kernel_dir
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        self.cgroup = Cgroup(self.limits.box.nproc)
        spec = {"argv": self.s.boxed(argv, rw=[self.kdir], cgroup=self.cgroup),
                "display_name": "course grader (sandbox)", "language": "python"}
        folder = self.work / "kernelspec"
        (folder / "course-grader").mkdir(parents=True, exist_ok=True)
        (folder / "course-grader" / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
        return folder

    def shutdown(self, km) -> None:
        """Stop the kernel and every process it started (nbclient does not when it is given the manager)."""
        from jupyter_core.utils import run_sync

        try:
            if km is not None and run_sync(km.is_alive)():
                run_sync(km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001, S110 - the cgroup / process kill below still runs
            pass
        try:
            proc = getattr(getattr(km, "provisioner", None), "process", None)
            if proc is not None and proc.poll() is None:
                proc.kill()
        except Exception:  # noqa: BLE001, S110
            pass
        if self.cgroup is not None:
            self.cgroup.kill()

    def collect(self, index: int) -> None:
        """New audit-log lines and changed course_lib files, attributed to cell ``index`` (-1: none)."""
        data = self.audit_log.read_bytes()
        new, self._log_offset = data[self._log_offset:], len(data)
        for line in new.decode("utf-8", "replace").splitlines():
            if line.strip() and (index, line.strip()) not in self.events:
                self.events.append((index, line.strip()))
        for rel in self.lib.verify() if self.lib is not None else []:
            self.events.append((index, f"changed the course_lib file {rel}"))

    def run(self) -> RunReport:
        limits = self.limits
        env, km = self._kernel()
        client = make_client_class()(self.nb, km=km, timeout=int(limits.cell_timeout), allow_errors=True,
                                     record_timing=False, interrupt_on_timeout=False, startup_timeout=120,
                                     iopub_timeout=4, shutdown_kernel="immediate")
        client.output_limit = limits.output_limit
        kernel_log = open(self.work / "kernel.log", "wb")  # noqa: SIM115 - closed in finally
        try:
            deadline = time.monotonic() + limits.notebook_timeout
            with client.setup_kernel(env=env, cwd=str(self.work / "run"), stdout=kernel_log, stderr=kernel_log):
                for n, index in enumerate(self.code_indices):
                    if not self._run_cell(client, n, index, deadline):
                        break
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot start must not stop the grading
            return RunReport("error", f"the notebook could not be run: {type(exc).__name__}: {exc}", self.cells,
                             self.events)
        finally:
            self.shutdown(km)
            kernel_log.close()
            self.collect(-1)
        return RunReport(self.status, run_message(self.status, self.stop, self.cells, len(self.code_indices)),
                         self.cells, self.events)

    def _not_run(self, n: int) -> None:
        self.cells += [CellRun(i, "not run") for i in self.code_indices[n:]]

    def _run_cell(self, client, n: int, index: int, deadline: float) -> bool:
        """Execute the ``n``-th code cell (notebook cell ``index``); False when the run stops there."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        limits = self.limits
        cell = self.nb.cells[index]
        remaining = deadline - time.monotonic()
        at_limit = f"stopped at the notebook time limit ({limits.notebook_timeout:g} s)"
        if remaining < 1:
            self.stop, self.status = at_limit, "timeout"
            self._not_run(n)
            return False
        by_notebook = remaining < limits.cell_timeout
        head = cell_head(cell)
        client.timeout = max(1, int(min(limits.cell_timeout, remaining)))
        try:
            client.execute_cell(cell, index)
        except CellTimeoutError:
            self.cells.append(CellRun(index, "timeout", (
                at_limit if by_notebook else f"did not finish within {limits.cell_timeout:g} s"), head))
            self.status = "timeout"
            self.collect(index)
            # the run stops at its first time-out: an infinite loop costs one --cell-timeout, however many
            # later cells call the looping function
            self._not_run(n + 1)
            self.stop = at_limit if by_notebook else "the run stops at the first cell time-out"
            return False
        except DeadKernelError:
            self.cells.append(CellRun(index, "error", "the kernel died (crash, os._exit or out of memory)", head))
            self._not_run(n + 1)
            self.status, self.stop = "crashed", "the kernel died"
            self.collect(index)
            return False
        except Exception as exc:  # noqa: BLE001 - e.g. ValueError('Invalid Signature') from the kernel client
            # The kernel's messages could not be read: a copy of the kernel made by os.fork() in the cell (whose
            # exec failed, so it went on running the kernel's code on the same sockets) or a kernel killed in the
            # middle of a message garbles the channel. The cell's outputs received so far are kept.
            partial = error_line(cell)
            self.cells.append(CellRun(index, "error", (
                f"the kernel's messages could not be read ({type(exc).__name__}: {str(exc)[:120]}); it was "
                "stopped, possibly out of memory or forked by the cell" + (f"; before that: {partial}" if partial
                                                                             else "")), head))
            self._not_run(n + 1)
            self.status, self.stop = "crashed", "the kernel's messages could not be read"
            self.collect(index)
            return False
        err = error_line(cell)
        self.cells.append(CellRun(index, "error" if err else "ok", err or "", head))
        if err and self.status == "ok":
            self.status = "error"
        self.collect(index)
        return True


def run_message(status: str, stop: str, cells: list[CellRun], n_code: int) -> str:
    if status == "ok":
        return f"ran top to bottom without errors ({n_code} code cells)"
    parts = []
    errors = [c for c in cells if c.status == "error"]
    timeouts = [c for c in cells if c.status == "timeout"]
    not_run = [c.index for c in cells if c.status == "not run"]
    if errors:
        parts.append("errors in " + ", ".join(f"cell {c.index} `{c.head}` ({c.detail})" for c in errors[:3])
                     + (f" and {len(errors) - 3} more" if len(errors) > 3 else ""))
    if timeouts:
        parts.append("time-outs in " + ", ".join(f"cell {c.index} `{c.head}` ({c.detail})" for c in timeouts))
    if not_run:
        parts.append(f"{stop}: the last {len(not_run)} code cells did not run")
    return "; ".join(parts) + " (cells are numbered from 0, markdown cells included)"

