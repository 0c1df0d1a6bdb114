"""The ``local`` backend: shared memory across the worker processes of one host.

Buckets, slots, counters and charge counters live in a fixed-size table in a memory-mapped file
(``fastgw._core.shm``; layout, locking and the reclaim of slots held by dead workers are
described in ``fastgw/_core/_shm_py.py``). Every worker maps the same file, so ``--workers 4``
enforces the same limits as one worker, and the state survives a worker restart (and a
gateway restart, as long as the file stays: /dev/shm lives until reboot).

The file is ``StateConfig.path``, or by default ``/dev/shm/fastgw-<hash>.state`` (the temp
dir without /dev/shm) where the hash is of the configuration file's path and the port
(``FASTGW_CONFIG``, ``FASTGW_PORT``), so the workers of one gateway share it and two gateways
on one host do not. The first worker creates it; a file of another size or layout (e.g.
``entries`` changed) is replaced. The clock is ``time.monotonic()``, system-wide on Linux.

Charge counters take an entry each, like every other key. One with a ``ttl`` frees its entry
for reuse once expired; one without a ``ttl`` holds it for as long as the file lives (size
``entries`` accordingly, or give period counters a ``ttl``). Their expiry is on the monotonic
clock, which restarts at boot: a table kept in a file that survives a reboot (a
``StateConfig.path`` outside /dev/shm) keeps its counters up to the previous uptime longer.

The operations are short and never wait on I/O, so the async methods call the table
directly (which also checks their arguments as ``fastgw.state.base`` says).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from hashlib import blake2b
from typing import Any, cast

from .._core import shm
from ..config.schema import StateConfig
from .base import Charge, Limit, Spent, Take, Verdict


def default_path() -> str:
    """The table of this gateway: named after its configuration file and port."""
    config = os.environ.get("FASTGW_CONFIG") or ""
    if config:
        config = os.path.abspath(config)
    port = os.environ.get("FASTGW_PORT") or ""
    tag = blake2b(f"{config}\0{port}".encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    where = "/dev/shm"
    if not (os.path.isdir(where) and os.access(where, os.W_OK)):
        where = tempfile.gettempdir()
    return os.path.join(where, f"fastgw-{tag}.state")


class LocalState:
    """The State contract on a shared-memory table (``fastgw._core.shm.ShmTable``)."""

    name = "local"

    def __init__(
        self,
        path: str | None = None,
        entries: int = shm.DEFAULT_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path or default_path()
        self.entries = entries
        self.clock = clock
        self.table = shm.ShmTable(self.path, entries, recreate=True)
        table = self.table
        #: In-process admission (``Limiter``'s fast path, beside the State contract): one
        #: call takes a request from a handle of ``prepare_admission`` and gives its
        #: ``x-ratelimit-*`` headers and its settlement (``shm.Admitted``; None: refused);
        #: ``refund_now`` settles tokens of such a handle. On the system clock they read it
        #: in C.
        self.admit_now: Callable[[Any, float], shm.Admitted | None]
        self.refund_now: Callable[[Any, float], None]
        if clock is time.monotonic:
            self.admit_now = table.admit
            self.refund_now = table.refund
        else:
            self.admit_now = lambda handle, tokens: table.admit(handle, tokens, clock())
            self.refund_now = lambda handle, n: table.refund(handle, n, clock())

    async def take_many(self, takes: list[Take]) -> list[Verdict]:
        got = self.table.take_many(
            [(t.key, t.n, t.limit.capacity, t.limit.rate) for t in takes], self.clock()
        )
        return [Verdict(*v) for v in got]

    def admissions(
        self,
        miss: Callable[[Any, str, float], Any],
        refused: Callable[[Any, Any, str, float], Any],
    ) -> shm.Admissions | None:
        """The table's ``Admissions`` (``Limiter``'s one-call admission); None on another
        clock than ``time.monotonic`` (they read the system's)."""
        if self.clock is not time.monotonic:
            return None
        return self.table.admissions(miss, refused)

    def prepare(self, buckets: list[tuple[str, Limit]]) -> object:
        return self.prepare_admission(buckets, None)

    def prepare_admission(
        self, buckets: list[tuple[str, Limit]], roles: list[tuple[bool, bytes]] | None
    ) -> object:
        """``prepare`` for ``admit_now`` too: ``roles`` says per bucket whether it gives
        the token estimate (else one request) and its limit as header bytes."""
        return self.table.prepare([(k, lim.capacity, lim.rate) for k, lim in buckets], roles)

    def take_prepared_now(self, handle: object, ns: list[float]) -> tuple[bool, list[float]]:
        """``take_prepared`` without a coroutine (the table answers in-process)."""
        return self.table.take_prepared(cast(Any, handle), ns, self.clock())

    async def take_prepared(self, handle: object, ns: list[float]) -> tuple[bool, list[float]]:
        return self.table.take_prepared(cast(Any, handle), ns, self.clock())

    async def settle(self, key: str, n: float, limit: Limit) -> None:
        self.table.settle(key, n, limit.capacity, limit.rate, self.clock())

    async def acquire(self, key: str, limit: int) -> bool:
        return self.table.acquire(key, limit)

    async def release(self, key: str) -> None:
        self.table.release(key)

    async def add(self, key: str, x: float) -> float:
        return self.table.add(key, x)

    async def get(self, key: str) -> float:
        return self.table.get(key)

    async def charge_many(self, charges: list[Charge], *, ttl: float | None = None) -> list[Spent]:
        got = self.table.charge_many([(c.key, c.n, c.cap) for c in charges], self.clock(), ttl)
        return [Spent(*v) for v in got]

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        return self.table.adjust(key, delta, self.clock(), ttl)

    async def seed(self, key: str, value: float, *, ttl: float | None = None) -> bool:
        return self.table.seed(key, value, self.clock(), ttl)

    def health(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "path": self.path,
            "entries": self.entries,
            "used": self.table.used(),
            "compiled": shm.COMPILED,
        }

    async def close(self) -> None:
        self.table.close()


def create(cfg: StateConfig) -> LocalState:
    return LocalState(cfg.path, cfg.entries)
