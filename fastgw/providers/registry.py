"""Provider kinds → adapter classes."""

from __future__ import annotations

from ..config.schema import ProviderConfig
from .base import Provider
from .openai import OpenAIProvider

_KINDS: dict[str, type[OpenAIProvider]] = {"openai": OpenAIProvider}


def build_provider(name: str, cfg: ProviderConfig) -> Provider:
    try:
        cls = _KINDS[cfg.kind]
    except KeyError:  # the config schema already restricts kinds; this guards the registry
        raise ValueError(f"unknown provider kind {cfg.kind!r}") from None
    return cls(name, cfg)
