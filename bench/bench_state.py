"""Micro-benchmark of the state backends: ``memory`` vs ``local`` (pure-Python and compiled
twins of the shared-memory table).

Run: ``python bench/bench_state.py [--ops N] [--repeat R]``. Prints operations/s (best of R
runs, time.perf_counter, one process, uncontended) of take_many with 1 and 3 buckets,
acquire+release (one pair = one op) and add, through the State API (async methods awaited
in one coroutine). Numbers only.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable

from fastgw.state.base import Limit, State, Take
from fastgw.state.local import LocalState
from fastgw.state.memory import MemoryState

BIG = Limit(1e18, 0.0)
ONE = [Take("tenant:acme", 1, BIG)]
THREE = [Take("tenant:acme", 1, BIG), Take("key:k-123", 1, BIG), Take("model:gpt-4o", 1, BIG)]

Op = Callable[[State], Awaitable[object]]


async def _take1(s: State) -> object:
    return await s.take_many(ONE)


async def _take3(s: State) -> object:
    return await s.take_many(THREE)


async def _slot(s: State) -> object:
    await s.acquire("slots:acme", 1_000_000)
    await s.release("slots:acme")
    return None


async def _add(s: State) -> object:
    return await s.add("spend:acme", 0.001)


OPS: list[tuple[str, Op]] = [
    ("take_many x1", _take1),
    ("take_many x3", _take3),
    ("acquire+release", _slot),
    ("add", _add),
]


async def _rate(state: State, op: Op, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            await op(state)
        best = min(best, time.perf_counter() - t0)
    return n / best


def _local(twin: str, path: str) -> LocalState:
    state = LocalState(path, 65536)
    state.table.close()
    state.table = importlib.import_module(twin).ShmTable(path, 65536)
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        backends: list[tuple[str, Callable[[], State]]] = [("memory", MemoryState)]
        for label, twin in (("local/pure", "fastgw._core._shm_py"), ("local/C", "_shm_c")):
            name = twin if twin.startswith("fastgw") else f"fastgw._core.{twin}"
            try:
                importlib.import_module(name)
            except ImportError:
                print(f"({label}: not built, skipped)")
                continue
            backends.append((label, functools.partial(_local, name, os.path.join(d, label[6:]))))
        rows: list[tuple[str, list[float]]] = []
        for label, make in backends:
            state = make()
            n = args.ops // 10 if label == "local/pure" else args.ops
            rates = [asyncio.run(_rate(state, op, n, args.repeat)) for _, op in OPS]
            rows.append((label, rates))
            asyncio.run(state.close())
    head = f"{'ops/s':<14}" + "".join(f"{name:>18}" for name, _ in OPS)
    print(head)
    print("-" * len(head))
    for label, rates in rows:
        print(f"{label:<14}" + "".join(f"{r:>18,.0f}" for r in rates))


if __name__ == "__main__":
    main()
