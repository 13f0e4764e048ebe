"""Predictions and short answers: the parts of a notebook that are not checked by code.

**Predict, then run.** Before a key experiment the notebook asks for a prediction in a cell of its own
(``# %% prediction="01.cutoff_jump" points=1 choices="a,b,c"``, one assignment ``my_prediction = None``
that the student replaces by a letter or a number). The experiment's cell then calls :func:`reveal`,
which compares the prediction with the outcome. The grader reads the prediction from the submitted
cell without running it (:func:`course_lib.teaching.notebook.read_prediction`): points for *having
committed* a prediction, never for being right, and the instructor sees the class's predictions in the
gradebook.

**Short answers** (a proof, a why): a markdown cell ``# %% [markdown] answer="01.why_invariant" points=2``
holds the model answer in the instructor notebook and a placeholder in the student notebook; a
``rubric="01.why_invariant"`` markdown cell (instructor only) holds the marking rubric. The grader
collects the answers for marking by hand (``answers/<notebook>.md`` and ``answers.csv``); their points
are kept apart from the auto-graded points.
"""

from __future__ import annotations

__all__ = ["reveal"]


def _shown(value) -> str:
    return f"({value})" if isinstance(value, str) else f"{value:.4g}"


def reveal(prediction_id: str, predicted, outcome, tolerance: float | None = None) -> bool | None:
    """Print how the committed prediction compares with the experiment's ``outcome``; return whether it
    matched (None when nothing was predicted).

    ``predicted``: the student's value (a letter, or a number); ``outcome``: the right letter, or the
    measured number; ``tolerance``: for numbers, the relative difference that still counts as right
    (default 20 %). Being wrong costs nothing: the point of predicting is to notice the surprise.
    """
    if predicted is None or predicted == "":
        print(f"{prediction_id}: you have not committed a prediction. Write it in the prediction cell above "
              "before looking at the result, then run this cell again.")
        return None
    if isinstance(outcome, str):
        guess = str(predicted).strip().strip("()").lower()
        right = guess == outcome.strip().lower()
    else:
        tol = 0.2 if tolerance is None else tolerance
        right = abs(float(predicted) - float(outcome)) <= tol * max(abs(float(outcome)), 1e-12)
    verdict = ("as you predicted." if right else
               "not what you predicted: before reading on, write down which step of your reasoning failed.")
    print(f"{prediction_id}: you predicted {_shown(predicted)}; the experiment gives {_shown(outcome)}: {verdict}")
    return right
