"""ASGI entry point: routes, lifespan (per-worker upstream pool and state), error boundary.

Granian imports ``fastgw.app:app``. Each worker builds its runtime on lifespan start-up from
the configuration named by ``FASTGW_CONFIG`` (or the embedded default) — see
``fastgw.config.resolve_config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from . import __version__
from ._core import sse
from .api import anthropic as anthropic_api
from .api.errors import GatewayError, bad_request, not_found
from .api.openai import Endpoint, ParsedRequest, parse_request
from .asgi import ASGIApp, Message, Receive, Scope, Send
from .config import GatewayConfig, resolve_config
from .providers.base import ByteStreamProvider, StreamTranslator
from .providers.registry import kinds
from .routing import Route, Router, Target
from .routing import errors as upstream_errors
from .upstream import Client, Response, UpstreamError

Headers = list[tuple[bytes, bytes]]
Handler = Callable[[Send, bytes], Awaitable[None]]
IngressHandler = Callable[[Scope, Receive, Send, bytes, bytes], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE = b"data: [DONE]\n\n"
#: Largest body relayed from a server that ignored ``stream: true`` and answered whole.
_MAX_UNSTREAMED = 64 * 1024 * 1024
#: Bytes past the body limit still read (and dropped) before answering 413.
_DRAIN_LIMIT = 8 * 1024 * 1024
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}
_encoder = msgspec.json.Encoder()
_raw_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


_RID_PREFIX = os.urandom(6).hex().encode()
_rid_counter = itertools.count(1)


def _new_rid_prefix() -> None:  # a forked worker must not repeat its parent's ids
    global _RID_PREFIX, _rid_counter
    _RID_PREFIX = os.urandom(6).hex().encode()
    _rid_counter = itertools.count(1)


os.register_at_fork(after_in_child=_new_rid_prefix)


def _request_id(value: bytes | None) -> bytes:
    """The client's x-request-id when it is sane (≤128 visible ASCII chars), else a new one:
    a random per-process prefix and a counter (unique, and cheaper than a UUID)."""
    if value and len(value) <= 128 and all(0x21 <= c <= 0x7E for c in value):
        return value
    return b"%s%010x" % (_RID_PREFIX, next(_rid_counter))


def _routing_headers(target: Target, attempts: int, fallbacks: int) -> Headers:
    """Which target served (``smart.targets[1]``); attempts made and fallbacks taken when
    there were any beyond the first attempt (absent: 1 and 0 — fewer headers per answer)."""
    if attempts == 1:
        return target.routing_headers  # prebuilt, never mutated
    return [
        *target.routing_headers,
        (b"x-fastgw-attempts", b"%d" % attempts),
        (b"x-fastgw-fallbacks", b"%d" % fallbacks),
    ]


class RelayFilter(Protocol):
    """Turns upstream stream bytes into client bytes, whole events only."""

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Translated:
    """A provider's StreamTranslator as a RelayFilter: SSE framing, then per-event translation;
    at the end, what the translator still owes (usage chunk, ``[DONE]``)."""

    __slots__ = ("_parser", "_tr")

    def __init__(self, translator: StreamTranslator, max_event: int) -> None:
        self._tr = translator
        self._parser = sse.SSEParser(max_event)

    def feed(self, chunk: bytes) -> bytes:
        tr = self._tr
        return b"".join([tr.feed(ev) for ev in self._parser.feed(chunk)])

    def flush(self) -> bytes:
        last = self._parser.flush()
        head = self._tr.feed(last) if last is not None else b""
        return head + self._tr.finish()


def _raw_fields(raw: bytes) -> dict[str, msgspec.Raw] | None:
    try:
        return _raw_fields_decoder.decode(raw)
    except msgspec.DecodeError:
        return None


def _with_max_tokens(body: bytes) -> bytes:
    """count_tokens takes a Messages request without ``max_tokens``: add one to validate."""
    fields = _raw_fields(body)
    if fields is None or "max_tokens" in fields:
        return body
    fields["max_tokens"] = msgspec.Raw(b"1")
    return _encoder.encode(fields)


class _Output:
    """What the client's API speaks. The base is OpenAI's: bodies and events as they are."""

    def body(self, data: bytes) -> bytes:
        return data

    def relay(self, inner: RelayFilter) -> RelayFilter:
        return inner

    def error_event(self, err: GatewayError) -> bytes:
        return err.sse_event() + _DONE


_OPENAI_OUT = _Output()


class _ChainedRelay:
    """A RelayFilter whose OpenAI-shaped output is translated again, event by event."""

    __slots__ = ("_inner", "_parser", "_tr")

    def __init__(
        self, inner: RelayFilter, translator: anthropic_api.OpenAIToAnthropicStream
    ) -> None:
        self._inner = inner
        self._tr = translator
        self._parser = sse.SSEParser()

    def _convert(self, data: bytes) -> bytes:
        if not data:
            return b""
        tr = self._tr
        return b"".join([tr.feed(ev) for ev in self._parser.feed(data)])

    def feed(self, chunk: bytes) -> bytes:
        return self._convert(self._inner.feed(chunk))

    def flush(self) -> bytes:
        out = self._convert(self._inner.flush())
        last = self._parser.flush()
        if last is not None:
            out += self._tr.feed(last)
        return out + self._tr.finish()


class _AnthropicOutput(_Output):
    """The Anthropic Messages API in front of an OpenAI-shaped answer."""

    __slots__ = ("model", "rid")

    def __init__(self, model: str, rid: bytes) -> None:
        self.model = model
        self.rid = rid

    def body(self, data: bytes) -> bytes:
        return anthropic_api.from_openai_response(data, self.model)

    def relay(self, inner: RelayFilter) -> RelayFilter:
        return _ChainedRelay(
            inner, anthropic_api.OpenAIToAnthropicStream(self.model, self.rid.decode())
        )

    def error_event(self, err: GatewayError) -> bytes:
        return anthropic_api.error_event(err)


class _DisconnectWatch:
    """Cancels ``task`` when the client disconnects. Granian's ``receive()`` returns a
    future, so a done-callback is enough (no task per stream); with other servers the
    coroutine is wrapped in a task."""

    __slots__ = ("_pending", "_receive", "_task", "fired")

    def __init__(self, receive: Receive, task: asyncio.Task[None]) -> None:
        self._receive = receive
        self._task = task
        self._pending: Any = None
        self.fired = False
        self._arm()

    def _arm(self) -> None:
        aw: Any = self._receive()
        if getattr(aw, "add_done_callback", None) is None:
            aw = asyncio.ensure_future(aw)
        self._pending = aw
        aw.add_done_callback(self._on_message)

    def _on_message(self, fut: Any) -> None:
        if fut is not self._pending or fut.cancelled():
            return
        try:
            msg = fut.result()
        except Exception:  # the server's channel broke: treat as gone
            msg = {"type": "http.disconnect"}
        if msg["type"] == "http.disconnect":
            self.fired = True
            self._task.cancel()
        else:
            self._arm()

    def stop(self) -> None:
        pending, self._pending = self._pending, None
        if isinstance(pending, asyncio.Task):
            pending.cancel()


class Gateway:
    """The ASGI app of one worker: config, router, the upstream connection pool."""

    def __init__(self, cfg: GatewayConfig | None = None, source: str = "config") -> None:
        """With ``cfg`` None, the configuration is resolved at lifespan start-up (Granian
        workers: ``FASTGW_CONFIG`` or the embedded default, see ``resolve_config``)."""
        self.configured = False
        if cfg is not None:
            self.configure(cfg, source)

    def configure(self, cfg: GatewayConfig, source: str) -> None:
        self.configured = True
        self.cfg = cfg
        self.source = source
        self.router = Router(cfg)
        self.secrets = {name: p.api_key for name, p in cfg.providers.items() if p.api_key}
        self.max_body = cfg.server.max_body_bytes
        self.max_event = cfg.server.max_event_bytes
        self.client: Client | None = None
        self.ready = False
        self.demo: ASGIApp | None = None
        if cfg.server.demo_upstream:
            from .mock.asgi import make_asgi_app

            self.demo = make_asgi_app("/_demo")
        self.routes: dict[str, tuple[str, Endpoint | Handler]] = {
            "/v1/chat/completions": ("POST", Endpoint.CHAT),
            "/v1/completions": ("POST", Endpoint.COMPLETIONS),
            "/v1/embeddings": ("POST", Endpoint.EMBEDDINGS),
            "/v1/responses": ("POST", Endpoint.RESPONSES),
            "/v1/models": ("GET", self._models),
            "/healthz": ("GET", self._healthz),
            "/readyz": ("GET", self._readyz),
        }
        #: Routes of other client APIs (their own request and error shapes).
        self.ingress: dict[str, IngressHandler] = {
            "/v1/messages": self._messages,
            "/v1/messages/count_tokens": self._count_tokens,
        }
        self._models_body = _encoder.encode(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": provider}
                    for name, provider in self.router.public_models()
                ],
            }
        )

    # -- lifespan -------------------------------------------------------------------------

    async def startup(self) -> None:
        """The worker's upstream client: one keep-alive pool per provider origin."""
        self.client = Client()  # pool sizes: each provider's max_connections
        self.ready = True

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    if not self.configured:
                        cfg, source = resolve_config(
                            os.environ.get("FASTGW_CONFIG") or None, kinds=kinds()
                        )
                        self.configure(cfg, source)
                    await self.startup()
                except Exception as e:  # reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def shutdown(self) -> None:
        self.ready = False
        if self.client is not None:
            await self.client.close()

    # -- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        if not self.configured:  # only without the lifespan protocol
            await self._send_error(
                send,
                GatewayError(503, "The gateway is not configured.", "unavailable", "not_ready"),
                _request_id(None),
            )
            return
        path: str = scope["path"]
        request_id = b""
        content_length = -1
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
        ctx_id = _request_id(request_id)
        route = self.routes.get(path)
        try:
            if route is None:
                ingress = self.ingress.get(path)
                if ingress is not None and scope["method"] == "POST":
                    await self._anthropic_ingress(
                        ingress, scope, receive, send, ctx_id, content_length
                    )
                    return
                if self.demo is not None and path.startswith("/_demo/"):
                    await self.demo(scope, receive, send)
                    return
                raise not_found(f"Unknown path: {path}", code="unknown_url")
            method, action = route
            if scope["method"] != method:
                raise GatewayError(
                    405,
                    f"Method {scope['method']} is not allowed on {path}; use {method}.",
                    code="method_not_allowed",
                    headers=[(b"allow", method.encode())],
                )
            if isinstance(action, Endpoint):
                # passed without a local, so _proxy alone holds the request (and drops it
                # while a stream runs)
                await self._proxy(
                    receive,
                    send,
                    parse_request(action, await self._read_body(receive, content_length)),
                    ctx_id,
                )
            else:
                await action(send, ctx_id)
        except GatewayError as err:
            await self._send_error(send, err, ctx_id)
        except Exception:  # the error boundary: log, answer 500 without details
            sys.stderr.write(f"fastgw: internal error, request {ctx_id.decode()}\n")
            traceback.print_exc()
            internal = GatewayError(
                500, "Internal gateway error.", "internal_error", "internal_error"
            )
            with contextlib.suppress(Exception):  # fails only if the response had started
                await self._send_error(send, internal, ctx_id)

    async def _read_body(self, receive: Receive, content_length: int) -> bytes:
        """The request body, at most ``max_body_bytes``. A larger body is still read (and
        dropped) up to ``_DRAIN_LIMIT`` past the limit, so the client gets its 413 instead of
        a reset while it is writing."""
        limit = self.max_body
        msg = await receive()
        body: bytes = msg.get("body", b"")
        if not msg.get("more_body", False) and len(body) <= limit:
            return body  # the common case: one message
        if content_length > limit + _DRAIN_LIMIT:
            raise self._too_large()
        parts = [body]
        size = len(body)
        while msg.get("more_body", False) and size <= limit + _DRAIN_LIMIT:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise GatewayError(400, "Client disconnected while sending the body.")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size <= limit:
                parts.append(chunk)
        if size > limit:
            raise self._too_large()
        return b"".join(parts)

    def _too_large(self) -> GatewayError:
        return GatewayError(
            413,
            f"Request body is larger than the gateway's limit of {self.max_body} bytes.",
            code="request_too_large",
        )

    async def _send_error(
        self, send: Send, err: GatewayError, request_id: bytes, body: bytes | None = None
    ) -> None:
        """``err`` as the answer: OpenAI's error body unless another API's ``body`` is given."""
        if body is None:
            body = err.body()
        headers = [
            _JSON,
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id),
        ]
        headers.extend(err.headers)
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_json(self, send: Send, status: int, body: bytes, headers: Headers) -> None:
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- simple routes --------------------------------------------------------------------

    async def _models(self, send: Send, rid: bytes) -> None:
        await self._send_json(send, 200, self._models_body, [_JSON, (b"x-request-id", rid)])

    async def _healthz(self, send: Send, rid: bytes) -> None:
        await self._send_json(send, 200, b'{"status":"ok"}', [_JSON, (b"x-request-id", rid)])

    async def _readyz(self, send: Send, rid: bytes) -> None:
        ready = self.ready
        detail = {
            "status": "ready" if ready else "starting",
            "version": __version__,
            "core": "compiled" if sse.COMPILED else "pure-python",
            "config": self.source,
            "providers": sorted(self.router.providers),
            "models": len(self.cfg.models),
        }
        await self._send_json(
            send, 200 if ready else 503, _encoder.encode(detail), [_JSON, (b"x-request-id", rid)]
        )

    # -- the Anthropic Messages API in front -------------------------------------------------

    async def _anthropic_ingress(
        self,
        handler: IngressHandler,
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: bytes,
        content_length: int,
    ) -> None:
        """Read the body and run ``handler``; errors in Anthropic's shape."""
        try:
            body = await self._read_body(receive, content_length)
            await handler(scope, receive, send, body, rid)
        except GatewayError as err:
            await self._send_error(send, err, rid, anthropic_api.error_body(err))

    def _resolve(self, model: str) -> tuple[Route, str]:
        """The route serving ``model`` and the upstream name for targets that name none."""
        found = self.router.resolve(model)
        if found is None:
            raise not_found(
                f"The model '{model}' does not exist on this gateway.",
                code="model_not_found",
                param="model",
            )
        return found

    async def _messages(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, rid: bytes
    ) -> None:
        mreq = anthropic_api.parse_messages(body)
        route, default_model = self._resolve(mreq.model)
        target = route.targets[0]
        if target.provider.kind == "anthropic":
            await self._anthropic_passthrough(
                scope, receive, send, "/messages", mreq.raw, mreq.stream, target, default_model, rid
            )
            return
        oreq = parse_request(Endpoint.CHAT, anthropic_api.to_openai_chat(mreq))
        await self._proxy(receive, send, oreq, rid, _AnthropicOutput(mreq.model, rid))

    async def _count_tokens(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, rid: bytes
    ) -> None:
        mreq = anthropic_api.parse_messages(_with_max_tokens(body))
        route, default_model = self._resolve(mreq.model)
        target = route.targets[0]
        if target.provider.kind == "anthropic":
            await self._anthropic_passthrough(
                scope,
                receive,
                send,
                "/messages/count_tokens",
                body,
                False,
                target,
                default_model,
                rid,
            )
            return
        data = _encoder.encode({"input_tokens": anthropic_api.estimate_input_tokens(mreq)})
        await self._send_json(send, 200, data, [_JSON, (b"x-request-id", rid)])

    async def _anthropic_passthrough(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        raw: bytes,
        stream: bool,
        target: Target,
        default_model: str,
        rid: bytes,
    ) -> None:
        """A Messages request to an Anthropic target: the client's bytes (model renamed when
        the target says so), the answer relayed as it is."""
        client = self.client
        if client is None:
            raise GatewayError(503, "The gateway is starting.", "unavailable", "not_ready")
        model = target.model or default_model
        fields = _raw_fields(raw)
        if fields is not None and target.model is not None:
            fields["model"] = msgspec.Raw(_encoder.encode(model))
            raw = _encoder.encode(fields)
        headers = {"x-request-id": rid.decode()}
        for name, value in scope["headers"]:
            if name == b"anthropic-beta":
                headers["anthropic-beta"] = value.decode("latin-1")
        if stream:
            headers["accept"] = "text/event-stream"
        data = target.wire.request(path, headers, raw)
        del raw, fields
        try:
            resp = await client.request(target.wire.origin, data, target.timeouts, stream)
            if stream and resp.status >= 400:
                await resp.read()
                stream = False
        except UpstreamError as e:
            raise upstream_errors.transport_error(e, target) from None
        if stream:
            relay = sse.StreamFilter(False, self.max_event)
            out = _AnthropicOutput(model, rid)
            await self._relay_stream(receive, send, target, resp, relay, rid, out)
            return
        body = resp.body
        secret = self.secrets.get(target.provider.name)
        if resp.status >= 400 and secret and secret.encode() in body:
            body = body.replace(secret.encode(), b"***")  # never echo the provider's key
        headers_out = [
            (b"content-type", resp.header(b"content-type") or b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"x-request-id", rid),
            (b"x-fastgw-provider", target.provider_header),
        ]
        retry_after = resp.header(b"retry-after")
        if retry_after:
            headers_out.append((b"retry-after", retry_after))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers_out})
        await send({"type": "http.response.body", "body": body})

    # -- the proxy ------------------------------------------------------------------------

    async def _proxy(
        self,
        receive: Receive,
        send: Send,
        req: ParsedRequest,
        rid: bytes,
        out: _Output = _OPENAI_OUT,
    ) -> None:
        """Serve ``req`` from its model's targets: retries per target, then the next target
        (fallback) — only before a byte of the answer reached the client."""
        route, default_model = self._resolve(req.model)
        targets = route.order()
        attempts = fallbacks = 0
        retry = route.retry
        for i, target in enumerate(targets):
            last_target = i + 1 == len(targets)
            for attempt in range(retry.attempts):
                attempts += 1
                try:
                    sent = await self._attempt(target, req, default_model, rid)
                except GatewayError as err:
                    if err.upstream_status is None and not err.transport:
                        raise  # the request itself is refused (e.g. unsupported parameter)
                    retryable = err.transport or err.upstream_status in retry.on_status
                    wait = route.backoff(attempt)
                    if err.retry_after is not None:
                        wait = err.retry_after
                        retryable = retryable and wait <= retry.max_retry_after
                    if retryable and attempt + 1 < retry.attempts:
                        await asyncio.sleep(wait)
                        continue
                    if not last_target and (
                        err.transport or err.upstream_status in route.fallback_on
                    ):
                        fallbacks += 1
                        break  # the next target
                    err.headers.extend(_routing_headers(target, attempts, fallbacks))
                    raise
                resp, relay, stream, ctype = sent
                routing = _routing_headers(target, attempts, fallbacks)
                if relay is not None and stream:
                    del req  # a stream may last minutes: hold no copy of the request
                    filt = out.relay(relay)
                    await self._relay_stream(receive, send, target, resp, filt, rid, out, routing)
                    return
                data = resp.body
                if not target.provider.openai_shaped and relay is None:
                    data = target.provider.transform_response(req, data)
                    ctype = b"application/json"
                if out is not _OPENAI_OUT:
                    data = out.body(data)
                    ctype = b"application/json"
                headers = [
                    (b"content-type", ctype),
                    (b"content-length", b"%d" % len(data)),
                    (b"x-request-id", rid),
                    (b"x-fastgw-provider", target.provider_header),
                    *routing,
                ]
                await send(
                    {"type": "http.response.start", "status": resp.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": data})
                return
        raise AssertionError("unreachable: the last target raises or answers")  # pragma: no cover

    async def _attempt(
        self, target: Target, req: ParsedRequest, default_model: str, rid: bytes
    ) -> tuple[Response, RelayFilter | None, bool, bytes]:
        """One attempt on one target, up to the answer's head: the response, the relay
        filter for a stream, whether it streams, its content type. Failures raise."""
        client = self.client
        if client is None:
            raise GatewayError(503, "The gateway is starting.", "unavailable", "not_ready")
        if target.overrides:
            req = req.with_overrides(target.overrides)
        provider = target.provider
        model = target.model or default_model
        if req.endpoint is Endpoint.RESPONSES and not provider.openai_shaped:
            raise bad_request(
                f"The Responses API is relayed to OpenAI-compatible providers only; model "
                f"'{req.model}' is served by provider '{provider.name}' (kind "
                f"'{provider.kind}'). Use /v1/chat/completions for it.",
                param="model",
                code="unsupported_endpoint",
            )
        ureq = provider.build_request(req, model, rid.decode())
        data = target.wire.request(ureq.path, ureq.headers, ureq.body)
        stream = req.stream
        relay: RelayFilter | None = None
        stream_type = b"text/event-stream"
        if stream:
            if provider.openai_shaped:
                relay = sse.StreamFilter(ureq.inject_usage, self.max_event)
            elif isinstance(provider, ByteStreamProvider):
                relay = provider.new_byte_stream(req, model)
                stream_type = provider.stream_content_type
            else:
                relay = _Translated(provider.new_stream(req, model), self.max_event)
        del ureq
        try:
            resp = await client.request(target.wire.origin, data, target.timeouts, stream)
            del data
            ctype = resp.header(b"content-type") or b"application/json"
            if stream and resp.status >= 400:
                await resp.read()  # the error's message
                stream = False
            elif stream and not ctype.startswith(stream_type):
                if not provider.openai_shaped:
                    resp.close()
                    raise GatewayError(
                        502,
                        f"Provider '{provider.name}' answered a streaming request without "
                        "streaming.",
                        "upstream_error",
                        "upstream_protocol_error",
                    )
                await resp.read(_MAX_UNSTREAMED, truncate=False)  # answered without streaming
                stream = False
            if resp.status >= 400:
                raise upstream_errors.error_response(target, resp)
        except UpstreamError as e:
            raise upstream_errors.transport_error(e, target) from None
        return resp, relay, stream, ctype

    async def _relay_stream(
        self,
        receive: Receive,
        send: Send,
        target: Target,
        resp: Response,
        filt: RelayFilter,
        rid: bytes,
        out: _Output = _OPENAI_OUT,
        routing: Headers | None = None,
    ) -> None:
        """Relay an SSE stream event by event; a client disconnect cancels the upstream."""
        task = asyncio.current_task()
        assert task is not None
        watcher = _DisconnectWatch(receive, task)
        try:
            headers = [
                *_SSE_HEADERS,
                (b"x-request-id", rid),
                (b"x-fastgw-provider", target.provider_header),
                *(routing or ()),
            ]
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            try:
                while chunk := await resp.readany():
                    data = filt.feed(chunk)
                    if data:
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                tail = filt.flush()
                if tail:
                    await send({"type": "http.response.body", "body": tail, "more_body": True})
            except (UpstreamError, sse.EventTooLarge) as e:
                if isinstance(e, sse.EventTooLarge):
                    err = GatewayError(
                        502,
                        f"Provider '{target.provider.name}' sent a stream event larger than "
                        f"{self.max_event} bytes.",
                        "upstream_error",
                        "upstream_event_too_large",
                    )
                else:
                    err = upstream_errors.transport_error(e, target)
                await send(
                    {"type": "http.response.body", "body": out.error_event(err), "more_body": True}
                )
            await send(_END)
        except asyncio.CancelledError:
            if not watcher.fired:
                raise
            task.uncancel()
            resp.close()  # the client is gone: drop the upstream connection (cancels generation)
        finally:
            watcher.stop()
            resp.close()  # no-op when the stream ended normally (its connection was released)


app = Gateway()
