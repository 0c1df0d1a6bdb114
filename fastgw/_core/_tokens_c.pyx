# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Prompt token estimation: the compiled twin.

Same public API and the same integers as ``_tokens_py`` (the reference; its docstring holds
the rules). The calibrated constants and the character-class table are read from
``_tokens_py`` at import, so the calibration lives in one place; this module only runs the
rules as one pass of a small state machine over code points: from a ``str`` directly, from
UTF-8 bytes through an inline decoder, and from JSON string literals with their escapes
decoded on the fly. Nothing is allocated per character or per string. The blob rule of
``estimate_json`` (a base64 ``data:`` URI or raw base64 string costs a flat ``BLOB_TOKENS``) is
decided before a string is fed: a ``data:`` URI from its first characters, a raw base64 string
by a table scan of its leading run of base64 bytes (for text it ends at the first space or
punctuation, and only that run is read twice); a blob is then skipped, not fed.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memchr, memcmp

from fastgw._core import _tokens_py as _ref

__all__ = ["estimate_json", "estimate_json_fields", "estimate_text", "estimate_utf8"]


ctypedef unsigned int ucs4  # a code point (Cython's Py_UCS4 would coerce to str)


# classes: ASCII ones here, then the non-ASCII classes of _tokens_py._RANGES at _NONASCII + k
cdef enum:
    _LETTER = 0
    _DIGIT = 1
    _SPACE = 2    # space, tab
    _NEWLINE = 3  # CR, LF
    _PUNCT = 4
    _CONTROL = 5
    _NONASCII = 6
    _NLETTER_CLASSES = 7  # non-ASCII classes 0..6 are letters (_LATIN .. _HANGUL)
    _RUN_MAX = 64
    _MAX_FIELDS = 16  # field names held on the stack
    _MAX_RANGES = 32  # room for classes and for ranges above the BMP
    _MAX_URI = 16     # room for the data: URI prefix and mark

cdef unsigned char _ASCII[128]
cdef signed char _GLUE[128]        # glue group of a punctuation character (0, 1, 2)
cdef unsigned char _BMP[65536]     # class of every BMP code point
cdef ucs4 _ASTRAL_HI[_MAX_RANGES]  # ranges above the BMP: last code point of each
cdef unsigned char _ASTRAL_CLASS[_MAX_RANGES]
cdef int _n_astral = 0
cdef long long _CLASS_MILLI[_MAX_RANGES]
cdef long long _BARE[_RUN_MAX + 1]
cdef long long _SPACED[_RUN_MAX + 1]
cdef long long _GLUE_MILLI[3]
cdef long long _M_DIGITS = _ref._MILLI_DIGITS
cdef long long _M_PUNCT_RUN = _ref._MILLI_PUNCT_RUN
cdef long long _M_PUNCT_4 = _ref._MILLI_PUNCT_4
cdef long long _M_PUNCT_REPEAT = _ref._MILLI_PUNCT_REPEAT
cdef long long _M_NEWLINES = _ref._MILLI_NEWLINES
cdef long long _M_NEWLINES_PUNCT = _ref._MILLI_NEWLINES_PUNCT
cdef long long _M_SPACES = _ref._MILLI_SPACES
cdef long long _M_SPACE_DIGIT = _ref._MILLI_SPACE_DIGIT
cdef long long _M_TRAILING = _ref._MILLI_TRAILING
cdef long long _M_CONTROL = _ref._MILLI_CONTROL
cdef Py_ssize_t _OBJECT_TOKENS = _ref._OBJECT_TOKENS
cdef Py_ssize_t _BLOB_TOKENS = _ref.BLOB_TOKENS
cdef Py_ssize_t _BLOB_MIN = _ref._BLOB_MIN_CHARS
cdef Py_ssize_t _URI_WINDOW = _ref._DATA_URI_WINDOW
cdef unsigned char _B64[256]       # 1 for the bytes of the base64 alphabets
cdef ucs4 _URI_PREFIX[_MAX_URI]    # "data:"
cdef ucs4 _URI_MARK[_MAX_URI]      # ";base64,"
cdef int _uri_prefix_len = 0
cdef int _uri_mark_len = 0


