"""The limiter on the in-process state backend with a fake clock: reservations, settlement
with real usage, all-or-nothing across scopes, slots released on every outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fastgw.api.errors import GatewayError
from fastgw.config import ConfigError, validate
from fastgw.policy.keys import KeyStore, Principal
from fastgw.policy.limits import Later, Limiter
from fastgw.state.local import LocalState
from fastgw.state.memory import MemoryState

KEY = "sk-fastgw-unit-limits-00000001"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def setup(
    limits: dict[str, object], model_limits: dict[str, object] | None = None
) -> tuple[Limiter, Principal, Clock, MemoryState]:
    models: dict[str, object] = {"m": {"targets": [{"provider": "p"}]}}
    if model_limits:
        models["m"] = {"targets": [{"provider": "p"}], "limits": model_limits}
    cfg = validate(
        {
            "providers": {"p": {"kind": "openai"}},
            "models": models,
            "keys": [{"name": "k", "key": KEY, "limits": limits}],
        },
        env={},
    )
    clock = Clock()
    state = MemoryState(clock)
    limiter = Limiter(cfg)
    limiter.state = state
    principal = KeyStore(cfg).authenticate([(b"x-api-key", KEY.encode())], 0)
    return limiter, principal, clock, state


async def test_tokens_are_reserved_then_settled_with_real_usage() -> None:
    limiter, p, clock, _state = setup({"tpm": 1000})
    g = await limiter.admit(p, "m", 400)
    assert g is not None
    assert dict(g.headers)[b"x-ratelimit-remaining-tokens"] == b"600"
    g.used_from((100, 50, 150, 0))  # used 150 of the 400 reserved
    await g.finish()
    await limiter.flush()  # settlements are batched; send them now
    g2 = await limiter.admit(p, "m", 1)
    assert g2 is not None
    assert dict(g2.headers)[b"x-ratelimit-remaining-tokens"] == b"849"  # 1000 - 150 - 1
    g2.used_from((700, 300, 1000, 0))  # far above the estimate: the bucket goes into debt
    await g2.finish()
    await limiter.flush()
    with pytest.raises(GatewayError) as e:
        await limiter.admit(p, "m", 1)
    assert e.value.status == 429
    clock.t += 60  # a minute refills 1000
    assert await limiter.admit(p, "m", 1) is not None


async def test_settlements_are_summed_per_bucket_and_sent_later() -> None:
    limiter, p, _, state = setup({"tpm": 1000})
    grants = [await limiter.admit(p, "m", 100) for _ in range(3)]
    for g in grants:
        assert g is not None
        g.used_from((10, 10, 20, 0))
        await g.finish()
    assert state.buckets["tpm:key:k"].tokens == pytest.approx(700)  # not yet settled
    assert limiter._owed["tpm:key:k"][0] == pytest.approx(240)  # one sum for the bucket
    await asyncio.sleep(0.15)  # the batch goes out by itself
    assert state.buckets["tpm:key:k"].tokens == pytest.approx(940)


async def test_unknown_usage_keeps_the_estimate() -> None:
    limiter, p, _, _state = setup({"tpm": 100})
    g = await limiter.admit(p, "m", 60)
    assert g is not None
    await g.finish()  # a stream cut before its usage arrived
    with pytest.raises(GatewayError):
        await limiter.admit(p, "m", 60)


async def test_refusal_takes_nothing_and_frees_slots() -> None:
    limiter, p, _, state = setup({"rpm": 10, "concurrency": 5}, {"rpm": 1})
    g = await limiter.admit(p, "m", 1)
    assert g is not None
    with pytest.raises(GatewayError) as e:
        await limiter.admit(p, "m", 1)  # the model's 1/min refuses
    assert "model 'm' is over its 1 requests/minute limit" in e.value.message
    headers = dict(e.value.headers)
    assert headers[b"retry-after"] == b"60"
    assert headers[b"x-ratelimit-limit-requests"] == b"1"
    assert state.slots == {"conc:key:k": 1}  # only the admitted request's slot
    await g.finish()
    assert state.slots == {}
    # the key's own bucket lost only the admitted request: 9 left
    assert state.buckets["rpm:key:k"].tokens == pytest.approx(9)


async def test_concurrency() -> None:
    limiter, p, _, _state = setup({"concurrency": 2})
    a = await limiter.admit(p, "m", 1)
    b = await limiter.admit(p, "m", 1)
    with pytest.raises(GatewayError) as e:
        await limiter.admit(p, "m", 1)
    assert e.value.code == "concurrency_limit_exceeded"
    assert a is not None and b is not None
    await a.finish()
    await a.finish()  # twice is harmless
    assert await limiter.admit(p, "m", 1) is not None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError) as e:
        validate(
            {"limits": {"rpm": 0}, "keys": [{"name": "k", "key": KEY, "limits": {"tpm": -5}}]},
            env={},
        )
    assert "limits.rpm: must be at least 1 (omit it for no limit)" in e.value.errors
    assert "keys[0].limits.tpm: must be at least 1 (omit it for no limit)" in e.value.errors


async def test_admit_now_is_admit_without_a_coroutine() -> None:
    limiter, p, _, _ = setup({"rpm": 2, "tpm": 1000})
    g = limiter.admit_now(p, "m", 100)
    assert g is not None
    assert dict(g.headers)[b"x-ratelimit-remaining-requests"] == b"1"
    g2 = await limiter.admit(p, "m", 100)  # the same buckets either way
    assert g2 is not None and dict(g2.headers)[b"x-ratelimit-remaining-tokens"] == b"800"
    with pytest.raises(GatewayError) as e:
        limiter.admit_now(p, "m", 100)
    assert e.value.status == 429 and e.value.code == "rate_limit_exceeded"


async def test_admit_now_defers_what_it_cannot_do_in_process() -> None:
    limiter, p, _, _ = setup({"concurrency": 1})
    with pytest.raises(Later):  # slots are awaited
        limiter.admit_now(p, "m", 1)
    limiter.state = _NoSyncState()
    with pytest.raises(Later):  # a remote backend is awaited
        limiter.admit_now(p, "m", 1)


class _NoSyncState(MemoryState):
    """A backend with no in-process take (as ``redis``)."""

    take_prepared_now = None  # type: ignore[assignment]


async def test_local_admission_is_one_call_with_its_settlement(tmp_path: Path) -> None:
    """On ``local`` the limiter admits through the shared table's ``admit`` (take, headers
    and settlement in ``_core``): the same verdicts, headers and settlement as ``admit``."""
    limiter, p, clock, _ = setup({"rpm": 3, "tpm": 1000})
    state = LocalState(str(tmp_path / "t.state"), 64, clock=clock)
    limiter.state = state
    try:
        g = limiter.admit_now(p, "m", 400)
        assert g is not None and not g.slots
        h = dict(g.headers)
        assert h[b"x-ratelimit-remaining-requests"] == b"2"
        assert h[b"x-ratelimit-remaining-tokens"] == b"600"
        assert h[b"x-ratelimit-reset-tokens"] == b"24s"
        g.settle((100, 50, 150, 0))  # 250 of the 400 back, at once
        g2 = await limiter.admit(p, "m", 100)  # the awaited way: the same buckets
        assert g2 is not None and dict(g2.headers)[b"x-ratelimit-remaining-tokens"] == b"750"
        await g2.finish()  # unknown usage: the estimate stands
        with pytest.raises(GatewayError) as e:  # 750 tokens left, 900 asked
            limiter.admit_now(p, "m", 900)
        assert e.value.status == 429
        assert "tokens/minute" in e.value.message
        assert dict(e.value.headers)[b"x-ratelimit-remaining-tokens"] == b"750"
        assert limiter.admit_now(p, "m", 1) is not None  # the third request
        with pytest.raises(GatewayError) as e:
            limiter.admit_now(p, "m", 1)
        assert "3 requests/minute" in e.value.message
        assert dict(e.value.headers)[b"retry-after"] == b"20"
    finally:
        await state.close()


async def test_local_admissions_on_the_system_clock(tmp_path: Path) -> None:
    """On the system clock, ``admit_now`` is the table's compiled ``Admissions.admit``: the
    first request of a (key, model) builds its plan, the next ones are one call; refusals
    name the bucket; changed keys start afresh; concurrency limits go the awaited way."""
    limiter, p, _, _ = setup({"rpm": 2, "tpm": 1000})
    state = LocalState(str(tmp_path / "s.state"), 64)
    limiter.state = state
    try:
        assert limiter.admit_now is not limiter._admit_in_process  # the compiled one
        g = limiter.admit_now(p, "m", 100)
        assert g is not None and dict(g.headers)[b"x-ratelimit-remaining-requests"] == b"1"
        g.settle((40, 10, 50, 0))
        g2 = limiter.admit_now(p, "m", 100)
        assert g2 is not None and dict(g2.headers)[b"x-ratelimit-remaining-tokens"] == b"850"
        with pytest.raises(GatewayError) as e:
            limiter.admit_now(p, "m", 1)
        assert e.value.status == 429 and "2 requests/minute" in e.value.message
        assert limiter.admit_now(None, "m", 1) is None  # no scope limits a keyless request
        limiter.update_keys([])  # the key's limits are gone
        assert limiter.admit_now(p, "m", 1) is None
    finally:
        await state.close()
    slots, p2, _, _ = setup({"concurrency": 1})
    state = LocalState(str(tmp_path / "c.state"), 64)
    slots.state = state
    try:
        with pytest.raises(Later):
            slots.admit_now(p2, "m", 1)
        with pytest.raises(Later):  # again: the pair is not remembered as a take
            slots.admit_now(p2, "m", 1)
    finally:
        await state.close()
