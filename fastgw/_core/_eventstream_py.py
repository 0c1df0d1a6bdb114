"""AWS event-stream framing (``application/vnd.amazon.eventstream``): the pure-Python reference.

``_eventstream_c.pyx`` is the compiled twin with the same public API and behaviour; callers
import ``fastgw._core.eventstream``, which picks one of the two.

Wire format (all integers big-endian), as used by Amazon Bedrock's ConverseStream:

* prelude: ``total_length`` (uint32), ``headers_length`` (uint32), ``prelude_crc`` (uint32,
  CRC32 of the first 8 bytes);
* ``headers_length`` bytes of headers, each ``name_length`` (uint8), name (UTF-8),
  ``value_type`` (uint8) and a value: 0 true, 1 false (no bytes), 2 int8, 3 int16, 4 int32,
  5 int64, 6 byte array (uint16 length + bytes), 7 string (uint16 length + UTF-8),
  8 timestamp (int64 milliseconds), 9 UUID (16 bytes);
* the payload, then ``message_crc`` (uint32, CRC32 of every byte before it).

``total_length = 12 + headers_length + len(payload) + 4``.

Decoding rules shared by both twins:

* Checks, in order, as soon as the bytes for each are buffered: prelude CRC; ``total_length``
  at least 16 and at most ``max_message_bytes``; ``headers_length <= total_length - 16``; then,
  once the whole message is buffered, the message CRC; then each header in wire order (the
  name and type byte must fit in the headers section, the name must be UTF-8, the type must be
  known, the value must fit, a string value must be UTF-8).
* Header values: booleans as ``bool``, integer types and timestamps (ms) as ``int``, byte
  arrays and UUIDs (16 raw bytes) as ``bytes``, strings as ``str``. A repeated name keeps the
  last value (the format does not forbid repeats; botocore rejects them, we do not).
* Any error is raised as :class:`EventStreamError` and is final: the decoder drops its buffer
  and every later ``feed`` raises. Messages completed earlier in the failing ``feed`` are not
  returned (the stream is corrupt from there on anyway).
* Linear time: the decoder keeps the bytes of at most one incomplete message, remembers the
  validated length of that message, and compacts its buffer once per ``feed``. When its buffer
  is empty, messages are decoded straight from the input and only the tail is kept.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

__all__ = ["EventMessage", "EventStreamDecoder", "EventStreamError", "encode_message"]

HeaderValue = bool | int | bytes | str

_PRELUDE: Final = struct.Struct(">III")
_U32: Final = struct.Struct(">I")
_U16: Final = struct.Struct(">H")
_I8: Final = struct.Struct(">b")
_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")
_I64: Final = struct.Struct(">q")

_PRELUDE_LEN: Final = 12
_MIN_MESSAGE: Final = 16
_MAX_U16: Final = 0xFFFF
_MAX_U32: Final = 0xFFFFFFFF
_MAX_NAME: Final = 0xFF
_I32_MIN: Final = -(1 << 31)
_I32_MAX: Final = (1 << 31) - 1
_I64_MIN: Final = -(1 << 63)
_I64_MAX: Final = (1 << 63) - 1

ERR_FAILED: Final = "the decoder failed earlier on a corrupt stream"
ERR_PRELUDE_CRC: Final = "prelude CRC mismatch"
ERR_MESSAGE_CRC: Final = "message CRC mismatch"
ERR_TOO_SHORT: Final = "total_length {} is below the 16-byte minimum"
ERR_TOO_LARGE: Final = "total_length {} exceeds max_message_bytes {}"
ERR_HEADERS_LENGTH: Final = "headers_length {} exceeds total_length - 16 ({})"
ERR_HEADER_OVERRUN: Final = "header runs past the end of the headers section"
ERR_VALUE_TYPE: Final = "unknown header value type {}"
ERR_NAME_UTF8: Final = "header name is not valid UTF-8"
ERR_STRING_UTF8: Final = "string header value is not valid UTF-8"
ERR_PARTIAL: Final = "stream ended inside a message ({} bytes buffered)"


class EventStreamError(ValueError):
    """The bytes are not a valid AWS event stream (or cannot be encoded as one)."""


class EventMessage:
    """One decoded message: its headers (in wire order) and payload. Immutable."""

    __slots__ = ("_headers", "_payload")

    _headers: dict[str, HeaderValue]
    _payload: bytes

    def __init__(self, headers: dict[str, HeaderValue], payload: bytes) -> None:
        if not isinstance(headers, dict):
            raise TypeError(f"headers must be a dict, not {type(headers).__name__}")
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        self._headers = headers
        self._payload = payload

    @property
    def headers(self) -> dict[str, HeaderValue]:
        return self._headers

    @property
    def payload(self) -> bytes:
        return self._payload

    @property
    def event_type(self) -> str | None:
        """The ``:event-type`` header (e.g. ``contentBlockDelta``), if present as a string."""
        v = self._headers.get(":event-type")
        return v if type(v) is str else None

    @property
    def message_type(self) -> str | None:
        """The ``:message-type`` header (``event``, ``exception`` or ``error``)."""
        v = self._headers.get(":message-type")
        return v if type(v) is str else None

    @property
    def exception_type(self) -> str | None:
        """The ``:exception-type`` header of an exception message (e.g. ``throttlingException``)."""
        v = self._headers.get(":exception-type")
        return v if type(v) is str else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventMessage):
            return NotImplemented
        return self._payload == other._payload and self._headers == other._headers

    def __repr__(self) -> str:
        return f"EventMessage(headers={self._headers!r}, payload={self._payload!r})"


def _parse_headers(buf: bytes | bytearray, q: int, end: int) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    while q < end:
        nlen = buf[q]
        q += 1
        if q + nlen + 1 > end:
            raise EventStreamError(ERR_HEADER_OVERRUN)
        try:
            name = buf[q : q + nlen].decode("utf-8")
        except UnicodeDecodeError:
            raise EventStreamError(ERR_NAME_UTF8) from None
        q += nlen
        vtype = buf[q]
        q += 1
        value: HeaderValue
        if vtype == 0:
            value = True
        elif vtype == 1:
            value = False
        elif vtype == 2:
            if q + 1 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            value = _I8.unpack_from(buf, q)[0]
            q += 1
        elif vtype == 3:
            if q + 2 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            value = _I16.unpack_from(buf, q)[0]
            q += 2
        elif vtype == 4:
            if q + 4 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            value = _I32.unpack_from(buf, q)[0]
            q += 4
        elif vtype == 5 or vtype == 8:
            if q + 8 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            value = _I64.unpack_from(buf, q)[0]
            q += 8
        elif vtype == 6 or vtype == 7:
            if q + 2 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            vlen = _U16.unpack_from(buf, q)[0]
            q += 2
            if q + vlen > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            raw = bytes(buf[q : q + vlen])
            q += vlen
            if vtype == 6:
                value = raw
            else:
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise EventStreamError(ERR_STRING_UTF8) from None
        elif vtype == 9:
            if q + 16 > end:
                raise EventStreamError(ERR_HEADER_OVERRUN)
            value = bytes(buf[q : q + 16])
            q += 16
        else:
            raise EventStreamError(ERR_VALUE_TYPE.format(vtype))
        headers[name] = value
    return headers


class EventStreamDecoder:
    """Incremental decoder: feed it response body chunks, get complete messages back."""

    __slots__ = ("_buf", "_failed", "_hlen", "_max", "_need")

    def __init__(self, max_message_bytes: int = 16 * 1024 * 1024) -> None:
        if max_message_bytes < _MIN_MESSAGE:
            raise ValueError("max_message_bytes must be at least 16")
        self._max = max_message_bytes
        self._buf = bytearray()
        self._need = 0  # total_length of the buffered message once its prelude is validated
        self._hlen = 0  # its headers_length
        self._failed = False

    @property
    def pending(self) -> int:
        """Bytes buffered for a message not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[EventMessage]:
        """Decode every message completed by ``data`` (any split of the stream is fine)."""
        if not isinstance(data, bytes):
            raise TypeError(f"feed() takes bytes, not {type(data).__name__}")
        if self._failed:
            raise EventStreamError(ERR_FAILED)
        buf = self._buf
        src: bytes | bytearray
        if buf:
            buf += data
            if len(buf) < self._need:  # still inside a message whose prelude was checked
                return []
            src = buf
        else:
            src = data
        out: list[EventMessage] = []
        pos = 0
        end = len(src)
        need = self._need
        hlen = self._hlen
        try:
            while True:
                if need == 0:
                    if end - pos < _PRELUDE_LEN:
                        break
                    need, hlen = self._prelude(src, pos)
                if end - pos < need:
                    break
                out.append(_message(src, pos, need, hlen))
                pos += need
                need = 0
        except EventStreamError:
            self._failed = True
            self._buf = bytearray()
            self._need = 0
            raise
        self._need = need
        self._hlen = hlen
        if src is buf:
            del buf[:pos]
        elif pos < end:
            buf += memoryview(data)[pos:]
        return out

    def flush(self) -> None:
        """End of stream: raise :class:`EventStreamError` if a partial message is buffered."""
        if self._failed:
            raise EventStreamError(ERR_FAILED)
        if self._buf:
            raise EventStreamError(ERR_PARTIAL.format(len(self._buf)))

    def _prelude(self, src: bytes | bytearray, pos: int) -> tuple[int, int]:
        total, hlen, crc = _PRELUDE.unpack_from(src, pos)
        if zlib.crc32(memoryview(src)[pos : pos + 8]) != crc:
            raise EventStreamError(ERR_PRELUDE_CRC)
        if total < _MIN_MESSAGE:
            raise EventStreamError(ERR_TOO_SHORT.format(total))
        if total > self._max:
            raise EventStreamError(ERR_TOO_LARGE.format(total, self._max))
        if hlen > total - _MIN_MESSAGE:
            raise EventStreamError(ERR_HEADERS_LENGTH.format(hlen, total - _MIN_MESSAGE))
        return total, hlen


