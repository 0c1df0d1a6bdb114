"""``fastgw catalog list | show | update`` and the catalog checks of ``fastgw check``."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fastgw.cli import cli


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose catalog file lives in tmp_path (never the per-user default)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(f"catalog:\n  path: {tmp_path / 'catalog.json'}\n")
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"FASTGW_CONFIG": None})


def doc(models: dict[str, Any], **top: Any) -> str:
    return json.dumps({"version": 1, "models": models, **top})


# -- list and show --------------------------------------------------------------------------


def test_list_prints_a_table(config: Path) -> None:
    r = run("catalog", "list", "-c", str(config))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:2] == ["NAME", "PROVIDERS"]
    row = next(line.split() for line in lines if line.startswith("gpt-4o "))
    assert row == ["gpt-4o", "openai,azure", "2.5", "10", "1.25", "128000", "16384", "text,vision"]
    assert any(line.startswith("claude-sonnet-4-5 ") for line in lines)


def test_list_filters_by_provider_and_prints_json(config: Path) -> None:
    r = run("catalog", "list", "-c", str(config), "--provider", "groq", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert {e["name"] for e in got} >= {"llama-3.3-70b-versatile", "llama-3.1-8b-instant"}
    assert all("groq" in e["providers"] for e in got)
    r = run("catalog", "list", "-c", str(config), "--provider", "groq")
    assert "gpt-4o" not in r.output and "llama-3.1-8b-instant" in r.output


def test_list_reflects_config_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"catalog:\n  path: {tmp_path / 'catalog.json'}\n"
        "  models:\n    gpt-4o: {input: 2}\n"
        "    my-llm: {input: 0.1, output: 0.2, context_window: 32000, providers: [vllm]}\n"
    )
    r = run("catalog", "list", "-c", str(cfg), "--provider", "vllm", "--json")
    assert [e["name"] for e in json.loads(r.output)] == ["my-llm"]
    r = run("catalog", "show", "-c", str(cfg), "gpt-4o")
    assert json.loads(r.output)["input"] == 2.0


def test_show_resolves_aliases_and_prefixes(config: Path) -> None:
    r = run("catalog", "show", "-c", str(config), "anthropic/claude-sonnet-4-5-20250929")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["name"] == "claude-sonnet-4-5"
    assert (got["input"], got["output"], got["cached_input"]) == (3.0, 15.0, 0.3)
    assert "claude-sonnet-4-5-20250929" in got["aliases"]
    assert "-> claude-sonnet-4-5" in r.stderr


def test_show_unknown_model_exits_1(config: Path) -> None:
    r = run("catalog", "show", "-c", str(config), "gpt4o")
    assert r.exit_code == 1
    assert "unknown model 'gpt4o'" in r.stderr and "gpt-4o" in r.stderr
    assert r.stdout == ""


def test_a_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("catalog:\n  models:\n    gpt-4o: {input: -1}\n")
    r = run("catalog", "list", "-c", str(cfg))
    assert r.exit_code == 2
    assert "catalog.models.gpt-4o.input: must be a finite number >= 0" in r.stderr


# -- update ---------------------------------------------------------------------------------


def test_update_from_a_file_installs_it_and_reports_changes(config: Path, tmp_path: Path) -> None:
    src = tmp_path / "new.json"
    src.write_text(
        doc(
            {
                "gpt-4o": {"input": 2.0},
                "gpt-4o-mini": {"features": ["streaming"]},
                "my-llm": {"input": 0.1, "output": 0.2, "context_window": 32000},
            },
            as_of="2030-01-01",
        )
    )
    r = run("catalog", "update", "-c", str(config), "--from", str(src))
    assert r.exit_code == 0, r.output
    assert "1 added, 0 removed, 1 price change(s), 1 other change(s)" in r.stdout
    assert "as of 2030-01-01" in r.stdout
    assert "added: my-llm" in r.stdout and "price changes: gpt-4o" in r.stdout
    installed = tmp_path / "catalog.json"
    assert installed.read_bytes() == src.read_bytes()
    r = run("catalog", "show", "-c", str(config), "gpt-4o-2024-08-06")
    assert json.loads(r.stdout)["input"] == 2.0
    # a second update replacing the file counts what the first one added as removed
    src.write_text(doc({"gpt-4o": {"input": 2.0}}))
    r = run("catalog", "update", "-c", str(config), "--from", str(src))
    assert "0 added, 1 removed, 0 price change(s), 1 other change(s)" in r.stdout


def test_update_refuses_an_invalid_catalog_and_keeps_the_old_file(
    config: Path, tmp_path: Path
) -> None:
    installed = tmp_path / "catalog.json"
    installed.write_text(doc({"gpt-4o": {"input": 2.0}}))
    before = installed.stat()
    bad = tmp_path / "bad.json"
    bad.write_text(doc({"gpt-4o": {"input": -1.0}, "x": {"modalities": ["smell"]}}))
    r = run("catalog", "update", "-c", str(config), "--from", str(bad))
    assert r.exit_code == 1
    assert "models.gpt-4o.input: must be a finite number >= 0" in r.stderr
    assert "models.x" in r.stderr
    assert "unchanged" in r.stderr
    after = installed.stat()
    assert installed.read_text() == doc({"gpt-4o": {"input": 2.0}})
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.json",
        "catalog.json",
        "gateway.yaml",
    ]


def test_update_refuses_a_catalog_the_config_overrides_would_break(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"catalog:\n  path: {tmp_path / 'catalog.json'}\n"
        "  models:\n    gpt-4o: {cached_input: 1.0}\n"
    )
    src = tmp_path / "new.json"
    src.write_text(doc({"gpt-4o": {"input": 0.5, "cached_input": 0.25}}))
    r = run("catalog", "update", "-c", str(cfg), "--from", str(src))
    assert r.exit_code == 1
    assert "catalog.models.gpt-4o.cached_input" in r.stderr
    assert not (tmp_path / "catalog.json").exists()


def test_update_from_a_missing_file(config: Path, tmp_path: Path) -> None:
    r = run("catalog", "update", "-c", str(config), "--from", str(tmp_path / "nope.json"))
    assert r.exit_code == 1 and "cannot fetch" in r.stderr


def test_update_replaces_an_installed_file_that_no_longer_validates(
    config: Path, tmp_path: Path
) -> None:
    (tmp_path / "catalog.json").write_text("{broken")
    src = tmp_path / "new.json"
    src.write_text(doc({"gpt-4o": {"input": 2.0}}))
    r = run("catalog", "update", "-c", str(config), "--from", str(src))
    assert r.exit_code == 0, r.output
    assert "did not validate; replacing it" in r.stderr
    assert "1 price change(s)" in r.stdout


class _Catalogs(http.server.BaseHTTPRequestHandler):
    """Serves /catalog.json (the body set on the server) and 404 elsewhere."""

    def do_GET(self) -> None:
        body: bytes = self.server.body  # type: ignore[attr-defined]
        if self.path != "/catalog.json":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Catalogs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_update_from_a_url(config: Path, tmp_path: Path, http_server: Any) -> None:
    http_server.body = doc({"gpt-4o": {"input": 2.0}}).encode()
    port = http_server.server_address[1]
    r = run(
        "catalog", "update", "-c", str(config), "--from", f"http://127.0.0.1:{port}/catalog.json"
    )
    assert r.exit_code == 0, r.output
    assert "1 price change(s)" in r.stdout
    assert (tmp_path / "catalog.json").read_bytes() == http_server.body
    r = run("catalog", "update", "-c", str(config), "--from", f"http://127.0.0.1:{port}/other")
    assert r.exit_code == 1 and "HTTP 404" in r.stderr


# -- fastgw check -----------------------------------------------------------------------------


def test_check_reports_an_invalid_catalog_file(config: Path, tmp_path: Path) -> None:
    assert run("check", "-c", str(config)).exit_code == 0
    (tmp_path / "catalog.json").write_text(doc({"gpt-4o": {"input": -1.0}}))
    r = run("check", "-c", str(config))
    assert r.exit_code == 1
    assert "models.gpt-4o.input: must be a finite number >= 0" in r.stderr
    assert "catalog.path" in r.stderr


def test_check_reports_a_bad_override_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"catalog:\n  path: {tmp_path / 'catalog.json'}\n"
        "  models:\n    gpt-4o: {modalities: [text, smell]}\n"
    )
    r = run("check", "-c", str(cfg))
    assert r.exit_code == 1
    assert "catalog.models.gpt-4o.modalities: unknown value 'smell'" in r.stderr
