"""Per-target health: the circuit breaker's state machine and the latency/in-flight stats."""

from __future__ import annotations

import pytest

from fastgw.config.schema import BreakerConfig
from fastgw.routing.health import (
    CLOSED,
    DENY,
    EWMA_ALPHA,
    HALF_OPEN,
    OPEN,
    PASS,
    PROBE,
    STATS_TTL,
    Breaker,
    Stats,
)

T0 = 1000.0


def breaker(
    failures: int = 3,
    window: int = 5,
    cooldown: float = 10.0,
    probes: int = 1,
    count_429: bool = True,
) -> Breaker:
    return Breaker(
        BreakerConfig(
            failures=failures,
            window=window,
            cooldown=cooldown,
            probes=probes,
            count_429=count_429,
        )
    )


def call(b: Breaker, failed: bool, now: float) -> int:
    """One call through the breaker, as the attempt loop makes it."""
    token = b.allow(now)
    if token != DENY:
        b.record(failed, token, now)
    return token


def opened(b: Breaker, now: float = T0) -> Breaker:
    """Drive ``b`` open with consecutive failures."""
    for _ in range(b.failures):
        assert call(b, True, now) == PASS
    assert b.state == OPEN
    return b


# -- closed → open -------------------------------------------------------------------------


def test_closed_breaker_passes_every_call() -> None:
    b = breaker()
    assert b.state == CLOSED
    assert all(b.allow(T0 + i) == PASS for i in range(20))
    assert b.retry_after(T0) == 0.0


@pytest.mark.parametrize(("failures", "window"), [(1, 1), (3, 5), (5, 10), (64, 64)])
def test_opens_exactly_at_the_nth_failure(failures: int, window: int) -> None:
    b = breaker(failures=failures, window=window)
    for i in range(failures - 1):
        assert call(b, True, T0 + i) == PASS
        assert b.state == CLOSED, f"opened after {i + 1} of {failures} failures"
    call(b, True, T0 + 50)
    assert b.state == OPEN
    assert b.opened == 1
    assert b.until == T0 + 50 + b.cooldown


def test_failures_count_within_the_window_not_consecutively() -> None:
    b = breaker(failures=3, window=5)
    for failed in (True, False, True, False):
        call(b, failed, T0)
    assert b.state == CLOSED
    call(b, True, T0)  # 3 failed of the last 5
    assert b.state == OPEN


def test_old_failures_slide_out_of_the_window() -> None:
    b = breaker(failures=2, window=3)
    for failed in (True, False, False):
        call(b, failed, T0)
    assert b.bits.bit_count() == 1
    call(b, True, T0)  # the first failure has left the window: 1 of the last 3
    assert b.state == CLOSED
    assert b.bits.bit_count() == 1
    call(b, True, T0)  # 2 of the last 3
    assert b.state == OPEN


def test_successes_alone_never_open() -> None:
    b = breaker(failures=1, window=1)
    for i in range(100):
        call(b, False, T0 + i)
    assert b.state == CLOSED and b.opened == 0


# -- open ----------------------------------------------------------------------------------


def test_open_denies_until_the_cooldown_ends() -> None:
    b = opened(breaker(cooldown=10.0))
    assert b.allow(T0) == DENY
    assert b.allow(T0 + 9.999) == DENY
    assert b.state == OPEN
    assert b.retry_after(T0 + 4.0) == pytest.approx(6.0)
    assert b.retry_after(T0 + 20.0) == 0.0
    assert b.allow_state(T0 + 9.999) == OPEN


def test_calls_recorded_with_pass_while_open_are_ignored() -> None:
    b = opened(breaker())
    until, bits = b.until, b.bits
    b.record(True, PASS, T0 + 5)  # a call that started before the breaker opened
    b.record(False, PASS, T0 + 5)
    assert (b.state, b.until, b.bits, b.opened) == (OPEN, until, bits, 1)


# -- half-open -----------------------------------------------------------------------------


def test_half_open_after_cooldown_lets_one_probe_through() -> None:
    b = opened(breaker(cooldown=10.0))
    assert b.allow_state(T0 + 10.0) == HALF_OPEN  # reading the state takes no probe
    assert b.state == OPEN
    assert b.allow(T0 + 10.0) == PROBE
    assert b.state == HALF_OPEN
    assert b.allow(T0 + 10.5) == DENY  # one probe at a time
    assert b.allow(T0 + 60.0) == DENY
    assert b.retry_after(T0 + 10.5) == 0.0


def test_probe_success_closes_and_resets_the_window() -> None:
    b = opened(breaker(failures=3, window=5, cooldown=10.0))
    token = b.allow(T0 + 10)
    assert token == PROBE
    b.record(False, token, T0 + 11)
    assert b.state == CLOSED
    assert b.bits == 0
    assert b.allow(T0 + 11) == PASS
    call(b, True, T0 + 12)
    call(b, True, T0 + 12)
    assert b.state == CLOSED  # the failures before opening no longer count
    call(b, True, T0 + 12)
    assert b.state == OPEN
    assert b.opened == 2


def test_probe_failure_reopens_with_a_fresh_cooldown() -> None:
    b = opened(breaker(cooldown=10.0))
    token = b.allow(T0 + 10)
    b.record(True, token, T0 + 12)
    assert b.state == OPEN
    assert b.until == T0 + 22
    assert b.opened == 2
    assert b.allow(T0 + 21.9) == DENY
    assert b.retry_after(T0 + 12) == pytest.approx(10.0)
    assert b.allow(T0 + 22) == PROBE


def test_release_frees_a_probe() -> None:
    b = opened(breaker(cooldown=10.0))
    token = b.allow(T0 + 10)
    assert token == PROBE
    b.release(token)  # the client left: no verdict
    assert b.state == HALF_OPEN
    token = b.allow(T0 + 10)
    assert token == PROBE
    assert b.allow(T0 + 10) == DENY
    b.record(False, token, T0 + 11)
    assert b.state == CLOSED


