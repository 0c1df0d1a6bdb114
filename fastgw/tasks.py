"""Stopping the background tasks of the gateway's parts (the ledger's flusher, the key sync,
the catalog watch, the Redis slot refresher)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["stop_task"]


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to do) and wait until it has ended; its
    cancellation is not raised to the caller."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
