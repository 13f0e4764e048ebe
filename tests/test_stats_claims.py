"""The experiment protocol's statistics (course_lib.stats) and the claim cells (course_lib.teaching.claims)."""

import math

import numpy as np
import pytest

from course_lib import stats
from course_lib.teaching import claims


def test_summary_is_mean_and_standard_error():
    s = stats.summarize([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.n == 3
    assert math.isclose(s.se, 1.0 / math.sqrt(3))
    assert format(s, ".2f") == "2.00 ± 0.58 (n=3)"
    assert "no error bar" in str(stats.summarize([4.0]))


def test_non_finite_runs_are_refused():
    with pytest.raises(ValueError, match="diverged"):
        stats.summarize([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="per-seed"):
        stats.summarize([])


def test_difference_independent_and_paired():
    a, b = [1.0, 2.0, 3.0], [1.5, 2.4, 3.6]
    d = stats.difference(a, b)
    assert math.isclose(d.mean, -0.5)
    assert math.isclose(d.se, math.hypot(stats.summarize(a).se, stats.summarize(b).se))
    p = stats.difference(a, b, paired=True)
    assert math.isclose(p.mean, -0.5) and p.se < d.se
    with pytest.raises(ValueError, match="one value per seed"):
        stats.difference([1, 2], [1, 2, 3], paired=True)


def test_random_subset_is_random_per_seed_and_nested():
    idx = np.arange(100, 200)
    a, b = stats.random_subset(idx, 10, seed=0), stats.random_subset(idx, 10, seed=1)
    assert len(set(a)) == 10 and set(a) <= set(idx.tolist())
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, idx[:10])              # never the first n of a stored split
    assert set(a) <= set(stats.random_subset(idx, 30, seed=0))
    with pytest.raises(ValueError, match="cannot draw"):
        stats.random_subset(idx, 101, seed=0)


def test_plateau():
    flat = [1.0 / (1 + e) for e in range(20)] + [0.05] * 80
    assert stats.plateau(flat)["plateaued"]
    falling = [1.0 / (1 + e) for e in range(100)]
    out = stats.plateau(falling)
    assert not out["plateaued"] and out["last_window_gain"] > 0.02


def test_log_slope_recovers_power_law():
    sizes = [100, 300, 1000, 3000]
    errs = [[2.0 * n ** -0.5 * (1 + 0.01 * s) for n in sizes] for s in range(3)]
    slope = stats.log_slope(sizes, errs)
    assert abs(slope.mean + 0.5) < 1e-9


def test_survival_of_replicas_with_censoring():
    s = stats.survival([100.0, None, 300.0, 200.0], limit=1000.0)
    assert (s["n"], s["failed"], s["surviving"]) == (4, 3, 0.25)
    assert s["restricted_mean"] == pytest.approx(400.0)  # (100 + 1000 + 300 + 200) / 4: the censored one counts 1000
    assert s["restricted_mean_se"] == pytest.approx(np.std([100, 1000, 300, 200], ddof=1) / 2)
    assert s["median"] == 200.0  # the 2nd of 4 failures brings the survival to 1/2
    assert stats.survival([50.0, None, None], limit=100.0)["median"] is None  # 2 of 3 reached the limit
    assert stats.survival([50.0, 70.0, None], limit=100.0)["median"] == 70.0
    assert math.isnan(stats.survival([None], limit=5.0)["restricted_mean_se"])
    with pytest.raises(ValueError, match="limit"):
        stats.survival([50.0, 150.0], limit=100.0)
    with pytest.raises(ValueError, match="None"):
        stats.survival([], limit=100.0)


def test_rank_correlation_is_spearman_with_mean_ranks_for_ties():
    assert stats.rank_correlation([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)  # monotone, not linear
    assert stats.rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties: y ranks (1.5, 1.5, 3, 4) against x ranks (1, 2, 3, 4)
    expected = np.corrcoef([1, 2, 3, 4], [1.5, 1.5, 3, 4])[0, 1]
    assert stats.rank_correlation([1, 2, 3, 4], [5, 5, 7, 9]) == pytest.approx(expected)
    assert math.isnan(stats.rank_correlation([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="same length"):
        stats.rank_correlation([1, 2], [1, 2, 3])


def test_claims_pass_and_fail_with_numbers():
    a, b = [1.0, 1.1, 0.9], [2.0, 2.1, 1.9]
    assert claims.less(a, b, "A", "B") == "claim: A < B: OK (difference > 2 s.e., 3 and 3 seeds)"
    assert claims.greater(b, a, "B", "A").startswith("claim: B > A: OK")
    with pytest.raises(claims.ClaimFailed, match="not supported.*difference"):
        claims.less(b, a, "B", "A")
    with pytest.raises(claims.ClaimFailed, match="not supported"):
        claims.less([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], "noisy A", "noisy B")
    with pytest.raises(claims.ClaimFailed, match="at least 3 seeds"):
        claims.less([1.0], [2.0, 2.1, 2.2], "one seed", "B")
    assert "on par" in claims.tie([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], "A", "B")
    with pytest.raises(claims.ClaimFailed):
        claims.tie(a, b, "A", "B")
    assert claims.holds(True, "x is small") == "claim: x is small: OK"
    with pytest.raises(claims.ClaimFailed, match="x=3"):
        claims.holds(False, "x is small", "x=3")
    assert claims.fill("MAE {m:.2f}", m=[1.0, 2.0, 3.0]) == "MAE 2.00 ± 0.58 (n=3)"
