"""Write and materialize *datastack directories* (the format in ``docs/datastack-format.md``).

Three layers, from low to high:

* **Writers** — :func:`write_datastack_json`, :func:`write_schemas`, :func:`write_versions`,
  :func:`write_table_metadata`, :func:`write_annotations`, :func:`write_segmentation_history`,
  :func:`write_view`. They write exactly the on-disk contract. Parquet writers take a table or an
  *iterator* of Arrow tables / record batches / DataFrames and stream them to disk in row groups
  of about a million rows, so tables far larger than memory can be written.
* :func:`materialize` — rebuilds ``versions/<v>/<table>/`` snapshots from the annotation history
  and the segmentation history, one row group at a time (memory does not grow with table size).
* :func:`build_datastack` + :class:`TableSource` — build a whole datastack (one version) from
  DataFrames or Parquet files in CAVE's flat-column layout, with thorough input validation.

Example::

    import tablekit
    from tablekit.datastack import TableSource

    path = tablekit.build_datastack(
        "my_stack",
        [TableSource("nuclei", "nucleus_detection", nuclei_df),
         TableSource("cell_types", "cell_type_reference", types_df, reference_table="nuclei")],
        name="my_stack", soma_table="nuclei",
    )
    client = tablekit.connect(path=path)
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._checksums import file_record, verify, write_manifest
from ._values import short
from .errors import DatastackError, SchemaError
from .schema import ColumnKind, ColumnRole, PointKind, TableSpec, resolution_triple, table_spec

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SEGMENTATION_SCHEMA",
    "TableSource",
    "annotation_schema",
    "build_datastack",
    "bundled_schemas",
    "check_datastack_name",
    "check_views",
    "format_timestamp",
    "load_table_specs",
    "materialize",
    "parse_timestamp",
    "read_datastack_json",
    "read_schemas",
    "read_versions",
    "replacing_directory",
    "snapshot_schema",
    "table_metadata",
    "version_metadata",
    "write_annotations",
    "write_datastack_json",
    "write_schemas",
    "write_segmentation_history",
    "write_table_metadata",
    "write_versions",
    "write_view",
]

FORMAT = "tablekit-datastack"
FORMAT_VERSION = 1
ROW_GROUP_ROWS = 1_000_000  # rows per Parquet row group
FILE_ROWS = 16_000_000  # rows per part file before a new one is started
COMPRESSION: Literal["zstd"] = "zstd"
TABLE_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,127}$")
DATASTACK_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

_TS = pa.timestamp("us", tz="UTC")
_INT64_MAX = np.iinfo(np.int64).max
_MISSING = np.iinfo(np.int64).min  # "no root known" in the root lookup

SEGMENTATION_SCHEMA = pa.schema(
    [
        pa.field("supervoxel_id", pa.int64(), nullable=False),
        pa.field("root_id", pa.int64(), nullable=False),
        pa.field("valid_from", _TS, nullable=False),
        pa.field("valid_to", _TS),
    ]
)

_KIND_TYPES: dict[ColumnKind, pa.DataType] = {
    ColumnKind.INT: pa.int64(),
    ColumnKind.FLOAT: pa.float64(),
    ColumnKind.STRING: pa.string(),
    ColumnKind.BOOL: pa.bool_(),
    ColumnKind.DATETIME: _TS,
    ColumnKind.POSITION: pa.int64(),
}

# --------------------------------------------------------------------------- timestamps and JSON


def _utc(value: Any, what: str) -> pd.Timestamp:
    """An aware UTC timestamp from a datetime / pandas Timestamp / ISO string; naive is an error."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as e:
        raise DatastackError(f"{what}: {value!r} is not a timestamp; pass an aware datetime in UTC") from e
    if ts is pd.NaT:
        raise DatastackError(f"{what}: got NaT; pass an aware datetime in UTC")
    if ts.tzinfo is None:
        raise DatastackError(
            f"{what}: {value!r} has no time zone; pass an aware UTC datetime, e.g. "
            "datetime(2025, 1, 6, 8, tzinfo=timezone.utc) or pd.Timestamp('2025-01-06T08:00', tz='UTC')"
        )
    return ts.tz_convert("UTC")


