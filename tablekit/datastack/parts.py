"""Parquet writers: annotation and segmentation histories streamed to part files."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DatastackError
from ..schema import TableSpec
from .checksums import file_record, write_manifest
from .format import _INT64_MAX, COMPRESSION, SEGMENTATION_SCHEMA, annotation_schema, load_table_specs

ROW_GROUP_ROWS = 1_000_000  # rows per Parquet row group
FILE_ROWS = 16_000_000  # rows per part file before a new one is started


# --------------------------------------------------------------------------- Parquet writers


class _PartWriter:
    """Streams Arrow tables into ``part-NNNNN.parquet`` files: ~1M-row row groups, rolling files,
    Parquet page CRCs, and on :meth:`close` the directory's ``_checksums.json`` (size, CRC-32 and
    rows of every part, which the engine verifies before reading them)."""

    def __init__(self, directory: Path, schema: pa.Schema, *, sorted_by_id: bool = False):
        self.directory = directory
        self.schema = schema
        self.sorted_by_id = sorted_by_id
        self.rows = 0
        self._file_rows = 0
        self._part = 0
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._records: dict[str, dict[str, Any]] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self) -> Path:
        return self.directory / f"part-{self._part:05d}.parquet"

    def _close_part(self) -> None:
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        self._records[self._path().name] = file_record(self._path(), self._file_rows)

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            kw: dict[str, Any] = {}
            if self.sorted_by_id:
                kw["sorting_columns"] = [pq.SortingColumn(0)]
            # dictionary-encode strings only: ids and positions are high-cardinality, and plain
            # encoding reads about twice as fast for them
            strings = [f.name for f in self.schema if pa.types.is_string(f.type)]
            self._writer = pq.ParquetWriter(
                self._path(),
                self.schema,
                compression=COMPRESSION,
                use_dictionary=strings,  # type: ignore[arg-type]  # a list of columns is allowed
                write_page_checksum=True,
                **kw,
            )
        return self._writer

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._buffer.append(table)
        self._buffered += table.num_rows
        while self._buffered >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, n: int) -> None:
        t = pa.concat_tables(self._buffer)
        head, rest = t.slice(0, n), t.slice(n)
        self._open().write_table(head, row_group_size=n)
        self.rows += head.num_rows
        self._file_rows += head.num_rows
        self._buffer = [rest] if rest.num_rows else []
        self._buffered = rest.num_rows
        if self._file_rows >= FILE_ROWS:
            self._close_part()
            self._part += 1
            self._file_rows = 0

    def close(self) -> int:
        if self._buffered:
            self._flush(self._buffered)
        if self._writer is None and self.rows == 0:
            self._open()  # an empty file still records the schema
        if self._writer is not None:
            self._close_part()
        write_manifest(self.directory, self._records)
        return self.rows


def _as_tables(data: Any) -> Iterator[pa.Table]:
    if isinstance(data, (pa.Table, pa.RecordBatch, pd.DataFrame)):
        data = [data]
    for item in data:
        if isinstance(item, pa.Table):
            yield item
        elif isinstance(item, pa.RecordBatch):
            yield pa.Table.from_batches([item])
        elif isinstance(item, pd.DataFrame):
            yield pa.Table.from_pandas(item, preserve_index=False)
        else:
            raise DatastackError(
                f"expected pyarrow Tables, RecordBatches or pandas DataFrames, got {type(item).__name__}"
            )


def _conform(t: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    names = set(t.column_names)
    missing = [n for n in schema.names if n not in names]
    extra = [n for n in t.column_names if n not in set(schema.names)]
    if missing or extra:
        raise DatastackError(
            f"{what}: columns do not match the format: missing {missing}, unexpected {extra}; "
            f"expected exactly {schema.names}"
        )
    cols = []
    for f in schema:
        col = t.column(f.name)
        if pa.types.is_timestamp(col.type) and col.type.tz is None:
            raise DatastackError(
                f"{what}, column {f.name!r}: naive timestamps; give timestamp[us, tz=UTC] "
                "(pandas: .dt.tz_localize('UTC'))"
            )
        try:
            col = col.cast(f.type, safe=True) if col.type != f.type else col
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DatastackError(
                f"{what}, column {f.name!r}: cannot store {col.type} as {f.type} ({e})"
            ) from e
        if not f.nullable and col.null_count:
            raise DatastackError(
                f"{what}, column {f.name!r}: {col.null_count} null values; the column is required"
            )
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


@contextlib.contextmanager
def _replace_on_success(dest: Path) -> Iterator[Path]:
    """Yield a temp dir next to ``dest``; on success it replaces ``dest``, on error it is removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, dest)


