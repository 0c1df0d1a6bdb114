"""One attempt against one target: send, wait for the response head, map transport failures.

Timeouts (per target, from config): ``connect`` (pool wait + TCP/TLS set-up), ``first_byte``
(response head, and the longest silence between two chunks of a stream) and ``total``.
Every failure becomes a GatewayError written by the gateway: no exception text from the
network stack (which could carry URLs or headers) reaches the client.
"""

from __future__ import annotations

import aiohttp

from ..api.errors import GatewayError, timeout_error, upstream_error
from .router import Target


def _seconds(x: float) -> str:
    return f"{x:g}s"


def transport_error(exc: BaseException, target: Target, phase: str) -> GatewayError:
    """Map an aiohttp/asyncio failure to a GatewayError. ``phase``: "response" (a
    non-streamed exchange), "head" (a stream's response head) or "stream" (mid-stream)."""
    name = target.provider.name
    t = target.timeouts
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return timeout_error(
            f"Timed out connecting to provider '{name}' (connect timeout {_seconds(t.connect)}).",
            "upstream_connect_timeout",
        )
    if isinstance(exc, aiohttp.SocketTimeoutError):
        what = "went silent mid-stream" if phase == "stream" else "sent nothing"
        return timeout_error(
            f"Provider '{name}' {what} for {_seconds(t.first_byte)} (first_byte timeout).",
            "upstream_first_byte_timeout",
        )
    if isinstance(exc, TimeoutError) and phase == "response" and t.first_byte < t.total:
        return timeout_error(  # non-stream deadline = min(first_byte, total): it was first_byte
            f"Provider '{name}' sent no response within {_seconds(t.first_byte)} "
            "(first_byte timeout).",
            "upstream_first_byte_timeout",
        )
    if isinstance(exc, TimeoutError):
        return timeout_error(
            f"Provider '{name}' did not finish within the total timeout of {_seconds(t.total)}.",
            "upstream_total_timeout",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return upstream_error(
            502,
            f"Could not connect to provider '{name}' at {exc.host}:{exc.port}: {reason}.",
            "upstream_connect_failed",
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        when = "mid-response" if phase == "stream" else "before responding"
        return upstream_error(
            502, f"Provider '{name}' closed the connection {when}.", "upstream_disconnected"
        )
    return upstream_error(
        502, f"Request to provider '{name}' failed ({type(exc).__name__}).", "upstream_error"
    )


def error_response(target: Target, resp: aiohttp.ClientResponse, body: bytes) -> GatewayError:
    """An upstream's error status and body → the client's error (Retry-After kept)."""
    err = target.provider.map_error(resp.status, body)
    retry_after = resp.headers.get("retry-after")
    if retry_after and err.status in (429, 503):
        err.headers.append((b"retry-after", retry_after.encode("latin-1")))
    err.headers.append((b"x-fastgw-upstream-status", str(resp.status).encode()))
    return err
