"""Configuration: durations, ${ENV} interpolation, every error with its exact path, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgw.config import ConfigError, load_config, parse_duration, resolve_config, validate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("2s", 2.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("3", 3.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-1s", 0, "1d", True, [1]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_minimal_config_and_defaults() -> None:
    cfg = validate(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
            "models": {"m": {"targets": [{"provider": "p"}]}},
        },
        env={},
    )
    assert cfg.server.port == 8080 and cfg.server.workers == 1
    assert cfg.server.max_body_bytes == 10 * 1024 * 1024
    assert cfg.models["m"].targets[0].model is None
    assert cfg.providers["p"].api_key is None


def test_env_interpolation() -> None:
    cfg = validate(
        {
            "server": {"port": "${PORT}", "drain_timeout": "${DRAIN:-5s}"},
            "providers": {
                "p": {"kind": "openai", "api_key": "${KEY}", "base_url": "http://${HOST}/v1"}
            },
        },
        env={"PORT": "9001", "KEY": "sk-abc", "HOST": "127.0.0.1:8000"},
    )
    assert cfg.server.port == 9001
    assert cfg.server.drain_timeout == 5.0
    assert cfg.providers["p"].api_key == "sk-abc"
    assert cfg.providers["p"].base_url == "http://127.0.0.1:8000/v1"


def test_every_error_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as e:
        validate(
            {
                "server": {"port": "x", "workrs": 2},
                "providers": {"a": {"kind": "openai", "api_key": "${NOPE}"}, "b": {}},
                "models": {"m": {"targets": [{"provider": "a", "modle": "x"}]}, "n": []},
                "extra": 1,
            },
            env={},
        )
    errors = e.value.errors
    assert "server.port: expected an integer, got a string" in errors
    assert any(
        x.startswith("server.workrs: unknown field (did you mean 'workers'?)") for x in errors
    )
    assert "providers.a.api_key: environment variable NOPE is not set" in errors
    assert "providers.b.kind: required field is missing" in errors
    assert any(x.startswith("models.m.targets[0].modle: unknown field") for x in errors)
    assert "models.n: expected a mapping, got a list" in errors
    assert any(x.startswith("extra: unknown field") for x in errors)
    assert len(errors) == 7


def test_semantic_errors() -> None:
    with pytest.raises(ConfigError) as e:
        validate(
            {
                "server": {"port": 70000},
                "providers": {
                    "p": {
                        "kind": "openai",
                        "headers": {"bad name": "x", "Host": "evil", "X-Ok": "a\r\nb: c"},
                    }
                },
                "models": {"a*b*": {"targets": [{"provider": "q", "model": ""}]}},
            },
            env={},
        )
    errors = e.value.errors
    assert "server.port: must be between 1 and 65535, got 70000" in errors
    assert "providers.p.headers: invalid header name 'bad name'" in errors
    assert "providers.p.headers.Host: is set by the gateway itself" in errors
    assert "providers.p.headers.X-Ok: a header value cannot contain CR, LF or NUL" in errors
    assert "models.a*b*: a model pattern may contain at most one '*'" in errors
    assert "models.a*b*.targets[0].provider: unknown provider 'q' (known: p)" in errors
    assert "models.a*b*.targets[0].model: cannot be empty" in errors


def test_load_yaml_and_json(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("server:\n  port: 9100\n")
    assert load_config(y, env={}).server.port == 9100
    j = tmp_path / "c.json"
    j.write_text('{"server": {"port": 9200}}')
    assert load_config(j, env={}).server.port == 9200
    broken = tmp_path / "b.yaml"
    broken.write_text("server: [1,\n")
    with pytest.raises(ConfigError) as e:
        load_config(broken, env={})
    assert "invalid YAML" in e.value.errors[0] and "line" in e.value.errors[0]


def test_resolve_demo_and_openai_defaults() -> None:
    cfg, source = resolve_config(None, env={"FASTGW_PORT": "9300"})
    assert "demo" in source
    assert cfg.server.demo_upstream
    assert cfg.providers["demo"].base_url == "http://127.0.0.1:9300/_demo/v1"
    assert list(cfg.models) == ["fastgw-demo"]
    cfg, source = resolve_config(None, env={"OPENAI_API_KEY": "sk-x"})
    assert "OpenAI" in source
    assert cfg.providers["openai"].base_url == "https://api.openai.com/v1"
    assert cfg.providers["openai"].api_key == "sk-x"
    assert list(cfg.models) == ["*"]


def test_resolve_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("server: {port: 9000, workers: 1}\n")
    cfg, _ = resolve_config(str(f), env={"FASTGW_WORKERS": "3", "FASTGW_HOST": "::1"})
    assert cfg.server.workers == 3 and cfg.server.host == "::1" and cfg.server.port == 9000
    with pytest.raises(ConfigError):
        resolve_config(str(f), env={"FASTGW_PORT": "abc"})
    with pytest.raises(ConfigError):
        resolve_config(str(f), env={"FASTGW_WORKERS": "0"})


def test_unknown_provider_kind_is_reported_with_the_rest() -> None:
    with pytest.raises(ConfigError) as e:
        validate(
            {"server": {"port": "x"}, "providers": {"p": {"kind": "opnai"}}},
            env={},
            kinds={"openai", "groq"},
        )
    assert "server.port: expected an integer, got a string" in e.value.errors
    assert any(
        x.startswith("providers.p.kind: unknown kind 'opnai' (did you mean 'openai'?)")
        for x in e.value.errors
    )


def test_the_complete_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml"
    cfg = load_config(example, env={"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y"})
    assert cfg.keys[0].budget is not None and cfg.keys[0].budget.fallback_model == "llama"
    assert "batch-jobs" in cfg.budgets.tags and cfg.catalog.models
