"""Incremental HTTP/1.1 response parser (client side): the pure-Python reference twin.

``_http1_c.pyx`` is the compiled twin with the same public API and behaviour; callers import
``fastgw._core.http1``, which picks one of the two.

One :class:`ResponseParser` per upstream connection: every received chunk goes to
:meth:`ResponseParser.feed`, which returns the (de-chunked) body bytes it contained;
:meth:`ResponseParser.feed_eof` when the peer closes; :meth:`ResponseParser.reset` between
responses on a keep-alive connection. The request method is never HEAD and the client never
pipelines, so bytes after the end of a response are an error.

Rules (RFC 9112, client side; the compiled twin follows them byte for byte):

* Head: ``HTTP/1.0`` or ``HTTP/1.1``, SP, three digits 100..599, then end of line or SP and a
  reason phrase (possibly empty). Lines end with CRLF or a bare LF. Header lines are
  ``name: value``: the name is a token (RFC 9110 ``tchar``), returned lower-cased; the value
  has surrounding SP/HTAB stripped and may not hold control bytes (HTAB excepted) or DEL; the
  reason phrase follows the same rule. A line starting with SP/HTAB (obsolete folding) is an
  error. The head ends at the first empty line and may not exceed ``max_head_bytes`` (counted
  up to and including that line's LF).
* 1xx heads other than 101 are interim: discarded with their headers. 101 is an error.
* Framing, in order: 204/304 have no body; a ``transfer-encoding`` whose last coding is
  ``chunked`` means chunked, any other ``transfer-encoding`` means read until EOF (it also
  overrides ``content-length``: ``content_length`` is then -1 and the connection is not
  reused); ``content-length`` (digits, at most 18; a comma list or repeated headers must
  agree) gives the length; otherwise read until EOF. ``transfer-encoding`` in an HTTP/1.0
  response is an error (RFC 9112 §6.1: faulty framing).
* Chunked: ``hex-size [BWS ; extensions]`` then CRLF or LF; the size line may not exceed
  4096 bytes (LF excluded) nor the size 2**62. Chunk data is followed by exactly CRLF. After
  the ``0`` chunk come trailer lines (ignored; ``max_head_bytes`` in all) up to an empty line.
* ``keep_alive``: HTTP/1.1 without a ``close`` connection option, or HTTP/1.0 with
  ``keep-alive`` and without ``close``; and the body is framed (not read until EOF).
* After any error the parser stays failed (every call raises) until :meth:`reset`.
"""

from __future__ import annotations

import re
from typing import Final, NoReturn

__all__ = ["HTTPParseError", "ResponseParser"]


class HTTPParseError(ValueError):
    """The bytes received are not a valid HTTP/1.x response, or arrived out of place."""


_HEAD: Final = 0  # reading a head (interim or final)
_LENGTH: Final = 1  # content-length body: ``_remaining`` bytes to go
_UNTIL_EOF: Final = 2  # body ends when the peer closes
_CHUNK_SIZE: Final = 3  # reading a chunk-size line
_CHUNK_DATA: Final = 4  # inside chunk data: ``_remaining`` bytes to go
_CHUNK_CR: Final = 5  # the CR after chunk data
_CHUNK_LF: Final = 6  # the LF after chunk data
_TRAILERS: Final = 7  # trailer lines after the last chunk
_DONE: Final = 8  # the response is complete

MAX_CHUNK_LINE: Final = 4096
MAX_CHUNK_SIZE: Final = 2**62
MAX_CL_DIGITS: Final = 18

_LF: Final = 0x0A
_CR: Final = 0x0D
_OWS: Final = b" \t"
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")

