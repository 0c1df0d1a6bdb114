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

from ..api.errors import GatewayError
from ..config.schema import GatewayConfig, KeyConfig, LimitsConfig
from ..state import Limit, State, StateUnavailable, Take, Verdict
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
        "rpm_take",
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
        self.rpm_take = Take(f"rpm:{id}", 1.0, self.rpm) if self.rpm else None
        self.rpm_cap = b"%d" % cfg.rpm if cfg.rpm else b""
        self.tpm_cap = b"%d" % cfg.tpm if cfg.tpm else b""


def _seconds(x: float) -> bytes:
    return b"%ds" % math.ceil(x) if x < 1e9 else b"never"


class Grant:
    """What a request holds until it ends: reserved tokens, concurrency slots."""

    __slots__ = ("estimate", "headers", "limiter", "slots", "state", "tokens", "used")

    def __init__(
        self,
        limiter: Limiter,
        state: State,
        slots: list[str],
        tokens: list[tuple[str, Limit]],
        estimate: int,
        headers: Headers,
    ) -> None:
        self.limiter = limiter
        self.state = state
        self.slots = slots
        self.tokens = tokens
        self.estimate = estimate
        #: ``x-ratelimit-*`` headers for the answer.
        self.headers = headers
        #: Tokens the request really used (prompt + completion), once known.
        self.used: int | None = None

    def used_from(self, usage: tuple[int, int, int, int] | None) -> None:
        """Record the provider's usage ``(prompt, completion, total, cached)``."""
        if usage is not None:
            self.used = usage[2] or usage[0] + usage[1]

    async def finish(self) -> None:
        """Settle the reserved tokens with the real usage (unknown: the estimate stands) and
        free the slots. Safe to call twice."""
        try:
            await self._finish()
        except StateUnavailable:  # the settlement is lost; the answer is not the client's
            self.slots = []
            self.tokens = []

    async def _finish(self) -> None:
        used = self.used
        if used is not None and used != self.estimate:
            for key, limit in self.tokens:  # batched: off the request's path
                self.limiter.owe(key, float(self.estimate - used), limit)
        self.tokens = []
        slots, self.slots = self.slots, []
        for key in slots:
            await self.state.release(key)


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
        self.state: State | None = None
        #: Token settlements not yet sent, summed per bucket (see ``owe``).
        self._owed: dict[str, tuple[float, Limit]] = {}
        #: (key name, model) → the scopes that apply (the config does not change at run time).
        self._scopes: dict[tuple[str | None, str], list[_Scope]] = {}
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def update_keys(self, keys: list[KeyConfig]) -> None:
        """The keys changed at run time (admin API): their limits from now on."""
        self.keys = _key_scopes(keys)
        self._scopes = {}
        self.active = bool(self.global_ or self.models or self.teams or self.keys)

    async def usage(self, name: str) -> dict[str, object]:
        """The limits of key ``name`` and, for its buckets, what is left now (a take of
        nothing reads a bucket without changing it)."""
        scope = self.keys.get(name)
        if scope is None or self.state is None:
            return {"key": name, "limits": None}
        out: dict[str, object] = {"key": name, "limits": {}}
        takes = []
        if scope.rpm_take is not None:
            takes.append(Take(scope.rpm_take.key, 0.0, scope.rpm_take.limit))
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

    def owe(self, key: str, n: float, limit: Limit) -> None:
        """Queue a settlement; settlements are summed per bucket and sent together every
        ``SETTLE_INTERVAL`` (one backend call per bucket, not per request)."""
        prev = self._owed.get(key)
        self._owed[key] = (n + (prev[0] if prev else 0.0), limit)
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

    async def admit(self, principal: Principal | None, model: str, estimate: int) -> Grant | None:
        """Take what the request needs from every scope, or raise 429 taking nothing (503
        when the state backend is unreachable and set to fail closed)."""
        try:
            return await self._admit(principal, model, estimate)
        except StateUnavailable:
            raise GatewayError(
                503,
                "The gateway cannot check rate limits right now (its shared state is "
                "unreachable); retry shortly.",
                "unavailable",
                "state_unavailable",
                headers=[(b"retry-after", b"1")],
            ) from None

    async def _admit(self, principal: Principal | None, model: str, estimate: int) -> Grant | None:
        ck = (principal.name if principal is not None else None, model)
        scopes = self._scopes.get(ck)
        if scopes is None:
            if len(self._scopes) > 65536:
                self._scopes.clear()
            scopes = self._scopes[ck] = self.scopes(principal, model)
        if not scopes:
            return None
        state = self.state
        assert state is not None, "Limiter.state is set at start-up"
        slots: list[str] = []
        for s in scopes:
            if s.conc is not None:
                if not await state.acquire(s.conc_key, s.conc):
                    for held in slots:
                        await state.release(held)
                    raise _too_many(
                        f"{s.label} has {s.conc} requests in flight, its concurrency limit.",
                        "concurrency_limit_exceeded",
                        1.0,
                        [],
                    )
                slots.append(s.conc_key)
        takes: list[Take] = []
        owners: list[_Scope] = []  # the scope of each take
        for s in scopes:
            if s.rpm_take is not None:
                takes.append(s.rpm_take)
                owners.append(s)
            if s.tpm is not None:
                takes.append(Take(s.tpm_key, float(estimate), s.tpm))
                owners.append(s)
        if not takes:
            return Grant(self, state, slots, [], estimate, [])
        verdicts = await state.take_many(takes)
        headers = _headers(takes, owners, verdicts)
        if not verdicts[0].allowed:
            for held in slots:
                await state.release(held)
            worst = max(range(len(verdicts)), key=lambda i: verdicts[i].retry_after)
            s, t = owners[worst], takes[worst]
            kind = "requests" if t is s.rpm_take else "tokens"
            cap = int(t.limit.capacity)
            if kind == "tokens" and estimate > cap:
                message = (
                    f"The request's estimated {estimate} prompt tokens exceed the "
                    f"{cap} tokens/minute of {s.label}."
                )
            else:
                message = f"{s.label} is over its {cap} {kind}/minute limit."
            raise _too_many(message, "rate_limit_exceeded", verdicts[worst].retry_after, headers)
        tokens = [
            (t.key, t.limit) for t, s in zip(takes, owners, strict=True) if t is not s.rpm_take
        ]
        return Grant(self, state, slots, tokens, estimate, headers)


