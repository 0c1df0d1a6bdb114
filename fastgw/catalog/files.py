"""The catalog file on disk: where it lives, fetching and writing a new one, and the
watcher that swaps it in while the gateway runs.

``fastgw catalog update --from SRC`` fetches SRC, validates it over the shipped catalog and
the config's overrides, and writes it to ``catalog.path`` atomically (a temporary file in
the same directory, then ``os.replace``). Each worker's ``CatalogWatcher`` notices the new
file (inode, size and mtime) within ``catalog.watch`` seconds and swaps the new catalog in;
an invalid file is logged and the catalog in use is kept. The file is per host: on several
hosts, run the update on each, or point ``catalog.path`` at shared storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from ..datadir import data_file
from .catalog import Catalog, CatalogHolder, apply, load, shipped
from .schema import CatalogError, ModelPatch

__all__ = ["CatalogWatcher", "default_path", "effective", "fetch", "write_atomic"]

log = logging.getLogger(__name__)

#: The largest catalog accepted from a file or URL (the shipped one is a few dozen KiB).
MAX_BYTES = 16 * 1024 * 1024


def default_path(config_path: str | None = None) -> str:
    """Where ``catalog.path`` points when the config leaves it out:
    ``fastgw-<uid>/catalog-<tag>.json`` under ``/var/tmp`` (else the temp dir) — the
    directory of the admin key store (``fastgw.policy.store.default_sqlite_path``), ``tag``
    the same hash of the configuration file's absolute path (``config_path``, else
    ``FASTGW_CONFIG``), so the CLI and the gateway of one config agree on it
    (``fastgw.datadir.data_file``)."""
    return data_file("catalog", ".json", config_path)


def fetch(src: str, *, timeout: float = 10.0, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a catalog: an ``http(s)://`` URL (GET, ``timeout`` seconds for the
    connection and each read) or a file path. Raises ``CatalogError`` saying why not."""
    try:
        if src.startswith(("http://", "https://")):
            req = urllib.request.Request(src, headers={"Accept": "application/json"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data: bytes = resp.read(max_bytes + 1)
        else:
            with open(src, "rb") as f:
                data = f.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise CatalogError([("", f"HTTP {e.code} {e.reason}")], src) from None
    except urllib.error.URLError as e:
        raise CatalogError([("", f"cannot fetch: {e.reason}")], src) from None
    except (OSError, ValueError) as e:  # timeouts, refused connections, bad URLs, no file
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise CatalogError([("", f"cannot fetch: {reason}")], src) from None
    if len(data) > max_bytes:
        raise CatalogError([("", f"larger than {max_bytes} bytes")], src)
    return data


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new one,
    never a partial write: a temporary file in the same directory (same filesystem),
    flushed to disk, then ``os.replace``. The default directory is created private (0700),
    as the key store's is."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".catalog-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # prices are no secret; a gateway under another user reads it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def effective(
    path: str | None,
    overrides: Mapping[str, ModelPatch] | None = None,
    *,
    data: bytes | None = None,
) -> Catalog:
    """The catalog a gateway uses: shipped → the file at ``path`` (if there is one; or
    ``data``, as if it were that file) → the config's ``overrides``. Raises
    ``CatalogError`` if the file, or the overrides over it, do not validate."""
    catalog = shipped()
    if data is not None:
        catalog = load(data, base=catalog, source=path or "catalog file")
    elif path is not None and os.path.exists(path):
        catalog = load(path, base=catalog)
    if overrides:
        catalog = apply(catalog, overrides, where="catalog.models", source="config")
    return catalog


Signature = tuple[int, int, int, int]


def _signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class CatalogWatcher:
    """Follows the catalog file at ``path`` and swaps a new catalog into a holder when the
    file changes (its inode, size or mtime: ``os.replace`` always makes a new inode).

    ``check`` stats the file at most once per ``interval`` seconds. On a change it loads
    the file over the shipped catalog, applies ``overrides`` (the config's), and swaps;
    a file that does not validate is logged once and the catalog in use kept until the file
    changes again. A removed file means "no file": shipped + overrides."""

    def __init__(
        self,
        path: str,
        overrides: Mapping[str, ModelPatch] | None = None,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval < 0:
            raise ValueError("CatalogWatcher interval cannot be negative")
        self.path = path
        self.overrides = dict(overrides or {})
        self.interval = interval
        self.clock = clock
        #: The file as last loaded or rejected (None: there was no file).
        self.signature: Signature | None = None
        self._next_stat = float("-inf")
        #: Catalogs swapped in; files rejected; the last rejection's description.
        self.loads = 0
        self.errors = 0
        self.last_error: str | None = None

    def _stat(self) -> Signature | None:
        try:
            return _signature(os.stat(self.path))
        except FileNotFoundError:
            return None

    def _read(self) -> tuple[bytes | None, Signature | None]:
        """The file's bytes and the signature of what was read (from the open file, so a
        replacement during the read is noticed at the next check); None, None: no file."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - fstat of this very file
        except FileNotFoundError:
            return None, None
        with f:
            return f.read(MAX_BYTES + 1), _signature(os.fstat(f.fileno()))

    def _build(self, data: bytes | None) -> Catalog:
        if data is not None and len(data) > MAX_BYTES:
            raise CatalogError([("", f"larger than {MAX_BYTES} bytes")], self.path)
        return effective(self.path if data is not None else None, self.overrides, data=data)

    def initial(self) -> Catalog:
        """The catalog to start with (and the file it came from becomes the one known). An
        invalid file is logged and left out: a bad price list must not stop a gateway."""
        try:
            data, self.signature = self._read()
            catalog = self._build(data)
        except CatalogError as e:
            self._rejected(e)
            catalog = effective(None, self.overrides)
        except OSError as e:
            self._unreadable(e)
            catalog = effective(None, self.overrides)
        self._next_stat = self.clock() + self.interval
        return catalog

    def _rejected(self, e: CatalogError) -> None:
        self.errors += 1
        self.last_error = e.render()
        log.warning("catalog file rejected, keeping the catalog in use:\n%s", self.last_error)

    def _unreadable(self, e: OSError) -> None:
        """Counted each time, logged once per run of the same failure (it is retried every
        ``interval`` until the file can be read)."""
        self.errors += 1
        error = f"{self.path}: {e.strerror or e}"
        if error != self.last_error:
            log.warning("catalog file unreadable, keeping the catalog in use: %s", error)
        self.last_error = error

    def check(self, holder: CatalogHolder) -> bool:
        """Swap in the file's catalog if the file changed since last seen; True if swapped.
        Does nothing (not even a stat) within ``interval`` of the previous stat."""
        now = self.clock()
        if now < self._next_stat:
            return False
        self._next_stat = now + self.interval
        try:
            if self._stat() == self.signature:
                return False
            data, sig = self._read()
        except OSError as e:  # unreadable (permissions, I/O): keep what we have, retry
            self._unreadable(e)
            return False
        try:
            catalog = self._build(data)
        except CatalogError as e:
            self.signature = sig  # not again until the file changes
            self._rejected(e)
            return False
        self.signature = sig
        holder.swap(catalog)
        self.loads += 1
        self.last_error = None
        log.info("catalog reloaded from %s (%d models)", self.path, len(catalog))
        return True

    async def run(self, holder: CatalogHolder) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            self.check(holder)
            await asyncio.sleep(max(self.interval, 0.05))

    def health(self) -> dict[str, object]:
        """For ``/readyz``: the file followed and how following it went."""
        return {
            "path": self.path,
            "loads": self.loads,
            "errors": self.errors,
            "last_error": self.last_error,
        }
