# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Incremental HTTP/1.1 response parser (client side): the compiled twin.

Same public API and behaviour as ``_http1_py`` (the reference; see its docstring for the
rules). Input is scanned through C pointers with ``memchr``; the end of the head is found by
a small state machine carried across feeds, so no byte is scanned twice, and a head that
arrives whole in one feed is parsed in place (never copied). Body bytes are never buffered:
each feed records the body segments of its input and builds the return value once at the
end (the input itself when it is all body, one slice for one segment, one copy otherwise).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memchr, memcmp, memcpy

from fastgw._core._buf cimport buf_append

__all__ = ["HTTPParseError", "ResponseParser"]


class HTTPParseError(ValueError):
    """The bytes received are not a valid HTTP/1.x response, or arrived out of place."""


cdef enum:
    _LF = 10
    _CR = 13
    _SP = 32
    _HT = 9
    _MAX_CHUNK_LINE = 4096
    _MAX_CL_DIGITS = 18
    _MIN_CAP = 1024
    _MIN_SEGS = 16

cdef enum:
    S_HEAD
    S_LENGTH
    S_UNTIL_EOF
    S_CHUNK_SIZE
    S_CHUNK_DATA
    S_CHUNK_CR
    S_CHUNK_LF
    S_TRAILERS
    S_DONE

# states of the head-end scan: at the beginning of a line, after a CR there, inside a line
cdef enum:
    H_BOL
    H_BOL_CR
    H_TEXT

cdef unsigned long long _MAX_CHUNK_SIZE = 1ULL << 62

cdef str ERR_FAILED = "the parser failed earlier; reset() it"
cdef str ERR_AFTER = "unexpected data after response"
cdef str ERR_EOF = "connection closed before the response was complete"
cdef str ERR_HEAD_TOO_LARGE = "response head too large"
cdef str ERR_STATUS_LINE = "invalid status line"
cdef str ERR_101 = "101 Switching Protocols is not supported"
cdef str ERR_FOLDING = "obsolete line folding in header"
cdef str ERR_HEADER_LINE = "invalid header line (no colon)"
cdef str ERR_HEADER_NAME = "invalid header name"
cdef str ERR_HEADER_VALUE = "invalid header value"
cdef str ERR_CL = "invalid content-length"
cdef str ERR_CL_CONFLICT = "conflicting content-length values"
cdef str ERR_TE_10 = "transfer-encoding in an HTTP/1.0 response"
cdef str ERR_CHUNK_LINE = "chunk size line too long"
cdef str ERR_CHUNK_SIZE = "invalid chunk size"
cdef str ERR_CHUNK_TOO_LARGE = "chunk size too large"
cdef str ERR_CHUNK_CRLF = "missing CRLF after chunk data"
cdef str ERR_TRAILERS = "trailer section too large"

# --- byte classes ------------------------------------------------------------------------------

cdef unsigned char _TCHAR[256]      # RFC 9110 token characters
cdef unsigned char _VALUE_OK[256]   # allowed in a field value / reason: HTAB, SP, VCHAR, obs-text
cdef signed char _HEXVAL[256]       # hex digit value, or -1
cdef unsigned char _LOWER[256]      # ASCII lower-casing


cdef void _init_tables() noexcept:
    cdef int c
    cdef bytes extra = b"!#$%&'*+-.^_`|~"
    cdef const unsigned char* e = <const unsigned char*>PyBytes_AS_STRING(extra)
    for c in range(256):
        _TCHAR[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)
        _VALUE_OK[c] = c == _HT or (c >= 0x20 and c != 0x7F)
        if 48 <= c <= 57:
            _HEXVAL[c] = c - 48
        elif 97 <= c <= 102:
            _HEXVAL[c] = c - 87
        elif 65 <= c <= 70:
            _HEXVAL[c] = c - 55
        else:
            _HEXVAL[c] = -1
        _LOWER[c] = c + 32 if 65 <= c <= 90 else c
    for c in range(PyBytes_GET_SIZE(extra)):
        _TCHAR[e[c]] = 1


_init_tables()

# --- well-known header names: shared lower-case bytes objects, no allocation per header --------

cdef enum:
    N_CONTENT_LENGTH = 0
    N_TRANSFER_ENCODING = 1
    N_CONNECTION = 2
    N_OTHER = -1

