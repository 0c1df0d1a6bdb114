"""Anthropic's Messages API on the mock upstream: ``POST /v1/messages``.

Speaks the real wire format: a ``message`` object, or a stream of named events
(``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``), usage with the cache fields, and
``{"type": "error", "error": {...}}`` bodies. The reply is the mock's usual echo text (or
``mock.text``), cut at ``max_tokens`` words (``stop_reason: max_tokens``) or at the first
stop sequence it contains (``stop_sequence``).

Tool use: when the request has ``tools`` and the last user text contains ``call <name>`` for
one of them, the answer is a short text block and then a ``tool_use`` block for that tool
with input ``{"city": "Paris"}`` (streamed as several ``input_json_delta`` pieces),
``stop_reason: tool_use``.

Usage: ``input_tokens`` is the mock's word count of the system and message texts; system
text blocks that carry ``cache_control`` count as ``cache_read_input_tokens`` instead, as if
the prompt cache already held them.

Per-request ``mock`` controls: ``status`` (an Anthropic error body of the matching type,
e.g. 529 ``overloaded_error``), ``reset``, ``latency_ms``, ``interval_ms``, ``chunks``,
``drop_after``, ``stall_after``/``stall_ms``, ``event_bytes`` and ``text``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

# behaviour imports this module at its top: its names are looked up at call time only.
from fastgw.mock import behaviour as b
from fastgw.mock import responses as r

__all__ = ["TOOL_INPUT", "error_body", "plan_count_tokens", "plan_messages"]

#: The input of every tool call the mock makes.
TOOL_INPUT = {"city": "Paris"}

_JSON = b"application/json"
_encode = msgspec.json.Encoder().encode

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_STATUS_MESSAGES = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
    "timeout_error": "Request timed out",
}


def error_body(etype: str, message: str, request_id: str | None = None) -> bytes:
    """Anthropic's error envelope."""
    return _encode(
        {
            "type": "error",
            "error": {"type": etype, "message": message},
            "request_id": request_id,
        }
    )


def _error(status: int, message: str, etype: str = "invalid_request_error") -> b.Plan:
    return b.Plan(status, [(b"content-type", _JSON)], error_body(etype, message))


class _Tool(msgspec.Struct):
    name: str = ""


class _Message(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]]


class _Request(msgspec.Struct, kw_only=True):
    model: str | None = None
    max_tokens: int | None = None
    messages: list[_Message] | None = None
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    tools: list[_Tool] | None = None
    mock: msgspec.Raw = msgspec.Raw()  # behaviour.Controls, decoded once that module is loaded


_decode = msgspec.json.Decoder(_Request).decode


def _block_text(block: dict[str, Any]) -> str:
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return str(block["text"])
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(_block_text(b) for b in content if isinstance(b, dict))
    return ""


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(t for t in (_block_text(b) for b in content) if t)


def _usage(input_tokens: int, cached: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output_tokens,
    }


