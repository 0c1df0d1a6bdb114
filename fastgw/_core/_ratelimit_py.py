"""The ``x-ratelimit-*`` answer headers: the pure-Python reference twin.

Every answer to a rate-limited request carries six headers, with numbers that change per
request, so formatting them is on the hot path (``_ratelimit_c`` formats them in C).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["MAX_BUCKETS", "MAX_SHOWN", "NEVER", "rate_headers", "tightest_headers"]

#: ``reset`` at or above this many seconds: the bucket never refills (rate 0).
NEVER = 1e9

_REQUESTS = (
    b"x-ratelimit-limit-requests",
    b"x-ratelimit-remaining-requests",
    b"x-ratelimit-reset-requests",
)
_TOKENS = (
    b"x-ratelimit-limit-tokens",
    b"x-ratelimit-remaining-tokens",
    b"x-ratelimit-reset-tokens",
)


#: The largest balance shown (a larger one is shown as this).
MAX_SHOWN = 10**18


def _remaining(x: float) -> bytes:
    """Whole tokens left: never negative (a bucket in debt shows 0; so does NaN)."""
    if not x > 0:
        return b"0"
    if x >= MAX_SHOWN:
        return b"%d" % MAX_SHOWN
    return b"%d" % math.floor(x)


def _reset(seconds: float) -> bytes:
    """Seconds until the bucket is full again, rounded up, as OpenAI writes them (``6s``)."""
    if not seconds < NEVER:  # NaN included
        return b"never"
    if not seconds > 0:
        return b"0s"
    return b"%ds" % math.ceil(seconds)


def rate_headers(
    req_cap: bytes | None,
    req_remaining: float,
    req_reset: float,
    tok_cap: bytes | None,
    tok_remaining: float,
    tok_reset: float,
) -> list[tuple[bytes, bytes]]:
    """``x-ratelimit-{limit,remaining,reset}-requests`` (when ``req_cap`` is given) and
    ``-tokens`` (when ``tok_cap`` is given) for a bucket's capacity (already formatted),
    balance and seconds until full."""
    out: list[tuple[bytes, bytes]] = []
    if req_cap is not None:
        out.append((_REQUESTS[0], req_cap))
        out.append((_REQUESTS[1], _remaining(req_remaining)))
        out.append((_REQUESTS[2], _reset(req_reset)))
    if tok_cap is not None:
        out.append((_TOKENS[0], tok_cap))
        out.append((_TOKENS[1], _remaining(tok_remaining)))
        out.append((_TOKENS[2], _reset(tok_reset)))
    return out


#: Most buckets ``tightest_headers`` takes.
MAX_BUCKETS = 16


def tightest_headers(
    balances: Sequence[float],
    tokens: Sequence[bool],
    caps: Sequence[bytes],
    shapes: Sequence[float],
) -> list[tuple[bytes, bytes]]:
    """``rate_headers`` of the tightest bucket of each kind among a request's buckets (the
    lowest balance; the first of equals). Per bucket ``i``: its balance, whether it counts
    tokens (else requests), its limit as header bytes, and ``shapes[2i]``/``shapes[2i + 1]``
    its capacity and refill rate per second (a rate of 0 divides as C does: ±inf, or NaN)."""
    k = len(balances)
    if not (k == len(tokens) == len(caps) and len(shapes) == 2 * k and k <= MAX_BUCKETS):
        raise ValueError("one balance, kind, limit and two shape numbers per bucket, at most 16")
    ri = ti = -1
    for i in range(k):
        if tokens[i]:
            if ti < 0 or balances[i] < balances[ti]:
                ti = i
        elif ri < 0 or balances[i] < balances[ri]:
            ri = i
    req_rem = req_reset = tok_rem = tok_reset = 0.0
    if ri >= 0:
        req_rem = balances[ri]
        req_reset = _full_in(shapes[2 * ri], req_rem, shapes[2 * ri + 1])
    if ti >= 0:
        tok_rem = balances[ti]
        tok_reset = _full_in(shapes[2 * ti], tok_rem, shapes[2 * ti + 1])
    return rate_headers(
        caps[ri] if ri >= 0 else None,
        req_rem,
        req_reset,
        caps[ti] if ti >= 0 else None,
        tok_rem,
        tok_reset,
    )


def _full_in(capacity: float, balance: float, rate: float) -> float:
    """Seconds until a bucket at ``balance`` is full (C division: x/0 is ±inf, 0/0 NaN)."""
    if rate == 0:
        return math.copysign(math.inf, capacity - balance) if capacity != balance else math.nan
    return (capacity - balance) / rate
