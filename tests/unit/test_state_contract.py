"""The state contract (fastgw/state/base.py), run against every backend that is available:
``memory`` always, ``local`` once its module exists, ``redis`` when its module exists and a
Redis answers on 127.0.0.1:6379 (CI starts one). Each test uses fresh keys."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from fastgw.config.schema import StateConfig
from fastgw.state import Limit, State, Take, open_state, take
from tests.servers import redis_up


def _backends() -> list[object]:
    out: list[object] = ["memory"]
    for name in ("local", "redis"):
        if importlib.util.find_spec(f"fastgw.state.{name}") is None:
            continue
        marks = []
        if name == "redis" and not redis_up():
            marks.append(pytest.mark.skip(reason="no Redis on 127.0.0.1:6379"))
        out.append(pytest.param(name, marks=marks))
    return out


@pytest.fixture(params=_backends())
async def state(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[State]:
    name = request.param
    cfg = StateConfig(
        backend=name,
        path=os.path.join(str(tmp_path), "state.shm"),
        prefix=f"fastgw-test-{uuid.uuid4().hex[:8]}:",
        timeout=5.0,  # a loaded CI machine must not push calls into the fail-open fallback
    )
    s = open_state(cfg)
    yield s
    await s.close()
    if name == "redis":  # leave nothing behind on the shared server
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(cfg.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=cfg.prefix + "*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


def key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def test_a_new_bucket_is_full_and_admits_exactly_its_capacity(state: State) -> None:
    k, lim = key("cap"), Limit(5, 0.0)
    got = [await take(state, k, 1, lim) for _ in range(7)]
    assert [v.allowed for v in got] == [True] * 5 + [False] * 2
    assert got[4].remaining == 0
    assert got[5].retry_after == float("inf")  # no refill: never


async def test_refill_at_the_rate(state: State) -> None:
    k, lim = key("rate"), Limit(1, 20.0)  # one token every 50 ms
    assert (await take(state, k, 1, lim)).allowed
    v = await take(state, k, 1, lim)
    assert not v.allowed
    assert 0 < v.retry_after <= 0.05 + 1e-6
    await asyncio.sleep(0.08)
    assert (await take(state, k, 1, lim)).allowed


async def test_take_many_is_all_or_nothing(state: State) -> None:
    a, b = key("a"), key("b")
    big, small = Limit(10, 0.0), Limit(1, 0.0)
    assert (await take(state, b, 1, small)).allowed  # b is now empty
    got = await state.take_many([Take(a, 4, big), Take(b, 1, small)])
    assert not any(v.allowed for v in got)
    # a was not touched: all 10 tokens still there
    assert (await take(state, a, 10, big)).allowed


async def test_settle_gives_back_and_takes_debt(state: State) -> None:
    k, lim = key("settle"), Limit(100, 0.0)
    assert (await take(state, k, 60, lim)).allowed  # reserved 60
    await state.settle(k, 50, lim)  # used only 10
    assert (await take(state, k, 90, lim)).allowed  # 90 were left
    await state.settle(k, -25, lim)  # used 25 more than reserved: debt
    v = await take(state, k, 1, lim)
    assert not v.allowed and v.remaining == pytest.approx(-25)
    await state.settle(k, 1000, lim)  # never above capacity
    assert (await take(state, k, 100, lim)).allowed
    assert not (await take(state, k, 1, lim)).allowed


async def test_concurrency_slots(state: State) -> None:
    k = key("slots")
    assert [await state.acquire(k, 2) for _ in range(3)] == [True, True, False]
    await state.release(k)
    assert await state.acquire(k, 2)
    for _ in range(5):  # releasing more than held never goes below zero
        await state.release(k)
    assert [await state.acquire(k, 1) for _ in range(2)] == [True, False]


async def test_the_same_bucket_twice_in_one_take_adds_up(state: State) -> None:
    k, lim = key("twice"), Limit(5, 0.0)
    got = await state.take_many([Take(k, 2, lim), Take(k, 2, lim)])
    assert all(v.allowed for v in got)
    assert (await take(state, k, 1, lim)).allowed  # 5 - 4 = 1 left
    assert not (await take(state, k, 1, lim)).allowed
    assert not any(v.allowed for v in await state.take_many([Take(k, 0, lim), Take(k, 1, lim)]))


async def test_counters(state: State) -> None:
    k = key("ctr")
    assert await state.get(k) == 0
    assert await state.add(k, 1.5) == pytest.approx(1.5)
    assert await state.add(k, 2.25) == pytest.approx(3.75)
    assert await state.get(k) == pytest.approx(3.75)


async def test_concurrent_takes_never_over_admit(state: State) -> None:
    k, lim = key("race"), Limit(50, 0.0)
    got = await asyncio.gather(*(take(state, k, 1, lim) for _ in range(200)))
    assert sum(v.allowed for v in got) == 50


def test_health_names_the_backend(state: State) -> None:
    assert state.health()["backend"] == state.name
