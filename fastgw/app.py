"""ASGI entry point: routes, lifespan (per-worker upstream pool and state), error boundary.

Granian imports ``fastgw.app:app``. Each worker builds its runtime on lifespan start-up from
the configuration named by ``FASTGW_CONFIG`` (or the embedded default) — see
``fastgw.config.resolve_config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from . import __version__
from ._core import sse
from ._core.tally import COST_HEADER, Journal, Sums
from ._core.tokens import estimate_json, estimate_json_fields
from .admin import AdminAPI
from .api import anthropic as anthropic_api
from .api.errors import GatewayError, bad_request, not_found
from .api.openai import Endpoint, ParsedRequest, parse_request
from .asgi import ASGIApp, Message, Receive, Scope, Send, read_body
from .catalog import model_card
from .config import GatewayConfig, parse_duration, resolve_config
from .policy.budgets import Budgets, Reservation, open_ledger
from .policy.keys import KeyStore, Principal
from .policy.ledger import Ledger
from .policy.limits import Admission, Later, Limiter
from .policy.meter import (
    Meter,
    Usage,
    count_delivered,
    estimate_prompt,
    format_usd,
    responses_stream_usage,
    responses_usage,
)
from .policy.store import KeyRecord, RecordStore, merge_keys, open_record_store
from .policy.sync import KeySync
from .providers.anthropic import MessagesUsage, message_usage
from .providers.base import ByteStreamProvider, StreamTranslator
from .providers.registry import kinds
from .routing import errors as upstream_errors
from .routing.conditions import RequestFacts
from .routing.health import DENY, OPEN, PASS
from .routing.router import Route, Router, Target
from .state import open_state
from .upstream import Client, Response, Timeouts, UpstreamError

Headers = list[tuple[bytes, bytes]]
Handler = Callable[[Send, bytes, "Principal | None"], Awaitable[None]]
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
#: Upstream statuses that count as a target's failure in its counters and latency statistics
#: (a 4xx other than 429 is the request's fault, not the target's).
_FAILURES = frozenset([429, *range(500, 600)])
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

    @property
    def usage(self) -> tuple[int, int, int, int] | None:
        return self._tr.usage

    @property
    def usage_final(self) -> bool:
        """The usage is the stream's final count (not one given at its start only)."""
        return bool(getattr(self._tr, "final", True))


_NO_USAGE = (0, 0, 0, 0)
#: The members of Responses API stream events that carry the text the client is sent.
_RESPONSES_TEXT = (b"delta",)


class _Bill:
    """The cost of one answer, settled once: from the provider's usage, else estimated from
    the prompt and the text the client was sent (``Meter``)."""

    __slots__ = (
        "default_model",
        "done",
        "estimate",
        "estimated",
        "meter",
        "raw",
        "reported",
        "responses",
        "sent",
        "target",
        "usage",
        "usd",
    )

    def __init__(
        self,
        meter: Meter,
        target: Target,
        default_model: str,
        estimate: int,
        sent: _Sent,
        req: ParsedRequest | None,
        mreq: anthropic_api.MessagesRequest | None,
    ) -> None:
        self.meter = meter
        #: The request body, to estimate the prompt from if it was not yet (0) and the
        #: answer has no usage (only the body is kept, not the request).
        self.raw = None if estimate else _body(req, mreq)
        self.target = target
        self.default_model = default_model
        self.estimate = estimate
        self.sent = sent
        #: A Responses API answer: its usage has its own shape (``input_tokens`` …).
        self.responses = req is not None and req.endpoint is Endpoint.RESPONSES
        #: Usage read off the relayed events (Responses API streams).
        self.reported: Usage | None = None
        self.done = False
        #: The usage billed was (partly) estimated by the gateway.
        self.estimated = False
        #: The usage billed (reported, or estimated when the answer had none).
        self.usage: Usage | None = None
        self.usd: float | None = None

    def settle(
        self, usage: Usage | None, body: bytes | None = None, cut: bool = False
    ) -> float | None:
        """Bill ``usage`` once. None: estimate it (the prompt estimate, and the text of the
        whole answer ``body`` or of what the stream delivered). ``cut``: the stream ended
        early (the client left), so usage it reported so far (e.g. Anthropic's input
        counts at the start) is completed with the text delivered after."""
        if self.done:
            return self.usd
        self.done = True
        if usage is None and not self.estimate and self.raw is not None:
            self.estimate = estimate_prompt(self.raw)
        self.raw = None
        if usage is None:
            if body is not None and self.sent.resp.status < 300:
                self.sent.delivered = count_delivered(body)
            out = self.sent.delivered
            usage = (self.estimate, out, self.estimate + out, 0)
            self.estimated = True
        elif cut and self.sent.delivered > usage[1]:
            prompt, out = usage[0], self.sent.delivered
            usage = (prompt, out, prompt + out, usage[3])
            self.estimated = True
        if self.estimated:
            self.meter.estimated += 1
        self.usage = usage
        self.usd = self.meter.bill(self.target, self.default_model, usage)
        return self.usd

    def paid(self) -> _Paid:
        """What was billed (once settled)."""
        return (self.target, self.usage or _NO_USAGE, self.usd, self.estimated)

    def relayed(self, data: bytes) -> None:
        """Stream bytes went to the client: count their text (and read a Responses API
        stream's usage, which the relay does not know)."""
        if self.responses:  # text comes in "delta" strings; *.done events repeat it
            self.sent.delivered += estimate_json_fields(data, _RESPONSES_TEXT)
            if b'"usage"' in data:
                self.reported = responses_stream_usage(data) or self.reported
        else:
            self.sent.delivered += count_delivered(data)

    def stream_usage(self) -> Usage | None:
        """The usage a stream reported so far."""
        return self.reported or getattr(self.sent.relay, "usage", None)

    def trailer(self) -> bytes:
        """The end of a stream that ended normally: its cost as an SSE comment. A stream
        whose final counts never came (Anthropic's ``message_delta``: an error event, or
        a body that just ended) is completed with the text delivered, as a cut one."""
        final = getattr(self.sent.relay, "usage_final", True)
        usd = self.settle(self.stream_usage(), cut=not final)
        return b"" if usd is None else b": %s=%s\n\n" % (COST_HEADER, format_usd(usd))


