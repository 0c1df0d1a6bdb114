"""The admin API on a running gateway with two workers: keys created at run time work on
every worker, and disabling or revoking one stops it on every worker within a second."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.servers import ROOT, SECRET, Proc, start_gateway

pytestmark = pytest.mark.integration

TOKEN = "adm-" + "0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def gw(mock: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    d = tmp_path_factory.mktemp("admin")
    cfg: dict[str, Any] = {
        "state": {"backend": "local", "path": str(d / "state.shm")},
        "admin": {"token": TOKEN, "store": str(d / "keys.db")},
        "providers": {"mock": {"kind": "openai", "base_url": f"{mock.url}/v1", "api_key": SECRET}},
        "models": {
            "m": {"targets": [{"provider": "mock", "model": "m"}]},
            "other": {"targets": [{"provider": "mock", "model": "o"}]},
        },
    }
    p = start_gateway(cfg, workers=2)
    yield p
    p.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    conn = aiohttp.TCPConnector(force_close=True)  # new connections: both workers answer
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), connector=conn) as s:
        yield s


ADMIN = {"authorization": f"Bearer {TOKEN}"}


async def statuses(http: aiohttp.ClientSession, gw: Proc, key: str, n: int = 8) -> list[int]:
    async def one() -> int:
        payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(
            f"{gw.url}/v1/chat/completions", json=payload, headers={"x-api-key": key}
        ) as r:
            await r.read()
            return r.status

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_keys_created_disabled_and_revoked_at_run_time(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    async with http.get(f"{gw.url}/admin/keys") as r:
        assert r.status == 401
    # the gateway asks for a key as soon as the admin API is on
    assert set(await statuses(http, gw, "sk-nothing-000000000000000", 2)) == {401}
    body = {"name": "ci-bot", "models": ["m"], "limits": {"rpm": 1000}}
    async with http.post(f"{gw.url}/admin/keys", json=body, headers=ADMIN) as r:
        assert r.status == 201, await r.text()
        created = await r.json()
    key = created["key"]
    assert key.startswith("sk-fgw-")
    async with http.get(f"{gw.url}/admin/keys", headers=ADMIN) as r:
        listed = await r.text()
    assert "ci-bot" in listed and key not in listed
    await asyncio.sleep(1.0)  # every worker's sync has seen it
    assert set(await statuses(http, gw, key)) == {200}
    payload = {"model": "other", "messages": [{"role": "user", "content": "x"}]}
    async with http.post(
        f"{gw.url}/v1/chat/completions", json=payload, headers={"x-api-key": key}
    ) as r:
        assert r.status == 403  # its access rules apply
    async with http.get(f"{gw.url}/admin/keys/ci-bot/usage", headers=ADMIN) as r:
        usage = await r.json()
    assert usage["limits"]["rpm"]["limit"] == 1000
    assert usage["limits"]["rpm"]["remaining"] < 1000
    # disable: every worker refuses it within a second
    async with http.patch(
        f"{gw.url}/admin/keys/ci-bot", json={"disabled": True}, headers=ADMIN
    ) as r:
        assert r.status == 200
    t0 = time.monotonic()
    while set(await statuses(http, gw, key, 6)) != {401}:
        assert time.monotonic() - t0 < 1.5, "a worker still accepts the disabled key"
        await asyncio.sleep(0.05)
    async with http.patch(
        f"{gw.url}/admin/keys/ci-bot", json={"disabled": False}, headers=ADMIN
    ) as r:
        assert r.status == 200
    await asyncio.sleep(1.0)
    assert set(await statuses(http, gw, key)) == {200}
    async with http.delete(f"{gw.url}/admin/keys/ci-bot", headers=ADMIN) as r:
        assert r.status == 204
    t0 = time.monotonic()
    while set(await statuses(http, gw, key, 6)) != {401}:
        assert time.monotonic() - t0 < 1.5, "a worker still accepts the revoked key"
        await asyncio.sleep(0.05)


async def test_openapi_document(http: aiohttp.ClientSession, gw: Proc) -> None:
    async with http.get(f"{gw.url}/admin/openapi.json", headers=ADMIN) as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    assert "/admin/keys/{name}/usage" in doc["paths"]


def test_a_weak_admin_token_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({"admin": {"token": "short"}}))
    out = subprocess.run(
        [sys.executable, "-m", "fastgw", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode != 0
    assert "admin.token" in out.stdout + out.stderr
