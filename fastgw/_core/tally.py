"""Metering arithmetic of the request path (a bill, the cost header's value, a journal
entry): picks the compiled twin, or the pure-Python reference (``FASTGW_NO_EXTENSIONS=1``
or a missing compiled module selects ``_tally_py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

__all__ = ["COMPILED", "COST_HEADER", "Journal", "PriceBook", "Sums", "accumulate", "format_usd"]

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._tally_py import COST_HEADER, Journal, PriceBook, Sums, accumulate, format_usd

    COMPILED: bool = False
else:
    try:
        from ._tally_c import COST_HEADER, Journal, PriceBook, Sums, accumulate, format_usd

        COMPILED = True
    except ImportError:  # not built (e.g. a source checkout): use the reference twin
        from ._tally_py import COST_HEADER, Journal, PriceBook, Sums, accumulate, format_usd

        COMPILED = False
