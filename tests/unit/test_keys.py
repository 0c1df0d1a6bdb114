"""Virtual keys: hashing, authentication outcomes, access rules, and the config checks."""

from __future__ import annotations

import time

import pytest

from fastgw.api.errors import GatewayError
from fastgw.config import ConfigError, validate
from fastgw.config.keyspec import key_hash
from fastgw.policy.keys import KeyStore

GOOD = "sk-fastgw-unit-test-key-000001"


def store(keys: list[dict[str, object]], teams: dict[str, object] | None = None) -> KeyStore:
    return KeyStore(validate({"keys": keys, "teams": teams or {}}, env={}))


def auth(s: KeyStore, headers: dict[str, str]) -> str:
    p = s.authenticate([(k.encode(), v.encode()) for k, v in headers.items()], time.time())
    return p.name


def code_of(s: KeyStore, headers: dict[str, str]) -> str | None:
    with pytest.raises(GatewayError) as e:
        auth(s, headers)
    assert e.value.status == 401
    return e.value.code


def test_key_hash_is_sha256_hex() -> None:
    assert key_hash("abc") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_authentication_outcomes() -> None:
    s = store(
        [
            {"name": "a", "key": GOOD},
            {"name": "h", "hash": key_hash("sk-hashed-only-0000000")},
            {"name": "off", "key": "sk-disabled-key-000000", "disabled": True},
            {"name": "old", "key": "sk-expired-key-0000000", "expires": "2001-02-03T04:05:06"},
            {"name": "future", "key": "sk-future-key-00000000", "expires": "2999-01-01"},
        ]
    )
    assert s.enabled
    assert auth(s, {"authorization": f"Bearer {GOOD}"}) == "a"
    assert auth(s, {"authorization": f"bearer   {GOOD}  "}) == "a"
    assert auth(s, {"x-api-key": GOOD}) == "a"
    assert auth(s, {"x-api-key": "sk-hashed-only-0000000"}) == "h"
    assert auth(s, {"x-api-key": "sk-future-key-00000000"}) == "future"
    assert code_of(s, {}) == "missing_api_key"
    assert code_of(s, {"authorization": "Basic Zm9vOmJhcg=="}) == "invalid_api_key"
    assert code_of(s, {"x-api-key": GOOD + "x"}) == "invalid_api_key"
    assert code_of(s, {"x-api-key": "sk-disabled-key-000000"}) == "key_disabled"
    assert code_of(s, {"x-api-key": "sk-expired-key-0000000"}) == "key_expired"


def test_remembered_keys_still_expire_and_do_not_cross_headers() -> None:
    """A key that authenticated is remembered by its header value: the next request skips
    the hash, but expiry is still checked, the memory is per header (an x-api-key value is
    not a Bearer value), and a new store (keys changed) remembers nothing."""
    expires = "2999-01-01T00:00:00"
    s = store([{"name": "a", "key": GOOD, "expires": expires}])
    soon = time.time()
    assert s.authenticate_values(f"Bearer {GOOD}".encode(), None, soon).name == "a"
    with pytest.raises(GatewayError) as e:  # the bare key as Authorization: not Bearer
        s.authenticate_values(GOOD.encode(), None, soon)
    assert e.value.code == "invalid_api_key"
    assert s.authenticate_values(None, GOOD.encode(), soon).name == "a"
    with pytest.raises(GatewayError) as e:  # the Bearer value as x-api-key: not the key
        s.authenticate_values(None, f"Bearer {GOOD}".encode(), soon)
    assert e.value.code == "invalid_api_key"
    later = 32503680000.0 + 1  # past 2999-01-01 UTC
    for authorization, api_key in ((f"Bearer {GOOD}".encode(), None), (None, GOOD.encode())):
        with pytest.raises(GatewayError) as e:
            s.authenticate_values(authorization, api_key, later)
        assert e.value.code == "key_expired"
    # Authorization wins over x-api-key, remembered or not
    with pytest.raises(GatewayError) as e:
        s.authenticate_values(b"Bearer sk-not-a-key-000000000", GOOD.encode(), soon)
    assert e.value.code == "invalid_api_key"
    disabled = store([{"name": "a", "key": GOOD, "disabled": True}])
    with pytest.raises(GatewayError) as e:
        disabled.authenticate_values(f"Bearer {GOOD}".encode(), None, soon)
    assert e.value.code == "key_disabled"


def test_no_keys_means_an_open_gateway() -> None:
    assert not store([]).enabled


def test_rules_of_key_and_team_both_apply() -> None:
    s = store(
        [{"name": "a", "key": GOOD, "team": "t", "models": ["gpt-*"], "max_tokens": 10}],
        {"t": {"deny_models": ["gpt-4o"], "endpoints": ["chat/completions"], "max_tokens": 5}},
    )
    p = s.authenticate([(b"x-api-key", GOOD.encode())], time.time())
    p.check("gpt-4o-mini", "chat/completions", 5)
    assert p.may_use("gpt-4o-mini") and not p.may_use("gpt-4o") and not p.may_use("claude")
    for model, endpoint, body, words in (
        ("gpt-4o", "chat/completions", None, "team 't' may not use model 'gpt-4o'"),
        ("claude", "chat/completions", None, "key 'a' may not use model 'claude'"),
        ("gpt-4o-mini", "embeddings", None, "team 't' may not use /v1/embeddings"),
        ("gpt-4o-mini", "chat/completions", 6, "at most 5 max_tokens"),
    ):
        with pytest.raises(GatewayError) as e:
            p.check(model, endpoint, body)
        assert e.value.status == 403 and words in e.value.message


def test_config_errors_for_keys() -> None:
    with pytest.raises(ConfigError) as e:
        validate(
            {
                "keys": [
                    {"name": "a", "key": "short"},
                    {"name": "a", "hash": "md5:abc"},
                    {"name": "b", "key": GOOD, "hash": key_hash(GOOD)},
                    {"name": "c"},
                    {"name": "d", "key": GOOD, "team": "nope", "expires": "next week"},
                ]
            },
            env={},
        )
    errors = e.value.errors
    for expected in (
        "keys[0].key: must be at least 16 characters",
        "keys[1].name: another key is named 'a'",
        "keys[1].hash: expected sha256: and 64 lower-case hex digits",
        "keys[2].key: give exactly one of key (the secret) and hash (sha256:<hex>)",
        "keys[3].key: give exactly one of key (the secret) and hash (sha256:<hex>)",
        "keys[4].team: unknown team 'nope' (teams: none defined)",
        "keys[4].expires: expected an ISO 8601 date or time, got 'next week'",
        "keys[4]: the same key as 'b'",
    ):
        assert expected in errors, errors


def test_key_passthrough_providers_hold_no_key() -> None:
    with pytest.raises(ConfigError) as e:
        validate(
            {
                "providers": {
                    "a": {"kind": "openai", "api_key": "sk-x", "key_passthrough": True},
                    "b": {"kind": "bedrock", "aws_region": "us-east-1", "key_passthrough": True},
                }
            },
            env={},
        )
    assert (
        "providers.a.api_key: a key_passthrough provider uses each caller's own key: omit api_key"
        in e.value.errors
    )
    assert "providers.b.key_passthrough: not supported for bedrock (SigV4)" in e.value.errors
