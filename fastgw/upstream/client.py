"""A lean HTTP/1.1 client for upstream providers.

- One ``Client`` per worker; one pool of keep-alive connections per ``Origin``
  (scheme, host, port), bounded by ``limit`` with a FIFO of waiters.
- A request is one ``transport.write`` of pre-serialised bytes; the response is parsed by
  the compiled ``ResponseParser`` inside ``data_received``.
- Non-streamed responses: the protocol collects the body and wakes the caller once, when
  the response is complete. Streamed responses: body pieces are queued; reading pauses the
  socket above a high-water mark (backpressure reaches the upstream) and resumes below.
- Timeouts: ``connect`` (new connections only), ``first_byte`` (the response head; for
  streams also the longest silence between two pieces) and ``total``. One timer per
  exchange, re-armed only when it fires early: activity just updates a timestamp, so a
  stream of thousands of pieces costs no timer work per piece.
- A reused connection that the server had already closed (no response byte received) is
  retried once on a fresh connection; nothing else is retried here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import Callable
from typing import Literal

from .._core.http1 import HTTPParseError, ResponseParser

ErrorKind = Literal[
    "connect_failed",
    "connect_timeout",
    "first_byte_timeout",
    "first_token_timeout",
    "idle_timeout",
    "total_timeout",
    "disconnected",
    "protocol",
]

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_NEVER = float("inf")


class UpstreamError(Exception):
    """A failure talking to an upstream; ``kind`` says which (messages carry no secrets)."""

    def __init__(self, kind: ErrorKind, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind: ErrorKind = kind
        self.detail = detail


class Timeouts:
    __slots__ = ("connect", "first_byte", "first_token", "total")

    def __init__(
        self, connect: float, first_byte: float, total: float, first_token: float | None = None
    ) -> None:
        self.connect = connect
        self.first_byte = first_byte
        self.total = total
        #: Streams: from the request sent to the first body bytes (None: no such limit).
        self.first_token = first_token


class Origin:
    """Where requests go: scheme, host, port; and the request-line/headers prefix for it."""

    __slots__ = ("host", "host_header", "key", "limit", "port", "tls")

    def __init__(self, scheme: str, host: str, port: int | None, limit: int | None = None) -> None:
        #: Most connections open to this origin from one client (None: the client's default).
        self.limit = limit
        self.tls = scheme == "https"
        self.host = host
        self.port = port or (443 if self.tls else 80)
        default = 443 if self.tls else 80
        shown = f"[{host}]" if ":" in host else host
        self.host_header = shown if self.port == default else f"{shown}:{self.port}"
        self.key = (scheme, host, self.port)


class _Conn(asyncio.Protocol):
    """One upstream connection: parses responses and hands them to the current exchange."""

    __slots__ = (
        "buffered",
        "closed",
        "counted",
        "deadline",
        "deadline_kind",
        "eof",
        "error",
        "got_body",
        "got_bytes",
        "idle",
        "idle_since",
        "last_activity",
        "loop",
        "parser",
        "parts",
        "paused",
        "pool",
        "reused",
        "started",
        "streaming",
        "timer",
        "token_due",
        "transport",
        "waiter",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        # the current exchange
        self.waiter: asyncio.Future[None] | None = None
        self.streaming = False
        self.parts: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.got_bytes = False
        self.got_body = False
        self.error: UpstreamError | None = None
        self.eof = False
        self.last_activity = 0.0
        self.counted = False  # counts against the pool's limit until it closes
        # the watchdog of the current exchange: one timer, re-armed only when it fires early
        self.timer: asyncio.TimerHandle | None = None
        self.started = 0.0
        self.deadline = 0.0
        self.deadline_kind: ErrorKind = "total_timeout"
        self.idle = 0.0
        self.token_due = _NEVER  # streams: the first body bytes are due by then

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            body = self.parser.feed(data)
        except HTTPParseError as e:
            self._fail(UpstreamError("protocol", str(e)))
            return
        if body:
            self.parts.append(body)
            self.buffered += len(body)
            self.got_body = True
        p = self.parser
        if p.complete:
            self._wake()
        elif self.streaming:
            self.last_activity = self.loop.time()
            if p.head_complete:
                self._wake()
                if self.buffered > _HIGH_WATER and not self.paused and self.transport:
                    self.paused = True
                    self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.waiter is None and not self.streaming:
            return
        try:
            self.parser.feed_eof()
        except HTTPParseError:
            self._fail(
                UpstreamError(
                    "disconnected",
                    "before responding" if not self.parser.head_complete else "mid-response",
                )
            )
            return
        self.eof = True
        self._wake()

    # -- exchange --------------------------------------------------------------------------

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, err: UpstreamError) -> None:
        if self.error is None:
            self.error = err
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        self.disarm()
        if self.transport is not None:
            self.transport.abort()

    # -- the watchdog ----------------------------------------------------------------------

    def _arm(self) -> None:
        due = min(self.deadline, (self.last_activity or self.started) + self.idle)
        if not self.got_body and self.token_due < due:
            due = self.token_due
        self.timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        now = self.loop.time()
        if now >= self.deadline:
            self._fail(UpstreamError(self.deadline_kind))
        elif not self.got_body and now >= self.token_due:
            self._fail(UpstreamError("first_token_timeout"))
        elif now >= (self.last_activity or self.started) + self.idle:
            head = self.parser.head_complete
            self._fail(UpstreamError("idle_timeout" if head else "first_byte_timeout"))
        else:
            self._arm()  # there was activity: the idle limit moved

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def start(
        self,
        request: bytes,
        streaming: bool,
        deadline: float,
        deadline_kind: ErrorKind,
        idle: float,
        token_due: float = _NEVER,
    ) -> None:
        """Send a request and start watching it: ``deadline`` for the whole exchange
        (``deadline_kind`` names it), ``idle`` for the head and for silences of a stream,
        ``token_due`` for the first body bytes of a stream."""
        if self.closed:  # closed while idle and not yet noticed: fail like a stale connection
            self.error = UpstreamError("disconnected", "before responding")
            self.got_bytes = False
            return
        self.parser.reset()
        self.streaming = streaming
        self.parts = []
        self.buffered = 0
        self.got_bytes = False
        self.got_body = False
        self.error = None
        self.eof = False
        self.last_activity = 0.0
        self.started = self.loop.time()
        self.deadline = deadline
        self.deadline_kind = deadline_kind
        self.idle = idle
        self.token_due = token_due
        self._arm()
        assert self.transport is not None
        self.transport.write(request)

    async def wait(self) -> None:
        """Until the protocol has news for the current exchange (data, end, error)."""
        w = self.waiter = self.loop.create_future()
        try:
            await w
        except BaseException:
            self.abort()  # cancelled (the client left): drop the upstream connection
            raise
        finally:
            self.waiter = None

    def take(self) -> bytes:
        """All queued body bytes (streaming), resuming the socket if it was paused."""
        parts = self.parts
        if not parts:
            return b""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.parts = []
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data


class _Pool:
    def __init__(self, client: Client, origin: Origin, limit: int) -> None:
        self.client = client
        self.loop = client.loop
        self.origin = origin
        self.limit = limit
        self.idle: collections.deque[_Conn] = collections.deque()
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def forget(self, conn: _Conn) -> None:
        """A connection closed: it no longer counts, wherever it was."""
        if conn.counted:
            conn.counted = False
            self.open -= 1
            with contextlib.suppress(ValueError):  # not idle: it was in use
                self.idle.remove(conn)
            self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    async def acquire(self, connect_timeout: float) -> _Conn:
        now = self.loop.time()
        keepalive = self.client.keepalive_timeout
        idle = self.idle
        while idle and now - idle[0].idle_since > keepalive:  # the oldest expired: close
            idle.popleft().abort()
        while self.idle:
            conn = self.idle.pop()  # most recently used first
            if conn.closed:
                continue
            if now - conn.idle_since > keepalive:
                conn.abort()
                continue
            conn.reused = True
            return conn
        while self.open >= self.limit:
            w = self.loop.create_future()
            self.waiters.append(w)
            try:
                async with asyncio.timeout(connect_timeout):
                    await w
            except TimeoutError:
                raise UpstreamError(
                    "connect_timeout", f"no free connection to {self.origin.host_header}"
                ) from None
            if self.idle:
                return await self.acquire(connect_timeout)
        self.open += 1
        try:
            conn = await self._connect(connect_timeout)
        except BaseException:
            self.open -= 1
            self._wake_one()
            raise
        conn.counted = True
        return conn

    async def _connect(self, limit: float) -> _Conn:
        o = self.origin
        factory: Callable[[], _Conn] = lambda: _Conn(self)  # noqa: E731
        try:
            async with asyncio.timeout(limit):
                _, proto = await self.loop.create_connection(
                    factory,
                    o.host,
                    o.port,
                    ssl=self.client.ssl_context() if o.tls else None,
                    server_hostname=o.host if o.tls else None,
                )
        except TimeoutError:
            raise UpstreamError("connect_timeout", f"{o.host_header}") from None
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise UpstreamError("connect_failed", f"{o.host_header}: {reason}") from None
        return proto

    def release(self, conn: _Conn) -> None:
        if conn.closed or self.client.closed:
            conn.abort()
            return
        conn.disarm()
        conn.idle_since = self.loop.time()
        conn.waiter = None
        conn.streaming = False
        self.idle.append(conn)
        self._wake_one()


class Response:
    """An upstream response. Non-streamed: ``body`` is complete. Streamed: read pieces with
    ``readany()`` until it returns ``b""``; always ``release()`` (or ``close()``) at the end."""

    __slots__ = ("_conn", "_pool", "body", "headers", "status")

    def __init__(
        self,
        pool: _Pool,
        conn: _Conn,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    async def readany(self) -> bytes:
        """The next body bytes of a streamed response; ``b""`` at the end."""
        conn = self._conn
        if conn is None:
            return b""
        while True:
            data = conn.take()
            if data:
                return data
            if conn.error is not None:
                err = conn.error
                self.close()
                raise err
            if conn.parser.complete or conn.eof:
                self.release()
                return b""
            await conn.wait()

    async def read(self, limit: int = 1 << 20, truncate: bool = True) -> bytes:
        """The rest of a streamed response as ``body``, at most ``limit`` bytes: cut there
        (``truncate``, fine for an error message) or an ``UpstreamError``."""
        parts = [self.body] if self.body else []
        size = len(self.body)
        while size <= limit and (chunk := await self.readany()):
            parts.append(chunk)
            size += len(chunk)
        self.close()  # no-op when the body ended (released already)
        if size > limit and not truncate:
            raise UpstreamError("protocol", f"response body over {limit} bytes")
        self.body = b"".join(parts)[:limit]
        return self.body

    def release(self) -> None:
        """Done with the response: the connection goes back to the pool if reusable."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if conn.parser.complete and conn.parser.keep_alive and conn.error is None:
            self._pool.release(conn)
        else:
            conn.abort()

    def close(self) -> None:
        """Abandon the response (e.g. the client left): the connection is dropped, which
        tells the upstream to stop generating."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.abort()


class Client:
    """One per worker: pools per origin, the TLS context, request execution."""

    def __init__(
        self,
        limit: int = 10000,
        keepalive_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.keepalive_timeout = keepalive_timeout
        self.pools: dict[tuple[str, str, int], _Pool] = {}
        self.closed = False
        self._ssl = ssl_context  # default: the system's trust store, verified

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context()
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        return self._ssl

    def pool(self, origin: Origin) -> _Pool:
        pool = self.pools.get(origin.key)
        if pool is None:
            limit = origin.limit or self.limit
            pool = self.pools[origin.key] = _Pool(self, origin, limit)
        return pool

    async def request(
        self, origin: Origin, request: bytes, timeouts: Timeouts, stream: bool
    ) -> Response:
        """Send ``request`` (a complete HTTP/1.1 request) and return the response: complete
        for ``stream=False``, after its head for ``stream=True``."""
        pool = self.pool(origin)
        loop = self.loop
        start = loop.time()
        deadline = start + timeouts.total
        deadline_kind: ErrorKind = "total_timeout"
        if not stream:  # the head of a non-streamed response comes when it is all ready
            deadline = start + min(timeouts.total, timeouts.first_byte)
            if timeouts.first_byte <= timeouts.total:
                deadline_kind = "first_byte_timeout"
        token_due = _NEVER
        if stream and timeouts.first_token is not None:
            token_due = start + timeouts.first_token
        for attempt in (0, 1):
            conn = await pool.acquire(timeouts.connect)
            conn.start(request, stream, deadline, deadline_kind, timeouts.first_byte, token_due)
            if conn.error is None:
                await conn.wait()
            err = conn.error
            if err is None and conn.closed and not conn.parser.head_complete:
                err = UpstreamError("disconnected", "before responding")
            if err is not None:
                conn.abort()
                if attempt == 0 and conn.reused and not conn.got_bytes:
                    continue  # a stale keep-alive connection: once more, on a new one
                raise err
            p = conn.parser
            if not p.head_complete:  # closed before any head although no parse error
                conn.abort()
                if attempt == 0 and conn.reused and not conn.got_bytes:
                    continue
                raise UpstreamError("disconnected", "before responding")
            body = b""
            if not stream:
                parts = conn.parts
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                conn.parts = []
            resp = Response(pool, conn, p.status, list(p.headers), body)
            if not stream:
                resp.release()
            return resp
        raise UpstreamError("disconnected", "before responding")  # pragma: no cover

    async def close(self) -> None:
        self.closed = True
        for pool in self.pools.values():
            while pool.idle:
                pool.idle.pop().abort()
