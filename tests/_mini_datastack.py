"""A tiny datastack directory, written by hand with pyarrow, for the local engine's tests.

It follows ``docs/datastack-format.md`` and does not use tablekit's own writer, so the engine is
checked against an independent reading of the format. Everything is deterministic (one seed).

Contents:

* segmentation history: 400 supervoxels, grouped into roots, with merges and splits over time;
* ``nucleus_detection_v0`` (4×4×40 nm): ``volume`` with NULLs and NaNs, nullable bounding-box
  corners, supervoxel 0 (root 0) and pending (NULL) supervoxels, coordinates on a coarse grid so
  that boxes hit points on their faces;
* ``synapses_pni_2`` (4×4×40 nm, notice text): two bound points and one unbound, ``size`` with
  NULLs, written in two Parquet parts per snapshot;
* ``cell_type_ref`` (reference to the nuclei): strings that look like SQL injections;
* ``nucleus_ref_points`` (8×8×40 nm, reference with a bound point): a different resolution;
* versions 1 (expired, no snapshot), 2 and 3; views ``nuclei_large`` (has ``id``, live-compatible)
  and ``synapse_out_degree`` (no ``id``).

Annotations are created, deleted and superseded at random times, some are ``valid = false``.
:func:`materialize` (pandas) builds the snapshots; :func:`roots_at` is the history lookup that
the tests reuse as their oracle for live queries.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 1, 1, tzinfo=UTC)
VERSIONS = {1: T0 + dt.timedelta(days=10), 2: T0 + dt.timedelta(days=20), 3: T0 + dt.timedelta(days=30)}
DATASTACK = "mini"
N_SUPERVOXELS = 400

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "tablekit" / "_data" / "cave_schemas.json"

TABLES: dict[str, dict[str, Any]] = {
    "nucleus_detection_v0": {"schema_type": "nucleus_detection", "res": (4.0, 4.0, 40.0), "ref": None},
    "synapses_pni_2": {
        "schema_type": "synapse",
        "res": (4.0, 4.0, 40.0),
        "ref": None,
        "notice": "synapse sizes are preliminary",
    },
    "cell_type_ref": {
        "schema_type": "cell_type_reference",
        "res": (4.0, 4.0, 40.0),
        "ref": "nucleus_detection_v0",
    },
    "nucleus_ref_points": {
        "schema_type": "reference_point",
        "res": (8.0, 8.0, 40.0),
        "ref": "nucleus_detection_v0",
    },
}

NASTY = [
    "23P",
    "5P-IT",
    "it's",
    "x'; DROP TABLE cell_type_ref; --",
    'Robert"); DROP TABLE "nucleus_detection_v0"; --',
    "$1 OR 1=1",
    "? OR TRUE",
    "ñandú",
    "",
]

VIEWS = {
    "nuclei_large": {
        "sql": "SELECT id, volume, pt_root_id, pt_supervoxel_id, pt_position_x, pt_position_y, pt_position_z "
        'FROM "nucleus_detection_v0" WHERE volume > 40',
        "description": "nuclei larger than 40 um^3",
        "voxel_resolution": [4.0, 4.0, 40.0],
        "live_compatible": True,
        "notice_text": None,
    },
    "synapse_out_degree": {
        "sql": "SELECT pre_pt_root_id AS root_id, count(*) AS n_out, sum(size) AS total_size "
        'FROM "synapses_pni_2" WHERE pre_pt_root_id <> 0 GROUP BY pre_pt_root_id;',
        "description": "outgoing synapses per root",
        "voxel_resolution": [4.0, 4.0, 40.0],
        "live_compatible": False,
        "notice_text": "counts exclude root 0",
    },
}

_TS = pa.timestamp("us", tz="UTC")


def _iso(t: dt.datetime) -> str:
    return t.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _times(rng: np.random.Generator, n: int, lo: dt.datetime, hi: dt.datetime) -> pd.Series:
    span = int((hi - lo).total_seconds())
    secs = rng.integers(0, span, n)
    return pd.Series(pd.to_datetime(lo) + pd.to_timedelta(secs, unit="s"))


# --------------------------------------------------------------------------- segmentation


def make_history(rng: np.random.Generator) -> pd.DataFrame:
    """Supervoxel → root intervals with merges and splits; retired roots are never reused."""
    start = pd.Timestamp(T0 - dt.timedelta(days=30))
    members: dict[int, list[int]] = {}
    root_of: dict[int, int] = {}
    since: dict[int, pd.Timestamp] = {}
    next_root = 1_000_000
    sv = 1
    while sv <= N_SUPERVOXELS:
        size = int(rng.integers(1, 8))
        group = list(range(sv, min(sv + size, N_SUPERVOXELS + 1)))
        members[next_root] = group
        for s in group:
            root_of[s], since[s] = next_root, start
        next_root += 1
        sv += size
    rows: list[tuple[int, int, pd.Timestamp, pd.Timestamp | None]] = []
    edit_times = sorted(_times(rng, 120, T0 - dt.timedelta(days=2), T0 + dt.timedelta(days=40)))
    for t in edit_times:
        roots = sorted(members)
        if rng.random() < 0.5:
            a, b = (int(x) for x in rng.choice(roots, 2, replace=False))
            new = {next_root: members.pop(a) + members.pop(b)}
            next_root += 1
        else:
            splittable = [r for r in roots if len(members[r]) > 1]
            r = int(rng.choice(splittable))
            group = members.pop(r)
            cut = int(rng.integers(1, len(group)))
            new = {next_root: group[:cut], next_root + 1: group[cut:]}
            next_root += 2
        for root, group in new.items():
            members[root] = group
            for s in group:
                rows.append((s, root_of[s], since[s], t))
                root_of[s], since[s] = root, t
    for s in range(1, N_SUPERVOXELS + 1):
        rows.append((s, root_of[s], since[s], None))
    df = pd.DataFrame(rows, columns=["supervoxel_id", "root_id", "valid_from", "valid_to"])
    return df.sort_values(["supervoxel_id", "valid_from"], ignore_index=True)


def roots_at(history: pd.DataFrame, supervoxels: pd.Series, t: dt.datetime) -> pd.Series:
    """The root of each supervoxel at ``t`` (0 for supervoxel 0, NA for NA or unknown), as Int64."""
    ts = pd.Timestamp(t)
    h = history[(history["valid_from"] <= ts) & (history["valid_to"].isna() | (history["valid_to"] > ts))]
    lookup = dict(zip(h["supervoxel_id"].astype(int), h["root_id"].astype(int), strict=True))
    lookup[0] = 0
    svs = supervoxels.astype("Int64")
    return pd.Series(
        [pd.NA if pd.isna(s) else lookup.get(int(s), pd.NA) for s in svs],
        index=supervoxels.index,
        dtype="Int64",
    )


# --------------------------------------------------------------------------- annotations


def _lifecycle(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """id, created, deleted, superceded_id, valid — some deleted, some superseded, some invalid."""
    created = _times(rng, n, T0 - dt.timedelta(days=5), T0 + dt.timedelta(days=38)).sort_values(
        ignore_index=True
    )
    df = pd.DataFrame({"id": np.arange(1, n + 1, dtype="int64") * 3 + 7, "created": created})
    life = pd.to_timedelta(rng.integers(3600, 40 * 86400, n), unit="s")
    gone = rng.random(n) < 0.25
    df["deleted"] = (df["created"] + life).where(gone)
    df["superceded_id"] = pd.array([pd.NA] * n, dtype="Int64")
    df["valid"] = rng.random(n) > 0.03
    return df


def _point(
    rng: np.random.Generator, n: int, prefix: str, bound: bool, grid: int, nullable: bool = False
) -> dict:
    cols: dict[str, Any] = {}
    if bound:
        sv = pd.array(rng.integers(1, N_SUPERVOXELS + 1, n), dtype="Int64")
        r = rng.random(n)
        sv[r < 0.05] = 0
        sv[(r >= 0.05) & (r < 0.08)] = pd.NA
        cols[f"{prefix}_supervoxel_id"] = sv
    null = (rng.random(n) < 0.1) if nullable else np.zeros(n, bool)
    for axis, hi in zip("xyz", (40, 30, 10), strict=True):
        v = pd.array(rng.integers(0, hi, n) * grid, dtype="Int64")
        v[null] = pd.NA
        cols[f"{prefix}_position_{axis}"] = v
    return cols


def make_annotations(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    out: dict[str, pd.DataFrame] = {}

    n = 1500
    df = _lifecycle(rng, n)
    vol = rng.gamma(2.0, 25.0, n)
    r = rng.random(n)
    # NULL (5%) and NaN (3%) kept apart: an object column of None / nan / float
    df["volume"] = pd.Series(
        [None if r[i] < 0.05 else (float("nan") if r[i] < 0.08 else float(vol[i])) for i in range(n)],
        dtype=object,
    )
    df = df.assign(**_point(rng, n, "pt", True, 50))
    df = df.assign(**_point(rng, n, "bb_start", False, 50, nullable=True))
    df = df.assign(**_point(rng, n, "bb_end", False, 50, nullable=True))
    out["nucleus_detection_v0"] = df

    n = 3000
    df = _lifecycle(rng, n)
    size = pd.array(rng.integers(10, 2000, n).astype(float), dtype="Float64")
    size[rng.random(n) < 0.05] = pd.NA
    df["size"] = size
    df = df.assign(**_point(rng, n, "pre_pt", True, 10))
    df = df.assign(**_point(rng, n, "ctr_pt", False, 10))
    df = df.assign(**_point(rng, n, "post_pt", True, 10))
    out["synapses_pni_2"] = df

    nuc_ids = out["nucleus_detection_v0"]["id"].to_numpy()
    n = 600
    df = _lifecycle(rng, n)
    df["cell_type"] = [NASTY[i] for i in rng.integers(0, len(NASTY), n)]
    df["classification_system"] = np.where(rng.random(n) < 0.5, "aibs_coarse", "aibs_fine")
    df["target_id"] = rng.choice(nuc_ids, n).astype("int64")
    out["cell_type_ref"] = df

    n = 400
    df = _lifecycle(rng, n)
    df["target_id"] = rng.choice(nuc_ids, n).astype("int64")
    df = df.assign(**_point(rng, n, "pt", True, 25))
    out["nucleus_ref_points"] = df

    # a superseded annotation: deleted when its replacement is created
    nd = out["nucleus_detection_v0"]
    old, new = nd.index[10], nd.index[-5]
    nd.loc[old, "deleted"] = nd.loc[new, "created"]
    nd.loc[old, "superceded_id"] = nd.loc[new, "id"]
    return out


# --------------------------------------------------------------------------- arrow


def to_arrow(df: pd.DataFrame) -> pa.Table:
    """A pandas frame of this module → Arrow with the format's types (NaN and NULL kept apart)."""
    cols = {}
    for c in df.columns:
        s = df[c]
        if c in ("created", "deleted"):
            cols[c] = pa.array(s.dt.tz_convert("UTC") if s.dt.tz else s, type=_TS)
        elif c in ("valid",):
            cols[c] = pa.array(s, type=pa.bool_())
        elif c in ("volume", "size"):
            cols[c] = pa.array([None if v is None or v is pd.NA else float(v) for v in s], type=pa.float64())
        elif s.dtype == object or str(s.dtype) in ("str", "string"):
            cols[c] = pa.array(list(s), type=pa.string())
        else:
            cols[c] = pa.array(s, type=pa.int64())
    return pa.table(cols)


