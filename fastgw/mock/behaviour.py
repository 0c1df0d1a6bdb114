"""Transport-independent behaviour of the mock upstream.

:func:`plan_request` turns one HTTP request (method, path, headers, body) into a
:class:`Plan`: what to answer and how (status, headers, a complete body or a sequence of
stream frames, delays, a mid-stream drop or a reset). :func:`execute` carries a plan out
through a :class:`Sink`, the small interface that both the raw asyncio server
(``server.py``) and the ASGI app (``asgi.py``) implement. All the endpoint and
behaviour-control logic lives here, once.

Per-request controls come from an optional ``"mock"`` object in the JSON body (see
:class:`Controls`); server-wide defaults from :class:`MockOptions`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any, Protocol

import msgspec

from fastgw.mock import anthropic as _anthropic
from fastgw.mock import bedrock as _bedrock
from fastgw.mock import gemini as _gemini
from fastgw.mock import responses as r

__all__ = [
    "Controls",
    "Frame",
    "MockOptions",
    "MockState",
    "MockStats",
    "Plan",
    "Sink",
    "execute",
    "not_found",
    "plan_request",
]

Headers = list[tuple[bytes, bytes]]
# One stream step: seconds to wait, then the bytes to send (None: drop the connection).
Frame = tuple[float, bytes | None]

_JSON = b"application/json"
_EVENT_STREAM = b"text/event-stream; charset=utf-8"
_LOG_SIZE = 100


class MockOptions(msgspec.Struct, kw_only=True):
    """Server-wide defaults (CLI options / ``start_server`` keyword arguments)."""

    chunks: int = 8
    interval_ms: float = 0.0
    latency_ms: float = 0.0
    dimensions: int = 16
    models: tuple[str, ...] = ("mock-model", "gpt-4o-mini", "text-embedding-3-small")


class Controls(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The per-request ``"mock"`` body field. Unset fields take the server defaults."""

    chunks: int | None = None  # number of content chunks of a stream
    interval_ms: float | None = None  # delay between content chunks
    latency_ms: float | None = None  # delay before the response headers
    status: int | None = None  # answer with this status (>= 400: an OpenAI error body)
    retry_after: int = 1  # ``retry-after`` seconds sent with a 429/503 status
    drop_after: int | None = None  # stream: close the connection after this many chunks
    stall_after: int | None = None  # stream: pause after this many content chunks ...
    stall_ms: float = 0.0  # ... for this long
    head_stall_ms: float = 0.0  # stream: pause after the headers, before the first event
    reset: bool = False  # close the connection without any response
    event_bytes: int | None = None  # pad each content delta to about this many bytes
    text: str | None = None  # the reply text (instead of the echo greeting)


class _Message(msgspec.Struct):
    role: str = ""
    content: Any = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _Function(msgspec.Struct):
    name: str = ""


class _ToolDef(msgspec.Struct):
    function: _Function | None = None


class _Request(msgspec.Struct, kw_only=True):
    """The few request fields the mock looks at; all others are skipped at decode."""

    model: str | None = None
    messages: list[_Message] | None = None
    prompt: Any = None
    input: Any = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    encoding_format: str | None = None
    dimensions: int | None = None
    mock: Controls | None = None
    tools: list[_ToolDef] | None = None


#: The arguments of every tool call the OpenAI-shaped mock makes (``call <name>``).
TOOL_ARGUMENTS = '{"city": "Paris"}'


def _tool_to_call(req: _Request, user_text: str) -> str | None:
    """The tool the last user text asks for with ``call <name>``, if the request offers it."""
    for tool in req.tools or ():
        if tool.function and tool.function.name and f"call {tool.function.name}" in user_text:
            return tool.function.name
    return None


_decode_request = msgspec.json.Decoder(_Request).decode
_encode = msgspec.json.Encoder().encode


class MockStats(msgspec.Struct, kw_only=True):
    """Counters served at ``GET /_mock/stats``.

    ``streams_aborted`` counts streams whose client closed the connection before the end;
    ``streams_dropped`` counts streams the mock cut on purpose (``drop_after``).
    """

    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_aborted: int = 0
    streams_dropped: int = 0
    resets: int = 0


class _LogEntry(msgspec.Struct):
    method: str
    path: str
    query: str
    headers: Headers
    body: bytes


