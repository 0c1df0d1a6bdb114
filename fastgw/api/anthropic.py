"""Anthropic Messages ingress: validation, and conversion to and from OpenAI chat completions.

``POST /v1/messages`` accepts Anthropic's Messages API. For Anthropic-kind targets the body
travels untouched; for every other target the request is converted to an OpenAI
chat-completions request here, sent along the gateway's OpenAI path, and the answer (a
``chat.completion`` body or a stream of ``chat.completion.chunk`` events) is converted back.
Everything in this module is pure: no I/O.

:func:`parse_messages` validates only what Anthropic itself would reject (the shape the
gateway routes on), so a pass-through body is never refused for a feature the gateway does
not convert. :func:`to_openai_chat` is strict: what it cannot express for an OpenAI-shaped
target is a 400 naming the field, never a silent mistranslation.

Conversion rules (Anthropic request → OpenAI request):

======================================  ===================================================
Anthropic                               OpenAI chat completions
======================================  ===================================================
``system`` (string or text blocks)      first ``system`` message (one block: a string,
                                        several: text parts)
user / assistant turn, string content   message with the same role and string
text block(s)                           one text block: a string; several: text parts
image block, ``base64`` source          ``image_url`` part with a ``data:<type>;base64,``
                                        URL
image block, ``url`` source             ``image_url`` part with that URL
assistant ``tool_use`` blocks           ``tool_calls`` (``arguments`` = the JSON of
                                        ``input``, byte for byte); text of the turn in
                                        ``content`` (``null`` when none)
user ``tool_result`` blocks             one ``role: "tool"`` message each, before the rest
                                        of the turn (``tool_call_id`` = ``tool_use_id``;
                                        text blocks joined with ``\\n``; ``is_error: true``
                                        prefixes the text with ``"Error: "``)
``tools`` (custom tools)                ``function`` tools: ``input_schema`` →
                                        ``parameters``; ``description``, ``strict`` kept
``tool_choice`` auto / any / none       ``"auto"`` / ``"required"`` / ``"none"``
``tool_choice`` tool                    ``{"type": "function", "function": {"name"}}``
``disable_parallel_tool_use: true``     ``parallel_tool_calls: false``
``max_tokens``                          ``max_tokens``
``stop_sequences``                      ``stop``
``temperature``, ``top_p``              the same
``metadata.user_id``                    ``user``
``stream: true``                        ``stream: true`` and
                                        ``stream_options.include_usage: true`` (Anthropic
                                        streams always report usage)
``top_k``                               dropped: OpenAI has no equivalent
``cache_control`` (anywhere)            dropped: prompt caching markers have no effect on
                                        OpenAI-shaped targets (they cache by themselves)
``service_tier``                        dropped: a capacity choice, not an output change
``tools[].eager_input_streaming``       dropped: only changes how arguments are chunked
``citations`` on text blocks            dropped: history metadata, the text is kept
``thinking`` other than ``disabled``    400 ``unsupported_parameter``
thinking / redacted_thinking,           400 ``unsupported_content`` naming the block
document, search_result, server-tool
blocks, images inside ``tool_result``,
image ``file`` sources
server tools (``tools[].type`` other    400 ``unsupported_parameter``
than ``custom``)
any other top-level field               400 ``unsupported_parameter`` (e.g.
(``output_config``, ``container``, …)   ``output_config``, ``container``, ``mcp_servers``)
======================================  ===================================================

Conversion rules (OpenAI answer → Anthropic answer):

* ``id``: ``msg_`` + the OpenAI completion id (streams: ``msg_`` + the id seed given).
* ``content``: a text block (when the text is not empty), then one ``tool_use`` block per
  tool call (``id`` = the call's id, ``input`` = its parsed ``arguments``). Empty arguments
  mean ``{}``. Arguments that are not a JSON object are an upstream fault: 502 (stream: an
  ``error`` event), never a guessed ``{}``. A ``refusal`` becomes the text block.
* ``stop_reason``: ``stop`` → ``end_turn``, ``length`` → ``max_tokens``, ``tool_calls`` /
  ``function_call`` → ``tool_use``, ``content_filter`` → ``refusal``; ``stop`` with tool
  calls (some servers say so) → ``tool_use``; unknown or missing → ``end_turn``.
  OpenAI does not say which stop sequence matched, so ``stop_sequence`` is always ``null``
  and a stop on a stop sequence reads ``end_turn``.
* ``usage``: ``input_tokens`` = ``prompt_tokens`` − cached, ``output_tokens`` =
  ``completion_tokens``, ``cache_read_input_tokens`` = cached
  (``prompt_tokens_details.cached_tokens``), ``cache_creation_input_tokens`` = 0. No usage
  reported: zeros.
* Streams: OpenAI reports usage only at the end, so ``message_start`` carries
  ``input_tokens: 0`` and the real figures come in ``message_delta.usage``. After an
  ``error`` event the stream is over: :meth:`OpenAIToAnthropicStream.finish` adds nothing.
  ``reasoning_content`` deltas (reasoning models) are not relayed: thinking is never enabled.
  OpenAI streams tool calls one after another; arguments of an earlier call arriving after
  a later one started cannot be expressed (Anthropic blocks close for good): ``error`` event.

Errors have Anthropic's shape ``{"type": "error", "error": {"type", "message"}}``; the type
follows the status as Anthropic documents it: 400 ``invalid_request_error``, 401
``authentication_error``, 402 ``billing_error``, 403 ``permission_error``, 404
``not_found_error``, 408 and 504 ``timeout_error``, 413 ``request_too_large``, 429
``rate_limit_error``, 503 and 529 ``overloaded_error``, other 4xx ``invalid_request_error``,
other 5xx ``api_error``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Final, Literal

import msgspec

from .._core.sse import SSEEvent
from .errors import GatewayError, bad_request, upstream_error

__all__ = [
    "MessagesRequest",
    "OpenAIToAnthropicStream",
    "error_body",
    "error_event",
    "error_type",
    "estimate_input_tokens",
    "from_openai_response",
    "parse_messages",
    "to_openai_chat",
]

_encoder: Final = msgspec.json.Encoder()
_enc = _encoder.encode

# ---------------------------------------------------------------------------------------------
# Request validation: the lenient view (what Anthropic itself requires)
# ---------------------------------------------------------------------------------------------


class _Block(msgspec.Struct):
    """Any content block: only its type is checked here (others pass through to Anthropic)."""

    type: str
    content: msgspec.Raw = msgspec.Raw(b"")


class _Message(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[_Block]


class _Tool(msgspec.Struct):
    name: str | None = None
    type: str | None = None


class _ToolChoiceBase(msgspec.Struct, tag_field="type"):
    disable_parallel_tool_use: bool | None = None


class _ChoiceAuto(_ToolChoiceBase, tag="auto"):
    pass


class _ChoiceAny(_ToolChoiceBase, tag="any"):
    pass


class _ChoiceNone(_ToolChoiceBase, tag="none"):
    pass


class _ChoiceTool(_ToolChoiceBase, tag="tool", kw_only=True):
    name: str


_ToolChoice = _ChoiceAuto | _ChoiceAny | _ChoiceNone | _ChoiceTool


class _Metadata(msgspec.Struct):
    user_id: str | None = None


class _Thinking(msgspec.Struct):
    type: str


class _MessagesView(msgspec.Struct, kw_only=True):
    model: str
    max_tokens: Annotated[int, msgspec.Meta(gt=0)]
    messages: list[_Message]
    system: str | list[_Block] | None = None
    stream: bool | None = None
    tools: list[_Tool] | None = None
    tool_choice: _ToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: _Metadata | None = None
    thinking: _Thinking | None = None


_view_decoder: Final = msgspec.json.Decoder(_MessagesView)
_nested_decoder: Final = msgspec.json.Decoder(str | list[_Block] | None)


class MessagesRequest:
    """A validated Messages request: its bytes and the facts the gateway routes on."""

    __slots__ = ("max_tokens", "model", "raw", "stream", "view")

    def __init__(self, raw: bytes, view: _MessagesView) -> None:
        self.raw = raw
        self.view = view
        self.model = view.model
        self.stream = bool(view.stream)
        self.max_tokens: int | None = view.max_tokens


def _path(msgspec_path: str) -> str:
    return msgspec_path.lstrip("$").lstrip(".")


def _validation_error(exc: msgspec.ValidationError) -> GatewayError:
    text = str(exc)
    text, _, at = text.partition(" - at `")
    path = _path(at.rstrip("`"))
    if text.startswith("Object missing required field `"):
        field = text.split("`")[1]
        param = f"{path}.{field}" if path else field
        return bad_request(
            f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
        )
    if text.startswith("Object contains unknown field `"):
        field = text.split("`")[1]
        param = f"{path}.{field}" if path else field
        return bad_request(
            f"'{param}' is not supported when the model is served by a non-Anthropic provider.",
            param,
            "unsupported_parameter",
        )
    if not path:
        return bad_request(f"The request body must be a JSON object ({text}).")
    return bad_request(f"Invalid value for '{path}': {text}", param=path)


def _decode_error(body: bytes) -> GatewayError:
    if not body:
        return bad_request("The request body is empty; expected a JSON object.")
    return bad_request(
        "We could not parse the JSON body of your request. The body must be valid JSON.",
        code="invalid_json",
    )


def parse_messages(body: bytes) -> MessagesRequest:
    """Validate a Messages request body; raise GatewayError(400) naming the bad field."""
    try:
        view = _view_decoder.decode(body)
    except msgspec.ValidationError as e:
        raise _validation_error(e) from None
    except msgspec.DecodeError:
        raise _decode_error(body) from None
    if not view.model:
        raise bad_request("'model' must not be empty.", param="model")
    if not view.messages:
        raise bad_request("'messages' must contain at least one message.", param="messages")
    if isinstance(view.system, list):
        for i, block in enumerate(view.system):
            if block.type != "text":
                raise bad_request(
                    f"Invalid value for 'system[{i}].type': system blocks must be text blocks.",
                    param=f"system[{i}].type",
                )
    return MessagesRequest(body, view)


# ---------------------------------------------------------------------------------------------
# Conversion to OpenAI: the strict view (what can be expressed for an OpenAI-shaped target)
# ---------------------------------------------------------------------------------------------


class _Text(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class _Base64Source(msgspec.Struct, tag="base64", tag_field="type"):
    media_type: str
    data: str


class _URLSource(msgspec.Struct, tag="url", tag_field="type"):
    url: str


class _Image(msgspec.Struct, tag="image", tag_field="type"):
    source: _Base64Source | _URLSource


class _ToolUse(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: msgspec.Raw


class _ToolResult(msgspec.Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[_Text] = ""
    is_error: bool = False


class _UserTurn(msgspec.Struct, tag="user", tag_field="role"):
    content: str | list[_Text | _Image | _ToolResult]


class _AssistantTurn(msgspec.Struct, tag="assistant", tag_field="role"):
    content: str | list[_Text | _ToolUse]


class _CustomTool(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    input_schema: msgspec.Raw
    description: str | None = None
    type: Literal["custom"] | None = None
    strict: bool | None = None
    cache_control: msgspec.Raw = msgspec.Raw(b"")
    eager_input_streaming: bool | None = None


class _StrictRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str
    max_tokens: int
    messages: list[_UserTurn | _AssistantTurn]
    system: str | list[_Text] | None = None
    stream: bool | None = None
    tools: list[_CustomTool] | None = None
    tool_choice: _ToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: _Metadata | None = None
    # Accepted and dropped (module docstring):
    top_k: int | None = None
    thinking: msgspec.Raw = msgspec.Raw(b"")
    cache_control: msgspec.Raw = msgspec.Raw(b"")
    service_tier: str | None = None
    # The controls of fastgw's own mock upstream, forwarded untouched (as every adapter does).
    mock: msgspec.Raw = msgspec.Raw(b"")


_strict_decoder: Final = msgspec.json.Decoder(_StrictRequest)

#: Block types a user / assistant turn may carry when converted (everything else: 400).
_USER_BLOCKS: Final = frozenset({"text", "image", "tool_result"})
_ASSISTANT_BLOCKS: Final = frozenset({"text", "tool_use"})
_THINKING_OK: Final = frozenset({"disabled"})


def _unsupported_block(kind: str, where: str) -> GatewayError:
    return bad_request(
        f"Content blocks of type '{kind}' ({where}) cannot be converted for a model served by "
        "a non-Anthropic provider.",
        param=where,
        code="unsupported_content",
    )


def _check_convertible(view: _MessagesView) -> None:
    """Refuse, with a precise path, what the lenient view accepted but OpenAI cannot carry."""
    if view.thinking is not None and view.thinking.type not in _THINKING_OK:
        raise bad_request(
            f"'thinking' of type '{view.thinking.type}' is not supported when the model is "
            'served by a non-Anthropic provider; omit it or use {"type": "disabled"}.',
            param="thinking",
            code="unsupported_parameter",
        )
    for i, tool in enumerate(view.tools or ()):
        if tool.type not in (None, "custom"):
            raise bad_request(
                f"Server tools ('{tool.type}' at 'tools[{i}]') are not supported when the "
                "model is served by a non-Anthropic provider.",
                param=f"tools[{i}].type",
                code="unsupported_parameter",
            )
    for i, msg in enumerate(view.messages):
        if isinstance(msg.content, str):
            continue
        allowed = _USER_BLOCKS if msg.role == "user" else _ASSISTANT_BLOCKS
        for j, block in enumerate(msg.content):
            if block.type not in allowed:
                raise _unsupported_block(block.type, f"messages[{i}].content[{j}]")
            if block.type == "tool_result" and len(block.content):
                try:
                    nested = _nested_decoder.decode(block.content)
                except msgspec.ValidationError as e:
                    raise _validation_error(e) from None  # malformed: Anthropic says 400 too
                for k, inner in enumerate(nested if isinstance(nested, list) else ()):
                    if inner.type != "text":
                        raise _unsupported_block(
                            inner.type, f"messages[{i}].content[{j}].content[{k}]"
                        )


def _text_content(blocks: list[_Text]) -> str | list[dict[str, str]]:
    if len(blocks) == 1:
        return blocks[0].text
    return [{"type": "text", "text": b.text} for b in blocks]


def _image_part(block: _Image) -> dict[str, Any]:
    src = block.source
    url = src.url if isinstance(src, _URLSource) else f"data:{src.media_type};base64,{src.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_message(block: _ToolResult) -> dict[str, Any]:
    content = block.content
    text = content if isinstance(content, str) else "\n".join(b.text for b in content)
    if block.is_error:
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _convert_user(turn: _UserTurn, out: list[dict[str, Any]]) -> None:
    if isinstance(turn.content, str):
        out.append({"role": "user", "content": turn.content})
        return
    parts: list[dict[str, Any]] = []
    texts_only = True
    for block in turn.content:
        if isinstance(block, _ToolResult):
            out.append(_tool_result_message(block))
        elif isinstance(block, _Text):
            parts.append({"type": "text", "text": block.text})
        else:
            texts_only = False
            parts.append(_image_part(block))
    if not parts:
        return
    if texts_only and len(parts) == 1:
        out.append({"role": "user", "content": parts[0]["text"]})
    else:
        out.append({"role": "user", "content": parts})


def _convert_assistant(turn: _AssistantTurn, out: list[dict[str, Any]]) -> None:
    if isinstance(turn.content, str):
        out.append({"role": "assistant", "content": turn.content})
        return
    texts: list[_Text] = []
    calls: list[dict[str, Any]] = []
    for block in turn.content:
        if isinstance(block, _Text):
            texts.append(block)
        else:
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": bytes(block.input).decode()},
                }
            )
    msg: dict[str, Any] = {"role": "assistant"}
    msg["content"] = _text_content(texts) if texts else (None if calls else "")
    if calls:
        msg["tool_calls"] = calls
    out.append(msg)


def _tool_choice(choice: _ToolChoice) -> str | dict[str, Any]:
    if isinstance(choice, _ChoiceAuto):
        return "auto"
    if isinstance(choice, _ChoiceAny):
        return "required"
    if isinstance(choice, _ChoiceNone):
        return "none"
    return {"type": "function", "function": {"name": choice.name}}


def to_openai_chat(req: MessagesRequest, model: str | None = None) -> bytes:
    """The OpenAI chat-completions body for ``req`` (module docstring: the rules); raises
    GatewayError(400) for what an OpenAI-shaped target cannot express."""
    _check_convertible(req.view)
    try:
        r = _strict_decoder.decode(req.raw)
    except msgspec.ValidationError as e:
        raise _validation_error(e) from None
    except msgspec.DecodeError:  # parse_messages read it: not reached for its own output
        raise _decode_error(req.raw) from None
    for i, tool in enumerate(r.tools or ()):
        if not bytes(tool.input_schema).startswith(b"{"):
            raise bad_request(
                f"Invalid value for 'tools[{i}].input_schema': expected a JSON object.",
                param=f"tools[{i}].input_schema",
            )
    for i, turn in enumerate(r.messages):
        if isinstance(turn, _AssistantTurn) and not isinstance(turn.content, str):
            for j, block in enumerate(turn.content):
                if isinstance(block, _ToolUse) and not bytes(block.input).startswith(b"{"):
                    raise bad_request(
                        f"Invalid value for 'messages[{i}].content[{j}].input': expected a "
                        "JSON object.",
                        param=f"messages[{i}].content[{j}].input",
                    )

    messages: list[dict[str, Any]] = []
    if isinstance(r.system, str):
        if r.system:
            messages.append({"role": "system", "content": r.system})
    elif r.system:
        messages.append({"role": "system", "content": _text_content(r.system)})
    for turn in r.messages:
        if isinstance(turn, _UserTurn):
            _convert_user(turn, messages)
        else:
            _convert_assistant(turn, messages)

    out: dict[str, Any] = {
        "model": r.model if model is None else model,
        "messages": messages,
        "max_tokens": r.max_tokens,
    }
    if r.tools:
        tools = []
        for t in r.tools:
            fn: dict[str, Any] = {"name": t.name}
            if t.description is not None:
                fn["description"] = t.description
            fn["parameters"] = t.input_schema
            if t.strict is not None:
                fn["strict"] = t.strict
            tools.append({"type": "function", "function": fn})
        out["tools"] = tools
    if r.tool_choice is not None:
        out["tool_choice"] = _tool_choice(r.tool_choice)
        if r.tool_choice.disable_parallel_tool_use:
            out["parallel_tool_calls"] = False
    if r.stop_sequences:
        out["stop"] = r.stop_sequences
    if r.temperature is not None:
        out["temperature"] = r.temperature
    if r.top_p is not None:
        out["top_p"] = r.top_p
    if r.metadata is not None and r.metadata.user_id is not None:
        out["user"] = r.metadata.user_id
    if r.stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if r.mock:
        out["mock"] = r.mock
    return _enc(out)


# ---------------------------------------------------------------------------------------------
# OpenAI answers → Anthropic answers
# ---------------------------------------------------------------------------------------------


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    id: str | None = None
    function: _Function | None = None
    index: int = 0


class _AssistantMessage(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _AssistantMessage | None = None
    finish_reason: str | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None


class _Completion(msgspec.Struct):
    id: str = ""
    choices: list[_Choice] = []
    usage: _Usage | None = None


class _OutText(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class _OutToolUse(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: msgspec.Raw


class _OutUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class _OutMessage(msgspec.Struct, kw_only=True):
    id: str
    type: str = "message"
    role: str = "assistant"
    model: str
    content: list[_OutText | _OutToolUse]
    stop_reason: str
    stop_sequence: None = None
    usage: _OutUsage


_completion_decoder: Final = msgspec.json.Decoder(_Completion)
_object_decoder: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])

_STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_EMPTY_OBJECT: Final = msgspec.Raw(b"{}")


def _stop_reason(finish_reason: str | None, has_tools: bool) -> str:
    reason = _STOP_REASONS.get(finish_reason or "", "end_turn")
    return "tool_use" if has_tools and reason == "end_turn" else reason


def _usage_tuple(u: _Usage) -> tuple[int, int, int, int]:
    prompt = u.prompt_tokens or 0
    completion = u.completion_tokens or 0
    details = u.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    return prompt, completion, u.total_tokens or prompt + completion, cached


def _tool_input(arguments: str | None) -> msgspec.Raw | None:
    """The arguments as a JSON object, or None when they are not one."""
    if not arguments or arguments.isspace():
        return _EMPTY_OBJECT
    data = arguments.encode()
    try:
        _object_decoder.decode(data)
    except msgspec.DecodeError:  # includes ValidationError (valid JSON, not an object)
        return None
    return msgspec.Raw(data.strip())


def _bad_arguments(name: str) -> GatewayError:
    return upstream_error(
        502,
        f"The upstream model called tool '{name}' with arguments that are not a JSON object.",
        "invalid_tool_arguments",
    )


def from_openai_response(body: bytes, model: str) -> bytes:
    """An OpenAI ``chat.completion`` body → the Anthropic ``message`` body (module docstring).

    Raises GatewayError(502) when the body is not a chat completion or a tool call's
    arguments are not a JSON object."""
    try:
        c = _completion_decoder.decode(body)
    except msgspec.DecodeError:
        raise upstream_error(
            502, "The upstream returned a response that is not a chat completion.", "bad_response"
        ) from None
    content: list[_OutText | _OutToolUse] = []
    finish: str | None = None
    if c.choices:
        choice = c.choices[0]
        finish = choice.finish_reason
        msg = choice.message
        if msg is not None:
            text = msg.content or msg.refusal
            if text:
                content.append(_OutText(text))
            if msg.refusal and not msg.content and finish in (None, "stop"):
                finish = "content_filter"
            for n, call in enumerate(msg.tool_calls or ()):
                fn = call.function or _Function()
                name = fn.name or ""
                args = _tool_input(fn.arguments)
                if args is None:
                    raise _bad_arguments(name)
                content.append(_OutToolUse(call.id or f"toolu_{c.id}_{n}", name, args))
    has_tools = any(isinstance(b, _OutToolUse) for b in content)
    prompt, completion, _, cached = _usage_tuple(c.usage) if c.usage else (0, 0, 0, 0)
    out = _OutMessage(
        id=f"msg_{c.id}",
        model=model,
        content=content,
        stop_reason=_stop_reason(finish, has_tools),
        usage=_OutUsage(max(prompt - cached, 0), completion, 0, cached),
    )
    return _enc(out)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
#: Error types of an OpenAI-shaped stream error event that Anthropic also uses, or their
#: nearest Anthropic type; anything else is ``api_error``.
_STREAM_ERROR_TYPES: Final = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "rate_limit_exceeded": "rate_limit_error",
    "insufficient_quota": "rate_limit_error",
    "billing_error": "billing_error",
    "request_too_large": "request_too_large",
    "timeout_error": "timeout_error",
    "overloaded_error": "overloaded_error",
    "api_error": "api_error",
}


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (its documented table)."""
    known = _ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def _error_json(kind: str, message: str) -> bytes:
    return b'{"type":"error","error":{"type":' + _enc(kind) + b',"message":' + _enc(message) + b"}}"


