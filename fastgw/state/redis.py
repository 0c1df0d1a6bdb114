"""The ``redis`` backend: buckets, slots and counters shared by every gateway host.

**One round trip per call.** Every ``State`` call is at most one Redis round trip: the
read-modify-write operations (``take_many`` over any number of buckets, ``settle``,
``acquire``) are Lua scripts run with ``EVALSHA``; the rest are single native commands
(``ZREM``, ``INCRBYFLOAT``, ``GET``), atomic by themselves. A script is sent in full with
``EVAL`` the first time this client uses it (which also caches it in Redis) and again only
after Redis answers ``NOSCRIPT`` (restart, ``SCRIPT FLUSH``, failover). The calls travel
over one pipelined connection (``fastgw/state/resp.py``): the calls of concurrent requests
share one write and one read, with no connection pool to wait for.

**Time** inside the scripts is Redis's ``TIME``, so every host sees the same clock (script
effects replication, the default from Redis 5 on, makes that safe for replicas and the AOF).

**Keys** are ``<prefix><kind>:<key>``, kind ``b`` (bucket), ``s`` (slots), ``c`` (counter), so
a bucket, a slot set and a counter of the same name never collide (they are separate maps in
the contract). Keys of one call are not hash-tagged: Redis Cluster is not supported.

- A bucket is a string ``"<tokens> <at>"`` (``at``: Redis time of the last refill). A missing
  bucket is full, so a bucket that is full again is deleted, and every write sets a TTL of the
  time the bucket takes to refill completely plus one second: an idle bucket vanishes exactly
  when it no longer differs from a missing one (debt included). A bucket with rate 0 never
  refills and so never expires (it is a one-off quota).
- Slots are a sorted set of holder ids scored by the Redis time their lease ends. ``acquire``
  first drops the expired holders, then adds itself if fewer than ``limit`` remain. Each
  ``RedisState`` remembers the ids it holds and refreshes their leases every
  ``slot_ttl / 3`` seconds (one round trip for all of them, in a background task), so a slot
  held for a long stream stays held, while the slots of a gateway that dies without releasing
  them are free again at most ``slot_ttl`` (default 30 s) later. The refresh only extends
  holders still present (``ZADD XX``): a refresh racing a release never resurrects the slot.
  ``release`` gives back one of the slots *this instance* acquired (none held: nothing to do,
  no round trip); the set itself expires ``slot_ttl`` + 1 s after its last write.
- A counter is a plain ``INCRBYFLOAT`` string, without TTL (the caller's key names the period).
- A charge counter (``charge_many``, ``adjust``, ``seed``; its own kind, ``m``, so
  ``<prefix>m:<key>``) is a string ``"%.17g"`` of its total, read and written by Lua scripts
  in doubles (the same arithmetic as the other backends: ten charges of 0.1 under a cap of
  1.0 all fit, the eleventh does not). A write with a ``ttl`` sets ``PX`` (ms, rounded up);
  one without keeps the key's expiry (``SET … KEEPTTL``, Redis 6.0 or later); ``seed`` is
  ``SET … NX``. A missing (or expired) key is a counter at 0 that does not exist.

**Failure** (``on_error``): each call waits at most ``timeout`` to ``1.5 × timeout`` for
Redis (the connection's watchdog looks at its oldest unanswered call every ``timeout / 2``
and drops the connection when that call has waited ``timeout``). A connection error, a
timeout, or a server-side condition (``LOADING``, ``READONLY``, ``OOM``, ``BUSY``, …) counts
as an error, and for the next ``backoff`` seconds no call tries Redis; after that a single
call probes it while the others still take the failure path. On that path ``open`` answers
from an in-process ``MemoryState`` (each worker enforces the limits on its own meanwhile;
counter additions made there are not carried over to Redis later) and ``closed`` raises
``StateUnavailable``. ``release`` never raises: a slot it cannot give back expires by itself
within ``slot_ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..config.schema import StateConfig
from ..tasks import stop_task
from .base import (
    Charge,
    Limit,
    Spent,
    StateUnavailable,
    Take,
    Verdict,
    check_amount,
    check_charges,
    check_ttl,
)
from .memory import Bucket, MemoryState, verdict
from .resp import RespClient, RespError

__all__ = [
    "ACQUIRE",
    "ADJUST",
    "CHARGE_MANY",
    "REFRESH",
    "SEED",
    "SETTLE",
    "TAKE_MANY",
    "RedisState",
    "StateUnavailable",
    "create",
    "redact_url",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds without trying Redis after a failure.
BACKOFF = 1.0
#: Seconds a slot outlives its holder's last refresh.
SLOT_TTL = 30.0
#: Error replies that mean "Redis can't serve now" rather than "this call is wrong".
_UNAVAILABLE_REPLIES = (
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "BUSY",
    "OOM",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
    "MISCONF",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
)


class _Script:
    """A Lua script and its SHA1 (what ``EVALSHA`` names it by)."""

    __slots__ = ("sha", "src")

    def __init__(self, src: str) -> None:
        self.src = src
        self.sha = hashlib.sha1(src.encode()).hexdigest()


# Shared by the bucket scripts: the time, reading a bucket as of now, writing it back.
_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

-- the bucket at key k as of now: tokens, time of the last refill (missing: full)
local function load(k, cap, rate)
  local v = redis.call('GET', k)
  if not v then return cap, now end
  local s, a = string.match(v, '^(%S+) (%S+)$')
  local tokens, at = tonumber(s), tonumber(a)
  if now > at then
    tokens = math.min(cap, tokens + (now - at) * rate)
    at = now
  end
  return tokens, at
end

-- write it back; a full bucket is the same as a missing one, and a bucket expires once it
-- would be full again (plus a second)
local function store(k, tokens, at, cap, rate)
  if tokens >= cap then
    redis.call('DEL', k)
    return
  end
  local v = string.format('%.17g %.17g', tokens, at)
  if rate > 0 then
    local ms = math.min(math.ceil((cap - tokens) / rate * 1000) + 1000, 1e12)
    redis.call('SET', k, v, 'PX', string.format('%d', ms))
  else
    redis.call('SET', k, v)
  end
end
"""

