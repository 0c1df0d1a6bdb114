"""A fixed-size hash table in a shared, memory-mapped file: the pure-Python reference twin.

``_shm_c.pyx`` is the compiled twin with the same public API and behaviour; callers import
``fastgw._core.shm``, which picks one of the two. Both twins work on the same file at the
same time (same layout, same hash, same lock protocol), so processes running different twins
agree. The ``local`` state backend (``fastgw/state/local.py``) keeps token buckets,
concurrency slots, counters and charge counters here, shared by the worker processes of one
host.

File layout (little-endian, native alignment; ``HEADER_SIZE + entries * ENTRY_SIZE`` bytes)::

    header, 128 bytes
      0  8s  magic        b"FGWSHM\\x00\\x01"
      8  u32 version      1
     12  u32 ready        0 while the creator initialises it, then 1
     16  u64 entries      number of entries (StateConfig.entries)
     24  u32 entry_size   128
     28  u32 global_lock  taken to reuse an entry of a full table
     32  u64 used         entries ever claimed (an entry once used stays used)
     40  u32 stats_lock   guards ``used`` (a leaf lock: nothing is taken while holding it)
     44  ...              zero
    entry i at 128 + 128 * i
      0  u32 lock         0 free, else the pid of the process holding it (1: unknown)
      4  u32 kind         0 empty, 1 token bucket, 2 concurrency slots, 3 counter,
                          4 charge counter
      8  u64 h1           the key's 128-bit hash (blake2b of kind byte + UTF-8 key)
     16  u64 h2
     24  f64 value        bucket: tokens; counter, charge counter: the value; slots: unused
     32  f64 at           bucket: when ``value`` was last refilled (the caller's clock);
                          charge counter: when it expires (the caller's clock; +inf: never,
                          -inf: never written, the placeholder a read or a refusal leaves)
     40  f64 capacity     bucket: the last limit used (decides when the entry may be reused);
                          charge counter: when the entry was claimed for its key (the
                          caller's clock)
     48  f64 rate
     56  u32 overflow     slots: held by processes beyond the 8 recorded below
     60  u32 reserved
     64  8 x (u32 pid, u32 count)   slots: who holds how many

Lookup is open addressing with linear probing from ``h1 % entries``; an entry is identified
by kind and both hash words (a collision of 128 bits is practically impossible). Entries are
never emptied, so a probe may stop at the first empty entry.

Atomicity: every operation runs with the lock words of the entries it touches held. A lock
word is taken with an atomic compare-and-swap 0 → pid and given back with an atomic store
of 0; this twin calls libatomic's ``__atomic_compare_exchange_4`` through ``ctypes`` (or,
without libatomic, glibc's ``pthread_spin_trylock``, which swaps 0 → 1), the compiled twin
uses the compiler builtins. A probe holds one entry lock at a time; ``take_many`` first
finds (or creates) the entries of its keys, then locks them in increasing entry order (no
deadlock), checks that they still hold their keys, and decides (``charge_many`` likewise,
with charge counters). A waiter that has spun for ``STEAL_AFTER`` seconds on a lock whose
holder's pid no longer exists takes it over.

A full table: a new key reuses an entry that is equivalent to a missing one — a bucket that
has refilled to capacity, slots nobody holds (after reclaiming dead holders), a counter at
zero, a charge counter that has expired (or was never written) — under the global lock (a
bucket only once ``REUSE_IDLE`` seconds passed since its last refill, a charge counter only
once they passed since its entry was claimed: a ``take_many`` or ``charge_many`` never loses
the entry it just claimed to its own next key). When none is, ``TableFull`` is raised: size
``entries`` for the number of distinct keys alive at once (buckets, slots, counters and
charge counters together).

Charge counters (``charge_many``/``adjust``/``seed``, the contract of
``fastgw.state.base``) expire: ``at`` is the caller's clock plus the ``ttl`` of the last
write, and a counter whose ``at`` has passed reads as missing and may be reused. One written
without a ``ttl`` never expires and so holds its entry until the file is made anew: give
period counters a ``ttl``. Charge counters came after layout version 1 without changing it:
the entry is the same, and a build that predates them never matches kind 4 (its lookups
hash other kinds) nor reuses such an entry (an unknown kind is not reusable).

Concurrency slots are recorded per process (pid, count): when an ``acquire`` finds all
slots held, the holders whose process no longer exists (``kill(pid, 0)`` fails with ESRCH)
are dropped and the acquire is retried. Limits: only 8 distinct processes per key are
recorded (more go to ``overflow``, which is never reclaimed); a pid reused by a new process
before the reclaim keeps the dead holder's slots; the processes must share a pid namespace.
A ``release`` gives back a slot of the calling process (else one of ``overflow``; else
nothing).

Assumes a little-endian host where ``time.monotonic()`` is the same clock in every process
(Linux: CLOCK_MONOTONIC).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import mmap
import os
import struct
import time
from collections.abc import Callable
from hashlib import blake2b
from typing import Any, TypeVar

from ._ratelimit_py import tightest_headers

__all__ = [
    "DEFAULT_ENTRIES",
    "ENTRY_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "VERSION",
    "Admissions",
    "Admitted",
    "LayoutError",
    "ShmTable",
    "TableFull",
    "key_hash",
    "open_table_file",
]

MAGIC = b"FGWSHM\x00\x01"
VERSION = 1
HEADER_SIZE = 128
ENTRY_SIZE = 128
HOLDERS = 8
DEFAULT_ENTRIES = 65536
#: Seconds spent waiting on an entry lock before checking whether its holder died.
STEAL_AFTER = 0.2
#: Seconds a full bucket must have been left alone before its entry may be reused (so a
#: ``take_many`` never loses the entry it just created to its own next key).
REUSE_IDLE = 1.0
#: Seconds an opener waits for the creator to finish initialising the file.
READY_TIMEOUT = 5.0

KIND_EMPTY = 0
KIND_BUCKET = 1
KIND_SLOTS = 2
KIND_COUNTER = 3
KIND_CHARGE = 4
INF = float("inf")

T = TypeVar("T")

# header: magic, version, ready, entries, entry_size, global_lock, used, stats_lock
_HEADER = struct.Struct("<8sIIQIIQI")
_H_READY = 12
_H_GLOBAL_LOCK = 28
_H_USED = 32
_H_STATS_LOCK = 40
# entry: lock, kind, h1, h2, value, at, capacity, rate, overflow, reserved, 8 x (pid, count)
_ENTRY = struct.Struct("<IIQQddddII16I")
_CLAIM = struct.Struct("<IQQddddII16I")  # the entry after its lock word
_NO_HOLDERS = (0,) * 16
_IDENT = struct.Struct("<IQQ")  # kind, h1, h2 at offset 4
_VALUE_AT = struct.Struct("<dd")  # value, at at offset 24
_BUCKET = struct.Struct("<dddd")  # value, at, capacity, rate at offset 24
_VALUE = struct.Struct("<d")
_HOLDERS_W = struct.Struct("<II16I")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_E_VALUE = 24
_E_OVERFLOW = 56
assert _HEADER.size <= HEADER_SIZE and _ENTRY.size == ENTRY_SIZE


class LayoutError(ValueError):
    """The file is not a table of this layout and size (or was never initialised)."""


class TableFull(RuntimeError):
    """Every entry holds live state: raise ``state.entries`` in the configuration."""


# --- hashing -------------------------------------------------------------------------------

_hash_cache: dict[tuple[int, str], tuple[int, int]] = {}


def key_hash(kind: int, key: str) -> tuple[int, int]:
    """The two 64-bit words identifying ``key`` of ``kind``: blake2b-128 of the kind byte and
    the UTF-8 key, read as two little-endian u64 (``h1`` picks the home entry)."""
    h = _hash_cache.get((kind, key))
    if h is None:
        d = blake2b(bytes((kind,)) + key.encode("utf-8", "surrogatepass"), digest_size=16)
        h = struct.unpack("<QQ", d.digest())
        if len(_hash_cache) >= 8192:
            _hash_cache.clear()
        _hash_cache[(kind, key)] = h
    return h


# --- the file --------------------------------------------------------------------------------


def _check(fd: int, entries: int, size: int) -> str | None:
    """What is wrong with the open file ``fd`` (None: a ready table of ``entries``)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        raw = os.pread(fd, HEADER_SIZE, 0)
        if len(raw) == HEADER_SIZE and raw[:8] == MAGIC and raw[_H_READY] == 1:
            break
        if len(raw) == HEADER_SIZE and raw[:8] not in (MAGIC, bytes(8)):
            return "not a fastgw state table (bad magic)"
        if time.monotonic() > deadline:
            return "never initialised (its creator died?)"
        time.sleep(0.002)
    _magic, version, _ready, n, esize, *_ = _HEADER.unpack_from(raw)
    if version != VERSION or esize != ENTRY_SIZE:
        return f"layout version {version}/{esize}, expected {VERSION}/{ENTRY_SIZE}"
    if n != entries:
        return f"made for {n} entries, not {entries}"
    if os.fstat(fd).st_size != size:
        return f"size {os.fstat(fd).st_size}, expected {size}"
    return None