ERR_FAILED: Final = "the parser failed earlier; reset() it"
ERR_AFTER: Final = "unexpected data after response"
ERR_EOF: Final = "connection closed before the response was complete"
ERR_HEAD_TOO_LARGE: Final = "response head too large"
ERR_STATUS_LINE: Final = "invalid status line"
ERR_101: Final = "101 Switching Protocols is not supported"
ERR_FOLDING: Final = "obsolete line folding in header"
ERR_HEADER_LINE: Final = "invalid header line (no colon)"
ERR_HEADER_NAME: Final = "invalid header name"
ERR_HEADER_VALUE: Final = "invalid header value"
ERR_CL: Final = "invalid content-length"
ERR_CL_CONFLICT: Final = "conflicting content-length values"
ERR_TE_10: Final = "transfer-encoding in an HTTP/1.0 response"
ERR_CHUNK_LINE: Final = "chunk size line too long"
ERR_CHUNK_SIZE: Final = "invalid chunk size"
ERR_CHUNK_TOO_LARGE: Final = "chunk size too large"
ERR_CHUNK_CRLF: Final = "missing CRLF after chunk data"
ERR_TRAILERS: Final = "trailer section too large"


def _find_head_end(buf: bytearray, start: int) -> int:
    """Index just past the LF of the first empty line in ``buf``, or -1.

    ``buf[:start]`` is known to hold no complete terminator (a terminator is at most 3 bytes,
    so the search starts 2 bytes back).
    """
    if buf[:1] == b"\n":
        return 1
    if buf[:2] == b"\r\n":
        return 2
    a = buf.find(b"\n\n", max(start - 1, 0))
    b = buf.find(b"\n\r\n", max(start - 2, 0))
    if a < 0:
        return -1 if b < 0 else b + 3
    if b < 0 or a < b:
        return a + 2
    return b + 3


def _parse_chunk_size(line: bytes) -> int:
    """Size from a chunk-size line (LF and one trailing CR removed); extensions ignored."""
    n = len(line)
    i = 0
    while i < n and line[i] in _HEX:
        i += 1
    if i == 0:
        raise HTTPParseError(ERR_CHUNK_SIZE)
    j = i
    while j < n and line[j] in _OWS:
        j += 1
    if j < n and line[j] != 0x3B:  # ";"
        raise HTTPParseError(ERR_CHUNK_SIZE)
    size = int(line[:i], 16)
    if size > MAX_CHUNK_SIZE:
        raise HTTPParseError(ERR_CHUNK_TOO_LARGE)
    return size


