"""The command line and the server process: check, --version, demo default, workers, drain."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from tests.servers import ROOT, Proc, gateway_config, start_gateway, worker_pids

pytestmark = pytest.mark.integration


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FASTGW_")}
    if os.environ.get("FASTGW_NO_EXTENSIONS"):
        full["FASTGW_NO_EXTENSIONS"] = "1"
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fastgw", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full,
        timeout=60,
    )


def test_version_names_the_core() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("fastgw 0.1.0")
    expected = "pure-Python core" if os.environ.get("FASTGW_NO_EXTENSIONS") else "compiled core"
    assert expected in out.stdout
    forced = run_cli("--version", env={"FASTGW_NO_EXTENSIONS": "1"})
    assert "pure-Python core" in forced.stdout


def test_check_reports_every_error_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
server: {port: "eighty", workers: 0, max_body_byts: 10}
providers:
  openai: {kind: openai, api_key: "${FASTGW_TEST_UNSET_VAR}"}
  local: {kind: nope, base_url: "ftp://x"}
models:
  fast: {targets: [{provider: openai, model: gpt-4o-mini}]}
  smart:
    timeout: {connect: soon}
    targets: [{provider: claud}]
"""
    )
    out = run_cli("check", "--config", str(bad))
    assert out.returncode == 1
    err = out.stderr
    for expected in (
        "server.port: expected an integer",
        "server.max_body_byts: unknown field (did you mean 'max_body_bytes'?)",
        "providers.openai.api_key: environment variable FASTGW_TEST_UNSET_VAR is not set",
        "providers.local.kind: unknown kind 'nope'",
        "models.smart.timeout.connect: expected a duration",
    ):
        assert expected in err, err
    assert "Traceback" not in err


def test_check_semantic_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
server: {workers: 0}
providers:
  local: {kind: openai, base_url: "ftp://x"}
models:
  smart: {targets: [{provider: claud}]}
  empty: {targets: []}
