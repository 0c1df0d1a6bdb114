"""The shared-memory table of the ``local`` state backend (fastgw/_core/_shm_*): semantics of
both twins, pure vs compiled (same results, byte-identical files), agreement with the
``memory`` backend, file layout, a full table, and reclaiming what dead processes held."""

from __future__ import annotations

import importlib
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._core import _shm_py
from fastgw.state.base import Charge, Limit, Take
from fastgw.state.memory import MemoryState

INF = float("inf")


def _compiled() -> ModuleType:
    from fastgw._core import NO_EXTENSIONS

    if NO_EXTENSIONS:
        pytest.skip("FASTGW_NO_EXTENSIONS is set: compiled twin disabled")
    try:
        return importlib.import_module("fastgw._core._shm_c")
    except ImportError as exc:
        pytest.skip(f"compiled twin is not built ({exc})")


@pytest.fixture
def table(shm_impl: ModuleType, tmp_path: Path) -> Iterator[Any]:
    t = shm_impl.ShmTable(str(tmp_path / "t.shm"), 64)
    yield t
    t.close()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# --- semantics ----------------------------------------------------------------------------------


def test_a_new_bucket_is_full_and_admits_its_capacity(table: Any) -> None:
    got = [table.take_many([("k", 1.0, 3.0, 0.0)], 10.0)[0] for _ in range(4)]
    assert [v[0] for v in got] == [True, True, True, False]
    assert got[2] == (True, 0.0, 0.0, 0.0)
    assert got[3] == (False, 0.0, INF, 0.0)


def test_refill_retry_after_and_reset(table: Any) -> None:
    assert table.take_many([("k", 4.0, 4.0, 2.0)], 100.0) == [(True, 0.0, 0.0, 2.0)]
    # one second later: 2 tokens; 3 asked: 1 missing = 0.5 s; full in 1 s
    assert table.take_many([("k", 3.0, 4.0, 2.0)], 101.0) == [(False, 2.0, 0.5, 1.0)]
    assert table.take_many([("k", 2.0, 4.0, 2.0)], 101.0) == [(True, 0.0, 0.0, 2.0)]
    # refill never exceeds capacity; a clock going back changes nothing
    assert table.take_many([("k", 0.0, 4.0, 2.0)], 1000.0) == [(True, 4.0, 0.0, 0.0)]
    assert table.take_many([("k", 1.0, 4.0, 2.0)], 999.0) == [(True, 3.0, 0.0, 0.5)]


def test_take_many_is_all_or_nothing(table: Any) -> None:
    assert table.take_many([("b", 1.0, 1.0, 0.0)], 0.0)[0][0]
    got = table.take_many([("a", 4.0, 10.0, 0.0), ("b", 1.0, 1.0, 0.0)], 0.0)
    assert got == [(False, 10.0, 0.0, 0.0), (False, 0.0, INF, 0.0)]
    assert table.take_many([("a", 10.0, 10.0, 0.0)], 0.0)[0][0]


@pytest.mark.parametrize("first", [True, False], ids=["existing", "new"])
def test_the_same_key_twice_adds_up(table: Any, first: bool) -> None:
    if first:
        table.take_many([("k", 0.0, 5.0, 0.0)], 0.0)
    got = table.take_many([("k", 3.0, 5.0, 0.0), ("k", 1.0, 5.0, 0.0)], 0.0)
    assert got == [(True, 1.0, 0.0, 0.0), (True, 1.0, 0.0, 0.0)]
    got = table.take_many([("k", 1.0, 5.0, 0.0), ("k", 1.0, 5.0, 0.0)], 0.0)
    assert got == [(False, 1.0, INF, 0.0), (False, 1.0, INF, 0.0)]  # needs 2, has 1


def test_prepared_takes(table: Any) -> None:
    p = table.prepare([("pa", 5.0, 0.0), ("pb", 10.0, 0.0)])
    assert table.take_prepared(p, [2.0, 4.0], 0.0) == (True, [3.0, 6.0])
    assert table.take_prepared(p, [4.0, 1.0], 0.0) == (False, [3.0, 6.0])  # pa lacks: neither
    assert table.take_many([("pa", 0.0, 5.0, 0.0)], 0.0)[0][1] == 3.0  # the same buckets
    with pytest.raises(ValueError):
        table.take_prepared(p, [1.0], 0.0)
    with pytest.raises(ValueError):
        table.prepare([])
    with pytest.raises(ValueError):
        table.prepare([(f"k{i}", 1.0, 1.0) for i in range(17)])


