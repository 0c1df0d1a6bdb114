"""Stub for the compiled twin ``fastgw._core._tally_c`` (same API as ``_tally_py``)."""

from ._tally_py import COST_HEADER as COST_HEADER
from ._tally_py import Journal as Journal
from ._tally_py import PriceBook as PriceBook
from ._tally_py import Sums as Sums
from ._tally_py import accumulate as accumulate
from ._tally_py import format_usd as format_usd

__all__ = ["COST_HEADER", "Journal", "PriceBook", "Sums", "accumulate", "format_usd"]
