"""Amazon Bedrock's Converse API behind the OpenAI chat-completions front: pure transforms.

Configuration
-------------
``kind: bedrock``. The region is ``aws_region``, else the environment's ``AWS_REGION`` /
``AWS_DEFAULT_REGION`` (read when the gateway starts); ``base_url`` defaults to
``https://bedrock-runtime.<region>.amazonaws.com``. Credentials are ``aws_access_key_id`` /
``aws_secret_access_key`` (and ``aws_session_token``) from the provider's configuration, else
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``) from the
environment; a session token from the environment is only used with the environment's keys.
A missing region or key is a configuration error. Every request is signed with AWS
Signature Version 4 (:mod:`fastgw.providers.sigv4`, service ``bedrock``): ``host``,
``content-type``, ``x-amz-date`` and ``x-amz-security-token`` are signed.

Requests
--------
An OpenAI ``/chat/completions`` body becomes ``POST /model/<model id>/converse`` (or
``/converse-stream``); the model id is percent-encoded as one path segment (``:`` → ``%3A``,
an ARN's ``/`` → ``%2F``). Other endpoints are a 400 ``unsupported_endpoint``.

* ``system`` and ``developer`` messages (text only) → the top-level ``system`` list of
  ``{text}`` blocks, in order, wherever they stand in the conversation.
* ``user`` / ``assistant`` turns keep their order; consecutive turns with the same role are
  merged (Converse requires alternation). Content parts: ``text`` → ``{text}`` (empty texts
  are left out: Bedrock refuses blank text blocks); ``image_url`` with a base64 ``data:`` URL
  of a PNG, JPEG, GIF or WebP image → ``{image: {format, source: {bytes}}}``. An ``http(s)``
  image URL is a 400: Bedrock takes image bytes only and the gateway does not fetch URLs.
  Other part types (audio, files) → 400.
* assistant ``tool_calls`` → ``{toolUse: {toolUseId, name, input}}`` (``input`` = the parsed
  JSON arguments, which must be an object; an empty string means ``{}``); ``role: tool``
  messages → ``{toolResult: {toolUseId, content: [{text}]}}`` blocks of a user turn. The
  tool's output is sent as text, as OpenAI clients produce it (no ``status``: OpenAI has no
  way to mark a tool result as failed).
* ``tools`` (function tools) → ``toolConfig.tools: [{toolSpec: {name, description,
  inputSchema: {json: <parameters>}}}]``; ``tool_choice`` ``auto`` / ``required`` / a named
  function → ``toolConfig.toolChoice`` ``{auto: {}}`` / ``{any: {}}`` / ``{tool: {name}}``.
  Converse has no ``none``: ``tool_choice: "none"`` sends no ``toolConfig`` at all, so the
  model cannot call a tool; when the conversation already holds tool calls or results
  Bedrock requires ``toolConfig``, and ``none`` is then a 400 ``unsupported_parameter``.
* ``max_completion_tokens`` (else ``max_tokens``) → ``inferenceConfig.maxTokens`` (left out
  when neither is set: the model's default applies); ``temperature`` (Converse's range is
  0..1: a larger value is a 400, never rescaled), ``top_p`` → ``topP``, ``stop`` →
  ``stopSequences``.

Every other parameter follows the rule of the other native adapters: it is **dropped** when
it only tunes OpenAI-side behaviour, or is set to its no-op value, so that dropping it
cannot change what the client gets; it is **rejected** (400, ``code: unsupported_parameter``,
``param``: the field) when dropping it would change the answer.

======================================================  =====================================
Parameter                                               Treatment
======================================================  =====================================
``stream_options``                                      used by the gateway (usage chunk)
``store``, ``metadata`` (OpenAI's), ``service_tier``,   dropped: OpenAI-side storage,
``prompt_cache_key``, ``prompt_cache_retention``,       tagging, billing and cache routing
``user``, ``safety_identifier``
``seed``                                                dropped: a best-effort determinism
                                                        hint (OpenAI gives no guarantee)
``n: 1``, ``logprobs: false``, ``top_logprobs: 0``,     dropped: the no-op value
``presence_penalty: 0``, ``frequency_penalty: 0``,
``logit_bias: {}``, ``parallel_tool_calls: true``,
``response_format: {"type": "text"}``,
``modalities: ["text"]``
``parallel_tool_calls: false`` without ``tools``        dropped: no-op
``parallel_tool_calls: false`` with ``tools``           rejected (Converse cannot forbid it)
``n`` > 1                                               rejected (one choice only)
``logprobs: true``, ``top_logprobs`` > 0                rejected (Converse has no logprobs)
``presence_penalty``, ``frequency_penalty`` ≠ 0,        rejected (no Converse counterpart)
non-empty ``logit_bias``
``response_format`` ``json_object`` / ``json_schema``   rejected (not emulated)
``audio``, ``modalities`` with ``audio``                rejected
``prediction``, ``reasoning_effort``, ``verbosity``,    rejected (model-specific fields are
``web_search_options``                                  not guessed)
``functions``, ``function_call`` (legacy)               rejected: use ``tools``
a tool with ``strict: true``, a non-function tool       rejected
``tool_choice: "none"`` with tool blocks in history     rejected (see above)
``mock``                                                forwarded untouched (the fastgw mock
                                                        upstream's test controls; the real
                                                        API answers 400 for it)
any other field                                         rejected
======================================================  =====================================

Responses
---------
Converse's ``output.message`` → one ``chat.completion`` choice: text blocks concatenated into
``message.content`` (``null`` when there are only tool calls), ``toolUse`` blocks →
``message.tool_calls``; reasoning and other blocks are skipped (OpenAI's chat format has no
place for them). ``stopReason``: ``end_turn`` / ``stop_sequence`` → ``stop``,
``max_tokens`` / ``model_context_window_exceeded`` → ``length``, ``tool_use`` →
``tool_calls``, ``content_filtered`` / ``guardrail_intervened`` → ``content_filter``. Usage:
``prompt_tokens`` = ``inputTokens`` + cache-read + cache-write tokens, ``completion_tokens``
= ``outputTokens``, ``cached_tokens`` = ``cacheReadInputTokens``. Converse answers carry no
id and no model name: the id is generated, the model is the one the client asked for.

Streams
-------
``ConverseStream`` answers in AWS's binary event-stream framing
(``application/vnd.amazon.eventstream``), not SSE. :class:`BedrockStream` takes the raw
upstream bytes, decodes the frames (:mod:`fastgw._core.eventstream`) and writes OpenAI
``chat.completion.chunk`` SSE events: ``messageStart`` → the role chunk; ``contentBlockStart``
of a ``toolUse`` → a ``tool_calls`` delta with id and name; ``contentBlockDelta`` ``text`` →
a content delta, ``toolUse.input`` → an arguments delta; ``messageStop`` → the
``finish_reason`` chunk; ``metadata.usage`` → usage (a usage chunk at the end when the client
asked for it). An exception message (``:message-type: exception``) or broken framing →
``data: {"error": {...}}``. The stream always ends with ``data: [DONE]``.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .._core.eventstream import EventMessage, EventStreamDecoder, EventStreamError
from ..api.errors import GatewayError
from ..api.openai import Endpoint, ParsedRequest
from ..config import ConfigError
from ..config.schema import ProviderConfig
from . import sigv4
from .base import StreamTranslator, UpstreamRequest, Usage

__all__ = ["SIGNING_SERVICE", "BedrockProvider", "BedrockStream", "build_body"]

_KIND = "bedrock"
#: The SigV4 service name of ``bedrock-runtime``.
SIGNING_SERVICE = "bedrock"
_EVENT_STREAM = b"application/vnd.amazon.eventstream"

# -- the OpenAI request, as far as the translation reads it -----------------------------------


class _ImageURL(msgspec.Struct):
    url: str
    detail: str | None = None


class _Part(msgspec.Struct):
    type: str
    text: str | None = None
    image_url: _ImageURL | None = None
    refusal: str | None = None


class _CallFunction(msgspec.Struct):
    name: str
    arguments: str = ""


class _ToolCall(msgspec.Struct):
    id: str
    function: _CallFunction
    type: str = "function"


class _Message(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[_Part] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    refusal: str | None = None
    audio: Any = None
    function_call: Any = None


class _FunctionDef(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    parameters: msgspec.Raw = msgspec.Raw()
    strict: bool | None = None


class _Tool(msgspec.Struct, kw_only=True):
    type: str
    function: _FunctionDef | None = None


class _NamedFunction(msgspec.Struct):
    name: str


class _ToolChoice(msgspec.Struct, kw_only=True):
    type: str
    function: _NamedFunction | None = None


class _ResponseFormat(msgspec.Struct):
    type: str


class _ChatRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    messages: list[_Message]
    stream: bool | None = None
    stream_options: Any = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[_Tool] | None = None
    tool_choice: str | _ToolChoice | None = None
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
    response_format: _ResponseFormat | None = None
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


_request_decoder = msgspec.json.Decoder(_ChatRequest)
_args_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()
_encode = _encoder.encode

_UNKNOWN_RE = re.compile(r"^Object contains unknown field `([^`]+)`$")
_AT_RE = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)
#: OpenAI image media types → Converse image formats.
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _bad(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)


def _unsupported(param: str, what: str) -> GatewayError:
    return _bad(
        f"{what} is not supported by provider kind '{_KIND}' (parameter '{param}').",
        param,
        "unsupported_parameter",
    )


def _decode_request(raw: bytes) -> _ChatRequest:
    try:
        return _request_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        m = _AT_RE.match(str(exc))
        assert m is not None  # the pattern matches any text
        text, path = m.group(1), (m.group(2) or "").lstrip(".")
        unknown = _UNKNOWN_RE.match(text)
        if unknown and not path:
            name = unknown.group(1)
            raise _unsupported(name, f"The parameter '{name}'") from None
        raise _bad(f"Invalid value for '{path}': {text}", path or None) from None
    except msgspec.DecodeError:
        raise _bad("The request body is not valid JSON.", code="invalid_json") from None


# -- request translation ----------------------------------------------------------------------


def _check_parameters(req: _ChatRequest) -> None:
    """Reject what cannot be dropped without changing the answer (see the module table)."""
    if req.n is not None and req.n > 1:
        raise _unsupported("n", "More than one choice (n > 1)")
    if req.logprobs:
        raise _unsupported("logprobs", "Log probabilities")
    if req.top_logprobs:
        raise _unsupported("top_logprobs", "Log probabilities")
    if req.presence_penalty:
        raise _unsupported("presence_penalty", "A non-zero presence_penalty")
    if req.frequency_penalty:
        raise _unsupported("frequency_penalty", "A non-zero frequency_penalty")
    if req.logit_bias:
        raise _unsupported("logit_bias", "logit_bias")
    if req.response_format is not None and req.response_format.type != "text":
        raise _unsupported(
            "response_format", f"response_format of type '{req.response_format.type}'"
        )
    if req.audio is not None:
        raise _unsupported("audio", "Audio output")
    if req.modalities is not None and any(m != "text" for m in req.modalities):
        raise _unsupported("modalities", "An output modality other than text")
    for field in ("prediction", "reasoning_effort", "verbosity", "web_search_options"):
        if getattr(req, field) is not None:
            raise _unsupported(field, f"'{field}'")
    for field in ("functions", "function_call"):
        if getattr(req, field) is not None:
            raise _unsupported(field, f"The legacy '{field}' parameter (use 'tools')")
    if req.parallel_tool_calls is False and req.tools:
        raise _unsupported(
            "parallel_tool_calls", "Forbidding parallel tool calls ('parallel_tool_calls': false)"
        )
    t = req.temperature
    if t is not None and not 0.0 <= t <= 1.0:
        raise _bad(
            f"'temperature' must be between 0 and 1 for provider kind '{_KIND}' (got {t:g}); "
            "OpenAI's range is 0 to 2, and the gateway does not rescale it.",
            "temperature",
            "unsupported_value",
        )


def _text_of(content: str | list[_Part] | None, param: str) -> list[str]:
    """Text pieces of a message that may only hold text (system, developer, tool)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise _bad(
                f"Content parts of type '{part.type}' are not supported here by provider kind "
                f"'{_KIND}'; only text is.",
                f"{param}.content[{j}]",
                "unsupported_content",
            )
        out.append(part.text)
    return out


