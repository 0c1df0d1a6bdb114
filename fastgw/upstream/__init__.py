"""The gateway's upstream HTTP/1.1 client: connection pools, timeouts, backpressure.

It replaces a general-purpose client on the hot path: requests are pre-serialised bytes,
responses are parsed by the compiled ``fastgw._core.http1`` parser, and a response costs a
handful of Python calls. See ``client.py``.
"""

from __future__ import annotations

from .client import Client, Origin, Response, Timeouts, UpstreamError

__all__ = ["Client", "Origin", "Response", "Timeouts", "UpstreamError"]
