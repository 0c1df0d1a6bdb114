"""The model catalog: prices, context windows and capabilities of the models behind the
gateway, the cost of a request, and run-time updates (docs/catalog.md).

A catalog is layered: the file shipped with fastgw, then the ``catalog.path`` file that
``fastgw catalog update`` writes (followed at run time by ``CatalogWatcher``), then the
config's ``catalog.models``. ``CatalogHolder`` publishes the current one to requests.
"""

from __future__ import annotations

from .catalog import (
    Catalog,
    CatalogDiff,
    CatalogHolder,
    CatalogLayer,
    apply,
    check_overrides,
    cost,
    diff,
    load,
    model_card,
    parse,
    shipped,
)
from .files import CatalogWatcher, default_path, effective, fetch, write_atomic
from .schema import (
    FEATURES,
    FORMAT_VERSION,
    MODALITIES,
    MODES,
    CatalogError,
    LongContext,
    ModelEntry,
    ModelPatch,
    UnknownModelError,
)

__all__ = [
    "FEATURES",
    "FORMAT_VERSION",
    "MODALITIES",
    "MODES",
    "Catalog",
    "CatalogDiff",
    "CatalogError",
    "CatalogHolder",
    "CatalogLayer",
    "CatalogWatcher",
    "LongContext",
    "ModelEntry",
    "ModelPatch",
    "UnknownModelError",
    "apply",
    "check_overrides",
    "cost",
    "default_path",
    "diff",
    "effective",
    "fetch",
    "load",
    "model_card",
    "parse",
    "shipped",
    "write_atomic",
]