def test_admission_takes_a_request_and_the_estimate_and_formats_the_headers(
    table: Any,
) -> None:
    """``admit``: 1 from the requests buckets, the estimate from the tokens buckets, all
    or nothing; the headers of the tightest bucket of each kind; the settlement once."""
    p = table.prepare(
        [("rk", 10.0, 1.0), ("tk", 1000.0, 10.0), ("rg", 5.0, 0.5)],
        [(False, b"10"), (True, b"1000"), (False, b"5")],
    )
    a = table.admit(p, 300.0, 100.0)
    assert a is not None and a.slots == () and a.estimate == 300.0
    assert a.headers == [
        (b"x-ratelimit-limit-requests", b"5"),  # the global 5 is tighter than the key's 10
        (b"x-ratelimit-remaining-requests", b"4"),
        (b"x-ratelimit-reset-requests", b"2s"),
        (b"x-ratelimit-limit-tokens", b"1000"),
        (b"x-ratelimit-remaining-tokens", b"700"),
        (b"x-ratelimit-reset-tokens", b"30s"),
    ]
    assert table.admit(p, 800.0, 100.0) is None  # the tokens lack: nothing taken
    assert p.balances() == [9.0, 700.0, 4.0]
    a.settle((100, 50, 150, 0))  # used 150 of 300: 150 back
    a.settle((100, 50, 500, 0))  # once only
    assert table.take_many([("tk", 0.0, 1000.0, 10.0)], 100.0)[0][1] == 850.0
    b = table.admit(p, 10.0, 100.0)
    b.used_from((40, 20, 0, 0))  # no total: prompt + completion
    await_free_finish(b)
    assert table.take_many([("tk", 0.0, 1000.0, 10.0)], 100.0)[0][1] == 790.0
    c = table.admit(p, 10.0, 100.0)
    c.settle(None)  # unknown usage: the estimate stands
    assert table.take_many([("tk", 0.0, 1000.0, 10.0)], 100.0)[0][1] == 780.0
    table.refund(p, -780.0, 100.0)  # refund: each tokens bucket, never above capacity
    assert table.admit(p, 1.0, 100.0) is None
    table.refund(p, 10**6, 100.0)
    assert table.take_many([("tk", 0.0, 1000.0, 10.0)], 100.0)[0][1] == 1000.0
    plain = table.prepare([("rk", 10.0, 1.0)])
    with pytest.raises(ValueError):  # a take handle is no admission handle
        table.admit(plain, 1.0, 100.0)
    with pytest.raises(ValueError):
        table.prepare([("rk", 10.0, 1.0)], [])
    d = table.admit(p, 1.0)  # on this process's monotonic clock
    assert d is not None and dict(d.headers)[b"x-ratelimit-limit-tokens"] == b"1000"
    table.close()
    d.settle((5, 5, 10, 0))  # the table is closed: nothing to settle, no error


def await_free_finish(a: Any) -> None:
    """``finish`` of an admission without slots completes without waiting on anything."""
    coro = a.finish()
    with pytest.raises(StopIteration):
        coro.send(None)


def test_settle(table: Any) -> None:
    assert table.take_many([("k", 60.0, 100.0, 0.0)], 0.0)[0][0]
    table.settle("k", 50.0, 100.0, 0.0, 0.0)
    assert table.take_many([("k", 90.0, 100.0, 0.0)], 0.0)[0][0]
    table.settle("k", -25.0, 100.0, 0.0, 0.0)
    assert table.take_many([("k", 1.0, 100.0, 0.0)], 0.0)[0][:2] == (False, -25.0)
    table.settle("k", 1000.0, 100.0, 0.0, 0.0)
    assert table.take_many([("k", 1.0, 100.0, 0.0)], 0.0)[0][:2] == (True, 99.0)
    table.settle("new", -1.0, 10.0, 0.0, 0.0)  # a new bucket is full
    assert table.take_many([("new", 0.0, 10.0, 0.0)], 0.0)[0][1] == 9.0


def test_slots(table: Any) -> None:
    assert [table.acquire("s", 2) for _ in range(3)] == [True, True, False]
    assert table.held("s") == 2
    table.release("s")
    assert table.acquire("s", 2)
    for _ in range(5):
        table.release("s")
    assert table.held("s") == 0
    assert [table.acquire("s", 1) for _ in range(2)] == [True, False]
    assert not table.acquire("zero", 0)
    table.release("never")
    assert table.held("never") == 0


