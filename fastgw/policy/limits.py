"""Rate limits: requests/min, tokens/min and concurrent requests, per key, team, model and
globally, held in the configured state backend (shared by every worker, or every host).

Per request, ``Limiter.admit`` takes one concurrency slot in each scope that limits
concurrency, then one request and the prompt's estimated tokens from every bucket in one
all-or-nothing ``take_many`` (one round trip to Redis). ``Grant.finish`` settles the tokens
with the real usage (giving back what was over-reserved, taking what was under) and frees
the slots. Over a limit: 429 with ``Retry-After`` and the ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, Protocol, cast

from .._core.ratelimit import tightest_headers
from ..api.errors import GatewayError
from ..config.schema import GatewayConfig, KeyConfig, LimitsConfig
from ..state import Limit, State, StateUnavailable, Take
from .keys import Principal

Headers = list[tuple[bytes, bytes]]

#: Seconds between two sends of the queued token settlements.
SETTLE_INTERVAL = 0.1


class _Scope:
    """One holder of limits: ``key:alice``, ``team:research``, ``model:smart``, ``global``."""

    __slots__ = (
        "conc",
        "conc_key",
        "id",
        "label",
        "rpm",
        "rpm_cap",
        "rpm_key",
        "tpm",
        "tpm_cap",
        "tpm_key",
    )

    def __init__(self, id: str, label: str, cfg: LimitsConfig) -> None:
        self.id = id
        self.label = label
        self.rpm = Limit(cfg.rpm, cfg.rpm / 60.0) if cfg.rpm else None
        self.tpm = Limit(cfg.tpm, cfg.tpm / 60.0) if cfg.tpm else None
        self.conc = cfg.concurrency
        # built once: the per-request work is a list of prebuilt pieces
        self.conc_key = f"conc:{id}"
        self.tpm_key = f"tpm:{id}"
        self.rpm_key = f"rpm:{id}"
        self.rpm_cap = b"%d" % cfg.rpm if cfg.rpm else b""
        self.tpm_cap = b"%d" % cfg.tpm if cfg.tpm else b""


class _Plan:
    """What admission does for one (key, model) pair, built once and reused per request:
    the slots to take, the buckets in one prepared ``take`` (the backend's handle), where
    the tokens/min buckets are among them, and the pieces of the ``x-ratelimit-*``
    headers. Per request only the token estimate and the remaining balances change."""

    __slots__ = (
        "admit_handle",
        "buckets",
        "caps",
        "handle",
        "kinds",
        "limits",
        "ns",
        "owners",
        "req",
        "shapes",
        "slots",
        "tok",
        "tokens",
    )

    def __init__(self, scopes: list[_Scope]) -> None:
        self.slots = [(s.conc_key, s.conc, s) for s in scopes if s.conc is not None]
        buckets: list[tuple[str, Limit]] = []
        owners: list[_Scope] = []
        self.req: list[int] = []  # bucket indexes of the requests/min buckets
        self.tok: list[int] = []  # … and of the tokens/min ones
        for s in scopes:
            if s.rpm is not None:
                self.req.append(len(buckets))
                buckets.append((s.rpm_key, s.rpm))
                owners.append(s)
            if s.tpm is not None:
                self.tok.append(len(buckets))
                buckets.append((s.tpm_key, s.tpm))
                owners.append(s)
        self.buckets = buckets
        self.owners = owners
        self.limits = [lim for _, lim in buckets]
        #: what each bucket gives per request (the tokens/min ones: the estimate)
        self.ns = [1.0] * len(buckets)
        self.tokens = [buckets[i] for i in self.tok]
        #: per bucket, as ``tightest_headers`` takes them: whether it counts tokens, its
        #: limit as header bytes, its capacity and rate
        self.kinds = [i in self.tok for i in range(len(buckets))]
        self.caps = [
            owners[i].tpm_cap if self.kinds[i] else owners[i].rpm_cap for i in range(len(buckets))
        ]
        self.shapes = [x for lim in self.limits for x in (lim.capacity, lim.rate)]
        self.handle: object = None  # the backend's prepared take, made on first use
        #: … and its prepared admission of slots and buckets in one step (redis)
        self.admit_handle: object = None

    def roles(self) -> list[tuple[bool, bytes]]:
        """Per bucket: whether it gives the token estimate (else one request), and its
        limit as the header shows it (a prepared admission's ``roles``)."""
        return list(zip(self.kinds, self.caps, strict=True))

    def headers(self, remaining: list[float]) -> Headers:
        """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` of the tightest scope
        (picked and formatted by ``_core``)."""
        return tightest_headers(remaining, self.kinds, self.caps, self.shapes)

    def refusal(self, remaining: list[float], ns: list[float], estimate: int) -> GatewayError:
        """The 429 for the bucket that takes longest to hold what was asked."""
        waits = [
            max(0.0, n - r) / lim.rate if lim.rate > 0 else math.inf
            for n, r, lim in zip(ns, remaining, self.limits, strict=True)
        ]
        worst = max(range(len(waits)), key=waits.__getitem__)
        s = self.owners[worst]
        tokens = worst in self.tok
        cap = int(self.limits[worst].capacity)
        if tokens and estimate > cap:
            message = (
                f"The request's estimated {estimate} prompt tokens exceed the "
                f"{cap} tokens/minute of {s.label}."
            )
        else:
            kind = "tokens" if tokens else "requests"
            message = f"{s.label} is over its {cap} {kind}/minute limit."
        return _too_many(message, "rate_limit_exceeded", waits[worst], self.headers(remaining))


class Admission(Protocol):
    """What an admitted request holds until it ends (``Grant``, or the in-process
    ``shm.Admitted``): its ``x-ratelimit-*`` headers, the concurrency slots it holds, and
    the settlement of its reserved tokens."""

    @property
    def headers(self) -> Headers: ...

    @property
    def slots(self) -> Sequence[str]: ...

    def used_from(self, usage: tuple[int, int, int, int] | None) -> None: ...

    def settle(self, usage: tuple[int, int, int, int] | None = None) -> None: ...

    async def release(self) -> None: ...

    async def finish(self) -> None: ...


class Grant:
    """What a request holds until it ends: reserved tokens, concurrency slots."""

    __slots__ = ("estimate", "headers", "limiter", "plan", "slots", "state", "used")

    def __init__(
        self,
        limiter: Limiter,
        state: State,
        slots: list[str],
        plan: _Plan | None,
        estimate: int,
        headers: Headers,
    ) -> None:
        self.limiter = limiter
        self.state = state
        self.slots = slots
        #: The admission's plan while its tokens are unsettled (None: nothing to settle).
        self.plan = plan if plan is not None and plan.tok else None
        self.estimate = estimate
        #: ``x-ratelimit-*`` headers for the answer.
        self.headers = headers
        #: Tokens the request really used (prompt + completion), once known.
        self.used: int | None = None

    def used_from(self, usage: tuple[int, int, int, int] | None) -> None:
        """Record the provider's usage ``(prompt, completion, total, cached)``."""
        if usage is not None:
            self.used = usage[2] or usage[0] + usage[1]

    def settle(self, usage: tuple[int, int, int, int] | None = None) -> None:
        """Settle the reserved tokens with the real usage (``usage``, else what
        ``used_from`` recorded; unknown: the estimate stands): at once in-process, else
        queued and sent in batches off the request's path."""
        self.used_from(usage)
        used = self.used
        plan = self.plan
        if plan is not None and used is not None and used != self.estimate:
            self.limiter.give_back(plan, float(self.estimate - used))
        self.plan = None

    async def release(self) -> None:
        """Free the concurrency slots, all at once and to the end even when the caller is
        cancelled (the client left): a slot left held would stay held (its lease is
        refreshed). A release the backend cannot take expires with its lease."""
        slots, self.slots = self.slots, []
        if slots:
            await asyncio.shield(asyncio.ensure_future(_release_all(self.state, slots)))

    async def finish(self) -> None:
        """``settle`` and ``release``. Safe to call twice."""
        self.settle()
        if self.slots:
            await self.release()


async def _release_all(state: State, slots: list[str]) -> None:
    results = await asyncio.gather(*(state.release(k) for k in slots), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, StateUnavailable):
            raise r


class Limiter:
    """The limits of a config, by scope; ``admit`` per request."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.global_ = _Scope("global", "the gateway", cfg.limits) if _any(cfg.limits) else None
        self.models = {
            name: _Scope(f"model:{name}", f"model '{name}'", m.limits)
            for name, m in cfg.models.items()
            if m.limits is not None and _any(m.limits)
        }
        self.teams = {
            name: _Scope(f"team:{name}", f"team '{name}'", t.limits)
            for name, t in cfg.teams.items()
            if t.limits is not None and _any(t.limits)
        }
        self.keys = _key_scopes(cfg.keys)
        self.active = bool(self.global_ or self.models or self.teams or self.keys)
        self._state: State | None = None
        #: The backend's in-process take (``take_prepared_now``), if it has one.
        self._take_now: Callable[[object, list[float]], tuple[bool, list[float]]] | None = None
        self.in_process = False
        #: ``admit`` without a coroutine (see ``_admit_in_process``); with ``local``, the
        #: compiled ``Admissions.admit`` of the shared table, which calls back only for a
        #: (principal, model) seen for the first time and for a refusal.
        self.admit_now: _AdmitNowFn = self._admit_in_process
        self._admissions: Any = None
        self._prepare_admission: _PrepareAdmission | None = None
        self._state_admit: _AdmitNow | None = None
        self._refund_now: Callable[[object, float], None] | None = None
        self._admit_once: _AdmitOnce | None = None
        self._prepare_admit: _PrepareAdmit | None = None
        #: Token settlements not yet sent, summed per bucket (see ``owe``).
        self._owed: dict[str, list[Any]] = {}  # key -> [tokens, Limit]
        #: (key name, model) → what admission does (the config does not change at run time;
        #: run-time key changes start afresh). None: no limit applies.
        self._plans: dict[tuple[str | None, str], _Plan | None] = {}
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def state(self) -> State | None:
        """The backend the limits live in (set at start-up)."""
        return self._state

    @state.setter
    def state(self, state: State | None) -> None:
        self._state = state
        self._take_now = getattr(state, "take_prepared_now", None)
        #: ``admit_now`` may answer (else only ``admit`` can: no use trying).
        self.in_process = self._take_now is not None
        # an in-process admission in one call, headers included, and its settlement (local)
        self._prepare_admission = getattr(state, "prepare_admission", None)
        self._state_admit = getattr(state, "admit_now", None)
        self._refund_now = getattr(state, "refund_now", None)
        admissions = getattr(state, "admissions", None)
        self._admissions = admissions(self._first_seen, self._refused) if admissions else None
        self.admit_now = (
            self._admit_in_process if self._admissions is None else self._admissions.admit
        )
        # a backend that takes slots and buckets in one round trip (redis)
        self._admit_once = getattr(state, "admit_prepared", None)
        self._prepare_admit = getattr(state, "prepare_admit", None)
        self._plans = {}  # their handles were the old backend's

    def update_keys(self, keys: list[KeyConfig]) -> None:
        """The keys changed at run time (admin API): their limits from now on."""
        self.keys = _key_scopes(keys)
        self._plans = {}
        if self._admissions is not None:
            self._admissions.clear()
        self.active = bool(self.global_ or self.models or self.teams or self.keys)

    async def usage(self, name: str) -> dict[str, object]:
        """The limits of key ``name`` and, for its buckets, what is left now (a take of
        nothing reads a bucket without changing it)."""
        scope = self.keys.get(name)
        if scope is None or self.state is None:
            return {"key": name, "limits": None}
        out: dict[str, object] = {"key": name, "limits": {}}
        takes = []
        if scope.rpm is not None:
            takes.append(Take(scope.rpm_key, 0.0, scope.rpm))
        if scope.tpm is not None:
            takes.append(Take(scope.tpm_key, 0.0, scope.tpm))
        verdicts = await self.state.take_many(takes) if takes else []
        limits: dict[str, object] = {}
        for t, v in zip(takes, verdicts, strict=True):
            kind = "rpm" if t.key.startswith("rpm:") else "tpm"
            limits[kind] = {
                "limit": int(t.limit.capacity),
                "remaining": max(0, math.floor(v.remaining)),
                "reset_seconds": round(v.reset, 3),
            }
        if scope.conc is not None:
            limits["concurrency"] = {"limit": scope.conc}
        out["limits"] = limits
        return out

    def give_back(self, plan: _Plan, n: float) -> None:
        """Settle ``n`` tokens (negative: take them) on the tokens buckets of ``plan``: at
        once in-process, else queued (``owe``)."""
        if self._refund_now is not None:
            self._refund_now(plan.handle, n)
            return
        for key, limit in plan.tokens:
            self.owe(key, n, limit)

    def owe(self, key: str, n: float, limit: Limit) -> None:
        """Queue a settlement; settlements are summed per bucket and sent together every
        ``SETTLE_INTERVAL`` (one backend call per bucket, not per request)."""
        owed = self._owed.get(key)
        if owed is not None:
            owed[0] += n
            return
        self._owed[key] = [n, limit]
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_later(SETTLE_INTERVAL, self._flush_soon)

    def _flush_soon(self) -> None:
        task = asyncio.ensure_future(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Send the queued settlements now."""
        owed, self._owed = self._owed, {}
        self._flushing = False
        state = self.state
        if state is None:
            return
        for key, (n, limit) in owed.items():
            if n:
                with contextlib.suppress(StateUnavailable):  # lost; the buckets refill anyway
                    await state.settle(key, n, limit)

    def scopes(self, principal: Principal | None, model: str) -> list[_Scope]:
        out = []
        if principal is not None:
            if (s := self.keys.get(principal.name)) is not None:
                out.append(s)
            if principal.team is not None and (s := self.teams.get(principal.team)) is not None:
                out.append(s)
        if (s := self.models.get(model)) is not None:
            out.append(s)
        if self.global_ is not None:
            out.append(self.global_)
        return out

    async def admit(
        self, principal: Principal | None, model: str, estimate: int
    ) -> Admission | None:
        """Take what the request needs from every scope, or raise 429 taking nothing (503
        when the state backend is unreachable and set to fail closed)."""
        try:
            plan = self._plan(principal, model)
            if plan is None:
                return None
            if plan.slots or not plan.buckets:
                return await self._admit(plan, estimate)
            # buckets only (the usual case): the prepared take, awaited right here
            state = self._state
            assert state is not None, "Limiter.state is set at start-up"
            ns = self._amounts(plan, estimate)
            ok, remaining = await state.take_prepared(plan.handle, ns)
            return self._granted(plan, ok, remaining, ns, estimate, [])
        except StateUnavailable:
            raise GatewayError(
                503,
                "The gateway cannot check rate limits right now (its shared state is "
                "unreachable); retry shortly.",
                "unavailable",
                "state_unavailable",
                headers=[(b"retry-after", b"1")],
            ) from None

    def _admit_in_process(
        self, principal: Principal | None, model: str, estimate: int
    ) -> Admission | None:
        """``admit`` without a coroutine, for a backend that answers in-process (``local``,
        ``memory``) and a request no concurrency limit applies to; raises ``Later`` when
        ``admit`` must be awaited instead. (Called as ``admit_now``.)"""
        take = self._take_now
        if take is None:
            raise Later
        plan = self._plan(principal, model)
        if plan is None:
            return None
        if plan.slots:
            raise Later
        admit = self._state_admit
        if admit is not None:  # one compiled call: the take, the headers, the settlement
            got = admit(plan.handle, estimate)
            if got is None:
                self._refuse(plan, estimate)
            return got
        ns = self._amounts(plan, estimate)
        ok, remaining = take(plan.handle, ns)
        return self._granted(plan, ok, remaining, ns, estimate, [])

    def _refuse(self, plan: _Plan, estimate: int) -> NoReturn:
        """The 429 of an in-process admission that did not take (its handle's balances)."""
        balances = cast(Any, plan.handle).balances()
        raise plan.refusal(balances, self._amounts(plan, estimate), estimate)

    def _first_seen(
        self, principal: Principal | None, model: str, estimate: int
    ) -> Admission | None:
        """``Admissions`` met this principal and model for the first time: tell it what
        admits them (unless concurrency limits them: those go the awaited way), then
        admit this request."""
        assert self._admissions is not None
        plan = self._plan(principal, model)
        if plan is None or not plan.slots:
            self._admissions.set(principal, model, plan.handle if plan is not None else None)
        return self._admit_in_process(principal, model, estimate)

    def _refused(
        self, handle: object, principal: Principal | None, model: str, estimate: int
    ) -> NoReturn:
        """``Admissions``' take did not happen: the 429."""
        plan = self._plan(principal, model)
        assert plan is not None and plan.handle is handle
        self._refuse(plan, estimate)

    def _plan(self, principal: Principal | None, model: str) -> _Plan | None:
        """What admission does for this key and model (built on first use)."""
        ck = (principal.name if principal is not None else None, model)
        try:
            return self._plans[ck]
        except KeyError:
            if len(self._plans) > 65536:
                self._plans.clear()
            scopes = self.scopes(principal, model)
            plan = self._plans[ck] = _Plan(scopes) if scopes else None
            state = self.state
            assert state is not None, "Limiter.state is set at start-up"
            if plan is not None and plan.buckets:
                if self._prepare_admission is not None:
                    plan.handle = self._prepare_admission(plan.buckets, plan.roles())
                else:
                    plan.handle = state.prepare(plan.buckets)
            if plan is not None and plan.slots and self._prepare_admit is not None:
                slots = [(key, limit) for key, limit, _ in plan.slots]
                plan.admit_handle = self._prepare_admit(slots, plan.buckets)
            return plan

    @staticmethod
    def _amounts(plan: _Plan, estimate: int) -> list[float]:
        """What each of the plan's buckets gives: 1 request, ``estimate`` tokens."""
        if not plan.tok:
            return plan.ns
        ns = plan.ns.copy()
        for i in plan.tok:
            ns[i] = float(estimate)
        return ns

    def _granted(
        self,
        plan: _Plan,
        ok: bool,
        remaining: list[float],
        ns: list[float],
        estimate: int,
        slots: list[str],
    ) -> Grant:
        """The grant of a take that happened; the 429 of one that did not (the caller
        gives back ``slots``)."""
        if not ok:
            raise plan.refusal(remaining, ns, estimate)
        state = self.state
        assert state is not None
        return Grant(self, state, slots, plan, estimate, plan.headers(remaining))

    async def _admit(self, plan: _Plan, estimate: int) -> Grant:
        state = self.state
        assert state is not None, "Limiter.state is set at start-up"
        if plan.admit_handle is not None and self._admit_once is not None:
            return await self._admit_in_one(plan, estimate)
        slots: list[str] = []
        for key, limit, s in plan.slots:
            if not await state.acquire(key, limit):
                for held in slots:
                    await state.release(held)
                raise _too_busy(s.label, limit)
            slots.append(key)
        if not plan.buckets:
            return Grant(self, state, slots, None, estimate, [])
        ns = self._amounts(plan, estimate)  # with slots: given back if the take fails
        try:
            ok, remaining = await state.take_prepared(plan.handle, ns)
            return self._granted(plan, ok, remaining, ns, estimate, slots)
        except BaseException:
            for held in slots:
                await state.release(held)
            raise

    async def _admit_in_one(self, plan: _Plan, estimate: int) -> Grant:
        """Slots and buckets in one round trip (``admit_prepared``)."""
        assert self._admit_once is not None
        ns = self._amounts(plan, estimate)
        code, remaining = await self._admit_once(plan.admit_handle, ns)
        if code < 0:
            _, limit, s = plan.slots[-code - 1]
            raise _too_busy(s.label, limit)
        return self._granted(
            plan, code == 1, remaining, ns, estimate, [k for k, _, _ in plan.slots]
        )


_PrepareAdmission = Callable[[list[tuple[str, Limit]], list[tuple[bool, bytes]]], object]
_AdmitNow = Callable[[object, float], "Admission | None"]
_AdmitNowFn = Callable[[Principal | None, str, int], "Admission | None"]
_AdmitOnce = Callable[[object, list[float]], Awaitable[tuple[int, list[float]]]]
_PrepareAdmit = Callable[[list[tuple[str, int]], list[tuple[str, Limit]]], object]


class Later(Exception):
    """``Limiter.admit_now`` cannot decide without awaiting: call ``admit``."""


def _key_scopes(keys: list[KeyConfig]) -> dict[str, _Scope]:
    return {
        k.name: _Scope(f"key:{k.name}", f"key '{k.name}'", k.limits)
        for k in keys
        if k.limits is not None and _any(k.limits)
    }


def _any(cfg: LimitsConfig) -> bool:
    return bool(cfg.rpm or cfg.tpm or cfg.concurrency)


def _too_busy(label: str, limit: int) -> GatewayError:
    """The 429 of a concurrency limit with every slot held."""
    return _too_many(
        f"{label} has {limit} requests in flight, its concurrency limit.",
        "concurrency_limit_exceeded",
        1.0,
        [],
    )


def _too_many(message: str, code: str, retry_after: float, headers: Headers) -> GatewayError:
    wait = max(1, math.ceil(retry_after)) if retry_after < 1e9 else 60
    return GatewayError(
        429,
        message,
        "rate_limit_error",
        code,
        headers=[(b"retry-after", b"%d" % wait), *headers],
    )
