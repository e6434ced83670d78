"""Valentine-style fabrication of schema-matching tasks from generic tables.

A table is split into a source and a target (vertical split with overlapping columns, horizontal
split of the rows with or without overlap); the source's names are made noisy (abbreviated,
re-cased, prefixed, synonyms, typos), its values noisy (typos, other date formats, case), and some
columns split or merged. The ground truth is known, so the same code makes training pairs for
the scorer and evaluation pairs for the benchmark (on tables never used for training).

Example::

    tables = tpc_tables("tpch", sf=0.01)
    tasks = fabricate(tables, variants=3, seed=1)
    tasks[0].source[0]["name"], tasks[0].gold
"""
from __future__ import annotations

import datetime as dt
import decimal
import importlib.util
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eai_ray.processing.mapping import names as N

CORPUS_PATH = Path(__file__).parent / "data" / "corpus_tpcds_train.json"

# Tables of TPC-DS the shipped scorer is trained on; every other TPC-DS table and all of TPC-H
# are held out for evaluation (benchmarks/schema_match.py).
TPCDS_TRAIN = ("call_center", "catalog_page", "catalog_sales", "customer", "date_dim",
               "household_demographics", "item", "promotion", "ship_mode", "store_sales", "warehouse",
               "web_page", "inventory")
TPCDS_HOLDOUT = ("catalog_returns", "customer_address", "customer_demographics", "income_band", "reason",
                 "store", "store_returns", "time_dim", "web_returns", "web_sales", "web_site")

SYNONYMS: dict[str, list[str]] = {
    "customer": ["client", "buyer", "purchaser"], "amount": ["total", "sum", "value"], "price": ["cost", "rate"],
    "cost": ["price", "expense"], "date": ["day", "dt"], "name": ["title", "label"],
    "description": ["details", "desc", "info"], "comment": ["note", "remark", "remarks"], "phone": ["telephone", "tel"],
    "address": ["addr", "location"], "country": ["nation", "ctry"], "nation": ["country"], "id": ["key", "identifier"],
    "key": ["id", "identifier"], "sk": ["id", "key"], "status": ["state", "stage"], "product": ["item", "article"],
    "item": ["product", "article"], "part": ["component", "item"], "supplier": ["vendor", "provider"],
    "order": ["purchase"], "employee": ["staff", "worker"], "city": ["town"], "zip": ["postal", "postcode"],
    "quantity": ["units", "qty", "count"], "number": ["num", "no", "nbr"], "discount": ["rebate", "reduction"],
    "manager": ["supervisor", "head"], "first": ["given"], "last": ["family", "sur"], "email": ["mail", "e_mail"],
    "street": ["road", "st"], "region": ["area", "zone"], "type": ["kind", "category"], "category": ["class", "group"],
    "start": ["begin", "from"], "end": ["finish", "to"], "profit": ["margin", "earnings"], "sales": ["revenue"],
    "returned": ["refunded"], "tax": ["vat", "levy"], "ship": ["delivery", "dispatch"], "time": ["hour", "moment"],
    "year": ["yr"], "month": ["mon"], "count": ["number", "total"], "size": ["dimension"], "brand": ["make", "label"],
    "store": ["shop", "outlet"], "web": ["online", "internet"], "site": ["website"], "gender": ["sex"],
    "birth": ["born"], "income": ["earnings", "salary"], "balance": ["credit"], "segment": ["sector"],
    "priority": ["urgency"], "clerk": ["agent"], "comment_text": ["notes"],
}
_REVERSE_ABBR: dict[str, list[str]] = {}
for _a, _full in N.ABBREVIATIONS.items():
    if " " not in _full and len(_a) < len(_full):
        _REVERSE_ABBR.setdefault(_full, []).append(_a)


@dataclass
class Task:
    """One fabricated matching task: source and target columns and the true correspondences."""
    source: list[dict[str, Any]]
    target: list[dict[str, Any]]
    gold: dict[str, set[str]] = field(default_factory=dict)  # source name -> acceptable target names
    table: str = ""
    kind: str = ""


# ---------------------------------------------------------------------- data
def extension_path(kind: str) -> str:
    spec = importlib.util.find_spec(f"duckdb_extension_{kind}")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"pip install duckdb-extension-{kind}==<duckdb version> to generate {kind.upper()} data")
    found = sorted(Path(spec.submodule_search_locations[0]).rglob(f"{kind}.duckdb_extension"))
    if not found:
        raise ImportError(f"no {kind}.duckdb_extension inside duckdb-extension-{kind}")
    return str(found[-1])


def _jsonable(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (dt.date, dt.datetime, dt.time)):
        return v.isoformat()
    return v


