"""The floor of the stack: the smallest correct Granian + aiohttp pass-through relay.

It forwards each request's method, path, body and content-type/authorization headers to
``RELAY_UPSTREAM`` (a base URL, default ``http://127.0.0.1:9100``) and relays the status,
content-type and body back; event streams are relayed piece by piece with ``iter_any()``.
No validation, no features: whatever fastgw costs above this is the price of its features.

    RELAY_UPSTREAM=http://127.0.0.1:9100 \\
        granian --interface asgi --loop uvloop bench.minimal_relay:app
"""

from __future__ import annotations

import os

import aiohttp

from fastgw.asgi import Receive, Scope, Send

UPSTREAM = os.environ.get("RELAY_UPSTREAM", "http://127.0.0.1:9100").rstrip("/")
_FORWARD = (b"content-type", b"authorization")

_session: aiohttp.ClientSession | None = None


async def _lifespan(receive: Receive, send: Send) -> None:
    global _session
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
            _session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    assert _session is not None, "the ASGI server must run the lifespan protocol"
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in _FORWARD}
    url = UPSTREAM + scope["path"]
    async with _session.request(scope["method"], url, data=body, headers=headers) as resp:
        content_type = resp.headers.get("content-type", "application/octet-stream").encode()
        if content_type.startswith(b"text/event-stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": resp.status,
                    "headers": [(b"content-type", content_type)],
                }
            )
            async for piece in resp.content.iter_any():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = await resp.read()
    await send(
        {
            "type": "http.response.start",
            "status": resp.status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
