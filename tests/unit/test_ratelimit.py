"""The ``x-ratelimit-*`` header formatter (``fastgw._core._ratelimit_*``): both twins, and
a differential test that they agree on every input, odd floats included."""

from __future__ import annotations

import importlib
import math
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._core import NO_EXTENSIONS
from fastgw._core import _ratelimit_py as ref


def test_both_kinds(ratelimit_impl: ModuleType) -> None:
    got = ratelimit_impl.rate_headers(b"600", 41.7, 5.2, b"90000", 1234.0, 0.0)
    assert got == [
        (b"x-ratelimit-limit-requests", b"600"),
        (b"x-ratelimit-remaining-requests", b"41"),
        (b"x-ratelimit-reset-requests", b"6s"),
        (b"x-ratelimit-limit-tokens", b"90000"),
        (b"x-ratelimit-remaining-tokens", b"1234"),
        (b"x-ratelimit-reset-tokens", b"0s"),
    ]


def test_one_kind_only(ratelimit_impl: ModuleType) -> None:
    assert ratelimit_impl.rate_headers(None, 0, 0, b"5", 2.0, 1.0) == [
        (b"x-ratelimit-limit-tokens", b"5"),
        (b"x-ratelimit-remaining-tokens", b"2"),
        (b"x-ratelimit-reset-tokens", b"1s"),
    ]
    assert ratelimit_impl.rate_headers(None, 0, 0, None, 0, 0) == []


def test_debt_never_shows_negative_and_no_refill_shows_never(ratelimit_impl: ModuleType) -> None:
    got = dict(ratelimit_impl.rate_headers(b"1", -250.5, 1e12, None, 0, 0))
    assert got[b"x-ratelimit-remaining-requests"] == b"0"
    assert got[b"x-ratelimit-reset-requests"] == b"never"
    got = dict(ratelimit_impl.rate_headers(b"1", math.nan, math.nan, None, 0, 0))
    assert got[b"x-ratelimit-remaining-requests"] == b"0"
    assert got[b"x-ratelimit-reset-requests"] == b"never"
    got = dict(ratelimit_impl.rate_headers(b"1", math.inf, -3.0, None, 0, 0))
    assert got[b"x-ratelimit-remaining-requests"] == b"%d" % ref.MAX_SHOWN
    assert got[b"x-ratelimit-reset-requests"] == b"0s"


@pytest.mark.skipif(NO_EXTENSIONS, reason="FASTGW_NO_EXTENSIONS is set: compiled twin disabled")
@settings(max_examples=500, deadline=None)
@given(
    st.one_of(st.none(), st.binary(max_size=8)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.one_of(st.none(), st.binary(max_size=8)),
    st.floats(min_value=-1e20, max_value=1e20),
    st.floats(min_value=-1e10, max_value=1e10),
)
def test_twins_agree(
    rc: bytes | None, rr: float, rs: float, tc: bytes | None, tr: float, ts: float
) -> None:
    try:
        c = importlib.import_module("fastgw._core._ratelimit_c")
    except ImportError:
        pytest.skip("compiled twin not built")
    assert c.rate_headers(rc, rr, rs, tc, tr, ts) == ref.rate_headers(rc, rr, rs, tc, tr, ts)
