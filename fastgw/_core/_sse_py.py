"""Server-sent events framing and OpenAI usage scanning: the pure-Python reference twin.

``_sse_c.pyx`` is the compiled twin with the same public API and behaviour; callers import
``fastgw._core.sse``, which picks one of the two.

Framing follows the WHATWG event-stream rules, adapted for a lossless relay:

* Lines end with ``\\r\\n``, ``\\n`` or ``\\r``. A ``\\r`` that is the last byte of a chunk ends
  its line at once (waiting for the next chunk would add latency). If the next chunk then
  starts with ``\\n``, that byte is the rest of the CRLF: it is skipped for parsing and stays
  in ``raw`` (of the still-open block, or as the first byte of the next block).
* An empty line ends a block. Every block becomes an :class:`SSEEvent`, including blocks
  without fields, so that joining the ``raw`` of all events (plus ``flush()``) gives back the
  input byte for byte, however it was split into chunks.
* Consequence of the CR rule: the parsed fields of the event sequence never depend on the
  split. Only ``raw`` boundaries can: when a chunk ends between the ``\\r`` and ``\\n`` of the
  CRLF that ends a block, the ``\\n`` moves to the start of the next block's ``raw``; if the
  stream ends there, ``flush()`` returns it as a field-less event with ``raw == b"\\n"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "EventTooLarge",
    "SSEEvent",
    "SSEParser",
    "StreamFilter",
    "extract_usage",
    "has_empty_choices",
]

_LF: Final = 0x0A
_CR: Final = 0x0D
_EOL: Final = re.compile(rb"[\r\n]")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One SSE block: its exact bytes and the fields parsed from it."""

    raw: bytes
    data: bytes | None = None
    event: bytes | None = None
    id: bytes | None = None


class EventTooLarge(ValueError):
    """A single pending (incomplete) block grew beyond ``max_event_bytes``."""


class SSEParser:
    """Incremental SSE framer: feed it upstream chunks, get complete blocks back."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_max", "_pos", "_scan", "_skip_lf")

    def __init__(self, max_event_bytes: int = 0) -> None:
        self._max = max_event_bytes
        # Bytes of the pending block; block boundaries inside a feed are compacted away once,
        # at the end of that feed call.
        self._buf = bytearray()
        self._pos = 0  # start of the current, not yet terminated line
        self._scan = 0  # [_pos, _scan) is known to hold no line terminator
        self._skip_lf = False  # the previous chunk ended with CR: skip a leading LF
        self._data: list[bytes] | None = None
        self._event: bytes | None = None
        self._id: bytes | None = None

    @property
    def pending(self) -> int:
        """Bytes currently buffered (the incomplete block)."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add ``chunk``; return all blocks it completed, in order."""
        if not chunk:
            return []
        buf = self._buf
        pos = self._pos
        buf += chunk
        if self._skip_lf:
            self._skip_lf = False
            if buf[pos] == _LF:
                pos += 1
        scan = max(self._scan, pos)
        size = len(buf)
        events: list[SSEEvent] = []
        start = 0  # start of the current block within buf
        while True:
            m = _EOL.search(buf, scan)
            if m is None:
                scan = size
                break
            eol = m.start()
            if buf[eol] == _CR:
                if eol + 1 == size:
                    end = size
                    self._skip_lf = True
                else:
                    end = eol + 2 if buf[eol + 1] == _LF else eol + 1
            else:
                end = eol + 1
            if eol == pos:
                events.append(self._dispatch(bytes(buf[start:end])))
                start = end
            else:
                self._field(bytes(buf[pos:eol]))
            pos = scan = end
        if start:
            del buf[:start]
            pos -= start
            scan -= start
        self._pos = pos
        self._scan = scan
        if self._max > 0 and len(buf) > self._max:
            raise EventTooLarge(
                f"pending SSE event is {len(buf)} bytes, over the limit of {self._max}"
            )
        return events

    def flush(self) -> SSEEvent | None:
        """End of stream: return the trailing incomplete block (or None) and reset."""
        buf = self._buf
        event: SSEEvent | None = None
        if buf:
            if self._pos < len(buf):
                self._field(bytes(buf[self._pos :]))
            event = self._dispatch(bytes(buf))
        self._buf = bytearray()
        self._pos = self._scan = 0
        self._skip_lf = False
        return event

    def _field(self, line: bytes) -> None:
        if line[0] == 0x3A:  # ':' comment
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            if self._data is None:
                self._data = [value]
            else:
                self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id" and b"\x00" not in value:  # ids containing NUL are ignored
            self._id = value
        # retry and unknown fields: ignored (kept in raw)

    def _dispatch(self, raw: bytes) -> SSEEvent:
        data = None if self._data is None else b"\n".join(self._data)
        event = SSEEvent(raw, data, self._event, self._id)
        self._data = None
        self._event = None
        self._id = None
        return event


