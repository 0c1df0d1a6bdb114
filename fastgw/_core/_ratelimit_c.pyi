"""Stub for the compiled twin ``fastgw._core._ratelimit_c`` (same API as ``_ratelimit_py``)."""

from ._ratelimit_py import MAX_BUCKETS as MAX_BUCKETS
from ._ratelimit_py import MAX_SHOWN as MAX_SHOWN
from ._ratelimit_py import NEVER as NEVER

__all__ = ["MAX_BUCKETS", "MAX_SHOWN", "NEVER", "rate_headers", "tightest_headers"]

def rate_headers(
    req_cap: bytes | None,
    req_remaining: float,
    req_reset: float,
    tok_cap: bytes | None,
    tok_remaining: float,
    tok_reset: float,
) -> list[tuple[bytes, bytes]]: ...
def tightest_headers(
    balances: list[float], tokens: list[bool], caps: list[bytes], shapes: list[float]
) -> list[tuple[bytes, bytes]]: ...