class ResponseParser:
    """Incremental parser for one HTTP/1.x response at a time (see the module docstring)."""

    __slots__ = (
        "_buf",
        "_chunked",
        "_complete",
        "_content_length",
        "_failed",
        "_head_complete",
        "_headers",
        "_keep_alive",
        "_max_head",
        "_reason",
        "_remaining",
        "_scan",
        "_state",
        "_status",
        "_trailer_bytes",
        "_version",
    )

    def __init__(self, max_head_bytes: int = 65536) -> None:
        self._max_head = max_head_bytes
        self._buf = bytearray()
        self.reset()

    def reset(self) -> None:
        """Forget everything: ready for the next response on the same connection."""
        self._buf.clear()
        self._scan = 0  # _buf[:_scan] holds no complete head terminator
        self._state = _HEAD
        self._failed = False
        self._remaining = 0
        self._trailer_bytes = 0
        self._status = 0
        self._reason = b""
        self._version = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_complete = False
        self._complete = False
        self._keep_alive = False
        self._content_length = -1
        self._chunked = False

    # --- read-only state ------------------------------------------------------------------

    @property
    def status(self) -> int:
        """Status code of the final head; 0 until it is parsed."""
        return self._status

    @property
    def reason(self) -> bytes:
        return self._reason

    @property
    def version(self) -> int:
        """10 or 11 once the final head is parsed; 0 before."""
        return self._version

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Header fields in order: lower-cased names, stripped values."""
        return self._headers

    @property
    def head_complete(self) -> bool:
        return self._head_complete

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request (meaningful once complete)."""
        return self._keep_alive

    @property
    def content_length(self) -> int:
        """The Content-Length value; -1 when absent or overridden by Transfer-Encoding."""
        return self._content_length

    @property
    def chunked(self) -> bool:
        """The body uses the chunked transfer coding."""
        return self._chunked

    # --- input ----------------------------------------------------------------------------

    def _fail(self, message: str) -> NoReturn:
        self._failed = True
        raise HTTPParseError(message)

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; return the body bytes it held (de-chunked), ``b""`` if none."""
        if self._failed:
            raise HTTPParseError(ERR_FAILED)
        try:
            return self._feed(data)
        except HTTPParseError:
            self._failed = True
            raise

    def feed_eof(self) -> None:
        """The peer closed the connection."""
        if self._failed:
            raise HTTPParseError(ERR_FAILED)
        if self._state == _DONE:
            return
        if self._state == _UNTIL_EOF:
            self._finish()
            return
        self._fail(ERR_EOF)

    def _finish(self) -> None:
        self._state = _DONE
        self._complete = True

    def _feed(self, data: bytes) -> bytes:
        n = len(data)
        pos = 0
        out: list[bytes] = []
        while pos < n:
            state = self._state
            if state == _HEAD:
                pos = self._feed_head(data, pos)
            elif state in (_LENGTH, _CHUNK_DATA):
                take = min(self._remaining, n - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    if state == _LENGTH:
                        self._finish()
                    else:
                        self._state = _CHUNK_CR
            elif state == _UNTIL_EOF:
                out.append(data[pos:])
                pos = n
            elif state == _CHUNK_SIZE:
                pos = self._feed_chunk_size(data, pos)
            elif state in (_CHUNK_CR, _CHUNK_LF):
                if data[pos] != (_CR if state == _CHUNK_CR else _LF):
                    raise HTTPParseError(ERR_CHUNK_CRLF)
                pos += 1
                self._state = _CHUNK_LF if state == _CHUNK_CR else _CHUNK_SIZE
            elif state == _TRAILERS:
                pos = self._feed_trailers(data, pos)
            else:  # _DONE
                raise HTTPParseError(ERR_AFTER)
        if not out:
            return b""
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    # --- head -----------------------------------------------------------------------------

    def _feed_head(self, data: bytes, pos: int) -> int:
        buf = self._buf
        start = len(buf)
        buf += data[pos:]
        end = _find_head_end(buf, self._scan)
        if end < 0:
            if len(buf) > self._max_head:
                raise HTTPParseError(ERR_HEAD_TOO_LARGE)
            self._scan = len(buf)
            return len(data)
        if end > self._max_head:
            raise HTTPParseError(ERR_HEAD_TOO_LARGE)
        head = bytes(buf[:end])
        buf.clear()
        self._scan = 0
        self._parse_head(head)
        return pos + end - start

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\n")[:-2]  # drop the empty line and what follows its LF
        lines = [line[:-1] if line[-1:] == b"\r" else line for line in lines]
        if not lines:
            raise HTTPParseError(ERR_STATUS_LINE)
        status, reason, version = self._parse_status_line(lines[0])

        headers: list[tuple[bytes, bytes]] = []
        content_length = -1
        te_present = False
        te_chunked = False
        conn_close = False
        conn_keep_alive = False
        for line in lines[1:]:
            if line[0] in _OWS:
                raise HTTPParseError(ERR_FOLDING)
            colon = line.find(b":")
            if colon < 0:
                raise HTTPParseError(ERR_HEADER_LINE)
            name = line[:colon]
            if _TOKEN.fullmatch(name) is None:
                raise HTTPParseError(ERR_HEADER_NAME)
            value = line[colon + 1 :].strip(_OWS)
            if _BAD_VALUE.search(value) is not None:
                raise HTTPParseError(ERR_HEADER_VALUE)
            name = name.lower()
            headers.append((name, value))
            if name == b"content-length":
                for part in value.split(b","):
                    part = part.strip(_OWS)
                    if not part or len(part) > MAX_CL_DIGITS or not part.isdigit():
                        raise HTTPParseError(ERR_CL)
                    length = int(part)
                    if content_length >= 0 and length != content_length:
                        raise HTTPParseError(ERR_CL_CONFLICT)
                    content_length = length
            elif name == b"transfer-encoding":
                te_present = True
                codings = [c for c in (p.strip(_OWS) for p in value.split(b",")) if c]
                if codings:
                    te_chunked = codings[-1].lower() == b"chunked"
            elif name == b"connection":
                for part in value.split(b","):
                    option = part.strip(_OWS).lower()
                    if option == b"close":
                        conn_close = True
                    elif option == b"keep-alive":
                        conn_keep_alive = True

        if status == 101:
            raise HTTPParseError(ERR_101)
        if status < 200:
            return  # interim response: discarded, the next head follows
        if te_present and version == 10:
            raise HTTPParseError(ERR_TE_10)

        keep_alive = (not conn_close) if version == 11 else (conn_keep_alive and not conn_close)
        if te_present:
            if content_length >= 0:
                keep_alive = False  # both framings: never reuse such a connection
            content_length = -1

        self._status = status
        self._reason = reason
        self._version = version
        self._headers = headers
        self._head_complete = True
        self._content_length = content_length
        if status == 204 or status == 304:
            self._keep_alive = keep_alive
            self._finish()
        elif te_present:
            if te_chunked:
                self._chunked = True
                self._keep_alive = keep_alive
                self._state = _CHUNK_SIZE
            else:
                self._state = _UNTIL_EOF
        elif content_length >= 0:
            self._keep_alive = keep_alive
            if content_length == 0:
                self._finish()
            else:
                self._remaining = content_length
                self._state = _LENGTH
        else:
            self._state = _UNTIL_EOF

    @staticmethod
    def _parse_status_line(line: bytes) -> tuple[int, bytes, int]:
        if (
            len(line) < 12
            or not line.startswith(b"HTTP/1.")
            or line[7] not in b"01"
            or line[8] != 0x20
            or not line[9:12].isdigit()
            or (len(line) > 12 and line[12] != 0x20)
        ):
            raise HTTPParseError(ERR_STATUS_LINE)
        status = int(line[9:12])
        reason = line[13:]
        if not 100 <= status <= 599 or _BAD_VALUE.search(reason) is not None:
            raise HTTPParseError(ERR_STATUS_LINE)
        return status, reason, 10 if line[7] == 0x30 else 11

    # --- chunked body ---------------------------------------------------------------------

    def _feed_chunk_size(self, data: bytes, pos: int) -> int:
        buf = self._buf
        lf = data.find(b"\n", pos)
        if lf < 0:
            buf += data[pos:]
            if len(buf) > MAX_CHUNK_LINE:
                raise HTTPParseError(ERR_CHUNK_LINE)
            return len(data)
        line = bytes(buf) + data[pos:lf] if buf else data[pos:lf]
        buf.clear()
        if len(line) > MAX_CHUNK_LINE:
            raise HTTPParseError(ERR_CHUNK_LINE)
        if line[-1:] == b"\r":
            line = line[:-1]
        size = _parse_chunk_size(line)
        if size == 0:
            self._trailer_bytes = 0
            self._state = _TRAILERS
        else:
            self._remaining = size
            self._state = _CHUNK_DATA
        return lf + 1

    def _feed_trailers(self, data: bytes, pos: int) -> int:
        # Trailer fields are not exposed: only line boundaries and the size limit matter.
        buf = self._buf
        lf = data.find(b"\n", pos)
        if lf < 0:
            self._trailer_bytes += len(data) - pos
            if self._trailer_bytes > self._max_head:
                raise HTTPParseError(ERR_TRAILERS)
            buf += data[pos:]
            return len(data)
        self._trailer_bytes += lf + 1 - pos
        if self._trailer_bytes > self._max_head:
            raise HTTPParseError(ERR_TRAILERS)
        line = bytes(buf) + data[pos:lf]
        buf.clear()
        if line == b"" or line == b"\r":
            self._finish()
        return lf + 1
