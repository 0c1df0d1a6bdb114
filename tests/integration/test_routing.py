"""Routing: fallback before the first byte, retries with backoff and Retry-After, weighted
load balancing, and the headers that say what happened."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.servers import Proc

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"


def body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "route me"}], **extra}


async def upstream_models(http: aiohttp.ClientSession, mock: Proc, since: int) -> list[str]:
    async with http.get(f"{mock.url}/_mock/requests") as r:
        seen: list[dict[str, Any]] = await r.json()
    return [s["body"]["model"] for s in seen[since:]]


async def log_size(http: aiohttp.ClientSession, mock: Proc) -> int:
    async with http.delete(f"{mock.url}/_mock/requests") as r:
        assert r.status in (200, 204)
    return 0


async def test_fallback_on_connect_failure(http: aiohttp.ClientSession, gateway: Proc) -> None:
    async with http.post(f"{gateway.url}{CHAT}", json=body("fb-dead")) as r:
        assert r.status == 200
        assert r.headers["x-fastgw-target"] == "fb-dead.targets[1]"
        assert r.headers["x-fastgw-attempts"] == "2"
        assert r.headers["x-fastgw-fallbacks"] == "1"
        assert (await r.json())["model"] == "fb"


async def test_fallback_on_status_and_stream(
    http: aiohttp.ClientSession, gateway: Proc, mock: Proc
) -> None:
    start = await log_size(http, mock)
    async with http.post(f"{gateway.url}{CHAT}", json=body("fb-503")) as r:
        assert r.status == 200
        assert r.headers["x-fastgw-target"] == "fb-503.targets[1]"
    assert await upstream_models(http, mock, start) == ["bad", "good"]
    async with http.post(f"{gateway.url}{CHAT}", json=body("fb-503", stream=True)) as r:
        assert r.status == 200
        assert r.headers["x-fastgw-fallbacks"] == "1"
        raw = await r.read()
    assert raw.endswith(b"data: [DONE]\n\n") and b'"error"' not in raw


async def test_client_errors_neither_retried_nor_fallen_back(
    http: aiohttp.ClientSession, gateway: Proc, mock: Proc
) -> None:
    start = await log_size(http, mock)
    async with http.post(f"{gateway.url}{CHAT}", json=body("fb-400")) as r:
        assert r.status == 400
        assert "x-fastgw-attempts" not in r.headers  # one attempt: the header is left out
        assert r.headers["x-fastgw-target"] == "fb-400.targets[0]"
    assert await upstream_models(http, mock, start) == ["bad"]


async def test_retries_then_the_error(
    http: aiohttp.ClientSession, gateway: Proc, mock: Proc
) -> None:
    start = await log_size(http, mock)
    async with http.post(f"{gateway.url}{CHAT}", json=body("retry-503")) as r:
        assert r.status == 503
        assert r.headers["x-fastgw-attempts"] == "3"
        err = (await r.json())["error"]
        assert err["code"] == "upstream_error" or err["type"]
    assert await upstream_models(http, mock, start) == ["bad", "bad", "bad"]


async def test_retry_after_is_honoured(http: aiohttp.ClientSession, gateway: Proc) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with http.post(f"{gateway.url}{CHAT}", json=body("retry-429")) as r:
        assert r.status == 429
        assert r.headers["x-fastgw-attempts"] == "2"
        assert r.headers["retry-after"] == "1"
    assert loop.time() - t0 >= 0.9  # waited the upstream's Retry-After before the retry


async def test_loadbalance_follows_the_weights(http: aiohttp.ClientSession, gateway: Proc) -> None:
    n = 240
    models: list[str] = []

    async def one() -> None:
        async with http.post(f"{gateway.url}{CHAT}", json=body("lb")) as r:
            assert r.status == 200
            models.append((await r.json())["model"])  # the upstream model that answered

    for _ in range(n // 24):
        await asyncio.gather(*(one() for _ in range(24)))
    heavy = models.count("heavy")
    assert heavy + models.count("light") == n
    # weights 3:1 → expect 180; binomial sd ≈ 6.7: ±5 sd
    assert 146 <= heavy <= 214, json.dumps({"heavy": heavy, "light": n - heavy})


async def test_messages_api_pattern_route_sends_the_stripped_name(
    http: aiohttp.ClientSession, gateway: Proc, mock: Proc
) -> None:
    start = await log_size(http, mock)
    msg = {
        "model": "claude/claude-haiku-4-5",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "route me"}],
    }
    async with http.post(f"{gateway.url}/v1/messages", json=msg) as r:
        assert r.status == 200, await r.text()
    assert await upstream_models(http, mock, start) == ["claude-haiku-4-5"]
