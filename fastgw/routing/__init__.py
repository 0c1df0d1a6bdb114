"""Model routing: public model names → targets (provider + upstream model + timeouts)."""

from __future__ import annotations

from .router import Route, Router, Target

__all__ = ["Route", "Router", "Target"]
