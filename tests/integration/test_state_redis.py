"""The ``redis`` state backend across "hosts" (several ``RedisState`` on one Redis), its
slot leases, its failure modes (fail open / fail closed, backoff, recovery) and its one round
trip per call. Needs a Redis on 127.0.0.1:6379 (skipped otherwise); every test uses its own
key prefix and deletes its keys."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from fastgw.config.schema import StateConfig
from fastgw.state import Charge, Limit, Take, open_state, take
from tests.servers import redis_forget, redis_up

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/0"


if not redis_up():
    pytest.skip("no Redis on 127.0.0.1:6379", allow_module_level=True)

from redis.asyncio import Redis  # noqa: E402

from fastgw.state.redis import RedisState, StateUnavailable, redact_url  # noqa: E402
from fastgw.state.resp import RespClient  # noqa: E402

Hosts = Callable[..., RedisState]


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    p = f"fastgw-it-{uuid.uuid4().hex[:10]}:"
    yield p
    await redis_forget(p, URL)


@pytest.fixture
async def hosts(prefix: str) -> AsyncIterator[Hosts]:
    """``hosts(**kw)``: a new RedisState on the shared Redis (one per simulated host)."""
    made: list[RedisState] = []

    def make(**kw: Any) -> RedisState:
        kw.setdefault("prefix", prefix)
        # generous: a loaded CI machine must not push calls into the fail-open fallback
        kw.setdefault("timeout", 5.0)
        s = RedisState(kw.pop("url", URL), **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


def healthy(*states: RedisState) -> None:
    for s in states:
        h = s.health()
        assert h["errors"] == 0 and h["fallback_calls"] == 0, h


# --- across hosts ------------------------------------------------------------------------------


async def test_two_hosts_share_a_bucket_and_admit_exactly_its_capacity(hosts: Hosts) -> None:
    a, b = hosts(), hosts()
    lim = Limit(100, 0.0)
    got = await asyncio.gather(*(take(s, "shared", 1, lim) for _ in range(250) for s in (a, b)))
    assert sum(v.allowed for v in got) == 100
    assert min(v.remaining for v in got if v.allowed) == 0
    assert all(v.retry_after == float("inf") for v in got if not v.allowed)
    healthy(a, b)


async def test_take_many_is_all_or_nothing_across_hosts(hosts: Hosts) -> None:
    a, b = hosts(), hosts()
    small, big = Limit(1, 0.0), Limit(10, 0.0)
    assert (await take(a, "small", 1, small)).allowed  # host a empties "small"
    got = await b.take_many([Take("big", 4, big), Take("small", 1, small)])
    assert [v.allowed for v in got] == [False, False]
    assert got[1].retry_after == float("inf")
    assert (await take(a, "big", 10, big)).allowed  # "big" was not touched by b's refusal
    healthy(a, b)


async def test_concurrent_take_many_never_takes_partly(hosts: Hosts) -> None:
    a, b = hosts(), hosts()
    scarce, plenty = Limit(30, 0.0), Limit(1000, 0.0)
    batch = [Take("scarce", 1, scarce), Take("plenty", 1, plenty)]
    got = await asyncio.gather(*(s.take_many(batch) for _ in range(100) for s in (a, b)))
    admitted = [v for v in got if v[0].allowed]
    assert len(admitted) == 30
    assert all(v[0].allowed == v[1].allowed for v in got)
    # exactly 30 taken from "plenty" too: 970 left
    assert (await take(a, "plenty", 970, plenty)).allowed
    assert not (await take(b, "plenty", 1, plenty)).allowed
    healthy(a, b)


async def test_the_same_key_twice_adds_up(hosts: Hosts) -> None:
    a = hosts()
    lim = Limit(5, 0.0)
    got = await a.take_many([Take("k", 2, lim), Take("k", 2, lim)])
    assert [v.allowed for v in got] == [True, True]
    assert [v.remaining for v in got] == [1, 1]
    refused = await a.take_many([Take("k", 1, lim), Take("k", 1, lim)])
    assert not any(v.allowed for v in refused)
    assert refused[0].remaining == 1 and refused[0].retry_after == float("inf")
    assert (await take(a, "k", 1, lim)).allowed
    healthy(a)


async def test_idle_buckets_expire_once_full_again(hosts: Hosts, prefix: str) -> None:
    a = hosts()
    await take(a, "ttl", 5, Limit(10, 10.0))  # full again in 0.5 s
    r = Redis.from_url(URL)
    try:
        ttl = await r.pttl(f"{prefix}b:ttl")
        assert 1000 < ttl <= 1500 + 50  # refill time + 1 s
        await a.settle("ttl", 100, Limit(10, 10.0))  # full: same as missing, deleted
        assert await r.exists(f"{prefix}b:ttl") == 0
    finally:
        await r.aclose()


async def test_counters_are_shared(hosts: Hosts) -> None:
    a, b = hosts(), hosts()
    await asyncio.gather(*(s.add("spend", 0.5) for _ in range(50) for s in (a, b)))
    assert await a.get("spend") == pytest.approx(50.0)
    assert await b.get("spend") == pytest.approx(50.0)
    healthy(a, b)


# --- concurrency slots -------------------------------------------------------------------------


async def test_slots_are_shared_across_hosts(hosts: Hosts) -> None:
    a, b, c = hosts(), hosts(), hosts()
    got = await asyncio.gather(*(s.acquire("slots", 10) for _ in range(40) for s in (a, b)))
    assert sum(got) == 10
    await c.release("slots")  # c holds none: nothing to give back, no slot freed
    assert not await c.acquire("slots", 10)
    holder = a if a._held else b
    await holder.release("slots")
    assert await c.acquire("slots", 10)
    assert not await holder.acquire("slots", 10)
    healthy(a, b, c)


async def test_a_crashed_hosts_slots_expire_within_the_ttl(hosts: Hosts) -> None:
    ttl = 1.0
    a, b = hosts(slot_ttl=ttl), hosts(slot_ttl=ttl)
    assert await a.acquire("lease", 1)
    await a.close(release_slots=False)  # dies holding the slot: no release, no refresh
    t0 = time.monotonic()
    assert not await b.acquire("lease", 1)
    while not await b.acquire("lease", 1):
        assert time.monotonic() - t0 < ttl + 0.5, "slot not freed within its TTL"
        await asyncio.sleep(0.05)
    assert time.monotonic() - t0 <= ttl + 0.3


async def test_a_live_holder_keeps_its_slot_past_the_ttl(hosts: Hosts) -> None:
    a, b = hosts(slot_ttl=0.6), hosts(slot_ttl=0.6)
    assert await a.acquire("long", 1)
    await asyncio.sleep(1.5)  # 2.5 leases: refreshed in the background meanwhile
    assert not await b.acquire("long", 1)
    await a.release("long")
    assert await b.acquire("long", 1)
    healthy(a, b)


async def test_close_gives_back_held_slots(hosts: Hosts) -> None:
    a, b = hosts(), hosts()
    assert await a.acquire("closing", 2) and await a.acquire("closing", 2)
    await a.close()
    assert await b.acquire("closing", 2) and await b.acquire("closing", 2)


# --- failure modes -----------------------------------------------------------------------------


async def blackhole() -> tuple[asyncio.Server, int]:
    """A server that accepts connections and never answers (a hung Redis)."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_fail_open_on_a_closed_port_answers_from_the_fallback(hosts: Hosts) -> None:
    s = hosts(url="redis://:s3cret@127.0.0.1:1/0", on_error="open", timeout=0.25)
    lim = Limit(5, 0.0)
    t0 = time.monotonic()
    got = [await take(s, "fb", 1, lim) for _ in range(7)]
    assert time.monotonic() - t0 < 0.25
    assert [v.allowed for v in got] == [True] * 5 + [False] * 2  # enforced per worker
    assert await s.acquire("fb", 1) and not await s.acquire("fb", 1)
    await s.release("fb")
    assert await s.acquire("fb", 1)
    assert await s.add("fb", 2) == 2 and await s.get("fb") == 2
    h = s.health()
    assert h["reachable"] is False and h["on_error"] == "open"
    assert h["errors"] == 1  # then skipped during the backoff
    assert h["fallback_calls"] == 7 + 3 + 2  # a fallback slot's release is local anyway
    assert "s3cret" not in str(h["url"])


