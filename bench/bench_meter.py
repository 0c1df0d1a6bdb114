"""What metering costs per request and per stream event, in-process (best of 7, one core):
the prompt estimate of chat bodies of several sizes, the context-window check, the cost of
an answer, and the text count of one relayed stream event.

    taskset -c 0 python bench/bench_meter.py

Compare with a request through the server (``bench/RESULTS.md``: ~100-150 µs of one core)
and with the relay's own cost per event; ``bench/ab_trees.py`` measures both end to end.
"""

from __future__ import annotations

import json
import tempfile
import timeit
from collections.abc import Callable

from fastgw.config import validate
from fastgw.policy.meter import Meter, count_delivered, estimate_prompt, format_usd
from fastgw.routing.router import Router


def best(fn: Callable[[], object], number: int) -> float:
    """µs per call, best of 7 rounds."""
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def best_estimate(body: bytes) -> float:
    return best(lambda: estimate_prompt(body), 2000)


def chat_body(kib: int) -> bytes:
    words = " ".join(f"word{i}" for i in range(kib * 128))
    text = words[: kib * 1024 - 60]
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = validate(
            {
                "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "models": {"m": {"targets": [{"provider": "p", "model": "gpt-4o-mini"}]}},
                "catalog": {"path": f"{tmp}/catalog.json"},
            },
            env={},
        )
        meter = Meter(cfg)
        targets = Router(cfg).exact["m"].leaves
        rows: list[tuple[str, float]] = []
        for kib in (1, 4, 16):
            rows.append((f"estimate_prompt, {kib} KiB chat body", best_estimate(chat_body(kib))))
        rows.append(
            (
                "may_overflow (skips the estimate)",
                best(lambda: meter.may_overflow(targets, "m", 4096), 200000),
            )
        )
        rows.append(
            (
                "fitting (context window check)",
                best(lambda: meter.fitting(targets, "m", 900), 200000),
            )
        )
        t = targets[0]
        rows.append(
            (
                "bill + format_usd (cost of an answer)",
                best(lambda: format_usd(meter.bill(t, "m", (900, 120, 1020, 0)) or 0.0), 200000),
            )
        )
        event = (
            b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
            b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" hello"},'
            b'"finish_reason":null}],"usage":null}\n\n'
        )
        rows.append(
            ("count_delivered, one stream event", best(lambda: count_delivered(event), 200000))
        )
    print("| step | µs |\n|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
