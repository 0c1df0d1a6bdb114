"""Metering arithmetic of the request path, the pure-Python reference twin of ``_tally_c``:

- ``PriceBook.bill``: an answer's USD cost, a model's per-token prices × its usage (the
  prices looked up once per model name through a callback, and remembered until ``clear``),
  with the running totals of what was billed;
- ``format_usd``: the ``x-fastgw-cost-usd`` value;
- ``Journal.add``: a settled answer added to the spend sums of its minute (the queued ledger
  sums of its row and tags, found once per minute and key through a callback).

The callbacks keep the catalog and the ledger in Python: the twins only do the per-request
arithmetic, which the compiled one does without a Python frame. Both give the same floats
for every input (the same operations in the same order on IEEE doubles).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, MutableSequence, Sequence
from typing import Any

__all__ = ["COST_HEADER", "Journal", "PriceBook", "Sums", "accumulate", "format_usd"]

#: ``(prompt, completion, total, cached)`` tokens.
Usage = tuple[int, int, int, int]
#: Per-token USD prices: input, cached input, output; and, when a long-context tier applies,
#: what the ``tiered`` callback prices instead (the catalog entry).
Prices = tuple[float, float, float, Any]


#: The answer header that carries its cost.
COST_HEADER = b"x-fastgw-cost-usd"


def format_usd(usd: float) -> bytes:
    """The ``x-fastgw-cost-usd`` value: fixed point, 10 decimals (1e-10 USD)."""
    return b"%.10f" % usd


class Sums(list[float]):
    """Six running sums of settled answers: requests, estimated (of those, the ones whose
    usage the gateway estimated), prompt, completion and cached tokens, USD. A list of six
    floats here; the compiled twin keeps them as C doubles (``accumulate`` adds without
    making a float object), with the same indexing."""

    __slots__ = ()

    def __init__(self, values: Iterable[float] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)) -> None:
        got = [float(v) for v in values]
        if len(got) != 6:
            raise ValueError("Sums holds six numbers")
        super().__init__(got)


def accumulate(
    sinks: Sequence[MutableSequence[float]],
    prompt: int,
    completion: int,
    cached: int,
    cost: float | None,
    estimated: bool,
) -> None:
    """Add one settled answer to each ``Sums`` (or list of six floats) in place; ``cost``
    None: unpriced, 0 USD."""
    usd = cost if cost is not None else 0.0
    for s in sinks:
        s[0] += 1.0
        if estimated:
            s[1] += 1.0
        s[2] += prompt
        s[3] += completion
        s[4] += cached
        s[5] += usd


class PriceBook:
    """Per-token prices by model name, looked up by ``lookup(name)`` (None: the model has no
    price) the first time a name is billed and remembered (at most ``limit`` names, then
    forgotten at once) until ``clear``; what ``bill`` charged since start."""

    __slots__ = ("_lookup", "_prices", "_tiered", "cost_usd", "limit", "requests", "unpriced")

    def __init__(
        self,
        lookup: Callable[[str], Prices | None],
        tiered: Callable[[Any, int, int, int], float],
        limit: int = 4096,
    ) -> None:
        self._lookup = lookup
        self._tiered = tiered
        self._prices: dict[str, Prices | None] = {}
        self.limit = limit
        #: Since start: USD billed, answers billed, of which unpriced.
        self.cost_usd = 0.0
        self.requests = 0
        self.unpriced = 0

    def bill(self, name: str, usage: Usage) -> float | None:
        """The USD cost of ``usage`` (cached input tokens are part of the prompt's, at most
        all of it) on model ``name``; None when it has no price. With a tier entry,
        ``tiered(entry, prompt, completion, cached)`` prices it."""
        self.requests += 1
        try:
            prices = self._prices[name]
        except KeyError:
            prices = self._lookup(name)
            if len(self._prices) >= self.limit:
                self._prices = {}
            self._prices[name] = prices
        if prices is None:
            self.unpriced += 1
            return None
        prompt, completion, _, cached = usage
        if cached > prompt:
            cached = prompt
        pin, pcached, pout, tier = prices
        if tier is not None:
            usd = float(self._tiered(tier, prompt, completion, cached))
        else:
            usd = pin * (prompt - cached) + pcached * cached + pout * completion
        self.cost_usd += usd
        return usd

    def charge(
        self,
        name: str,
        usage: Usage,
        headers: list[tuple[bytes, bytes]],
        journal: Journal | None,
        key: Hashable,
    ) -> float | None:
        """A whole answer settled in one call: ``bill`` it, add it to ``journal`` (if any)
        under ``key``, and when it has a price append its ``x-fastgw-cost-usd`` header to
        ``headers``; the USD cost (None: unpriced)."""
        usd = self.bill(name, usage)
        if journal is not None:
            journal.add(key, usage, usd, False)
        if usd is not None:
            headers.append((COST_HEADER, format_usd(usd)))
        return usd

    def clear(self) -> None:
        """Forget every price looked up (a new catalog is in)."""
        self._prices = {}


class Journal:
    """Where settled answers are summed: per ``key`` (any hashable: the caller, target and
    model of an answer) and minute, the lists of six sums ``miss(minute, key)`` gives
    (requests, estimated, prompt, completion and cached tokens, USD; None: not recorded,
    e.g. a full queue), asked once per key and minute and kept (at most ``limit`` keys,
    then forgotten at once) until ``clear`` (the ledger took those lists for a write).
    ``clock``: the time in seconds since the epoch (default: the system clock)."""

    __slots__ = ("_clock", "_hits", "_miss", "limit", "recorded")

    def __init__(
        self,
        miss: Callable[[int, Any], Sequence[MutableSequence[float]] | None],
        limit: int = 4096,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._miss = miss
        self._clock = clock
        self._hits: dict[Hashable, tuple[int, Sequence[MutableSequence[float]]]] = {}
        self.limit = limit
        #: Answers added since start.
        self.recorded = 0

    def add(self, key: Hashable, usage: Usage, cost: float | None, estimated: bool) -> bool:
        """Add one settled answer (``cost`` None: unpriced, 0 USD) to the sums of ``key``
        this minute; False when ``miss`` gave none (nothing is added)."""
        now = self._clock() if self._clock is not None else time.time()
        minute = int(now // 60)
        hit = self._hits.get(key)
        if hit is None or hit[0] != minute:
            sinks = self._miss(minute, key)
            if sinks is None:
                return False
            if len(self._hits) >= self.limit:
                self._hits.clear()
            hit = self._hits[key] = (minute, sinks)
        prompt, completion, _, cached = usage
        accumulate(hit[1], prompt, completion, cached, cost, estimated)
        self.recorded += 1
        return True

    def clear(self) -> None:
        """Forget the sums handed out (they are being written: the next answer of each key
        asks ``miss`` again)."""
        self._hits.clear()
