"""What the translating adapters (Anthropic, Gemini, …) share on the OpenAI side: views of the
OpenAI chat request, the ``chat.completion`` / ``chat.completion.chunk`` builders with their SSE
framing, and small helpers for upstream errors and secrets. Pure: no I/O.

Only what means the same to every adapter lives here. The request views are the common core
of what each adapter decodes; an adapter extends them where it reads more (e.g. Gemini's content
parts take audio and files, a function's ``parameters`` is raw JSON to one adapter and a parsed
schema to the other), and each keeps its own top-level request struct: which fields it knows,
drops or rejects is that adapter's parameter rule. The request checks and content helpers
(``decode_request``, ``reject_changing_parameters``, ``text_of``, ``content_blocks``, …) are
what the adapters with the same rule and message model (Anthropic, Bedrock) share; each
passes its provider kind, which their error messages name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from ..api.errors import GatewayError, upstream_error
from .base import Usage

__all__ = [
    "DONE",
    "CallFunction",
    "ChatMessage",
    "ChatParams",
    "ChoiceChunks",
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
    "RawFunctionDef",
    "ResponseFormat",
    "SecretScrubber",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "bad_request",
    "check_assistant_message",
    "check_temperature",
    "chunk_end",
    "chunk_head",
    "completion",
    "content_blocks",
    "credentials_rejected",
    "decode_request",
    "encode",
    "error_text",
    "function_of",
    "invalid_image_url",
    "invalid_stream_event",
    "missing_tool_call_id",
    "not_a_response",
    "parse_data_url",
    "reject_changing_parameters",
    "request_headers",
    "text_of",
    "tool_arguments",
    "tool_schema",
    "unsupported_endpoint",
    "unsupported_parameter",
    "unsupported_role",
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


class ChatMessage(Message[ContentPart], kw_only=True):
    """A message as the Anthropic and Bedrock adapters read it (``name`` and an assistant's
    ``refusal`` are accepted and not sent on)."""

    name: str | None = None
    refusal: str | None = None


class FunctionDef(msgspec.Struct, kw_only=True):
    """A function tool's definition; each adapter adds ``parameters`` as it reads them."""

    name: str
    description: str | None = None
    strict: bool | None = None


class RawFunctionDef(FunctionDef, kw_only=True):
    """A function definition whose ``parameters`` schema is passed on as raw JSON."""

    parameters: msgspec.Raw = msgspec.Raw()


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


class ChatRequestView(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An OpenAI chat request as far as the adapters with a fixed parameter rule (Anthropic,
    Bedrock) read it: every field OpenAI defines is named, so an unknown one is a 400. The
    groups follow their module tables; an adapter that uses a dropped field re-types it."""

    model: str
    messages: list[ChatMessage]
    stream: bool | None = None
    stream_options: Any = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[Tool[RawFunctionDef]] | None = None
    tool_choice: str | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # dropped (OpenAI-side only)
    store: Any = None
    metadata: Any = None
    service_tier: Any = None
    prompt_cache_key: Any = None
    prompt_cache_retention: Any = None
    seed: Any = None
    user: Any = None
    safety_identifier: Any = None
    # accepted only at their no-op value
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    modalities: list[str] | None = None
    # rejected when set
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    functions: Any = None
    function_call: Any = None
    # the mock upstream's controls: forwarded
    mock: msgspec.Raw = msgspec.Raw()


# -- request checks of the adapters with a fixed parameter rule (Anthropic, Bedrock) ------------

T = TypeVar("T")
_args_decoder = msgspec.json.Decoder(dict[str, Any])
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `([^`]+)`$")
_AT_RE = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    """A 400 ``invalid_request_error``."""
    return GatewayError(400, message, "invalid_request_error", code, param)


def unsupported_parameter(kind: str, param: str, what: str) -> GatewayError:
    """A 400 ``unsupported_parameter``: ``what`` cannot be sent to provider kind ``kind``."""
    return bad_request(
        f"{what} is not supported by provider kind '{kind}' (parameter '{param}').",
        param,
        "unsupported_parameter",
    )


def unsupported_endpoint(kind: str, path: str) -> GatewayError:
    """A 400 ``unsupported_endpoint`` for an endpoint that provider kind ``kind`` lacks."""
    return GatewayError(
        400,
        f"The endpoint '{path}' is not supported by provider kind '{kind}'.",
        "invalid_request_error",
        "unsupported_endpoint",
    )


def decode_request(decoder: msgspec.json.Decoder[T], raw: bytes, kind: str) -> T:
    """Decode a request body with an adapter's request ``decoder`` (which forbids unknown
    fields): an unknown top-level field is an unsupported parameter, anything else a 400
    naming where it is."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        m = _AT_RE.match(str(exc))
        assert m is not None  # the pattern matches any text
        text, path = m.group(1), (m.group(2) or "").lstrip(".")
        unknown = _UNKNOWN_RE.match(text)
        if unknown and not path:
            name = unknown.group(1)
            raise unsupported_parameter(kind, name, f"The parameter '{name}'") from None
        raise bad_request(f"Invalid value for '{path}': {text}", path or None) from None
    except msgspec.DecodeError:
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from None


