"""The spend ledger: what every settled request cost, journaled to an SQLite file.

Why per-minute aggregates, not one row per request: the ledger answers two questions — how
much did a key, team or tag spend since a time (to restore the budget counters at start-up)
and how much did each key, team, model or tag spend per hour or day (the admin API). Both
are sums over whole minutes (every budget period starts at a UTC midnight), so one row per
(minute, key, team, tags, model, target) holds all the ledger needs, at a size that does
not grow with the request rate. Each request's own record (its id, its exact time) is the
audit trail's job (telemetry sinks), not the ledger's.

Tables (``WITHOUT ROWID``, the primary key is the row's identity):

- ``spend``: ``minute`` (Unix time // 60, UTC), ``key``, ``team`` (``''``: none), ``tags``
  (the sorted tags as a JSON list), ``model`` (the public name), ``target``
  (``provider/model`` that served it), then sums: ``requests``, ``estimated`` (requests
  whose usage the gateway estimated because the provider reported none), ``prompt_tokens``,
  ``completion_tokens``, ``cached_tokens``, ``cost`` (USD).
- ``spend_tag``: the same sums per (``tag``, ``minute``): a request with two tags counts
  once in ``spend`` and once under each tag here.

**Writes never block the event loop.** ``record`` adds the event to an in-memory aggregate
(a dict update); every ``flush_interval`` seconds a task hands the aggregate to a thread
(``asyncio.to_thread``) that upserts it in one ``BEGIN IMMEDIATE`` transaction
(``sum = sum + new``). A failed write (disk full, a lock held past ``busy_timeout``) is kept
and retried with the next batch; past ``max_pending`` distinct rows, new rows are dropped
and counted (``metrics()["dropped"]``), never silently.

**Several workers, one file.** Each Granian worker (each process) opens the file with its
own connection and writes only the events it served: an upsert adds, so the rows hold every
worker's spend exactly once. WAL mode lets readers (the admin API, a replay) read while one
process writes; ``busy_timeout`` makes a writer wait for another's transaction. The file must
be on a local file system (SQLite's WAL needs shared memory between the processes).

**Durability.** ``synchronous=NORMAL`` in WAL mode: a committed batch survives a crash of
the gateway process; a power loss or OS crash may lose the last batches committed before
it. What a crash of the process loses is the aggregate not yet flushed: at most
``flush_interval`` seconds of settled spend (``close()`` flushes, so a graceful stop loses
nothing).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from .._core.tally import Journal, Sums, accumulate
from ..config.schema import BudgetsConfig
from ..datadir import SQLiteFile, data_file, transaction
from ..tasks import stop_task

__all__ = [
    "QUERY_BY",
    "QUERY_INTERVALS",
    "Ledger",
    "LedgerError",
    "SpendEvent",
    "default_ledger_path",
    "open_ledger",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What spend can be grouped by, and the column (or table) holding it.
QUERY_BY = ("key", "team", "model", "tag")
#: Bucket sizes of a query, in minutes.
QUERY_INTERVALS = {"hour": 60, "day": 1440}
#: Minutes per day: a budget period starts at a multiple of it.
DAY_MINUTES = 1440


class LedgerError(Exception):
    """The ledger file could not be opened, read or written."""


class SpendEvent(msgspec.Struct, kw_only=True):
    """One settled request: who spent what on which model. Only the fields the ledger sums
    and groups by are kept (``request_id`` and the exact ``ts`` are for the caller's own
    audit trail)."""

    #: Unix time of the settlement (UTC).
    ts: float
    request_id: str
    #: The key's name (None: no key asked for), its team, its tags.
    key: str | None
    team: str | None
    tags: tuple[str, ...] = ()
    #: The public model name the client asked for (after a budget fallback: the fallback).
    model: str
    #: ``provider/model`` that served it.
    target: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    #: USD, as the catalog prices the usage.
    cost: float
    #: The usage was estimated by the gateway (the provider reported none).
    estimated: bool = False


def default_ledger_path() -> str:
    """``spend-<tag>.db`` beside the admin key store (``default_sqlite_path``): the same
    private directory, the same hash of the configuration file's path, so every worker of
    one gateway (and the CLI) agrees on it (``fastgw.datadir.data_file``)."""
    return data_file("spend", ".db")


def open_ledger(cfg: BudgetsConfig) -> Ledger:
    """The ledger of the config's ``budgets`` section (blocking: opens the file; call it
    once per worker at start-up)."""
    return Ledger(cfg.ledger or default_ledger_path(), flush_interval=cfg.flush_interval)


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS spend (
        minute INTEGER NOT NULL, key TEXT NOT NULL, team TEXT NOT NULL, tags TEXT NOT NULL,
        model TEXT NOT NULL, target TEXT NOT NULL,
        requests INTEGER NOT NULL, estimated INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL, cost REAL NOT NULL,
        PRIMARY KEY (minute, key, team, tags, model, target)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS spend_by_key ON spend (key, minute)",
    "CREATE INDEX IF NOT EXISTS spend_by_team ON spend (team, minute)",
    """CREATE TABLE IF NOT EXISTS spend_tag (
        tag TEXT NOT NULL, minute INTEGER NOT NULL,
        requests INTEGER NOT NULL, estimated INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL, cost REAL NOT NULL,
        PRIMARY KEY (tag, minute)) WITHOUT ROWID""",
)
_SUMS = (
    "requests = requests + excluded.requests, estimated = estimated + excluded.estimated, "
    "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = completion_tokens + excluded.completion_tokens, "
    "cached_tokens = cached_tokens + excluded.cached_tokens, cost = cost + excluded.cost"
)
_UPSERT = (
    "INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    f"ON CONFLICT (minute, key, team, tags, model, target) DO UPDATE SET {_SUMS}"
)
_UPSERT_TAG = (
    f"INSERT INTO spend_tag VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tag, minute) "
    f"DO UPDATE SET {_SUMS}"
)
_TOTALS = (
    "SUM(requests), SUM(estimated), SUM(prompt_tokens), SUM(completion_tokens), "
    "SUM(cached_tokens), SUM(cost)"
)

#: One aggregate: requests, estimated, prompt, completion, cached tokens, cost (``_core``:
#: C doubles in the compiled twin).
_Sums = Sums
_RowKey = tuple[int, str, str, str, str, str]
_TagKey = tuple[str, int]

_json = msgspec.json.Encoder()


class Ledger:
    """The spend ledger of one worker over a file shared by every worker of the host."""

    def __init__(
        self,
        path: str,
        *,
        flush_interval: float = 1.0,
        busy_timeout: float = 5.0,
        max_pending: int = 100_000,
    ) -> None:
        if not 0 < flush_interval < math.inf:
            raise ValueError("flush_interval must be a number of seconds > 0")
        self.path = path
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self._pending: dict[_RowKey, _Sums] = {}
        self._pending_tags: dict[_TagKey, _Sums] = {}
        #: The request path's journals (``journal``): cleared each time the queue is taken
        #: for a write, since the lists ``sinks`` handed out before then must not be added
        #: to any more.
        self._journals: list[Journal] = []
        self._tags_text: dict[tuple[str, ...], str] = {}
        self._flush_lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        #: Counters for /metrics (this worker's).
        self.recorded = 0
        self.written = 0
        self.flushes = 0
        self.errors = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._file = SQLiteFile(
            path,
            _SCHEMA,
            what="spend ledger",
            error=LedgerError,
            busy_timeout=busy_timeout,
            private=path == default_ledger_path(),
        )

    # -- writing ----------------------------------------------------------------------------

    def record(self, event: SpendEvent) -> None:
        """Queue one settled request (cheap, never blocks: a dict update); written with the
        next flush. The request path adds through a ``journal`` instead."""
        e = event
        sinks = self.sinks(int(e.ts // 60), e.key, e.team, e.tags, e.model, e.target)
        if sinks is not None:
            accumulate(
                sinks, e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.cost, e.estimated
            )
            self.recorded += 1

    def journal(self, miss: Callable[[int, Any], list[_Sums] | None]) -> Journal:
        """A ``Journal`` for the request path (``_core``: an answer is one compiled call)
        whose ``miss(minute, key)`` finds a key's sums through ``sinks``; the ledger clears
        it at each flush and counts what it recorded."""
        j = Journal(miss)
        self._journals.append(j)
        return j

    def sinks(
        self,
        minute: int,
        key: str | None,
        team: str | None,
        tags: tuple[str, ...],
        model: str,
        target: str,
    ) -> list[_Sums] | None:
        """The queued sums a request of this minute and row adds to (its row, then each of
        its tags'), for a ``journal`` (which keeps them until the next flush) to add
        ``[1, estimated, prompt, completion, cached, cost]`` to each; None when the queue is
        full (the request is dropped, counted)."""
        text = self._tags_text.get(tags)
        if text is None:
            text = _json.encode(sorted(tags)).decode()
            if len(self._tags_text) > 4096:
                self._tags_text.clear()
            self._tags_text[tags] = text
        zero = (0.0,) * 6
        out: list[_Sums] = []
        row = (minute, key or "", team or "", text, model, target)
        if not self._add(self._pending, row, zero):
            return None
        out.append(self._pending[row])
        for tag in sorted(set(tags)):
            if self._add(self._pending_tags, (tag, minute), zero):
                out.append(self._pending_tags[tag, minute])
        return out

    def _add(self, into: dict[Any, _Sums], key: Any, values: tuple[float, ...]) -> bool:
        sums = into.get(key)
        if sums is None:
            if len(into) >= self.max_pending:
                self.dropped += 1
                return False
            into[key] = Sums(values)
            return True
        for i, v in enumerate(values):
            sums[i] += v
        return True

    def start(self) -> None:
        """Flush every ``flush_interval`` seconds from a task of the running loop (a no-op
        when running)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fastgw-ledger")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    async def flush(self) -> int:
        """Write what is queued now (in a thread); the rows written. A failure is counted
        and logged, and the batch is kept for the next flush. Cancelling the caller does
        not cancel the write: a batch taken from the queue is written (or put back) in any
        case, and ``close`` waits for it."""
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            rows, tags = self._pending, self._pending_tags
            if not rows and not tags:
                return 0
            self._pending, self._pending_tags = {}, {}
            for j in self._journals:  # the sums lists handed out by ``sinks`` are the batch's now
                j.clear()
            # the write and its bookkeeping are a task of their own, shielded from the
            # caller's cancellation
            return await self._file.detach(self._commit(rows, tags))

    async def _commit(self, rows: dict[_RowKey, _Sums], tags: dict[_TagKey, _Sums]) -> int:
        try:
            await asyncio.to_thread(self._write, rows, tags)
        except LedgerError as exc:
            self._merge_back(rows, tags)
            self.errors += 1
            self.last_error = str(exc)
            if not self._failing:
                log.warning("spend ledger: write failed (retrying): %s", exc)
                self._failing = True
            return 0
        if self._failing:
            log.warning("spend ledger: writes succeed again")
            self._failing = False
        self.flushes += 1
        self.written += len(rows)
        return len(rows)

    def _merge_back(self, rows: dict[_RowKey, _Sums], tags: dict[_TagKey, _Sums]) -> None:
        for key, sums in rows.items():
            self._add(self._pending, key, tuple(sums))
        for tkey, sums in tags.items():
            self._add(self._pending_tags, tkey, tuple(sums))

    def _write(self, rows: dict[_RowKey, _Sums], tags: dict[_TagKey, _Sums]) -> None:
        def q(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.executemany(_UPSERT, [(*k, *_ints(s)) for k, s in rows.items()])
                db.executemany(_UPSERT_TAG, [(*k, *_ints(s)) for k, s in tags.items()])

        self._file.run(q)

    async def close(self, *, flush: bool = True) -> None:
        """Stop the flusher, write what is queued (``flush=False``: drop it, as a crash
        would) and close the file."""
        task, self._task = self._task, None
        await stop_task(task)
        await self._file.drain()  # writes under way (their batches left the queue)
        if flush:
            await self.flush()
        await self._file.close()

    # -- reading ----------------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.call(fn)

    async def sums(
        self, kind: str, name: str, since_ts: float, until_ts: float | None = None
    ) -> float:
        """USD spent by key, team or tag ``name`` (``kind``) in the whole minutes from
        ``since_ts`` up to ``until_ts`` (None: up to now), as written so far."""
        table, col = _scope_column(kind)
        lo = math.floor(since_ts / 60)
        hi = math.inf if until_ts is None else math.floor(until_ts / 60)

        def q(db: sqlite3.Connection) -> float:
            sql = f"SELECT SUM(cost) FROM {table} WHERE {col} = ? AND minute >= ?"
            args: list[object] = [name, lo]
            if hi != math.inf:
                sql += " AND minute < ?"
                args.append(hi)
            row = db.execute(sql, args).fetchone()
            return float(row[0] or 0.0)

        return await self._read(q)

    async def daily(self, kind: str, since_ts: float) -> dict[str, dict[int, float]]:
        """Per key, team or tag (``kind``): USD spent per UTC day (the day's number since
        the Unix epoch) from the day of ``since_ts`` on. One query for every name: what
        start-up needs to restore each budget's counters."""
        table, col = _scope_column(kind)
        lo = math.floor(since_ts / 86400) * DAY_MINUTES

        def q(db: sqlite3.Connection) -> dict[str, dict[int, float]]:
            out: dict[str, dict[int, float]] = {}
            rows = db.execute(
                f"SELECT {col}, minute / {DAY_MINUTES}, SUM(cost) FROM {table} "
                f"WHERE minute >= ? AND {col} != '' GROUP BY 1, 2",
                (lo,),
            )
            for name, day, cost in rows:
                out.setdefault(name, {})[int(day)] = float(cost)
            return out

        return await self._read(q)

    async def query(
        self,
        by: str,
        since: float,
        until: float,
        interval: str = "day",
        name: str | None = None,
    ) -> list[dict[str, object]]:
        """Spend grouped by ``by`` (key, team, model, tag) and by ``interval`` (hour or
        day, UTC) over the whole minutes from ``since`` to ``until`` (Unix times), oldest
        first; ``name``: only that key, team, model or tag. Each row: ``start`` (the
        interval's Unix time), the group's value (None: requests without a key or team),
        ``requests``, ``estimated``, the tokens and ``cost_usd``."""
        if by not in QUERY_BY:
            raise ValueError(f"by must be one of {', '.join(QUERY_BY)}")
        step = QUERY_INTERVALS[interval]
        table, col = ("spend_tag", "tag") if by == "tag" else ("spend", by)
        lo, hi = math.floor(since / 60), math.ceil(until / 60)
        sql = (
            f"SELECT (minute / {step}) * {step}, {col}, {_TOTALS} FROM {table} "
            "WHERE minute >= ? AND minute < ?"
        )
        args: list[object] = [lo, hi]
        if name is not None:
            sql += f" AND {col} = ?"
            args.append(name)
        sql += " GROUP BY 1, 2 ORDER BY 1, 2"

        def q(db: sqlite3.Connection) -> list[dict[str, object]]:
            out: list[dict[str, object]] = []
            for start, value, req, est, prompt, completion, cached, cost in db.execute(sql, args):
                out.append(
                    {
                        "start": int(start) * 60,
                        by: value if value != "" else None,
                        "requests": int(req),
                        "estimated": int(est),
                        "prompt_tokens": int(prompt),
                        "completion_tokens": int(completion),
                        "cached_tokens": int(cached),
                        "cost_usd": float(cost),
                    }
                )
            return out

        return await self._read(q)

    def pending(self) -> int:
        """Rows queued and not written yet."""
        return len(self._pending)

    def metrics(self) -> dict[str, float]:
        """This worker's ledger counters (for /metrics): events recorded, rows written,
        flushes, write errors, events dropped, rows pending."""
        return {
            "recorded": self.recorded + sum(j.recorded for j in self._journals),
            "written": self.written,
            "flushes": self.flushes,
            "errors": self.errors,
            "dropped": self.dropped,
            "pending": len(self._pending),
        }

    def health(self) -> dict[str, object]:
        return {
            "path": self.path,
            "ok": not self._failing,
            "running": self._task is not None and not self._task.done(),
            **self.metrics(),
            "last_error": self.last_error,
        }


def _ints(s: _Sums) -> tuple[int, int, int, int, int, float]:
    return int(s[0]), int(s[1]), int(s[2]), int(s[3]), int(s[4]), s[5]


def _scope_column(kind: str) -> tuple[str, str]:
    """(table, column) holding the spend of a budget's owner kind."""
    if kind == "tag":
        return "spend_tag", "tag"
    if kind in ("key", "team"):
        return "spend", kind
    raise ValueError(f"unknown budget kind {kind!r}")
