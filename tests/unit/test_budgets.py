"""Budgets (fastgw/policy/budgets.py): periods, reservation and settlement, the soft
threshold, fallbacks, all-or-nothing across key, team and tags, the overshoot bound under
concurrency (memory, local shared memory and, when one answers, Redis), and replay from the
ledger after a restart or a crash."""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import os
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastgw.api.errors import GatewayError
from fastgw.config import validate
from fastgw.config.budgetspec import parse_period
from fastgw.config.keyspec import key_hash
from fastgw.config.schema import GatewayConfig, KeyConfig
from fastgw.policy.budgets import Budgets, Period, Reservation, counter_key, window
from fastgw.policy.keys import Principal
from fastgw.policy.ledger import Ledger, SpendEvent
from fastgw.policy.store import BudgetRecord, now_iso
from fastgw.state import Charge, Spent, State, StateUnavailable
from fastgw.state.memory import MemoryState
from tests.servers import redis_forget, redis_up

DAY = 86400.0


def ts(text: str) -> float:
    """Unix time of an ISO 8601 UTC time."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


class Clock:
    def __init__(self, at: str) -> None:
        self.now = ts(at)

    def __call__(self) -> float:
        return self.now


def config(
    key_budget: dict[str, Any] | None = None,
    team_budget: dict[str, Any] | None = None,
    tag_budget: dict[str, Any] | None = None,
    **extra: Any,
) -> GatewayConfig:
    data: dict[str, Any] = {
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
        "models": {n: {"targets": [{"provider": "p"}]} for n in ("smart", "cheap", "tiny")},
        "teams": {"research": {"budget": team_budget} if team_budget else {}},
        "keys": [
            {
                "name": "alice",
                "key": "alice-secret-0123456789",
                "team": "research",
                "tags": ["batch"],
                **({"budget": key_budget} if key_budget else {}),
            },
            {"name": "bob", "key": "bob-secret-0123456789ab", "team": "research"},
        ],
        "budgets": {"tags": {"batch": tag_budget} if tag_budget else {}},
        **extra,
    }
    return validate(data, env={})


def principal(cfg: GatewayConfig, name: str = "alice") -> Principal:
    k = next(k for k in cfg.keys if k.name == name)
    assert k.key is not None
    return Principal(k, key_hash(k.key), None, None)


def anyone(name: str, team: str | None = None, tags: tuple[str, ...] = ()) -> Principal:
    k = KeyConfig(name=name, key="x" * 20, team=team, tags=list(tags))
    return Principal(k, key_hash("x" * 20), None, None)


@pytest.fixture
async def ledger(tmp_path: os.PathLike[str]) -> AsyncIterator[Ledger]:
    led = Ledger(os.path.join(tmp_path, "spend.db"), flush_interval=0.05)
    yield led
    await led.close()


def make(
    cfg: GatewayConfig, ledger: Ledger, state: State | None = None, at: str = "2026-11-23T12:00:00"
) -> tuple[Budgets, Clock]:
    clock = Clock(at)
    b = Budgets(cfg, ledger, clock=clock)
    b.state = state if state is not None else MemoryState()
    return b, clock


async def total(b: Budgets, key: str) -> float:
    """A charge counter's total (a charge of nothing reads it)."""
    assert b.state is not None
    from fastgw.state import charge

    return (await charge(b.state, key, 0.0, math.inf)).total


def header(r: Reservation | GatewayError, name: str) -> str | None:
    for k, v in r.headers:
        if k == name.encode():
            return v.decode()
    return None


