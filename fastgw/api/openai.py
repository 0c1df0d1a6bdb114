"""OpenAI-compatible request parsing: validate what the gateway needs, keep the rest as raw bytes.

The body is decoded once into ``dict[str, msgspec.Raw]``: top-level fields are located but
their values are not turned into Python objects. Only the fields the gateway acts on
(``model``, ``stream``, ``stream_options``, the shape of ``messages``/``prompt``/``input``)
are decoded, into small typed views. Unknown fields travel to the upstream untouched.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import msgspec

from .errors import GatewayError, bad_request


class Endpoint(enum.Enum):
    CHAT = "/chat/completions"
    COMPLETIONS = "/completions"
    EMBEDDINGS = "/embeddings"

    @property
    def path(self) -> str:
        return self.value


class MessageView(msgspec.Struct):
    """What the gateway checks of a chat message: it is an object with a string role."""

    role: str


class StreamOptionsView(msgspec.Struct):
    include_usage: bool | None = None


_top_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_str_decoder = msgspec.json.Decoder(str)
_bool_decoder = msgspec.json.Decoder(bool | None)
_messages_decoder = msgspec.json.Decoder(list[MessageView])
_stream_options_decoder = msgspec.json.Decoder(StreamOptionsView | None)
_any_dict_decoder = msgspec.json.Decoder(dict[str, Any] | None)
_prompt_decoder = msgspec.json.Decoder(str | list[str | int | list[int]])
_encoder = msgspec.json.Encoder()

_PATH_RE = re.compile(r" - at `\$(.*)`$")


class ParsedRequest:
    """A validated OpenAI-style request: the fields, and the facts the gateway routes on."""

    __slots__ = ("client_usage", "endpoint", "fields", "model", "raw", "stream")

    def __init__(
        self,
        endpoint: Endpoint,
        raw: bytes,
        fields: dict[str, msgspec.Raw],
        model: str,
        stream: bool,
        client_usage: bool,
    ) -> None:
        self.endpoint = endpoint
        self.raw = raw
        self.fields = fields
        self.model = model
        self.stream = stream
        self.client_usage = client_usage

    def upstream_body(self, model: str, inject_usage: bool) -> bytes:
        """The body for an OpenAI-shaped upstream: the client's bytes, or a cheap rebuild
        (top-level fields re-emitted from their raw bytes) when the model name changes or
        ``stream_options.include_usage`` has to be asked for."""
        if model == self.model and not inject_usage:
            return self.raw
        fields = dict(self.fields)
        if model != self.model:
            fields["model"] = msgspec.Raw(_encoder.encode(model))
        if inject_usage:
            opts = (
                _any_dict_decoder.decode(fields["stream_options"])
                if ("stream_options" in fields)
                else None
            )
            opts = dict(opts or {})
            opts["include_usage"] = True
            fields["stream_options"] = msgspec.Raw(_encoder.encode(opts))
        return _encoder.encode(fields)


def _field_error(name: str, exc: msgspec.ValidationError) -> GatewayError:
    msg = str(exc)
    m = _PATH_RE.search(msg)
    sub = m.group(1) if m else ""
    base = msg[: m.start()] if m else msg
    param = f"{name}{sub}"
    return bad_request(f"Invalid value for '{param}': {base}", param=param)


def _decode_field(
    decoder: msgspec.json.Decoder[Any], fields: dict[str, msgspec.Raw], name: str
) -> Any:
    try:
        return decoder.decode(fields[name])
    except msgspec.ValidationError as e:
        raise _field_error(name, e) from None


def parse_request(endpoint: Endpoint, body: bytes) -> ParsedRequest:
    """Validate an OpenAI-style request body; raise GatewayError(400) with the bad field."""
    if not body:
        raise bad_request("The request body is empty; expected a JSON object.")
    try:
        fields = _top_decoder.decode(body)
    except msgspec.ValidationError:
        raise bad_request("The request body must be a JSON object.") from None
    except msgspec.DecodeError:
        raise bad_request(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        ) from None
    if "model" not in fields:
        raise bad_request(
            "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    model = _decode_field(_str_decoder, fields, "model")
    if not model:
        raise bad_request("'model' must not be empty.", param="model")
    stream = False
    if "stream" in fields:
        stream = bool(_decode_field(_bool_decoder, fields, "stream"))
    client_usage = False
    if "stream_options" in fields:
        opts = _decode_field(_stream_options_decoder, fields, "stream_options")
        client_usage = bool(opts is not None and opts.include_usage)
    if endpoint is Endpoint.CHAT:
        if "messages" not in fields:
            raise bad_request(
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        messages = _decode_field(_messages_decoder, fields, "messages")
        if not messages:
            raise bad_request("'messages' must contain at least one message.", param="messages")
    elif endpoint is Endpoint.COMPLETIONS:
        if "prompt" in fields:
            _decode_field(_prompt_decoder, fields, "prompt")
    else:
        if stream:
            raise bad_request("Embeddings do not support streaming.", param="stream")
        if "input" not in fields:
            raise bad_request(
                "Missing required parameter: 'input'.",
                param="input",
                code="missing_required_parameter",
            )
        _decode_field(_prompt_decoder, fields, "input")
    return ParsedRequest(endpoint, body, fields, model, stream, client_usage)
