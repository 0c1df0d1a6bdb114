"""The ``memory`` backend: this process only. The reference semantics of the contract in
plain Python (the shared backends must behave the same), and the local fallback of a
fail-open ``redis`` backend."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import cast

from ..config.schema import StateConfig
from .base import Charge, Limit, Spent, Take, Verdict, check_amount, check_charges, check_ttl


class Bucket:
    """A token bucket's balance and when it was last refilled."""

    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


def refill(b: Bucket | None, limit: Limit, now: float) -> Bucket:
    """The bucket as of ``now`` (a new one is full)."""
    if b is None:
        return Bucket(limit.capacity, now)
    if now > b.at:
        b.tokens = min(limit.capacity, b.tokens + (now - b.at) * limit.rate)
        b.at = now
    return b


def verdict(b: Bucket, n: float, limit: Limit, allowed: bool) -> Verdict:
    missing = 0.0 if allowed else n - b.tokens
    retry = missing / limit.rate if missing > 0 and limit.rate > 0 else 0.0
    if missing > 0 and limit.rate <= 0:
        retry = float("inf")
    full = (limit.capacity - b.tokens) / limit.rate if limit.rate > 0 else 0.0
    return Verdict(allowed, b.tokens, retry, max(0.0, full))


class MemoryState:
    """Buckets, slots, counters and charge counters in dicts of this process."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}
        self.slots: dict[str, int] = {}
        self.counters: dict[str, float] = {}
        #: Charge counters: key -> [total, when it expires (this clock; inf: never)].
        self.charged: dict[str, list[float]] = {}
        self._sweep_at = 1024

    def take_many_now(self, takes: list[Take]) -> list[Verdict]:
        now = self.clock()
        seen: dict[str, Bucket] = {}  # one bucket per key, even when a key comes twice
        for t in takes:
            if t.key not in seen:
                seen[t.key] = refill(self.buckets.get(t.key), t.limit, now)
        buckets = [seen[t.key] for t in takes]
        # the same key twice in one call: the takes add up
        need: dict[str, float] = {}
        for t in takes:
            need[t.key] = need.get(t.key, 0.0) + t.n
        ok = all(b.tokens >= need[t.key] for t, b in zip(takes, buckets, strict=True))
        out = []
        for t, b in zip(takes, buckets, strict=True):
            self.buckets[t.key] = b
            if ok:
                b.tokens -= t.n
        for t, b in zip(takes, buckets, strict=True):
            out.append(verdict(b, need[t.key] if not ok else t.n, t.limit, ok))
        return out

    async def take_many(self, takes: list[Take]) -> list[Verdict]:
        return self.take_many_now(takes)

    def prepare(self, buckets: list[tuple[str, Limit]]) -> object:
        return buckets

    def take_prepared_now(self, handle: object, ns: list[float]) -> tuple[bool, list[float]]:
        buckets = cast(list[tuple[str, Limit]], handle)
        got = self.take_many_now([Take(k, n, lim) for (k, lim), n in zip(buckets, ns, strict=True)])
        return got[0].allowed, [v.remaining for v in got]

    async def take_prepared(self, handle: object, ns: list[float]) -> tuple[bool, list[float]]:
        return self.take_prepared_now(handle, ns)

    def settle_now(self, key: str, n: float, limit: Limit) -> None:
        b = refill(self.buckets.get(key), limit, self.clock())
        b.tokens = min(limit.capacity, b.tokens + n)
        self.buckets[key] = b

    async def settle(self, key: str, n: float, limit: Limit) -> None:
        self.settle_now(key, n, limit)

    async def acquire(self, key: str, limit: int) -> bool:
        held = self.slots.get(key, 0)
        if held >= limit:
            return False
        self.slots[key] = held + 1
        return True

    async def release(self, key: str) -> None:
        held = self.slots.get(key, 0)
        if held > 1:
            self.slots[key] = held - 1
        else:
            self.slots.pop(key, None)

    async def add(self, key: str, x: float) -> float:
        v = self.counters[key] = self.counters.get(key, 0.0) + x
        return v

    async def get(self, key: str) -> float:
        return self.counters.get(key, 0.0)

    # --- charge counters ---------------------------------------------------------------------

    def _live(self, key: str, now: float) -> list[float] | None:
        """The charge counter ``key`` ([total, expires]) when it exists as of ``now``."""
        c = self.charged.get(key)
        if c is not None and not now < c[1]:
            del self.charged[key]  # expired: as if never written
            return None
        return c

    def _write(
        self, key: str, c: list[float] | None, v: float, now: float, ttl: float | None
    ) -> None:
        """Set the charge counter ``key`` (``c``: as ``_live`` found it) to ``v``."""
        if c is None:
            if len(self.charged) >= self._sweep_at:  # drop the expired ones now and then
                for k in [k for k, e in self.charged.items() if not now < e[1]]:
                    del self.charged[k]
                self._sweep_at = max(1024, 2 * len(self.charged))
            c = self.charged[key] = [v, math.inf]
        c[0] = v
        if ttl is not None:
            c[1] = now + ttl

    def charge_many_now(self, charges: list[Charge], ttl: float | None = None) -> list[Spent]:
        check_charges(charges, ttl)
        now = self.clock()
        found: dict[str, list[float] | None] = {}
        total: dict[str, float] = {}
        need: dict[str, float] = {}  # the same key twice: the charges add up
        for c in charges:
            if c.key not in found:
                e = found[c.key] = self._live(c.key, now)
                total[c.key] = 0.0 if e is None else e[0]
                need[c.key] = 0.0
            need[c.key] += c.n
        fits = [total[c.key] + need[c.key] <= c.cap for c in charges]
        if not all(fits):
            return [Spent(f, total[c.key]) for c, f in zip(charges, fits, strict=True)]
        for k, n in need.items():
            if n > 0:
                self._write(k, found[k], total[k] + n, now, ttl)
        return [Spent(True, total[c.key] + need[c.key]) for c in charges]

    async def charge_many(self, charges: list[Charge], *, ttl: float | None = None) -> list[Spent]:
        return self.charge_many_now(charges, ttl)

    def adjust_now(self, key: str, delta: float, ttl: float | None = None) -> float:
        check_amount(delta)
        check_ttl(ttl)
        now = self.clock()
        c = self._live(key, now)
        v = (0.0 if c is None else c[0]) + delta
        self._write(key, c, v, now, ttl)
        return v

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        return self.adjust_now(key, delta, ttl)

    def seed_now(self, key: str, value: float, ttl: float | None = None) -> bool:
        check_amount(value)
        check_ttl(ttl)
        now = self.clock()
        if self._live(key, now) is not None:
            return False
        self._write(key, None, value, now, ttl)
        return True

    async def seed(self, key: str, value: float, *, ttl: float | None = None) -> bool:
        return self.seed_now(key, value, ttl)

    def health(self) -> dict[str, object]:
        return {"backend": self.name}

    async def close(self) -> None:
        pass


def create(cfg: StateConfig) -> MemoryState:
    return MemoryState()