#: KEYS: the buckets; ARGV: n, capacity, rate for each. All or nothing; the same key twice
#: adds up (its first limit shapes it). Returns {1|0, tokens of each bucket after the takes
#: (before them when refused)}.
# Shared by the scripts that take from buckets: ``count`` buckets, KEYS[k0 + i] shaped by
# ARGV[a0 + 3i - 2 ..] (n, capacity, rate), all or nothing. {1|0, tokens of each bucket}.
_TAKE_LUA = """
local function take_all(k0, a0, count)
  local tokens, at, cap, rate, need = {}, {}, {}, {}, {}
  for i = 1, count do
    local k = KEYS[k0 + i]
    if tokens[k] == nil then
      cap[k], rate[k] = tonumber(ARGV[a0 + 3 * i - 1]), tonumber(ARGV[a0 + 3 * i])
      tokens[k], at[k] = load(k, cap[k], rate[k])
      need[k] = 0
    end
    need[k] = need[k] + tonumber(ARGV[a0 + 3 * i - 2])
  end
  local ok = 1
  for i = 1, count do
    local k = KEYS[k0 + i]
    if tokens[k] < need[k] then ok = 0 end
  end
  if ok == 1 then
    for i = 1, count do
      local k = KEYS[k0 + i]
      if need[k] ~= 0 then
        tokens[k] = tokens[k] - need[k]
        store(k, tokens[k], at[k], cap[k], rate[k])
        need[k] = 0
      end
    end
  end
  local out = {ok}
  for i = 1, count do out[i + 1] = string.format('%.17g', tokens[KEYS[k0 + i]]) end
  return out
end
"""