# --- usage scanning -------------------------------------------------------------------------

_WS: Final = rb"[ \t\r\n]*"


def _key(name: bytes) -> re.Pattern[bytes]:
    """``{`` or ``,``, JSON whitespace, ``"name"``, ws, ``:``, ws (match ends at the value)."""
    return re.compile(rb"[{,]" + _WS + b'"' + name + b'"' + _WS + b":" + _WS)


_USAGE_KEY: Final = _key(b"usage")
_COUNT_KEYS: Final = tuple(
    _key(k) for k in (b"prompt_tokens", b"completion_tokens", b"total_tokens", b"cached_tokens")
)
_EMPTY_CHOICES: Final = re.compile(_key(b"choices").pattern + rb"\[" + _WS + rb"\]")
_BRACE_OR_QUOTE: Final = re.compile(rb'[{}"]')
_STRING_REST: Final = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # after the open quote
_INT: Final = re.compile(rb"-?([0-9]+)")
# after the usage key: ``null``, ws, then ``}`` or (group 1) ``,`` and the ws after it
_NULL_THEN: Final = re.compile(b"null" + _WS + rb"(?:\}|(," + _WS + b"))")
_MAX_DIGITS: Final = 18


def _object_end(data: bytes, start: int) -> int:
    """Index of the ``}`` closing the object opened at ``data[start]``, or -1 if unterminated."""
    depth = 0
    pos = start
    while True:
        m = _BRACE_OR_QUOTE.search(data, pos)
        if m is None:
            return -1
        i = m.start()
        c = data[i]
        if c == 0x22:  # '"': skip the string, honouring backslash escapes
            s = _STRING_REST.match(data, i + 1)
            if s is None:
                return -1
            pos = s.end()
            continue
        if c == 0x7B:  # '{'
            depth += 1
        else:  # '}'
            depth -= 1
            if depth == 0:
                return i
        pos = i + 1


def _read_count(data: bytes, key: re.Pattern[bytes], lo: int, hi: int) -> int:
    m = key.search(data, lo, hi)
    if m is None:
        return 0
    n = _INT.match(data, m.end(), hi)
    if n is None or len(n.group(1)) > _MAX_DIGITS:
        return 0
    if n.end() < hi and data[n.end()] in b".eE":  # a float
        return 0
    return int(n.group(0))


def _last_usage_key(data: bytes) -> re.Match[bytes] | None:
    """The last ``"usage"`` key pattern in ``data`` (its match ends at the value), or None."""
    last = None
    for last in _USAGE_KEY.finditer(data):  # noqa: B007 - we want the last match
        pass
    return last


def _usage_at(data: bytes, lo: int) -> tuple[int, int, int, int] | None:
    """The counts of the usage value starting at ``data[lo]``; None unless a terminated object."""
    if lo >= len(data) or data[lo] != 0x7B:
        return None
    end = _object_end(data, lo)
    if end < 0:
        return None
    hi = end + 1
    p, c, t, k = (_read_count(data, key, lo, hi) for key in _COUNT_KEYS)
    return (p, c, t, k)


def extract_usage(data: bytes) -> tuple[int, int, int, int] | None:
    """``(prompt, completion, total, cached)`` tokens from the last ``"usage"`` key in ``data``.

    None when there is no such key or its value is not a terminated JSON object. A missing
    or non-integer count (null, float, string, more than 18 digits) reads 0.
    """
    key = _last_usage_key(data)
    return None if key is None else _usage_at(data, key.end())


