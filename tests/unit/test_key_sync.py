"""KeySync (fastgw/policy/sync.py): changes in the shared store reach a worker within about
one interval, and a failing store or callback never ends the task."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable

import msgspec

from fastgw.policy.store import KeyRecord, RecordStoreError, SQLiteRecordStore, now_iso
from fastgw.policy.sync import KeySync


def record(name: str, **kw: object) -> KeyRecord:
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    values = {"name": name, "hash": digest, "created_at": now_iso(), **kw}
    return msgspec.convert(values, KeyRecord)


class Seen:
    """on_change's calls, and an event per call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.event = asyncio.Event()

    def __call__(self, records: list[KeyRecord]) -> None:
        self.calls.append([r.name for r in records])
        self.event.set()

    async def wait(self, within: float = 1.0) -> list[str]:
        await asyncio.wait_for(self.event.wait(), within)
        self.event.clear()
        return self.calls[-1]


async def test_loads_at_start_and_picks_up_changes_within_a_second(
    tmp_path: os.PathLike[str],
) -> None:
    path = os.path.join(tmp_path, "k.db")
    writer, reader = SQLiteRecordStore(path), SQLiteRecordStore(path)  # two "workers"
    await writer.put(record("alice"))
    seen = Seen()
    sync = KeySync(reader, seen, interval=0.1)
    sync.start()
    try:
        assert await seen.wait() == ["alice"]  # once at start
        start = time.monotonic()
        await writer.put(record("bob"))
        assert await seen.wait() == ["alice", "bob"]
        assert time.monotonic() - start < 1.0
        await writer.delete("alice")  # a revocation
        assert await seen.wait() == ["bob"]
        await writer.update("bob", lambda r: msgspec.structs.replace(r, disabled=True))
        await seen.wait()
        assert sync.records is not None and sync.records[0].disabled
        h = sync.health()
        assert h["running"] is True and h["ok"] is True and h["keys"] == 1
        assert h["errors"] == 0 and h["loads"] == 4
        assert h["version"] == await writer.version()
        # no change: no call
        calls = len(seen.calls)
        await asyncio.sleep(0.35)
        assert len(seen.calls) == calls
    finally:
        await sync.stop()
        await writer.close()
        await reader.close()
    assert sync.health()["running"] is False


async def test_empty_store_still_loads_once(tmp_path: os.PathLike[str]) -> None:
    s = SQLiteRecordStore(os.path.join(tmp_path, "e.db"))
    seen = Seen()
    sync = KeySync(s, seen, interval=0.05)
    try:
        assert await sync.poll() is True
        assert seen.calls == [[]]
        assert await sync.poll() is False
    finally:
        await s.close()


class FlakyStore:
    """A store whose calls fail while ``down`` is set."""

    def __init__(self, inner: SQLiteRecordStore) -> None:
        self.inner = inner
        self.down = False
        self.failures = 0

    def _check(self) -> None:
        if self.down:
            self.failures += 1
            raise RecordStoreError("store down (test)")

    async def list(self) -> list[KeyRecord]:
        self._check()
        return await self.inner.list()

    async def get(self, name: str) -> KeyRecord | None:
        return await self.inner.get(name)

    async def put(self, record: KeyRecord) -> None:
        await self.inner.put(record)

    async def create(self, record: KeyRecord) -> bool:
        return await self.inner.create(record)

    async def update(self, name: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord | None:
        return await self.inner.update(name, change)

    async def delete(self, name: str) -> bool:
        return await self.inner.delete(name)

    async def version(self) -> int:
        self._check()
        return await self.inner.version()

    async def close(self) -> None:
        await self.inner.close()


async def test_survives_store_errors_and_recovers(tmp_path: os.PathLike[str]) -> None:
    store = FlakyStore(SQLiteRecordStore(os.path.join(tmp_path, "f.db")))
    await store.put(record("carol"))
    store.down = True
    seen = Seen()
    sync = KeySync(store, seen, interval=0.05)
    sync.start()
    try:
        await asyncio.sleep(0.3)
        h = sync.health()
        assert h["running"] is True and h["ok"] is False
        assert isinstance(h["errors"], int) and h["errors"] >= 3
        assert "store down" in str(h["last_error"])
        assert seen.calls == []
        store.down = False
        assert await seen.wait() == ["carol"]
        await store.put(record("dave"))
        assert await seen.wait() == ["carol", "dave"]
        store.down = True  # keeps the keys it has while the store is away
        await asyncio.sleep(0.2)
        assert sync.records is not None and len(sync.records) == 2
        store.down = False
        await store.delete("carol")
        assert await seen.wait() == ["dave"]
        assert sync.health()["ok"] is True
    finally:
        await sync.stop()
        await store.close()


async def test_survives_a_failing_callback_and_retries(tmp_path: os.PathLike[str]) -> None:
    s = SQLiteRecordStore(os.path.join(tmp_path, "cb.db"))
    await s.put(record("erin"))
    attempts: list[list[str]] = []
    done = asyncio.Event()

    def on_change(records: list[KeyRecord]) -> None:
        attempts.append([r.name for r in records])
        if len(attempts) < 3:
            raise ValueError("rebuild failed")
        done.set()

    sync = KeySync(s, on_change, interval=0.05)
    sync.start()
    try:
        await asyncio.wait_for(done.wait(), 2.0)
        assert attempts == [["erin"]] * 3
        assert sync.errors == 2 and sync.records is not None
    finally:
        await sync.stop()
        await s.close()


async def test_full_reload_without_version_change_only_calls_on_difference(
    tmp_path: os.PathLike[str],
) -> None:
    s = SQLiteRecordStore(os.path.join(tmp_path, "full.db"))
    seen = Seen()
    sync = KeySync(s, seen, interval=0.05, full_every=0.0)
    try:
        await sync.poll()
        assert await sync.poll() is False  # re-read, nothing differs: no call
        assert seen.calls == [[]]
    finally:
        await s.close()