cdef void _init_tables() except *:
    global _n_astral
    cdef int c, i
    cdef ucs4 lo, hi, cp
    astral = sum(lo >= 0x10000 for lo, _, _ in _ref._RANGES)
    if len(_ref._CLASS_MILLI) > _MAX_RANGES or astral > _MAX_RANGES:
        raise RuntimeError("_tokens_py has more classes or ranges than _tokens_c has room for")
    for c in range(128):
        if 0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A:
            _ASCII[c] = _LETTER
        elif 0x30 <= c <= 0x39:
            _ASCII[c] = _DIGIT
        elif c == 0x20 or c == 0x09:
            _ASCII[c] = _SPACE
        elif c == 0x0A or c == 0x0D:
            _ASCII[c] = _NEWLINE
        elif c < 0x20 or c == 0x7F:
            _ASCII[c] = _CONTROL
        else:
            _ASCII[c] = _PUNCT
        _GLUE[c] = -1
    for i, chars in enumerate((_ref._GLUE_TIGHT, _ref._GLUE_LOOSE, _ref._GLUE_OTHER)):
        for ch in chars:
            _GLUE[ord(ch)] = i
    _GLUE_MILLI[0] = _ref._MILLI_GLUED_TIGHT
    _GLUE_MILLI[1] = _ref._MILLI_GLUED_LOOSE
    _GLUE_MILLI[2] = _ref._MILLI_GLUED_OTHER
    for c in range(128):
        _BMP[c] = _ASCII[c]
    for lo, hi, k in _ref._RANGES:
        if lo < 0x10000:
            for cp in range(lo, hi + 1):
                _BMP[cp] = _NONASCII + k
        else:
            _ASTRAL_HI[_n_astral] = hi
            _ASTRAL_CLASS[_n_astral] = _NONASCII + k
            _n_astral += 1
    for i, milli in enumerate(_ref._CLASS_MILLI):
        _CLASS_MILLI[i] = milli
    for i in range(_RUN_MAX + 1):
        _BARE[i] = _ref._BARE[i]
        _SPACED[i] = _ref._SPACED[i]


_init_tables()


cdef inline int _class_of(ucs4 cp) noexcept nogil:
    cdef int i
    if cp < 0x10000:
        return _BMP[cp]
    for i in range(_n_astral - 1):
        if cp <= _ASTRAL_HI[i]:
            return _ASTRAL_CLASS[i]
    return _ASTRAL_CLASS[_n_astral - 1]  # _RANGES ends at U+10FFFF


# --- the estimator state machine ------------------------------------------------------------

cdef struct _Est:
    long long milli
    Py_ssize_t count      # code points fed
    int prev              # class of the previous code point, -1 before the first
    ucs4 prev_cp
    int letters           # length of the open letter chunk
    bint spaced           # the open letter chunk follows a space
    int digits            # length of the open digit run
    int puncts            # length of the open punctuation run
    int glue              # glue group of a lone punctuation char awaiting the next, or -1
    bint ws_newline       # the open whitespace run holds a newline
    bint ws_after_punct   # ... follows punctuation
    bint ws_nl_spaces     # ... is of the form newlines then spaces so far
    bint ws_only_nl       # ... holds only newlines so far
    int ws_tail           # spaces/tabs since the run's start or its last newline


cdef inline void _est_init(_Est* e) noexcept nogil:
    e.milli = 0
    e.count = 0
    e.prev = -1
    e.prev_cp = 0
    e.letters = 0
    e.spaced = False
    e.digits = 0
    e.puncts = 0
    e.glue = -1
    e.ws_newline = False
    e.ws_after_punct = False
    e.ws_nl_spaces = False
    e.ws_only_nl = False
    e.ws_tail = 0


cdef inline bint _is_ws(int k) noexcept nogil:
    return k == _SPACE or k == _NEWLINE


