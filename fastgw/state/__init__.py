"""Where counters live: rate-limit buckets, concurrency slots, spend counters.

``open_state(cfg)`` builds the configured backend (``memory``, ``local``, ``redis``); the
contract every backend honours is in ``fastgw.state.base``. Backends are imported only when
configured (the ``redis`` one needs the ``redis`` package).
"""

from __future__ import annotations

import importlib

from ..config.schema import STATE_BACKENDS as BACKENDS
from ..config.schema import StateConfig
from .base import Charge, Limit, Spent, State, StateUnavailable, Take, Verdict, charge, take

__all__ = [
    "BACKENDS",
    "Charge",
    "Limit",
    "Spent",
    "State",
    "StateUnavailable",
    "Take",
    "Verdict",
    "charge",
    "open_state",
    "take",
]


def open_state(cfg: StateConfig) -> State:
    """The backend ``cfg.backend`` names, ready to use (its module's ``create(cfg)``)."""
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown state backend {cfg.backend!r}")
    module = importlib.import_module(f"{__name__}.{cfg.backend}")
    state: State = module.create(cfg)
    return state