def open_table_file(path: str, entries: int, *, recreate: bool = False) -> mmap.mmap:
    """Map the table at ``path``, creating it when missing (the first process creates it with
    O_EXCL and initialises it; the others wait for its ``ready`` flag). A file of another
    layout or size raises ``LayoutError``, or with ``recreate`` is removed and made anew
    (the processes doing so serialise on an exclusive ``flock`` of the old file)."""
    if entries < 1:
        raise ValueError("entries must be at least 1")
    size = HEADER_SIZE + entries * ENTRY_SIZE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.ftruncate(fd, size)
                mm = mmap.mmap(fd, size)
                _HEADER.pack_into(mm, 0, MAGIC, VERSION, 0, entries, ENTRY_SIZE, 0, 0, 0)
                _U32.pack_into(mm, _H_READY, 1)
                return mm
            except BaseException:
                os.unlink(path)
                raise
            finally:
                os.close(fd)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # removed meanwhile: create it
        try:
            problem = _check(fd, entries, size)
            if problem is None:
                return mmap.mmap(fd, size)
            if not recreate:
                raise LayoutError(f"{path}: {problem}; remove the file or use another path")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.unlink(path)
        finally:
            os.close(fd)  # also drops the flock


# --- locks -------------------------------------------------------------------------------------

