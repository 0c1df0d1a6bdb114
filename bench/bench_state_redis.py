"""Micro-benchmark of the ``redis`` state backend against a running Redis.

Run: ``python bench/bench_state_redis.py [--url URL] [--ops N] [--concurrency C]``. For each
operation, C tasks share one ``RedisState`` (its one pipelined connection) and run N calls
in all; it prints calls/s and the p50/p99 latency of one call in µs (time.perf_counter_ns
around each call). Operations: ``take_many`` of 1 bucket, of 3 buckets, and ``acquire`` +
``release`` (two calls, timed together). Uses uvloop when installed (as the gateway does)
unless ``--asyncio``. Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from fastgw.state.base import Limit, Take
from fastgw.state.redis import RedisState

Op = Callable[[int], Awaitable[object]]


def pct(sorted_ns: list[int], p: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * p))] / 1000


async def run(name: str, op: Op, ops: int, concurrency: int) -> None:
    lat: list[int] = []
    per_task = ops // concurrency

    async def worker(w: int) -> None:
        for _ in range(per_task):
            t0 = time.perf_counter_ns()
            await op(w)
            lat.append(time.perf_counter_ns() - t0)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))  # warm-up
    lat.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall = time.perf_counter() - t0
    lat.sort()
    print(
        f"{name:<22} {len(lat) / wall:>10,.0f} ops/s   p50 {pct(lat, 0.50):>8.0f} µs"
        f"   p99 {pct(lat, 0.99):>8.0f} µs"
    )


async def main(url: str, ops: int, concurrency: int) -> None:
    prefix = f"fastgw-bench-{uuid.uuid4().hex[:8]}:"
    s = RedisState(url, prefix=prefix, on_error="closed", timeout=2.0)
    lim = Limit(1e12, 1e9)  # always admits: measures the mechanism, not refusals
    one = [[Take(f"k{w}", 1, lim)] for w in range(concurrency)]
    three = [
        [Take(f"user{w}", 1, lim), Take(f"key{w % 8}", 1, lim), Take("model", 1, lim)]
        for w in range(concurrency)
    ]

    async def slot(w: int) -> None:
        if await s.acquire(f"slot{w % 8}", 1_000_000):
            await s.release(f"slot{w % 8}")

    print(f"{url}  concurrency {concurrency}  {ops:,} calls per operation")
    try:
        await run("take_many(1)", lambda w: s.take_many(one[w]), ops, concurrency)
        await run("take_many(3)", lambda w: s.take_many(three[w]), ops, concurrency)
        await run("acquire+release", slot, ops, concurrency)
        print(f"health: {s.health()}")
    finally:
        await s.close()
        r = Redis.from_url(url)
        keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--asyncio", action="store_true", help="the stock event loop, not uvloop")
    a = ap.parse_args()
    coro = main(a.url, a.ops, a.concurrency)
    if a.asyncio:
        asyncio.run(coro)
    else:
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
