"""Files connector: CSV, JSON, JSONL and Parquet under a local folder or any fsspec URI.

Each resource is a glob under ``source.path``. CSV is read with every column as
text so bronze keeps what the file said; types come later (discovery proposes
them, silver coerces). Nothing is dropped silently: a ragged CSV row, a line
with invalid UTF-8 or a malformed JSON line becomes a row whose ``_eai_raw``
holds the original text and whose ``_eai_error`` says what was wrong, so the
silver stage can quarantine it.

Incremental reads use ``{"files": {"<relative path>": <mtime>}}``: a file
already listed with the same modification time is skipped.

Example::

    from eai_ray.config import FileSource
    conn = FileConnector(FileSource(kind="files", name="shop", path="data/",
                                    resources=[{"name": "orders", "pattern": "orders/*.csv"}]))
    for batch in conn.read("orders"):
        print(batch.table.num_rows, batch.checkpoint)
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eai_ray.config import FileResource, FileSource
from eai_ray.errors import AuthenticationFailed, ConfigError, SourceNotFound, SourceUnavailable
from eai_ray.ingestion.base import (ERROR_COLUMN, POSITION_COLUMN, RAW_COLUMN, Batch, ColumnInfo, DiscoveredSchema,
                                    Partition)
from eai_ray.ingestion.discovery import infer_columns, records_to_table

META_COLUMNS = (POSITION_COLUMN, RAW_COLUMN, ERROR_COLUMN)

_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "json", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4")
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")


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
        """Sample the first files of a resource and infer column types (CSV text included)."""
        res = self._resource(resource)
        files = self._list(res)
        tables, declared = [], True
        for f in files[:sample_files]:
            fmt = self._format(res, f)
            declared = declared and fmt == "parquet"
            batches = self._read_file(res, f, fmt, batch_rows=sample_rows)
            tables.append(next(batches, pa.table({})))
            batches.close()  # releases the open Parquet file now, not at garbage collection
        sample = pa.concat_tables([t.drop_columns([c for c in META_COLUMNS if c in t.column_names])
                                   for t in tables], promote_options="permissive")
        if declared:  # Parquet carries its own schema: report it as written
            columns = [ColumnInfo(f.name, f.type, f.nullable, 1.0, "declared by the Parquet schema")
                       for f in sample.schema]
        else:
            columns = infer_columns(sample, sample_rows=sample_rows)
        for c in columns:
            c.primary_key = c.name in res.primary_key
        estimate = self._row_estimate(files) if declared else None
        return DiscoveredSchema(resource, columns, list(res.primary_key), estimate)

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
        return [f for f in self._list(res) if f.rel not in seen or seen[f.rel] != f.mtime]

    def _row_estimate(self, files: list[_File]) -> int | None:
        import pyarrow.parquet as pq

        fs, _ = self._filesystem()
        total = 0
        for f in files:
            with _mapped_errors(f.rel), fs.open(f.path, "rb") as fh:
                total += pq.ParquetFile(fh).metadata.num_rows
        return total

    # ------------------------------------------------------------------ reading
    def _format(self, res: FileResource, f: _File) -> str:
        if res.format != "auto":
            return res.format
        name = f.rel.lower()
        for ext in _COMPRESSIONS:
            name = name.removesuffix(ext)
        fmt = _FORMATS.get(posixpath.splitext(name)[1])
        if fmt is None:
            raise ConfigError(f"cannot tell the format of '{f.rel}' from its extension",
                              field=f"resources[{res.name}].format", expected="csv, json, jsonl or parquet")
        return fmt

    def _batches(self, res: FileResource, f: _File, batch_rows: int) -> Iterator[Batch]:
        pending: pa.Table | None = None
        for table in self._read_file(res, f, self._format(res, f), batch_rows):
            if pending is not None:
                yield Batch(pending)
            pending = table
        # the checkpoint rides on the last batch: the file counts as read only once all of it is committed
        yield Batch(pending if pending is not None else pa.table({}), {"files": {f.rel: f.mtime}})

    def _read_file(self, res: FileResource, f: _File, fmt: str, batch_rows: int) -> Iterator[pa.Table]:
        fs, _ = self._filesystem()
        if fmt == "parquet":
            yield from self._read_parquet(f, batch_rows)
            return
        with _mapped_errors(f.rel):
            with fs.open(f.path, "rb", compression="infer") as fh:
                data = fh.read()
        if fmt == "csv":
            delimiter = "\t" if res.delimiter == "," and f.rel.lower().endswith(".tsv") else res.delimiter
            table = parse_csv(data, rel=f.rel, delimiter=delimiter, encoding=res.encoding)
        else:
            table = parse_json(data, rel=f.rel, encoding=res.encoding, lines=fmt == "jsonl")
        for start in range(0, max(table.num_rows, 1), batch_rows):
            yield table.slice(start, batch_rows)

    def _read_parquet(self, f: _File, batch_rows: int) -> Iterator[pa.Table]:
        import pyarrow.parquet as pq

        fs, _ = self._filesystem()
        with _mapped_errors(f.rel), fs.open(f.path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            row = 1
            for rb in pf.iter_batches(batch_size=batch_rows):
                table = pa.Table.from_batches([rb])
                positions = _positions(f.rel, pa.array(np.arange(row, row + table.num_rows)))
                row += table.num_rows
                yield table.append_column(POSITION_COLUMN, positions)


# --------------------------------------------------------------------------- CSV
def parse_csv(data: bytes, *, rel: str, delimiter: str = ",", encoding: str = "utf-8") -> pa.Table:
    """CSV bytes -> table of text columns plus ``_eai_position``, ``_eai_raw``, ``_eai_error``.

    Ragged rows keep their raw line with null columns; lines with undecodable
    bytes keep their values (with U+FFFD) and are flagged in ``_eai_error``.
    """
    data, lossy = _utf8(data, encoding)
    lines = _lines(data)
    starts, records = _csv_records(lines, quoted=b'"' in data)
    if len(records) == 0:
        return _with_meta(pa.table({}), rel, [], [], [])
    names = _header(records[0].as_py(), delimiter)
    header_lines = int(starts[1]) - 1 if len(starts) > 1 else len(lines)
    header_bytes = (pc.sum(pc.binary_length(lines.slice(0, header_lines))).as_py() or 0) + header_lines
    body = pa.BufferReader(pa.py_buffer(data).slice(min(header_bytes, len(data))))
    parsed = _csv_fast(body, len(records) - 1, names, delimiter)
    if parsed is None:  # quoting the fast path could not line up: let the csv module decide
        starts, records, table, row_errors = _csv_slow(lines.to_pylist(), delimiter)
    else:
        table, row_errors = parsed
    body_records = records.slice(1)
    errors = pc.coalesce(row_errors, _encoding_errors(body_records, lossy))
    return _with_meta(table, rel, starts[1:], body_records, errors)


def _utf8(data: bytes, encoding: str) -> tuple[bytes, bool]:
    """UTF-8 bytes with \\n line ends and no BOM, and whether undecodable bytes were replaced.

    Valid UTF-8 is checked by Arrow and passed through without building Python strings.
    """
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf8", "utf-8-sig"):
        text, lossy = _decode(data, encoding)
        return text.encode("utf-8"), lossy
    data, lossy = data.removeprefix(b"\xef\xbb\xbf"), False
    try:
        _whole(data).validate(full=True)
    except pa.ArrowInvalid:
        data, lossy = data.decode("utf-8", errors="replace").encode("utf-8"), True
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data, lossy


def _whole(data: bytes) -> pa.Array:
    """The bytes as a one-element large_string array, without copying them."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64).tobytes())
    return pa.LargeStringArray.from_buffers(1, offsets, pa.py_buffer(data))


