"""Shared pytest fixtures. Each component keeps its fixtures in its own marked section."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from tests.servers import Proc, gateway_config, start_gateway, start_mock

# === fastgw._core twins =======================================================================
# Each `<module>_impl` fixture is the pure-Python reference and the compiled twin in turn; the
# compiled param is skipped when FASTGW_NO_EXTENSIONS is set or the extension is not built.


def _twin_params(module: str) -> list[Any]:
    return [
        pytest.param(f"fastgw._core.{module}_py", id="pure-python"),
        pytest.param(f"fastgw._core.{module}_c", id="c-extension"),
    ]


def _load_twin(name: str) -> ModuleType:
    if name.endswith("_c"):
        from fastgw._core import NO_EXTENSIONS

        if NO_EXTENSIONS:
            pytest.skip("FASTGW_NO_EXTENSIONS is set: compiled twin disabled")
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            pytest.skip(f"compiled twin {name} is not built ({exc})")
    return importlib.import_module(name)


@pytest.fixture(scope="session", params=_twin_params("_sse"))
def sse_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _load_twin(request.param)


@pytest.fixture(scope="session", params=_twin_params("_http1"))
def http1_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _load_twin(request.param)


@pytest.fixture(scope="session", params=_twin_params("_eventstream"))
def eventstream_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _load_twin(request.param)


@pytest.fixture(scope="session", params=_twin_params("_shm"))
def shm_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _load_twin(request.param)


@pytest.fixture(scope="session", params=_twin_params("_ratelimit"))
def ratelimit_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _load_twin(request.param)


@pytest.fixture(scope="session", params=_twin_params("_tally"))
def tally_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _load_twin(request.param)


@pytest.fixture(scope="session", params=_twin_params("_tokens"))
def tokens_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _load_twin(request.param)


# === end fastgw._core twins ===================================================================


# === servers on loopback (integration, e2e) ===================================================
# One mock upstream (OpenAI wire format) and one gateway under Granian configured with every
# case the integration tests need (see tests/servers.py: gateway_config).


@pytest.fixture(scope="session")
def mock() -> Iterator[Proc]:
    p = start_mock()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def gateway(mock: Proc) -> Iterator[Proc]:
    p = start_gateway(gateway_config(mock))
    yield p
    p.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for talking to the servers (modules needing other connection
    settings define their own)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


# === end servers ==============================================================================
