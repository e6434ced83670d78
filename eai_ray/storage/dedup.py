"""Deduplication by key with sequence-by semantics, shared by the silver stage and the merge."""
from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    import pyarrow as pa


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


ROW_HASH = "_eai_row_hash"
_HASHED_META = ("_eai_raw",)  # the one meta column that is content (the record as the source sent it)


def row_hashes(table: pa.Table) -> pa.Array:
    """A 64-bit content hash per row of an Arrow table, as int64.

    Hashes the data columns (and the raw record text, when kept) in name order, never positions,
    load ids or times, so the same record read twice gets the same hash. Example::

        row_hashes(pa.table({"id": [1, 1]}))  # two equal values
    """
    import numpy as np
    import pyarrow as pa

    cols = sorted(c for c in table.column_names if not c.startswith("_eai_") or c in _HASHED_META)
    if not cols or table.num_rows == 0:
        return pa.array(np.zeros(table.num_rows, dtype=np.int64))
    df = pl.from_arrow(table.select(cols))
    if not isinstance(df, pl.DataFrame):
        df = df.to_frame()
    return pa.array(df.hash_rows(seed=7).to_numpy().view(np.int64))


def fingerprint(hashes, rows: int | None = None) -> str:
    """Order-independent fingerprint of a load: its row count and the sum of its row hashes (mod 2^64).

    Two fingerprints can be combined by ``combine_fingerprints`` (partitions read in parallel).
    """
    import numpy as np
    import pyarrow as pa

    arr = hashes.combine_chunks() if isinstance(hashes, pa.ChunkedArray) else hashes
    total = int(np.add.reduce(arr.to_numpy(zero_copy_only=False).view(np.uint64), dtype=np.uint64)) if len(arr) else 0
    return f"{len(arr) if rows is None else rows}:{total:016x}"


def combine_fingerprints(parts: list[str]) -> str:
    """The fingerprint of the union of loads with fingerprints `parts`."""
    rows, total = 0, 0
    for p in parts:
        n, h = p.split(":")
        rows += int(n)
        total = (total + int(h, 16)) % (1 << 64)
    return f"{rows}:{total:016x}"
