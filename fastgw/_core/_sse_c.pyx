# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Server-sent events framing and OpenAI usage scanning: the compiled twin.

Same public API and behaviour as ``_sse_py`` (the reference; see its docstring for the
framing rules). The buffer is a malloc'd byte array scanned with ``memchr`` through C
pointers; blocks are delivered to a C-level hook, so ``StreamFilter`` never builds event
objects.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytearray cimport PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.string cimport memchr, memcmp, memcpy, memmove

from fastgw._core._buf cimport buf_append

__all__ = [
    "EventTooLarge",
    "SSEEvent",
    "SSEParser",
    "StreamFilter",
    "extract_usage",
    "has_empty_choices",
]

cdef enum:
    _LF = 10
    _CR = 13
    _MIN_CAP = 4096
    _SHRINK_CAP = 262144
    _MAX_DIGITS = 18


cdef class SSEEvent:
    """One SSE block: its exact bytes and the fields parsed from it."""

    cdef readonly bytes raw
    cdef readonly object data
    cdef readonly object event
    cdef readonly object id

    def __init__(self, bytes raw, object data=None, object event=None, object id=None):
        self.raw = raw
        self.data = data
        self.event = event
        self.id = id

    def _astuple(self):
        return (self.raw, self.data, self.event, self.id)

    def __eq__(self, other):
        if type(other) is not SSEEvent:
            return NotImplemented
        return self._astuple() == (<SSEEvent>other)._astuple()

    def __ne__(self, other):
        if type(other) is not SSEEvent:
            return NotImplemented
        return self._astuple() != (<SSEEvent>other)._astuple()

    def __hash__(self):
        return hash(self._astuple())

    def __repr__(self):
        return (
            f"SSEEvent(raw={self.raw!r}, data={self.data!r}, "
            f"event={self.event!r}, id={self.id!r})"
        )


cdef inline SSEEvent _make_event(bytes raw, object data, object event, object id):
    cdef SSEEvent ev = SSEEvent.__new__(SSEEvent)
    ev.raw = raw
    ev.data = data
    ev.event = event
    ev.id = id
    return ev


class EventTooLarge(ValueError):
    """A single pending (incomplete) block grew beyond ``max_event_bytes``."""