def error_body(err: GatewayError) -> bytes:
    """The Anthropic error body ``{"type":"error","error":{"type","message"}}`` for ``err``."""
    return _error_json(error_type(err.status), err.message)


def error_event(err: GatewayError) -> bytes:
    """``err`` as one Anthropic SSE ``error`` event (for failures after a stream started)."""
    return b"event: error\ndata: " + error_body(err) + b"\n\n"


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


class _DeltaView(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _DeltaView | None = None
    finish_reason: str | None = None
    index: int = 0


class _ErrorView(msgspec.Struct):
    message: str | None = None
    type: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] | None = None
    usage: _Usage | None = None
    error: _ErrorView | None = None


_chunk_decoder: Final = msgspec.json.Decoder(_Chunk)

_DONE: Final = b"[DONE]"
_BLOCK_START: Final = b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,'
_TEXT_START: Final = _BLOCK_START + b'"content_block":{"type":"text","text":""}}\n\n'
_DELTA: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":'
)
_TEXT_DELTA: Final = _DELTA + b'{"type":"text_delta","text":'
_JSON_DELTA: Final = _DELTA + b'{"type":"input_json_delta","partial_json":'
_DELTA_END: Final = b"}}\n\n"
_BLOCK_STOP: Final = (
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
)
_MESSAGE_STOP: Final = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

