"""Provider adapters: pure transforms between the gateway's API and each upstream's wire format."""

from __future__ import annotations

from .base import Provider, UpstreamRequest
from .registry import build_provider

__all__ = ["Provider", "UpstreamRequest", "build_provider"]
