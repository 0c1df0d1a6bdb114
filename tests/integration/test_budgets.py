"""Budgets against running gateways: concurrent requests (whole and streamed) against a
small budget never end above it; the spend the ledger keeps equals the costs the answers
reported (catalog price × usage, to 1e-9 USD); a restart keeps the spend; a stream the
client cuts is still billed; a budget that says so routes to a cheaper model; two workers
share one budget (``local`` state)."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.servers import SECRET, Proc, start_gateway

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
ADMIN = "adm-Zq8xR4mTn7Wb2Kc9Vd5Yh3Jp6Lf1Gs0"
K_SMALL = "sk-fastgw-budget-small-000001"
K_STREAM = "sk-fastgw-budget-strm-0000001"
K_FALL = "sk-fastgw-budget-fall-0000001"
K_CUT = "sk-fastgw-budget-cut-00000001"
#: USD per million tokens of the priced model (input, output)
IN, OUT = 100.0, 400.0


def config(mock: Proc, tmp: Path, backend: str = "memory") -> dict[str, Any]:
    def budget(usd: float, **extra: Any) -> dict[str, Any]:
        return {"usd": usd, "period": "daily", **extra}

    return {
        "state": {"backend": backend, "path": str(tmp / "state.shm")},
        "admin": {"token": ADMIN, "store": str(tmp / "keys.sqlite")},
        "budgets": {"ledger": str(tmp / "ledger.sqlite"), "flush_interval": 0.1},
        "catalog": {
            "path": str(tmp / "catalog.json"),
            "models": {
                "dear-model": {"input": IN, "output": OUT, "context_window": 100000},
                "cheap-model": {"input": 0.1, "output": 0.1, "context_window": 100000},
            },
        },
        "providers": {"mock": {"kind": "openai", "base_url": f"{mock.url}/v1", "api_key": SECRET}},
        "models": {
            "dear": {"targets": [{"provider": "mock", "model": "dear-model"}]},
            "cheap": {"targets": [{"provider": "mock", "model": "cheap-model"}]},
        },
        "keys": [
            {"name": "small", "key": K_SMALL, "budget": budget(0.05)},
            {"name": "stream", "key": K_STREAM, "budget": budget(0.05)},
            {"name": "cut", "key": K_CUT, "budget": budget(10.0)},
            {
                "name": "fall",
                "key": K_FALL,
                "budget": budget(0.001, on_exceed="fallback", fallback_model="cheap"),
            },
        ],
    }


@pytest.fixture(scope="module")
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@pytest.fixture(scope="module")
def gw(mock: Proc, tmp: Path) -> Iterator[Proc]:
    p = start_gateway(config(mock, tmp))
    yield p
    p.stop()


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def admin() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN}"}


async def budget_of(http: aiohttp.ClientSession, gw: Proc, key: str) -> dict[str, Any]:
    async with http.get(f"{gw.url}/admin/budgets/key/{key}", headers=admin()) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def spend_of(http: aiohttp.ClientSession, gw: Proc, key: str) -> tuple[float, int, int]:
    """(USD, requests, estimated requests) the ledger holds for ``key`` (today)."""
    url = f"{gw.url}/admin/spend?by=key&interval=day&name={key}"
    async with http.get(url, headers=admin()) as r:
        assert r.status == 200, await r.text()
        rows = (await r.json())["data"]
    return (
        sum(float(x["cost_usd"]) for x in rows),
        sum(int(x["requests"]) for x in rows),
        sum(int(x["estimated"]) for x in rows),
    )


def body(words: int = 20, max_tokens: int = 30, **extra: Any) -> dict[str, Any]:
    text = " ".join(f"w{i}" for i in range(words))
    return {
        "model": "dear",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


async def burst(
    http: aiohttp.ClientSession, gw: Proc, key: str, n: int, stream: bool
) -> tuple[list[float], list[str]]:
    """``n`` concurrent requests: the costs the answers reported, the error codes."""
    costs: list[float] = []
    refused: list[str] = []

    async def one() -> None:
        extra: dict[str, Any] = {"stream": True} if stream else {}
        async with http.post(f"{gw.url}{CHAT}", json=body(**extra), headers=auth(key)) as r:
            if r.status != 200:
                refused.append((await r.json())["error"]["code"])
                assert r.headers["retry-after"]
                return
            if stream:
                text = (await r.read()).decode()
                line = [ln for ln in text.splitlines() if ln.startswith(": x-fastgw-cost-usd=")]
                costs.append(float(line[0].split("=")[1]))
            else:
                await r.read()
                costs.append(float(r.headers["x-fastgw-cost-usd"]))

    await asyncio.gather(*(one() for _ in range(n)))
    return costs, refused


@pytest.mark.parametrize(("key", "stream"), [("small", False), ("stream", True)])
async def test_a_burst_never_ends_above_the_budget(
    http: aiohttp.ClientSession, gw: Proc, key: str, stream: bool
) -> None:
    secret = K_SMALL if key == "small" else K_STREAM
    # each request reserves ~20 prompt + 30 output tokens ≈ $0.015: a $0.05 budget holds 3
    costs, refused = await burst(http, gw, secret, 40, stream)
    assert refused and set(refused) == {"budget_exceeded"}
    assert 1 <= len(costs) <= 40
    b = await budget_of(http, gw, key)
    assert b["spent_usd"] <= 0.05 + 1e-12  # never above the budget: actual <= reserved
    assert b["exceeded"] is False or b["remaining_usd"] >= 0
    deadline = time.monotonic() + 5
    while True:  # the ledger holds exactly what the answers said they cost
        usd, requests, _ = await spend_of(http, gw, key)
        if requests == len(costs):
            break
        assert time.monotonic() < deadline, (requests, len(costs))
        await asyncio.sleep(0.1)
    assert abs(usd - sum(costs)) < 1e-9 * max(1, len(costs))
    # the counters settle to the same (settlements are batched every 0.1 s)
    await settled(http, gw, key, sum(costs))


async def settled(http: aiohttp.ClientSession, gw: Proc, key: str, usd: float) -> float:
    """Wait until the budget's counter holds ``usd`` (reservations settled); its value."""
    deadline = time.monotonic() + 5
    while True:
        spent = float((await budget_of(http, gw, key))["spent_usd"])
        if abs(spent - usd) < 1e-9:
            return spent
        assert time.monotonic() < deadline, (spent, usd)
        await asyncio.sleep(0.05)


