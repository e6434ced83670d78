"""Whether an answer's rows are a reference's rows: how NL-to-SQL answers are scored, in the tests
(`tests/reference_answers.py`) and in `benchmarks/nl2sql.py` alike.

Cells are compared as text: numbers to 6 significant digits (an integer sum may come back as a
decimal or a float), dates and timestamps by their day, the rest as ``str``. Rows are compared
order-insensitively unless ``ordered``. An answer may carry extra columns (a "which group is
largest" question answered with the group AND its count): it matches when some choice of its
columns, as many as the reference has, gives the reference's rows.

Example::

    same_result([{"n": 3, "r": "EU"}], [("EU",)])   # True: the extra column is allowed
"""
from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from typing import Any


def normalize_cell(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)) or hasattr(v, "is_finite"):  # int, float or Decimal
        return f"{float(v):.6g}"
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()[:10]
    return str(v)


def same_result(got_rows: list[dict], ref_rows: list[tuple], ordered: bool = False) -> bool:
    """Whether `got_rows` (dicts, as an answer returns them) are `ref_rows` (tuples)."""
    ref = [tuple(sorted(normalize_cell(v) for v in r)) for r in ref_rows]
    got_cells = [[normalize_cell(v) for v in r.values()] for r in got_rows]
    width = len(ref_rows[0]) if ref_rows else 0
    if len(got_cells) != len(ref) or any(len(r) < width for r in got_cells):
        return False
    n_cols = len(got_cells[0]) if got_cells else width
    for cols in itertools.combinations(range(n_cols), width) if n_cols <= 8 else [tuple(range(n_cols))]:
        got = [tuple(sorted(r[i] for i in cols)) for r in got_cells]
        if (got == ref) if ordered else (Counter(got) == Counter(ref)):
            return True
    return False
