# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""AWS event-stream framing (``application/vnd.amazon.eventstream``): the compiled twin.

Same public API and behaviour as ``_eventstream_py`` (the reference; see its docstring for the
wire format and the decoding rules, error order included). Messages are decoded through C
pointers, straight from the input when nothing is pending; only the bytes of an incomplete
message are copied, into a C buffer that is compacted once per ``feed``. CRC32 is
``zlib.crc32`` over zero-copy memoryviews, as in the reference.
"""

cimport cython
from cpython.buffer cimport PyBUF_READ
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_SetItem
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

from fastgw._core._buf cimport buf_append

import zlib

__all__ = ["EventMessage", "EventStreamDecoder", "EventStreamError", "encode_message"]

cdef object _crc32 = zlib.crc32

cdef enum:
    _PRELUDE_LEN = 12
    _MIN_MESSAGE = 16
    _MAX_U16 = 0xFFFF
    _MAX_NAME = 0xFF
    _MIN_CAP = 4096
    _KEEP_CAP = 65536   # an emptied buffer larger than this is freed

cdef unsigned long long _MAX_U32 = 0xFFFFFFFFULL
cdef object _I32_MIN = -(1 << 31)
cdef object _I32_MAX = (1 << 31) - 1
cdef object _I64_MIN = -(1 << 63)
cdef object _I64_MAX = (1 << 63) - 1

cdef str ERR_FAILED = "the decoder failed earlier on a corrupt stream"
cdef str ERR_PRELUDE_CRC = "prelude CRC mismatch"
cdef str ERR_MESSAGE_CRC = "message CRC mismatch"
cdef str ERR_TOO_SHORT = "total_length {} is below the 16-byte minimum"
cdef str ERR_TOO_LARGE = "total_length {} exceeds max_message_bytes {}"
cdef str ERR_HEADERS_LENGTH = "headers_length {} exceeds total_length - 16 ({})"
cdef str ERR_HEADER_OVERRUN = "header runs past the end of the headers section"
cdef str ERR_VALUE_TYPE = "unknown header value type {}"
cdef str ERR_NAME_UTF8 = "header name is not valid UTF-8"
cdef str ERR_STRING_UTF8 = "string header value is not valid UTF-8"
cdef str ERR_PARTIAL = "stream ended inside a message ({} bytes buffered)"

cdef str _K_EVENT_TYPE = ":event-type"
cdef str _K_MESSAGE_TYPE = ":message-type"
cdef str _K_EXCEPTION_TYPE = ":exception-type"


class EventStreamError(ValueError):
    """The bytes are not a valid AWS event stream (or cannot be encoded as one)."""


# --- big-endian readers / writers ----------------------------------------------------------------

cdef inline uint32_t _rd_u32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8)
            | <uint32_t>p[3])


cdef inline uint64_t _rd_u64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>_rd_u32(p) << 32) | <uint64_t>_rd_u32(p + 4)


cdef inline void _wr_u16(unsigned char* p, uint16_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v


cdef inline void _wr_u32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef inline void _wr_u64(unsigned char* p, uint64_t v) noexcept nogil:
    _wr_u32(p, <uint32_t>(v >> 32))
    _wr_u32(p + 4, <uint32_t>v)


cdef inline uint32_t _crc(const unsigned char* p, Py_ssize_t n) except? 0:
    return <uint32_t>_crc32(PyMemoryView_FromMemory(<char*>p, n, PyBUF_READ))


# --- messages --------------------------------------------------------------------------------------

@cython.final
cdef class EventMessage:
    """One decoded message: its headers (in wire order) and payload. Immutable."""

    cdef readonly dict headers
    cdef readonly bytes payload

    def __init__(self, dict headers not None, bytes payload not None):
        self.headers = headers
        self.payload = payload

    cdef inline object _str_header(self, str key):
        cdef object v = self.headers.get(key)
        return v if type(v) is str else None

    @property
    def event_type(self):
        """The ``:event-type`` header (e.g. ``contentBlockDelta``), if present as a string."""
        return self._str_header(_K_EVENT_TYPE)

    @property
    def message_type(self):
        """The ``:message-type`` header (``event``, ``exception`` or ``error``)."""
        return self._str_header(_K_MESSAGE_TYPE)

    @property
    def exception_type(self):
        """The ``:exception-type`` header of an exception message (e.g. ``throttlingException``)."""
        return self._str_header(_K_EXCEPTION_TYPE)

    def __eq__(self, other):
        if not isinstance(other, EventMessage):
            return NotImplemented
        cdef EventMessage o = <EventMessage>other
        return self.payload == o.payload and self.headers == o.headers

    def __ne__(self, other):
        if not isinstance(other, EventMessage):
            return NotImplemented
        cdef EventMessage o = <EventMessage>other
        return not (self.payload == o.payload and self.headers == o.headers)

    __hash__ = None

    def __repr__(self):
        return f"EventMessage(headers={self.headers!r}, payload={self.payload!r})"


cdef inline EventMessage _new_message(dict headers, bytes payload):
    cdef EventMessage m = EventMessage.__new__(EventMessage)
    m.headers = headers
    m.payload = payload
    return m


cdef str _decode_utf8(const unsigned char* p, Py_ssize_t n, str err):
    try:
        return PyUnicode_DecodeUTF8(<const char*>p, n, NULL)
    except UnicodeDecodeError:
        raise EventStreamError(err) from None


cdef dict _parse_headers(const unsigned char* p, Py_ssize_t q, Py_ssize_t end):
    cdef dict headers = {}
    cdef Py_ssize_t nlen, vlen
    cdef unsigned int vtype
    cdef str name
    cdef object value
    while q < end:
        nlen = p[q]
        q += 1
        if q + nlen + 1 > end:
            raise EventStreamError(ERR_HEADER_OVERRUN)
        name = _decode_utf8(p + q, nlen, ERR_NAME_UTF8)
        q += nlen
        vtype = p[q]
        q += 1
        if vtype == 0:
            value = True
        elif vtype == 1:
            value = False
        elif vtype == 2:
            if q + 1 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            value = <int>(<int8_t>p[q])
            q += 1
        elif vtype == 3:
            if q + 2 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            value = <int>(<int16_t>((<uint16_t>p[q] << 8) | <uint16_t>p[q + 1]))
            q += 2
        elif vtype == 4:
            if q + 4 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            value = <long>(<int32_t>_rd_u32(p + q))
            q += 4
        elif vtype == 5 or vtype == 8:
            if q + 8 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            value = <long long>(<int64_t>_rd_u64(p + q))
            q += 8
        elif vtype == 6 or vtype == 7:
            if q + 2 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            vlen = (<Py_ssize_t>p[q] << 8) | <Py_ssize_t>p[q + 1]
            q += 2
            if q + vlen > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            if vtype == 6:
                value = PyBytes_FromStringAndSize(<const char*>p + q, vlen)
            else:
                value = _decode_utf8(p + q, vlen, ERR_STRING_UTF8)
            q += vlen
        elif vtype == 9:
            if q + 16 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            value = PyBytes_FromStringAndSize(<const char*>p + q, 16)
            q += 16
        else:
            raise EventStreamError(ERR_VALUE_TYPE.format(vtype))
        PyDict_SetItem(headers, name, value)
    return headers


cdef EventMessage _message(const unsigned char* p, Py_ssize_t total, Py_ssize_t hlen):
    """Decode the whole message at ``p`` (prelude already validated)."""
    cdef Py_ssize_t crc_at = total - 4
    if _crc(p, crc_at) != _rd_u32(p + crc_at):
        raise EventStreamError(ERR_MESSAGE_CRC)
    cdef Py_ssize_t hend = _PRELUDE_LEN + hlen
    cdef dict headers = _parse_headers(p, _PRELUDE_LEN, hend)
    return _new_message(headers, PyBytes_FromStringAndSize(<const char*>p + hend, crc_at - hend))


# --- decoder ---------------------------------------------------------------------------------------

@cython.final
cdef class EventStreamDecoder:
    """Incremental decoder: feed it response body chunks, get complete messages back."""

    cdef unsigned char* _buf
    cdef Py_ssize_t _size
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _need   # total_length of the buffered message once its prelude is validated
    cdef Py_ssize_t _hlen   # its headers_length
    cdef Py_ssize_t _max
    cdef bint _failed

    def __cinit__(self):
        self._buf = NULL
        self._size = 0
        self._cap = 0

    def __dealloc__(self):
        if self._buf is not NULL:
            PyMem_Free(self._buf)
            self._buf = NULL

    def __init__(self, max_message_bytes=16 * 1024 * 1024):
        if max_message_bytes < _MIN_MESSAGE:
            raise ValueError("max_message_bytes must be at least 16")
        # lengths on the wire are uint32: a larger limit is the same as no limit
        self._max = <Py_ssize_t>min(max_message_bytes, _MAX_U32)
        self._size = 0
        self._need = 0
        self._hlen = 0
        self._failed = False

    @property
    def pending(self):
        """Bytes buffered for a message not yet complete."""
        return self._size

    cdef int _append(self, const unsigned char* p, Py_ssize_t n) except -1:
        self._buf = buf_append(self._buf, &self._size, &self._cap, p, n, _MIN_CAP)
        return 0

    cdef void _drop(self) noexcept:
        self._size = 0
        if self._cap > _KEEP_CAP:
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0

    cdef int _prelude(self, const unsigned char* p) except -1:
        cdef uint32_t total = _rd_u32(p)
        cdef uint32_t hlen = _rd_u32(p + 4)
        if _crc(p, 8) != _rd_u32(p + 8):
            raise EventStreamError(ERR_PRELUDE_CRC)
        if total < _MIN_MESSAGE:
            raise EventStreamError(ERR_TOO_SHORT.format(total))
        if <Py_ssize_t>total > self._max:
            raise EventStreamError(ERR_TOO_LARGE.format(total, self._max))
        if hlen > total - _MIN_MESSAGE:
            raise EventStreamError(ERR_HEADERS_LENGTH.format(hlen, total - _MIN_MESSAGE))
        self._need = total
        self._hlen = hlen
        return 0

    def feed(self, data):
        """Decode every message completed by ``data`` (any split of the stream is fine)."""
        if not isinstance(data, bytes):
            raise TypeError(f"feed() takes bytes, not {type(data).__name__}")
        if self._failed:
            raise EventStreamError(ERR_FAILED)
        cdef Py_ssize_t dn = PyBytes_GET_SIZE(data)
        cdef const unsigned char* dp = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef bint from_data = self._size == 0
        if from_data:
            p = dp
            n = dn
        else:
            self._append(dp, dn)
            if self._size < self._need:  # still inside a message whose prelude was checked
                return []
            p = self._buf
            n = self._size
        cdef list out = []
        cdef Py_ssize_t pos = 0
        try:
            while True:
                if self._need == 0:
                    if n - pos < _PRELUDE_LEN:
                        break
                    self._prelude(p + pos)
                if n - pos < self._need:
                    break
                out.append(_message(p + pos, self._need, self._hlen))
                pos += self._need
                self._need = 0
        except EventStreamError:
            self._failed = True
            self._need = 0
            self._drop()
            raise
        if from_data:
            if pos < n:
                self._append(p + pos, n - pos)
        elif pos == n:
            self._drop()
        elif pos:
            memmove(self._buf, self._buf + pos, <size_t>(n - pos))
            self._size = n - pos
        return out

    def flush(self):
        """End of stream: raise :class:`EventStreamError` if a partial message is buffered."""
        if self._failed:
            raise EventStreamError(ERR_FAILED)
        if self._size:
            raise EventStreamError(ERR_PARTIAL.format(self._size))


# --- encoder ---------------------------------------------------------------------------------------

def encode_message(headers, payload):
    """Frame one message (for the mock upstream and tests).

    ``bool`` → types 0/1, ``int`` → type 4 (int32) when it fits, else 5 (int64), ``bytes`` →
    6, ``str`` → 7. Timestamps and UUIDs are never produced (they decode to ``int``/``bytes``).
    """
    if not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    # pass 1: encode names and variable-length values, check limits, size the message
    cdef list parts = []      # (name bytes, type, value: int or bytes)
    cdef Py_ssize_t hlen = 0
    cdef bytes bname, raw
    cdef int vtype
    for name, value in headers.items():
        if type(name) is not str:
            raise TypeError(f"header name must be str, not {type(name).__name__}")
        try:
            bname = (<str>name).encode("utf-8")
        except UnicodeEncodeError:
            raise EventStreamError(ERR_NAME_UTF8) from None
        if PyBytes_GET_SIZE(bname) > _MAX_NAME:
            raise EventStreamError(f"header name longer than {_MAX_NAME} bytes")
        hlen += 2 + PyBytes_GET_SIZE(bname)
        if isinstance(value, bool):
            parts.append((bname, 0 if value else 1, None))
        elif isinstance(value, int):
            if _I32_MIN <= value <= _I32_MAX:
                parts.append((bname, 4, value))
                hlen += 4
            elif _I64_MIN <= value <= _I64_MAX:
                parts.append((bname, 5, value))
                hlen += 8
            else:
                raise EventStreamError("integer header value out of the int64 range")
        elif isinstance(value, (bytes, str)):
            if isinstance(value, str):
                try:
                    raw = (<str>value).encode("utf-8")
                except UnicodeEncodeError:
                    raise EventStreamError(ERR_STRING_UTF8) from None
                vtype = 7
            else:
                raw = bytes(value)
                vtype = 6
            if PyBytes_GET_SIZE(raw) > _MAX_U16:
                raise EventStreamError(f"header value longer than {_MAX_U16} bytes")
            parts.append((bname, vtype, raw))
            hlen += 2 + PyBytes_GET_SIZE(raw)
        else:
            raise TypeError(f"unsupported header value type: {type(value).__name__}")
    cdef Py_ssize_t plen = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t total = _PRELUDE_LEN + hlen + plen + 4
    if <unsigned long long>total > _MAX_U32:
        raise EventStreamError("message longer than 4 GiB")
    # pass 2: write
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char* o = <unsigned char*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t q = _PRELUDE_LEN, ln
    _wr_u32(o, <uint32_t>total)
    _wr_u32(o + 4, <uint32_t>hlen)
    _wr_u32(o + 8, _crc(o, 8))
    for bname, vtype, value in parts:
        ln = PyBytes_GET_SIZE(bname)
        o[q] = <unsigned char>ln
        memcpy(o + q + 1, PyBytes_AS_STRING(bname), <size_t>ln)
        q += 1 + ln
        o[q] = <unsigned char>vtype
        q += 1
        if vtype == 4:
            _wr_u32(o + q, <uint32_t><int32_t><long long>value)
            q += 4
        elif vtype == 5:
            _wr_u64(o + q, <uint64_t><int64_t><long long>value)
            q += 8
        elif vtype == 6 or vtype == 7:
            raw = <bytes>value
            ln = PyBytes_GET_SIZE(raw)
            _wr_u16(o + q, <uint16_t>ln)
            memcpy(o + q + 2, PyBytes_AS_STRING(raw), <size_t>ln)
            q += 2 + ln
    memcpy(o + q, PyBytes_AS_STRING(payload), <size_t>plen)
    q += plen
    _wr_u32(o + q, _crc(o, q))
    return out
