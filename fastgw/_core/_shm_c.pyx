# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A fixed-size hash table in a shared, memory-mapped file: the compiled twin.

Same public API, file layout, hash and lock protocol as ``_shm_py`` (the reference; see its
docstring), so processes running either twin share one file. The file is created, checked
and mapped by ``_shm_py.open_table_file``; the operations run in C on the mapping, with the
spin locks of ``_shm_lock.h`` (atomic compare-and-swap on the entries' lock words).
"""

from cpython.bytes cimport PyBytes_AS_STRING
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset

from fastgw._core._ratelimit_c cimport tightest_of

import os
from hashlib import blake2b

from fastgw._core._shm_py import (
    DEFAULT_ENTRIES,
    ENTRY_SIZE,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    LayoutError,
    TableFull,
    key_hash,
    open_table_file,
)

__all__ = [
    "Admissions",
    "Admitted",
    "DEFAULT_ENTRIES",
    "ENTRY_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "VERSION",
    "LayoutError",
    "ShmTable",
    "TableFull",
    "key_hash",
    "open_table_file",
]


cdef extern from "_shm_lock.h":
    ctypedef struct fgw_holder:
        uint32_t pid
        uint32_t count
    ctypedef struct fgw_entry:
        uint32_t lock
        uint32_t kind
        uint64_t h1
        uint64_t h2
        double value
        double at
        double cap
        double rate
        uint32_t overflow
        uint32_t reserved
        fgw_holder holders[8]
    ctypedef struct fgw_header:
        uint32_t global_lock
        uint64_t used
        uint32_t stats_lock
    double fgw_monotonic() nogil
    int fgw_alive(uint32_t pid) nogil
    void fgw_lock(uint32_t* w, uint32_t me) nogil
    void fgw_unlock(uint32_t* w) nogil


cdef enum:
    KIND_EMPTY = 0
    KIND_BUCKET = 1
    KIND_SLOTS = 2
    KIND_COUNTER = 3
    KIND_CHARGE = 4
    NHOLDERS = 8
    SMALL = 16
    HDR_SIZE = 128  # HEADER_SIZE

cdef uint32_t _pid = <uint32_t>os.getpid()


def _refresh_pid():
    global _pid
    _pid = <uint32_t>os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)

cdef double INF = float("inf")
cdef double REUSE_IDLE = 1.0  # _shm_py.REUSE_IDLE

# key -> the 16-byte blake2b digest, per kind (same function as _shm_py.key_hash)
cdef dict _cache = {}


cdef inline bytes _digest(int kind, str key):
    cdef tuple k = (kind, key)
    d = _cache.get(k)
    if d is None:
        d = blake2b(bytes((kind,)) + key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if len(_cache) >= 8192:
            _cache.clear()
        _cache[k] = d
    return <bytes>d


cdef inline uint32_t _reclaim(fgw_entry* e) noexcept nogil:
    """Drop the holders of ``e`` whose process is gone; how many slots are still held."""
    cdef uint32_t held = e.overflow
    cdef int i
    for i in range(NHOLDERS):
        if e.holders[i].count and e.holders[i].pid != _pid and not fgw_alive(e.holders[i].pid):
            e.holders[i].pid = 0
            e.holders[i].count = 0
        held += e.holders[i].count
    return held


cdef inline uint32_t _held(fgw_entry* e) noexcept nogil:
    cdef uint32_t held = e.overflow
    cdef int i
    for i in range(NHOLDERS):
        held += e.holders[i].count
    return held


cdef inline bint _reusable(fgw_entry* e, double now) noexcept nogil:
    cdef double tokens
    if e.kind == KIND_BUCKET:
        tokens = e.value
        if now > e.at and e.rate > 0:
            tokens += (now - e.at) * e.rate
        return tokens >= e.cap and now - e.at >= REUSE_IDLE
    if e.kind == KIND_SLOTS:
        return _reclaim(e) == 0
    if e.kind == KIND_COUNTER:
        return e.value == 0.0
    if e.kind == KIND_CHARGE:  # expired (e.cap: when the entry was claimed)
        return not (now < e.at) and now - e.cap >= REUSE_IDLE
    return e.kind == KIND_EMPTY


cdef inline void _claim(
    fgw_entry* e, uint32_t kind, uint64_t h1, uint64_t h2, double v, double cap, double rate,
    double now,
) noexcept nogil:
    memset(<char*>e + 4, 0, sizeof(fgw_entry) - 4)
    e.h1 = h1
    e.h2 = h2
    e.value = v
    e.at = now if kind == KIND_BUCKET else 0.0  # slots and counters keep no time
    e.cap = cap
    e.rate = rate
    if kind == KIND_CHARGE:  # it exists only once written; claimed now
        e.at = -INF
        e.cap = now
    e.kind = kind


cdef inline tuple _verdict(double tokens, double n, double cap, double rate, bint allowed):
    cdef double missing = 0.0 if allowed else n - tokens
    cdef double retry = 0.0
    cdef double full = 0.0
    if missing > 0:
        retry = missing / rate if rate > 0 else INF
    if rate > 0:
        full = (cap - tokens) / rate
    return (allowed, tokens, retry, full if full > 0.0 else 0.0)


cdef inline double _ttl(object ttl) except? -2.0:
    """``ttl`` as a double, -1 for None; ``ValueError`` unless None or finite and > 0."""
    if ttl is None:
        return -1.0
    cdef double t = ttl
    if not (0.0 < t < INF):
        raise ValueError("ttl must be None or a finite number of seconds > 0")
    return t


cdef inline void _store(fgw_entry* e, double v, double now, double ttl) noexcept nogil:
    """Write ``v`` into the (locked) charge counter ``e`` (``ttl`` -1: keep the expiry of a
    live counter, none for a new one)."""
    if ttl > 0:
        e.at = now + ttl
    elif not (now < e.at):
        e.at = INF
    e.value = v


cdef inline void _settle(fgw_entry* e, double n, double cap, double rate, double now) noexcept:
    """Refill bucket ``e`` (locked) to ``now``, add ``n`` (never above ``cap``), unlock it."""
    cdef double x
    if now > e.at:
        x = e.value + (now - e.at) * rate
        e.value = x if x < cap else cap
        e.at = now
    x = e.value + n
    e.value = x if x < cap else cap
    e.cap = cap
    e.rate = rate
    fgw_unlock(&e.lock)


cdef class Prepared:
    """Buckets of a ``take_prepared``: their digests and shapes in C arrays; with ``roles``,
    also what ``admit`` takes from each and how it reports them."""

    cdef Py_ssize_t k
    cdef uint64_t h[2 * SMALL]
    cdef double shape[2 * SMALL]
    cdef readonly list buckets
    # admission (roles given): 1 request or the token estimate from each bucket
    cdef readonly bint admits
    cdef bint tokens[SMALL]
    cdef list caps  # each bucket's limit as header bytes
    cdef double last[SMALL]  # the balances the last admit saw

    def __init__(self, list buckets, list roles=None):
        cdef Py_ssize_t i
        cdef bytes dg
        if not 0 < len(buckets) <= SMALL:
            raise ValueError(f"take_prepared takes 1 to {SMALL} buckets, not {len(buckets)}")
        self.k = len(buckets)
        self.buckets = list(buckets)
        for i in range(self.k):
            key, cap, rate = <tuple>buckets[i]
            dg = _digest(KIND_BUCKET, key)
            memcpy(&self.h[2 * i], PyBytes_AS_STRING(dg), 16)
            self.shape[2 * i] = cap
            self.shape[2 * i + 1] = rate
            self.last[i] = 0.0
        self.admits = roles is not None
        self.caps = []
        if roles is not None:
            if len(roles) != self.k:
                raise ValueError(f"{len(roles)} roles for {self.k} buckets")
            for i in range(self.k):
                is_tokens, cap_b = <tuple>roles[i]
                self.tokens[i] = bool(is_tokens)
                self.caps.append(bytes(cap_b))

    def balances(self):
        """The balance of each bucket as the last ``admit`` saw it (after the take; before
        it when refused)."""
        return [self.last[i] for i in range(self.k)]


cdef tuple _NO_SLOTS = ()

cdef class ShmTable  # below


cdef class Admitted:
    """A request ``ShmTable.admit`` let in: its ``x-ratelimit-*`` headers, and the tokens
    it reserved, settled once with the real usage (the ``Grant`` of the limiter, for an
    admission without concurrency slots, in C)."""

    cdef readonly list headers
    cdef readonly double estimate
    cdef public object used
    cdef ShmTable table
    cdef Prepared p
    cdef bint settled
    cdef double at  # the ``now`` the admission was given (< 0: the process's clock)

    @property
    def slots(self):
        """Concurrency slots held: none (``admit`` takes none)."""
        return _NO_SLOTS

    cdef inline void _record(self, object usage) except *:
        if usage is not None:
            self.used = usage[2] or usage[0] + usage[1]

    def used_from(self, usage):
        """Record the provider's usage ``(prompt, completion, total, cached)``."""
        self._record(usage)

    def settle(self, usage=None):
        """Settle the reserved tokens with the real usage (``usage``, else what
        ``used_from`` recorded; unknown: the estimate stands), once: the difference goes
        back to (or is taken from) every tokens bucket of the admission (at the ``now``
        the admission was given, if it was given one)."""
        self._record(usage)
        if self.settled:
            return
        self.settled = True
        if self.used is not None and self.used != self.estimate and self.table._ents != NULL:
            self.table.refund(self.p, self.estimate - self.used, self.at)

    async def release(self):
        """Nothing to give back (no slots)."""

    async def finish(self):
        """``settle``."""
        self.settle()


cdef object _MISSING = object()
cdef Py_ssize_t MAX_ADMISSIONS = 65536  # _shm_py.MAX_ADMISSIONS


cdef class Admissions:
    """Prepared admissions of one table by (caller, model), so that a request is admitted
    in one call (``ShmTable.admit`` with the pair's handle, on this process's clock).
    A pair not ``set`` yet is answered by ``miss(caller, model, tokens)`` (which may
    ``set`` it); a take that did not happen by ``refused(handle, caller, model, tokens)``,
    which raises the refusal. ``caller`` is any hashable (the limiter's principal)."""

    cdef ShmTable table
    cdef dict handles
    cdef object miss
    cdef object refused

    def __init__(self, ShmTable table, miss, refused):
        self.table = table
        self.handles = {}
        self.miss = miss
        self.refused = refused

    def set(self, caller, str model, handle):
        """What admits ``caller`` on ``model`` from now on: a ``Prepared`` with roles, or
        None (nothing limits the pair). Past ``MAX_ADMISSIONS`` pairs, all are forgotten
        first."""
        if handle is not None and not (<Prepared?>handle).admits:
            raise ValueError("this handle was prepared without roles")
        if len(self.handles) >= MAX_ADMISSIONS:
            self.handles.clear()
        self.handles[(caller, model)] = handle

    def clear(self):
        """Forget every pair (the limits or the callers changed)."""
        self.handles.clear()

    def admit(self, caller, str model, tokens):
        """``ShmTable.admit`` of the pair's handle: its ``Admitted``, None when nothing
        limits the pair, else what ``miss`` or ``refused`` answers."""
        h = self.handles.get((caller, model), _MISSING)
        if h is _MISSING:
            return self.miss(caller, model, tokens)
        if h is None:
            return None
        a = self.table._admit(<Prepared>h, tokens, -1.0)
        if a is None:
            return self.refused(h, caller, model, tokens)
        return a


cdef class ShmTable:
    """Token buckets, concurrency slots, counters and charge counters in the shared file
    ``path`` (see ``_shm_py``); every method is atomic across processes."""

    cdef object _mm
    cdef unsigned char[::1] _view
    cdef fgw_header* _hdr
    cdef fgw_entry* _ents
    cdef uint64_t _n
    cdef readonly str path
    cdef readonly Py_ssize_t entries

    def __init__(self, str path, Py_ssize_t entries=DEFAULT_ENTRIES, *, bint recreate=False):
        self.path = path
        self.entries = entries
        self._mm = open_table_file(path, entries, recreate=recreate)
        self._view = self._mm
        cdef unsigned char* base = &self._view[0]
        self._hdr = <fgw_header*>base
        self._ents = <fgw_entry*>(base + HDR_SIZE)
        self._n = <uint64_t>entries

    cdef inline void _check_open(self) except *:
        if self._ents == NULL:
            raise ValueError("the table is closed")

    cdef Py_ssize_t _find(
        self, int kind, str key, bint create, double now, double v, double cap, double rate
    ) except -2:
        """The index of the entry of ``key``, locked; -1 when missing and not ``create``."""
        cdef bytes d = _digest(kind, key)
        cdef uint64_t h1, h2
        memcpy(&h1, PyBytes_AS_STRING(d), 8)
        memcpy(&h2, PyBytes_AS_STRING(d) + 8, 8)
        return self._find_h(kind, h1, h2, create, now, v, cap, rate)

    cdef Py_ssize_t _find_h(
        self,
        int kind,
        uint64_t h1,
        uint64_t h2,
        bint create,
        double now,
        double v,
        double cap,
        double rate,
    ) except -2:
        """``_find`` by the key's digest halves."""
        cdef uint64_t home, s, step, n = self._n
        cdef fgw_entry* e
        home = h1 % n
        for step in range(n):
            s = home + step
            if s >= n:
                s -= n
            e = &self._ents[s]
            fgw_lock(&e.lock, _pid)
            if e.kind == <uint32_t>kind and e.h1 == h1 and e.h2 == h2:
                return <Py_ssize_t>s
            if e.kind == KIND_EMPTY:
                if not create:
                    fgw_unlock(&e.lock)
                    return -1
                _claim(e, kind, h1, h2, v, cap, rate, now)
                fgw_lock(&self._hdr.stats_lock, _pid)
                self._hdr.used += 1
                fgw_unlock(&self._hdr.stats_lock)
                return <Py_ssize_t>s
            fgw_unlock(&e.lock)
        if not create:
            return -1
        # full: reuse an entry equivalent to a missing one, under the global lock
        fgw_lock(&self._hdr.global_lock, _pid)
        for step in range(n):  # inserted by another reuse meanwhile?
            s = (home + step) % n
            e = &self._ents[s]
            fgw_lock(&e.lock, _pid)
            if e.kind == <uint32_t>kind and e.h1 == h1 and e.h2 == h2:
                fgw_unlock(&self._hdr.global_lock)
                return <Py_ssize_t>s
            fgw_unlock(&e.lock)
        for step in range(n):
            s = (home + step) % n
            e = &self._ents[s]
            fgw_lock(&e.lock, _pid)
            if _reusable(e, now):
                _claim(e, kind, h1, h2, v, cap, rate, now)
                fgw_unlock(&self._hdr.global_lock)
                return <Py_ssize_t>s
            fgw_unlock(&e.lock)
        fgw_unlock(&self._hdr.global_lock)
        raise TableFull(
            f"shared state table {self.path} is full ({n} entries hold live state): "
            "raise state.entries"
        )

    # token buckets

    def take_many(self, list takes, double now):
        """Take ``n`` tokens from every bucket ``(key, n, capacity, rate)`` or from none;
        per bucket ``(allowed, remaining, retry_after, reset)``."""
        self._check_open()
        return self._many(KIND_BUCKET, takes, now, -1.0)

    cdef list _many(self, int kind, list items, double now, double ttl):
        """``take_many`` (``kind`` KIND_BUCKET, items ``(key, n, capacity, rate)``) or
        ``charge_many`` (KIND_CHARGE, items ``(key, n, cap)``): unpack every item into
        ``d`` (checked before any lock), lock the entry of every key (``_lock_all``), decide
        with them locked (``_decide``, ``_spend``) and unlock. The arrays of up to SMALL
        items are on the stack."""
        cdef Py_ssize_t k = len(items)
        cdef Py_ssize_t small_slots[SMALL]
        cdef Py_ssize_t small_order[SMALL]
        cdef double small_d[4 * SMALL]
        cdef Py_ssize_t* slots = small_slots
        cdef Py_ssize_t* order = small_order
        cdef double* d = small_d
        cdef Py_ssize_t i, m
        cdef double n, cap, rate
        if k > SMALL:
            slots = <Py_ssize_t*>PyMem_Malloc(2 * k * sizeof(Py_ssize_t))
            d = <double*>PyMem_Malloc(4 * k * sizeof(double))
            if slots == NULL or d == NULL:
                PyMem_Free(slots)
                PyMem_Free(d)
                raise MemoryError()
            order = slots + k
        try:
            for i in range(k):
                if kind == KIND_BUCKET:
                    key, n, cap, rate = <tuple>items[i]
                    d[4 * i + 2] = rate
                else:
                    key, n, cap = <tuple>items[i]
                    if not (0.0 <= n < INF) or cap != cap:
                        raise ValueError("a charge needs a finite n >= 0 and a cap")
                d[4 * i] = n
                d[4 * i + 1] = cap
            if k == 0:
                return []
            if k == 1:
                key = (<tuple>items[0])[0]
                if kind == KIND_BUCKET:  # a new bucket is full
                    slots[0] = self._find(kind, key, True, now, d[1], d[1], d[2])
                else:
                    slots[0] = self._find(kind, key, True, now, 0.0, 0.0, 0.0)
                order[0] = slots[0]
                m = 1
            else:
                m = self._lock_all(kind, items, k, d, slots, order, now)
            try:
                if kind == KIND_BUCKET:
                    return self._decide(k, slots, d, now)
                return self._spend(k, slots, d, now, ttl)
            finally:
                for i in range(m - 1, -1, -1):
                    fgw_unlock(&self._ents[order[i]].lock)
        finally:
            if slots != small_slots:
                PyMem_Free(slots)
                PyMem_Free(d)

    cdef Py_ssize_t _lock_all(
        self,
        int kind,
        list items,
        Py_ssize_t k,
        double* d,
        Py_ssize_t* slots,
        Py_ssize_t* order,
        double now,
    ) except -1:
        """Find (or create) the entry of ``kind`` of every item's key (``items[i][0]``) and
        lock them all; see ``_lock_all_h``."""
        cdef uint64_t small_h[2 * SMALL]
        cdef uint64_t* h = small_h
        cdef Py_ssize_t i
        cdef bytes dg
        if k > SMALL:
            h = <uint64_t*>PyMem_Malloc(2 * k * sizeof(uint64_t))
            if h == NULL:
                raise MemoryError()
        try:
            for i in range(k):
                dg = _digest(kind, (<tuple>items[i])[0])
                memcpy(&h[2 * i], PyBytes_AS_STRING(dg), 16)
            return self._lock_all_h(kind, h, k, d, slots, order, now)
        finally:
            if h != small_h:
                PyMem_Free(h)

    cdef Py_ssize_t _lock_all_h(
        self,
        int kind,
        uint64_t* h,
        Py_ssize_t k,
        double* d,
        Py_ssize_t* slots,
        Py_ssize_t* order,
        double now,
    ) except -1:
        """Find (or create) the entry of ``kind`` of every digest (``h[2i]``, ``h[2i + 1]``;
        a bucket is created full, with capacity ``d[4i + 1]`` and rate ``d[4i + 2]``) and
        lock them all, each once, in increasing entry order (no deadlock): ``slots[i]`` is
        item i's entry, ``order[:m]`` the entries locked; returns m."""
        cdef Py_ssize_t i, j, m, s
        cdef bint same
        cdef double v, rate
        cdef fgw_entry* e
        while True:
            for i in range(k):
                v = rate = 0.0
                if kind == KIND_BUCKET:
                    v = d[4 * i + 1]
                    rate = d[4 * i + 2]
                slots[i] = self._find_h(kind, h[2 * i], h[2 * i + 1], True, now, v, v, rate)
                fgw_unlock(&self._ents[slots[i]].lock)
            # distinct entries in increasing order (insertion sort: k is small)
            m = 0
            for i in range(k):
                s = slots[i]
                j = m
                same = False
                while j > 0 and order[j - 1] >= s:
                    if order[j - 1] == s:
                        same = True
                        break
                    j -= 1
                if same:
                    continue
                if j < m:
                    memcpy(&order[j + 1], &order[j], (m - j) * sizeof(Py_ssize_t))
                order[j] = s
                m += 1
            for i in range(m):
                fgw_lock(&self._ents[order[i]].lock, _pid)
            for i in range(k):
                e = &self._ents[slots[i]]
                if not (e.kind == <uint32_t>kind and e.h1 == h[2 * i] and e.h2 == h[2 * i + 1]):
                    break
            else:
                return m
            for i in range(m - 1, -1, -1):
                fgw_unlock(&self._ents[order[i]].lock)
            # an entry was reused for another key between finding and locking: again

    cdef list _decide(self, Py_ssize_t k, Py_ssize_t* slots, double* d, double now):
        """Decide with the entries ``slots`` locked; per take a verdict tuple."""
        cdef bint ok = self._apply(k, slots, d, now)
        cdef list out = []
        cdef Py_ssize_t i
        for i in range(k):
            out.append(
                _verdict(
                    self._ents[slots[i]].value,
                    d[4 * i] if ok else d[4 * i + 3],
                    d[4 * i + 1],
                    d[4 * i + 2],
                    ok,
                )
            )
        return out

    cdef bint _apply(self, Py_ssize_t k, Py_ssize_t* slots, double* d, double now) noexcept:
        """Refill, decide and take with the entries ``slots`` locked; whether the take
        happened. ``d[4i + 3]`` gets the need of take i's bucket (the takes of one key add
        up)."""
        cdef Py_ssize_t i, j, first
        cdef fgw_entry* e
        cdef double x, need
        cdef bint ok = True
        # refill each distinct entry once, with the limit of its first take (in d[4i+3]:
        # the index of the first take of the same entry)
        for i in range(k):
            first = i
            for j in range(i):
                if slots[j] == slots[i]:
                    first = j
                    break
            if first == i:
                e = &self._ents[slots[i]]
                if now > e.at:
                    x = e.value + (now - e.at) * d[4 * i + 2]
                    e.value = x if x < d[4 * i + 1] else d[4 * i + 1]
                    e.at = now
        for i in range(k):
            need = 0.0
            for j in range(k):
                if slots[j] == slots[i]:
                    need = need + d[4 * j]
            d[4 * i + 3] = need
            if not (self._ents[slots[i]].value >= need):
                ok = False
        for i in range(k):
            e = &self._ents[slots[i]]
            if ok:
                e.value = e.value - d[4 * i]
            e.cap = d[4 * i + 1]
            e.rate = d[4 * i + 2]
        return ok

    def prepare(self, list buckets, list roles=None):
        """A handle for ``take_prepared``: the digests and shapes of ``buckets``
        (``(key, capacity, rate)`` each), computed once. ``roles`` (``(tokens, limit as
        bytes)`` per bucket) makes it a handle for ``admit`` too."""
        return Prepared(buckets, roles)

    cdef bint _take(self, Prepared p, double* d, double now, double* out) except -1:
        """Take ``d[4i]`` from prepared bucket i (``d`` as ``_apply`` wants it, shapes
        filled here), all or nothing; the balances into ``out``."""
        cdef Py_ssize_t k = p.k
        cdef Py_ssize_t i, m
        cdef Py_ssize_t slots[SMALL]
        cdef Py_ssize_t order[SMALL]
        cdef bint ok
        for i in range(k):
            d[4 * i + 1] = p.shape[2 * i]
            d[4 * i + 2] = p.shape[2 * i + 1]
        if k == 1:
            slots[0] = self._find_h(KIND_BUCKET, p.h[0], p.h[1], True, now, d[1], d[1], d[2])
            ok = self._apply(1, slots, d, now)
            out[0] = self._ents[slots[0]].value
            fgw_unlock(&self._ents[slots[0]].lock)
            return ok
        m = self._lock_all_h(KIND_BUCKET, p.h, k, d, slots, order, now)
        ok = self._apply(k, slots, d, now)
        for i in range(k):
            out[i] = self._ents[slots[i]].value
        for i in range(m - 1, -1, -1):
            fgw_unlock(&self._ents[order[i]].lock)
        return ok

    def take_prepared(self, Prepared p, list ns, double now):
        """``take_many`` of ``ns[i]`` tokens from the prepared buckets: ``(allowed, [the
        balance of each bucket])`` (after the take; before it when refused)."""
        self._check_open()
        cdef Py_ssize_t k = p.k
        cdef Py_ssize_t i
        cdef double d[4 * SMALL]
        cdef double out[SMALL]
        if len(ns) != k:
            raise ValueError(f"{len(ns)} amounts for {k} prepared buckets")
        for i in range(k):
            d[4 * i] = ns[i]
        ok = self._take(p, d, now, out)
        return ok, [out[i] for i in range(k)]

    def admit(self, Prepared p, double tokens, double now=-1.0):
        """One request against a prepared admission: 1 from each requests bucket and
        ``tokens`` (the prompt's estimate) from each tokens bucket, all or nothing. When
        taken, an ``Admitted`` with the ``x-ratelimit-*`` headers of the tightest bucket of
        each kind (a list, as ``_ratelimit.rate_headers`` makes it); None when refused
        (``p.balances()`` tells why). ``now`` < 0: this process's ``time.monotonic()``."""
        return self._admit(p, tokens, now)

    def admissions(self, miss, refused):
        """An ``Admissions`` of this table (see there)."""
        return Admissions(self, miss, refused)

    cdef object _admit(self, Prepared p, double tokens, double now):
        self._check_open()
        if not p.admits:
            raise ValueError("this handle was prepared without roles")
        cdef Py_ssize_t k = p.k
        cdef Py_ssize_t i
        cdef double d[4 * SMALL]
        cdef double at = now
        if now < 0:
            now = fgw_monotonic()
        for i in range(k):
            d[4 * i] = tokens if p.tokens[i] else 1.0
        if not self._take(p, d, now, p.last):
            return None
        cdef Admitted a = Admitted.__new__(Admitted)
        a.table = self
        a.p = p
        a.estimate = tokens
        a.at = at
        a.headers = tightest_of(k, p.last, p.tokens, p.shape, p.caps)
        return a

    def refund(self, Prepared p, double n, double now=-1.0):
        """Add ``n`` tokens (negative: take them) to each tokens bucket of an admission,
        without any check, never above capacity (``settle`` of each); ``now`` as in
        ``admit``."""
        self._check_open()
        if not p.admits:
            raise ValueError("this handle was prepared without roles")
        cdef Py_ssize_t i, s
        cdef double cap, rate
        if now < 0:
            now = fgw_monotonic()
        for i in range(p.k):
            if not p.tokens[i]:
                continue
            cap = p.shape[2 * i]
            rate = p.shape[2 * i + 1]
            s = self._find_h(KIND_BUCKET, p.h[2 * i], p.h[2 * i + 1], True, now, cap, cap, rate)
            _settle(&self._ents[s], n, cap, rate, now)

    def settle(self, str key, double n, double capacity, double rate, double now):
        """Add ``n`` tokens (negative: take them) without any check, never above capacity."""
        self._check_open()
        cdef Py_ssize_t s = self._find(KIND_BUCKET, key, True, now, capacity, capacity, rate)
        _settle(&self._ents[s], n, capacity, rate, now)

    # concurrency slots

    def acquire(self, str key, long long limit):
        """Take one of ``limit`` slots of ``key`` for this process; False when all are held
        (by live processes)."""
        self._check_open()
        cdef Py_ssize_t s = self._find(KIND_SLOTS, key, True, fgw_monotonic(), 0.0, 0.0, 0.0)
        cdef fgw_entry* e = &self._ents[s]
        cdef int i, free = -1
        if <long long>_held(e) >= limit and <long long>_reclaim(e) >= limit:
            fgw_unlock(&e.lock)
            return False
        for i in range(NHOLDERS):
            if e.holders[i].pid == _pid and e.holders[i].count:
                e.holders[i].count += 1
                break
            if free < 0 and not e.holders[i].count:
                free = i
        else:
            if free >= 0:
                e.holders[free].pid = _pid
                e.holders[free].count = 1
            else:
                e.overflow += 1
        fgw_unlock(&e.lock)
        return True

    def release(self, str key):
        """Give back a slot of ``key`` held by this process (else one of the unrecorded
        holders; never below zero)."""
        self._check_open()
        cdef Py_ssize_t s = self._find(KIND_SLOTS, key, False, 0.0, 0.0, 0.0, 0.0)
        if s < 0:
            return
        cdef fgw_entry* e = &self._ents[s]
        cdef int i
        for i in range(NHOLDERS):
            if e.holders[i].pid == _pid and e.holders[i].count:
                e.holders[i].count -= 1
                if not e.holders[i].count:
                    e.holders[i].pid = 0
                break
        else:
            if e.overflow:
                e.overflow -= 1
        fgw_unlock(&e.lock)

    def held(self, str key):
        """How many slots of ``key`` are held (by any process, dead ones included)."""
        self._check_open()
        cdef Py_ssize_t s = self._find(KIND_SLOTS, key, False, 0.0, 0.0, 0.0, 0.0)
        if s < 0:
            return 0
        cdef uint32_t h = _held(&self._ents[s])
        fgw_unlock(&self._ents[s].lock)
        return h

    # counters

    def add(self, str key, double x):
        """Add ``x`` to the counter ``key``; its new value."""
        self._check_open()
        cdef Py_ssize_t s = self._find(KIND_COUNTER, key, True, fgw_monotonic(), 0.0, 0.0, 0.0)
        cdef fgw_entry* e = &self._ents[s]
        cdef double v = e.value + x
        e.value = v
        fgw_unlock(&e.lock)
        return v

    def get(self, str key):
        """The counter's value (0 when never added to)."""
        self._check_open()
        cdef Py_ssize_t s = self._find(KIND_COUNTER, key, False, 0.0, 0.0, 0.0, 0.0)
        if s < 0:
            return 0.0
        cdef double v = self._ents[s].value
        fgw_unlock(&self._ents[s].lock)
        return v

    # charge counters

    def charge_many(self, list charges, double now, ttl=None):
        """Add ``n`` to every charge counter ``(key, n, cap)`` if each total stays within its
        cap, else to none; per charge ``(allowed, total)`` (see ``_shm_py``)."""
        self._check_open()
        return self._many(KIND_CHARGE, charges, now, _ttl(ttl))

    cdef list _spend(self, Py_ssize_t k, Py_ssize_t* slots, double* d, double now, double ttl):
        """Decide with the entries ``slots`` locked: ``d[4i + 2]`` gets the total of charge
        i's counter (0 when expired), ``d[4i + 3]`` the need of its key (the charges of one
        key add up)."""
        cdef Py_ssize_t i, j, first
        cdef fgw_entry* e
        cdef double need
        cdef bint ok = True
        for i in range(k):
            e = &self._ents[slots[i]]
            d[4 * i + 2] = e.value if now < e.at else 0.0
            need = 0.0
            for j in range(k):
                if slots[j] == slots[i]:
                    need = need + d[4 * j]
            d[4 * i + 3] = need
            if not (d[4 * i + 2] + need <= d[4 * i + 1]):
                ok = False
        cdef list out = []
        if not ok:
            for i in range(k):
                out.append((d[4 * i + 2] + d[4 * i + 3] <= d[4 * i + 1], d[4 * i + 2]))
            return out
        for i in range(k):
            first = i
            for j in range(i):
                if slots[j] == slots[i]:
                    first = j
                    break
            if first == i and d[4 * i + 3] > 0:
                _store(&self._ents[slots[i]], d[4 * i + 2] + d[4 * i + 3], now, ttl)
        for i in range(k):
            out.append((True, d[4 * i + 2] + d[4 * i + 3]))
        return out

    def adjust(self, str key, double delta, double now, ttl=None):
        """Add ``delta`` (may be negative) to the charge counter ``key`` without any check;
        its new total."""
        self._check_open()
        cdef double t = _ttl(ttl)
        if not (-INF < delta < INF):
            raise ValueError("delta must be finite")
        cdef Py_ssize_t s = self._find(KIND_CHARGE, key, True, now, 0.0, 0.0, 0.0)
        cdef fgw_entry* e = &self._ents[s]
        cdef double v = (e.value if now < e.at else 0.0) + delta
        _store(e, v, now, t)
        fgw_unlock(&e.lock)
        return v

    def seed(self, str key, double value, double now, ttl=None):
        """Set the charge counter ``key`` to ``value`` unless it exists (written and not
        expired); whether it did."""
        self._check_open()
        cdef double t = _ttl(ttl)
        if not (-INF < value < INF):
            raise ValueError("value must be finite")
        cdef Py_ssize_t s = self._find(KIND_CHARGE, key, True, now, 0.0, 0.0, 0.0)
        cdef fgw_entry* e = &self._ents[s]
        if now < e.at:
            fgw_unlock(&e.lock)
            return False
        _store(e, value, now, t)
        fgw_unlock(&e.lock)
        return True

    # the table

    def used(self):
        """Entries ever claimed (reused ones count once)."""
        self._check_open()
        return self._hdr.used

    def close(self):
        """Unmap the file (which stays for the other processes)."""
        if self._mm is not None:
            self._ents = NULL
            self._hdr = NULL
            self._view = None
            self._mm.close()
            self._mm = None