_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)

_SEQ_CST = 5
_cas_fn: ctypes._NamedFuncPointer | None = None
_store_fn: ctypes._NamedFuncPointer | None = None
_spin_trylock: ctypes._NamedFuncPointer | None = None
_spin_unlock: ctypes._NamedFuncPointer | None = None


def _load_atomics() -> None:
    global _cas_fn, _store_fn, _spin_trylock, _spin_unlock
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("atomic") or "libatomic.so.1")
        cas = lib.__atomic_compare_exchange_4
        store = lib.__atomic_store_4
    except (OSError, AttributeError):
        libc = ctypes.CDLL(None)
        try:
            _spin_trylock = libc.pthread_spin_trylock
            _spin_unlock = libc.pthread_spin_unlock
        except AttributeError as exc:
            raise RuntimeError(
                "the pure-Python shared-memory table needs libatomic or pthread spin locks"
            ) from exc
        _spin_trylock.argtypes = _spin_unlock.argtypes = [ctypes.c_void_p]
        _spin_trylock.restype = _spin_unlock.restype = ctypes.c_int
        return
    cas.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint32),
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_int,
    ]
    cas.restype = ctypes.c_bool
    store.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int]
    store.restype = None
    _cas_fn, _store_fn = cas, store


def _try(addr: int, old: int, new: int) -> bool:
    if _cas_fn is not None:
        expected = ctypes.c_uint32(old)  # per call: a failed CAS writes into it
        return bool(_cas_fn(addr, ctypes.byref(expected), new, _SEQ_CST, _SEQ_CST))
    assert _spin_trylock is not None
    return old == 0 and _spin_trylock(addr) == 0  # swaps 0 -> 1 (holder unknown)


def _unlock(addr: int) -> None:
    if _store_fn is not None:
        _store_fn(addr, 0, _SEQ_CST)
    else:
        assert _spin_unlock is not None
        _spin_unlock(addr)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (pid 0 or 1: assume so)."""
    if pid <= 1:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the table ---------------------------------------------------------------------------------


def _verdict(
    tokens: float, n: float, cap: float, rate: float, allowed: bool
) -> tuple[bool, float, float, float]:
    missing = 0.0 if allowed else n - tokens
    retry = (missing / rate if rate > 0 else float("inf")) if missing > 0 else 0.0
    full = (cap - tokens) / rate if rate > 0 else 0.0
    return (allowed, tokens, retry, full if full > 0.0 else 0.0)


def _refill(tokens: float, at: float, cap: float, rate: float, now: float) -> tuple[float, float]:
    if now > at:
        x = tokens + (now - at) * rate
        return (x if x < cap else cap), now
    return tokens, at


def _check_ttl(ttl: float | None) -> None:
    if ttl is not None and not 0.0 < ttl < INF:
        raise ValueError("ttl must be None or a finite number of seconds > 0")


#: The most buckets one ``take_prepared`` may name (the compiled twin's fixed arrays).
MAX_PREPARED = 16


class Prepared:
    """Buckets of a ``take_prepared``; with ``roles`` (``(tokens, limit as bytes)`` per
    bucket), also what ``admit`` takes from each and how it reports them."""

    __slots__ = ("_last", "admits", "buckets", "caps", "tokens")

    def __init__(
        self,
        buckets: list[tuple[str, float, float]],
        roles: list[tuple[bool, bytes]] | None = None,
    ) -> None:
        if not 0 < len(buckets) <= MAX_PREPARED:
            raise ValueError(f"take_prepared takes 1 to {MAX_PREPARED} buckets, not {len(buckets)}")
        self.buckets = list(buckets)
        self.admits = roles is not None
        self.tokens: list[bool] = []
        self.caps: list[bytes] = []
        if roles is not None:
            if len(roles) != len(buckets):
                raise ValueError(f"{len(roles)} roles for {len(buckets)} buckets")
            self.tokens = [bool(t) for t, _ in roles]
            self.caps = [bytes(c) for _, c in roles]
        self._last = [0.0] * len(buckets)

    def balances(self) -> list[float]:
        """The balance of each bucket as the last ``admit`` saw it (after the take; before
        it when refused)."""
        return list(self._last)


class Admitted:
    """A request ``ShmTable.admit`` let in: its ``x-ratelimit-*`` headers, and the tokens
    it reserved, settled once with the real usage (the ``Grant`` of the limiter, for an
    admission without concurrency slots)."""

    __slots__ = ("_at", "_p", "_settled", "_table", "estimate", "headers", "used")

    #: Concurrency slots held: none (``admit`` takes none).
    slots: tuple[str, ...] = ()

    def __init__(
        self,
        table: ShmTable,
        p: Prepared,
        estimate: float,
        headers: list[tuple[bytes, bytes]],
        at: float,
    ) -> None:
        self._at = at  # the ``now`` the admission was given (< 0: the process's clock)
        self._table = table
        self._p = p
        self.estimate = estimate
        self.headers = headers
        self.used: int | None = None
        self._settled = False

    def used_from(self, usage: tuple[int, int, int, int] | None) -> None:
        """Record the provider's usage ``(prompt, completion, total, cached)``."""
        if usage is not None:
            self.used = usage[2] or usage[0] + usage[1]

    def settle(self, usage: tuple[int, int, int, int] | None = None) -> None:
        """Settle the reserved tokens with the real usage (``usage``, else what
        ``used_from`` recorded; unknown: the estimate stands), once: the difference goes
        back to (or is taken from) every tokens bucket of the admission (at the ``now``
        the admission was given, if it was given one)."""
        self.used_from(usage)
        if self._settled:
            return
        self._settled = True
        if self.used is not None and self.used != self.estimate and self._table._mm is not None:
            self._table.refund(self._p, self.estimate - self.used, self._at)

    async def release(self) -> None:
        """Nothing to give back (no slots)."""

    async def finish(self) -> None:
        """``settle``."""
        self.settle()