class MockState:
    """Options, counters and the recent-request log of one mock instance."""

    __slots__ = ("_ids", "_prefix", "faults", "log", "options", "stats")

    def __init__(self, options: MockOptions | None = None) -> None:
        self.options = options if options is not None else MockOptions()
        self.stats = MockStats()
        #: Faults on command (``POST /_mock/faults``): model → [controls, calls left or -1].
        self.faults: dict[str, list[Any]] = {}
        self.log: deque[_LogEntry] = deque(maxlen=_LOG_SIZE)
        self._ids = itertools.count(1)
        self._prefix = os.urandom(5).hex()

    def fault_for(self, model: str) -> Controls | None:
        """The controls a fault set for ``model`` imposes on this request, if any."""
        entry = self.faults.get(model)
        if entry is None:
            return None
        controls, left = entry
        if left > 0:
            entry[1] = left - 1
            if left == 1:
                del self.faults[model]
        return controls  # type: ignore[no-any-return]

    def new_id(self) -> str:
        """A unique suffix for response ids (``chatcmpl-…``, ``cmpl-…``, ``x-request-id``)."""
        return f"{self._prefix}{next(self._ids):015d}"

    def requests_json(self) -> bytes:
        out = []
        for e in self.log:
            headers: dict[str, str] = {}
            for name, value in e.headers:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            try:
                body: Any = msgspec.json.decode(e.body) if e.body else None
            except msgspec.DecodeError:
                body = None
            out.append(
                {
                    "method": e.method,
                    "path": e.path,
                    "query": e.query,
                    "headers": headers,
                    "body": body,
                }
            )
        return _encode(out)


