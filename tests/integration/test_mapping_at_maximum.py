"""The whole matcher with the real embedding model at the documented maximum (columns and token
budget both at their limit), moved from tests/unit/test_mapping_limits.py (the unit tier loads no
model). How long it takes is a benchmark's question (benchmarks/api_load.py), not a test's."""
import time

import pytest

from eai_ray.processing.mapping.limits import MapLimits
from eai_ray.processing.mapping.matcher import map_columns
from tests.unit.test_mapping_limits import max_size_columns

pytestmark = pytest.mark.integration


def test_matcher_at_the_maximum_maps_every_column():
    from eai_ray.processing.mapping.scorer import CachedEncoder
    from eai_ray.processing.models.embedder import Embedder

    lim = MapLimits()
    src, tgt = max_size_columns(lim, 2)
    enc = CachedEncoder(Embedder.load("cpu"))
    t0 = time.perf_counter()
    res = map_columns(src, tgt, encode=enc, limits=lim)
    print(f"map_columns at the maximum: {time.perf_counter() - t0:.2f} s")
    assert [r["source"] for r in res] == [c["name"] for c in src]
    assert all(0.0 <= r["confidence"] <= 1.0 and r["rationale"] for r in res)