cdef tuple _KNOWN = (
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"content-type",
    b"date",
    b"server",
    b"cache-control",
    b"content-encoding",
    b"keep-alive",
    b"vary",
    b"x-request-id",
    b"openai-processing-ms",
    b"openai-version",
    b"openai-organization",
    b"strict-transport-security",
    b"set-cookie",
    b"cf-ray",
    b"cf-cache-status",
    b"alt-svc",
    b"access-control-expose-headers",
    b"x-ratelimit-limit-requests",
    b"x-ratelimit-limit-tokens",
    b"x-ratelimit-remaining-requests",
    b"x-ratelimit-remaining-tokens",
    b"x-ratelimit-reset-requests",
    b"x-ratelimit-reset-tokens",
    b"request-id",
    b"anthropic-organization-id",
    b"via",
    b"etag",
    b"last-modified",
    b"location",
)


cdef inline bint _ieq_lower(const unsigned char* s, const unsigned char* lower_lit,
                            Py_ssize_t n) noexcept:
    """``s`` (any case) equals the lower-case literal, both ``n`` bytes long."""
    cdef Py_ssize_t i
    for i in range(n):
        if _LOWER[s[i]] != lower_lit[i]:
            return False
    return True


cdef enum:
    _N_KNOWN = 32

cdef const unsigned char* _KNOWN_PTR[_N_KNOWN]
cdef Py_ssize_t _KNOWN_LEN[_N_KNOWN]


cdef void _init_known() noexcept:
    cdef Py_ssize_t i
    for i in range(_N_KNOWN):  # the bytes objects live as long as the module (_KNOWN)
        _KNOWN_PTR[i] = <const unsigned char*>PyBytes_AS_STRING(<bytes>_KNOWN[i])
        _KNOWN_LEN[i] = PyBytes_GET_SIZE(<bytes>_KNOWN[i])


assert len(_KNOWN) == _N_KNOWN
_init_known()


cdef inline int _known_index(const unsigned char* s, Py_ssize_t n) noexcept:
    cdef int i
    for i in range(_N_KNOWN):
        if _KNOWN_LEN[i] == n and _ieq_lower(s, _KNOWN_PTR[i], n):
            return i
    return N_OTHER


cdef inline bint _ows(unsigned char c) noexcept:
    return c == _SP or c == _HT


cdef Py_ssize_t _scan_head_end(const unsigned char* p, Py_ssize_t n, int* st) noexcept:
    """Index just past the LF of the first empty line in ``p[:n]``, or -1; ``st`` carries
    the scan state from one call to the next."""
    cdef Py_ssize_t i = 0
    cdef int s = st[0]
    cdef unsigned char c
    cdef const unsigned char* q
    while i < n:
        if s == H_TEXT:
            q = <const unsigned char*>memchr(p + i, _LF, <size_t>(n - i))
            if q == NULL:
                break
            i = q - p + 1
            s = H_BOL
        elif s == H_BOL:
            c = p[i]
            if c == _LF:
                st[0] = H_BOL
                return i + 1
            i += 1
            s = H_BOL_CR if c == _CR else H_TEXT
        else:  # H_BOL_CR: a CR opened the line
            if p[i] == _LF:
                st[0] = H_BOL
                return i + 1
            s = H_TEXT  # p[i] is ordinary line content: rescan it as such
    st[0] = s
    return -1


cdef int _parse_content_length(const unsigned char* v, Py_ssize_t n,
                               long long* cl) except -1:
    """Comma list of digit strings, all equal to each other and to ``cl[0]`` (if >= 0)."""
    cdef Py_ssize_t i = 0, a, b, k
    cdef long long val
    while True:
        a = i
        while i < n and v[i] != 44:  # ","
            i += 1
        b = i
        while a < b and _ows(v[a]):
            a += 1
        while b > a and _ows(v[b - 1]):
            b -= 1
        if a == b or b - a > _MAX_CL_DIGITS:
            raise HTTPParseError(ERR_CL)
        val = 0
        for k in range(a, b):
            if v[k] < 48 or v[k] > 57:
                raise HTTPParseError(ERR_CL)
            val = val * 10 + (v[k] - 48)
        if cl[0] >= 0 and val != cl[0]:
            raise HTTPParseError(ERR_CL_CONFLICT)
        cl[0] = val
        if i >= n:
            return 0
        i += 1


