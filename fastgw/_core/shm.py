"""The shared-memory table of the ``local`` state backend: picks the compiled twin, or the
pure-Python reference.

Callers import from here only. ``FASTGW_NO_EXTENSIONS=1`` (see ``fastgw._core``) or a
missing compiled module selects ``_shm_py``. Both twins share one file format and lock
protocol (see ``_shm_py``), so processes running either agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

__all__ = [
    "COMPILED",
    "DEFAULT_ENTRIES",
    "Admissions",
    "Admitted",
    "LayoutError",
    "ShmTable",
    "TableFull",
]

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._shm_py import DEFAULT_ENTRIES, Admissions, Admitted, LayoutError, ShmTable, TableFull

    COMPILED: bool = False
else:
    try:
        from ._shm_c import DEFAULT_ENTRIES, Admissions, Admitted, LayoutError, ShmTable, TableFull

        COMPILED = True
    except ImportError:  # not built (e.g. a source checkout): use the reference twin
        from ._shm_py import DEFAULT_ENTRIES, Admissions, Admitted, LayoutError, ShmTable, TableFull

        COMPILED = False
