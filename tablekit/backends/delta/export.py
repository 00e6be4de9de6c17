"""``tablekit export``: a version of a local datastack written as CAVE's Delta Lake exports.

The layout, partitioning and z-order rules are the materialization service's
(``workflows/deltalake_export.py``; summarised in :mod:`.layout` and ``docs/delta-exports.md``),
so that what tablekit reads from its own exports it reads from the service's. Beside the lakes of
a version goes :data:`~.layout.METADATA_FILE`, everything a reader needs without a server.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import DatastackError, QueryError, UnknownTableError
from ...schema import ColumnKind, ColumnRole, TableSpec
from . import layout as _layout

__all__ = ["FORMAT", "FORMAT_VERSION", "export_delta"]

FORMAT = "tablekit-delta-export"
FORMAT_VERSION = 1
_INT32 = (-(2**31), 2**31 - 1)


def _deltalake() -> Any:
    try:
        import deltalake
    except ImportError:
        raise DatastackError(
            "writing or reading Delta Lake exports needs the deltalake package: pip install 'tablekit[delta]'"
        ) from None
    return deltalake


def _indexed_fields(spec: TableSpec, document: Mapping[str, Any] | None) -> list[str]:
    """Columns the service indexes besides ``id`` and positions: root ids, ``target_id`` and the
    schema's fields marked ``"index": true`` (timestamps never: the service skips them)."""
    marked: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            props = node.get("properties")
            if isinstance(props, Mapping):
                for name, prop in props.items():
                    if isinstance(prop, Mapping) and prop.get("index") is True:
                        marked.add(str(name))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(document or {})
    out = []
    for c in spec.columns:
        if c.kind in (ColumnKind.POSITION, ColumnKind.DATETIME) or c.name == "id":
            continue
        if c.role in (ColumnRole.ROOT_ID, ColumnRole.TARGET_ID) or (
            c.role is ColumnRole.VALUE and c.name in marked
        ):
            out.append(c.name)
    return out


def _rows(table: pa.Table, spec: TableSpec) -> pa.Table:
    """The lake's columns: the result's minus the dropped ones, positions as int32 (refused when a
    coordinate is not a whole number in int32's range: the service would wrap or truncate it)."""
    cols, names = [], []
    positions = {n for c in spec.positions for n in c.split_names}
    for name in table.column_names:
        if name in _layout.DROPPED:
            continue
        col = table[name]
        if name in positions:
            col = _int32_position(spec.name, name, col)
        cols.append(col)
        names.append(name)
    return pa.table(cols, names=names)


def _int32_position(table: str, name: str, col: pa.ChunkedArray) -> pa.ChunkedArray:
    if col.null_count < len(col) and len(col):
        lo, hi = pc.min(col).as_py(), pc.max(col).as_py()
        if lo < _INT32[0] or hi > _INT32[1]:
            bad = lo if lo < _INT32[0] else hi
            raise DatastackError(
                f"{table}.{name}: value {bad} does not fit the export's int32 positions; "
                "the export cannot hold this table (positions must lie within ±2**31)"
            )
        if pa.types.is_floating(col.type) and not pc.all(pc.equal(pc.floor(col), col)).as_py():
            raise DatastackError(
                f"{table}.{name}: positions with fractional coordinates cannot be written as the "
                "export's int32 positions; round them in the datastack first"
            )
    return col.cast(pa.int32())


def _morton(table: pa.Table, position: str) -> pa.Array:
    xs = [table[f"{position}_{a}"] for a in "xyz"]
    valid = pc.and_(pc.and_(pc.is_valid(xs[0]), pc.is_valid(xs[1])), pc.is_valid(xs[2]))
    valid_np = valid.to_numpy(zero_copy_only=False)
    filled = [pc.fill_null(x, 0).to_numpy().astype(np.int64) for x in xs]
    codes = _layout.morton_encode(*filled)
    return pa.array(codes, type=pa.int64(), mask=~valid_np)


def _lake_plan(
    table: pa.Table, column: str, n: int, strategy: str, morton_of: str | None
) -> tuple[pa.Table, list[Any]]:
    """The lake's rows with its partition column, and the breakpoints used."""
    t = table
    if morton_of is not None:
        t = t.append_column(column, _morton(t, morton_of))
    values = t[column]
    valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
    present = pc.drop_null(values).to_numpy()
    if strategy == "uniform_range":
        if len(present) and morton_of is not None:
            lo_c = [pc.min(t[f"{morton_of}_{a}"]).as_py() for a in "xyz"]
            hi_c = [pc.max(t[f"{morton_of}_{a}"]).as_py() for a in "xyz"]
            corners = _layout.morton_encode(
                np.array([lo_c[0], hi_c[0]]), np.array([lo_c[1], hi_c[1]]), np.array([lo_c[2], hi_c[2]])
            )
            breaks: list[Any] = _layout.uniform_breaks(float(corners.min()), float(corners.max()), n)
        else:
            breaks = []
    else:
        breaks = _layout.percentile_breaks(present, n)
    part = np.zeros(len(values), dtype=np.int32)
    if len(present):
        part[valid] = _layout.partition_of(present, breaks)
    t = t.append_column(_layout.lake_partition_column(column), pa.array(part, type=pa.int32(), mask=~valid))
    return t, breaks


