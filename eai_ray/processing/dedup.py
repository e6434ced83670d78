"""Deduplication by key with sequence-by semantics, shared by the silver stage and the merge."""
from __future__ import annotations

import polars as pl


def latest_per_key(df: pl.DataFrame, keys: list[str], sequence_by: str | None) -> pl.DataFrame:
    """One row per key: the highest `sequence_by` value wins, ties broken by arrival order (last wins).

    Example::

        latest_per_key(pl.DataFrame({"id": [1, 1], "v": ["a", "b"]}), ["id"], None)  # keeps "b"
    """
    df = df.with_row_index("__eai_order")
    order = [sequence_by, "__eai_order"] if sequence_by else ["__eai_order"]
    return (df.sort(order, nulls_last=False)
              .unique(subset=keys, keep="last", maintain_order=True)
              .drop("__eai_order"))