cdef class _Framer:
    """The shared framing engine: owns the buffer, calls ``_block`` per complete block."""

    cdef unsigned char* buf
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef Py_ssize_t pos       # start of the current, not yet terminated line
    cdef Py_ssize_t scan      # [pos, scan) holds no line terminator
    cdef Py_ssize_t bstart    # start of the pending block (0 between feed calls)
    cdef bint skip_lf         # the previous chunk ended with CR: skip a leading LF
    cdef Py_ssize_t max_event_bytes
    # fields of the pending block; offsets are relative to bstart so compaction keeps them
    cdef Py_ssize_t n_data
    cdef Py_ssize_t d_off
    cdef Py_ssize_t d_len
    cdef Py_ssize_t ev_off
    cdef Py_ssize_t ev_len
    cdef Py_ssize_t id_off
    cdef Py_ssize_t id_len
    cdef bytearray data_acc   # joined data when the block has 2+ data lines

    def __cinit__(self, *args, **kwargs):
        self.buf = NULL
        self.size = self.cap = 0
        self.pos = self.scan = self.bstart = 0
        self.skip_lf = False
        self.max_event_bytes = 0
        self._reset_fields()

    def __dealloc__(self):
        if self.buf is not NULL:
            PyMem_Free(self.buf)
            self.buf = NULL

    cdef inline void _reset_fields(self) noexcept:
        self.n_data = 0
        self.ev_off = -1
        self.id_off = -1
        self.data_acc = None

    cdef int _append(self, const unsigned char* p, Py_ssize_t n) except -1:
        self.buf = buf_append(self.buf, &self.size, &self.cap, p, n, _MIN_CAP)
        return 0

    cdef int _line(self, Py_ssize_t start, Py_ssize_t end) except -1:
        """Parse the field line buf[start:end] (non-empty, terminator excluded)."""
        cdef unsigned char* b = self.buf
        cdef unsigned char* colon
        cdef Py_ssize_t name_len, v, vlen, old
        cdef char* acc
        if b[start] == 0x3A:  # ':' comment
            return 0
        colon = <unsigned char*>memchr(b + start, 0x3A, <size_t>(end - start))
        if colon is NULL:
            name_len = end - start
            v = end
        else:
            name_len = colon - (b + start)
            v = name_len + start + 1
            if v < end and b[v] == 0x20:
                v += 1
        vlen = end - v
        if name_len == 4 and memcmp(b + start, b"data", 4) == 0:
            self.n_data += 1
            if self.n_data == 1:
                self.d_off = v - self.bstart
                self.d_len = vlen
            else:
                if self.n_data == 2:
                    self.data_acc = PyByteArray_FromStringAndSize(
                        <char*>(b + self.bstart + self.d_off), self.d_len
                    )
                old = PyByteArray_GET_SIZE(self.data_acc)
                PyByteArray_Resize(self.data_acc, old + 1 + vlen)
                acc = PyByteArray_AS_STRING(self.data_acc)
                acc[old] = _LF
                memcpy(acc + old + 1, b + v, <size_t>vlen)
        elif name_len == 5 and memcmp(b + start, b"event", 5) == 0:
            self.ev_off = v - self.bstart
            self.ev_len = vlen
        elif name_len == 2 and memcmp(b + start, b"id", 2) == 0:
            if vlen == 0 or memchr(b + v, 0, <size_t>vlen) is NULL:
                self.id_off = v - self.bstart
                self.id_len = vlen
        return 0

    cdef int _block(self, Py_ssize_t end) except -1:
        """Hook: the block buf[bstart:end] is complete. Fields are still set."""
        return 0

    cdef object _data_bytes(self):
        if self.n_data == 0:
            return None
        if self.n_data == 1:
            return PyBytes_FromStringAndSize(
                <char*>(self.buf + self.bstart + self.d_off), self.d_len
            )
        return bytes(self.data_acc)

    cdef int _scan_chunk(self, object chunk) except -1:
        """Append chunk and dispatch every block it completes (no compaction)."""
        cdef bytes data = chunk if type(chunk) is bytes else bytes(chunk)
        cdef Py_ssize_t clen = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t p, s, n, eol, end, lf
        cdef unsigned char* b
        cdef void* hit
        if clen == 0:
            return 0
        self._append(<const unsigned char*>PyBytes_AS_STRING(data), clen)
        b = self.buf
        n = self.size
        p = self.pos
        if self.skip_lf:
            self.skip_lf = False
            if b[p] == _LF:
                p += 1
        s = self.scan if self.scan > p else p
        lf = -1  # cached position of the next LF at or after s (n: none)
        while s < n:
            if lf < s:
                hit = memchr(b + s, _LF, <size_t>(n - s))
                lf = (<unsigned char*>hit - b) if hit is not NULL else n
            hit = memchr(b + s, _CR, <size_t>(lf - s))
            if hit is not NULL:
                eol = <unsigned char*>hit - b
                if eol + 1 == n:
                    end = n
                    self.skip_lf = True
                elif b[eol + 1] == _LF:
                    end = eol + 2
                else:
                    end = eol + 1
            elif lf < n:
                eol = lf
                end = lf + 1
            else:
                s = n
                break
            if eol == p:
                self._block(end)
                self.bstart = end
                self._reset_fields()
            else:
                self._line(p, eol)
            p = s = end
        self.pos = p
        self.scan = s
        return 0

    cdef void _compact(self) noexcept:
        cdef Py_ssize_t start = self.bstart
        cdef Py_ssize_t new_cap
        cdef unsigned char* nb
        if start == 0:
            return
        self.size -= start
        if self.size:
            memmove(self.buf, self.buf + start, <size_t>self.size)
        self.pos -= start
        self.scan -= start
        self.bstart = 0
        if self.size == 0:
            # nothing pending (the usual state between upstream chunks): hold no memory, so
            # thousands of idle streams cost no buffer each
            PyMem_Free(self.buf)
            self.buf = NULL
            self.cap = 0
            return
        if self.cap > _SHRINK_CAP and self.size <= self.cap // 8:
            new_cap = self.size * 2
            if new_cap < _MIN_CAP:
                new_cap = _MIN_CAP
            nb = <unsigned char*>PyMem_Realloc(self.buf, <size_t>new_cap)
            if nb is not NULL:
                self.buf = nb
                self.cap = new_cap

    cdef int _check_limit(self) except -1:
        if self.max_event_bytes > 0 and self.size > self.max_event_bytes:
            raise EventTooLarge(
                f"pending SSE event is {self.size} bytes, "
                f"over the limit of {self.max_event_bytes}"
            )
        return 0

    cdef bint _finish(self) except -1:
        """End of stream: dispatch the trailing block if any bytes are buffered."""
        if self.size == 0:
            return False
        if self.pos < self.size:
            self._line(self.pos, self.size)
        self._block(self.size)
        return True

    cdef void _reset(self) noexcept:
        self.size = 0
        self.pos = self.scan = self.bstart = 0
        self.skip_lf = False
        self._reset_fields()
        if self.cap > _SHRINK_CAP:
            PyMem_Free(self.buf)
            self.buf = NULL
            self.cap = 0


