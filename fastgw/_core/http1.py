"""HTTP/1.1 response parsing (client side): picks the compiled twin, or the pure-Python reference.

Callers import from here only. ``FASTGW_NO_EXTENSIONS=1`` (see ``fastgw._core``) or a
missing compiled module selects ``_http1_py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

__all__ = ["COMPILED", "HTTPParseError", "ResponseParser"]

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._http1_py import HTTPParseError, ResponseParser

    COMPILED: bool = False
else:
    try:
        from ._http1_c import HTTPParseError, ResponseParser

        COMPILED = True
    except ImportError:  # not built (e.g. a source checkout): use the reference twin
        from ._http1_py import HTTPParseError, ResponseParser

        COMPILED = False
