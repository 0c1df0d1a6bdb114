"""The mock upstream: OpenAI wire shapes (checked with the openai SDK's own types), the
behaviour controls, and the raw server / ASGI app over real loopback sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from openai.types import Completion, CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fastgw.mock import responses as r
from fastgw.mock.asgi import make_asgi_app
from fastgw.mock.behaviour import Frame, MockState, Plan, plan_request
from fastgw.mock.server import MockServer, start_server

CHAT = "/v1/chat/completions"
JSON_HEADERS = [(b"content-type", b"application/json")]


def plan(path: str, body: dict[str, Any] | bytes, state: MockState | None = None) -> Plan:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return plan_request(state or MockState(), "POST", path, "", JSON_HEADERS, raw)


def frames(p: Plan) -> list[Frame]:
    assert p.frames is not None
    return list(p.frames)


def events(p: Plan) -> list[bytes]:
    """The stream's SSE data payloads, in order (a drop marker ends the list early)."""
    out = []
    for _, data in frames(p):
        if data is None:
            break
        for block in data.split(b"\n\n"):
            if block:
                assert block.startswith(b"data: ")
                out.append(block[len(b"data: ") :])
    return out


def chat_body(text: str = "hi there", **extra: Any) -> dict[str, Any]:
    return {"model": "mock-model", "messages": [{"role": "user", "content": text}], **extra}


# -- pure builders ----------------------------------------------------------------------------


def test_estimate_and_reply_are_deterministic() -> None:
    assert r.estimate_tokens("one two  three\nfour") == 4
    assert r.reply_text("hi") == "Hello from the fastgw mock upstream. You said: hi"
    assert r.reply_text("x" * 500) == r.REPLY_PREFIX + "x" * r.USER_TEXT_LIMIT
    assert r.content_text([{"type": "text", "text": "a"}, {"type": "image_url"}]) == "a"


@pytest.mark.parametrize(("text", "n"), [("abcdefghij", 3), ("ab", 4), ("", 1), ("abc", 3)])
def test_split_text_is_exact(text: str, n: int) -> None:
    pieces = r.split_text(text, n)
    assert len(pieces) == n
    assert "".join(pieces) == text
    assert max(map(len, pieces)) - min(map(len, pieces)) <= 1


def test_chat_completion_validates_as_openai_type() -> None:
    raw = r.chat_completion(
        id="chatcmpl-1", created=1, model="m", content="hi", prompt_tokens=3, completion_tokens=1
    )
    obj = ChatCompletion.model_validate_json(raw)
    assert obj.object == "chat.completion"
    assert obj.choices[0].message.content == "hi"
    assert obj.choices[0].finish_reason == "stop"
    assert obj.usage is not None and obj.usage.total_tokens == 4
    assert obj.usage.prompt_tokens_details is not None
    assert obj.usage.prompt_tokens_details.cached_tokens == 0


def test_text_completion_and_chunks_validate() -> None:
    obj = Completion.model_validate_json(
        r.text_completion(
            id="cmpl-1", created=1, model="m", text="t", prompt_tokens=1, completion_tokens=1
        )
    )
    assert obj.object == "text_completion" and obj.choices[0].text == "t"
    # OpenAI streams legacy chunks with "finish_reason": null, which the SDK's Completion
    # type (used without validation for streams) does not admit: validate the last chunk.
    chunk = r.text_completion_chunk(
        id="cmpl-1", created=1, model="m", text="", finish_reason="stop"
    )
    assert Completion.model_validate_json(chunk[6:-2]).choices[0].finish_reason == "stop"
    chunk = r.chat_chunk(id="c", created=1, model="m", delta={"content": "x"}, include_usage=True)
    assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n")
    assert json.loads(chunk[6:])["usage"] is None
    ChatCompletionChunk.model_validate_json(chunk[6:-2])