cdef int _last_coding_is_chunked(const unsigned char* v, Py_ssize_t n) noexcept:
    """1 / 0 whether the last non-empty list element is ``chunked``; -1: no element."""
    cdef Py_ssize_t i = n, a, b
    while i > 0:
        b = i
        while i > 0 and v[i - 1] != 44:
            i -= 1
        a = i
        while a < b and _ows(v[a]):
            a += 1
        while b > a and _ows(v[b - 1]):
            b -= 1
        if a < b:
            return b - a == 7 and _ieq_lower(v + a, <const unsigned char*>b"chunked", 7)
        i -= 1  # skip the comma
    return -1


cdef int _connection_options(const unsigned char* v, Py_ssize_t n) noexcept:
    """Bit 1: a ``close`` option; bit 2: a ``keep-alive`` option."""
    cdef Py_ssize_t i = 0, a, b
    cdef int found = 0
    while i < n:
        a = i
        while i < n and v[i] != 44:
            i += 1
        b = i
        i += 1
        while a < b and _ows(v[a]):
            a += 1
        while b > a and _ows(v[b - 1]):
            b -= 1
        if b - a == 5 and _ieq_lower(v + a, <const unsigned char*>b"close", 5):
            found |= 1
        elif b - a == 10 and _ieq_lower(v + a, <const unsigned char*>b"keep-alive", 10):
            found |= 2
    return found


