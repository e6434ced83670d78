"""The one place where eai-ray changes pyiceberg's behaviour, each change pinned by a test
(``tests/unit/test_pyiceberg_compat.py``) so an upgrade that makes it unnecessary or wrong shows.

- A NULL ``list<struct<...>>`` is written as an empty list by pyiceberg 0.12: its projection
  visitor rebuilds list arrays from their offsets and drops the validity bitmap
  (apache/iceberg-python#3833, fix proposed in #3834). The value is then lost at rest. We wrap the
  visitor's ``list`` to put the input's null mask back on its result.
"""
from __future__ import annotations

import pyarrow as pa

_installed = False


def install() -> None:
    """Apply the fixes once per process (idempotent)."""
    global _installed
    if _installed:
        return
    from pyiceberg.io.pyarrow import ArrowProjectionVisitor

    original = ArrowProjectionVisitor.list

    def list_keeping_nulls(self, list_type, list_array, value_array):
        out = original(self, list_type, list_array, value_array)
        if out is None or list_array is None or not list_array.null_count or out.null_count == list_array.null_count:
            return out
        return _with_mask(out, list_array.is_null())

    ArrowProjectionVisitor.list = list_keeping_nulls  # type: ignore[method-assign]  # the patch itself
    _installed = True


def _with_mask(arr: pa.Array, mask: pa.Array) -> pa.Array:
    """`arr` (a list array) with `mask` as its validity: null where mask is true."""
    cls = pa.LargeListArray if pa.types.is_large_list(arr.type) else pa.ListArray
    return cls.from_arrays(arr.offsets, arr.values, type=arr.type, mask=mask)
