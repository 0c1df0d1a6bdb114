"""Routing under failure, against a real gateway (Granian) and a mock upstream that fails on
command: nested strategies, conditions, least-latency / least-busy, circuit breakers, region
and tag pinning, sticky canaries, the first-token timeout and the request deadline header.

The module has its own mock and gateway: breakers and latency statistics are state, and no
other test should see (or disturb) them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.servers import SECRET, Proc, start_gateway, start_mock

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
DEAD = "http://127.0.0.1:9/v1"


def _t(model: str, **extra: Any) -> dict[str, Any]:
    return {"provider": "mock", "model": model, **extra}


def _mock(**controls: Any) -> dict[str, Any]:
    return {"override_params": {"mock": controls}}


class HangServer:
    """Accepts connections, reads what comes, never answers; notes when each is closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.open = 0
        self.closed = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.open += 1
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    if not conn.recv(65536):
                        break
                except OSError:
                    break
        with self.lock:
            self.closed += 1

    def close(self) -> None:
        self.sock.close()


HANG = HangServer()


def config(mock: Proc) -> dict[str, Any]:
    base = f"{mock.url}/v1"
    return {
        "routing": {"max_request_timeout": "1s"},
        "providers": {
            "mock": {"kind": "openai", "base_url": base, "api_key": SECRET},
            "dead": {"kind": "openai", "base_url": DEAD, "api_key": SECRET},
            "claude": {"kind": "anthropic", "base_url": base, "api_key": SECRET},
            "claude-dead": {"kind": "anthropic", "base_url": DEAD, "api_key": SECRET},
            "hang": {
                "kind": "openai",
                "base_url": f"http://127.0.0.1:{HANG.port}/v1",
                "api_key": SECRET,
            },
            "impatient": {
                "kind": "openai",
                "base_url": base,
                "api_key": SECRET,
                "timeout": {"connect": "1s", "first_byte": "300ms", "total": "5s"},
            },
        },
        "models": {
            "nested": {
                "targets": [
                    {
                        "strategy": "loadbalance",
                        "targets": [
                            {"provider": "dead", "model": "x"},
                            {"provider": "dead", "model": "y"},
                        ],
                    },
                    {
                        "strategy": "fallback",
                        "targets": [_t("n-bad", **_mock(status=503)), _t("n-good")],
                    },
                ]
            },
            "smart": {
                "strategy": "conditional",
                "conditions": [
                    {"when": {"metadata.tier": "premium"}, "then": "premium"},
                    {"when": {"header.x-team": {"in": ["research", "ml"]}}, "then": "research"},
                    {"when": {"body.user": {"prefix": "vip-"}}, "then": "premium"},
                    {"when": {"body.max_tokens": {"gt": 1000}}, "then": "long"},
                ],
                "default": "cheap",
                "targets": [
                    _t("premium-model", name="premium"),
                    _t("research-model", name="research"),
                    _t("long-model", name="long"),
                    _t("cheap-model", name="cheap"),
                ],
            },
            "cond/*": {
                "strategy": "conditional",
                "conditions": [{"when": {"model": {"suffix": "-mini"}}, "then": "small"}],
                "default": "big",
                "targets": [
                    {"provider": "mock", "model": "small-model", "name": "small"},
                    {"provider": "mock", "model": "big-model", "name": "big"},
                ],
            },
            "fastest": {
                "strategy": "least-latency",
                "targets": [_t("slow", **_mock(latency_ms=150)), _t("quick")],
            },
            "idlest": {
                "strategy": "least-busy",
                "targets": [
                    _t("busy-a", **_mock(latency_ms=400)),
                    _t("busy-b", **_mock(latency_ms=400)),
                ],
            },
            "brk": {
                "breaker": {"failures": 3, "window": 5, "cooldown": "1s"},
                "targets": [_t("brk-a"), _t("brk-b")],
            },
            "brk-one": {
                "breaker": {"failures": 2, "window": 4, "cooldown": "5s"},
                "targets": [_t("brk-one")],
            },
            "regional": {
                "targets": [
                    _t("us-model", region="us"),
                    _t("eu-model", region="EU", tags=["zdr"]),
                    _t("eu2-model", region="eu"),
                ]
            },
            "canary": {
                "strategy": "loadbalance",
                "sticky": "header.x-user-id",
                "targets": [_t("stable", weight=9), _t("canary", weight=1)],
            },
            "ttft": {
                "timeout": {"first_token": "300ms"},
                "targets": [_t("ttft-stall", **_mock(head_stall_ms=3000)), _t("ttft-good")],
            },
            "ttft-one": {
                "timeout": {"first_token": "300ms"},
                "targets": [_t("ttft-stall", **_mock(head_stall_ms=3000))],
            },
            "reset": {"targets": [_t("reset", **_mock(reset=True)), _t("after-reset")]},
            "slow-head": {
                "targets": [
                    {"provider": "impatient", "model": "sh", **_mock(latency_ms=2000)},
                    _t("after-slow-head"),
                ]
            },
            "mid-stall": {
                "timeout": {"first_byte": "300ms"},
                "targets": [
                    _t("mid", **_mock(stall_after=2, stall_ms=2000)),
                    _t("never-used"),
                ],
            },
            "slow": {"targets": [_t("slow-3s", **_mock(latency_ms=3000))]},
            "hang": {"targets": [{"provider": "hang", "model": "h"}]},
            "brk-slow": {
                "breaker": {"failures": 2, "window": 2, "cooldown": "30s"},
                "targets": [_t("brk-slow", **_mock(latency_ms=400))],
            },
            "brk-retry": {
                "retry": {"attempts": 3, "backoff": "10ms"},
                "breaker": {"failures": 1, "window": 1, "cooldown": "30s"},
                "targets": [{"provider": "dead", "model": "x"}, _t("brk-retry-good")],
            },
            "picky": {
                "strategy": "least-latency",
                "targets": [_t("picky", **_mock(status=400))],
            },
            "claude-fb": {
                "retry": {"attempts": 2, "backoff": "10ms"},
                "targets": [
                    {"provider": "claude-dead", "model": "claude-sonnet-4-5"},
                    {"provider": "claude", "model": "claude-sonnet-4-5"},
                ],
            },
        },
    }