def test_embeddings_float_and_base64_agree() -> None:
    floats = json.loads(
        r.embeddings(model="e", inputs=["a", "b c"], dimensions=8, encoding_format="float")
    )
    CreateEmbeddingResponse.model_validate(floats)
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    b64 = json.loads(
        r.embeddings(model="e", inputs=["a", "b c"], dimensions=8, encoding_format="base64")
    )
    for f, b in zip(floats["data"], b64["data"], strict=True):
        assert list(struct.unpack("<8f", base64.b64decode(b["embedding"]))) == f["embedding"]
    vec = floats["data"][0]["embedding"]
    assert abs(sum(v * v for v in vec) - 1.0) < 1e-5
    assert vec == r.embedding_vector("a", 8) and vec != floats["data"][1]["embedding"]


def test_models_and_error_shapes() -> None:
    listing = json.loads(r.models_list(["a", "b"], created=5))
    assert listing["object"] == "list"
    assert [Model.model_validate(m).id for m in listing["data"]] == ["a", "b"]
    err = json.loads(r.error_for_status(429))["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == "rate_limit_exceeded"
    assert json.loads(r.error_for_status(599))["error"]["type"] == "server_error"


# -- behaviour (plans, no I/O) ----------------------------------------------------------------


def test_chat_non_stream_plan() -> None:
    p = plan(CHAT, chat_body("hello big world"))
    assert p.immediate and p.status == 200
    obj = ChatCompletion.model_validate_json(p.body)
    assert obj.id.startswith("chatcmpl-")
    assert obj.model == "mock-model"
    text = "Hello from the fastgw mock upstream. You said: hello big world"
    assert obj.choices[0].message.content == text
    assert obj.usage is not None
    assert (obj.usage.prompt_tokens, obj.usage.completion_tokens) == (3, r.estimate_tokens(text))


def test_chat_stream_shape_matches_openai() -> None:
    p = plan(CHAT, chat_body(stream=True, mock={"chunks": 4}))
    assert not p.immediate
    assert dict(p.headers)[b"content-type"].startswith(b"text/event-stream")
    ev = events(p)
    assert ev[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(e) for e in ev[:-1]]
    assert len(chunks) == 1 + 4 + 1
    assert json.loads(ev[0])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "usage" not in json.loads(ev[0])
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == r.reply_text("hi there")
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 5 + ["stop"]
    assert json.loads(ev[-2])["choices"][0]["delta"] == {}
    assert len({c.id for c in chunks}) == 1


def test_chat_stream_include_usage() -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True}, mock={"chunks": 2})
    ev = events(plan(CHAT, body))
    decoded = [json.loads(e) for e in ev[:-1]]
    assert all("usage" in d for d in decoded)
    assert all(d["usage"] is None for d in decoded[:-1])
    last = decoded[-1]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 2
    assert last["usage"]["completion_tokens"] == r.estimate_tokens(r.reply_text("hi there"))
    ChatCompletionChunk.model_validate(last)


def test_stream_timing_drop_stall_and_event_bytes() -> None:
    body = chat_body(stream=True, mock={"chunks": 3, "interval_ms": 20, "latency_ms": 5})
    p = plan(CHAT, body)
    assert p.latency == pytest.approx(0.005)
    assert [d for d, _ in frames(p)] == [0, 0, 0.02, 0.02, 0, 0]
    dropped = frames(plan(CHAT, chat_body(stream=True, mock={"chunks": 3, "drop_after": 2})))
    assert dropped[-1] == (0.0, None) and len(dropped) == 1 + 2 + 1
    stalled = frames(
        plan(CHAT, chat_body(stream=True, mock={"chunks": 3, "stall_after": 1, "stall_ms": 300}))
    )
    assert [d for d, _ in stalled] == [0, 0, 0.3, 0, 0, 0]
    big = events(plan(CHAT, chat_body(stream=True, mock={"chunks": 1, "event_bytes": 1 << 20})))
    content = json.loads(big[1])["choices"][0]["delta"]["content"]
    assert len(content.encode()) == 1 << 20


def test_text_and_max_tokens_controls() -> None:
    obj = json.loads(plan(CHAT, chat_body(mock={"text": "exact reply"})).body)
    assert obj["choices"][0]["message"]["content"] == "exact reply"
    obj = json.loads(plan(CHAT, chat_body(max_tokens=3)).body)
    assert obj["choices"][0]["message"]["content"] == "Hello from the"
    assert obj["choices"][0]["finish_reason"] == "length"
    assert obj["usage"]["completion_tokens"] == 3