_NONE: Final = 0
_TEXT: Final = 1
_TOOL: Final = 2


class OpenAIToAnthropicStream:
    """One streamed answer: OpenAI ``chat.completion.chunk`` events in, Anthropic Messages
    stream events out (``message_start``, content blocks, ``message_delta``,
    ``message_stop``). Pure: no I/O."""

    __slots__ = (
        "_args",
        "_failed",
        "_finish",
        "_id",
        "_model",
        "_next",
        "_open",
        "_open_kind",
        "_refused",
        "_started",
        "_tool_blocks",
        "_tool_ids",
        "_tool_name",
        "_used_tools",
        "usage",
    )

    def __init__(self, model: str, message_id: str) -> None:
        self._model = model
        self._id = f"msg_{message_id}"
        #: (prompt, completion, total, cached prompt) tokens, once the upstream reports them.
        self.usage: tuple[int, int, int, int] | None = None
        self._started = False
        self._failed = False
        self._finish: str | None = None
        self._refused = False
        self._next = 0  # index of the next content block
        self._open = -1  # index of the open block
        self._open_kind = _NONE
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool call index → block index
        self._tool_ids: dict[int, str] = {}
        self._tool_name = ""
        self._args: list[str] = []  # argument fragments of the open tool block
        self._used_tools = False

    # -- helpers ---------------------------------------------------------------------------

    def _start(self) -> bytes:
        self._started = True
        return (
            b'event: message_start\ndata: {"type":"message_start","message":{"id":'
            + _enc(self._id)
            + b',"type":"message","role":"assistant","model":'
            + _enc(self._model)
            + b',"content":[],"stop_reason":null,"stop_sequence":null,'
            b'"usage":{"input_tokens":0,"output_tokens":0}}}\n\n'
        )

    def _fail(self, kind: str, message: str) -> bytes:
        self._failed = True
        return b"event: error\ndata: " + _error_json(kind, message) + b"\n\n"

    def _close(self) -> bytes:
        """Stop the open block; a tool block's arguments must have formed a JSON object."""
        kind = self._open_kind
        if kind == _NONE:
            return b""
        out = _BLOCK_STOP % self._open
        self._open = -1
        self._open_kind = _NONE
        if kind == _TOOL:
            args = "".join(self._args)
            self._args.clear()
            if _tool_input(args) is None:
                return self._fail("api_error", _bad_arguments(self._tool_name).message)
        return out

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open_kind != _TEXT:
            out = self._close()
            if self._failed:
                return out
            self._open = self._next
            self._next += 1
            self._open_kind = _TEXT
            out += _TEXT_START % self._open
        return out + (_TEXT_DELTA % self._open) + _enc(text) + _DELTA_END

    def _tool(self, call: _ToolCall) -> bytes:
        out = b""
        fn = call.function
        oi = call.index
        block = self._tool_blocks.get(oi)
        if block is None or (call.id and call.id != self._tool_ids[oi]):
            out = self._close()
            if self._failed:
                return out
            block = self._open = self._next
            self._next += 1
            self._open_kind = _TOOL
            self._used_tools = True
            tool_id = call.id or f"toolu_{self._id[4:]}_{block}"
            name = (fn.name if fn is not None else None) or ""
            self._tool_blocks[oi] = block
            self._tool_ids[oi] = tool_id
            self._tool_name = name
            out += (
                (_BLOCK_START % block)
                + b'"content_block":{"type":"tool_use","id":'
                + _enc(tool_id)
                + b',"name":'
                + _enc(name)
                + b',"input":{}}}\n\n'
            )
        elif block != self._open:
            return out + self._fail(
                "api_error",
                "The upstream interleaved the arguments of several tool calls; the stream "
                "cannot be converted.",
            )
        if fn is not None and fn.arguments:
            self._args.append(fn.arguments)
            out += (_JSON_DELTA % block) + _enc(fn.arguments) + _DELTA_END
        return out

    # -- API -------------------------------------------------------------------------------

    def feed(self, event: SSEEvent) -> bytes:
        """Client bytes for one upstream event: zero or more Anthropic SSE events."""
        data = event.data
        if self._failed or not data or data == _DONE:
            return b""
        try:
            chunk = _chunk_decoder.decode(data)
        except msgspec.DecodeError:
            return self._fail("api_error", "The upstream sent a stream event that is not JSON.")
        if chunk.error is not None:
            err = chunk.error
            kind = _STREAM_ERROR_TYPES.get(err.type or "", "api_error")
            return self._fail(kind, err.message or "The upstream reported an error.")
        out = b"" if self._started else self._start()
        if chunk.choices:
            for choice in chunk.choices:
                if choice.index != 0:
                    continue
                delta = choice.delta
                if delta is not None:
                    if delta.content:
                        out += self._text(delta.content)
                    if delta.refusal:
                        self._refused = True
                        out += self._text(delta.refusal)
                    for call in delta.tool_calls or ():
                        if self._failed:
                            break
                        out += self._tool(call)
                if choice.finish_reason is not None and not self._failed:
                    self._finish = choice.finish_reason
                    out += self._close()
        if chunk.usage is not None:
            self.usage = _usage_tuple(chunk.usage)
        return out

    def finish(self) -> bytes:
        """What is still owed at the end of the upstream stream: the open block's stop,
        ``message_delta`` (stop reason, usage) and ``message_stop``. Nothing after an error."""
        if self._failed:
            return b""
        out = b"" if self._started else self._start()
        out += self._close()
        if self._failed:
            return out
        finish = self._finish
        if self._refused and finish in (None, "stop"):
            finish = "content_filter"
        prompt, completion, _, cached = self.usage or (0, 0, 0, 0)
        out += (
            b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
            + _enc(_stop_reason(finish, self._used_tools))
            + b',"stop_sequence":null},"usage":{"input_tokens":%d,"output_tokens":%d,'
            b'"cache_creation_input_tokens":0,"cache_read_input_tokens":%d}}\n\n'
            % (max(prompt - cached, 0), completion, cached)
        )
        return out + _MESSAGE_STOP