def _us(ts: pd.Timestamp) -> int:
    """Microseconds since the epoch."""
    return int(ts.value // 1000)


def format_timestamp(value: Any) -> str:
    """A UTC timestamp as CAVE writes it in JSON: ISO-8601, microseconds, no offset."""
    ts = _utc(value, "timestamp")
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")


def parse_timestamp(value: str) -> pd.Timestamp:
    """Read a JSON timestamp of the format (naive ISO strings are UTC)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DatastackError(f"{path} is missing; is {path.parent} a datastack directory?") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatastackError(f"{path} is not valid JSON ({e}); rewrite it or rebuild the datastack") from e


def _resolution(value: Any, what: str) -> list[float]:
    out = resolution_triple(value)
    if out is None:
        raise DatastackError(
            f"{what}: {value!r} is not three positive numbers (nm per voxel, e.g. [4, 4, 40])"
        )
    return list(out)


def _check_table_name(name: Any, what: str = "table") -> str:
    if not isinstance(name, str) or not TABLE_NAME_RE.fullmatch(name):
        raise DatastackError(
            f"{what} name {short(name)} is invalid: names must match ^[a-z_][a-z0-9_]*$ (lowercase "
            "letters, digits and underscores, not starting with a digit, at most 128 characters), "
            "e.g. 'synapses_v2'"
        )
    return name


def check_datastack_name(name: Any, where: str = "") -> str:
    """``name`` if it can name a datastack (1–128 letters, digits, ``_``, ``-``, ``.``), else a
    :class:`DatastackError` (prefixed with ``where``). The name reaches file names, generated
    stubs and log lines, so quotes, spaces, line breaks and control characters are refused."""
    if not isinstance(name, str) or not DATASTACK_NAME_RE.fullmatch(name):
        raise DatastackError(
            f"{where}datastack name {short(name)} is invalid: it must be 1–128 letters, digits, '_', "
            "'-' or '.', not starting with '-' or '.' (no spaces, quotes, line breaks or control "
            "characters), e.g. 'my_stack'"
        )
    return name


# --------------------------------------------------------------------------- schema documents


@cache
def _bundled() -> dict[str, Any]:
    text = resources.files("tablekit").joinpath("_data/cave_schemas.json").read_text(encoding="utf-8")
    return json.loads(text)


def bundled_schemas() -> dict[str, Any]:
    """The 57 CAVE schema documents shipped with tablekit, ``{schema_type: JSON Schema}``."""
    return dict(_bundled())


def annotation_schema(spec: TableSpec) -> pa.Schema:
    """Arrow schema of a table's annotation history (``tables/<t>/annotations``).

    ``id, created, deleted, superceded_id, valid``, then the table's stored columns without the
    root ids (root ids are a function of supervoxel and time).
    """
    fields: list[pa.Field] = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("created", _TS, nullable=False),
        pa.field("deleted", _TS),
        pa.field("superceded_id", pa.int64()),
        pa.field("valid", pa.bool_()),
    ]
    for c in spec.columns:
        if c.role in (ColumnRole.ID, ColumnRole.BOOKKEEPING, ColumnRole.ROOT_ID):
            continue
        names = c.split_names if c.kind is ColumnKind.POSITION else (c.name,)
        fields.extend(pa.field(n, _KIND_TYPES[c.kind]) for n in names)
    return pa.schema(fields)


def snapshot_schema(spec: TableSpec) -> pa.Schema:
    """Arrow schema of a materialized snapshot (``versions/<v>/<table>``): ``spec.stored_columns``."""
    fields: list[pa.Field] = []
    for c in spec.columns:
        names = c.split_names if c.kind is ColumnKind.POSITION else (c.name,)
        nullable = c.role is not ColumnRole.ID and c.name != "created"
        fields.extend(pa.field(n, _KIND_TYPES[c.kind], nullable=nullable) for n in names)
    return pa.schema(fields)


def _bound_points(spec: TableSpec) -> list[tuple[str, str]]:
    """``(supervoxel column, root column)`` of every bound or derived point."""
    return [
        (p.column("supervoxel_id"), p.column("root_id"))
        for p in spec.points
        if p.kind in (PointKind.BOUND, PointKind.DERIVED)
    ]


# --------------------------------------------------------------------------- JSON writers / readers


def write_datastack_json(
    path: str | os.PathLike[str],
    *,
    name: str,
    description: str = "",
    synapse_table: str | None = None,
    soma_table: str | None = None,
    viewer_resolution: Sequence[float] = (4.0, 4.0, 40.0),
    aligned_volume: str | None = None,
    pcg_table_name: str | None = None,
    segmentation_source: str | None = None,
) -> dict[str, Any]:
    """Write ``datastack.json`` and return its content."""
    check_datastack_name(name)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "aligned_volume": aligned_volume or f"{name}_volume",
        "pcg_table_name": pcg_table_name or f"{name}_pcg",
        "segmentation_source": segmentation_source or f"graphene://local/{pcg_table_name or name + '_pcg'}",
        "viewer_resolution": _resolution(viewer_resolution, f"datastack {name!r}: viewer_resolution"),
        "synapse_table": synapse_table,
        "soma_table": soma_table,
    }
    _write_json(Path(path) / "datastack.json", info)
    return info


def read_datastack_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``datastack.json``."""
    info = _read_json(Path(path) / "datastack.json")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DatastackError(f"{path}/datastack.json does not describe a {FORMAT!r} directory")
    if info.get("format_version") != FORMAT_VERSION:
        raise DatastackError(
            f"{path}: datastack format version {info.get('format_version')!r}; this tablekit reads "
            f"version {FORMAT_VERSION}. Rebuild the datastack with this tablekit"
        )
    check_datastack_name(info.get("name"), f"{path}/datastack.json: ")
    return info


def write_schemas(path: str | os.PathLike[str], schemas: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``schemas.json``: ``{schema_type: JSON Schema document}`` (only the types in use)."""
    _write_json(Path(path) / "schemas.json", {k: schemas[k] for k in sorted(schemas)})


def read_schemas(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``schemas.json``: ``{schema_type: JSON Schema document}``."""
    file = Path(path) / "schemas.json"
    docs = _read_json(file)
    if not isinstance(docs, dict) or not all(isinstance(d, dict) for d in docs.values()):
        raise DatastackError(
            f"{file} must map each schema type to its JSON Schema document (an object); "
            "rewrite it with write_schemas()"
        )
    return docs


def version_metadata(
    version: int,
    time_stamp: Any,
    *,
    datastack: str,
    expires_on: Any = None,
    valid: bool = True,
    status: str | None = None,
    is_merged: bool = True,
    id: int | None = None,
) -> dict[str, Any]:
    """One entry of ``versions.json`` in CAVE's version-metadata shape.

    ``status`` defaults to ``"AVAILABLE"`` for valid and ``"EXPIRED"`` for invalid versions.
    """
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)):
        raise DatastackError(f"version number {version!r} must be an int")
    return {
        "version": int(version),
        "time_stamp": format_timestamp(time_stamp),
        "expires_on": None if expires_on is None else format_timestamp(expires_on),
        "valid": bool(valid),
        "status": status or ("AVAILABLE" if valid else "EXPIRED"),
        "is_merged": bool(is_merged),
        "datastack": datastack,
        "id": int(version if id is None else id),
    }