def test_legacy_completions_stream() -> None:
    body = {"model": "m", "prompt": "abc", "stream": True, "mock": {"chunks": 2}}
    body["stream_options"] = {"include_usage": True}
    ev = events(plan("/v1/completions", body))
    assert ev[-1] == b"[DONE]"
    decoded = [json.loads(e) for e in ev[:-1]]
    assert [d["object"] for d in decoded] == ["text_completion"] * 4
    assert "".join(d["choices"][0]["text"] for d in decoded[:3]) == r.reply_text("abc")
    assert decoded[2]["choices"][0]["finish_reason"] == "stop"
    assert decoded[3]["choices"] == [] and decoded[3]["usage"]["prompt_tokens"] == 1
    assert decoded[0]["choices"][0]["finish_reason"] is None
    for d in decoded[2:]:
        Completion.model_validate(d)


def test_embeddings_plan() -> None:
    p = plan("/v1/embeddings", {"model": "e", "input": "x y", "encoding_format": "base64"})
    obj = json.loads(p.body)
    packed = base64.b64decode(obj["data"][0]["embedding"])
    assert len(packed) == 16 * 4
    # The SDK decodes base64 before validating: do the same.
    obj["data"][0]["embedding"] = list(struct.unpack("<16f", packed))
    CreateEmbeddingResponse.model_validate(obj)
    bad = plan("/v1/embeddings", {"model": "e", "input": []})
    assert bad.status == 400


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        (CHAT, b"{not json", 400, None),
        (CHAT, b"[1, 2]", 400, None),
        (CHAT, {"messages": []}, 400, "model"),
        (CHAT, {"model": "m"}, 400, "messages"),
        (CHAT, chat_body(mock={"bogus": 1}), 400, None),
        ("/v1/nope", {"model": "m"}, 404, None),
    ],
)
def test_bad_requests_get_openai_errors(
    path: str, body: dict[str, Any] | bytes, status: int, param: str | None
) -> None:
    p = plan(path, body)
    assert p.status == status
    err = json.loads(p.body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == param


def test_status_control_and_request_log() -> None:
    state = MockState()
    p = plan(CHAT, chat_body(mock={"status": 429, "retry_after": 7}), state)
    assert p.status == 429 and dict(p.headers)[b"retry-after"] == b"7"
    assert json.loads(p.body)["error"]["code"] == "rate_limit_exceeded"
    assert plan(CHAT, chat_body(mock={"reset": True}), state).reset
    log = json.loads(plan_request(state, "GET", "/_mock/requests", "", [], b"").body)
    assert len(log) == 2
    assert log[0]["method"] == "POST" and log[0]["path"] == CHAT
    assert log[0]["headers"] == {"content-type": "application/json"}
    assert log[0]["body"]["mock"]["status"] == 429
    stats = json.loads(plan_request(state, "GET", "/_mock/stats", "", [], b"").body)
    assert stats["requests"] == 2 and stats["resets"] == 1
    plan_request(state, "DELETE", "/_mock/requests", "", [], b"")
    assert len(state.log) == 0


# -- the raw server over loopback -------------------------------------------------------------


@pytest.fixture
async def mock_server() -> AsyncIterator[MockServer]:
    server = await start_server("127.0.0.1", 0, chunks=4)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


async def read_sse(resp: aiohttp.ClientResponse) -> list[bytes]:
    buf = b""
    async for data in resp.content.iter_any():
        buf += data
    return [b[len(b"data: ") :] for b in buf.split(b"\n\n") if b]


async def test_server_json_stream_keepalive(mock_server: MockServer) -> None:
    url = f"http://127.0.0.1:{mock_server.port}"
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(url, connector=connector) as s:
        for _ in range(3):  # one keep-alive connection for all of them
            async with s.post(CHAT, json=chat_body()) as resp:
                assert resp.status == 200
                assert resp.headers["content-type"] == "application/json"
                ChatCompletion.model_validate_json(await resp.read())
        async with s.post(CHAT, json=chat_body(stream=True)) as resp:
            assert resp.headers["transfer-encoding"] == "chunked"
            ev = await read_sse(resp)
            assert ev[-1] == b"[DONE]" and len(ev) == 1 + 4 + 1 + 1
        async with s.get("/v1/models") as resp:
            assert (await resp.json())["data"][0]["id"] == "mock-model"
        async with s.post(CHAT, data=b"{oops") as resp:
            assert resp.status == 400
            assert "error" in await resp.json()
        async with s.post(CHAT, json=chat_body(mock={"status": 429})) as resp:
            assert resp.status == 429 and resp.headers["retry-after"] == "1"

        async def chunked_body() -> AsyncIterator[bytes]:
            yield b'{"model": "m", "messages": '
            yield b'[{"role": "user", "content": "chunked"}]}'

        async with s.post(CHAT, data=chunked_body()) as resp:
            obj = await resp.json()
            assert obj["choices"][0]["message"]["content"].endswith("chunked")
    assert mock_server.state.stats.streams_completed == 1


async def test_server_counts_client_abort_promptly(mock_server: MockServer) -> None:
    url = f"http://127.0.0.1:{mock_server.port}{CHAT}"
    body = chat_body(stream=True, mock={"chunks": 50, "interval_ms": 2000})
    async with aiohttp.ClientSession() as s:
        resp = await s.post(url, json=body)
        await resp.content.readuntil(b"\n\n")  # the role chunk; the mock now sleeps 2 s
        resp.close()  # drops the connection
    stats = mock_server.state.stats
    await asyncio.sleep(0.1)  # the mock is mid-sleep: it must notice within 100 ms
    assert (stats.streams_started, stats.streams_aborted, stats.streams_completed) == (1, 1, 0)


async def test_server_drop_and_reset(mock_server: MockServer) -> None:
    url = f"http://127.0.0.1:{mock_server.port}{CHAT}"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=chat_body(stream=True, mock={"drop_after": 2})) as resp:
            got = b""
            with pytest.raises(aiohttp.ClientPayloadError):
                async for data in resp.content.iter_any():
                    got += data
            assert got.count(b"data: ") == 3 and b"[DONE]" not in got
        with pytest.raises(aiohttp.ClientError):
            await s.post(url, json=chat_body(mock={"reset": True}))
    assert mock_server.state.stats.streams_dropped == 1


