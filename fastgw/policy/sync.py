"""Keeping every worker's run-time keys in step with the shared ``RecordStore``.

``KeySync`` is one background task per worker. Every ``interval`` seconds it reads the
store's version (one cheap read: a Redis ``GET`` or one SQLite row); when the version
differs from the last one loaded — and once at start — it reads every record and hands them
to ``on_change`` (which rebuilds the worker's key table). The version is read *before* the
records, so a change made during the read is seen again at the next poll, never missed.

**Propagation:** a key created, changed or revoked through the admin API is in force on every
worker within ``interval`` plus the time of one poll (version + list: a millisecond or two
locally, one Redis round trip or two otherwise) — with the default 0.5 s, well under a
second. Besides, every ``full_every`` seconds the records are read again whatever the version
says (a Redis that lost its data may restart its counter at a value seen before);
``on_change`` is only called when they differ from the last ones handed over.

**Budgets** set at run time live in the same store under the same version: with
``on_budgets`` given, a poll that reloads also reads the budget records and calls
``on_budgets(records)`` when they differ from the last ones handed over (the store must then
implement ``BudgetStore``, as both stores do).

**Failures** (store unreachable, a record unreadable, ``on_change`` raising) are counted,
logged (the first of a run of failures as a warning, the rest at debug level) and retried at
the next poll; the task never ends by itself. Meanwhile the worker keeps the last keys it
loaded. ``health()`` reports the state for ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..tasks import stop_task
from .store import BudgetRecord, BudgetStore, KeyRecord, RecordStore

__all__ = ["KeySync"]

log = logging.getLogger(__name__)


class KeySync:
    """Polls ``store`` every ``interval`` seconds and calls ``on_change(records)`` on change."""

    def __init__(
        self,
        store: RecordStore,
        on_change: Callable[[list[KeyRecord]], None],
        interval: float = 0.5,
        *,
        full_every: float = 30.0,
        on_budgets: Callable[[list[BudgetRecord]], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("KeySync interval must be > 0")
        self.store = store
        self.on_change = on_change
        self.on_budgets = on_budgets
        self.budget_store: BudgetStore | None = None
        if on_budgets is not None:
            if not isinstance(store, BudgetStore):
                raise TypeError("on_budgets needs a store that holds budgets (BudgetStore)")
            self.budget_store = store
        #: The budget records last handed to ``on_budgets``.
        self.budgets: list[BudgetRecord] | None = None
        self.interval = interval
        self.full_every = full_every
        #: The version last loaded (None: nothing loaded yet).
        self.version: int | None = None
        self.records: list[KeyRecord] | None = None
        #: Failed polls since start; the last failure's description.
        self.errors = 0
        self.last_error: str | None = None
        #: Successful loads (on_change calls) since start.
        self.loads = 0
        self._last_ok: float | None = None  # monotonic time of the last successful poll
        self._last_full = 0.0
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task (in the running event loop); a no-op when running."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fastgw-keysync")

    async def stop(self) -> None:
        """Stop the task and wait for it to end."""
        task, self._task = self._task, None
        await stop_task(task)

    async def poll(self) -> bool:
        """One poll: load the records when the version changed (or a full read is due).
        True when ``on_change`` was called. Raises what the store or ``on_change`` raises —
        call it once before serving to start with every run-time key loaded."""
        now = time.monotonic()
        version = await self.store.version()
        full = now - self._last_full >= self.full_every
        if version == self.version and not full:
            self._last_ok = now
            return False
        records = await self.store.list()
        budgets = None
        if self.budget_store is not None:
            budgets = await self.budget_store.list_budgets()
        self._last_full = now
        changed = records != self.records
        if changed:
            self.on_change(records)
            self.records = records
            self.loads += 1
        if budgets is not None and budgets != self.budgets and self.on_budgets is not None:
            self.on_budgets(budgets)
            self.budgets = budgets
            changed = True
        self.version = version
        self._last_ok = now
        return changed

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
                if self._failing:
                    log.warning("key sync: the key store answers again")
                    self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if not self._failing:
                    log.warning("key sync failed (retrying every %gs): %s", self.interval, exc)
                    self._failing = True
                else:
                    log.debug("key sync failed again: %s", exc)
            await asyncio.sleep(self.interval)

    def health(self) -> dict[str, object]:
        """The sync's state: running, version and number of keys loaded, seconds since the
        last successful poll, failures."""
        age = None if self._last_ok is None else round(time.monotonic() - self._last_ok, 3)
        return {
            "running": self._task is not None and not self._task.done(),
            "ok": not self._failing and self._last_ok is not None,
            "interval": self.interval,
            "version": self.version,
            "keys": None if self.records is None else len(self.records),
            "budgets": None if self.budgets is None else len(self.budgets),
            "loads": self.loads,
            "last_ok_age": age,
            "errors": self.errors,
            "last_error": self.last_error,
        }