def _lines(data: bytes) -> pa.Array:
    """Physical lines, split by Arrow (no Python string per line)."""
    return pc.list_flatten(pc.split_pattern(_whole(data), "\n"))


def _decode(data: bytes, encoding: str) -> tuple[str, bool]:
    """Text and whether bytes had to be replaced; lone CRs become newlines so lines split one way."""
    try:
        text, lossy = data.decode(encoding), False
    except UnicodeDecodeError:
        text, lossy = data.decode(encoding, errors="replace"), True
    except LookupError:
        raise ConfigError(f"unknown encoding '{encoding}'", field="resources[].encoding",
                          expected="a Python codec name such as utf-8 or latin-1") from None
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, lossy


def _csv_records(lines: pa.Array, *, quoted: bool) -> tuple[np.ndarray, pa.Array]:
    """Group physical lines into records (a quoted field may span lines); skip blank lines.

    Returns 1-based start line numbers and record texts, the way pyarrow counts rows.
    """
    nonblank = pc.greater(pc.binary_length(lines), 0).to_numpy(zero_copy_only=False)
    if not quoted:
        return np.nonzero(nonblank)[0] + 1, lines.filter(pa.array(nonblank))
    quotes = pc.count_substring(lines, '"').to_numpy(zero_copy_only=False)
    inside = (np.cumsum(quotes) - quotes) % 2 == 1  # this line starts inside a quoted field
    start = nonblank & ~inside
    first = np.nonzero(start)[0]
    if not inside.any():
        return first + 1, lines.filter(pa.array(start))
    records = lines.filter(pa.array(start)).to_pylist()
    owner = np.cumsum(start) - 1  # record index each line belongs to
    for i in np.nonzero(inside & (owner >= 0))[0]:  # only continuation lines of multi-line fields
        records[owner[i]] += "\n" + lines[int(i)].as_py()
    return first + 1, pa.array(records, pa.large_string())


