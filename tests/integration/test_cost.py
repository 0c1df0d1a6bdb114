"""Cost and the catalog against a running gateway: every answer says what it cost (catalog
price × usage, to 1e-9 USD), streams in a closing SSE comment; a prompt over the model's
context window is refused before any upstream call; a stream the client cuts is still
billed; ``fastgw catalog update`` swaps prices in without a restart; ``/v1/models`` shows
the catalog data."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.servers import ROOT, SECRET, Proc, start_gateway

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
PRICES = {"input": 3.0, "output": 15.0, "cached_input": 0.3}


def config(mock: Proc, catalog_path: str) -> dict[str, Any]:
    return {
        "providers": {"mock": {"kind": "openai", "base_url": f"{mock.url}/v1", "api_key": SECRET}},
        "models": {
            "priced": {"targets": [{"provider": "mock", "model": "priced-model"}]},
            "tiny": {"targets": [{"provider": "mock", "model": "tiny-window"}]},
            "unknown": {"targets": [{"provider": "mock", "model": "not-in-any-catalog"}]},
            "shipped": {"targets": [{"provider": "mock", "model": "gpt-4o-mini"}]},
            "spill": {
                "targets": [
                    {"provider": "mock", "model": "tiny-window"},
                    {"provider": "mock", "model": "priced-model"},
                ]
            },
        },
        "catalog": {
            "path": catalog_path,
            "watch": 0.2,
            "models": {
                "priced-model": {**PRICES, "context_window": 100000, "max_output_tokens": 1000},
                "tiny-window": {"input": 1.0, "output": 1.0, "context_window": 50},
            },
        },
    }


@pytest.fixture(scope="module")
def catalog_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@pytest.fixture(scope="module")
def gw(mock: Proc, catalog_dir: Path) -> Iterator[Proc]:
    p = start_gateway(config(mock, str(catalog_dir / "catalog.json")))
    yield p
    p.stop()


def expected(usage: dict[str, Any], prices: dict[str, float] = PRICES) -> float:
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    prompt, completion = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    return (
        prices["input"] / 1e6 * (prompt - cached)
        + prices["cached_input"] / 1e6 * cached
        + prices["output"] / 1e6 * completion
    )


async def metrics(http: aiohttp.ClientSession, gw: Proc) -> dict[str, float]:
    async with http.get(f"{gw.url}/metrics") as r:
        text = await r.text()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


async def test_an_answer_carries_its_cost(http: aiohttp.ClientSession, gw: Proc) -> None:
    body = {"model": "priced", "messages": [{"role": "user", "content": "one two three four"}]}
    async with http.post(f"{gw.url}{CHAT}", json=body) as r:
        assert r.status == 200
        data = await r.json()
        usd = float(r.headers["x-fastgw-cost-usd"])
    assert data["usage"]["completion_tokens"] > 0
    assert abs(usd - expected(data["usage"])) < 1e-9


async def test_a_stream_ends_with_its_cost(http: aiohttp.ClientSession, gw: Proc) -> None:
    body = {
        "model": "priced",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "tell me something"}],
    }
    async with http.post(f"{gw.url}{CHAT}", json=body) as r:
        assert r.status == 200
        text = (await r.read()).decode()
    usage = None
    for line in text.splitlines():
        if line.startswith("data: {") and '"usage":{' in line:
            usage = json.loads(line[6:])["usage"]
    comment = [ln for ln in text.splitlines() if ln.startswith(": x-fastgw-cost-usd=")]
    assert usage is not None and len(comment) == 1
    assert text.index("data: [DONE]") < text.index(comment[0])  # after the last event
    assert abs(float(comment[0].split("=")[1]) - expected(usage)) < 1e-9


async def test_a_prompt_over_the_context_window_never_reaches_the_provider(
    http: aiohttp.ClientSession, gw: Proc, mock: Proc
) -> None:
    async with http.get(f"{mock.url}/_mock/stats") as r:
        before = (await r.json())["requests"]
    prompt = " ".join(f"word{i}" for i in range(400))  # far above 50 tokens
    body = {"model": "tiny", "messages": [{"role": "user", "content": prompt}]}
    async with http.post(f"{gw.url}{CHAT}", json=body) as r:
        assert r.status == 400
        err = (await r.json())["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert "50 tokens" in err["message"]
    async with http.get(f"{mock.url}/_mock/stats") as r:
        assert (await r.json())["requests"] == before
    # a short prompt fits
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{gw.url}{CHAT}", json=body) as r:
        assert r.status == 200


async def test_a_larger_window_further_down_the_route_is_used(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    prompt = " ".join(f"word{i}" for i in range(400))
    body = {"model": "spill", "messages": [{"role": "user", "content": prompt}]}
    async with http.post(f"{gw.url}{CHAT}", json=body) as r:
        assert r.status == 200
        assert r.headers["x-fastgw-target"] == "spill.targets[1]"


async def test_an_unpriced_model_has_no_cost_header(http: aiohttp.ClientSession, gw: Proc) -> None:
    before = await metrics(http, gw)
    body = {"model": "unknown", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{gw.url}{CHAT}", json=body) as r:
        assert r.status == 200
        assert "x-fastgw-cost-usd" not in r.headers
    after = await metrics(http, gw)
    assert after["fastgw_unpriced_requests_total"] == before["fastgw_unpriced_requests_total"] + 1


async def test_a_stream_cut_by_the_client_is_billed_what_it_delivered(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    before = await metrics(http, gw)
    body = {
        "model": "priced",
        "stream": True,
        "messages": [{"role": "user", "content": "a long answer please"}],
        "mock": {"chunks": 40, "interval_ms": 50, "text": "word " * 200},
    }
    async with http.post(f"{gw.url}{CHAT}", json=body) as r:
        assert r.status == 200
        got = 0
        async for _ in r.content.iter_any():
            got += 1
            if got >= 3:
                break
        r.close()  # the client leaves mid-stream
    deadline = time.monotonic() + 5
    while True:
        after = await metrics(http, gw)
        if (
            after["fastgw_estimated_usage_requests_total"]
            > before["fastgw_estimated_usage_requests_total"]
        ):
            break
        assert time.monotonic() < deadline, "the cut stream was never billed"
        await asyncio.sleep(0.05)
    billed = after["fastgw_cost_usd_total"] - before["fastgw_cost_usd_total"]
    # at least the prompt estimate and the text of the first chunks, at these prices
    assert billed >= PRICES["input"] / 1e6 * 5 + PRICES["output"] / 1e6 * 2


async def test_models_list_the_catalog_data(http: aiohttp.ClientSession, gw: Proc) -> None:
    async with http.get(f"{gw.url}/v1/models") as r:
        items = {m["id"]: m for m in (await r.json())["data"]}
    card = items["priced"]["fastgw"]
    assert card["input_cost_per_mtok"] == 3.0 and card["context_window"] == 100000
    assert "fastgw" not in items["unknown"]


async def test_catalog_update_swaps_prices_without_a_restart(
    http: aiohttp.ClientSession, gw: Proc, catalog_dir: Path
) -> None:
    async def card() -> dict[str, Any]:
        async with http.get(f"{gw.url}/v1/models") as r:
            items = {m["id"]: m for m in (await r.json())["data"]}
        return dict(items["shipped"]["fastgw"])

    assert (await card())["input_cost_per_mtok"] < 7.0  # the shipped price
    new = {
        "version": 1,
        "as_of": "2026-11-23",
        "models": {"gpt-4o-mini": {"input": 7.0, "output": 9.0, "cached_input": 1.0}},
    }
    src = catalog_dir / "new.json"
    src.write_text(json.dumps(new))
    cfg = catalog_dir / "cli.yaml"
    cfg.write_text(yaml.safe_dump({"catalog": {"path": str(catalog_dir / "catalog.json")}}))
    cmd = [sys.executable, "-m", "fastgw", "catalog", "update", "--from", str(src)]
    env = {k: v for k, v in os.environ.items() if k != "FASTGW_CONFIG"}

    async def update() -> subprocess.CompletedProcess[str]:
        """``fastgw catalog update --from <src> --config <cfg>`` (the config file's path
        alone: no FASTGW_CONFIG)."""
        return await asyncio.to_thread(
            subprocess.run,
            [*cmd, "--config", str(cfg)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
        )

    run = await update()
    assert run.returncode == 0, run.stderr
    deadline = time.monotonic() + 5
    while (await card())["input_cost_per_mtok"] != 7.0:
        assert time.monotonic() < deadline, "the new catalog was never swapped in"
        await asyncio.sleep(0.1)
    body = {"model": "shipped", "messages": [{"role": "user", "content": "price check"}]}
    async with http.post(f"{gw.url}{CHAT}", json=body) as r:
        data = await r.json()
        usd = float(r.headers["x-fastgw-cost-usd"])
    prices = {"input": 7.0, "output": 9.0, "cached_input": 1.0}
    assert abs(usd - expected(data["usage"], prices)) < 1e-9
    # an invalid file is refused by the CLI and leaves the running catalog as it is
    src.write_text(json.dumps({"version": 1, "models": {"gpt-4o-mini": {"input": -1}}}))
    run = await update()
    assert run.returncode != 0
    await asyncio.sleep(0.5)
    assert (await card())["input_cost_per_mtok"] == 7.0
