"""Keys created at run time (the admin API), kept where every worker and host can read them.

A ``KeyRecord`` is one such key: its name, the SHA-256 of its secret (the secret itself is
never stored), its rules and limits, and who created it when. A ``RecordStore`` holds them and
a *version* number that every change increments, so a worker notices a change by polling one
cheap number (``fastgw.policy.sync.KeySync``) and then reads the whole list again.

Two stores, picked by ``open_record_store`` from the state backend:

- ``RedisRecordStore`` (``state.backend: redis``): the hash ``<prefix>keys`` (name → the
  record as JSON) and the counter ``<prefix>keys:version``; each change and its version bump
  are one ``MULTI``/``EXEC`` transaction, so a reader never sees one without the other.
  Every gateway host pointed at the Redis shares the keys.
- ``SQLiteRecordStore`` (every other backend): one SQLite file in WAL mode with the table
  ``keys`` (name, record as JSON) and the row ``meta.version``, written in the same
  ``BEGIN IMMEDIATE`` transaction. Any number of processes of one host may open the file at
  once (SQLite locks it); readers never wait for the writer. Its blocking calls run in a
  thread so the event loop never waits on the disk (``fastgw.datadir.SQLiteFile``).

Failures of either store surface as ``RecordStoreError`` (the admin API answers 503; the
sync task counts it and retries).

A lost store fails safe: the run-time keys it held stop working, and no revoked key comes
back (a revocation deletes the record).

Both stores also hold the budgets set through the admin API (``BudgetRecord``, the
``BudgetStore`` methods): the SQLite table ``budgets`` or the Redis hash ``<prefix>budgets``
(field ``<kind>:<name>``). A budget change bumps the same version as a key change, so the
same poll (``KeySync``) delivers both to every worker.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import msgspec

from ..config.schema import BudgetConfig, KeyConfig, LimitsConfig, StateConfig
from ..datadir import SQLiteFile, data_file, transaction

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

__all__ = [
    "BudgetRecord",
    "BudgetStore",
    "KeyRecord",
    "RecordStore",
    "RecordStoreError",
    "RedisRecordStore",
    "SQLiteRecordStore",
    "default_sqlite_path",
    "merge_keys",
    "now_iso",
    "open_record_store",
    "to_budget_config",
    "to_key_config",
]

T = TypeVar("T")


class RecordStoreError(Exception):
    """The store could not be read or written (disk, lock timeout, Redis unreachable)."""


class KeyRecord(msgspec.Struct, kw_only=True):
    """A key created through the admin API. Unknown fields in a stored record are ignored
    (a newer gateway may add some), so records written by one version stay readable."""

    name: str
    #: ``sha256:<64 hex>`` of the secret; the secret is shown once, at creation, and never kept.
    hash: str
    team: str | None = None
    tags: list[str] = []
    #: ISO 8601 date or time after which the key stops working (UTC when no offset).
    expires: str | None = None
    disabled: bool = False
    models: list[str] = []
    deny_models: list[str] = []
    providers: list[str] = []
    regions: list[str] = []
    endpoints: list[str] = []
    max_tokens: int | None = None
    limits: LimitsConfig | None = None
    #: ISO 8601 UTC time of the creation, and of the last change.
    created_at: str
    updated_at: str | None = None
    created_by: str = "admin"


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-05-09T07:35:25+00:00``)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def to_key_config(r: KeyRecord) -> KeyConfig:
    """The record as a config key entry (``hash`` set, ``key`` None), for ``KeyStore`` and
    ``Limiter``."""
    return KeyConfig(
        name=r.name,
        hash=r.hash,
        key=None,
        team=r.team,
        tags=list(r.tags),
        expires=r.expires,
        disabled=r.disabled,
        models=list(r.models),
        deny_models=list(r.deny_models),
        providers=list(r.providers),
        regions=list(r.regions),
        endpoints=list(r.endpoints),
        max_tokens=r.max_tokens,
        limits=r.limits,
    )


def merge_keys(config_keys: list[KeyConfig], records: list[KeyRecord]) -> list[KeyConfig]:
    """The config's keys, then the run-time ones. A record named like a config key is left
    out (the config file wins; the admin API refuses to create such a record, but the config
    may gain the name later)."""
    names = {k.name for k in config_keys}
    return [*config_keys, *(to_key_config(r) for r in records if r.name not in names)]


class BudgetRecord(msgspec.Struct, kw_only=True):
    """A budget set through the admin API for a key, a team or a tag (``kind``); it
    replaces a budget the config file gives the same owner while it exists. The fields of
    ``BudgetConfig`` are flat here so that a stored record with fields a newer gateway
    added stays readable (unknown fields are ignored)."""

    kind: str
    name: str
    usd: float
    period: str = "monthly"
    soft: float | None = 0.8
    on_exceed: str = "reject"
    fallback_model: str | None = None
    #: ISO 8601 UTC time of the creation, and of the last change.
    created_at: str
    updated_at: str | None = None
    created_by: str = "admin"


def to_budget_config(r: BudgetRecord) -> BudgetConfig:
    """The budget of a record, as the config file would give it."""
    return BudgetConfig(
        usd=r.usd,
        period=r.period,
        soft=r.soft,
        on_exceed=r.on_exceed,
        fallback_model=r.fallback_model,
    )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(KeyRecord)
_budget_decoder = msgspec.json.Decoder(BudgetRecord)


def _encode(r: KeyRecord) -> str:
    return _encoder.encode(r).decode()


def _decode(raw: str | bytes) -> KeyRecord:
    return _decoder.decode(raw)


class RecordStore(Protocol):
    """Run-time keys shared by every worker; ``version`` grows with every change."""

    async def list(self) -> list[KeyRecord]:
        """Every record, by name."""
        ...

    async def get(self, name: str) -> KeyRecord | None: ...

    async def put(self, record: KeyRecord) -> None:
        """Create or replace the record named ``record.name``."""
        ...

    async def create(self, record: KeyRecord) -> bool:
        """Store ``record`` unless one of its name exists (atomic: two workers creating the
        same name at once cannot both succeed); False when it exists."""
        ...

    async def update(self, name: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord | None:
        """Replace the record ``name`` by ``change(record)`` atomically (a concurrent delete or
        update is never overwritten by a stale copy); the new record, None when ``name`` does
        not exist. ``change`` must be a quick pure function (it may run again on a conflict)."""
        ...

    async def delete(self, name: str) -> bool:
        """Remove the record; False when there was none."""
        ...

    async def version(self) -> int:
        """A number that changes with every change of the records (cheap: poll it)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class BudgetStore(Protocol):
    """Budgets set at run time, in the same store (and under the same version) as the
    run-time keys; both stores implement it."""

    async def list_budgets(self) -> list[BudgetRecord]:
        """Every budget record, by kind and name."""
        ...

    async def get_budget(self, kind: str, name: str) -> BudgetRecord | None: ...

    async def put_budget(self, record: BudgetRecord) -> bool:
        """Create or replace the budget of ``(record.kind, record.name)``; True when it is
        new."""
        ...

    async def delete_budget(self, kind: str, name: str) -> bool:
        """Remove the budget; False when there was none."""
        ...


