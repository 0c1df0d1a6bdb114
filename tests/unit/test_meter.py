"""Metering arithmetic (fastgw/policy/meter.py) and the usage readers of relayed answers:
context-window filtering with the estimator's bound, the budget's worst-case cost, cost to
1e-9 USD, Responses API and Anthropic Messages usage."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.api.errors import GatewayError
from fastgw.catalog import cost
from fastgw.config import validate
from fastgw.policy.meter import (
    ESTIMATE_BOUND,
    OVERFLOW_FACTOR,
    Meter,
    estimate_prompt,
    format_usd,
    responses_stream_usage,
    responses_usage,
)
from fastgw.providers.anthropic import MessagesUsage, message_usage
from fastgw.routing.router import Router, Target


def meter_and_router(tmp_path: Path) -> tuple[Meter, Router]:
    cfg = validate(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": {
                "small": {"targets": [{"provider": "p", "model": "small-model"}]},
                "chain": {
                    "targets": [
                        {"provider": "p", "model": "small-model"},
                        {"provider": "p", "model": "big-model"},
                        {"provider": "p", "model": "nowhere"},
                    ]
                },
            },
            "catalog": {
                "path": str(tmp_path / "catalog.json"),
                "watch": 0.001,
                "models": {
                    "small-model": {"input": 1.0, "output": 2.0, "context_window": 1000},
                    "big-model": {
                        "input": 10.0,
                        "output": 30.0,
                        "cached_input": 1.0,
                        "context_window": 100000,
                        "max_output_tokens": 500,
                    },
                },
            },
        },
        env={},
    )
    return Meter(cfg), Router(cfg)


def test_context_window_filter_respects_the_estimators_bound(tmp_path: Path) -> None:
    meter, router = meter_and_router(tmp_path)
    small = router.exact["small"].leaves
    # an estimate within the bound above the window may still fit: not refused
    assert meter.fitting(small, "small", int(1000 / (1 - ESTIMATE_BOUND))) == small
    with pytest.raises(GatewayError) as e:
        meter.fitting(small, "small", int(1000 / (1 - ESTIMATE_BOUND)) + 2)
    assert e.value.status == 400 and e.value.code == "context_length_exceeded"
    # a body this small cannot hold a prompt over the window: no need to estimate it
    assert not meter.may_overflow(small, "small", 500)
    assert meter.may_overflow(small, "small", 1000)
    chain = router.exact["chain"].leaves
    left = meter.fitting(chain, "chain", 5000)
    assert [t.model for t in left] == ["big-model", "nowhere"]  # unknown windows stay


def test_max_cost_is_the_dearest_target(tmp_path: Path) -> None:
    meter, router = meter_and_router(tmp_path)
    chain = router.exact["chain"].leaves
    # big-model: 100 prompt tokens and its max output of 500
    assert meter.max_cost(chain, "chain", 100, None) == pytest.approx(
        10.0 / 1e6 * 100 + 30.0 / 1e6 * 500, abs=1e-12
    )
    assert meter.max_cost(chain, "chain", 100, 10) == pytest.approx(
        10.0 / 1e6 * 100 + 30.0 / 1e6 * 10, abs=1e-12
    )


def test_bill_to_a_billionth_of_a_dollar(tmp_path: Path) -> None:
    meter, router = meter_and_router(tmp_path)
    big = router.exact["chain"].leaves[1]
    usd = meter.bill(big, "chain", (1234, 567, 1801, 1000))
    want = 10.0 / 1e6 * 234 + 1.0 / 1e6 * 1000 + 30.0 / 1e6 * 567
    assert usd is not None and abs(usd - want) < 1e-9
    assert abs(float(format_usd(usd)) - want) < 1e-9
    nowhere = router.exact["chain"].leaves[2]
    assert meter.bill(nowhere, "chain", (1, 1, 2, 0)) is None
    assert meter.unpriced == 1 and meter.requests == 2


def test_a_new_catalog_is_used_at_once(tmp_path: Path) -> None:
    meter, router = meter_and_router(tmp_path)
    small = router.exact["small"].leaves[0]
    assert meter.bill(small, "small", (1000000, 0, 1000000, 0)) == pytest.approx(1.0)
    path = tmp_path / "catalog.json"
    path.write_text(
        json.dumps(
            {"version": 1, "models": {"other": {"input": 1, "output": 1, "context_window": 9}}}
        )
    )
    time.sleep(0.01)  # past the watch interval
    assert meter.watcher.check(meter.holder)
    assert meter.entry("other") is not None  # the old lookups were forgotten


def test_estimate_prompt_is_never_zero() -> None:
    assert estimate_prompt(b"") == 1
    assert estimate_prompt(b'{"messages":[{"role":"user","content":"hello there"}]}') > 2


def test_responses_api_usage() -> None:
    body = {
        "usage": {
            "input_tokens": 30,
            "output_tokens": 7,
            "input_tokens_details": {"cached_tokens": 10},
        }
    }
    assert responses_usage(json.dumps(body).encode()) == (30, 7, 37, 10)
    event = {
        "type": "response.completed",
        "response": {"usage": {"input_tokens": 5, "output_tokens": 2}},
    }
    data = (
        b'event: response.output_text.delta\ndata: {"delta":"x"}\n\n'
        b"event: response.completed\ndata: %s\n\n" % json.dumps(event).encode()
    )
    assert responses_stream_usage(data) == (5, 2, 7, 0)
    assert responses_usage(b"not json") is None
    assert responses_usage(b'{"usage":null}') is None


def test_anthropic_messages_usage() -> None:
    body: dict[str, Any] = {
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_read_input_tokens": 6,
            "cache_creation_input_tokens": 2,
        }
    }
    assert message_usage(json.dumps(body).encode()) == (18, 4, 22, 6)
    u = MessagesUsage()
    u.event(b'{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}')
    assert u.usage == (12, 1, 13, 0)
    u.event(b'{"type":"content_block_delta","delta":{"type":"text_delta","text":"hi"}}')
    u.event(b'{"type":"message_delta","usage":{"output_tokens":9}}')
    assert u.usage == (12, 9, 21, 0)
    u.event(b'garbage with "usage"')
    assert u.usage == (12, 9, 21, 0)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
        max_leaves=30,
    ),
    st.booleans(),
)
def test_the_estimate_never_exceeds_the_overflow_factor(doc: object, ascii_only: bool) -> None:
    raw = json.dumps(doc, ensure_ascii=ascii_only, separators=(",", ":")).encode()
    assert estimate_prompt(raw) <= max(1, OVERFLOW_FACTOR * len(raw))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 10**7),
    st.integers(0, 10**6),
    st.integers(0, 10**7),
    st.sampled_from(["small-model", "big-model", "gpt-4o", "gemini-2.5-pro"]),
)
def test_bill_is_the_catalogs_cost_bit_for_bit(
    tmp_path_factory: pytest.TempPathFactory, prompt: int, completion: int, cached: int, model: str
) -> None:
    meter, _ = meter_and_router(tmp_path_factory.mktemp("m"))
    entry = meter.entry(model)
    assert entry is not None
    target = cast(Target, SimpleNamespace(model=model))  # bill reads the upstream model only
    billed = meter.bill(target, "any", (prompt, completion, prompt + completion, cached))
    assert billed == cost(entry, prompt, completion, min(cached, prompt))


def test_a_responses_stream_counts_its_delta_text_once(tmp_path: Path) -> None:
    from fastgw.api.openai import Endpoint, parse_request
    from fastgw.app import _Bill

    meter, _ = meter_and_router(tmp_path)
    sent = SimpleNamespace(delivered=0, relay=None, resp=SimpleNamespace(status=200))
    target = cast(Target, SimpleNamespace(model="big-model"))
    req = parse_request(Endpoint.RESPONSES, b'{"model":"m","input":"hi","stream":true}')
    bill = _Bill(meter, target, "m", 30, cast(Any, sent), req, None)
    assert bill.responses
    deltas = b"".join(
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"delta":"hello there world "}\n\n'
        for _ in range(10)
    )
    bill.relayed(deltas)
    counted = sent.delivered
    assert counted >= 20  # the text of the deltas
    done = (
        b'event: response.output_text.done\ndata: {"type":"response.output_text.done",'
        b'"text":"' + b"hello there world " * 10 + b'"}\n\n'
    )
    bill.relayed(done)
    assert sent.delivered == counted  # the closing events repeat the text: not counted again
    bill.settle(None, cut=True)  # cut before response.completed: prompt estimate + deltas
    assert bill.usage == (30, counted, 30 + counted, 0) and bill.estimated


def test_an_anthropic_stream_is_final_only_after_message_delta() -> None:
    u = MessagesUsage()
    u.event(b'{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}')
    assert u.usage == (12, 1, 13, 0) and not u.final  # provisional: output is 1 here
    u.event(b'{"type":"message_delta","usage":{"output_tokens":9}}')
    assert u.final


def test_a_swapped_catalog_is_used_from_the_next_call(tmp_path: Path) -> None:
    """The meter forgets what it derived from a catalog (entries, prices, the smallest
    window and the estimates it fits) in the swap itself."""
    from fastgw.catalog import ModelPatch, apply

    meter, router = meter_and_router(tmp_path)
    found = router.resolve("small")
    assert found is not None
    target = found[0].targets[0]
    usage = (1000, 0, 1000, 0)
    assert meter.bill(target, "small", usage) == pytest.approx(0.001)  # $1/M input
    assert meter.fitting([target], "small", 1100) == [target]  # 935 < 1000
    before = (meter.smallest_window, meter.fits_estimate, meter.always_fits)
    assert before[1] * 0.85 <= before[0] < (before[1] + 1) * 0.85
    old = meter.holder.current
    meter.holder.swap(apply(old, {"small-model": ModelPatch(input=2.0, context_window=500)}))
    assert meter.bill(target, "small", usage) == pytest.approx(0.002)
    assert meter.smallest_window == 500 and meter.fits_estimate == 588  # 588 * 0.85 = 499.8
    assert meter.always_fits < before[2]
    with pytest.raises(GatewayError) as e:
        meter.fitting([target], "small", 1100)
    assert e.value.code == "context_length_exceeded"
