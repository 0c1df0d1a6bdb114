"""Metering: what a request is estimated to use before the call and what it cost after.

- **Before the call**: the prompt's tokens are estimated in ``_core`` (``tokens.estimate_json``
  over the request body; docs/tokens.md gives its accuracy). The estimate reserves
  tokens/min, prices the budget reservation (with the request's ``max_tokens``, else the
  model's max output), and refuses a prompt that cannot fit the model's context window with
  a 400 before any upstream call. The estimator's error bound is respected: a prompt is
  refused only when even ``estimate × (1 − ESTIMATE_BOUND)`` is over the window, so an
  over-estimate never refuses a prompt that fits.
- **After the call**: usage reported by the provider always wins. When there is none (a
  stream cut by the client, a provider that sends no usage), the prompt estimate and the
  completion text the client was sent (counted per relayed chunk, ``count_delivered``) are
  billed instead, flagged as estimated.
- **Cost** = catalog price × usage (``fastgw.catalog.cost``), per the target's upstream
  model; a model the catalog does not know costs nothing and is counted as unpriced.

The catalog is the shipped file, the ``catalog.path`` file (followed at run time by a
``CatalogWatcher``: ``fastgw catalog update`` swaps a new one in without a restart) and the
config's ``catalog.models``.
"""

from __future__ import annotations

import asyncio

import msgspec

from .._core.tally import PriceBook, format_usd
from .._core.tokens import estimate_json, estimate_json_fields
from ..api.errors import GatewayError
from ..catalog import CatalogHolder, CatalogWatcher, ModelEntry, cost, default_path
from ..config.schema import GatewayConfig
from ..routing.router import Target
from ..tasks import stop_task

__all__ = [
    "ESTIMATE_BOUND",
    "OVERFLOW_FACTOR",
    "STREAM_TEXT_FIELDS",
    "Meter",
    "Usage",
    "count_delivered",
    "estimate_prompt",
    "format_usd",
    "responses_stream_usage",
    "responses_usage",
]

#: ``(prompt, completion, total, cached)`` tokens, as the relay reports them.
Usage = tuple[int, int, int, int]

#: The estimator's documented worst-case relative error on a whole prompt (docs/tokens.md).
ESTIMATE_BOUND = 0.15

#: The JSON members of stream events that carry text the client is sent: OpenAI chunks
#: (``content``, tool ``arguments``, ``reasoning_content``) and Anthropic events (``text``,
#: ``partial_json``, ``thinking``).
STREAM_TEXT_FIELDS = (
    b"content",
    b"arguments",
    b"reasoning_content",
    b"text",
    b"partial_json",
    b"thinking",
)

#: The most tokens the estimator gives per byte of a JSON body (``{}``: 3 tokens, 2 bytes).
OVERFLOW_FACTOR = 2

_PER_MILLION = 1_000_000.0

#: The output tokens a reservation assumes when neither the request nor the catalog says.
DEFAULT_MAX_OUTPUT = 4096


def count_delivered(data: bytes) -> int:
    """Estimated tokens of the text in relayed stream bytes (whole SSE events)."""
    return estimate_json_fields(data, STREAM_TEXT_FIELDS)


def estimate_prompt(raw: bytes) -> int:
    """Estimated prompt tokens of a request body (at least 1)."""
    return estimate_json(raw) or 1


