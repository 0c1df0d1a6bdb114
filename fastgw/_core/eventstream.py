"""AWS event-stream framing (Bedrock ConverseStream): the compiled twin, or the pure reference.

Callers import from here only. ``FASTGW_NO_EXTENSIONS=1`` (see ``fastgw._core``) or a
missing compiled module selects ``_eventstream_py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

__all__ = [
    "COMPILED",
    "EventMessage",
    "EventStreamDecoder",
    "EventStreamError",
    "encode_message",
]

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._eventstream_py import EventMessage, EventStreamDecoder, EventStreamError, encode_message

    COMPILED: bool = False
else:
    try:
        from ._eventstream_c import (
            EventMessage,
            EventStreamDecoder,
            EventStreamError,
            encode_message,
        )

        COMPILED = True
    except ImportError:  # not built (e.g. a source checkout): use the reference twin
        from ._eventstream_py import (
            EventMessage,
            EventStreamDecoder,
            EventStreamError,
            encode_message,
        )

        COMPILED = False
