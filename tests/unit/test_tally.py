"""The metering arithmetic of the request path (``fastgw._core._tally_*``): both twins on
examples, and differential tests that they give the same bytes and bit-identical floats."""

from __future__ import annotations

import importlib
import math
import struct
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._core import NO_EXTENSIONS, tally
from fastgw._core import _tally_py as ref
from fastgw.catalog import cost


def _compiled() -> ModuleType:
    if NO_EXTENSIONS:
        pytest.skip("FASTGW_NO_EXTENSIONS is set: compiled twin disabled")
    try:
        return importlib.import_module("fastgw._core._tally_c")
    except ImportError:
        pytest.skip("compiled twin not built")


def _book(impl: ModuleType, prices: dict[str, Any], calls: list[Any] | None = None) -> Any:
    def lookup(name: str) -> Any:
        if calls is not None:
            calls.append(name)
        return prices.get(name)

    def tiered(entry: Any, prompt: int, completion: int, cached: int) -> float:
        return float(entry(prompt, completion, cached))

    return impl.PriceBook(lookup, tiered)


def _bits(x: float | None) -> bytes | None:
    return None if x is None else struct.pack("<d", x)


# --- format_usd -------------------------------------------------------------------------------


def test_switch_module_binds_one_twin() -> None:
    from fastgw._core import sse

    assert tally.COMPILED == sse.COMPILED  # the compiled core is built and loaded as a whole
    twin = "_tally_c" if tally.COMPILED else "_tally_py"
    assert tally.PriceBook.__module__ == f"fastgw._core.{twin}"
    assert tally.Journal.__module__ == f"fastgw._core.{twin}"


@pytest.mark.parametrize(
    ("usd", "text"),
    [
        (0.0, b"0.0000000000"),
        (-0.0, b"-0.0000000000"),
        (0.00165, b"0.0016500000"),
        (1 / 2048, b"0.0004882812"),  # exactly ...28125: a tie, to the even digit
        (3 / 2048, b"0.0014648438"),  # exactly ...4375: a tie, to the even digit
        (9.99999999996, b"10.0000000000"),  # carries into the units
        (12345.678, b"12345.6780000000"),
        (-1e-12, b"-0.0000000000"),
        (5e-324, b"0.0000000000"),
        (2.0**53, b"9007199254740992.0000000000"),
        (1e300, b"%.10f" % 1e300),
        (math.inf, b"inf"),
        (-math.inf, b"-inf"),
        (math.nan, b"nan"),
    ],
)
def test_format_usd(tally_impl: ModuleType, usd: float, text: bytes) -> None:
    assert tally_impl.format_usd(usd) == text


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=-10.0, max_value=10.0),
        st.integers(min_value=0, max_value=2**12).map(lambda k: k / 2**11),  # ties
        st.integers(min_value=0, max_value=2**64 - 1).map(
            lambda b: struct.unpack("<d", struct.pack("<Q", b))[0]
        ),
    )
)
def test_format_usd_is_percent_10f(usd: float) -> None:
    want = b"%.10f" % usd
    assert ref.format_usd(usd) == want
    if not NO_EXTENSIONS:
        assert _compiled().format_usd(usd) == want


# --- PriceBook --------------------------------------------------------------------------------


def test_bill_prices_cached_input_and_counts(tally_impl: ModuleType) -> None:
    calls: list[str] = []
    book = _book(tally_impl, {"m": (10e-6, 1e-6, 30e-6, None)}, calls)
    usd = book.bill("m", (1234, 567, 1801, 1000))
    assert usd == 10e-6 * 234 + 1e-6 * 1000 + 30e-6 * 567
    assert book.bill("m", (10, 0, 10, 50)) == 1e-6 * 10  # cached is at most the prompt
    assert book.bill("nowhere", (1, 1, 2, 0)) is None
    assert book.bill("nowhere", (1, 1, 2, 0)) is None
    assert calls == ["m", "nowhere"]  # each name is looked up once
    assert (book.requests, book.unpriced) == (4, 2)
    assert book.cost_usd == usd + 1e-6 * 10
    book.clear()  # a new catalog: looked up again
    book.bill("m", (1, 0, 1, 0))
    assert calls == ["m", "nowhere", "m"]


def test_charge_bills_journals_and_adds_the_header(tally_impl: ModuleType) -> None:
    book = _book(tally_impl, {"m": (1e-6, 5e-7, 2e-6, None)})
    led = _Ledger()
    j = tally_impl.Journal(led.sinks, clock=lambda: 0.0)
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    usd = book.charge("m", (100, 10, 110, 0), headers, j, "k")
    assert usd == 1e-6 * 100 + 2e-6 * 10
    assert headers[1] == (tally_impl.COST_HEADER, tally_impl.format_usd(usd))
    assert headers[1] == (b"x-fastgw-cost-usd", b"0.0001200000")
    assert book.charge("unknown", (1, 1, 2, 0), headers, j, "k") is None
    assert len(headers) == 2  # unpriced: no header
    assert led.rows[0, "k"] == [2.0, 0.0, 101.0, 11.0, 0.0, usd]  # both journaled
    assert book.charge("m", (1, 0, 1, 0), headers, None, "k") == 1e-6  # no journal
    assert (book.requests, book.unpriced, j.recorded) == (3, 1, 2)