class Plan:
    """What to answer to one request; carried out by :func:`execute`.

    ``frames is None``: a complete body (``body``). Otherwise a stream of frames sent with
    chunked encoding. ``immediate`` plans (no delay, no stream, no reset) can be written
    synchronously by a transport without scheduling a coroutine.
    """

    __slots__ = ("body", "frames", "headers", "latency", "reset", "status")

    def __init__(
        self,
        status: int,
        headers: Headers,
        body: bytes = b"",
        *,
        frames: Iterator[Frame] | None = None,
        latency: float = 0.0,
        reset: bool = False,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.frames = frames
        self.latency = latency
        self.reset = reset

    @property
    def immediate(self) -> bool:
        return self.frames is None and self.latency <= 0.0 and not self.reset


def _json(status: int, body: bytes, request_id: str | None = None) -> Plan:
    headers: Headers = [(b"content-type", _JSON)]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    return Plan(status, headers, body)


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> Plan:
    return _json(status, r.error_body(message, "invalid_request_error", param, code))


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def plan_request(
    state: MockState, method: str, path: str, query: str, headers: Headers, body: bytes
) -> Plan:
    """Route one request (``path`` relative to the mock's mount point) and plan the answer."""
    if path.startswith("/_mock/"):
        return _control(state, method, path, body)
    state.stats.requests += 1
    state.log.append(_LogEntry(method, path, query, headers, body))
    if path.startswith(_gemini.PREFIX):  # Google AI Gemini API (fastgw/mock/gemini.py)
        return _gemini.plan(state, method, path, query, body)
    if path.startswith(_bedrock.PREFIX):  # Amazon Bedrock Converse (fastgw/mock/bedrock.py)
        return _bedrock.plan(state, method, path, headers, body)
    if path == "/v1/messages" and method == "POST":  # Anthropic (fastgw/mock/anthropic.py)
        return _anthropic.plan_messages(state, headers, body)
    if path == "/v1/messages/count_tokens" and method == "POST":
        return _anthropic.plan_count_tokens(state, headers, body)
    endpoint = _ENDPOINTS.get(path)
    if endpoint is None or endpoint[0] != method:
        return not_found(method, path)
    if method == "GET":
        return _json(200, r.models_list(state.options.models, created=1_700_000_000))
    try:
        req = _decode_request(body)
    except msgspec.ValidationError as exc:
        return _error(400, f"Invalid request body: {exc}", None)
    except msgspec.DecodeError:
        return _error(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
        )
    if not req.model:
        return _error(400, "you must provide a model parameter", "model")
    if req.mock is None and state.faults:
        req.mock = state.fault_for(req.model)
    assert endpoint[1] is not None
    try:
        return endpoint[1](state, req)
    except _BadRequest as exc:
        return _error(400, exc.message, exc.param, exc.code)


def not_found(method: str, path: str) -> Plan:
    """OpenAI's answer to an unknown route."""
    return _error(404, f"Invalid URL ({method} {path})")


class _Fault(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /_mock/faults``: requests for ``model`` behave as if they carried ``mock``,
    for the next ``count`` requests (omitted: until ``DELETE /_mock/faults``)."""

    model: str
    mock: Controls
    count: int | None = None


def _control(state: MockState, method: str, path: str, body: bytes = b"") -> Plan:
    if path == "/_mock/faults":
        if method == "POST":
            try:
                f = msgspec.json.decode(body, type=_Fault)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                return _error(400, f"Invalid fault: {exc}")
            state.faults[f.model] = [f.mock, -1 if f.count is None else max(1, f.count)]
            return _json(200, b'{"ok":true}')
        if method == "DELETE":
            state.faults.clear()
            return _json(200, b'{"ok":true}')
    if path == "/_mock/requests":
        if method == "GET":
            return _json(200, state.requests_json())
        if method == "DELETE":
            state.log.clear()
            return _json(200, b'{"ok":true}')
    elif path == "/_mock/stats":
        if method == "GET":
            return _json(200, _encode(state.stats))
        if method == "DELETE":
            state.stats = MockStats()
            return _json(200, b'{"ok":true}')
    return not_found(method, path)


class _Settings:
    """Controls merged with the server defaults, in seconds where a delay."""

    __slots__ = ("chunks", "controls", "interval", "latency")

    def __init__(self, state: MockState, controls: Controls | None) -> None:
        c = controls if controls is not None else Controls()
        o = state.options
        self.controls = c
        self.chunks = max(1, c.chunks if c.chunks is not None else o.chunks)
        self.interval = (c.interval_ms if c.interval_ms is not None else o.interval_ms) / 1000
        self.latency = (c.latency_ms if c.latency_ms is not None else o.latency_ms) / 1000


def _early(s: _Settings, stats: MockStats) -> Plan | None:
    """The answer forced by the ``status`` / ``reset`` controls, if any."""
    c = s.controls
    if c.reset:
        stats.resets += 1
        return Plan(0, [], latency=s.latency, reset=True)
    if c.status is not None and c.status >= 400:
        headers: Headers = [(b"content-type", _JSON)]
        if c.status in (429, 503):
            headers.append((b"retry-after", str(c.retry_after).encode()))
        if c.status == 429:
            headers += [
                (b"x-ratelimit-limit-requests", b"60"),
                (b"x-ratelimit-remaining-requests", b"0"),
                (b"x-ratelimit-reset-requests", f"{c.retry_after}s".encode()),
            ]
        return Plan(c.status, headers, r.error_for_status(c.status), latency=s.latency)
    return None


def _completion_text(s: _Settings, user_text: str, limit: int | None) -> tuple[str, str]:
    """(reply text, finish_reason) honouring ``mock.text`` and a max-tokens limit."""
    text = s.controls.text if s.controls.text is not None else r.reply_text(user_text)
    if limit is not None and limit >= 0 and r.estimate_tokens(text) > limit:
        return " ".join(text.split()[:limit]), "length"
    return text, "stop"


def _stream_frames(
    s: _Settings,
    text: str,
    first: bytes | None,
    piece_event: Any,
    end_events: Any,
) -> Iterator[Frame]:
    """Frames of a stream: optional ``first`` event, content events, then ``end_events(text)``.

    ``piece_event(piece) -> bytes`` builds a content event; ``end_events(full_text)`` the
    events after the content (finish chunk, usage chunk, ``[DONE]``).
    """
    c = s.controls
    pieces = r.split_text(text, s.chunks)
    if c.event_bytes is not None and c.event_bytes > 0:
        pieces = [p + "x" * (c.event_bytes - len(p.encode())) for p in pieces]
    head_stall = c.head_stall_ms / 1000
    if first is not None:
        yield head_stall, first
        head_stall = 0.0
    stall = c.stall_ms / 1000 if c.stall_after is not None else 0.0
    for i in range(len(pieces) + 1):
        delay = s.interval if 0 < i < len(pieces) else 0.0
        if i == 0:
            delay += head_stall
        if i == c.stall_after:
            delay += stall
        if i == c.drop_after:
            yield delay, None
            return
        if i == len(pieces):
            for event in end_events("".join(pieces)):
                yield delay, event
                delay = 0.0
            return
        yield delay, piece_event(pieces[i])


def _stream_plan(state: MockState, s: _Settings, request_id: str, frames: Iterator[Frame]) -> Plan:
    headers: Headers = [
        (b"content-type", _EVENT_STREAM),
        (b"cache-control", b"no-cache"),
        (b"x-request-id", request_id.encode()),
    ]
    return Plan(200, headers, frames=frames, latency=s.latency)


def _chat(state: MockState, req: _Request) -> Plan:
    if req.messages is None:
        raise _BadRequest(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    s = _Settings(state, req.mock)
    early = _early(s, state.stats)
    if early is not None:
        return early
    model = req.model or ""
    user_text = ""
    for m in reversed(req.messages):
        if m.role == "user":
            user_text = r.content_text(m.content)
            break
    prompt_tokens = sum(r.estimate_tokens(r.content_text(m.content)) for m in req.messages)
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    text, finish = _completion_text(s, user_text, limit)
    rid = state.new_id()
    cid = "chatcmpl-" + rid
    created = int(time.time())
    tool = _tool_to_call(req, user_text)
    call_id = "call_" + rid
    if tool is not None:  # a tool call answer: the arguments stream as the "text"
        text, finish = TOOL_ARGUMENTS, "tool_calls"
    if not req.stream:
        calls = None
        if tool is not None:
            fn = {"name": tool, "arguments": TOOL_ARGUMENTS}
            calls = [{"id": call_id, "type": "function", "function": fn}]
        body = r.chat_completion(
            id=cid,
            created=created,
            model=model,
            content=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=r.estimate_tokens(text),
            finish_reason=finish,
            tool_calls=calls,
        )
        plan = _json(s.controls.status or 200, body, "req_" + rid)
        plan.latency = s.latency
        return plan
    inc = bool(req.stream_options and req.stream_options.include_usage)

    def piece(p: str) -> bytes:
        if tool is not None:
            delta: dict[str, Any] = {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}
        else:
            delta = {"content": p}
        return r.chat_chunk(id=cid, created=created, model=model, delta=delta, include_usage=inc)

    def end(full: str) -> Iterator[bytes]:
        yield r.chat_chunk(
            id=cid,
            created=created,
            model=model,
            delta={},
            finish_reason=finish,
            include_usage=inc,
        )
        if inc:
            yield r.usage_chunk(
                id=cid,
                created=created,
                model=model,
                object="chat.completion.chunk",
                prompt_tokens=prompt_tokens,
                completion_tokens=r.estimate_tokens(full),
            )
        yield r.DONE

    first = r.chat_chunk(
        id=cid,
        created=created,
        model=model,
        delta={"role": "assistant", "content": None if tool else ""},
        include_usage=inc,
    )
    if tool is not None:
        head = {"index": 0, "id": call_id, "type": "function"}
        head["function"] = {"name": tool, "arguments": ""}
        first += r.chat_chunk(
            id=cid, created=created, model=model, delta={"tool_calls": [head]}, include_usage=inc
        )
    return _stream_plan(state, s, "req_" + rid, _stream_frames(s, text, first, piece, end))


def _prompt_texts(prompt: Any) -> list[str]:
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if isinstance(prompt, list):  # token ids, or lists of them: one word per token
        flat = [t for p in prompt for t in (p if isinstance(p, list) else [p])]
        return [" ".join(str(t) for t in flat)]
    raise _BadRequest("'prompt' must be a string or an array.", "prompt")


def _completions(state: MockState, req: _Request) -> Plan:
    prompts = _prompt_texts(req.prompt)
    s = _Settings(state, req.mock)
    early = _early(s, state.stats)
    if early is not None:
        return early
    model = req.model or ""
    prompt_tokens = sum(r.estimate_tokens(p) for p in prompts)
    text, finish = _completion_text(s, prompts[0] if prompts else "", req.max_tokens)
    rid = state.new_id()
    cid = "cmpl-" + rid
    created = int(time.time())
    if not req.stream:
        body = r.text_completion(
            id=cid,
            created=created,
            model=model,
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=r.estimate_tokens(text),
            finish_reason=finish,
        )
        plan = _json(s.controls.status or 200, body, "req_" + rid)
        plan.latency = s.latency
        return plan
    inc = bool(req.stream_options and req.stream_options.include_usage)

    def piece(p: str) -> bytes:
        return r.text_completion_chunk(
            id=cid, created=created, model=model, text=p, include_usage=inc
        )

    def end(full: str) -> Iterator[bytes]:
        yield r.text_completion_chunk(
            id=cid,
            created=created,
            model=model,
            text="",
            finish_reason=finish,
            include_usage=inc,
        )
        if inc:
            yield r.usage_chunk(
                id=cid,
                created=created,
                model=model,
                object="text_completion",
                prompt_tokens=prompt_tokens,
                completion_tokens=r.estimate_tokens(full),
            )
        yield r.DONE

    return _stream_plan(state, s, "req_" + rid, _stream_frames(s, text, None, piece, end))


def _embeddings(state: MockState, req: _Request) -> Plan:
    inputs = req.input
    if inputs is None:
        raise _BadRequest(
            "Missing required parameter: 'input'.", "input", "missing_required_parameter"
        )
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, list) and inputs and all(isinstance(i, str) for i in inputs):
        texts = list(inputs)
    elif isinstance(inputs, list) and inputs:  # token ids, or lists of them
        texts = [" ".join(str(t) for t in (i if isinstance(i, list) else [i])) for i in inputs]
        if all(not isinstance(i, list) for i in inputs):
            texts = [" ".join(texts)]
    else:
        raise _BadRequest("'input' must be a non-empty string or array.", "input")
    fmt = req.encoding_format or "float"
    if fmt not in ("float", "base64"):
        raise _BadRequest(
            f"'{fmt}' is not one of ['float', 'base64'] - 'encoding_format'", "encoding_format"
        )
    s = _Settings(state, req.mock)
    early = _early(s, state.stats)
    if early is not None:
        return early
    dims = req.dimensions if req.dimensions is not None else state.options.dimensions
    body = r.embeddings(model=req.model or "", inputs=texts, dimensions=dims, encoding_format=fmt)
    plan = _json(s.controls.status or 200, body, "req_" + state.new_id())
    plan.latency = s.latency
    return plan


_ENDPOINTS: dict[str, tuple[str, Callable[[MockState, _Request], Plan] | None]] = {
    "/v1/chat/completions": ("POST", _chat),
    "/v1/completions": ("POST", _completions),
    "/v1/embeddings": ("POST", _embeddings),
    "/v1/models": ("GET", None),
}


def reason(status: int) -> bytes:
    """The HTTP reason phrase of ``status``."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


class Sink(Protocol):
    """How a transport carries out a plan (implemented by server.py and asgi.py)."""

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """Send a complete response with a ``content-length``."""

    async def start_stream(self, status: int, headers: Headers) -> None:
        """Send the status line and headers of a chunked response."""

    async def send(self, data: bytes) -> None:
        """Send a piece of the stream body; raises ``ConnectionError`` once the peer left."""

    async def end_stream(self) -> None:
        """Finish the chunked body cleanly."""

    async def drop(self) -> None:
        """Close the connection mid-body, after what was sent so far is flushed."""

    async def reset(self) -> None:
        """Close the connection at once, without any response."""


async def execute(plan: Plan, sink: Sink, stats: MockStats) -> None:
    """Carry ``plan`` out through ``sink``, keeping the stream counters of ``stats``.

    A stream counts as aborted when the task is cancelled (the transport saw the peer
    close) or the sink reports the peer gone; both surface here at once, even mid-sleep.
    """
    if plan.latency > 0:
        await asyncio.sleep(plan.latency)
    if plan.reset:
        await sink.reset()
        return
    if plan.frames is None:
        await sink.respond(plan.status, plan.headers, plan.body)
        return
    await sink.start_stream(plan.status, plan.headers)
    stats.streams_started += 1
    try:
        pending: list[bytes] = []
        for delay, data in plan.frames:
            if delay > 0:
                if pending:
                    await sink.send(b"".join(pending))
                    pending.clear()
                await asyncio.sleep(delay)
            if data is None:
                if pending:
                    await sink.send(b"".join(pending))
                stats.streams_dropped += 1
                await sink.drop()
                return
            pending.append(data)
        if pending:
            await sink.send(b"".join(pending))
        await sink.end_stream()
    except (asyncio.CancelledError, ConnectionError):
        stats.streams_aborted += 1
        raise
    stats.streams_completed += 1