def _message(src: bytes | bytearray, pos: int, total: int, hlen: int) -> EventMessage:
    crc_at = pos + total - 4
    if zlib.crc32(memoryview(src)[pos:crc_at]) != _U32.unpack_from(src, crc_at)[0]:
        raise EventStreamError(ERR_MESSAGE_CRC)
    hstart = pos + _PRELUDE_LEN
    hend = hstart + hlen
    headers = _parse_headers(src, hstart, hend)
    return EventMessage(headers, bytes(src[hend:crc_at]))


def _encode_header(name: str, value: HeaderValue, out: bytearray) -> None:
    if type(name) is not str:
        raise TypeError(f"header name must be str, not {type(name).__name__}")
    try:
        bname = name.encode("utf-8")
    except UnicodeEncodeError:
        raise EventStreamError(ERR_NAME_UTF8) from None
    if len(bname) > _MAX_NAME:
        raise EventStreamError(f"header name longer than {_MAX_NAME} bytes")
    out.append(len(bname))
    out += bname
    if isinstance(value, bool):
        out.append(0 if value else 1)
    elif isinstance(value, int):
        if _I32_MIN <= value <= _I32_MAX:
            out.append(4)
            out += _I32.pack(value)
        elif _I64_MIN <= value <= _I64_MAX:
            out.append(5)
            out += _I64.pack(value)
        else:
            raise EventStreamError("integer header value out of the int64 range")
    elif isinstance(value, bytes | str):
        if isinstance(value, str):
            try:
                raw = value.encode("utf-8")
            except UnicodeEncodeError:
                raise EventStreamError(ERR_STRING_UTF8) from None
            out.append(7)
        else:
            raw = bytes(value)
            out.append(6)
        if len(raw) > _MAX_U16:
            raise EventStreamError(f"header value longer than {_MAX_U16} bytes")
        out += _U16.pack(len(raw))
        out += raw
    else:
        raise TypeError(f"unsupported header value type: {type(value).__name__}")


def encode_message(headers: dict[str, HeaderValue], payload: bytes) -> bytes:
    """Frame one message (for the mock upstream and tests).

    ``bool`` → types 0/1, ``int`` → type 4 (int32) when it fits, else 5 (int64), ``bytes`` →
    6, ``str`` → 7. Timestamps and UUIDs are never produced (they decode to ``int``/``bytes``).
    """
    if not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    hbuf = bytearray()
    for name, value in headers.items():
        _encode_header(name, value, hbuf)
    total = _PRELUDE_LEN + len(hbuf) + len(payload) + 4
    if total > _MAX_U32:
        raise EventStreamError("message longer than 4 GiB")
    out = bytearray(_PRELUDE_LEN)
    _PRELUDE.pack_into(out, 0, total, len(hbuf), 0)
    _U32.pack_into(out, 8, zlib.crc32(memoryview(out)[:8]))
    out += hbuf
    out += payload
    out += _U32.pack(zlib.crc32(out))
    return bytes(out)