async def test_fail_open_on_a_hung_redis_waits_the_timeout_once(hosts: Hosts) -> None:
    server, port = await blackhole()
    try:
        s = hosts(url=f"redis://127.0.0.1:{port}/0", on_error="open", timeout=0.2)
        t0 = time.monotonic()
        first = await take(s, "hung", 1, Limit(3, 0.0))
        first_wait = time.monotonic() - t0
        assert first.allowed and 0.15 < first_wait < 0.6
        t1 = time.monotonic()
        rest = [await take(s, "hung", 1, Limit(3, 0.0)) for _ in range(50)]
        assert time.monotonic() - t1 < 0.1  # no per-call timeout during the backoff
        assert sum(v.allowed for v in rest) == 2
        assert s.health()["reachable"] is False
    finally:
        server.close()


async def test_fail_closed_raises(hosts: Hosts) -> None:
    s = hosts(url="redis://127.0.0.1:1/0", on_error="closed", timeout=0.25)
    lim = Limit(5, 1.0)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: take(s, "x", 1, lim),
        lambda: s.settle("x", 1, lim),
        lambda: s.acquire("x", 1),
        lambda: s.add("x", 1),
        lambda: s.get("x"),
    ]
    t0 = time.monotonic()
    for call in calls:
        with pytest.raises(StateUnavailable):
            await call()
    await s.release("x")  # never raises (nothing held here anyway)
    assert time.monotonic() - t0 < 0.25
    h = s.health()
    assert h["reachable"] is False and h["fallback_calls"] == 0 and h["errors"] == 1


