# The header formatting of ``_ratelimit_c``, for other compiled twins (``_shm_c``'s admission).
cdef list headers_of(
    object req_cap,
    double req_remaining,
    double req_reset,
    object tok_cap,
    double tok_remaining,
    double tok_reset,
)
