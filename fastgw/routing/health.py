"""Per-target health, per worker: circuit breakers and the statistics that
``least-latency`` / ``least-busy`` choose by.

Everything here is plain attribute arithmetic, called on the event loop (no locks): a
breaker keeps the outcomes of its last ``window`` calls as the bits of one integer.
"""

from __future__ import annotations

import time

from ..config.schema import BreakerConfig

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = ("closed", "open", "half_open")

#: ``allow()`` answers.
DENY, PASS, PROBE = 0, 1, 2

#: Weight of the newest sample in the latency EWMA.
EWMA_ALPHA = 0.3
#: Latency statistics older than this are forgotten (the target is probed again).
STATS_TTL = 30.0


class Breaker:
    """Closed → open when ``failures`` of the last ``window`` calls failed; open →
    half-open after ``cooldown``; half-open lets ``probes`` calls through at once: a success
    closes it, a failure opens it again for another cooldown."""

    __slots__ = (
        "bits",
        "cooldown",
        "count_429",
        "failures",
        "mask",
        "opened",
        "probes",
        "probing",
        "state",
        "until",
    )

    def __init__(self, cfg: BreakerConfig) -> None:
        self.failures = cfg.failures
        self.mask = (1 << cfg.window) - 1
        self.cooldown = cfg.cooldown
        self.count_429 = cfg.count_429
        self.probes = cfg.probes
        self.bits = 0  # 1 = a failed call, newest in bit 0
        self.state = CLOSED
        self.until = 0.0  # open: when the cool-down ends
        self.probing = 0  # half-open: probe calls in flight
        self.opened = 0  # times it opened (for metrics)

    def allow(self, now: float) -> int:
        """May a call go to the target now? ``PROBE`` calls must be recorded (or released)."""
        state = self.state
        if state == CLOSED:
            return PASS
        if state == OPEN:
            if now < self.until:
                return DENY
            self.state = HALF_OPEN  # ``probing`` keeps counting probes still in flight
        if self.probing < self.probes:
            self.probing += 1
            return PROBE
        return DENY

    def allow_state(self, now: float) -> int:
        """The state as of ``now`` without taking a probe (open past its cool-down reads
        half-open)."""
        if self.state == OPEN and now >= self.until:
            return HALF_OPEN
        return self.state

    def is_failure(self, status: int | None) -> bool:
        """Does an outcome count against the target? ``None``: no answer (connect error,
        timeout, dropped connection)."""
        return status is None or status >= 500 or (status == 429 and self.count_429)

    def record(self, failed: bool, token: int, now: float) -> None:
        """The outcome of a call that ``allow`` let through with ``token``."""
        if token == PROBE:
            self.probing -= 1
            if self.state != HALF_OPEN:
                return
            if failed:
                self._open(now)
            else:
                self.state = CLOSED
                self.bits = 0
            return
        if self.state != CLOSED:
            return  # a call that started before the breaker opened
        self.bits = bits = ((self.bits << 1) | failed) & self.mask
        if failed and bits.bit_count() >= self.failures:
            self._open(now)

    def release(self, token: int) -> None:
        """A call ended with no verdict (the client left first)."""
        if token == PROBE:
            self.probing -= 1

    def _open(self, now: float) -> None:
        self.state = OPEN
        self.until = now + self.cooldown
        self.opened += 1

    def retry_after(self, now: float) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.until - now)

    def snapshot(self, now: float) -> dict[str, object]:
        out: dict[str, object] = {
            "state": STATE_NAMES[self.allow_state(now)],
            "recent_failures": self.bits.bit_count(),
            "opened": self.opened,
        }
        if self.allow_state(now) == OPEN:
            out["retry_after"] = round(self.retry_after(now), 3)
        return out


class Stats:
    """In-flight calls and an EWMA of latency (request sent → answer, or first stream
    bytes); failures count as slow. Kept only for targets under a least-* strategy."""

    __slots__ = ("ewma", "inflight", "last")

    def __init__(self) -> None:
        self.inflight = 0
        self.ewma = 0.0
        self.last = 0.0  # monotonic time of the last sample

    def sample(self, seconds: float, now: float) -> None:
        if self.last == 0.0 or now - self.last > STATS_TTL:
            self.ewma = seconds
        else:
            self.ewma += EWMA_ALPHA * (seconds - self.ewma)
        self.last = now

    def failed(self, seconds: float, now: float) -> None:
        """A failed call: at least four times the current estimate and a second."""
        self.sample(max(seconds, 4 * self.latency(now), 1.0), now)

    def latency(self, now: float) -> float:
        """The estimate; 0 when unknown or stale, so such a target gets tried."""
        if self.last == 0.0 or now - self.last > STATS_TTL:
            return 0.0
        return self.ewma


monotonic = time.monotonic
