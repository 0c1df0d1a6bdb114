"""Stream translation on the hot path: events/s per core for each provider translator.

    python bench/bench_translate.py

Each case feeds a realistic recorded-shape stream, already framed (the compiled SSE parser's
events), through one translator: Anthropic → OpenAI chunks (an Anthropic-kind target behind
the OpenAI API), Bedrock's binary event stream → OpenAI chunks (framing included, 4 KiB
reads), Gemini → OpenAI chunks, and OpenAI chunks → Anthropic events (the ``/v1/messages``
ingress in front of an OpenAI-shaped target). Best of several runs; no
assertions on time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from fastgw._core.eventstream import encode_message
from fastgw._core.sse import SSEEvent, SSEParser
from fastgw.api.anthropic import OpenAIToAnthropicStream
from fastgw.api.openai import Endpoint, parse_request
from fastgw.config import validate
from fastgw.providers.base import ByteStreamProvider
from fastgw.providers.registry import build_provider, kinds

N = 2000  # content events per stream
REQ = parse_request(
    Endpoint.CHAT,
    b'{"model":"m","stream":true,"stream_options":{"include_usage":true},'
    b'"messages":[{"role":"user","content":"hi"}]}',
)


def frame(raw: bytes) -> list[SSEEvent]:
    events = SSEParser().feed(raw)
    return events


def anthropic_stream() -> list[SSEEvent]:
    def ev(name: str, obj: object) -> bytes:
        return f"event: {name}\ndata: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()

    out = [
        ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-sonnet-4-5",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                },
            },
        ),
        ev(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hello, world! "},
    }
    out += [ev("content_block_delta", delta)] * N
    out += [
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": N},
            },
        ),
        ev("message_stop", {"type": "message_stop"}),
    ]
    return frame(b"".join(out))


def gemini_stream() -> list[SSEEvent]:
    chunk = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "Hello, world! "}]}, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 25, "candidatesTokenCount": 3, "totalTokenCount": 28},
        "modelVersion": "gemini-2.5-flash",
    }
    line = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\r\n\r\n"
    return frame(line * N)


def openai_stream() -> list[SSEEvent]:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "Hello, world! "}, "finish_reason": None}],
    }
    line = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    return frame(line * N + b"data: [DONE]\n\n")


def bedrock_stream() -> list[bytes]:
    """ConverseStream's binary framing, cut into 4 KiB reads as a socket would deliver it."""

    def msg(event: str, obj: object) -> bytes:
        headers: dict[str, bool | int | bytes | str] = {
            ":event-type": event,
            ":content-type": "application/json",
            ":message-type": "event",
        }
        return encode_message(headers, json.dumps(obj, separators=(",", ":")).encode())

    data = msg("messageStart", {"role": "assistant"})
    delta = msg("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello, world! "}})
    data += delta * N
    data += msg("contentBlockStop", {"contentBlockIndex": 0})
    data += msg("messageStop", {"stopReason": "end_turn"})
    data += msg(
        "metadata",
        {
            "usage": {"inputTokens": 25, "outputTokens": N, "totalTokens": N + 25},
            "metrics": {"latencyMs": 100},
        },
    )
    return [data[i : i + 4096] for i in range(0, len(data), 4096)]


def best(fn: Callable[[], object], repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    cfg = validate(
        {
            "providers": {
                "a": {"kind": "anthropic", "api_key": "k"},
                "g": {"kind": "gemini", "api_key": "k"},
                "b": {
                    "kind": "bedrock",
                    "aws_region": "us-east-1",
                    "aws_access_key_id": "AKID",
                    "aws_secret_access_key": "s",
                },
            }
        },
        env={},
        kinds=kinds(),
    )
    anth = build_provider("a", cfg.providers["a"])
    bedrock = build_provider("b", cfg.providers["b"])
    assert isinstance(bedrock, ByteStreamProvider)
    b_chunks = bedrock_stream()
    b_events = N + 4
    gem = build_provider("g", cfg.providers["g"])
    cases: list[tuple[str, int, Callable[[], object]]]

    a_events = anthropic_stream()
    g_events = gemini_stream()
    o_events = openai_stream()

    def run_anthropic() -> None:
        tr = anth.new_stream(REQ, "claude-sonnet-4-5")
        for e in a_events:
            tr.feed(e)
        tr.finish()

    def run_gemini() -> None:
        tr = gem.new_stream(REQ, "gemini-2.5-flash")
        for e in g_events:
            tr.feed(e)
        tr.finish()

    def run_ingress() -> None:
        tr = OpenAIToAnthropicStream("m", "1")
        for e in o_events:
            tr.feed(e)
        tr.finish()

    def run_bedrock() -> None:
        tr = bedrock.new_byte_stream(REQ, "anthropic.claude")
        for c in b_chunks:
            tr.feed(c)
        tr.flush()

    cases = [
        ("Anthropic -> OpenAI chunks", len(a_events), run_anthropic),
        ("Bedrock event-stream -> OpenAI chunks", b_events, run_bedrock),
        ("Gemini -> OpenAI chunks", len(g_events), run_gemini),
        ("OpenAI chunks -> Anthropic (ingress)", len(o_events), run_ingress),
    ]
    print(f"stream translation, {N} content events per stream, best of 7")
    for name, count, fn in cases:
        t = best(fn)
        rate = count / t
        print(f"  {name:40s} {rate:>12,.0f} events/s   {1e6 / rate:6.2f} µs/event")


if __name__ == "__main__":
    main()