def tpc_tables(kind: str, *, sf: float = 0.01, rows: int = 80, seed: int = 0,
               only: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Tables of TPC-H or TPC-DS generated offline by DuckDB: {table: {columns: [[name, type]], rows}}."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"LOAD '{extension_path(kind)}'")
    con.execute(f"CALL {'dbgen' if kind == 'tpch' else 'dsdgen'}(sf={sf})")
    out: dict[str, dict[str, Any]] = {}
    for (name,) in con.execute("SHOW TABLES").fetchall():
        if only and name not in only:
            continue
        cols = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {name}").fetchall()]
        data = con.execute(f"SELECT * FROM {name} USING SAMPLE reservoir({rows} ROWS) REPEATABLE ({seed})").fetchall()
        out[name] = {"columns": [list(c) for c in cols], "rows": [[_jsonable(v) for v in r] for r in data]}
    con.close()
    return out


def build_corpus(path: Path = CORPUS_PATH) -> Path:
    """Write the training corpus shipped with the package (TPC-DS training tables, 120 rows each)."""
    tables = tpc_tables("tpcds", sf=0.1, rows=120, seed=7, only=TPCDS_TRAIN)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tables, separators=(",", ":"), sort_keys=True))
    return path


def load_corpus(path: Path = CORPUS_PATH) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------- name noise
def _style(tokens: list[str], rng: random.Random) -> str:
    style = rng.choice(["snake", "snake", "camel", "pascal", "upper", "concat", "kebab"])
    tokens = [t for t in tokens if t] or ["col"]
    if style == "camel":
        return tokens[0].lower() + "".join(t.capitalize() for t in tokens[1:])
    if style == "pascal":
        return "".join(t.capitalize() for t in tokens)
    if style == "upper":
        return "_".join(tokens).upper()
    if style == "concat":
        return "".join(tokens).lower()
    if style == "kebab":
        return "-".join(tokens).lower()
    return "_".join(tokens).lower()


def _abbreviate(tok: str, rng: random.Random) -> str:
    if tok in _REVERSE_ABBR and rng.random() < 0.6:
        return rng.choice(_REVERSE_ABBR[tok])
    if len(tok) <= 3:
        return tok
    how = rng.random()
    if how < 0.4:
        return tok[: rng.randint(3, min(4, len(tok) - 1))]
    if how < 0.8:
        consonants = tok[0] + "".join(c for c in tok[1:] if c not in "aeiou")
        return consonants if len(consonants) >= 2 else tok
    return tok[0]


def _typo(s: str, rng: random.Random) -> str:
    if len(s) < 4:
        return s
    i = rng.randrange(1, len(s) - 1)
    op = rng.random()
    if op < 0.4:
        return s[:i] + s[i + 1:]
    if op < 0.7:
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    return s[:i] + rng.choice("aeiourstn") + s[i:]


def noisy_name(name: str, prefix: str, rng: random.Random, *, level: float) -> str:
    """A realistic renaming of `name` at noise `level` (0 = verbatim, 1 = heavily changed)."""
    toks = list(N.raw_tokens(name[len(prefix):] if prefix and name.lower().startswith(prefix) else name))
    words: list[str] = []
    for t in toks:
        words.extend(N.segment(t))
    if rng.random() < 0.04 * level:
        return f"{rng.choice(['col', 'field', 'attr', 'c', 'f'])}{rng.randint(1, 60)}"  # opaque name: values must decide
    out = []
    for w in words:
        r = rng.random()
        if w in SYNONYMS and r < 0.35 * level:
            out.extend(N.raw_tokens(rng.choice(SYNONYMS[w])))
        elif r < 0.35 * level + 0.45 * level:
            out.append(_abbreviate(w, rng))
        else:
            out.append(w)
    if len(out) > 2 and rng.random() < 0.15 * level:
        out.pop(rng.randrange(len(out)))
    if rng.random() < 0.3:
        out.insert(0, rng.choice(["src", "s", "tbl", "t1", "raw", "x"]) if rng.random() < 0.5 else prefix.rstrip("_") or "c")
    new = _style(out, rng)
    if rng.random() < 0.2 * level:
        new = _typo(new, rng)
    return new


# ---------------------------------------------------------------------- value noise
def _noisy_value(v: Any, rng: random.Random, date_fmt: str | None, level: float) -> Any:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            d = dt.date.fromisoformat(v) if len(v) == 10 else None
        except ValueError:
            d = None
        if d is not None and date_fmt:
            return d.strftime(date_fmt)
        if rng.random() < 0.15 * level:
            return _typo(v, rng)
        return v
    if isinstance(v, float) and rng.random() < 0.2 * level:
        return round(v * (1 + rng.uniform(-0.02, 0.02)), 2)
    return v


