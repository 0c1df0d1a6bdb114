"""The built-in mock upstream: OpenAI's wire format, deterministic replies, fault injection.

Three uses: the gateway's offline demo (:func:`make_asgi_app`, mounted under a prefix), the
upstream of the integration tests and of the benchmarks (:func:`start_server`, or
``python -m fastgw.mock``). Per-request behaviour comes from a ``"mock"`` object in the
request body (see :class:`~fastgw.mock.behaviour.Controls`). Faults on command, for requests
that carry no such object: ``POST /_mock/faults`` with ``{"model": M, "mock": {...controls},
"count": N}`` makes the next N requests for model M (all of them when ``count`` is omitted)
behave as if they carried those controls; ``DELETE /_mock/faults`` clears them.
``GET /_mock/requests`` and ``GET /_mock/stats`` show what the mock received.
"""

from __future__ import annotations

from fastgw.mock.asgi import make_asgi_app
from fastgw.mock.behaviour import Controls, MockOptions, MockState, MockStats
from fastgw.mock.server import MockServer, start_server

__all__ = [
    "Controls",
    "MockOptions",
    "MockServer",
    "MockState",
    "MockStats",
    "make_asgi_app",
    "start_server",
]
