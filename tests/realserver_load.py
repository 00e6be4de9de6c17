"""Load a tablekit datastack directory into the databases MaterializationEngine reads.

Run in the *server's* virtual environment (it imports dynamicannotationdb and emannotationschemas,
which tablekit's environment does not have)::

    <server venv>/bin/python tests/realserver_load.py postgresql://postgres@127.0.0.1:PORT/postgres DIR

It builds what a deployment holds (see ``tests/_real_server.py``):

* the live aligned-volume database ``<aligned_volume>``: every annotation table made by
  dynamicannotationdb (``annotation.create_table``, ``segmentation.create_segmentation_table``),
  filled with COPY from the annotation history (``created``/``deleted``/``superceded_id``; deleted
  rows get ``valid = false`` as ``delete_annotation`` does); the segmentation rows carry each
  annotation's supervoxels and their current roots, and an annotation with a pending supervoxel
  lookup (a null supervoxel) has no segmentation row yet; ``analysisversion`` (``is_merged``,
  ``valid``, ``status``) and ``analysistables`` rows for every version;
* one frozen database ``<datastack>__mat<version>`` per valid version: the merged flat tables
  (``create_flat_model``: no ``created`` column, as ``merge_tables`` leaves them) filled with COPY
  from the version's snapshot, ``materializedmetadata``, ``analysisviews`` and the views (the
  split position columns of a view's SQL read from the geometry column).

Prints one JSON line: what was loaded (tables, rows, versions, views, views left out and why).
"""

from __future__ import annotations

import io
import json
import re
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
from dynamicannotationdb import DynamicAnnotationInterface  # noqa: E402
from dynamicannotationdb.models import (  # noqa: E402
    AnalysisTable,
    AnalysisVersion,
    AnalysisView,
    Base,
    MatBase,
    MaterializedMetadata,
)
from dynamicannotationdb.schema import DynamicSchemaClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402


def _ts(value: str | None):
    import datetime

    return None if value is None else datetime.datetime.fromisoformat(value.replace("Z", ""))


def _read(directory: Path) -> pa.Table | None:
    files = sorted(directory.glob("*.parquet"))
    if not files:
        return None
    return pads.dataset([str(f) for f in files], format="parquet").to_table()


def _point(t: pa.Table, p: str) -> pa.Array:
    """``POINT Z (x y z)`` (WKT, which PostGIS reads on COPY), null where a coordinate is null."""
    xs = [pc.cast(t[f"{p}_{a}"], pa.string()) for a in "xyz"]
    joined = pc.binary_join_element_wise(*xs, " ")
    return pc.binary_join_element_wise(pa.scalar("POINT Z ("), joined, pa.scalar(")"), "")