# ---------------------------------------------------------------------- tasks
def fabricate(tables: dict[str, dict[str, Any]], *, variants: int = 4, seed: int = 0,
              samples: int = 20) -> list[Task]:
    """`variants` tasks per table with increasing noise: verbatim-ish to noisy names and values."""
    rng = random.Random(seed)
    tasks: list[Task] = []
    for tname in sorted(tables):
        t = tables[tname]
        cols = [c[0] for c in t["columns"]]
        types = {c[0]: c[1] for c in t["columns"]}
        rows = t["rows"]
        if len(cols) < 2 or not rows:
            continue
        prefix = N.common_prefix(cols)
        for v in range(variants):
            level = [0.3, 0.6, 0.9, 1.0][v % 4]
            tasks.append(_one(tname, cols, types, rows, prefix, rng, level, samples))
    return tasks


def _column_values(rows: list[list[Any]], idx: int) -> list[Any]:
    return [r[idx] for r in rows]


def _one(tname: str, cols: list[str], types: dict[str, str], rows: list[list[Any]], prefix: str,
         rng: random.Random, level: float, samples: int) -> Task:
    n = len(cols)
    overlap = rng.uniform(0.5, 1.0)
    order = cols[:]
    rng.shuffle(order)
    k_shared = max(1, round(n * overlap))
    shared = order[:k_shared]
    rest = order[k_shared:]
    src_only = rest[: len(rest) // 2]
    tgt_only = rest[len(rest) // 2:]
    # horizontal split: overlapping rows (joinable) or disjoint rows (unionable)
    rows = rows[:]
    rng.shuffle(rows)
    half = len(rows) // 2
    if rng.random() < 0.5:
        src_rows, tgt_rows = rows[: half + half // 2], rows[half // 2:]
    else:
        src_rows, tgt_rows = rows[:half], rows[half:]
    idx = {c: i for i, c in enumerate(cols)}
    date_fmt = rng.choice([None, None, "%m/%d/%Y", "%d.%m.%Y", "%Y%m%d"]) if level > 0.5 else None
    declare_src_types = rng.random() < 0.5

    def samples_of(rows_, c, noisy):
        vals = _column_values(rows_, idx[c])
        vals = [_noisy_value(x, rng, date_fmt, level) for x in vals] if noisy else vals
        return vals[:samples]

    target = [{"name": c, "type": types[c], "samples": samples_of(tgt_rows, c, False)} for c in shared + tgt_only]
    rng.shuffle(target)
    source: list[dict[str, Any]] = []
    gold: dict[str, set[str]] = {}
    used_names: set[str] = set()

    def add(name: str, typ: str | None, vals: list[Any], truth: set[str]):
        base = name
        k = 2
        while name in used_names:
            name = f"{base}{k}"
            k += 1
        used_names.add(name)
        col = {"name": name, "samples": vals}
        if typ and declare_src_types:
            col["type"] = typ
        source.append(col)
        if truth:
            gold[name] = truth

    merged_done = split_done = False
    for c in shared + src_only:
        truth = {c} if c in shared else set()
        vals = samples_of(src_rows, c, True)
        r = rng.random()
        fam_string = "VARCHAR" in types[c].upper()
        if not split_done and fam_string and truth and r < 0.12 * level and \
                any(isinstance(x, str) and " " in x for x in vals):
            # split column: the first part keeps the meaning, the second part is an unmatched extra
            split_done = True
            add(noisy_name(c, prefix, rng, level=level) + rng.choice(["_1", "_part1", "_first", "A"]), types[c],
                [x.split(" ", 1)[0] if isinstance(x, str) else x for x in vals], truth)
            add(noisy_name(c, prefix, rng, level=level) + rng.choice(["_2", "_part2", "_rest", "B"]), types[c],
                [x.split(" ", 1)[1] if isinstance(x, str) and " " in x else "" for x in vals], set())
            continue
        if not merged_done and fam_string and truth and r > 1 - 0.12 * level:
            partners = [p for p in shared if p != c and "VARCHAR" in types[p].upper()]
            if partners:
                merged_done = True
                p = rng.choice(partners)
                pv = samples_of(src_rows, p, True)
                name = noisy_name(c, prefix, rng, level=level) + "_" + noisy_name(p, prefix, rng, level=level)
                add(name, types[c], [f"{a} {b}" for a, b in zip(vals, pv)], {c, p})
                continue
        add(noisy_name(c, prefix, rng, level=level), types[c], vals, truth)
    # merged partners still present on their own: the merged column's gold keeps both options
    rng.shuffle(source)
    return Task(source=source, target=target, gold=gold, table=tname, kind=f"noise={level}")