# -- periods --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "at", "pid", "start", "reset"),
    [
        ("daily", "2026-11-23T23:59:59", "2026-11-23", "2026-11-23", "2026-11-24"),
        ("daily", "2026-12-31T00:00:00", "2026-12-31", "2026-12-31", "2027-01-01"),
        # ISO weeks start on Monday; the year of a week is the year of its Thursday
        ("weekly", "2026-11-23T08:00:00", "2026-W48", "2026-11-23", "2026-11-30"),
        ("weekly", "2026-11-29T23:59:59", "2026-W48", "2026-11-23", "2026-11-30"),
        ("weekly", "2027-01-01T12:00:00", "2026-W53", "2026-12-28", "2027-01-04"),
        ("weekly", "2024-12-31T12:00:00", "2025-W01", "2024-12-30", "2025-01-06"),
        ("monthly", "2026-01-31T23:59:59", "2026-01", "2026-01-01", "2026-02-01"),
        ("monthly", "2026-12-31T23:00:00", "2026-12", "2026-12-01", "2027-01-01"),
        ("monthly", "2028-02-29T10:00:00", "2028-02", "2028-02-01", "2028-03-01"),
        ("monthly", "2026-02-28T10:00:00", "2026-02", "2026-02-01", "2026-03-01"),
        ("7d", "2026-11-23T12:00:00", "2026-11-23", "2026-11-17", "2026-11-24"),
        ("1d", "2026-03-01T00:00:00", "2026-03-01", "2026-03-01", "2026-03-02"),
    ],
)
def test_period_ids_and_bounds(period: str, at: str, pid: str, start: str, reset: str) -> None:
    w = window(Period(period), ts(at))
    assert w.id == pid
    assert w.start == ts(start + "T00:00:00")
    assert w.reset == ts(reset + "T00:00:00")


def test_a_rolling_window_lists_its_previous_days_oldest_first() -> None:
    w = window(Period("3d"), ts("2026-03-01T05:00:00"))
    assert w.previous == ("2026-02-27", "2026-02-28")
    assert window(Period("daily"), ts("2026-03-01T05:00:00")).previous == ()
    assert len(window(Period("366d"), ts("2026-03-01T05:00:00")).previous) == 365


@pytest.mark.parametrize("bad", ["0d", "367d", "07d", "Daily", "7 d", "", "d", "yearly", "-1d"])
def test_bad_periods(bad: str) -> None:
    with pytest.raises(ValueError, match="daily, weekly, monthly or <N>d"):
        parse_period(bad)


def test_period_ttl_covers_the_period_and_a_day() -> None:
    assert Period("daily").ttl == 2 * DAY
    assert Period("weekly").ttl == 8 * DAY
    assert Period("monthly").ttl == 32 * DAY
    assert Period("30d").ttl == 31 * DAY


def test_counter_keys_cannot_collide_through_names() -> None:
    assert counter_key("key", "alice", "2026-11") == "budget:key:alice:2026-11"
    # a name ending like a period id is not another name's counter
    assert counter_key("key", "a:2026", "11") != counter_key("key", "a", "2026:11")
    assert counter_key("team", "x%3Ay", "d") != counter_key("team", "x:y", "d")


# -- reserve and settle ---------------------------------------------------------------------


async def test_no_budget_no_reservation(ledger: Ledger) -> None:
    cfg = config()
    b, _ = make(cfg, ledger)
    assert not b.active
    assert await b.reserve(principal(cfg), "smart", 1.0) is None
    cfg = config(key_budget={"usd": 1})
    b, _ = make(cfg, ledger)
    assert b.active
    assert await b.reserve(principal(cfg, "bob"), "smart", 1.0) is None  # bob has none
    assert await b.reserve(None, "smart", 1.0) is None


async def test_settle_is_exact(ledger: Ledger) -> None:
    cfg = config(key_budget={"usd": 1, "period": "daily"}, team_budget={"usd": 10})
    b, _ = make(cfg, ledger)
    p = principal(cfg)
    r = await b.reserve(p, "smart", 0.3)
    assert r is not None and r.fallback is None
    key = counter_key("key", "alice", "2026-11-23")
    team = counter_key("team", "research", "2026-11")
    assert await total(b, key) == pytest.approx(0.3, abs=1e-12)
    await r.settle(0.1234567891)
    await r.settle(0.5)  # a second settlement does nothing
    await b.flush()
    assert await total(b, key) == pytest.approx(0.1234567891, abs=1e-9)
    assert await total(b, team) == pytest.approx(0.1234567891, abs=1e-9)
    # more used than reserved: the difference is added
    r = await b.reserve(p, "smart", 0.1)
    assert r is not None
    await r.settle(0.25)
    r2 = await b.reserve(p, "smart", 0.05)
    assert r2 is not None
    await r2.release()
    await b.flush()
    assert await total(b, key) == pytest.approx(0.3734567891, abs=1e-9)
    with pytest.raises(ValueError):
        await b.reserve(p, "smart", -1.0)
    with pytest.raises(ValueError):
        await b.reserve(p, "smart", math.nan)


