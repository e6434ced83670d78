"""Files connector: CSV, JSON, JSONL and Parquet under a local folder or any fsspec URI.

Each resource is a glob under ``source.path``. Every file is sniffed before it
is read (``eai_ray.ingestion.sniff``): compression by magic bytes (a gzip file
needs no ``.gz``), format (Parquet by ``PAR1``, else the extension, else the
text), encoding, CSV delimiter, quote character and header. A config value
other than ``"auto"`` wins over the sniff. What was chosen, with confidence and
evidence, is in ``discover(...).format_info``.

CSV is read with every column as text so bronze keeps what the file said; types
come later (discovery proposes them, silver coerces). Nothing is dropped or
changed silently; every row that could not be read as-is has ``_eai_error``
(silver quarantines it) and keeps its original record in ``_eai_raw``:

- a CSV row with the wrong number of fields: its raw line, columns null;
- bytes that do not decode in the file's encoding: ``_eai_raw`` holds
  ``base64:`` followed by the standard base64 (RFC 4648, padded) of the
  record's original bytes, ``_eai_error`` starts ``type:<column>:`` (or
  ``encoding:`` when no column can be named) and gives the byte offset; the
  damaged columns are null (never a U+FFFD replacement). ``_eai_raw`` is
  base64 only on such rows;
- a malformed JSON line or array element: its raw text;
- a Parquet value Iceberg cannot hold the same way (a nanosecond timestamp with
  sub-microsecond digits, a date or timestamp outside years 1-9999): the row
  lands with that value null and ``_eai_error`` =
  ``type:<column>: value '<iso text>' has nanosecond precision that timestamp[us] would lose``
  (or ``... is outside ...``). Timestamps in any zone are stored as UTC.

Quoted fields keep their bytes: a CRLF inside quotes stays CRLF; CRLF outside
quotes ends a record. JSON: ``_eai_raw`` is the record's original text, so a
``null`` and a missing key stay distinct in bronze; silver flattens both to
NULL in typed columns (read ``_eai_raw`` when the difference matters).
Header-only and empty files land zero rows and say so in ``format_info``.

Incremental reads keep ``{"files": {"<relative path>": {"mtime", "size",
"fingerprint"}}}``: a file is skipped when its modification time is the same,
or, when only the time changed, when its size and content hash (BLAKE2b) are
(a regenerated file with the same bytes is not landed twice). A checkpoint
whose value is a bare mtime (older versions) still reads.

Example::

    from eai_ray.config import FileSource
    conn = FileConnector(FileSource(kind="files", name="shop", path="data/",
                                    resources=[{"name": "orders", "pattern": "orders/*.csv"}]))
    conn.discover("orders").format_info["delimiter"]   # {'value': ';', 'confidence': 1.0, ...}
    for batch in conn.read("orders"):
        print(batch.table.num_rows, batch.checkpoint)
"""
from __future__ import annotations

import base64
import codecs
import csv
import datetime as dt
import hashlib
import json
import logging
import lzma
import posixpath
import re
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eai_ray.config import FileResource, FileSource
from eai_ray.errors import AuthenticationFailed, ConfigError, SourceNotFound, SourceUnavailable
from eai_ray.ingestion.base import (
    ERROR_COLUMN,
    POSITION_COLUMN,
    RAW_COLUMN,
    Batch,
    ColumnInfo,
    DiscoveredSchema,
    Partition,
)
from eai_ray.ingestion.discovery import infer_columns, records_to_table
from eai_ray.ingestion.sniff import (
    FileSniff,
    Guess,
    bom_of,
    codec_unit,
    decompress,
    format_from_name,
    is_valid_utf8,
    sniff_compression,
    sniff_file,
    split_records,
    strip_compression_suffix,
)

META_COLUMNS = (POSITION_COLUMN, RAW_COLUMN, ERROR_COLUMN)
BASE64_PREFIX = "base64:"  # _eai_raw of a row whose bytes did not decode: the original bytes, base64

_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")
_HASH_CHUNK = 8 * 1024 * 1024
_DECODE_BLOCK = 1024 * 1024

log = logging.getLogger(__name__)


@dataclass
class _File:
    path: str  # as the filesystem names it
    rel: str  # relative to the source path: the checkpoint key and the position prefix
    mtime: Any
    size: int | None


