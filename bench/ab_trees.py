"""Interleaved A/B of two (or more) checkouts through the real server: c=1 latency p50,
req/s at 64 connections and the gateway's CPU time per request there (user + system, its
process tree), with wrk, several rounds, medians.

Each round starts each tree's gateway in turn (``python -m fastgw serve`` run from that
tree, one worker on core 0; the mock upstream and wrk on core 1), so slow phases of a noisy
machine hit every tree alike. Build each tree's compiled core first
(``python setup.py build_ext --inplace`` in it).

    python bench/ab_trees.py --rounds 4 /path/to/before .

``--model`` names the upstream model (one the catalog prices, e.g. ``gpt-4o-mini``, to time
the cost computation), ``--prompt-words`` pads the prompt, ``--stream N`` asks for streams of
N content chunks instead of whole answers (req/s then counts whole streams).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench.run`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import free_port  # after the sys.path fix above


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def wait_port(port: int, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on 127.0.0.1:{port}") from None
            time.sleep(0.05)


LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def request_body(words: int, stream: int) -> str:
    """The chat request wrk sends: a prompt of ``words`` words, a stream of ``stream``
    chunks (0: a whole answer)."""
    prompt = " ".join(["hi", *(f"w{i}" for i in range(words))])
    body = f'{{"model":"m","messages":[{{"role":"user","content":"{prompt}"}}]'
    if stream:
        body += f',"stream":true,"mock":{{"chunks":{stream},"interval_ms":0}}'
    return body + "}"


def start_mock() -> tuple[subprocess.Popen[bytes], int]:
    """The mock upstream on core 1 (its own process group) and its port."""
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "fastgw.mock", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc, port


def start_gateway(config: str, cwd: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m fastgw serve`` (run from ``cwd``: that checkout's fastgw) with one worker
    on core 0, no FASTGW_* variables of ours, and its port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTGW")}
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-m",
            "fastgw",
            "serve",
            "--config",
            config,
            "--port",
            str(port),
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc, port


def wrk_output(url: str, script: str, conns: int, seconds: int, latency: bool = False) -> str:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", script]
    if latency:
        cmd.append("--latency")
    return subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="x", help="the upstream model of the one target")
    parser.add_argument("--prompt-words", type=int, default=0)
    parser.add_argument("--stream", type=int, default=0, metavar="CHUNKS")
    args = parser.parse_args()
    mock, mock_port = start_mock()
    results: dict[str, list[tuple[float, float, float]]] = {t: [] for t in args.trees}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "gw.yaml")
        with open(cfg, "w") as f:
            f.write(
                "providers:\n"
                f"  m: {{kind: openai, base_url: 'http://127.0.0.1:{mock_port}/v1', api_key: k}}\n"
                f"models:\n  m: {{targets: [{{provider: m, model: {args.model}}}]}}\n"
            )
        script = os.path.join(tmp, "chat.lua")
        with open(script, "w") as f:
            f.write(LUA % request_body(args.prompt_words, args.stream))
        try:
            wait_port(mock_port, 20)
            for _ in range(args.rounds):
                for tree in args.trees:
                    gw, port = start_gateway(cfg, cwd=tree)
                    try:
                        wait_port(port, 20)
                        time.sleep(0.3)
                        url = f"http://127.0.0.1:{port}/v1/chat/completions"
                        wrk_output(url, script, 1, 1)
                        out = wrk_output(url, script, 1, 4, latency=True)
                        m = re.search(r"50%\s+([\d.]+)(us|ms)", out)
                        assert m is not None, out
                        p50 = float(m.group(1)) * (1000 if m.group(2) == "ms" else 1)
                        cpu0 = tree_cpu(gw.pid)
                        out = wrk_output(url, script, 64, 4)
                        cpu = tree_cpu(gw.pid) - cpu0
                        r = re.search(r"Requests/sec:\s+([\d.]+)", out)
                        n = re.search(r"(\d+) requests in", out)
                        assert r is not None and n is not None, out
                        us = cpu / max(1, int(n.group(1))) * 1e6
                        results[tree].append((p50, float(r.group(1)), us))
                    finally:
                        os.killpg(gw.pid, signal.SIGKILL)
                        gw.wait()
        finally:
            os.killpg(mock.pid, signal.SIGKILL)
            mock.wait()
    for tree, runs in results.items():
        p50s = [p for p, _, _ in runs]
        rps = [r for _, r, _ in runs]
        cpus = [c for _, _, c in runs]
        print(
            f"{tree}: c=1 p50 median {statistics.median(p50s):.0f} µs {p50s}; "
            f"req/s median {statistics.median(rps):,.0f} {[round(x) for x in rps]}; "
            f"gateway CPU per request (at 64 connections) median "
            f"{statistics.median(cpus):.1f} µs {[round(x, 1) for x in cpus]}"
        )
    # paired by round (the trees of one round ran back to back, under the same noise)
    first, *others = args.trees
    for tree in others:
        pairs = list(zip(results[tree], results[first], strict=True))
        rps_ratio = statistics.median(b[1] / a[1] for b, a in pairs)
        cpu_ratio = statistics.median(b[2] / a[2] for b, a in pairs)
        print(
            f"{tree} vs {first}, median of the rounds' ratios: req/s {rps_ratio:.1%}, "
            f"gateway CPU per request {cpu_ratio:.1%}"
        )


if __name__ == "__main__":
    main()
