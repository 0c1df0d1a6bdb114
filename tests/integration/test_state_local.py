"""The ``local`` state backend across processes (spawned, as Granian workers are separate
processes): limits and budgets hold in total whatever the number of processes and whichever
twin of the core each runs, and slots held by a killed process are reclaimed."""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastgw.state.base import Charge, Limit, Take
from fastgw.state.local import LocalState

pytestmark = pytest.mark.integration

CTX = mp.get_context("spawn")


def _twins() -> list[str]:
    """The core twins to spread over the processes (both when the compiled one is built)."""
    from fastgw._core import NO_EXTENSIONS

    if NO_EXTENSIONS:
        return ["fastgw._core._shm_py"]
    try:
        importlib.import_module("fastgw._core._shm_c")
    except ImportError:
        return ["fastgw._core._shm_py"]
    return ["fastgw._core._shm_py", "fastgw._core._shm_c"]


def _table(twin: str, path: str) -> Any:
    return importlib.import_module(twin).ShmTable(path, 1024)


def _state(twin: str, path: str) -> LocalState:
    """The state over the table at ``path``, this process running the given twin."""
    state = LocalState(path, 1024)
    state.table.close()
    state.table = _table(twin, path)
    return state


def _run_workers(
    worker: Callable[[str, str, int, Any, Any], None], path: str, tries: int, n: int = 4
) -> list[Any]:
    """What ``worker(twin, path, tries, go, out)`` puts in ``out`` in each of ``n`` processes
    (the twins spread over them), all started at once (``go``)."""
    twins = _twins()
    go = CTX.Event()
    out = CTX.Queue()
    procs = [
        CTX.Process(target=worker, args=(twins[i % len(twins)], path, tries, go, out))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    go.set()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return got


def _take_worker(twin: str, path: str, tries: int, go: Any, out: Any) -> None:
    state = _state(twin, path)

    async def run() -> int:
        n = 0
        for _ in range(tries):
            got = await state.take_many(
                [Take("both-a", 1, Limit(300, 0.0)), Take("both-b", 1, Limit(1000, 0.0))]
            )
            n += got[0].allowed
            n += (await state.take_many([Take("one", 1, Limit(1000, 0.0))]))[0].allowed << 16
            await state.add("ctr", 1.0)
        return n

    go.wait()
    out.put(asyncio.run(run()))


def test_four_processes_admit_exactly_the_capacity(tmp_path: Path) -> None:
    path = str(tmp_path / "state.shm")
    got = _run_workers(_take_worker, path, 400)
    assert sum(n >> 16 for n in got) == 1000  # 1600 tries on a bucket of 1000
    assert sum(n & 0xFFFF for n in got) == 300  # take_many: all or nothing
    state = LocalState(path, 1024)
    t = state.table
    assert t.take_many([("both-b", 0.0, 1000.0, 0.0)], 0.0)[0][1] == 700.0
    assert t.get("ctr") == 1600.0
    assert state.health()["used"] == 4


def _charge_worker(twin: str, path: str, tries: int, go: Any, out: Any) -> None:
    state = _state(twin, path)
    inf = float("inf")
    three = [Charge("b-key", 0.1, 1.0), Charge("b-team", 0.1, 5.0), Charge("b-tag", 0.1, inf)]

    async def run() -> int:
        n = 0
        for _ in range(tries):
            got = await state.charge_many(three, ttl=3600)
            n += all(s.allowed for s in got)
            await state.adjust("ledger", 0.25)
        return n

    go.wait()
    out.put(asyncio.run(run()))


def test_processes_never_overspend_a_budget(tmp_path: Path) -> None:
    path = str(tmp_path / "state.shm")
    got = _run_workers(_charge_worker, path, 50)
    assert sum(got) == 10  # 0.1 against 1.0, 200 tries: exactly 10
    t = LocalState(path, 1024).table
    totals = t.charge_many([("b-key", 0.0, 9.0), ("b-team", 0.0, 9.0), ("b-tag", 0.0, 9.0)], 0.0)
    assert totals[0][1] == pytest.approx(1.0)
    assert totals[0] == totals[1] == totals[2]  # all or nothing: the same ten additions
    assert t.adjust("ledger", 0.0, 0.0) == 50.0  # 200 x 0.25, none lost


def _hold_worker(twin: str, path: str, n: int, ready: Any) -> None:
    t = _table(twin, path)
    for _ in range(n):
        assert t.acquire("slots", 3)
    ready.set()
    signal.pause()


@pytest.mark.parametrize("twin", _twins())
def test_slots_of_a_killed_process_are_reclaimed(tmp_path: Path, twin: str) -> None:
    path = str(tmp_path / "state.shm")
    ready = CTX.Event()
    p = CTX.Process(target=_hold_worker, args=(twin, path, 2, ready))
    p.start()
    assert ready.wait(60)
    try:
        mine = _table(_twins()[-1], path)
        assert mine.acquire("slots", 3)
        assert not mine.acquire("slots", 3)  # 2 held by a live process + 1 here
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert mine.acquire("slots", 3) and mine.acquire("slots", 3)  # reclaimed
        assert not mine.acquire("slots", 3)
        assert mine.held("slots") == 3
    finally:
        if p.is_alive():
            p.kill()
