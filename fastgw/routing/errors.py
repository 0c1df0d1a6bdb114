"""Upstream failures → the client's errors.

Every failure becomes a GatewayError written by the gateway: no exception text from the
network stack (which could carry URLs or headers) reaches the client.
"""

from __future__ import annotations

from ..api.errors import GatewayError, timeout_error, upstream_error
from ..upstream import Response, Timeouts, UpstreamError
from .router import Target


def _seconds(x: float) -> str:
    return f"{x:g}s"


def transport_error(
    exc: UpstreamError, target: Target, timeouts: Timeouts | None = None
) -> GatewayError:
    """Map an UpstreamError to the error the client sees (marked ``transport``);
    ``timeouts``: those the attempt ran with, when not the target's own."""
    err = _transport_error(exc, target, timeouts or target.timeouts)
    err.transport = True
    return err


def _transport_error(exc: UpstreamError, target: Target, t: Timeouts) -> GatewayError:
    name = target.provider.name
    kind = exc.kind
    if kind == "connect_timeout":
        return timeout_error(
            f"Timed out connecting to provider '{name}' (connect timeout {_seconds(t.connect)}).",
            "upstream_connect_timeout",
        )
    if kind == "first_byte_timeout":
        return timeout_error(
            f"Provider '{name}' sent no response within {_seconds(t.first_byte)} "
            "(first_byte timeout).",
            "upstream_first_byte_timeout",
        )
    if kind == "first_token_timeout":
        return timeout_error(
            f"Provider '{name}' started the stream but sent no token within "
            f"{_seconds(t.first_token or 0.0)} (first_token timeout).",
            "upstream_first_token_timeout",
        )
    if kind == "idle_timeout":
        return timeout_error(
            f"Provider '{name}' went silent mid-stream for {_seconds(t.first_byte)} "
            "(first_byte timeout).",
            "upstream_first_byte_timeout",
        )
    if kind == "total_timeout":
        return timeout_error(
            f"Provider '{name}' did not finish within the total timeout of {_seconds(t.total)}.",
            "upstream_total_timeout",
        )
    if kind == "connect_failed":
        return upstream_error(
            502,
            f"Could not connect to provider '{name}' at {exc.detail}.",
            "upstream_connect_failed",
        )
    if kind == "disconnected":
        return upstream_error(
            502, f"Provider '{name}' closed the connection {exc.detail}.", "upstream_disconnected"
        )
    return upstream_error(
        502, f"Provider '{name}' sent an invalid HTTP response.", "upstream_protocol_error"
    )


def error_response(target: Target, resp: Response) -> GatewayError:
    """An upstream's error status and body → the client's error (Retry-After kept)."""
    err = target.provider.map_error(resp.status, resp.body)
    retry_after = resp.header(b"retry-after")
    if retry_after and err.status in (429, 503):
        err.headers.append((b"retry-after", retry_after))
    err.headers.append((b"x-fastgw-upstream-status", b"%d" % resp.status))
    err.upstream_status = resp.status
    if retry_after and retry_after.isdigit():
        err.retry_after = float(retry_after)
    return err
