"""The mock upstream's Google AI Gemini API: ``POST /v1beta/models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` and ``:batchEmbedContents`` in Gemini's wire format.

Replies follow the OpenAI mock: a greeting echoing the last user text (or ``mock.text``),
cut at ``generationConfig.maxOutputTokens`` words (``finishReason: MAX_TOKENS``). When the
request declares functions and the last user text contains ``call <name>`` for one of them,
the answer is a ``functionCall`` of it with args ``{"city": "Paris"}``. Streams are
``data: {...}\\r\\n\\r\\n`` events (Google ends SSE lines with CRLF). The ``mock`` body field
is honoured as for the OpenAI endpoints (``status`` answers Google's error envelope).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec

from fastgw.mock import behaviour as b
from fastgw.mock import responses as r

PREFIX = "/v1beta/"

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_ROUTE = re.compile(r"^/v1beta/(models|tunedModels)/([^/:]+):([A-Za-z]+)$")


class _Part(msgspec.Struct):
    text: str | None = None


class _Content(msgspec.Struct):
    role: str = "user"
    parts: list[_Part] = []


class _FunctionDeclaration(msgspec.Struct):
    name: str = ""


class _Tool(msgspec.Struct):
    functionDeclarations: list[_FunctionDeclaration] = []


class _GenerationConfig(msgspec.Struct):
    maxOutputTokens: int | None = None
    candidateCount: int | None = None


class _Request(msgspec.Struct):
    contents: list[_Content] = []
    systemInstruction: _Content | None = None
    tools: list[_Tool] = []
    generationConfig: _GenerationConfig | None = None
    requests: list[Any] = []
    mock: msgspec.Raw = msgspec.Raw()  # b.Controls, decoded on use (behaviour imports us)


_decode = msgspec.json.Decoder(_Request).decode
_encode = msgspec.json.Encoder().encode


def error_body(status: int, message: str) -> bytes:
    """Google's error envelope."""
    name = _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return _encode({"error": {"code": status, "message": message, "status": name}})


def _error(status: int, message: str) -> b.Plan:
    return b._json(status, error_body(status, message))


def plan(state: b.MockState, method: str, path: str, query: str, body: bytes) -> b.Plan:
    """Route and plan one request below ``/v1beta/``."""
    m = _ROUTE.match(path.replace("%3A", ":").replace("%3a", ":"))
    if m is None or method != "POST":
        return _error(404, f"Method not found: {method} {path}")
    model, action = m.group(2), m.group(3)
    try:
        req = _decode(body)
        controls = msgspec.json.decode(req.mock, type=b.Controls) if req.mock else None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _error(400, f"Invalid JSON payload received. {exc}")
    s = b._Settings(state, controls)
    early = _early(s, state)
    if early is not None:
        return early
    if action == "batchEmbedContents":
        return _embed(state, s, req)
    if action == "generateContent":
        return _generate(state, s, model, req, stream=False)
    if action == "streamGenerateContent":
        if "alt=sse" not in query.split("&"):
            return _error(400, "The mock serves streamGenerateContent with alt=sse only.")
        return _generate(state, s, model, req, stream=True)
    return _error(404, f"Method not found: {action}")


def _early(s: b._Settings, state: b.MockState) -> b.Plan | None:
    c = s.controls
    if c.reset:
        state.stats.resets += 1
        return b.Plan(0, [], latency=s.latency, reset=True)
    if c.status is not None and c.status >= 400:
        text = f"Simulated error {c.status} from the mock upstream."
        plan = _error(c.status, text)
        plan.latency = s.latency
        return plan
    return None


def _text(content: _Content | None) -> str:
    if content is None:
        return ""
    return " ".join(p.text for p in content.parts if p.text is not None)


def _usage(prompt: int, output: int) -> dict[str, int]:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output,
    }


def _generate(
    state: b.MockState, s: b._Settings, model: str, req: _Request, *, stream: bool
) -> b.Plan:
    if not req.contents:
        return _error(400, "* GenerateContentRequest.contents: contents is not specified\n")
    user_text = ""
    for content in reversed(req.contents):
        if content.role == "user" and _text(content):
            user_text = _text(content)
            break
    prompt_tokens = sum(r.estimate_tokens(_text(c)) for c in req.contents)
    prompt_tokens += r.estimate_tokens(_text(req.systemInstruction))
    names = [d.name for t in req.tools for d in t.functionDeclarations]
    call = next((n for n in names if f"call {n}" in user_text), None)
    cfg = req.generationConfig or _GenerationConfig()
    rid = state.new_id()
    request_id = "req_" + rid

    def chunk(parts: list[dict[str, Any]], finish: str | None, output: int) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            cand["finishReason"] = finish
        return {
            "candidates": [cand],
            "usageMetadata": _usage(prompt_tokens, output),
            "modelVersion": model,
            "responseId": rid,
        }

    if call is not None:
        out = chunk([{"functionCall": {"name": call, "args": {"city": "Paris"}}}], "STOP", 3)
        if not stream:
            return _full(s, out, request_id)
        return b._stream_plan(state, s, request_id, _single(s, _sse(out)))
    text, finish = b._completion_text(s, user_text, cfg.maxOutputTokens)
    gfinish = "MAX_TOKENS" if finish == "length" else "STOP"
    if not stream:
        body = chunk([{"text": text}], gfinish, r.estimate_tokens(text))
        n = max(1, cfg.candidateCount or 1)
        if n > 1:
            first = body["candidates"][0]
            body["candidates"] = [{**first, "index": i} for i in range(n)]
        return _full(s, body, request_id)
    sent: list[str] = []

    def piece(p: str) -> bytes:
        sent.append(p)
        return _sse(chunk([{"text": p}], None, r.estimate_tokens("".join(sent))))

    def end(full: str) -> Iterator[bytes]:
        yield _sse(chunk([{"text": ""}], gfinish, r.estimate_tokens(full)))

    frames = b._stream_frames(s, text, None, piece, end)
    return b._stream_plan(state, s, request_id, frames)


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + _encode(payload) + b"\r\n\r\n"


def _single(s: b._Settings, event: bytes) -> Iterator[b.Frame]:
    if s.controls.drop_after == 0:
        yield 0.0, None
        return
    yield 0.0, event


def _full(s: b._Settings, payload: dict[str, Any], request_id: str) -> b.Plan:
    plan = b._json(200, _encode(payload), request_id)
    plan.latency = s.latency
    return plan


def _embed(state: b.MockState, s: b._Settings, req: _Request) -> b.Plan:
    embeddings = []
    for one in req.requests:
        content = one.get("content", {}) if isinstance(one, dict) else {}
        parts = content.get("parts", []) if isinstance(content, dict) else []
        text = " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
        dims = one.get("outputDimensionality") if isinstance(one, dict) else None
        size = dims if isinstance(dims, int) and dims > 0 else state.options.dimensions
        embeddings.append({"values": r.embedding_vector(text, size)})
    return _full(s, {"embeddings": embeddings}, "req_" + state.new_id())


__all__ = ["PREFIX", "error_body", "plan"]
