"""What governance costs: requests/s of one gateway worker with no key, with a virtual key
and access rules, and with rpm + tpm limits on the ``local`` and the ``redis`` state backends.

Every variant is the same gateway (one worker on core 0; the mock upstream and wrk on core 1)
with another config; rounds are interleaved so a slow phase of the machine hits all alike.
The Redis server (found by its process name) is pinned to core 1 too for the run and given
back its CPUs afterwards: in production Redis runs on its own host, so its CPU time must not
be taken from the gateway's core.
Limits are set far above the load, so every request is admitted and pays the full cost
(authentication, the rules, one take from the buckets, the batched settlement). Besides
req/s it reports the gateway's CPU time per request (user + system of its process tree over
the run / requests): on a machine whose CPU is shared (steal time), that moves far less than
req/s from one run to the next.

    python bench/bench_limits.py --rounds 3 --seconds 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a script: make ``bench.ab_trees`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ab_trees import (  # after the sys.path fix
    start_gateway,
    start_mock,
    tree_cpu,
    wait_port,
    wrk_output,
)

KEY = "sk-fastgw-bench-key-0123456789abcdef"
LUA = """wrk.method = "POST"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def variants(mock_port: int, prefix: str) -> dict[str, dict[str, Any]]:
    base: dict[str, Any] = {
        "providers": {
            "mock": {"kind": "openai", "base_url": f"http://127.0.0.1:{mock_port}/v1"},
        },
        "models": {"m": {"targets": [{"provider": "mock", "model": "x"}]}},
    }
    rules = {"models": ["m", "gpt-*"], "deny_models": ["o1*"], "max_tokens": 100000}
    key = {"name": "bench", "key": KEY, **rules}
    limits = {"rpm": 10**9, "tpm": 10**12}
    return {
        "no key": base,
        "key + rules": {**base, "keys": [key]},
        "+ rpm/tpm, local": {
            **base,
            "keys": [{**key, "limits": limits}],
            "state": {"backend": "local", "path": f"/dev/shm/fastgw-bench-{prefix}.state"},
        },
        "+ rpm/tpm, redis": {
            **base,
            "keys": [{**key, "limits": limits}],
            "state": {"backend": "redis", "prefix": f"fastgw-bench-{prefix}:"},
        },
    }


def pick(configs: dict[str, dict[str, Any]], only: str | None) -> dict[str, dict[str, Any]]:
    """The variants named in ``only`` (separated by ``;``: the names hold commas), or all."""
    if not only:
        return configs
    names = [n.strip() for n in only.split(";")]
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(configs)}")
    return {k: v for k, v in configs.items() if k in names}


def run_wrk(url: str, script: str, seconds: int, pid: int | None = None) -> tuple[float, float]:
    """req/s, and the gateway's CPU µs per request (``pid``'s process tree; 0 without)."""
    cpu0 = tree_cpu(pid) if pid else 0.0
    out = wrk_output(url, script, 64, seconds)
    cpu = tree_cpu(pid) - cpu0 if pid else 0.0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} requests failed:\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    assert m is not None and n is not None, out
    return float(m.group(1)), cpu / int(n.group(1)) * 1e6


def pin_redis(cpus: set[int] | None) -> dict[int, set[int]]:
    """Pin every ``redis-server`` process to ``cpus`` (None: nothing); their old masks."""
    old: dict[int, set[int]] = {}
    if cpus is None:
        return old
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "redis-server":
                continue
            pid = int(entry.name)
            old[pid] = os.sched_getaffinity(pid)
            os.sched_setaffinity(pid, cpus)
        except OSError:
            continue
    return old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", help="variant names separated by ';'")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    mock, mock_port = start_mock()
    prefix = uuid.uuid4().hex[:8]
    configs = pick(variants(mock_port, prefix), args.only)
    results: dict[str, list[float]] = {name: [] for name in configs}
    cpu_us: dict[str, list[float]] = {name: [] for name in configs}
    order = list(configs)
    pinned = pin_redis({1} if (os.cpu_count() or 1) > 1 else None)
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "chat.lua")
        Path(script).write_text(LUA % KEY)
        try:
            wait_port(mock_port, 20)
            for r in range(args.rounds):
                # rotate the order each round: no variant always runs first or last
                for name in order[r % len(order) :] + order[: r % len(order)]:
                    cfg = configs[name]
                    path = os.path.join(tmp, "gw.yaml")
                    Path(path).write_text(yaml.safe_dump(cfg))
                    gw, port = start_gateway(path)
                    try:
                        wait_port(port, 20)
                        url = f"http://127.0.0.1:{port}/v1/chat/completions"
                        run_wrk(url, script, 1)  # warm-up
                        rps, us = run_wrk(url, script, args.seconds, gw.pid)
                        results[name].append(rps)
                        cpu_us[name].append(us)
                    finally:
                        os.killpg(gw.pid, signal.SIGKILL)
                        gw.wait()
                    time.sleep(0.2)
        finally:
            os.killpg(mock.pid, signal.SIGKILL)
            mock.wait()
            Path(f"/dev/shm/fastgw-bench-{prefix}.state").unlink(missing_ok=True)
            for pid, cpus in pinned.items():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(pid, cpus)
    base = statistics.median(results[next(iter(results))])
    base_cpu = statistics.median(cpu_us[next(iter(cpu_us))])
    rows = []
    for name, runs in results.items():
        med = statistics.median(runs)
        cpu = statistics.median(cpu_us[name])
        rows.append(
            {
                "variant": name,
                "rps_median": med,
                "rps": runs,
                "vs_first": med / base,
                "cpu_us_median": cpu,
                "cpu_us": cpu_us[name],
                "cpu_vs_first": cpu / base_cpu,
            }
        )
        print(
            f"{name:20s} {med:9,.0f} req/s ({med / base:6.1%})  {cpu:6.1f} µs CPU/request"
            f" ({cpu / base_cpu:6.1%})  {[round(x) for x in runs]}"
            f" {[round(x, 1) for x in cpu_us[name]]}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
