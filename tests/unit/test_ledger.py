"""The spend ledger (fastgw/policy/ledger.py): batched writes off the event loop, WAL mode,
several writers on one file without double counting, sums for replay and the admin API's
queries by key, team, model and tag per hour or day."""

from __future__ import annotations

import asyncio
import datetime
import os
import sqlite3
import sys
import time
import uuid
from typing import Any

import pytest

from fastgw.config.schema import BudgetsConfig
from fastgw.policy.ledger import (
    Ledger,
    LedgerError,
    SpendEvent,
    default_ledger_path,
    open_ledger,
)
from fastgw.policy.store import default_sqlite_path


def ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def event(at: str | float, cost: float, key: str | None = "alice", **kw: Any) -> SpendEvent:
    fields: dict[str, Any] = {
        "team": "research",
        "tags": (),
        "model": "smart",
        "target": "openai/gpt-4o",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 2,
    }
    fields.update(kw)
    when = ts(at) if isinstance(at, str) else at
    return SpendEvent(ts=when, request_id=uuid.uuid4().hex, key=key, cost=cost, **fields)


@pytest.fixture
def path(tmp_path: os.PathLike[str]) -> str:
    return os.path.join(tmp_path, "spend.db")


async def test_the_file_is_in_wal_mode_and_private(path: str) -> None:
    led = open_ledger(BudgetsConfig(ledger=path, flush_interval=0.5))
    assert led.path == path and led.flush_interval == 0.5
    try:
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            db.close()
        assert os.stat(path).st_mode & 0o077 == 0
    finally:
        await led.close()


def test_the_default_path_is_beside_the_key_store() -> None:
    keys = default_sqlite_path()
    spend = default_ledger_path()
    assert os.path.dirname(spend) == os.path.dirname(keys)
    assert os.path.basename(spend) == "spend-" + os.path.basename(keys).removeprefix("keys-")


async def test_records_are_batched_until_a_flush(path: str) -> None:
    writer, reader = Ledger(path), Ledger(path)
    try:
        for i in range(1000):
            writer.record(event("2026-11-23T10:00:30", 0.001, tags=("a", "b") if i % 2 else ()))
        assert writer.pending() == 2  # aggregated per minute and group
        day = ts("2026-11-23T00:00:00")
        assert await reader.sums("key", "alice", day) == 0.0  # nothing written yet
        assert await writer.flush() == 2
        assert writer.pending() == 0
        assert await reader.sums("key", "alice", day) == pytest.approx(1.0)
        assert await reader.sums("team", "research", day) == pytest.approx(1.0)
        assert await reader.sums("tag", "a", day) == pytest.approx(0.5)
        m = writer.metrics()
        assert m["recorded"] == 1000 and m["written"] == 2 and m["flushes"] == 1
        assert await writer.flush() == 0  # nothing queued: nothing written
    finally:
        await writer.close()
        await reader.close()


async def test_two_workers_on_one_file_count_each_event_once(path: str) -> None:
    a, b = Ledger(path), Ledger(path)
    try:
        for _ in range(3):
            a.record(event("2026-11-23T10:00:00", 0.25))
            b.record(event("2026-11-23T10:00:10", 0.5))  # the same row (minute and group)
        await asyncio.gather(a.flush(), b.flush())
        a.record(event("2026-11-23T10:00:20", 0.125))
        await a.close()
        day = ts("2026-11-23T00:00:00")
        assert await b.sums("key", "alice", day) == pytest.approx(2.375)
        rows = await b.query("key", day, day + 86400, "day")
        assert [(r["key"], r["requests"], r["cost_usd"]) for r in rows] == [("alice", 7, 2.375)]
    finally:
        await b.close()


async def test_the_flusher_writes_within_its_interval(path: str) -> None:
    led = Ledger(path, flush_interval=0.05)
    led.start()
    try:
        led.record(event(time.time(), 0.5))
        for _ in range(200):  # a poll with a 2 s deadline
            if led.metrics()["written"]:
                break
            await asyncio.sleep(0.01)
        assert led.metrics()["written"] == 1
        assert led.health()["running"] is True
    finally:
        await led.close()


async def test_close_flushes_and_a_crash_loses_only_the_queue(path: str) -> None:
    led = Ledger(path)
    led.record(event("2026-11-23T10:00:00", 1.0))
    await led.close()  # a graceful stop writes the queue
    crashed = Ledger(path)
    await crashed.flush()
    crashed.record(event("2026-11-23T11:00:00", 2.0))
    await crashed.close(flush=False)
    after = Ledger(path)
    try:
        assert await after.sums("key", "alice", ts("2026-11-23T00:00:00")) == 1.0
    finally:
        await after.close()
    with pytest.raises(LedgerError, match="closed"):
        await after.sums("key", "alice", 0)


