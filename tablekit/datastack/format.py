"""The datastack format: names, schemas, and the JSON files' writers and readers."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import _time
from .._values import short
from ..errors import DatastackError, SchemaError
from ..schema import ColumnKind, ColumnRole, PointKind, TableSpec, resolution_triple, table_spec

FORMAT = "tablekit-datastack"
FORMAT_VERSION = 1
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
    """An aware UTC timestamp from a datetime / pandas Timestamp / ISO string; naive is an error
    (:func:`tablekit._time.utc_timestamp`, raising :class:`DatastackError`)."""
    if value is pd.NaT:
        raise DatastackError(f"{what}: got NaT; pass an aware datetime in UTC")
    if isinstance(value, pd.Timestamp) and value.tzinfo is not None:
        return value.tz_convert("UTC")  # keeps nanoseconds
    return pd.Timestamp(_time.utc_timestamp(value, what=what, error=DatastackError))


def _us(ts: pd.Timestamp) -> int:
    """Microseconds since the epoch."""
    return int(ts.value // 1000)


def format_timestamp(value: Any) -> str:
    """A UTC timestamp as CAVE writes it in JSON: ISO-8601, microseconds, no offset."""
    ts = _utc(value, "timestamp")
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")


def parse_timestamp(value: str) -> pd.Timestamp:
    """Read a JSON timestamp of the format (naive ISO strings are UTC)."""
    return pd.Timestamp(_time.parse_utc(value))


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