def _image_block(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, params = header.partition(";")
        if not sep or "base64" not in params.split(";") or not media_type:
            raise _bad(
                "An image data URL must look like 'data:<media type>;base64,<data>'.",
                param,
                "invalid_image_url",
            )
        fmt = _IMAGE_FORMATS.get(media_type.lower())
        if fmt is None:
            raise _bad(
                f"Images of type '{media_type}' are not supported by provider kind '{_KIND}' "
                "(PNG, JPEG, GIF and WebP are).",
                param,
                "unsupported_content",
            )
        return {"image": {"format": fmt, "source": {"bytes": data}}}
    if url.startswith(("https://", "http://")):
        raise _bad(
            f"Provider kind '{_KIND}' takes images as bytes only: send the image as a base64 "
            "data URL ('data:image/png;base64,...'); the gateway does not fetch URLs.",
            param,
            "unsupported_image_url",
        )
    raise _bad(
        "An image URL must be an http(s) URL or a base64 data URL.", param, "invalid_image_url"
    )


def _content_blocks(
    content: str | list[_Part] | None, param: str, assistant: bool
) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.type
        if kind == "text" and part.text is not None:
            if part.text:
                blocks.append({"text": part.text})
        elif kind == "refusal" and assistant and part.refusal is not None:
            if part.refusal:
                blocks.append({"text": part.refusal})
        elif kind == "image_url" and part.image_url is not None and not assistant:
            blocks.append(_image_block(part.image_url.url, f"{param}.content[{j}].image_url.url"))
        else:
            raise _bad(
                f"Content parts of type '{kind}' are not supported by provider kind '{_KIND}'.",
                f"{param}.content[{j}]",
                "unsupported_content",
            )
    return blocks


def _tool_use_block(call: _ToolCall, param: str) -> dict[str, Any]:
    args = call.function.arguments
    if not args.strip():
        parsed: dict[str, Any] = {}
    else:
        try:
            parsed = _args_decoder.decode(args)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise _bad(
                f"The arguments of tool call '{call.id}' must be a JSON object; provider kind "
                f"'{_KIND}' needs them parsed.",
                f"{param}.function.arguments",
                "invalid_tool_arguments",
            ) from None
    return {"toolUse": {"toolUseId": call.id, "name": call.function.name, "input": parsed}}


def _translate_messages(
    messages: list[_Message],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """(system blocks, Converse messages with alternating roles, any tool blocks?)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    has_tools = False

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        role = m.role
        if role in ("system", "developer"):
            system.extend({"text": t} for t in _text_of(m.content, param) if t)
        elif role == "user":
            add("user", _content_blocks(m.content, param, assistant=False))
        elif role == "assistant":
            if m.audio is not None:
                raise _unsupported(f"{param}.audio", "A reference to earlier audio output")
            if m.function_call is not None:
                raise _unsupported(
                    f"{param}.function_call", "The legacy 'function_call' (use 'tool_calls')"
                )
            blocks = _content_blocks(m.content, param, assistant=True)
            for k, call in enumerate(m.tool_calls or ()):
                blocks.append(_tool_use_block(call, f"{param}.tool_calls[{k}]"))
                has_tools = True
            add("assistant", blocks)
        elif role == "tool":
            if not m.tool_call_id:
                raise _bad(
                    "A 'tool' message needs 'tool_call_id'.",
                    f"{param}.tool_call_id",
                    "missing_required_parameter",
                )
            texts = [t for t in _text_of(m.content, param) if t]
            result = {"toolUseId": m.tool_call_id, "content": [{"text": t} for t in texts]}
            add("user", [{"toolResult": result}])
            has_tools = True
        else:
            raise _bad(
                f"Messages with role '{role}' are not supported by provider kind '{_KIND}'.",
                f"{param}.role",
                "unsupported_parameter",
            )
    return system, turns, has_tools


def _translate_tools(tools: list[_Tool]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        fn = tool.function
        if tool.type != "function" or fn is None:
            raise _unsupported(f"tools[{i}]", f"A tool of type '{tool.type}'")
        if fn.strict:
            raise _unsupported(
                f"tools[{i}].function.strict", "Strict schema adherence ('strict': true)"
            )
        schema: Any = fn.parameters
        if not schema or bytes(schema) == b"null":
            schema = {"type": "object", "properties": {}}
        spec: dict[str, Any] = {"name": fn.name}
        if fn.description is not None:
            spec["description"] = fn.description
        spec["inputSchema"] = {"json": schema}
        out.append({"toolSpec": spec})
    return out


def _translate_tool_choice(choice: str | _ToolChoice) -> dict[str, Any] | None:
    """Converse's toolChoice; None for ``none`` (no toolConfig is sent)."""
    if isinstance(choice, str):
        if choice == "none":
            return None
        if choice == "auto":
            return {"auto": {}}
        if choice == "required":
            return {"any": {}}
        raise _bad(f"Invalid value for 'tool_choice': {choice!r}.", "tool_choice", "invalid_value")
    if choice.type == "function" and choice.function is not None:
        return {"tool": {"name": choice.function.name}}
    raise _unsupported("tool_choice", f"A tool_choice of type '{choice.type}'")


def build_body(raw: bytes) -> dict[str, Any]:
    """The Converse request for an OpenAI chat-completions body (raises 400s). The model is
    in the URL, not the body; streaming is chosen by the path."""
    req = _decode_request(raw)
    _check_parameters(req)
    system, messages, has_tool_blocks = _translate_messages(req.messages)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    config: dict[str, Any] = {}
    if req.max_completion_tokens is not None:
        config["maxTokens"] = req.max_completion_tokens
    elif req.max_tokens is not None:
        config["maxTokens"] = req.max_tokens
    if req.temperature is not None:
        config["temperature"] = req.temperature
    if req.top_p is not None:
        config["topP"] = req.top_p
    if req.stop is not None:
        stops = [req.stop] if isinstance(req.stop, str) else req.stop
        if stops:
            config["stopSequences"] = stops
    if config:
        body["inferenceConfig"] = config
    if req.tools:
        choice = _translate_tool_choice(req.tool_choice) if req.tool_choice is not None else None
        if req.tool_choice == "none":
            if has_tool_blocks:
                raise _unsupported(
                    "tool_choice",
                    "'tool_choice': 'none' in a conversation that holds tool calls or results",
                )
        else:
            tool_config: dict[str, Any] = {"tools": _translate_tools(req.tools)}
            if choice is not None:
                tool_config["toolChoice"] = choice
            body["toolConfig"] = tool_config
    elif req.tool_choice is not None and req.tool_choice != "none":
        raise _bad("'tool_choice' is set but no 'tools' are given.", "tool_choice")
    if req.mock:
        body["mock"] = req.mock
    return body


# -- responses --------------------------------------------------------------------------------


class _CUsage(msgspec.Struct):
    inputTokens: int = 0
    outputTokens: int = 0
    totalTokens: int = 0
    cacheReadInputTokens: int = 0
    cacheWriteInputTokens: int = 0


class _CToolUse(msgspec.Struct):
    toolUseId: str = ""
    name: str = ""
    input: msgspec.Raw = msgspec.Raw()


class _CBlock(msgspec.Struct):
    text: str | None = None
    toolUse: _CToolUse | None = None


class _CMessage(msgspec.Struct):
    role: str = "assistant"
    content: list[_CBlock] = []


class _COutput(msgspec.Struct):
    message: _CMessage | None = None


class _CResponse(msgspec.Struct):
    output: _COutput | None = None
    stopReason: str | None = None
    usage: _CUsage | None = None


class _OFunction(msgspec.Struct):
    name: str
    arguments: str


class _OToolCall(msgspec.Struct):
    id: str
    type: str
    function: _OFunction


class _OMessage(msgspec.Struct):
    role: str
    content: str | None
    refusal: None = None
    tool_calls: list[_OToolCall] | msgspec.UnsetType = msgspec.UNSET


class _OChoice(msgspec.Struct):
    index: int
    message: _OMessage
    logprobs: None
    finish_reason: str


class _OPromptDetails(msgspec.Struct):
    cached_tokens: int


class _OUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: _OPromptDetails


class _OCompletion(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[_OChoice]
    usage: _OUsage | None


_response_decoder = msgspec.json.Decoder(_CResponse)

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}


def _finish_reason(stop_reason: str | None) -> str:
    return _FINISH.get(stop_reason or "end_turn", "stop")


def _usage_of(u: _CUsage) -> Usage:
    prompt = u.inputTokens + u.cacheReadInputTokens + u.cacheWriteInputTokens
    return (prompt, u.outputTokens, prompt + u.outputTokens, u.cacheReadInputTokens)


def _ousage(u: Usage) -> _OUsage:
    return _OUsage(u[0], u[1], u[2], _OPromptDetails(u[3]))


def _new_id() -> str:
    return "chatcmpl-bedrock-" + os.urandom(12).hex()


# -- streams ----------------------------------------------------------------------------------


class _SToolStart(msgspec.Struct):
    toolUseId: str = ""
    name: str = ""


class _SStart(msgspec.Struct):
    toolUse: _SToolStart | None = None


class _SBlockStart(msgspec.Struct):
    start: _SStart | None = None
    contentBlockIndex: int = 0


class _SToolDelta(msgspec.Struct):
    input: str = ""


class _SDelta(msgspec.Struct):
    text: str | None = None
    toolUse: _SToolDelta | None = None


class _SBlockDelta(msgspec.Struct):
    delta: _SDelta | None = None
    contentBlockIndex: int = 0


class _SMessageStop(msgspec.Struct):
    stopReason: str | None = None


class _SMetadata(msgspec.Struct):
    usage: _CUsage | None = None


class _SException(msgspec.Struct):
    message: str | None = None
    Message: str | None = None


_delta_decoder = msgspec.json.Decoder(_SBlockDelta)
_start_decoder = msgspec.json.Decoder(_SBlockStart)
_stop_decoder = msgspec.json.Decoder(_SMessageStop)
_metadata_decoder = msgspec.json.Decoder(_SMetadata)
_exception_decoder = msgspec.json.Decoder(_SException)


class _UsageChunk(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[None]
    usage: _OUsage


_DONE = b"data: [DONE]\n\n"

#: Converse exception names (stream ``:exception-type`` and ``x-amzn-errortype``), first
#: letter lower-cased → the HTTP status they come with.
_EXCEPTION_STATUS = {
    "validationException": 400,
    "accessDeniedException": 403,
    "unrecognizedClientException": 403,
    "resourceNotFoundException": 404,
    "modelTimeoutException": 408,
    "modelNotReadyException": 429,
    "throttlingException": 429,
    "serviceQuotaExceededException": 429,
    "modelErrorException": 424,
    "modelStreamErrorException": 424,
    "internalServerException": 500,
    "serviceUnavailableException": 503,
}


class BedrockStream:
    """One ConverseStream response: event-stream bytes in, OpenAI chunk SSE bytes out."""

    __slots__ = (
        "_client_usage",
        "_created",
        "_decoder",
        "_failed",
        "_head",
        "_id",
        "_model",
        "_provider",
        "_tail",
        "_text_head",
        "_text_tail",
        "_tools",
        "usage",
    )

    def __init__(
        self,
        provider: BedrockProvider,
        upstream_model: str,
        client_usage: bool,
        max_message_bytes: int = 16 << 20,
    ) -> None:
        self._provider = provider
        self._client_usage = client_usage
        self._created = int(time.time())
        self._decoder = EventStreamDecoder(max_message_bytes)
        self._tools: dict[int, int] = {}  # Converse block index → OpenAI tool_calls index
        self._failed = False
        self.usage: Usage | None = None
        self._id = _new_id()
        self._model = upstream_model
        self._head = b"".join(
            [
                b'data: {"id":',
                _encode(self._id),
                b',"object":"chat.completion.chunk","created":',
                b"%d" % self._created,
                b',"model":',
                _encode(upstream_model),
                b',"choices":[{"index":0,"delta":',
            ]
        )
        usage = b',"usage":null}\n\n' if client_usage else b"}\n\n"
        self._tail = b',"logprobs":null,"finish_reason":null}]' + usage
        self._text_head = self._head + b'{"content":'
        self._text_tail = b"}" + self._tail

    def _chunk(self, delta: bytes, finish: str | None = None) -> bytes:
        if finish is None:
            return self._head + delta + self._tail
        usage = b',"usage":null}\n\n' if self._client_usage else b"}\n\n"
        return b"".join(
            [
                self._head,
                delta,
                b',"logprobs":null,"finish_reason":',
                _encode(finish),
                b"}]",
                usage,
            ]
        )

    def _protocol_error(self, what: str) -> bytes:
        self._failed = True
        return GatewayError(
            502,
            f"Provider '{self._provider.name}' sent {what}.",
            "upstream_error",
            "upstream_protocol_error",
        ).sse_event()

    def feed(self, chunk: bytes) -> bytes:
        """Client bytes for a piece of the upstream body (any split of the frames)."""
        if self._failed:
            return b""
        try:
            messages = self._decoder.feed(chunk)
        except EventStreamError as exc:
            return self._protocol_error(f"a broken event stream ({exc})")
        if not messages:
            return b""
        if len(messages) == 1:
            return self._message(messages[0])
        out = []
        for m in messages:
            out.append(self._message(m))
            if self._failed:
                break
        return b"".join(out)

    def _message(self, m: EventMessage) -> bytes:
        mtype = m.message_type
        if mtype is not None and mtype != "event":
            self._failed = True
            if mtype == "exception":
                try:
                    exc = _exception_decoder.decode(m.payload)
                    text = exc.message or exc.Message or ""
                except (msgspec.ValidationError, msgspec.DecodeError):
                    text = m.payload[:200].decode("utf-8", "replace")
                etype = m.exception_type or "internalServerException"
            else:  # "error": a service error in the headers
                code = m.headers.get(":error-code")
                text_h = m.headers.get(":error-message")
                etype = code if isinstance(code, str) else "internalServerException"
                text = text_h if isinstance(text_h, str) else ""
            return self._provider.error_for(None, etype, text or etype).sse_event()
        kind = m.event_type
        try:
            if kind == "contentBlockDelta":
                ev_delta = _delta_decoder.decode(m.payload)
                d = ev_delta.delta
                if d is None:
                    return b""
                if d.text is not None:
                    if not d.text:
                        return b""
                    return b"".join([self._text_head, _encode(d.text), self._text_tail])
                if d.toolUse is not None:
                    index = self._tools.get(ev_delta.contentBlockIndex)
                    if index is None or not d.toolUse.input:
                        return b""
                    return self._chunk(
                        b'{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}'
                        % (index, _encode(d.toolUse.input))
                    )
                return b""  # reasoning deltas and others
            if kind == "contentBlockStart":
                ev = _start_decoder.decode(m.payload)
                tool = ev.start.toolUse if ev.start is not None else None
                if tool is None:
                    return b""
                index = len(self._tools)
                self._tools[ev.contentBlockIndex] = index
                call = {
                    "index": index,
                    "id": tool.toolUseId,
                    "type": "function",
                    "function": {"name": tool.name, "arguments": ""},
                }
                return self._chunk(b'{"tool_calls":[' + _encode(call) + b"]}")
            if kind == "messageStart":
                return self._chunk(b'{"role":"assistant","content":""}')
            if kind == "messageStop":
                stop = _stop_decoder.decode(m.payload).stopReason
                return self._chunk(b"{}", _finish_reason(stop))
            if kind == "metadata":
                u = _metadata_decoder.decode(m.payload).usage
                if u is not None:
                    self.usage = _usage_of(u)
                return b""
        except (msgspec.ValidationError, msgspec.DecodeError):
            return self._protocol_error(f"an invalid '{kind}' event")
        return b""  # contentBlockStop, unknown event types

    def flush(self) -> bytes:
        """At the end of the upstream body: what is still owed, then ``[DONE]``."""
        out = b""
        if not self._failed:
            try:
                self._decoder.flush()
            except EventStreamError:
                out = self._protocol_error("an event stream cut mid-message")
        if self._client_usage and self.usage is not None and not self._failed:
            chunk = _UsageChunk(
                self._id,
                "chat.completion.chunk",
                self._created,
                self._model,
                [],
                _ousage(self.usage),
            )
            out += b"data: " + _encode(chunk) + b"\n\n"
        return out + _DONE


# -- errors -----------------------------------------------------------------------------------


class _ErrorBody(msgspec.Struct):
    message: str | None = None
    Message: str | None = None


_error_decoder = msgspec.json.Decoder(_ErrorBody)


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _host_header(base_url: str) -> str:
    """``Host`` as the upstream client sends it (the port only when not the default)."""
    u = urlsplit(base_url)
    host = u.hostname or ""
    tls = u.scheme == "https"
    default = 443 if tls else 80
    port = u.port or default
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"


class BedrockProvider:
    """Amazon Bedrock's Converse API (``POST /model/{id}/converse[-stream]``), SigV4-signed."""

    kind = _KIND
    openai_shaped = False
    default_base_url = "https://bedrock-runtime.{region}.amazonaws.com"
    stream_content_type = _EVENT_STREAM

    def __init__(self, name: str, cfg: ProviderConfig) -> None:
        self.name = name
        errors: list[str] = []
        region = cfg.aws_region or _env("AWS_REGION") or _env("AWS_DEFAULT_REGION")
        if not region:
            errors.append(
                f"providers.{name}.aws_region: required for kind '{_KIND}' (or set AWS_REGION)"
            )
        if cfg.aws_access_key_id or cfg.aws_secret_access_key:
            access, secret = cfg.aws_access_key_id, cfg.aws_secret_access_key
            token = cfg.aws_session_token
            hint = "(the other key is set in the provider's configuration)"
        else:
            access, secret = _env("AWS_ACCESS_KEY_ID"), _env("AWS_SECRET_ACCESS_KEY")
            token = cfg.aws_session_token or _env("AWS_SESSION_TOKEN")
            hint = "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment)"
        for field, value in (("aws_access_key_id", access), ("aws_secret_access_key", secret)):
            if not value:
                errors.append(f"providers.{name}.{field}: required for kind '{_KIND}' {hint}")
        if errors:
            raise ConfigError(errors)
        assert region and access and secret
        self.region = region
        self._access_key = access
        self._secret = secret
        self._token = token
        self.base_url = (cfg.base_url or self.default_base_url.format(region=region)).rstrip("/")
        u = urlsplit(self.base_url)
        self._host = _host_header(self.base_url)
        self._base_path = u.path.rstrip("/")
        self._query = u.query
        headers = {"content-type": "application/json"}
        headers.update({k.lower(): v for k, v in cfg.headers.items()})
        self.headers = headers
        self._content_type = headers["content-type"]

    def path_for(self, upstream_model: str, stream: bool) -> str:
        """The request path below ``base_url``: the model id as one encoded segment."""
        action = "converse-stream" if stream else "converse"
        return f"/model/{sigv4.uri_encode(upstream_model)}/{action}"

    def sign(self, path: str, body: bytes, now: datetime | None = None) -> dict[str, str]:
        """The SigV4 headers for a ``POST`` of ``body`` to ``path`` (below ``base_url``)."""
        return sigv4.sign(
            "POST",
            self._base_path + path,
            self._query,
            {"host": self._host, "content-type": self._content_type},
            body,
            service=SIGNING_SERVICE,
            region=self.region,
            access_key=self._access_key,
            secret_key=self._secret,
            session_token=self._token,
            now=now if now is not None else datetime.now(UTC),
        )

    def build_request(
        self, req: ParsedRequest, upstream_model: str, request_id: str
    ) -> UpstreamRequest:
        if req.endpoint is not Endpoint.CHAT:
            raise GatewayError(
                400,
                f"The endpoint '{req.endpoint.path}' is not supported by provider kind '{_KIND}'.",
                "invalid_request_error",
                "unsupported_endpoint",
            )
        body = _encode(build_body(req.raw))
        path = self.path_for(upstream_model, req.stream)
        headers = self.sign(path, body)
        headers["x-request-id"] = request_id
        if req.stream:
            headers["accept"] = _EVENT_STREAM.decode()
        return UpstreamRequest(path, headers, body, False)

    def transform_response(self, req: ParsedRequest, body: bytes) -> bytes:
        try:
            resp = _response_decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            resp = None
        if resp is None or resp.output is None or resp.output.message is None:
            raise GatewayError(
                502,
                f"Provider '{self.name}' sent a response that is not a Converse answer.",
                "upstream_error",
                "upstream_protocol_error",
            )
        texts: list[str] = []
        calls: list[_OToolCall] = []
        for block in resp.output.message.content:
            if block.text is not None:
                texts.append(block.text)
            elif block.toolUse is not None:
                t = block.toolUse
                args = bytes(t.input).decode() if t.input else "{}"
                calls.append(_OToolCall(t.toolUseId, "function", _OFunction(t.name, args)))
        content = "".join(texts) if texts or not calls else None
        message = _OMessage("assistant", content)
        if calls:
            message.tool_calls = calls
        usage = _ousage(_usage_of(resp.usage)) if resp.usage is not None else None
        out = _OCompletion(
            _new_id(),
            "chat.completion",
            int(time.time()),
            req.model,
            [_OChoice(0, message, None, _finish_reason(resp.stopReason))],
            usage,
        )
        return _encode(out)

    def new_byte_stream(self, req: ParsedRequest, upstream_model: str) -> BedrockStream:
        """The relay filter of one ConverseStream answer (see :class:`BedrockStream`)."""
        return BedrockStream(self, upstream_model, req.client_usage)

    def new_stream(self, req: ParsedRequest, upstream_model: str) -> StreamTranslator:
        raise NotImplementedError("Bedrock streams are binary: use new_byte_stream")

    def scrub(self, text: str) -> str:
        """Remove the provider's secrets from text that came from the upstream."""
        for secret in (self._secret, self._token):
            if secret and secret in text:
                text = text.replace(secret, "***")
        return text

    def error_for(self, status: int | None, etype: str | None, message: str) -> GatewayError:
        """The client's error for a Bedrock error (``status`` None: inside a stream, where
        the exception's name tells the status)."""
        message = self.scrub(message)
        if etype:
            etype = etype.rpartition("#")[2].partition(":")[0]
            etype = etype[:1].lower() + etype[1:]
        where = "mid-stream" if status is None else f"(HTTP {status})"
        if status is None:
            status = _EXCEPTION_STATUS.get(etype or "", 500)
        name = self.name
        label = f", {etype}" if etype else ""
        if status in (401, 403):
            return GatewayError(
                502,
                f"Provider '{name}' rejected the gateway's credentials ({status}{label}): "
                f"{message}",
                "upstream_error",
                "upstream_auth_failed",
            )
        if status == 400:
            return GatewayError(400, message, "invalid_request_error")
        if status == 404:
            return GatewayError(404, message, "invalid_request_error", "model_not_found")
        if status == 413:
            return GatewayError(413, message, "invalid_request_error", "request_too_large")
        if status == 429:
            return GatewayError(429, message, "rate_limit_error", "rate_limit_exceeded")
        if status == 503:
            return GatewayError(
                503,
                f"Provider '{name}' is unavailable{label}: {message}",
                "upstream_error",
                "upstream_unavailable",
            )
        if 400 < status < 500 and status not in (408, 424):
            return GatewayError(status, message, "invalid_request_error")
        return GatewayError(
            502,
            f"Provider '{name}' failed {where}{label}: {message}",
            "upstream_error",
            "upstream_error",
        )

    def map_error(self, status: int, body: bytes) -> GatewayError:
        message: str | None = None
        try:
            parsed = _error_decoder.decode(body)
            message = parsed.message or parsed.Message
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        if not message:
            message = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
        return self.error_for(status, None, message)
