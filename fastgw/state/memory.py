"""The ``memory`` backend: this process only. The reference semantics of the contract in
plain Python (the shared backends must behave the same), and the local fallback of a
fail-open ``redis`` backend."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config.schema import StateConfig
from .base import Limit, Take, Verdict


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
    """Buckets, slots and counters in dicts of this process."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}
        self.slots: dict[str, int] = {}
        self.counters: dict[str, float] = {}

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

    def health(self) -> dict[str, object]:
        return {"backend": self.name}

    async def close(self) -> None:
        pass


def create(cfg: StateConfig) -> MemoryState:
    return MemoryState()