async def test_a_failed_write_is_kept_and_retried(path: str) -> None:
    led = Ledger(path, busy_timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        led.record(event("2026-11-23T10:00:00", 0.5))
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        assert await led.flush() == 0
        assert led.metrics()["errors"] == 1 and led.pending() == 1
        assert led.health()["ok"] is False
        led.record(event("2026-11-23T10:00:00", 0.25))  # merges with the kept row
        blocker.execute("ROLLBACK")
        assert await led.flush() == 1
        assert await led.sums("key", "alice", ts("2026-11-23T00:00:00")) == 0.75
        assert led.health()["ok"] is True
    finally:
        blocker.close()
        await led.close()


async def test_past_max_pending_new_rows_are_dropped_and_counted(path: str) -> None:
    led = Ledger(path, max_pending=2)
    try:
        for model in ("a", "b", "c", "a"):
            led.record(event("2026-11-23T10:00:00", 1.0, model=model))
        assert led.pending() == 2
        assert led.metrics()["dropped"] == 1 and led.metrics()["recorded"] == 3
    finally:
        await led.close()


async def test_sums_and_daily_totals_for_replay(path: str) -> None:
    led = Ledger(path)
    try:
        led.record(event("2026-11-21T23:59:59", 1.0, tags=("x",)))
        led.record(event("2026-11-22T00:00:00", 2.0, tags=("x",)))
        led.record(event("2026-11-23T12:00:00", 4.0, key="bob", team=None))
        led.record(event("2026-11-23T12:00:00", 8.0, key=None, team=None))
        await led.flush()
        day22 = ts("2026-11-22T00:00:00")
        assert await led.sums("key", "alice", day22) == 2.0
        assert await led.sums("key", "alice", 0, day22) == 1.0
        assert await led.sums("team", "research", 0) == 3.0
        daily = await led.daily("key", day22)
        d22 = int(day22 // 86400)
        assert daily == {"alice": {d22: 2.0}, "bob": {d22 + 1: 4.0}}  # no key: left out
        assert await led.daily("tag", 0) == {"x": {d22 - 1: 1.0, d22: 2.0}}
        with pytest.raises(ValueError):
            await led.sums("model", "smart", 0)
    finally:
        await led.close()


async def test_query_by_key_team_model_and_tag_per_hour_and_day(path: str) -> None:
    led = Ledger(path)
    try:
        led.record(event("2026-11-23T10:05:00", 0.5, tags=("x", "y")))
        led.record(event("2026-11-23T10:55:00", 0.25, model="cheap", estimated=True))
        led.record(event("2026-11-23T11:00:00", 1.0, key="bob", team=None, tags=("x",)))
        led.record(event("2026-11-24T09:00:00", 2.0, key=None, team=None))
        await led.flush()
        since, until = ts("2026-11-23T00:00:00"), ts("2026-11-25T00:00:00")
        by_key = await led.query("key", since, until, "day")
        assert [(r["start"], r["key"], r["cost_usd"]) for r in by_key] == [
            (ts("2026-11-23T00:00:00"), "alice", 0.75),
            (ts("2026-11-23T00:00:00"), "bob", 1.0),
            (ts("2026-11-24T00:00:00"), None, 2.0),
        ]
        alice = by_key[0]
        assert alice["requests"] == 2 and alice["estimated"] == 1
        assert (alice["prompt_tokens"], alice["completion_tokens"], alice["cached_tokens"]) == (
            20,
            10,
            4,
        )
        hourly = await led.query("model", since, until, "hour")
        assert [(r["start"], r["model"], r["cost_usd"]) for r in hourly] == [
            (ts("2026-11-23T10:00:00"), "cheap", 0.25),
            (ts("2026-11-23T10:00:00"), "smart", 0.5),
            (ts("2026-11-23T11:00:00"), "smart", 1.0),
            (ts("2026-11-24T09:00:00"), "smart", 2.0),
        ]
        tags = await led.query("tag", since, until, "day")
        assert [(r["tag"], r["requests"], r["cost_usd"]) for r in tags] == [
            ("x", 2, 1.5),
            ("y", 1, 0.5),
        ]
        teams = await led.query("team", since, until, "day", name="research")
        assert [(r["team"], r["cost_usd"]) for r in teams] == [("research", 0.75)]
        # the range is of whole minutes: [since, until)
        assert await led.query("key", since, ts("2026-11-23T10:05:00"), "hour") == []
        with pytest.raises(ValueError):
            await led.query("provider", since, until)
    finally:
        await led.close()


async def test_an_unusable_path_is_a_ledger_error(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(LedgerError, match="cannot open"):
        Ledger(os.path.join(tmp_path, "missing", "dir", "spend.db"))
    with pytest.raises(ValueError):
        Ledger(os.path.join(tmp_path, "x.db"), flush_interval=0)


_WORKER = """
import asyncio, sys
from fastgw.policy.ledger import Ledger, SpendEvent

async def main() -> None:
    led = Ledger(sys.argv[1], flush_interval=0.01)
    led.start()
    for i in range(500):
        led.record(SpendEvent(ts=1.8e9 + i, request_id=str(i), key="alice", team=None,
                              model="smart", target="p/m", cost=0.25))
        if i % 50 == 0:
            await asyncio.sleep(0.005)
    await led.close()

asyncio.run(main())
"""


async def test_worker_processes_share_one_file(path: str) -> None:
    """Two processes write their own spend at the same time: the file holds both, once."""
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", _WORKER, path) for _ in range(2)
    ]
    codes = [await asyncio.wait_for(p.wait(), 30) for p in procs]
    assert codes == [0, 0]
    led = Ledger(path)
    try:
        assert await led.sums("key", "alice", 0) == 2 * 500 * 0.25
        rows = await led.query("key", 1.8e9 - 60, 1.8e9 + 600, "hour")
        assert sum(int(str(r["requests"])) for r in rows) == 1000
    finally:
        await led.close()
