"""Granian embedding: workers, uvloop, backlog, graceful drain on SIGTERM."""

from __future__ import annotations

import os

from granian import Granian
from granian.constants import Interfaces, Loops

from .config import GatewayConfig


def serve(cfg: GatewayConfig, config_path: str | None) -> None:
    """Run the gateway until SIGINT/SIGTERM. Workers rebuild the same config from the
    environment (``FASTGW_CONFIG`` + the host/port/workers overrides), so pass everything
    through ``os.environ`` before the workers start."""
    s = cfg.server
    os.environ["FASTGW_CONFIG"] = config_path or ""
    os.environ["FASTGW_HOST"] = s.host
    os.environ["FASTGW_PORT"] = str(s.port)
    os.environ["FASTGW_WORKERS"] = str(s.workers)
    server = Granian(
        "fastgw.app:app",
        address=s.host,
        port=s.port,
        interface=Interfaces.ASGI,
        workers=s.workers,
        loop=Loops.uvloop,
        backlog=s.backlog,
        backpressure=s.max_concurrent_requests,
        log_access=False,
        workers_kill_timeout=max(1, round(s.drain_timeout)),
        respawn_failed_workers=True,
    )
    server.serve()
