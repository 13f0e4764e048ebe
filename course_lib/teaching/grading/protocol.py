"""What the checker process may send back, checked by the parent before anything reaches the gradebook.

The checker process runs no student code, but it reads the student process's answers (and passes on
what the student process reports: flags, notes, messages), so its result file is still treated as
untrusted data: :func:`validate_result`
keeps only known keys with the right types (plain JSON: strings, numbers, lists of strings), known
statuses, ``0 <= fraction <= 1``, ``0 <= n_passed <= n_total`` and messages and lists capped in size;
anything else becomes an ``error`` result that says the result was invalid.
"""

from __future__ import annotations

import math

__all__ = ["RESULT_STATUSES", "MESSAGE_LIMIT", "validate_result", "cap"]

#: Statuses an exercise process (or the runner on its behalf) may report.
RESULT_STATUSES = ("checked", "flagged", "error", "missing", "timeout")
MESSAGE_LIMIT = 2_000  # characters of one message
LIST_LIMIT = 200  # entries of a list of messages


def cap(text, limit: int = MESSAGE_LIMIT) -> str:
    text = text if isinstance(text, str) else ""
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters]"


def _strings(value, limit: int = MESSAGE_LIMIT) -> list[str]:
    if not isinstance(value, list):
        return []
    return [cap(v, limit) for v in value[:LIST_LIMIT] if isinstance(v, str)]


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9 else 0


def validate_result(data, output_limit: int = 20_000) -> dict:
    """The checked copy of an exercise process's result (see the module doc)."""
    if not isinstance(data, dict) or data.get("status") not in RESULT_STATUSES:
        status = data.get("status") if isinstance(data, dict) else type(data).__name__
        return {"status": "error", "message": f"the grading process returned an invalid result (status "
                f"{cap(str(status), 80)!r}): tell your instructor", "output": ""}
    out = {"status": data["status"], "message": cap(data.get("message", "")),
           "output": cap(data.get("output", ""), output_limit)}
    for key in ("flags", "notes", "failed", "test_errors"):
        out[key] = _strings(data.get(key))
    for key in ("source", "error"):
        if isinstance(data.get(key), str):
            out[key] = cap(data[key])
    out["not_implemented"] = data.get("not_implemented") is True
    out["n_passed"], out["n_total"], out["n_cases"] = (_count(data.get(k)) for k in ("n_passed", "n_total", "n_cases"))
    fraction = data.get("fraction", 0.0)
    bad = (not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not math.isfinite(fraction)
           or not 0.0 <= fraction <= 1.0 or out["n_passed"] > out["n_total"])
    if data["status"] == "checked" and bad:
        return {"status": "error", "message": "the grading process returned an invalid score (fraction "
                f"{cap(repr(fraction), 40)}, {out['n_passed']}/{out['n_total']} checks): tell your instructor",
                "output": out["output"], "flags": out["flags"]}
    out["fraction"] = float(fraction) if not bad else 0.0
    return out
