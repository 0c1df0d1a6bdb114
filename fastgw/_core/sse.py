"""SSE framing and usage scanning: picks the compiled twin, or the pure-Python reference.

Callers import from here only. ``FASTGW_NO_EXTENSIONS=1`` (see ``fastgw._core``) or a
missing compiled module selects ``_sse_py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

__all__ = [
    "COMPILED",
    "EventTooLarge",
    "SSEEvent",
    "SSEParser",
    "StreamFilter",
    "extract_usage",
    "has_empty_choices",
]

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._sse_py import (
        EventTooLarge,
        SSEEvent,
        SSEParser,
        StreamFilter,
        extract_usage,
        has_empty_choices,
    )

    COMPILED: bool = False
else:
    try:
        from ._sse_c import (
            EventTooLarge,
            SSEEvent,
            SSEParser,
            StreamFilter,
            extract_usage,
            has_empty_choices,
        )

        COMPILED = True
    except ImportError:  # not built (e.g. a source checkout): use the reference twin
        from ._sse_py import (
            EventTooLarge,
            SSEEvent,
            SSEParser,
            StreamFilter,
            extract_usage,
            has_empty_choices,
        )

        COMPILED = False
