# Shared by the compiled twins: appending to a malloc'd, growable byte buffer.
from cpython.mem cimport PyMem_Realloc
from libc.string cimport memcpy


cdef inline unsigned char* buf_append(
    unsigned char* buf,
    Py_ssize_t* size,
    Py_ssize_t* cap,
    const unsigned char* p,
    Py_ssize_t n,
    Py_ssize_t min_cap,
) except NULL:
    """Append ``p[:n]`` to ``buf`` (``size`` bytes used of ``cap``), doubling the capacity
    (at least ``min_cap``, at least what is needed) when full; returns the buffer, which may
    have moved. Raises MemoryError."""
    cdef Py_ssize_t need = size[0] + n
    cdef Py_ssize_t new_cap
    cdef unsigned char* nb
    if need > cap[0]:
        new_cap = cap[0] * 2 if cap[0] else min_cap
        while new_cap < need:
            new_cap *= 2
        nb = <unsigned char*>PyMem_Realloc(buf, <size_t>new_cap)
        if nb == NULL:
            raise MemoryError()
        buf = nb
        cap[0] = new_cap
    if n:
        memcpy(buf + size[0], p, <size_t>n)
    size[0] = need
    return buf
