"""Virtual keys against a running gateway: who may call (401 with the reason) and what
they may use (403 naming the rule), in each API's error shape."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.servers import SECRET, Proc, start_gateway

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
RESEARCH = "sk-fastgw-research-0123456789"
HASHED = "sk-fastgw-hashed-key-abcdefghij"
CAPPED = "sk-fastgw-capped-key-0123456789"
DISABLED = "sk-fastgw-disabled-0123456789"
EXPIRED = "sk-fastgw-expired-01234567890"
EU_ONLY = "sk-fastgw-eu-only-0123456789"
BYO = "sk-fastgw-bring-own-0123456789"


@pytest.fixture(scope="module")
def gw(mock: Proc) -> Iterator[Proc]:
    base = f"{mock.url}/v1"
    cfg: dict[str, Any] = {
        "providers": {
            "mock": {"kind": "openai", "base_url": base, "api_key": SECRET},
            "other": {"kind": "openai", "base_url": base, "api_key": SECRET},
            "byo": {"kind": "openai", "base_url": base, "key_passthrough": True},
        },
        "models": {
            "gpt-test": {"targets": [{"provider": "mock", "model": "m1"}]},
            "smart-a": {"targets": [{"provider": "mock", "model": "m2"}]},
            "secret-model": {"targets": [{"provider": "mock", "model": "m3"}]},
            "byo-model": {"targets": [{"provider": "byo", "model": "byo-m"}]},
            "by-caller": {
                "strategy": "conditional",
                "conditions": [
                    {"when": {"key.team": "research"}, "then": "lab"},
                    {"when": {"key.tags": {"contains": "beta"}}, "then": "beta"},
                ],
                "default": "main",
                "targets": [
                    {"name": "lab", "provider": "mock", "model": "lab-m"},
                    {"name": "beta", "provider": "mock", "model": "beta-m"},
                    {"name": "main", "provider": "mock", "model": "main-m"},
                ],
            },
            "regional": {
                "targets": [
                    {"provider": "other", "model": "us-m", "region": "us"},
                    {"provider": "mock", "model": "eu-m", "region": "eu"},
                ]
            },
        },
        "teams": {"research": {"deny_models": ["secret-*"]}},
        "keys": [
            {
                "name": "research",
                "key": RESEARCH,
                "team": "research",
                "models": ["gpt-test", "smart-*", "secret-model", "regional", "by-caller"],
            },
            {
                "name": "hashed",
                "hash": "sha256:" + hashlib.sha256(HASHED.encode()).hexdigest(),
                "endpoints": ["chat/completions"],
            },
            {"name": "byo", "key": BYO, "passthrough": True},
            {"name": "capped", "key": CAPPED, "max_tokens": 100, "tags": ["beta"]},
            {"name": "off", "key": DISABLED, "disabled": True},
            {"name": "old", "key": EXPIRED, "expires": "2020-01-01"},
            {"name": "eu", "key": EU_ONLY, "regions": ["EU"], "metadata": ["tier"]},
        ],
    }
    p = start_gateway(cfg)
    yield p
    p.stop()


def body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def post(
    http: aiohttp.ClientSession,
    gw: Proc,
    headers: dict[str, str],
    payload: dict[str, Any],
    path: str = CHAT,
) -> tuple[int, Any]:
    async with http.post(f"{gw.url}{path}", json=payload, headers=headers) as r:
        return r.status, await r.json()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_who_may_call(http: aiohttp.ClientSession, gw: Proc) -> None:
    for headers, code in (
        ({}, "missing_api_key"),
        ({"authorization": "Token abc"}, "invalid_api_key"),
        ({"authorization": "Bearer "}, "invalid_api_key"),
        (bearer("sk-not-a-key-at-all-000000"), "invalid_api_key"),
        (bearer(DISABLED), "key_disabled"),
        (bearer(EXPIRED), "key_expired"),
    ):
        status, data = await post(http, gw, headers, body("gpt-test"))
        assert status == 401, (headers, data)
        assert data["error"]["code"] == code
        assert data["error"]["type"] == "authentication_error"
        assert DISABLED not in str(data) and EXPIRED not in str(data)
    for headers in (bearer(RESEARCH), {"x-api-key": RESEARCH}, bearer(HASHED)):
        status, data = await post(http, gw, headers, body("gpt-test"))
        assert status == 200, data


async def test_what_they_may_use(http: aiohttp.ClientSession, gw: Proc) -> None:
    cases = [
        (RESEARCH, body("gpt-4o"), 404, None),  # no such model on the gateway
        (RESEARCH, body("smart-a"), 200, None),
        (RESEARCH, body("secret-model"), 403, "team 'research' may not use model"),
        (CAPPED, body("gpt-test", max_tokens=50), 200, None),
        (CAPPED, body("gpt-test", max_tokens=500), 403, "at most 100 max_tokens"),
        (CAPPED, body("gpt-test", max_completion_tokens=101), 403, "at most 100"),
    ]
    for key, payload, want, message in cases:
        status, data = await post(http, gw, bearer(key), payload)
        assert status == want, (key, payload, data)
        if message:
            assert data["error"]["code"] == "access_denied"
            assert data["error"]["type"] == "permission_error"
            assert message in data["error"]["message"]
    status, data = await post(
        http, gw, bearer(HASHED), {"model": "gpt-test", "input": "x"}, "/v1/embeddings"
    )
    assert status == 403 and "endpoints allow list" in data["error"]["message"]


async def test_regions_of_a_key_restrict_targets(http: aiohttp.ClientSession, gw: Proc) -> None:
    status, data = await post(http, gw, bearer(EU_ONLY), body("regional"))
    assert (status, data["model"]) == (200, "eu-m")
    status, data = await post(http, gw, bearer(EU_ONLY), body("gpt-test"))
    assert status == 403 and "allows regions eu" in data["error"]["message"]


async def test_models_lists_what_the_key_may_use(http: aiohttp.ClientSession, gw: Proc) -> None:
    async with http.get(f"{gw.url}/v1/models", headers=bearer(RESEARCH)) as r:
        ids = {m["id"] for m in (await r.json())["data"]}
    assert ids == {"gpt-test", "smart-a", "regional", "by-caller"}
    async with http.get(f"{gw.url}/v1/models") as r:
        assert r.status == 401
    for path in ("/healthz", "/readyz", "/metrics"):  # operations endpoints: no key
        async with http.get(f"{gw.url}{path}") as r:
            assert r.status == 200, path


async def test_anthropic_ingress_answers_in_its_shape(
    http: aiohttp.ClientSession, gw: Proc
) -> None:
    msg = {"model": "gpt-test", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    status, data = await post(
        http, gw, {"x-api-key": "wrong-key-000000000000"}, msg, "/v1/messages"
    )
    assert status == 401
    assert data["type"] == "error" and data["error"]["type"] == "authentication_error"
    status, data = await post(http, gw, {"x-api-key": RESEARCH}, msg, "/v1/messages")
    assert status == 200 and data["type"] == "message"
    msg["model"] = "secret-model"
    status, data = await post(http, gw, {"x-api-key": RESEARCH}, msg, "/v1/messages")
    assert status == 403 and data["error"]["type"] == "permission_error"


def test_openai_sdk_with_a_virtual_key(gw: Proc) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=RESEARCH, max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    bad = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-wrong-0000000000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(
            model="secret-model", messages=[{"role": "user", "content": "x"}]
        )


async def test_allowed_metadata(http: aiohttp.ClientSession, gw: Proc) -> None:
    ok = {**bearer(EU_ONLY), "x-fastgw-metadata": '{"tier": "gold"}'}
    status, data = await post(http, gw, ok, body("regional"))
    assert status == 200, data
    bad = {**bearer(EU_ONLY), "x-fastgw-metadata": '{"tier": "gold", "user": "u1"}'}
    status, data = await post(http, gw, bad, body("regional"))
    assert status == 403
    assert "may not send metadata 'user' (allowed: tier)" in data["error"]["message"]


async def test_routing_by_the_callers_team_and_tags(http: aiohttp.ClientSession, gw: Proc) -> None:
    for key, upstream in ((RESEARCH, "lab-m"), (CAPPED, "beta-m"), (HASHED, "main-m")):
        status, data = await post(http, gw, bearer(key), body("by-caller"))
        assert (status, data["model"]) == (200, upstream), key


async def test_bring_your_own_provider_key(
    http: aiohttp.ClientSession, gw: Proc, mock: Proc
) -> None:
    own = "sk-team-own-openai-key-42"
    hdrs = {**bearer(BYO), "x-fastgw-provider-key": own}
    status, data = await post(http, gw, hdrs, body("byo-model"))
    assert status == 200, data
    async with http.get(f"{mock.url}/_mock/requests") as r:
        seen = [e for e in await r.json() if e["body"] and e["body"].get("model") == "byo-m"]
    assert seen[-1]["headers"]["authorization"] == f"Bearer {own}"
    assert "x-fastgw-provider-key" not in seen[-1]["headers"]
    # a key without passthrough may not send one; a passthrough provider needs one
    status, data = await post(
        http, gw, {**bearer(RESEARCH), "x-fastgw-provider-key": own}, body("gpt-test")
    )
    assert status == 403 and "may not send its own provider key" in data["error"]["message"]
    status, data = await post(http, gw, bearer(BYO), body("byo-model"))
    assert (status, data["error"]["code"]) == (401, "provider_key_required")
    status, data = await post(
        http, gw, {**bearer(BYO), "x-fastgw-provider-key": "bad key\u00e9"}, body("byo-model")
    )
    assert status == 400