cdef class SSEParser(_Framer):
    """Incremental SSE framer: feed it upstream chunks, get complete blocks back."""

    cdef list _events

    def __init__(self, Py_ssize_t max_event_bytes=0):
        self.max_event_bytes = max_event_bytes

    @property
    def pending(self):
        """Bytes currently buffered (the incomplete block)."""
        return self.size

    cdef int _block(self, Py_ssize_t end) except -1:
        cdef unsigned char* b = self.buf
        cdef Py_ssize_t base = self.bstart
        self._events.append(
            _make_event(
                PyBytes_FromStringAndSize(<char*>(b + base), end - base),
                self._data_bytes(),
                None if self.ev_off < 0 else PyBytes_FromStringAndSize(
                    <char*>(b + base + self.ev_off), self.ev_len
                ),
                None if self.id_off < 0 else PyBytes_FromStringAndSize(
                    <char*>(b + base + self.id_off), self.id_len
                ),
            )
        )
        return 0

    def feed(self, chunk):
        """Add ``chunk``; return all blocks it completed, in order."""
        cdef list events = []
        self._events = events
        try:
            self._scan_chunk(chunk)
        finally:
            self._events = None
        self._compact()
        self._check_limit()
        return events

    def flush(self):
        """End of stream: return the trailing incomplete block (or None) and reset."""
        cdef list events = []
        self._events = events
        try:
            self._finish()
        finally:
            self._events = None
            self._reset()
        return events[0] if events else None


# --- usage scanning -------------------------------------------------------------------------

cdef inline bint _is_ws(unsigned char c) noexcept:
    return c == 0x20 or c == 0x09 or c == 0x0A or c == 0x0D


cdef Py_ssize_t _key_value(
    const unsigned char* d, Py_ssize_t lo, Py_ssize_t hi, const char* key, Py_ssize_t klen,
    Py_ssize_t at,
) noexcept:
    """If a key pattern ``[{,] ws "key" ws : ws`` fits in [lo, hi) with the quoted key at
    ``at``, return the index of its value; else -1. ``key`` includes the quotes."""
    cdef Py_ssize_t j = at - 1
    while j >= lo and _is_ws(d[j]):
        j -= 1
    if j < lo or (d[j] != 0x7B and d[j] != 0x2C):
        return -1
    j = at + klen
    while j < hi and _is_ws(d[j]):
        j += 1
    if j >= hi or d[j] != 0x3A:
        return -1
    j += 1
    while j < hi and _is_ws(d[j]):
        j += 1
    return j


cdef Py_ssize_t _find_key(
    const unsigned char* d, Py_ssize_t lo, Py_ssize_t hi, const char* key, Py_ssize_t klen,
    Py_ssize_t* at,
) noexcept:
    """First key pattern in [lo, hi), searching from at[0]; returns its value index or -1.
    On success at[0] is the quoted key's index (resume from at[0] + 1)."""
    cdef Py_ssize_t i = at[0]
    cdef Py_ssize_t v
    cdef const unsigned char* hit
    while i + klen <= hi:
        hit = <const unsigned char*>memchr(d + i, 0x22, <size_t>(hi - klen + 1 - i))
        if hit is NULL:
            return -1
        i = hit - d
        if memcmp(d + i, key, <size_t>klen) == 0:
            v = _key_value(d, lo, hi, key, klen, i)
            if v >= 0:
                at[0] = i
                return v
        i += 1
    return -1


cdef unsigned char _USAGE_SHIFT[256]


cdef void _init_usage_shift() noexcept:
    # smallest k in 1..6 with '"usage"'[k] == c, else 7 (the pattern length)
    cdef const char* pattern = b'"usage"'
    cdef int c, k
    for c in range(256):
        _USAGE_SHIFT[c] = 7
    for k in range(6, 0, -1):
        _USAGE_SHIFT[<unsigned char>pattern[k]] = k


