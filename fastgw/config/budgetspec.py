"""Budget entries of the config and of the admin API: their periods and their checks (no
dependency beyond the config schema, so the config validator and the admin API share them)."""

from __future__ import annotations

import math
import re
from collections.abc import Collection

from .schema import BudgetConfig

__all__ = [
    "BUDGET_KINDS",
    "MAX_ROLLING_DAYS",
    "ON_EXCEED",
    "budget_errors",
    "model_known",
    "parse_period",
]

#: What a budget may belong to.
BUDGET_KINDS = ("key", "team", "tag")
#: What happens over the limit.
ON_EXCEED = ("reject", "fallback")
#: The longest rolling window (a leap year).
MAX_ROLLING_DAYS = 366
#: The largest budget accepted: far beyond any real one, small enough that float sums of
#: cents stay exact to well under a cent.
MAX_USD = 1e12

_ROLLING_RE = re.compile(r"^([1-9][0-9]{0,2})d$")
_CALENDAR = {"daily": 1, "weekly": 7, "monthly": 0}


def parse_period(text: str) -> tuple[str, int]:
    """``(kind, days)`` of a period: ``("daily", 1)``, ``("weekly", 7)``, ``("monthly", 0)``
    (months have no fixed length) or ``("rolling", N)`` for ``"<N>d"``. ValueError naming
    the accepted forms otherwise."""
    if text in _CALENDAR:
        return text, _CALENDAR[text]
    m = _ROLLING_RE.match(text)
    if m is not None and int(m.group(1)) <= MAX_ROLLING_DAYS:
        return "rolling", int(m.group(1))
    raise ValueError(
        f"expected daily, weekly, monthly or <N>d (N from 1 to {MAX_ROLLING_DAYS}), got {text!r}"
    )


def model_known(name: str, models: Collection[str]) -> bool:
    """Whether the public model name ``name`` is served: a model of that exact name, or a
    pattern (one ``*``) that matches it."""
    if name in models:
        return True
    for pattern in models:
        head, star, tail = pattern.partition("*")
        fits = len(name) >= len(head) + len(tail)
        if star and fits and name.startswith(head) and name.endswith(tail):
            return True
    return False


def budget_errors(b: BudgetConfig, models: Collection[str] | None) -> list[tuple[str, str]]:
    """(field, message) for what is wrong with one budget; ``models``: the public model
    names (and patterns) a ``fallback_model`` must be among (None: not checked)."""
    out: list[tuple[str, str]] = []
    if not (math.isfinite(b.usd) and 0 < b.usd <= MAX_USD):
        out.append(("usd", f"must be a number of dollars above 0 (at most {MAX_USD:g})"))
    try:
        parse_period(b.period)
    except ValueError as e:
        out.append(("period", str(e)))
    if b.soft is not None and not 0 < b.soft < 1:
        out.append(("soft", "must be a fraction of usd between 0 and 1 (e.g. 0.8), or null"))
    if b.on_exceed not in ON_EXCEED:
        out.append(("on_exceed", f"expected 'reject' or 'fallback', got {b.on_exceed!r}"))
    elif b.on_exceed == "fallback":
        if not b.fallback_model:
            out.append(("fallback_model", "required with on_exceed: fallback"))
        elif models is not None and not model_known(b.fallback_model, models):
            known = ", ".join(sorted(models)) or "none defined"
            out.append(("fallback_model", f"unknown model {b.fallback_model!r} (models: {known})"))
    elif b.fallback_model is not None:
        out.append(("fallback_model", "only with on_exceed: fallback"))
    return out