def write_versions(
    path: str | os.PathLike[str], versions: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Write ``versions.json`` (entries from :func:`version_metadata`), sorted by version."""
    out = sorted((dict(v) for v in versions), key=lambda v: v["version"])
    nums = [v["version"] for v in out]
    dup = sorted({n for n in nums if nums.count(n) > 1})
    if dup:
        raise DatastackError(f"versions.json: version numbers {dup} occur twice; give each version once")
    _write_json(Path(path) / "versions.json", out)
    return out


def read_versions(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """``versions.json`` with ``time_stamp`` / ``expires_on`` as aware UTC timestamps.

    A malformed file (not a list, an entry without an integer ``version``, an unreadable time
    stamp) is a :class:`DatastackError` naming the file, the version and the value."""
    file = Path(path) / "versions.json"
    fix = f"Fix: correct it in {file}"
    raw = _read_json(file)
    if not isinstance(raw, list):
        raise DatastackError(f"{file} holds {type(raw).__name__}, not a list of version objects. {fix}")
    out = []
    for i, v in enumerate(raw):
        num = v.get("version") if isinstance(v, dict) else None
        if isinstance(num, bool) or not isinstance(num, int):
            raise DatastackError(f"{file}, entry {i}: {short(v)} has no integer 'version'. {fix}")
        v = dict(v)
        for key in ("time_stamp", "expires_on"):
            if key == "expires_on" and not v.get(key):
                continue
            try:
                if not isinstance(v.get(key), str):
                    raise ValueError("not a string")
                v[key] = parse_timestamp(v[key])
            except ValueError as e:
                raise DatastackError(
                    f"{file}, version {num}: {key!r} is {short(v.get(key))}, not an ISO-8601 UTC "
                    f"timestamp such as '2025-03-31T08:01:07.000250'. {fix}"
                ) from e
        out.append(v)
    return sorted(out, key=lambda v: v["version"])


def table_metadata(
    table_name: str,
    schema_type: str,
    *,
    aligned_volume: str,
    pcg_table_name: str,
    created: Any,
    description: str = "",
    voxel_resolution: Sequence[float] = (4.0, 4.0, 40.0),
    reference_table: str | None = None,
    notice_text: str | None = None,
    last_modified: Any = None,
    user_id: str = "0",
    read_permission: str = "PUBLIC",
    write_permission: str = "PRIVATE",
) -> dict[str, Any]:
    """Table metadata in CAVE's shape (cave-data-model.md §3.1), for ``tables/<t>/metadata.json``."""
    res = _resolution(voxel_resolution, f"table {table_name!r}: voxel_resolution")
    return {
        "table_name": _check_table_name(table_name),
        "schema_type": schema_type,
        "schema": schema_type,
        "description": description,
        "notice_text": notice_text,
        "reference_table": reference_table,
        "flat_segmentation_source": None,
        "voxel_resolution_x": res[0],
        "voxel_resolution_y": res[1],
        "voxel_resolution_z": res[2],
        "created": format_timestamp(created),
        "last_modified": format_timestamp(created if last_modified is None else last_modified),
        "user_id": str(user_id),
        "valid": True,
        "read_permission": read_permission,
        "write_permission": write_permission,
        "aligned_volume": aligned_volume,
        "pcg_table_name": pcg_table_name,
        "segmentation_source": "",
    }


def write_table_metadata(path: str | os.PathLike[str], metadata: Mapping[str, Any]) -> None:
    """Write ``tables/<table_name>/metadata.json``."""
    name = _check_table_name(metadata.get("table_name"))
    _write_json(Path(path) / "tables" / name / "metadata.json", dict(metadata))


def load_table_specs(path: str | os.PathLike[str]) -> dict[str, TableSpec]:
    """``{table: TableSpec}`` of every table of a datastack directory, from its own schemas.json."""
    root = Path(path)
    schemas = read_schemas(root)
    specs: dict[str, TableSpec] = {}
    tdir = root / "tables"
    for meta_file in sorted(tdir.glob("*/metadata.json")) if tdir.is_dir() else []:
        meta = _read_json(meta_file)
        try:
            spec = table_spec(meta, schemas)
        except SchemaError as e:
            raise DatastackError(f"{meta_file}: {e}") from e
        specs[spec.name] = spec
    return specs


def write_view(path: str | os.PathLike[str], name: str, definition: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``views/<name>.json``. ``definition`` needs ``sql``; ``description`` (""),
    ``voxel_resolution`` ([4, 4, 40]), ``live_compatible`` (False) and ``notice_text`` (None) are
    optional."""
    _check_table_name(name, "view")
    if not isinstance(definition, Mapping):
        raise DatastackError(f"view {name!r}: expected a dict with 'sql', got {type(definition).__name__}")
    allowed = {"sql", "description", "voxel_resolution", "live_compatible", "notice_text"}
    extra = sorted(set(definition) - allowed)
    if extra:
        raise DatastackError(f"view {name!r}: unknown keys {extra}; a view has {sorted(allowed)}")
    sql = definition.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise DatastackError(f"view {name!r}: 'sql' must be a non-empty DuckDB SELECT statement, got {sql!r}")
    out = {
        "sql": sql,
        "description": str(definition.get("description", "")),
        "voxel_resolution": _resolution(
            definition.get("voxel_resolution", (4.0, 4.0, 40.0)), f"view {name!r}: voxel_resolution"
        ),
        "live_compatible": bool(definition.get("live_compatible", False)),
        "notice_text": definition.get("notice_text"),
    }
    _write_json(Path(path) / "views" / f"{name}.json", out)
    return out


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


# --------------------------------------------------------------------------- materialize


def _filled(arr: Any, value: Any) -> np.ndarray:
    """An Arrow array (or chunked array) as numpy, nulls replaced by ``value``."""
    return arr.fill_null(value).to_numpy(zero_copy_only=False)


#: the fix for a damaged history file that materialize() would read
_DAMAGED = "Fix: restore the datastack from where it came from, or rebuild it; materialize() reads it"


def _parquet_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


class _RootLookup:
    """Supervoxel → root at a fixed set of times, from the segmentation history.

    ``keys`` are all supervoxels in the history (sorted); ``roots[i, k]`` is the root of ``keys[k]``
    at ``times[i]`` (``_MISSING`` if no interval contains that time).
    """

    def __init__(self, files: list[Path], times: list[int], labels: list[str]):
        self.labels = labels
        parts = [pq.read_table(f, columns=["supervoxel_id"]).column(0).to_numpy() for f in files]
        self.keys = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        del parts
        self.roots = np.full((len(times), len(self.keys)), _MISSING, dtype=np.int64)
        t_arr = np.asarray(times, dtype=np.int64)
        for f in files:
            pf = pq.ParquetFile(f, page_checksum_verification=True)
            for g in range(pf.num_row_groups):
                rg = pf.read_row_group(g)
                sv = rg.column("supervoxel_id").to_numpy()
                root = rg.column("root_id").to_numpy()
                vf = rg.column("valid_from").cast(pa.int64()).to_numpy()
                vt = _filled(rg.column("valid_to").cast(pa.int64()), _INT64_MAX)
                idx = np.searchsorted(self.keys, sv)
                for i, t in enumerate(t_arr):
                    m = (vf <= t) & (t < vt)
                    sel = idx[m]
                    taken = self.roots[i, sel] != _MISSING
                    if taken.any() or np.unique(sel).size != sel.size:
                        dup = int(sv[m][taken][0]) if taken.any() else int(_first_duplicate(sv[m]))
                        raise DatastackError(
                            f"segmentation history: supervoxel {dup} has two overlapping intervals at "
                            f"{labels[i]}; each supervoxel's intervals must be disjoint — fix the history"
                        )
                    self.roots[i, sel] = root[m]

    def locate(self, sv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index into ``keys`` (clipped) and whether the supervoxel is in the history."""
        if self.keys.size == 0:
            return np.zeros(sv.shape, np.int64), np.zeros(sv.shape, bool)
        idx = np.searchsorted(self.keys, sv)
        np.minimum(idx, self.keys.size - 1, out=idx)
        return idx, self.keys[idx] == sv


def _first_duplicate(a: np.ndarray) -> int:
    s = np.sort(a)
    return int(s[np.flatnonzero(s[1:] == s[:-1])[0]])


def materialize(
    path: str | os.PathLike[str], versions: Iterable[int] | None = None
) -> dict[int, dict[str, int]]:
    """(Re)build the snapshots ``versions/<v>/<table>/`` from the annotation and segmentation history.

    For each valid version (or only ``versions``) with time stamp ``T``, every table's snapshot holds
    the annotations with ``created <= T``, ``deleted`` null or ``> T`` and ``valid = true``, sorted by
    id, with each bound point's root id looked up in the segmentation history at ``T`` (supervoxel
    0 → root 0, null supervoxel → null root). Tables are streamed one row group at a time, so memory
    is bounded by the row-group size and the number of supervoxels, not by the table size. Each
    version directory is replaced as a whole once all its tables are written.

    Returns ``{version: {table: rows}}``. Raises :class:`~tablekit.errors.DatastackError` for an
    unknown or expired version, an unsorted annotation history, or a supervoxel that has no root
    at ``T``.
    """
    root = Path(path)
    read_datastack_json(root)
    vmeta = {v["version"]: v for v in read_versions(root)}
    if versions is None:
        todo = [v for v, m in vmeta.items() if m.get("valid")]
    else:
        todo = []
        for v in versions:
            if v not in vmeta:
                raise DatastackError(
                    f"{root}: no version {v!r} in versions.json; known versions {sorted(vmeta)}"
                )
            if not vmeta[v].get("valid"):
                raise DatastackError(
                    f"{root}: version {v} is expired (valid false, status {vmeta[v].get('status')}); "
                    "expired versions have no snapshot — mark it valid in versions.json to materialize it"
                )
            todo.append(int(v))
        todo = sorted(set(todo))
    result: dict[int, dict[str, int]] = {v: {} for v in todo}
    if not todo:
        return result
    times = [_us(vmeta[v]["time_stamp"]) for v in todo]
    labels = [f"version {v} ({format_timestamp(vmeta[v]['time_stamp'])})" for v in todo]
    specs = load_table_specs(root)
    history = _parquet_files(root / "segmentation" / "history")
    verify([str(f) for f in history], str(root), _DAMAGED)
    lookup = _RootLookup(history, times, labels)
    vdir = root / "versions"
    vdir.mkdir(exist_ok=True)
    build = vdir / f".tmp-{uuid.uuid4().hex[:8]}"
    try:
        for name, spec in specs.items():
            counts = _materialize_table(root, build, spec, todo, times, labels, lookup)
            for v, n in zip(todo, counts, strict=True):
                result[v][name] = n
        for v in todo:
            out = build / str(v)
            out.mkdir(parents=True, exist_ok=True)
            _swap_in(out, vdir / str(v))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return result


def _materialize_table(
    root: Path,
    build: Path,
    spec: TableSpec,
    todo: list[int],
    times: list[int],
    labels: list[str],
    lookup: _RootLookup,
) -> list[int]:
    out_schema = snapshot_schema(spec)
    in_schema = annotation_schema(spec)
    points = _bound_points(spec)
    writers = [_PartWriter(build / str(v) / spec.name, out_schema, sorted_by_id=True) for v in todo]
    files = _parquet_files(root / "tables" / spec.name / "annotations")
    if not files:
        raise DatastackError(f"table {spec.name!r}: no annotation files in tables/{spec.name}/annotations")
    verify([str(f) for f in files], str(root), _DAMAGED)
    last_id: int | None = None
    for f in files:
        pf = pq.ParquetFile(f, page_checksum_verification=True)
        missing = [n for n in in_schema.names if n not in pf.schema_arrow.names]
        if missing:
            raise DatastackError(f"table {spec.name!r}: {f} lacks columns {missing}; rewrite the annotations")
        for g in range(pf.num_row_groups):
            rg = pf.read_row_group(g, columns=in_schema.names)
            if rg.num_rows == 0:
                continue
            ids = rg.column("id").to_numpy()
            if (last_id is not None and ids[0] <= last_id) or (np.diff(ids) <= 0).any():
                raise DatastackError(
                    f"table {spec.name!r}: the annotation history in {f} is not sorted by unique id; "
                    "rewrite it with write_annotations()"
                )
            last_id = int(ids[-1])
            created = rg.column("created").cast(pa.int64()).to_numpy()
            deleted = _filled(rg.column("deleted").cast(pa.int64()), _INT64_MAX)
            valid = _filled(rg.column("valid"), False)
            located = []
            for sv_col, _ in points:
                col = rg.column(sv_col)
                isnull = col.is_null().to_numpy(zero_copy_only=False)
                sv = _filled(col, 0)
                idx, found = lookup.locate(sv)
                located.append((sv, isnull, idx, found))
            for i, t in enumerate(times):
                mask = (created <= t) & (deleted > t) & valid
                if not mask.any():
                    continue
                cols: dict[str, Any] = {n: rg.column(n) for n in in_schema.names}
                for (sv_col, root_col), (sv, isnull, idx, found) in zip(points, located, strict=True):
                    roots = lookup.roots[i][idx] if lookup.keys.size else np.full(sv.shape, _MISSING)
                    roots = np.where(sv == 0, 0, roots)
                    bad = mask & ~isnull & (sv != 0) & (~found | (roots == _MISSING))
                    if bad.any():
                        j = int(np.flatnonzero(bad)[0])
                        raise DatastackError(
                            f"table {spec.name!r}, column {sv_col!r}: supervoxel {sv[j]} (annotation id "
                            f"{ids[j]}) has no root at {labels[i]} — the segmentation history has no "
                            "interval containing that time; add one and run materialize() again"
                        )
                    cols[root_col] = pa.array(roots, type=pa.int64(), mask=isnull)
                snap = pa.Table.from_arrays([cols[n] for n in out_schema.names], schema=out_schema)
                writers[i].write(snap.filter(pa.array(mask)))
    return [w.close() for w in writers]


# --------------------------------------------------------------------------- build_datastack


@attrs.define
class TableSource:
    """One table for :func:`build_datastack`.

    Args:
        name: table name (``^[a-z_][a-z0-9_]*$``).
        schema_type: a CAVE schema type such as ``"synapse"`` or ``"nucleus_detection"``.
        data: a pandas DataFrame, a Parquet file path, or a list of Parquet paths, in CAVE's
            flat-column layout (what a CAVE query returns or exports): ``id``, optionally
            ``created``, ``valid``, ``deleted``, ``superceded_id``, the scalar fields, and per point
            ``P`` either ``P_position`` (3-element arrays/lists) or ``P_position_x/_y/_z``, plus
            ``P_supervoxel_id`` and ``P_root_id`` for bound points.
        voxel_resolution: nm per stored position unit, per axis.
        description: table description shown to users.
        reference_table: for schemas with ``target_id``: the name of the table whose ``id`` it refers to.
        notice_text: an owner notice shown as a warning on every query.
    """

    name: str
    schema_type: str
    data: Any = attrs.field(repr=False)
    voxel_resolution: tuple[float, float, float] = (4.0, 4.0, 40.0)
    description: str = ""
    reference_table: str | None = None
    notice_text: str | None = None


def build_datastack(
    path: str | os.PathLike[str],
    tables: Iterable[TableSource],
    *,
    name: str,
    synapse_table: str | None = None,
    soma_table: str | None = None,
    timestamp: Any = None,
    views: Mapping[str, Mapping[str, Any]] | None = None,
    description: str = "",
    overwrite: bool = False,
    viewer_resolution: Sequence[float] | None = None,
    schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Build a local datastack directory from your own tables; return its path.

    Each :class:`TableSource` holds one table in CAVE's flat-column layout (a DataFrame from
    ``client.materialize.query_table`` or a Parquet export). The datastack gets one
    materialization version, ``1``, at ``timestamp`` (default: now, UTC); its segmentation history
    says each observed supervoxel belonged to the observed root id since before the earliest
    ``created``. Open it with ``tablekit.connect(path=path)``.

    Args:
        path: the directory to write. It must not exist (or be empty) unless ``overwrite=True``,
            which replaces an existing datastack directory (never any other directory).
        tables: the tables.
        name: the datastack name.
        synapse_table, soma_table: names of the synapse and soma (nucleus) tables, if any.
        timestamp: aware datetime of version 1; must not be earlier than any ``created``.
        views: ``{view: {"sql": ..., "description": ..., "voxel_resolution": [x, y, z],
            "live_compatible": bool}}``; ``sql`` is a DuckDB SELECT over the quoted table names.
            Each view's SQL is run once against the new snapshot to check it.
        description: datastack description.
        overwrite: replace an existing datastack at ``path``.
        viewer_resolution: the datastack's viewer resolution (default: that of the synapse, soma
            or first table).
        schemas: extra ``{schema_type: JSON Schema}`` documents, for schema types tablekit does not bundle.

    Raises:
        DatastackError: for invalid input. The message names the table, the column and the
            offending value, and says what to change. Nothing is dropped or coerced silently:
            float ids must be integral, ``valid`` may be bools or ``"t"``/``"f"``, every
            supervoxel must map to one root id, ``target_id`` values must exist in the
            reference table.

    Example::

        build_datastack("my_stack", [TableSource("synapses", "synapse", syn_df)],
                        name="my_stack", synapse_table="synapses")
    """
    from ._ingest import (
        _check_supervoxel_roots,
        _check_targets,
        _history_from_pairs,
        _normalize,
        check_build_arguments,
        check_source_texts,
    )

    check_build_arguments(
        path,
        tables,
        description=description,
        synapse_table=synapse_table,
        soma_table=soma_table,
        views=views,
        schemas=schemas,
    )
    dest = Path(path)
    check_datastack_name(name, "build_datastack: ")
    docs = dict(_bundled())
    if schemas:
        docs.update(schemas)
    sources = list(tables)
    if not sources:
        raise DatastackError("build_datastack: no tables given; pass a list of TableSource objects")
    names: list[str] = []
    for s in sources:
        if not isinstance(s, TableSource):
            raise DatastackError(f"build_datastack: expected TableSource objects, got {type(s).__name__}")
        _check_table_name(s.name)
        check_source_texts(s)
        if s.name in names:
            raise DatastackError(f"table {s.name!r} is given twice; table names must be unique")
        names.append(s.name)
    ts = pd.Timestamp.now(tz="UTC") if timestamp is None else _utc(timestamp, "build_datastack: timestamp")
    ts = ts.floor("us")
    for role, t in (("synapse_table", synapse_table), ("soma_table", soma_table)):
        if t is not None and t not in names:
            raise DatastackError(f"{role} {t!r} is not one of the tables {names}; pass one of them or None")
    specs = {s.name: _source_spec(s, docs, names) for s in sources}
    view_defs = _check_views(views, names)

    frames: dict[str, pa.Table] = {}
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, str]] = []
    for s in sources:
        frames[s.name] = _normalize(s, specs[s.name], ts, pairs)
    _check_supervoxel_roots(pairs)
    for s in sources:
        if s.reference_table:
            _check_targets(s.name, frames[s.name], s.reference_table, frames[s.reference_table])

    created_min = [pc.min(t.column("created")).as_py() for t in frames.values() if t.num_rows]
    epoch = (min(created_min) if created_min else ts) - pd.Timedelta(seconds=1)
    epoch = pd.Timestamp(epoch).tz_convert("UTC")
    if viewer_resolution is None:
        first = synapse_table or soma_table or names[0]
        viewer_resolution = next(s.voxel_resolution for s in sources if s.name == first)

    with replacing_directory(dest, overwrite=overwrite) as tmp:
        info = write_datastack_json(
            tmp,
            name=name,
            description=description,
            synapse_table=synapse_table,
            soma_table=soma_table,
            viewer_resolution=viewer_resolution,
        )
        write_schemas(tmp, {s.schema_type: docs[s.schema_type] for s in sources})
        write_versions(tmp, [version_metadata(1, ts, datastack=name)])
        for s in sources:
            write_table_metadata(
                tmp,
                table_metadata(
                    s.name,
                    s.schema_type,
                    aligned_volume=info["aligned_volume"],
                    pcg_table_name=info["pcg_table_name"],
                    created=epoch,
                    last_modified=ts,
                    description=s.description,
                    voxel_resolution=s.voxel_resolution,
                    reference_table=s.reference_table,
                    notice_text=s.notice_text,
                ),
            )
            write_annotations(tmp, s.name, frames[s.name], spec=specs[s.name])
        write_segmentation_history(tmp, _history_from_pairs(pairs, epoch))
        for vname, vdef in view_defs.items():
            d = dict(vdef)
            d.setdefault("voxel_resolution", viewer_resolution)
            write_view(tmp, vname, d)
        materialize(tmp)
        check_views(tmp, 1)
    return dest


@contextlib.contextmanager
def replacing_directory(dest: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temp dir to build a datastack in; on success it atomically becomes ``dest``.

    ``dest`` must be absent or an empty directory, or (with ``overwrite``) a datastack directory.
    """
    dest = Path(dest)
    if dest.exists():
        if not dest.is_dir():
            raise DatastackError(f"{dest} exists and is not a directory; choose another path")
        if any(dest.iterdir()):
            if not overwrite:
                raise DatastackError(f"{dest} exists and is not empty; pass overwrite=True to replace it")
            marker = dest / "datastack.json"
            try:
                ok = json.loads(marker.read_text(encoding="utf-8")).get("format") == FORMAT
            except (OSError, ValueError, AttributeError):
                ok = False
            if not ok:
                raise DatastackError(
                    f"{dest} is not a tablekit datastack directory (no datastack.json); refusing to "
                    "overwrite it — choose an empty or new path"
                )
    with _replace_on_success(dest) as tmp:
        yield tmp


def _source_spec(s: TableSource, docs: Mapping[str, Any], names: list[str]) -> TableSpec:
    if not isinstance(s.schema_type, str) or s.schema_type not in docs:
        close = difflib.get_close_matches(str(s.schema_type), list(docs), n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise DatastackError(
            f"table {s.name!r}: unknown schema type {s.schema_type!r}; {hint}tablekit knows "
            f"{len(docs)} CAVE schema types (tablekit.datastack.bundled_schemas()); pass schemas= for others"
        )
    try:
        spec = table_spec(
            {
                "table_name": s.name,
                "schema_type": s.schema_type,
                "voxel_resolution": _resolution(s.voxel_resolution, f"table {s.name!r}: voxel_resolution"),
                "description": s.description,
            },
            docs,
        )
    except SchemaError as e:
        raise DatastackError(f"table {s.name!r}: {e}") from e
    has_target = any(c.role is ColumnRole.TARGET_ID for c in spec.columns)
    if has_target and not s.reference_table:
        raise DatastackError(
            f"table {s.name!r}: schema {s.schema_type!r} has a 'target_id' column but no reference_table "
            f"was given; pass reference_table=<the table target_id refers to>, one of {names}"
        )
    if s.reference_table and not has_target:
        raise DatastackError(
            f"table {s.name!r}: reference_table {s.reference_table!r} given, but schema {s.schema_type!r} "
            "has no 'target_id'; drop reference_table"
        )
    if s.reference_table and s.reference_table not in names:
        close = difflib.get_close_matches(s.reference_table, names, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise DatastackError(
            f"table {s.name!r}: reference_table {s.reference_table!r} is not one of the tables being "
            f"built{hint}; add it or pass one of {names}"
        )
    return spec


def _check_views(
    views: Mapping[str, Mapping[str, Any]] | None, names: list[str]
) -> dict[str, Mapping[str, Any]]:
    out = {}
    for vname, vdef in (views or {}).items():
        _check_table_name(vname, "view")
        if vname in names:
            raise DatastackError(f"view {vname!r} has the name of a table; give it another name")
        if not isinstance(vdef, Mapping) or "sql" not in vdef:
            raise DatastackError(f"view {vname!r}: expected a dict with at least 'sql', got {vdef!r}")
        out[vname] = vdef
    return out


def check_views(path: str | os.PathLike[str], version: int) -> None:
    """Run every view's SQL (``LIMIT 0``) against the snapshot of ``version``; raise if one fails."""
    import duckdb

    root = Path(path)
    vfiles = sorted((root / "views").glob("*.json"))
    if not vfiles:
        return
    from .backends._duckdb import lock_down, view_sql_problem

    con = duckdb.connect()
    try:
        lock_down(con, [root])
        snapshots = sorted((root / "versions" / str(version)).iterdir())
        for d in snapshots:
            glob = str(d / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW \"{d.name}\" AS SELECT * FROM read_parquet('{glob}')")
        for vf in vfiles:
            sql = _read_json(vf)["sql"]
            problem = view_sql_problem(con, sql, [d.name for d in snapshots])
            if problem is not None:
                raise DatastackError(
                    f"view {vf.stem!r} ({vf.name}) is refused: {problem}. Fix: make its 'sql' one SELECT "
                    "over the datastack's tables by their quoted names"
                )
            try:
                con.execute(f"SELECT * FROM ({sql}) AS v LIMIT 0")
            except duckdb.Error as e:
                raise DatastackError(f"view {vf.stem!r}: its SQL fails on version {version}: {e}") from e
    finally:
        con.close()
