"""Pure builders of OpenAI wire-format bytes for the mock upstream.

Nothing here does I/O or reads the clock: ids and timestamps are parameters, so every
function is deterministic and unit-testable. The shapes follow the OpenAI API as the
official SDK types describe it (``ChatCompletion``, ``ChatCompletionChunk``, ``Completion``,
``CreateEmbeddingResponse``, ``Model`` list and the error envelope).

Token counts are a documented estimate, not a tokenizer: one token per whitespace-separated
word (:func:`estimate_tokens`), so tests can predict ``usage`` exactly.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

__all__ = [
    "DONE",
    "REPLY_PREFIX",
    "SYSTEM_FINGERPRINT",
    "USER_TEXT_LIMIT",
    "chat_chunk",
    "chat_completion",
    "content_text",
    "embedding_vector",
    "embeddings",
    "error_body",
    "error_for_status",
    "estimate_tokens",
    "models_list",
    "reply_text",
    "split_text",
    "sse",
    "text_completion",
    "text_completion_chunk",
    "usage",
    "usage_chunk",
]

REPLY_PREFIX = "Hello from the fastgw mock upstream. You said: "
USER_TEXT_LIMIT = 200
SYSTEM_FINGERPRINT = "fp_fastgw_mock"
DONE = b"data: [DONE]\n\n"

_encode = msgspec.json.Encoder().encode


def estimate_tokens(text: str) -> int:
    """The mock's token estimate: the number of whitespace-separated words."""
    return len(text.split())


def content_text(content: Any) -> str:
    """Text of a chat message ``content``: a string, or the text parts of a parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(parts)
    return ""


def reply_text(user_text: str) -> str:
    """The deterministic reply to a prompt: a fixed greeting echoing (up to 200 chars of) it."""
    return REPLY_PREFIX + user_text[:USER_TEXT_LIMIT]


def split_text(text: str, n: int) -> list[str]:
    """Split ``text`` into exactly ``n`` (>= 1) consecutive pieces of near-equal length.

    Pieces are empty only when ``text`` has fewer than ``n`` characters.
    """
    n = max(1, n)
    q, r = divmod(len(text), n)
    pieces = []
    start = 0
    for i in range(n):
        end = start + q + (1 if i < r else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def sse(payload: bytes) -> bytes:
    """One server-sent event carrying ``payload`` as its data line."""
    return b"data: " + payload + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The ``usage`` object of chat and text completions."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# -- chat completions -------------------------------------------------------------------------


def chat_completion(
    *,
    id: str,
    created: int,
    model: str,
    content: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
) -> bytes:
    """A non-streamed ``chat.completion`` response body (with ``tool_calls``: a tool call
    answer, ``content`` null)."""
    return _encode(
        {
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None if tool_calls else content,
                        "refusal": None,
                        "annotations": [],
                        **({"tool_calls": tool_calls} if tool_calls else {}),
                    },
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage(prompt_tokens, completion_tokens),
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
    )


def chat_chunk(
    *,
    id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    include_usage: bool = False,
) -> bytes:
    """One ``chat.completion.chunk`` stream event (``data: {...}\\n\\n``).

    With ``include_usage`` (the request's ``stream_options.include_usage``) the chunk carries
    ``"usage": null`` like OpenAI's; the usage itself comes in :func:`usage_chunk`.
    """
    obj: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:
        obj["usage"] = None
    return sse(_encode(obj))


def usage_chunk(
    *,
    id: str,
    created: int,
    model: str,
    object: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> bytes:
    """The extra last event of an ``include_usage`` stream: ``choices: []`` plus ``usage``.

    ``object`` is ``"chat.completion.chunk"`` or ``"text_completion"``.
    """
    return sse(
        _encode(
            {
                "id": id,
                "object": object,
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [],
                "usage": usage(prompt_tokens, completion_tokens),
            }
        )
    )


# -- legacy text completions ------------------------------------------------------------------


def text_completion(
    *,
    id: str,
    created: int,
    model: str,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
) -> bytes:
    """A non-streamed legacy ``text_completion`` response body."""
    return _encode(
        {
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": usage(prompt_tokens, completion_tokens),
        }
    )


def text_completion_chunk(
    *,
    id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None = None,
    include_usage: bool = False,
) -> bytes:
    """One legacy ``text_completion`` stream event."""
    obj: dict[str, Any] = {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:
        obj["usage"] = None
    return sse(_encode(obj))


# -- embeddings -------------------------------------------------------------------------------


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit-length vector for ``text``; every value is exactly a float32."""
    dimensions = max(1, dimensions)
    seed = text.encode()
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.blake2b(seed + counter.to_bytes(4, "little"), digest_size=64).digest()
        counter += 1
    ints = struct.unpack(f"<{dimensions}I", raw[: dimensions * 4])
    values = [(i / 0xFFFFFFFF) * 2.0 - 1.0 for i in ints]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def embeddings(
    *,
    model: str,
    inputs: Sequence[str],
    dimensions: int,
    encoding_format: str = "float",
) -> bytes:
    """A ``list`` of ``embedding`` objects; ``encoding_format="base64"`` packs little-endian
    float32 values in base64 like OpenAI does."""
    data: list[dict[str, Any]] = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, dimensions)
        embedding: list[float] | str
        if encoding_format == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(estimate_tokens(text) for text in inputs)
    return _encode(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


# -- models and errors ------------------------------------------------------------------------


def models_list(model_ids: Iterable[str], *, created: int) -> bytes:
    """The ``GET /v1/models`` body."""
    return _encode(
        {
            "object": "list",
            "data": [
                {"id": mid, "object": "model", "created": created, "owned_by": "fastgw-mock"}
                for mid in model_ids
            ],
        }
    )


def error_body(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    """OpenAI's error envelope ``{"error": {"message", "type", "param", "code"}}``."""
    return _encode({"error": {"message": message, "type": type, "param": param, "code": code}})


_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request (simulated by the mock upstream).", "invalid_request_error", None),
    401: (
        "Incorrect API key provided (simulated by the mock upstream).",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: (
        "You are not allowed to do this (simulated by the mock upstream).",
        "permission_error",
        None,
    ),
    404: (
        "The model does not exist (simulated by the mock upstream).",
        "invalid_request_error",
        "model_not_found",
    ),
    408: ("Request timed out (simulated by the mock upstream).", "timeout_error", None),
    409: ("Conflict (simulated by the mock upstream).", "invalid_request_error", None),
    413: ("Request too large (simulated by the mock upstream).", "invalid_request_error", None),
    422: ("Unprocessable request (simulated by the mock upstream).", "invalid_request_error", None),
    429: (
        "Rate limit reached (simulated by the mock upstream).",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request (simulated by the mock upstream).",
        "server_error",
        None,
    ),
    502: ("Bad gateway (simulated by the mock upstream).", "server_error", None),
    503: (
        "The engine is currently overloaded (simulated by the mock upstream).",
        "server_error",
        "engine_overloaded",
    ),
    504: ("Gateway timeout (simulated by the mock upstream).", "server_error", None),
}


def error_for_status(status: int) -> bytes:
    """An OpenAI-shaped error body that fits the HTTP ``status``."""
    found = _STATUS_ERRORS.get(status)
    if found is None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        found = (f"Simulated error {status} from the mock upstream.", kind, None)
    message, kind, code = found
    return error_body(message, kind, None, code)