#: What an answer was billed: the target that gave it, the usage (reported or estimated),
#: the USD cost (None: unpriced) and whether the usage was estimated.
_Paid = tuple[Target, Usage, float | None, bool]


def _sinks_of(ledger: Ledger) -> Callable[[int, Any], list[Sums] | None]:
    """The ``Journal`` callback of the request path: the ledger's queued sums of a key
    ``(principal, target, model, default_model)`` (``model``: the public name served) for a
    minute, the row's then each tag's."""

    def sinks(minute: int, key: Any) -> list[Sums] | None:
        principal, target, model, default_model = key
        return ledger.sinks(
            minute,
            principal.name if principal is not None else None,
            principal.team if principal is not None else None,
            principal.tag_list if principal is not None else (),
            model,
            target.label_for(default_model),
        )

    return sinks


def _body(req: ParsedRequest | None, mreq: anthropic_api.MessagesRequest | None) -> bytes | None:
    """The request's body, whichever API it came in."""
    if mreq is not None:
        return mreq.raw
    return req.raw if req is not None else None


class _MessagesRelay:
    """A Messages API stream relayed as it is (Anthropic target, Anthropic client), its
    usage followed event by event (``MessagesUsage``)."""

    __slots__ = ("_parser", "_usage")

    def __init__(self, max_event: int) -> None:
        self._parser = sse.SSEParser(max_event)
        self._usage = MessagesUsage()

    def _relay(self, events: list[sse.SSEEvent]) -> bytes:
        track = self._usage.event
        for ev in events:
            if ev.data:
                track(ev.data)
        return b"".join([ev.raw for ev in events])

    def feed(self, chunk: bytes) -> bytes:
        return self._relay(self._parser.feed(chunk))

    def flush(self) -> bytes:
        last = self._parser.flush()
        return b"" if last is None else self._relay([last])

    @property
    def usage(self) -> tuple[int, int, int, int] | None:
        return self._usage.usage

    @property
    def usage_final(self) -> bool:
        return self._usage.final


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


class _PassthroughOutput(_Output):
    """The Messages API answered by an Anthropic target: bytes as they are."""

    def error_event(self, err: GatewayError) -> bytes:
        return anthropic_api.error_event(err)


_PASSTHROUGH = _PassthroughOutput()


class _Sent:
    """An attempt that got an answer: the response (a stream's first bytes read), how to
    relay it, and what the client's API wants of it."""

    __slots__ = (
        "ctype",
        "delivered",
        "first",
        "native",
        "out",
        "relay",
        "request",
        "resp",
        "stream",
    )

    def __init__(
        self,
        resp: Response,
        relay: RelayFilter | None,
        stream: bool,
        ctype: bytes,
        first: bytes,
        out: _Output,
        request: ParsedRequest | None,
        native: bool,
    ) -> None:
        self.resp = resp
        self.relay = relay
        self.stream = stream
        self.ctype = ctype
        self.first = first
        self.out = out
        #: The request, kept for ``transform_response`` when the answer is not OpenAI's.
        self.request = request
        #: The body is the provider's own shape (``transform_response`` turns it into OpenAI's).
        self.native = native
        #: Estimated tokens of the text relayed to the client so far (billed when the
        #: stream ends without usage, e.g. cut by the client).
        self.delivered = 0


#: A streamed request body up to this size is kept (not estimated) while the stream runs, to
#: estimate its prompt only if the stream ends without usage; a larger one is estimated first.
_KEEP_FOR_BILLING = 64 * 1024

#: A request still waiting after one to two sweeps of this interval gets its client watched.
_WATCH_SWEEP = 0.25


