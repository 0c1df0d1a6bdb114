# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Metering arithmetic of the request path: the compiled twin of ``_tally_py`` (the same
floats for every input; see its docstring). A bill and a journal entry are one C call each:
no Python frame, the arithmetic on C doubles in the reference's order."""

from cpython.bytes cimport PyBytes_FromString, PyBytes_FromStringAndSize
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble, PyFloat_CheckExact
from cpython.long cimport PyLong_AsDouble, PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_SET_ITEM
from cpython.mem cimport PyMem_Free
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_Compare
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.math cimport fabs, frexp, signbit
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

__all__ = ["COST_HEADER", "Journal", "PriceBook", "Sums", "accumulate", "format_usd"]


cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *ptype) except NULL


# |tokens| below this: a difference of two fits a C long long, and each converts to a double
# as Python converts the int (correctly rounded)
cdef long long _SMALL = 1LL << 62


cdef extern from *:
    """
    typedef unsigned __int128 fastgw_u128;
    """
    ctypedef unsigned long long fastgw_u128  # (its C type is the 128-bit one above)


cdef double _TWO53 = 9007199254740992.0  # 2**53
cdef unsigned long long _E10 = 10000000000ULL


COST_HEADER = b"x-fastgw-cost-usd"


cpdef bytes format_usd(double usd):
    """The ``x-fastgw-cost-usd`` value: fixed point, 10 decimals (1e-10 USD); what
    ``b"%.10f" % usd`` gives. Below 2**53 it is worked out exactly in integers (the
    fraction's bits × 10**10, rounded half to even, as Python's correctly rounded
    conversion does); else (and for inf/nan) by that conversion itself."""
    cdef char buf[48]
    cdef char *s
    cdef double a = fabs(usd), frac, f
    cdef unsigned long long ip, q, m
    cdef fastgw_u128 n, r, half
    cdef int e, k, i = 47, j
    if not a < _TWO53:  # huge, inf, nan
        s = PyOS_double_to_string(usd, b'f', 10, 0, NULL)
        try:
            return PyBytes_FromString(s)
        finally:
            PyMem_Free(s)
    ip = <unsigned long long>a
    frac = a - <double>ip  # exact: the bits below the binary point
    q = 0
    if frac != 0.0:
        f = frexp(frac, &e)  # frac = f * 2**e, 0.5 <= f < 1, e <= 0
        m = <unsigned long long>(f * _TWO53)  # exact: f has 53 significant bits
        k = 53 - e  # frac = m / 2**k; the 10 decimals: round(m * 10**10 / 2**k)
        if k < 128:
            n = <fastgw_u128>m * _E10
            q = <unsigned long long>(n >> k)
            r = n - ((<fastgw_u128>q) << k)
            half = (<fastgw_u128>1) << (k - 1)
            if r > half or (r == half and (q & 1)):
                q += 1
            if q == _E10:  # rounded up to the next unit
                q = 0
                ip += 1
        # else: frac * 10**10 < 2**-40, which rounds to 0
    for j in range(10):
        buf[i] = <char>(48 + q % 10)
        q //= 10
        i -= 1
    buf[i] = 46  # '.'
    i -= 1
    while True:
        buf[i] = <char>(48 + ip % 10)
        ip //= 10
        if ip == 0:
            break
        i -= 1
    if signbit(usd):
        i -= 1
        buf[i] = 45  # '-'
    return PyBytes_FromStringAndSize(&buf[i], 48 - i)


cdef inline bint _small(object o, long long *out):
    """``o`` is an int of magnitude below ``_SMALL`` (then in ``out``)."""
    cdef int overflow = 0
    if type(o) is not int:
        return False
    out[0] = PyLong_AsLongLongAndOverflow(o, &overflow)
    return overflow == 0 and -_SMALL < out[0] < _SMALL


cdef inline double _as_double(object o) except? -1.0:
    """``float(o)`` for an int or float ``o`` (an int correctly rounded, as Python's
    ``float + int`` converts it)."""
    if PyLong_CheckExact(o):
        return PyLong_AsDouble(o)
    return PyFloat_AsDouble(o)


cdef class _Hit:
    cdef long long minute
    cdef list sinks


cdef inline int _inc(list s, Py_ssize_t i, double v, object orig) except -1:
    """``s[i] += orig`` where ``v`` is ``orig`` as a double: in C for a float item (float +
    int is the int converted to a double), else Python's own ``+``."""
    cdef PyObject *item = PyList_GET_ITEM(s, i)
    cdef object new
    if PyFloat_CheckExact(<object>item):
        new = PyFloat_AS_DOUBLE(<object>item) + v
    else:
        new = <object>item + orig
    Py_INCREF(new)
    Py_DECREF(<object>item)
    PyList_SET_ITEM(s, i, new)
    return 0