TAKE_MANY = _Script(_BUCKET_LUA + _TAKE_LUA + "return take_all(0, 0, #KEYS)\n")

#: A whole admission in one round trip: KEYS: S slot sets, then the buckets; ARGV: S, the
#: holder id, the lease seconds, each slot set's limit, then n, capacity, rate per bucket.
#: Every slot free and every bucket holding what is asked, or nothing is touched. Returns
#: {1, tokens of each bucket}; {0, tokens …} when a bucket refuses; {-i} when slot set i is
#: full.
ADMIT = _Script(
    _BUCKET_LUA
    + _TAKE_LUA
    + """
local s, holder, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local expired = string.format('%.17g', now)
for i = 1, s do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', expired)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[3 + i]) then return {-i} end
end
local out = take_all(s, 3 + s, #KEYS - s)
if out[1] == 1 then
  local lease = string.format('%.17g', now + ttl)
  local ms = string.format('%d', math.ceil(ttl * 1000) + 1000)
  for i = 1, s do
    redis.call('ZADD', KEYS[i], lease, holder)
    redis.call('PEXPIRE', KEYS[i], ms)
  end
end
return out
"""
)

#: KEYS[1]: the bucket; ARGV: n, capacity, rate. Adds n (may go below zero, never above
#: the capacity).
SETTLE = _Script(
    _BUCKET_LUA
    + """
local cap, rate = tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, at = load(KEYS[1], cap, rate)
store(KEYS[1], math.min(cap, tokens + tonumber(ARGV[1])), at, cap, rate)
return 1
"""
)

#: KEYS[1]: the slot set; ARGV: holder id, limit, lease seconds. Returns 1 when taken.
ACQUIRE = _Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], string.format('%.17g', now + ttl), ARGV[1])
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(ttl * 1000) + 1000))
return 1
"""
)

#: KEYS: slot sets; ARGV[1]: lease seconds, ARGV[i + 1]: a holder id in KEYS[i]. Extends the
#: leases of the holders still there.
REFRESH = _Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local until_ = string.format('%.17g', now + ttl)
local ms = string.format('%d', math.ceil(ttl * 1000) + 1000)
for i, k in ipairs(KEYS) do
  redis.call('ZADD', k, 'XX', until_, ARGV[i + 1])
  redis.call('PEXPIRE', k, ms)
end
return 1
"""
)


# Shared by the charge counter scripts: reading a number argument, writing a counter back.
_CHARGE_LUA = """
local function num(s)
  if s == 'inf' then return math.huge end
  return tonumber(s)
end

-- ARGV[1]: the ttl in ms, or '0' to keep the key's expiry (none for a new key)
local function store(k, v)
  local s = string.format('%.17g', v)
  if ARGV[1] ~= '0' then
    redis.call('SET', k, s, 'PX', ARGV[1])
  else
    redis.call('SET', k, s, 'KEEPTTL')
  end
end
"""

#: KEYS: the charge counters; ARGV[1]: ttl ms ('0': keep the expiry); ARGV[2i], ARGV[2i + 1]:
#: n and cap of KEYS[i]. All or nothing; the same key twice adds up. Returns {1|0, then per
#: charge 1|0 (it fits), then per charge the counter's total (after the charges when
#: allowed)}.
CHARGE_MANY = _Script(
    _CHARGE_LUA
    + """
local total, need = {}, {}
for i, k in ipairs(KEYS) do
  if total[k] == nil then
    local v = redis.call('GET', k)
    total[k] = v and tonumber(v) or 0
    need[k] = 0
  end
  need[k] = need[k] + num(ARGV[2 * i])
end
local n = #KEYS
local out = {1}
for i, k in ipairs(KEYS) do
  if total[k] + need[k] <= num(ARGV[2 * i + 1]) then
    out[i + 1] = 1
  else
    out[i + 1] = 0
    out[1] = 0
  end
end
if out[1] == 1 then
  for _, k in ipairs(KEYS) do
    if need[k] > 0 then
      total[k] = total[k] + need[k]
      store(k, total[k])
      need[k] = 0
    end
  end
end
for i, k in ipairs(KEYS) do out[n + i + 1] = string.format('%.17g', total[k]) end
return out
"""
)