class _DisconnectWatch:
    """Cancels ``task`` when the client disconnects, once ``arm()``-ed. Granian's
    ``receive()`` returns a future, so a done-callback is enough (no task per request); with
    other servers the coroutine is wrapped in a task. Arming costs the server a receive per
    request, so quick answers are never armed: streams are armed when they start, and the
    gateway's sweep arms any other request still waiting after 0.25–0.5 s."""

    __slots__ = ("_pending", "_receive", "armed", "fired", "seen", "task")

    def __init__(self, receive: Receive, task: asyncio.Task[None]) -> None:
        self._receive = receive
        self.task = task
        self._pending: Any = None
        self.armed = False
        self.fired = False
        self.seen = False  # by one sweep already

    def arm(self) -> None:
        if not self.armed:
            self.armed = True
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
            self.task.cancel()
        else:
            self._arm()

    def stop(self) -> None:
        if not self.armed:
            return
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
        self.keys = KeyStore(cfg)
        self.limiter = Limiter(cfg)
        #: The model catalog, token estimates and cost (docs/catalog.md, docs/tokens.md).
        self.meter = Meter(cfg)
        #: Spend (journaled to the ledger) and budgets (docs/budgets.md); opened at start-up.
        self.budgets: Budgets | None = None
        #: Where each settled answer is added to the ledger's sums (``_core``; at start-up).
        self._journal: Journal | None = None
        #: The admin API and the run-time keys it manages (started with the worker).
        self.admin: AdminAPI | None = None
        self.key_store: RecordStore | None = None
        self.key_sync: KeySync | None = None
        self.secrets = {name: p.api_key for name, p in cfg.providers.items() if p.api_key}
        self.max_body = cfg.server.max_body_bytes
        self.max_event = cfg.server.max_event_bytes
        self.client: Client | None = None
        self.ready = False
        #: Requests whose client is not watched yet (see _DisconnectWatch), and whether the
        #: sweep that arms the long-waiting ones is scheduled.
        self._waiting: set[_DisconnectWatch] = set()
        self._sweep_loop: asyncio.AbstractEventLoop | None = None
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
            "/metrics": ("GET", self._metrics),
        }
        #: Routes of other client APIs (their own request and error shapes).
        self.ingress: dict[str, IngressHandler] = {
            "/v1/messages": self._messages,
            "/v1/messages/count_tokens": self._count_tokens,
        }
        self._models_at = -1  # the catalog the model list was built from (its swap count)
        self._models_list: list[dict[str, object]] = []
        self._models_body = b""

    # -- lifespan -------------------------------------------------------------------------

    async def startup(self) -> None:
        """The worker's upstream client: one keep-alive pool per provider origin."""
        self.client = Client()  # pool sizes: each provider's max_connections
        if self.budgets is None:  # every settled request is journaled (spend survives restarts)
            self.budgets = Budgets(self.cfg, open_ledger(self.cfg.budgets))
        budgets = self.budgets
        if self._journal is None:
            self._journal = budgets.ledger.journal(_sinks_of(budgets.ledger))
        admin = self.cfg.admin
        if admin is not None and admin.token is not None and self.key_store is None:
            # run-time keys and budgets: every worker polls the store and swaps them in
            store = self.key_store = open_record_store(self.cfg.state, admin.store)
            self.key_sync = KeySync(store, self._keys_changed, on_budgets=budgets.update)
            self.admin = AdminAPI(
                admin.token,
                store,
                self.cfg.keys,
                usage=self._key_usage,
                teams=self.cfg.teams.keys(),
                budgets=budgets,
            )
        shared = self.limiter.active or budgets.active or self.admin is not None
        if shared and self.limiter.state is None:
            self.limiter.state = open_state(self.cfg.state)
        budgets.state = self.limiter.state
        if self.key_sync is not None:
            await self.key_sync.poll()  # the run-time keys work from the first request
            self.key_sync.start()
        await budgets.start()  # restores this period's budget counters from the ledger
        self.meter.start()
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
        await self.meter.stop()
        if self.client is not None:
            await self.client.close()
        if self.key_sync is not None:
            await self.key_sync.stop()
        if self.key_store is not None:
            await self.key_store.close()
        if self.budgets is not None:  # the last settlements and the ledger's queue
            await self.budgets.stop()
        if self.limiter.state is not None:
            await self.limiter.flush()
            await self.limiter.state.close()

    def _keys_changed(self, records: list[KeyRecord]) -> None:
        """New run-time keys (a worker's KeySync saw the store change): swap in the key table
        and the keys' limits."""
        keys = merge_keys(self.cfg.keys, records)
        self.keys = KeyStore(msgspec.structs.replace(self.cfg, keys=keys))
        self.limiter.update_keys(keys)

    async def _key_usage(self, name: str) -> dict[str, object]:
        """A key's limits and what is left of them now (admin API ``/usage``)."""
        return await self.limiter.usage(name)

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
        controls = False  # x-fastgw-* request headers present (routing reads them)
        authorization: bytes | None = None  # the first one
        api_key: bytes | None = None  # the last one
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
            elif name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name[0] == 0x78:  # 'x' first: 4x cheaper
                if name[:9] == b"x-fastgw-":
                    controls = True
                elif name == b"x-api-key":
                    api_key = value
        ctx_id = _request_id(request_id)
        route = self.routes.get(path)
        watcher: _DisconnectWatch | None = None
        if route is None and self.admin is not None and path.startswith("/admin/"):
            await self.admin(scope, receive, send)
            return
        try:
            if route is None:
                ingress = self.ingress.get(path)
                if ingress is not None and scope["method"] == "POST":
                    await self._anthropic_ingress(
                        ingress,
                        scope,
                        receive,
                        send,
                        ctx_id,
                        content_length,
                        authorization,
                        api_key,
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
            principal = None
            if self.keys.enabled and path.startswith("/v1/"):
                principal = self.keys.authenticate_values(authorization, api_key)
            if isinstance(action, Endpoint):
                watcher = self._watch(receive)
                # passed without a local, so _serve alone holds the request (and drops it
                # while a stream runs)
                await self._serve(
                    send,
                    parse_request(action, await self._read_body(receive, content_length)),
                    ctx_id,
                    _OPENAI_OUT,
                    scope["headers"],
                    controls,
                    None,
                    watcher,
                    principal,
                )
            else:
                await action(send, ctx_id, principal)
        except GatewayError as err:
            await self._send_error(send, err, ctx_id)
        except asyncio.CancelledError:
            if watcher is None or not watcher.fired:
                raise
            watcher.task.uncancel()  # the client is gone: nobody to answer
        except Exception:  # the error boundary: log, answer 500 without details
            sys.stderr.write(f"fastgw: internal error, request {ctx_id.decode()}\n")
            traceback.print_exc()
            internal = GatewayError(
                500, "Internal gateway error.", "internal_error", "internal_error"
            )
            with contextlib.suppress(Exception):  # fails only if the response had started
                await self._send_error(send, internal, ctx_id)
        finally:
            if watcher is not None:
                self._waiting.discard(watcher)
                watcher.stop()

    async def _read_body(self, receive: Receive, content_length: int) -> bytes:
        """The request body, at most ``max_body_bytes`` (413 above, after draining up to
        ``_DRAIN_LIMIT`` more so the client sees it)."""
        return await read_body(
            receive, self.max_body, content_length, self._too_large, _DRAIN_LIMIT
        )

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

    async def _models(self, send: Send, rid: bytes, principal: Principal | None) -> None:
        if self._models_at != self.meter.holder.swaps:
            self._build_models()
        body = self._models_body
        if principal is not None:  # the models this key may use
            allowed = [m for m in self._models_list if principal.may_use(str(m["id"]))]
            body = _encoder.encode({"object": "list", "data": allowed})
        await self._send_json(send, 200, body, [_JSON, (b"x-request-id", rid)])

    def _build_models(self) -> None:
        """The ``/v1/models`` items, each with its catalog data (prices, context window,
        capabilities: the entry of the public name, else of its first target's model)."""
        self._models_at = self.meter.holder.swaps
        items: list[dict[str, object]] = []
        for name, provider in self.router.public_models():
            item: dict[str, object] = {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": provider,
            }
            entry = self.meter.entry(name)
            if entry is None:
                first = self.router.exact[name].leaves[0]
                entry = self.meter.entry(first.model or name)
            if entry is not None:
                item.update(model_card(entry))
            items.append(item)
        self._models_list = items
        self._models_body = _encoder.encode({"object": "list", "data": items})

    async def _healthz(self, send: Send, rid: bytes, principal: Principal | None) -> None:
        await self._send_json(send, 200, b'{"status":"ok"}', [_JSON, (b"x-request-id", rid)])

    async def _readyz(self, send: Send, rid: bytes, principal: Principal | None) -> None:
        ready = self.ready
        detail: dict[str, object] = {
            "status": "ready" if ready else "starting",
            "version": __version__,
            "core": "compiled" if sse.COMPILED else "pure-python",
            "config": self.source,
            "providers": sorted(self.router.providers),
            "models": len(self.cfg.models),
            "pid": os.getpid(),
        }
        targets = self.router.health()
        if targets:  # breakers and least-* statistics (this worker's)
            detail["targets"] = targets
        if self.limiter.state is not None:
            detail["state"] = self.limiter.state.health()
        if self.key_sync is not None:
            detail["key_sync"] = self.key_sync.health()
        if self.budgets is not None:
            detail["ledger"] = self.budgets.ledger.health()
        detail["catalog"] = self.meter.watcher.health()
        await self._send_json(
            send, 200 if ready else 503, _encoder.encode(detail), [_JSON, (b"x-request-id", rid)]
        )

    async def _metrics(self, send: Send, rid: bytes, principal: Principal | None) -> None:
        text = self.router.metrics()
        state = self.limiter.state
        if state is not None:  # the state backend's numbers: reachable, fallbacks, errors, …
            health = state.health()
            backend = health.get("backend", "?")
            for field, value in sorted(health.items()):
                if isinstance(value, bool):
                    value = int(value)
                if isinstance(value, int | float):
                    name = f"fastgw_state_{field}"
                    text += f'# TYPE {name} gauge\n{name}{{backend="{backend}"}} {value}\n'
        m = self.meter
        text += (
            "# TYPE fastgw_cost_usd_total counter\n"
            f"fastgw_cost_usd_total {m.cost_usd!r}\n"
            "# TYPE fastgw_billed_requests_total counter\n"
            f"fastgw_billed_requests_total {m.requests}\n"
            "# TYPE fastgw_unpriced_requests_total counter\n"
            f"fastgw_unpriced_requests_total {m.unpriced}\n"
            "# TYPE fastgw_estimated_usage_requests_total counter\n"
            f"fastgw_estimated_usage_requests_total {m.estimated}\n"
            "# TYPE fastgw_catalog_models gauge\n"
            f"fastgw_catalog_models {len(m.holder.current)}\n"
        )
        if self.budgets is not None:
            text += self.budgets.prometheus()
        body = text.encode()
        ctype = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        await self._send_json(send, 200, body, [ctype, (b"x-request-id", rid)])

    # -- the Anthropic Messages API in front -------------------------------------------------

    async def _anthropic_ingress(
        self,
        handler: IngressHandler,
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: bytes,
        content_length: int,
        authorization: bytes | None,
        api_key: bytes | None,
    ) -> None:
        """Read the body and run ``handler``; errors in Anthropic's shape. ``authorization``
        and ``api_key``: the key headers the request's header scan found."""
        try:
            if self.keys.enabled:
                scope["fastgw.principal"] = self.keys.authenticate_values(authorization, api_key)
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
        out = _AnthropicOutput(mreq.model, rid)
        principal = scope.get("fastgw.principal")
        await self._proxy(receive, send, rid, out, scope["headers"], mreq, principal)

    async def _count_tokens(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, rid: bytes
    ) -> None:
        mreq = anthropic_api.parse_messages(_with_max_tokens(body))
        route, default_model = self._resolve(mreq.model)
        principal: Principal | None = scope.get("fastgw.principal")
        if principal is not None:
            principal.check(mreq.model, "messages/count_tokens", None)
        facts = self._facts(scope["headers"], body, mreq.model)
        targets = _eligible(route, facts, principal)
        target = targets[0] if targets else None
        if target is not None and target.provider.kind == "anthropic":
            await self._count_tokens_upstream(scope, send, body, target, default_model, rid)
            return
        data = _encoder.encode({"input_tokens": anthropic_api.estimate_input_tokens(mreq)})
        await self._send_json(send, 200, data, [_JSON, (b"x-request-id", rid)])

    async def _count_tokens_upstream(
        self,
        scope: Scope,
        send: Send,
        raw: bytes,
        target: Target,
        default_model: str,
        rid: bytes,
    ) -> None:
        """count_tokens for a model served by Anthropic: asked of Anthropic, relayed as is."""
        client = self._client()
        data = _passthrough_request(
            scope["headers"], raw, target, default_model, rid, "/messages/count_tokens"
        )
        try:
            resp = await client.request(target.wire.origin, data, target.timeouts, False)
        except UpstreamError as e:
            raise upstream_errors.transport_error(e, target) from None
        if resp.status >= 400:
            raise upstream_errors.error_response(target, resp)
        headers_out = [
            (b"content-type", resp.header(b"content-type") or b"application/json"),
            (b"x-request-id", rid),
            (b"x-fastgw-provider", target.provider_header),
        ]
        await self._send_json(send, resp.status, resp.body, headers_out)

    # -- the proxy ------------------------------------------------------------------------

    def _client(self) -> Client:
        client = self.client
        if client is None:
            raise GatewayError(503, "The gateway is starting.", "unavailable", "not_ready")
        return client

    def _facts(self, headers: Headers, raw: bytes, model: str) -> RequestFacts:
        """What routing may look at; the x-fastgw-* request controls checked (400 if bad)."""
        facts = RequestFacts(headers, raw, model)
        for name, value in headers:
            if not name.startswith(b"x-fastgw-"):
                continue
            if name == b"x-fastgw-metadata":
                facts.set_metadata(value, self.cfg.routing.max_metadata_bytes)
            elif name == b"x-fastgw-region":
                facts.require_region = _header_set(value, "x-fastgw-region")
            elif name == b"x-fastgw-tags":
                facts.require_tags = _header_set(value, "x-fastgw-tags")
            elif name == b"x-fastgw-timeout":
                facts.timeout = _header_timeout(value, self.cfg.routing.max_request_timeout)
            elif name == b"x-fastgw-provider-key":
                facts.provider_key = _provider_key(value)
        return facts

    async def _proxy(
        self,
        receive: Receive,
        send: Send,
        rid: bytes,
        out: _Output,
        headers: Headers,
        mreq: anthropic_api.MessagesRequest,
        principal: Principal | None,
    ) -> None:
        """``_serve`` for another client API's request, with the client watched (the OpenAI
        routes do the same inline in ``__call__``)."""
        controls = any(name[:9] == b"x-fastgw-" for name, _ in headers)
        watcher = self._watch(receive)
        try:
            await self._serve(send, None, rid, out, headers, controls, mreq, watcher, principal)
        except asyncio.CancelledError:
            if not watcher.fired:
                raise
            watcher.task.uncancel()  # the client is gone: nobody to answer
        finally:
            self._waiting.discard(watcher)
            watcher.stop()

    def _watch(self, receive: Receive) -> _DisconnectWatch:
        """A disconnect watch for the current request; ``_serve`` enlists it with the sweep
        once the body has been read (until then ``receive()`` is the body reader's)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)  # with the loop: a third of the cost
        assert task is not None
        return _DisconnectWatch(receive, task)

    def _enlist(self, watcher: _DisconnectWatch) -> None:
        """Let the sweep arm ``watcher`` if its request is still waiting after a while."""
        self._waiting.add(watcher)
        loop = asyncio.get_running_loop()
        if self._sweep_loop is not loop:  # none scheduled (or on a loop that has gone)
            self._sweep_loop = loop
            loop.call_later(_WATCH_SWEEP, self._sweep)

    def _sweep(self) -> None:
        """Arm the disconnect watch of requests seen waiting by the previous sweep too."""
        waiting = self._waiting
        if not waiting:
            self._sweep_loop = None
            return
        due = [w for w in waiting if w.seen]
        for w in waiting:
            w.seen = True
        for w in due:
            waiting.discard(w)
            w.arm()
        asyncio.get_running_loop().call_later(_WATCH_SWEEP, self._sweep)

    async def _serve(
        self,
        send: Send,
        req: ParsedRequest | None,
        rid: bytes,
        out: _Output,
        headers: Headers,
        controls: bool,
        mreq: anthropic_api.MessagesRequest | None,
        watcher: _DisconnectWatch,
        principal: Principal | None = None,
    ) -> None:
        """Serve a request from its model's targets in the order the route gives: retries
        per target, then the next target (fallback) — only before a byte of the answer
        reached the client. Targets whose breaker is open are skipped. ``req`` is the OpenAI
        form; for the Messages API ``mreq`` is the client's request (passed through as it
        is to Anthropic targets, translated to ``req`` for the others)."""
        self._enlist(watcher)
        if mreq is not None:
            model, raw, max_tokens = mreq.model, mreq.raw, mreq.max_tokens
        else:
            assert req is not None
            model, raw, max_tokens = req.model, req.raw, req.max_tokens
        route, default_model = self._resolve(model)
        endpoint = ""  # (the key's rules and budgets need it)
        if principal is not None:
            endpoint = req.endpoint.path[1:] if req is not None else "messages"
            principal.check(model, endpoint, max_tokens)
        facts: RequestFacts | None = None
        deadline: float | None = None
        if controls or route.fixed is None:  # the request or the route has a say
            facts = self._facts(headers, raw, model)
            if principal is not None:
                facts.principal = principal
                principal.check_metadata(facts.metadata())
            if facts.timeout is not None:
                deadline = time.monotonic() + facts.timeout
        # bring-your-own-key (providers with key_passthrough); the header is an x-fastgw-* one
        byok = facts.provider_key if facts is not None else None
        if byok is not None and principal is not None:
            principal.check_passthrough()
        targets = _eligible(route, facts, principal)
        budgets = self.budgets if principal is not None else None
        budgeted = budgets is not None and bool(budgets.scopes)
        # the prompt's tokens, estimated in _core (µs per KiB) only when needed now: for the
        # limits and budgets, or when the body might not fit a context window (else an
        # answer without usage estimates it at the end; a big streamed body is estimated
        # before it is let go)
        estimate = 0
        meter = self.meter
        if (
            self.limiter.active
            or budgeted
            or (
                len(raw) > _KEEP_FOR_BILLING
                and (mreq.stream if mreq is not None else bool(req and req.stream))
            )
            # (may_overflow's first test, inline: most bodies fit every window)
            or (
                len(raw) > meter.always_fits
                and meter.may_overflow(targets, default_model, len(raw))
            )
        ):
            estimate = estimate_json(raw) or 1  # estimate_prompt, one call fewer
            if estimate > meter.fits_estimate:  # (fitting's first test, inline)
                targets = meter.fitting(targets, default_model, estimate)
        del raw
        # last of the checks: what is reserved and admitted here is given back (or settled)
        # in the finally below
        res: Reservation | None = None
        if budgeted:
            assert budgets is not None and principal is not None
            res, route, default_model, targets, model = await self._reserve_budget(
                budgets,
                principal,
                model,
                route,
                default_model,
                targets,
                facts,
                estimate,
                max_tokens,
                endpoint,
            )
        grant: Admission | None = None
        if self.limiter.active:
            try:
                if self.limiter.in_process:  # no coroutine (unless concurrency is limited)
                    try:
                        grant = self.limiter.admit_now(principal, route.name, estimate)
                    except Later:
                        grant = await self.limiter.admit(principal, route.name, estimate)
                else:
                    grant = await self.limiter.admit(principal, route.name, estimate)
            except BaseException:
                if res is not None:
                    res.settle_nowait(0.0)
                raise
        bill: _Bill | None = None  # the answer being relayed, billed once it ends
        paid: _Paid | None = None  # what the answer was billed
        try:
            attempts = fallbacks = 0
            last_err: GatewayError | None = None
            open_wait: float | None = None
            for target in targets:
                retry = target.retry
                br = target.breaker
                st = target.stats
                for attempt in range(retry.attempts):
                    timeouts = target.timeouts
                    now = 0.0
                    if deadline is not None:
                        now = time.monotonic()
                        cut = _within(timeouts, deadline - now)
                        if cut is None:
                            raise _deadline_error(target, attempts, fallbacks)
                        timeouts = cut
                    token = PASS
                    if br is not None:
                        now = now or time.monotonic()
                        token = br.allow(now)
                        if token == DENY:
                            wait = br.retry_after(now)
                            open_wait = wait if open_wait is None else min(open_wait, wait)
                            if attempt:  # it opened during our retries: we gave up on it
                                fallbacks += 1
                            break  # out for a cool-down: the next target
                    if st is not None:
                        st.inflight += 1
                        now = now or time.monotonic()
                    attempts += 1
                    try:
                        if mreq is not None and target.provider.kind == "anthropic":
                            sent = await self._attempt_passthrough(
                                target, mreq, default_model, rid, headers, timeouts, byok
                            )
                        else:
                            if req is None:
                                assert mreq is not None
                                req = parse_request(
                                    Endpoint.CHAT, anthropic_api.to_openai_chat(mreq)
                                )
                            sent = await self._attempt(
                                target, req, default_model, rid, timeouts, out, byok
                            )
                    except GatewayError as err:
                        upstream = err.transport or err.upstream_status is not None
                        # the request's own deadline cut this attempt short: not the target's fault
                        by_deadline = (
                            timeouts is not target.timeouts and err.status == 504 and err.transport
                        )
                        status = None if err.transport else err.upstream_status
                        if br is not None:
                            if upstream and not by_deadline:
                                br.record(br.is_failure(status), token, time.monotonic())
                            else:
                                br.release(token)
                        failed = (
                            upstream and not by_deadline and (status is None or status in _FAILURES)
                        )
                        if failed:
                            target.calls_failed += 1
                        elif upstream and not by_deadline:
                            target.calls_ok += 1  # the target answered (the request was refused)
                        if st is not None:
                            st.inflight -= 1
                            if upstream and not by_deadline:
                                t = time.monotonic()
                                if failed:
                                    st.failed(t - now, t)
                                else:
                                    st.sample(t - now, t)
                        if not upstream:
                            raise  # the request itself is refused (e.g. unsupported parameter)
                        if by_deadline:
                            raise _deadline_error(target, attempts, fallbacks) from None
                        err.headers.extend(_routing_headers(target, attempts, fallbacks))
                        last_err = err
                        retryable = err.transport or err.upstream_status in retry.on_status
                        wait = target.backoff(attempt)
                        if err.retry_after is not None:
                            wait = err.retry_after
                            retryable = retryable and wait <= retry.max_retry_after
                        if deadline is not None and time.monotonic() + wait >= deadline:
                            retryable = False
                        if br is not None and br.allow_state(time.monotonic()) == OPEN:
                            retryable = False  # this failure opened it: no use waiting for it
                        if retryable and attempt + 1 < retry.attempts:
                            await asyncio.sleep(wait)
                            continue
                        if err.transport or err.upstream_status in target.fallback_on:
                            fallbacks += 1
                            break  # the next target
                        raise
                    except BaseException:  # cancelled: no verdict on the target
                        if br is not None:
                            br.release(token)
                        if st is not None:
                            st.inflight -= 1
                        raise
                    target.calls_ok += 1
                    if br is not None:
                        br.record(False, token, time.monotonic())
                    try:
                        if st is not None:
                            t = time.monotonic()
                            st.sample(t - now, t)
                        routing = _routing_headers(target, attempts, fallbacks)
                        if grant is not None:
                            routing = [*routing, *grant.headers]
                        if res is not None:
                            routing = [*routing, *res.headers]
                        if sent.relay is not None and sent.stream:
                            bill = _Bill(
                                self.meter, target, default_model, estimate, sent, req, mreq
                            )
                            del (
                                req,
                                mreq,
                            )  # a stream may last minutes: only the bill keeps a small body
                            sent.request = None
                            self._waiting.discard(watcher)
                            watcher.arm()
                            filt = sent.out.relay(sent.relay)
                            await self._relay_stream(
                                send, target, sent, filt, rid, routing, timeouts, bill
                            )
                            return
                        start, body, usage = _answer(target, sent, rid, routing)
                        if req is not None and req.endpoint is Endpoint.RESPONSES:
                            usage = responses_usage(body["body"])
                        if usage is not None:  # the provider's count, billed as it is
                            # (billed, journaled and its cost header added in one call)
                            usd = self.meter.book.charge(
                                target.model or default_model,
                                usage,
                                start["headers"],
                                self._journal,
                                (principal, target, model, default_model),
                            )
                            paid = (target, usage, usd, False)
                        else:  # estimated (the prompt, and the answer's text)
                            bill = _Bill(
                                self.meter, target, default_model, estimate, sent, req, mreq
                            )
                            usd = bill.settle(None, body["body"])
                            if usd is not None:
                                start["headers"].append((COST_HEADER, format_usd(usd)))
                        await send(start)
                        await send(body)
                        return
                    finally:
                        if st is not None:
                            st.inflight -= 1
            if last_err is not None:
                raise last_err  # the last target's failure (with its routing headers)
            raise _all_open_error(route, open_wait or 0.0)
        except GatewayError as err:
            if grant is not None:
                err.headers.extend(grant.headers)
            if res is not None:
                err.headers.extend(res.headers)
            raise
        finally:
            if watcher.armed:  # answered (or gone): a disconnect now must not cut what follows
                watcher.stop()
            if bill is not None:  # (a whole answer with usage was journaled as it was billed)
                if not bill.done:  # a stream cut short is billed what it delivered
                    bill.settle(bill.stream_usage(), cut=True)
                paid = bill.paid()
                if self._journal is not None:
                    self._journal.add(
                        (principal, paid[0], model, default_model), paid[1], paid[2], paid[3]
                    )
            if res is not None:  # nothing answered: the reservation is given back
                res.settle_nowait(paid[2] or 0.0 if paid is not None else 0.0)
            if grant is not None:
                grant.settle(paid[1] if paid is not None else None)
                if grant.slots:
                    await grant.release()

    async def _reserve_budget(
        self,
        budgets: Budgets,
        principal: Principal,
        model: str,
        route: Route,
        default_model: str,
        targets: list[Target],
        facts: RequestFacts | None,
        estimate: int,
        max_tokens: int | None,
        endpoint: str,
    ) -> tuple[Reservation | None, Route, str, list[Target], str]:
        """Reserve the request's most expensive outcome on its budgets (docs/budgets.md).
        Over a budget that falls back: the same for its fallback model, whose route then
        serves the request (the key's rules apply to it too)."""
        usd = self.meter.max_cost(targets, default_model, estimate, max_tokens)
        res = await budgets.reserve(principal, model, usd)
        if res is None or res.fallback is None:
            return res, route, default_model, targets, model
        fallback = res.fallback
        principal.check(fallback, endpoint, max_tokens)
        route, default_model = self._resolve(fallback)
        targets = self.meter.fitting(_eligible(route, facts, principal), default_model, estimate)
        usd = self.meter.max_cost(targets, default_model, estimate, max_tokens)
        res = await budgets.reserve(principal, fallback, usd, rerouted=res)
        return res, route, default_model, targets, fallback

    async def _attempt(
        self,
        target: Target,
        req: ParsedRequest,
        default_model: str,
        rid: bytes,
        timeouts: Timeouts,
        out: _Output,
        byok: str | None = None,
    ) -> _Sent:
        """One attempt on one target, up to the answer's head (and, for a stream, its first
        bytes): failures raise, so they can be retried or failed over. ``byok``: the
        caller's own provider key (``x-fastgw-provider-key``)."""
        client = self._client()
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
        if target.passthrough is not None:
            ureq.headers.update(_byok_header(target, byok))
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
            resp = await client.request(target.wire.origin, data, timeouts, stream)
            del data
            ctype = resp.header(b"content-type") or b"application/json"
            first = b""
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
            elif stream:
                first = await resp.readany()  # a stall before it can still fail over
            if resp.status >= 400:
                raise upstream_errors.error_response(target, resp)
        except UpstreamError as e:
            raise upstream_errors.transport_error(e, target, timeouts) from None
        native = not provider.openai_shaped
        return _Sent(resp, relay, stream, ctype, first, out, req if native else None, native)

    async def _attempt_passthrough(
        self,
        target: Target,
        mreq: anthropic_api.MessagesRequest,
        default_model: str,
        rid: bytes,
        headers: Headers,
        timeouts: Timeouts,
        byok: str | None = None,
    ) -> _Sent:
        """A Messages request to an Anthropic target: the client's bytes (model renamed when
        the target says so), the answer relayed as it is."""
        client = self._client()
        stream = mreq.stream
        data = _passthrough_request(
            headers, mreq.raw, target, default_model, rid, "/messages", stream, byok, mreq.model
        )
        try:
            resp = await client.request(target.wire.origin, data, timeouts, stream)
            del data
            first = b""
            if stream and resp.status >= 400:
                await resp.read()
                stream = False
            elif stream:
                first = await resp.readany()
            if resp.status >= 400:
                raise upstream_errors.error_response(target, resp)
        except UpstreamError as e:
            raise upstream_errors.transport_error(e, target, timeouts) from None
        relay = _MessagesRelay(self.max_event) if stream else None
        ctype = resp.header(b"content-type") or b"application/json"
        return _Sent(resp, relay, stream, ctype, first, _PASSTHROUGH, None, False)

    async def _relay_stream(
        self,
        send: Send,
        target: Target,
        sent: _Sent,
        filt: RelayFilter,
        rid: bytes,
        routing: Headers,
        timeouts: Timeouts,
        bill: _Bill | None = None,
    ) -> None:
        """Relay a stream event by event (its first bytes already read). A client disconnect
        cancels this task (``_proxy`` watches), which drops the upstream connection. What
        is relayed is shown to ``bill``, whose trailer (the cost, an SSE comment) ends a
        stream that ended normally."""
        resp = sent.resp
        out = sent.out
        try:
            headers = [
                *_SSE_HEADERS,
                (b"x-request-id", rid),
                (b"x-fastgw-provider", target.provider_header),
                *routing,
            ]
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            try:
                chunk, sent.first = sent.first, b""
                while chunk:
                    data = filt.feed(chunk)
                    if data:
                        if bill is not None:
                            bill.relayed(data)
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                    chunk = await resp.readany()
                tail = filt.flush()
                if bill is not None:
                    if tail:
                        bill.relayed(tail)
                    tail += bill.trailer()
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
                elif timeouts is not target.timeouts and e.kind.endswith("timeout"):
                    err = _deadline_error(target, 1, 0)  # the request's own deadline
                else:
                    err = upstream_errors.transport_error(e, target, timeouts)
                    if target.breaker is not None:  # a stream cut mid-way: a failed call
                        target.breaker.record(True, PASS, time.monotonic())
                await send(
                    {"type": "http.response.body", "body": out.error_event(err), "more_body": True}
                )
            await send(_END)
        finally:
            resp.close()  # no-op when the stream ended normally (its connection was released)


def _answer(
    target: Target, sent: _Sent, rid: bytes, routing: Headers
) -> tuple[Message, Message, tuple[int, int, int, int] | None]:
    """The messages of a whole (non-streamed) answer, converted to the client's API when
    needed (a plain function: no coroutine per answer)."""
    data = sent.resp.body
    ctype = sent.ctype
    if sent.native and sent.relay is None:
        assert sent.request is not None
        data = target.provider.transform_response(sent.request, data)
        ctype = b"application/json"
    out = sent.out
    if out is _PASSTHROUGH:
        usage = message_usage(data) if sent.resp.status < 300 else None
    else:
        usage = sse.extract_usage(data) if b'"usage"' in data else None
    if out is not _OPENAI_OUT and out is not _PASSTHROUGH:
        data = out.body(data)
        ctype = b"application/json"
    headers = [
        (b"content-type", ctype),
        (b"content-length", b"%d" % len(data)),
        (b"x-request-id", rid),
        (b"x-fastgw-provider", target.provider_header),
        *routing,
    ]
    return (
        {"type": "http.response.start", "status": sent.resp.status, "headers": headers},
        {"type": "http.response.body", "body": data},
        usage,
    )


def _eligible(
    route: Route, facts: RequestFacts | None, principal: Principal | None
) -> list[Target]:
    """The route's targets for this request, first choice first: the strategy's order, less
    those the request's region/tags or the key's providers/regions rule out (403 if none)."""
    targets = route.order(facts)
    if principal is not None and principal.restricts_targets:
        targets = principal.eligible(targets, route.name)
    return targets


def _passthrough_request(
    headers: Headers,
    raw: bytes,
    target: Target,
    default_model: str,
    rid: bytes,
    path: str,
    stream: bool = False,
    byok: str | None = None,
    client_model: str | None = None,
) -> bytes:
    """The wire bytes of a Messages API request to an Anthropic target: the client's body
    (model renamed when the target names one, or when the route serves another model than
    the client's ``client_model`` names: a pattern route's stripped name, a budget's
    fallback) and its ``anthropic-beta`` header."""
    if target.model is not None or (client_model is not None and default_model != client_model):
        fields = _raw_fields(raw)
        if fields is not None:
            fields["model"] = msgspec.Raw(_encoder.encode(target.model or default_model))
            raw = _encoder.encode(fields)
    out = {"x-request-id": rid.decode()}
    for name, value in headers:
        if name == b"anthropic-beta":
            out["anthropic-beta"] = value.decode("latin-1")
    if stream:
        out["accept"] = "text/event-stream"
    if target.passthrough is not None:
        out.update(_byok_header(target, byok))
    return target.wire.request(path, out, raw)


def _byok_header(target: Target, byok: str | None) -> dict[str, str]:
    """The auth header of a bring-your-own-key provider, from the caller's key."""
    assert target.passthrough is not None
    if byok is None:
        raise GatewayError(
            401,
            f"Provider '{target.provider.name}' takes the caller's own key: send it in the "
            "x-fastgw-provider-key header.",
            "authentication_error",
            "provider_key_required",
        )
    name, template = target.passthrough
    return {name: template.format(key=byok)}


def _provider_key(value: bytes) -> str:
    """The caller's own provider key (``x-fastgw-provider-key``), checked for sanity."""
    key = value.strip()
    if not key or len(key) > 512 or any(c < 0x21 or c > 0x7E for c in key):
        raise bad_request(
            "The x-fastgw-provider-key header must be a key of printable ASCII.",
            param="x-fastgw-provider-key",
            code="invalid_header",
        )
    return key.decode("ascii")


def _header_set(value: bytes, name: str) -> frozenset[str]:
    """A comma-separated header (``eu, uk``) as a set of lower-case names."""
    items = frozenset(v.strip().lower() for v in value.decode("latin-1").split(",") if v.strip())
    if not items:
        raise bad_request(f"The {name} header is empty.", param=name, code="invalid_header")
    return items


def _header_timeout(value: bytes, cap: float) -> float:
    """``x-fastgw-timeout``: a duration (``30``, ``2.5s``, ``500ms``), capped by config."""
    try:
        seconds = parse_duration(value.decode("latin-1"))
    except ValueError as e:
        raise bad_request(
            f"Invalid x-fastgw-timeout header: {e}.",
            param="x-fastgw-timeout",
            code="invalid_header",
        ) from None
    return min(seconds, cap)


def _within(t: Timeouts, remaining: float) -> Timeouts | None:
    """``t`` cut down to the request's ``remaining`` seconds (None: none left)."""
    if remaining <= 0.001:
        return None
    if remaining >= t.total:
        return t
    ft = t.first_token
    return Timeouts(
        min(t.connect, remaining),
        min(t.first_byte, remaining),
        remaining,
        None if ft is None else min(ft, remaining),
    )


def _deadline_error(target: Target, attempts: int, fallbacks: int) -> GatewayError:
    err = GatewayError(
        504,
        "The request's deadline (its x-fastgw-timeout header) passed before an answer came.",
        "timeout_error",
        "request_timeout",
    )
    if attempts:
        err.headers.extend(_routing_headers(target, attempts, fallbacks))
    return err


def _all_open_error(route: Route, wait: float) -> GatewayError:
    seconds = max(1, math.ceil(wait))
    return GatewayError(
        503,
        f"Every target of model '{route.name}' is failing and paused by its circuit breaker; "
        f"retry in {seconds}s.",
        "unavailable",
        "circuit_open",
        headers=[(b"retry-after", b"%d" % seconds)],
    )


app = Gateway()