cdef inline void _est_feed(_Est* e, ucs4 cp) noexcept nogil:
    cdef int k = _class_of(cp)
    cdef int prev = e.prev
    if k == _LETTER and prev == _LETTER and e.letters < _RUN_MAX:  # the most common case
        e.letters += 1
        e.prev_cp = cp
        e.count += 1
        return
    if prev == _LETTER and k != _LETTER:
        e.milli += _BARE[e.letters] + (_SPACED[e.letters] if e.spaced else 0)
    elif (prev == _SPACE or prev == _NEWLINE) and not _is_ws(k):
        if e.ws_newline:
            e.milli += _M_NEWLINES
        if e.ws_after_punct and e.ws_nl_spaces:
            e.milli += _M_NEWLINES_PUNCT
        if e.ws_tail >= 2:
            e.milli += _M_SPACES
    if e.glue >= 0:
        if k == _LETTER or _NONASCII <= k < _NONASCII + _NLETTER_CLASSES:
            e.milli += _GLUE_MILLI[e.glue]
        e.glue = -1
    if k == _LETTER:
        if prev == _LETTER:  # a full chunk (see above): cut, the next one follows a letter
            e.milli += _BARE[_RUN_MAX] + (_SPACED[_RUN_MAX] if e.spaced else 0)
            e.spaced = False
        else:
            e.spaced = e.prev_cp == 0x20
        e.letters = 1
    elif k == _DIGIT:
        e.digits = e.digits + 1 if prev == _DIGIT else 1
        if e.digits % 3 == 1:
            e.milli += _M_DIGITS
        if prev == _SPACE:
            e.milli += _M_SPACE_DIGIT
    elif k == _PUNCT:
        if prev == _PUNCT:
            e.puncts += 1
            if e.puncts >= 4:
                e.milli += _M_PUNCT_4
                if cp == e.prev_cp:
                    e.milli += _M_PUNCT_REPEAT
        else:
            e.puncts = 1
            e.milli += _M_PUNCT_RUN
            e.glue = _GLUE[cp]
    elif k == _SPACE or k == _NEWLINE:
        if prev != _SPACE and prev != _NEWLINE:
            e.ws_newline = False
            e.ws_after_punct = prev == _PUNCT
            e.ws_nl_spaces = k == _NEWLINE
            e.ws_only_nl = True
            e.ws_tail = 0
        if k == _NEWLINE:
            if e.ws_tail:
                e.ws_nl_spaces = False
            e.ws_newline = True
            e.ws_tail = 0
        else:
            e.ws_tail += 1
            e.ws_only_nl = False
    elif k == _CONTROL:
        e.milli += _M_CONTROL
    else:
        e.milli += _CLASS_MILLI[k - _NONASCII]
    e.prev = k
    e.prev_cp = cp
    e.count += 1


