"""Spend budgets per key, team and tag that are never overshot by more than the requests in
flight (docs/budgets.md).

**Reservation arithmetic.** Each budget has one charge counter per period in the state
backend (``fastgw.state``: shared by the workers of a host, or by every host with Redis):
``budget:<kind>:<name>:<period id>``. Before the call, ``Budgets.reserve`` adds the
request's estimated *maximum* cost (prompt estimate plus ``max_tokens``, priced by the
catalog — the caller computes it) to the counters of every budget that applies — the key's,
its team's, each of its tags' — in one all-or-nothing ``charge_many`` whose caps are the
budgets: either every counter stays within its budget, or nothing is charged and the
request is refused. After the call ``Reservation.settle`` adds ``actual − reserved`` to each
counter it charged. So a counter holds the settled spend plus the reservations of the
requests in flight, never more than the budget at admission, and the spend ends above the
budget only when requests cost more than they reserved (a usage above ``max_tokens``, a
price change): by at most those differences.

**Periods** are UTC: ``daily`` (id ``2026-11-23``), ``weekly`` (ISO weeks from Monday, id
``2026-W48``), ``monthly`` (id ``2026-11``), and rolling ``<N>d``: one counter per UTC day
(the daily id), where a reservation charges today's counter with the cap ``usd − (the
previous N−1 days' spend)``; those days are read at most every ``ROLLING_CACHE`` seconds.
A rolling window therefore moves by whole days: at each UTC midnight the oldest day leaves
it. A counter lives for its period plus a day (its ``ttl``), so old periods go away.

**Over the limit** the request gets 429 ``budget_exceeded`` (``Retry-After``: seconds to the
reset, or for a rolling window to the midnight when enough spend has left it) — unless the
budget that refuses says ``on_exceed: fallback``: then the reservation carries the fallback
model (nothing is charged) and the caller asks again for that model. A budget never refuses
its own fallback model (its spend is still counted), and a request is rerouted at most once.

**Soft threshold.** Answers of a request admitted while a budget's spend (with the
reservations in flight) is past ``soft × usd`` carry ``x-fastgw-budget-warning``; the first
time per budget, period and worker, a ``budget.soft_threshold`` warning is logged and
counted (``metrics()``).

**Persistence.** Every settled request is recorded in the ``Ledger`` (an SQLite file, written
in batches off the event loop). ``start()`` seeds the counters of the current periods from
it with ``State.seed`` — set only when absent, so a counter that survived (shared memory,
Redis) is never counted twice.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, NamedTuple

from ..api.errors import GatewayError
from ..config.budgetspec import parse_period
from ..config.schema import BudgetConfig, GatewayConfig
from ..state import Charge, State, StateUnavailable
from .keys import Principal
from .ledger import Ledger, open_ledger
from .store import BudgetRecord, to_budget_config

__all__ = [
    "DAY",
    "Budgets",
    "Period",
    "Reservation",
    "Window",
    "counter_key",
    "open_ledger",
    "window",
]

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

DAY = 86400.0
#: How long a counter outlives its period: late settlements of requests admitted just before
#: the reset still find it.
TTL_MARGIN = DAY
#: Seconds the previous days of a rolling window are cached per worker.
ROLLING_CACHE = 5.0
#: Seconds between two sends of the queued settlements.
SETTLE_INTERVAL = 0.1

_EPOCH = datetime.date(1970, 1, 1).toordinal()


def _date(day: int) -> datetime.date:
    return datetime.date.fromordinal(_EPOCH + day)


def _day(d: datetime.date) -> int:
    return d.toordinal() - _EPOCH


class Period:
    """A budget period, parsed once: its kind, its length in days (rolling, daily, weekly;
    0 for months), how messages name it and its counters' ``ttl``."""

    __slots__ = ("days", "kind", "label", "text", "ttl")

    def __init__(self, text: str) -> None:
        self.text = text
        self.kind, self.days = parse_period(text)
        self.label = self.kind if self.kind != "rolling" else f"{self.days}-day"
        longest = 31 if self.kind == "monthly" else self.days
        self.ttl = longest * DAY + TTL_MARGIN


