"""Request parsing, upstream bodies, provider error mapping and model resolution."""

from __future__ import annotations

import msgspec
import pytest

from fastgw.api.errors import GatewayError
from fastgw.api.openai import Endpoint, parse_request
from fastgw.config import ConfigError, validate
from fastgw.providers.openai import OpenAIProvider
from fastgw.routing.router import Router

SECRET = "sk-unit-secret-42"


def provider() -> OpenAIProvider:
    cfg = validate(
        {"providers": {"p": {"kind": "openai", "base_url": "http://u/v1/", "api_key": SECRET}}},
        env={},
    )
    return OpenAIProvider("p", cfg.providers["p"])


def test_parse_chat_keeps_raw_and_finds_facts() -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"x":{"y":1}}'
    req = parse_request(Endpoint.CHAT, body)
    assert req.model == "m" and req.stream and not req.client_usage
    assert req.upstream_body("m", inject_usage=False) is body  # nothing to change: same bytes


def test_upstream_body_rewrites_only_what_it_must() -> None:
    body = (
        b'{"model":"alias","messages":[{"role":"user","content":"\\"model\\": 1"}],'
        b'"stream":true,"stream_options":{"include_usage":false,"other":1},"extra":[1,2]}'
    )
    req = parse_request(Endpoint.CHAT, body)
    out = msgspec.json.decode(req.upstream_body("real-model", inject_usage=True))
    assert out["model"] == "real-model"
    assert out["stream_options"] == {"include_usage": True, "other": 1}
    assert out["messages"][0]["content"] == '"model": 1'
    assert out["extra"] == [1, 2]


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        (Endpoint.CHAT, b'{"model": "m", "messages": []}', "messages"),
        (Endpoint.CHAT, b'{"model": "", "messages": [{"role": "user"}]}', "model"),
        (
            Endpoint.CHAT,
            b'{"model": "m", "messages": [{"role": "u"}], "stream_options": 1}',
            "stream_options",
        ),
        (Endpoint.EMBEDDINGS, b'{"model": "m"}', "input"),
        (Endpoint.EMBEDDINGS, b'{"model": "m", "input": {"a": 1}}', "input"),
        (Endpoint.EMBEDDINGS, b'{"model": "m", "input": "x", "stream": true}', "stream"),
        (Endpoint.COMPLETIONS, b'{"model": "m", "prompt": 5}', "prompt"),
    ],
)
def test_parse_errors_name_the_param(endpoint: Endpoint, body: bytes, param: str) -> None:
    with pytest.raises(GatewayError) as e:
        parse_request(endpoint, body)
    assert e.value.status == 400
    assert e.value.param == param


def test_build_request_injects_usage_for_streams_only() -> None:
    p = provider()
    stream = parse_request(Endpoint.CHAT, b'{"model":"a","messages":[{"role":"u"}],"stream":true}')
    u = p.build_request(stream, "b", "rid-1")
    assert u.path == "/chat/completions"
    assert p.headers["authorization"] == f"Bearer {SECRET}"  # static: the session's defaults
    assert u.headers == {"x-request-id": "rid-1", "accept": "text/event-stream"}
    assert u.inject_usage
    asked = parse_request(
        Endpoint.CHAT,
        b'{"model":"a","messages":[{"role":"u"}],"stream":true,'
        b'"stream_options":{"include_usage":true}}',
    )
    assert not p.build_request(asked, "a", "r").inject_usage
    plain = parse_request(Endpoint.CHAT, b'{"model":"a","messages":[{"role":"u"}]}')
    assert not p.build_request(plain, "a", "r").inject_usage