cdef class Sums:
    """Six running sums of settled answers: requests, estimated (of those, the ones whose
    usage the gateway estimated), prompt, completion and cached tokens, USD; as C doubles
    (``accumulate`` adds to them without making a float object), indexed as a list."""

    cdef double v[6]

    def __init__(self, values=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)):
        got = [float(x) for x in values]
        if len(got) != 6:
            raise ValueError("Sums holds six numbers")
        for i in range(6):
            self.v[i] = got[i]

    def __len__(self):
        return 6

    cdef Py_ssize_t _index(self, Py_ssize_t i) except -1:
        if i < 0:
            i += 6
        if not 0 <= i < 6:
            raise IndexError("Sums index out of range")
        return i

    def __getitem__(self, Py_ssize_t i):
        return self.v[self._index(i)]

    def __setitem__(self, Py_ssize_t i, double x):
        self.v[self._index(i)] = x

    def __iter__(self):
        return iter((self.v[0], self.v[1], self.v[2], self.v[3], self.v[4], self.v[5]))

    def __eq__(self, other):
        try:
            return list(self) == list(other)
        except TypeError:
            return NotImplemented

    __hash__ = None

    def __repr__(self):
        return f"Sums({list(self)!r})"


cdef int _accumulate(
    list sinks, object prompt, object completion, object cached, object cost, bint estimated
) except -1:
    cdef list s
    cdef object usd_o = cost if cost is not None else 0.0
    cdef double dp = _as_double(prompt), dc = _as_double(completion)
    cdef double dk = _as_double(cached), usd = _as_double(usd_o)
    cdef Sums t
    for item in sinks:
        if type(item) is Sums:
            t = <Sums>item
            t.v[0] += 1.0
            if estimated:
                t.v[1] += 1.0
            t.v[2] += dp
            t.v[3] += dc
            t.v[4] += dk
            t.v[5] += usd
            continue
        s = item
        if PyList_GET_SIZE(s) < 6:
            raise IndexError("a list of sums holds six numbers")
        _inc(s, 0, 1.0, 1.0)
        if estimated:
            _inc(s, 1, 1.0, 1.0)
        _inc(s, 2, dp, prompt)
        _inc(s, 3, dc, completion)
        _inc(s, 4, dk, cached)
        _inc(s, 5, usd, usd_o)
    return 0


def accumulate(list sinks, prompt, completion, cached, cost, bint estimated):
    """Add one settled answer to each ``Sums`` (or list of six floats) in place; ``cost``
    None: unpriced, 0 USD."""
    _accumulate(sinks, prompt, completion, cached, cost, estimated)


cdef inline bint _same_items(tuple a, tuple b):
    """``a`` and ``b`` hold the same objects, or equal strings, in the same places."""
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(a)
    if PyTuple_GET_SIZE(b) != n:
        return False
    for i in range(n):
        x = <object>PyTuple_GET_ITEM(a, i)
        y = <object>PyTuple_GET_ITEM(b, i)
        if x is y:
            continue
        if type(x) is not str or type(y) is not str or PyUnicode_Compare(x, y) != 0:
            return False
    return True


cdef long long _minute_now():
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec // 60


