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

Times are the backend's own clock (monotonic within a host; Redis's ``TIME`` across hosts).
"""

from __future__ import annotations

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


class State(Protocol):
    """Atomic operations on shared counters; see the module docstring for the semantics."""

    #: The backend's name: ``memory``, ``local`` or ``redis``.
    name: str

    async def take_many(self, takes: list[Take]) -> list[Verdict]:
        """Take from every bucket or from none (one round trip for remote backends)."""
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

    def health(self) -> dict[str, object]:
        """What ``/readyz`` shows about the backend (e.g. Redis reachable, fail mode)."""
        ...

    async def close(self) -> None: ...


async def take(state: State, key: str, n: float, limit: Limit) -> Verdict:
    """One bucket: ``take_many`` with one item."""
    return (await state.take_many([Take(key, n, limit)]))[0]