def test_map_error_scrubs_secret_and_maps_status() -> None:
    p = provider()
    body = msgspec.json.encode(
        {
            "error": {
                "message": f"Incorrect API key provided: {SECRET}",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "param": None,
            }
        }
    )
    err = p.map_error(401, body)
    assert err.status == 502 and err.code == "upstream_auth_failed"
    assert SECRET not in err.message and "***" in err.message
    assert p.map_error(429, body).status == 429
    assert p.map_error(500, b"<html>oops</html>").status == 502
    assert "oops" in p.map_error(500, b"<html>oops</html>").message
    assert p.map_error(503, b"").status == 503
    assert p.map_error(400, b'{"error":"plain string"}').message == "plain string"


def test_router_exact_then_longest_pattern() -> None:
    cfg = validate(
        {
            "providers": {"p": {"kind": "openai"}, "q": {"kind": "openai"}},
            "models": {
                "exact": {"targets": [{"provider": "p", "model": "up"}]},
                "*": {"targets": [{"provider": "p"}]},
                "q/*": {"targets": [{"provider": "q"}]},
                "*-mini": {"targets": [{"provider": "q"}]},
            },
        },
        env={},
    )
    r = Router(cfg)
    found = r.resolve("exact")
    assert found is not None and found[0].name == "exact"
    found = r.resolve("q/gpt-4o")
    assert found is not None and found[0].name == "q/*" and found[1] == "gpt-4o"
    found = r.resolve("anything")
    assert found is not None and found[0].name == "*" and found[1] == "anything"
    assert r.public_models() == [("exact", "p")]
    assert Router(validate({"models": {}}, env={})).resolve("x") is None


def test_presets_are_openai_compatible_with_their_base_url() -> None:
    from fastgw.providers.registry import PRESETS, build_provider, kinds

    cfg = validate(
        {"providers": {"g": {"kind": "groq", "api_key": "k"}, "o": {"kind": "ollama"}}},
        env={},
        kinds=kinds(),
    )
    groq = build_provider("g", cfg.providers["g"])
    assert groq.kind == "groq" and groq.openai_shaped
    assert groq.base_url == PRESETS["groq"]
    assert groq.headers["authorization"] == "Bearer k"
    ollama = build_provider("o", cfg.providers["o"])
    assert ollama.base_url == "http://127.0.0.1:11434/v1"
    assert "authorization" not in ollama.headers
    assert set(PRESETS) <= set(kinds())


def test_azure_deployment_urls_and_api_key_header() -> None:
    from fastgw.providers.registry import build_provider, kinds
    from fastgw.upstream.wire import Wire

    cfg = validate(
        {
            "providers": {
                "az": {
                    "kind": "azure",
                    "base_url": "https://res.openai.azure.com/openai",
                    "api_key": "azk",
                    "api_version": "2024-10-21",
                },
                "v1": {"kind": "azure", "base_url": "https://res.openai.azure.com/openai/v1"},
            }
        },
        env={},
        kinds=kinds(),
    )
    az = build_provider("az", cfg.providers["az"])
    assert az.headers["api-key"] == "azk" and "authorization" not in az.headers
    req = parse_request(Endpoint.CHAT, b'{"model":"x","messages":[{"role":"user"}]}')
    u = az.build_request(req, "my deployment", "r")
    assert u.path == "/deployments/my%20deployment/chat/completions?api-version=2024-10-21"
    wire = Wire(az.base_url, az.headers)
    line = wire.request(u.path, u.headers, u.body).split(b"\r\n", 1)[0]
    assert line == (
        b"POST /openai/deployments/my%20deployment/chat/completions?api-version=2024-10-21 HTTP/1.1"
    )
    v1 = build_provider("v1", cfg.providers["v1"])
    assert v1.build_request(req, "gpt-4o", "r").path == "/chat/completions"
    with pytest.raises(ConfigError):
        build_provider(
            "bad", validate({"providers": {"b": {"kind": "azure"}}}, env={}).providers["b"]
        )