#: KEYS[1]: the charge counter; ARGV: ttl ms ('0': keep the expiry), delta. Returns the new
#: total.
ADJUST = _Script(
    _CHARGE_LUA
    + """
local v = redis.call('GET', KEYS[1])
local x = (v and tonumber(v) or 0) + num(ARGV[2])
store(KEYS[1], x)
return string.format('%.17g', x)
"""
)

#: KEYS[1]: the charge counter; ARGV: ttl ms ('0': none), value. Sets it only when missing;
#: returns 1 when it did.
SEED = _Script(
    """
local v = string.format('%.17g', tonumber(ARGV[2]))
local set
if ARGV[1] ~= '0' then
  set = redis.call('SET', KEYS[1], v, 'NX', 'PX', ARGV[1])
else
  set = redis.call('SET', KEYS[1], v, 'NX')
end
if set then return 1 end
return 0
"""
)


def _ttl_ms(ttl: float | None) -> str:
    """A charge counter's ``ttl`` as the scripts take it: milliseconds, '0' for None."""
    check_ttl(ttl)
    return "0" if ttl is None else str(min(max(1, math.ceil(ttl * 1000)), 10**15))


def _bulk(x: str | bytes | float) -> bytes:
    """One RESP bulk string."""
    b = x if isinstance(x, bytes) else x.encode() if isinstance(x, str) else repr(x).encode()
    return b"$%d\r\n%s\r\n" % (len(b), b)


#: Amounts (a request: 1.0; a prompt estimate: its tokens) framed once, as they recur.
_AMOUNTS: dict[float, bytes] = {}
_AMOUNTS_MAX = 8192


class _PreparedTake:
    """A ``TAKE_MANY`` whose command bytes are built once: per call only the amounts are
    framed (``hiredis.pack_command`` would format every float of every call)."""

    __slots__ = ("buckets", "head", "keys", "shapes")

    def __init__(self, state: RedisState, buckets: list[tuple[str, Limit]]) -> None:
        self.buckets = buckets
        self.keys = [state._key("b", k) for k, _ in buckets]
        n = len(buckets)
        self.head = b"*%d\r\n" % (3 + 4 * n) + b"".join(
            [_bulk("EVALSHA"), _bulk(TAKE_MANY.sha), _bulk(str(n)), *map(_bulk, self.keys)]
        )
        #: per bucket: its capacity and rate, framed
        self.shapes = [_bulk(lim.capacity) + _bulk(lim.rate) for _, lim in buckets]

    def frame(self, ns: list[float]) -> bytes:
        parts = [self.head]
        self.add_amounts(parts, ns)
        return b"".join(parts)

    def add_amounts(self, parts: list[bytes], ns: list[float]) -> None:
        """Each bucket's amount ``ns[i]`` and shape, framed, onto ``parts``."""
        for n, shape in zip(ns, self.shapes, strict=True):
            b = _AMOUNTS.get(n)
            if b is None:
                b = _bulk(n)
                if len(_AMOUNTS) < _AMOUNTS_MAX:
                    _AMOUNTS[n] = b
            parts.append(b)
            parts.append(shape)

    def args(self, ns: list[float]) -> list[float]:
        out: list[float] = []
        for n, (_, lim) in zip(ns, self.buckets, strict=True):
            out += (n, lim.capacity, lim.rate)
        return out