_init_usage_shift()


cdef Py_ssize_t _object_end(const unsigned char* d, Py_ssize_t n, Py_ssize_t i) noexcept:
    """Index of the ``}`` closing the object opened at d[i], or -1 if unterminated."""
    cdef Py_ssize_t depth = 0
    cdef unsigned char c
    while i < n:
        c = d[i]
        if c == 0x22:  # '"': skip the string, honouring backslash escapes
            i += 1
            while i < n:
                c = d[i]
                if c == 0x5C:
                    i += 2
                    continue
                if c == 0x22:
                    break
                i += 1
            if i >= n:
                return -1
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


cdef long long _read_count(
    const unsigned char* d, Py_ssize_t lo, Py_ssize_t hi, const char* key, Py_ssize_t klen
) noexcept:
    cdef Py_ssize_t at = lo
    cdef Py_ssize_t v = _find_key(d, lo, hi, key, klen, &at)
    cdef Py_ssize_t j, digits
    cdef bint neg = False
    cdef long long value = 0
    if v < 0:
        return 0
    j = v
    if j < hi and d[j] == 0x2D:  # '-'
        neg = True
        j += 1
    digits = 0
    while j < hi and 0x30 <= d[j] <= 0x39:
        if digits < _MAX_DIGITS:
            value = value * 10 + (d[j] - 0x30)
        digits += 1
        j += 1
    if digits == 0 or digits > _MAX_DIGITS:
        return 0
    if j < hi and (d[j] == 0x2E or d[j] == 0x65 or d[j] == 0x45):  # '.', 'e', 'E': a float
        return 0
    return -value if neg else value


cdef Py_ssize_t _last_usage(const unsigned char* d, Py_ssize_t n, Py_ssize_t* at) noexcept:
    """Value index of the last ``"usage"`` key pattern in d[0:n], or -1; at[0] is then the
    index of its quoted key."""
    cdef Py_ssize_t i = n - 7
    cdef Py_ssize_t v
    # Scan backwards (usage comes last in practice), Horspool-style: the window's first byte
    # tells how far the previous possible match can be.
    while i >= 0:
        if d[i] == 0x22 and memcmp(d + i, b'"usage"', 7) == 0:
            v = _key_value(d, 0, n, b'"usage"', 7, i)
            if v >= 0:
                at[0] = i
                return v
        i -= _USAGE_SHIFT[d[i]]
    return -1


cdef bint _usage_at(
    const unsigned char* d, Py_ssize_t n, Py_ssize_t v, long long* out
) noexcept:
    """Fills out[0:4] from the usage value at d[v]; False unless it is a terminated object."""
    cdef Py_ssize_t end
    if v >= n or d[v] != 0x7B:
        return False
    end = _object_end(d, n, v)
    if end < 0:
        return False
    end += 1
    out[0] = _read_count(d, v, end, b'"prompt_tokens"', 15)
    out[1] = _read_count(d, v, end, b'"completion_tokens"', 19)
    out[2] = _read_count(d, v, end, b'"total_tokens"', 14)
    out[3] = _read_count(d, v, end, b'"cached_tokens"', 15)
    return True


cdef bint _extract(const unsigned char* d, Py_ssize_t n, long long* out) noexcept:
    """The C core of extract_usage: fills out[0:4], returns False for None."""
    cdef Py_ssize_t at
    cdef Py_ssize_t v = _last_usage(d, n, &at)
    return v >= 0 and _usage_at(d, n, v, out)


cdef bint _null_usage_cut(
    const unsigned char* d, Py_ssize_t n, Py_ssize_t at, Py_ssize_t v, Py_ssize_t* cut
) noexcept:
    """The span [cut[0], cut[1]) of d that removes the member whose quoted key is at d[at]
    and whose value starts at d[v]; False unless that value is ``null`` followed by ws and
    ``}`` or ``,`` (see ``_sse_py._null_usage_cut``)."""
    cdef Py_ssize_t j = v + 4
    cdef Py_ssize_t k = at - 1
    if j > n or memcmp(d + v, b"null", 4) != 0:
        return False
    while j < n and _is_ws(d[j]):
        j += 1
    if j >= n or (d[j] != 0x7D and d[j] != 0x2C):  # '}' ','
        return False
    while _is_ws(d[k]):  # the key pattern guarantees a '{' or ',' before the key
        k -= 1
    if d[k] == 0x2C:
        cut[0] = k
        cut[1] = v + 4
    else:
        cut[0] = at
        if d[j] == 0x2C:
            j += 1
            while j < n and _is_ws(d[j]):
                j += 1
            cut[1] = j
        else:
            cut[1] = v + 4
    return True


