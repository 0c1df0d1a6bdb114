"""Compiled hot path. Import the switch modules (e.g. ``fastgw._core.sse``), never a twin."""

from __future__ import annotations

import os
import platform

#: True when FASTGW_NO_EXTENSIONS is set or the interpreter is not CPython.
NO_EXTENSIONS: bool = bool(os.environ.get("FASTGW_NO_EXTENSIONS")) or (
    platform.python_implementation() != "CPython"
)


def core_kind() -> str:
    """Which twin of the core is loaded: ``"compiled"`` or ``"pure-python"``."""
    from . import sse

    return "compiled" if sse.COMPILED else "pure-python"