class ChatParams(Protocol):
    """The request fields :func:`reject_changing_parameters` reads (the rest by name)."""

    n: int | None
    logprobs: bool | None
    top_logprobs: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    logit_bias: dict[str, Any] | None
    response_format: ResponseFormat | None
    audio: Any
    modalities: list[str] | None


def reject_changing_parameters(req: ChatParams, kind: str) -> None:
    """Reject the OpenAI parameters that neither Anthropic nor Converse can honour and that
    cannot be dropped without changing the answer."""
    if req.n is not None and req.n > 1:
        raise unsupported_parameter(kind, "n", "More than one choice (n > 1)")
    if req.logprobs:
        raise unsupported_parameter(kind, "logprobs", "Log probabilities")
    if req.top_logprobs:
        raise unsupported_parameter(kind, "top_logprobs", "Log probabilities")
    if req.presence_penalty:
        raise unsupported_parameter(kind, "presence_penalty", "A non-zero presence_penalty")
    if req.frequency_penalty:
        raise unsupported_parameter(kind, "frequency_penalty", "A non-zero frequency_penalty")
    if req.logit_bias:
        raise unsupported_parameter(kind, "logit_bias", "logit_bias")
    if req.response_format is not None and req.response_format.type != "text":
        raise unsupported_parameter(
            kind, "response_format", f"response_format of type '{req.response_format.type}'"
        )
    if req.audio is not None:
        raise unsupported_parameter(kind, "audio", "Audio output")
    if req.modalities is not None and any(m != "text" for m in req.modalities):
        raise unsupported_parameter(kind, "modalities", "An output modality other than text")
    for field in ("prediction", "reasoning_effort", "verbosity", "web_search_options"):
        if getattr(req, field) is not None:
            raise unsupported_parameter(kind, field, f"'{field}'")
    for field in ("functions", "function_call"):
        if getattr(req, field) is not None:
            raise unsupported_parameter(
                kind, field, f"The legacy '{field}' parameter (use 'tools')"
            )


def check_temperature(t: float | None, kind: str) -> None:
    """A ``temperature`` outside 0..1 is a 400: it is never rescaled."""
    if t is not None and not 0.0 <= t <= 1.0:
        raise bad_request(
            f"'temperature' must be between 0 and 1 for provider kind '{kind}' (got {t:g}); "
            "OpenAI's range is 0 to 2, and the gateway does not rescale it.",
            "temperature",
            "unsupported_value",
        )


def text_of(content: str | list[ContentPart] | None, param: str, kind: str) -> list[str]:
    """Text pieces of a message that may only hold text (system, developer, tool)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise bad_request(
                f"Content parts of type '{part.type}' are not supported here by provider kind "
                f"'{kind}'; only text is.",
                f"{param}.content[{j}]",
                "unsupported_content",
            )
        out.append(part.text)
    return out


def parse_data_url(url: str, param: str) -> tuple[str, str]:
    """``data:<media type>;base64,<data>`` → (media type, data); anything else is a 400."""
    header, sep, data = url[5:].partition(",")
    media_type, _, params = header.partition(";")
    if not sep or "base64" not in params.split(";") or not media_type:
        raise bad_request(
            "An image data URL must look like 'data:<media type>;base64,<data>'.",
            param,
            "invalid_image_url",
        )
    return media_type, data


def content_blocks(
    content: str | list[ContentPart] | None,
    param: str,
    assistant: bool,
    kind: str,
    text_block: Callable[[str], dict[str, Any]],
    image_block: Callable[[str, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """A user or assistant message's content as the provider's blocks: ``text_block(text)``
    for text (and an assistant's refusal; empty texts are left out), ``image_block(url,
    param)`` for a user's image; any other part is a 400."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text_block(content)] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        ptype = part.type
        if ptype == "text" and part.text is not None:
            if part.text:
                blocks.append(text_block(part.text))
        elif ptype == "refusal" and assistant and part.refusal is not None:
            if part.refusal:
                blocks.append(text_block(part.refusal))
        elif ptype == "image_url" and part.image_url is not None and not assistant:
            blocks.append(image_block(part.image_url.url, f"{param}.content[{j}].image_url.url"))
        else:
            raise bad_request(
                f"Content parts of type '{ptype}' are not supported by provider kind '{kind}'.",
                f"{param}.content[{j}]",
                "unsupported_content",
            )
    return blocks


