"""The state contract (fastgw/state/base.py), run against every backend that is available:
``memory`` always, ``local`` once its module exists, ``redis`` when its module exists and a
Redis answers on 127.0.0.1:6379 (CI starts one). Each test uses fresh keys."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from fastgw.config.schema import StateConfig
from fastgw.state import Charge, Limit, State, Take, charge, open_state, take
from tests.servers import redis_forget, redis_up


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
        await redis_forget(cfg.prefix, cfg.redis_url)


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


async def test_prepared_takes_are_take_many(state: State) -> None:
    a, b = key("pa"), key("pb")
    h = state.prepare([(a, Limit(3, 0.0)), (b, Limit(10, 0.0))])
    assert await state.take_prepared(h, [1.0, 4.0]) == (True, [2.0, 6.0])
    assert await state.take_prepared(h, [3.0, 1.0]) == (False, [2.0, 6.0])  # a lacks: neither
    assert (await take(state, b, 0, Limit(10, 0.0))).remaining == 6.0
    assert await state.take_prepared(h, [2.0, 6.0]) == (True, [0.0, 0.0])


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


# --- charge counters ----------------------------------------------------------------------------

INF = math.inf


async def test_charge_many_is_all_or_nothing_across_three_keys(state: State) -> None:
    k, t, g = key("key"), key("team"), key("tag")
    three = [Charge(k, 0.5, 1.0), Charge(t, 0.5, 10.0), Charge(g, 0.5, INF)]
    assert [tuple(s) for s in await state.charge_many(three)] == [(True, 0.5)] * 3
    assert (await charge(state, t, 9.25, 10.0)).allowed  # the team is now at 9.75
    got = await state.charge_many(three)  # the key would fit (1.0), the team not (10.25)
    assert [tuple(s) for s in got] == [(True, 0.5), (False, 9.75), (True, 0.5)]
    # nothing was added anywhere
    reads = await state.charge_many([Charge(k, 0, INF), Charge(t, 0, INF), Charge(g, 0, INF)])
    assert [s.total for s in reads] == [0.5, 9.75, 0.5]
    got = await state.charge_many([Charge(k, 0.5, 1.0), Charge(g, 0.25, INF)])
    assert [tuple(s) for s in got] == [(True, 1.0), (True, 0.75)]  # exactly at the cap: fits


async def test_a_charge_of_zero_reads_and_creates_nothing(state: State) -> None:
    k = key("read")
    assert tuple(await charge(state, k, 0, 1.0)) == (True, 0.0)
    assert await state.seed(k, 2.0)  # the read did not create the counter
    assert tuple(await charge(state, k, 0, 5.0)) == (True, 2.0)
    assert tuple(await charge(state, k, 0, 1.0)) == (False, 2.0)  # over its cap: refused


async def test_the_cap_may_change_between_calls(state: State) -> None:
    k = key("cap")
    assert tuple(await charge(state, k, 3.0, 5.0)) == (True, 3.0)
    assert tuple(await charge(state, k, 3.0, 5.0)) == (False, 3.0)
    assert tuple(await charge(state, k, 3.0, 6.0)) == (True, 6.0)  # raised by an admin
    assert tuple(await charge(state, k, 0.0, 4.0)) == (False, 6.0)  # lowered below the total
    assert tuple(await charge(state, k, 0.5, 4.0)) == (False, 6.0)
    assert tuple(await charge(state, k, 1.0, 7.0)) == (True, 7.0)


async def test_adjust_settles_without_a_check(state: State) -> None:
    k = key("adjust")
    assert (await charge(state, k, 0.8, 1.0)).allowed  # reserved 0.8
    assert await state.adjust(k, -0.5) == pytest.approx(0.3)  # used 0.3: the rest back
    assert (await charge(state, k, 0.7, 1.0)).allowed  # 1.0
    assert await state.adjust(k, 0.25) == pytest.approx(1.25)  # used more than reserved
    got = await charge(state, k, 0, 1.0)
    assert not got.allowed and got.total == pytest.approx(1.25)  # over: refused until back
    assert await state.adjust(k, -2.0) == pytest.approx(-0.75)  # a ledger: never clamped
    assert (await charge(state, k, 1.75, 1.0)).allowed
    new = key("adjust-new")
    assert await state.adjust(new, -1.0) == -1.0  # creates it
    assert not await state.seed(new, 5.0)


async def test_seed_only_when_absent(state: State) -> None:
    k = key("seed")
    assert await state.seed(k, 4.5)
    assert not await state.seed(k, 1.0)
    assert tuple(await charge(state, k, 0.5, 5.0)) == (True, 5.0)
    charged = key("seed-charged")
    assert (await charge(state, charged, 1.0, INF)).allowed
    assert not await state.seed(charged, 100.0)
    zero = key("seed-zero")
    assert await state.adjust(zero, 0.0) == 0.0  # exists, at zero
    assert not await state.seed(zero, 3.0)
    assert (await charge(state, zero, 0, INF)).total == 0.0


async def test_an_infinite_cap_only_counts(state: State) -> None:
    k = key("inf")
    for i in range(1, 4):
        assert tuple(await charge(state, k, 1e12, INF)) == (True, i * 1e12)


async def test_the_same_counter_twice_adds_up(state: State) -> None:
    k = key("twice")
    got = await state.charge_many([Charge(k, 2.0, 5.0), Charge(k, 2.0, 5.0)])
    assert [tuple(s) for s in got] == [(True, 4.0), (True, 4.0)]
    got = await state.charge_many([Charge(k, 0.5, 5.0), Charge(k, 1.0, 100.0)])
    assert [tuple(s) for s in got] == [(False, 4.0), (True, 4.0)]  # 4 + 1.5 > 5


async def test_charge_counters_are_a_namespace_of_their_own(state: State) -> None:
    k = key("ns")
    await state.add(k, 7.0)
    assert (await take(state, k, 1, Limit(3, 0.0))).allowed
    assert tuple(await charge(state, k, 0, INF)) == (True, 0.0)
    assert await state.seed(k, 1.0)
    assert tuple(await charge(state, k, 2.0, 3.0)) == (True, 3.0)
    assert await state.adjust(k, 1.0) == 4.0
    assert await state.get(k) == 7.0  # the add/get counter is untouched
    v = await take(state, k, 0, Limit(3, 0.0))
    assert v.remaining == 2  # and so is the bucket


async def test_charge_counters_expire_after_their_ttl(state: State) -> None:
    # margins of 0.2 s or more either side of every expiry (a loaded machine oversleeps)
    k, kept, s = key("ttl"), key("kept"), key("seeded")
    assert (await charge(state, k, 1.0, 1.0, ttl=0.6)).allowed  # expires at 0.6
    assert (await charge(state, kept, 1.0, INF)).allowed  # no ttl: never expires
    assert await state.seed(s, 0.5, ttl=0.1)
    await asyncio.sleep(0.3)
    assert await state.adjust(k, 0.0, ttl=0.6) == 1.0  # a write sets the ttl anew: 0.9
    assert await state.adjust(kept, 1.0, ttl=0.6) == 2.0  # now kept expires too
    assert await state.seed(s, 0.25)  # the seeded value expired; seeded again without a ttl
    await asyncio.sleep(0.4)  # 0.7: past the first expiry, before the second
    assert tuple(await charge(state, k, 0, 1.0)) == (True, 1.0)
    await asyncio.sleep(0.5)  # 1.2
    assert tuple(await charge(state, k, 0, 1.0)) == (True, 0.0)  # gone: reads as 0
    assert tuple(await charge(state, kept, 0, INF)) == (True, 0.0)
    assert await state.seed(k, 0.5)  # no longer exists
    assert not await state.seed(s, 1.0)  # without a ttl: still there
    assert await state.adjust(s, 0.25) == 0.5


async def test_invalid_charges_are_refused(state: State) -> None:
    k = key("bad")
    for bad in (Charge(k, -1.0, 1.0), Charge(k, INF, INF), Charge(k, math.nan, 1.0)):
        with pytest.raises(ValueError):
            await state.charge_many([Charge(key("fine"), 1.0, INF), bad])
    with pytest.raises(ValueError):
        await state.charge_many([Charge(k, 1.0, math.nan)])
    for ttl in (0.0, -1.0, INF, math.nan):
        with pytest.raises(ValueError):
            await state.charge_many([Charge(k, 1.0, INF)], ttl=ttl)
        with pytest.raises(ValueError):
            await state.adjust(k, 1.0, ttl=ttl)
        with pytest.raises(ValueError):
            await state.seed(k, 1.0, ttl=ttl)
    for x in (INF, -INF, math.nan):
        with pytest.raises(ValueError):
            await state.adjust(k, x)
        with pytest.raises(ValueError):
            await state.seed(k, x)
    assert await state.seed(k, 1.0)  # none of that touched it


async def test_concurrent_charges_never_overspend(state: State) -> None:
    k, team = key("race"), key("race-team")
    got = await asyncio.gather(*(charge(state, k, 0.1, 1.0) for _ in range(30)))
    assert sum(s.allowed for s in got) == 10  # 0.1 ten times is 0.9999999999999999
    assert max(s.total for s in got) == pytest.approx(1.0)
    both = [Charge(k + "-2", 0.1, 1.0), Charge(team, 0.1, 0.55)]
    got2 = await asyncio.gather(*(state.charge_many(both) for _ in range(30)))
    admitted = [all(s.allowed for s in r) for r in got2]
    assert sum(admitted) == 5  # the team's cap binds; all or nothing
    # refused: the key alone would fit, the team does not
    assert all(
        r[0].allowed and not r[1].allowed for r, a in zip(got2, admitted, strict=True) if not a
    )
    reads = await state.charge_many([Charge(k + "-2", 0, INF), Charge(team, 0, INF)])
    assert reads[0].total == reads[1].total == pytest.approx(0.5)