# -- SQLite ---------------------------------------------------------------------------------

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS keys (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (k, v) VALUES ('version', 0)",
    "CREATE TABLE IF NOT EXISTS budgets (kind TEXT NOT NULL, name TEXT NOT NULL, "
    "record TEXT NOT NULL, PRIMARY KEY (kind, name))",
)
_BUMP = "UPDATE meta SET v = v + 1 WHERE k = 'version'"


def default_sqlite_path() -> str:
    """Where the keys of this gateway live without Redis: ``fastgw-<uid>/keys-<tag>.db`` in
    ``/var/tmp`` (kept across reboots) or, when that is not writable, the temp dir; ``tag``
    is a hash of the configuration file's path (``FASTGW_CONFIG``), so the workers of one
    gateway share the file (``fastgw.datadir.data_file``). The directory is created private
    (0700) to this user."""
    return data_file("keys", ".db")


class SQLiteRecordStore:
    """Records in one SQLite file (WAL mode), shared by every process that opens it
    (``fastgw.datadir.SQLiteFile``).

    One connection per instance, used by one thread at a time; each call runs in a worker
    thread, and a call whose caller is cancelled (a client gone mid-request) is still made.
    A write waits up to ``busy_timeout`` seconds for another process's write to finish. The
    file and its directory are opened at construction (blocking, once, at start-up)."""

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._file = SQLiteFile(
            path,
            _SCHEMA,
            what="key store",
            error=RecordStoreError,
            busy_timeout=busy_timeout,
            private=path == default_sqlite_path(),
        )

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.call(fn)

    async def list(self) -> list[KeyRecord]:
        def q(db: sqlite3.Connection) -> list[KeyRecord]:
            rows = db.execute("SELECT record FROM keys ORDER BY name").fetchall()
            return [_decode(r[0]) for r in rows]

        return await self._call(q)

    async def get(self, name: str) -> KeyRecord | None:
        def q(db: sqlite3.Connection) -> KeyRecord | None:
            row = db.execute("SELECT record FROM keys WHERE name = ?", (name,)).fetchone()
            return None if row is None else _decode(row[0])

        return await self._call(q)

    async def put(self, record: KeyRecord) -> None:
        data = _encode(record)

        def q(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute(
                    "INSERT INTO keys (name, record) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET record = excluded.record",
                    (record.name, data),
                )
                db.execute(_BUMP)

        await self._call(q)

    async def create(self, record: KeyRecord) -> bool:
        data = _encode(record)

        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                cur = db.execute(
                    "INSERT OR IGNORE INTO keys (name, record) VALUES (?, ?)",
                    (record.name, data),
                )
                if cur.rowcount != 1:
                    return False
                db.execute(_BUMP)
                return True

        return await self._call(q)

    async def update(self, name: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord | None:
        def q(db: sqlite3.Connection) -> KeyRecord | None:
            with transaction(db):
                row = db.execute("SELECT record FROM keys WHERE name = ?", (name,)).fetchone()
                if row is None:
                    return None
                new = change(_decode(row[0]))
                if new.name != name:
                    raise ValueError("update cannot rename a record")
                db.execute("UPDATE keys SET record = ? WHERE name = ?", (_encode(new), name))
                db.execute(_BUMP)
                return new

        return await self._call(q)

    async def delete(self, name: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                cur = db.execute("DELETE FROM keys WHERE name = ?", (name,))
                if cur.rowcount != 1:
                    return False
                db.execute(_BUMP)
                return True

        return await self._call(q)

    async def version(self) -> int:
        def q(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT v FROM meta WHERE k = 'version'").fetchone()
            return int(row[0]) if row else 0

        return await self._call(q)

    async def list_budgets(self) -> builtins.list[BudgetRecord]:
        def q(db: sqlite3.Connection) -> builtins.list[BudgetRecord]:
            rows = db.execute("SELECT record FROM budgets ORDER BY kind, name").fetchall()
            return [_budget_decoder.decode(r[0]) for r in rows]

        return await self._call(q)

    async def get_budget(self, kind: str, name: str) -> BudgetRecord | None:
        def q(db: sqlite3.Connection) -> BudgetRecord | None:
            row = db.execute(
                "SELECT record FROM budgets WHERE kind = ? AND name = ?", (kind, name)
            ).fetchone()
            return None if row is None else _budget_decoder.decode(row[0])

        return await self._call(q)

    async def put_budget(self, record: BudgetRecord) -> bool:
        data = _encoder.encode(record).decode()

        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                found = db.execute(
                    "SELECT 1 FROM budgets WHERE kind = ? AND name = ?",
                    (record.kind, record.name),
                ).fetchone()
                db.execute(
                    "INSERT INTO budgets (kind, name, record) VALUES (?, ?, ?) "
                    "ON CONFLICT(kind, name) DO UPDATE SET record = excluded.record",
                    (record.kind, record.name, data),
                )
                db.execute(_BUMP)
                return found is None

        return await self._call(q)

    async def delete_budget(self, kind: str, name: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                cur = db.execute("DELETE FROM budgets WHERE kind = ? AND name = ?", (kind, name))
                if cur.rowcount != 1:
                    return False
                db.execute(_BUMP)
                return True

        return await self._call(q)

    async def close(self) -> None:
        await self._file.close()


# -- Redis ----------------------------------------------------------------------------------


class RedisRecordStore:
    """Records in the Redis hash ``<prefix>keys``, the version in ``<prefix>keys:version``.

    Each call waits at most ``timeout`` seconds. A create or update watches the hash
    (``WATCH``) and retries its transaction when another client changed it meanwhile."""

    def __init__(self, url: str, prefix: str = "fastgw:", *, timeout: float = 2.0) -> None:
        from redis.asyncio import Redis

        self.url = url
        self.prefix = prefix
        self.hash_key = prefix + "keys"
        self.version_key = prefix + "keys:version"
        self.budgets_key = prefix + "budgets"
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
        )

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        from redis.exceptions import RedisError

        try:
            yield
        except (RedisError, OSError, TimeoutError) as exc:
            raise RecordStoreError(f"key store (redis): {type(exc).__name__}: {exc}") from exc

    async def list(self) -> list[KeyRecord]:
        async with self._errors():
            raw = await self._redis.hgetall(self.hash_key)
        return sorted((_decode(v) for v in raw.values()), key=lambda r: r.name)

    async def get(self, name: str) -> KeyRecord | None:
        async with self._errors():
            raw = await self._redis.hget(self.hash_key, name)
        return None if raw is None else _decode(raw)

    async def put(self, record: KeyRecord) -> None:
        async with self._errors(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.hash_key, record.name, _encode(record))
            pipe.incr(self.version_key)
            await pipe.execute()

    async def create(self, record: KeyRecord) -> bool:
        data = _encode(record)

        async def attempt(pipe: Pipeline) -> bool:
            if await pipe.hexists(self.hash_key, record.name):
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(self.hash_key, record.name, data)
            pipe.incr(self.version_key)
            await pipe.execute()
            return True

        return await self._watched(attempt)

    async def update(self, name: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord | None:
        async def attempt(pipe: Pipeline) -> KeyRecord | None:
            raw = await pipe.hget(self.hash_key, name)
            if raw is None:
                return None
            new = change(_decode(raw))
            if new.name != name:
                raise ValueError("update cannot rename a record")
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(self.hash_key, name, _encode(new))
            pipe.incr(self.version_key)
            await pipe.execute()
            return new

        return await self._watched(attempt)

    async def _watched(self, attempt: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Run ``attempt`` with the hash watched, again while another client changes it."""
        from redis.exceptions import WatchError

        async with self._errors(), self._redis.pipeline(transaction=True) as pipe:
            for _ in range(100):
                try:
                    await pipe.watch(self.hash_key)
                    return await attempt(pipe)
                except WatchError:
                    continue
                finally:
                    await pipe.reset()  # type: ignore[no-untyped-call]
        raise RecordStoreError("key store (redis): too many concurrent changes, gave up")

    async def delete(self, name: str) -> bool:
        async with self._errors(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.hash_key, name)
            pipe.incr(self.version_key)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def version(self) -> int:
        async with self._errors():
            raw = await self._redis.get(self.version_key)
        return int(raw) if raw is not None else 0

    async def list_budgets(self) -> builtins.list[BudgetRecord]:
        async with self._errors():
            raw = await self._redis.hgetall(self.budgets_key)
        records = (_budget_decoder.decode(v) for v in raw.values())
        return sorted(records, key=lambda r: (r.kind, r.name))

    async def get_budget(self, kind: str, name: str) -> BudgetRecord | None:
        async with self._errors():
            raw = await self._redis.hget(self.budgets_key, f"{kind}:{name}")
        return None if raw is None else _budget_decoder.decode(raw)

    async def put_budget(self, record: BudgetRecord) -> bool:
        field = f"{record.kind}:{record.name}"
        async with self._errors(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.budgets_key, field, _encoder.encode(record))
            pipe.incr(self.version_key)
            added, _ = await pipe.execute()
        return bool(added)

    async def delete_budget(self, kind: str, name: str) -> bool:
        async with self._errors(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.budgets_key, f"{kind}:{name}")
            pipe.incr(self.version_key)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.aclose()


def open_record_store(state_cfg: StateConfig, path: str | None = None) -> RecordStore:
    """The store of run-time keys for this config: Redis when the state backend is
    ``redis`` (``state.redis_url``, keys under ``state.prefix``), else SQLite at ``path``
    (omitted: ``default_sqlite_path()``)."""
    if state_cfg.backend == "redis":
        return RedisRecordStore(state_cfg.redis_url, state_cfg.prefix)
    return SQLiteRecordStore(path or default_sqlite_path())