class _PreparedAdmit:
    """An ``ADMIT`` (slots and buckets in one script) whose command bytes are built once:
    per call only the holder id and the amounts are framed."""

    __slots__ = ("head", "keys", "middle", "slots", "take", "ttl")

    def __init__(
        self, state: RedisState, slots: list[tuple[str, int]], take: _PreparedTake
    ) -> None:
        self.slots = slots
        self.take = take
        s = len(slots)
        nkeys = s + len(take.keys)
        self.ttl = state.slot_ttl
        self.keys = keys = [state._key("s", k) for k, _ in slots] + take.keys
        self.head = b"*%d\r\n" % (3 + nkeys + 3 + s + 3 * len(take.keys)) + b"".join(
            [
                _bulk("EVALSHA"),
                _bulk(ADMIT.sha),
                _bulk(str(nkeys)),
                *map(_bulk, keys),
                _bulk(str(s)),
            ]
        )
        #: after the holder id: the lease and each slot set's limit
        self.middle = _bulk(state.slot_ttl) + b"".join(_bulk(str(lim)) for _, lim in slots)

    def frame(self, holder: str, ns: list[float]) -> bytes:
        parts = [self.head, _bulk(holder), self.middle]
        self.take.add_amounts(parts, ns)
        return b"".join(parts)

    def args(self, holder: str, ns: list[float]) -> list[Any]:
        """The ARGV ``_eval`` takes (the first call, or after Redis lost its scripts)."""
        head: list[Any] = [len(self.slots), holder, self.ttl, *(lim for _, lim in self.slots)]
        return head + self.take.args(ns)


def redact_url(url: str) -> str:
    """``url`` without its password (in the user info or a ``password=`` query argument)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        # "redis://secret@host": a lone user info may well be the password
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _noscript(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis saying it does not have the script (its cache was lost)."""
    return isinstance(exc, RespError) and str(exc).startswith("NOSCRIPT")


def _unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis can't serve now (as opposed to a wrong call)."""
    if isinstance(exc, RespError):
        return str(exc).startswith(_UNAVAILABLE_REPLIES)
    return isinstance(exc, OSError | TimeoutError)  # ConnectionError is an OSError


