"""Stub for the compiled twin ``fastgw._core._shm_c`` (same API as ``_shm_py``)."""

from typing import final

from ._shm_py import DEFAULT_ENTRIES as DEFAULT_ENTRIES
from ._shm_py import ENTRY_SIZE as ENTRY_SIZE
from ._shm_py import HEADER_SIZE as HEADER_SIZE
from ._shm_py import MAGIC as MAGIC
from ._shm_py import VERSION as VERSION
from ._shm_py import LayoutError as LayoutError
from ._shm_py import TableFull as TableFull
from ._shm_py import key_hash as key_hash
from ._shm_py import open_table_file as open_table_file

__all__ = [
    "DEFAULT_ENTRIES",
    "ENTRY_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "VERSION",
    "LayoutError",
    "ShmTable",
    "TableFull",
    "key_hash",
    "open_table_file",
]

@final
class ShmTable:
    @property
    def path(self) -> str: ...
    @property
    def entries(self) -> int: ...
    def __init__(self, path: str, entries: int = ..., *, recreate: bool = False) -> None: ...
    def take_many(
        self, takes: list[tuple[str, float, float, float]], now: float
    ) -> list[tuple[bool, float, float, float]]: ...
    def settle(self, key: str, n: float, capacity: float, rate: float, now: float) -> None: ...
    def acquire(self, key: str, limit: int) -> bool: ...
    def release(self, key: str) -> None: ...
    def held(self, key: str) -> int: ...
    def add(self, key: str, x: float) -> float: ...
    def get(self, key: str) -> float: ...
    def charge_many(
        self, charges: list[tuple[str, float, float]], now: float, ttl: float | None = None
    ) -> list[tuple[bool, float]]: ...
    def adjust(self, key: str, delta: float, now: float, ttl: float | None = None) -> float: ...
    def seed(self, key: str, value: float, now: float, ttl: float | None = None) -> bool: ...
    def used(self) -> int: ...
    def close(self) -> None: ...
