"""``fastgw serve | check``, ``fastgw --version``; each serve flag is also a FASTGW_* variable."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__
from .config import ConfigError, resolve_config
from .providers.registry import kinds
from .routing.router import Router

F = TypeVar("F", bound=Callable[..., Any])


def _version_line() -> str:
    from ._core import sse

    core = "compiled core (Cython)" if sse.COMPILED else "pure-Python core"
    return f"fastgw {__version__} ({core}; Python {sys.version.split()[0]})"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_line())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and which core (compiled or pure Python) is loaded.",
)
def cli() -> None:
    """fastgw: a fast AI gateway (OpenAI-compatible API in front, many providers behind)."""


def _config_option(required: bool, help: str) -> Callable[[F], F]:
    return click.option(
        "--config",
        "-c",
        "config",
        envvar="FASTGW_CONFIG",
        show_envvar=True,
        type=click.Path(dir_okay=False),
        default=None,
        required=required,
        help=help,
    )


@cli.command()
@_config_option(
    required=False,
    help="Configuration file (YAML or JSON). Without one: the embedded default "
    "(OpenAI if OPENAI_API_KEY is set, else the offline demo).",
)
@click.option("--host", envvar="FASTGW_HOST", show_envvar=True, default=None, help="Bind address.")
@click.option(
    "--port", envvar="FASTGW_PORT", show_envvar=True, type=int, default=None, help="Port."
)
@click.option(
    "--workers",
    envvar="FASTGW_WORKERS",
    show_envvar=True,
    type=int,
    default=None,
    help="Worker processes.",
)
def serve(config: str | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Start the gateway (Granian, ASGI, uvloop)."""
    env = dict(os.environ)
    for var, val in (("FASTGW_HOST", host), ("FASTGW_PORT", port), ("FASTGW_WORKERS", workers)):
        if val is not None:
            env[var] = str(val)
    try:
        cfg, source = resolve_config(config, env, kinds())
        Router(cfg)  # provider kinds and adapters' own checks, before any worker starts
    except ConfigError as e:
        e.source = config or "embedded default"
        click.echo(e.render(), err=True)
        sys.exit(2)
    s = cfg.server
    click.echo(f"{_version_line()}", err=True)
    click.echo(f"config: {source}", err=True)
    click.echo(
        f"listening on http://{s.host}:{s.port} with {s.workers} worker(s); "
        f"models: {', '.join(cfg.models) or 'none'}",
        err=True,
    )
    from .server import serve as run

    run(cfg, config)


@cli.command()
@_config_option(required=True, help="Configuration file to validate.")
def check(config: str) -> None:
    """Validate a configuration file; print the exact path of every error."""
    try:
        cfg, _ = resolve_config(config, kinds=kinds())
        Router(cfg)  # provider kinds and adapters' own checks
    except ConfigError as e:
        e.source = config
        click.echo(e.render(), err=True)
        sys.exit(1)
    click.echo(f"{config}: OK ({len(cfg.providers)} provider(s), {len(cfg.models)} model(s))")


def main() -> None:
    cli(prog_name="fastgw")


if __name__ == "__main__":
    main()
