"""The gateway app's own cost per request, in-process: no server, no network.

The ASGI app is called directly under uvloop with a stub upstream client that answers every
request at once with a fixed chat completion, so what is timed is the Python path of one
non-streamed request: body read, validation, routing, request rewrite, the answer's headers.
Deterministic enough to compare two trees where the server benchmarks drown a difference of
a few microseconds in noise:

    taskset -c 0 python bench/bench_app.py                 # this tree
    taskset -c 0 python bench/bench_app.py /path/to/other  # another checkout (its fastgw)

``--variant`` times governance too: ``key`` (a virtual key with access rules), ``local`` and
``redis`` (the key plus rpm and tpm limits on that state backend; ``redis`` needs one on
127.0.0.1:6379). With ``--concurrency N`` N requests run at once, and the figure is the
process's CPU time per request (``time.process_time``), so time spent waiting for Redis is
not counted but the client's work is, and concurrent calls can share a round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
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

    async def close(self) -> None:
        pass


_KEY = "sk-fastgw-bench-key-0123456789abcdef"
VARIANTS = ("plain", "key", "local", "redis")


def _config(variant: str, state_path: str, model: str = "x") -> dict[str, Any]:
    raw: dict[str, Any] = {
        "providers": {"m": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}},
        "models": {"m": {"targets": [{"provider": "m", "model": model}]}},
    }
    if variant == "plain":
        return raw
    key: dict[str, Any] = {
        "name": "bench",
        "key": _KEY,
        "models": ["m", "other-*"],
        "deny_models": ["m-secret"],
        "max_tokens": 4096,
    }
    if variant in ("local", "redis"):
        key["limits"] = {"rpm": 10**9, "tpm": 10**12}
        raw["state"] = (
            {"backend": "local", "path": state_path}
            if variant == "local"
            else {"backend": "redis", "prefix": f"fastgw-bench-{uuid.uuid4().hex[:8]}:"}
        )
    raw["keys"] = [key]
    return raw


async def _run(
    rounds: int, per_round: int, variant: str, concurrency: int, model: str = "x"
) -> float:
    from fastgw.app import Gateway
    from fastgw.config import validate

    tmp = tempfile.TemporaryDirectory()
    from fastgw.config import GatewayConfig

    raw = _config(variant, f"{tmp.name}/state", model)
    fields = GatewayConfig.__struct_fields__  # an older tree may not have these sections
    # the time-driven work (the ledger's flush, the catalog file's check) is left out: under
    # a profiler it would be charged to far fewer requests than it serves at full speed
    if "catalog" in fields:
        raw["catalog"] = {"path": f"{tmp.name}/catalog.json", "watch": 300}
    if "budgets" in fields:
        raw["budgets"] = {"ledger": f"{tmp.name}/ledger.sqlite", "flush_interval": 300}
    cfg = validate(raw, env={})
    app: Any = Gateway(cfg, "bench")
    await app.startup()
    app.client = _Client()
    app.ready = True
    loop = asyncio.get_running_loop()
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_REQUEST)).encode()),
        (b"user-agent", b"bench"),
        (b"accept", b"*/*"),
    ]
    if variant != "plain":
        headers.append((b"authorization", b"Bearer " + _KEY.encode()))
    scope = {
        "type": "http",
        "path": "/v1/chat/completions",
        "method": "POST",
        "headers": headers,
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

    async def worker(n: int) -> None:
        for _ in range(n):
            await app(scope, receiver(), send)

    async def batch(n: int) -> None:
        if concurrency == 1:
            await worker(n)
        else:
            await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))

    clock = time.perf_counter if concurrency == 1 else time.process_time
    try:
        await batch(2000)
        best = float("inf")
        for _ in range(rounds):
            t = clock()
            await batch(per_round)
            best = min(best, (clock() - t) / per_round)
    finally:
        await app.shutdown()
        tmp.cleanup()
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", nargs="?", help="a checkout whose fastgw to time (default: this)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20000, help="per round")
    parser.add_argument("--variant", choices=(*VARIANTS, "all"), default="plain")
    parser.add_argument("--concurrency", type=int, default=1, help="requests at once")
    parser.add_argument(
        "--model", default="x", help="the upstream model (one the catalog prices: gpt-4o-mini)"
    )
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    import uvloop

    where = args.tree or "this tree"
    what = "CPU" if args.concurrency > 1 else "wall"
    variants = VARIANTS if args.variant == "all" else (args.variant,)
    base = None
    for v in variants:
        us = uvloop.run(_run(args.rounds, args.requests, v, args.concurrency, args.model))
        base = base or us
        print(
            f"{where} [{v:>5}]: {us:6.2f} µs {what} per request ({us / base:5.1%} of the first;"
            f" app only, {args.concurrency} at once, best of {args.rounds} rounds)"
        )


if __name__ == "__main__":
    main()