class Proxy:
    """A TCP relay to the real Redis that can be cut and restored (on the same port)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    async def _relay(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", 6379)
        self.writers += [cw, sw]

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.transport.abort()

        await asyncio.gather(pipe(cr, sw), pipe(sr, cw))


async def test_recovers_by_itself_after_the_backoff(hosts: Hosts) -> None:
    proxy = Proxy()
    await proxy.start()
    try:
        s = hosts(url=f"redis://127.0.0.1:{proxy.port}/0", timeout=0.25, backoff=0.3)
        lim = Limit(1000, 0.0)
        assert (await take(s, "rec", 10, lim)).remaining == 990
        await proxy.stop()
        down = await take(s, "rec", 10, lim)  # from the fallback: its own full bucket
        assert down.allowed and down.remaining == 990
        assert s.health()["reachable"] is False
        await proxy.start()
        await asyncio.sleep(0.35)
        back = await take(s, "rec", 10, lim)  # Redis again: 980 there
        assert back.remaining == 980
        assert s.health()["reachable"] is True
        assert s.errors >= 1
    finally:
        if proxy.server is not None:
            proxy.server.close()


async def test_prepared_take_survives_a_lost_script_cache_and_a_cut_connection(
    hosts: Hosts,
) -> None:
    """The prepared take goes straight to the open connection once its script is loaded:
    a flushed script cache is reloaded (the take still counts once), a cut connection
    falls back (fail open) and Redis is used again after the backoff."""
    proxy = Proxy()
    await proxy.start()
    try:
        s = hosts(url=f"redis://127.0.0.1:{proxy.port}/0", timeout=0.25, backoff=0.3)
        lim = Limit(100, 0.0)
        h = s.prepare([("pa", lim), ("pb", lim)])
        assert await s.take_prepared(h, [1.0, 2.0]) == (True, [99.0, 98.0])  # loads it
        assert await s.take_prepared(h, [1.0, 2.0]) == (True, [98.0, 96.0])  # direct
        r = Redis.from_url(URL)
        try:
            await r.script_flush()
        finally:
            await r.aclose()
        assert await s.take_prepared(h, [1.0, 2.0]) == (True, [97.0, 94.0])  # NOSCRIPT
        healthy(s)
        await proxy.stop()
        down = await s.take_prepared(h, [1.0, 2.0])  # the fallback's own buckets
        assert down == (True, [99.0, 98.0])
        assert s.health()["reachable"] is False and s.errors == 1
        await proxy.start()
        await asyncio.sleep(0.35)
        assert await s.take_prepared(h, [1.0, 2.0]) == (True, [96.0, 92.0])
        assert s.health()["reachable"] is True
    finally:
        if proxy.server is not None:
            proxy.server.close()


@pytest.mark.parametrize("on_error", ["open", "closed"])
async def test_prepared_take_failing_on_an_open_connection(
    hosts: Hosts, monkeypatch: pytest.MonkeyPatch, on_error: str
) -> None:
    """A failure of the direct call itself (the connection looked open): counted, then the
    fallback (open) or ``StateUnavailable`` (closed); an error reply that is the call's
    fault is raised as it is."""
    from fastgw.state.resp import RespError

    s = hosts(on_error=on_error, backoff=30.0)
    h = s.prepare([("pd", Limit(10, 0.0))])
    assert await s.take_prepared(h, [1.0]) == (True, [9.0])
    conn = s._redis.ready()
    assert conn is not None
    loop = asyncio.get_running_loop()

    def failing(exc: BaseException) -> Callable[[bytes], asyncio.Future[Any]]:
        def send(packed: bytes) -> asyncio.Future[Any]:
            fut: asyncio.Future[Any] = loop.create_future()
            fut.set_exception(exc)
            return fut

        return send

    def replying(reply: object) -> Callable[[bytes], asyncio.Future[Any]]:
        def send(packed: bytes) -> asyncio.Future[Any]:
            fut: asyncio.Future[Any] = loop.create_future()
            fut.set_result(reply)
            return fut

        return send

    monkeypatch.setattr(conn, "send", replying(RespError("ERR wrong number of arguments")))
    with pytest.raises(RespError):
        await s.take_prepared(h, [1.0])
    assert s.errors == 0
    monkeypatch.setattr(conn, "send", failing(ConnectionResetError("cut")))
    if on_error == "open":
        assert await s.take_prepared(h, [1.0]) == (True, [9.0])  # the fallback's bucket
        assert s.fallback_calls == 1
    else:
        with pytest.raises(StateUnavailable):
            await s.take_prepared(h, [1.0])
    assert s.errors == 1 and s.health()["reachable"] is False


async def test_prepared_take_fails_closed(hosts: Hosts) -> None:
    proxy = Proxy()
    await proxy.start()
    try:
        s = hosts(url=f"redis://127.0.0.1:{proxy.port}/0", timeout=0.25, on_error="closed")
        h = s.prepare([("pc", Limit(10, 0.0))])
        assert await s.take_prepared(h, [1.0]) == (True, [9.0])
        assert await s.take_prepared(h, [1.0]) == (True, [8.0])
        await proxy.stop()
        with pytest.raises(StateUnavailable):
            await s.take_prepared(h, [1.0])
        assert s.fallback_calls == 0
    finally:
        if proxy.server is not None:
            proxy.server.close()


def test_health_redacts_the_password() -> None:
    assert redact_url("redis://user:pw@h:6379/0") == "redis://user:***@h:6379/0"
    assert redact_url("redis://:pw@h/0") == "redis://:***@h/0"
    assert redact_url("rediss://pw@h/0") == "rediss://***@h/0"
    assert redact_url("redis://h/0?password=pw&db=1") == "redis://h/0?password=***&db=1"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


async def test_open_state_builds_it_from_the_config(prefix: str) -> None:
    s = open_state(StateConfig(backend="redis", redis_url=URL, prefix=prefix, on_error="closed"))
    try:
        assert isinstance(s, RedisState) and s.on_error == "closed"
        assert s.health()["backend"] == "redis"
        assert (await take(s, "cfg", 1, Limit(1, 0.0))).allowed
    finally:
        await s.close()


# --- one round trip per call -------------------------------------------------------------------


async def test_one_round_trip_per_call(
    hosts: Hosts, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = hosts()
    lim = Limit(1e6, 1.0)
    three = [Take("r1", 1, lim), Take("r2", 1, lim), Take("r3", 1, lim)]

    async def warm() -> None:  # connect, and send every script once (EVAL)
        await s.take_many(three)
        await s.settle("r1", 1, lim)
        assert await s.acquire("r", 5)
        await s.release("r")

    await warm()
    sent: list[str] = []
    real = RespClient.call

    async def counting(self: RespClient, *args: Any) -> Any:
        sent.append(str(args[0]))
        return await real(self, *args)

    r = Redis.from_url(URL)
    before = await r.info("commandstats")
    monkeypatch.setattr(RespClient, "call", counting)
    try:
        n = 20
        for _ in range(n):
            await s.take_many(three)  # one EVALSHA for three buckets
            await s.take_many(three[:1])
            await s.settle("r2", 1, lim)
            assert await s.acquire("r", 5)
            await s.release("r")
            await s.add("ctr", 1)
            await s.get("ctr")
        sent_by_s = len(sent)
        after = await r.info("commandstats")
    finally:
        monkeypatch.undo()
        await r.aclose()
    calls_per_round = 7
    assert sent_by_s == n * calls_per_round, sent[:10]
    assert sent.count("EVALSHA") == n * 4 and sent.count("EVAL") == 0

    def delta(cmd: str) -> int:
        a = after.get(f"cmdstat_{cmd}", {}).get("calls", 0)
        b = before.get(f"cmdstat_{cmd}", {}).get("calls", 0)
        return int(a) - int(b)

    # what Redis saw (other clients of this Redis may add to it, never remove)
    assert delta("evalsha") >= n * 4
    assert delta("incrbyfloat") >= n
    healthy(s)


# --- charge counters ---------------------------------------------------------------------------


async def test_two_hosts_never_overspend_a_budget(hosts: Hosts) -> None:
    a, b = hosts(), hosts()
    inf = float("inf")
    three = [Charge("key", 0.1, 1.0), Charge("team", 0.1, 0.55), Charge("tag", 0.1, inf)]
    got = await asyncio.gather(
        *(s.charge_many([Charge("solo", 0.1, 1.0)]) for _ in range(30) for s in (a, b))
    )
    assert sum(v[0].allowed for v in got) == 10  # 0.1 x 10 = 0.9999999999999999
    got = await asyncio.gather(*(s.charge_many(three, ttl=60) for _ in range(30) for s in (a, b)))
    assert sum(all(v.allowed for v in r) for r in got) == 5  # the team's cap binds
    totals = await b.charge_many([Charge(k, 0, inf) for k in ("key", "team", "tag")])
    assert totals[0].total == totals[1].total == totals[2].total == pytest.approx(0.5)
    assert await a.adjust("key", -0.5) == pytest.approx(0.0)  # settled from another host
    assert (await b.charge_many([Charge("key", 1.0, 1.0)]))[0].allowed
    healthy(a, b)


async def test_charge_counters_in_redis(hosts: Hosts, prefix: str) -> None:
    a = hosts()
    r = Redis.from_url(URL)
    try:
        assert (await a.charge_many([Charge("read", 0, 1.0)]))[0] == (True, 0.0)
        assert await r.exists(f"{prefix}m:read") == 0  # a read creates nothing
        await a.charge_many([Charge("p", 0.5, 1.0)], ttl=10)
        assert await r.get(f"{prefix}m:p") == b"0.5"
        assert 9000 < await r.pttl(f"{prefix}m:p") <= 10000
        await a.adjust("p", 0.25)  # no ttl: the key keeps its expiry
        assert 9000 < await r.pttl(f"{prefix}m:p") <= 10000
        await a.charge_many([Charge("p", 1.0, 1.0)], ttl=100)  # refused: touches nothing
        assert await r.pttl(f"{prefix}m:p") <= 10000
        await a.adjust("p", 0.0, ttl=100)
        assert 99000 < await r.pttl(f"{prefix}m:p") <= 100000
        assert await a.seed("s", 2.5, ttl=0.2)
        assert not await a.seed("s", 1.0)
        assert await r.pttl(f"{prefix}m:s") <= 200
        await asyncio.sleep(0.3)
        assert await a.seed("s", 1.0)  # expired: seeded anew, now without a ttl
        assert await r.pttl(f"{prefix}m:s") == -1
        assert await a.adjust("n", -1.0) == -1.0 and await r.pttl(f"{prefix}m:n") == -1
        # the other namespaces are elsewhere
        await a.add("p", 3.0)
        assert await r.get(f"{prefix}c:p") == b"3"
    finally:
        await r.aclose()
    healthy(a)


async def test_charge_counters_fail_open_and_closed(hosts: Hosts) -> None:
    s = hosts(url="redis://127.0.0.1:1/0", on_error="open", timeout=0.25)
    got = [await s.charge_many([Charge("fb", 0.4, 1.0)]) for _ in range(3)]
    assert [v[0] for v in got] == [(True, 0.4), (True, 0.8), (False, 0.8)]  # per worker
    assert await s.adjust("fb", -0.8) == 0.0
    assert await s.seed("new", 1.0) and not await s.seed("new", 1.0)
    assert s.health()["fallback_calls"] == 6
    c = hosts(url="redis://127.0.0.1:1/0", on_error="closed", timeout=0.25)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: c.charge_many([Charge("x", 1.0, 2.0)]),
        lambda: c.adjust("x", 1.0),
        lambda: c.seed("x", 1.0),
    ]
    for call in calls:
        with pytest.raises(StateUnavailable):
            await call()
    assert c.health()["fallback_calls"] == 0
    with pytest.raises(ValueError):  # a wrong call is the caller's error, whatever Redis does
        await c.charge_many([Charge("x", -1.0, 2.0)])


async def test_one_script_per_charge_call(hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    s = hosts()
    inf = float("inf")
    three = [Charge("c1", 0.5, inf), Charge("c2", 0.5, inf), Charge("c3", 0.5, inf)]
    await s.charge_many(three)  # send the scripts once
    await s.adjust("c1", 1.0)
    await s.seed("c4", 1.0)
    evals: list[int] = []
    real = RedisState._eval

    async def counting(self: RedisState, script: Any, keys: Any, args: Any) -> Any:
        evals.append(len(keys))
        return await real(self, script, keys, args)

    monkeypatch.setattr(RedisState, "_eval", counting)
    for _ in range(10):
        assert all(v.allowed for v in await s.charge_many(three, ttl=60))
        await s.adjust("c1", -0.25, ttl=60)
        assert not await s.seed("c4", 2.0)
    assert evals == [3, 1, 1] * 10  # one script, one round trip, per call
    healthy(s)


# --- a whole admission (slots and buckets) in one round trip ------------------------------------


async def test_admission_with_slots_is_one_round_trip(hosts: Hosts) -> None:
    a, b = hosts(), hosts()
    lim = Limit(5, 0.0)
    ha = a.prepare_admit([("conc", 2)], [("rpm", lim)])
    hb = b.prepare_admit([("conc", 2)], [("rpm", lim)])
    sent: list[bytes] = []
    for s in (a, b):  # count what goes over the wire: one command per admission
        real = s._redis.call_packed

        async def counting(packed: bytes, real: Any = real) -> Any:
            sent.append(packed)
            return await real(packed)

        s._redis.call_packed = counting  # type: ignore[method-assign]
    await a.take_many([Take("warm", 0, lim)])  # loads nothing needed; ADMIT loads on first use
    assert await a.admit_prepared(ha, [1.0]) == (1, [4.0])  # first use: EVAL (not counted)
    assert await b.admit_prepared(hb, [1.0]) == (1, [3.0])  # host b: the same set and bucket
    assert await a.admit_prepared(ha, [1.0]) == (-1, [])  # both slots held: nothing taken
    assert (await take(a, "rpm", 0, lim)).remaining == 3.0
    await a.release("conc")
    assert await a.admit_prepared(ha, [4.0]) == (0, [3.0])  # the bucket refuses: no slot kept
    assert await b.admit_prepared(hb, [3.0]) == (1, [0.0])
    # one EVALSHA per admission once each host has loaded the script (its first is an EVAL)
    assert [p.count(b"EVALSHA") for p in sent] == [1, 1, 1]
    await b.release("conc")
    await b.release("conc")
    assert await a.acquire("conc", 2) and await a.acquire("conc", 2)  # every slot given back
    healthy(a, b)


async def test_admission_fails_open_to_the_fallback(hosts: Hosts) -> None:
    s = hosts(url="redis://127.0.0.1:1/0", on_error="open", timeout=0.25)
    h = s.prepare_admit([("c", 1)], [("r", Limit(2, 0.0))])
    assert await s.admit_prepared(h, [1.0]) == (1, [1.0])
    assert await s.admit_prepared(h, [1.0]) == (-1, [])  # the fallback's own slot is held
    await s.release("c")
    assert await s.admit_prepared(h, [1.0]) == (1, [0.0])
    assert s.fallback_calls >= 3


async def test_refused_credentials_follow_on_error(hosts: Hosts) -> None:
    """Redis refusing the login (here: a password where it needs none) is Redis being
    unusable: the fallback answers (open) or StateUnavailable (closed), never a raw error."""
    url = "redis://:not-the-password@127.0.0.1:6379/0"
    s = hosts(url=url, on_error="open", timeout=0.5)
    assert (await take(s, "auth", 1, Limit(3, 0.0))).remaining == 2.0  # the fallback's bucket
    assert s.health()["reachable"] is False and s.errors >= 1
    c = hosts(url=url, on_error="closed", timeout=0.5)
    with pytest.raises(StateUnavailable):
        await take(c, "auth", 1, Limit(3, 0.0))