class RedisState:
    """Buckets, slots and counters in one Redis, shared by every host that points at it."""

    name = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "fastgw:",
        on_error: str = "open",
        timeout: float = 0.25,
        backoff: float = BACKOFF,
        slot_ttl: float = SLOT_TTL,
    ) -> None:
        if on_error not in ("open", "closed"):
            raise ValueError(f"state.on_error must be 'open' or 'closed', not {on_error!r}")
        if timeout <= 0 or slot_ttl <= 0:
            raise ValueError("state: timeout and slot_ttl must be > 0")
        self.url = url
        self.prefix = prefix
        self.on_error = on_error
        self.timeout = timeout
        self.backoff = backoff
        self.slot_ttl = slot_ttl
        #: Answers while Redis is unreachable (``on_error: open``).
        self.fallback = MemoryState()
        #: Calls answered by the fallback, and Redis failures, since start.
        self.fallback_calls = 0
        self.errors = 0
        self.last_error: str | None = None
        # one pipelined connection; its watchdog bounds every call by `timeout`
        self._redis = RespClient(url, timeout=timeout)
        self._loaded: set[str] = set()
        #: 0 while Redis answers; else the monotonic time the next probe may start.
        self._down_until = 0.0
        self._probing = False
        # slots this instance holds, per key: holder ids, None for a fallback slot
        self._held: dict[str, list[str | None]] = {}
        self._id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._seq = itertools.count(1)
        self._refresher: asyncio.Task[None] | None = None
        self._closed = False

    # --- plumbing ---------------------------------------------------------------------------

    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` against Redis within ``timeout``; ``StateUnavailable`` when Redis can't
        answer (or is being skipped after a failure)."""
        if self._down_until:
            if self._probing or time.monotonic() < self._down_until:
                raise StateUnavailable(f"redis unreachable: {self.last_error}")
            self._probing = True  # this call probes; the others keep failing fast
        try:
            result = await fn()
        except BaseException as exc:
            raise self._unreachable(exc) from exc
        if self._down_until:
            log.warning("state: redis %s reachable again", redact_url(self.url))
            self._down_until = 0.0
            self._probing = False
        return result

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = "timeout" if isinstance(exc, TimeoutError) else _describe(exc)
        if not self._down_until:
            log.warning("state: redis %s unreachable: %s", redact_url(self.url), self.last_error)
        self._down_until = time.monotonic() + self.backoff
        self._probing = False

    def _unreachable(self, exc: BaseException) -> StateUnavailable:
        """A call to Redis failed with ``exc``: re-raised unless it means Redis can't serve
        (a wrong call, a cancellation); else counted (``_failed``) and returned as the
        ``StateUnavailable`` to raise or to fall back from."""
        if not _unavailable(exc):
            self._probing = False
            raise exc
        self._failed(exc)
        return StateUnavailable(f"redis unreachable: {_describe(exc)}")

    def _degraded(self, exc: StateUnavailable) -> MemoryState:
        """The fallback to answer from (``open``), or ``exc`` raised (``closed``)."""
        if self.on_error == "closed":
            raise exc
        self.fallback_calls += 1
        return self.fallback

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One round trip (two only just after Redis lost its script cache)."""
        r = self._redis
        if script.sha in self._loaded:
            try:
                return await r.call("EVALSHA", script.sha, len(keys), *keys, *args)
            except RespError as exc:
                self._lost_script(script, exc)
        out = await r.call("EVAL", script.src, len(keys), *keys, *args)
        self._loaded.add(script.sha)
        return out

    async def _eval_prepared(
        self,
        script: _Script,
        frame: bytes,
        keys: Sequence[str],
        args_of: Callable[[], Sequence[Any]],
    ) -> Any:
        """``_eval`` whose ``EVALSHA`` bytes were framed by the caller (``frame``); the
        arguments (``args_of()``) are only built for the ``EVAL`` that loads the script."""
        if script.sha in self._loaded:
            try:
                return await self._redis.call_packed(frame)
            except RespError as exc:
                self._lost_script(script, exc)
        return await self._eval(script, keys, args_of())

    def _lost_script(self, script: _Script, exc: BaseException) -> None:
        """Redis answered ``NOSCRIPT`` (it lost its script cache): send the script again.
        Any other error is the caller's."""
        if not _noscript(exc):
            raise exc
        self._loaded.discard(script.sha)

    # --- buckets ----------------------------------------------------------------------------

    async def take_many(self, takes: list[Take]) -> list[Verdict]:
        if not takes:
            return []
        keys = [self._key("b", t.key) for t in takes]
        args: list[float] = []
        for t in takes:
            args += (t.n, t.limit.capacity, t.limit.rate)
        try:
            reply = await self._call(lambda: self._eval(TAKE_MANY, keys, args))
        except StateUnavailable as exc:
            return self._degraded(exc).take_many_now(takes)
        ok = int(reply[0]) == 1
        need: dict[str, float] = {}
        if not ok:
            for t in takes:
                need[t.key] = need.get(t.key, 0.0) + t.n
        return [
            verdict(Bucket(float(tokens), 0.0), t.n if ok else need[t.key], t.limit, ok)
            for t, tokens in zip(takes, reply[1:], strict=True)
        ]

    def prepare(self, buckets: list[tuple[str, Limit]]) -> object:
        return _PreparedTake(self, buckets)

    async def take_prepared(self, handle: object, ns: list[float]) -> tuple[bool, list[float]]:
        p = cast(_PreparedTake, handle)
        conn = self._redis.ready()
        if conn is not None and not self._down_until and TAKE_MANY.sha in self._loaded:
            # the usual case, in one await on the connection (no coroutine layers); a lost
            # script, an error or a failure goes the general way below
            try:
                reply = await conn.send(p.frame(ns))
                if type(reply) is RespError:
                    raise reply
            except BaseException as exc:
                if not _noscript(exc):
                    unavailable = self._unreachable(exc)
                    return self._degraded(unavailable).take_prepared_now(p.buckets, ns)
                self._lost_script(TAKE_MANY, exc)  # the general way below loads it again
            else:
                return int(reply[0]) == 1, [float(x) for x in reply[1:]]
        try:
            reply = await self._call(
                lambda: self._eval_prepared(TAKE_MANY, p.frame(ns), p.keys, lambda: p.args(ns))
            )
        except StateUnavailable as exc:
            return self._degraded(exc).take_prepared_now(p.buckets, ns)
        return int(reply[0]) == 1, [float(x) for x in reply[1:]]

    def prepare_admit(
        self, slots: list[tuple[str, int]], buckets: list[tuple[str, Limit]]
    ) -> object:
        """A handle for ``admit_prepared``: concurrency slots and buckets in one step."""
        return _PreparedAdmit(self, slots, _PreparedTake(self, buckets))

    async def admit_prepared(self, handle: object, ns: list[float]) -> tuple[int, list[float]]:
        """One round trip: a slot of every slot set (``acquire``) and the takes of
        ``take_prepared``, all or nothing. ``(1, balances)`` done; ``(0, balances)`` a
        bucket refused; ``(-i, [])`` slot set ``i`` (1-based) is full. The slots are this
        instance's to ``release``, leased and refreshed like ``acquire``'s."""
        p = cast(_PreparedAdmit, handle)
        holder = f"{self._id}:{next(self._seq)}"
        try:
            reply = await self._call(
                lambda: self._eval_prepared(
                    ADMIT, p.frame(holder, ns), p.keys, lambda: p.args(holder, ns)
                )
            )
        except StateUnavailable as exc:
            return await self._admit_degraded(self._degraded(exc), p, ns)
        code = int(reply[0])
        if code == 1:
            for key, _ in p.slots:
                self._held.setdefault(key, []).append(holder)
            if p.slots and self._refresher is None and not self._closed:
                self._refresher = asyncio.create_task(self._refresh_forever())
        return code, [float(x) for x in reply[1:]]

    async def _admit_degraded(
        self, fallback: MemoryState, p: _PreparedAdmit, ns: list[float]
    ) -> tuple[int, list[float]]:
        """``admit_prepared`` on the fail-open fallback (this worker alone)."""
        taken: list[str] = []
        for i, (key, limit) in enumerate(p.slots, 1):
            if not await fallback.acquire(key, limit):
                for k in taken:
                    await fallback.release(k)
                return -i, []
            taken.append(key)
        ok, remaining = fallback.take_prepared_now(p.take.buckets, ns)
        if not ok:
            for k in taken:
                await fallback.release(k)
            return 0, remaining
        for key in taken:
            self._held.setdefault(key, []).append(None)
        return 1, remaining

    async def settle(self, key: str, n: float, limit: Limit) -> None:
        args = (n, limit.capacity, limit.rate)
        try:
            await self._call(lambda: self._eval(SETTLE, [self._key("b", key)], args))
        except StateUnavailable as exc:
            self._degraded(exc).settle_now(key, n, limit)

    # --- slots ------------------------------------------------------------------------------

    async def acquire(self, key: str, limit: int) -> bool:
        holder = f"{self._id}:{next(self._seq)}"
        args = (holder, limit, self.slot_ttl)
        try:
            got = await self._call(lambda: self._eval(ACQUIRE, [self._key("s", key)], args))
        except StateUnavailable as exc:
            if not await self._degraded(exc).acquire(key, limit):
                return False
            self._held.setdefault(key, []).append(None)
            return True
        if int(got) != 1:
            return False
        self._held.setdefault(key, []).append(holder)
        if self._refresher is None and not self._closed:
            self._refresher = asyncio.create_task(self._refresh_forever())
        return True

    async def release(self, key: str) -> None:
        held = self._held.get(key)
        if not held:
            return  # none held here: never below zero
        holder = held.pop()
        if not held:
            del self._held[key]
        if holder is None:
            await self.fallback.release(key)
            return
        r = self._redis
        # unreachable: the slot is forgotten here, no longer refreshed, and expires by itself
        with contextlib.suppress(StateUnavailable):
            await self._call(lambda: r.call("ZREM", self._key("s", key), holder))

    def _held_in_redis(self) -> list[tuple[str, str]]:
        return [(k, h) for k, hs in self._held.items() for h in hs if h is not None]

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.slot_ttl / 3)
            held = self._held_in_redis()
            if not held:
                continue
            keys = [self._key("s", k) for k, _ in held]
            args = [self.slot_ttl, *(h for _, h in held)]
            try:
                await self._call(lambda: self._eval(REFRESH, keys, args))  # noqa: B023
            except StateUnavailable:
                pass  # counted; the next round tries again
            except Exception:
                log.exception("state: refreshing the concurrency slots failed")

    # --- counters ---------------------------------------------------------------------------

    async def add(self, key: str, x: float) -> float:
        r = self._redis
        try:
            return float(await self._call(lambda: r.call("INCRBYFLOAT", self._key("c", key), x)))
        except StateUnavailable as exc:
            return await self._degraded(exc).add(key, x)

    async def get(self, key: str) -> float:
        r = self._redis
        try:
            v = await self._call(lambda: r.call("GET", self._key("c", key)))
        except StateUnavailable as exc:
            return await self._degraded(exc).get(key)
        return 0.0 if v is None else float(v)

    # --- charge counters -------------------------------------------------------------------

    async def charge_many(self, charges: list[Charge], *, ttl: float | None = None) -> list[Spent]:
        check_charges(charges, ttl)
        if not charges:
            return []
        keys = [self._key("m", c.key) for c in charges]
        args = [_ttl_ms(ttl)]
        for c in charges:
            args += (repr(float(c.n)), repr(float(c.cap)))
        try:
            reply = await self._call(lambda: self._eval(CHARGE_MANY, keys, args))
        except StateUnavailable as exc:
            return self._degraded(exc).charge_many_now(charges, ttl)
        k = len(charges)
        return [Spent(int(reply[1 + i]) == 1, float(reply[1 + k + i])) for i in range(k)]

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        check_amount(delta)
        args = (_ttl_ms(ttl), repr(float(delta)))
        try:
            v = await self._call(lambda: self._eval(ADJUST, [self._key("m", key)], args))
        except StateUnavailable as exc:
            return self._degraded(exc).adjust_now(key, delta, ttl)
        return float(v)

    async def seed(self, key: str, value: float, *, ttl: float | None = None) -> bool:
        check_amount(value)
        args = (_ttl_ms(ttl), repr(float(value)))
        try:
            got = await self._call(lambda: self._eval(SEED, [self._key("m", key)], args))
        except StateUnavailable as exc:
            return self._degraded(exc).seed_now(key, value, ttl)
        return int(got) == 1

    # --- the rest ---------------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "url": redact_url(self.url),
            "reachable": not self._down_until,
            "on_error": self.on_error,
            "fallback_calls": self.fallback_calls,
            "errors": self.errors,
            "last_error": self.last_error,
        }

    async def close(self, *, release_slots: bool = True) -> None:
        """Stop refreshing slots, give back those still held (unless ``release_slots`` is
        false, which behaves like a crash: they expire within ``slot_ttl``), disconnect."""
        self._closed = True
        refresher, self._refresher = self._refresher, None
        await stop_task(refresher)
        held = self._held_in_redis()
        self._held.clear()
        if release_slots and held:

            async def give_back() -> None:  # pipelined: one write, replies in one read
                r = self._redis
                await asyncio.gather(*(r.call("ZREM", self._key("s", k), h) for k, h in held))

            with contextlib.suppress(StateUnavailable):
                await self._call(give_back)
        await self._redis.close()


def create(cfg: StateConfig) -> RedisState:
    return RedisState(cfg.redis_url, prefix=cfg.prefix, on_error=cfg.on_error, timeout=cfg.timeout)