async def test_over_budget_is_a_429_naming_the_scope_with_retry_after(ledger: Ledger) -> None:
    cfg = config(key_budget={"usd": 1, "period": "daily"})
    b, clock = make(cfg, ledger, at="2026-11-23T22:00:00")
    p = principal(cfg)
    r = await b.reserve(p, "smart", 0.7)
    assert r is not None
    assert header(r, "x-fastgw-budget-limit-usd") == "1"
    assert header(r, "x-fastgw-budget-remaining-usd") == "0.3"
    assert header(r, "x-fastgw-budget-reset") == "7200s"
    assert header(r, "x-fastgw-budget-scope") == "key:alice"
    with pytest.raises(GatewayError) as e:
        await b.reserve(p, "smart", 0.31)
    err = e.value
    assert err.status == 429 and err.code == "budget_exceeded"
    assert err.type == "insufficient_quota"
    assert "key 'alice'" in err.message and "daily budget" in err.message
    assert "2026-11-24T00:00:00Z" in err.message
    assert header(err, "retry-after") == "7200"
    assert header(err, "x-fastgw-budget-remaining-usd") == "0.3"
    assert b.metrics()["refused"] == 1
    # what fits still fits; nothing was charged by the refusal
    assert await b.reserve(p, "smart", 0.3) is not None
    # a request larger than the whole budget says so
    clock.now += DAY
    with pytest.raises(GatewayError, match="more than the whole daily budget"):
        await b.reserve(p, "smart", 1.5)
    # the next day starts afresh
    assert await b.reserve(p, "smart", 1.0) is not None


async def test_all_or_nothing_across_key_team_and_tag(ledger: Ledger) -> None:
    cfg = config(
        key_budget={"usd": 10, "period": "daily"},
        team_budget={"usd": 10, "period": "weekly"},
        tag_budget={"usd": 1, "period": "monthly"},
    )
    b, _ = make(cfg, ledger)
    p = principal(cfg)
    keys = [
        counter_key("key", "alice", "2026-11-23"),
        counter_key("team", "research", "2026-W48"),
        counter_key("tag", "batch", "2026-11"),
    ]
    assert await b.reserve(p, "smart", 0.8) is not None
    with pytest.raises(GatewayError, match="tag 'batch' is over its monthly budget"):
        await b.reserve(p, "smart", 0.5)  # the key and team have room, the tag has not
    assert [await total(b, k) for k in keys] == pytest.approx([0.8, 0.8, 0.8])
    # bob shares the team, not the tag
    assert await b.reserve(principal(cfg, "bob"), "smart", 5.0) is not None
    assert await total(b, keys[1]) == pytest.approx(5.8)
    with pytest.raises(GatewayError, match="team 'research' is over its weekly budget"):
        await b.reserve(principal(cfg, "bob"), "smart", 4.5)
    assert [await total(b, k) for k in keys] == pytest.approx([0.8, 5.8, 0.8])


async def test_the_tightest_budget_gives_the_headers(ledger: Ledger) -> None:
    cfg = config(key_budget={"usd": 10}, tag_budget={"usd": 2, "period": "weekly"})
    b, _ = make(cfg, ledger, at="2026-11-29T23:00:00")
    r = await b.reserve(principal(cfg), "smart", 0.5)
    assert r is not None
    assert header(r, "x-fastgw-budget-scope") == "tag:batch"
    assert header(r, "x-fastgw-budget-remaining-usd") == "1.5"
    assert header(r, "x-fastgw-budget-reset") == "3600s"