def test_counters_and_namespaces(table: Any) -> None:
    assert table.get("k") == 0.0
    used = table.used()
    assert table.get("missing") == 0.0 and table.used() == used  # get creates nothing
    assert table.add("k", 1.5) == 1.5
    assert table.add("k", -0.25) == 1.25
    assert table.get("k") == 1.25
    # the same key as a bucket and as slots: separate
    assert table.take_many([("k", 1.0, 1.0, 0.0)], 0.0)[0][0]
    assert table.acquire("k", 1)
    assert table.get("k") == 1.25
    assert table.used() == used + 3


def test_charge_counters(table: Any) -> None:
    got = table.charge_many([("k", 0.5, 1.0), ("t", 0.5, 10.0), ("g", 0.5, INF)], 0.0)
    assert got == [(True, 0.5)] * 3
    assert table.charge_many([("t", 9.25, 10.0)], 0.0) == [(True, 9.75)]
    got = table.charge_many([("k", 0.5, 1.0), ("t", 0.5, 10.0), ("g", 0.5, INF)], 0.0)
    assert got == [(True, 0.5), (False, 9.75), (True, 0.5)]  # nothing added
    assert table.charge_many([("k", 0.25, 1.0), ("k", 0.25, 1.0)], 0.0) == [(True, 1.0)] * 2
    assert table.charge_many([("k", 0.0, 0.5)], 0.0) == [(False, 1.0)]  # cap lowered
    assert table.adjust("k", -1.5, 0.0) == -0.5
    assert table.adjust("k", 0.25, 0.0) == -0.25
    assert not table.seed("k", 3.0, 0.0)
    assert table.charge_many([], 0.0) == []
    with pytest.raises(ValueError):
        table.charge_many([("k", -0.1, 1.0)], 0.0)
    with pytest.raises(ValueError):
        table.adjust("k", 1.0, 0.0, 0.0)  # a ttl must be > 0


def test_charge_counters_expire(table: Any) -> None:
    used = table.used()
    assert table.charge_many([("r", 0.0, 1.0)], 0.0) == [(True, 0.0)]
    assert table.used() == used + 1  # a read leaves a placeholder that does not exist
    assert table.seed("r", 2.0, 0.0, 10.0)  # expires at 10
    assert not table.seed("r", 1.0, 9.9)
    assert table.charge_many([("r", 1.0, 5.0)], 5.0) == [(True, 3.0)]  # without a ttl: kept
    assert table.charge_many([("r", 0.0, 5.0)], 9.99) == [(True, 3.0)]
    assert table.charge_many([("r", 0.0, 5.0)], 10.0) == [(True, 0.0)]  # expired
    assert table.adjust("r", 1.0, 10.0) == 1.0  # a new counter: never expires
    assert table.adjust("r", 1.0, 1e9) == 2.0
    assert table.adjust("r", 1.0, 1e9, 5.0) == 3.0  # a ttl on any write: expires at 1e9 + 5
    assert table.charge_many([("r", 0.0, INF)], 1e9 + 5) == [(True, 0.0)]
    assert table.seed("r", 7.0, 1e9 + 5)
    assert table.used() == used + 1


def test_a_released_holder_frees_its_record(table: Any) -> None:
    for _ in range(3):
        assert table.acquire("s", 10)
    for _ in range(3):
        table.release("s")
    assert table.held("s") == 0


# --- dead processes -----------------------------------------------------------------------------


