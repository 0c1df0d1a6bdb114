"""The state contract: where rate-limit buckets, concurrency slots and counters live.

One Protocol, several backends (``fastgw.state.open_state`` picks one from the config):

- ``memory`` — this process only (tests, and the fallback of a fail-open ``redis``);
- ``local``  — shared memory across the Granian workers of one host (``fastgw/state/local.py``);
- ``redis``  — across hosts (``fastgw/state/redis.py``).

Every backend passes the same contract tests (``tests/unit/test_state_contract.py`` and the
integration ones for the shared backends). Semantics, for all of them:

**Token buckets** (``take``/``take_many``/``settle``): a bucket named ``key`` holds at most
``limit.capacity`` tokens and refills at ``limit.rate`` tokens per second; a bucket never
seen is full. ``take_many`` takes from several buckets at once, all or nothing: when any of
them lacks the tokens, none is touched and the answer says which and when to retry. A
bucket's balance may go below zero only through ``settle`` (real usage above what was
reserved): the debt is paid back by the refill before the next take succeeds.

**Concurrency slots** (``acquire``/``release``): at most ``limit`` holders of ``key`` at once.

**Counters** (``add``/``get``): a float per key, summed atomically.

**Charge counters** (``charge_many``/``adjust``/``seed``): a float per key that only grows
while it stays under a cap, for budgets (spend in USD per key, team or tag and period):
reserve before a call, settle after it. They are a namespace of their own: a charge counter,
an ``add``/``get`` counter and a bucket of the same name are three different things.

- ``charge_many(charges)`` adds ``n`` to every counter, all or nothing: when, for every
  charge, ``total + n <= cap`` (the ``n`` of the same key given twice add up), every ``n`` is
  added and each answer is ``allowed`` with the new total; otherwise nothing is touched and
  each answer says whether that charge alone would have fitted, with the current total. The
  cap is given with each call, so a budget changed by an admin applies from the next call on
  (a cap lowered below the total refuses every charge, even ``n = 0``). ``n = 0`` reads the
  total (and creates nothing); ``cap = math.inf`` only counts. ``n`` must be finite and
  ``>= 0``, the cap must not be NaN (``ValueError``).
- ``adjust(key, delta)`` adds ``delta`` without any check and returns the new total:
  negative gives back what was reserved but not used, positive adds usage above the
  reservation. The total may so exceed the cap, by at most the under-reservations of the
  calls in flight at once, and the next charge is refused until it is back under; it may also
  go below zero (a reservation given back after its counter expired or was seeded anew): the
  counter is a ledger, never clamped.
- ``seed(key, value)`` sets the counter only when it does not exist (never written, or
  expired), e.g. from a journal replayed at start; True when it did. A counter exists from
  its first write (a charge allowed with ``n > 0``, an ``adjust``, a ``seed``), whatever its
  value, until it expires.
- ``ttl`` (seconds, ``> 0`` and finite; all three take it): a counter written with one
  expires ``ttl`` seconds after its last write (every allowed charge with ``n > 0``, every
  ``adjust`` and a successful ``seed`` sets it again), then reads as 0 and no longer exists.
  Meant for period counters (the key names the period), so that old periods go away; one
  call has one ``ttl``: for counters of several periods, pass the longest. ``None`` leaves
  the expiry of an existing counter as it is (a new one never expires).

Times are the backend's own clock (monotonic within a host; Redis's ``TIME`` across hosts).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol


class StateUnavailable(Exception):
    """The shared state cannot be reached and the backend is set to fail closed: the request
    gets a 503."""


class Limit(NamedTuple):
    """A token bucket's shape: ``capacity`` tokens at most, refilled at ``rate`` per second
    (e.g. 600 requests/minute: ``Limit(600, 10.0)``)."""

    capacity: float
    rate: float


class Take(NamedTuple):
    """One bucket in a ``take_many``: take ``n`` tokens from ``key`` shaped by ``limit``."""

    key: str
    n: float
    limit: Limit


class Verdict(NamedTuple):
    """The answer of a take, per bucket."""

    #: The tokens were taken (for ``take_many``: from every bucket).
    allowed: bool
    #: Tokens left in the bucket after the take (before it, when refused); may be negative.
    remaining: float
    #: Seconds until the bucket holds the tokens asked for (0 when allowed).
    retry_after: float
    #: Seconds until the bucket is full again.
    reset: float


class Charge(NamedTuple):
    """One counter in a ``charge_many``: add ``n`` (>= 0) to ``key`` if the total stays
    ``<= cap`` (``math.inf``: no cap, only counting)."""

    key: str
    n: float
    cap: float


class Spent(NamedTuple):
    """The answer of a ``charge_many``, per charge."""

    #: Allowed: every ``n`` was added. Refused (nothing was added): whether this charge
    #: alone would have fitted under its cap.
    allowed: bool
    #: The counter's total: after the charges when allowed, else as it is.
    total: float


def check_ttl(ttl: float | None) -> None:
    """``ValueError`` unless ``ttl`` is None or a finite number of seconds > 0."""
    if ttl is not None and not 0.0 < ttl < math.inf:
        raise ValueError(f"ttl must be None or a finite number of seconds > 0, not {ttl!r}")


def check_charges(charges: list[Charge], ttl: float | None) -> None:
    """``ValueError`` for a charge the contract refuses (``n`` not finite and ``>= 0``, a NaN
    cap) or a bad ``ttl``."""
    check_ttl(ttl)
    for c in charges:
        if not 0.0 <= c.n < math.inf or math.isnan(c.cap):
            raise ValueError(f"a charge needs a finite n >= 0 and a cap, not {c!r}")


def check_amount(x: float) -> None:
    """``ValueError`` unless ``x`` (an ``adjust`` delta, a ``seed`` value) is finite."""
    if not math.isfinite(x):
        raise ValueError(f"expected a finite amount, not {x!r}")


class State(Protocol):
    """Atomic operations on shared counters; see the module docstring for the semantics."""

    #: The backend's name: ``memory``, ``local`` or ``redis``.
    name: str

    async def take_many(self, takes: list[Take]) -> list[Verdict]:
        """Take from every bucket or from none (one round trip for remote backends)."""
        ...

    def prepare(self, buckets: list[tuple[str, Limit]]) -> object:
        """A handle for taking from these buckets again and again (``take_prepared``): the
        backend builds once what does not change between requests (keys, shapes, for Redis
        the command's bytes)."""
        ...

    async def take_prepared(self, handle: object, ns: list[float]) -> tuple[bool, list[float]]:
        """``take_many`` of ``ns[i]`` tokens from the prepared buckets: whether the take
        happened and each bucket's balance (``Verdict.remaining``; the rest of a verdict
        follows from it and the bucket's shape). The same semantics as ``take_many``."""
        ...

    async def settle(self, key: str, n: float, limit: Limit) -> None:
        """Adjust a bucket by ``n`` tokens after the fact without any check: positive gives
        back what was reserved but not used, negative takes usage above the reservation
        (the balance may go below zero). The balance never exceeds the capacity."""
        ...

    async def acquire(self, key: str, limit: int) -> bool:
        """Take one of ``limit`` concurrency slots of ``key``; False when all are held."""
        ...

    async def release(self, key: str) -> None:
        """Give back a slot taken by ``acquire`` (never below zero)."""
        ...

    async def add(self, key: str, x: float) -> float:
        """Add ``x`` to the counter ``key``; its new value."""
        ...

    async def get(self, key: str) -> float:
        """The counter's value (0 when never added to)."""
        ...

    async def charge_many(self, charges: list[Charge], *, ttl: float | None = None) -> list[Spent]:
        """Add to every counter, each staying under its cap, or to none (one round trip for
        remote backends)."""
        ...

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        """Add ``delta`` (may be negative) to the charge counter ``key`` without any check;
        its new total (may exceed the cap, or be below zero)."""
        ...

    async def seed(self, key: str, value: float, *, ttl: float | None = None) -> bool:
        """Set the charge counter ``key`` to ``value`` if it does not exist; whether it did."""
        ...

    def health(self) -> dict[str, object]:
        """What ``/readyz`` shows about the backend (e.g. Redis reachable, fail mode)."""
        ...

    async def close(self) -> None: ...


async def take(state: State, key: str, n: float, limit: Limit) -> Verdict:
    """One bucket: ``take_many`` with one item."""
    return (await state.take_many([Take(key, n, limit)]))[0]


async def charge(
    state: State, key: str, n: float, cap: float, *, ttl: float | None = None
) -> Spent:
    """One counter: ``charge_many`` with one item."""
    return (await state.charge_many([Charge(key, n, cap)], ttl=ttl))[0]