@pytest.fixture(scope="module")
def mock() -> Iterator[Proc]:
    p = start_mock()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def gw(mock: Proc) -> Iterator[Proc]:
    p = start_gateway(config(mock))
    yield p
    p.stop()


def body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "route me"}], **extra}


async def chat(
    http: aiohttp.ClientSession,
    gw: Proc,
    model: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> tuple[int, CIMultiDict[str], Any]:
    async with http.post(f"{gw.url}{CHAT}", json=body(model, **extra), headers=headers) as r:
        data = await r.read()
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            parsed = data
        return r.status, r.headers.copy(), parsed


async def fault(
    http: aiohttp.ClientSession, mock: Proc, model: str, count: int | None = None, **controls: Any
) -> None:
    payload: dict[str, Any] = {"model": model, "mock": controls}
    if count is not None:
        payload["count"] = count
    async with http.post(f"{mock.url}/_mock/faults", json=payload) as r:
        assert r.status == 200, await r.text()


async def clear_faults(http: aiohttp.ClientSession, mock: Proc) -> None:
    async with http.delete(f"{mock.url}/_mock/faults") as r:
        assert r.status == 200


# -- nested strategies ------------------------------------------------------------------------


async def test_nested_strategies_fall_through_every_level(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    status, headers, data = await chat(http, gw, "nested")
    assert status == 200, data
    assert data["model"] == "n-good"
    assert headers["x-fastgw-target"] == "nested.targets[1].targets[1]"
    # both load-balanced dead targets, then the 503, then the good one
    assert headers["x-fastgw-attempts"] == "4"
    assert headers["x-fastgw-fallbacks"] == "3"


# -- conditional ------------------------------------------------------------------------------


async def test_conditional_routes_by_metadata_header_body_and_model(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    premium = {"x-fastgw-metadata": json.dumps({"tier": "premium", "user": "u1"})}
    cases: list[tuple[dict[str, str] | None, dict[str, Any], str, str]] = [
        (premium, {}, "premium-model", "smart.targets[0]"),
        ({"x-team": "ml"}, {}, "research-model", "smart.targets[1]"),
        (None, {"user": "vip-42"}, "premium-model", "smart.targets[0]"),
        (None, {"max_tokens": 4000}, "long-model", "smart.targets[2]"),
        (None, {"max_tokens": 10}, "cheap-model", "smart.targets[3]"),
        (
            {"x-fastgw-metadata": '{"tier": "free"}', "x-team": "sales"},
            {},
            "cheap-model",
            "smart.targets[3]",
        ),
    ]
    for headers, extra, upstream, label in cases:
        status, got, data = await chat(http, gw, "smart", headers, **extra)
        assert status == 200, data
        assert (data["model"], got["x-fastgw-target"]) == (upstream, label), (headers, extra)
    for requested, upstream in (("cond/gpt-4o-mini", "small-model"), ("cond/gpt-4o", "big-model")):
        status, _, data = await chat(http, gw, requested)
        assert (status, data["model"]) == (200, upstream)


async def test_bad_routing_headers_are_400s(http: aiohttp.ClientSession, gw: Proc) -> None:
    for headers, param in (
        ({"x-fastgw-metadata": "not json"}, "x-fastgw-metadata"),
        ({"x-fastgw-metadata": "[1, 2]"}, "x-fastgw-metadata"),
        ({"x-fastgw-metadata": json.dumps({"k": "v" * 5000})}, "x-fastgw-metadata"),
        ({"x-fastgw-timeout": "soon"}, "x-fastgw-timeout"),
        ({"x-fastgw-timeout": "-1"}, "x-fastgw-timeout"),
        ({"x-fastgw-region": " , "}, "x-fastgw-region"),
    ):
        status, _, data = await chat(http, gw, "smart", headers)
        assert status == 400, (headers, data)
        assert data["error"]["param"] == param
        assert data["error"]["type"] == "invalid_request_error"


# -- least-latency / least-busy ----------------------------------------------------------------


async def test_least_latency_prefers_the_fast_target(http: aiohttp.ClientSession, gw: Proc) -> None:
    served: Counter[str] = Counter()
    for _ in range(20):
        status, _, data = await chat(http, gw, "fastest")
        assert status == 200
        served[data["model"]] += 1
    # both are measured once (unknown latency goes first), then the quick one wins
    assert served["quick"] >= 17, served
    assert served["slow"] >= 1, served


async def test_least_busy_spreads_concurrent_requests(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    results = await asyncio.gather(*(chat(http, gw, "idlest") for _ in range(10)))
    served = Counter(data["model"] for _, _, data in results)
    assert served == {"busy-a": 5, "busy-b": 5}, served


# -- circuit breakers --------------------------------------------------------------------------


async def readyz_targets(http: aiohttp.ClientSession, gw: Proc) -> dict[str, Any]:
    async with http.get(f"{gw.url}/readyz") as r:
        assert r.status == 200
        detail: dict[str, Any] = (await r.json())["targets"]
        return detail


async def metric(http: aiohttp.ClientSession, gw: Proc, name: str, target: str) -> float:
    async with http.get(f"{gw.url}/metrics") as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain")
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(name + "{") and f'target="{target}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {target} not in /metrics:\n{text}")


async def test_breaker_opens_probes_and_closes(
    http: aiohttp.ClientSession, gw: Proc, mock: Proc
) -> None:
    await fault(http, mock, "brk-a", status=503)
    try:
        for _ in range(3):  # three failures of the last five: open
            status, headers, _ = await chat(http, gw, "brk")
            assert (status, headers["x-fastgw-target"], headers["x-fastgw-attempts"]) == (
                200,
                "brk.targets[1]",
                "2",
            )
        targets = await readyz_targets(http, gw)
        assert targets["brk.targets[0]"]["breaker"]["state"] == "open"
        assert targets["brk.targets[1]"]["breaker"]["state"] == "closed"
        assert await metric(http, gw, "fastgw_target_breaker_state", "brk.targets[0]") == 1
        assert await metric(http, gw, "fastgw_target_breaker_opened_total", "brk.targets[0]") == 1
        # open: the failing target is not even tried
        status, headers, _ = await chat(http, gw, "brk")
        assert status == 200
        assert headers["x-fastgw-target"] == "brk.targets[1]"
        assert "x-fastgw-attempts" not in headers
        # after the cool-down a probe goes through; still failing: open again
        await asyncio.sleep(1.1)
        status, headers, _ = await chat(http, gw, "brk")
        assert (headers["x-fastgw-target"], headers["x-fastgw-attempts"]) == ("brk.targets[1]", "2")
        assert (await readyz_targets(http, gw))["brk.targets[0]"]["breaker"]["state"] == "open"
    finally:
        await clear_faults(http, mock)
    # recovered: the next probe succeeds and closes the breaker
    await asyncio.sleep(1.1)
    assert (await readyz_targets(http, gw))["brk.targets[0]"]["breaker"]["state"] == "half_open"
    status, headers, data = await chat(http, gw, "brk")
    assert (status, headers["x-fastgw-target"], data["model"]) == (200, "brk.targets[0]", "brk-a")
    assert (await readyz_targets(http, gw))["brk.targets[0]"]["breaker"]["state"] == "closed"
    assert await metric(http, gw, "fastgw_target_breaker_opened_total", "brk.targets[0]") == 2


async def test_all_breakers_open_is_503_with_retry_after(
    http: aiohttp.ClientSession, gw: Proc, mock: Proc
) -> None:
    await fault(http, mock, "brk-one", status=500)
    try:
        for _ in range(2):
            status, _, data = await chat(http, gw, "brk-one")
            assert status == 502, data  # the upstream's 500, as the gateway says it
        t0 = time.monotonic()
        status, headers, data = await chat(http, gw, "brk-one")
        assert time.monotonic() - t0 < 0.5  # answered at once, the upstream is not called
        assert status == 503
        assert data["error"]["code"] == "circuit_open"
        assert 1 <= int(headers["retry-after"]) <= 5
    finally:
        await clear_faults(http, mock)


# -- region / tags -----------------------------------------------------------------------------


async def test_region_and_tags_pin_without_silent_fallback(
    http: aiohttp.ClientSession, gw: Proc, mock: Proc
) -> None:
    status, headers, data = await chat(http, gw, "regional", {"x-fastgw-region": "eu"})
    assert (status, data["model"]) == (200, "eu-model")
    status, headers, data = await chat(http, gw, "regional", {"x-fastgw-tags": "ZDR"})
    assert (status, data["model"]) == (200, "eu-model")
    # the EU targets fail: the answer is their failure, never the US target
    await fault(http, mock, "eu-model", status=503)
    await fault(http, mock, "eu2-model", status=503)
    try:
        status, headers, data = await chat(http, gw, "regional", {"x-fastgw-region": "eu"})
        assert status == 503, data
        assert headers["x-fastgw-target"] == "regional.targets[2]"
        async with http.get(f"{mock.url}/_mock/requests") as r:
            seen = [e["body"]["model"] for e in await r.json() if e["body"]]
        assert seen[-2:] == ["eu-model", "eu2-model"]
    finally:
        await clear_faults(http, mock)
    status, _, data = await chat(http, gw, "regional", {"x-fastgw-region": "apac"})
    assert status == 403
    assert data["error"]["code"] == "no_eligible_target"
    assert "region apac" in data["error"]["message"]
    status, _, data = await chat(
        http, gw, "regional", {"x-fastgw-region": "us", "x-fastgw-tags": "zdr"}
    )
    assert status == 403


# -- sticky canary -------------------------------------------------------------------------------


async def test_sticky_canary_keeps_each_user_on_one_arm(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    arms: dict[str, set[str]] = {}

    async def user(uid: str) -> None:
        for _ in range(3):
            status, _, data = await chat(http, gw, "canary", {"x-user-id": uid})
            assert status == 200
            arms.setdefault(uid, set()).add(data["model"])

    users = [f"user-{i}" for i in range(150)]
    for i in range(0, len(users), 25):
        await asyncio.gather(*(user(u) for u in users[i : i + 25]))
    assert all(len(a) == 1 for a in arms.values())  # sticky
    canary = sum(1 for a in arms.values() if "canary" in a)
    # weight 1 of 10 → 15 expected of 150; binomial sd ≈ 3.7
    assert 3 <= canary <= 33, canary


# -- timeouts ----------------------------------------------------------------------------------


async def test_first_token_timeout_fails_over_before_the_first_byte(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    t0 = time.monotonic()
    async with http.post(f"{gw.url}{CHAT}", json=body("ttft", stream=True)) as r:
        assert r.status == 200
        assert r.headers["x-fastgw-target"] == "ttft.targets[1]"
        assert r.headers["x-fastgw-fallbacks"] == "1"
        raw = await r.read()
    assert raw.endswith(b"data: [DONE]\n\n") and b"error" not in raw
    assert time.monotonic() - t0 < 2.0
    async with http.post(f"{gw.url}{CHAT}", json=body("ttft-one", stream=True)) as r:
        assert r.status == 504
        err = (await r.json())["error"]
    assert err["code"] == "upstream_first_token_timeout"
    # not a streaming request: the first-token limit does not apply
    status, _, data = await chat(http, gw, "ttft-one")
    assert status == 200, data


async def test_reset_and_slow_headers_fail_over(http: aiohttp.ClientSession, gw: Proc) -> None:
    status, headers, data = await chat(http, gw, "reset")
    assert (status, data["model"], headers["x-fastgw-fallbacks"]) == (200, "after-reset", "1")
    status, headers, data = await chat(http, gw, "slow-head", stream=False)
    assert (status, data["model"], headers["x-fastgw-fallbacks"]) == (200, "after-slow-head", "1")


async def test_stall_after_the_first_byte_is_an_sse_error_not_a_fallback(
    http: aiohttp.ClientSession, gw: Proc, mock: Proc
) -> None:
    async with http.get(f"{mock.url}/_mock/requests") as r:
        before = len(await r.json())
    async with http.post(f"{gw.url}{CHAT}", json=body("mid-stall", stream=True)) as r:
        assert r.status == 200
        assert r.headers["x-fastgw-target"] == "mid-stall.targets[0]"
        raw = await r.read()
    assert b'"upstream_first_byte_timeout"' in raw
    assert raw.endswith(b"data: [DONE]\n\n")
    async with http.get(f"{mock.url}/_mock/requests") as r:
        models = [e["body"]["model"] for e in (await r.json())[before:] if e["body"]]
    assert "never-used" not in models


async def test_request_deadline_header(http: aiohttp.ClientSession, gw: Proc) -> None:
    t0 = time.monotonic()
    status, headers, data = await chat(http, gw, "slow", {"x-fastgw-timeout": "300ms"})
    assert status == 504, data
    assert data["error"]["code"] == "request_timeout"
    assert headers["x-fastgw-target"] == "slow.targets[0]"
    assert time.monotonic() - t0 < 1.5
    # capped by routing.max_request_timeout (1s in this config)
    t0 = time.monotonic()
    status, _, _ = await chat(http, gw, "slow", {"x-fastgw-timeout": "100"})
    assert status == 504
    assert 0.8 < time.monotonic() - t0 < 2.5


# -- the Messages API ----------------------------------------------------------------------------


async def test_messages_to_anthropic_targets_retry_and_fall_back(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    req = {
        "model": "claude-fb",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}],
    }
    hdrs = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    async with http.post(f"{gw.url}/v1/messages", json=req, headers=hdrs) as r:
        assert r.status == 200, await r.text()
        assert r.headers["x-fastgw-target"] == "claude-fb.targets[1]"
        assert r.headers["x-fastgw-attempts"] == "3"  # two tries on the dead one, then it
        data = await r.json()
    assert data["type"] == "message"
    async with http.post(f"{gw.url}/v1/messages", json={**req, "stream": True}, headers=hdrs) as r:
        assert r.status == 200
        raw = await r.read()
    assert b"event: message_stop" in raw


# -- client disconnects ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_client_leaving_drops_the_waiting_upstream_call(gw: Proc, stream: bool) -> None:
    """A client that gives up while the upstream has not answered yet (non-streamed, or a
    stream before its head) takes the upstream connection with it — at once, not at the
    gateway's first_byte timeout (120 s here)."""
    opened, closed = HANG.open, HANG.closed
    timeout = aiohttp.ClientTimeout(total=0.5)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        with pytest.raises(asyncio.TimeoutError):
            async with s.post(f"{gw.url}{CHAT}", json=body("hang", stream=stream)) as r:
                await r.read()
    assert HANG.open == opened + 1
    for _ in range(60):  # 3 s at most
        if HANG.closed > closed:
            break
        await asyncio.sleep(0.05)
    assert HANG.closed == closed + 1


# -- what is (not) held against a target -----------------------------------------------------------


async def test_a_requests_own_deadline_is_not_the_targets_failure(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    for _ in range(3):  # would open the breaker (2 of 2) if counted
        status, _, data = await chat(http, gw, "brk-slow", {"x-fastgw-timeout": "50ms"})
        assert (status, data["error"]["code"]) == (504, "request_timeout")
    assert (await readyz_targets(http, gw))["brk-slow.targets[0]"]["breaker"]["state"] == "closed"
    status, _, data = await chat(http, gw, "brk-slow")
    assert status == 200, data
    async with http.get(f"{gw.url}/metrics") as r:
        text = await r.text()
    assert 'target="brk-slow.targets[0]",provider="mock",outcome="failed"} 0' in text
    assert 'target="brk-slow.targets[0]",provider="mock",outcome="ok"} 1' in text


async def test_breaker_opening_during_retries_counts_as_a_fallback(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    status, headers, data = await chat(http, gw, "brk-retry")
    assert (status, data["model"]) == (200, "brk-retry-good")
    # one failure opened the dead target's breaker: no retry on it, straight to the next
    assert (headers["x-fastgw-attempts"], headers["x-fastgw-fallbacks"]) == ("2", "1")


async def test_a_refused_request_is_not_a_slow_or_failed_target(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    status, _, _ = await chat(http, gw, "picky")
    assert status == 400
    target = (await readyz_targets(http, gw))["picky.targets[0]"]
    assert target["latency_ewma_ms"] < 500  # a quick answer, not a failure's penalty
    async with http.get(f"{gw.url}/metrics") as r:
        text = await r.text()
    assert 'target="picky.targets[0]",provider="mock",outcome="ok"} 1' in text
    assert 'target="picky.targets[0]",provider="mock",outcome="failed"} 0' in text


async def test_a_slow_upload_is_read_whole(gw: Proc) -> None:
    """A body that takes longer than the disconnect watch's sweep to arrive is still read by
    the body reader (the watch is enlisted only once the body is in)."""
    payload = json.dumps(body("smart", user="u-" + "x" * 6000)).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    head = (
        f"POST {CHAT} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()
    writer.write(head)
    for i in range(0, len(payload), 1500):
        writer.write(payload[i : i + 1500])
        await writer.drain()
        await asyncio.sleep(0.3)
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert b" 200 " in status_line, status_line