def _snapshot_columns(table: str, df: pd.DataFrame) -> list[str]:
    scalars = {
        "nucleus_detection_v0": ["volume"],
        "synapses_pni_2": ["size"],
        "cell_type_ref": ["cell_type", "classification_system", "target_id"],
        "nucleus_ref_points": ["target_id"],
    }[table]
    points = {
        "nucleus_detection_v0": [("pt", True), ("bb_start", False), ("bb_end", False)],
        "synapses_pni_2": [("pre_pt", True), ("ctr_pt", False), ("post_pt", True)],
        "cell_type_ref": [],
        "nucleus_ref_points": [("pt", True)],
    }[table]
    cols = ["id", "created", "valid", *scalars]
    for p, bound in points:
        if bound:
            cols += [f"{p}_supervoxel_id", f"{p}_root_id"]
        cols += [f"{p}_position_{a}" for a in "xyz"]
    return cols


def materialize(annotations: pd.DataFrame, history: pd.DataFrame, t: dt.datetime, table: str) -> pd.DataFrame:
    """The snapshot of one table at ``t`` (pandas; independent of the engine)."""
    ts = pd.Timestamp(t)
    a = annotations
    keep = (a["created"] <= ts) & (a["deleted"].isna() | (a["deleted"] > ts)) & a["valid"]
    snap = a[keep].copy()
    for c in [c for c in snap.columns if c.endswith("_supervoxel_id")]:
        snap[c[: -len("supervoxel_id")] + "root_id"] = roots_at(history, snap[c], t)
    return snap[_snapshot_columns(table, snap)].sort_values("id", ignore_index=True)


