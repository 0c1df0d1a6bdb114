"""Micro-benchmark of the SSE core: pure-Python twin vs compiled twin.

Run: ``python bench/bench_core.py [--events N] [--repeat R]``. Prints events/s and MB/s
(best of R runs, time.perf_counter) for framing a realistic OpenAI chat stream fed one upstream
chunk per event and in 16 KiB blocks, for the StreamFilter relay path, and extract_usage
calls/s. The HTTP/1.1 section (``bench_http1``) prints responses/s for a small JSON response
with content-length and MB/s for the chat stream sent chunked. Numbers only; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from types import ModuleType

import msgspec

BLOCK = 16 * 1024


def make_stream(n_events: int) -> list[bytes]:
    """One ``data: {...}\\n\\n`` chunk per event (~200 bytes), usage chunk, ``[DONE]``."""
    words = ["Hello", " world", ",", " this", " is", " a", " streamed", " answer", "."]
    chunks = []
    for i in range(n_events):
        chunk = {
            "id": "chatcmpl-9xKqvZ3hJ2bYtR8wLmNpQs4uV6aB",
            "object": "chat.completion.chunk",
            "created": 1735689600,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": words[i % len(words)]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        chunks.append(b"data: " + msgspec.json.encode(chunk) + b"\n\n")
    usage = {
        "id": "chatcmpl-9xKqvZ3hJ2bYtR8wLmNpQs4uV6aB",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": n_events,
            "total_tokens": 1200 + n_events,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    }
    chunks.append(b"data: " + msgspec.json.encode(usage) + b"\n\n")
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def blocks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def parse_all(impl: ModuleType, chunks: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        parser = impl.SSEParser()
        n = 0
        for chunk in chunks:
            n += len(parser.feed(chunk))
        return n + (parser.flush() is not None)

    return run


def filter_all(impl: ModuleType, chunks: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        filt = impl.StreamFilter(drop_usage_only=True)
        n = 0
        for chunk in chunks:
            n += len(filt.feed(chunk))
        return n + len(filt.flush())

    return run


def usage_calls(impl: ModuleType, data: bytes, calls: int) -> Callable[[], None]:
    extract = impl.extract_usage

    def run() -> None:
        for _ in range(calls):
            extract(data)

    return run


def load_twins() -> list[tuple[str, ModuleType]]:
    twins = [("pure-python", importlib.import_module("fastgw._core._sse_py"))]
    try:
        twins.append(("c-extension", importlib.import_module("fastgw._core._sse_c")))
    except ImportError as exc:
        print(f"(compiled twin not available: {exc})")
    return twins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000, help="events per stream")
    ap.add_argument("--repeat", type=int, default=7, help="runs; the best is reported")
    args = ap.parse_args()

    per_event = make_stream(args.events)
    stream = b"".join(per_event)
    in_blocks = blocks_of(stream, BLOCK)
    n_events = len(per_event)
    mb = len(stream) / 1e6
    usage_data = per_event[-2][len(b"data: ") : -2]
    content_data = per_event[0][len(b"data: ") : -2]
    calls = 100_000
    print(
        f"stream: {n_events} events, {len(stream)} bytes "
        f"(avg {len(stream) / n_events:.0f} B/event); best of {args.repeat}"
    )

    results: dict[str, dict[str, float]] = {}
    for name, impl in load_twins():
        row: dict[str, float] = {}
        cases = [
            ("parse, 1 chunk/event", parse_all(impl, per_event)),
            ("parse, 16 KiB blocks", parse_all(impl, in_blocks)),
            ("filter, 1 chunk/event", filter_all(impl, per_event)),
            ("filter, 16 KiB blocks", filter_all(impl, in_blocks)),
        ]
        print(f"\n[{name}]")
        for label, fn in cases:
            t = best(fn, args.repeat)
            row[label] = n_events / t
            print(f"  {label:<24} {n_events / t:>14,.0f} events/s {mb / t:>10,.1f} MB/s")
        for label, data in (
            ("extract_usage (usage)", usage_data),
            ("extract_usage (none)", content_data),
        ):
            t = best(usage_calls(impl, data, calls), args.repeat)
            row[label] = calls / t
            print(f"  {label:<24} {calls / t:>14,.0f} calls/s")
        results[name] = row

    if len(results) == 2:
        pure, comp = results["pure-python"], results["c-extension"]
        print("\nspeed-up (compiled / pure):")
        for label in pure:
            print(f"  {label:<24} {comp[label] / pure[label]:>8.1f}x")

    bench_http1(per_event, args.repeat)


# === fastgw._core.http1: the upstream response parser ==========================================

JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Wed, 01 Jan 2025 00:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: keep-alive\r\n"
    b"access-control-expose-headers: X-Request-ID\r\n"
    b"openai-organization: org-abc123\r\n"
    b"openai-processing-ms: 412\r\n"
    b"openai-version: 2020-10-01\r\n"
    b"x-ratelimit-limit-requests: 10000\r\n"
    b"x-ratelimit-remaining-requests: 9999\r\n"
    b"x-ratelimit-reset-requests: 6ms\r\n"
    b"x-request-id: req_0123456789abcdef0123456789abcdef\r\n"
    b"strict-transport-security: max-age=31536000; includeSubDomains; preload\r\n"
    b"cf-cache-status: DYNAMIC\r\n"
    b"Server: cloudflare\r\n"
    b"cf-ray: 8f0e1d2c3b4a5968-AMS\r\n"
    b'alt-svc: h3=":443"; ma=86400\r\n'
    b"\r\n"
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)


def json_response() -> bytes:
    body = msgspec.json.encode(
        {
            "id": "chatcmpl-9xKqvZ3hJ2bYtR8wLmNpQs4uV6aB",
            "object": "chat.completion",
            "created": 1735689600,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello! How can I help?"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        }
    )
    return JSON_HEAD % len(body) + body


def responses(impl: ModuleType, wire: bytes, count: int) -> Callable[[], int]:
    """One parser for a keep-alive connection: feed a whole response, reset, again."""

    def run() -> int:
        parser = impl.ResponseParser()
        n = 0
        for _ in range(count):
            n += len(parser.feed(wire))
            parser.reset()
        return n

    return run


def dechunk(impl: ModuleType, pieces: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        parser = impl.ResponseParser()
        n = 0
        for piece in pieces:
            n += len(parser.feed(piece))
        assert parser.complete
        return n

    return run


def load_http1_twins() -> list[tuple[str, ModuleType]]:
    twins = [("pure-python", importlib.import_module("fastgw._core._http1_py"))]
    try:
        twins.append(("c-extension", importlib.import_module("fastgw._core._http1_c")))
    except ImportError as exc:
        print(f"(compiled twin not available: {exc})")
    return twins


def bench_http1(per_event: list[bytes], repeat: int) -> None:
    """Responses/s for a small JSON response; MB/s de-chunking the chat stream."""
    wire = json_response()
    count = 20_000
    # the upstream sends one chunk per event; TCP reads see one chunk per read or 16 KiB blocks
    chunked_body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in per_event) + b"0\r\n\r\n"
    per_chunk = [SSE_HEAD] + [b"%x\r\n%s\r\n" % (len(e), e) for e in per_event] + [b"0\r\n\r\n"]
    stream = SSE_HEAD + chunked_body
    mb = len(stream) / 1e6
    n_headers = JSON_HEAD.count(b"\r\n") - 2
    print(
        f"\nhttp1: JSON response {len(wire)} bytes ({n_headers} headers); "
        f"chunked stream {len(stream)} bytes; best of {repeat}"
    )
    results: dict[str, dict[str, float]] = {}
    for name, impl in load_http1_twins():
        row: dict[str, float] = {}
        print(f"\n[{name}]")
        t = best(responses(impl, wire, count), repeat)
        row["JSON response, 1 feed"] = count / t
        print(f"  {'JSON response, 1 feed':<30} {count / t:>14,.0f} responses/s")
        for label, pieces in (
            ("chunked, 1 chunk/read", per_chunk),
            ("chunked, 16 KiB reads", blocks_of(stream, BLOCK)),
            ("chunked, 1 KiB reads", blocks_of(stream, 1024)),
        ):
            t = best(dechunk(impl, pieces), repeat)
            row[label] = mb / t
            print(f"  {label:<30} {mb / t:>14,.1f} MB/s")
        results[name] = row
    if len(results) == 2:
        pure, comp = results["pure-python"], results["c-extension"]
        print("\nspeed-up (compiled / pure):")
        for label in pure:
            print(f"  {label:<30} {comp[label] / pure[label]:>8.1f}x")


if __name__ == "__main__":
    main()
