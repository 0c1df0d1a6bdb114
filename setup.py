"""Build script: compiles the Cython twins of ``fastgw._core``.

``FASTGW_NO_EXTENSIONS=1`` (or a non-CPython interpreter) builds a pure-Python
package; the runtime switch modules then pick the ``*_py`` twins.
"""

from __future__ import annotations

import os
import platform

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("FASTGW_NO_EXTENSIONS")) or (
    platform.python_implementation() != "CPython"
)

CORE_MODULES = ["_sse", "_http1", "_eventstream", "_tokens", "_ratelimit", "_tally"]


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    exts = [
        Extension(f"fastgw._core.{name}_c", [f"fastgw/_core/{name}_c.pyx"]) for name in CORE_MODULES
    ]
    # the shared-memory table of the `local` state backend (C spin locks in _shm_lock.h)
    exts.append(
        Extension(
            "fastgw._core._shm_c",
            ["fastgw/_core/_shm_c.pyx"],
            depends=["fastgw/_core/_shm_lock.h"],
        )
    )
    return list(
        cythonize(
            exts,
            language_level=3,
            compiler_directives={
                "boundscheck": False,
                "wraparound": False,
                "cdivision": True,
                "embedsignature": True,
            },
        )
    )


setup(ext_modules=_extensions())
