"""A lean, pipelined Redis client for the hot path of the ``redis`` state backend.

Why not ``redis.asyncio``: its per-command cost (a pooled connection checked out and back,
the command packed in Python, a reader task per connection) is ~160 µs of one core here,
which is most of a gateway request (``bench/bench_state_redis.py``). This client keeps what
the state backend needs and nothing else:

- **One connection, pipelined.** Every command is written at once and its future queued;
  Redis answers in order, so each reply resolves the oldest future. Concurrent requests
  never wait for a free connection, and the commands written in one event-loop turn leave
  in one ``write`` (one syscall for all of them).
- **C on both ends.** ``hiredis.pack_command`` frames the command, ``hiredis.Reader`` parses
  the replies (error replies come back as :class:`RespError` values, raised to the caller).
- **One timer per connection, not per call.** A watchdog checks the oldest unanswered
  command every ``timeout / 2``: when it has waited ``timeout``, the connection is presumed
  dead, dropped, and every pending call fails with ``TimeoutError`` (so a call fails after
  ``timeout`` to ``1.5 × timeout``). The next call connects again.
- A call cancelled by its caller keeps its place in the queue (its reply is read and
  dropped), so replies never shift onto the wrong caller.

URLs: ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://`` (TLS with the system's
trust store), ``password=`` / ``db=`` query arguments too.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import hiredis

__all__ = ["RespClient", "RespError"]


class RespError(Exception):
    """An error reply from Redis (``ERR …``, ``NOSCRIPT …``, ``LOADING …``)."""


class _Endpoint:
    """Where to connect and how to log in, from a ``redis://`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"expected a redis:// or rediss:// URL, got scheme {parts.scheme!r}")
        query = dict(parse_qsl(parts.query))
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.tls = parts.scheme == "rediss"
        self.username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if password is None and self.username is not None:  # "redis://secret@host"
            password, self.username = self.username, None
        self.password = query.get("password", password)
        path = parts.path.lstrip("/")
        self.db = int(query.get("db", path or 0))

    def hello(self) -> list[tuple[Any, ...]]:
        """The commands a new connection sends before any other (their replies are checked)."""
        cmds: list[tuple[Any, ...]] = []
        if self.password:
            cmds.append(
                ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            )
        if self.db:
            cmds.append(("SELECT", self.db))
        return cmds


class _Conn(asyncio.Protocol):
    """One socket to Redis: a queue of futures answered in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.reader = hiredis.Reader(replyError=RespError)
        #: (future, monotonic time sent) per command awaiting its reply, oldest first
        self.pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        self.lost: BaseException | None = None
        self._watching = False

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        pending = self.pending
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(ConnectionError(f"redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:  # a reply nobody asked for: the stream is out of step
                self._fail(ConnectionError("redis sent an unexpected reply"))
                return
            fut = pending.popleft()[0]
            if not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("redis closed the connection"))

    # --- calls ----------------------------------------------------------------------------

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise ConnectionError(f"redis connection lost: {self.lost}")
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.pending.append((fut, time.monotonic()))
        out = self.out
        out.append(packed)
        if len(out) == 1:  # the first this turn: write them all at the end of the turn
            self.loop.call_soon(self._flush)
        if not self._watching:
            self._watching = True
            self.loop.call_later(self.timeout / 2, self._watch)
        return fut

    def _flush(self) -> None:
        out = self.out
        if not out or self.transport is None or self.lost is not None:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.transport.write(data)

    def _watch(self) -> None:
        """Drop the connection when its oldest command has waited ``timeout``."""
        pending = self.pending
        if not pending or self.lost is not None:
            self._watching = False
            return
        if time.monotonic() - pending[0][1] >= self.timeout:
            self._watching = False
            self._fail(TimeoutError(f"no reply from redis within {self.timeout:g} s"))
            return
        self.loop.call_later(self.timeout / 2, self._watch)

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        if self.transport is not None:
            self.transport.abort()
        pending = self.pending
        while pending:
            fut = pending.popleft()[0]
            if not fut.done():
                # a fresh exception per caller: a shared one would chain their tracebacks
                fut.set_exception(type(exc)(*exc.args))
        self.out.clear()


class RespClient:
    """Commands to one Redis over one pipelined connection (re-opened after a failure)."""

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        self.endpoint = _Endpoint(url)
        self.timeout = timeout
        self._conn: _Conn | None = None
        self._connecting: asyncio.Future[_Conn] | None = None
        self._closed = False

    def ready(self) -> _Conn | None:
        """The connection when it is open (a caller may ``send`` on it directly, and await
        the future: one await per command, no coroutine around it), else None."""
        conn = self._conn
        return conn if conn is not None and conn.lost is None else None

    async def call(self, *args: Any) -> Any:
        """Send one command; its reply (bytes, int, list, None). Raises :class:`RespError`
        for an error reply, ``ConnectionError``/``OSError`` when Redis can't be reached and
        ``TimeoutError`` when it does not answer within ``timeout``."""
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._connect()
        reply = await conn.send(hiredis.pack_command(args))
        if type(reply) is RespError:
            raise reply
        return reply

    async def call_packed(self, packed: bytes) -> Any:
        """``call`` with the command already framed (``hiredis.pack_command`` or by hand):
        for commands whose bytes are mostly built once."""
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._connect()
        reply = await conn.send(packed)
        if type(reply) is RespError:
            raise reply
        return reply

    async def _connect(self) -> _Conn:
        if self._closed:
            raise ConnectionError("the redis client is closed")
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            self._connecting = loop.create_future()
            task = loop.create_task(self._open(loop))
            task.add_done_callback(self._opened)
        return await asyncio.shield(self._connecting)

    def _opened(self, task: asyncio.Task[_Conn]) -> None:
        waiting, self._connecting = self._connecting, None
        assert waiting is not None
        if task.cancelled():
            waiting.set_exception(ConnectionError("connecting to redis was cancelled"))
        elif (exc := task.exception()) is not None:
            waiting.set_exception(exc)
        else:
            self._conn = task.result()
            waiting.set_result(self._conn)
        if not waiting.cancelled():
            waiting.exception()  # retrieved: no "never retrieved" warning without waiters

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Conn:
        ep = self.endpoint
        tls = ssl.create_default_context() if ep.tls else None
        async with asyncio.timeout(self.timeout):
            _, conn = await loop.create_connection(
                lambda: _Conn(loop, self.timeout),
                ep.host,
                ep.port,
                ssl=tls,
                server_hostname=ep.host if tls else None,
            )
            for cmd in ep.hello():
                reply = await conn.send(hiredis.pack_command(cmd))
                if isinstance(reply, RespError):  # bad credentials or db: Redis is unusable
                    assert conn.transport is not None
                    conn.transport.close()
                    raise ConnectionError(f"redis refused {cmd[0]}: {reply}")
        return conn

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn._flush()
            conn.transport.close()
