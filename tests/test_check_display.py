"""``check(...)`` as the last expression of a notebook cell prints its feedback once (no trailing repr),
and the score of a check is weighted towards values: checked with IPython's own display machinery."""

from __future__ import annotations

import pytest
import torch

from course_lib.teaching.checks import Feedback, StopChecking

IPython = pytest.importorskip("IPython")


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    yield sh
    InteractiveShell.clear_instance()


def _run(shell, capsys, code: str):
    """Run ``code`` as a cell; return what it printed and the mime data a Jupyter kernel would send as the
    cell's result (ipykernel sends no ``execute_result`` when that data is empty)."""
    import re

    capsys.readouterr()
    result = shell.run_cell(code, store_history=True)
    assert result.success, result.error_in_exec
    printed = re.sub(r"Out\[\d+\]: ", "", capsys.readouterr().out)  # the terminal's prompt, not sent by a kernel
    data, _ = shell.display_formatter.format(result.result) if result.result is not None else ({}, {})
    return printed + capsys.readouterr().out, data


def test_check_prints_once_as_last_expression(shell, capsys):
    _run(shell, capsys, "import torch\nfrom course_lib.teaching.exercises import check\n"
                        "def gated_nonlinearity(s, v):\n    return torch.sigmoid(s)[..., None] * v\n")
    out, data = _run(shell, capsys, 'check("00.gated_nonlinearity", gated_nonlinearity)')
    assert out.count("00.gated_nonlinearity") == 1 and "CheckResult(" not in out, out
    assert data == {}, data  # no second rendering (no CheckResult(...) repr under the feedback)
    # a result kept in a variable and shown later is shown, once
    capsys.readouterr()
    shell.run_cell('res = check("00.gated_nonlinearity", gated_nonlinearity, verbose=False)\nres')
    assert capsys.readouterr().out.count("[PASS] 00.gated_nonlinearity") == 1


def test_score_weights_values_over_shapes():
    fb = Feedback()
    fb.expect(True, "shape", fatal=True)
    for k in range(6):
        fb.expect(True, f"symmetry {k}")
    fb.expect(False, "values", values=True)
    assert fb.score() < 0.5  # right shape and symmetries, wrong values: less than half
    fb = Feedback()
    with pytest.raises(StopChecking):
        fb.expect(False, "shape", fatal=True)
    assert fb.score() == 0.0
    fb = Feedback()
    fb.expect(True, "shape", fatal=True)
    fb.expect(True, "values", values=True)
    assert fb.score() == 1.0


def test_wrong_values_with_right_shape_earn_less_than_half():
    from course_lib.teaching.exercises import check

    res = check("00.gated_nonlinearity", lambda s, v: torch.tanh(s)[..., None] * v, verbose=False)
    assert not res.passed and res.fraction < 0.5, (res.fraction, res)