def _header(record: str, delimiter: str) -> list[str]:
    raw = next(csv.reader([record], delimiter=delimiter), [])
    names, seen = [], {}
    for i, name in enumerate(raw):
        name = name.strip() or f"column_{i + 1}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        names.append(name)
    return names


def _csv_fast(body, n_records: int, names: list[str], delimiter: str) -> tuple[pa.Table, pa.Array] | None:
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
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
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
    where = np.full(n_records, -1, dtype=np.int64)
    where[list(bad)] = np.arange(len(bad))
    return table, pc.take(pa.array(list(bad.values()), pa.string()), pa.array(where, mask=where < 0))


def _csv_slow(lines: list[str], delimiter: str):
    """The csv module, line by line: slower, but agrees with itself on odd quoting."""
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader((line + "\n" for line in lines), delimiter=delimiter)
    starts, records, rows = [], [], []
    prev = 0
    for fields in reader:
        start, prev = prev, reader.line_num
        if not fields:
            continue
        starts.append(start + 1)
        records.append("\n".join(lines[start:prev]))
        rows.append(fields)
    names = _header(records[0], delimiter)
    width = len(names)
    errors = [None if len(r) == width else f"ragged row: expected {width} fields, got {len(r)}" for r in rows[1:]]
    columns = {n: pa.array([r[i] if len(r) == width else None for r in rows[1:]], pa.string())
               for i, n in enumerate(names)}
    return np.asarray(starts), pa.array(records, pa.string()), pa.table(columns), pa.array(errors, pa.string())


def _encoding_errors(records: pa.Array, lossy: bool) -> pa.Array:
    """Flag records holding U+FFFD, but only when the decoder really had to replace bytes."""
    if not lossy:
        return pa.nulls(len(records), pa.string())
    flagged = pc.match_substring(records, "\ufffd")
    return pc.if_else(flagged, pa.scalar("invalid bytes for the file encoding, replaced with U+FFFD"),
                      pa.scalar(None, pa.string()))


# --------------------------------------------------------------------------- JSON
def parse_json(data: bytes, *, rel: str, encoding: str = "utf-8", lines: bool = False) -> pa.Table:
    """JSON array / object / JSON lines -> table plus ``_eai_position``, ``_eai_raw``, ``_eai_error``.

    Nested objects become structs, arrays lists; a field whose type changes
    between records becomes JSON text; a malformed line keeps only its raw text.
    """
    text, lossy = _decode(data, encoding)
    if not lines:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":
                return _json_rows([(1, text, None, f"malformed JSON: {exc.msg} at line {exc.lineno}")], rel, lossy)
            lines = True  # several documents one after another: read it as JSON lines
        else:
            items = doc if isinstance(doc, list) else [doc]
            return _json_rows([(i + 1, json.dumps(item, ensure_ascii=False), item, None)
                               for i, item in enumerate(items)], rel, lossy)
    rows = []
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            rows.append((i + 1, line, json.loads(line), None))
        except json.JSONDecodeError as exc:
            rows.append((i + 1, line, None, f"malformed JSON line: {exc.msg}"))
    return _json_rows(rows, rel, lossy)


def _json_rows(rows: list[tuple[int, str, Any, str | None]], rel: str, lossy: bool) -> pa.Table:
    """(line, raw, parsed, error) -> table; rows that are not objects keep only their raw text."""
    ok = [isinstance(r[2], dict) and r[3] is None for r in rows]
    table = records_to_table([r[2] for r, good in zip(rows, ok) if good])
    index = np.cumsum(ok) - 1
    take = pa.array(index, mask=~np.asarray(ok, dtype=bool)) if rows else pa.array([], pa.int64())
    table = pa.table({n: pc.take(table.column(n), take) for n in table.column_names}) if table.num_columns else \
        pa.Table.from_struct_array(pa.array([{}] * len(rows), pa.struct([])))
    raws = pa.array([r[1] for r in rows], pa.string())
    errors = pa.array([r[3] or (None if good else "not a JSON object") for r, good in zip(rows, ok)], pa.string())
    return _with_meta(table, rel, [r[0] for r in rows], raws, pc.coalesce(errors, _encoding_errors(raws, lossy)))


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
