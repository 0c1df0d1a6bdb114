"""The ``x-ratelimit-*`` answer headers: picks the compiled twin, or the pure-Python
reference (``FASTGW_NO_EXTENSIONS=1`` or a missing compiled module selects ``_ratelimit_py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

__all__ = ["COMPILED", "NEVER", "rate_headers", "tightest_headers"]

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._ratelimit_py import NEVER, rate_headers, tightest_headers

    COMPILED: bool = False
else:
    try:
        from ._ratelimit_c import NEVER, rate_headers, tightest_headers

        COMPILED = True
    except ImportError:  # not built (e.g. a source checkout): use the reference twin
        from ._ratelimit_py import NEVER, rate_headers, tightest_headers

        COMPILED = False
