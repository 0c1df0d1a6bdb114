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


def test_tightest_bucket_of_each_kind(ratelimit_impl: ModuleType) -> None:
    """Of a request's buckets, the lowest balance of each kind is shown (the first of
    equals), with its own limit and its time to refill."""
    got = ratelimit_impl.tightest_headers(
        [9.0, 700.0, 4.0, 4.0, 50.0],
        [False, True, False, False, True],
        [b"10", b"1000", b"5", b"6", b"60"],
        [10.0, 1.0, 1000.0, 10.0, 5.0, 0.5, 6.0, 0.5, 60.0, 1.0],
    )
    assert got == [
        (b"x-ratelimit-limit-requests", b"5"),  # 4.0 twice: the first
        (b"x-ratelimit-remaining-requests", b"4"),
        (b"x-ratelimit-reset-requests", b"2s"),
        (b"x-ratelimit-limit-tokens", b"60"),
        (b"x-ratelimit-remaining-tokens", b"50"),
        (b"x-ratelimit-reset-tokens", b"10s"),
    ]
    assert ratelimit_impl.tightest_headers([], [], [], []) == []
    assert dict(ratelimit_impl.tightest_headers([3.0], [True], [b"3"], [3.0, 0.0])) == {
        b"x-ratelimit-limit-tokens": b"3",
        b"x-ratelimit-remaining-tokens": b"3",
        b"x-ratelimit-reset-tokens": b"never",  # full, and no refill: 0/0
    }
    with pytest.raises(ValueError):
        ratelimit_impl.tightest_headers([1.0], [True], [b"1"], [1.0])
    with pytest.raises(ValueError):
        ratelimit_impl.tightest_headers([1.0] * 17, [True] * 17, [b"1"] * 17, [1.0] * 34)


_bucket = st.tuples(
    st.floats(min_value=-1e12, max_value=1e12),
    st.booleans(),
    st.binary(max_size=4),
    st.floats(min_value=0.0, max_value=1e12),
    st.floats(min_value=0.0, max_value=1e6),
)


@pytest.mark.skipif(NO_EXTENSIONS, reason="FASTGW_NO_EXTENSIONS is set: compiled twin disabled")
@settings(max_examples=500, deadline=None)
@given(st.lists(_bucket, max_size=16))
def test_tightest_twins_agree(buckets: list[tuple[float, bool, bytes, float, float]]) -> None:
    try:
        c = importlib.import_module("fastgw._core._ratelimit_c")
    except ImportError:
        pytest.skip("compiled twin not built")
    args = (
        [b[0] for b in buckets],
        [b[1] for b in buckets],
        [b[2] for b in buckets],
        [x for b in buckets for x in (b[3], b[4])],
    )
    assert c.tightest_headers(*args) == ref.tightest_headers(*args)
