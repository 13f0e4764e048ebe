"""Build the sample submissions of notebook 00 from its student version (deterministic).

Run from the repository root after editing notebook 00 (then regrade them and review the new
``expected_gradebook.csv``, see grading/README.md)::

    python grading/samples/make_samples.py

Each sample is the student notebook with some exercise cells filled in, the way a student does it:
the ``# YOUR CODE HERE`` / ``raise NotImplementedError(...)`` lines of the stub are replaced by a body
(or the whole cell by new code). The student notebook is ``notebooks/student/00_symmetry_primer.ipynb``;
when it is missing or out of date it is built in memory from ``notebooks/00_symmetry_primer.py`` with
the same function ``python -m course_lib.teaching.assign sync`` uses.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

from course_lib.teaching import assign

REPO = Path(__file__).resolve().parents[2]
SLUG = "00_symmetry_primer"
OUT = Path(__file__).resolve().parent / "nb00"

# --------------------------------------------------------------------------------------------
# bodies (replace the stub lines) and whole cells
# --------------------------------------------------------------------------------------------

PAIRWISE = """\
diff = pos[:, None, :] - pos[None, :, :]
return (diff**2).sum(dim=-1).sqrt()"""

SYMMETRIZE = """\
outputs = [f(x @ g.T) for g in group]
return torch.stack(outputs).mean(dim=0)"""

RADIAL = """\
diff = pos[:, None, :] - pos[None, :, :]
r = (diff**2).sum(dim=-1, keepdim=True).sqrt()
return (phi(r) * diff).sum(dim=1)"""

GATED = """\
return torch.sigmoid(scalars)[..., None] * vectors"""

CORRECT = {"00.pairwise_distances": PAIRWISE, "00.symmetrize": SYMMETRIZE, "00.radial_field": RADIAL,
           "00.gated_nonlinearity": GATED}

# subtly wrong: the sum over the group instead of the average (invariant, but the wrong values)
SYMMETRIZE_SUM = """\
outputs = [f(x @ g.T) for g in group]
return torch.stack(outputs).sum(dim=0)"""

# a broadcasting bug: [N, C] * [N, C, 3] raises for C != 3
GATED_NO_AXIS = """\
return torch.sigmoid(scalars) * vectors"""

INFINITE = """\
while True:
    pass"""

# Right shapes and right values on the public check (Gaussian vectors of size ~1, never beyond 4),
# but a component-wise clamp: not equivariant as soon as a component exceeds 4 (the hidden tests
# use vectors of size ~10), exactly like a ReLU applied to vectors.
GATED_CLAMP = """\
v = vectors.clamp(-4.0, 4.0)  # clip outliers for numerical stability
return torch.sigmoid(scalars)[..., None] * v"""

CHEAT_PAIRWISE_CELL = '''\
import course_lib.symmetry

# every symmetry check passes now
course_lib.symmetry.equivariance_error = lambda *args, **kwargs: 0.0


def pairwise_distances(pos):
    """Return D with D[i, j] = |pos[i] - pos[j]|, shape [N, N], for pos of shape [N, d]."""
    return (pos[:, None, :] - pos[None, :, :]).abs().sum(dim=-1)  # L1 distance: not rotation invariant
'''

CHEAT_SYMMETRIZE_CELL = '''\
import course_lib.teaching.checks
from course_lib.teaching.checks import CheckResult


def _always_pass(checker, exercise_id, obj, **kwargs):
    return CheckResult(exercise_id, 1, 1, [])


course_lib.teaching.checks.run_checker = _always_pass


def symmetrize(f, x, group):
    """Return (1/|G|) sum_g f(x @ g.T) for points x [M, d] and a list of [d, d] matrices `group`."""
    return f(x)
'''

CHEAT_RADIAL_CELL = '''\
import json
from importlib.metadata import distribution
from pathlib import Path

# where was course_lib installed from? (pip keeps the checkout's URL for `pip install -e .`)
try:
    _repo = Path(json.loads(distribution("course_lib").read_text("direct_url.json"))["url"][len("file://"):])
    _answers = (_repo / "grading" / "hidden" / "nb00.py").read_text()
except Exception:
    _answers = ""


def radial_field(pos, phi):
    """Return v [N, d] with v_i = sum_j phi(|x_i - x_j|) (x_i - x_j); phi maps [..., 1] -> [..., 1]."""
    diff = pos[:, None, :] - pos[None, :, :]
    r = (diff**2).sum(dim=-1, keepdim=True).sqrt()
    return (phi(r) * diff).sum(dim=1)
'''

PERMUTATION_ANSWER = """\
Chain rule on E(Px) = E(x): P^T grad E(Px) = grad E(x). P is orthogonal (P^-1 = P^T), so
grad E(Px) = P grad E(x), and F = -grad E gives F(Px) = P F(x)."""

#: sample name -> {exercise id: body (str) or ("cell", whole cell source)}, and options; "responses": the
#: prediction cells' new source and the short answers' text, by id
SAMPLES: dict[str, dict] = {
    # a wrong prediction ("a") still earns the prediction's point: it is graded for being committed
    "correct": {"fill": CORRECT, "responses": {"00.field_translation": 'field_prediction = "a"',
                                                "00.permutation_forces": PERMUTATION_ANSWER}},
    "partial": {
        "fill": {"00.pairwise_distances": PAIRWISE, "00.symmetrize": SYMMETRIZE_SUM,
                 "00.gated_nonlinearity": GATED_NO_AXIS},  # 00.radial_field is left as the stub
        "drop_metadata": ["00.symmetrize"],  # as after re-creating the cell: the grader finds it by name
    },
    "infinite_loop": {"fill": dict(CORRECT, **{"00.pairwise_distances": INFINITE})},
    "broken_equivariance": {"fill": dict(CORRECT, **{"00.gated_nonlinearity": GATED_CLAMP})},
    "cheater": {"fill": dict(CORRECT, **{"00.pairwise_distances": ("cell", CHEAT_PAIRWISE_CELL),
                                         "00.symmetrize": ("cell", CHEAT_SYMMETRIZE_CELL),
                                         "00.radial_field": ("cell", CHEAT_RADIAL_CELL)}),
                "responses": {"00.field_translation": "field_prediction = __import__('os').getcwd()",
                              "00.permutation_forces": '=HYPERLINK("http://example.invalid", "see my proof")'}},
}

_STUB_RE = re.compile(r"^([ \t]*)# YOUR CODE HERE\n[ \t]*raise NotImplementedError\(.*\)[ \t]*$", re.MULTILINE)


def fill(source: str, body: str) -> str:
    """Replace the stub (``# YOUR CODE HERE`` + ``raise NotImplementedError(...)``) by ``body``, indented."""
    m = _STUB_RE.search(source)
    if not m:
        raise ValueError("no `# YOUR CODE HERE` stub in the cell")
    indented = "\n".join(m.group(1) + line if line else line for line in body.split("\n"))
    return source[: m.start()] + indented + source[m.end():]


def student_notebook(slug: str = SLUG) -> nbformat.NotebookNode:
    source = REPO / "notebooks" / f"{slug}.py"
    built = assign.build_student_notebook(assign.read_source(source), slug)
    path = REPO / "notebooks" / assign.STUDENT_DIR_NAME / f"{slug}.ipynb"
    if path.is_file():
        if path.read_text(encoding="utf-8") == assign.notebook_text(built):
            return nbformat.read(path, as_version=4)
        print(f"note: {path.relative_to(REPO)} is out of date (run `python -m course_lib.teaching.assign sync`); "
              "using the student version built from the source", file=sys.stderr)
    return built


def make(student: nbformat.NotebookNode, spec: dict) -> nbformat.NotebookNode:
    nb = copy.deepcopy(student)
    done = set()
    for cell in nb.cells:
        exercise_id = cell.get("metadata", {}).get("exercise")
        if cell.cell_type != "code" or not exercise_id:
            continue
        what = spec["fill"].get(exercise_id)
        if isinstance(what, tuple):
            cell.source = what[1].rstrip("\n")
        elif what is not None:
            cell.source = fill(cell.source, what)
        if exercise_id in spec.get("drop_metadata", []):
            cell.metadata.pop("exercise", None)
            cell.metadata.pop("points", None)
        done.add(exercise_id)
    for cell in nb.cells:
        md = cell.get("metadata", {})
        rid = md.get("prediction") or md.get("answer")
        if rid in spec.get("responses", {}):
            cell.source = spec["responses"][rid]
            done.add(rid)
    missing = (set(spec["fill"]) | set(spec.get("responses", {}))) - done
    if missing:
        raise ValueError(f"exercise cells not found in the student notebook: {sorted(missing)}")
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT.relative_to(REPO)})")
    args = parser.parse_args(argv)
    student = student_notebook()
    args.out.mkdir(parents=True, exist_ok=True)
    texts = {}
    for name, spec in SAMPLES.items():
        texts[name] = assign.notebook_text(make(student, spec))
    # a download cut short: the first two thirds of the correct notebook's JSON
    texts["not_json"] = texts["correct"][: 2 * len(texts["correct"]) // 3]
    for name, text in texts.items():
        path = args.out / f"{name}.ipynb"
        path.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
