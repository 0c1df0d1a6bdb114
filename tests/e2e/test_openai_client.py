"""The official ``openai`` client (sync and async, stream and not) against the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.servers import Proc, start_gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo() -> Iterator[Proc]:
    gw = start_gateway(None)
    yield gw
    gw.stop()


def client(gw: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)


def aclient(gw: Proc) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)


MSG: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello from the sdk"}
]


def test_demo_models_and_chat(demo: Proc) -> None:
    c = client(demo)
    assert [m.id for m in c.models.list()] == ["fastgw-demo"]
    resp = c.chat.completions.create(model="fastgw-demo", messages=MSG)
    assert "hello from the sdk" in (resp.choices[0].message.content or "")
    assert resp.usage is not None and resp.usage.total_tokens > 0


def test_demo_stream(demo: Proc) -> None:
    c = client(demo)
    stream = c.chat.completions.create(model="fastgw-demo", messages=MSG, stream=True)
    chunks = list(stream)
    text = "".join((ch.choices[0].delta.content or "") for ch in chunks if ch.choices)
    assert "hello from the sdk" in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(ch.usage is None for ch in chunks)


def test_sync_non_stream_against_mock(gateway: Proc) -> None:
    c = client(gateway)
    raw = c.chat.completions.with_raw_response.create(model="gpt-test", messages=MSG)
    assert raw.headers["x-fastgw-provider"] == "mock"
    resp = raw.parse()
    assert resp.model == "upstream-model"
    assert resp.choices[0].finish_reason == "stop"


def test_sync_stream_with_usage(gateway: Proc) -> None:
    c = client(gateway)
    stream = c.chat.completions.create(
        model="gpt-test", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_async_non_stream_and_stream(gateway: Proc) -> None:
    c = aclient(gateway)
    resp = await c.chat.completions.create(model="gpt-test", messages=MSG)
    assert resp.choices[0].message.content
    stream = await c.chat.completions.create(model="gpt-test", messages=MSG, stream=True)
    text = ""
    async for ch in stream:
        if ch.choices:
            text += ch.choices[0].delta.content or ""
    assert "hello from the sdk" in text
    emb = await c.embeddings.create(model="gpt-test", input="vector me")
    assert len(emb.data[0].embedding) > 0
    comp = await c.completions.create(model="gpt-test", prompt="complete me")
    assert comp.choices[0].text
    await c.close()


def test_error_cases_raise_typed_sdk_errors(gateway: Proc) -> None:
    c = client(gateway)
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="no-such-model", messages=MSG)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="gpt-test", messages=[])
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(
            model="gpt-test", messages=MSG, extra_body={"mock": {"status": 429}}
        )
    with pytest.raises(openai.InternalServerError) as ise:
        c.chat.completions.create(model="dead", messages=MSG)
    assert ise.value.status_code == 502


def test_mid_stream_drop_raises_in_sdk(gateway: Proc) -> None:
    c = client(gateway)
    stream = c.chat.completions.create(
        model="gpt-test",
        messages=MSG,
        stream=True,
        extra_body={"mock": {"chunks": 6, "drop_after": 2}},
    )
    got = []
    with pytest.raises(openai.APIError) as e:
        for ch in stream:
            got.append(ch)
    assert got  # the chunks before the drop arrived
    assert "closed the connection" in str(e.value)


def test_cost_header_and_budget_refusal_through_the_sdk(mock: Proc, tmp_path: Path) -> None:
    key = "sk-fastgw-e2e-budget-000000001"
    gw = start_gateway(
        {
            "providers": {"mock": {"kind": "openai", "base_url": f"{mock.url}/v1"}},
            "models": {"priced": {"targets": [{"provider": "mock", "model": "gpt-4o-mini"}]}},
            "catalog": {"path": str(tmp_path / "catalog.json")},
            "budgets": {"ledger": str(tmp_path / "ledger.sqlite")},
            "state": {"backend": "memory"},
            # $0.00001: a few small requests, then the budget is spent
            "keys": [{"name": "e2e", "key": key, "budget": {"usd": 0.00001, "period": "daily"}}],
        }
    )
    try:
        c = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="priced", messages=MSG, max_tokens=5
        )
        usage = raw.parse().usage
        assert usage is not None
        usd = float(raw.headers["x-fastgw-cost-usd"])
        assert abs(usd - (0.15 * usage.prompt_tokens + 0.6 * usage.completion_tokens) / 1e6) < 1e-9
        with pytest.raises(openai.RateLimitError) as e:  # sooner or later: over the budget
            for _ in range(20):
                c.chat.completions.create(model="priced", messages=MSG, max_tokens=5)
        assert e.value.code == "budget_exceeded"
    finally:
        gw.stop()