def _write_lake(
    uri: str,
    rows: pa.Table,
    partition_by: str | None,
    zorder: Sequence[str],
    target_file_bytes: int | None,
) -> dict[str, Any]:
    dl = _deltalake()
    dl.write_deltalake(uri, rows, mode="error", partition_by=[partition_by] if partition_by else None)
    dt = dl.DeltaTable(uri)
    kwargs: dict[str, Any] = {"max_concurrent_tasks": 1}
    if target_file_bytes is not None:
        kwargs["target_size"] = int(target_file_bytes)
    if zorder:
        dt.optimize.z_order(columns=list(zorder), **kwargs)
    else:
        dt.optimize.compact(**kwargs)
    dt.vacuum(dry_run=False, retention_hours=0, enforce_retention_duration=False, full=True)
    dt = dl.DeltaTable(uri)
    actions = pa.table(dt.get_add_actions(flatten=True))
    return {
        "files": actions.num_rows,
        "bytes": int(pc.sum(actions["size_bytes"]).as_py() or 0),
        "delta_version": dt.version(),
    }


def _arrow_fields(t: pa.Table) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in t.schema]


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, _dt.datetime):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    return v


def export_delta(
    datastack: str,
    out: str | os.PathLike[str],
    *,
    version: int,
    path: str | os.PathLike[str] | None = None,
    tables: Sequence[str] | None = None,
    views: bool = True,
    small_table_mb: float = 200,
    target_partition_mb: float = 256,
    n_partitions: int | None = None,
    target_file_bytes: int | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write version ``version`` of a local datastack as CAVE's Delta Lake exports and return the
    version directory ``{out}/{datastack}/v{version}``.

    ``path`` is the datastack directory (default: the embedded ``demo``). Every table of the
    version (or those named in ``tables``) and, with ``views``, every view is written as the
    materialization service writes it (``docs/delta-exports.md``): one lake per indexed column,
    hive-partitioned and z-ordered on it, positions as int32 ``_x/_y/_z``, ``created`` dropped;
    then :data:`~tablekit.backends.delta.layout.METADATA_FILE` beside them, so that
    ``tablekit.connect(datastack, exports=out)`` can read the export without the datastack.

    The service's own knobs, with its defaults: a table smaller than ``small_table_mb`` (estimated
    from its Arrow size) gets the ``id`` lake only; each lake has ``ceil(size /
    target_partition_mb)`` partitions unless ``n_partitions`` is given; ``target_file_bytes`` is
    the z-order's target file size (delta-rs's default, 256 MB, when None). An existing version
    directory is refused unless ``overwrite``.
    """
    import tablekit

    from ...query import Query

    base = Path(out).expanduser()
    client = tablekit.connect(datastack, path=None if path is None else str(path))
    if client.datastack != datastack:
        raise DatastackError(f"{path}: the directory holds datastack {client.datastack!r}, not {datastack!r}")
    v = client.check_version(version)
    vdir = base / datastack / _layout.version_dir(v)
    if vdir.exists():
        if not overwrite:
            raise DatastackError(
                f"{vdir}: an export of {datastack} v{v} is already there; pass overwrite=True "
                "to replace it, or write to another base directory"
            )
        shutil.rmtree(vdir)
    names = client.get_tables(v)
    if tables is not None:
        unknown = [t for t in tables if t not in names]
        if unknown:
            raise UnknownTableError(
                f"{datastack} v{v}: no table {unknown[0]!r} to export. Tables: {', '.join(names)}"
            )
        names = [t for t in names if t in tables]
    say = progress or (lambda _msg: None)
    vdir.mkdir(parents=True)
    started = time.perf_counter()
    meta_tables: dict[str, Any] = {}
    schema_types: set[str] = set()
    raw_meta = {m["table_name"]: m for m in client.backend.tables_metadata(v)}
    for name in names:
        spec = client.spec(name, v)
        md = raw_meta[name]
        st = md.get("schema_type") or md.get("schema")
        schema_types.add(st)
        doc = client.backend.schemas([st]).get(st)
        result = client.answer(Query(datastack, name, kind="table", version=v))
        rows = _rows(result.table, spec)
        lakes = _layout.lake_names(_indexed_fields(spec, doc), [c.name for c in spec.positions])
        est_mb = rows.nbytes / 2**20
        if est_mb < small_table_mb:
            lakes = lakes[:1]  # the service's small-table rule: one lake
        n = n_partitions or _layout.n_partitions(
            rows.num_rows, rows.nbytes / max(rows.num_rows, 1), target_partition_mb
        )
        meta_tables[name] = _export_relation(vdir / name, name, rows, lakes, n, target_file_bytes, say)
        meta_tables[name]["metadata"] = _jsonable(md)
    meta_views: dict[str, Any] = {}
    if views and tables is None:
        for name in client.get_views(v):
            spec = client.spec(name, v, view=True)
            result = client.answer(Query(datastack, name, kind="view", version=v))
            rows = _rows(result.table, spec)
            meta_views[name] = _export_view(
                vdir / name, name, rows, spec, n_partitions, target_partition_mb, target_file_bytes, say
            )
            meta_views[name]["metadata"] = _jsonable(client.backend.views_metadata(v)[name])
            meta_views[name]["schema"] = _jsonable(client.backend.view_schemas(v)[name])
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "written_by": f"tablekit {tablekit.__version__}",
        "deltalake_version": _deltalake().__version__,
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "seconds": round(time.perf_counter() - started, 3),
        "datastack": datastack,
        "datastack_info": _jsonable(client.get_datastack_info()),
        "version": _jsonable(client.get_version_metadata(v)),
        "schemas": _jsonable(client.backend.schemas(sorted(schema_types))),
        "tables": meta_tables,
        "views": meta_views,
    }
    tmp = vdir / (_layout.METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, vdir / _layout.METADATA_FILE)  # written last: its presence means complete
    return vdir


def _export_relation(
    tdir: Path,
    name: str,
    rows: pa.Table,
    lakes: Sequence[str],
    n: int,
    target_file_bytes: int | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The lakes of one table: each partitioned on its column (Morton for the spatial one)."""
    out: dict[str, Any] = {"rows": rows.num_rows, "columns": _arrow_fields(rows), "lakes": {}}
    tdir.mkdir(parents=True)
    for lake in lakes:
        t0 = time.perf_counter()
        morton_of = lake[: -len("_morton")] if lake.endswith("_morton") else None
        strategy = "uniform_range" if morton_of else "percentile_range"
        if morton_of is None and lake not in rows.column_names:
            raise QueryError(f"{name}: no column {lake!r} to make a lake of")
        t, breaks = _lake_plan(rows, lake, n, strategy, morton_of)
        part = _layout.lake_partition_column(lake)
        info = _write_lake(str(tdir / lake), t, part, [lake], target_file_bytes)
        out["lakes"][lake] = {
            "column": lake,
            "partition_column": part,
            "strategy": strategy,
            "n_partitions": n,
            "breakpoints": _jsonable(breaks),
            "zorder": [lake],
            "morton_of": morton_of,
            **info,
        }
        say(
            f"{name}/{lake}: {rows.num_rows:,} rows, {info['files']} files in {time.perf_counter() - t0:.1f} s"
        )
    return out