@pytest.mark.parametrize("holder", ["_shm_py", "_shm_c"])
def test_slots_of_a_dead_process_are_reclaimed(
    shm_impl: ModuleType, tmp_path: Path, holder: str
) -> None:
    if holder == "_shm_c":
        _compiled()
    path = str(tmp_path / "t.shm")
    t = shm_impl.ShmTable(path, 64)
    code = (
        f"from fastgw._core.{holder} import ShmTable\n"
        f"t = ShmTable({path!r}, 64)\n"
        "assert all(t.acquire('s', 3) for _ in range(3))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # exits holding 3 slots
    assert t.held("s") == 3
    assert t.acquire("s", 3)  # refused at first: the dead holder is dropped
    assert t.held("s") == 1
    assert t.acquire("s", 3) and t.acquire("s", 3)
    assert not t.acquire("s", 3)
    t.close()


def test_a_lock_held_by_a_dead_process_is_taken_over(shm_impl: ModuleType, tmp_path: Path) -> None:
    path = str(tmp_path / "t.shm")
    t = shm_impl.ShmTable(path, 64)
    assert t.add("c", 1.0) == 1.0
    # find c's entry and lock it in the name of a process that no longer exists
    h1, _h2 = _shm_py.key_hash(_shm_py.KIND_COUNTER, "c")
    off = _shm_py.HEADER_SIZE + (h1 % 64) * _shm_py.ENTRY_SIZE
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(struct.pack("<I", _dead_pid()))
    t0 = time.monotonic()
    assert t.add("c", 1.0) == 2.0
    assert 0.1 < time.monotonic() - t0 < 5
    t.close()


# --- a full table -------------------------------------------------------------------------------


def test_a_full_table_reuses_idle_entries_or_refuses(shm_impl: ModuleType, tmp_path: Path) -> None:
    t = shm_impl.ShmTable(str(tmp_path / "t.shm"), 4)
    for k in "abcd":  # four buckets that never refill, each short of a token
        assert t.take_many([(k, 1.0, 5.0, 0.0)], 0.0)[0][0]
    assert t.used() == 4
    with pytest.raises(_shm_py.TableFull, match="entries"):
        t.add("e", 1.0)
    t.settle("b", 1.0, 5.0, 0.0, 0.0)  # b is full again: as good as missing
    assert t.add("e", 1.0) == 1.0
    assert t.get("e") == 1.0 and t.get("b") == 0.0
    # a counter back at zero, slots nobody holds, a refilled bucket: reusable
    t2 = shm_impl.ShmTable(str(tmp_path / "t2.shm"), 3)
    assert t2.add("c", 1.0) == 1.0 and t2.acquire("s", 1)
    future = time.monotonic() + 1000  # add/acquire judge buckets by the real clock
    assert t2.take_many([("b", 1.0, 1.0, 1.0)], future)[0][0]
    with pytest.raises(_shm_py.TableFull):
        t2.add("x", 1.0)
    t2.add("c", -1.0)
    assert t2.add("x", 2.0) == 2.0  # took c's entry
    t2.release("s")
    assert t2.acquire("y", 1)  # took s's entry
    with pytest.raises(_shm_py.TableFull):
        t2.take_many([("z", 1.0, 1.0, 1.0)], future + 0.5)  # b: 0.5 of 1
    assert t2.take_many([("z", 1.0, 1.0, 1.0)], future + 1.0)[0][0]  # b is full again
    t.close()
    t2.close()


def test_a_full_table_reuses_expired_charge_counters(shm_impl: ModuleType, tmp_path: Path) -> None:
    t = shm_impl.ShmTable(str(tmp_path / "t.shm"), 3)
    assert t.charge_many([("a", 1.0, INF)], 100.0, 5.0) == [(True, 1.0)]  # expires at 105
    assert t.charge_many([("b", 1.0, INF)], 100.0) == [(True, 1.0)]  # never expires
    assert t.charge_many([("c", 0.0, INF)], 100.0) == [(True, 0.0)]  # a placeholder
    with pytest.raises(_shm_py.TableFull):  # the placeholder is less than REUSE_IDLE old
        t.charge_many([("d", 1.0, INF)], 100.5)
    assert t.charge_many([("d", 1.0, INF)], 101.0) == [(True, 1.0)]  # took c's entry
    with pytest.raises(_shm_py.TableFull):
        t.adjust("e", 1.0, 104.9)  # a is still live
    assert t.adjust("e", 1.0, 105.0) == 1.0  # took a's entry
    with pytest.raises(_shm_py.TableFull):
        t.seed("a", 1.0, 1e9)  # b, d, e live without a ttl: never reused
    assert t.charge_many([("b", 0.0, INF), ("d", 0.0, INF)], 1e9) == [(True, 1.0)] * 2
    t.close()
    # a charge_many over new keys never loses the entry it just claimed to its next key
    t = shm_impl.ShmTable(str(tmp_path / "u.shm"), 3)
    assert t.charge_many([("x", 1.0, INF)], 0.0, 1.0) == [(True, 1.0)]  # expires at 1
    assert t.charge_many([("y", 1.0, INF), ("z", 1.0, INF)], 0.0) == [(True, 1.0)] * 2
    with pytest.raises(_shm_py.TableFull):  # p takes x's entry, then q finds none
        t.charge_many([("p", 1.0, INF), ("q", 1.0, INF)], 5.0)
    assert t.charge_many([("p", 1.0, INF)], 5.0, 0.5) == [(True, 1.0)]  # p's placeholder
    assert t.charge_many([("q", 1.0, INF), ("z", 1.0, INF)], 6.0) == [(True, 1.0), (True, 2.0)]
    t.close()


# --- the file -----------------------------------------------------------------------------------


def test_file_layout(shm_impl: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "t.shm"
    t = shm_impl.ShmTable(str(path), 16)
    t.add("c", 2.5)
    raw = path.read_bytes()
    assert len(raw) == 128 + 16 * 128
    magic, version, ready, entries, esize = struct.unpack_from("<8sIIQI", raw)
    assert (magic, version, ready, entries, esize) == (b"FGWSHM\x00\x01", 1, 1, 16, 128)
    assert struct.unpack_from("<Q", raw, 32)[0] == 1  # used
    h1, h2 = _shm_py.key_hash(3, "c")
    off = 128 + (h1 % 16) * 128
    assert struct.unpack_from("<IIQQd", raw, off) == (0, 3, h1, h2, 2.5)
    t.close()


def test_file_layout_of_a_charge_counter(shm_impl: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "t.shm"
    t = shm_impl.ShmTable(str(path), 16)
    assert t.charge_many([("m", 1.5, INF)], 100.0, 30.0) == [(True, 1.5)]
    assert t.charge_many([("r", 0.0, INF)], 100.0) == [(True, 0.0)]
    raw = path.read_bytes()
    h1, h2 = _shm_py.key_hash(4, "m")
    off = 128 + (h1 % 16) * 128  # value, expiry, claimed at
    assert struct.unpack_from("<IIQQddd", raw, off) == (0, 4, h1, h2, 1.5, 130.0, 100.0)
    h1, h2 = _shm_py.key_hash(4, "r")
    off = 128 + (h1 % 16) * 128
    assert struct.unpack_from("<IIQQddd", raw, off) == (0, 4, h1, h2, 0.0, -INF, 100.0)
    t.close()


def test_a_mismatched_file_is_rejected_or_recreated(shm_impl: ModuleType, tmp_path: Path) -> None:
    path = str(tmp_path / "t.shm")
    t = shm_impl.ShmTable(path, 16)
    t.add("c", 1.0)
    t.close()
    with pytest.raises(_shm_py.LayoutError, match="16 entries"):
        shm_impl.ShmTable(path, 32)
    t = shm_impl.ShmTable(path, 32, recreate=True)
    assert t.get("c") == 0.0 and t.entries == 32
    t.close()
    Path(path).write_bytes(b"x" * 4096)
    with pytest.raises(_shm_py.LayoutError, match="magic"):
        shm_impl.ShmTable(path, 32)
    t = shm_impl.ShmTable(path, 32, recreate=True)
    assert t.add("c", 1.0) == 1.0
    t.close()
    with pytest.raises(ValueError):
        shm_impl.ShmTable(str(tmp_path / "u.shm"), 0)


def test_a_file_never_initialised_is_rejected(
    shm_impl: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.shm"
    path.write_bytes(bytes(128 + 16 * 128))  # as left by a creator that died at once
    monkeypatch.setattr(_shm_py, "READY_TIMEOUT", 0.05)
    with pytest.raises(_shm_py.LayoutError, match="never initialised"):
        shm_impl.ShmTable(str(path), 16)


def test_the_twins_share_one_file(tmp_path: Path) -> None:
    c = _compiled()
    path = str(tmp_path / "t.shm")
    py, cc = _shm_py.ShmTable(path, 64), c.ShmTable(path, 64)
    assert py.take_many([("k", 3.0, 5.0, 0.0)], 0.0)[0][0]
    assert cc.take_many([("k", 2.0, 5.0, 0.0)], 0.0) == [(True, 0.0, 0.0, 0.0)]
    assert not py.take_many([("k", 1.0, 5.0, 0.0)], 0.0)[0][0]
    assert cc.acquire("s", 2) and py.acquire("s", 2)
    assert not cc.acquire("s", 2) and not py.acquire("s", 2)
    py.release("s")
    assert cc.held("s") == 1
    assert py.add("c", 1.0) == 1.0 and cc.add("c", 2.0) == 3.0 and py.get("c") == 3.0
    assert py.used() == cc.used() == 3
    assert py.charge_many([("c", 0.5, 1.0), ("d", 0.5, INF)], 0.0, 60.0) == [(True, 0.5)] * 2
    assert cc.charge_many([("c", 0.5, 1.0), ("d", 0.5, INF)], 1.0) == [(True, 1.0)] * 2
    assert py.charge_many([("c", 0.1, 1.0), ("d", 0.1, INF)], 2.0) == [(False, 1.0), (True, 1.0)]
    assert cc.adjust("c", -0.25, 3.0) == 0.75 and py.adjust("c", 0.0, 3.0) == 0.75
    assert not cc.seed("d", 9.0, 4.0) and cc.seed("e", 9.0, 4.0) and not py.seed("e", 1.0, 4.0)
    assert py.charge_many([("d", 0.0, INF)], 60.0) == [(True, 0.0)]  # expired for both
    assert cc.seed("d", 2.0, 60.0) and py.charge_many([("d", 0.0, INF)], 1e9)[0][1] == 2.0
    assert py.get("c") == 3.0 and py.used() == cc.used() == 6
    py.close()
    cc.close()


# --- differential tests -------------------------------------------------------------------------

KEYS = ["a", "b", "c", "ключ"]
_take = st.tuples(
    st.sampled_from(KEYS),
    st.sampled_from([0.0, 0.5, 1.0, 2.0, 7.0]),
    st.sampled_from([0.0, 1.0, 5.0, 10.0]),
    st.sampled_from([0.0, 0.5, 3.0]),
)
_ttl = st.sampled_from([None, 0.3, 1.0])
_op = st.one_of(
    st.tuples(st.just("take"), st.lists(_take, min_size=1, max_size=4)),
    st.tuples(st.just("prepared"), st.lists(_take, min_size=1, max_size=4)),
    st.tuples(st.just("settle"), _take),
    st.tuples(st.just("acquire"), st.sampled_from(KEYS), st.integers(0, 3)),
    st.tuples(st.just("release"), st.sampled_from(KEYS)),
    st.tuples(st.just("add"), st.sampled_from(KEYS), st.sampled_from([-1.0, 0.25, 3.0])),
    st.tuples(st.just("get"), st.sampled_from(KEYS)),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.1, 0.5, 2.0])),
    st.tuples(
        st.just("charge"),
        st.lists(
            st.tuples(
                st.sampled_from(KEYS),
                st.sampled_from([0.0, 0.1, 0.5, 2.0]),
                st.sampled_from([0.0, 1.0, 2.5, INF]),
            ),
            min_size=1,
            max_size=4,
        ),
        _ttl,
    ),
    st.tuples(st.just("adjust"), st.sampled_from(KEYS), st.sampled_from([-1.0, 0.0, 0.3]), _ttl),
    st.tuples(st.just("seed"), st.sampled_from(KEYS), st.sampled_from([0.0, 0.7, 3.0]), _ttl),
)


def _apply(t: Any, op: tuple[Any, ...], now: float) -> object:
    kind = op[0]
    if kind == "take":
        return t.take_many(list(op[1]), now)
    if kind == "prepared":
        p = t.prepare([(k, cap, rate) for k, _, cap, rate in op[1]])
        return t.take_prepared(p, [n for _, n, _, _ in op[1]], now)
    if kind == "settle":
        key, n, cap, rate = op[1]
        return t.settle(key, n, cap, rate, now)
    if kind == "charge":
        return t.charge_many(list(op[1]), now, op[2])
    if kind in ("adjust", "seed"):
        return getattr(t, kind)(op[1], op[2], now, op[3])
    if kind in ("acquire", "add"):
        return getattr(t, kind)(op[1], op[2])
    if kind in ("release", "get"):
        return getattr(t, kind)(op[1])
    return None


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=40), st.sampled_from([4, 64]))
def test_pure_and_compiled_agree(ops: list[tuple[Any, ...]], entries: int) -> None:
    c = _compiled()
    with tempfile.TemporaryDirectory() as d:
        a = _shm_py.ShmTable(os.path.join(d, "a"), entries)
        b = c.ShmTable(os.path.join(d, "b"), entries)
        now = 100.0
        for op in ops:
            if op[0] == "tick":
                now += op[1]
                continue
            ra: object
            rb: object
            try:
                ra = _apply(a, op, now)
            except _shm_py.TableFull:
                ra = "full"
            try:
                rb = _apply(b, op, now)
            except _shm_py.TableFull:
                rb = "full"
            assert ra == rb, op
        a.close()
        b.close()
        assert Path(d, "a").read_bytes() == Path(d, "b").read_bytes()


