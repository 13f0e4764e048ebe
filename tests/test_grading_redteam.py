"""The grader's own red team: hostile submissions, written here by code at test time, graded in the real sandbox.

Each hostile submission is the student notebook 00 with one exercise cell (``00.pairwise_distances``,
1 point) replaced by an attack whose honest answer would be wrong (``WRONG``: zeros); the other
exercises are the distributed stubs. An attack "works" when it turns that into points, changes
another submission, the gradebook, the library, the virtual environment or the checkout, leaks the
hidden tests into the feedback, stops the grader or leaves a process running. Every case asserts its
exact verdict (flagged, or 0 points with the stated status) and, for the whole run: the grader
returned normally, the honest classmates' rows are right, no file outside the results changed, no
process of a sandbox is left.

Two grading runs (module fixtures): ``exercises`` (``--no-run``: the exercise processes) and ``kernel``
(tiny notebooks with the notebook run: attacks from a kernel cell). They need bubblewrap
(``apt-get install bubblewrap``; CI installs it); without it the grader must refuse to grade.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import site
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from course_lib.teaching import grading
from course_lib.teaching.grading.protocol import validate_result
from course_lib.teaching.grading.sandbox import Cgroup, sandbox_problem

REPO = Path(__file__).resolve().parents[1]
HIDDEN = REPO / "grading" / "hidden"
SOURCE = REPO / "notebooks" / "00_symmetry_primer.py"
EX = "00.pairwise_distances"

pytestmark = [
    pytest.mark.skipif(not SOURCE.is_file(), reason="notebook 00 not there"),
    pytest.mark.skipif(sandbox_problem() is not None and not os.environ.get("CI"),
                       reason=f"no sandbox here: {sandbox_problem()}"),
]

WRONG = "    return pos.sum() * 0  # a scalar: wrong from the first (fatal) shape check on\n"
RIGHT = "    diff = pos[:, None, :] - pos[None, :, :]\n    return (diff**2).sum(dim=-1).sqrt()\n"
DEF = "def pairwise_distances(pos):\n"
PWNED = "PWNED-by-a-hostile-submission"


def _cell(prelude: str = "", body: str = WRONG) -> str:
    return "import torch\n" + textwrap.dedent(prelude) + "\n" + DEF + textwrap.indent(textwrap.dedent(body), "    ")


def attacks(ctx: dict) -> dict[str, tuple[str, set[str]]]:
    """``name: (exercise cell, allowed statuses)`` (points are always 0). ``ctx``: paths an attacker aims at."""
    return {
        # --- forged verdicts
        "json_dump": (_cell("""
            import json
            _dump = json.dump
            def dump(obj, fh, **kw):
                if isinstance(obj, dict) and "fraction" in obj:
                    obj.update(fraction=1.0, failed=[], error=None, n_passed=obj.get("n_total", 1))
                return _dump(obj, fh, **kw)
            json.dump = dump
            """), {"flagged"}),
        "json_encoder_class": (_cell("""
            import json.encoder as E
            _it = E.JSONEncoder.iterencode
            def iterencode(self, o, _one_shot=False):
                if isinstance(o, dict) and "fraction" in o:
                    o.update(fraction=1.0, failed=[], error=None, n_passed=o.get("n_total", 1))
                return _it(self, o, _one_shot)
            E.JSONEncoder.iterencode = iterencode
            """), {"flagged"}),
        "main_module": (_cell("""
            import __main__
            __main__.run_hidden_test = lambda *a, **k: {"status": "checked", "fraction": 1.0, "n_passed": 9,
                                                         "n_total": 9, "failed": [], "flags": []}
            __main__.snapshot_diff = lambda a, b: []
            """), {"fail"}),
        "import_machinery": (_cell("""
            import sys, importlib.abc
            class Finder(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path=None, target=None):
                    return None
            sys.meta_path.insert(0, Finder())
            """), {"flagged"}),
        "gc_walk": (_cell(body="""
            import gc
            for o in getattr(gc, "get_" + "objects")():
                if type(o).__name__ == "Feedback":
                    o.failed.clear()
            """ + textwrap.dedent(WRONG)), {"flagged"}),
        "frame_walk": (_cell(body="""
            f = getattr(__import__("sys"), "_get" + "frame")(1)
            f.f_locals.get("fb") and f.f_locals["fb"].failed.clear()
            """ + textwrap.dedent(WRONG)), {"flagged"}),
        "traceback_frames": (_cell(body="""
            try:
                raise KeyError
            except KeyError as e:
                f = e.__traceback__.tb_frame.f_back
            """ + textwrap.dedent(WRONG)), {"flagged"}),
        "gc_module_patched": (_cell("""
            import gc
            gc.collect = lambda *a: 0
            """), {"flagged"}),
        "loader_patched": (_cell("""
            import importlib.util
            _spec = importlib.util.spec_from_file_location
            importlib.util.spec_from_file_location = lambda *a, **k: _spec(*a, **k)
            """), {"flagged"}),
        "planted_module": (_cell("""
            import os
            os.makedirs("/tmp/work/course_lib/teaching", exist_ok=True)
            open("/tmp/work/json.py", "w").write("raise SystemExit")
            open("/tmp/work/course_lib/teaching/checks.py", "w").write("PASS = True")
            """), {"fail"}),
        # --- objects that lie about their values
        "tensor_subclass": (_cell("""
            class Liar(torch.Tensor):
                @classmethod
                def __torch_function__(cls, func, types, args=(), kwargs=None):
                    return super().__torch_function__(func, types, args, kwargs or {})
            """, body="return (pos.sum() * 0).as_subclass(Liar)\n"),
            {"flagged", "fail"}),  # its values cross as bytes: the checker never holds the subclass
        "torch_function_mode": (_cell("""
            from torch.overrides import TorchFunctionMode
            class Yes(TorchFunctionMode):
                def __torch_function__(self, func, types, args=(), kwargs=None):
                    if func in (torch.allclose, torch.equal):
                        return True
                    return func(*args, **(kwargs or {}))
            Yes().__enter__()
            """), {"flagged"}),
        "tensor_attribute_added": (_cell("""
            torch.Tensor.looks_right = property(lambda self: True)
            """), {"flagged"}),
        "tensor_method_replaced": (_cell("""
            torch.Tensor.allclose = lambda *a, **k: True
            """), {"flagged"}),
        # --- the channel between the student's process and the checker's
        "forged_channel": (_cell("""
            import glob, json, socket, struct
            def _frame(s, obj):
                body = json.dumps(obj).encode()
                s.sendall(struct.pack(">I", len(body)) + body)
            _keep = []
            for _path in glob.glob("/tmp/**/channel", recursive=True):
                try:
                    _s = socket.socket(socket.AF_UNIX)
                    _s.connect(_path)
                    _frame(_s, {"status": "ready", "target": {"$": "handle", "id": 0, "mro": []}})
                    _frame(_s, {"re": "ok", "value": 1.0})
                    _frame(_s, {"status": "checked", "fraction": 1.0, "n_passed": 9, "n_total": 9})
                    _keep.append(_s)
                except OSError:
                    pass
            """), {"fail", "error", "timeout"}),
        "claims_to_be_a_tensor": (_cell("""
            class Fake:
                shape = (6, 6)
            Fake.__module__, Fake.__qualname__ = "torch._tensor", "Tensor"
            """, body="return Fake()\n"), {"fail"}),
        "exception_str_bomb": (_cell("""
            class Boom(Exception):
                def __str__(self):
                    raise SystemExit(0)
            """, body="raise Boom()\n"), {"fail"}),
        "oversized_answer": (_cell(body="return torch.zeros(40_000_000, dtype=torch.float64)\n"), {"fail", "error"}),
        "write_checker_results": (_cell("""
            import glob, os
            for _d in glob.glob("/tmp/**/chk", recursive=True):
                for _root, _dirs, _files in os.walk(_d):
                    open(os.path.join(_root, "result.json"), "w").write('{"status": "checked", "fraction": 1.0}')
            """), {"fail"}),
        # --- a crash in code the student compiled is the student's
        "crash_in_string": (_cell("""
            _ns = {}
            exec(compile("def helper(pos):\\n    raise RuntimeError('boom')\\n", "<string>", "exec"), _ns)
            """, body="return _ns['helper'](pos)\n"), {"fail"}),
        # --- one submission reaching the others, the grader, the environment
        "setsid_background": (_cell(f"""
            import subprocess
            subprocess.Popen(["setsid", "sh", "-c", "sleep 8; echo {PWNED} > {ctx['out']}/gradebook.csv"])
            """), {"flagged"}),
        "subprocess_edits_pristine": (_cell("""
            import subprocess
            subprocess.run("for f in /tmp/grade-*/pristine/course_lib/teaching/checks.py; do echo 'x' >> $f; done",
                           shell=True)
            """), {"flagged"}),
        "pth_into_venv": (_cell(f"""
            open({ctx['site']!r} + "/zz_redteam.pth", "w").write("import os; os.system('echo {PWNED}')")
            """), {"error"}),
        "edit_checkout": (_cell(f"""
            open({str(REPO / 'course_lib' / 'teaching' / 'checks.py')!r}, "a").write("# {PWNED}")
            """), {"error", "flagged"}),
        "overwrite_classmate": (_cell(f"""
            open({ctx['subs']!r} + "/honest.ipynb", "w").write("{PWNED}")
            """), {"error"}),
        "copy_classmate": (_cell(f"""
            import json
            nb = json.load(open({ctx['subs']!r} + "/honest.ipynb"))
            exec("".join(next(c["source"] for c in nb["cells"] if c["metadata"].get("exercise") == "{EX}")))
            """), {"error"}),
        "kill_grader": (_cell("""
            import os, signal
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(-1, signal.SIGKILL)
            """), {"flagged"}),
        "hidden_via_subprocess": (_cell(f"""
            import subprocess
            print(subprocess.run(["cat", {str(HIDDEN / 'nb00.py')!r}], capture_output=True, text=True).stdout)
            """), {"flagged"}),
        "hidden_via_open": (_cell(body=f"""
            print(open({str(HIDDEN / 'nb00.py')!r}).read())
            """ + textwrap.dedent(WRONG)), {"flagged"}),
        # --- resources
        "huge_output": (_cell(body="print('x' * 50_000_000)\n" + textwrap.dedent(WRONG)), {"fail"}),
        "huge_file": (_cell("open('/tmp/big', 'wb').write(b'x' * 90_000_000)\n"), {"error"}),
        "memory_bomb": (_cell("torch.empty(3_000_000_000, dtype=torch.uint8).fill_(1)\n"), {"error"}),
        "fork_bomb": (_cell("""
            import os
            while True:
                os.fork()
            """), {"flagged"}),
        "network": (_cell("""
            import socket
            socket.create_connection(("1.1.1.1", 80), timeout=3)
            """), {"error"}),
        "huge_message": (_cell(body="raise ValueError('=' + 'x' * 1_000_000)\n"), {"fail"}),
    }


def _student_notebook():
    sys.path.insert(0, str(REPO / "grading" / "samples"))
    try:
        import make_samples
    finally:
        sys.path.pop(0)
    return make_samples.student_notebook()


def _with_cell(nb, source: str):
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.get("metadata", {}).get("exercise") == EX:
            cell.source = source
    return nb


def _hashes(*folders: Path) -> dict[str, str]:
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _leftovers() -> list[str]:
    """Processes of a sandbox (bwrap, or a kernel / exercise process of this test run) still alive."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if cmd.startswith(("bwrap", "/usr/bin/bwrap")) and "/tmp/grade-" in cmd:
            run = re.search(r"/tmp/grade-[^/ ]+", cmd).group(0)
            if Path(run).exists():
                continue  # another grading run, still going (a run removes its folder when it ends)
            found.append(f"{pid}: {cmd[:120]}")
    cgroups = Path("/sys/fs/cgroup/pids")
    found += [str(p) for p in cgroups.glob(f"course-grader-{os.getpid()}-*")] if cgroups.is_dir() else []
    return found


