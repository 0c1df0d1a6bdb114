"""The mock upstream as an ASGI app, for mounting inside the gateway (its offline demo).

Same endpoints and behaviour controls as the raw server (both use
:mod:`fastgw.mock.behaviour`), served under a path prefix: ``make_asgi_app("/_demo")``
answers ``/_demo/v1/chat/completions``. Two controls are approximations, because an ASGI
app cannot touch the socket: ``drop_after`` and ``reset`` raise out of the app, and the
server then cuts the response (mid-body for ``drop_after``; for ``reset`` the server
usually answers 500 since nothing was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastgw.asgi import ASGIApp, Receive, Scope, Send
from fastgw.mock.behaviour import (
    Headers,
    MockOptions,
    MockState,
    execute,
    not_found,
    plan_request,
)

__all__ = ["MockAbort", "make_asgi_app"]


class MockAbort(Exception):
    """Raised out of the app to make the ASGI server cut the connection (drop / reset)."""


class _Sink:
    __slots__ = ("_send",)

    def __init__(self, send: Send) -> None:
        self._send = send

    async def _out(self, message: dict[str, object]) -> None:
        try:
            await self._send(message)
        except Exception as exc:  # the server's own "client gone" error type
            raise ConnectionResetError(str(exc) or "peer closed the connection") from exc

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await self._out({"type": "http.response.start", "status": status, "headers": headers})
        await self._out({"type": "http.response.body", "body": body})

    async def start_stream(self, status: int, headers: Headers) -> None:
        await self._out({"type": "http.response.start", "status": status, "headers": headers})

    async def send(self, data: bytes) -> None:
        await self._out({"type": "http.response.body", "body": data, "more_body": True})

    async def end_stream(self) -> None:
        await self._out({"type": "http.response.body", "body": b""})

    async def drop(self) -> None:
        raise MockAbort("mock: drop_after reached, cutting the stream")

    async def reset(self) -> None:
        raise MockAbort("mock: reset requested")


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("peer closed the connection")
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def make_asgi_app(prefix: str = "", *, state: MockState | None = None, **defaults: Any) -> ASGIApp:
    """An ASGI app serving the mock under ``prefix`` (``""`` or like ``"/_demo"``).

    ``state`` shares options/counters/log with a caller; otherwise ``defaults`` (fields of
    :class:`~fastgw.mock.behaviour.MockOptions`) build a fresh one.
    """
    prefix = prefix.rstrip("/")
    mock = state if state is not None else MockState(MockOptions(**defaults))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            body = await _read_body(receive)
        except ConnectionResetError:
            return
        if prefix and path != prefix and not path.startswith(prefix + "/"):
            plan = not_found(method, path)
        else:
            query = scope.get("query_string", b"").decode("latin-1")
            headers = list(scope["headers"])
            plan = plan_request(mock, method, path[len(prefix) :] or "/", query, headers, body)
        sink = _Sink(send)
        if plan.immediate:
            with contextlib.suppress(ConnectionResetError):
                await execute(plan, sink, mock.stats)
            return
        # Delayed or streamed: watch for the client leaving, and cancel the work when it does.
        work = asyncio.ensure_future(execute(plan, sink, mock.stats))
        watch = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():
                work.cancel()
            watch.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await work

    return app
