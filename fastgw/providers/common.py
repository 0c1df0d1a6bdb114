"""What the translating adapters (Anthropic, Gemini, …) share on the OpenAI side: views of the
OpenAI chat request, the ``chat.completion`` / ``chat.completion.chunk`` builders with their SSE
framing, and small helpers for upstream errors and secrets. Pure: no I/O.

Only what means the same to every adapter lives here. The request views are the common core
of what each adapter decodes; an adapter extends them where it reads more (e.g. Gemini's content
parts take audio and files, a function's ``parameters`` is raw JSON to one adapter and a parsed
schema to the other), and each keeps its own top-level request struct: which fields it knows,
drops or rejects is that adapter's parameter rule.
"""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

import msgspec

from ..api.errors import GatewayError, upstream_error
from .base import Usage

__all__ = [
    "DONE",
    "CallFunction",
    "ContentPart",
    "FunctionDef",
    "ImageURL",
    "Message",
    "NamedFunction",
    "OChoice",
    "OFunction",
    "OMessage",
    "OToolCall",
    "OUsage",
    "ResponseFormat",
    "SecretScrubber",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "chunk_end",
    "chunk_head",
    "completion",
    "credentials_rejected",
    "encode",
    "error_text",
    "invalid_stream_event",
    "not_a_response",
    "request_headers",
    "usage_chunk",
    "usage_out",
]

encode = msgspec.json.Encoder().encode

# -- the OpenAI request, as the adapters read it -----------------------------------------------


class ImageURL(msgspec.Struct):
    url: str
    detail: str | None = None


class ContentPart(msgspec.Struct):
    """A content part: text, an image, or (assistant) a refusal."""

    type: str
    text: str | None = None
    image_url: ImageURL | None = None
    refusal: str | None = None


class CallFunction(msgspec.Struct):
    name: str
    arguments: str = ""


class ToolCall(msgspec.Struct):
    id: str
    function: CallFunction
    type: str = "function"


PartT = TypeVar("PartT")


class Message(msgspec.Struct, Generic[PartT], kw_only=True):
    """A chat message whose content parts are ``PartT`` (the adapter's part view)."""

    role: str
    content: str | list[PartT] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    audio: Any = None
    function_call: Any = None


class FunctionDef(msgspec.Struct, kw_only=True):
    """A function tool's definition; each adapter adds ``parameters`` as it reads them."""

    name: str
    description: str | None = None
    strict: bool | None = None


FunctionT = TypeVar("FunctionT")


class Tool(msgspec.Struct, Generic[FunctionT], kw_only=True):
    type: str
    function: FunctionT | None = None


class NamedFunction(msgspec.Struct):
    name: str


class ToolChoice(msgspec.Struct, kw_only=True):
    """A ``tool_choice`` object (naming a function, or a kind the adapter may reject)."""

    type: str
    function: NamedFunction | None = None


class ResponseFormat(msgspec.Struct):
    type: str


# -- chat.completion ---------------------------------------------------------------------------


class OFunction(msgspec.Struct):
    name: str
    arguments: str


class OToolCall(msgspec.Struct):
    id: str
    type: str
    function: OFunction


class OMessage(msgspec.Struct):
    role: str
    content: str | None
    refusal: None = None
    tool_calls: list[OToolCall] | msgspec.UnsetType = msgspec.UNSET


class OChoice(msgspec.Struct):
    index: int
    message: OMessage
    logprobs: None
    finish_reason: str


class OPromptDetails(msgspec.Struct):
    cached_tokens: int


class OCompletionDetails(msgspec.Struct):
    reasoning_tokens: int


class OUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: OPromptDetails
    completion_tokens_details: OCompletionDetails | msgspec.UnsetType = msgspec.UNSET


class _OCompletion(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[OChoice]
    usage: OUsage | msgspec.UnsetType | None = msgspec.UNSET


def usage_out(u: Usage, reasoning_tokens: int | None = None) -> OUsage:
    """OpenAI's ``usage`` object; ``completion_tokens_details`` only when ``reasoning_tokens``
    is given."""
    out = OUsage(u[0], u[1], u[2], OPromptDetails(u[3]))
    if reasoning_tokens is not None:
        out.completion_tokens_details = OCompletionDetails(reasoning_tokens)
    return out


def completion(
    cid: str,
    model: str,
    choices: list[OChoice],
    usage: OUsage | msgspec.UnsetType | None = msgspec.UNSET,
) -> bytes:
    """A ``chat.completion`` body, created now. ``usage``: None is sent as ``null``, UNSET
    leaves the field out."""
    return encode(_OCompletion(cid, "chat.completion", int(time.time()), model, choices, usage))


# -- chat.completion.chunk, framed as SSE ------------------------------------------------------

DONE = b"data: [DONE]\n\n"


def chunk_head(cid: str, created: int, model: str) -> bytes:
    """The constant bytes of a stream's chunks, up to and including ``"choices":[``."""
    return b"".join(
        [
            b'data: {"id":',
            encode(cid),
            b',"object":"chat.completion.chunk","created":',
            b"%d" % created,
            b',"model":',
            encode(model),
            b',"choices":[',
        ]
    )


def chunk_end(client_usage: bool) -> bytes:
    """What closes every chunk after ``choices``: ``"usage":null`` when the client asked for
    stream usage (OpenAI's shape), then the end of the event."""
    return b',"usage":null}\n\n' if client_usage else b"}\n\n"


def usage_chunk(head: bytes, usage: OUsage) -> bytes:
    """The final usage chunk (no choices) for a stream whose :func:`chunk_head` is ``head``."""
    return head + b'],"usage":' + encode(usage) + b"}\n\n"


# -- upstream requests and errors --------------------------------------------------------------


def request_headers(request_id: str, stream: bool) -> dict[str, str]:
    """Per-request headers of an upstream request."""
    if stream:
        return {"x-request-id": request_id, "accept": "text/event-stream"}
    return {"x-request-id": request_id}


class SecretScrubber:
    """For providers that hold an API key (``_secret``): :meth:`scrub` removes it from text
    that came from the upstream."""

    _secret: str

    def scrub(self, text: str) -> str:
        """Remove the provider's secret from text that came from the upstream."""
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "***")
        return text


def error_text(body: bytes, status: int) -> str:
    """A message for an upstream error body that names none: its start, or the status."""
    return body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"


def credentials_rejected(name: str, why: str, message: str) -> GatewayError:
    """The upstream refused the gateway's own key: the client's request is not at fault."""
    return upstream_error(
        502,
        f"Provider '{name}' rejected the gateway's credentials ({why}): {message}",
        "upstream_auth_failed",
    )


def not_a_response(name: str, what: str) -> GatewayError:
    """A successful upstream body that does not decode as ``what``."""
    message = f"Provider '{name}' sent a response that is not {what}."
    return upstream_error(502, message, "upstream_protocol_error")


def invalid_stream_event(name: str) -> bytes:
    """The client's SSE error event for a stream event that does not decode."""
    message = f"Provider '{name}' sent an invalid stream event."
    return upstream_error(502, message, "upstream_protocol_error").sse_event()
