"""``fastgw serve | check | catalog``, ``fastgw --version``; each serve flag is also a
FASTGW_* variable."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import msgspec

from . import __version__
from .catalog import (
    Catalog,
    CatalogError,
    ModelEntry,
    default_path,
    diff,
    effective,
    fetch,
    write_atomic,
)
from .config import ConfigError, GatewayConfig, resolve_config
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
        _check_catalog_file(cfg, config)
    except ConfigError as e:
        e.source = config
        click.echo(e.render(), err=True)
        sys.exit(1)
    click.echo(f"{config}: OK ({len(cfg.providers)} provider(s), {len(cfg.models)} model(s))")


def _check_catalog_file(cfg: GatewayConfig, config: str) -> None:
    """The catalog file the gateway would follow, with the config's overrides over it: a
    file that does not validate is an error here (the gateway itself would log it and go on
    without it)."""
    path = cfg.catalog.path or default_path(config)
    try:
        effective(path, cfg.catalog.models)
    except CatalogError as e:
        raise ConfigError([f"catalog.path ({path}): {err}" for err in e.errors]) from None


# -- fastgw catalog ---------------------------------------------------------------------------

_CATALOG_CONFIG_HELP = (
    "Configuration file: its catalog section (path, overrides) applies. Without one: the "
    "shipped catalog and the default catalog file."
)


@cli.group()
def catalog() -> None:
    """The model catalog: prices, context windows, capabilities (docs/catalog.md)."""


def _catalog_config(config: str | None) -> tuple[GatewayConfig, str]:
    """The configuration (exit 2 if it is bad) and the catalog file it points at."""
    try:
        cfg, _ = resolve_config(config, kinds=kinds())
    except ConfigError as e:
        e.source = config or "embedded default"
        click.echo(e.render(), err=True)
        sys.exit(2)
    return cfg, cfg.catalog.path or default_path(config or "")


def _current_catalog(config: str | None) -> Catalog:
    """Shipped + catalog file + config overrides, as the gateway builds it (exit 1 if the
    file does not validate)."""
    cfg, path = _catalog_config(config)
    try:
        return effective(path, cfg.catalog.models)
    except CatalogError as e:
        click.echo(e.render(), err=True)
        click.echo("fix the file, replace it with `fastgw catalog update`, or remove it", err=True)
        sys.exit(1)


def _json(value: object) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def _price(value: float | None) -> str:
    """A price per million tokens, as short as it is exact (2.5, 0.075, 0.005)."""
    if value is None:
        return "-"
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _row(e: ModelEntry) -> list[str]:
    return [
        e.name,
        ",".join(e.providers) or "-",
        _price(e.input),
        _price(e.output),
        _price(e.cached_input),
        str(e.context_window),
        str(e.max_output_tokens) if e.max_output_tokens is not None else "-",
        ",".join(e.modalities),
    ]


_HEADER = [
    "NAME",
    "PROVIDERS",
    "IN $/M",
    "OUT $/M",
    "CACHED $/M",
    "CONTEXT",
    "MAX OUT",
    "MODALITIES",
]
_NUMERIC = {2, 3, 4, 5, 6}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if i in _NUMERIC else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@catalog.command("list")
@_config_option(required=False, help=_CATALOG_CONFIG_HELP)
@click.option("--provider", default=None, help="Only models this provider kind serves (openai, …).")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def catalog_list(config: str | None, provider: str | None, as_json: bool) -> None:
    """List the models of the catalog with their prices (USD per million tokens) and limits."""
    entries = _current_catalog(config).models(provider)
    if as_json:
        click.echo(_json(entries))
        return
    if not entries:
        click.echo(f"no model in the catalog is served by {provider!r}", err=True)
        return
    click.echo(_table([_HEADER, *(_row(e) for e in entries)]))


@catalog.command("show")
@_config_option(required=False, help=_CATALOG_CONFIG_HELP)
@click.argument("name")
def catalog_show(config: str | None, name: str) -> None:
    """Print one model's entry as JSON; NAME may be an alias, a dated snapshot or carry a
    provider prefix (openai/gpt-4o)."""
    current = _current_catalog(config)
    entry = current.get(name)
    if entry is None:
        close = current.suggest(name)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        click.echo(f"unknown model {name!r}: not in the catalog{hint}", err=True)
        sys.exit(1)
    if entry.name != name:
        click.echo(f"{name} -> {entry.name}", err=True)
    click.echo(_json(entry))


@catalog.command("update")
@_config_option(required=False, help=_CATALOG_CONFIG_HELP)
@click.option(
    "--from",
    "src",
    required=True,
    metavar="FILE|URL",
    help="The new catalog: a file or an http(s) URL (JSON, docs/catalog.md).",
)
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for a URL."
)
def catalog_update(config: str | None, src: str, timeout: float) -> None:
    """Validate a new catalog and install it as the catalog file; running gateways of this
    config on this host pick it up within catalog.watch seconds, without a restart. An
    invalid catalog is refused and the installed file left as it was."""
    cfg, path = _catalog_config(config)
    overrides = cfg.catalog.models
    try:
        data = fetch(src, timeout=timeout)
        new = effective(path, overrides, data=data)
    except CatalogError as e:
        click.echo(e.render(), err=True)
        click.echo(f"not installed; {path} is unchanged", err=True)
        sys.exit(1)
    try:
        old = effective(path, overrides)
    except CatalogError:
        click.echo(f"note: the installed {path} did not validate; replacing it", err=True)
        old = effective(None, overrides)
    try:
        write_atomic(path, data)
    except OSError as e:
        click.echo(f"cannot write {path}: {e.strerror or e}", err=True)
        sys.exit(1)
    change = diff(old, new)
    as_of = f" (as of {new.as_of})" if new.as_of else ""
    click.echo(f"installed {src} as {path}{as_of}: {change.summary()}")
    for label, names in (
        ("added", change.added),
        ("removed", change.removed),
        ("price changes", change.repriced),
        ("other changes", change.changed),
    ):
        if names:
            click.echo(f"  {label}: {', '.join(names)}")


def main() -> None:
    cli(prog_name="fastgw")


if __name__ == "__main__":
    main()
