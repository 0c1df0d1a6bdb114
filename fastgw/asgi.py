"""Minimal ASGI type aliases shared by the gateway app and the built-in mock upstream, and the
request-body reader of the gateway's own APIs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .api.errors import GatewayError, bad_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "read_body"]


async def read_body(
    receive: Receive,
    limit: int,
    content_length: int,
    too_large: Callable[[], GatewayError],
    drain: int = 0,
) -> bytes:
    """A request body of at most ``limit`` bytes, else ``too_large()``. Up to ``drain`` bytes
    past the limit are still read (and dropped) first, so the client gets its 413 instead of
    a reset while it is writing; a declared ``content_length`` (-1: none) beyond that is
    refused before reading."""
    if content_length > limit + drain:
        raise too_large()
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body", False) and len(body) <= limit:
        return body  # the common case: one message
    parts = [body]
    size = len(body)
    while msg.get("more_body", False) and size <= limit + drain:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise bad_request("Client disconnected while sending the body.")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
    if size > limit:
        raise too_large()
    return b"".join(parts)
