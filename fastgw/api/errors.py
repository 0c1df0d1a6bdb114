"""The gateway's error model: every error a client sees has OpenAI's shape.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`` with the right status.
Messages are written by the gateway (never an exception's text passed through blindly), so
they carry no secret and no traceback.
"""

from __future__ import annotations

import msgspec


class ErrorDetail(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


_encoder = msgspec.json.Encoder()


class GatewayError(Exception):
    """An error answered to the client in the OpenAI error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or []
        #: Set for upstream failures: the provider's HTTP status (None: no answer at all).
        self.upstream_status: int | None = None
        #: The upstream failed without answering (connect, timeout, dropped): worth a retry.
        self.transport = False
        #: Seconds the provider asked to wait (its Retry-After), when it said.
        self.retry_after: float | None = None

    def body(self) -> bytes:
        return _encoder.encode(
            ErrorBody(ErrorDetail(self.message, self.type, self.param, self.code))
        )

    def sse_event(self) -> bytes:
        """The error as one SSE event (for failures after a stream has started)."""
        return b"data: " + self.body() + b"\n\n"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)


def not_found(message: str, code: str = "not_found", param: str | None = None) -> GatewayError:
    return GatewayError(404, message, "invalid_request_error", code, param)


def upstream_error(status: int, message: str, code: str) -> GatewayError:
    return GatewayError(status, message, "upstream_error", code)


def timeout_error(message: str, code: str) -> GatewayError:
    return GatewayError(504, message, "timeout_error", code)
