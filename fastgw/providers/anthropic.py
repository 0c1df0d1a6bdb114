"""Anthropic's Messages API behind the OpenAI chat-completions front: pure transforms, no I/O.

Requests
--------
An OpenAI ``/chat/completions`` body becomes a ``POST /messages`` body:

* ``system`` and ``developer`` messages → the top-level ``system`` (a string when there is
  one plain-text system message, else text blocks in order). Anthropic has no system turn
  inside the conversation, so a system message placed between turns is hoisted too.
* ``user`` / ``assistant`` turns keep their order; consecutive turns with the same role are
  merged (Anthropic requires alternation). Content parts: ``text``; ``image_url`` with a
  ``data:`` URL → a base64 image block, with an ``http(s)`` URL → a URL image block (the
  ``detail`` hint has no Anthropic counterpart and is dropped). Other part types → 400.
* assistant ``tool_calls`` → ``tool_use`` blocks (``input`` = the parsed JSON arguments; an
  empty string means ``{}``; anything that is not a JSON object → 400); ``role: tool``
  messages → ``tool_result`` blocks of a user turn (consecutive results share one turn).
  A message's ``name`` has no Anthropic counterpart and is dropped.
* ``tools`` (function tools) → ``{name, description, input_schema}``; ``tool_choice``
  ``auto``/``required``/``none``/named function → ``auto``/``any``/``none``/``tool``;
  ``parallel_tool_calls: false`` → ``disable_parallel_tool_use: true``.
* ``max_completion_tokens`` (else ``max_tokens``) → ``max_tokens``. Anthropic requires it:
  when the client sets neither, the gateway sends :data:`DEFAULT_MAX_TOKENS` (4096).
* ``stop`` → ``stop_sequences``; ``temperature`` (must lie in Anthropic's 0..1: a larger value
  is a 400, never clamped), ``top_p`` and ``stream`` as they are; ``user`` (or
  ``safety_identifier``) → ``metadata.user_id``.

Every other parameter follows one rule: it is **dropped** when it only tunes OpenAI-side
behaviour, or is set to its no-op value, so that dropping it cannot change what the client
gets; it is **rejected** (400, ``code: unsupported_parameter``, ``param``: the field) when
dropping it would change the answer. Nothing is mistranslated silently.

======================================================  =====================================
Parameter                                               Treatment
======================================================  =====================================
``stream_options``                                      used by the gateway (usage chunk)
``store``, ``metadata`` (OpenAI's), ``service_tier``,   dropped: OpenAI-side storage,
``prompt_cache_key``, ``prompt_cache_retention``        tagging, billing and cache routing
``seed``                                                dropped: a best-effort determinism
                                                        hint (OpenAI gives no guarantee)
``n: 1``, ``logprobs: false``, ``top_logprobs: 0``,     dropped: the no-op value
``presence_penalty: 0``, ``frequency_penalty: 0``,
``logit_bias: {}``, ``parallel_tool_calls: true``,
``response_format: {"type": "text"}``,
``modalities: ["text"]``
``n`` > 1                                               rejected (one choice only)
``logprobs: true``, ``top_logprobs`` > 0                rejected (Anthropic has no logprobs)
``presence_penalty``, ``frequency_penalty`` ≠ 0,        rejected (no Anthropic counterpart)
non-empty ``logit_bias``
``response_format`` ``json_object`` / ``json_schema``   rejected (not emulated)
``audio``, ``modalities`` with ``audio``                rejected
``prediction``, ``reasoning_effort``, ``verbosity``,    rejected
``web_search_options``
``functions``, ``function_call`` (legacy)               rejected: use ``tools``
a tool with ``strict: true``, a non-function tool       rejected
``mock``                                                forwarded untouched (the fastgw mock
                                                        upstream's test controls; the real
                                                        API answers 400 for it)
any other field                                         rejected
======================================================  =====================================

Responses
---------
An Anthropic message → one ``chat.completion`` choice: text blocks concatenated into
``message.content`` (``null`` when there are only tool calls), ``tool_use`` blocks →
``message.tool_calls``. ``thinking`` / ``redacted_thinking`` blocks (and any other block
kind) are skipped: OpenAI's chat format has no place for them. ``stop_reason``:
``end_turn``/``stop_sequence``/``pause_turn`` → ``stop``, ``max_tokens`` /
``model_context_window_exceeded`` → ``length``, ``tool_use`` → ``tool_calls``, ``refusal`` →
``content_filter``. Usage: ``prompt_tokens`` = input + cache-read + cache-creation tokens,
``prompt_tokens_details.cached_tokens`` = cache-read tokens.

Streams are translated event by event (:class:`AnthropicStream`): each event is decoded
once into small msgspec view structs, and text deltas are framed from precomputed bytes.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .._core.sse import SSEEvent
from ..api.errors import GatewayError
from ..api.openai import Endpoint, ParsedRequest
from ..config.schema import ProviderConfig
from .base import StreamTranslator, UpstreamRequest, Usage
from .common import (
    DONE,
    ChatMessage,
    ChatRequestView,
    ChoiceChunks,
    ContentPart,
    OChoice,
    OFunction,
    OMessage,
    OToolCall,
    RawFunctionDef,
    SecretScrubber,
    Tool,
    ToolCall,
    ToolChoice,
    bad_request,
    check_assistant_message,
    check_temperature,
    chunk_head,
    completion,
    content_blocks,
    credentials_rejected,
    decode_request,
    error_text,
    function_of,
    invalid_image_url,
    invalid_stream_event,
    missing_tool_call_id,
    not_a_response,
    parse_data_url,
    reject_changing_parameters,
    request_headers,
    text_of,
    tool_arguments,
    tool_schema,
    unsupported_endpoint,
    unsupported_parameter,
    unsupported_role,
    usage_chunk,
    usage_out,
)
from .common import encode as _encode

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "AnthropicProvider", "AnthropicStream"]

#: ``max_tokens`` sent when the client set neither ``max_tokens`` nor ``max_completion_tokens``.
DEFAULT_MAX_TOKENS = 4096
ANTHROPIC_VERSION = "2023-06-01"
_KIND = "anthropic"

# -- the OpenAI request, as far as the translation reads it -----------------------------------


class _ChatRequest(ChatRequestView, kw_only=True, forbid_unknown_fields=True):
    # mapped to ``metadata.user_id`` (so typed, unlike the adapters that drop them)
    user: str | None = None
    safety_identifier: str | None = None


_request_decoder = msgspec.json.Decoder(_ChatRequest)


_bad = bad_request


def _unsupported(param: str, what: str) -> GatewayError:
    return unsupported_parameter(_KIND, param, what)


# -- request translation ----------------------------------------------------------------------


def _check_parameters(req: _ChatRequest) -> None:
    """Reject what cannot be dropped without changing the answer (see the module table)."""
    reject_changing_parameters(req, _KIND)
    check_temperature(req.temperature, _KIND)


def _image_block(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media_type, data = parse_data_url(url, param)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid_image_url(param)


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _content_blocks(
    content: str | list[ContentPart] | None, param: str, assistant: bool
) -> list[dict[str, Any]]:
    return content_blocks(content, param, assistant, _KIND, _text_block, _image_block)


def _tool_use_block(call: ToolCall, param: str) -> dict[str, Any]:
    parsed = tool_arguments(call, param, _KIND)
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": parsed}


def _translate_messages(
    messages: list[ChatMessage],
) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages with strictly alternating roles)."""
    system: list[str] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))

    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        role = m.role
        if role in ("system", "developer"):
            system.extend(t for t in text_of(m.content, param, _KIND) if t)
        elif role == "user":
            add("user", _content_blocks(m.content, param, assistant=False))
        elif role == "assistant":
            check_assistant_message(m, param, _KIND)
            blocks = _content_blocks(m.content, param, assistant=True)
            for k, call in enumerate(m.tool_calls or ()):
                blocks.append(_tool_use_block(call, f"{param}.tool_calls[{k}]"))
            add("assistant", blocks)
        elif role == "tool":
            if not m.tool_call_id:
                raise missing_tool_call_id(param)
            texts = text_of(m.content, param, _KIND)
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
            if isinstance(m.content, list):
                result["content"] = [{"type": "text", "text": t} for t in texts if t]
            else:
                result["content"] = "".join(texts)
            add("user", [result])
        else:
            raise unsupported_role(role, param, _KIND)
    out: list[dict[str, Any]] = []
    for role, blocks in turns:
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            out.append({"role": role, "content": blocks[0]["text"]})
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _translate_tools(tools: list[Tool[RawFunctionDef]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        fn = function_of(tool, i, _KIND)
        schema = tool_schema(fn.parameters)
        entry: dict[str, Any] = {"name": fn.name}
        if fn.description is not None:
            entry["description"] = fn.description
        entry["input_schema"] = schema
        out.append(entry)
    return out


def _translate_tool_choice(choice: str | ToolChoice) -> dict[str, Any]:
    if isinstance(choice, str):
        mapped = {"auto": "auto", "required": "any", "none": "none"}.get(choice)
        if mapped is None:
            raise _bad(
                f"Invalid value for 'tool_choice': {choice!r}.", "tool_choice", "invalid_value"
            )
        return {"type": mapped}
    if choice.type == "function" and choice.function is not None:
        return {"type": "tool", "name": choice.function.name}
    raise _unsupported("tool_choice", f"A tool_choice of type '{choice.type}'")


def build_body(raw: bytes, upstream_model: str) -> dict[str, Any]:
    """The Anthropic Messages request for an OpenAI chat-completions body (raises 400s)."""
    req = decode_request(_request_decoder, raw, _KIND)
    _check_parameters(req)
    system, messages = _translate_messages(req.messages)
    body: dict[str, Any] = {"model": upstream_model}
    if system:
        if len(system) == 1:
            body["system"] = system[0]
        else:
            body["system"] = [{"type": "text", "text": t} for t in system]
    body["messages"] = messages
    if req.max_completion_tokens is not None:
        body["max_tokens"] = req.max_completion_tokens
    elif req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    else:
        body["max_tokens"] = DEFAULT_MAX_TOKENS
    if req.stop is not None:
        stops = [req.stop] if isinstance(req.stop, str) else req.stop
        if stops:
            body["stop_sequences"] = stops
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    user = req.user if req.user is not None else req.safety_identifier
    if user is not None:
        body["metadata"] = {"user_id": user}
    if req.tools:
        body["tools"] = _translate_tools(req.tools)
    choice = _translate_tool_choice(req.tool_choice) if req.tool_choice is not None else None
    if req.parallel_tool_calls is False and req.tools:
        if choice is None:
            choice = {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        body["tool_choice"] = choice
    if req.stream:
        body["stream"] = True
    if req.mock:
        body["mock"] = req.mock
    return body


# -- responses --------------------------------------------------------------------------------


class _AUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _ABlock(msgspec.Struct):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw()


class _AMessage(msgspec.Struct):
    id: str = ""
    model: str = ""
    content: list[_ABlock] = []
    stop_reason: str | None = None
    usage: _AUsage | None = None


_message_decoder = msgspec.json.Decoder(_AMessage)

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _finish_reason(stop_reason: str | None) -> str:
    return _FINISH.get(stop_reason or "end_turn", "stop")


def _usage(input_tokens: int, output: int, created: int, read: int) -> Usage:
    prompt = input_tokens + created + read
    return (prompt, output, prompt + output, read)


def _merge_usage(
    counts: tuple[int, int, int], output: int, u: _AUsage
) -> tuple[tuple[int, int, int], int]:
    """A stream's (input, cache creation, cache read) and output counts updated by an
    event's cumulative ``usage``: the counts it gives replace, the ones it leaves out stay."""
    i, c, r = counts
    return (
        i if u.input_tokens is None else u.input_tokens,
        c if u.cache_creation_input_tokens is None else u.cache_creation_input_tokens,
        r if u.cache_read_input_tokens is None else u.cache_read_input_tokens,
    ), (output if u.output_tokens is None else u.output_tokens)


def _usage_of(u: _AUsage) -> Usage:
    return _usage(
        u.input_tokens or 0,
        u.output_tokens or 0,
        u.cache_creation_input_tokens or 0,
        u.cache_read_input_tokens or 0,
    )


# -- streams ----------------------------------------------------------------------------------


class _SBlock(msgspec.Struct):
    type: str = ""
    text: str | None = None
    id: str | None = None
    name: str | None = None


class _SDelta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _SMessage(msgspec.Struct):
    id: str = ""
    model: str = ""
    usage: _AUsage | None = None


class _SError(msgspec.Struct):
    type: str = "api_error"
    message: str = ""


class _SEvent(msgspec.Struct):
    type: str = ""
    index: int = 0
    delta: _SDelta | None = None
    content_block: _SBlock | None = None
    message: _SMessage | None = None
    usage: _AUsage | None = None
    error: _SError | None = None


_event_decoder = msgspec.json.Decoder(_SEvent)


class AnthropicStream(ChoiceChunks):
    """One streamed Anthropic response → OpenAI ``chat.completion.chunk`` events."""

    __slots__ = ("_error", "_input", "_output", "_provider", "_tools", "final", "usage")

    def __init__(
        self, provider: AnthropicProvider, upstream_model: str, client_usage: bool
    ) -> None:
        self._provider = provider
        self._client_usage = client_usage
        self._created = int(time.time())
        self._tools: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        self._input = (0, 0, 0)  # input, cache creation, cache read tokens
        self._output = 0
        self._error = False
        self.usage: Usage | None = None
        #: A ``message_delta`` gave the final counts (``message_start``'s are provisional).
        self.final = False
        self._frame("chatcmpl-anthropic", upstream_model)

    def _set_usage(self) -> None:
        i, c, r = self._input
        self.usage = _usage(i, self._output, c, r)

    def feed(self, event: SSEEvent) -> bytes:
        data = event.data
        if not data:
            return b""
        try:
            ev = _event_decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return invalid_stream_event(self._provider.name)
        kind = ev.type
        if kind == "content_block_delta":
            d = ev.delta
            if d is None:
                return b""
            if d.text is not None:  # text_delta
                if not d.text:
                    return b""
                return b"".join([self._text_head, _encode(d.text), self._text_tail])
            if d.partial_json is not None:  # input_json_delta
                index = self._tools.get(ev.index)
                if index is None or not d.partial_json:
                    return b""
                return self._chunk(
                    b'{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}'
                    % (index, _encode(d.partial_json))
                )
            return b""  # thinking, signature, citations deltas
        if kind == "content_block_start":
            block = ev.content_block
            if block is None:
                return b""
            if block.type == "tool_use":
                index = len(self._tools)
                self._tools[ev.index] = index
                call = {
                    "index": index,
                    "id": block.id or "",
                    "type": "function",
                    "function": {"name": block.name or "", "arguments": ""},
                }
                return self._chunk(b'{"tool_calls":[' + _encode(call) + b"]}")
            if block.type == "text" and block.text:
                return b"".join([self._text_head, _encode(block.text), self._text_tail])
            return b""
        if kind == "message_start":
            m = ev.message
            if m is None:
                return b""
            self._frame("chatcmpl-" + m.id, m.model or self._model)
            if m.usage is not None:
                u = m.usage
                self._input = (
                    u.input_tokens or 0,
                    u.cache_creation_input_tokens or 0,
                    u.cache_read_input_tokens or 0,
                )
                self._output = u.output_tokens or 0
                self._set_usage()
            return self._chunk(b'{"role":"assistant","content":""}')
        if kind == "message_delta":
            du = ev.usage
            if du is not None:  # cumulative counts; input counts only in newer API versions
                self._input, self._output = _merge_usage(self._input, self._output, du)
                self._set_usage()
                self.final = True
            stop = ev.delta.stop_reason if ev.delta is not None else None
            return self._chunk(b"{}", _finish_reason(stop))
        if kind == "error":
            self._error = True
            err = ev.error if ev.error is not None else _SError()
            return self._provider.error_for(None, err.type, err.message).sse_event()
        return b""  # ping, content_block_stop, message_stop, unknown event types

    def finish(self) -> bytes:
        if self._client_usage and self.usage is not None:
            head = chunk_head(self._id, self._created, self._model)
            return usage_chunk(head, usage_out(self.usage)) + DONE
        return DONE


# -- usage of relayed Messages API answers --------------------------------------------------------


class _UsageView(msgspec.Struct):
    """What ``MessagesUsage`` reads of an event or a message: its usage, wherever it is."""

    type: str = ""
    message: _UsageOnly | None = None
    usage: _AUsage | None = None


class _UsageOnly(msgspec.Struct):
    usage: _AUsage | None = None


_usage_view_decoder = msgspec.json.Decoder(_UsageView)


def message_usage(body: bytes) -> Usage | None:
    """The usage of a whole Messages API answer relayed as it is (``/v1/messages`` to an
    Anthropic target), in the gateway's ``(prompt, completion, total, cached)`` form."""
    try:
        view = _usage_view_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return None if view.usage is None else _usage_of(view.usage)


class MessagesUsage:
    """Follows the usage of a Messages API stream relayed as it is: ``message_start``
    carries the input counts, each ``message_delta`` the cumulative output (and, in newer
    API versions, input) counts. Only events that mention ``"usage"`` are decoded."""

    __slots__ = ("_input", "_output", "final", "usage")

    def __init__(self) -> None:
        self._input = (0, 0, 0)  # input, cache creation, cache read tokens
        self._output = 0
        self.usage: Usage | None = None
        #: A ``message_delta`` gave the final counts (``message_start``'s are provisional).
        self.final = False

    def event(self, data: bytes) -> None:
        if b'"usage"' not in data:
            return
        try:
            view = _usage_view_decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return
        u = view.usage if view.message is None else view.message.usage
        if u is None:
            return
        self._input, self._output = _merge_usage(self._input, self._output, u)
        i, c, r = self._input
        self.usage = _usage(i, self._output, c, r)
        if view.type == "message_delta":
            self.final = True


# -- errors -----------------------------------------------------------------------------------


class _ErrorDetail(msgspec.Struct):
    type: str | None = None
    message: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | str | None = None
    message: str | None = None


_error_decoder = msgspec.json.Decoder(_ErrorBody)

#: Anthropic error type → the HTTP status it comes with (for errors inside a stream).
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicProvider(SecretScrubber):
    """Anthropic's Messages API (``POST /messages``) behind the OpenAI chat format."""

    kind = _KIND
    openai_shaped = False
    default_base_url = "https://api.anthropic.com/v1"

    def __init__(self, name: str, cfg: ProviderConfig) -> None:
        self.name = name
        self.base_url = (cfg.base_url or self.default_base_url).rstrip("/")
        self._secret = cfg.api_key or ""
        headers = {"content-type": "application/json"}
        if cfg.api_key:
            headers["x-api-key"] = cfg.api_key
        headers["anthropic-version"] = ANTHROPIC_VERSION
        headers.update({k.lower(): v for k, v in cfg.headers.items()})
        self.headers = headers

    def build_request(
        self, req: ParsedRequest, upstream_model: str, request_id: str
    ) -> UpstreamRequest:
        if req.endpoint is not Endpoint.CHAT:
            raise unsupported_endpoint(_KIND, req.endpoint.path)
        body = _encode(build_body(req.raw, upstream_model))
        return UpstreamRequest("/messages", request_headers(request_id, req.stream), body, False)

    def transform_response(self, req: ParsedRequest, body: bytes) -> bytes:
        try:
            msg = _message_decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise not_a_response(self.name, "an Anthropic message") from None
        texts: list[str] = []
        calls: list[OToolCall] = []
        for block in msg.content:
            if block.type == "text" and block.text is not None:
                texts.append(block.text)
            elif block.type == "tool_use":
                args = bytes(block.input).decode() if block.input else "{}"
                calls.append(
                    OToolCall(block.id or "", "function", OFunction(block.name or "", args))
                )
        content = "".join(texts) if texts or not calls else None
        message = OMessage("assistant", content)
        if calls:
            message.tool_calls = calls
        usage = usage_out(_usage_of(msg.usage)) if msg.usage is not None else None
        choice = OChoice(0, message, None, _finish_reason(msg.stop_reason))
        return completion("chatcmpl-" + msg.id, msg.model, [choice], usage)

    def new_stream(self, req: ParsedRequest, upstream_model: str) -> StreamTranslator:
        return AnthropicStream(self, upstream_model, req.client_usage)

    def error_for(self, status: int | None, etype: str | None, message: str) -> GatewayError:
        """The client's error for an Anthropic error (``status`` None: inside a stream)."""
        message = self.scrub(message)
        if etype is None or etype not in _TYPE_STATUS:
            etype = {
                400: "invalid_request_error",
                401: "authentication_error",
                403: "permission_error",
                404: "not_found_error",
                413: "request_too_large",
                429: "rate_limit_error",
                503: "overloaded_error",
                529: "overloaded_error",
            }.get(status or 500, "api_error" if (status or 500) >= 500 else "")
        name = self.name
        where = "mid-stream" if status is None else f"(HTTP {status})"
        if status is None:
            status = _TYPE_STATUS.get(etype, 500)
        if etype == "invalid_request_error":
            return GatewayError(400, message, "invalid_request_error")
        if etype == "not_found_error":
            return GatewayError(404, message, "invalid_request_error", "not_found")
        if etype == "request_too_large":
            return GatewayError(413, message, "invalid_request_error", "request_too_large")
        if etype == "rate_limit_error":
            return GatewayError(429, message, "rate_limit_error", "rate_limit_exceeded")
        if etype in ("authentication_error", "permission_error", "billing_error"):
            return credentials_rejected(name, etype, message)
        if etype == "overloaded_error":
            return GatewayError(
                503,
                f"Provider '{name}' is overloaded: {message}",
                "overloaded_error",
                "upstream_overloaded",
            )
        if etype == "timeout_error":
            return GatewayError(
                504,
                f"Provider '{name}' timed out: {message}",
                "timeout_error",
                "upstream_timeout",
            )
        if status in (409, 422):
            return GatewayError(status, message, "invalid_request_error")
        return GatewayError(
            502,
            f"Provider '{name}' failed {where}: {message}",
            "upstream_error",
            "upstream_error",
        )

    def map_error(self, status: int, body: bytes) -> GatewayError:
        etype: str | None = None
        message: str | None = None
        try:
            parsed: _ErrorBody | None = _error_decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            parsed = None
        if parsed is not None:
            if isinstance(parsed.error, _ErrorDetail):
                etype, message = parsed.error.type, parsed.error.message
            elif isinstance(parsed.error, str):
                message = parsed.error
            elif parsed.message:
                message = parsed.message
        if not message:
            message = error_text(body, status)
        return self.error_for(status, etype, message)
