"""OpenAI-compatible request parsing: validate what the gateway needs, keep the rest as bytes.

One msgspec decode per request validates the fields the gateway acts on (``model``,
``stream``, ``stream_options``, the shape of ``messages``/``prompt``/``input``) into a small
typed view; every other field is skipped at C speed and travels upstream untouched. When
the upstream body must differ (another model name, usage asked for), the body is decoded a
second time into ``dict[str, msgspec.Raw]`` and re-emitted from the raw bytes of each
top-level field, which is close to a memory copy.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import msgspec

from .errors import GatewayError, bad_request

Prompt = str | list[str | int | list[int]]


class MessageView(msgspec.Struct):
    """What the gateway checks of a chat message: an object with a string role."""

    role: str


class StreamOptionsView(msgspec.Struct):
    include_usage: bool | None = None


class _View(msgspec.Struct, kw_only=True):
    model: str
    stream: bool | None = None
    stream_options: StreamOptionsView | None = None
    # the output cap asked for (access rules, budget reservations); read in the same pass
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class ChatView(_View, kw_only=True):
    messages: list[MessageView]


class CompletionsView(_View, kw_only=True):
    prompt: Prompt | None = None


class EmbeddingsView(_View, kw_only=True):
    input: Prompt


class ResponsesView(_View, kw_only=True):
    """OpenAI's Responses API: relayed to OpenAI-shaped targets only; ``input`` is a string
    or a list of input items (their shape is the upstream's to check)."""

    input: str | list[Any] | None = None
    max_output_tokens: int | None = None


class Endpoint:
    """An OpenAI endpoint the gateway proxies: its path below ``/v1`` and its request view."""

    CHAT: ClassVar[Endpoint]
    COMPLETIONS: ClassVar[Endpoint]
    EMBEDDINGS: ClassVar[Endpoint]
    RESPONSES: ClassVar[Endpoint]

    __slots__ = ("decoder", "path", "stream_usage_option")

    def __init__(self, path: str, view: type[_View], stream_usage_option: bool = True) -> None:
        self.path = path
        #: Streams of this endpoint take ``stream_options.include_usage``.
        self.stream_usage_option = stream_usage_option
        self.decoder: msgspec.json.Decoder[_View] = msgspec.json.Decoder(view)

    def __repr__(self) -> str:
        return f"Endpoint({self.path!r})"


Endpoint.CHAT = Endpoint("/chat/completions", ChatView)
Endpoint.COMPLETIONS = Endpoint("/completions", CompletionsView)
Endpoint.EMBEDDINGS = Endpoint("/embeddings", EmbeddingsView)
Endpoint.RESPONSES = Endpoint("/responses", ResponsesView, stream_usage_option=False)

_top_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_options_decoder = msgspec.json.Decoder(dict[str, Any] | None)
_encoder = msgspec.json.Encoder()

_AT_RE = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)
_MISSING_RE = re.compile(r"^Object missing required field `([^`]+)`$")


class ParsedRequest:
    """A validated OpenAI-style request: its bytes and the facts the gateway routes on."""

    __slots__ = ("client_usage", "endpoint", "max_tokens", "model", "raw", "stream")

    def __init__(
        self,
        endpoint: Endpoint,
        raw: bytes,
        model: str,
        stream: bool,
        client_usage: bool,
        max_tokens: int | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.raw = raw
        self.model = model
        self.stream = stream
        self.client_usage = client_usage
        #: The most output tokens the request asks for (``max_completion_tokens``, else
        #: ``max_tokens``; ``max_output_tokens`` for the Responses API); None: not said.
        self.max_tokens = max_tokens

    def upstream_body(self, model: str, inject_usage: bool) -> bytes:
        """The body for an OpenAI-shaped upstream: the client's bytes, or a cheap rebuild
        when the model name changes or ``stream_options.include_usage`` must be asked for."""
        if model == self.model and not inject_usage:
            return self.raw
        fields = _top_decoder.decode(self.raw)
        if model != self.model:
            fields["model"] = msgspec.Raw(_encoder.encode(model))
        if inject_usage:
            raw_opts = fields.get("stream_options")
            opts = dict((_options_decoder.decode(raw_opts) if raw_opts else None) or {})
            opts["include_usage"] = True
            fields["stream_options"] = msgspec.Raw(_encoder.encode(opts))
        return _encoder.encode(fields)

    def with_overrides(self, overrides: dict[str, msgspec.Raw | None]) -> ParsedRequest:
        """This request with top-level fields set (``None``: removed), validated again."""
        fields = _top_decoder.decode(self.raw)
        for key, value in overrides.items():
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = value
        return parse_request(self.endpoint, _encoder.encode(fields))


#: Fields a target's override_params may not touch: they decide routing and the wire shape.
NOT_OVERRIDABLE = frozenset({"model", "messages", "prompt", "input", "stream"})


def _validation_error(exc: msgspec.ValidationError) -> GatewayError:
    m = _AT_RE.match(str(exc))
    assert m is not None  # the pattern matches any text
    text, path = m.group(1), (m.group(2) or "").lstrip(".")
    missing = _MISSING_RE.match(text)
    if missing:
        param = f"{path}.{missing.group(1)}" if path else missing.group(1)
        return bad_request(
            f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
        )
    if not path:
        return bad_request(f"The request body must be a JSON object ({text}).")
    return bad_request(f"Invalid value for '{path}': {text}", param=path)


def parse_request(endpoint: Endpoint, body: bytes) -> ParsedRequest:
    """Validate an OpenAI-style request body; raise GatewayError(400) naming the bad field."""
    try:
        view = endpoint.decoder.decode(body)
    except msgspec.ValidationError as e:
        raise _validation_error(e) from None
    except msgspec.DecodeError:
        if not body:
            raise bad_request("The request body is empty; expected a JSON object.") from None
        raise bad_request(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        ) from None
    if not view.model:
        raise bad_request("'model' must not be empty.", param="model")
    if isinstance(view, ChatView) and not view.messages:
        raise bad_request("'messages' must contain at least one message.", param="messages")
    stream = bool(view.stream)
    if stream and isinstance(view, EmbeddingsView):
        raise bad_request("Embeddings do not support streaming.", param="stream")
    opts = view.stream_options
    client_usage = opts is not None and bool(opts.include_usage)
    cap = view.max_completion_tokens or view.max_tokens
    if isinstance(view, ResponsesView):
        cap = view.max_output_tokens or cap
    return ParsedRequest(endpoint, body, view.model, stream, client_usage, cap)