def test_override_params_set_and_remove_fields() -> None:
    req = parse_request(
        Endpoint.CHAT,
        b'{"model":"m","messages":[{"role":"user"}],"temperature":1.5,"seed":7,"user":"u"}',
    )
    out = req.with_overrides(
        {"temperature": msgspec.Raw(b"0"), "seed": None, "stream_options": None}
    )
    body = msgspec.json.decode(out.raw)
    assert body["temperature"] == 0 and "seed" not in body and body["user"] == "u"
    with pytest.raises(ConfigError) as e:
        validate(
            {
                "providers": {"p": {"kind": "openai"}},
                "models": {
                    "m": {"targets": [{"provider": "p", "override_params": {"model": "x"}}]}
                },
            },
            env={},
        )
    assert e.value.errors == [
        "models.m.targets[0].override_params.model: decides routing or the wire shape and "
        "cannot be overridden"
    ]


def test_model_level_override_params_under_the_targets() -> None:
    cfg = validate(
        {
            "providers": {"p": {"kind": "openai"}},
            "models": {
                "m": {
                    "override_params": {"temperature": 0.5, "seed": 1},
                    "targets": [{"provider": "p", "override_params": {"temperature": 0}}],
                }
            },
        },
        env={},
    )
    target = Router(cfg).exact["m"].targets[0]
    assert {k: bytes(v) if v is not None else None for k, v in target.overrides.items()} == {
        "temperature": b"0",
        "seed": b"1",
    }


def test_third_party_kind_from_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from fastgw.providers import registry

    ep = EntryPoint("myllm", "fastgw.providers.openai:OpenAIProvider", "fastgw.providers")
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == ep.group else [])
    monkeypatch.setattr(registry, "_KINDS", None)
    try:
        assert "myllm" in registry.kinds()
        cfg = validate({"providers": {"x": {"kind": "myllm"}}}, env={}, kinds=registry.kinds())
        assert registry.build_provider("x", cfg.providers["x"]).name == "x"
    finally:
        registry._KINDS = None


def test_route_order_and_backoff() -> None:
    cfg = validate(
        {
            "providers": {"p": {"kind": "openai"}},
            "models": {
                "fb": {
                    "targets": [{"provider": "p", "model": "a"}, {"provider": "p", "model": "b"}]
                },
                "lb": {
                    "strategy": "loadbalance",
                    "retry": {"attempts": 3, "backoff": "100ms", "max_backoff": "250ms"},
                    "targets": [
                        {"provider": "p", "model": "a", "weight": 1},
                        {"provider": "p", "model": "b", "weight": 0},
                        {"provider": "p", "model": "c", "weight": 3},
                    ],
                },
            },
        },
        env={},
    )
    r = Router(cfg)
    assert [t.model for t in r.exact["fb"].order()] == ["a", "b"]
    lb = r.exact["lb"]
    firsts = [lb.order()[0].model for _ in range(4000)]
    assert "b" not in firsts  # weight 0: never drawn
    assert 2700 <= firsts.count("c") <= 3300  # 3:1 → 3000 expected
    assert all(len(lb.order()) == 2 for _ in range(10))
    waits = [lb.leaves[0].backoff(a) for a in range(5) for _ in range(50)]
    assert all(0 <= w <= 0.25 for w in waits)
    with pytest.raises(ConfigError) as e:
        validate(
            {
                "providers": {"p": {"kind": "openai"}},
                "models": {
                    "m": {
                        "strategy": "roundrobin",
                        "retry": {"attempts": 0, "on_status": [200]},
                        "targets": [{"provider": "p", "weight": -1}],
                    }
                },
            },
            env={},
        )
    assert (
        "models.m.strategy: expected one of fallback, loadbalance, conditional, least-latency, "
        "least-busy, got 'roundrobin'" in e.value.errors
    )
    assert "models.m.retry.attempts: must be at least 1" in e.value.errors
    assert "models.m.retry.on_status: 200 is not an HTTP error status" in e.value.errors
    assert "models.m.targets[0].weight: cannot be negative" in e.value.errors