def _rows(out: Path) -> dict[tuple[str, str], dict]:
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as fh:
        return {(r["student"], r["exercise"]): r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def exercises(tmp_path_factory):
    root = tmp_path_factory.mktemp("redteam")
    subs, out = root / "subs", root / "out"
    subs.mkdir()
    ctx = {"out": str(out), "subs": str(subs), "site": site.getsitepackages()[0]}
    nb = _student_notebook()
    nbformat.write(_with_cell(nb, _cell(body=RIGHT)), subs / "honest.ipynb")
    for name, (cell, _) in attacks(ctx).items():
        nbformat.write(_with_cell(nb, cell), subs / f"{name}.ipynb")
    # the submissions folder itself
    nbformat.write(_with_cell(nb, _cell(body=RIGHT)), subs / "UPPER.IPYNB")
    nbformat.write(_with_cell(nb, _cell(body=RIGHT)), subs / "Zoë.ipynb")
    nbformat.write(_with_cell(nb, _cell(body=RIGHT)), subs / "Zoé.ipynb")
    nbformat.write(_with_cell(nb, _cell(body=RIGHT)), subs / "=HYPERLINK(1).ipynb")
    nbformat.write(_with_cell(nb, _cell(body=RIGHT)), subs / ".hidden.ipynb")
    os.mkfifo(subs / "fifo.ipynb")
    (subs / "link_to_instructor.ipynb").symlink_to(REPO / "grading" / "samples" / "nb00" / "correct.ipynb")
    (subs / "link_to_classmate.ipynb").symlink_to(subs / "honest.ipynb")
    watched = [subs, REPO / "course_lib", HIDDEN]
    before = _hashes(*watched)
    site_before = sorted(os.listdir(ctx["site"]))
    t0 = time.monotonic()
    rc = grading.main([str(subs), "--out", str(out), "--hidden", str(HIDDEN), "--no-run", "--exercise-timeout", "20",
                       "--jobs", "2"])
    elapsed = time.monotonic() - t0
    time.sleep(10)  # longer than the background process of "setsid_background" would wait
    return {"rc": rc, "out": out, "rows": _rows(out), "ctx": ctx, "elapsed": elapsed,
            "unchanged": before == _hashes(*watched), "site_unchanged": site_before == sorted(os.listdir(ctx["site"])),
            "leftovers": _leftovers()}


def test_the_grader_survives_and_nothing_outside_the_results_changes(exercises):
    assert exercises["rc"] == 0
    assert exercises["unchanged"], "a submission, course_lib or the hidden tests changed"
    assert exercises["site_unchanged"], "a file appeared in site-packages"
    assert exercises["leftovers"] == []
    text = (exercises["out"] / "gradebook.csv").read_text(encoding="utf-8")
    assert PWNED not in text and text.startswith("student,notebook,exercise")


def test_honest_classmates_are_graded(exercises):
    rows = exercises["rows"]
    for student in ("honest", "UPPER", grading.student_id("Zoë"), grading.student_id("Zoé")):
        assert rows[student, EX]["status"] == "pass", (student, rows[student, EX])
    assert grading.student_id("Zoë") != grading.student_id("Zoé")


@pytest.mark.parametrize("name", sorted(attacks({"out": "", "subs": "", "site": ""})))
def test_attack_gets_its_exact_verdict(exercises, name):
    row = exercises["rows"][name, EX]
    allowed = attacks(exercises["ctx"])[name][1]
    assert row["status"] in allowed and row["points"] == "0.00", (name, row["status"], row["message"][:500])
    if name == "crash_in_string":
        assert "raised RuntimeError: boom" in row["message"] and "left out" not in row["message"]
    feedback = (exercises["out"] / "feedback" / f"{name}.md").read_text(encoding="utf-8")
    assert "HIDDEN = {" not in feedback and "def _pairwise_extra" not in feedback  # no hidden-test source
    assert len(row["message"]) <= 4_100


def test_entries_that_are_not_regular_files_are_reported(exercises):
    rows = exercises["rows"]
    messages = {k[0]: r["message"] for k, r in rows.items() if k[1] == "?"}
    assert any("fifo.ipynb" in m and "FIFO" in m for m in messages.values())
    assert any("link_to_instructor.ipynb" in m and "symbolic link" in m for m in messages.values())
    assert any("link_to_classmate.ipynb" in m and "symbolic link" in m for m in messages.values())
    assert any(".hidden.ipynb" in m and "dot" in m for m in messages.values())
    for (student, _), row in rows.items():
        assert row["status"] != "pass" or not student.startswith(("link", "fifo", "."))


def test_spreadsheet_formulas_are_neutralised(exercises):
    for line in (exercises["out"] / "gradebook.csv").read_text(encoding="utf-8").splitlines():
        for cell in next(csv.reader([line])):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


def test_a_second_run_never_deletes_the_first_without_overwrite(exercises, tmp_path):
    out = exercises["out"]
    empty = tmp_path / "subs"
    empty.mkdir()
    before = (out / "gradebook.csv").read_bytes()
    assert grading.main([str(empty), "--out", str(out), "--no-run"]) == 2
    assert (out / "gradebook.csv").read_bytes() == before


def test_results_are_validated_by_the_parent():
    assert validate_result({"status": "checked", "fraction": 5.0, "n_passed": 1, "n_total": 1})["status"] == "error"
    assert validate_result({"status": "checked", "fraction": float("nan")})["status"] == "error"
    assert validate_result({"status": "pass"})["status"] == "error"
    assert validate_result(["checked"])["status"] == "error"
    ok = validate_result({"status": "checked", "fraction": 0.5, "n_passed": 1, "n_total": 2, "failed": ["x" * 10**6]})
    assert ok["fraction"] == 0.5 and len(ok["failed"][0]) < 3_000


# --------------------------------------------------------------------------------------------
# attacks from a notebook cell (the notebook run in its kernel)
# --------------------------------------------------------------------------------------------

KERNEL_ATTACKS = {
    "k_setsid_gradebook": f"""
        import subprocess
        subprocess.Popen(["setsid", "sh", "-c", "sleep 6; echo {PWNED} > {{out}}/gradebook.csv; echo {PWNED} > /tmp/x"])
        """,
    "k_edit_pristine": f"""
        import glob, subprocess
        subprocess.run("for f in /tmp/grade-*/pristine/course_lib/teaching/checks.py "
                       "{{repo}}/course_lib/teaching/checks.py; do echo '# {PWNED}' >> $f; done; "
                       "echo {PWNED} > {{subs}}/honest.ipynb", shell=True)
        """,
    "k_kill_everything": """
        import os, signal
        os.kill(-1, signal.SIGKILL)
        """,
    "k_resources": """
        import os
        try:
            open("/tmp/big", "wb").write(b"x" * 90_000_000)
        except OSError as e:
            print("write stopped:", e)
        print("y" * 30_000_000)
        for _ in range(500):
            try:
                if os.fork() == 0:
                    os.execv("/bin/sleep", ["sleep", "60"])
            except OSError as e:
                print("fork stopped:", e); break
        import torch
        torch.empty(3_000_000_000, dtype=torch.uint8).fill_(1)
        """,
}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    root = tmp_path_factory.mktemp("redteam_kernel")
    subs, out = root / "subs", root / "out"
    subs.mkdir()
    fmt = {"out": str(out), "subs": str(subs), "repo": str(REPO)}
    right = _cell(body=RIGHT)

    def tiny(first: str) -> nbformat.NotebookNode:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(first).format(**fmt)),
                    nbformat.v4.new_code_cell(right, metadata={"exercise": EX, "points": 1})]
        return nb

    nbformat.write(tiny("x = 1"), subs / "honest.ipynb")
    for name, code in KERNEL_ATTACKS.items():
        nbformat.write(tiny(code), subs / f"{name}.ipynb")
    watched = [REPO / "course_lib"]
    before, subs_before = _hashes(*watched), _hashes(subs)
    rc = grading.main([str(subs), "--out", str(out), "--hidden", str(HIDDEN), "--notebook", "00_symmetry_primer",
                       "--cell-timeout", "30", "--notebook-timeout", "90", "--exercise-timeout", "20", "--jobs", "2"])
    time.sleep(8)
    return {"rc": rc, "out": out, "rows": _rows(out), "unchanged": before == _hashes(*watched),
            "subs_unchanged": subs_before == _hashes(subs), "leftovers": _leftovers()}


