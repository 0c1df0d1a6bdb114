"""Configuration: the file's schema, loading with ${ENV} interpolation, defaults, overrides."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping

import msgspec

from .load import ConfigError, load_config, parse_duration, validate
from .schema import GatewayConfig, ModelConfig, ProviderConfig, ServerConfig, TimeoutConfig

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "ModelConfig",
    "ProviderConfig",
    "ServerConfig",
    "TimeoutConfig",
    "default_config",
    "load_config",
    "parse_duration",
    "resolve_config",
    "validate",
]

DEMO_MODEL = "fastgw-demo"


def _loopback_for(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def default_config(env: Mapping[str, str], host: str, port: int) -> tuple[dict[str, object], str]:
    """The embedded configuration used when no file is given.

    With ``OPENAI_API_KEY`` set: every model name is proxied to OpenAI (``OPENAI_BASE_URL``
    honoured). Otherwise: the offline demo — the built-in mock upstream served by the gateway
    itself under ``/_demo``, behind the model ``fastgw-demo``.
    """
    if env.get("OPENAI_API_KEY"):
        base = env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        return (
            {
                "server": {"host": host, "port": port},
                "providers": {
                    "openai": {"kind": "openai", "base_url": base, "api_key": "${OPENAI_API_KEY}"}
                },
                "models": {"*": {"targets": [{"provider": "openai"}]}},
            },
            f"embedded default: every model proxied to OpenAI ({base})",
        )
    upstream = f"http://{_loopback_for(host)}:{port}/_demo/v1"
    return (
        {
            "server": {"host": host, "port": port, "demo_upstream": True},
            "providers": {"demo": {"kind": "openai", "base_url": upstream, "api_key": "demo"}},
            "models": {DEMO_MODEL: {"targets": [{"provider": "demo", "model": "mock-model"}]}},
        },
        f"embedded demo: model '{DEMO_MODEL}' served by the built-in mock upstream (offline)",
    )


def resolve_config(
    path: str | None,
    env: Mapping[str, str] | None = None,
    kinds: Collection[str] | None = None,
) -> tuple[GatewayConfig, str]:
    """The configuration a server runs: a file (or the embedded default) plus the
    ``FASTGW_HOST`` / ``FASTGW_PORT`` / ``FASTGW_WORKERS`` overrides. Returns it and a
    one-line description of where it came from. ``kinds``: the provider kinds that exist."""
    env = os.environ if env is None else env
    overrides: dict[str, object] = {}
    errors: list[str] = []
    for key, var, conv in (
        ("host", "FASTGW_HOST", str),
        ("port", "FASTGW_PORT", int),
        ("workers", "FASTGW_WORKERS", int),
    ):
        raw = env.get(var)
        if raw:
            try:
                overrides[key] = conv(raw)
            except ValueError:
                errors.append(f"{var}: expected an integer, got {raw!r}")
    if errors:
        raise ConfigError(errors, "environment")
    if path:
        cfg = load_config(path, env, kinds)
        source = path
    else:
        host = str(overrides.get("host", "127.0.0.1"))
        port = int(str(overrides.get("port", 8080)))
        data, source = default_config(env, host, port)
        cfg = validate(data, env, "embedded default", kinds)
    if overrides:
        server = msgspec.structs.replace(cfg.server, **overrides)
        cfg = msgspec.structs.replace(cfg, server=server)
        problems: list[str] = []
        from .load import _semantic_checks

        _semantic_checks(cfg, lambda p, m: problems.append(f"{p}: {m}"))
        if problems:
            raise ConfigError(problems, source)
    return cfg, source