#: Most (caller, model) pairs an ``Admissions`` remembers (past it, all are forgotten).
MAX_ADMISSIONS = 65536
_MISSING = object()


class Admissions:
    """Prepared admissions of one table by (caller, model), so that a request is admitted
    in one call (``ShmTable.admit`` with the pair's handle, on this process's clock).
    A pair not ``set`` yet is answered by ``miss(caller, model, tokens)`` (which may
    ``set`` it); a take that did not happen by ``refused(handle, caller, model, tokens)``,
    which raises the refusal. ``caller`` is any hashable (the limiter's principal)."""

    __slots__ = ("_handles", "_miss", "_refused", "_table")

    def __init__(
        self,
        table: ShmTable,
        miss: Callable[[Any, str, float], Any],
        refused: Callable[[Prepared, Any, str, float], Any],
    ) -> None:
        self._table = table
        self._handles: dict[tuple[Any, str], Prepared | None] = {}
        self._miss = miss
        self._refused = refused

    def set(self, caller: Any, model: str, handle: Prepared | None) -> None:
        """What admits ``caller`` on ``model`` from now on: a ``Prepared`` with roles, or
        None (nothing limits the pair). Past ``MAX_ADMISSIONS`` pairs, all are forgotten
        first."""
        if handle is not None and not handle.admits:
            raise ValueError("this handle was prepared without roles")
        if len(self._handles) >= MAX_ADMISSIONS:
            self._handles.clear()
        self._handles[caller, model] = handle

    def clear(self) -> None:
        """Forget every pair (the limits or the callers changed)."""
        self._handles.clear()

    def admit(self, caller: Any, model: str, tokens: float) -> Any:
        """``ShmTable.admit`` of the pair's handle: its ``Admitted``, None when nothing
        limits the pair, else what ``miss`` or ``refused`` answers."""
        h = self._handles.get((caller, model), _MISSING)
        if h is _MISSING:
            return self._miss(caller, model, tokens)
        if h is None:
            return None
        assert isinstance(h, Prepared)
        a = self._table.admit(h, tokens)
        if a is None:
            return self._refused(h, caller, model, tokens)
        return a


