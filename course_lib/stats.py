"""Statistics of repeated experiments: the experiment protocol of ``benchmarks/README.md`` in code.

Every number the course compares is a mean over independent runs (seeds) with its standard error

    mean = (1/n) Σ_s x_s,        s.e. = sd / √n,        sd² = 1/(n − 1) Σ_s (x_s − mean)²,

and a comparison "A < B" is a claim only when the difference exceeds ``k`` standard errors of the
difference (``k = 2`` by default; for independent runs s.e.(A − B)² = s.e.(A)² + s.e.(B)²; for runs
paired by seed — the same data subset and initial seed for both models — the s.e. of the per-seed
differences, which is smaller when the seeds matter more than the models).

Training subsets are drawn **at random per seed** (:func:`random_subset`), never as the first ``n`` of a
stored, possibly time-ordered split; a run is reported only if it reached its **validation plateau**
(:func:`plateau`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Summary", "summarize", "difference", "random_subset", "plateau", "log_slope", "survival",
           "rank_correlation", "MIN_SEEDS"]

#: the protocol's minimum number of independent runs behind every compared number
MIN_SEEDS = 3


@dataclass(frozen=True)
class Summary:
    """Mean ± standard error of ``n`` independent values (``se`` is nan for n = 1)."""

    mean: float
    se: float
    n: int

    def __format__(self, spec: str) -> str:
        spec = spec or ".3g"
        if math.isnan(self.se):
            return f"{self.mean:{spec}} (n={self.n}, no error bar)"
        return f"{self.mean:{spec}} ± {self.se:{spec}} (n={self.n})"

    def __str__(self) -> str:
        return format(self, "")

    @property
    def upper(self) -> float:
        return self.mean + self.se

    @property
    def lower(self) -> float:
        return self.mean - self.se


def _values(values: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(values), dtype=float).ravel()
    if x.size == 0:
        raise ValueError("no values to summarise: pass the per-seed results (one number per seed)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"non-finite values among the per-seed results {x.tolist()}: a run diverged or "
                         "failed; report it instead of averaging it away")
    return x


def summarize(values: Iterable[float]) -> Summary:
    """Mean and standard error (sample sd / √n) of per-seed values [n]."""
    x = _values(values)
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
    return Summary(float(x.mean()), se, int(x.size))


def difference(a: Sequence[float], b: Sequence[float], paired: bool = False) -> Summary:
    """mean(a) − mean(b) with its standard error.

    ``paired=True``: ``a[s]`` and ``b[s]`` come from the same seed (same subset, same initialisation
    seed); the s.e. is that of the per-seed differences. Otherwise the runs are independent and the
    standard errors add in quadrature.
    """
    xa, xb = _values(a), _values(b)
    if paired:
        if xa.size != xb.size:
            raise ValueError(f"paired difference needs one value per seed on both sides, got {xa.size} and {xb.size}")
        return summarize(xa - xb)
    sa, sb = summarize(xa), summarize(xb)
    return Summary(sa.mean - sb.mean, math.sqrt(sa.se**2 + sb.se**2), min(sa.n, sb.n))


def random_subset(indices: Sequence[int] | np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of ``indices`` drawn without replacement by a generator seeded with ``seed`` (sorted).

    Use a different ``seed`` per repetition: the subset is part of what a seed varies. The draw is
    nested for a fixed seed (the first ``n`` of one permutation), so a larger training set of the same
    seed contains the smaller one, which makes learning curves smoother without sharing data across seeds.
    """
    idx = np.asarray(indices)
    if not 0 < n <= idx.size:
        raise ValueError(f"cannot draw {n} of {idx.size} indices: choose 1 <= n <= {idx.size}")
    perm = np.random.default_rng(seed).permutation(idx.size)
    return np.sort(idx[perm[:n]])


def plateau(curve: Sequence[float], window: float = 0.2, rel_tol: float = 0.02) -> dict:
    """Did a validation curve [epochs] plateau? The best value of its last ``window`` fraction of epochs
    is within ``rel_tol`` (relative) of the best value before that window.

    Returns ``{"plateaued", "best", "best_epoch", "best_before_window", "last_window_gain"}``
    (``last_window_gain`` = relative improvement during the last window; ≤ ``rel_tol`` means plateau).
    """
    v = _values(curve)
    if v.size < 5:
        raise ValueError(f"a curve of {v.size} points cannot show a plateau: record the validation loss every epoch")
    cut = max(1, int(round(v.size * (1 - window))))
    before, last = float(v[:cut].min()), float(v[cut:].min())
    gain = max(0.0, (before - last) / abs(before)) if before != 0 else 0.0
    return {"plateaued": bool(gain <= rel_tol), "best": float(v.min()), "best_epoch": int(v.argmin()),
            "best_before_window": before, "last_window_gain": gain}


def log_slope(sizes: Sequence[float], errors_per_seed: Sequence[Sequence[float]]) -> Summary:
    """Slope of log(error) vs log(size), fitted per seed, summarised over seeds.

    ``errors_per_seed`` [seeds][sizes]. A learning curve error ∝ n^slope; the slope's s.e. comes from the
    spread over seeds (not from the residuals of one fit).
    """
    x = np.log(np.asarray(sizes, dtype=float))
    slopes = [np.polyfit(x, np.log(_values(e)), 1)[0] for e in errors_per_seed]
    return summarize(slopes)


def survival(times: Sequence[float | None], limit: float) -> dict:
    """Time to failure of ``n`` replicas run until they fail or reach ``limit``.

    ``times`` [n]: the failure time of each replica, ``None`` for one that reached ``limit`` intact
    (right-censored at ``limit``, the same for every replica, so the Kaplan-Meier survival curve is the
    fraction of replicas not yet failed). Returns

    - ``n``, ``failed`` and ``surviving``: the fraction intact at ``limit``;
    - ``restricted_mean`` and ``restricted_mean_se``: the mean of min(t, limit) over replicas (the area
      under the survival curve up to ``limit``; a lower bound of the mean time to failure whenever a
      replica survived) and its standard error over replicas (sd / √n; nan for n = 1);
    - ``median``: the time by which half of the replicas had failed (the smallest t with survival ≤ 1/2),
      ``None`` when more than half reached the limit (the median is then only known to exceed it).
    """
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    t = np.array([np.inf if v is None else float(v) for v in times], dtype=float)
    if t.size == 0:
        raise ValueError("no replicas: pass one failure time (or None) per replica")
    if np.any(np.isnan(t)) or np.any(t < 0) or np.any(np.isfinite(t) & (t > limit)):
        raise ValueError(f"failure times must lie in [0, limit = {limit}] or be None (censored), got {list(times)}")
    failed = np.sort(t[np.isfinite(t)])
    capped = np.minimum(t, limit)
    k = math.ceil(t.size / 2)  # the k-th failure brings the survival to <= 1/2
    return {"n": int(t.size), "failed": int(failed.size), "surviving": float(1 - failed.size / t.size),
            "restricted_mean": float(capped.mean()),
            "restricted_mean_se": float(capped.std(ddof=1) / math.sqrt(t.size)) if t.size > 1 else float("nan"),
            "median": float(failed[k - 1]) if failed.size >= k else None, "limit": float(limit)}


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of paired values ``x`` [n] and ``y`` [n]: the Pearson correlation of their
    ranks, tied values sharing their mean rank (e.g. runs censored at the same limit). nan when either side is
    constant."""
    a, b = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"rank_correlation needs two 1-d sequences of the same length >= 2, got {a.shape}, {b.shape}")

    def ranks(v):
        return np.array([(v < t).sum() + ((v == t).sum() + 1) / 2 for t in v])

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