class Window(NamedTuple):
    """Where a period stands at a time."""

    #: The id of the counter charged now (the day's id for a rolling window).
    id: str
    #: Unix time the period (the rolling window) began.
    start: float
    #: Unix time it resets (rolling: the next midnight, when the oldest day leaves).
    reset: float
    #: Rolling windows: the ids of the previous N−1 days, oldest first; else empty.
    previous: tuple[str, ...] = ()


def window(period: Period, ts: float) -> Window:
    """The window of ``period`` at Unix time ``ts`` (UTC)."""
    day = math.floor(ts / DAY)
    d = _date(day)
    if period.kind == "daily":
        return Window(d.isoformat(), day * DAY, (day + 1) * DAY)
    if period.kind == "weekly":
        year, week, weekday = d.isocalendar()
        start = day - (weekday - 1)
        return Window(f"{year:04d}-W{week:02d}", start * DAY, (start + 7) * DAY)
    if period.kind == "monthly":
        first = d.replace(day=1)
        after = (
            datetime.date(d.year + 1, 1, 1)
            if d.month == 12
            else d.replace(month=d.month + 1, day=1)
        )
        return Window(f"{d.year:04d}-{d.month:02d}", _day(first) * DAY, _day(after) * DAY)
    n = period.days
    previous = tuple(_date(day - k).isoformat() for k in range(n - 1, 0, -1))
    return Window(d.isoformat(), (day - n + 1) * DAY, (day + 1) * DAY, previous)


def _escape(name: str) -> str:
    """A name safe between the ``:`` of a counter key (``%`` and ``:`` escaped), so that no
    name can pose as another name's period."""
    return name.replace("%", "%25").replace(":", "%3A")


def counter_key(kind: str, name: str, period_id: str) -> str:
    """The charge counter of a budget's period: ``budget:<kind>:<name>:<period id>``."""
    return f"budget:{kind}:{_escape(name)}:{period_id}"


def _usd(x: float) -> str:
    """Dollars for a header or a message: cents when at least a dollar, else up to six
    decimals (a request may cost a fraction of a cent)."""
    if abs(x) >= 1:
        return f"{x:.2f}"
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _amount(x: float) -> bytes:
    """Dollars for a header: a plain decimal number, to the millionth of a dollar."""
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return b"0" if text in ("", "-0") else text.encode()


def _ascii(text: str) -> bytes:
    """A header value: printable ASCII, anything else as ``?``."""
    return "".join(c if " " <= c <= "~" else "?" for c in text).encode()


