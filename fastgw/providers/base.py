"""The provider interface (DESIGN §4): pure transforms, no I/O, testable without a network."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .._core.sse import SSEEvent
from ..api.errors import GatewayError
from ..api.openai import ParsedRequest

#: (prompt_tokens, completion_tokens, total_tokens, cached_prompt_tokens)
Usage = tuple[int, int, int, int]


class UpstreamRequest:
    """What the upstream layer sends: a path below the provider's ``base_url``, per-request
    headers (added to the provider's ``headers``) and body bytes."""

    __slots__ = ("body", "headers", "inject_usage", "path")

    def __init__(self, path: str, headers: dict[str, str], body: bytes, inject_usage: bool) -> None:
        self.path = path
        self.headers = headers
        self.body = body
        #: The gateway asked the upstream for stream usage the client did not ask for:
        #: the relay removes that extra chunk.
        self.inject_usage = inject_usage


class StreamTranslator(Protocol):
    """One stream of a provider whose events are not OpenAI-shaped: turns the upstream's SSE
    events into OpenAI ``chat.completion.chunk`` events. Pure: no I/O."""

    #: Usage reported by the upstream so far (None until it reports any).
    usage: Usage | None

    def feed(self, event: SSEEvent) -> bytes:
        """Client bytes for one upstream event: zero or more complete ``data: {...}\n\n``
        events. An upstream error event becomes ``data: {"error": {...}}\n\n``."""
        ...

    def finish(self) -> bytes:
        """Client bytes at the end of the upstream stream: what is still owed (the usage
        chunk when the client asked for it) and ``data: [DONE]\n\n``."""
        ...


class Provider(Protocol):
    name: str
    kind: str
    #: Responses and stream events already have OpenAI's shape: relay bytes untouched.
    openai_shaped: bool
    #: The API root requests go to, and headers sent with every request (auth, extras).
    base_url: str
    headers: dict[str, str]

    def build_request(
        self, req: ParsedRequest, upstream_model: str, request_id: str
    ) -> UpstreamRequest:
        """The upstream request; raises GatewayError(400) for what the provider cannot do."""
        ...

    def transform_response(self, req: ParsedRequest, body: bytes) -> bytes:
        """A successful non-streamed upstream body → the OpenAI response body for ``req``."""
        ...

    def new_stream(self, req: ParsedRequest, upstream_model: str) -> StreamTranslator:
        """A translator for one streamed response to ``req`` (unused when openai_shaped)."""
        ...

    def map_error(self, status: int, body: bytes) -> GatewayError: ...


class ByteStreamTranslator(Protocol):
    """One stream of a provider whose stream is not SSE (e.g. AWS event-stream framing):
    upstream bytes in, OpenAI ``chat.completion.chunk`` SSE bytes out."""

    usage: Usage | None

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes:
        """At the upstream's end: what is still owed, ending with ``data: [DONE]``."""
        ...


@runtime_checkable
class ByteStreamProvider(Provider, Protocol):
    """A provider that frames its streams itself (not SSE)."""

    #: The content type of its streamed answers (anything else is an error).
    stream_content_type: bytes

    def new_byte_stream(self, req: ParsedRequest, upstream_model: str) -> ByteStreamTranslator: ...