@cython.final
cdef class ResponseParser:
    """Incremental parser for one HTTP/1.x response at a time (see ``_http1_py``)."""

    cdef readonly int status
    cdef readonly bytes reason
    cdef readonly int version
    cdef readonly list headers
    cdef readonly bint head_complete
    cdef readonly bint complete
    cdef readonly bint keep_alive
    cdef readonly long long content_length
    cdef readonly bint chunked

    cdef Py_ssize_t _max_head
    cdef int _state
    cdef int _hscan            # head-end scan state (H_*), carried across feeds
    cdef bint _failed
    cdef long long _remaining
    cdef Py_ssize_t _trailer_bytes
    cdef Py_ssize_t _tline     # bytes of the current trailer line seen so far
    cdef bint _tfirst_cr       # ... and whether its first byte is CR
    # line buffer: a head, or a chunk-size line, split over feeds
    cdef unsigned char* _buf
    cdef Py_ssize_t _size
    cdef Py_ssize_t _cap
    # body segments of the current feed: (offset, length) pairs into its input
    cdef Py_ssize_t* _segs
    cdef Py_ssize_t _nseg
    cdef Py_ssize_t _segcap

    def __cinit__(self, *args, **kwargs):
        self._buf = NULL
        self._size = self._cap = 0
        self._segs = NULL
        self._nseg = self._segcap = 0

    def __dealloc__(self):
        if self._buf is not NULL:
            PyMem_Free(self._buf)
            self._buf = NULL
        if self._segs is not NULL:
            PyMem_Free(self._segs)
            self._segs = NULL

    def __init__(self, Py_ssize_t max_head_bytes=65536):
        self._max_head = max_head_bytes
        self.reset()

    def reset(self):
        """Forget everything: ready for the next response on the same connection."""
        self._size = 0
        self._state = S_HEAD
        self._hscan = H_BOL
        self._failed = False
        self._remaining = 0
        self._trailer_bytes = 0
        self._tline = 0
        self._tfirst_cr = False
        self.status = 0
        self.reason = b""
        self.version = 0
        self.headers = []
        self.head_complete = False
        self.complete = False
        self.keep_alive = False
        self.content_length = -1
        self.chunked = False

    # --- helpers ------------------------------------------------------------------------------

    cdef inline void _finish(self) noexcept:
        self._state = S_DONE
        self.complete = True

    cdef int _append(self, const unsigned char* p, Py_ssize_t n) except -1:
        self._buf = buf_append(self._buf, &self._size, &self._cap, p, n, _MIN_CAP)
        return 0

    cdef inline int _add_seg(self, Py_ssize_t off, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef Py_ssize_t* ns
        if self._nseg == self._segcap:
            cap = self._segcap * 2 if self._segcap else _MIN_SEGS
            ns = <Py_ssize_t*>PyMem_Realloc(self._segs, <size_t>cap * 2 * sizeof(Py_ssize_t))
            if ns == NULL:
                raise MemoryError()
            self._segs = ns
            self._segcap = cap
        self._segs[2 * self._nseg] = off
        self._segs[2 * self._nseg + 1] = n
        self._nseg += 1
        return 0

    # --- input --------------------------------------------------------------------------------

    def feed(self, bytes data not None):
        """Consume ``data``; return the body bytes it held (de-chunked), ``b""`` if none."""
        if self._failed:
            raise HTTPParseError(ERR_FAILED)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if n == 0:
            return b""
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
        self._nseg = 0
        try:
            self._run(p, n)
        except HTTPParseError:
            self._failed = True
            raise
        cdef Py_ssize_t i, total, off, ln
        cdef bytes out
        cdef unsigned char* dst
        if self._nseg == 0:
            return b""
        if self._nseg == 1:
            off = self._segs[0]
            ln = self._segs[1]
            if off == 0 and ln == n:
                return data
            return PyBytes_FromStringAndSize(<const char*>p + off, ln)
        total = 0
        for i in range(self._nseg):
            total += self._segs[2 * i + 1]
        out = PyBytes_FromStringAndSize(NULL, total)
        dst = <unsigned char*>PyBytes_AS_STRING(out)
        for i in range(self._nseg):
            ln = self._segs[2 * i + 1]
            memcpy(dst, p + self._segs[2 * i], <size_t>ln)
            dst += ln
        return out

    def feed_eof(self):
        """The peer closed the connection."""
        if self._failed:
            raise HTTPParseError(ERR_FAILED)
        if self._state == S_DONE:
            return
        if self._state == S_UNTIL_EOF:
            self._finish()
            return
        self._failed = True
        raise HTTPParseError(ERR_EOF)

    cdef int _run(self, const unsigned char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t take
        cdef int state
        while pos < n:
            state = self._state
            if state == S_CHUNK_DATA or state == S_LENGTH:
                take = n - pos
                if take > self._remaining:
                    take = <Py_ssize_t>self._remaining
                self._add_seg(pos, take)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    if state == S_LENGTH:
                        self._finish()
                    else:
                        self._state = S_CHUNK_CR
            elif state == S_CHUNK_CR:
                if p[pos] != _CR:
                    raise HTTPParseError(ERR_CHUNK_CRLF)
                pos += 1
                self._state = S_CHUNK_LF
                if pos < n:
                    if p[pos] != _LF:
                        raise HTTPParseError(ERR_CHUNK_CRLF)
                    pos += 1
                    self._state = S_CHUNK_SIZE
            elif state == S_CHUNK_SIZE:
                pos = self._chunk_size(p, pos, n)
            elif state == S_CHUNK_LF:
                if p[pos] != _LF:
                    raise HTTPParseError(ERR_CHUNK_CRLF)
                pos += 1
                self._state = S_CHUNK_SIZE
            elif state == S_HEAD:
                pos = self._head(p, pos, n)
            elif state == S_UNTIL_EOF:
                self._add_seg(pos, n - pos)
                pos = n
            elif state == S_TRAILERS:
                pos = self._trailers(p, pos, n)
            else:  # S_DONE
                raise HTTPParseError(ERR_AFTER)
        return 0

    # --- head ---------------------------------------------------------------------------------

    cdef Py_ssize_t _head(self, const unsigned char* p, Py_ssize_t pos, Py_ssize_t n) except -1:
        # A head of at most max_head bytes ends at most `room` bytes into this input: the scan
        # stops there (a longer head is an error whether or not its end is in this input).
        cdef Py_ssize_t room = self._max_head - self._size
        cdef Py_ssize_t avail = n - pos
        cdef Py_ssize_t end, hlen
        if room < 0:
            room = 0
        end = _scan_head_end(p + pos, avail if avail <= room else room, &self._hscan)
        if end < 0:
            if avail > room:
                raise HTTPParseError(ERR_HEAD_TOO_LARGE)
            self._append(p + pos, avail)
            return n
        if self._size == 0:
            self._parse_head(p + pos, end)  # the whole head is in this input: parse in place
        else:
            self._append(p + pos, end)
            hlen = self._size
            self._size = 0  # the bytes stay valid: parsing appends nothing
            self._parse_head(self._buf, hlen)
        return pos + end

    cdef int _parse_head(self, const unsigned char* h, Py_ssize_t hlen) except -1:
        cdef const unsigned char* stop = h + hlen
        cdef const unsigned char* line = h
        cdef const unsigned char* nl
        cdef const unsigned char* colon
        cdef Py_ssize_t ll, k, nlen, vlen
        cdef const unsigned char* v
        cdef int status, version, idx, te_last, opts = 0
        cdef long long content_length = -1
        cdef bint te_present = False, te_chunked = False, keep_alive
        cdef bytes reason, name, value
        cdef unsigned char* lname
        cdef list headers

        # status line: HTTP/1.x SP 3DIGIT [SP reason]
        nl = <const unsigned char*>memchr(line, _LF, <size_t>(stop - line))
        ll = nl - line
        if ll > 0 and line[ll - 1] == _CR:
            ll -= 1
        if (
            ll < 12
            or memcmp(line, b"HTTP/1.", 7) != 0
            or (line[7] != 48 and line[7] != 49)
            or line[8] != _SP
            or line[9] < 48 or line[9] > 57
            or line[10] < 48 or line[10] > 57
            or line[11] < 48 or line[11] > 57
            or (ll > 12 and line[12] != _SP)
        ):
            raise HTTPParseError(ERR_STATUS_LINE)
        status = (line[9] - 48) * 100 + (line[10] - 48) * 10 + (line[11] - 48)
        if status < 100 or status > 599:
            raise HTTPParseError(ERR_STATUS_LINE)
        for k in range(13, ll):
            if not _VALUE_OK[line[k]]:
                raise HTTPParseError(ERR_STATUS_LINE)
        version = 10 if line[7] == 48 else 11
        reason = PyBytes_FromStringAndSize(<const char*>line + 13, ll - 13) if ll > 13 else b""

        headers = []
        line = nl + 1
        while True:
            nl = <const unsigned char*>memchr(line, _LF, <size_t>(stop - line))
            ll = nl - line
            if ll > 0 and line[ll - 1] == _CR:
                ll -= 1
            if ll == 0:
                break  # the empty line that ends the head
            if _ows(line[0]):
                raise HTTPParseError(ERR_FOLDING)
            colon = <const unsigned char*>memchr(line, 58, <size_t>ll)  # ":"
            if colon == NULL:
                raise HTTPParseError(ERR_HEADER_LINE)
            nlen = colon - line
            if nlen == 0:
                raise HTTPParseError(ERR_HEADER_NAME)
            for k in range(nlen):
                if not _TCHAR[line[k]]:
                    raise HTTPParseError(ERR_HEADER_NAME)
            v = colon + 1
            vlen = ll - nlen - 1
            while vlen > 0 and _ows(v[0]):
                v += 1
                vlen -= 1
            while vlen > 0 and _ows(v[vlen - 1]):
                vlen -= 1
            for k in range(vlen):
                if not _VALUE_OK[v[k]]:
                    raise HTTPParseError(ERR_HEADER_VALUE)
            idx = _known_index(line, nlen)
            if idx >= 0:
                name = <bytes>_KNOWN[idx]
            else:
                name = PyBytes_FromStringAndSize(NULL, nlen)
                lname = <unsigned char*>PyBytes_AS_STRING(name)
                for k in range(nlen):
                    lname[k] = _LOWER[line[k]]
            value = PyBytes_FromStringAndSize(<const char*>v, vlen)
            headers.append((name, value))
            if idx == N_CONTENT_LENGTH:
                _parse_content_length(v, vlen, &content_length)
            elif idx == N_TRANSFER_ENCODING:
                te_present = True
                te_last = _last_coding_is_chunked(v, vlen)
                if te_last >= 0:
                    te_chunked = te_last == 1
            elif idx == N_CONNECTION:
                opts |= _connection_options(v, vlen)
            line = nl + 1

        if status == 101:
            raise HTTPParseError(ERR_101)
        if status < 200:
            self._hscan = H_BOL  # interim response: discarded, the next head follows
            return 0
        if te_present and version == 10:
            raise HTTPParseError(ERR_TE_10)

        if version == 11:
            keep_alive = not (opts & 1)
        else:
            keep_alive = (opts & 2) and not (opts & 1)
        if te_present:
            if content_length >= 0:
                keep_alive = False  # both framings: never reuse such a connection
            content_length = -1

        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.head_complete = True
        self.content_length = content_length
        if status == 204 or status == 304:
            self.keep_alive = keep_alive
            self._finish()
        elif te_present:
            if te_chunked:
                self.chunked = True
                self.keep_alive = keep_alive
                self._state = S_CHUNK_SIZE
            else:
                self._state = S_UNTIL_EOF
        elif content_length >= 0:
            self.keep_alive = keep_alive
            if content_length == 0:
                self._finish()
            else:
                self._remaining = content_length
                self._state = S_LENGTH
        else:
            self._state = S_UNTIL_EOF
        return 0

    # --- chunked body -------------------------------------------------------------------------

    cdef Py_ssize_t _chunk_size(self, const unsigned char* p, Py_ssize_t pos,
                                Py_ssize_t n) except -1:
        # the line (LF excluded) may hold `room` more bytes: its LF is at most `room` in
        cdef Py_ssize_t room = _MAX_CHUNK_LINE - self._size
        cdef Py_ssize_t avail = n - pos
        cdef Py_ssize_t ll, i, j
        cdef const unsigned char* line
        cdef const unsigned char* q
        cdef unsigned long long size = 0
        cdef bint over = False
        cdef signed char d
        q = <const unsigned char*>memchr(p + pos, _LF, <size_t>(avail if avail <= room else room + 1))
        if q == NULL:
            if avail > room:
                raise HTTPParseError(ERR_CHUNK_LINE)
            self._append(p + pos, avail)
            return n
        ll = q - (p + pos)
        if self._size:
            self._append(p + pos, ll)
            line = self._buf
            ll = self._size
            self._size = 0
        else:
            line = p + pos
        if ll > 0 and line[ll - 1] == _CR:
            ll -= 1
        i = 0
        while i < ll:
            d = _HEXVAL[line[i]]
            if d < 0:
                break
            if size > (_MAX_CHUNK_SIZE >> 4):
                over = True
            else:
                size = size * 16 + <unsigned long long>d
            i += 1
        if i == 0:
            raise HTTPParseError(ERR_CHUNK_SIZE)
        j = i
        while j < ll and _ows(line[j]):
            j += 1
        if j < ll and line[j] != 59:  # ";"
            raise HTTPParseError(ERR_CHUNK_SIZE)
        if over or size > _MAX_CHUNK_SIZE:
            raise HTTPParseError(ERR_CHUNK_TOO_LARGE)
        if size == 0:
            self._trailer_bytes = 0
            self._tline = 0
            self._state = S_TRAILERS
        else:
            self._remaining = <long long>size
            self._state = S_CHUNK_DATA
        return q - p + 1

    cdef Py_ssize_t _trailers(self, const unsigned char* p, Py_ssize_t pos,
                              Py_ssize_t n) except -1:
        # Trailer fields are not exposed: only line boundaries and the size limit matter.
        cdef Py_ssize_t avail = n - pos
        cdef const unsigned char* q = <const unsigned char*>memchr(p + pos, _LF, <size_t>avail)
        cdef Py_ssize_t ll
        cdef bint empty
        if q == NULL:
            if self._tline == 0:
                self._tfirst_cr = p[pos] == _CR
            self._tline += avail
            self._trailer_bytes += avail
            if self._trailer_bytes > self._max_head:
                raise HTTPParseError(ERR_TRAILERS)
            return n
        ll = q - (p + pos)
        self._trailer_bytes += ll + 1
        if self._trailer_bytes > self._max_head:
            raise HTTPParseError(ERR_TRAILERS)
        if self._tline == 0 and ll > 0:
            self._tfirst_cr = p[pos] == _CR
        ll += self._tline
        empty = ll == 0 or (ll == 1 and self._tfirst_cr)
        self._tline = 0
        if empty:
            self._finish()
        return q - p + 1