def _event(name: bytes, obj: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + _encode(obj) + b"\n\n"


def _json_pieces(obj: dict[str, Any]) -> list[str]:
    text = _encode(obj).decode()
    return [p for p in r.split_text(text, 3) if p]


def plan_count_tokens(state: b.MockState, headers: b.Headers, body: bytes) -> b.Plan:
    """``POST /v1/messages/count_tokens``: the mock's word count of system and messages."""
    try:
        req = _decode(body)
    except msgspec.DecodeError:
        return _error(400, "There was an error parsing the body of your request as JSON.")
    if req.model is None or not req.messages:
        return _error(400, "model and messages are required")
    n = r.estimate_tokens(_text(req.system)) + sum(
        r.estimate_tokens(_text(m.content)) for m in req.messages
    )
    return b._json(200, _encode({"input_tokens": n}), "req_" + state.new_id())


def plan_messages(state: b.MockState, headers: b.Headers, body: bytes) -> b.Plan:
    """Plan the answer to one ``POST /v1/messages``."""
    if not any(name.lower() == b"anthropic-version" for name, _ in headers):
        return _error(400, "anthropic-version: header is required")
    try:
        req = _decode(body)
    except msgspec.ValidationError as exc:
        return _error(400, f"Invalid request body: {exc}")
    except msgspec.DecodeError:
        return _error(400, "There was an error parsing the body of your request as JSON.")
    for field in ("model", "max_tokens", "messages"):
        if getattr(req, field) is None:
            return _error(400, f"{field}: Field required")
    assert req.messages is not None and req.max_tokens is not None
    if not req.messages:
        return _error(400, "messages: at least one message is required")
    if req.max_tokens < 1:
        return _error(400, "max_tokens: Input should be greater than or equal to 1")
    controls = None
    if req.mock:
        try:
            controls = msgspec.json.decode(req.mock, type=b.Controls)
        except msgspec.ValidationError as exc:
            return _error(400, f"mock: {exc}")
    s = b._Settings(state, controls)
    early = b._early(s, state.stats)
    if early is not None:
        if early.status >= 400:
            etype = _STATUS_TYPES.get(early.status)
            if etype is None:
                etype = "api_error" if early.status >= 500 else "invalid_request_error"
            early.body = error_body(etype, _STATUS_MESSAGES[etype], "req_" + state.new_id())
            if early.status == 529:
                early.headers.append((b"retry-after", str(s.controls.retry_after).encode()))
        return early
    return _answer(state, s, req)


def _answer(state: b.MockState, s: b._Settings, req: _Request) -> b.Plan:
    assert req.messages is not None and req.max_tokens is not None
    model = req.model or ""
    user_text = ""
    for m in reversed(req.messages):
        if m.role == "user":
            user_text = _text(m.content)
            break
    prompt = sum(r.estimate_tokens(_text(m.content)) for m in req.messages)
    cached = 0
    if isinstance(req.system, str):
        prompt += r.estimate_tokens(req.system)
    elif req.system is not None:
        for block in req.system:
            n = r.estimate_tokens(_block_text(block))
            if block.get("cache_control") is not None:
                cached += n
            else:
                prompt += n
    tool = None
    for t in req.tools or ():
        if t.name and f"call {t.name}" in user_text:
            tool = t.name
            break
    if tool is not None:
        text, stop_reason = f"Calling {tool}.", "tool_use"
    else:
        text, finish = b._completion_text(s, user_text, req.max_tokens)
        stop_reason = "max_tokens" if finish == "length" else "end_turn"
    stop_sequence = None
    for seq in req.stop_sequences or ():
        at = text.find(seq) if seq else -1
        if at >= 0 and tool is None:
            text, stop_reason, stop_sequence = text[:at], "stop_sequence", seq
            break
    rid = state.new_id()
    mid = "msg_" + rid
    tool_id = "toolu_" + rid
    output = r.estimate_tokens(text) + (len(TOOL_INPUT) * 2 if tool else 0)
    if not req.stream:
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        if tool is not None:
            content.append({"type": "tool_use", "id": tool_id, "name": tool, "input": TOOL_INPUT})
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": _usage(prompt, cached, output),
        }
        plan = b.Plan(
            s.controls.status or 200,
            [(b"content-type", _JSON), (b"request-id", ("req_" + rid).encode())],
            _encode(message),
            latency=s.latency,
        )
        return plan

    first = b"".join(
        [
            _event(
                b"message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": mid,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": _usage(prompt, cached, 1),
                    },
                },
            ),
            _event(
                b"content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            _event(b"ping", {"type": "ping"}),
        ]
    )

    def piece(p: str) -> bytes:
        return _event(
            b"content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": p},
            },
        )

    def end(full: str) -> Iterator[bytes]:
        yield _event(b"content_block_stop", {"type": "content_block_stop", "index": 0})
        if tool is not None:
            yield _event(
                b"content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": tool_id, "name": tool, "input": {}},
                },
            )
            for part in _json_pieces(TOOL_INPUT):
                yield _event(
                    b"content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": part},
                    },
                )
            yield _event(b"content_block_stop", {"type": "content_block_stop", "index": 1})
        out = r.estimate_tokens(full) + (len(TOOL_INPUT) * 2 if tool else 0)
        yield _event(
            b"message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": {"output_tokens": out},
            },
        )
        yield _event(b"message_stop", {"type": "message_stop"})

    return b._stream_plan(state, s, "req_" + rid, b._stream_frames(s, text, first, piece, end))