cdef bint _empty_choices(const unsigned char* d, Py_ssize_t n) noexcept:
    cdef Py_ssize_t at = 0
    cdef Py_ssize_t v
    while True:
        v = _find_key(d, 0, n, b'"choices"', 9, &at)
        if v < 0:
            return False
        if v < n and d[v] == 0x5B:  # '['
            v += 1
            while v < n and _is_ws(d[v]):
                v += 1
            if v < n and d[v] == 0x5D:  # ']'
                return True
        at += 1


def extract_usage(data):
    """``(prompt, completion, total, cached)`` tokens from the last ``"usage"`` key in ``data``.

    None when there is no such key or its value is not a terminated JSON object. A missing
    or non-integer count (null, float, string, more than 18 digits) reads 0.
    """
    cdef const unsigned char[::1] view
    cdef const unsigned char* d
    cdef Py_ssize_t n
    cdef long long out[4]
    if type(data) is bytes:
        d = <const unsigned char*>PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
    else:
        view = data
        n = view.shape[0]
        d = &view[0] if n else NULL
    if n == 0 or not _extract(d, n, out):
        return None
    return (out[0], out[1], out[2], out[3])


def has_empty_choices(data):
    """True iff a ``"choices"`` key has the empty array ``[]`` as its value."""
    cdef const unsigned char[::1] view
    cdef const unsigned char* d
    cdef Py_ssize_t n
    if type(data) is bytes:
        d = <const unsigned char*>PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
    else:
        view = data
        n = view.shape[0]
        d = &view[0] if n else NULL
    return n > 0 and _empty_choices(d, n)


# --- relay filter ---------------------------------------------------------------------------

cdef inline bint _one_data_line(
    const unsigned char* b, Py_ssize_t n, Py_ssize_t d_off, Py_ssize_t d_len
) noexcept:
    """The block b[0:n], known to have one data line whose value is b[d_off:d_off + d_len],
    is exactly that line (see ``_sse_py._single_data_line``): ``data:``, an optional space,
    the data, then only line terminators; a leading LF (the rest of the previous block's
    CRLF, split off by a chunk boundary) is allowed."""
    cdef Py_ssize_t lead = 1 if b[0] == _LF else 0
    cdef Py_ssize_t i
    if d_off != lead + 5 and not (d_off == lead + 6 and b[lead + 5] == 0x20):
        return False
    if memcmp(b + lead, b"data:", 5) != 0:
        return False
    for i in range(d_off + d_len, n):
        if b[i] != _LF and b[i] != _CR:
            return False
    return True


cdef enum:
    _INLINE_CUTS = 4   # spans held in the object itself: no allocation for a few per call


