"""The dataset every connector contract case serves as its resource ``people``."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BASE_TS = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def people_rows(start: int = 1, count: int = 200) -> list[dict[str, Any]]:
    """Rows id=start..start+count-1; updated_at grows with id (the incremental cursor)."""
    return [
        {
            "id": i,
            "name": f"person {i}" + (" é" if i % 7 == 0 else ""),
            "score": round(i * 1.5, 2),
            "updated_at": BASE_TS + dt.timedelta(minutes=i),
        }
        for i in range(start, start + count)
    ]


@dataclass
class ContractCase:
    """What a connector family provides to the contract suite.

    make():        a connector whose resource "people" holds people_rows(1, 200)
                   and uses "updated_at" (or new files, for the files connector) as its incremental cursor
    add_rows(rs):  append rows to the source so that an incremental read sees them
    make_bad_auth: a connector with a wrong password/token (None where the source has no auth)
    """

    kind: str
    make: Callable[[], Any]
    add_rows: Callable[[list[dict[str, Any]]], None]
    make_bad_auth: Callable[[], Any] | None = None
    make_unreachable: Callable[[], Any] | None = None
