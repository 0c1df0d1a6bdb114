"""The upstream HTTP/1.1 client against real sockets: the mock upstream and raw servers that
misbehave on purpose (stale keep-alive, chunked, close-delimited, stalls, resets)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fastgw.mock.server import start_server
from fastgw.upstream import Client, Origin, Timeouts, UpstreamError
from fastgw.upstream.wire import Wire

pytestmark = pytest.mark.integration

T = Timeouts(connect=2.0, first_byte=2.0, total=5.0)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: Handler) -> tuple[asyncio.Server, Origin]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, Origin("http", "127.0.0.1", port)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def req(origin: Origin, body: bytes = b"{}", path: str = "/v1/x") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {origin.host_header}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = Client(limit=4)
    yield c
    await c.close()


async def test_mock_chat_non_stream_and_stream_reuse_one_connection(client: Client) -> None:
    async with await start_server("127.0.0.1", 0) as mock:
        wire = Wire(f"http://127.0.0.1:{mock.port}/v1", {"content-type": "application/json"})
        body = json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "hi there"}]}
        ).encode()
        for _ in range(3):
            resp = await client.request(
                wire.origin, wire.request("/chat/completions", {}, body), T, False
            )
            assert resp.status == 200
            assert resp.header(b"content-type") == b"application/json"
            assert "hi there" in json.loads(resp.body)["choices"][0]["message"]["content"]
        stream_body = body[:-1] + b',"stream":true}'
        resp = await client.request(
            wire.origin, wire.request("/chat/completions", {}, stream_body), T, True
        )
        assert resp.status == 200
        data = b""
        while chunk := await resp.readany():
            data += chunk
        assert data.endswith(b"data: [DONE]\n\n")
        pool = client.pool(wire.origin)
        assert pool.open == 1 and len(pool.idle) == 1  # every exchange used one connection


async def test_stale_keepalive_connection_is_retried_once(client: Client) -> None:
    served = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(r)
        served += 1
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await w.drain()
        w.close()  # closes after one response although it promised keep-alive

    server, origin = await raw_server(handler)
    async with server:
        for _ in range(3):
            resp = await client.request(origin, req(origin), T, False)
            await asyncio.sleep(0.05)  # the server's close lands while the connection is idle
            assert resp.status == 200 and resp.body == b"ok"
    assert served == 3


async def test_chunked_and_close_delimited_bodies(client: Client) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await w.drain()
            await asyncio.sleep(0.02)
        w.write(b"0\r\n\r\n")
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await w.drain()
        w.close()

    server, origin = await raw_server(handler)
    async with server:
        resp = await client.request(origin, req(origin), T, True)
        got = b""
        while chunk := await resp.readany():
            got += chunk
        assert got == b"data: 1\n\ndata: 2\n\n"
        resp = await client.request(origin, req(origin), T, False)
        assert resp.body == b"until the end"
        assert client.pool(origin).open == 0  # not reused after connection: close


async def test_errors_and_timeouts(client: Client) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        request = await read_request(r)
        if b"/stall" in request:
            await asyncio.sleep(3)
        elif b"/garbage" in request:
            w.write(b"NOT HTTP AT ALL\r\n\r\n")
        elif b"/midstream" in request:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
            await w.drain()
            await asyncio.sleep(0.05)
            w.transport.abort()
            return
        elif b"/silent" in request:
            w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
            await w.drain()
            await asyncio.sleep(3)
        await w.drain()
        w.close()

    server, origin = await raw_server(handler)
    quick = Timeouts(connect=1.0, first_byte=0.3, total=5.0)
    async with server:
        with pytest.raises(UpstreamError) as e:
            await client.request(origin, req(origin, path="/stall"), quick, False)
        assert e.value.kind == "first_byte_timeout"
        with pytest.raises(UpstreamError) as e:
            await client.request(origin, req(origin, path="/stall"), Timeouts(1.0, 2.0, 0.3), False)
        assert e.value.kind == "total_timeout"
        with pytest.raises(UpstreamError) as e:
            await client.request(origin, req(origin, path="/garbage"), quick, False)
        assert e.value.kind == "protocol"
        with pytest.raises(UpstreamError) as e:
            await client.request(origin, req(origin, path="/midstream"), quick, False)
        assert e.value.kind == "disconnected"
        resp = await client.request(origin, req(origin, path="/silent"), quick, True)
        assert await resp.readany() == b"abc"
        with pytest.raises(UpstreamError) as e:
            await resp.readany()
        assert e.value.kind == "idle_timeout"
    with pytest.raises(UpstreamError) as e:
        await client.request(Origin("http", "127.0.0.1", 9), req(origin), quick, False)
    assert e.value.kind == "connect_failed"
    assert client.pool(origin).open == 0  # every failed connection was dropped


async def test_pool_limit_queues_requests(client: Client) -> None:
    active = 0
    peak = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal active, peak
        while True:
            try:
                await read_request(r)
            except asyncio.IncompleteReadError:
                return
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            await w.drain()

    server, origin = await raw_server(handler)
    async with server:
        results = await asyncio.gather(
            *(client.request(origin, req(origin), T, False) for _ in range(20))
        )
    assert all(r.status == 200 for r in results)
    assert peak <= 4  # Client(limit=4)


async def test_backpressure_pauses_the_upstream(client: Client) -> None:
    """A reader that does not read stops the upstream from sending (bounded memory)."""
    sent = 0
    done = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        try:
            for _ in range(400):  # 25 MiB if nobody pushed back
                w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await asyncio.wait_for(w.drain(), 1.0)
                sent += len(piece)
        except (TimeoutError, ConnectionError):
            pass
        done.set()

    server, origin = await raw_server(handler)
    async with server:
        resp = await client.request(origin, req(origin), T, True)
        await asyncio.wait_for(done.wait(), 10)
        assert sent < 16 * 1024 * 1024  # the socket was paused long before 25 MiB
        resp.close()


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_with_verified_certificate(self_signed: tuple[Path, Path]) -> None:
    """TLS upstreams: the certificate is verified against the trust store given."""
    cert, key = self_signed
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecure")
        await w.drain()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        trusting = ssl.create_default_context(cafile=str(cert))
        c = Client(ssl_context=trusting)
        origin = Origin("https", "localhost", port)
        resp = await c.request(origin, req(origin), T, False)
        assert (resp.status, resp.body) == (200, b"secure")
        await c.close()
        strict = Client()  # the system trust store does not know this certificate
        with pytest.raises(UpstreamError) as e:
            await strict.request(origin, req(origin), T, False)
        assert e.value.kind == "connect_failed"
        await strict.close()