cdef class Journal:
    """Where settled answers are summed: per ``key`` (any hashable: the caller, target and
    model of an answer) and minute, the lists of six sums ``miss(minute, key)`` gives
    (requests, estimated, prompt, completion and cached tokens, USD; None: not recorded,
    e.g. a full queue), asked once per key and minute and kept (at most ``limit`` keys,
    then forgotten at once) until ``clear`` (the ledger took those lists for a write).
    ``clock``: the time in seconds since the epoch (default: the system clock)."""

    cdef object _miss
    cdef object _clock
    cdef dict _hits
    # the last key added to and its sums: a key tuple with the same items (the same
    # objects, or equal strings) skips hashing the key (consecutive answers often share it)
    cdef tuple _last_key
    cdef _Hit _last_hit
    cdef public Py_ssize_t limit
    cdef public long long recorded

    def __init__(self, miss, Py_ssize_t limit=4096, clock=None):
        self._miss = miss
        self._clock = clock
        self._hits = {}
        self._last_key = None
        self._last_hit = None
        self.limit = limit
        self.recorded = 0

    def add(self, key, tuple usage, cost, bint estimated):
        """Add one settled answer (``cost`` None: unpriced, 0 USD) to the sums of ``key``
        this minute; False when ``miss`` gave none (nothing is added)."""
        return self._add(key, usage, cost, estimated)

    cdef bint _add(self, key, tuple usage, cost, bint estimated) except -1:
        cdef long long minute
        cdef object found
        cdef _Hit hit
        if self._clock is not None:
            minute = int(self._clock() // 60)
        else:
            minute = _minute_now()
        if (
            self._last_hit is not None
            and type(key) is tuple
            and _same_items(<tuple>key, self._last_key)
            and self._last_hit.minute == minute
        ):
            found = self._last_hit
        else:
            found = self._hits.get(key)
        if found is None or (<_Hit>found).minute != minute:
            sinks = self._miss(minute, key)
            if sinks is None:
                return False
            if len(self._hits) >= self.limit:
                self._hits.clear()
            hit = _Hit.__new__(_Hit)
            hit.minute = minute
            hit.sinks = sinks
            self._hits[key] = hit
        else:
            hit = <_Hit>found
        if type(key) is tuple:
            self._last_key = <tuple>key
            self._last_hit = hit
        prompt, completion, _, cached = usage
        _accumulate(hit.sinks, prompt, completion, cached, cost, estimated)
        self.recorded += 1
        return True

    def clear(self):
        """Forget the sums handed out (they are being written: the next answer of each key
        asks ``miss`` again)."""
        self._hits.clear()
        self._last_key = None
        self._last_hit = None


cdef class _Price:
    cdef double pin, pcached, pout
    cdef object tier


cdef class PriceBook:
    """Per-token prices by model name, looked up by ``lookup(name)`` (None: the model has no
    price) the first time a name is billed and remembered (at most ``limit`` names, then
    forgotten at once) until ``clear``; what ``bill`` charged since start."""

    cdef object _lookup
    cdef object _tiered
    cdef dict _prices
    cdef public Py_ssize_t limit
    cdef public double cost_usd
    cdef public long long requests
    cdef public long long unpriced

    def __init__(self, lookup, tiered, Py_ssize_t limit=4096):
        self._lookup = lookup
        self._tiered = tiered
        self._prices = {}
        self.limit = limit
        self.cost_usd = 0.0
        self.requests = 0
        self.unpriced = 0

    cdef object _remember(self, name):
        cdef object got = self._lookup(name)
        cdef _Price p = None
        if got is not None:
            pin, pcached, pout, tier = got
            p = _Price.__new__(_Price)
            p.pin = pin
            p.pcached = pcached
            p.pout = pout
            p.tier = tier
        if len(self._prices) >= self.limit:
            self._prices = {}
        self._prices[name] = p
        return p

    def bill(self, name, tuple usage):
        """The USD cost of ``usage`` (cached input tokens are part of the prompt's, at most
        all of it) on model ``name``; None when it has no price. With a tier entry,
        ``tiered(entry, prompt, completion, cached)`` prices it."""
        return self._bill(name, usage)

    cdef object _bill(self, name, tuple usage):
        cdef object found
        cdef _Price p
        cdef double usd
        cdef long long prompt, completion, cached
        self.requests += 1
        found = self._prices.get(name, self)
        if found is self:
            found = self._remember(name)
        if found is None:
            self.unpriced += 1
            return None
        p = <_Price>found
        o_prompt, o_completion, _, o_cached = usage
        if (
            p.tier is None
            and _small(o_prompt, &prompt)
            and _small(o_completion, &completion)
            and _small(o_cached, &cached)
        ):
            if cached > prompt:
                cached = prompt
            usd = (
                p.pin * <double>(prompt - cached) + p.pcached * <double>cached
                + p.pout * <double>completion
            )
        else:  # a tier, or huge or odd counts: Python's own arithmetic, as the reference
            if o_cached > o_prompt:
                o_cached = o_prompt
            if p.tier is not None:
                usd = self._tiered(p.tier, o_prompt, o_completion, o_cached)
            else:
                usd = p.pin * (o_prompt - o_cached) + p.pcached * o_cached + p.pout * o_completion
        self.cost_usd += usd
        return usd

    def charge(self, name, tuple usage, list headers, Journal journal, key):
        """A whole answer settled in one call: ``bill`` it, add it to ``journal`` (if any)
        under ``key``, and when it has a price append its ``x-fastgw-cost-usd`` header to
        ``headers``; the USD cost (None: unpriced)."""
        usd = self._bill(name, usage)
        if journal is not None:
            journal._add(key, usage, usd, False)
        if usd is not None:
            headers.append((COST_HEADER, format_usd(usd)))
        return usd

    def clear(self):
        """Forget every price looked up (a new catalog is in)."""
        self._prices = {}