class FileConnector:
    """Reads file groups (``FileResource`` globs) under ``source.path``."""

    kind = "files"

    def __init__(self, source: FileSource) -> None:
        self.source = source
        self.name = source.name
        self._fs = None
        self._root = ""
        self._prints: dict[tuple[str, Any, Any], str] = {}  # (path, mtime, size) -> content fingerprint

    # ------------------------------------------------------------------ protocol
    def check(self) -> None:
        """Make sure the source folder exists and can be listed."""
        fs, root = self._filesystem()
        with _mapped_errors(self.source.path):
            if not fs.isdir(root):
                raise SourceNotFound(f"source '{self.name}': folder {self.source.path} does not exist",
                                     source=self.name, path=self.source.path)
            fs.ls(root, detail=False)

    def resources(self) -> list[str]:
        return [r.name for r in self.source.resources]

    def discover(self, resource: str, *, sample_files: int = 3, sample_rows: int = 10_000) -> DiscoveredSchema:
        """Sample the first files of a resource: how each is read (``format_info``) and the column types."""
        res = self._resource(resource)
        files = self._list(res)
        tables, infos, declared = [], {}, True
        for f in files[:sample_files]:
            info, batches = self._open(res, f, sample_rows)
            infos[f.rel] = info
            declared = declared and info.format.value == "parquet"
            tables.append(next(batches, pa.table({})))
            batches.close()  # releases the open Parquet file now, not at garbage collection
        sample = pa.concat_tables([t.drop_columns([c for c in META_COLUMNS if c in t.column_names])
                                   for t in tables], promote_options="permissive")
        if sample.num_columns == 0:
            columns = []  # empty or header-less files only: nothing to type yet
        elif declared:  # Parquet carries its own schema: report it as written (after the UTC/us normalisation)
            columns = [ColumnInfo(f.name, f.type, f.nullable, 1.0, "declared by the Parquet schema")
                       for f in sample.schema]
        else:
            columns = infer_columns(sample, sample_rows=sample_rows)
        for c in columns:
            c.primary_key = c.name in res.primary_key
        estimate = self._row_estimate(files) if declared else None
        return DiscoveredSchema(resource, columns, list(res.primary_key), estimate, format_info(infos))

    def read(self, resource: str, *, checkpoint: dict[str, Any] | None = None,
             partition: Partition | None = None, batch_rows: int = 250_000) -> Iterator[Batch]:
        """Yield batches of new or changed files; each file's last batch carries its checkpoint."""
        res = self._resource(resource)
        files = self._pending(res, checkpoint)
        if partition is not None and partition.predicate:
            wanted = set(partition.predicate.get("files", []))
            files = [f for f in files if f.rel in wanted]
        for f in files:
            yield from self._batches(res, f, batch_rows)

    def plan(self, resource: str, *, checkpoint: dict[str, Any] | None, parallelism: int,
             batch_rows: int) -> list[Partition]:
        """One partition per group of pending files; [] when there is at most one file."""
        files = self._pending(self._resource(resource), checkpoint)
        groups = min(max(parallelism, 1), len(files))
        if groups <= 1:
            return []
        chunks = [files[i::groups] for i in range(groups)]  # round robin spreads big and small files
        return [Partition(resource, f"files {i + 1}/{groups}", {"files": [f.rel for f in chunk]})
                for i, chunk in enumerate(chunks)]

    def close(self) -> None:
        self._fs = None

    # ------------------------------------------------------------------ listing
    def _filesystem(self):
        if self._fs is None:
            import fsspec

            with _mapped_errors(self.source.path):
                fs, root = fsspec.core.url_to_fs(self.source.path, **self.source.storage_options)
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs, self._root

    def _resource(self, name: str) -> FileResource:
        for r in self.source.resources:
            if r.name == name:
                return r
        raise SourceNotFound(f"source '{self.name}' has no resource '{name}'; known: {self.resources()}",
                             source=self.name, resource=name)

    def _list(self, res: FileResource) -> list[_File]:
        fs, root = self._filesystem()
        with _mapped_errors(self.source.path):
            if not fs.isdir(root):
                raise SourceNotFound(f"source '{self.name}': folder {self.source.path} does not exist",
                                     source=self.name, resource=res.name, path=self.source.path)
            found = fs.glob(posixpath.join(root, res.pattern), detail=True)
        files = [_File(p, _relative(p, root), _mtime(info), info.get("size"))
                 for p, info in sorted(found.items()) if info.get("type", "file") == "file"]
        if not files:
            raise SourceNotFound(f"source '{self.name}': no file matches '{res.pattern}' under {self.source.path}",
                                 source=self.name, resource=res.name, pattern=res.pattern)
        return files

    def _pending(self, res: FileResource, checkpoint: dict[str, Any] | None) -> list[_File]:
        seen = (checkpoint or {}).get("files", {})
        pending = []
        for f in self._list(res):
            if f.rel in seen and same_file(seen[f.rel], mtime=f.mtime, size=f.size,
                                           fingerprint=lambda f=f: self._fingerprint(f)):
                continue
            pending.append(f)
        return pending

    def _fingerprint(self, f: _File, data: bytes | None = None) -> str:
        """BLAKE2b of the stored bytes, remembered per (path, mtime, size) so a file is hashed once."""
        key = (f.path, f.mtime, f.size)
        if key not in self._prints:
            if data is not None:
                self._prints[key] = content_fingerprint(data)
            else:
                fs, _ = self._filesystem()
                digest = hashlib.blake2b(digest_size=16)
                with _mapped_errors(f.rel), fs.open(f.path, "rb") as fh:
                    while chunk := fh.read(_HASH_CHUNK):
                        digest.update(chunk)
                self._prints[key] = f"blake2b:{digest.hexdigest()}"
        return self._prints[key]

    def _state(self, f: _File) -> dict[str, Any]:
        return {"mtime": f.mtime, "size": f.size, "fingerprint": self._fingerprint(f)}

    def _row_estimate(self, files: list[_File]) -> int | None:
        import pyarrow.parquet as pq

        fs, _ = self._filesystem()
        total = 0
        for f in files:
            with _mapped_errors(f.rel), fs.open(f.path, "rb") as fh:
                head = fh.read(4)
                if head != b"PAR1":
                    return None  # a compressed Parquet file: no footer to read without inflating it
                fh.seek(0)
                total += pq.ParquetFile(fh).metadata.num_rows
        return total

    # ------------------------------------------------------------------ reading
    def _batches(self, res: FileResource, f: _File, batch_rows: int) -> Iterator[Batch]:
        pending: pa.Table | None = None
        _, tables = self._open(res, f, batch_rows)
        for table in tables:
            if pending is not None:
                yield Batch(pending)
            pending = table
        # the checkpoint rides on the last batch: the file counts as read only once all of it is committed
        yield Batch(pending if pending is not None else pa.table({}), {"files": {f.rel: self._state(f)}})

    def _open(self, res: FileResource, f: _File, batch_rows: int) -> tuple[FileSniff, Generator[pa.Table, None, None]]:
        """Sniff one file and return how it is read plus its tables (lazily, in batches)."""
        by_name = Guess(res.format, 1.0) if res.format != "auto" else format_from_name(f.rel)
        plain = strip_compression_suffix(f.rel) == f.rel
        if by_name is not None and by_name.value == "parquet" and plain:
            info = FileSniff(format=by_name, compression=Guess(None, 1.0, "Parquet compresses inside the file"))
            return info, self._read_parquet(f, batch_rows)
        fs, _ = self._filesystem()
        with _mapped_errors(f.rel), fs.open(f.path, "rb") as fh:
            raw = fh.read()
        self._fingerprint(f, raw)
        compression = sniff_compression(raw[:8])
        if compression.value is None and not plain:
            compression = Guess(None, 1.0, "no compression magic bytes (the name suggests one)")
        try:
            data = decompress(raw, compression.value)
        except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:  # a corrupt archive
            info = FileSniff(format=by_name or Guess(None, 0.0, "unreadable"), compression=compression,
                             notes=[f"cannot decompress ({compression.value}): {exc}"])
            log.warning("%s: %s", f.rel, info.notes[0])
            # a generator, as on every other path: discover() closes what it opened
            return info, (t for t in [_file_error(f.rel, f"file: cannot decompress {compression.value}: {exc}")])
        info = sniff_file(data, name=f.rel, format=res.format, encoding=res.encoding, delimiter=res.delimiter,
                          quotechar=res.quotechar, header=res.header)
        info.compression = compression
        fmt = info.format.value
        if fmt is None:
            raise ConfigError(f"cannot tell the format of '{f.rel}' from its extension or its content",
                              field=f"resources[{res.name}].format", expected="csv, json, jsonl or parquet")
        for note in info.notes:
            log.info("%s: %s", f.rel, note)
        if fmt == "parquet":
            return info, self._read_parquet(f, batch_rows, data=data)
        if fmt == "csv":
            # sniff_file fills the CSV fields for a CSV file
            assert info.delimiter is not None and info.encoding is not None
            assert info.quotechar is not None and info.header is not None
            table = parse_csv(data, rel=f.rel, delimiter=info.delimiter.value, encoding=info.encoding.value,
                              quotechar=info.quotechar.value, header=info.header.value, columns=info.columns)
        else:
            assert info.encoding is not None  # sniff_file sniffs the encoding of every text format
            table = parse_json(data, rel=f.rel, encoding=info.encoding.value, lines=fmt == "jsonl")
        return info, (table.slice(start, batch_rows) for start in range(0, max(table.num_rows, 1), batch_rows))

    def _read_parquet(self, f: _File, batch_rows: int, *, data: bytes | None = None) -> Generator[pa.Table, None, None]:
        import pyarrow.parquet as pq

        fs, _ = self._filesystem()

        def source():
            return pa.BufferReader(data) if data is not None else fs.open(f.path, "rb")

        with _mapped_errors(f.rel), source() as fh, source() as fh_ns:
            # INT96 timestamps (Spark, Impala) read as nanoseconds wrap silently outside 1677-2262: read them as
            # microseconds, and once more as nanoseconds only to find values with sub-microsecond digits
            pf = pq.ParquetFile(fh, coerce_int96_timestamp_unit="us")
            int96 = [c.name for c in pf.schema if c.physical_type == "INT96" and c.path == c.name]
            nanos = pq.ParquetFile(fh_ns).iter_batches(batch_size=batch_rows, columns=int96) if int96 else None
            row = 1
            for rb in pf.iter_batches(batch_size=batch_rows):
                ns = pa.Table.from_batches([next(nanos)]) if nanos is not None else None
                table, errors = storable_parquet(pa.Table.from_batches([rb]), int96_ns=ns)
                positions = _positions(f.rel, pa.array(np.arange(row, row + table.num_rows)))
                row += table.num_rows
                yield table.append_column(POSITION_COLUMN, positions).append_column(ERROR_COLUMN, errors)


