"""The gateway app's own cost per request, in-process: no server, no network.

The ASGI app is called directly under uvloop with a stub upstream client that answers every
request at once with a fixed chat completion, so what is timed is the Python path of one
non-streamed request: body read, validation, routing, request rewrite, the answer's headers.
Deterministic enough to compare two trees where the server benchmarks drown a difference of
a few microseconds in noise:

    taskset -c 0 python bench/bench_app.py                 # this tree
    taskset -c 0 python bench/bench_app.py /path/to/other  # another checkout (its fastgw)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, ClassVar

_BODY = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"x","choices":'
    b'[{"index":0,"message":{"role":"assistant","content":"hello there"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,'
    b'"total_tokens":5}}'
)
_REQUEST = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


class _Response:
    status = 200
    body = _BODY
    headers: ClassVar[list[tuple[bytes, bytes]]] = [(b"content-type", b"application/json")]

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def close(self) -> None:
        pass

    def release(self) -> None:
        pass


class _Client:
    async def request(self, origin: Any, data: bytes, timeouts: Any, stream: bool) -> _Response:
        return _Response()


async def _run(rounds: int, per_round: int) -> float:
    from fastgw.app import Gateway
    from fastgw.config import validate

    cfg = validate(
        {
            "providers": {
                "m": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}
            },
            "models": {"m": {"targets": [{"provider": "m", "model": "x"}]}},
        },
        env={},
    )
    app: Any = Gateway(cfg, "bench")
    app.client = _Client()
    app.ready = True
    loop = asyncio.get_running_loop()
    scope = {
        "type": "http",
        "path": "/v1/chat/completions",
        "method": "POST",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_REQUEST)).encode()),
            (b"user-agent", b"bench"),
            (b"accept", b"*/*"),
        ],
    }
    first = {"type": "http.request", "body": _REQUEST, "more_body": False}

    async def send(message: Any) -> None:
        pass

    def receiver() -> Any:
        calls = 0

        def receive() -> Any:  # a future, as Granian's receive() returns
            nonlocal calls
            calls += 1
            fut = loop.create_future()
            if calls == 1:
                fut.set_result(first)
            return fut

        return receive

    for _ in range(2000):
        await app(scope, receiver(), send)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(per_round):
            await app(scope, receiver(), send)
        best = min(best, (time.perf_counter() - t) / per_round)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", nargs="?", help="a checkout whose fastgw to time (default: this)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20000, help="per round")
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    import uvloop

    us = uvloop.run(_run(args.rounds, args.requests))
    where = args.tree or "this tree"
    print(f"{where}: {us:.2f} µs per request (app only, best of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