# -- the ASGI app (called directly) -----------------------------------------------------------


async def call_asgi(
    app: Any, method: str, path: str, body: bytes = b"", *, hang: bool = True
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body[:5], "more_body": True}]
    messages.append({"type": "http.request", "body": body[5:], "more_body": False})
    forever = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        if hang:
            await forever.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers": []}
    await app(scope, receive, send)
    return sent


async def test_asgi_app_under_prefix() -> None:
    state = MockState()
    app = make_asgi_app("/_demo", state=state, chunks=2)
    sent = await call_asgi(app, "POST", "/_demo" + CHAT, json.dumps(chat_body()).encode())
    assert sent[0]["status"] == 200
    ChatCompletion.model_validate_json(sent[1]["body"])
    body = json.dumps(chat_body(stream=True, mock={"chunks": 2})).encode()
    sent = await call_asgi(app, "POST", "/_demo" + CHAT, body)
    stream = b"".join(m.get("body", b"") for m in sent[1:])
    assert stream.endswith(b"data: [DONE]\n\n") and stream.count(b"data: ") == 5
    assert sent[-1].get("more_body", False) is False
    sent = await call_asgi(app, "POST", CHAT, body)
    assert sent[0]["status"] == 404
    assert state.stats.streams_completed == 1


async def test_asgi_app_cancels_stream_on_disconnect() -> None:
    state = MockState()
    app = make_asgi_app(state=state)
    body = json.dumps(chat_body(stream=True, mock={"chunks": 9, "interval_ms": 5000})).encode()
    started = time.monotonic()
    await call_asgi(app, "POST", CHAT, body, hang=False)  # receive() says disconnected
    assert time.monotonic() - started < 1
    assert (state.stats.streams_started, state.stats.streams_aborted) == (1, 1)
