"""Sniffing a file's layout from its bytes: compression, format, encoding, CSV dialect and header.

Every answer is a ``Guess``: the value, a confidence in [0, 1] and one line of
evidence, so discovery can show why a file was read the way it was. The
functions are pure (bytes or text in, guesses out) and never raise on odd
input; an explicit config value is never sniffed (``sniff_file`` takes it as is,
with confidence 1).

Encoding, in order: a byte order mark (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE); NUL
byte patterns (UTF-16/32 without a BOM); valid UTF-8; bytes that are mostly
valid UTF-8 with a few broken ones (UTF-8: the broken rows are quarantined);
text in a non-Latin script that ``charset-normalizer`` recognises; Western
single-byte text (cp1252, reported as ``latin-1`` when no byte in 0x80-0x9F
tells them apart); another encoding ``charset-normalizer`` is sure of; else
UTF-8 with the undecodable rows quarantined.

Example::

    from eai_ray.ingestion.sniff import sniff_file
    info = sniff_file(b"id;name\\r\\n1;caf\\xe9\\r\\n", name="a.csv")
    info.encoding.value, info.delimiter.value, info.header.value   # ('latin-1', ';', True)
    info.to_dict()["encoding"]["confidence"]
"""
from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import posixpath
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

Format = Literal["csv", "json", "jsonl", "parquet"]

SAMPLE_BYTES = 64 * 1024  # the dialect and header are sniffed on this much text
ENCODING_WINDOW = 512 * 1024  # bytes examined to choose between UTF-8 and single-byte encodings
DELIMITERS = (",", ";", "\t", "|")
QUOTES = ('"', "'")

EXTENSIONS: dict[str, Format] = {".csv": "csv", ".tsv": "csv", ".tab": "csv", ".txt": "csv", ".psv": "csv",
                                 ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
                                 ".parquet": "parquet", ".pq": "parquet"}
COMPRESSION_EXTENSIONS = (".gz", ".gzip", ".bz2", ".xz", ".zst", ".zstd")

# magic bytes of the compressions we can undo (stdlib, plus zstandard when installed)
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
# longest first: a UTF-32 LE BOM starts with the UTF-16 LE one
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


@dataclass(frozen=True)
class Guess:
    """One sniffed setting: the value, how sure we are (0..1) and why."""

    value: Any
    confidence: float = 1.0
    evidence: str = "set in the config"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "confidence": round(self.confidence, 3), "evidence": self.evidence}


@dataclass
class FileSniff:
    """How one file is read. CSV fields are None for other formats."""

    format: Guess
    compression: Guess
    encoding: Guess | None = None
    delimiter: Guess | None = None
    quotechar: Guess | None = None
    header: Guess | None = None
    columns: int | None = None  # the usual number of fields per CSV record in the sample
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("format", "compression", "encoding", "delimiter", "quotechar", "header"):
            guess = getattr(self, name)
            if guess is not None:
                out[name] = guess.to_dict()
        if self.columns is not None:
            out["columns"] = self.columns
        if self.notes:
            out["notes"] = list(self.notes)
        return out


# --------------------------------------------------------------------------- compression
def sniff_compression(head: bytes) -> Guess:
    """Compression from the first bytes, whatever the file is called.

    >>> sniff_compression(b"\\x1f\\x8b\\x08").value
    'gzip'
    """
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return Guess(name, 1.0, f"magic bytes {magic.hex(' ')}")
    return Guess(None, 1.0, "no compression magic bytes")


def decompress(data: bytes, compression: str | None) -> bytes:
    """Undo ``compression`` (a ``sniff_compression`` value); None returns the bytes as they are."""
    if compression is None:
        return data
    if compression == "gzip":
        return gzip.decompress(data)  # all members, as gunzip does
    if compression == "bz2":
        return bz2.decompress(data)
    if compression == "xz":
        return lzma.decompress(data)
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise ImportError("reading zstd files needs the zstandard package: pip install zstandard") from None
        try:
            return zstandard.ZstdDecompressor().stream_reader(data).read()
        except zstandard.ZstdError as exc:
            raise ValueError(f"corrupt zstd data: {exc}") from None
    raise ValueError(f"unknown compression {compression!r}")


def strip_compression_suffix(name: str) -> str:
    low = name.lower()
    for ext in COMPRESSION_EXTENSIONS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