# ---------------------------------------------------------------------------------------------
# count_tokens
# ---------------------------------------------------------------------------------------------

#: Heuristic constants of :func:`estimate_input_tokens`.
CHARS_PER_TOKEN: Final = 4
TOKENS_PER_MESSAGE: Final = 4
TOKENS_PER_IMAGE: Final = 1600  # Anthropic's figure for an image of about 1.15 megapixels
_SKIP_KEYS: Final = frozenset({"type", "id", "tool_use_id", "cache_control", "citations"})

_any_decoder: Final = msgspec.json.Decoder(dict[str, Any])


def _chars(value: Any) -> tuple[int, int]:
    """(characters of text, images) inside a content value."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, list):
        chars = images = 0
        for item in value:
            c, i = _chars(item)
            chars += c
            images += i
        return chars, images
    if isinstance(value, dict):
        kind = value.get("type")
        if kind in ("image", "document"):
            return 0, 1
        if kind in ("tool_use", "server_tool_use"):
            return len(value.get("name") or "") + len(_enc(value.get("input"))), 0
        chars = images = 0
        for key, item in value.items():
            if key not in _SKIP_KEYS:
                c, i = _chars(item)
                chars += c
                images += i
        return chars, images
    return 0, 0


def estimate_input_tokens(req: MessagesRequest) -> int:
    """A heuristic input token count for ``/v1/messages/count_tokens``: one token per
    ``CHARS_PER_TOKEN`` characters of all text (system, messages, tool calls and results,
    the JSON of the tool definitions), plus ``TOKENS_PER_MESSAGE`` per message and
    ``TOKENS_PER_IMAGE`` per image or document. Not a tokenizer: expect ±30 %."""
    body = _any_decoder.decode(req.raw)
    messages = body["messages"]  # parse_messages checked: a non-empty list of objects
    chars, images = _chars([body.get("system"), [m.get("content") for m in messages]])
    chars += sum(len(_enc(tool)) for tool in body.get("tools") or ())
    return (
        math.ceil(chars / CHARS_PER_TOKEN)
        + TOKENS_PER_MESSAGE * len(messages)
        + TOKENS_PER_IMAGE * images
    )