def _swap_in(tmp: Path, dest: Path) -> None:
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_annotations(
    path: str | os.PathLike[str],
    table: str,
    data: Any,
    *,
    spec: TableSpec | None = None,
) -> int:
    """Write (replace) the annotation history of ``table``; return the number of rows.

    ``data`` is an Arrow table / record batch / DataFrame, or an iterator of them, with exactly the
    columns of :func:`annotation_schema` (any order). Rows must arrive sorted by ``id`` with unique
    ids, across batches too; values are cast to the format's types only where that is lossless.
    ``spec`` defaults to the one built from the directory's metadata.json and schemas.json.
    """
    root = Path(path)
    if spec is None:
        specs = load_table_specs(root)
        if table not in specs:
            raise DatastackError(
                f"table {table!r}: no tables/{table}/metadata.json in {root}; write it first"
            )
        spec = specs[table]
    schema = annotation_schema(spec)
    last: int | None = None
    with _replace_on_success(root / "tables" / table / "annotations") as tmp:
        writer = _PartWriter(tmp, schema, sorted_by_id=True)
        for t in _as_tables(data):
            t = _conform(t, schema, f"table {table!r}")
            if t.num_rows == 0:
                continue
            ids = t.column("id").to_numpy()
            bad = np.flatnonzero(np.diff(ids) <= 0)
            if last is not None and ids[0] <= last:
                raise DatastackError(
                    f"table {table!r}, column 'id': id {ids[0]} follows id {last}; the annotation history "
                    "must be sorted by id with unique ids — sort the input by id and remove duplicates"
                )
            if bad.size:
                i = int(bad[0])
                raise DatastackError(
                    f"table {table!r}, column 'id': id {ids[i + 1]} follows id {ids[i]}; the annotation "
                    "history must be sorted by id with unique ids — sort the input by id and remove duplicates"
                )
            last = int(ids[-1])
            writer.write(t)
        return writer.close()


def write_segmentation_history(path: str | os.PathLike[str], data: Any) -> int:
    """Write (replace) ``segmentation/history``; return the number of rows.

    ``data``: Arrow table(s) / DataFrame(s) with ``supervoxel_id, root_id, valid_from, valid_to``
    (``valid_to`` null = still current). Supervoxel 0 must not be listed (its root is always 0).
    """
    root = Path(path)
    with _replace_on_success(root / "segmentation" / "history") as tmp:
        writer = _PartWriter(tmp, SEGMENTATION_SCHEMA)
        for t in _as_tables(data):
            t = _conform(t, SEGMENTATION_SCHEMA, "segmentation history")
            sv = t.column("supervoxel_id").to_numpy()
            if (sv <= 0).any():
                bad = int(sv[sv <= 0][0])
                raise DatastackError(
                    f"segmentation history, column 'supervoxel_id': value {bad}; supervoxel ids are positive "
                    "(supervoxel 0 is implicit, root 0) — drop those rows"
                )
            vf = t.column("valid_from").cast(pa.int64()).to_numpy()
            vt = _filled(t.column("valid_to").cast(pa.int64()), _INT64_MAX)
            if (vt <= vf).any():
                i = int(np.flatnonzero(vt <= vf)[0])
                raise DatastackError(
                    f"segmentation history, column 'valid_to': supervoxel {sv[i]} has an empty interval "
                    f"({t.column('valid_from')[i]} … {t.column('valid_to')[i]}); valid_to must be after valid_from"
                )
            writer.write(t)
        return writer.close()


def _filled(arr: Any, value: Any) -> np.ndarray:
    """An Arrow array (or chunked array) as numpy, nulls replaced by ``value``."""
    return arr.fill_null(value).to_numpy(zero_copy_only=False)


#: the fix for a damaged history file that materialize() would read