# --------------------------------------------------------------------------- format
def format_from_name(name: str) -> Guess | None:
    """Format from the extension (compression suffixes ignored); None when it does not tell."""
    ext = posixpath.splitext(strip_compression_suffix(name).lower())[1]
    fmt = EXTENSIONS.get(ext)
    return Guess(fmt, 1.0, f"extension {ext}") if fmt else None


def sniff_format(data: bytes, *, name: str = "", encoding: str | None = None) -> Guess | None:
    """Parquet by its magic bytes, else the extension, else the text: JSON, JSON lines or CSV.

    Returns None for content that is not text (a binary file we cannot read).

    >>> sniff_format(b'{"a": 1}\\n{"a": 2}\\n', name="data").value
    'jsonl'
    """
    if data[:4] == b"PAR1":
        return Guess("parquet", 1.0, "magic bytes PAR1")
    by_name = format_from_name(name)
    if by_name is not None:
        return by_name
    enc = encoding or sniff_encoding(data[:SAMPLE_BYTES]).value
    text = _sample_text(data, enc)
    if not text.strip():
        return Guess("csv", 0.5, "empty file without a known extension")
    if "\x00" in text or _control_share(text) > 0.05:
        return None
    stripped = text.lstrip()
    if stripped[0] == "[":
        return Guess("json", 0.9, "text starts with '['")
    if stripped[0] == "{":
        lines = [ln for ln in stripped.splitlines() if ln.strip()][:5]
        if len(lines) > 1 and all(_is_json_object(ln) for ln in lines[:-1]):
            return Guess("jsonl", 0.95, "each sampled line is a JSON object")
        return Guess("json", 0.8, "text starts with '{'")
    return Guess("csv", 0.7, "text that is not JSON")


def _is_json_object(line: str) -> bool:
    import json

    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _control_share(text: str) -> float:
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\r\n\f")
    return controls / max(len(text), 1)


