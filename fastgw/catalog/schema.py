"""The catalog's data types: one model's entry, the partial entry an override carries, and
the error every validation failure ends in.

This module imports nothing from the rest of fastgw: the configuration schema embeds
``ModelPatch`` (the ``catalog.models`` section), so ``fastgw.config`` depends on it and not
the other way round.
"""

from __future__ import annotations

import msgspec

#: The catalog file format this fastgw reads (the ``version`` field of a catalog file).
FORMAT_VERSION = 1

#: What a model is called for: chat/completions (``chat``) or embeddings (``embedding``).
MODES = ("chat", "embedding")
#: What a model accepts as input besides text.
MODALITIES = ("text", "vision", "audio", "video")
#: API capabilities a model has. Closed lists: a typo in a catalog is an error, not a silent
#: capability nobody asks for.
FEATURES = (
    "streaming",
    "tools",
    "json_mode",
    "structured_output",
    "reasoning",
    "prompt_caching",
    "batch",
)


class LongContext(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Prices (USD per million tokens) that apply instead of the entry's own when a request's
    prompt is longer than ``threshold`` tokens (e.g. Gemini 2.5 Pro above 200k tokens). The
    whole request is billed at these prices, as the providers do."""

    threshold: int
    input: float
    output: float
    #: Omitted: cached prompt tokens bill at this tier's ``input``.
    cached_input: float | None = None


class ModelPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One model as a catalog file or the ``catalog.models`` config section writes it.

    Every field is optional: for a model a lower layer already has (the shipped catalog, the
    ``catalog.path`` file), a patch changes only the fields it sets; a new model must set at
    least ``input``, ``output`` and ``context_window``. ``null`` and absent mean the same:
    keep the lower layer's value."""

    #: Provider kinds that serve the model at these prices (``openai``, ``anthropic``, …).
    providers: list[str] | None = None
    #: USD per million prompt tokens.
    input: float | None = None
    #: USD per million completion tokens (reasoning tokens included).
    output: float | None = None
    #: USD per million prompt tokens served from the provider's prompt cache.
    cached_input: float | None = None
    #: Prompt + completion tokens the model accepts at most.
    context_window: int | None = None
    #: Completion tokens the model produces at most.
    max_output_tokens: int | None = None
    #: ``chat`` or ``embedding``.
    mode: str | None = None
    #: Input kinds: ``text``, ``vision``, ``audio``, ``video``.
    modalities: list[str] | None = None
    #: Capabilities: see ``FEATURES``.
    features: list[str] | None = None
    #: Where the model is served, when the provider says (e.g. ``us-east-1``, ``eu``).
    regions: list[str] | None = None
    #: ISO date (``YYYY-MM-DD``) the provider retires the model.
    deprecation: str | None = None
    #: Other names of the same model at the same prices (dated snapshots, ``-latest``,
    #: a hosting provider's id).
    aliases: list[str] | None = None
    #: Prices above a prompt length; replaces the lower layer's tier as a whole.
    long_context: LongContext | None = None


class ModelEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A complete, validated catalog entry. Immutable: a catalog is shared by every request
    of a worker and replaced as a whole, never edited in place."""

    name: str
    providers: tuple[str, ...]
    input: float
    output: float
    cached_input: float | None
    context_window: int
    max_output_tokens: int | None
    mode: str
    modalities: tuple[str, ...]
    features: tuple[str, ...]
    regions: tuple[str, ...]
    deprecation: str | None
    aliases: tuple[str, ...]
    long_context: LongContext | None


#: The fields a new model must set (the others default as in ``catalog._blank``).
REQUIRED_FIELDS = ("input", "output", "context_window")


class CatalogError(ValueError):
    """A catalog that cannot be used. ``problems`` holds one ``(path, message)`` per problem,
    the path naming the entry and field (``models.gpt-4o.input``) so a user finds it at once."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "catalog") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(self.errors))

    @property
    def errors(self) -> list[str]:
        return [f"{path}: {message}" if path else message for path, message in self.problems]

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} error(s)"]
        lines.extend(f"  {e}" for e in self.errors)
        return "\n".join(lines)


class UnknownModelError(KeyError):
    """A model name the catalog has no entry for, under any of its lookup rules."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown model {self.name!r}: not in the catalog"