"""
    )
    out = run_cli("check", "--config", str(bad))
    assert out.returncode == 1
    for expected in (
        "server.workers: must be at least 1",
        "providers.local.base_url: expected an http(s) URL",
        "models.smart.targets[0].provider: unknown provider 'claud' (known: local)",
        "models.empty.targets: at least one target is required",
    ):
        assert expected in out.stderr, out.stderr


def test_check_ok_and_missing_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:1/v1'}}\n"
        "models: {m: {targets: [{provider: p}]}}\n"
    )
    out = run_cli("check", "--config", str(good))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout
    missing = run_cli("check", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert "cannot read file" in missing.stderr


def test_serve_refuses_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: 0}\n")
    out = run_cli("serve", "--config", str(bad))
    assert out.returncode == 2
    assert "server.port: must be between 1 and 65535" in out.stderr


async def test_demo_default_works_offline() -> None:
    gw = start_gateway(None)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{gw.url}/v1/models") as r:
                ids = [m["id"] for m in (await r.json())["data"]]
            assert ids == ["fastgw-demo"]
            body = {"model": "fastgw-demo", "messages": [{"role": "user", "content": "hi demo"}]}
            async with http.post(f"{gw.url}/v1/chat/completions", json=body) as r:
                assert r.status == 200
                assert "hi demo" in (await r.json())["choices"][0]["message"]["content"]
    finally:
        gw.stop()


async def test_openai_key_without_config_proxies_to_openai_base(mock: Proc) -> None:
    """With OPENAI_API_KEY and no config, every model goes to OpenAI (base URL overridable)."""
    env = {"OPENAI_API_KEY": "sk-from-env-000", "OPENAI_BASE_URL": f"{mock.url}/v1"}
    gw = start_gateway(None, env=env)
    try:
        async with aiohttp.ClientSession() as http:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
            async with http.post(f"{gw.url}/v1/chat/completions", json=body) as r:
                assert r.status == 200
                assert r.headers["x-fastgw-provider"] == "openai"
            async with http.get(f"{mock.url}/_mock/requests") as r:
                seen = (await r.json())[-1]
        assert seen["headers"]["authorization"] == "Bearer sk-from-env-000"
        assert seen["body"]["model"] == "gpt-4o-mini"
    finally:
        gw.stop()
    assert "sk-from-env-000" not in gw.output()


def test_two_workers_serve_and_drain_on_sigterm(mock: Proc) -> None:
    """SIGTERM: new connections are refused, a stream in flight still completes."""
    gw = start_gateway(gateway_config(mock), workers=2)
    assert len(worker_pids(gw.proc.pid)) == 2
    body = (
        b'{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"x"}],'
        b'"mock":{"chunks":12,"interval_ms":150}}'
    )
    result: dict[str, bytes] = {}

    def stream() -> None:
        import http.client

        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
        c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        result["body"] = c.getresponse().read()

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.5)
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):  # no longer accepting
        socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()
    t.join(30)
    assert gw.proc.wait(30) == 0 or gw.proc.returncode is not None
    raw = result["body"]
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-200:]
    assert raw.count(b"data: ") == 12 + 3  # role + 12 content + finish + [DONE]
    assert b'"error"' not in raw


async def test_stream_request_answered_without_streaming() -> None:
    """An OpenAI-compatible server that ignores ``stream: true`` and answers with JSON: the
    client gets that JSON as it is, not a broken event stream."""
    reply = b'{"id":"x","object":"chat.completion","choices":[]}'

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await r.readexactly(length)
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(reply), reply)
        )
        await w.drain()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = {
        "providers": {"p": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
        "models": {"m": {"targets": [{"provider": "p"}]}},
    }
    async with server:
        gw = await asyncio.to_thread(start_gateway, config)
        try:
            async with aiohttp.ClientSession() as http:
                body = {
                    "model": "m",
                    "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                }
                async with http.post(f"{gw.url}/v1/chat/completions", json=body) as r:
                    assert r.status == 200
                    assert r.headers["content-type"] == "application/json"
                    assert await r.read() == reply
        finally:
            await asyncio.to_thread(gw.stop)


async def test_responses_api_passthrough() -> None:
    """/v1/responses: the body goes to an OpenAI-kind target as sent (model rewritten, no
    stream_options added), the answer comes back byte for byte, streamed or not."""
    seen: list[dict[str, object]] = []
    reply = b'{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":3}}'
    events = (
        b'event: response.created\ndata: {"type":"response.created"}\n\n'
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"delta":"Hi"}\n\n'
        b'event: response.completed\ndata: {"type":"response.completed"}\n\n'
    )

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await r.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = json.loads(await r.readexactly(length))
            seen.append({"path": head.split(b" ")[1].decode(), "body": body})
            if body.get("stream"):
                w.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(events), events)
                )
            else:
                w.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(reply), reply)
                )
            await w.drain()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = {
        "providers": {"p": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
        "models": {"alias": {"targets": [{"provider": "p", "model": "gpt-4.1"}]}},
    }
    async with server:
        gw = await asyncio.to_thread(start_gateway, config)
        try:
            async with aiohttp.ClientSession() as http:
                url = f"{gw.url}/v1/responses"
                body = {"model": "alias", "input": "hi", "reasoning": {"effort": "low"}}
                async with http.post(url, json=body) as r:
                    assert r.status == 200
                    assert await r.read() == reply
                async with http.post(url, json={**body, "stream": True}) as r:
                    assert r.status == 200
                    got = await r.read()  # the events as they are, then the cost (a comment)
                    assert got.startswith(events)
                    assert re.fullmatch(rb": x-fastgw-cost-usd=[0-9.]+\n\n", got[len(events) :])
                async with http.post(url, json={"model": "alias", "input": 5}) as r:
                    assert r.status == 400
        finally:
            await asyncio.to_thread(gw.stop)
    assert seen[0] == {
        "path": "/v1/responses",
        "body": {"model": "gpt-4.1", "input": "hi", "reasoning": {"effort": "low"}},
    }
    assert seen[1]["body"] == {**body, "model": "gpt-4.1", "stream": True}  # nothing injected
