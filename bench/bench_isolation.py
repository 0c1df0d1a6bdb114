"""Isolation benchmark: a failing provider must not slow down traffic to healthy ones.

    python bench/bench_isolation.py [--duration 10] [--connections 64] [--hung 500]
                                    [--rounds 1] [--ttft-streams 200] [--release-wait 2]
                                    [--json-out OUT] [--cores auto|none|GW,LOAD]

One gateway (one worker) serves two models: ``healthy`` (the built-in mock upstream) and
``hung`` (an upstream on 127.0.0.1 that accepts connections, reads the request and never
answers; the provider's ``first_byte`` timeout is 30 s). Phases, ``--rounds`` times each,
interleaved:

  baseline  wrk against ``healthy`` (non-stream chat, fixed connections), then sequential
            stream time-to-first-token (TTFT) against ``healthy``
  hung      the same, while a background client keeps ``--hung`` requests to ``hung`` open
            (each sent again when the gateway answers it, i.e. at its timeout)

After each hung phase the client goes away; the result says whether the gateway dropped its
upstream requests within ``--release-wait`` seconds (then the hanging upstream resets the
rest, so the next baseline starts clean). The hanging upstream counts the requests it holds,
so the result shows they really were in flight during the measurement. Prints one JSON
object (also written to ``--json-out``): medians over the rounds, every round, the ratios
hung/baseline and the command line. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):  # run as a script: make ``bench.run`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (
    _WRK_SCRIPT,
    CHAT_PATH,
    HEADERS,
    PROMPT,
    BenchError,
    LoadTool,
    Processes,
    _raise_nofile,
    _terminate_as_interrupt,
    free_port,
    percentile,
    pin,
    rss_tree_kib,
    start_mock,
    wait_ready,
)
from bench.run import measure_ttft as run_measure_ttft  # after the sys.path fix above

HEALTHY = "healthy"
HUNG = "hung"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def body(model: str, stream: bool = False, **mock: Any) -> bytes:
    data: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        data["stream"] = True
    if mock:
        data["mock"] = mock
    return json.dumps(data).encode()


# -- the hanging upstream ---------------------------------------------------------------------


def request_complete(buf: bytes) -> bool:
    """Whether ``buf`` holds one whole HTTP/1.1 request (Content-Length or chunked body)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].lower()
    rest = buf[end + 4 :]
    if b"transfer-encoding: chunked" in head:  # done at the last chunk (no trailers)
        return rest == b"0\r\n\r\n" or rest.endswith(b"\r\n0\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return len(rest) >= length


class _Hang(asyncio.Protocol):
    """One connection to the hanging upstream: reads the request, never answers."""

    def __init__(self, server: HangServer) -> None:
        self.server = server
        self.buf = b""
        self.holding = False
        self.dropped = False  # closed by this side (drop_all), not by the gateway
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connection_made(self)

    def data_received(self, data: bytes) -> None:
        if self.holding:
            return  # a request held already: ignore whatever else comes
        self.buf += data
        if request_complete(self.buf):
            self.holding = True
            self.buf = b""
            self.server.request_held()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connection_lost(self)


class HangServer:
    """Accepts connections on 127.0.0.1, reads one HTTP/1.1 request on each and never answers;
    the socket stays open until the peer closes it. Counts what it holds."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0  # connections ever accepted
        self.open = 0  # connections open now
        self.requests = 0  # requests read in full, ever
        self.holding = 0  # requests read in full whose connection is still open
        self.closed_by_peer = 0  # connections the gateway closed (e.g. at its timeout)
        self.dropped = 0  # connections this side closed (drop_all)
        self.all_closed = asyncio.Event()  # set while no connection is open
        self.all_closed.set()
        self._server: asyncio.Server | None = None
        self._conns: set[_Hang] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Hang(self), "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    def snapshot(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "open": self.open,
            "requests": self.requests,
            "holding": self.holding,
            "closed_by_peer": self.closed_by_peer,
            "dropped": self.dropped,
        }

    def connection_made(self, conn: _Hang) -> None:
        self.accepted += 1
        self.open += 1
        self._conns.add(conn)
        self.all_closed.clear()

    def request_held(self) -> None:
        self.requests += 1
        self.holding += 1

    def connection_lost(self, conn: _Hang) -> None:
        self._conns.discard(conn)
        self.open -= 1
        if conn.holding:
            self.holding -= 1
        if conn.dropped:
            self.dropped += 1
        else:
            self.closed_by_peer += 1
        if not self.open:
            self.all_closed.set()

    async def drop_all(self) -> None:
        """Reset every open connection (the gateway sees a connection error at once)."""
        for conn in list(self._conns):
            conn.dropped = True
            if conn.transport is not None:
                conn.transport.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_closed.wait(), 2)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop_all()
        if self._server is not None:
            await self._server.wait_closed()


# -- the client that keeps requests to the hung model open ------------------------------------


class HungClient:
    """``n`` concurrent non-stream requests to the ``hung`` model, each sent again as soon as
    the gateway answers it (at its timeout) or the request fails."""

    def __init__(self, url: str, n: int, timeout_s: float) -> None:
        self.url = url
        self.n = n
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10)
        self.in_flight = 0
        self.sent = 0
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.answer_s: list[float] = []  # how long the gateway took to give up on each
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def snapshot(self) -> dict[str, Any]:
        answers = sorted(self.answer_s)
        return {
            "concurrency": self.n,
            "in_flight": self.in_flight,
            "sent": self.sent,
            "answered": dict(self.statuses),
            "errors": dict(self.errors),
            "answer_s_p50": round(percentile(answers, 50), 2) if answers else None,
        }

    async def start(self) -> None:
        conn = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(headers=HEADERS, connector=conn, timeout=self.timeout)
        self._tasks = [asyncio.create_task(self._one(self._session)) for _ in range(self.n)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _one(self, session: aiohttp.ClientSession) -> None:
        data = body(HUNG)
        while True:
            self.in_flight += 1
            self.sent += 1
            t0 = time.monotonic()
            try:
                async with session.post(self.url, data=data) as resp:
                    await resp.read()
                key = str(resp.status)
                self.statuses[key] = self.statuses.get(key, 0) + 1
                self.answer_s.append(time.monotonic() - t0)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                key = type(exc).__name__
                self.errors[key] = self.errors.get(key, 0) + 1
                await asyncio.sleep(0.1)  # do not spin on a refused connection
            finally:
                self.in_flight -= 1


# -- measurements -----------------------------------------------------------------------------


async def check_healthy(url: str) -> None:
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        async with session.post(url, data=body(HEALTHY)) as resp:
            text = await resp.text()
        if resp.status != 200 or json.loads(text).get("object") != "chat.completion":
            raise BenchError(f"model {HEALTHY!r} answered {resp.status}: {text[:300]}")
        async with session.post(url, data=body(HEALTHY, True, chunks=3)) as resp:
            raw = await resp.read()
        if resp.status != 200 or not raw.rstrip().endswith(b"data: [DONE]"):
            raise BenchError(f"stream on {HEALTHY!r} answered {resp.status}: {raw[:300]!r}")


async def measure_ttft(url: str, n: int) -> dict[str, Any]:
    """``n`` sequential streams to ``healthy`` (run.py's TTFT measure, 20 warm-up streams
    first): µs from sending the request to the first content chunk."""
    got = await run_measure_ttft(url, n, body(HEALTHY, True, chunks=4))
    return {
        "p50_us": round(got["p50_us"], 1),
        "p99_us": round(got["p99_us"], 1),
        "max_us": round(got["max_us"], 1),
        "streams": n,
    }


def cpu_tree_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        total += times.get(p, 0.0)
    return total


def core_times() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies per CPU, from /proc/stat."""
    out: dict[str, tuple[int, int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *rest = line.split()
            if name.startswith("cpu") and name != "cpu":
                vals = [int(x) for x in rest]
                idle = vals[3] + vals[4]  # idle + iowait
                out[name] = (sum(vals) - idle, sum(vals))
    return out


def core_busy(before: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Busy share of each CPU since ``before``."""
    after = core_times()
    return {
        name: round((after[name][0] - b[0]) / max(1, after[name][1] - b[1]), 3)
        for name, b in before.items()
        if name in after
    }


class Sampler:
    """Samples the hanging upstream's and the hung client's counters while a phase runs:
    the minimum shows whether the hung requests stayed in flight all along."""

    def __init__(self, hang: HangServer, client: HungClient | None) -> None:
        self.hang = hang
        self.client = client
        self.holding: list[int] = []
        self.in_flight: list[int] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.holding.append(self.hang.holding)
            if self.client is not None:
                self.in_flight.append(self.client.in_flight)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.25)

    async def result(self) -> dict[str, Any]:
        if self._task is not None:
            await self._task
        out: dict[str, Any] = {
            "upstream_holding_min": min(self.holding, default=0),
            "upstream_holding_max": max(self.holding, default=0),
        }
        if self.client is not None:
            out["client_in_flight_min"] = min(self.in_flight, default=0)
            out["client_in_flight_max"] = max(self.in_flight, default=0)
        return out


async def run_phase(
    name: str,
    url: str,
    tool: LoadTool,
    args: argparse.Namespace,
    gateway_pid: int,
    hang: HangServer,
    client: HungClient | None,
) -> dict[str, Any]:
    res: dict[str, Any] = {}
    with Sampler(hang, client) as sampler:
        log(f"{name}: wrk, {args.connections} connections, {args.duration:.0f} s")
        cpu0, t0, cores = cpu_tree_s(gateway_pid), time.monotonic(), core_times()
        wrk = await asyncio.to_thread(tool.run, url, args.connections, args.duration)
        cpu, wall = cpu_tree_s(gateway_pid) - cpu0, time.monotonic() - t0
        res["wrk"] = {k: round(v, 1) if isinstance(v, float) else v for k, v in wrk.items()}
        # Whether the gateway's core was the limit (near 1.0), and its cost per request.
        res["wrk"]["gateway_cpu_util"] = round(cpu / wall, 3)
        res["wrk"]["gateway_cpu_us_per_request"] = round(cpu / max(1, wrk["requests"]) * 1e6, 1)
        res["wrk"]["core_busy"] = core_busy(cores)
        if args.ttft_streams:
            log(f"{name}: stream TTFT, {args.ttft_streams} sequential streams")
            res["ttft"] = await asyncio.wait_for(measure_ttft(url, args.ttft_streams), 300)
        res["gateway_rss_kib"] = rss_tree_kib(gateway_pid)
    res["in_flight"] = await sampler.result()
    res["upstream"] = hang.snapshot()
    if client is not None:
        res["hung_client"] = client.snapshot()
    return res


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over the rounds of each latency and throughput figure; the rounds are kept."""
    out: dict[str, Any] = {
        "wrk": {
            key: round(statistics.median(r["wrk"][key] for r in rounds), 3)
            for key in ("rps", "p50_us", "p99_us", "gateway_cpu_util", "gateway_cpu_us_per_request")
            if all(key in r["wrk"] for r in rounds)
        }
    }
    out["wrk"]["requests"] = sum(r["wrk"]["requests"] for r in rounds)
    out["wrk"]["errors"] = sum(r["wrk"]["errors"] for r in rounds)
    if all("ttft" in r for r in rounds):
        out["ttft"] = {
            key: round(statistics.median(r["ttft"][key] for r in rounds), 1)
            for key in ("p50_us", "p99_us")
        }
    flights = [r["in_flight"] for r in rounds]
    out["in_flight"] = {
        key: (min if key.endswith("_min") else max)(f[key] for f in flights) for key in flights[0]
    }
    out["rounds"] = rounds
    return out


def _ratio(b: Any, a: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not a:
        return None
    return round(b / a, 3)


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    keys = ("rps", "p50_us", "p99_us", "gateway_cpu_us_per_request")
    out = {key: _ratio(b["wrk"].get(key), a["wrk"].get(key)) for key in keys}
    if "ttft" in a and "ttft" in b:
        for key in ("p50_us", "p99_us"):
            out[f"ttft_{key}"] = _ratio(b["ttft"][key], a["ttft"][key])
    return out


# -- set-up -----------------------------------------------------------------------------------


def parse_cores(text: str) -> tuple[int | None, int | None]:
    """``auto``: gateway on core 0, everything else on core 1, like bench/run.py, when
    taskset exists and there are at least 2 CPUs; ``none``; or ``GW,LOAD``."""
    if text == "none":
        return None, None
    if text == "auto":
        if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
            return 0, 1
        return None, None
    try:
        gw, load = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected auto, none or GW,LOAD (e.g. 0,1)") from None
    return gw, load


def gateway_config(port: int, mock_port: int, hang_port: int, first_byte_s: float) -> str:
    return (
        f"server: {{host: 127.0.0.1, port: {port}, workers: 1}}\n"
        "providers:\n"
        f"  {HEALTHY}:\n"
        "    kind: openai\n"
        f'    base_url: "http://127.0.0.1:{mock_port}/v1"\n'
        '    api_key: "sk-bench"\n'
        f"  {HUNG}:\n"
        "    kind: openai\n"
        f'    base_url: "http://127.0.0.1:{hang_port}/v1"\n'
        '    api_key: "sk-bench"\n'
        f"    timeout: {{connect: 2s, first_byte: {first_byte_s:g}s, "
        f"total: {2 * first_byte_s:g}s}}\n"
        "models:\n"
        f"  {HEALTHY}: {{targets: [{{provider: {HEALTHY}, model: m}}]}}\n"
        f"  {HUNG}: {{targets: [{{provider: {HUNG}, model: m}}]}}\n"
    )


async def wait_holding(hang: HangServer, n: int, limit_s: float) -> float:
    """Seconds until the hanging upstream holds ``n`` requests (BenchError after limit_s)."""
    t0 = time.monotonic()
    while hang.holding < n:
        if time.monotonic() - t0 > limit_s:
            raise BenchError(
                f"only {hang.holding} of {n} hung requests reached the hanging upstream "
                f"after {limit_s:.0f} s ({hang.snapshot()})"
            )
        await asyncio.sleep(0.05)
    return round(time.monotonic() - t0, 2)


async def wait_released(hang: HangServer, limit_s: float) -> float | None:
    """Seconds until the gateway closed every upstream connection to the hanging upstream
    after its clients went away; None if some were still open after limit_s."""
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(hang.all_closed.wait(), limit_s)
    except TimeoutError:
        return None
    return round(time.monotonic() - t0, 2)


async def hung_phase(
    name: str,
    url: str,
    tool: LoadTool,
    args: argparse.Namespace,
    gateway_pid: int,
    hang: HangServer,
) -> dict[str, Any]:
    """The load phase while ``args.hung`` requests to the hung model are in flight, then what
    the gateway does with their upstream requests once their clients have gone away."""
    client = HungClient(url, args.hung, args.first_byte_timeout + 30)
    info: dict[str, Any] = {}
    try:
        log(f"{name}: opening {args.hung} requests to model {HUNG!r}")
        await client.start()
        info["seconds_to_all_in_flight"] = await wait_holding(hang, args.hung, 60)
        info["gateway_rss_kib_all_in_flight"] = rss_tree_kib(gateway_pid)
        phase = await run_phase(name, url, tool, args, gateway_pid, hang, client)
    finally:
        await client.stop()
    # A gateway that notices its clients leaving drops their upstream requests at once; one
    # that does not holds them until its own first_byte timeout.
    released = await wait_released(hang, args.release_wait)
    info["upstream_released_s_after_clients_left"] = released
    info["upstream_open_after_release_wait"] = hang.open
    if released is None:
        log(
            f"{name}: {hang.open} upstream requests still open {args.release_wait:g} s after "
            "their clients left; the hanging upstream resets them"
        )
        await hang.drop_all()
    return {**phase, **info}


async def run(args: argparse.Namespace, procs: Processes, logdir: Path) -> dict[str, Any]:
    gw_core, load_core = args.cores
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})  # the hung client and hanging upstream run here
    tool = LoadTool(logdir, load_core, "wrk")
    if tool.name is None:
        raise BenchError("wrk is needed: apt-get install -y wrk")
    tool.script.write_text(_WRK_SCRIPT.format(body=body(HEALTHY).decode()))

    _, mock_port = start_mock(procs, "mock", load_core)
    hang = HangServer()
    await hang.start()
    try:
        log(f"mock upstream on 127.0.0.1:{mock_port}, hanging upstream on 127.0.0.1:{hang.port}")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = logdir / "gateway.yaml"
        config.write_text(gateway_config(port, mock_port, hang.port, args.first_byte_timeout))
        cmd = [*pin(gw_core), sys.executable, "-m", "fastgw", "serve", "--config", str(config)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        gateway = procs.start("gateway", cmd)
        try:
            await wait_ready(base + "/healthz", gateway, 60)
        except BenchError as exc:
            raise BenchError(f"gateway: {exc}\n{procs.log_tail('gateway')}") from None
        url = base + CHAT_PATH
        await check_healthy(url)
        log("warm-up: wrk 2 s")
        await asyncio.to_thread(tool.run, url, args.connections, 2)

        baseline: list[dict[str, Any]] = []
        hung: list[dict[str, Any]] = []
        for i in range(args.rounds):
            tag = f" {i + 1}/{args.rounds}" if args.rounds > 1 else ""
            pid = gateway.pid
            baseline.append(await run_phase(f"baseline{tag}", url, tool, args, pid, hang, None))
            hung.append(await hung_phase(f"hung{tag}", url, tool, args, pid, hang))
    finally:
        await hang.close()
    phases = {"baseline": summarize(baseline), "hung": summarize(hung)}
    cpus = os.cpu_count() or 1
    return {
        "command": shlex.join(sys.orig_argv),
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpu": f"{platform.processor() or platform.machine()}, {cpus} CPUs",
            "python": platform.python_version(),
            "gateway_core": gw_core,
            "load_core": load_core,
            "duration_s": args.duration,
            "connections": args.connections,
            "rounds": args.rounds,
            "hung_requests": args.hung,
            "hung_first_byte_timeout_s": args.first_byte_timeout,
            "ttft_streams": args.ttft_streams,
        },
        "phases": phases,
        "ratio_hung_over_baseline": ratios(phases["baseline"], phases["hung"]),
        # Each hung phase against the baseline just before it: drift of a noisy machine
        # shows as ratios that disagree between rounds.
        "ratio_per_round": [ratios(a, b) for a, b in zip(baseline, hung, strict=True)],
    }


def main() -> int:
    doc = (__doc__ or "").strip().split("\n\n")
    parser = argparse.ArgumentParser(description=doc[0] if doc else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument(
        "--hung", type=int, default=500, help="concurrent requests kept open to the hung model"
    )
    parser.add_argument(
        "--ttft-streams",
        type=int,
        default=200,
        help="sequential streams for the TTFT measurement of each phase (0: skip)",
    )
    parser.add_argument(
        "--first-byte-timeout",
        type=float,
        default=30.0,
        help="the hung provider's first_byte timeout, seconds (total: twice that)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="baseline/hung pairs, interleaved; figures are medians over the rounds",
    )
    parser.add_argument(
        "--release-wait",
        type=float,
        default=2.0,
        help="seconds to wait for the gateway to drop the hung upstream requests after their "
        "clients left, before the hanging upstream resets them",
    )
    parser.add_argument("--json-out", metavar="PATH", help="also write the JSON result here")
    parser.add_argument(
        "--cores",
        type=parse_cores,
        default="auto",
        help="auto (gateway on core 0, the rest on core 1 when 2+ CPUs and taskset), none, "
        "or GW,LOAD",
    )
    args = parser.parse_args()
    if min(args.hung, args.connections, args.duration, args.rounds) < 1:
        parser.error("--hung, --connections, --duration and --rounds must be at least 1")
    _raise_nofile()
    with tempfile.TemporaryDirectory(prefix="fastgw-isolation-") as tmp:
        logdir = Path(tmp)
        procs = Processes(logdir)
        try:
            with _terminate_as_interrupt():
                result = asyncio.run(run(args, procs, logdir))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BenchError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            procs.stop_all()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