def _null_usage_cut(data: bytes, key: re.Match[bytes]) -> tuple[int, int] | None:
    """The span of ``data`` to remove so that the member of ``key`` is gone, or None.

    Only when the value is the literal ``null`` followed by optional whitespace and ``}`` or
    ``,``. After a ``,`` the cut runs from that ``,`` through ``null``; as the first member
    (after ``{``) it runs from the quoted key through ``null``, plus the following ``,`` and
    the whitespace after it when a ``,`` follows.
    """
    m = _NULL_THEN.match(data, key.end())
    if m is None:
        return None
    null_end = key.end() + 4
    if data[key.start()] == 0x2C:  # ','
        return (key.start(), null_end)
    quote = data.index(b'"', key.start())
    return (quote, m.end() if m.group(1) else null_end)


def has_empty_choices(data: bytes) -> bool:
    """True iff a ``"choices"`` key has the empty array ``[]`` as its value."""
    return _EMPTY_CHOICES.search(data) is not None


# --- relay filter ---------------------------------------------------------------------------

_DONE: Final = b"[DONE]"
_EOLS_ONLY: Final = re.compile(rb"[\r\n]*")


def _single_data_line(raw: bytes, data: bytes) -> int:
    """Index of ``data`` in ``raw`` if the block is exactly one data line, else -1.

    That is ``data:``, an optional space, the data, then only line terminators (none or one
    when the block came from ``flush()``). A leading LF is allowed: it is the rest of the
    CRLF that ended the previous block, split off by a chunk boundary.
    """
    start = 1 if raw[:1] == b"\n" else 0
    if not raw.startswith(b"data:", start):
        return -1
    start += 5
    if raw[start : start + 1] == b" ":
        start += 1
    if not raw.startswith(data, start) or _EOLS_ONLY.fullmatch(raw, start + len(data)) is None:
        return -1
    return start


class StreamFilter:
    """Relay filter for OpenAI-shaped chat/completions streams (identity relay).

    Forwards every block unchanged, records the last usage it saw and whether ``[DONE]``
    arrived. With ``drop_usage_only`` it undoes the ``stream_options.include_usage`` that the
    gateway asked for on the client's behalf: it removes the usage-only chunk (empty
    ``choices``), and the ``"usage":null`` member that the upstream then adds to every other
    chunk. That member is the last ``"usage"`` key of the data when its value is ``null``; it
    is cut only from blocks that are a single data line (see ``_single_data_line``), other
    blocks are forwarded unchanged.
    """

    __slots__ = ("_done", "_drop", "_dropped", "_events", "_parser", "_usage")

    def __init__(self, drop_usage_only: bool = False, max_event_bytes: int = 0) -> None:
        self._parser = SSEParser(max_event_bytes)
        self._drop = drop_usage_only
        self._usage: tuple[int, int, int, int] | None = None
        self._done = False
        self._events = 0
        self._dropped = 0

    @property
    def usage(self) -> tuple[int, int, int, int] | None:
        """The last usage seen, as ``(prompt, completion, total, cached)``."""
        return self._usage

    @property
    def done(self) -> bool:
        """A ``data: [DONE]`` event was seen."""
        return self._done

    @property
    def events(self) -> int:
        """Number of blocks with data seen (dropped ones included)."""
        return self._events

    @property
    def dropped(self) -> int:
        """Number of blocks removed from the relayed stream."""
        return self._dropped

    def feed(self, chunk: bytes) -> bytes:
        """Bytes of the blocks completed by ``chunk`` that are to be forwarded."""
        return b"".join([self._relay(ev) for ev in self._parser.feed(chunk)])

    def flush(self) -> bytes:
        """End of stream: the trailing incomplete block, filtered like any other."""
        ev = self._parser.flush()
        return b"" if ev is None else self._relay(ev)

    def _relay(self, ev: SSEEvent) -> bytes:
        """The bytes to forward for ``ev``: its raw, its raw less ``"usage":null``, or none."""
        data = ev.data
        if data is None:
            return ev.raw
        self._events += 1
        if data == _DONE:
            self._done = True
            return ev.raw
        if b'"usage"' not in data:
            return ev.raw
        key = _last_usage_key(data)
        if key is None:
            return ev.raw
        usage = _usage_at(data, key.end())
        if usage is not None:
            self._usage = usage
            if self._drop and has_empty_choices(data):
                self._dropped += 1
                return b""
        elif self._drop:
            cut = _null_usage_cut(data, key)
            if cut is not None:
                at = _single_data_line(ev.raw, data)
                if at >= 0:
                    return ev.raw[: at + cut[0]] + ev.raw[at + cut[1] :]
        return ev.raw