async def test_a_refusal_says_which_budget(http: aiohttp.ClientSession, gw: Proc) -> None:
    await burst(http, gw, K_SMALL, 10, False)  # spend it (if the burst test did not)
    async with http.post(f"{gw.url}{CHAT}", json=body(), headers=auth(K_SMALL)) as r:
        assert r.status == 429
        err = (await r.json())["error"]
        assert err["code"] == "budget_exceeded" and "small" in err["message"]
        assert r.headers["x-fastgw-budget-scope"]
        assert int(r.headers["retry-after"]) > 0


async def test_over_budget_falls_back_to_the_cheaper_model(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    served = []
    for _ in range(4):
        async with http.post(f"{gw.url}{CHAT}", json=body(), headers=auth(K_FALL)) as r:
            assert r.status == 200, await r.text()
            served.append((await r.json())["model"])
    assert served[-1] == "cheap-model"  # $0.001 holds no dear request: cheap from the first
    assert "x-fastgw-budget-fallback" in r.headers


async def test_a_cut_stream_is_billed(http: aiohttp.ClientSession, gw: Proc) -> None:
    before = await spend_of(http, gw, "cut")
    req = body(
        max_tokens=2000,
        stream=True,
        mock={"chunks": 60, "interval_ms": 40, "text": "token " * 300},
    )
    async with http.post(f"{gw.url}{CHAT}", json=req, headers=auth(K_CUT)) as r:
        assert r.status == 200
        seen = 0
        async for _ in r.content.iter_any():
            seen += 1
            if seen >= 4:
                break
        r.close()
    deadline = time.monotonic() + 5
    while True:
        after = await spend_of(http, gw, "cut")
        if after[1] > before[1]:
            break
        assert time.monotonic() < deadline, "the cut stream never reached the ledger"
        await asyncio.sleep(0.1)
    assert after[2] == before[2] + 1  # its usage was estimated
    assert after[0] - before[0] >= IN / 1e6 * 20  # at least the prompt


async def test_spend_survives_a_restart(mock: Proc) -> None:
    with tempfile.TemporaryDirectory() as d:
        cfg = config(mock, Path(d))
        async with aiohttp.ClientSession() as http:
            first = start_gateway(cfg)
            try:
                costs, _ = await burst(http, first, K_SMALL, 2, False)
                spent = await settled(http, first, "small", sum(costs))
                await asyncio.sleep(0.3)  # past the ledger's flush interval
            finally:
                first.stop()
            second = start_gateway(cfg)  # memory state: the counters start empty
            try:
                again = (await budget_of(http, second, "small"))["spent_usd"]
                assert abs(again - spent) < 1e-9 and abs(again - sum(costs)) < 1e-9
            finally:
                second.stop()


async def test_two_workers_share_a_budget(mock: Proc) -> None:
    with tempfile.TemporaryDirectory() as d:
        cfg = config(mock, Path(d), backend="local")
        cfg["state"]["path"] = f"/dev/shm/fastgw-test-{uuid.uuid4().hex[:8]}.state"
        gw = start_gateway(cfg, workers=2)
        try:
            async with aiohttp.ClientSession() as http:
                costs, refused = await burst(http, gw, K_SMALL, 30, False)
                assert refused and sum(costs) <= 0.05 + 1e-12
                await settled(http, gw, "small", sum(costs))
        finally:
            gw.stop()
            await asyncio.to_thread(Path(cfg["state"]["path"]).unlink, missing_ok=True)