cdef inline Py_ssize_t _est_tokens(_Est* e) noexcept nogil:
    """Close the open runs and round (the reference's ``_tokens``); 0 for no input."""
    cdef long long milli = e.milli
    if e.count == 0:
        return 0
    if e.prev == _LETTER:
        milli += _BARE[e.letters] + (_SPACED[e.letters] if e.spaced else 0)
    elif e.prev == _SPACE or e.prev == _NEWLINE:
        if not (e.ws_after_punct and e.ws_only_nl):
            milli += _M_TRAILING
    if milli < 500:
        return 1
    return <Py_ssize_t>((milli + 500) // 1000)


# --- UTF-8 ---------------------------------------------------------------------------------

cdef inline Py_ssize_t _decode(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, ucs4* out
) noexcept nogil:
    """Decode the code point at p[i] (i < n) into out; return its length in bytes. A byte that
    does not start a well-formed sequence decodes alone to U+DC00 + byte, as Python's
    ``surrogateescape`` does."""
    cdef unsigned char b0 = p[i]
    cdef unsigned char b1, lo = 0x80, hi = 0xBF
    cdef Py_ssize_t size
    cdef ucs4 cp
    if b0 < 0x80:
        out[0] = b0
        return 1
    if 0xC2 <= b0 <= 0xDF:
        size = 2
        cp = b0 & 0x1F
    elif 0xE0 <= b0 <= 0xEF:
        size = 3
        cp = b0 & 0x0F
        if b0 == 0xE0:
            lo = 0xA0
        elif b0 == 0xED:
            hi = 0x9F
    elif 0xF0 <= b0 <= 0xF4:
        size = 4
        cp = b0 & 0x07
        if b0 == 0xF0:
            lo = 0x90
        elif b0 == 0xF4:
            hi = 0x8F
    else:
        out[0] = 0xDC00 + b0
        return 1
    if i + size > n:
        out[0] = 0xDC00 + b0
        return 1
    b1 = p[i + 1]
    if b1 < lo or b1 > hi:
        out[0] = 0xDC00 + b0
        return 1
    cp = (cp << 6) | (b1 & 0x3F)
    if size >= 3:
        if p[i + 2] & 0xC0 != 0x80:
            out[0] = 0xDC00 + b0
            return 1
        cp = (cp << 6) | (p[i + 2] & 0x3F)
    if size == 4:
        if p[i + 3] & 0xC0 != 0x80:
            out[0] = 0xDC00 + b0
            return 1
        cp = (cp << 6) | (p[i + 3] & 0x3F)
    out[0] = cp
    return size


cdef Py_ssize_t _estimate_bytes(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef _Est e
    cdef Py_ssize_t i = 0
    cdef ucs4 cp
    _est_init(&e)
    while i < n:
        if p[i] < 0x80:
            _est_feed(&e, p[i])
            i += 1
        else:
            i += _decode(p, n, i, &cp)
            _est_feed(&e, cp)
    return _est_tokens(&e)


def estimate_text(str text):
    """Estimated cl100k_base token count of ``text``."""
    cdef Py_UCS4 ch  # Cython turns this loop into direct reads of the string's storage
    cdef _Est e
    _est_init(&e)
    for ch in text:
        _est_feed(&e, ch)
    return _est_tokens(&e)


def estimate_utf8(bytes data):
    """Estimated token count of UTF-8 ``data``; invalid bytes count one each, never raise."""
    return _estimate_bytes(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


# --- JSON ----------------------------------------------------------------------------------

cdef inline bint _json_ws(unsigned char b) noexcept nogil:
    return b == 0x20 or b == 0x09 or b == 0x0A or b == 0x0D


cdef inline int _hex4(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """The value of the four hex digits at p[i:i+4], or -1."""
    cdef int v = 0
    cdef Py_ssize_t j
    cdef unsigned char c
    if i + 4 > n:
        return -1
    for j in range(i, i + 4):
        c = p[j]
        if 0x30 <= c <= 0x39:
            v = v * 16 + (c - 0x30)
        elif 0x61 <= c <= 0x66:
            v = v * 16 + (c - 0x57)
        elif 0x41 <= c <= 0x46:
            v = v * 16 + (c - 0x37)
        else:
            return -1
    return v


cdef inline ucs4 _escaped(unsigned char b) noexcept nogil:
    """The character that the ASCII escape ``\\b`` stands for."""
    if b == 0x62:
        return 0x08
    if b == 0x66:
        return 0x0C
    if b == 0x6E:
        return 0x0A
    if b == 0x72:
        return 0x0D
    if b == 0x74:
        return 0x09
    return b


cdef Py_ssize_t _string(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, _Est* e, bint* closed
) noexcept nogil:
    """Feed the string literal whose content starts at p[i] to e. Return the index just after
    its closing quote (closed[0] = True), or n when it is unterminated."""
    cdef unsigned char b
    cdef ucs4 cp
    cdef int v, low
    closed[0] = False
    while i < n:
        b = p[i]
        if b == 0x22:  # '"'
            closed[0] = True
            return i + 1
        if b == 0x5C:  # '\\'
            if i + 1 >= n:
                return n
            b = p[i + 1]
            if b == 0x75:  # 'u'
                v = _hex4(p, n, i + 2)
                if v >= 0:
                    i += 6
                    if 0xD800 <= v <= 0xDBFF and i + 1 < n and p[i] == 0x5C and p[i + 1] == 0x75:
                        low = _hex4(p, n, i + 2)
                        if 0xDC00 <= low <= 0xDFFF:
                            v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                            i += 6
                    _est_feed(e, v)
                    continue
            if b >= 0x80:  # an escaped non-ASCII character stands for itself
                i += 1
                continue
            _est_feed(e, _escaped(b))
            i += 2
        elif b < 0x80:
            _est_feed(e, b)
            i += 1
        else:
            i += _decode(p, n, i, &cp)
            _est_feed(e, cp)
    return n


cdef Py_ssize_t _skip_string(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, bint* closed
) noexcept nogil:
    """Where ``_string`` would end, without decoding: the first quote after p[i] that is not
    escaped, i.e. not preceded by an odd run of backslashes."""
    cdef const unsigned char* q
    cdef Py_ssize_t j, k
    while True:
        q = <const unsigned char*>memchr(p + i, 0x22, n - i)
        if q == NULL:
            closed[0] = False
            return n
        j = q - p
        k = j
        while k > i and p[k - 1] == 0x5C:
            k -= 1
        if (j - k) % 2 == 0:
            closed[0] = True
            return j + 1
        i = j + 1


cdef inline Py_ssize_t _key_colon(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i
) noexcept nogil:
    """If optional whitespace and ':' follow p[i], the index after the ':' and the whitespace
    after it (where the key's value starts); else -1."""
    while i < n and _json_ws(p[i]):
        i += 1
    if i >= n or p[i] != 0x3A:  # ':'
        return -1
    i += 1
    while i < n and _json_ws(p[i]):
        i += 1
    return i


def estimate_json(bytes raw):
    """Estimated prompt tokens of a JSON request body: every string value (keys skipped),
    plus 3 per object, which matches the chat format's per-message framing; a base64
    payload (``data:`` URI, or 512+ characters of base64) costs ``BLOB_TOKENS``."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef Py_ssize_t i = 0, end, total = 0
    cdef unsigned char b
    cdef bint closed, blob
    cdef _Est e
    while i < n:
        b = p[i]
        if b == 0x7B:  # '{'
            total += _OBJECT_TOKENS
            i += 1
        elif b == 0x22:
            _est_init(&e)
            end = _value(p, n, i + 1, &e, &closed, &blob)
            if not closed or _key_colon(p, n, end) < 0:
                total += _BLOB_TOKENS if blob else _est_tokens(&e)
            i = end
        else:
            i += 1
    return total


cdef Py_ssize_t _fields_total(
    const unsigned char* p, Py_ssize_t n,
    const char** names, const Py_ssize_t* sizes, Py_ssize_t nfields,
) noexcept nogil:
    cdef Py_ssize_t i = 0, f, end, colon, klen, total = 0, value_at = -1
    cdef const unsigned char* q
    cdef bint closed, wanted
    cdef _Est e
    while i < n:
        q = <const unsigned char*>memchr(p + i, 0x22, n - i)
        if q == NULL:
            break
        i = q - p
        if i == value_at:
            _est_init(&e)
            end = _string(p, n, i + 1, &e, &closed)
            colon = _key_colon(p, n, end) if closed else -1
            if colon < 0:
                total += _est_tokens(&e)
                i = end
                continue
        else:
            end = _skip_string(p, n, i + 1, &closed)
            colon = _key_colon(p, n, end) if closed else -1
        if colon >= 0:
            klen = end - i - 2
            wanted = False
            for f in range(nfields):
                if sizes[f] == klen and memcmp(names[f], p + i + 1, klen) == 0:
                    wanted = True
                    break
            value_at = colon if wanted else -1
        i = end
    return total


def estimate_json_fields(bytes raw, tuple fields):
    """Estimated tokens of the string values whose key is one of ``fields`` (raw key bytes,
    compared before unescaping) and that follow the key's ``:`` directly. Every such value
    counts as text, base64 or not: the fields named carry text (a model's output)."""
    cdef const char* names_buf[_MAX_FIELDS]
    cdef Py_ssize_t sizes_buf[_MAX_FIELDS]
    cdef const char** names = names_buf
    cdef Py_ssize_t* sizes = sizes_buf
    cdef Py_ssize_t nfields = len(fields), f
    cdef bytes field
    if nfields > _MAX_FIELDS:  # rare: more names than the stack arrays hold
        names = <const char**>PyMem_Malloc(nfields * sizeof(char*))
        sizes = <Py_ssize_t*>PyMem_Malloc(nfields * sizeof(Py_ssize_t))
        if names == NULL or sizes == NULL:
            PyMem_Free(names)
            PyMem_Free(sizes)
            raise MemoryError()
    try:
        for f in range(nfields):
            field = fields[f]
            names[f] = PyBytes_AS_STRING(field)
            sizes[f] = PyBytes_GET_SIZE(field)
        return _fields_total(
            <const unsigned char*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw),
            names, sizes, nfields,
        )
    finally:
        if names != names_buf:
            PyMem_Free(names)
            PyMem_Free(sizes)


# --- blobs in estimate_json --------------------------------------------------------------
# Last in the module, so that adding them left the machine code of the functions above where
# it was: the hot loop of _string runs up to 20 % slower or faster with its alignment alone.

cdef bint _data_uri(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """Whether the literal whose content starts at p[i] is a base64 ``data:`` URI: its code
    points, decoded as ``_string`` does, start with the prefix and hold the mark within the
    first ``_URI_WINDOW``."""
    cdef unsigned char b
    cdef ucs4 cp
    cdef int v, low, mark = 0
    cdef Py_ssize_t k = 0  # code points decoded
    while i < n and k < _URI_WINDOW:
        b = p[i]
        if b == 0x22:  # '"'
            return False
        if b == 0x5C:  # '\\'
            if i + 1 >= n:
                return False
            b = p[i + 1]
            v = _hex4(p, n, i + 2) if b == 0x75 else -1
            if v >= 0:
                i += 6
                if 0xD800 <= v <= 0xDBFF and i + 1 < n and p[i] == 0x5C and p[i + 1] == 0x75:
                    low = _hex4(p, n, i + 2)
                    if 0xDC00 <= low <= 0xDFFF:
                        v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                cp = v
            elif b >= 0x80:  # an escaped non-ASCII character stands for itself
                i += 1
                continue
            else:
                cp = _escaped(b)
                i += 2
        elif b < 0x80:
            cp = b
            i += 1
        else:
            i += _decode(p, n, i, &cp)
        k += 1
        if k <= _uri_prefix_len:
            if cp != _URI_PREFIX[k - 1]:
                return False
        else:
            # the mark's first character occurs nowhere else in it (checked at import)
            if cp == _URI_MARK[mark]:
                mark += 1
            else:
                mark = 1 if cp == _URI_MARK[0] else 0
            if mark == _uri_mark_len:
                return True
    return False


cdef inline Py_ssize_t _value(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i, _Est* e, bint* closed, bint* blob
) noexcept nogil:
    """``_string`` for ``estimate_json``, which also says whether the literal is a blob
    (blob[0], and then e is not fed). The reference's ``_is_blob`` before the literal is fed:
    a ``data:`` URI is recognised within its first characters and skipped to its closing
    quote; a raw base64 string is one that is, as written, only bytes of the alphabet and
    ``\\/`` escapes up to its end, so its leading run of those is scanned with one table
    look-up per byte (for ordinary text the run ends at the first space or punctuation, and
    only that run is read twice). p must be a bytes object's data (NUL after p[n - 1])."""
    cdef Py_ssize_t j = i, slashes = 0
    blob[0] = False
    if i < n and (p[i] == _URI_PREFIX[0] or p[i] == 0x5C) and _data_uri(p, n, i):
        blob[0] = True
        return _skip_string(p, n, i, closed)
    if n - i >= _BLOB_MIN:  # else too short to be one
        while True:  # p[n] is the NUL after every bytes object's data: a sentinel
            while _B64[p[j]]:
                j += 1
            if p[j] != 0x5C or j + 1 >= n or p[j + 1] != 0x2F:
                break
            j += 2  # \/
            slashes += 1
    if j - i - slashes >= _BLOB_MIN:
        if j >= n or (j + 1 == n and p[j] == 0x5C):  # unterminated; a final lone backslash drops
            blob[0] = True
            closed[0] = False
            return n
        if p[j] == 0x22:
            blob[0] = True
            closed[0] = True
            return j + 1
    return _string(p, n, i, e, closed)


cdef void _init_blob() except *:
    global _uri_prefix_len, _uri_mark_len
    cdef int c, i
    prefix, mark = _ref._DATA_URI_PREFIX, _ref._DATA_URI_MARK
    # _value compares the prefix's first character with a byte, and _data_uri's matcher
    # restarts on the mark's first character: it must occur only there, and not in the
    # prefix (so that no match starts inside the prefix)
    if (
        not 0 < len(prefix) <= _MAX_URI
        or not 0 < len(mark) <= _MAX_URI
        or mark[0] in mark[1:]
        or mark[0] in prefix
        or not (prefix + mark + _ref._BASE64_ALPHABET).isascii()
    ):
        raise RuntimeError("_tokens_py's blob constants do not suit _tokens_c's matcher")
    for c in range(256):
        _B64[c] = 0
    for ch in _ref._BASE64_ALPHABET:
        _B64[ord(ch)] = 1
    _uri_prefix_len = len(prefix)
    for i in range(_uri_prefix_len):
        _URI_PREFIX[i] = ord(prefix[i])
    _uri_mark_len = len(mark)
    for i in range(_uri_mark_len):
        _URI_MARK[i] = ord(mark[i])


_init_blob()