def test_bill_tier_goes_to_the_callback(tally_impl: ModuleType) -> None:
    seen: list[tuple[int, int, int]] = []

    def tier(prompt: int, completion: int, cached: int) -> float:
        seen.append((prompt, completion, cached))
        return 0.5

    book = _book(tally_impl, {"long": (1.0, 1.0, 1.0, tier)})
    assert book.bill("long", (100, 7, 107, 300)) == 0.5
    assert seen == [(100, 7, 100)]
    assert book.cost_usd == 0.5


def test_bill_remembers_a_bounded_number_of_names(tally_impl: ModuleType) -> None:
    calls: list[str] = []
    book = _book(tally_impl, {}, calls)
    book.limit = 3
    for name in "abcdab":
        book.bill(name, (1, 1, 2, 0))
    # a, b, c remembered; d forgets them all; a and b are looked up again
    assert calls == ["a", "b", "c", "d", "a", "b"]


def test_bill_huge_counts_use_python_arithmetic(tally_impl: ModuleType) -> None:
    book = _book(tally_impl, {"m": (1e-6, 5e-7, 2e-6, None)})
    big = 10**30
    assert book.bill("m", (big, big, 2 * big, 0)) == 1e-6 * big + 5e-7 * 0 + 2e-6 * big
    assert book.bill("m", (True, 0, 1, 0)) == 1e-6 * True


def test_catalog_cost_through_the_book(tally_impl: ModuleType) -> None:
    """Prices per token divided out once give catalog.cost's floats bit for bit."""
    from fastgw.catalog import CatalogHolder, CatalogWatcher, default_path

    catalog = CatalogHolder(CatalogWatcher(default_path(), {}).initial()).current
    e = catalog.get("gpt-4o-mini")
    assert e is not None and e.long_context is None
    cached = e.cached_input if e.cached_input is not None else e.input
    book = _book(tally_impl, {"m": (e.input / 1e6, cached / 1e6, e.output / 1e6, None)})
    for usage in [(1234, 567, 1801, 1000), (3, 2, 5, 0), (10**6, 10**5, 1100000, 10**6)]:
        assert _bits(book.bill("m", usage)) == _bits(cost(e, usage[0], usage[1], usage[3]))


_count = st.one_of(
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=-(2**70), max_value=2**70),
)
_price = st.floats(min_value=0.0, max_value=1e-3, allow_subnormal=True)


@settings(max_examples=1000, deadline=None)
@given(st.tuples(_price, _price, _price), _count, _count, _count)
def test_bill_twins_agree(prices: tuple[float, float, float], p: int, c: int, k: int) -> None:
    ours = _book(_compiled(), {"m": (*prices, None)})
    theirs = _book(ref, {"m": (*prices, None)})
    usage = (p, c, p + c, k)
    assert _bits(ours.bill("m", usage)) == _bits(theirs.bill("m", usage))
    assert _bits(ours.cost_usd) == _bits(theirs.cost_usd)


# --- Journal and accumulate -------------------------------------------------------------------


class _Ledger:
    """A stand-in for ``Ledger.sinks``: one list of sums per (minute, key), and a tag's."""

    def __init__(self, full: bool = False) -> None:
        self.rows: dict[tuple[int, Any], list[float]] = {}
        self.tags: dict[int, list[float]] = {}
        self.asked: list[tuple[int, Any]] = []
        self.full = full

    def sinks(self, minute: int, key: Any) -> list[list[float]] | None:
        self.asked.append((minute, key))
        if self.full:
            return None
        row = self.rows.setdefault((minute, key), [0.0] * 6)
        return [row, self.tags.setdefault(minute, [0.0] * 6)]


def test_journal_sums_per_key_and_minute(tally_impl: ModuleType) -> None:
    led = _Ledger()
    now = [600.0]
    j = tally_impl.Journal(led.sinks, clock=lambda: now[0])
    assert j.add(("a", 1), (10, 5, 15, 2), 0.25, False)
    assert j.add(("a", 1), (1, 1, 2, 0), None, True)  # unpriced: 0 USD
    assert j.add(("b", 1), (4, 0, 4, 4), 0.5, False)
    assert led.asked == [(10, ("a", 1)), (10, ("b", 1))]  # once per key and minute
    assert led.rows[10, ("a", 1)] == [2.0, 1.0, 11.0, 6.0, 2.0, 0.25]
    assert led.tags[10] == [3.0, 1.0, 15.0, 6.0, 6.0, 0.75]
    now[0] = 660.0  # the next minute: new sums
    assert j.add(("a", 1), (1, 0, 1, 0), 1.0, False)
    assert led.rows[11, ("a", 1)] == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert j.recorded == 4
    j.clear()  # the ledger took the lists for a write: asked again
    assert j.add(("a", 1), (1, 0, 1, 0), 1.0, False)
    assert led.asked[-1] == (11, ("a", 1)) and len(led.asked) == 4
    assert led.rows[11, ("a", 1)][0] == 2.0


