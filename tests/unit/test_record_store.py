"""Run-time key stores (fastgw/policy/store.py): the same behaviour from the SQLite and the
Redis store (the Redis one when a Redis answers on 127.0.0.1:6379; each test uses its own
prefix and removes its keys afterwards)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import msgspec
import pytest

from fastgw.config.keyspec import key_hash
from fastgw.config.schema import GatewayConfig, KeyConfig, LimitsConfig, StateConfig
from fastgw.policy.keys import KeyStore
from fastgw.policy.store import (
    KeyRecord,
    RecordStore,
    RecordStoreError,
    RedisRecordStore,
    SQLiteRecordStore,
    default_sqlite_path,
    merge_keys,
    now_iso,
    open_record_store,
    to_key_config,
)
from tests.servers import redis_forget, redis_up

REDIS_URL = "redis://127.0.0.1:6379/0"


_no_redis = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")


def record(name: str, **kw: object) -> KeyRecord:
    values: dict[str, object] = {"hash": key_hash(f"secret-of-{name}"), "created_at": now_iso()}
    values.update(kw)
    return msgspec.convert({"name": name, **values}, KeyRecord)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=_no_redis)])
async def store(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> AsyncIterator[RecordStore]:
    if request.param == "sqlite":
        s: RecordStore = SQLiteRecordStore(os.path.join(tmp_path, "keys.db"))
        yield s
        await s.close()
        return
    prefix = f"fastgw-test-{uuid.uuid4().hex[:8]}:"
    s = RedisRecordStore(REDIS_URL, prefix)
    try:
        yield s
    finally:
        await s.close()
        await redis_forget(prefix, REDIS_URL)


async def test_put_get_list_delete_and_version(store: RecordStore) -> None:
    assert await store.list() == []
    assert await store.get("alice") is None
    v0 = await store.version()
    alice = record("alice", team="research", limits=LimitsConfig(rpm=60), tags=["a"])
    await store.put(alice)
    v1 = await store.version()
    assert v1 > v0
    assert await store.get("alice") == alice
    await store.put(record("bob", disabled=True))
    v2 = await store.version()
    assert v2 > v1
    assert [r.name for r in await store.list()] == ["alice", "bob"]
    # put replaces
    await store.put(msgspec.structs.replace(alice, models=["gpt-4o*"]))
    got = await store.get("alice")
    assert got is not None and got.models == ["gpt-4o*"] and got.limits == LimitsConfig(rpm=60)
    v3 = await store.version()
    assert v3 > v2
    assert await store.delete("alice") is True
    assert await store.get("alice") is None
    assert await store.version() > v3
    assert await store.delete("alice") is False
    assert [r.name for r in await store.list()] == ["bob"]


async def test_create_is_insert_if_absent(store: RecordStore) -> None:
    assert await store.create(record("carol", team="x")) is True
    v = await store.version()
    assert await store.create(record("carol", team="y")) is False
    got = await store.get("carol")
    assert got is not None and got.team == "x"
    assert await store.version() == v  # a refused create changes nothing


async def test_concurrent_creates_of_one_name_one_wins(store: RecordStore) -> None:
    results = await asyncio.gather(*(store.create(record("dup", team=str(i))) for i in range(8)))
    assert sorted(results) == [False] * 7 + [True]


async def test_update_is_atomic_and_refuses_missing(store: RecordStore) -> None:
    assert await store.update("nobody", lambda r: r) is None
    await store.put(record("dave"))
    v = await store.version()
    new = await store.update("dave", lambda r: msgspec.structs.replace(r, disabled=True))
    assert new is not None and new.disabled
    got = await store.get("dave")
    assert got is not None and got.disabled
    assert await store.version() > v
    # many concurrent read-modify-writes lose nothing
    await store.put(record("eve", tags=[]))

    def add(tag: str) -> Callable[[KeyRecord], KeyRecord]:
        return lambda r: msgspec.structs.replace(r, tags=[*r.tags, tag])

    await asyncio.gather(*(store.update("eve", add(str(i))) for i in range(10)))
    got = await store.get("eve")
    assert got is not None and sorted(got.tags) == sorted(str(i) for i in range(10))


async def test_two_sqlite_instances_on_one_file_see_each_other(
    tmp_path: os.PathLike[str],
) -> None:
    path = os.path.join(tmp_path, "shared.db")
    a, b = SQLiteRecordStore(path), SQLiteRecordStore(path)
    try:
        v = await b.version()
        await a.put(record("frank"))
        assert await b.version() > v
        got = await b.get("frank")
        assert got is not None and got.name == "frank"
        assert await b.delete("frank")
        assert await a.get("frank") is None
        assert await a.create(record("gina")) is True
        assert await b.create(record("gina")) is False
    finally:
        await a.close()
        await b.close()
    mode = os.stat(path).st_mode
    assert not mode & (stat.S_IRWXG | stat.S_IRWXO)  # only the owner reads the file


def _writer(path: str, n: int) -> None:
    async def go() -> None:
        s = SQLiteRecordStore(path)
        for i in range(n):
            await s.put(record(f"p{os.getpid()}-{i}"))
        await s.close()

    asyncio.run(go())


async def test_sqlite_shared_by_processes(tmp_path: os.PathLike[str]) -> None:
    import multiprocessing

    path = os.path.join(tmp_path, "procs.db")
    await SQLiteRecordStore(path).close()  # create the schema first
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, 20)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        await asyncio.to_thread(p.join, 60)
        assert p.exitcode == 0
    s = SQLiteRecordStore(path)
    try:
        assert len(await s.list()) == 60
        assert await s.version() == 60
    finally:
        await s.close()


def test_sqlite_write_of_a_cancelled_caller_is_still_made(tmp_path: os.PathLike[str]) -> None:
    """A write whose caller is cancelled before a worker thread picks it up (an admin
    request whose client went away, the executor busy) is made all the same, and ``close``
    waits for it."""
    path = os.path.join(tmp_path, "cancel.db")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        s = SQLiteRecordStore(path)
        gate = threading.Event()
        busy = loop.run_in_executor(None, gate.wait)  # the one worker thread is taken
        put = asyncio.ensure_future(s.put(record("late")))
        await asyncio.sleep(0.05)  # the write waits in the executor's queue
        put.cancel()
        with pytest.raises(asyncio.CancelledError):
            await put
        gate.set()
        await busy
        await s.close()
        again = SQLiteRecordStore(path)
        try:
            assert await again.get("late") is not None
            assert await again.version() == 1
        finally:
            await again.close()

    asyncio.run(scenario())


def test_sqlite_waits_for_a_write_lock_held_while_it_switches_to_wal(
    tmp_path: os.PathLike[str],
) -> None:
    """Switching a new file to WAL mode does not wait for another connection's lock (SQLite
    calls no busy handler there): the store retries within its busy timeout."""
    path = os.path.join(tmp_path, "locked.db")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another worker's write lock, file not yet WAL
        release = threading.Timer(0.2, holder.execute, ("COMMIT",))
        release.start()
        s = SQLiteRecordStore(path, busy_timeout=5.0)
        release.join()
        asyncio.run(s.close())
    finally:
        holder.close()


def test_sqlite_workers_opening_a_new_file_at_once(tmp_path: os.PathLike[str]) -> None:
    """Workers starting together all open the same new file (no "database is locked"; the
    race is rare, the test above pins the case it comes down to)."""
    opened: list[SQLiteRecordStore] = []
    errors: list[Exception] = []

    def open_store(path: str, start: threading.Barrier) -> None:
        start.wait()
        try:
            opened.append(SQLiteRecordStore(path))
        except RecordStoreError as exc:
            errors.append(exc)

    for n in range(50):
        path = os.path.join(tmp_path, f"race-{n}.db")
        start = threading.Barrier(8)
        threads = [threading.Thread(target=open_store, args=(path, start)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for s in opened:
        asyncio.run(s.close())
    assert errors == [] and len(opened) == 400


async def test_closed_sqlite_store_raises_store_error(tmp_path: os.PathLike[str]) -> None:
    s = SQLiteRecordStore(os.path.join(tmp_path, "c.db"))
    await s.close()
    with pytest.raises(RecordStoreError):
        await s.version()


def test_sqlite_refuses_an_unusable_path(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(RecordStoreError):
        SQLiteRecordStore(os.path.join(tmp_path, "missing-dir", "keys.db"))


async def test_unreachable_redis_raises_store_error() -> None:
    s = RedisRecordStore("redis://127.0.0.1:1/0", "x:", timeout=0.2)
    try:
        with pytest.raises(RecordStoreError):
            await s.version()
        with pytest.raises(RecordStoreError):
            await s.create(record("x"))
    finally:
        await s.close()


async def test_stored_records_ignore_unknown_fields(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "fwd.db")
    s = SQLiteRecordStore(path)
    try:
        await s.put(record("henry"))
        import sqlite3

        with sqlite3.connect(path) as db:  # as a newer gateway might write it
            raw = db.execute("SELECT record FROM keys").fetchone()[0]
            newer = raw[:-1] + ',"future_field":1}'
            db.execute("UPDATE keys SET record = ?", (newer,))
        got = await s.get("henry")
        assert got is not None and got.name == "henry"
    finally:
        await s.close()


def test_open_record_store_picks_the_backend(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = os.path.join(tmp_path, "k.db")
    s = open_record_store(StateConfig(backend="local"), path)
    assert isinstance(s, SQLiteRecordStore) and s.path == path
    asyncio.run(s.close())
    r = open_record_store(StateConfig(backend="redis", prefix="p:"), None)
    assert isinstance(r, RedisRecordStore) and r.hash_key == "p:keys"
    assert r.version_key == "p:keys:version"
    asyncio.run(r.close())


def test_default_sqlite_path_is_private_and_per_config(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTGW_CONFIG", os.path.join(tmp_path, "a.yaml"))
    a = default_sqlite_path()
    monkeypatch.setenv("FASTGW_CONFIG", os.path.join(tmp_path, "b.yaml"))
    b = default_sqlite_path()
    assert a != b and os.path.dirname(a) == os.path.dirname(b)
    assert os.path.basename(os.path.dirname(a)) == f"fastgw-{os.getuid()}"
    s = open_record_store(StateConfig(backend="memory"), None)
    try:
        assert isinstance(s, SQLiteRecordStore) and s.path == b
        st = os.stat(os.path.dirname(b))
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0
    finally:
        asyncio.run(s.close())
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(b + suffix):
                os.unlink(b + suffix)


def test_to_key_config_and_merge_feed_the_key_store() -> None:
    secret = "sk-fgw-" + "x" * 43
    r = record("ivy", hash=key_hash(secret), team=None, models=["gpt-*"], max_tokens=100)
    k = to_key_config(r)
    assert k.key is None and k.hash == r.hash and k.models == ["gpt-*"] and k.max_tokens == 100
    cfg_key = KeyConfig(name="cfg", key="c" * 32)
    shadow = record("cfg")  # named like a config key: the config wins
    merged = merge_keys([cfg_key], [r, shadow])
    assert [m.name for m in merged] == ["cfg", "ivy"]
    ks = KeyStore(GatewayConfig(keys=merged))
    p = ks.authenticate([(b"authorization", b"Bearer " + secret.encode())], 0.0)
    assert p.name == "ivy"
