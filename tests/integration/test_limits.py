"""Rate limits against a running gateway: a burst admits exactly the limit, concurrency
limits hold under streams, every answer carries the x-ratelimit-* headers, 429s say which
limit and when to retry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.servers import SECRET, Proc, start_gateway

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
K_RPM = "sk-fastgw-limits-rpm-000000001"
K_CONC = "sk-fastgw-limits-conc-00000001"
K_TPM = "sk-fastgw-limits-tpm-000000001"
K_TEAM1 = "sk-fastgw-limits-team-0000001"
K_TEAM2 = "sk-fastgw-limits-team-0000002"
K_FREE = "sk-fastgw-limits-free-00000001"


def config(mock: Proc, backend: str) -> dict[str, Any]:
    slow = {"mock": {"latency_ms": 400}}
    return {
        "state": {"backend": backend},
        "providers": {"mock": {"kind": "openai", "base_url": f"{mock.url}/v1", "api_key": SECRET}},
        "models": {
            "m": {"targets": [{"provider": "mock", "model": "m"}]},
            "slow": {"targets": [{"provider": "mock", "model": "s", "override_params": slow}]},
            "capped-model": {
                "limits": {"rpm": 3},
                "targets": [{"provider": "mock", "model": "c"}],
            },
        },
        "teams": {"duo": {"limits": {"rpm": 4}}},
        "keys": [
            {"name": "rpm", "key": K_RPM, "limits": {"rpm": 5}},
            {"name": "conc", "key": K_CONC, "limits": {"concurrency": 2}},
            {"name": "tpm", "key": K_TPM, "limits": {"tpm": 300}},
            {"name": "t1", "key": K_TEAM1, "team": "duo"},
            {"name": "t2", "key": K_TEAM2, "team": "duo"},
            {"name": "free", "key": K_FREE},
        ],
    }


@pytest.fixture(scope="module")
def gw(mock: Proc) -> Iterator[Proc]:
    p = start_gateway(config(mock, "memory"))
    yield p
    p.stop()


async def chat(
    http: aiohttp.ClientSession, gw: Proc, key: str, model: str = "m", **extra: Any
) -> tuple[int, dict[str, str], Any]:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    async with http.post(f"{gw.url}{CHAT}", json=payload, headers={"x-api-key": key}) as r:
        data = await r.read()
        return r.status, {k.lower(): v for k, v in r.headers.items()}, data


async def test_a_burst_admits_exactly_the_rpm_limit(http: aiohttp.ClientSession, gw: Proc) -> None:
    got = await asyncio.gather(*(chat(http, gw, K_RPM) for _ in range(12)))
    statuses = sorted(s for s, _, _ in got)
    assert statuses == [200] * 5 + [429] * 7
    ok = [h for s, h, _ in got if s == 200]
    assert all(h["x-ratelimit-limit-requests"] == "5" for h in ok)
    assert sorted(int(h["x-ratelimit-remaining-requests"]) for h in ok) == [0, 1, 2, 3, 4]
    refused = [(h, d) for s, h, d in got if s == 429]
    h, d = refused[0]
    assert 1 <= int(h["retry-after"]) <= 12  # one request back every 12 s
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert b'"rate_limit_exceeded"' in d and b"key 'rpm' is over its 5 requests/minute" in d


async def test_team_and_model_limits_are_shared(http: aiohttp.ClientSession, gw: Proc) -> None:
    got = await asyncio.gather(
        *(chat(http, gw, k) for k in [K_TEAM1, K_TEAM2] * 4)  # team duo: 4/min together
    )
    assert sorted(s for s, _, _ in got) == [200] * 4 + [429] * 4
    # team duo has nothing left this minute: refused, and (all or nothing) the model's own
    # bucket is not touched by those refusals
    got = await asyncio.gather(*(chat(http, gw, K_TEAM1, "capped-model") for _ in range(5)))
    assert all(s == 429 for s, _, _ in got)
    got = await asyncio.gather(*(chat(http, gw, K_FREE, "capped-model") for _ in range(5)))
    assert sorted(s for s, _, _ in got) == [200] * 3 + [429] * 2  # the model's 3/min
    assert all(
        b"model 'capped-model' is over its 3 requests/minute" in d for s, _, d in got if s == 429
    )


async def test_concurrency_limit_holds_and_frees(http: aiohttp.ClientSession, gw: Proc) -> None:
    got = await asyncio.gather(*(chat(http, gw, K_CONC, "slow") for _ in range(5)))
    statuses = sorted(s for s, _, _ in got)
    assert statuses == [200, 200, 429, 429, 429]
    refused = [d for s, _, d in got if s == 429]
    assert b'"concurrency_limit_exceeded"' in refused[0]
    # the slots came back: two more fit again
    got = await asyncio.gather(*(chat(http, gw, K_CONC, "slow") for _ in range(2)))
    assert [s for s, _, _ in got] == [200, 200]


async def test_streams_hold_their_slot_until_they_end(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    async def stream() -> int:
        payload = {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "mock": {"chunks": 4, "interval_ms": 150},
        }
        async with http.post(f"{gw.url}{CHAT}", json=payload, headers={"x-api-key": K_CONC}) as r:
            await r.read()
            return r.status

    first = [asyncio.create_task(stream()) for _ in range(2)]
    await asyncio.sleep(0.2)  # both streams are running
    status, _, _ = await chat(http, gw, K_CONC)
    assert status == 429
    assert await asyncio.gather(*first) == [200, 200]
    status, _, _ = await chat(http, gw, K_CONC)
    assert status == 200


async def test_tokens_per_minute(http: aiohttp.ClientSession, gw: Proc) -> None:
    big = "word " * 400  # ~2000 bytes: ~500 estimated tokens, over the 300/min at once
    status, headers, data = await chat(http, gw, K_TPM, messages=[{"role": "user", "content": big}])
    assert status == 429, data
    assert b"exceed the 300 tokens/minute of key 'tpm'" in data
    status, headers, data = await chat(http, gw, K_TPM)
    assert status == 200, data
    assert headers["x-ratelimit-limit-tokens"] == "300"
    assert 0 < int(headers["x-ratelimit-remaining-tokens"]) < 300


async def test_requests_refused_by_later_checks_hold_no_slot(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    """A request refused after the limits were looked at (here: a bad routing header) gives
    back what it took: the key's two concurrency slots stay free."""
    payload = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        async with http.post(
            f"{gw.url}{CHAT}",
            json=payload,
            headers={"x-api-key": K_CONC, "x-fastgw-timeout": "soon"},
        ) as r:
            assert r.status == 400
    got = await asyncio.gather(*(chat(http, gw, K_CONC, "slow") for _ in range(2)))
    assert [s for s, _, _ in got] == [200, 200]


async def test_state_backend_in_readyz_and_metrics(http: aiohttp.ClientSession, gw: Proc) -> None:
    async with http.get(f"{gw.url}/readyz") as r:
        assert (await r.json())["state"]["backend"] == "memory"
    async with http.get(f"{gw.url}/metrics") as r:
        text = await r.text()
    assert "fastgw_target_calls_total" in text
