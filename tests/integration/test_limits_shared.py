"""Limits held across processes: several Granian workers sharing the ``local`` backend, and
two gateway processes ("hosts") sharing one Redis. A burst of concurrent requests admits
exactly the limit, whichever process serves each request."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.servers import SECRET, Proc, redis_up, start_gateway

pytestmark = pytest.mark.integration

KEY = "sk-fastgw-shared-limits-000001"
RPM = 20


def config(mock: Proc, state: dict[str, Any]) -> dict[str, Any]:
    slow = {"mock": {"latency_ms": 300}}
    return {
        "state": state,
        "providers": {"mock": {"kind": "openai", "base_url": f"{mock.url}/v1", "api_key": SECRET}},
        "models": {
            "m": {"targets": [{"provider": "mock", "model": "m"}]},
            "slow": {"targets": [{"provider": "mock", "model": "s", "override_params": slow}]},
        },
        "keys": [
            {"name": "k", "key": KEY, "limits": {"rpm": RPM}},
            {"name": "c", "key": KEY + "-conc", "limits": {"concurrency": 3}},
        ],
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    conn = aiohttp.TCPConnector(limit=0, force_close=True)  # new connections: spread over workers
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), connector=conn) as s:
        yield s


async def burst(
    http: aiohttp.ClientSession, urls: list[str], n: int, key: str = KEY, model: str = "m"
) -> list[int]:
    async def one(i: int) -> int:
        payload = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        url = urls[i % len(urls)]
        async with http.post(
            f"{url}/v1/chat/completions", json=payload, headers={"x-api-key": key}
        ) as r:
            await r.read()
            return r.status

    return list(await asyncio.gather(*(one(i) for i in range(n))))


@pytest.fixture(scope="module")
def local_gw(mock: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    if importlib.util.find_spec("fastgw.state.local") is None:
        pytest.skip("the local backend is not built yet")
    path = str(tmp_path_factory.mktemp("state") / "limits.shm")
    p = start_gateway(config(mock, {"backend": "local", "path": path}), workers=2)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def redis_gws(mock: Proc) -> Iterator[list[Proc]]:
    if not redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    # a generous timeout: a loaded CI machine must not push calls into the fail-open fallback
    state = {"backend": "redis", "prefix": f"fastgw-test-{uuid.uuid4().hex[:8]}:", "timeout": "5s"}
    a = start_gateway(config(mock, state))
    try:
        b = start_gateway(config(mock, state))
    except BaseException:
        a.stop()
        raise
    yield [a, b]
    a.stop()
    b.stop()
    import redis  # the test suite's own cleanup of its keys

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=state["prefix"] + "*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_workers_share_one_limit(http: aiohttp.ClientSession, local_gw: Proc) -> None:
    statuses = await burst(http, [local_gw.url], 3 * RPM)
    assert statuses.count(200) == RPM, statuses
    assert statuses.count(429) == 2 * RPM


async def test_workers_share_concurrency(http: aiohttp.ClientSession, local_gw: Proc) -> None:
    statuses = await burst(http, [local_gw.url], 8, KEY + "-conc", "slow")
    assert statuses.count(200) == 3, statuses
    statuses = await burst(http, [local_gw.url], 3, KEY + "-conc", "slow")
    assert statuses == [200, 200, 200]  # every slot came back


async def test_hosts_share_one_limit_through_redis(
    http: aiohttp.ClientSession, redis_gws: list[Proc]
) -> None:
    statuses = await burst(http, [g.url for g in redis_gws], 3 * RPM)
    assert statuses.count(200) == RPM, statuses
    assert statuses.count(429) == 2 * RPM


async def test_hosts_share_concurrency_through_redis(
    http: aiohttp.ClientSession, redis_gws: list[Proc]
) -> None:
    statuses = await burst(http, [g.url for g in redis_gws], 8, KEY + "-conc", "slow")
    assert statuses.count(200) == 3, statuses


async def test_redis_state_is_visible(http: aiohttp.ClientSession, redis_gws: list[Proc]) -> None:
    async with http.get(f"{redis_gws[0].url}/metrics") as r:
        text = await r.text()
    assert 'fastgw_state_reachable{backend="redis"} 1' in text
    assert 'fastgw_state_fallback_calls{backend="redis"} 0' in text
    async with http.get(f"{redis_gws[0].url}/readyz") as r:
        state = (await r.json())["state"]
    assert state["reachable"] is True and state["on_error"] == "open"
