"""Requests as bytes: the serialised request-line and static headers of a provider."""

from __future__ import annotations

from urllib.parse import urlsplit

from .client import Origin


class Wire:
    """How to reach one provider: its origin, and per path the request prefix (request
    line, ``Host``, the provider's static headers) serialised once."""

    __slots__ = ("_prefix", "_query", "_static", "base_path", "origin")

    def __init__(
        self, base_url: str, headers: dict[str, str], max_connections: int | None = None
    ) -> None:
        u = urlsplit(base_url)
        assert u.hostname, "validated by the config"
        self.origin = Origin(u.scheme, u.hostname, u.port, max_connections)
        self.base_path = u.path.rstrip("/")
        query = f"?{u.query}" if u.query else ""
        self._static = (
            f"Host: {self.origin.host_header}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        ).encode("latin-1")
        self._prefix: dict[str, bytes] = {}
        self._query = query

    def request(self, path: str, headers: dict[str, str], body: bytes) -> bytes:
        """A complete ``POST`` request for ``base_path + path``."""
        prefix = self._prefix.get(path)
        if prefix is None:
            line = f"POST {self.base_path}{path}{self._query} HTTP/1.1\r\n".encode("latin-1")
            prefix = self._prefix[path] = line + self._static
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
        return b"%s%scontent-length: %d\r\n\r\n%s" % (prefix, extra, len(body), body)
