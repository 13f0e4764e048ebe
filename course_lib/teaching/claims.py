"""Claims are checked like symmetries: every comparative sentence of a notebook has an asserted cell.

A claim cell reads the shipped results (per-seed numbers written by a script of ``benchmarks/``),
checks the sentence with its uncertainty and prints one deterministic line, like a symmetry cell::

    # NBVAL_CHECK_OUTPUT
    mpnn, gnn = per_seed["mpnn"]["2400"], per_seed["abs_gnn"]["2400"]
    print(claims.less(mpnn, gnn, "invariant MPNN", "GNN with absolute positions"))
    # -> "claim: invariant MPNN < GNN with absolute positions: OK (difference > 2 s.e., 3 seeds each)"

If a rerun changes the conclusion the cell raises :class:`ClaimFailed` with the numbers, and CI turns
red; the prose must then be rewritten to say what the numbers say. Numbers that appear in the prose
are printed by :func:`say` from the same results, never typed.

The statistics (mean, standard error, the difference of two means) are those of
:mod:`course_lib.stats`, the protocol of ``benchmarks/README.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from course_lib import stats

__all__ = ["ClaimFailed", "less", "greater", "tie", "holds", "fill", "say", "K_SIGMA"]

#: a difference is a finding when it exceeds this many standard errors of the difference
K_SIGMA = 2.0


class ClaimFailed(AssertionError):
    """A sentence of the notebook is not supported by the shipped results."""


def _check_seeds(values: Sequence[float], label: str) -> stats.Summary:
    s = stats.summarize(values)
    if s.n < stats.MIN_SEEDS:
        raise ClaimFailed(f"{label}: {s.n} run(s); the protocol needs at least {stats.MIN_SEEDS} seeds "
                          "before a comparison is a claim (benchmarks/README.md)")
    return s


def _compare(a, b, label_a, label_b, sign, k, paired):
    sa, sb = _check_seeds(a, label_a), _check_seeds(b, label_b)
    d = stats.difference(a, b, paired=paired)
    ok = sign * d.mean > k * d.se
    relation = "<" if sign < 0 else ">"
    if not ok:
        raise ClaimFailed(
            f"claim {label_a} {relation} {label_b} is not supported: {label_a} {sa:.4g}, {label_b} {sb:.4g}, "
            f"difference {d:.3g} is not beyond {k:g} standard errors. Rewrite the sentence to say what the "
            "numbers show (or run more seeds).")
    kind = "paired by seed" if paired else f"{sa.n} and {sb.n} seeds"
    return f"claim: {label_a} {relation} {label_b}: OK (difference > {k:g} s.e., {kind})"


def less(a: Sequence[float], b: Sequence[float], label_a: str, label_b: str, k: float = K_SIGMA,
         paired: bool = False) -> str:
    """Assert mean(a) < mean(b) by more than ``k`` standard errors of the difference; return the OK line."""
    return _compare(a, b, label_a, label_b, -1, k, paired)


def greater(a: Sequence[float], b: Sequence[float], label_a: str, label_b: str, k: float = K_SIGMA,
            paired: bool = False) -> str:
    """Assert mean(a) > mean(b) by more than ``k`` standard errors of the difference; return the OK line."""
    return _compare(a, b, label_a, label_b, +1, k, paired)


def tie(a: Sequence[float], b: Sequence[float], label_a: str, label_b: str, k: float = K_SIGMA,
        rel: float = 0.0, paired: bool = False) -> str:
    """Assert that a and b are *not* distinguishable: |mean(a) − mean(b)| ≤ k s.e. (or ≤ ``rel`` of the
    larger mean, when ``rel`` > 0: "within 10 %"). For sentences such as "the two are on par"."""
    sa, sb = _check_seeds(a, label_a), _check_seeds(b, label_b)
    d = stats.difference(a, b, paired=paired)
    bound = max(k * d.se, rel * max(abs(sa.mean), abs(sb.mean)))
    if abs(d.mean) > bound:
        raise ClaimFailed(f"claim '{label_a} on par with {label_b}' is not supported: {sa:.4g} vs {sb:.4g}, "
                          f"difference {d:.3g} exceeds {bound:.3g}. Rewrite the sentence.")
    within = f"{rel:.0%}" if rel > 0 else f"{k:g} s.e."
    return f"claim: {label_a} on par with {label_b}: OK (difference within {within})"


def holds(condition: bool, sentence: str, numbers: str = "") -> str:
    """Assert a non-statistical claim (a threshold, an ordering of exact values); return the OK line.

    ``numbers`` is shown only when the claim fails (keep the OK line free of run-dependent numbers).
    """
    if not bool(condition):
        raise ClaimFailed(f"claim not supported: {sentence}. {numbers}".strip())
    return f"claim: {sentence}: OK"


def fill(template: str, **values) -> str:
    """A sentence filled with numbers from the results.

    ``values`` may be :class:`course_lib.stats.Summary` objects or lists of per-seed values (summarised);
    format them in the template as usual, e.g. ``fill("MAE {mae:.3f}", mae=per_seed)`` -> "MAE 0.050 ± 0.002 (n=3)".
    """
    filled = {key: stats.summarize(v) if isinstance(v, (list, tuple)) else v for key, v in values.items()}
    return template.format(**filled)


def say(template: str, **values) -> None:
    """Display :func:`fill`'s sentence as Markdown in a notebook (printed elsewhere); returns nothing, so the
    cell shows the sentence once."""
    text = fill(template, **values)
    try:
        from IPython.display import Markdown, display
    except ImportError:  # outside Jupyter
        print(text)
    else:
        display(Markdown(text))
