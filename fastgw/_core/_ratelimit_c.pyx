# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The ``x-ratelimit-*`` answer headers: the compiled twin of ``_ratelimit_py`` (same
results for every input; see its docstring)."""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.math cimport ceil, floor

__all__ = ["MAX_BUCKETS", "MAX_SHOWN", "NEVER", "rate_headers", "tightest_headers"]

NEVER = 1e9
MAX_BUCKETS = 16
MAX_SHOWN = 10**18
cdef double _NEVER = 1e9
cdef double _MAX = 1e18  # MAX_SHOWN

cdef bytes LIMIT_REQ = b"x-ratelimit-limit-requests"
cdef bytes REMAINING_REQ = b"x-ratelimit-remaining-requests"
cdef bytes RESET_REQ = b"x-ratelimit-reset-requests"
cdef bytes LIMIT_TOK = b"x-ratelimit-limit-tokens"
cdef bytes REMAINING_TOK = b"x-ratelimit-remaining-tokens"
cdef bytes RESET_TOK = b"x-ratelimit-reset-tokens"
cdef bytes NEVER_B = b"never"


cdef inline bytes _digits(Py_ssize_t v, bint seconds):
    """``b"%d" % v`` (``v`` >= 0), with an ``s`` after it when ``seconds``: written by hand,
    a few times faster than a format string."""
    cdef char buf[24]
    cdef Py_ssize_t end = 23
    cdef Py_ssize_t i = end
    if seconds:
        buf[i] = 115  # 's'
        i -= 1
    while True:
        buf[i] = <char>(48 + v % 10)
        v = v // 10
        if v == 0:
            break
        i -= 1
    return PyBytes_FromStringAndSize(&buf[i], end + 1 - i)


cdef inline bytes _remaining(double x):
    if not x > 0:  # NaN included
        return b"0"
    if x >= _MAX:
        return _digits(<Py_ssize_t>_MAX, False)
    return _digits(<Py_ssize_t>floor(x), False)


cdef inline bytes _reset(double s):
    if not s < _NEVER:  # NaN included
        return NEVER_B
    if not s > 0:
        return b"0s"
    return _digits(<Py_ssize_t>ceil(s), True)


cdef list headers_of(
    object req_cap,
    double req_remaining,
    double req_reset,
    object tok_cap,
    double tok_remaining,
    double tok_reset,
):
    cdef list out = []
    if req_cap is not None:
        out.append((LIMIT_REQ, req_cap))
        out.append((REMAINING_REQ, _remaining(req_remaining)))
        out.append((RESET_REQ, _reset(req_reset)))
    if tok_cap is not None:
        out.append((LIMIT_TOK, tok_cap))
        out.append((REMAINING_TOK, _remaining(tok_remaining)))
        out.append((RESET_TOK, _reset(tok_reset)))
    return out


def rate_headers(
    object req_cap,
    double req_remaining,
    double req_reset,
    object tok_cap,
    double tok_remaining,
    double tok_reset,
):
    return headers_of(req_cap, req_remaining, req_reset, tok_cap, tok_remaining, tok_reset)


cdef list tightest_of(
    Py_ssize_t k, const double* balances, const bint* tokens, const double* shapes, list caps
):
    cdef Py_ssize_t i, ri = -1, ti = -1
    cdef double req_rem = 0.0, req_reset = 0.0, tok_rem = 0.0, tok_reset = 0.0
    for i in range(k):
        if tokens[i]:
            if ti < 0 or balances[i] < balances[ti]:
                ti = i
        elif ri < 0 or balances[i] < balances[ri]:
            ri = i
    if ri >= 0:
        req_rem = balances[ri]
        req_reset = (shapes[2 * ri] - req_rem) / shapes[2 * ri + 1]
    if ti >= 0:
        tok_rem = balances[ti]
        tok_reset = (shapes[2 * ti] - tok_rem) / shapes[2 * ti + 1]
    return headers_of(
        caps[ri] if ri >= 0 else None,
        req_rem,
        req_reset,
        caps[ti] if ti >= 0 else None,
        tok_rem,
        tok_reset,
    )


def tightest_headers(list balances, list tokens, list caps, list shapes):
    cdef Py_ssize_t k = len(balances), i
    cdef double b[16]
    cdef bint t[16]
    cdef double sh[32]
    if not (k == len(tokens) == len(caps) and len(shapes) == 2 * k and k <= 16):
        raise ValueError("one balance, kind, limit and two shape numbers per bucket, at most 16")
    for i in range(k):
        b[i] = balances[i]
        t[i] = bool(tokens[i])
        sh[2 * i] = shapes[2 * i]
        sh[2 * i + 1] = shapes[2 * i + 1]
    return tightest_of(k, b, t, sh, caps)
