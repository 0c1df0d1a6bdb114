"""Amazon Bedrock's Converse API on the mock upstream: ``POST /model/{modelId}/converse`` and
``POST /model/{modelId}/converse-stream``.

Speaks the real wire format: a Converse JSON answer (``output.message``, ``stopReason``,
``usage``, ``metrics``), or AWS's binary event stream (``application/vnd.amazon.eventstream``)
of ``messageStart``, ``contentBlockStart``, ``contentBlockDelta``, ``contentBlockStop``,
``messageStop`` and ``metadata`` messages with JSON payloads. Errors are ``{"message": ...}``
bodies with an ``x-amzn-errortype`` header.

It does not verify signatures, but it refuses (403 ``UnrecognizedClientException``) a
request without an ``authorization`` header of the ``AWS4-HMAC-SHA256 Credential=`` form.

The reply is the mock's usual echo of the last user text (or ``mock.text``), cut at
``inferenceConfig.maxTokens`` words (``stopReason: max_tokens``) or at the first stop
sequence it contains (``stop_sequence``). When the request has tools and the last user text
contains ``call <name>`` for one of them, the answer is a short text block and a ``toolUse``
of that tool with input ``{"city": "Paris"}`` (streamed as several input fragments),
``stopReason: tool_use``. Usage: ``inputTokens`` is the mock's word count of the system and
message texts.

Per-request ``mock`` controls: ``status`` (a Bedrock error of the matching type), ``reset``,
``latency_ms``, ``interval_ms``, ``chunks``, ``drop_after``, ``stall_after``/``stall_ms``,
``event_bytes``, ``text``, and ``exception`` (a stream only: after the content, an
exception message of that type, e.g. ``throttlingException``, instead of the end events).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec

from fastgw._core.eventstream import encode_message

# behaviour imports this module at its top: its names are looked up at call time only.
from fastgw.mock import behaviour as b
from fastgw.mock import responses as r

__all__ = ["PREFIX", "TOOL_INPUT", "error_plan", "plan"]

PREFIX = "/model/"
#: The input of every tool call the mock makes.
TOOL_INPUT = {"city": "Paris"}

_JSON = b"application/json"
_EVENT_STREAM = b"application/vnd.amazon.eventstream"
_ROUTE = re.compile(r"^/model/([^/]+)/(converse|converse-stream)$")
_AUTH_PREFIX = b"AWS4-HMAC-SHA256 Credential="
_encode = msgspec.json.Encoder().encode

#: status → (x-amzn-errortype, message)
_ERRORS = {
    400: ("ValidationException", "Malformed input request, please reformat your input."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified ID."),
    404: ("ResourceNotFoundException", "The model with the specified ID was not found."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request."),
    424: ("ModelErrorException", "The model returned an error."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}


def error_plan(status: int, etype: str | None = None, message: str | None = None) -> b.Plan:
    """Bedrock's error answer: ``{"message"}`` and the ``x-amzn-errortype`` header."""
    known = _ERRORS.get(status)
    if known is None:
        known = ("InternalServerException" if status >= 500 else "ValidationException", "Error")
    etype = etype or known[0]
    headers: b.Headers = [
        (b"content-type", _JSON),
        (
            b"x-amzn-errortype",
            f"{etype}:http://internal.amazon.com/coral/com.amazon.bedrock/".encode(),
        ),
    ]
    return b.Plan(status, headers, _encode({"message": message or known[1]}))


class _Block(msgspec.Struct):
    text: str | None = None
    toolResult: dict[str, Any] | None = None


class _Message(msgspec.Struct):
    role: str
    content: list[_Block]


class _InferenceConfig(msgspec.Struct):
    maxTokens: int | None = None
    stopSequences: list[str] = []


class _ToolSpec(msgspec.Struct):
    name: str = ""


class _Tool(msgspec.Struct):
    toolSpec: _ToolSpec | None = None


class _ToolConfig(msgspec.Struct):
    tools: list[_Tool] = []


class _Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    messages: list[_Message]
    system: list[_Block] = []
    inferenceConfig: _InferenceConfig | None = None
    toolConfig: _ToolConfig | None = None
    mock: dict[str, Any] | None = None  # b.Controls and ``exception``, read on use


_decode = msgspec.json.Decoder(_Request).decode