async def test_soft_threshold_warns_and_alerts_once_per_period(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(key_budget={"usd": 1, "period": "daily", "soft": 0.5})
    b, clock = make(cfg, ledger)
    p = principal(cfg)
    caplog.set_level(logging.WARNING, "fastgw.policy.budgets")
    r = await b.reserve(p, "smart", 0.25)
    assert r is not None and header(r, "x-fastgw-budget-warning") is None
    r = await b.reserve(p, "smart", 0.125)  # 0.25 before it: not past 0.5
    assert r is not None and header(r, "x-fastgw-budget-warning") is None
    seen = []
    for _ in range(3):  # 0.375, then 0.5 and 0.625 before each
        r = await b.reserve(p, "smart", 0.125)
        assert r is not None
        seen.append(header(r, "x-fastgw-budget-warning"))
    assert seen == [
        None,
        "key 'alice' at 50% of its daily budget",
        "key 'alice' at 62% of its daily budget",
    ]
    alerts = [rec for rec in caplog.records if "budget.soft_threshold" in rec.getMessage()]
    assert len(alerts) == 1
    assert getattr(alerts[0], "scope", None) == "key:alice"
    assert getattr(alerts[0], "period", None) == "2026-11-23"
    assert b.metrics()["soft_alerts"] == 1
    clock.now += DAY  # a new period: a new alert once it is crossed again
    for _ in range(3):
        await b.reserve(p, "smart", 0.3)
    assert b.metrics()["soft_alerts"] == 2


async def test_the_soft_threshold_is_also_noticed_at_settlement(ledger: Ledger) -> None:
    cfg = config(key_budget={"usd": 1, "period": "daily", "soft": 0.5})
    b, _ = make(cfg, ledger)
    r = await b.reserve(principal(cfg), "smart", 0.1)
    assert r is not None
    await r.settle(0.7)  # cost far more than reserved
    await b.flush()
    assert b.metrics()["soft_alerts"] == 1


async def test_fallback_verdict_then_the_fallback_model(ledger: Ledger) -> None:
    cfg = config(
        key_budget={"usd": 1, "period": "daily", "on_exceed": "fallback", "fallback_model": "cheap"}
    )
    b, _ = make(cfg, ledger)
    p = principal(cfg)
    key = counter_key("key", "alice", "2026-11-23")
    assert await b.reserve(p, "smart", 0.9) is not None
    verdict = await b.reserve(p, "smart", 0.5)
    assert verdict is not None and verdict.fallback == "cheap"
    assert header(verdict, "x-fastgw-budget-fallback") == (
        "smart -> cheap (key 'alice' is over its daily budget)"
    )
    assert await total(b, key) == pytest.approx(0.9)  # nothing charged
    await verdict.settle(1.0)  # nothing to settle
    r = await b.reserve(p, "cheap", 0.2, rerouted=verdict)
    assert r is not None and r.fallback is None
    assert header(r, "x-fastgw-budget-fallback") is not None  # the reason travels on
    assert await total(b, key) == pytest.approx(1.1)  # counted, not capped
    # a direct request for the fallback model is never refused by that budget either
    assert await b.reserve(p, "cheap", 5.0) is not None
    assert b.metrics()["fallbacks"] == 1


async def test_a_second_fallback_is_a_429(ledger: Ledger) -> None:
    fb = {"usd": 1, "period": "daily", "on_exceed": "fallback"}
    cfg = config(team_budget={**fb, "fallback_model": "tiny"})
    b, _ = make(cfg, ledger)
    # a run-time key budget falling back to another model than the team's
    record = BudgetRecord(
        kind="key",
        name="alice",
        usd=1,
        period="daily",
        on_exceed="fallback",
        fallback_model="cheap",
        created_at=now_iso(),
    )
    b.update([record])
    p = principal(cfg)
    assert await b.reserve(p, "smart", 1.0) is not None  # both budgets full now
    verdict = await b.reserve(p, "smart", 0.1)
    assert verdict is not None and verdict.fallback == "cheap"  # the key's (first) budget
    with pytest.raises(GatewayError, match="team 'research'"):
        await b.reserve(p, "cheap", 0.1, rerouted=verdict)


async def test_a_rejecting_budget_wins_over_a_falling_back_one(ledger: Ledger) -> None:
    cfg = config(
        key_budget={
            "usd": 1,
            "period": "daily",
            "on_exceed": "fallback",
            "fallback_model": "cheap",
        },
        team_budget={"usd": 1, "period": "daily"},
    )
    b, _ = make(cfg, ledger)
    p = principal(cfg)
    assert await b.reserve(p, "smart", 1.0) is not None
    with pytest.raises(GatewayError, match="team 'research'"):
        await b.reserve(p, "smart", 0.5)


async def test_rolling_window_moves_by_whole_days(ledger: Ledger) -> None:
    cfg = config(key_budget={"usd": 1, "period": "3d"})
    b, clock = make(cfg, ledger, at="2026-11-21T10:00:00")
    p = principal(cfg)
    for spend in (0.5, 0.25):  # day 1, day 2
        r = await b.reserve(p, "smart", spend)
        assert r is not None
        clock.now += DAY
    # day 3: 0.75 in the window; 0.375 more fits once day 1 has left it (next midnight)
    with pytest.raises(GatewayError) as e:
        await b.reserve(p, "smart", 0.375)
    assert header(e.value, "retry-after") == str(int(ts("2026-11-24T00:00:00") - clock.now))
    assert "3-day budget" in e.value.message
    r = await b.reserve(p, "smart", 0.25)
    assert r is not None and header(r, "x-fastgw-budget-remaining-usd") == "0"
    # 0.875 fits only once day 2 and today (0.25 each) have left too: three midnights
    with pytest.raises(GatewayError) as e:
        await b.reserve(p, "smart", 0.875)
    assert header(e.value, "retry-after") == str(int(ts("2026-11-26T00:00:00") - clock.now))
    clock.now += DAY  # day 4: day 1 left the window
    assert await b.reserve(p, "smart", 0.5) is not None
    with pytest.raises(GatewayError):
        await b.reserve(p, "smart", 0.125)


async def test_rolling_previous_days_are_cached_at_most_five_seconds(ledger: Ledger) -> None:
    cfg = config(key_budget={"usd": 1, "period": "2d"})
    state = MemoryState()
    b, _ = make(cfg, ledger, state)
    p = principal(cfg)
    assert await b.reserve(p, "smart", 0.5) is not None  # reads yesterday: nothing
    # a late settlement lands on yesterday's counter
    await state.adjust(counter_key("key", "alice", "2026-11-22"), 0.5)
    assert await b.reserve(p, "smart", 0.25) is not None  # within the cache: not seen yet
    b.scopes["key", "alice"].prev_at -= 6.0  # the cache has aged past 5 s
    with pytest.raises(GatewayError):
        await b.reserve(p, "smart", 0.125)


async def test_state_unreachable_fails_closed_with_503(ledger: Ledger) -> None:
    class Down(MemoryState):
        async def charge_many(self, charges: Any, *, ttl: float | None = None) -> Any:
            raise StateUnavailable("down (test)")

    cfg = config(key_budget={"usd": 1})
    b, _ = make(cfg, ledger, Down())
    with pytest.raises(GatewayError) as e:
        await b.reserve(principal(cfg), "smart", 0.1)
    assert e.value.status == 503 and e.value.code == "state_unavailable"


async def test_run_time_budgets_replace_the_config_ones(ledger: Ledger) -> None:
    cfg = config(key_budget={"usd": 1, "period": "daily"})
    b, _ = make(cfg, ledger)
    p = principal(cfg)
    assert await b.reserve(p, "smart", 0.9) is not None
    with pytest.raises(GatewayError):
        await b.reserve(p, "smart", 0.2)
    raised = BudgetRecord(kind="key", name="alice", usd=2, period="daily", created_at=now_iso())
    b.update([raised])
    kind, name, budget, source = b.effective()[0]
    assert (kind, name, budget.usd, source) == ("key", "alice", 2.0, "admin")
    assert await b.reserve(p, "smart", 0.2) is not None  # the raise is in force
    b.update([])  # removed: the config's budget again
    with pytest.raises(GatewayError):
        await b.reserve(p, "smart", 0.2)
    # a tag budget set at run time applies to every key carrying the tag
    b.update([BudgetRecord(kind="tag", name="vip", usd=0.5, created_at=now_iso())])
    with pytest.raises(GatewayError, match="tag 'vip'"):
        await b.reserve(anyone("carol", tags=("vip",)), "smart", 0.6)


# -- the overshoot bound under concurrency --------------------------------------------------


def _states() -> list[Any]:
    out: list[Any] = ["memory", "local"]
    marks = [] if redis_up() else [pytest.mark.skip(reason="no Redis on 127.0.0.1:6379")]
    out.append(pytest.param("redis", marks=marks))
    return out


@pytest.fixture(params=_states())
async def shared(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> AsyncIterator[State]:
    name = request.param
    if name == "memory":
        yield MemoryState()
        return
    if name == "local":
        from fastgw.state.local import LocalState

        local = LocalState(os.path.join(tmp_path, "state.shm"), entries=1024)
        yield local
        await local.close()
        return
    from fastgw.state.redis import RedisState

    prefix = f"fastgw-test-{uuid.uuid4().hex[:8]}:"
    redis = RedisState(prefix=prefix, timeout=5.0)
    yield redis
    await redis.close()
    await redis_forget(prefix)


@pytest.mark.parametrize("over", [1.0, 1.5], ids=["actual<=reserved", "actual-up-to-1.5x"])
async def test_concurrent_reservations_never_end_above_budget_plus_in_flight(
    shared: State, ledger: Ledger, over: float
) -> None:
    """200 requests reserve 0.01 each against 1.00 at once and settle a random actual cost;
    at every moment the counter stays within the budget plus what requests in flight cost
    beyond their reservation, and it ends at exactly the sum of the admitted actual costs."""
    cfg = config(key_budget={"usd": 1.0, "period": "daily"}, team_budget={"usd": 100.0})
    b, _ = make(cfg, ledger, shared)
    p = principal(cfg)
    rng = random.Random(7)
    key = counter_key("key", "alice", "2026-11-23")
    admitted: list[float] = []
    extra = 0.0  # actual − reserved of the settled ones above their reservation
    highest = 0.0

    async def one() -> None:
        nonlocal extra, highest
        await asyncio.sleep(rng.random() * 0.01)
        try:
            r = await b.reserve(p, "smart", 0.01)
        except GatewayError as e:
            assert e.code == "budget_exceeded"
            return
        assert r is not None
        highest = max(highest, await total(b, key))
        assert highest <= 1.0 + extra + 1e-9
        await asyncio.sleep(rng.random() * 0.02)
        actual = rng.uniform(0.0, 0.01 * over)
        admitted.append(actual)
        extra += max(0.0, actual - 0.01)
        await r.settle(actual)

    await asyncio.gather(*(one() for _ in range(200)))
    await b.flush()
    final = await total(b, key)
    assert final == pytest.approx(math.fsum(admitted), abs=1e-9)
    assert final <= 1.0 + extra + 1e-9
    assert len(admitted) >= 99  # 100 × 0.01 in floating point is a hair above 1.00
    team = await total(b, counter_key("team", "research", "2026-11"))
    assert team == pytest.approx(final, abs=1e-9)


# -- persistence ----------------------------------------------------------------------------


def event(key: str | None, cost: float, at: float, **kw: Any) -> SpendEvent:
    fields: dict[str, Any] = {"team": None, "tags": (), "model": "smart", "target": "p/smart"}
    fields.update(kw)
    return SpendEvent(ts=at, request_id=uuid.uuid4().hex, key=key, cost=cost, **fields)


async def test_replay_after_a_restart_keeps_the_spend(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "spend.db")
    cfg = config(
        key_budget={"usd": 1, "period": "daily"},
        team_budget={"usd": 5, "period": "monthly"},
        tag_budget={"usd": 3, "period": "3d"},
    )
    first = Ledger(path)
    b, clock = make(cfg, first, at="2026-11-20T10:00:00")
    await b.start()
    p = principal(cfg)
    for day, cost in ((0, 0.25), (2, 0.5), (3, 0.25), (3, 0.125)):
        clock.now = ts("2026-11-20T10:00:00") + day * DAY
        r = await b.reserve(p, "smart", 0.5)
        assert r is not None
        await r.settle(cost)
        b.ledger.record(event("alice", cost, clock.now, team="research", tags=("batch",)))
    await b.stop()  # flushes the ledger, closes it
    # a restart: a new worker, a new (empty) state, the same ledger file
    second = Ledger(path)
    b2, _ = make(cfg, second, at="2026-11-23T18:00:00")
    await b2.start()
    assert await total(b2, counter_key("key", "alice", "2026-11-23")) == pytest.approx(0.375)
    assert await total(b2, counter_key("team", "research", "2026-11")) == pytest.approx(1.125)
    assert await total(b2, counter_key("tag", "batch", "2026-11-22")) == pytest.approx(0.5)
    assert await total(b2, counter_key("tag", "batch", "2026-11-23")) == pytest.approx(0.375)
    assert await total(b2, counter_key("tag", "batch", "2026-11-20")) == 0.0  # out of window
    assert b2.metrics()["seeded"] == 4
    with pytest.raises(GatewayError):  # the spend before the restart still counts
        await b2.reserve(p, "smart", 0.7)
    assert await b2.reserve(p, "smart", 0.6) is not None
    await b2.stop()


async def test_replay_never_double_counts_a_surviving_counter(
    tmp_path: os.PathLike[str],
) -> None:
    path = os.path.join(tmp_path, "spend.db")
    cfg = config(key_budget={"usd": 1, "period": "daily"})
    state = MemoryState()  # survives the restart, as shared memory or Redis would
    b, clock = make(cfg, Ledger(path), state)
    await b.start()
    r = await b.reserve(principal(cfg), "smart", 0.5)
    assert r is not None
    await r.settle(0.4)
    b.ledger.record(event("alice", 0.4, clock.now))
    await b.stop()
    b2, _ = make(cfg, Ledger(path), state)
    await b2.start()
    assert await total(b2, counter_key("key", "alice", "2026-11-23")) == pytest.approx(0.4)
    assert b2.metrics()["seeded"] == 0
    await b2.stop()


async def test_a_crash_loses_only_what_was_not_flushed(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "spend.db")
    cfg = config(key_budget={"usd": 10, "period": "daily"})
    ledger = Ledger(path, flush_interval=60.0)
    b, clock = make(cfg, ledger)
    await b.start()
    for _ in range(3):
        b.ledger.record(event("alice", 0.5, clock.now))
    await ledger.flush()
    b.ledger.record(event("alice", 0.25, clock.now))  # settled, not flushed yet
    await ledger.close(flush=False)  # the crash
    reader = Ledger(path)
    try:
        assert await reader.sums("key", "alice", ts("2026-11-23T00:00:00")) == pytest.approx(1.5)
        b2, _ = make(cfg, reader)
        await b2.start()
        assert await total(b2, counter_key("key", "alice", "2026-11-23")) == pytest.approx(1.5)
    finally:
        await reader.close()


async def test_a_budget_set_at_run_time_counts_the_period_so_far(ledger: Ledger) -> None:
    cfg = config()
    b, clock = make(cfg, ledger)
    await b.start()
    b.ledger.record(event("alice", 0.75, clock.now - 3600))
    b.ledger.record(event("alice", 5.0, ts("2026-11-22T12:00:00")))  # yesterday: another period
    await ledger.flush()
    b.update([BudgetRecord(kind="key", name="alice", usd=1, period="daily", created_at=now_iso())])
    assert b.active
    await b.flush()  # the restore runs in the background
    assert await total(b, counter_key("key", "alice", "2026-11-23")) == pytest.approx(0.75)
    with pytest.raises(GatewayError):
        await b.reserve(principal(cfg), "smart", 0.3)


async def test_metrics_and_prometheus(ledger: Ledger) -> None:
    cfg = config(key_budget={"usd": 1})
    b, clock = make(cfg, ledger)
    r = await b.reserve(principal(cfg), "smart", 0.1)
    assert r is not None
    await r.settle(0.05)
    b.ledger.record(event("alice", 0.05, clock.now))
    m = b.metrics()
    assert m["reservations"] == 1 and m["settlements"] == 1 and m["budgets"] == 1
    assert m["ledger_recorded"] == 1 and m["ledger_pending"] == 1
    text = b.prometheus()
    assert "fastgw_budget_reservations_total 1\n" in text
    assert "# TYPE fastgw_budget_ledger_pending gauge\n" in text


class _SlowState(MemoryState):
    """``charge_many`` yields, as a Redis round trip does."""

    async def charge_many(self, charges: list[Charge], *, ttl: float | None = None) -> list[Spent]:
        await asyncio.sleep(0.01)
        return await super().charge_many(charges, ttl=ttl)


async def test_a_reservation_across_midnight_settles_on_the_counter_it_charged(
    ledger: Ledger,
) -> None:
    cfg = config(key_budget={"usd": 10, "period": "daily"})
    b, clock = make(cfg, ledger, _SlowState(), at="2026-11-23T23:59:59.9")
    p = principal(cfg)
    first = asyncio.ensure_future(b.reserve(p, "smart", 1.0))  # charges 11-23
    await asyncio.sleep(0)
    clock.now += 0.2  # midnight passes while it waits for the state
    second = asyncio.ensure_future(b.reserve(p, "smart", 1.0))  # rolls the budget to 11-24
    r1, r2 = await asyncio.gather(first, second)
    assert r1 is not None and r2 is not None
    r1.settle_nowait(0.1)
    r2.settle_nowait(0.1)
    await b.flush()
    assert await total(b, "budget:key:alice:2026-11-23") == pytest.approx(0.1)
    assert await total(b, "budget:key:alice:2026-11-24") == pytest.approx(0.1)
