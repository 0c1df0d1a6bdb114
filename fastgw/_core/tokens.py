"""Prompt token estimation: picks the compiled twin, or the pure-Python reference.

Callers import from here only. ``FASTGW_NO_EXTENSIONS=1`` (see ``fastgw._core``) or a
missing compiled module selects ``_tokens_py``. Both twins return the same integers; the
rules and their calibration are in ``_tokens_py`` and docs/tokens.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

__all__ = [
    "COMPILED",
    "estimate_json",
    "estimate_json_fields",
    "estimate_text",
    "estimate_utf8",
]

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._tokens_py import estimate_json, estimate_json_fields, estimate_text, estimate_utf8

    COMPILED: bool = False
else:
    try:
        from ._tokens_c import (
            estimate_json,
            estimate_json_fields,
            estimate_text,
            estimate_utf8,
        )

        COMPILED = True
    except ImportError:  # not built (e.g. a source checkout): use the reference twin
        from ._tokens_py import (
            estimate_json,
            estimate_json_fields,
            estimate_text,
            estimate_utf8,
        )

        COMPILED = False