def same_file(seen: Any, *, mtime: Any, size: int | None, fingerprint) -> bool:
    """Whether a checkpoint entry describes this file: same mtime (and size), or same size and content.

    ``seen`` is ``{"mtime", "size", "fingerprint"}`` or, from older checkpoints, a
    bare mtime. ``fingerprint`` is a callable, so the file is hashed only when
    its time changed but its size did not.

    >>> same_file({"mtime": 1, "size": 3, "fingerprint": "blake2b:ab"}, mtime=2, size=3,
    ...           fingerprint=lambda: "blake2b:ab")
    True
    """
    if not isinstance(seen, dict):
        return seen == mtime
    if seen.get("mtime") == mtime and seen.get("size") == size:
        return True
    if seen.get("fingerprint") is None or (seen.get("size") is not None and size is not None
                                           and seen["size"] != size):
        return False
    return seen["fingerprint"] == fingerprint()


def content_fingerprint(data: bytes) -> str:
    """A short content hash of a file's stored bytes: ``blake2b:<32 hex digits>``."""
    return f"blake2b:{hashlib.blake2b(data, digest_size=16).hexdigest()}"


def format_info(infos: dict[str, FileSniff]) -> dict[str, Any]:
    """Discovery's view of the sampled files: the first file's settings, notes of all, and each file."""
    if not infos:
        return {}
    per_file = {rel: i.to_dict() for rel, i in infos.items()}
    out = dict(next(iter(per_file.values())))
    notes = [f"{rel}: {n}" for rel, i in infos.items() for n in i.notes]
    if notes:
        out["notes"] = notes
    else:
        out.pop("notes", None)
    out["files"] = per_file
    return out


def _file_error(rel: str, message: str) -> pa.Table:
    """One row standing for a file that cannot be read at all (silver quarantines it)."""
    return _with_meta(pa.Table.from_struct_array(pa.array([{}], pa.struct([]))), rel, [0], [None], [message])


# --------------------------------------------------------------------------- text
@dataclass(frozen=True)
class _BadLine:
    start: int  # offsets in the source bytes (after the BOM) of the physical line, newline excluded
    end: int
    offset: int  # absolute offset in the (decompressed) file of the first byte that does not decode
    run: bytes  # those bytes


@dataclass
class DecodedText:
    """A file's text as UTF-8 bytes, and the physical lines whose bytes did not decode."""

    data: bytes  # UTF-8, no BOM, line ends as in the file (a lone-CR file gets LF)
    source: bytes  # the file's bytes after the BOM
    encoding: str
    bad: dict[int, _BadLine] = field(default_factory=dict)  # 0-based physical line -> damage
    bom: int = 0  # bytes of byte order mark before `source`
    lines: tuple[np.ndarray, np.ndarray] | None = None  # start and end offsets of source lines, once needed


def decode_text(data: bytes, encoding: str) -> DecodedText:
    """Decode without losing anything: undecodable lines are decoded with U+FFFD *and* listed in ``bad``.

    >>> t = decode_text(b"a\\nb\\xff\\nc\\n", "utf-8")
    >>> t.data, sorted(t.bad), t.bad[1].offset
    (b'a\\nb\\xef\\xbf\\xbd\\nc\\n', [1], 3)
    """
    codec = _codec(encoding)
    bom = bom_of(data)
    bom_len = 0
    if codec in ("utf-16", "utf-32"):  # the BOM picks the byte order; without one, little-endian
        codec = bom[0] if bom and bom[0].startswith(codec) else f"{codec}-le"
        bom_len = bom[1] if bom and bom[0].startswith(codec) else 0
    elif bom and _codec(bom[0]) == codec:
        bom_len = bom[1]
    source = data[bom_len:] if bom_len else data
    if codec == "utf-8" and is_valid_utf8(source):
        return DecodedText(_lone_cr(source), source, codec, bom=bom_len)
    try:
        text = codecs.decode(source, codec)
    except UnicodeDecodeError:
        return _decode_damaged(source, codec, bom_len)
    return DecodedText(_lone_cr(text.encode("utf-8")), source, codec, bom=bom_len)