def test_release_of_a_pass_token_changes_nothing() -> None:
    b = opened(breaker(cooldown=10.0))
    assert b.allow(T0 + 10) == PROBE
    b.release(PASS)
    assert b.allow(T0 + 10) == DENY


def test_pass_calls_finishing_while_half_open_do_not_decide() -> None:
    b = opened(breaker(cooldown=10.0))
    assert b.allow(T0 + 10) == PROBE
    b.record(False, PASS, T0 + 11)  # started while closed, ended now
    assert b.state == HALF_OPEN
    b.record(True, PASS, T0 + 11)
    assert b.state == HALF_OPEN
    assert b.opened == 1


def test_several_probes_at_once() -> None:
    b = opened(breaker(probes=2, cooldown=10.0))
    p1, p2 = b.allow(T0 + 10), b.allow(T0 + 10)
    assert (p1, p2) == (PROBE, PROBE)
    assert b.allow(T0 + 10) == DENY
    b.record(False, p1, T0 + 11)  # one success closes
    assert b.state == CLOSED
    b.record(True, p2, T0 + 11)  # the other probe, late: closed already
    assert b.state == CLOSED
    assert b.bits == 0


def test_stale_probe_cannot_raise_the_probe_limit() -> None:
    b = opened(breaker(probes=2, cooldown=10.0))
    p1, p2 = b.allow(T0 + 10), b.allow(T0 + 10)
    b.record(True, p1, T0 + 11)  # p1 fails: open again until T0 + 21; p2 still in flight
    assert b.state == OPEN
    p3 = b.allow(T0 + 21)
    assert p3 == PROBE
    b.release(p2)  # the stale probe ends with no verdict
    granted = [b.allow(T0 + 21) for _ in range(3)]
    in_flight = 1 + granted.count(PROBE)  # p3 and the new ones
    assert in_flight <= 2


# -- 429 and failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "counted", "uncounted"),
    [
        (None, True, True),
        (500, True, True),
        (502, True, True),
        (503, True, True),
        (599, True, True),
        (429, True, False),
        (400, False, False),
        (404, False, False),
        (499, False, False),
        (200, False, False),
    ],
)
def test_is_failure(status: int | None, counted: bool, uncounted: bool) -> None:
    assert breaker(count_429=True).is_failure(status) is counted
    assert breaker(count_429=False).is_failure(status) is uncounted


def test_429_does_not_open_when_not_counted() -> None:
    b = breaker(failures=1, window=1, count_429=False)
    for _ in range(5):
        call(b, b.is_failure(429), T0)
    assert b.state == CLOSED
    call(b, b.is_failure(503), T0)
    assert b.state == OPEN


# -- snapshot ------------------------------------------------------------------------------


def test_snapshot() -> None:
    b = breaker(failures=3, window=5, cooldown=10.0)
    call(b, True, T0)
    assert b.snapshot(T0) == {"state": "closed", "recent_failures": 1, "opened": 0}
    call(b, True, T0)
    call(b, True, T0)
    assert b.snapshot(T0 + 2.5) == {
        "state": "open",
        "recent_failures": 3,
        "opened": 1,
        "retry_after": 7.5,
    }
    snap = b.snapshot(T0 + 1.0 / 3)
    assert snap["retry_after"] == round(10.0 - 1.0 / 3, 3)
    # past the cool-down it reads half-open, without taking the probe
    assert b.snapshot(T0 + 10)["state"] == "half_open"
    assert b.allow(T0 + 10) == PROBE
    assert b.snapshot(T0 + 10)["state"] == "half_open"
    assert "retry_after" not in b.snapshot(T0 + 10)


# -- stats ---------------------------------------------------------------------------------


def test_stats_start_unknown() -> None:
    st = Stats()
    assert (st.inflight, st.ewma, st.latency(T0)) == (0, 0.0, 0.0)


def test_stats_ewma() -> None:
    st = Stats()
    st.sample(1.0, T0)
    assert st.ewma == 1.0  # the first sample is the estimate
    assert st.latency(T0) == 1.0
    st.sample(2.0, T0 + 1)
    assert st.ewma == pytest.approx(1.0 + EWMA_ALPHA * 1.0)
    st.sample(0.0, T0 + 2)
    assert st.ewma == pytest.approx((1.0 + EWMA_ALPHA) * (1 - EWMA_ALPHA))
    assert st.latency(T0 + 2) == st.ewma


def test_stats_expire_after_the_ttl() -> None:
    st = Stats()
    st.sample(0.5, T0)
    assert st.latency(T0 + STATS_TTL) == 0.5  # still fresh at exactly the TTL
    assert st.latency(T0 + STATS_TTL + 0.001) == 0.0  # stale: unknown again
    st.sample(3.0, T0 + STATS_TTL + 1)  # a stale estimate is replaced, not blended
    assert st.ewma == 3.0
    assert st.latency(T0 + STATS_TTL + 1) == 3.0


def test_stats_failed_counts_as_slow() -> None:
    st = Stats()
    st.failed(0.1, T0)
    assert st.ewma == 1.0  # at least a second
    st = Stats()
    st.sample(0.5, T0)
    st.failed(0.2, T0 + 1)  # at least four times the estimate: 2.0
    assert st.ewma == pytest.approx(0.5 + EWMA_ALPHA * (2.0 - 0.5))
    st = Stats()
    st.sample(0.1, T0)
    st.failed(7.0, T0 + 1)  # the real duration, when longer
    assert st.ewma == pytest.approx(0.1 + EWMA_ALPHA * (7.0 - 0.1))
    assert st.last == T0 + 1