class Meter:
    """The catalog of one worker and the per-request arithmetic on it."""

    def __init__(self, cfg: GatewayConfig) -> None:
        path = cfg.catalog.path or default_path()
        self.watcher = CatalogWatcher(path, cfg.catalog.models, interval=cfg.catalog.watch)
        self.holder = CatalogHolder(self.watcher.initial())
        #: model name → its catalog entry (None: unknown), for the current catalog
        self._entries: dict[str, ModelEntry | None] = {}
        #: The per-token prices of the models billed, for the current catalog, and what
        #: was billed since start (``_core``: a bill is one compiled call).
        self.book = PriceBook(self._price_of, cost)
        self._windows()
        self.holder.on_swap(self._fresh)
        self._task: asyncio.Task[None] | None = None
        #: Answers billed since start with usage the gateway estimated.
        self.estimated = 0

    def start(self) -> None:
        """Follow ``catalog.path`` (a new catalog is used from the next request on)."""
        if self._task is None:
            self._task = asyncio.create_task(self.watcher.run(self.holder))

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    def _windows(self) -> None:
        """What the request path tests inline, from the current catalog's windows."""
        windows = [e.context_window for e in self.holder.current.entries.values()]
        #: The smallest context window of the catalog: a prompt estimated below it fits
        #: every target (``fitting`` has nothing to look up) …
        self.smallest_window = min(windows, default=0)
        #: … that is, a prompt estimated at most this many tokens (as ``fitting`` computes)
        n = int(self.smallest_window / (1.0 - ESTIMATE_BOUND))
        while n > 0 and n * (1.0 - ESTIMATE_BOUND) > self.smallest_window:
            n -= 1
        self.fits_estimate = n
        #: Bodies up to this many bytes fit every context window of the catalog (no
        #: estimate is needed to know it).
        self.always_fits = int(self.smallest_window / (OVERFLOW_FACTOR * (1.0 - ESTIMATE_BOUND)))

    def _fresh(self) -> None:
        """A new catalog was swapped in (``CatalogHolder.on_swap``): forget what was looked
        up in the old one."""
        self._entries = {}
        self.book.clear()
        self._windows()

    def entry(self, model: str) -> ModelEntry | None:
        """The catalog entry of an upstream model name (aliases and prefixes resolved)."""
        try:
            return self._entries[model]
        except KeyError:
            if len(self._entries) > 4096:
                self._entries = {}
            found = self._entries[model] = self.holder.current.get(model)
            return found

    def may_overflow(self, targets: list[Target], default_model: str, body_bytes: int) -> bool:
        """Whether a body of ``body_bytes`` could hold a prompt over some target's context
        window (so the prompt must be estimated): the estimate is at most
        ``OVERFLOW_FACTOR × body_bytes`` (3 tokens per JSON object, ``{}``, is the densest)."""
        if body_bytes <= self.always_fits:
            return False  # fits the smallest window the catalog knows
        tokens = OVERFLOW_FACTOR * body_bytes * (1.0 - ESTIMATE_BOUND)
        for t in targets:
            e = self.entry(t.model or default_model)
            if e is not None and tokens > e.context_window:
                return True
        return False

    def fitting(self, targets: list[Target], default_model: str, estimate: int) -> list[Target]:
        """``targets`` less those whose model's context window the prompt cannot fit; 400
        ``context_length_exceeded`` when none is left (no upstream call is made)."""
        low = estimate * (1.0 - ESTIMATE_BOUND)
        if low <= self.smallest_window:
            return targets
        keep: list[Target] = []
        over: list[tuple[str, int]] = []
        for t in targets:
            e = self.entry(t.model or default_model)
            if e is not None and low > e.context_window:
                over.append((e.name, e.context_window))
            else:
                keep.append(t)
        if keep:
            return keep if over else targets
        name, window = max(over, key=lambda x: x[1])
        raise GatewayError(
            400,
            f"This model's maximum context length is {window} tokens; the prompt is about "
            f"{estimate} tokens (estimated by the gateway), more than '{name}' can take. "
            "Shorten the messages.",
            "invalid_request_error",
            "context_length_exceeded",
            param="messages",
        )

    def max_cost(
        self, targets: list[Target], default_model: str, estimate: int, max_tokens: int | None
    ) -> float:
        """The most the request can cost on any of ``targets``: the prompt estimate and
        ``max_tokens`` (else the model's max output, else ``DEFAULT_MAX_OUTPUT``) at the
        dearest target's prices; unpriced targets count as 0."""
        worst = 0.0
        for t in targets:
            e = self.entry(t.model or default_model)
            if e is None:
                continue
            out = max_tokens or e.max_output_tokens or DEFAULT_MAX_OUTPUT
            worst = max(worst, cost(e, estimate, out))
        return worst

    def bill(self, target: Target, default_model: str, usage: Usage) -> float | None:
        """The USD cost of ``usage`` on ``target``; None when its model has no price. The
        same arithmetic as ``catalog.cost`` (prices per token divided out once per entry,
        bit for bit the same floats; ``PriceBook.bill``, which the request path calls)."""
        return self.book.bill(target.model or default_model, usage)

    def _price_of(self, name: str) -> tuple[float, float, float, ModelEntry | None] | None:
        """Per-token prices of model ``name`` (input, cached input, output; the entry when it
        has a long-context tier, which ``catalog.cost`` prices), for ``book``."""
        e = self.entry(name)
        if e is None:
            return None
        cached = e.cached_input if e.cached_input is not None else e.input
        tier = e if e.long_context is not None else None
        return (e.input / _PER_MILLION, cached / _PER_MILLION, e.output / _PER_MILLION, tier)

    @property
    def cost_usd(self) -> float:
        """USD billed since start."""
        return self.book.cost_usd

    @property
    def requests(self) -> int:
        """Answers billed since start (priced or not)."""
        return self.book.requests

    @property
    def unpriced(self) -> int:
        """Answers billed since start whose model has no price."""
        return self.book.unpriced

    def metrics(self) -> dict[str, float]:
        return {
            "cost_usd": self.cost_usd,
            "requests": self.requests,
            "unpriced": self.unpriced,
            "estimated": self.estimated,
            "catalog_swaps": self.holder.swaps,
            "catalog_models": len(self.holder.current),
        }


class _Details(msgspec.Struct):
    cached_tokens: int | None = None


class _RUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: _Details | None = None


class _RInner(msgspec.Struct):
    usage: _RUsage | None = None


class _RView(msgspec.Struct):
    usage: _RUsage | None = None
    response: _RInner | None = None


_responses_decoder = msgspec.json.Decoder(_RView)


def responses_usage(data: bytes) -> Usage | None:
    """The usage of a Responses API answer (``usage``) or stream event (``response.usage``
    of ``response.completed``), whose counts are ``input_tokens``/``output_tokens``."""
    try:
        view = _responses_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    u = view.usage if view.response is None else view.response.usage
    if u is None:
        return None
    prompt, out = u.input_tokens or 0, u.output_tokens or 0
    cached = (u.input_tokens_details.cached_tokens or 0) if u.input_tokens_details else 0
    return (prompt, out, prompt + out, cached)


def responses_stream_usage(data: bytes) -> Usage | None:
    """The last usage in relayed Responses API stream bytes (whole SSE events)."""
    found = None
    for line in data.splitlines():
        if line.startswith(b"data:") and b'"usage"' in line:
            found = responses_usage(line[5:]) or found
    return found