def invalid_image_url(param: str) -> GatewayError:
    """An image URL that is neither http(s) nor a data URL."""
    return bad_request(
        "An image URL must be an http(s) URL or a base64 data URL.", param, "invalid_image_url"
    )


def tool_arguments(call: ToolCall, param: str, kind: str) -> dict[str, Any]:
    """A tool call's arguments parsed (they must be a JSON object; blank means ``{}``)."""
    args = call.function.arguments
    if not args.strip():
        return {}
    try:
        return _args_decoder.decode(args)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise bad_request(
            f"The arguments of tool call '{call.id}' must be a JSON object; provider kind "
            f"'{kind}' needs them parsed.",
            f"{param}.function.arguments",
            "invalid_tool_arguments",
        ) from None


def check_assistant_message(m: Message[Any], param: str, kind: str) -> None:
    """Reject what an assistant message may carry but the provider cannot replay."""
    if m.audio is not None:
        raise unsupported_parameter(kind, f"{param}.audio", "A reference to earlier audio output")
    if m.function_call is not None:
        raise unsupported_parameter(
            kind, f"{param}.function_call", "The legacy 'function_call' (use 'tool_calls')"
        )


def missing_tool_call_id(param: str) -> GatewayError:
    return bad_request(
        "A 'tool' message needs 'tool_call_id'.",
        f"{param}.tool_call_id",
        "missing_required_parameter",
    )


def unsupported_role(role: str, param: str, kind: str) -> GatewayError:
    return bad_request(
        f"Messages with role '{role}' are not supported by provider kind '{kind}'.",
        f"{param}.role",
        "unsupported_parameter",
    )


FunctionDefT = TypeVar("FunctionDefT", bound=FunctionDef)


def function_of(tool: Tool[FunctionDefT], i: int, kind: str) -> FunctionDefT:
    """The function of ``tools[i]``: other tool types and ``strict: true`` are rejected."""
    fn = tool.function
    if tool.type != "function" or fn is None:
        raise unsupported_parameter(kind, f"tools[{i}]", f"A tool of type '{tool.type}'")
    if fn.strict:
        raise unsupported_parameter(
            kind, f"tools[{i}].function.strict", "Strict schema adherence ('strict': true)"
        )
    return fn


def tool_schema(parameters: msgspec.Raw) -> Any:
    """A function's JSON-schema ``parameters``, an empty object schema when absent."""
    if not parameters or bytes(parameters) == b"null":
        return {"type": "object", "properties": {}}
    return parameters


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


class ChoiceChunks:
    """The chunk framing of a stream with one choice: :meth:`_frame` precomputes the constant
    bytes around each delta, :meth:`_chunk` writes one chunk. The class that mixes it in
    sets ``_created`` and ``_client_usage`` first."""

    __slots__ = (
        "_client_usage",
        "_created",
        "_head",
        "_id",
        "_model",
        "_tail",
        "_text_head",
        "_text_tail",
    )

    _client_usage: bool
    _created: int

    def _frame(self, cid: str, model: str) -> None:
        """Precompute the constant bytes around each chunk's delta."""
        self._id = cid
        self._model = model
        self._head = chunk_head(cid, self._created, model) + b'{"index":0,"delta":'
        self._tail = b',"logprobs":null,"finish_reason":null}]' + chunk_end(self._client_usage)
        self._text_head = self._head + b'{"content":'
        self._text_tail = b"}" + self._tail

    def _chunk(self, delta: bytes, finish: str | None = None) -> bytes:
        if finish is None:
            return self._head + delta + self._tail
        return b"".join(
            [
                self._head,
                delta,
                b',"logprobs":null,"finish_reason":',
                encode(finish),
                b"}]",
                chunk_end(self._client_usage),
            ]
        )


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
