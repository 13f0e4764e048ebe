"""Every shipped checkpoint loads with the current code and reproduces its stored predictions.

``tests/data/checkpoint_predictions.npz`` holds, for every ``benchmarks/results/**/*.pt``, the
predictions (float64) on the fixed inputs of ``tests/checkpoint_cases.py``, written with the code that
trained the checkpoints. Renaming a constructor argument or a parameter must keep them loading
(:func:`course_lib.train.load_model` maps old configuration keys) and predicting the same numbers.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from checkpoint_cases import CLASSES, RESULTS, STORED, checkpoints, predict

from course_lib.train import load_model

CHECKPOINTS = checkpoints()


def test_every_checkpoint_has_stored_predictions():
    assert len(CHECKPOINTS) >= 20
    stored = {key.rsplit("/", 1)[0] for key in np.load(STORED).files}
    names = {p.relative_to(RESULTS).with_suffix("").as_posix() for p in CHECKPOINTS}
    assert names == stored, f"checkpoints without stored predictions: {sorted(names - stored)}"


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.stem)
def test_checkpoint_reproduces_stored_predictions(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # course_lib version stamp
        model, payload = load_model(path)
    stored = np.load(STORED)
    name = path.relative_to(RESULTS).with_suffix("").as_posix()
    preds = predict(model, CLASSES[payload["model_class"]][1])
    for key, value in preds.items():
        ref = stored[f"{name}/{key}"]
        scale = float(np.abs(ref).max()) or 1.0
        np.testing.assert_allclose(value, ref, rtol=1e-5, atol=1e-9 * scale, err_msg=f"{name}/{key}")