# --------------------------------------------------------------------------- writer


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def write_mini_datastack(root: Path | str, seed: int = 11) -> Path:
    """Write the mini datastack into ``root`` (created) and return its path."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    history = make_history(rng)
    annotations = make_annotations(rng)

    _write_json(
        root / "datastack.json",
        {
            "format": "tablekit-datastack",
            "format_version": 1,
            "name": DATASTACK,
            "description": "hand-built test datastack",
            "aligned_volume": "mini_volume",
            "pcg_table_name": "mini_pcg",
            "segmentation_source": "graphene://local/mini_pcg",
            "viewer_resolution": [4.0, 4.0, 40.0],
            "synapse_table": "synapses_pni_2",
            "soma_table": "nucleus_detection_v0",
        },
    )
    docs = json.loads(SCHEMA_FILE.read_text())
    _write_json(
        root / "schemas.json", {TABLES[t]["schema_type"]: docs[TABLES[t]["schema_type"]] for t in TABLES}
    )
    _write_json(
        root / "versions.json",
        [
            {
                "version": v,
                "time_stamp": _iso(t),
                "expires_on": None if v == 3 else _iso(t + dt.timedelta(days=15)),
                "valid": v != 1,
                "status": "EXPIRED" if v == 1 else "AVAILABLE",
                "is_merged": True,
                "datastack": DATASTACK,
                "id": v,
            }
            for v, t in VERSIONS.items()
        ],
    )
    for t, info in TABLES.items():
        res = info["res"]
        _write_json(
            root / "tables" / t / "metadata.json",
            {
                "table_name": t,
                "schema_type": info["schema_type"],
                "description": f"the {t} table",
                "voxel_resolution_x": res[0],
                "voxel_resolution_y": res[1],
                "voxel_resolution_z": res[2],
                "reference_table": info["ref"],
                "notice_text": info.get("notice"),
                "created": _iso(T0 - dt.timedelta(days=6)),
                "user_id": "1",
                "valid": True,
                "read_permission": "PUBLIC",
                "write_permission": "PRIVATE",
                "last_modified": _iso(T0 + dt.timedelta(days=38)),
                "aligned_volume": "mini_volume",
                "pcg_table_name": "mini_pcg",
            },
        )
        d = root / "tables" / t / "annotations"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(to_arrow(annotations[t].sort_values("id")), d / "part-00000.parquet")
        for v, ts in VERSIONS.items():
            if v == 1:
                continue  # expired: snapshot gone
            snap = to_arrow(materialize(annotations[t], history, ts, t))
            d = root / "versions" / str(v) / t
            d.mkdir(parents=True, exist_ok=True)
            parts = 2 if t == "synapses_pni_2" else 1
            step = -(-snap.num_rows // parts)
            for i in range(parts):
                pq.write_table(snap.slice(i * step, step), d / f"part-{i:05d}.parquet", row_group_size=500)
    h = root / "segmentation" / "history"
    h.mkdir(parents=True, exist_ok=True)
    hist = pa.table(
        {
            "supervoxel_id": pa.array(history["supervoxel_id"], pa.int64()),
            "root_id": pa.array(history["root_id"], pa.int64()),
            "valid_from": pa.array(history["valid_from"], _TS),
            "valid_to": pa.array(history["valid_to"], _TS),
        }
    )
    pq.write_table(hist, h / "part-00000.parquet")
    for name, v in VIEWS.items():
        _write_json(root / "views" / f"{name}.json", v)
    return root


def read_history(root: Path | str) -> pd.DataFrame:
    return pq.read_table(Path(root) / "segmentation" / "history").to_pandas()


def read_annotations(root: Path | str, table: str) -> pd.DataFrame:
    """The annotation history; float scalars as object columns so that NULL (None) and NaN stay apart."""
    t = pq.read_table(Path(root) / "tables" / table / "annotations")
    df = t.to_pandas()
    for c in ("volume", "size"):
        if c in df:
            df[c] = pd.Series(t[c].to_pylist(), dtype=object)
    return df


def read_snapshot(root: Path | str, table: str, version: int) -> pa.Table:
    files = sorted((Path(root) / "versions" / str(version) / table).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])