# --------------------------------------------------------------------------- encoding
def bom_of(data: bytes) -> tuple[str, int] | None:
    """(encoding, BOM length) when the data starts with a byte order mark."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name, len(bom)
    return None


def codec_unit(encoding: str) -> int:
    """Bytes per code unit: 2 for UTF-16, 4 for UTF-32, else 1 (ASCII-compatible)."""
    name = codecs.lookup(encoding).name
    return 4 if name.startswith("utf-32") else 2 if name.startswith("utf-16") else 1


def is_valid_utf8(data: bytes) -> bool:
    """Whole-buffer UTF-8 check without building a Python string (Arrow validates in C)."""
    import numpy as np
    import pyarrow as pa

    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64).tobytes())
    try:
        pa.LargeStringArray.from_buffers(1, offsets, pa.py_buffer(data)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def sniff_encoding(data: bytes) -> Guess:
    """The text encoding of ``data`` (a Python codec name), with confidence and evidence.

    >>> sniff_encoding("Müller;Genève\\n".encode("latin-1")).value
    'latin-1'
    >>> sniff_encoding(codecs.BOM_UTF16_LE + "a,b".encode("utf-16-le")).value
    'utf-16-le'
    """
    bom = bom_of(data)
    if bom is not None:
        return Guess(bom[0], 1.0, f"byte order mark {data[:bom[1]].hex(' ')}")
    wide = _utf16_32_by_nuls(data[:4096])
    if wide is not None:
        return wide
    if is_valid_utf8(data):
        if data.isascii():
            return Guess("utf-8", 1.0, "ASCII only (UTF-8 compatible)")
        return Guess("utf-8", 1.0, "valid UTF-8 with non-ASCII characters")
    window = _window(data)
    valid, invalid = _utf8_counts(window)
    if valid and valid * 10 >= invalid:  # Latin-1 text almost never forms a valid UTF-8 sequence by chance
        return Guess("utf-8", valid / (valid + invalid),
                     f"{valid} valid multi-byte UTF-8 sequences and {invalid} invalid bytes in the sample: "
                     "UTF-8, rows with invalid bytes are quarantined")
    detected = _detected(window)
    if detected is not None and _non_latin_share(window, detected.encoding) >= 0.8 and detected.coherence >= 0.2:
        return Guess(_codec_name(detected.encoding), _detector_confidence(detected),
                     f"charset-normalizer: {detected.language} text in {detected.encoding}")
    western = western_plausibility(window)
    if western >= 0.8:
        name = _western_name(window)
        same = "" if name == "cp1252" else " (identical to cp1252 for these bytes)"
        return Guess(name, western,
                     f"{western:.0%} of the non-ASCII bytes read as Western European letters or symbols{same}")
    if detected is not None and detected.language != "Unknown" and detected.chaos < 0.2 \
            and detected.coherence >= 0.2 and letter_share(window, detected.encoding) >= 0.8:
        return Guess(_codec_name(detected.encoding), _detector_confidence(detected),
                     f"charset-normalizer: {detected.language} text in {detected.encoding}")
    return Guess("utf-8", max(0.3, min(0.9, 1.0 - western)),
                 f"{invalid} byte(s) in the sample are not valid UTF-8 and no single-byte encoding reads them as "
                 "text: UTF-8, rows with invalid bytes are quarantined")


def _utf16_32_by_nuls(head: bytes) -> Guess | None:
    """UTF-16/32 without a BOM: ASCII-heavy text has a NUL in every other (or 3 of 4) byte positions."""
    if len(head) < 8 or b"\x00" not in head:
        return None
    for unit, name in ((4, "utf-32"), (2, "utf-16")):
        n = len(head) // unit * unit
        if n == 0:
            continue
        cells = [head[i:n:unit] for i in range(unit)]
        zero = [c.count(0) / len(c) for c in cells]
        if unit == 4:
            if min(zero[1:]) > 0.9 and zero[0] < 0.3:
                order = "le"
            elif min(zero[:3]) > 0.9 and zero[3] < 0.3:
                order = "be"
            else:
                continue
        else:
            if zero[1] > 0.6 and zero[0] < 0.1:
                order = "le"
            elif zero[0] > 0.6 and zero[1] < 0.1:
                order = "be"
            else:
                continue
        codec = f"{name}-{order}"
        try:
            head[:n].decode(codec)
        except UnicodeDecodeError:
            continue
        return Guess(codec, 0.95, f"no BOM; NUL bytes in the pattern of {name.upper()} {order.upper()}")
    return None


def _window(data: bytes) -> bytes:
    """The head of the file plus the region around its first invalid UTF-8 byte, cut at line ends."""
    if len(data) <= 2 * ENCODING_WINDOW:
        return data
    head = data[:ENCODING_WINDOW]
    try:
        data.decode("utf-8")
        first_bad = None
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    if first_bad is None or first_bad < ENCODING_WINDOW:
        return head[: head.rfind(b"\n") + 1 or len(head)]
    lo = data.rfind(b"\n", 0, first_bad) + 1
    hi = data.find(b"\n", first_bad, first_bad + ENCODING_WINDOW // 2)
    return head[: head.rfind(b"\n") + 1 or len(head)] + data[lo: hi if hi > 0 else first_bad + 1]


def _utf8_counts(data: bytes) -> tuple[int, int]:
    """(valid multi-byte UTF-8 characters, invalid bytes)."""
    text = data.decode("utf-8", errors="surrogateescape")
    invalid = len(re.findall("[\udc80-\udcff]", text))
    valid = len(re.findall("[^\x00-\x7f\udc80-\udcff]", text))
    return valid, invalid


# Western European text in cp1252/Latin-1: accented letters inside words, symbols next to digits or spaces
_LOWER = set("àáâãäåæçèéêëìíîïñòóôõöøùúûüýœšžß")
_UPPER = set("ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝŒŠŽŸ")
_AMOUNTS = set("€£¥¢°%")  # belong next to a number: '5 €', '20°'
_SYMBOLS = set("§©®±µ·«»¿¡ªº½¼¾²³\u00a0–—‘’‚“”„…•™†‡‰‹›")


def western_plausibility(data: bytes) -> float:
    """Share of the non-ASCII bytes that read, in cp1252, as Western text would.

    An accented letter must touch a letter (or stand alone); a currency sign
    must touch a digit or a space; another symbol must not sit inside a word (an
    apostrophe may). Broken UTF-8 (``\\xff\\xfe``, a lone ``\\x80``) and other
    code pages read as letter soup (``Za¿ó³æ``) and score low.

    >>> western_plausibility("Crème brûlée, 5 €".encode("cp1252"))
    1.0
    """
    text = data.decode("cp1252", errors="replace")
    total = ok = 0
    for m in re.finditer(r"[^\x00-\x7f]", text):
        total += 1
        i, ch = m.start(), m.group()
        prev = text[i - 1] if i else " "
        nxt = text[i + 1] if i + 1 < len(text) else " "
        if ch in _LOWER:  # inside a word, or a word of its own ('à la')
            ok += prev.isalpha() or nxt.isalpha() or (prev in " \t\n,;('\"" and nxt in " \t\n,.;:!?)'\"")
        elif ch in _UPPER:
            ok += nxt.isalpha() or (prev.isalpha() and not prev.islower())
        elif ch in _AMOUNTS:
            ok += prev.isdigit() or nxt.isdigit() or prev == " " or nxt == " "
        elif ch in _SYMBOLS:
            ok += ch == "’" or not (prev.isalpha() and nxt.isalpha())
    return ok / total if total else 0.0


def _western_name(data: bytes) -> str:
    # cp1252 and Latin-1 differ only in 0x80-0x9F (printable in cp1252, C1 controls in Latin-1)
    return "cp1252" if re.search(rb"[\x80-\x9f]", data) else "latin-1"


def _detected(data: bytes):
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # optional: without it only UTF-8/16/32 and Western text are recognised
        return None
    best = from_bytes(data).best()
    if best is None or best.encoding in ("utf_8", "ascii"):
        return None
    return best


def _non_latin_share(data: bytes, encoding: str) -> float:
    """Share of non-ASCII letters that belong to a script other than Latin (Cyrillic, Greek, CJK...)."""
    try:
        text = data.decode(encoding, errors="replace")
    except LookupError:
        return 0.0
    letters = [ch for ch in re.findall(r"[^\x00-\x7f]", text) if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for ch in letters if not unicodedata.name(ch, "").startswith("LATIN")) / len(letters)


def letter_share(data: bytes, encoding: str) -> float:
    """Share of non-ASCII characters that are letters touching another letter, in ``encoding``.

    Text in the right code page reads as words; stray bytes read as symbols.

    >>> letter_share("Zażółć gęślą".encode("cp1250"), "cp1250"), letter_share(b"bad\\xff\\xfe", "cp1250")
    (1.0, 0.0)
    """
    try:
        text = data.decode(encoding, errors="replace")
    except LookupError:
        return 0.0
    total = ok = 0
    for m in re.finditer(r"[^\x00-\x7f]", text):
        total += 1
        i, ch = m.start(), m.group()
        prev = text[i - 1] if i else " "
        nxt = text[i + 1] if i + 1 < len(text) else " "
        ok += ch.isalpha() and (prev.isalpha() or nxt.isalpha())
    return ok / total if total else 0.0


def _detector_confidence(best) -> float:
    return round(max(0.3, min(0.95, (1.0 - best.chaos) * (0.5 + best.coherence))), 3)


def _codec_name(encoding: str) -> str:
    return codecs.lookup(encoding).name


def _sample_text(data: bytes, encoding: str, size: int = SAMPLE_BYTES) -> str:
    """Up to ``size`` bytes decoded (BOM dropped, broken bytes replaced): enough to sniff a layout."""
    bom = bom_of(data)
    start = bom[1] if bom and codecs.lookup(bom[0]).name == codecs.lookup(encoding).name else 0
    unit = codec_unit(encoding)
    chunk = data[start: start + (size // unit) * unit]
    return chunk.decode(encoding, errors="replace")


# --------------------------------------------------------------------------- CSV dialect
@dataclass(frozen=True)
class _Score:
    delimiter: str
    quotechar: str
    width: int  # the most common number of fields
    consistency: float  # share of records with that many fields
    clean: float  # share of fields without another candidate delimiter in them
    records: int


def sniff_dialect(text: str, *, truncated: bool = False, prefer: str = ",",
                  delimiter: str | None = None, quotechar: str | None = None) -> tuple[Guess, Guess, int]:
    """(delimiter, quote char, usual field count) that split the sample into the most consistent records.

    Candidates are ``, ; tab |`` and ``" '``; a fixed ``delimiter``/``quotechar``
    is kept. Ties go to fields without other delimiters in them, then to
    ``prefer``, then to the usual order.

    >>> d, q, width = sniff_dialect('a;b\\r\\n1;"x\\r\\ny"\\r\\n2;"3,5"\\r\\n')
    >>> d.value, q.value, width
    (';', '"', 2)
    """
    delims = [delimiter] if delimiter else sorted(DELIMITERS, key=lambda d: d != prefer)
    quotes = [quotechar] if quotechar else [q for q in QUOTES if q == '"' or _quote_at_field_start(text, q)]
    scores = [s for d in delims for q in quotes if (s := _score(text, d, q, truncated)) is not None]
    if not scores:
        return (Guess(delimiter or prefer, 1.0 if delimiter else 0.5, "no records to sniff"),
                Guess(quotechar or '"', 1.0 if quotechar else 0.5, "no records to sniff"), 0)
    multi = [s for s in scores if s.width >= 2]
    rank = {d: i for i, d in enumerate(delims)}
    if not multi:
        best = min(scores, key=lambda s: (rank[s.delimiter], QUOTES.index(s.quotechar) if s.quotechar in QUOTES else 0))
        d_guess = Guess(best.delimiter, 1.0 if delimiter else 0.9,
                        "set in the config" if delimiter else
                        f"no candidate delimiter splits the {best.records} sampled records: one column")
    else:
        best = max(multi, key=lambda s: (round(s.consistency, 3), round(s.clean, 2), -QUOTES.index(s.quotechar)
                                         if s.quotechar in QUOTES else 0, -rank[s.delimiter]))
        rivals = [s for s in multi if s.delimiter != best.delimiter and s.consistency >= best.consistency - 0.02]
        conf = best.consistency * (0.6 if rivals else 1.0)
        shown = "tab" if best.delimiter == "\t" else repr(best.delimiter)
        evidence = (f"{shown} splits {round(best.consistency * best.records)}/{best.records} sampled records "
                    f"into {best.width} fields")
        if rivals:
            other = "tab" if rivals[0].delimiter == "\t" else repr(rivals[0].delimiter)
            evidence += f"; {other} is as consistent ({rivals[0].width} fields)"
        d_guess = Guess(best.delimiter, 1.0 if delimiter else conf, "set in the config" if delimiter else evidence)
    if quotechar:
        q_guess = Guess(quotechar, 1.0)
    elif best.quotechar not in text:
        q_guess = Guess(best.quotechar, 1.0, "no quote character in the sample")
    else:
        q_guess = Guess(best.quotechar, best.consistency, f"{best.quotechar} quotes fields that hold delimiters "
                                                          "or line breaks")
    return d_guess, q_guess, best.width


def _quote_at_field_start(text: str, q: str) -> bool:
    return re.search(rf"(^|[,;\t|]){re.escape(q)}", text, flags=re.M) is not None


def _score(text: str, delimiter: str, quotechar: str, truncated: bool) -> _Score | None:
    rows = split_records(text, delimiter, quotechar)
    if truncated and len(rows) > 1:
        rows = rows[:-1]  # the sample may end inside a record
    rows = rows[:500]
    if not rows:
        return None
    counts = Counter(len(r) for r in rows)
    width, n = counts.most_common(1)[0]
    others = [d for d in DELIMITERS if d != delimiter]
    fields = [f for r in rows for f in r]
    dirty = sum(1 for f in fields if any(o in f for o in others) and not _COMMA_DECIMAL.match(f))
    return _Score(delimiter, quotechar, width, n / len(rows), 1 - dirty / max(len(fields), 1), len(rows))


_COMMA_DECIMAL = re.compile(r"^\s*[+-]?\d{1,3}(\.?\d{3})*,\d+\s*$")


def split_records(text: str, delimiter: str, quotechar: str | None) -> list[list[str]]:
    """Records of a CSV sample (blank lines skipped) parsed by the csv module."""
    csv.field_size_limit(2**31 - 1)
    # StringIO(newline="") ends lines only at CR/LF, as CSV does (str.splitlines would also split at U+2028)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar or '"',
                        quoting=csv.QUOTE_NONE if quotechar is None else csv.QUOTE_MINIMAL, strict=False)
    rows = []
    try:
        for row in reader:
            if row:
                rows.append(row)
    except csv.Error:
        pass  # a NUL or an unterminated field: score what we have
    return rows


# --------------------------------------------------------------------------- header
_NUMBER = re.compile(r"^\s*[+-]?(\d[\d_']*([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?\s*%?\s*$")
_DATE = re.compile(r"^\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})([T ]\d{1,2}:\d{2}.*)?\s*$")
_BOOL = re.compile(r"^\s*(true|false)\s*$", re.I)


def value_kind(value: str) -> str:
    """'empty', 'number', 'date', 'bool' or 'text': the shape of one CSV field."""
    if not value.strip():
        return "empty"
    if _NUMBER.match(value):
        return "number"
    if _DATE.match(value):
        return "date"
    if _BOOL.match(value):
        return "bool"
    return "text"


def sniff_header(rows: list[list[str]]) -> Guess:
    """Whether the first record names the columns.

    A column votes for a header when its first value is text and the values
    below are numbers, dates or booleans (or all one length that the first is
    not); it votes against when the first value has the same shape as the rest
    or repeats one of them. A tie reads the first record as a header, the usual
    layout.

    >>> sniff_header([["id", "price"], ["1", "2.50"], ["2", "3.00"]]).value
    True
    >>> sniff_header([["1", "2.50"], ["2", "3.00"]]).value
    False
    """
    if not rows:
        return Guess(False, 1.0, "no records")
    first, body = rows[0], rows[1:101]
    if not body:
        if any(value_kind(v) in ("number", "date") for v in first):
            return Guess(False, 0.6, "a single record holding numbers or dates: data, not names")
        return Guess(True, 0.6, "a single record of text: read as the header (no data rows)")
    votes_for = votes_against = 0.0
    for i, name in enumerate(first):
        values = [r[i] for r in body if i < len(r) and r[i].strip()]
        if not values:
            continue
        kinds = Counter(value_kind(v) for v in values)
        kind, n = kinds.most_common(1)[0]
        head = value_kind(name)
        if n / len(values) < 0.8:
            continue  # a mixed column says nothing
        if kind in ("number", "date", "bool"):
            if head == "text":
                votes_for += 1
            elif head == kind:
                votes_against += 1
        elif head == "text":
            lengths = {len(v) for v in values}
            if name in values:
                votes_against += 0.5
            elif len(lengths) == 1 and len(name) not in lengths:
                votes_for += 0.5
        elif head in ("number", "date"):
            votes_against += 0.5
    if votes_for > votes_against:
        conf = 0.5 + 0.5 * (votes_for - votes_against) / (votes_for + votes_against)
        return Guess(True, conf, f"first record differs in shape from the rest in {votes_for:g} column(s)")
    if votes_against > votes_for:
        conf = 0.5 + 0.5 * (votes_against - votes_for) / (votes_for + votes_against)
        return Guess(False, conf, f"first record has the same shape as the rest in {votes_against:g} column(s)")
    return Guess(True, 0.5, "undecided (all text): the first record is read as the header")


# --------------------------------------------------------------------------- all together
def sniff_file(data: bytes, *, name: str = "", format: str = "auto", encoding: str = "auto",  # noqa: A002
               delimiter: str = "auto", quotechar: str = "auto", header: bool | str = "auto") -> FileSniff:
    """How to read one file's (already decompressed) bytes; config values other than 'auto' win.

    ``quotechar='none'`` turns quoting off. Parquet gets only its format.

    >>> info = sniff_file("id\\tname\\n1\\tJosé\\n".encode("utf-16"), name="export.txt")
    >>> info.encoding.value, info.delimiter.value
    ('utf-16-le', '\\t')
    """
    if format != "auto":
        fmt = Guess(format, 1.0)
    else:
        fmt = sniff_format(data, name=name, encoding=None if encoding == "auto" else encoding) or \
            Guess(None, 0.0, "not text and no known extension")
    info = FileSniff(format=fmt, compression=Guess(None, 1.0, "not compressed"))
    if fmt.value == "parquet" or fmt.value is None:
        return info
    info.encoding = Guess(encoding, 1.0) if encoding != "auto" else sniff_encoding(data)
    bom = bom_of(data)
    body = data[bom[1]:] if bom else data
    if not body.strip(b"\x00\r\n\t \xef\xbb\xbf\xfe\xff"):
        info.notes.append("empty file: no records")
    if fmt.value != "csv":
        return info
    text = _sample_text(data, info.encoding.value)
    truncated = len(data) > SAMPLE_BYTES
    if truncated and "\n" in text:
        text = text[: text.rfind("\n") + 1]
    prefer = "\t" if posixpath.splitext(strip_compression_suffix(name).lower())[1] in (".tsv", ".tab") else \
        "|" if name.lower().endswith(".psv") else ","
    quote = None if quotechar in ("auto", "none") else quotechar
    info.delimiter, info.quotechar, info.columns = sniff_dialect(
        text, truncated=truncated, prefer=prefer, delimiter=None if delimiter == "auto" else delimiter,
        quotechar=quote)
    if quotechar == "none":
        info.quotechar = Guess(None, 1.0, "quoting turned off in the config")
    rows = split_records(text, info.delimiter.value, info.quotechar.value)
    if truncated and len(rows) > 1:
        rows = rows[:-1]
    info.header = Guess(bool(header), 1.0) if header != "auto" else sniff_header(rows)
    body_rows = rows[1:] if info.header.value else rows
    if body_rows:
        info.columns = Counter(len(r) for r in body_rows).most_common(1)[0][0]
    elif rows:
        info.columns = len(rows[0])
        if info.header.value:
            info.notes.append("header only: no data rows")
    return info