def _key_scopes(keys: list[KeyConfig]) -> dict[str, _Scope]:
    return {
        k.name: _Scope(f"key:{k.name}", f"key '{k.name}'", k.limits)
        for k in keys
        if k.limits is not None and _any(k.limits)
    }


def _any(cfg: LimitsConfig) -> bool:
    return bool(cfg.rpm or cfg.tpm or cfg.concurrency)


def _headers(takes: list[Take], owners: list[_Scope], verdicts: list[Verdict]) -> Headers:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` of the tightest scope."""
    req: tuple[bytes, Verdict] | None = None
    tok: tuple[bytes, Verdict] | None = None
    for t, s, v in zip(takes, owners, verdicts, strict=True):
        if t is s.rpm_take:
            if req is None or v.remaining < req[1].remaining:
                req = (s.rpm_cap, v)
        elif tok is None or v.remaining < tok[1].remaining:
            tok = (s.tpm_cap, v)
    out: Headers = []
    if req is not None:
        cap, v = req
        out.append((b"x-ratelimit-limit-requests", cap))
        out.append((b"x-ratelimit-remaining-requests", b"%d" % max(0, math.floor(v.remaining))))
        out.append((b"x-ratelimit-reset-requests", _seconds(v.reset)))
    if tok is not None:
        cap, v = tok
        out.append((b"x-ratelimit-limit-tokens", cap))
        out.append((b"x-ratelimit-remaining-tokens", b"%d" % max(0, math.floor(v.remaining))))
        out.append((b"x-ratelimit-reset-tokens", _seconds(v.reset)))
    return out


def _too_many(message: str, code: str, retry_after: float, headers: Headers) -> GatewayError:
    wait = max(1, math.ceil(retry_after)) if retry_after < 1e9 else 60
    return GatewayError(
        429,
        message,
        "rate_limit_error",
        code,
        headers=[(b"retry-after", b"%d" % wait), *headers],
    )
