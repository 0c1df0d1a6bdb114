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

from tests.servers import SECRET, Proc, redis_forget, redis_up, start_gateway

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
    asyncio.run(redis_forget(state["prefix"]))  # the test suite's own cleanup of its keys


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


@pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")
async def test_slots_of_every_scope_come_back_when_clients_leave_after_the_answer(
    mock: Proc,
) -> None:
    """A request in a key's and a team's concurrency limits holds a slot of each; clients
    that close their connection as soon as the stream ends must not leave a slot held (the
    disconnect reaches the gateway while it gives the slots back)."""
    import redis.asyncio as aioredis

    prefix = f"fastgw-leak-{uuid.uuid4().hex[:8]}:"
    key = "sk-fastgw-shared-leak-0000001"
    cfg = {
        "state": {"backend": "redis", "prefix": prefix},
        "providers": {"mock": {"kind": "openai", "base_url": f"{mock.url}/v1", "api_key": SECRET}},
        "models": {"m": {"targets": [{"provider": "mock", "model": "m"}]}},
        "teams": {"t": {"limits": {"concurrency": 50}}},
        "keys": [{"name": "a", "key": key, "team": "t", "limits": {"concurrency": 20}}],
    }
    gw = await asyncio.to_thread(start_gateway, cfg)
    r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    body = (
        b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],'
        b'"mock":{"chunks":3,"interval_ms":5}}'
    )
    try:
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + key.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body
            )
            got = b""
            while b"0\r\n\r\n" not in got:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
            writer.close()  # gone the moment the stream ended
        await asyncio.sleep(0.5)
        assert await r.zcard(f"{prefix}s:conc:key:a") == 0
        assert await r.zcard(f"{prefix}s:conc:team:t") == 0
    finally:
        await asyncio.to_thread(gw.stop)
        await r.aclose()
        await redis_forget(prefix)