def test_kernel_attacks_change_nothing_outside_their_sandbox(kernel):
    assert kernel["rc"] == 0
    assert kernel["unchanged"] and kernel["subs_unchanged"]
    assert kernel["leftovers"] == []
    assert PWNED not in (kernel["out"] / "gradebook.csv").read_text(encoding="utf-8")
    rows = kernel["rows"]
    for name in ["honest", *KERNEL_ATTACKS]:  # the exercise itself is right: the attacks did not reach the grading
        row = rows.get((name, EX), {})
        assert row.get("status") == "pass" and row.get("points") == "1.00", (
            name, row or [r for (student, _), r in rows.items() if student == name])


@pytest.mark.xfail(strict=False, reason="intermittent (issue 14): after this cell (90 MB write, 30 MB print, fork "
                   "bomb under the pids limit, 3 GB allocation) the kernel client sometimes failed with 'Invalid "
                   "Signature'. Forked copies of the kernel are now stopped (guard.fork_safe_kernel, tested in "
                   "test_grading_units) and a garbled channel is recorded as a crashed run that keeps its cells; "
                   "kept non-strict until the cause is confirmed. The grader, the points and the other submissions "
                   "are never affected (test_kernel_attacks_change_nothing_outside_their_sandbox)")
def test_kernel_resource_limits_stop_the_cell_with_a_message(kernel):
    import json

    runs = {r["student"]: r for r in json.loads((kernel["out"] / "runs.json").read_text())}
    cells = runs["k_resources"]["cells"]
    assert cells, runs["k_resources"]
    # the 3 GB allocation is stopped by the memory limit: torch raises "can't allocate memory", or the kernel dies
    # when the limit is hit inside its own machinery and the run says it may be out of memory
    assert cells[0]["status"] == "error", cells[0]
    assert "can't allocate memory" in cells[0]["detail"] or "out of memory" in cells[0]["detail"], cells[0]
    executed = kernel["out"] / "executed" / "k_resources" / "00_symmetry_primer.ipynb"
    assert executed.stat().st_size < 1_000_000
    text = executed.read_text(encoding="utf-8")
    assert "write stopped" in text and "File too large" in text
    probe = Cgroup(1)
    if probe.path is not None:  # the process count is limited where a pids cgroup can be made (root here and in CI)
        probe.kill()
        assert "fork stopped" in text
    assert runs["k_kill_everything"]["status"] in ("crashed", "error", "ok")