def test_journal_keys_by_equality_not_identity(tally_impl: ModuleType) -> None:
    """Consecutive answers of one key built anew (equal strings, not the same objects) add
    to the same sums; a key differing in any part has its own."""
    led = _Ledger()
    j = tally_impl.Journal(led.sinks, clock=lambda: 0.0)
    target = object()

    def key(model: str, t: object = target) -> tuple[object, ...]:
        return (None, t, "".join(["gpt-", model]), "".join(["gpt-", model]))

    for k in [key("4o"), key("4o"), key("4o-mini"), key("4o"), key("4o", object()), key("4o")]:
        j.add(k, (1, 1, 2, 0), 0.5, False)
    assert len(led.asked) == 3
    assert led.rows[0, key("4o")] == [4.0, 0.0, 4.0, 4.0, 0.0, 2.0]
    assert led.rows[0, key("4o-mini")][0] == 1.0


def test_journal_minute_is_floor_division(tally_impl: ModuleType) -> None:
    led = _Ledger()
    now = [-0.5]
    j = tally_impl.Journal(led.sinks, clock=lambda: now[0])
    j.add("k", (1, 1, 2, 0), 0.0, False)
    now[0] = 119.99999999999999
    j.add("k", (1, 1, 2, 0), 0.0, False)
    assert [m for m, _ in led.asked] == [-1, 1]


def test_journal_system_clock(tally_impl: ModuleType) -> None:
    import time

    led = _Ledger()
    j = tally_impl.Journal(led.sinks)
    before = int(time.time() // 60)
    j.add("k", (1, 1, 2, 0), 0.1, False)
    after = int(time.time() // 60)
    assert before <= led.asked[0][0] <= after


def test_journal_full_ledger_records_nothing(tally_impl: ModuleType) -> None:
    led = _Ledger(full=True)
    j = tally_impl.Journal(led.sinks, clock=lambda: 0.0)
    assert not j.add("k", (1, 1, 2, 0), 0.1, False)
    assert not j.add("k", (1, 1, 2, 0), 0.1, False)
    assert j.recorded == 0 and len(led.asked) == 2  # asked again: it may have room now


def test_journal_forgets_past_its_limit(tally_impl: ModuleType) -> None:
    led = _Ledger()
    j = tally_impl.Journal(led.sinks, limit=2, clock=lambda: 0.0)
    for key in "abcab":
        j.add(key, (1, 1, 2, 0), 0.0, False)
    assert [k for _, k in led.asked] == ["a", "b", "c", "a", "b"]
    assert led.rows[0, "a"][0] == 2.0  # the same lists: nothing lost


def test_accumulate_adds_to_every_list(tally_impl: ModuleType) -> None:
    a, b = [0.0] * 6, [1.0] * 6
    tally_impl.accumulate([a, b], 3, 4, 1, 0.5, True)
    tally_impl.accumulate([a], 1, 0, 0, None, False)
    assert a == [2.0, 1.0, 4.0, 4.0, 1.0, 0.5]
    assert b == [2.0, 2.0, 4.0, 5.0, 2.0, 1.5]
    with pytest.raises(IndexError):
        tally_impl.accumulate([[0.0] * 5], 1, 1, 1, 0.0, False)


def test_sums_index_like_a_list(tally_impl: ModuleType) -> None:
    s = tally_impl.Sums()
    assert len(s) == 6 and list(s) == [0.0] * 6 and s == [0.0] * 6
    s[2] += 5
    s[-1] = 0.25
    assert s[2] == 5.0 and s[5] == 0.25 and s == tally_impl.Sums([0, 0, 5, 0, 0, 0.25])
    assert tuple(s) == (0.0, 0.0, 5.0, 0.0, 0.0, 0.25)
    with pytest.raises(IndexError):
        s[6]
    with pytest.raises(ValueError):
        tally_impl.Sums([1.0] * 5)
    lst = [0.0] * 6
    tally_impl.accumulate([s, lst], 3, 4, 1, 0.5, True)  # Sums and lists alike
    assert list(s) == [1.0, 1.0, 8.0, 4.0, 1.0, 0.75] and lst == [1.0, 1.0, 3.0, 4.0, 1.0, 0.5]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2**60),
            st.integers(min_value=0, max_value=2**60),
            st.integers(min_value=0, max_value=2**60),
            st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
            st.booleans(),
        ),
        max_size=20,
    ),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=6, max_size=6),
)
def test_accumulate_twins_agree(
    adds: list[tuple[int, int, int, float | None, bool]], start: list[float]
) -> None:
    c = _compiled()
    ours, theirs = list(start), list(start)
    ours_sums, theirs_sums = c.Sums(start), ref.Sums(start)
    for p, k, q, usd, est in adds:
        c.accumulate([ours, ours_sums], p, k, q, usd, est)
        ref.accumulate([theirs, theirs_sums], p, k, q, usd, est)
    want = [_bits(x) for x in theirs]
    assert [_bits(x) for x in ours] == want
    assert [_bits(x) for x in ours_sums] == want == [_bits(x) for x in theirs_sums]
