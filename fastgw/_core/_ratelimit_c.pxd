# The header formatting of ``_ratelimit_c``, for other compiled twins (``_shm_c``'s admission).
cdef list headers_of(
    object req_cap,
    double req_remaining,
    double req_reset,
    object tok_cap,
    double tok_remaining,
    double tok_reset,
)
# ``tightest_headers`` on C arrays (``shapes``: capacity and rate of each bucket, in turn).
cdef list tightest_of(
    Py_ssize_t k, const double* balances, const bint* tokens, const double* shapes, list caps
)
