"""Prompt token estimation: the pure-Python reference twin.

``_tokens_c.pyx`` is the compiled twin with the same public API and the same integers for
every input (it reads its constants from this module); callers import
``fastgw._core.tokens``, which picks one of the two.

Why estimate at all: the gateway needs a token count *before* a provider answers (to reserve
tokens-per-minute budget and to check a request against the model's context window) and
*after* a stream that ended without a usage block (to bill the text it delivered). A real BPE
tokenizer costs more than the rest of a proxied request; this estimator is one linear pass.

The model follows how cl100k_base splits text before its BPE merges, and charges each piece
the average cost measured against tiktoken (see docs/tokens.md). All arithmetic is in
integer thousandths of a token ("milli-tokens"), so that both twins agree exactly:

* Code points fall into classes: ASCII letters, digits, spaces (space, tab), newlines (CR,
  LF), ASCII punctuation, ASCII controls, and the non-ASCII classes of :data:`_RANGES`.
* A run of ASCII letters (cut every 64 letters) costs ``_BARE[length]``, plus
  ``_SPACED[length]`` (a credit) when a space precedes it: cl100k folds the space into the
  word, and `` word`` pieces are more often whole tokens.
* A run of digits costs one token per group of three, exactly as cl100k splits them.
* A run of ASCII punctuation costs a base charge plus one per character after the third;
  a character there that repeats its predecessor gets most of that back (``=====`` is one
  token, ``");}`` is not). A lone punctuation character before a letter is glued to the
  word by cl100k and gets a credit, larger for the pairs that merge well (``.name``).
* Whitespace: a single space before a letter or punctuation is free (it rides on the next
  piece). A run that holds a newline costs one token, unless it follows punctuation and is
  only newlines then spaces (cl100k folds those newlines into the punctuation). Two or more
  spaces or tabs before a non-space cost one (indentation); a space or tab right before a
  digit costs one; whitespace that ends the text costs one (unless it is only newlines
  after punctuation).
* Every other code point costs a per-class charge (CJK ideographs, kana, hangul, emoji...).

A non-empty string always costs at least one token. Bytes are decoded as UTF-8 with
``surrogateescape``: each byte that is not part of a well-formed sequence counts as one
code point of the ``_INVALID`` class (as do lone surrogates in a ``str``).

JSON bodies are scanned, not parsed: each string literal is either a key (followed by
optional whitespace and ``:``) or a value. Escapes are decoded (``\\uXXXX`` pairs combine
into one code point; an unknown escape ``\\x`` stands for ``x``; an unterminated string runs
to the end, less a final lone backslash), and malformed input never raises: the scan just
counts what it sees.

In ``estimate_json`` (not in ``estimate_json_fields``, nor the text functions) a string value
that is a binary payload costs a flat :data:`BLOB_TOKENS` instead of its characters: a
``data:`` URI (it starts with ``data:`` and holds ``;base64,`` within its first 128
characters) or a raw base64 string (at least 512 characters, all of the base64 alphabet,
standard or URL-safe, with ``=`` padding, no whitespace, no escape other than ``\\/``),
judged on the decoded characters. An image, audio clip or PDF sent inline is billed by the
provider for what it holds (pixels, seconds, pages), not as the text of its encoding (see
docs/tokens.md).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["estimate_json", "estimate_json_fields", "estimate_text", "estimate_utf8"]

# --- non-ASCII character classes --------------------------------------------------------------

_LATIN: Final = 0  # Latin-1 letters, Latin Extended-A/B: accents inside mostly-ASCII words
_CYRILLIC: Final = 1
_ALPHA2: Final = 2  # other two-byte scripts: IPA, Greek, Armenian, Hebrew, Arabic, ...
_ALPHA3: Final = 3  # three-byte alphabets and abugidas: Indic, Thai, Georgian, Ethiopic, ...
_HAN: Final = 4  # CJK ideographs, radicals, compatibility forms
_KANA: Final = 5
_HANGUL: Final = 6
_SYM1: Final = 7  # symbols of one token each: Latin-1 symbols and spaces (NBSP © ° ×), ★ ☆
_GPUNCT: Final = 8  # general punctuation: dashes, quotes, bullets, ellipsis
_SYM3: Final = 9  # arrows, math, currency, letterlike, box drawing
_DINGBAT: Final = 10  # misc technical, misc symbols, dingbats (☀ ✅ ❤ ⏰)
_CJKPUNCT: Final = 11  # CJK punctuation, fullwidth forms
_EMOJI: Final = 12
_FACE: Final = 13  # emoticons block (U+1F600..1F64F): one token cheaper than other emoji
_VS: Final = 14  # variation selectors (the FE0F after many emoji)
_JOINER: Final = 15  # zero-width joiners and marks, combining marks for symbols, tag chars
_INVALID: Final = 16  # surrogate code points: undecodable bytes and lone surrogates
_OTHER3: Final = 17  # any other BMP code point (private use, rare blocks)
_OTHER4: Final = 18  # any other supplementary-plane code point
_NCLASSES: Final = 19

#: (first, last, class) for every code point from U+0080 to U+10FFFF, in order, no gaps. The
#: compiled twin's ``_class_of`` encodes the same table.
_RANGES: Final[tuple[tuple[int, int, int], ...]] = (
    (0x80, 0xBF, _SYM1),
    (0xC0, 0xD6, _LATIN),
    (0xD7, 0xD7, _SYM1),
    (0xD8, 0xF6, _LATIN),
    (0xF7, 0xF7, _SYM1),
    (0xF8, 0x24F, _LATIN),
    (0x250, 0x3FF, _ALPHA2),
    (0x400, 0x52F, _CYRILLIC),
    (0x530, 0x7FF, _ALPHA2),
    (0x800, 0x10FF, _ALPHA3),
    (0x1100, 0x11FF, _HANGUL),
    (0x1200, 0x1FFF, _ALPHA3),
    (0x2000, 0x200A, _GPUNCT),
    (0x200B, 0x200F, _JOINER),
    (0x2010, 0x206F, _GPUNCT),
    (0x2070, 0x20CF, _SYM3),
    (0x20D0, 0x20FF, _JOINER),
    (0x2100, 0x22FF, _SYM3),
    (0x2300, 0x23FF, _DINGBAT),
    (0x2400, 0x25FF, _SYM3),
    (0x2600, 0x2604, _DINGBAT),
    (0x2605, 0x2606, _SYM1),
    (0x2607, 0x27BF, _DINGBAT),
    (0x27C0, 0x2AFF, _SYM3),
    (0x2B00, 0x2BFF, _DINGBAT),
    (0x2C00, 0x2E7F, _ALPHA3),
    (0x2E80, 0x2FFF, _HAN),
    (0x3000, 0x303F, _CJKPUNCT),
    (0x3040, 0x30FF, _KANA),
    (0x3100, 0x312F, _HAN),
    (0x3130, 0x318F, _HANGUL),
    (0x3190, 0x31EF, _HAN),
    (0x31F0, 0x31FF, _KANA),
    (0x3200, 0x9FFF, _HAN),
    (0xA000, 0xABFF, _ALPHA3),
    (0xAC00, 0xD7FF, _HANGUL),
    (0xD800, 0xDFFF, _INVALID),
    (0xE000, 0xF8FF, _OTHER3),
    (0xF900, 0xFAFF, _HAN),
    (0xFB00, 0xFDFF, _ALPHA3),
    (0xFE00, 0xFE0F, _VS),
    (0xFE10, 0xFE6F, _CJKPUNCT),
    (0xFE70, 0xFEFF, _ALPHA3),
    (0xFF00, 0xFFEF, _CJKPUNCT),
    (0xFFF0, 0xFFFF, _SYM3),
    (0x10000, 0x1EFFF, _OTHER4),
    (0x1F000, 0x1F5FF, _EMOJI),
    (0x1F600, 0x1F64F, _FACE),
    (0x1F650, 0x1FAFF, _EMOJI),
    (0x1FB00, 0x1FFFF, _OTHER4),
    (0x20000, 0x3FFFF, _HAN),
    (0x40000, 0xDFFFF, _OTHER4),
    (0xE0000, 0xE007F, _JOINER),
    (0xE0080, 0x10FFFF, _OTHER4),
)

#: milli-tokens per code point of each non-ASCII class (index: class)
_CLASS_MILLI: Final[tuple[int, ...]] = (
    1500,  # _LATIN
    500,  # _CYRILLIC
    1000,  # _ALPHA2
    1000,  # _ALPHA3
    1340,  # _HAN
    950,  # _KANA
    1440,  # _HANGUL
    1000,  # _SYM1
    1000,  # _GPUNCT
    1500,  # _SYM3
    2200,  # _DINGBAT
    1000,  # _CJKPUNCT
    2900,  # _EMOJI
    2200,  # _FACE
    1000,  # _VS
    2000,  # _JOINER
    1000,  # _INVALID
    2500,  # _OTHER3
    3500,  # _OTHER4
)

# --- ASCII features: milli-tokens per match of each pattern ------------------------------------

_MILLI_DIGITS: Final = 1000  # a group of up to three digits
_MILLI_PUNCT_RUN: Final = 1060  # a run of punctuation
_MILLI_PUNCT_4: Final = 650  # each character of a punctuation run after its third
_MILLI_PUNCT_REPEAT: Final = -640  # ... that repeats the one before it (``=====``)
#: a lone punctuation character right before a letter (cl100k glues it to the word), by
#: how well the pair merges: ``.name``, ``_name``, ``(self`` do; ``/path``, ``#tag`` hardly
_GLUE_TIGHT: Final = "._(*'&"
_GLUE_LOOSE: Final = "-,=[:\\<>"
_GLUE_OTHER: Final = '!"#$%)+/;?@]^`{|}~'
_MILLI_GLUED_TIGHT: Final = -1000
_MILLI_GLUED_LOOSE: Final = -730
_MILLI_GLUED_OTHER: Final = -150
_MILLI_NEWLINES: Final = 1000  # a whitespace run that holds a newline
_MILLI_NEWLINES_PUNCT: Final = -1000  # ... is only newlines then spaces, after punctuation
_MILLI_SPACES: Final = 1000  # two or more spaces or tabs before a non-space
_MILLI_SPACE_DIGIT: Final = 1000  # a space or tab right before a digit
_MILLI_TRAILING: Final = 1000  # whitespace at the very end (unless newlines after punct.)
_MILLI_CONTROL: Final = 1000  # an ASCII control character other than tab, CR, LF

#: letter-run cost by length (0..64): the averages measured up to 15 letters, then linear
_BARE_HEAD: Final = (
    *(0, 1000, 1020, 1060, 1090, 1250, 1150, 1280, 1450, 1620),  # 0..9 letters
    *(1900, 1900, 2300, 2250, 2400, 3000),  # 10..15
)
_BARE_TAIL: Final = (200, 0)  # milli = 200 * length + 0 from 16 letters on
_SPACED_HEAD: Final = (
    *(0, 1000, 1000, 1010, 1030, 1080, 1060, 1140, 1170, 1240),  # 0..9 letters
    *(1250, 1330, 1350, 1420, 1600, 1900),  # 10..15
)
_SPACED_TAIL: Final = (220, -1200)
_RUN_MAX: Final = 64


def _table(head: tuple[int, ...], tail: tuple[int, int]) -> tuple[int, ...]:
    slope, intercept = tail
    return head + tuple(slope * n + intercept for n in range(len(head), _RUN_MAX + 1))


_BARE: Final = _table(_BARE_HEAD, _BARE_TAIL)
#: what a space before the run changes (cl100k's " word" tokens merge better)
_SPACED: Final = tuple(
    s - b for s, b in zip(_table(_SPACED_HEAD, _SPACED_TAIL), _BARE, strict=True)
)

#: tokens per object in a JSON body: the chat format's per-message framing
_OBJECT_TOKENS: Final = 3

#: tokens of one binary payload in a JSON body (an inline image, audio clip or file): a
#: large image, ~1.2 megapixels, at Anthropic's rate (pixels / 750), and more than the
#: largest high-detail image at OpenAI's (85 + 170 per 512-pixel tile, at most 8 tiles)
BLOB_TOKENS: Final = 1600
#: a ``data:`` URI is a blob when ``;base64,`` ends within its first 128 characters
_DATA_URI_PREFIX: Final = "data:"
_DATA_URI_MARK: Final = ";base64,"
_DATA_URI_WINDOW: Final = 128
#: a raw base64 string counts as a blob from this many characters on
_BLOB_MIN_CHARS: Final = 512
#: the base64 alphabets, standard (RFC 4648 section 4) and URL-safe (section 5), with padding
_BASE64_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_"

# --- patterns -----------------------------------------------------------------------------------

_P: Final = r"!-/:-@\[-`{-~"  # ASCII punctuation, as a regex class body
_PUNCT: Final = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_WS: Final = r" \t\r\n"


def _char_class(classes: Iterable[int]) -> str:
    wanted = set(classes)
    return "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi, k in _RANGES if k in wanted)


def _glued(chars: str) -> re.Pattern[str]:
    """A lone punctuation character (none before it) from ``chars`` right before a letter."""
    letters = "A-Za-z" + _char_class((_LATIN, _CYRILLIC, _ALPHA2, _ALPHA3, _HAN, _KANA, _HANGUL))
    return re.compile(f"[{re.escape(chars)}](?<![{_P}].)(?=[{letters}])")


# Each pattern starts with a character class so that the regex engine can skip ahead fast.
_LETTER_RUN: Final = re.compile(r"[A-Za-z]{1,64}")
_SPACED_RUN: Final = re.compile(r" ([A-Za-z]{1,64})")
_PUNCT_RUN: Final = re.compile(f"[{_P}]+")
_LONG_PUNCT_RUN: Final = re.compile(f"[{_P}]{{4,}}")
_COUNTED: Final[tuple[tuple[re.Pattern[str], int], ...]] = (
    (re.compile(r"[0-9]{1,3}"), _MILLI_DIGITS),
    (_glued(_GLUE_TIGHT), _MILLI_GLUED_TIGHT),
    (_glued(_GLUE_LOOSE), _MILLI_GLUED_LOOSE),
    (_glued(_GLUE_OTHER), _MILLI_GLUED_OTHER),
    # the first newline of each whitespace run that does not end the text
    (re.compile(f"[\\r\\n][{_WS}]*(?=[^{_WS}])"), _MILLI_NEWLINES),
    (re.compile(f"[{_P}][\\r\\n]+[ \\t]*(?=[^{_WS}])"), _MILLI_NEWLINES_PUNCT),
    (re.compile(f"[ \\t]{{2,}}(?=[^{_WS}])"), _MILLI_SPACES),
    (re.compile(r"[ \t](?=[0-9])"), _MILLI_SPACE_DIGIT),
    (re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"), _MILLI_CONTROL),
)
_CLASS_PATTERNS: Final[tuple[tuple[re.Pattern[str], int], ...]] = tuple(
    (re.compile(f"[{_char_class((k,))}]"), _CLASS_MILLI[k]) for k in range(_NCLASSES)
)


def _milli(text: str) -> int:
    """Estimated cost of one non-empty string in milli-tokens (may be <= 0 for odd input)."""
    milli = sum(map(_BARE.__getitem__, map(len, _LETTER_RUN.findall(text))))
    milli += sum(map(_SPACED.__getitem__, map(len, _SPACED_RUN.findall(text))))
    milli += _MILLI_PUNCT_RUN * len(_PUNCT_RUN.findall(text))
    for run in _LONG_PUNCT_RUN.findall(text):
        milli += _MILLI_PUNCT_4 * (len(run) - 3)
        milli += _MILLI_PUNCT_REPEAT * sum(a == b for a, b in itertools.pairwise(run[2:]))
    for pattern, weight in _COUNTED:
        milli += weight * len(pattern.findall(text))
    if not text.isascii():
        for pattern, weight in _CLASS_PATTERNS:
            milli += weight * len(pattern.findall(text))
    if text[-1] in " \t\r\n":
        kept = text.rstrip("\r\n")
        if kept == text or not kept or kept[-1] not in _PUNCT:
            milli += _MILLI_TRAILING
    return milli


def _tokens(milli: int) -> int:
    """Round a non-empty string's milli-tokens to whole tokens, at least one."""
    return max(1, (milli + 500) // 1000)


def estimate_text(text: str) -> int:
    """Estimated cl100k_base token count of ``text``."""
    return _tokens(_milli(text)) if text else 0


def estimate_utf8(data: bytes) -> int:
    """Estimated token count of UTF-8 ``data``; invalid bytes count one each, never raise."""
    return estimate_text(data.decode("utf-8", "surrogateescape"))


# --- JSON ---------------------------------------------------------------------------------------

#: a string literal (to its closing quote, or to the end when unterminated; a final lone
#: backslash is dropped) with the ``:`` that makes it a key and the whitespace around it; or
#: an object opening outside any string
_JSON_TOKEN: Final = re.compile(
    r'"([^"\\]*(?:\\.[^"\\]*)*)(?:"([ \t\n\r]*:[ \t\n\r]*)?|\\?\Z)|\{', re.DOTALL
)
_ESCAPE: Final = re.compile(
    r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
    r"|\\u([0-9a-fA-F]{4})|\\(.)",
    re.DOTALL,
)
_SIMPLE_ESCAPES: Final = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape_one(m: re.Match[str]) -> str:
    high, low, single, other = m.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    if single is not None:
        return chr(int(single, 16))
    return _SIMPLE_ESCAPES.get(other, other)


def _unescape(content: str) -> str:
    return _ESCAPE.sub(_unescape_one, content) if "\\" in content else content


_BASE64: Final = re.compile(f"[{re.escape(_BASE64_ALPHABET)}]*")
_NOT_SLASH_ESCAPE: Final = re.compile(r"\\[^/]", re.DOTALL)  # any escape but ``\/``


def _is_blob(content: str, text: str) -> bool:
    """Whether a string value (``content`` as written, ``text`` decoded) is a binary
    payload: a base64 ``data:`` URI or a long raw base64 string."""
    if text.startswith(_DATA_URI_PREFIX) and _DATA_URI_MARK in text[:_DATA_URI_WINDOW]:
        return True
    return (
        len(text) >= _BLOB_MIN_CHARS
        and _BASE64.fullmatch(text) is not None
        and _NOT_SLASH_ESCAPE.search(content) is None
    )


def estimate_json(raw: bytes) -> int:
    """Estimated prompt tokens of a JSON request body: every string value (keys skipped),
    plus 3 per object, which matches the chat format's per-message framing; a base64
    payload (``data:`` URI, or 512+ characters of base64) costs ``BLOB_TOKENS``."""
    total = 0
    for m in _JSON_TOKEN.finditer(raw.decode("utf-8", "surrogateescape")):
        content = m.group(1)
        if content is None:
            total += _OBJECT_TOKENS
        elif m.group(2) is None and content:
            text = _unescape(content)
            total += BLOB_TOKENS if _is_blob(content, text) else estimate_text(text)
    return total


def estimate_json_fields(raw: bytes, fields: tuple[bytes, ...]) -> int:
    """Estimated tokens of the string values whose key is one of ``fields`` (raw key bytes,
    compared before unescaping) and that follow the key's ``:`` directly. Every such value
    counts as text, base64 or not: the fields named carry text (a model's output)."""
    wanted = {f.decode("utf-8", "surrogateescape") for f in fields}
    total = 0
    value_at = -1  # where the value of a wanted key must start
    for m in _JSON_TOKEN.finditer(raw.decode("utf-8", "surrogateescape")):
        content = m.group(1)
        if content is None:
            continue
        if m.group(2) is not None:
            value_at = m.end() if content in wanted else -1
        elif m.start() == value_at and content:
            total += estimate_text(_unescape(content))
    return total