class ShmTable:
    """Token buckets, concurrency slots, counters and charge counters in the shared file
    ``path`` (see the module docstring); every method is atomic across processes. ``now`` is
    the caller's clock, the same in every process (``time.monotonic()``)."""

    def __init__(self, path: str, entries: int = DEFAULT_ENTRIES, *, recreate: bool = False):
        if _cas_fn is None and _spin_trylock is None:
            _load_atomics()
        self.path = path
        self.entries = entries
        self._mm: mmap.mmap | None = open_table_file(path, entries, recreate=recreate)
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(self._mm)
        self._base = ctypes.addressof(self._anchor)

    # locks

    def _lock_at(self, off: int) -> None:
        addr = self._base + off
        me = _pid
        if _try(addr, 0, me):
            return
        mm = self._mm
        assert mm is not None
        spins = 0
        since = 0.0
        while True:
            cur = _U32.unpack_from(mm, off)[0]
            if cur == 0:
                if _try(addr, 0, me):
                    return
                continue
            spins += 1
            os.sched_yield()
            if spins & 255 == 0:
                t = time.monotonic()
                if not since:
                    since = t
                elif (
                    t - since > STEAL_AFTER
                    and cur != me
                    and _cas_fn is not None
                    and not _alive(cur)
                    and _try(addr, cur, me)
                ):
                    return

    def _lock(self, s: int) -> None:
        self._lock_at(HEADER_SIZE + s * ENTRY_SIZE)

    def _unlock(self, s: int) -> None:
        _unlock(self._base + HEADER_SIZE + s * ENTRY_SIZE)

    # lookup

    def _reusable(self, off: int, now: float) -> bool:
        mm = self._mm
        assert mm is not None
        kind: int = _U32.unpack_from(mm, off + 4)[0]
        if kind == KIND_BUCKET:
            tokens, at, cap, rate = _BUCKET.unpack_from(mm, off + _E_VALUE)
            if now > at and rate > 0:
                tokens += (now - at) * rate
            return bool(tokens >= cap and now - at >= REUSE_IDLE)
        if kind == KIND_SLOTS:
            return self._reclaim(off) == 0
        if kind == KIND_COUNTER:
            return bool(_VALUE.unpack_from(mm, off + _E_VALUE)[0] == 0.0)
        if kind == KIND_CHARGE:
            _v, at, claimed, _r = _BUCKET.unpack_from(mm, off + _E_VALUE)
            return bool(not now < at and now - claimed >= REUSE_IDLE)  # expired
        return kind == KIND_EMPTY

    def _claim(
        self, off: int, kind: int, h1: int, h2: int, v: float, cap: float, rate: float, now: float
    ) -> None:
        """Make the (locked) entry at ``off`` the one of key ``(h1, h2)`` of ``kind``."""
        mm = self._mm
        assert mm is not None
        at = now if kind == KIND_BUCKET else 0.0  # slots and counters keep no time
        if kind == KIND_CHARGE:  # it exists only once written; claimed now
            at, cap = -INF, now
        _CLAIM.pack_into(mm, off + 4, kind, h1, h2, v, at, cap, rate, 0, 0, *_NO_HOLDERS)

    def _find(
        self,
        kind: int,
        key: str,
        create: bool,
        now: float,
        v: float = 0.0,
        cap: float = 0.0,
        rate: float = 0.0,
    ) -> int:
        """The entry of ``key`` of ``kind``, locked; -1 when missing and not ``create``
        (a created entry starts with value ``v``, refilled at ``now``)."""
        mm = self._mm
        assert mm is not None
        h1, h2 = key_hash(kind, key)
        n = self.entries
        home = h1 % n
        for step in range(n):
            s = home + step
            if s >= n:
                s -= n
            off = HEADER_SIZE + s * ENTRY_SIZE
            self._lock_at(off)
            k, e1, e2 = _IDENT.unpack_from(mm, off + 4)
            if k == kind and e1 == h1 and e2 == h2:
                return s
            if k == KIND_EMPTY:
                if not create:
                    self._unlock(s)
                    return -1
                self._claim(off, kind, h1, h2, v, cap, rate, now)
                self._lock_at(_H_STATS_LOCK)
                _U64.pack_into(mm, _H_USED, _U64.unpack_from(mm, _H_USED)[0] + 1)
                _unlock(self._base + _H_STATS_LOCK)
                return s
            self._unlock(s)
        if not create:
            return -1
        # full: reuse an entry equivalent to a missing one, under the global lock
        self._lock_at(_H_GLOBAL_LOCK)
        try:
            for step in range(n):  # inserted by another reuse meanwhile?
                s = (home + step) % n
                off = HEADER_SIZE + s * ENTRY_SIZE
                self._lock_at(off)
                if _IDENT.unpack_from(mm, off + 4) == (kind, h1, h2):
                    return s
                self._unlock(s)
            for step in range(n):
                s = (home + step) % n
                off = HEADER_SIZE + s * ENTRY_SIZE
                self._lock_at(off)
                if self._reusable(off, now):
                    self._claim(off, kind, h1, h2, v, cap, rate, now)
                    return s
                self._unlock(s)
        finally:
            _unlock(self._base + _H_GLOBAL_LOCK)
        raise TableFull(
            f"shared state table {self.path} is full ({n} entries hold live state): "
            "raise state.entries"
        )

    # token buckets

    def prepare(
        self,
        buckets: list[tuple[str, float, float]],
        roles: list[tuple[bool, bytes]] | None = None,
    ) -> Prepared:
        """A handle for ``take_prepared``: ``buckets`` (``(key, capacity, rate)`` each)
        checked once (the compiled twin also hashes them once). ``roles`` (``(tokens,
        limit as bytes)`` per bucket) makes it a handle for ``admit`` too."""
        return Prepared(buckets, roles)

    def take_prepared(self, p: Prepared, ns: list[float], now: float) -> tuple[bool, list[float]]:
        """``take_many`` of ``ns[i]`` tokens from the prepared buckets: ``(allowed, [the
        balance of each bucket])`` (after the take; before it when refused)."""
        if len(ns) != len(p.buckets):
            raise ValueError(f"{len(ns)} amounts for {len(p.buckets)} prepared buckets")
        got = self.take_many(
            [(key, n, cap, rate) for (key, cap, rate), n in zip(p.buckets, ns, strict=True)], now
        )
        return got[0][0], [v[1] for v in got]

    def admit(self, p: Prepared, tokens: float, now: float = -1.0) -> Admitted | None:
        """One request against a prepared admission: 1 from each requests bucket and
        ``tokens`` (the prompt's estimate) from each tokens bucket, all or nothing. When
        taken, an ``Admitted`` with the ``x-ratelimit-*`` headers of the tightest bucket of
        each kind (a list, as ``_ratelimit.rate_headers`` makes it); None when refused
        (``p.balances()`` tells why). ``now`` < 0: this process's ``time.monotonic()``."""
        if not p.admits:
            raise ValueError("this handle was prepared without roles")
        at = now
        if now < 0:
            now = time.monotonic()
        ok, last = self.take_prepared(p, [tokens if t else 1.0 for t in p.tokens], now)
        p._last = last
        if not ok:
            return None
        shapes = [x for _, cap, rate in p.buckets for x in (cap, rate)]
        headers = tightest_headers(last, p.tokens, p.caps, shapes)
        return Admitted(self, p, tokens, headers, at)

    def admissions(
        self,
        miss: Callable[[Any, str, float], Any],
        refused: Callable[[Prepared, Any, str, float], Any],
    ) -> Admissions:
        """An ``Admissions`` of this table (see there)."""
        return Admissions(self, miss, refused)

    def refund(self, p: Prepared, n: float, now: float = -1.0) -> None:
        """Add ``n`` tokens (negative: take them) to each tokens bucket of an admission,
        without any check, never above capacity (``settle`` of each); ``now`` as in
        ``admit``."""
        if not p.admits:
            raise ValueError("this handle was prepared without roles")
        if now < 0:
            now = time.monotonic()
        for (key, cap, rate), is_tokens in zip(p.buckets, p.tokens, strict=True):
            if is_tokens:
                self.settle(key, n, cap, rate, now)

    def take_many(
        self, takes: list[tuple[str, float, float, float]], now: float
    ) -> list[tuple[bool, float, float, float]]:
        """Take ``n`` tokens from every bucket ``(key, n, capacity, rate)`` or from none;
        per bucket ``(allowed, remaining, retry_after, reset)``. The same key twice: the
        takes add up (refilled with the first one's limit)."""
        if not takes:
            return []
        return self._locked(KIND_BUCKET, takes, now, lambda slots: self._decide(takes, slots, now))

    def _locked(
        self, kind: int, items: list[Any], now: float, decide: Callable[[list[int]], T]
    ) -> T:
        """``decide(the entry of each item)`` with the entries of the items' keys locked
        (``_lock_all``), then unlocked."""
        if len(items) == 1:
            s = self._find_item(kind, items[0], now)
            try:
                return decide([s])
            finally:
                self._unlock(s)
        slots, order = self._lock_all(kind, items, now)
        try:
            return decide(slots)
        finally:
            for s in reversed(order):
                self._unlock(s)

    def _find_item(self, kind: int, item: tuple[Any, ...], now: float) -> int:
        """The entry of ``kind`` of the item's key (``item[0]``), locked; a bucket is created
        full, with the item's ``capacity`` and ``rate``."""
        if kind == KIND_BUCKET:
            return self._find(kind, item[0], True, now, item[2], item[2], item[3])
        return self._find(kind, item[0], True, now)

    def _lock_all(
        self, kind: int, items: list[tuple[Any, ...]], now: float
    ) -> tuple[list[int], list[int]]:
        """Find (or create) the entry of ``kind`` of every item's key (``item[0]``; a bucket
        is created full, with the item's ``capacity`` and ``rate``) and lock them all, each
        once, in increasing entry order (no deadlock): (the entry of each item, the entries
        locked in order)."""
        mm = self._mm
        assert mm is not None
        while True:
            slots = []
            for item in items:
                s = self._find_item(kind, item, now)
                self._unlock(s)
                slots.append(s)
            order = sorted(set(slots))
            locked: list[int] = []
            try:
                for s in order:
                    self._lock(s)
                    locked.append(s)
                if all(
                    _IDENT.unpack_from(mm, HEADER_SIZE + s * ENTRY_SIZE + 4)
                    == (kind, *key_hash(kind, item[0]))
                    for item, s in zip(items, slots, strict=True)
                ):
                    locked = []  # the caller unlocks them
                    return slots, order
            finally:
                for s in reversed(locked):
                    self._unlock(s)
            # an entry was reused for another key between finding and locking: again

    def _decide(
        self, takes: list[tuple[str, float, float, float]], slots: list[int], now: float
    ) -> list[tuple[bool, float, float, float]]:
        mm = self._mm
        assert mm is not None
        tokens: dict[int, float] = {}
        ats: dict[int, float] = {}
        need: dict[int, float] = {}
        for (_key, n, cap, rate), s in zip(takes, slots, strict=True):
            if s not in tokens:
                v, at = _VALUE_AT.unpack_from(mm, HEADER_SIZE + s * ENTRY_SIZE + _E_VALUE)
                tokens[s], ats[s] = _refill(v, at, cap, rate, now)
            need[s] = need.get(s, 0.0) + n
        ok = all(tokens[s] >= need[s] for s in slots)
        if ok:
            for t, s in zip(takes, slots, strict=True):
                tokens[s] -= t[1]
        for (_key, _n, cap, rate), s in zip(takes, slots, strict=True):
            off = HEADER_SIZE + s * ENTRY_SIZE + _E_VALUE
            _BUCKET.pack_into(mm, off, tokens[s], ats[s], cap, rate)
        return [
            _verdict(tokens[s], n if ok else need[s], cap, rate, ok)
            for (_key, n, cap, rate), s in zip(takes, slots, strict=True)
        ]

    def settle(self, key: str, n: float, capacity: float, rate: float, now: float) -> None:
        """Add ``n`` tokens (negative: take them) without any check, never above capacity."""
        mm = self._mm
        assert mm is not None
        s = self._find(KIND_BUCKET, key, True, now, capacity, capacity, rate)
        try:
            off = HEADER_SIZE + s * ENTRY_SIZE + _E_VALUE
            v, at = _VALUE_AT.unpack_from(mm, off)
            v, at = _refill(v, at, capacity, rate, now)
            x = v + n
            _BUCKET.pack_into(mm, off, x if x < capacity else capacity, at, capacity, rate)
        finally:
            self._unlock(s)

    # concurrency slots

    def _reclaim(self, off: int) -> int:
        """Drop the holders of the slots entry at ``off`` whose process is gone; how many
        slots are still held."""
        mm = self._mm
        assert mm is not None
        overflow, _r, *h = _HOLDERS_W.unpack_from(mm, off + _E_OVERFLOW)
        held = overflow
        changed = False
        for i in range(0, 2 * HOLDERS, 2):
            if h[i + 1] and h[i] != _pid and not _alive(h[i]):
                h[i] = h[i + 1] = 0
                changed = True
            held += h[i + 1]
        if changed:
            _HOLDERS_W.pack_into(mm, off + _E_OVERFLOW, overflow, _r, *h)
        return int(held)

    def acquire(self, key: str, limit: int) -> bool:
        """Take one of ``limit`` slots of ``key`` for this process; False when all are held
        (by live processes)."""
        mm = self._mm
        assert mm is not None
        s = self._find(KIND_SLOTS, key, True, time.monotonic())
        try:
            off = HEADER_SIZE + s * ENTRY_SIZE
            overflow, _r, *h = _HOLDERS_W.unpack_from(mm, off + _E_OVERFLOW)
            held = overflow + sum(h[1::2])
            if held >= limit:
                held = self._reclaim(off)
                if held >= limit:
                    return False
                overflow, _r, *h = _HOLDERS_W.unpack_from(mm, off + _E_OVERFLOW)
            me = _pid
            free = -1
            for i in range(0, 2 * HOLDERS, 2):
                if h[i] == me and h[i + 1]:
                    h[i + 1] += 1
                    break
                if free < 0 and not h[i + 1]:
                    free = i
            else:
                if free >= 0:
                    h[free], h[free + 1] = me, 1
                else:
                    overflow += 1
            _HOLDERS_W.pack_into(mm, off + _E_OVERFLOW, overflow, _r, *h)
            return True
        finally:
            self._unlock(s)

    def release(self, key: str) -> None:
        """Give back a slot of ``key`` held by this process (else one of the unrecorded
        holders; never below zero)."""
        mm = self._mm
        assert mm is not None
        s = self._find(KIND_SLOTS, key, False, 0.0)
        if s < 0:
            return
        try:
            off = HEADER_SIZE + s * ENTRY_SIZE
            overflow, _r, *h = _HOLDERS_W.unpack_from(mm, off + _E_OVERFLOW)
            for i in range(0, 2 * HOLDERS, 2):
                if h[i] == _pid and h[i + 1]:
                    h[i + 1] -= 1
                    if not h[i + 1]:
                        h[i] = 0
                    break
            else:
                if not overflow:
                    return
                overflow -= 1
            _HOLDERS_W.pack_into(mm, off + _E_OVERFLOW, overflow, _r, *h)
        finally:
            self._unlock(s)

    def held(self, key: str) -> int:
        """How many slots of ``key`` are held (by any process, dead ones included)."""
        mm = self._mm
        assert mm is not None
        s = self._find(KIND_SLOTS, key, False, 0.0)
        if s < 0:
            return 0
        try:
            overflow, _r, *h = _HOLDERS_W.unpack_from(
                mm, HEADER_SIZE + s * ENTRY_SIZE + _E_OVERFLOW
            )
            return int(overflow + sum(h[1::2]))
        finally:
            self._unlock(s)

    # counters

    def add(self, key: str, x: float) -> float:
        """Add ``x`` to the counter ``key``; its new value."""
        mm = self._mm
        assert mm is not None
        s = self._find(KIND_COUNTER, key, True, time.monotonic())
        try:
            off = HEADER_SIZE + s * ENTRY_SIZE + _E_VALUE
            v: float = _VALUE.unpack_from(mm, off)[0] + x
            _VALUE.pack_into(mm, off, v)
            return v
        finally:
            self._unlock(s)

    def get(self, key: str) -> float:
        """The counter's value (0 when never added to)."""
        mm = self._mm
        assert mm is not None
        s = self._find(KIND_COUNTER, key, False, 0.0)
        if s < 0:
            return 0.0
        try:
            v: float = _VALUE.unpack_from(mm, HEADER_SIZE + s * ENTRY_SIZE + _E_VALUE)[0]
            return v
        finally:
            self._unlock(s)

    # charge counters

    def charge_many(
        self, charges: list[tuple[str, float, float]], now: float, ttl: float | None = None
    ) -> list[tuple[bool, float]]:
        """Add ``n`` to every charge counter ``(key, n, cap)`` if each total stays within its
        cap, else to none; per charge ``(allowed, total)`` (refused: whether that charge
        alone fits, and the total as it is). The same key twice: the charges add up. ``ttl``
        (seconds): the written counters expire that long after ``now`` (None: an existing
        counter keeps its expiry, a new one never expires)."""
        _check_ttl(ttl)
        for _key, n, cap in charges:
            if not 0.0 <= n < INF or cap != cap:
                raise ValueError("a charge needs a finite n >= 0 and a cap")
        if not charges:
            return []
        return self._locked(
            KIND_CHARGE, charges, now, lambda slots: self._spend(charges, slots, now, ttl)
        )

    def _spend(
        self,
        charges: list[tuple[str, float, float]],
        slots: list[int],
        now: float,
        ttl: float | None,
    ) -> list[tuple[bool, float]]:
        mm = self._mm
        assert mm is not None
        total: dict[int, float] = {}
        ats: dict[int, float] = {}
        need: dict[int, float] = {}
        for (_key, n, _cap), s in zip(charges, slots, strict=True):
            if s not in total:
                v, at = _VALUE_AT.unpack_from(mm, HEADER_SIZE + s * ENTRY_SIZE + _E_VALUE)
                total[s] = v if now < at else 0.0
                ats[s] = at
                need[s] = 0.0
            need[s] += n
        fits = [total[s] + need[s] <= c[2] for c, s in zip(charges, slots, strict=True)]
        if not all(fits):
            return [(f, total[s]) for f, s in zip(fits, slots, strict=True)]
        for s, n in need.items():
            if n > 0:
                self._store(s, total[s] + n, ats[s], now, ttl)
        return [(True, total[s] + need[s]) for s in slots]

    def _store(self, s: int, v: float, at: float, now: float, ttl: float | None) -> None:
        """Write ``v`` into the (locked) charge counter ``s`` that expired at ``at``."""
        if ttl is not None:
            at = now + ttl
        elif not now < at:
            at = INF  # a new counter without a ttl never expires
        assert self._mm is not None
        _VALUE_AT.pack_into(self._mm, HEADER_SIZE + s * ENTRY_SIZE + _E_VALUE, v, at)

    def adjust(self, key: str, delta: float, now: float, ttl: float | None = None) -> float:
        """Add ``delta`` (may be negative) to the charge counter ``key`` without any check;
        its new total."""
        s = self._charge_entry(key, delta, "delta", now, ttl)
        try:
            v, at = self._value_at(s)
            x: float = (v if now < at else 0.0) + delta
            self._store(s, x, at, now, ttl)
            return x
        finally:
            self._unlock(s)

    def seed(self, key: str, value: float, now: float, ttl: float | None = None) -> bool:
        """Set the charge counter ``key`` to ``value`` unless it exists (written and not
        expired); whether it did."""
        s = self._charge_entry(key, value, "value", now, ttl)
        try:
            at = self._value_at(s)[1]
            if now < at:
                return False
            self._store(s, value, at, now, ttl)
            return True
        finally:
            self._unlock(s)

    def _charge_entry(self, key: str, x: float, name: str, now: float, ttl: float | None) -> int:
        """The charge counter ``key``, locked (created if need be), once ``ttl`` and ``x``
        (the argument ``name``) are found valid."""
        _check_ttl(ttl)
        if not -INF < x < INF:
            raise ValueError(f"{name} must be finite")
        return self._find(KIND_CHARGE, key, True, now)

    def _value_at(self, s: int) -> tuple[float, float]:
        """The value of the (locked) entry ``s`` and its ``at`` (a charge counter's expiry)."""
        assert self._mm is not None
        v, at = _VALUE_AT.unpack_from(self._mm, HEADER_SIZE + s * ENTRY_SIZE + _E_VALUE)
        return v, at

    # the table

    def used(self) -> int:
        """Entries ever claimed (reused ones count once)."""
        mm = self._mm
        assert mm is not None
        n: int = _U64.unpack_from(mm, _H_USED)[0]
        return n

    def close(self) -> None:
        """Unmap the file (which stays for the other processes)."""
        if self._mm is not None:
            self._anchor = None
            self._mm.close()
            self._mm = None