def _run(c: Coroutine[Any, Any, Any]) -> Any:
    try:
        c.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the memory backend never waits")


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=40))
def test_agrees_with_the_memory_backend(shm_impl: ModuleType, ops: list[tuple[Any, ...]]) -> None:
    clock = [100.0]
    mem = MemoryState(clock=lambda: clock[0])
    with tempfile.TemporaryDirectory() as d:
        t = shm_impl.ShmTable(os.path.join(d, "t"), 64)
        for op in ops:
            kind = op[0]
            if kind == "tick":
                clock[0] += op[1]
            elif kind == "take":
                takes = op[1]
                got = t.take_many(takes, clock[0])
                want = mem.take_many_now([Take(k, n, Limit(cap, r)) for k, n, cap, r in takes])
                assert [tuple(v) for v in want] == got
            elif kind == "prepared":
                takes = op[1]
                p = t.prepare([(k, cap, r) for k, _, cap, r in takes])
                ok, remaining = t.take_prepared(p, [n for _, n, _, _ in takes], clock[0])
                want = mem.take_many_now([Take(k, n, Limit(cap, r)) for k, n, cap, r in takes])
                assert (want[0].allowed, [v.remaining for v in want]) == (ok, remaining)
            elif kind == "settle":
                key, n, cap, rate = op[1]
                t.settle(key, n, cap, rate, clock[0])
                mem.settle_now(key, n, Limit(cap, rate))
            elif kind == "charge":
                got = t.charge_many(op[1], clock[0], op[2])
                spent = mem.charge_many_now([Charge(*c) for c in op[1]], op[2])
                assert [tuple(v) for v in spent] == got
            elif kind == "adjust":
                assert mem.adjust_now(op[1], op[2], op[3]) == t.adjust(
                    op[1], op[2], clock[0], op[3]
                )
            elif kind == "seed":
                assert mem.seed_now(op[1], op[2], op[3]) == t.seed(op[1], op[2], clock[0], op[3])
            elif kind in ("acquire", "add"):
                assert _run(getattr(mem, kind)(op[1], op[2])) == getattr(t, kind)(op[1], op[2])
            else:
                assert _run(getattr(mem, kind)(op[1])) == getattr(t, kind)(op[1])
        t.close()


