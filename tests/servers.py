"""Real servers on loopback for the integration and e2e tests: the mock upstream and the
gateway under Granian, each in its own process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not answer {path} within {timeout}s")


class Proc:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_mock(**opts: Any) -> Proc:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="fastgw-mock-", suffix=".log")[1])
    args = [sys.executable, "-m", "fastgw.mock", "--port", str(port)]
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    p = Proc(proc, port, log)
    _wait_http(port, "/v1/models", proc)
    return p


def start_gateway(
    config: dict[str, Any] | None,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Proc:
    """Start ``python -m fastgw serve`` with ``config`` (None: the embedded default)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="fastgw-gw-", suffix=".log")[1])
    args = [sys.executable, "-m", "fastgw", "serve", "--port", str(port), "--workers", str(workers)]
    if config is not None:
        cfg_path = Path(tempfile.mkstemp(prefix="fastgw-", suffix=".yaml")[1])
        cfg_path.write_text(yaml.safe_dump(config))
        args += ["--config", str(cfg_path)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FASTGW_")}
    full_env.pop("OPENAI_API_KEY", None)
    if os.environ.get("FASTGW_NO_EXTENSIONS"):
        full_env["FASTGW_NO_EXTENSIONS"] = os.environ["FASTGW_NO_EXTENSIONS"]
    full_env.update(env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=full_env)
    p = Proc(proc, port, log)
    try:
        _wait_http(port, "/readyz", proc)
    except RuntimeError:
        p.stop(signal.SIGKILL)
        raise RuntimeError(p.output()) from None
    return p


@contextlib.contextmanager
def running(p: Proc) -> Iterator[Proc]:
    try:
        yield p
    finally:
        p.stop()


def worker_pids(main_pid: int) -> list[int]:
    """PIDs of the children of ``main_pid`` (Granian workers)."""
    out: list[int] = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (d / "stat").read_text()
                ppid = int(re.sub(r"^.*\) ", "", stat).split()[1])
                if ppid == main_pid:
                    out.append(int(d.name))
    return out


SECRET = "sk-test-secret-0123456789abcdef"


def gateway_config(mock: Proc) -> dict[str, Any]:
    base = f"{mock.url}/v1"
    return {
        "server": {"max_body_bytes": 65536, "max_event_bytes": 2 * 1024 * 1024},
        "providers": {
            "mock": {"kind": "openai", "base_url": base, "api_key": SECRET},
            "impatient": {
                "kind": "openai",
                "base_url": base,
                "api_key": SECRET,
                "timeout": {"connect": "1s", "first_byte": "300ms", "total": "5s"},
            },
            "hasty": {
                "kind": "openai",
                "base_url": base,
                "api_key": SECRET,
                "timeout": {"connect": "1s", "first_byte": "2s", "total": "400ms"},
            },
            "dead": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": SECRET},
            "gem": {"kind": "gemini", "base_url": f"{mock.url}/v1beta", "api_key": SECRET},
            "claude": {"kind": "anthropic", "base_url": f"{mock.url}/v1", "api_key": SECRET},
            "aws": {
                "kind": "bedrock",
                "base_url": mock.url,
                "aws_region": "us-east-1",
                "aws_access_key_id": "AKIDEXAMPLE",
                "aws_secret_access_key": SECRET,
            },
        },
        "models": {
            "gpt-test": {"targets": [{"provider": "mock", "model": "upstream-model"}]},
            "same-name": {"targets": [{"provider": "mock"}]},
            "deterministic": {
                "targets": [
                    {
                        "provider": "mock",
                        "model": "upstream-model",
                        "override_params": {"temperature": 0, "seed": None},
                    }
                ]
            },
            "mock/*": {"targets": [{"provider": "mock"}]},
            "claude/*": {"targets": [{"provider": "claude"}]},
            "impatient": {"targets": [{"provider": "impatient", "model": "m"}]},
            "hasty": {"targets": [{"provider": "hasty", "model": "m"}]},
            "dead": {"targets": [{"provider": "dead", "model": "m"}]},
            "gemini-flash": {"targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]},
            # routing (issue 4): fallback, retries, load balancing
            "fb-dead": {
                "targets": [{"provider": "dead", "model": "m"}, {"provider": "mock", "model": "fb"}]
            },
            "fb-503": {
                "targets": [
                    {
                        "provider": "mock",
                        "model": "bad",
                        "override_params": {"mock": {"status": 503}},
                    },
                    {"provider": "mock", "model": "good"},
                ]
            },
            "fb-400": {
                "targets": [
                    {
                        "provider": "mock",
                        "model": "bad",
                        "override_params": {"mock": {"status": 400}},
                    },
                    {"provider": "mock", "model": "good"},
                ]
            },
            "retry-503": {
                "retry": {"attempts": 3, "backoff": "10ms"},
                "targets": [
                    {
                        "provider": "mock",
                        "model": "bad",
                        "override_params": {"mock": {"status": 503}},
                    }
                ],
            },
            "retry-429": {
                "retry": {"attempts": 2},
                "targets": [
                    {
                        "provider": "mock",
                        "model": "bad",
                        "override_params": {"mock": {"status": 429, "retry_after": 1}},
                    }
                ],
            },
            "lb": {
                "strategy": "loadbalance",
                "targets": [
                    {"provider": "mock", "model": "heavy", "weight": 3},
                    {"provider": "mock", "model": "light", "weight": 1},
                ],
            },
            "claude-sonnet": {"targets": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
            "bedrock-claude": {
                "targets": [
                    {"provider": "aws", "model": "anthropic.claude-3-5-sonnet-20241022-v2:0"}
                ]
            },
        },
    }


async def redis_forget(prefix: str, url: str = "redis://127.0.0.1:6379/0") -> None:
    """Delete every key under ``prefix`` on the tests' Redis (what a test left behind)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def redis_up() -> bool:
    """Does a Redis answer on 127.0.0.1:6379 (the tests' Redis; CI starts one)?"""
    try:
        socket.create_connection(("127.0.0.1", 6379), 0.5).close()
        return True
    except OSError:
        return False