cdef class StreamFilter(_Framer):
    """Relay filter for OpenAI-shaped chat/completions streams (identity relay).

    Forwards every block unchanged, records the last usage it saw and whether ``[DONE]``
    arrived. With ``drop_usage_only`` it undoes the ``stream_options.include_usage`` that the
    gateway asked for on the client's behalf: it removes the usage-only chunk (empty
    ``choices``), and the ``"usage":null`` member that the upstream then adds to every other
    chunk. That member is the last ``"usage"`` key of the data when its value is ``null``; it
    is cut only from blocks that are a single data line, other blocks are forwarded
    unchanged.
    """

    cdef bint _drop
    cdef readonly object usage
    cdef readonly bint done
    cdef readonly Py_ssize_t events
    cdef readonly Py_ssize_t dropped
    # Spans of buf left out of the output of the current feed/flush call, in order and not
    # overlapping: [_cuts[2k], _cuts[2k + 1]). _cuts is _inline_cuts, or a heap array when
    # more were needed, freed after the call.
    cdef Py_ssize_t* _cuts
    cdef Py_ssize_t _n_cuts
    cdef Py_ssize_t _cuts_cap
    cdef Py_ssize_t _inline_cuts[2 * _INLINE_CUTS]

    def __cinit__(self, *args, **kwargs):
        self._cuts = self._inline_cuts
        self._n_cuts = 0
        self._cuts_cap = _INLINE_CUTS

    def __dealloc__(self):
        self._free_cuts()

    def __init__(self, bint drop_usage_only=False, Py_ssize_t max_event_bytes=0):
        self._drop = drop_usage_only
        self.max_event_bytes = max_event_bytes
        self.usage = None
        self.done = False
        self.events = 0
        self.dropped = 0

    cdef void _free_cuts(self) noexcept:
        if self._cuts is not self._inline_cuts:
            PyMem_Free(self._cuts)
            self._cuts = self._inline_cuts
            self._cuts_cap = _INLINE_CUTS
        self._n_cuts = 0

    cdef int _cut(self, Py_ssize_t start, Py_ssize_t end) except -1:
        """Leave buf[start:end] out of the output."""
        cdef Py_ssize_t cap
        cdef Py_ssize_t* nc
        if self._n_cuts == self._cuts_cap:
            cap = self._cuts_cap * 4
            if self._cuts is self._inline_cuts:
                nc = <Py_ssize_t*>PyMem_Malloc(<size_t>cap * 2 * sizeof(Py_ssize_t))
                if nc is not NULL:
                    memcpy(nc, self._cuts, <size_t>self._n_cuts * 2 * sizeof(Py_ssize_t))
            else:
                nc = <Py_ssize_t*>PyMem_Realloc(self._cuts, <size_t>cap * 2 * sizeof(Py_ssize_t))
            if nc is NULL:
                raise MemoryError()
            self._cuts = nc
            self._cuts_cap = cap
        self._cuts[2 * self._n_cuts] = start
        self._cuts[2 * self._n_cuts + 1] = end
        self._n_cuts += 1
        return 0

    cdef int _block(self, Py_ssize_t end) except -1:
        cdef const unsigned char* d
        cdef Py_ssize_t n, v, at, off
        cdef Py_ssize_t cut[2]
        cdef long long u[4]
        cdef object acc
        if self.n_data == 0:
            return 0
        self.events += 1
        if self.n_data == 1:
            d = self.buf + self.bstart + self.d_off
            n = self.d_len
        else:
            acc = self.data_acc
            d = <const unsigned char*>PyByteArray_AS_STRING(acc)
            n = PyByteArray_GET_SIZE(acc)
        if n == 6 and memcmp(d, b"[DONE]", 6) == 0:
            self.done = True
            return 0
        v = _last_usage(d, n, &at)
        if v < 0:
            return 0
        if _usage_at(d, n, v, u):
            self.usage = (u[0], u[1], u[2], u[3])
            if self._drop and _empty_choices(d, n):
                self.dropped += 1
                self._cut(self.bstart, end)
        elif (
            self._drop
            and self.n_data == 1
            and _null_usage_cut(d, n, at, v, cut)
            and _one_data_line(self.buf + self.bstart, end - self.bstart, self.d_off, self.d_len)
        ):
            off = self.bstart + self.d_off
            self._cut(off + cut[0], off + cut[1])
        return 0

    cdef bytes _collect(self, Py_ssize_t end):
        """buf[0:end] less the cuts; resets the cuts."""
        cdef Py_ssize_t k, lo, hi, total, prev
        cdef bytes out
        cdef char* p
        if self._n_cuts == 0:
            return PyBytes_FromStringAndSize(<char*>self.buf, end) if end > 0 else b""
        total = end
        for k in range(self._n_cuts):
            total -= self._cuts[2 * k + 1] - self._cuts[2 * k]
        if total == 0:
            self._free_cuts()
            return b""
        out = PyBytes_FromStringAndSize(NULL, total)
        p = PyBytes_AS_STRING(out)
        prev = 0
        for k in range(self._n_cuts):
            lo = self._cuts[2 * k]
            hi = self._cuts[2 * k + 1]
            memcpy(p, self.buf + prev, <size_t>(lo - prev))
            p += lo - prev
            prev = hi
        memcpy(p, self.buf + prev, <size_t>(end - prev))
        self._free_cuts()
        return out

    def feed(self, chunk):
        """Bytes of the blocks completed by ``chunk`` that are to be forwarded."""
        cdef bytes out
        self._free_cuts()
        self._scan_chunk(chunk)
        out = self._collect(self.bstart)
        self._compact()
        self._check_limit()
        return out

    def flush(self):
        """End of stream: the trailing incomplete block, filtered like any other."""
        cdef bytes out = b""
        self._free_cuts()
        try:
            if self._finish():
                out = self._collect(self.size)
        finally:
            self._reset()
        return out
