"""A small, fast HTTP/1.1 server for the mock upstream, on a raw asyncio ``Protocol``.

Keep-alive, pipelining-safe ordering, ``Content-Length`` or chunked request bodies,
``Content-Length`` JSON responses and chunked streams with write backpressure. Requests
whose plan is immediate (no delay, no stream) are answered synchronously inside
``data_received``; the others run :func:`fastgw.mock.behaviour.execute` in a task that is
cancelled the moment the peer closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from fastgw.mock import responses
from fastgw.mock.behaviour import (
    Headers,
    MockOptions,
    MockState,
    Plan,
    execute,
    plan_request,
    reason,
)

__all__ = ["MockServer", "start_server"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_SERVER = b"server: fastgw-mock\r\n"


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Request:
    __slots__ = ("body", "chunked", "headers", "keep_alive", "length", "method", "path", "query")

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.query = ""
        self.headers: Headers = []
        self.keep_alive = True
        self.chunked = False
        self.length = 0
        self.body = b""


def _parse_head(head: bytes) -> _Request:
    lines = head.split(b"\r\n")
    try:
        method, target, version = lines[0].split(b" ", 2)
    except ValueError:
        raise _HTTPError(400, "Malformed request line.") from None
    req = _Request()
    req.method = method.decode("ascii", "replace")
    path, _, query = target.partition(b"?")
    req.path = path.decode("utf-8", "replace")
    req.query = query.decode("utf-8", "replace")
    req.keep_alive = version == b"HTTP/1.1"
    headers = req.headers
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise _HTTPError(400, "Malformed header line.")
        value = value.strip()
        headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            try:
                req.length = int(value)
            except ValueError:
                raise _HTTPError(400, "Invalid content-length.") from None
            if req.length < 0 or req.length > _MAX_BODY:
                raise _HTTPError(413, "Request body too large.")
        elif lname == b"transfer-encoding":
            req.chunked = b"chunked" in value.lower()
        elif lname == b"connection":
            token = value.lower()
            if token == b"close":
                req.keep_alive = False
            elif token == b"keep-alive":
                req.keep_alive = True
    return req


def _parse_chunked(buf: bytearray) -> tuple[bytes, int] | None:
    """(body, bytes consumed) of a complete chunked body at the start of ``buf``, else None."""
    pos = 0
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _HTTPError(400, "Invalid chunk size.") from None
        pos = eol + 2
        if size == 0:
            # Trailers (ignored) end with an empty line.
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return b"".join(parts), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2
        if sum(map(len, parts)) > _MAX_BODY:
            raise _HTTPError(413, "Request body too large.")


class _Connection(asyncio.Protocol):
    """One client connection; also the :class:`~fastgw.mock.behaviour.Sink` of its plans."""

    __slots__ = (
        "_buf",
        "_closed",
        "_drain",
        "_keep_alive",
        "_pending",
        "_server",
        "_task",
        "_transport",
    )

    def __init__(self, server: MockServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._pending: _Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._closed = False
        self._keep_alive = True

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's isn't a subclass
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        if self._task is not None:
            self._task.cancel()
        self._wake(ConnectionResetError("peer closed the connection"))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._task is None:
            self._process()

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake(None)

    # -- request handling ---------------------------------------------------------------------

    def _wake(self, exc: Exception | None) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def _next_request(self) -> _Request | None:
        buf = self._buf
        req = self._pending
        if req is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise _HTTPError(431, "Request header fields too large.")
                return None
            req = _parse_head(bytes(buf[:end]))
            del buf[: end + 4]
            for name, value in req.headers:
                if name.lower() == b"expect" and value.lower() == b"100-continue":
                    assert self._transport is not None
                    self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._pending = req
        if req.chunked:
            parsed = _parse_chunked(buf)
            if parsed is None:
                return None
            req.body, used = parsed
            del buf[:used]
        else:
            if len(buf) < req.length:
                return None
            req.body = bytes(buf[: req.length])
            del buf[: req.length]
        self._pending = None
        return req

    def _process(self) -> None:
        transport = self._transport
        assert transport is not None
        while not self._closed:
            try:
                req = self._next_request()
            except _HTTPError as exc:
                self._keep_alive = False
                body = responses.error_body(str(exc))
                self._write_response(exc.status, [(b"content-type", b"application/json")], body)
                transport.close()
                return
            if req is None:
                return
            self._keep_alive = req.keep_alive
            plan = plan_request(
                self._server.state, req.method, req.path, req.query, req.headers, req.body
            )
            if plan.immediate:
                self._write_response(plan.status, plan.headers, plan.body)
                if not req.keep_alive:
                    transport.close()
                    return
            else:
                self._task = asyncio.get_running_loop().create_task(self._run(plan))
                return

    async def _run(self, plan: Plan) -> None:
        try:
            await execute(plan, self, self._server.state.stats)
        except (asyncio.CancelledError, ConnectionError):
            return
        finally:
            self._task = None
        if self._closed:
            return
        if not self._keep_alive:
            assert self._transport is not None
            self._transport.close()
            return
        if self._buf:
            self._process()

    def _head(self, status: int, headers: Headers) -> list[bytes]:
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason(status)), _SERVER]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not self._keep_alive:
            parts.append(b"connection: close\r\n")
        return parts

    def _write_response(self, status: int, headers: Headers, body: bytes) -> None:
        assert self._transport is not None
        parts = self._head(status, headers)
        parts += (b"content-length: %d\r\n\r\n" % len(body), body)
        self._transport.write(b"".join(parts))

    # -- Sink ---------------------------------------------------------------------------------

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        if self._closed:
            raise ConnectionResetError("peer closed the connection")
        self._write_response(status, headers, body)

    async def start_stream(self, status: int, headers: Headers) -> None:
        if self._closed:
            raise ConnectionResetError("peer closed the connection")
        assert self._transport is not None
        parts = self._head(status, headers)
        parts.append(b"transfer-encoding: chunked\r\n\r\n")
        self._transport.write(b"".join(parts))

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError("peer closed the connection")
        assert self._transport is not None
        self._transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        if self._drain is not None:
            await self._drain

    async def end_stream(self) -> None:
        if self._closed:
            raise ConnectionResetError("peer closed the connection")
        assert self._transport is not None
        self._transport.write(b"0\r\n\r\n")

    async def drop(self) -> None:
        # close() flushes what was written, then sends FIN: the body ends mid-stream.
        self._keep_alive = False
        assert self._transport is not None
        self._transport.close()

    async def reset(self) -> None:
        self._keep_alive = False
        assert self._transport is not None
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()


class MockServer:
    """A running mock upstream: ``.port``, ``.state`` (options, stats, log), ``.close()``."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL of the OpenAI-compatible API, e.g. ``http://127.0.0.1:9100/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def _start(self, host: str, port: int, backlog: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=backlog, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]

    def close(self) -> None:
        """Stop listening and close every open connection (their streams count as aborted)."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn._transport is not None:
                conn._transport.abort()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> MockServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def start_server(
    host: str = "127.0.0.1", port: int = 0, *, backlog: int = 4096, **defaults: Any
) -> MockServer:
    """Start a mock upstream on the running loop; ``defaults`` are :class:`MockOptions` fields
    (``chunks``, ``interval_ms``, ``latency_ms``, ``dimensions``, ``models``)."""
    server = MockServer(MockState(MockOptions(**defaults)))
    await server._start(host, port, backlog)
    return server