def _iso(ts: float, utc: str = "Z") -> str:
    """A Unix time as ISO 8601 UTC to the second: ``Z`` in messages, ``+00:00`` (the admin
    API's other times) in answers."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S") + utc


class _Scope:
    """One budget (of a key, a team or a tag) and its per-worker state: the current
    window, the cached previous days of a rolling window, the period last alerted."""

    __slots__ = (
        "alerted",
        "budget",
        "counter",
        "day",
        "fallback",
        "kind",
        "label",
        "limit_header",
        "name",
        "period",
        "prev",
        "prev_at",
        "prev_day",
        "prev_days",
        "rolling",
        "scope_header",
        "soft",
        "source",
        "usd",
        "win",
    )

    def __init__(self, kind: str, name: str, budget: BudgetConfig, source: str) -> None:
        self.kind = kind
        self.name = name
        self.label = f"{kind} '{name}'"
        self.budget = budget
        self.source = source
        self.period = Period(budget.period)
        self.usd = budget.usd
        self.soft = budget.soft
        self.fallback = budget.fallback_model if budget.on_exceed == "fallback" else None
        #: A window of several days (previous days capped together with today).
        self.rolling = self.period.kind == "rolling" and self.period.days > 1
        #: Header values built once.
        self.scope_header = _ascii(f"{kind}:{name}")
        self.limit_header = _amount(budget.usd)
        self.day = -1
        self.win = Window("", 0.0, 0.0)
        self.counter = ""
        #: Rolling: the previous days' spend (sum, per day) as read at ``prev_at`` for
        #: ``prev_day``.
        self.prev = 0.0
        self.prev_days: list[float] = []
        self.prev_at = -math.inf
        self.prev_day = -1
        #: The period id last alerted for (once per period and worker).
        self.alerted = ""

    def roll(self, now: float) -> None:
        """The window of ``now`` (recomputed only when the UTC day changed)."""
        day = math.floor(now / DAY)
        if day != self.day:
            self.day = day
            self.win = window(self.period, now)
            self.counter = counter_key(self.kind, self.name, self.win.id)

    def same(self, other: _Scope) -> bool:
        return self.budget == other.budget and self.source == other.source


class Reservation:
    """What ``Budgets.reserve`` answers: the spend reserved on each counter (to settle
    after the call) and the headers for the answer — or, with ``fallback`` set, the model
    to serve the request with instead (nothing reserved)."""

    __slots__ = ("_budgets", "_charged", "fallback", "headers", "reserved", "settled")

    def __init__(
        self,
        budgets: Budgets,
        charged: list[tuple[_Scope, str, float]],
        reserved: float,
        headers: Headers,
        fallback: str | None = None,
    ) -> None:
        self._budgets = budgets
        #: (budget, counter key, its ttl) of every counter charged.
        self._charged = charged
        #: USD reserved on each counter.
        self.reserved = reserved
        #: ``x-fastgw-budget-*`` headers of the tightest budget (and the warnings).
        self.headers = headers
        #: Over a budget with ``on_exceed: fallback``: the model to serve the request with.
        self.fallback = fallback
        self.settled = False

    def settle_nowait(self, actual_cost: float) -> None:
        """``settle`` from synchronous code."""
        if self.settled:
            return
        if not 0.0 <= actual_cost < math.inf:
            raise ValueError(f"actual_cost must be a finite number >= 0, not {actual_cost!r}")
        self.settled = True
        if self._charged:
            self._budgets.counts["settlements"] += 1
        delta = actual_cost - self.reserved
        if delta:
            for scope, key, ttl in self._charged:
                self._budgets.owe(scope, key, delta, ttl)

    async def settle(self, actual_cost: float) -> None:
        """The request cost ``actual_cost`` USD: each counter charged gets ``actual −
        reserved`` (queued, sent within ``SETTLE_INTERVAL``; summed per counter, so exact).
        Call it once per request — 0 when nothing was spent (the call failed before the
        provider answered); a second call does nothing. A reservation never settled stays
        charged (an over-count, never an under-count) until its period ends."""
        self.settle_nowait(actual_cost)

    async def release(self) -> None:
        """Nothing was spent: give the whole reservation back (``settle(0)``)."""
        self.settle_nowait(0.0)


class Budgets:
    """The budgets of a gateway (config and run time) over one state backend and one
    ledger; ``reserve`` per request, ``record`` per settled request."""

    def __init__(
        self,
        cfg: GatewayConfig,
        ledger: Ledger,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        #: The counters' backend; set at start-up (the one the Limiter uses).
        self.state: State | None = None
        #: Public model names (and patterns) a fallback model must be among.
        self.models = tuple(cfg.models)
        self.teams = frozenset(cfg.teams)
        #: Budgets of the config file, by (kind, name).
        self.config: dict[tuple[str, str], BudgetConfig] = {}
        for k in cfg.keys:
            if k.budget is not None:
                self.config["key", k.name] = k.budget
        for name, t in cfg.teams.items():
            if t.budget is not None:
                self.config["team", name] = t.budget
        for name, b in cfg.budgets.tags.items():
            self.config["tag", name] = b
        #: Budgets set at run time (the admin API), by (kind, name): they win over the config.
        self.records: dict[tuple[str, str], BudgetRecord] = {}
        self.scopes: dict[tuple[str, str], _Scope] = {}
        self._plans: dict[tuple[str, str | None, frozenset[str], str], list[tuple[_Scope, bool]]]
        self._plans = {}
        self._build()
        self._owed: dict[str, tuple[float, float, _Scope]] = {}
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        #: Counters for /metrics (this worker's).
        self.counts = {
            "reservations": 0,
            "refused": 0,
            "fallbacks": 0,
            "soft_alerts": 0,
            "settlements": 0,
            "settle_errors": 0,
            "seeded": 0,
        }

    # -- the budgets ------------------------------------------------------------------------

    def _build(self) -> list[_Scope]:
        """The scopes of the config and the records; the new or changed ones."""
        old = self.scopes
        scopes: dict[tuple[str, str], _Scope] = {}
        for (kind, name), b in self.config.items():
            scopes[kind, name] = _Scope(kind, name, b, "config")
        for (kind, name), r in self.records.items():
            scopes[kind, name] = _Scope(kind, name, to_budget_config(r), "admin")
        changed = []
        for ident, s in scopes.items():
            before = old.get(ident)
            if before is not None and before.same(s):
                scopes[ident] = before  # keeps its window, caches and alert state
            else:
                if before is not None:
                    s.alerted = before.alerted
                changed.append(s)
        self.scopes = scopes
        self._plans = {}
        return changed

    @property
    def active(self) -> bool:
        """Any budget applies (configured or set at run time)."""
        return bool(self.scopes)

    def update(self, records: list[BudgetRecord]) -> None:
        """The budgets set at run time changed (``KeySync`` saw the store change): apply them
        from the next request on. A budget new to this worker has its counters restored from
        the ledger (in the background) when the gateway is started."""
        self.records = {(r.kind, r.name): r for r in records}
        changed = self._build()
        if changed and self._started and self.state is not None:
            self._spawn(self._replay(changed))

    def effective(self) -> list[tuple[str, str, BudgetConfig, str]]:
        """Every budget in force on this worker: (kind, name, budget, source ``config`` or
        ``admin``), by kind and name."""
        return [
            (s.kind, s.name, s.budget, s.source)
            for _, s in sorted(self.scopes.items(), key=lambda kv: kv[0])
        ]

    def _plan(self, principal: Principal, model: str) -> list[tuple[_Scope, bool]]:
        """The budgets of a caller for a model, and whether each is exempt (its own
        fallback model), built once per (key, team, tags, model)."""
        ck = (principal.name, principal.team, principal.tags, model)
        plan = self._plans.get(ck)
        if plan is None:
            found = [self.scopes.get(("key", principal.name))]
            if principal.team is not None:
                found.append(self.scopes.get(("team", principal.team)))
            found += [self.scopes.get(("tag", t)) for t in sorted(principal.tags)]
            plan = [(s, s.fallback == model) for s in found if s is not None]
            if len(self._plans) > 65536:
                self._plans.clear()
            self._plans[ck] = plan
        return plan

    # -- per request ------------------------------------------------------------------------

    async def reserve(
        self,
        principal: Principal | None,
        model: str,
        max_cost: float,
        *,
        rerouted: Reservation | None = None,
    ) -> Reservation | None:
        """Reserve ``max_cost`` USD (the request's estimated maximum) on every budget of
        ``principal`` at once; None when no budget applies. ``model`` is the public model
        name. Over a budget: 429 ``budget_exceeded`` taking nothing — or, when that budget
        falls back, a reservation whose ``fallback`` names the model to use: call
        ``reserve`` again for it with ``rerouted=`` that reservation (a second fallback is
        then a 429). 503 ``state_unavailable`` when the state backend is unreachable and
        set to fail closed."""
        if principal is None or not self.scopes:
            return None
        plan = self._plan(principal, model)
        if not plan:
            return None
        if not 0.0 <= max_cost < math.inf:
            raise ValueError(f"max_cost must be a finite number >= 0, not {max_cost!r}")
        state = self.state
        assert state is not None, "Budgets.state is set at start-up"
        try:
            return await self._reserve(state, plan, model, max_cost, rerouted)
        except StateUnavailable:
            raise GatewayError(
                503,
                "The gateway cannot check budgets right now (its shared state is "
                "unreachable); retry shortly.",
                "unavailable",
                "state_unavailable",
                headers=[(b"retry-after", b"1")],
            ) from None

    async def _reserve(
        self,
        state: State,
        plan: list[tuple[_Scope, bool]],
        model: str,
        max_cost: float,
        rerouted: Reservation | None,
    ) -> Reservation:
        now = self.clock()
        charges: list[Charge] = []
        ttl = 0.0
        for s, exempt in plan:
            s.roll(now)
            cap = s.usd
            if s.rolling:
                cap -= await self._previous(state, s)
            charges.append(Charge(s.counter, max_cost, math.inf if exempt else cap))
            ttl = max(ttl, s.period.ttl)
        spent = await state.charge_many(charges, ttl=ttl)
        self.counts["reservations"] += 1
        # what each budget has spent (settled + in flight), this request included if admitted
        totals = [
            sp.total + (s.prev if s.rolling else 0.0)
            for (s, _), sp in zip(plan, spent, strict=True)
        ]
        if all(sp.allowed for sp in spent):
            headers = self._headers(plan, totals, max_cost, now)
            if rerouted is not None:
                headers = rerouted.headers + headers
            # the counters charged (not ``s.counter`` now: another request may have rolled a
            # budget into its next period while this one waited for the state)
            charged = [(s, c.key, s.period.ttl) for (s, _), c in zip(plan, charges, strict=True)]
            return Reservation(self, charged, max_cost, headers)
        # the budgets this request does not fit (each charge alone); a budget that rejects
        # wins over one that falls back
        refusing = [
            (s, total)
            for (s, _), sp, total in zip(plan, spent, totals, strict=True)
            if not sp.allowed
        ]
        if not refusing:  # pragma: no cover - one counter per budget: some charge refused
            refusing = [(plan[0][0], totals[0])]
        s, total = refusing[0]
        for candidate in refusing:
            if candidate[0].fallback is None:
                s, total = candidate
                break
        if s.fallback is not None and rerouted is None:
            self.counts["fallbacks"] += 1
            why = f"{model} -> {s.fallback} ({s.label} is over its {s.period.label} budget)"
            return Reservation(
                self, [], 0.0, [(b"x-fastgw-budget-fallback", _ascii(why))], s.fallback
            )
        self.counts["refused"] += 1
        raise self._refusal(s, total, max_cost, now)

    async def _previous(self, state: State, s: _Scope) -> float:
        """A rolling budget's spend over the previous N−1 days (cached ``ROLLING_CACHE``
        seconds: those days change only by late settlements)."""
        mono = time.monotonic()
        if s.prev_day != s.day or mono - s.prev_at > ROLLING_CACHE:
            day, keys = s.day, [counter_key(s.kind, s.name, d) for d in s.win.previous]
            got = await state.charge_many([Charge(k, 0.0, math.inf) for k in keys])
            if s.day == day:  # the window did not move meanwhile
                s.prev_days = [g.total for g in got]
                s.prev = math.fsum(s.prev_days)
                s.prev_day = day
                s.prev_at = mono
        return s.prev

    def _headers(
        self, plan: list[tuple[_Scope, bool]], totals: list[float], cost: float, now: float
    ) -> Headers:
        """``x-fastgw-budget-*`` of the budget with the least left, and the warnings of the
        budgets past their soft threshold (spend before this request)."""
        s, left = plan[0][0], plan[0][0].usd - totals[0]
        for i in range(1, len(plan)):
            other = plan[i][0]
            if other.usd - totals[i] < left:
                s, left = other, other.usd - totals[i]
        left = max(0.0, left)
        headers: Headers = [
            (b"x-fastgw-budget-scope", s.scope_header),
            (b"x-fastgw-budget-limit-usd", s.limit_header),
            (b"x-fastgw-budget-remaining-usd", _amount(left)),
            (b"x-fastgw-budget-reset", b"%ds" % max(0, math.ceil(s.win.reset - now))),
        ]
        warnings = []
        for (b, _), total in zip(plan, totals, strict=True):
            before = total - cost
            if b.soft is not None and before >= b.soft * b.usd:
                pct = math.floor(100 * before / b.usd)
                warnings.append(f"{b.label} at {pct}% of its {b.period.label} budget")
                self._alert(b, before)
        if warnings:
            headers.append((b"x-fastgw-budget-warning", _ascii("; ".join(warnings))))
        return headers

    def _alert(self, s: _Scope, spent: float) -> None:
        """The soft threshold's alert: once per budget, period and worker."""
        if s.alerted == s.win.id:
            return
        s.alerted = s.win.id
        self.counts["soft_alerts"] += 1
        log.warning(
            "budget.soft_threshold scope=%s:%s period=%s spent=%s limit=%s",
            s.kind,
            s.name,
            s.win.id,
            _usd(spent),
            _usd(s.usd),
            extra={
                "event": "budget.soft_threshold",
                "scope": f"{s.kind}:{s.name}",
                "period": s.win.id,
                "spent": spent,
                "limit": s.usd,
            },
        )

    def _refusal(self, s: _Scope, total: float, cost: float, now: float) -> GatewayError:
        """The 429 of budget ``s``: what it holds, and when a retry can succeed."""
        spent = total  # as refused: nothing of this request is in it
        reset = s.win.reset
        if s.rolling:
            # the first midnight at which enough of the window's spend has left it
            days = [*s.prev_days, total - s.prev]
            for k in range(1, len(days) + 1):
                if math.fsum(days[k:]) + cost <= s.usd:
                    reset = (s.day + k) * DAY
                    break
        if cost > s.usd:
            message = (
                f"The request may cost up to ${_usd(cost)}, more than the whole "
                f"{s.period.label} budget of {s.label} (${_usd(s.usd)})."
            )
        else:
            when = "resets" if not s.rolling else "has room again"
            message = (
                f"{s.label} is over its {s.period.label} budget of ${_usd(s.usd)}: "
                f"${_usd(spent)} spent or reserved, and this request may cost up to "
                f"${_usd(cost)}. The budget {when} at {_iso(reset)}."
            )
        wait = max(1, math.ceil(reset - now))
        return GatewayError(
            429,
            message,
            "insufficient_quota",
            "budget_exceeded",
            headers=[
                (b"retry-after", b"%d" % wait),
                (b"x-fastgw-budget-scope", s.scope_header),
                (b"x-fastgw-budget-limit-usd", s.limit_header),
                (b"x-fastgw-budget-remaining-usd", _amount(max(0.0, s.usd - spent))),
                (b"x-fastgw-budget-reset", b"%ds" % max(0, math.ceil(s.win.reset - now))),
            ],
        )

    # -- settlement -------------------------------------------------------------------------

    def owe(self, scope: _Scope, key: str, delta: float, ttl: float) -> None:
        """Queue ``delta`` for counter ``key``; summed per counter and sent every
        ``SETTLE_INTERVAL`` (one backend call per counter, not per request)."""
        prev = self._owed.get(key)
        self._owed[key] = (delta + (prev[0] if prev else 0.0), ttl, scope)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_later(SETTLE_INTERVAL, self._flush_soon)

    def _flush_soon(self) -> None:
        self._spawn(self._send_owed())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_owed(self) -> None:
        owed, self._owed = self._owed, {}
        self._flushing = False
        state = self.state
        if state is None:
            return
        items = list(owed.items())
        # concurrent calls: one pipelined round trip with Redis, not one per counter
        results = await asyncio.gather(
            *(state.adjust(key, delta, ttl=ttl) for key, (delta, ttl, _) in items),
            return_exceptions=True,
        )
        for (key, (_, _, scope)), total in zip(items, results, strict=True):
            if isinstance(total, BaseException):  # lost: the reservation stands (over-count)
                self.counts["settle_errors"] += 1
                if not isinstance(total, StateUnavailable):
                    log.warning("budgets: settling %s failed: %r", key, total)
                continue
            if scope.counter == key and scope.soft is not None:
                spent = total + (scope.prev if scope.rolling else 0.0)
                if spent >= scope.soft * scope.usd:
                    self._alert(scope, spent)

    async def flush(self) -> None:
        """Send the queued settlements now and wait for background work (restores of new
        budgets) to finish."""
        await self._send_owed()
        while self._tasks:
            tasks = list(self._tasks)
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)

    # -- start, stop, replay ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the ledger's flusher and restore the counters of the current periods from
        the ledger (``State.seed``: only counters that do not exist)."""
        self.ledger.start()
        self._started = True
        if self.scopes:
            if self.state is None:
                raise RuntimeError("Budgets.state must be set before start() when budgets apply")
            await self._replay(list(self.scopes.values()))

    async def stop(self) -> None:
        """Send the queued settlements and write the ledger's queue (then close it). The
        state backend is the caller's to close, after this."""
        try:
            await self.flush()
        except Exception:  # the ledger must still be written
            log.exception("budgets: sending the last settlements failed")
        await self.ledger.close()

    async def _replay(self, scopes: Iterable[_Scope]) -> None:
        """Seed each budget's counters of the current period (every day of a rolling
        window) from the ledger's sums."""
        state = self.state
        if state is None:
            return
        now = self.clock()
        by_kind: dict[str, list[_Scope]] = {}
        for s in scopes:
            s.roll(now)
            by_kind.setdefault(s.kind, []).append(s)
        seeds: list[tuple[str, float, float]] = []
        for kind, group in by_kind.items():
            since = min(s.win.start for s in group)
            daily = await self.ledger.daily(kind, since)
            for s in group:
                spent = daily.get(s.name, {})
                first = math.floor(s.win.start / DAY)
                if s.rolling or s.period.kind == "daily":
                    for day in range(first, s.day + 1):
                        value = spent.get(day, 0.0)
                        if value:
                            key = counter_key(s.kind, s.name, _date(day).isoformat())
                            seeds.append((key, value, s.period.ttl))
                else:
                    value = math.fsum(v for d, v in spent.items() if d >= first)
                    if value:
                        seeds.append((s.counter, value, s.period.ttl))
                s.prev_at = -math.inf  # read the previous days afresh
        done = await asyncio.gather(
            *(state.seed(key, value, ttl=ttl) for key, value, ttl in seeds),
            return_exceptions=True,
        )
        for (key, _, _), ok in zip(seeds, done, strict=True):
            if isinstance(ok, BaseException):
                log.warning("budgets: could not restore %s from the ledger: %r", key, ok)
            elif ok:
                self.counts["seeded"] += 1

    # -- reading ----------------------------------------------------------------------------

    async def status(self, items: list[tuple[str, str, BudgetConfig]]) -> list[dict[str, object]]:
        """Where each (kind, name, budget) stands now: its window and its spend (settled
        plus reservations in flight, from the counters in one backend call; from the
        ledger's written spend when there is no state backend)."""
        now = self.clock()
        views: list[tuple[str, str, BudgetConfig, Window]] = []
        keys: list[str] = []
        for kind, name, b in items:
            p = Period(b.period)
            w = window(p, now)
            views.append((kind, name, b, w))
            keys.append(counter_key(kind, name, w.id))
            keys += [counter_key(kind, name, d) for d in w.previous]
        totals: dict[str, float] = {}
        if self.state is not None and keys:
            got = await self.state.charge_many([Charge(k, 0.0, math.inf) for k in keys])
            totals = {k: g.total for k, g in zip(keys, got, strict=True)}
        out: list[dict[str, object]] = []
        for kind, name, b, w in views:
            if self.state is not None:
                ids = [*w.previous, w.id]
                spent = math.fsum(totals.get(counter_key(kind, name, d), 0.0) for d in ids)
            else:
                spent = await self.ledger.sums(kind, name, w.start)
            out.append(
                {
                    "kind": kind,
                    "name": name,
                    "usd": b.usd,
                    "period": b.period,
                    "soft": b.soft,
                    "on_exceed": b.on_exceed,
                    "fallback_model": b.fallback_model,
                    "period_id": w.id,
                    "period_start": _iso(w.start, "+00:00"),
                    "reset_at": _iso(w.reset, "+00:00"),
                    "reset_seconds": max(0, math.ceil(w.reset - now)),
                    "spent_usd": round(spent, 9),
                    "remaining_usd": round(max(0.0, b.usd - spent), 9),
                    "used_pct": round(100 * spent / b.usd, 2),
                    "soft_exceeded": b.soft is not None and spent >= b.soft * b.usd,
                    "exceeded": spent >= b.usd,
                }
            )
        return out

    def metrics(self) -> dict[str, float]:
        """This worker's counters: reservations, refusals (429), fallbacks, soft alerts,
        settlements queued and lost, counters seeded at start, and the ledger's
        (``ledger_*``)."""
        out: dict[str, float] = dict(self.counts)
        out.update({f"ledger_{k}": v for k, v in self.ledger.metrics().items()})
        out["budgets"] = len(self.scopes)
        return out

    def prometheus(self) -> str:
        """``metrics()`` in Prometheus' text format (``fastgw_budget_*``)."""
        lines = []
        for name, value in self.metrics().items():
            gauge = name in ("budgets", "ledger_pending")
            metric = f"fastgw_budget_{name}" + ("" if gauge else "_total")
            lines.append(f"# TYPE {metric} {'gauge' if gauge else 'counter'}")
            lines.append(f"{metric} {value:g}")
        return "\n".join(lines) + "\n"