def _codec(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(f"unknown encoding '{encoding}'", field="resources[].encoding",
                          expected="a Python codec name such as utf-8 or latin-1") from None
    return "utf-8" if name == "utf-8-sig" else name


def _lone_cr(data: bytes) -> bytes:
    # old Mac files end lines with CR alone; CRLF files keep their CRs (they matter inside quotes)
    return data.replace(b"\r", b"\n") if b"\r" in data and b"\n" not in data else data


def _decode_damaged(source: bytes, codec: str, bom_len: int) -> DecodedText:
    """Decode line by line around the damage; good stretches are decoded in one call."""
    unit = codec_unit(codec)
    order = ">" if codec.endswith("-be") else "<"
    units = np.frombuffer(source, dtype=np.dtype(f"{order}u{unit}") if unit > 1 else np.uint8,
                          count=len(source) // unit)
    newline = 10 if (units == 10).any() or not (units == 13).any() else 13
    at = np.flatnonzero(units == newline) * unit
    starts = np.concatenate([[0], at + unit]).astype(np.int64)
    ends = np.concatenate([at, [len(source)]]).astype(np.int64)
    view, parts, bad, line = memoryview(source), [], {}, 0
    while line < len(starts):
        s = int(starts[line])
        # bounded blocks of whole lines: a UnicodeDecodeError copies its whole input, so keep that input small
        stop = max(line + 1, int(np.searchsorted(starts, s + _DECODE_BLOCK, side="right")) - 1)
        e = int(starts[stop]) if stop < len(starts) else len(source)
        try:
            parts.append(codecs.decode(view[s:e], codec))
            line = stop
        except UnicodeDecodeError as exc:
            pos = s + exc.start
            k = int(np.searchsorted(starts, pos, side="right")) - 1
            if k > line:
                parts.append(codecs.decode(view[s:int(starts[k])], codec))
            parts.append(codecs.decode(view[int(starts[k]):int(ends[k])], codec, errors="replace"))
            if k + 1 < len(starts):
                parts.append(chr(newline))
            bad[k] = _BadLine(int(starts[k]), int(ends[k]), bom_len + pos, bytes(view[pos:s + exc.end]))
            line = k + 1
    text = "".join(parts)
    if newline == 13:
        text = text.replace("\r", "\n")
    return DecodedText(text.encode("utf-8"), source, codec, bad, bom_len)


def _original(text: DecodedText, first_line: int, last_line: int) -> bytes:
    """The source bytes of physical lines first..last (no final line end)."""
    if text.lines is None:
        text.lines = _source_lines(text)
    starts, ends = text.lines
    out = text.source[int(starts[first_line]):int(ends[last_line])]
    cr = "\r".encode(text.encoding)
    return out[: -len(cr)] if out.endswith(cr) else out


def _source_lines(text: DecodedText) -> tuple[np.ndarray, np.ndarray]:
    unit = codec_unit(text.encoding)
    order = ">" if text.encoding.endswith("-be") else "<"
    units = np.frombuffer(text.source, dtype=np.dtype(f"{order}u{unit}") if unit > 1 else np.uint8,
                          count=len(text.source) // unit)
    newline = 10 if (units == 10).any() or not (units == 13).any() else 13
    at = np.flatnonzero(units == newline) * unit
    return np.concatenate([[0], at + unit]), np.concatenate([at, [len(text.source)]])


def _b64(data: bytes) -> str:
    return BASE64_PREFIX + base64.b64encode(data).decode("ascii")


def _clip(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _undecodable(codec: str, bad: _BadLine, column: str | None, shown: str | None) -> str:
    where = f"byte(s) {bad.run.hex(' ')} at byte offset {bad.offset}"
    tail = "the original record bytes are in _eai_raw (base64)"
    if column is None:
        return f"encoding: {where} are not valid {codec}; {tail}"
    return f"type:{column}: value '{_clip(shown or '')}' is not valid {codec}: {where}; {tail}"


# --------------------------------------------------------------------------- CSV
def parse_csv(data: bytes, *, rel: str, delimiter: str = ",", encoding: str = "utf-8", quotechar: str | None = '"',
              header: bool = True, columns: int | None = None) -> pa.Table:
    """CSV bytes -> table of text columns plus ``_eai_position``, ``_eai_raw``, ``_eai_error``.

    ``columns`` is the usual field count (from the sniff): a header shorter than
    the data gets ``column_<n>`` names, trailing empty header names beyond it are
    dropped. Ragged rows keep their raw line with null columns; rows with bytes
    that do not decode keep their original bytes (``base64:``) and are flagged.

    >>> parse_csv(b'a;b\\r\\n1;"x\\r\\ny"\\r\\n', rel="f.csv", delimiter=";").column("b").to_pylist()
    ['x\\r\\ny']
    """
    text = decode_text(data, encoding)
    lines = _lines(text.data)
    quoted = quotechar is not None and quotechar.encode() in text.data
    first, last, records = _csv_records(lines, quotechar if quoted else None, cr=b"\r" in text.data)
    if len(records) == 0:
        return _with_meta(pa.table({}), rel, [], [], [])
    head = _fields(records[0].as_py(), delimiter, quotechar)
    if header and any(first[0] <= k <= last[0] for k in text.bad):  # name columns by their bytes, not U+FFFD
        original = _original(text, int(first[0]), int(last[0]))
        head = _fields(original.decode(text.encoding, errors="backslashreplace"), delimiter, quotechar)
    names = _header(head) if header else [f"column_{i + 1}" for i in range(max(columns or 0, len(head)))]
    names = _fit_names(names, columns)
    skip = 1 if header else 0
    offsets = _line_offsets(lines)
    body_at = int(offsets[last[0] + 1]) if header else int(offsets[first[0]])
    body = pa.BufferReader(pa.py_buffer(text.data).slice(min(body_at, len(text.data))))
    parsed = _csv_fast(body, len(records) - skip, names, delimiter, quotechar if quoted else None)
    if parsed is None:  # quoting the fast path could not line up: let the csv module decide
        first, last, records, table, row_errors = _csv_slow(lines.to_pylist(), delimiter, quotechar, names, skip)
    else:
        table, row_errors = parsed
    first, last, raws = first[skip:], last[skip:], records.slice(skip)
    if text.bad:
        table, raws, row_errors = _mark_undecodable(text, table, raws, row_errors, first, last, delimiter, quotechar)
    return _with_meta(table, rel, first + 1, raws, row_errors)


def _lines(data: bytes) -> pa.Array:
    """Physical lines split on LF (CRs kept), by Arrow: no Python string per line."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64).tobytes())
    whole = pa.LargeStringArray.from_buffers(1, offsets, pa.py_buffer(data))
    return pc.list_flatten(pc.split_pattern(whole, "\n"))


def _line_offsets(lines: pa.Array) -> np.ndarray:
    """Byte offset of each line in the text, plus one past the end."""
    lengths = pc.binary_length(lines).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    return np.concatenate([[0], np.cumsum(lengths)])


def _csv_records(lines: pa.Array, quotechar: str | None, *, cr: bool) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Group physical lines into records (a quoted field may span lines); skip blank lines.

    Returns 0-based first and last line of each record and the record texts,
    byte for byte (a CRLF inside quotes stays; the record's own line end goes).
    """
    nonblank = pc.greater(pc.binary_length(lines), 0)
    if cr:
        nonblank = pc.and_(nonblank, pc.not_equal(lines, "\r"))
    nonblank = nonblank.to_numpy(zero_copy_only=False)
    if quotechar is None:
        start, inside = nonblank, np.zeros(len(nonblank), dtype=bool)
    else:
        quotes = pc.count_substring(lines, quotechar).to_numpy(zero_copy_only=False)
        inside = (np.cumsum(quotes) - quotes) % 2 == 1  # this line starts inside a quoted field
        start = nonblank & ~inside
    first = np.nonzero(start)[0]
    owner = np.cumsum(start) - 1  # record index each line belongs to
    members = np.nonzero(start | (inside & (owner >= 0)))[0]
    if len(members) == len(first):
        last, records = first, lines.filter(pa.array(start))
    else:
        rec = owner[members]
        last = members[np.r_[np.nonzero(np.diff(rec))[0], len(rec) - 1]]
        texts = lines.filter(pa.array(start)).to_pylist()
        for i in np.nonzero(inside & (owner >= 0))[0]:  # only continuation lines of multi-line fields
            texts[owner[i]] += "\n" + lines[int(i)].as_py()
        records = pa.array(texts, pa.large_string())
    if cr:
        records = pc.utf8_rtrim(records, characters="\r")
    return first, last, records


def _fields(record: str, delimiter: str, quotechar: str | None) -> list[str]:
    rows = split_records(record + "\n", delimiter, quotechar)
    return rows[0] if rows else []


def _header(raw: list[str]) -> list[str]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(raw):
        name = name.strip() or f"column_{i + 1}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        names.append(name)
    return names


def _fit_names(names: list[str], columns: int | None) -> list[str]:
    """Match the header to the data's usual width: name unnamed data columns, drop empty trailing names."""
    if not columns:
        return names
    if len(names) < columns:  # e.g. an index column without a header name
        taken = set(names)
        extra = [f"column_{i + 1}" for i in range(len(names), columns)]
        return names + [n if n not in taken else f"{n}_x" for n in extra]
    while len(names) > columns and names[-1] == f"column_{len(names)}":
        names = names[:-1]  # a trailing delimiter on the header line only
    return names


def _csv_fast(body, n_records: int, names: list[str], delimiter: str,
              quotechar: str | None) -> tuple[pa.Table, pa.Array] | None:
    """Parse with pyarrow; None when its rows do not line up with our records."""
    import pyarrow.csv as pcsv

    if n_records == 0:
        return pa.table({n: pa.array([], pa.string()) for n in names}), pa.array([], pa.string())
    bad: dict[int, str] = {}

    def on_invalid(row) -> str:  # called once per ragged row only
        if row.number is None:
            raise ValueError("row number unknown")
        bad[row.number - 1] = f"ragged row: expected {row.expected_columns} fields, got {row.actual_columns}"
        return "skip"

    try:
        table = pcsv.read_csv(
            body,
            read_options=pcsv.ReadOptions(column_names=names, use_threads=False),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char=quotechar or False,
                                            newlines_in_values=quotechar is not None,
                                            invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                strings_can_be_null=False))
    except (pa.ArrowInvalid, ValueError):
        return None
    if table.num_rows + len(bad) != n_records or any(i >= n_records for i in bad):
        return None
    if not bad:
        return table, pa.nulls(n_records, pa.string())
    valid = np.ones(n_records, dtype=bool)
    valid[list(bad)] = False
    index = np.full(n_records, -1, dtype=np.int64)
    index[valid] = np.arange(table.num_rows)
    take = pa.array(index, mask=~valid)  # ragged rows take a null: their columns stay null
    table = pa.table({n: pc.take(table.column(n), take) for n in names})
    return table, _aligned(n_records, list(bad), list(bad.values()))


def _csv_slow(lines: list[str], delimiter: str, quotechar: str | None, names: list[str], skip: int):
    """The csv module, line by line: slower, but agrees with itself on odd quoting."""
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader((line + "\n" for line in lines), delimiter=delimiter, quotechar=quotechar or '"',
                        quoting=csv.QUOTE_NONE if quotechar is None else csv.QUOTE_MINIMAL)
    first, last, records, rows = [], [], [], []
    prev = 0
    for fields in reader:
        start, prev = prev, reader.line_num
        if not fields:
            continue
        first.append(start)
        last.append(prev - 1)
        records.append("\n".join(lines[start:prev]).removesuffix("\r"))
        rows.append(fields)
    width = len(names)
    body = rows[skip:]
    errors = [None if len(r) == width else f"ragged row: expected {width} fields, got {len(r)}" for r in body]
    table = pa.table({n: pa.array([r[i] if len(r) == width else None for r in body], pa.string())
                      for i, n in enumerate(names)})
    return (np.asarray(first, dtype=np.int64), np.asarray(last, dtype=np.int64), pa.array(records, pa.string()),
            table, pa.array(errors, pa.string()))


def _mark_undecodable(text: DecodedText, table: pa.Table, raws: pa.Array, errors: pa.Array, first: np.ndarray,
                      last: np.ndarray, delimiter: str, quotechar: str | None):
    """Rows holding undecodable bytes: original bytes into _eai_raw, damaged columns null, an error naming them."""
    hit: dict[int, _BadLine] = {}
    for k, bad in sorted(text.bad.items()):
        r = int(np.searchsorted(first, k, side="right")) - 1
        if r >= 0 and last[r] >= k and r not in hit:
            hit[r] = bad
    if not hit:
        return table, raws, errors
    names = table.column_names
    rows, new_raws, new_errors = [], [], []
    damaged: dict[str, list[int]] = {}
    for r, bad in hit.items():
        original = _original(text, int(first[r]), int(last[r]))
        replaced = _fields(original.decode(text.encoding, errors="replace"), delimiter, quotechar)
        shown = _fields(original.decode(text.encoding, errors="backslashreplace"), delimiter, quotechar)
        cols = [i for i, v in enumerate(replaced) if "\ufffd" in v and i < len(names)]
        for i in cols:
            damaged.setdefault(names[i], []).append(r)
        column = names[cols[0]] if cols else None
        value = shown[cols[0]] if cols and cols[0] < len(shown) else None
        rows.append(r)
        new_raws.append(_b64(original))
        new_errors.append(_undecodable(text.encoding, bad, column, value))
    n = table.num_rows
    raws = pc.coalesce(_aligned(n, rows, new_raws), pc.cast(raws, pa.string()))
    errors = pc.coalesce(_aligned(n, rows, new_errors), errors)
    for name, at in damaged.items():
        mask = np.zeros(n, dtype=bool)
        mask[at] = True
        keep = pa.array(np.arange(n), mask=mask)
        table = table.set_column(names.index(name), name, pc.take(table.column(name), keep))
    return table, raws, errors


def _aligned(n: int, at: list[int], values: list[str]) -> pa.Array:
    """A string array of length n holding values at positions `at`, null elsewhere."""
    index = np.full(n, -1, dtype=np.int64)
    index[at] = np.arange(len(at))
    return pc.take(pa.array(values, pa.string()), pa.array(index, mask=index < 0))


# --------------------------------------------------------------------------- JSON
def parse_json(data: bytes, *, rel: str, encoding: str = "utf-8", lines: bool = False) -> pa.Table:
    """JSON array / object / JSON lines -> table plus ``_eai_position``, ``_eai_raw``, ``_eai_error``.

    Nested objects become structs, arrays lists; a field whose type changes
    between records becomes JSON text; a malformed line or element keeps its
    raw text; ``_eai_raw`` is each record's original text.

    >>> parse_json(b'[{"a": 1}, {"a": null}, {}]', rel="f.json").column("_eai_raw").to_pylist()
    ['{"a": 1}', '{"a": null}', '{}']
    """
    text = decode_text(data, encoding)
    if not lines:
        rows = _json_document(text)
        if rows is not None:
            return _json_rows(rows, rel)
    return _json_rows(_json_lines(text), rel)


def _json_lines(text: DecodedText) -> list[tuple[int, str, Any, str | None]]:
    rows: list[tuple[int, str, Any, str | None]] = []
    for i, line in enumerate(text.data.decode("utf-8").split("\n")):
        line = line.removesuffix("\r")  # a CR inside a JSON string is escaped: at the end it is the line end
        if not line.strip():
            continue
        if i in text.bad:
            original = _original(text, i, i)
            rows.append((i + 1, _b64(original), None, _json_undecodable(text, text.bad[i], original)))
            continue
        try:
            rows.append((i + 1, line, json.loads(line), None))
        except (ValueError, RecursionError) as exc:
            rows.append((i + 1, line, None, f"malformed JSON line: {getattr(exc, 'msg', exc)}"))
    return rows


def _json_undecodable(text: DecodedText, bad: _BadLine, original: bytes) -> str:
    """Name the top-level key whose value holds the bad bytes, when the record parses around them."""
    column = shown = None
    if text.encoding == "utf-8":
        try:
            obj = json.loads(original.decode("utf-8", errors="surrogateescape"))
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            for key, value in obj.items():
                dumped = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                if re.search("[\udc80-\udcff]", dumped) or re.search("[\udc80-\udcff]", key):
                    column = key
                    shown = dumped.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                    break
    return _undecodable(text.encoding, bad, column, shown)


_WS = re.compile(r"[ \t\r\n]*")


def _skip_ws(s: str, i: int) -> int:
    """The position after the JSON whitespace at ``i`` (``_WS`` matches anywhere, if only the empty string)."""
    m = _WS.match(s, i)
    assert m is not None
    return m.end()


def _json_document(text: DecodedText) -> list[tuple[int, str, Any, str | None]] | None:
    """Records of one JSON document, each with its original text; None when it is several (JSON lines)."""
    if text.bad and text.encoding != "utf-8":
        first = min(text.bad.values(), key=lambda b: b.offset)
        return [(1, _b64(text.source), None, _undecodable(text.encoding, first, None, None))]
    # surrogateescape keeps undecodable bytes as lone surrogates: each record's original bytes come back exactly
    s = text.source.decode("utf-8", errors="surrogateescape") if text.bad else text.data.decode("utf-8")
    offsets = _ByteOffsets(s, text.bom)
    dec = json.JSONDecoder()
    i = _skip_ws(s, 0)
    if i == len(s):
        return []
    if s[i] != "[":
        try:
            obj, end = dec.raw_decode(s, i)
        except json.JSONDecodeError as exc:
            return [_json_item(1, s[i:].rstrip(), None, f"malformed JSON: {exc.msg} at line {exc.lineno}",
                               text, offsets, i)]
        if _skip_ws(s, end) != len(s):
            return None  # several documents one after another: read it as JSON lines
        return [_json_item(1, s[i:end], obj, None, text, offsets, i)]
    rows: list[tuple[int, str, Any, str | None]] = []
    i = _skip_ws(s, i + 1)
    if s.startswith("]", i):
        return rows
    while True:
        try:
            obj, end = dec.raw_decode(s, i)
        except json.JSONDecodeError as exc:
            rows.append(_json_item(len(rows) + 1, s[i:].rstrip(), None,
                                   f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
                                   "the rest of the document is in _eai_raw", text, offsets, i))
            return rows
        rows.append(_json_item(len(rows) + 1, s[i:end], obj, None, text, offsets, i))
        j = _skip_ws(s, end)
        if s.startswith(",", j):
            i = _skip_ws(s, j + 1)
        elif s.startswith("]", j):
            return rows
        else:
            rows.append(_json_item(len(rows) + 1, s[j:].rstrip(), None,
                                   "malformed JSON: expected ',' or ']' after a record; the rest of the document "
                                   "is in _eai_raw", text, offsets, j))
            return rows


class _ByteOffsets:
    """Byte offset of a character position in a surrogate-escaped string, computed forward only once."""

    def __init__(self, s: str, base: int) -> None:
        self.s, self.base, self.char, self.byte = s, base, 0, base

    def at(self, i: int) -> int:
        if i < self.char:
            self.char, self.byte = 0, self.base
        self.byte += len(self.s[self.char:i].encode("utf-8", "surrogateescape"))
        self.char = i
        return self.byte


def _json_item(n: int, raw: str, obj: Any, error: str | None, text: DecodedText, offsets: _ByteOffsets,
               at: int) -> tuple[int, str, Any, str | None]:
    if not text.bad or not re.search("[\udc80-\udcff]", raw):
        return n, raw, obj, error
    original = raw.encode("utf-8", "surrogateescape")
    bad_at = re.search("[\udc80-\udcff]+", raw)
    assert bad_at is not None  # checked above
    run = raw[bad_at.start():bad_at.end()].encode("utf-8", "surrogateescape")
    offset = offsets.at(at) + len(raw[:bad_at.start()].encode("utf-8", "surrogateescape"))
    return n, _b64(original), None, _json_undecodable(text, _BadLine(0, 0, offset, run), original)


def _json_rows(rows: list[tuple[int, str, Any, str | None]], rel: str) -> pa.Table:
    """(position, raw, parsed, error) -> table; rows that are not objects keep only their raw text."""
    ok = [isinstance(r[2], dict) and r[3] is None for r in rows]
    table = records_to_table([r[2] for r, good in zip(rows, ok) if good])
    index = np.cumsum(ok) - 1
    take = pa.array(index, mask=~np.asarray(ok, dtype=bool)) if rows else pa.array([], pa.int64())
    table = pa.table({n: pc.take(table.column(n), take) for n in table.column_names}) if table.num_columns else \
        pa.Table.from_struct_array(pa.array([{}] * len(rows), pa.struct([])))
    raws = pa.array([r[1] for r in rows], pa.string())
    errors = pa.array([r[3] or (None if good else "not a JSON object") for r, good in zip(rows, ok)], pa.string())
    return _with_meta(table, rel, [r[0] for r in rows], raws, errors)


# --------------------------------------------------------------------------- Parquet
_EPOCH = dt.datetime(1970, 1, 1)
_MIN_US = (dt.datetime(1, 1, 1) - _EPOCH) // dt.timedelta(microseconds=1)
_MAX_US = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999) - _EPOCH) // dt.timedelta(microseconds=1)
_MIN_DAY, _MAX_DAY = (dt.date(1, 1, 1) - _EPOCH.date()).days, (dt.date(9999, 12, 31) - _EPOCH.date()).days
_RANGE = "is outside 0001-01-01..9999-12-31, the range the table writer can store"


def storable_parquet(table: pa.Table, *, int96_ns: pa.Table | None = None) -> tuple[pa.Table, pa.Array]:
    """Temporal values as Iceberg stores them, per value: (table, per-row ``_eai_error``).

    Timestamps become ``timestamp[us]`` (zoned ones ``timestamp[us, tz=UTC]``),
    dates ``date32``, times ``time64[us]``, also inside structs and lists. A value
    that would lose digits or falls outside years 1-9999 becomes null and its
    row gets ``type:<column>: value '<iso>' ...``; the other rows are untouched.
    ``int96_ns`` holds INT96 columns read again as nanoseconds (``table`` has
    them as microseconds): values with sub-microsecond digits are flagged the same way.

    >>> t = pa.table({"at": pa.array([1_000, 1_001], pa.timestamp("ns", tz="Europe/Oslo"))})
    >>> fixed, errors = storable_parquet(t)
    >>> fixed.schema.field("at").type, fixed.column("at").null_count
    (TimestampType(timestamp[us, tz=UTC]), 1)
    >>> errors[1].as_py()
    "type:at: value '1970-01-01T00:00:00.000001001Z' has nanosecond precision that timestamp[us] would lose"
    """
    n = table.num_rows
    errors = pa.nulls(n, pa.string())
    columns = []
    for name, col in zip(table.column_names, table.columns):
        if not _temporal(col.type):
            columns.append(col)
            continue
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        fixed, err = _storable(arr, name)
        if int96_ns is not None and name in int96_ns.column_names:
            err = _int96_digits(arr, int96_ns.column(name), name, err)
        if err is not None and err.null_count < len(err):
            bad = pc.is_valid(err).to_numpy(zero_copy_only=False)
            fixed = pc.take(fixed, pa.array(np.arange(n), mask=bad))  # the whole column value goes null
            errors = pc.coalesce(errors, err)
        columns.append(fixed)
    return pa.table(columns, names=table.column_names), errors


def _int96_digits(us: pa.Array, ns: pa.ChunkedArray, col: str, err: pa.Array | None) -> pa.Array | None:
    """Flag INT96 values whose nanosecond reading (where it did not wrap) has sub-microsecond digits."""
    ns_arr = ns.combine_chunks() if ns.num_chunks != 1 else ns.chunk(0)
    v_us, valid = _ints(us)
    v_ns, _ = _ints(ns_arr)
    lossy = valid & (v_ns // 1000 == v_us) & (v_ns % 1000 != 0)
    if not lossy.any():
        return err
    iso = np.datetime_as_string(v_ns[lossy].astype("datetime64[ns]"))
    texts = [f"type:{col}: value '{s}' has nanosecond precision that timestamp[us] would lose" for s in iso]
    mine = _errors_at(len(v_us), lossy, texts)
    return mine if err is None else pc.coalesce(err, mine)


def _temporal(t: pa.DataType) -> bool:
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return True
    if pa.types.is_struct(t):
        return any(_temporal(f.type) for f in t)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _temporal(t.value_type)
    return False


def _storable(arr: pa.Array, col: str) -> tuple[pa.Array, pa.Array | None]:
    """(array Iceberg can store, per-element error text or None) for one possibly nested array."""
    t = arr.type
    if pa.types.is_timestamp(t):
        return _storable_timestamp(arr, col)
    if pa.types.is_date(t):
        return _storable_date(arr, col)
    if pa.types.is_time(t):
        return _storable_time(arr, col)
    if pa.types.is_struct(t):
        children, errors = [], None
        for i in range(t.num_fields):
            child, err = _storable(arr.field(i), col)
            children.append(child)
            if err is not None:
                errors = err if errors is None else pc.coalesce(errors, err)
        fields = [pa.field(t.field(i).name, c.type, t.field(i).nullable) for i, c in enumerate(children)]
        mask = arr.is_null() if arr.null_count else None
        return pa.StructArray.from_arrays(children, fields=fields, mask=mask), errors
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets = arr.offsets
        values, verr = _storable(arr.values, col)
        vf = t.value_field
        kind = pa.large_list if pa.types.is_large_list(t) else pa.list_
        mask = arr.is_null() if arr.null_count else None  # NULL lists stay NULL, not []
        fixed = type(arr).from_arrays(offsets, values, type=kind(pa.field(vf.name, values.type, vf.nullable)),
                                      mask=mask)
        if verr is None:
            return fixed, None
        off = offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        parents = np.repeat(np.arange(len(arr)), np.diff(off))
        inner = pc.is_valid(verr.slice(int(off[0]), int(off[-1] - off[0]))).to_numpy(zero_copy_only=False)
        hits = np.nonzero(inner)[0][::-1]  # reversed: the first bad element of a list wins
        index = np.full(len(arr), -1, dtype=np.int64)
        index[parents[hits]] = hits + off[0]
        return fixed, pc.take(verr, pa.array(index, mask=index < 0))
    return arr, None


def _ints(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values with nulls as 0, validity) of a temporal array."""
    width = pa.int32() if arr.type.bit_width == 32 else pa.int64()
    values = pc.fill_null(arr.view(width), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return values, arr.is_valid().to_numpy(zero_copy_only=False)


def _errors_at(n: int, bad: np.ndarray, texts: list[str]) -> pa.Array:
    return _aligned(n, list(np.nonzero(bad)[0]), texts)


def _storable_timestamp(arr: pa.Array, col: str) -> tuple[pa.Array, pa.Array | None]:
    t = arr.type
    v, valid = _ints(arr)
    target = pa.timestamp("us", tz="UTC" if t.tz is not None else None)
    overflow = lossy = np.zeros(len(v), dtype=bool)
    if t.unit == "ns":
        lossy = valid & (v % 1000 != 0)
        us = v // 1000
    else:  # seconds or milliseconds far from today can overflow int64 microseconds
        factor = {"s": 1_000_000, "ms": 1_000, "us": 1}[t.unit]
        overflow = valid & (np.abs(v) > np.iinfo(np.int64).max // factor)
        us = np.where(overflow, 0, v) * factor
    outside = valid & ~lossy & (overflow | (us < _MIN_US) | (us > _MAX_US))
    bad = lossy | outside
    if not bad.any() and t.unit == "us" and target == t:
        return arr, None
    fixed = pa.array(np.where(bad, 0, us), type=target, mask=~valid | bad)
    if not bad.any():
        return fixed, None
    iso = np.datetime_as_string(v[bad].astype(f"datetime64[{t.unit}]"), timezone="UTC" if t.tz else "naive")
    texts = [f"type:{col}: value '{s}' has nanosecond precision that timestamp[us] would lose" if lo
             else f"type:{col}: value '{s}' {_RANGE}" for s, lo in zip(iso, lossy[bad])]
    return fixed, _errors_at(len(v), bad, texts)


def _storable_date(arr: pa.Array, col: str) -> tuple[pa.Array, pa.Array | None]:
    v, valid = _ints(arr)
    lossy = np.zeros(len(v), dtype=bool)
    days = v
    if pa.types.is_date64(arr.type):
        lossy = valid & (v % 86_400_000 != 0)
        days = v // 86_400_000
    outside = valid & ~lossy & ((days < _MIN_DAY) | (days > _MAX_DAY))
    bad = lossy | outside
    if not bad.any() and pa.types.is_date32(arr.type):
        return arr, None
    fixed = pa.array(np.where(bad, 0, days).astype(np.int32), type=pa.date32(), mask=~valid | bad)
    if not bad.any():
        return fixed, None
    unit = "ms" if pa.types.is_date64(arr.type) else "D"
    iso = np.datetime_as_string(v[bad].astype(f"datetime64[{unit}]"))
    texts = [f"type:{col}: value '{s}' has a time of day that date would lose" if lo
             else f"type:{col}: value '{s}' {_RANGE}" for s, lo in zip(iso, lossy[bad])]
    return fixed, _errors_at(len(v), bad, texts)


def _storable_time(arr: pa.Array, col: str) -> tuple[pa.Array, pa.Array | None]:
    t = arr.type
    if t == pa.time64("us"):
        return arr, None
    if t.unit != "ns":
        return arr.cast(pa.time64("us")), None  # seconds and milliseconds widen without loss
    v, valid = _ints(arr)
    bad = valid & (v % 1000 != 0)
    fixed = pa.array(np.where(bad, 0, v // 1000), type=pa.time64("us"), mask=~valid | bad)
    if not bad.any():
        return fixed, None
    texts = [f"type:{col}: value '{_time_text(x)}' has nanosecond precision that time[us] would lose"
             for x in v[bad]]
    return fixed, _errors_at(len(v), bad, texts)


def _time_text(ns: int) -> str:
    seconds, frac = divmod(int(ns), 1_000_000_000)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{frac:09d}"


# --------------------------------------------------------------------------- shared
def _with_meta(table: pa.Table, rel: str, lines, raws, errors) -> pa.Table:
    """Append position, raw text and error columns (arrays or lists, one entry per row)."""
    if table.num_columns == 0 and len(lines) == 0:
        table = pa.Table.from_struct_array(pa.array([], pa.struct([])))
    table = table.append_column(POSITION_COLUMN, _positions(rel, pa.array(lines, pa.int64())))
    raws = pc.cast(raws, pa.string()) if isinstance(raws, pa.Array) else pa.array(raws, pa.string())
    table = table.append_column(RAW_COLUMN, raws)
    return table.append_column(ERROR_COLUMN, pa.array(errors, pa.string()))


def _positions(rel: str, numbers: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(rel + ":", pc.cast(numbers, pa.string()), "")


def _relative(path: str, root: str) -> str:
    return path[len(root) + 1:] if root and path.startswith(root + "/") else posixpath.basename(path)


def _mtime(info: dict[str, Any]) -> Any:
    """A JSON-able modification time from whatever key the filesystem uses."""
    for key in _MTIME_KEYS:
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            return value.timestamp()
        return value if isinstance(value, (int, float, str)) else str(value)
    return info.get("ETag") or info.get("size")


class _mapped_errors:
    """Turn filesystem exceptions into typed source errors (no stack of fsspec internals)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self):
        return self

    def __exit__(self, et, exc, tb):
        if exc is None or not isinstance(exc, (OSError, ConnectionError)):
            return False
        if isinstance(exc, FileNotFoundError):
            raise SourceNotFound(f"{self.where} does not exist", path=self.where) from None
        if isinstance(exc, PermissionError):
            raise AuthenticationFailed(f"access denied to {self.where}", path=self.where) from None
        raise SourceUnavailable(f"cannot read {self.where}: {type(exc).__name__}", path=self.where) from exc