def _copy(engine, table: str, columns: list[str], data: pa.Table) -> int:
    """COPY ``data`` (columns in order) into ``table`` as CSV (null = empty unquoted field)."""
    if data.num_rows == 0:
        return 0
    cols = []
    for c in data.columns:
        if pa.types.is_timestamp(c.type):
            c = pc.cast(c, pa.timestamp("us"))  # naive UTC, as the server's DateTime columns
        cols.append(c)
    data = pa.table(cols, names=columns)
    buf = io.BytesIO()
    pacsv.write_csv(data, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    buf.seek(0)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            names = ", ".join(f'"{c}"' for c in columns)
            cur.copy_expert(f'COPY "{table}" ({names}) FROM STDIN WITH (FORMAT csv)', buf)
        raw.commit()
    finally:
        raw.close()
    return data.num_rows


def _geometry_names(model) -> list[str]:
    return [c.name for c in model.__table__.columns if str(c.type).startswith("geometry")]


def _frame_for(model, t: pa.Table, *, live_valid: bool) -> tuple[list[str], pa.Table]:
    """The model's columns, in order, taken from a tablekit Parquet table."""
    cols, arrays = [], []
    for c in model.__table__.columns:
        name = c.name
        if str(c.type).startswith("geometry"):
            arr = _point(t, name)
        elif name == "valid" and live_valid:
            arr = pc.and_(t["valid"], pc.is_null(t["deleted"]))
        elif name in t.column_names:
            arr = t[name]
        else:
            raise SystemExit(f"loader: column {name!r} of {model.__table__.name} is not in the datastack")
        cols.append(name)
        arrays.append(arr)
    return cols, pa.table(arrays, names=cols)


_VIEW_POINT = re.compile(r"\b(\w+)_x\s*,\s*\1_y\s*,\s*\1_z\b")


def main() -> None:
    uri, root = sys.argv[1], Path(sys.argv[2])
    info = json.loads((root / "datastack.json").read_text())
    datastack, av, pcg = info["name"], info["aligned_volume"], info["pcg_table_name"]
    versions = json.loads((root / "versions.json").read_text())
    metas = {
        p.parent.name: json.loads(p.read_text()) for p in sorted((root / "tables").glob("*/metadata.json"))
    }
    # reference tables after their targets (foreign keys)
    order = sorted(metas, key=lambda n: metas[n].get("reference_table") is not None)
    report: dict = {"aligned_volume": av, "tables": {}, "versions": {}, "views_left_out": {}}

    base = uri.rpartition("/")[0]
    admin = create_engine(f"{base}/postgres", poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:  # a reload starts from nothing
        for db in [av] + [f"{datastack}__mat{v['version']}" for v in versions]:
            c.execute(text(f'DROP DATABASE IF EXISTS "{db}"'))
    dai = DynamicAnnotationInterface(uri, av)
    engine = dai.database.engine
    Base.metadata.create_all(engine)
    schema = DynamicSchemaClient()
    for name in order:
        md = metas[name]
        ref = md.get("reference_table")
        tmd = {"reference_table": ref} if ref else None
        dai.annotation.create_table(
            name,
            md["schema_type"],
            md.get("description") or "",
            md.get("user_id") or "tablekit",
            md["voxel_resolution_x"],
            md["voxel_resolution_y"],
            md["voxel_resolution_z"],
            table_metadata=tmd,
            notice_text=md.get("notice_text"),
        )
        hist = _read(root / "tables" / name / "annotations")
        model = schema.create_annotation_model(name, md["schema_type"], table_metadata=tmd)
        cols, data = _frame_for(model, hist, live_valid=True)
        n = _copy(engine, name, cols, data)
        seg_rows = 0
        if schema.is_segmentation_table_required(md["schema_type"]):
            seg_name = dai.segmentation.create_segmentation_table(name, md["schema_type"], pcg, tmd)
            seg_model = schema.create_segmentation_model(name, md["schema_type"], pcg, tmd)
            seg_rows = _copy_segmentation(engine, seg_name, seg_model, hist, root)
        report["tables"][name] = {"annotations": n, "segmentation": seg_rows}

    s = Session(bind=engine)
    try:
        for v in versions:
            s.add(
                AnalysisVersion(
                    id=v.get("id") or v["version"],
                    datastack=datastack,
                    version=v["version"],
                    time_stamp=_ts(v["time_stamp"]),
                    valid=v["valid"],
                    expires_on=_ts(v.get("expires_on")),
                    status=v.get("status") or ("AVAILABLE" if v["valid"] else "EXPIRED"),
                    is_merged=v.get("is_merged", True),
                )
            )
        s.flush()
        for v in versions:
            for name in order:
                if not (root / "versions" / str(v["version"]) / name).exists() and v["valid"]:
                    continue
                s.add(
                    AnalysisTable(
                        aligned_volume=av,
                        schema=metas[name]["schema_type"],
                        table_name=name,
                        valid=True,
                        created=_ts(v["time_stamp"]),
                        analysisversion_id=v.get("id") or v["version"],
                    )
                )
        views = {p.stem: json.loads(p.read_text()) for p in sorted((root / "views").glob("*.json"))}
        for vname, vd in views.items():  # the server reads view metadata from the live database
            s.add(_view_row(vname, vd, datastack, info))
        s.commit()
    finally:
        s.close()

    views = {p.stem: json.loads(p.read_text()) for p in sorted((root / "views").glob("*.json"))}
    for v in versions:
        if not v["valid"]:
            continue
        db = f"{datastack}__mat{v['version']}"
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{db}"'))
        fe = create_engine(f"{base}/{db}", poolclass=NullPool)
        with fe.begin() as c:
            c.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        MatBase.metadata.create_all(fe)
        AnalysisView.__table__.create(fe, checkfirst=True)
        counts = {}
        for name in order:
            snap_dir = root / "versions" / str(v["version"]) / name
            if not snap_dir.exists():
                continue
            md = metas[name]
            ref = md.get("reference_table")
            flat = schema.create_flat_model(
                name, md["schema_type"], table_metadata={"reference_table": ref} if ref else None
            )
            flat.__table__.create(fe)
            snap = _read(snap_dir)
            cols, data = _frame_for(flat, snap, live_valid=False)
            counts[name] = _copy(fe, name, cols, data)
        s = Session(bind=fe)
        try:
            for name, n in counts.items():
                s.add(
                    MaterializedMetadata(
                        schema=metas[name]["schema_type"],
                        table_name=name,
                        row_count=n,
                        materialized_timestamp=_ts(v["time_stamp"]),
                        segmentation_source=pcg,
                        is_merged=True,
                    )
                )
            for vname, vd in views.items():
                sql, why = _view_sql(vd["sql"], counts)
                if sql is None:
                    report["views_left_out"][vname] = why
                    continue
                s.execute(text(f'CREATE VIEW "{vname}" AS {sql}'))
                s.add(_view_row(vname, vd, datastack, info))
            s.commit()
        finally:
            s.close()
        fe.dispose()
        report["versions"][v["version"]] = counts
    admin.dispose()
    print(json.dumps(report))


def _view_row(vname: str, vd: dict, datastack: str, info: dict) -> AnalysisView:
    res = vd.get("voxel_resolution") or info.get("viewer_resolution") or [1, 1, 1]
    return AnalysisView(
        table_name=vname,
        description=vd.get("description") or "",
        datastack_name=datastack,
        voxel_resolution_x=res[0],
        voxel_resolution_y=res[1],
        voxel_resolution_z=res[2],
        notice_text=vd.get("notice_text"),
        live_compatible=bool(vd.get("live_compatible", False)),
    )


def _view_sql(sql: str, tables: dict) -> tuple[str | None, str]:
    """A tablekit view's DuckDB SQL for PostgreSQL: ``P_x, P_y, P_z`` read as the geometry ``P``."""
    if not any(f'"{t}"' in sql for t in tables):
        return None, "its tables are not in this version"
    return _VIEW_POINT.sub(lambda m: m.group(1), sql), ""


def _copy_segmentation(engine, seg_name: str, seg_model, hist: pa.Table, root: Path) -> int:
    """One row per annotation whose supervoxels are all known, with their current roots."""
    seg_cols = [c.name for c in seg_model.__table__.columns]
    sv_cols = [c for c in seg_cols if c.endswith("_supervoxel_id")]
    history = _read(root / "segmentation" / "history")
    current = history.filter(pc.is_null(history["valid_to"]))
    sv_to_root = dict(zip(current["supervoxel_id"].to_pylist(), current["root_id"].to_pylist(), strict=True))
    sv_to_root[0] = 0
    known = None
    for c in sv_cols:
        m = pc.is_valid(hist[c])
        known = m if known is None else pc.and_(known, m)
    rows = hist.filter(known) if known is not None else hist
    arrays, names = [], []
    for c in seg_cols:
        if c.endswith("_root_id"):
            sv = rows[c[: -len("_root_id")] + "_supervoxel_id"].to_pylist()
            arrays.append(pa.array([sv_to_root.get(s) for s in sv], pa.int64()))
        else:
            arrays.append(rows[c])
        names.append(c)
    return _copy(engine, seg_name, names, pa.table(arrays, names=names))


if __name__ == "__main__":
    main()
