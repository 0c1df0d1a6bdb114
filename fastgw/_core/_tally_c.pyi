"""Stub for the compiled twin ``fastgw._core._tally_c`` (same API as ``_tally_py``)."""

from ._tally_py import Journal as Journal
from ._tally_py import PriceBook as PriceBook
from ._tally_py import accumulate as accumulate
from ._tally_py import format_usd as format_usd

__all__ = ["Journal", "PriceBook", "accumulate", "format_usd"]
