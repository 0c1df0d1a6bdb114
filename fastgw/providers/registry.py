"""Provider kinds → adapters.

``openai`` serves any OpenAI-compatible server. The presets below are OpenAI-compatible
services that differ only in their base URL: data, not code. Other kinds have their own
module. A third-party package adds a kind with an entry point in the group
``fastgw.providers`` whose object is a factory ``(name, ProviderConfig) -> Provider``
exposing ``default_base_url``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

from ..config import ConfigError
from ..config.schema import ProviderConfig
from .base import Provider
from .openai import OpenAIProvider

Factory = Callable[[str, ProviderConfig], Provider]

#: OpenAI-compatible services: kind → default base URL.
PRESETS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "mistral": "https://api.mistral.ai/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "xai": "https://api.x.ai/v1",
    "perplexity": "https://api.perplexity.ai",
    "cerebras": "https://api.cerebras.ai/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "lmstudio": "http://127.0.0.1:1234/v1",
}


def _preset(kind: str, base_url: str) -> Factory:
    def make(name: str, cfg: ProviderConfig) -> Provider:
        return OpenAIProvider(name, cfg, kind=kind, default_base_url=base_url)

    return make


#: Kinds with an adapter module of their own: kind → "module:factory", imported on first use.
NATIVE: dict[str, str] = {
    "azure": "fastgw.providers.openai:AzureProvider",
    "anthropic": "fastgw.providers.anthropic:AnthropicProvider",
    "gemini": "fastgw.providers.gemini:GeminiProvider",
    "bedrock": "fastgw.providers.bedrock:BedrockProvider",
}


def _native(ref: str) -> Factory:
    """A factory that imports its adapter module on first use: a gateway loads only the
    adapters its config names."""

    def make(name: str, cfg: ProviderConfig) -> Provider:
        module, _, attr = ref.partition(":")
        factory: Factory = getattr(importlib.import_module(module), attr)
        return factory(name, cfg)

    return make


def _load() -> dict[str, Factory]:
    kinds: dict[str, Factory] = {k: _preset(k, url) for k, url in PRESETS.items()}
    kinds.update({k: _native(ref) for k, ref in NATIVE.items()})
    for ep in entry_points(group="fastgw.providers"):
        if ep.name in kinds:  # built-in kinds cannot be replaced
            continue
        try:
            kinds[ep.name] = ep.load()
        except Exception as e:  # a broken plugin must not take the gateway down
            sys.stderr.write(f"fastgw: provider kind {ep.name!r} ({ep.value}) not loaded: {e}\n")
    return kinds


_KINDS: dict[str, Factory] | None = None


def kinds() -> dict[str, Factory]:
    global _KINDS
    if _KINDS is None:
        _KINDS = _load()
    return _KINDS


def build_provider(name: str, cfg: ProviderConfig) -> Provider:
    """The adapter for one configured provider; an unknown kind is a ConfigError."""
    factory = kinds().get(cfg.kind)
    if factory is None:
        known = ", ".join(sorted(kinds()))
        raise ConfigError([f"providers.{name}.kind: unknown kind {cfg.kind!r} (known: {known})"])
    return factory(name, cfg)
