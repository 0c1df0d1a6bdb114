"""The files a gateway keeps on its host: where they live by default, and the SQLite ones.

``data_file`` names a file in the gateway's data directory, ``fastgw-<uid>`` under
``/var/tmp`` (kept across reboots) or, when that is not writable, the temp dir, tagged with a
hash of the configuration file's path so that every worker of one gateway (and the CLI)
agrees on it: the admin key store (``fastgw.policy.store``), the spend ledger
(``fastgw.policy.ledger``) and the catalog file (``fastgw.catalog.files``) live there.

``SQLiteFile`` is one connection to an SQLite file in WAL mode, shared by every process that
opens the file: the key store and the spend ledger each hold one. Its blocking calls run in
a thread, so the event loop never waits on the disk, and a call whose caller is cancelled
is still made (a write asked for is never silently dropped).

This module imports nothing from the rest of the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from hashlib import blake2b
from typing import Any, TypeVar

__all__ = ["SQLiteFile", "config_tag", "data_file", "private_dir", "transaction"]

T = TypeVar("T")


def config_tag(config_path: str | None = None) -> str:
    """16 hex digits of a hash of the configuration file's absolute path (``config_path``,
    else ``FASTGW_CONFIG``; neither: of the empty string)."""
    config = config_path if config_path is not None else os.environ.get("FASTGW_CONFIG") or ""
    if config:
        config = os.path.abspath(config)
    return blake2b(config.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def data_file(stem: str, suffix: str, config_path: str | None = None) -> str:
    """``<base>/fastgw-<uid>/<stem>-<tag><suffix>``: ``base`` is ``/var/tmp`` when it is a
    writable directory, else the temp dir; ``tag`` is ``config_tag(config_path)``. Creates
    nothing (see ``private_dir``)."""
    base = "/var/tmp"
    if not (os.path.isdir(base) and os.access(base, os.W_OK)):
        base = tempfile.gettempdir()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(base, f"fastgw-{uid}", f"{stem}-{config_tag(config_path)}{suffix}")


def private_dir(path: str) -> None:
    """Create the directory ``path`` (0700), or check that it is a directory of this user
    that nobody else can write to (a file another user could write is a way in); an
    ``OSError`` saying why not."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user")
    if st.st_mode & 0o022:
        raise PermissionError(f"{path} is writable by other users")


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction: ``BEGIN IMMEDIATE`` takes the write lock at once (waiting up to
    the busy timeout), so a read-then-write inside cannot be overtaken by another process."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _wal(db: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch ``db`` to WAL mode. Switching a new file takes an exclusive lock without
    waiting for it (SQLite does not call the busy handler there), so processes opening a new
    file at once retry for up to ``busy_timeout`` seconds."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # start-up only, before the event loop serves anything
    if not mode or str(mode[0]).lower() != "wal":
        raise sqlite3.OperationalError(f"WAL mode refused (journal_mode={mode!r})")


class SQLiteFile:
    """One connection to the SQLite file ``path``, in WAL mode (any number of processes may
    open the file at once; readers never wait for the writer).

    Opening (blocking, once, at start-up) creates the file (0600) if need be, and the
    directory (0700, see ``private_dir``) when ``private``; switches to WAL mode (see
    ``_wal``) with ``synchronous=NORMAL``; and runs the statements of ``schema`` in one
    transaction. A write waits up to ``busy_timeout`` seconds for another process's write.
    Any failure, then and later, is raised as ``error(message)``; ``what`` names the file in
    the messages ("key store", "spend ledger").

    The connection is used by one thread at a time (a lock): ``run`` calls a function with
    it in the calling thread, ``call`` in a worker thread."""

    def __init__(
        self,
        path: str,
        schema: Iterable[str],
        *,
        what: str,
        error: Callable[[str], Exception],
        busy_timeout: float = 5.0,
        private: bool = False,
    ) -> None:
        self.path = path
        self.what = what
        self._error = error
        self._lock = threading.Lock()
        self._jobs: set[asyncio.Future[Any]] = set()
        self._db: sqlite3.Connection | None = None
        try:
            if private:
                private_dir(os.path.dirname(os.path.abspath(path)))
            if not os.path.exists(path):  # no group/other access to a new file
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            db = sqlite3.connect(
                path,
                timeout=busy_timeout,
                isolation_level=None,  # transactions are explicit
                check_same_thread=False,  # used from worker threads, under self._lock
            )
            try:
                _wal(db, busy_timeout)
                db.execute("PRAGMA synchronous=NORMAL")
                with transaction(db):
                    for sql in schema:
                        db.execute(sql)
            except BaseException:
                db.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            raise error(f"cannot open the {what} {path}: {exc}") from exc
        self._db = db

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in this thread (blocking), under the lock; an ``sqlite3.Error``
        becomes ``error``."""
        with self._lock:
            db = self._db
            if db is None:
                raise self._error(f"the {self.what} is closed")
            try:
                return fn(db)
            except sqlite3.Error as exc:
                raise self._error(f"{self.what} {self.path}: {exc}") from exc

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``run(fn)`` in a worker thread. Cancelling the caller does not cancel the call
        (see ``detach``): a write asked for is made, whether the caller waits for it or not."""
        return await self.detach(asyncio.to_thread(self.run, fn))

    async def detach(self, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work`` run as a task of its own, shielded from the caller's cancellation
        (a cancelled ``asyncio.to_thread`` drops a job the executor has not started yet);
        ``drain`` and ``close`` wait for it."""
        job = asyncio.ensure_future(work)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return await asyncio.shield(job)

    async def drain(self) -> None:
        """Wait for the calls under way (their callers may be gone); their errors are the
        callers' business."""
        while self._jobs:
            jobs = list(self._jobs)
            await asyncio.gather(*jobs, return_exceptions=True)
            self._jobs.difference_update(jobs)

    async def close(self) -> None:
        """Wait for the calls under way, then close the connection (later calls raise
        ``error``)."""
        await self.drain()

        def shut() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(shut)
