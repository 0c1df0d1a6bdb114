"""``python -m fastgw.mock``: run the mock upstream as a standalone server."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from fastgw.mock.server import start_server


async def _serve(host: str, port: int, chunks: int, interval_ms: float, latency_ms: float) -> None:
    server = await start_server(
        host, port, chunks=chunks, interval_ms=interval_ms, latency_ms=latency_ms
    )
    shown = f"[{server.host}]" if ":" in server.host else server.host
    click.echo(f"listening on {shown}:{server.port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


@click.command(context_settings={"auto_envvar_prefix": "FASTGW_MOCK", "show_default": True})
@click.option("--host", default="127.0.0.1", show_envvar=True, help="Address to bind.")
@click.option("--port", default=9100, type=int, show_envvar=True, help="Port (0: any free).")
@click.option(
    "--chunks",
    default=8,
    type=click.IntRange(min=1),
    show_envvar=True,
    help="Default number of content chunks per stream.",
)
@click.option(
    "--interval-ms",
    default=0.0,
    type=click.FloatRange(min=0),
    show_envvar=True,
    help="Default delay between stream chunks, in ms.",
)
@click.option(
    "--latency-ms",
    default=0.0,
    type=click.FloatRange(min=0),
    show_envvar=True,
    help="Default delay before the response headers, in ms.",
)
@click.option(
    "--uvloop/--no-uvloop", default=True, show_envvar=True, help="Use uvloop when it is installed."
)
def main(
    host: str, port: int, chunks: int, interval_ms: float, latency_ms: float, uvloop: bool
) -> None:
    """Serve the fastgw mock upstream (OpenAI wire format) on HOST:PORT."""
    coro = _serve(host, port, chunks, interval_ms, latency_ms)
    if uvloop:
        try:
            import uvloop as _uvloop
        except ImportError:
            pass
        else:
            _uvloop.run(coro)
            return
    asyncio.run(coro)


if __name__ == "__main__":
    main()