def _export_view(
    vdir: Path,
    name: str,
    rows: pa.Table,
    spec: TableSpec,
    n_partitions: int | None,
    target_partition_mb: float,
    target_file_bytes: int | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """A view: the ``flat`` lake (unpartitioned), then ``id`` and the spatial lake re-partitioned
    from it, their partition counts from the flat lake's bytes per row (the service's two passes)."""
    vdir.mkdir(parents=True)
    t0 = time.perf_counter()
    info = _write_lake(str(vdir / "flat"), rows, None, [], target_file_bytes)
    lakes: dict[str, Any] = {
        "flat": {
            "column": None,
            "partition_column": None,
            "strategy": None,
            "n_partitions": 1,
            "breakpoints": [],
            "zorder": [],
            "morton_of": None,
            **info,
        }
    }
    say(f"{name}/flat: {rows.num_rows:,} rows, {info['files']} files in {time.perf_counter() - t0:.1f} s")
    per_row = info["bytes"] / rows.num_rows if rows.num_rows else 200
    n = n_partitions or _layout.n_partitions(rows.num_rows, per_row, target_partition_mb)
    names = (["id"] if "id" in rows.column_names else []) + _layout.lake_names(
        (), [c.name for c in spec.positions]
    )[1:]
    sub = _export_relation(vdir / "_partitioned", name, rows, names, n, target_file_bytes, say)
    for lake in names:
        os.replace(vdir / "_partitioned" / lake, vdir / lake)
        lakes[lake] = sub["lakes"][lake]
    (vdir / "_partitioned").rmdir()
    return {"rows": rows.num_rows, "columns": _arrow_fields(rows), "lakes": lakes}