def _block_text(block: _Block) -> str:
    if block.text is not None:
        return block.text
    if block.toolResult is not None:
        parts = block.toolResult.get("content")
        if isinstance(parts, list):
            return " ".join(
                p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
    return ""


def _text(blocks: list[_Block]) -> str:
    return " ".join(t for t in (_block_text(x) for x in blocks) if t)


def _event(name: str, obj: dict[str, Any]) -> bytes:
    headers: dict[str, bool | int | bytes | str] = {
        ":event-type": name,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, _encode(obj))


def _exception(etype: str, message: str) -> bytes:
    headers: dict[str, bool | int | bytes | str] = {
        ":exception-type": etype,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, _encode({"message": message}))


def _usage(prompt: int, output: int) -> dict[str, int]:
    return {"inputTokens": prompt, "outputTokens": output, "totalTokens": prompt + output}


def plan(state: b.MockState, method: str, path: str, headers: b.Headers, body: bytes) -> b.Plan:
    """Route and plan one request below ``/model/``."""
    m = _ROUTE.match(path)
    if m is None or method != "POST":
        return error_plan(404, "UnknownOperationException", f"Unknown operation {method} {path}")
    auth = next((v for k, v in headers if k.lower() == b"authorization"), b"")
    if not auth.startswith(_AUTH_PREFIX):
        return error_plan(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    stream = m.group(2) == "converse-stream"
    try:
        req = _decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error_plan(400, None, f"Malformed input request: {exc}")
    if not req.messages:
        return error_plan(400, None, "A conversation must start with a user message.")
    options = dict(req.mock or {})
    exception = options.pop("exception", None)
    try:
        controls = msgspec.convert(options, b.Controls) if options else None
    except msgspec.ValidationError as exc:
        return error_plan(400, None, f"mock: {exc}")
    s = b._Settings(state, controls)
    c = s.controls
    if c.reset:
        state.stats.resets += 1
        return b.Plan(0, [], latency=s.latency, reset=True)
    if c.status is not None and c.status >= 400:
        p = error_plan(c.status)
        p.latency = s.latency
        return p
    return _answer(state, s, req, stream, exception if isinstance(exception, str) else None)


def _answer(
    state: b.MockState, s: b._Settings, req: _Request, stream: bool, exception: str | None
) -> b.Plan:
    user_text = ""
    for msg in reversed(req.messages):
        if msg.role == "user":
            user_text = _text(msg.content)
            break
    prompt = r.estimate_tokens(_text(req.system)) + sum(
        r.estimate_tokens(_text(msg.content)) for msg in req.messages
    )
    cfg = req.inferenceConfig or _InferenceConfig()
    tool = None
    for t in req.toolConfig.tools if req.toolConfig is not None else ():
        name = t.toolSpec.name if t.toolSpec is not None else ""
        if name and f"call {name}" in user_text:
            tool = name
            break
    if tool is not None:
        text, stop_reason = f"Calling {tool}.", "tool_use"
    else:
        text, finish = b._completion_text(s, user_text, cfg.maxTokens)
        stop_reason = "max_tokens" if finish == "length" else "end_turn"
        for seq in cfg.stopSequences:
            at = text.find(seq) if seq else -1
            if at >= 0:
                text, stop_reason = text[:at], "stop_sequence"
                break
    rid = state.new_id()
    tool_id = "tooluse_" + rid
    extra = len(TOOL_INPUT) * 2 if tool else 0
    if not stream:
        content: list[dict[str, Any]] = [{"text": text}] if text else []
        if tool is not None:
            content.append({"toolUse": {"toolUseId": tool_id, "name": tool, "input": TOOL_INPUT}})
        answer = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason,
            "usage": _usage(prompt, r.estimate_tokens(text) + extra),
            "metrics": {"latencyMs": 1},
        }
        headers: b.Headers = [(b"content-type", _JSON), (b"x-amzn-requestid", rid.encode())]
        return b.Plan(200, headers, _encode(answer), latency=s.latency)

    first = _event("messageStart", {"p": "abcd", "role": "assistant"})

    def piece(p: str) -> bytes:
        return _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}})

    def end(full: str) -> Iterator[bytes]:
        if exception is not None:
            yield _exception(exception, f"Simulated {exception} from the mock upstream.")
            return
        yield _event("contentBlockStop", {"contentBlockIndex": 0})
        if tool is not None:
            yield _event(
                "contentBlockStart",
                {
                    "contentBlockIndex": 1,
                    "start": {"toolUse": {"toolUseId": tool_id, "name": tool}},
                },
            )
            for part in (x for x in r.split_text(_encode(TOOL_INPUT).decode(), 3) if x):
                yield _event(
                    "contentBlockDelta",
                    {"contentBlockIndex": 1, "delta": {"toolUse": {"input": part}}},
                )
            yield _event("contentBlockStop", {"contentBlockIndex": 1})
        yield _event("messageStop", {"stopReason": stop_reason})
        out = r.estimate_tokens(full) + extra
        yield _event("metadata", {"usage": _usage(prompt, out), "metrics": {"latencyMs": 1}})

    headers = [(b"content-type", _EVENT_STREAM), (b"x-amzn-requestid", rid.encode())]
    frames = b._stream_frames(s, text, first, piece, end)
    return b.Plan(200, headers, frames=frames, latency=s.latency)
