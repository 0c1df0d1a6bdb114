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
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .._core.eventstream import EventMessage, EventStreamDecoder, EventStreamError
from ..api.errors import GatewayError, upstream_error
from ..api.openai import Endpoint, ParsedRequest
from ..config import ConfigError
from ..config.schema import ProviderConfig
from . import sigv4
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
    missing_tool_call_id,
    not_a_response,
    parse_data_url,
    reject_changing_parameters,
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

__all__ = ["SIGNING_SERVICE", "BedrockProvider", "BedrockStream", "build_body"]

_KIND = "bedrock"
#: The SigV4 service name of ``bedrock-runtime``.
SIGNING_SERVICE = "bedrock"
_EVENT_STREAM = b"application/vnd.amazon.eventstream"

# -- the OpenAI request, as far as the translation reads it -----------------------------------


_request_decoder = msgspec.json.Decoder(ChatRequestView)
#: OpenAI image media types → Converse image formats.
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


_bad = bad_request


def _unsupported(param: str, what: str) -> GatewayError:
    return unsupported_parameter(_KIND, param, what)


# -- request translation ----------------------------------------------------------------------


def _check_parameters(req: ChatRequestView) -> None:
    """Reject what cannot be dropped without changing the answer (see the module table)."""
    reject_changing_parameters(req, _KIND)
    if req.parallel_tool_calls is False and req.tools:
        raise _unsupported(
            "parallel_tool_calls", "Forbidding parallel tool calls ('parallel_tool_calls': false)"
        )
    check_temperature(req.temperature, _KIND)


def _image_block(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media_type, data = parse_data_url(url, param)
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
    raise invalid_image_url(param)


def _text_block(text: str) -> dict[str, Any]:
    return {"text": text}


def _content_blocks(
    content: str | list[ContentPart] | None, param: str, assistant: bool
) -> list[dict[str, Any]]:
    return content_blocks(content, param, assistant, _KIND, _text_block, _image_block)


def _tool_use_block(call: ToolCall, param: str) -> dict[str, Any]:
    parsed = tool_arguments(call, param, _KIND)
    return {"toolUse": {"toolUseId": call.id, "name": call.function.name, "input": parsed}}


def _translate_messages(
    messages: list[ChatMessage],
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
            system.extend({"text": t} for t in text_of(m.content, param, _KIND) if t)
        elif role == "user":
            add("user", _content_blocks(m.content, param, assistant=False))
        elif role == "assistant":
            check_assistant_message(m, param, _KIND)
            blocks = _content_blocks(m.content, param, assistant=True)
            for k, call in enumerate(m.tool_calls or ()):
                blocks.append(_tool_use_block(call, f"{param}.tool_calls[{k}]"))
                has_tools = True
            add("assistant", blocks)
        elif role == "tool":
            if not m.tool_call_id:
                raise missing_tool_call_id(param)
            texts = [t for t in text_of(m.content, param, _KIND) if t]
            result = {"toolUseId": m.tool_call_id, "content": [{"text": t} for t in texts]}
            add("user", [{"toolResult": result}])
            has_tools = True
        else:
            raise unsupported_role(role, param, _KIND)
    return system, turns, has_tools


def _translate_tools(tools: list[Tool[RawFunctionDef]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        fn = function_of(tool, i, _KIND)
        spec: dict[str, Any] = {"name": fn.name}
        if fn.description is not None:
            spec["description"] = fn.description
        spec["inputSchema"] = {"json": tool_schema(fn.parameters)}
        out.append({"toolSpec": spec})
    return out


def _translate_tool_choice(choice: str | ToolChoice) -> dict[str, Any] | None:
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
    req = decode_request(_request_decoder, raw, _KIND)
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


class BedrockStream(ChoiceChunks):
    """One ConverseStream response: event-stream bytes in, OpenAI chunk SSE bytes out."""

    __slots__ = ("_decoder", "_failed", "_provider", "_tools", "usage")

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
        self._frame(_new_id(), upstream_model)

    def _protocol_error(self, what: str) -> bytes:
        self._failed = True
        message = f"Provider '{self._provider.name}' sent {what}."
        return upstream_error(502, message, "upstream_protocol_error").sse_event()

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
            head = chunk_head(self._id, self._created, self._model)
            out += usage_chunk(head, usage_out(self.usage))
        return out + DONE


# -- errors -----------------------------------------------------------------------------------


_error_decoder = _exception_decoder  # error bodies carry the same message / Message


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
            raise unsupported_endpoint(_KIND, req.endpoint.path)
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
            raise not_a_response(self.name, "a Converse answer")
        texts: list[str] = []
        calls: list[OToolCall] = []
        for block in resp.output.message.content:
            if block.text is not None:
                texts.append(block.text)
            elif block.toolUse is not None:
                t = block.toolUse
                args = bytes(t.input).decode() if t.input else "{}"
                calls.append(OToolCall(t.toolUseId, "function", OFunction(t.name, args)))
        content = "".join(texts) if texts or not calls else None
        message = OMessage("assistant", content)
        if calls:
            message.tool_calls = calls
        usage = usage_out(_usage_of(resp.usage)) if resp.usage is not None else None
        choice = OChoice(0, message, None, _finish_reason(resp.stopReason))
        return completion(_new_id(), req.model, [choice], usage)

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
            return credentials_rejected(name, f"{status}{label}", message)
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
            message = error_text(body, status)
        return self.error_for(status, None, message)
