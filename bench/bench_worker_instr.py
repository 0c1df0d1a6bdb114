"""Instructions per request of the whole gateway worker (Granian, uvloop, the app, the
upstream client), counted by ``valgrind --tool=callgrind`` through the real server: the
deterministic counterpart of ``bench_limits.py`` (whose req/s move by ±10 % or more on a
shared machine).

The gateway runs under callgrind (its worker process traced), the mock upstream outside it.
A client sends ``--warmup`` requests, the counters are dumped and zeroed
(``callgrind_control --dump``), then ``--requests`` more are sent (``--concurrency`` at once,
keep-alive) and the counters dumped again: the worker's instructions in that second dump,
less what the worker does idle over as long (measured after, with no load: timers), divided
by the requests, is the figure (user space only; the kernel's share is not in it).
The variants are those of ``bench_limits.py``; ``--tree`` runs another checkout's fastgw
(e.g. one from before a change) with the same configs.

    python bench/bench_worker_instr.py --only "no key;+ rpm/tpm, local"
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a script: make ``bench.*`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ab_trees import start_mock, wait_port  # after the sys.path fix
from bench.bench_limits import KEY, pick, pin_redis, variants
from bench.run import free_port

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


async def send(port: int, n: int, concurrency: int) -> None:
    """``n`` chat requests with the bench key, ``concurrency`` at once (each must be a 200)."""
    import aiohttp

    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    left = n

    async def worker(s: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with s.post(url, data=BODY, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"status {r.status}")

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))


def dump() -> None:
    subprocess.run(["callgrind_control", "--dump"], capture_output=True, check=False)
    time.sleep(0.5)


def worker_total(out_dir: str, part: int) -> int:
    """The instructions in dump ``part`` of the process that counted the most (the worker)."""
    best = 0
    for f in glob.glob(os.path.join(out_dir, f"cg.*.{part}")):
        for line in Path(f).read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                best = max(best, int(line.split()[1]))
    return best


def counted(
    port: int, out_dir: str, warmup: int, requests: int, concurrency: int, idle: float
) -> float:
    """Instructions per request of the worker traced into ``out_dir`` (listening on
    ``port``): ``warmup`` requests, a dump, ``requests`` more, a dump, ``idle`` seconds with
    no load, a dump; the second dump less the idle rate over as long, per request."""
    wait_port(port, 120)
    asyncio.run(send(port, warmup, concurrency))
    dump()
    t = time.monotonic()
    asyncio.run(send(port, requests, concurrency))
    busy = time.monotonic() - t
    dump()
    time.sleep(idle)  # what the worker does with no request, per second
    dump()
    per_second_idle = worker_total(out_dir, 3) / (idle + 0.5)
    return float((worker_total(out_dir, 2) - per_second_idle * busy) / requests)


def measure(config: dict[str, object], args: argparse.Namespace, tmp: str) -> float:
    path = os.path.join(tmp, "gw.yaml")
    # the time-driven work (the ledger's flush, the catalog file's check) is left out: under
    # callgrind a request takes ~50 times longer, so it would be charged to far fewer
    # requests than it serves at full speed
    if not args.bare:
        config = {
            **config,
            "catalog": {"path": os.path.join(tmp, "catalog.json"), "watch": 300},
            "budgets": {"ledger": os.path.join(tmp, "ledger.sqlite"), "flush_interval": 300},
        }
    Path(path).write_text(yaml.safe_dump(config))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    out_dir = tempfile.mkdtemp(dir=args.out or tmp)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTGW")}
    gw = subprocess.Popen(
        [
            "taskset", "-c", "0",
            "valgrind", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={out_dir}/cg.%p",
            sys.executable, "-m", "fastgw", "serve", "--config", path, "--port", str(port),
        ],
        cwd=args.tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        return counted(port, out_dir, args.warmup, args.requests, args.concurrency, args.idle)
    finally:
        os.killpg(gw.pid, signal.SIGKILL)
        gw.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="variant names separated by ';'")
    parser.add_argument("--tree", help="run this checkout's fastgw (default: this one)")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds of no load measured (subtracted)"
    )
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--out", help="keep the callgrind files in this directory")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="no catalog/budgets sections (a --tree from before they existed)",
    )
    args = parser.parse_args()
    mock, mock_port = start_mock()
    prefix = uuid.uuid4().hex[:8]
    configs = pick(variants(mock_port, prefix), args.only)
    pinned = pin_redis({1} if (os.cpu_count() or 1) > 1 else None)
    rows = []
    try:
        wait_port(mock_port, 20)
        with tempfile.TemporaryDirectory() as tmp:
            base = None
            for name, cfg in configs.items():
                per = measure(cfg, args, tmp)
                base = base or per
                rows.append({"variant": name, "instructions": round(per)})
                print(f"{name:20s} {per:10,.0f} instructions/request ({per / base - 1:+6.1%})")
    finally:
        os.killpg(mock.pid, signal.SIGKILL)
        mock.wait()
        Path(f"/dev/shm/fastgw-bench-{prefix}.state").unlink(missing_ok=True)
        for pid, cpus in pinned.items():
            os.sched_setaffinity(pid, cpus)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