def test_admissions_admit_by_caller_and_model_and_call_back_for_the_rest(table: Any) -> None:
    """``Admissions``: a (caller, model) pair not set yet goes to ``miss``; a set pair is
    admitted by its handle (None: nothing limits it); a refusal goes to ``refused``."""
    calls: list[tuple[object, ...]] = []

    def miss(caller: object, model: str, tokens: object) -> str:
        calls.append(("miss", caller, model, tokens))
        return "from miss"

    def refused(handle: object, caller: object, model: str, tokens: object) -> str:
        calls.append(("refused", handle, caller, model, tokens))
        return "refused"

    adm = table.admissions(miss, refused)
    p = table.prepare([("ak", 2.0, 0.0), ("at", 100.0, 0.0)], [(False, b"2"), (True, b"100")])
    assert adm.admit("alice", "m", 10) == "from miss"
    assert calls == [("miss", "alice", "m", 10)]  # the tokens as they came
    adm.set("alice", "m", p)
    adm.set(None, "m", None)
    a = adm.admit("alice", "m", 10)
    assert dict(a.headers)[b"x-ratelimit-remaining-tokens"] == b"90"
    assert adm.admit(None, "m", 10) is None  # nothing limits that pair
    assert adm.admit("alice", "other", 1) == "from miss"
    assert adm.admit("alice", "m", 95) == "refused"  # 90 tokens left
    assert calls[-1] == ("refused", p, "alice", "m", 95)
    assert p.balances() == [1.0, 90.0]
    adm.clear()
    assert adm.admit("alice", "m", 1) == "from miss"
    with pytest.raises(ValueError):  # a take handle is no admission handle
        adm.set("bob", "m", table.prepare([("ak", 2.0, 0.0)]))
