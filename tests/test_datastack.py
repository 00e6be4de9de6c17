"""Tests of tablekit.datastack: the writers, materialize() and build_datastack().

Oracles are independent of the code under test: snapshots are recomputed with pandas straight from
the raw annotation and segmentation-history Parquet files, following docs/datastack-format.md.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tablekit import datastack as ds
from tablekit.datastack import TableSource, build_datastack, materialize
from tablekit.errors import DatastackError
from tablekit.schema import table_spec

UTC = "UTC"


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz=UTC)


def read(path: Path) -> pd.DataFrame:
    """A Parquet file or directory as pandas with Arrow dtypes (exact int64, nulls kept)."""
    return pq.read_table(path).to_pandas(types_mapper=pd.ArrowDtype)


def oracle_snapshot(root: Path, table: str, T: pd.Timestamp) -> pd.DataFrame:
    """The snapshot of ``table`` at ``T`` computed with pandas from the raw history files."""
    meta = json.loads((root / "tables" / table / "metadata.json").read_text())
    schemas = json.loads((root / "schemas.json").read_text())
    spec = table_spec(meta, schemas)
    ann = read(root / "tables" / table / "annotations")
    hist = read(root / "segmentation" / "history")
    present = ann[
        (ann["created"] <= T) & (ann["deleted"].isna() | (ann["deleted"] > T)) & ann["valid"].fillna(False)
    ].copy()
    now = hist[(hist["valid_from"] <= T) & (hist["valid_to"].isna() | (hist["valid_to"] > T))]
    mapping = dict(zip(now["supervoxel_id"].tolist(), now["root_id"].tolist(), strict=True))
    for p in spec.points:
        if p.kind.value == "unbound":
            continue
        sv = present[p.column("supervoxel_id")].tolist()
        roots = [None if s is None or s is pd.NA else 0 if s == 0 else mapping[s] for s in sv]
        present[p.column("root_id")] = pd.array(roots, dtype=pd.ArrowDtype(pa.int64()))
    out = present[list(spec.stored_columns)].sort_values("id").reset_index(drop=True)
    return out


def assert_snapshots_match(root: Path, versions: list[int] | None = None) -> None:
    vmeta = json.loads((root / "versions.json").read_text())
    for v in vmeta:
        if not v["valid"] or (versions is not None and v["version"] not in versions):
            continue
        T = pd.Timestamp(v["time_stamp"], tz=UTC)
        for tdir in sorted((root / "tables").iterdir()):
            got = read(root / "versions" / str(v["version"]) / tdir.name)
            want = oracle_snapshot(root, tdir.name, T)
            assert list(got.columns) == list(want.columns)
            pd.testing.assert_frame_equal(got, want, check_dtype=False)
            assert got["id"].is_monotonic_increasing


# --------------------------------------------------------------------------- low-level writers + materialize


E = ts("2024-01-01")
T1, T2, T3 = ts("2024-02-01T00:00:00.000001"), ts("2024-03-01"), ts("2024-04-01")


def _history() -> pa.Table:
    rows = [  # supervoxel, root, from, to
        (11, 100, E, ts("2024-01-15")),
        (11, 200, ts("2024-01-15"), ts("2024-03-15")),
        (11, 300, ts("2024-03-15"), None),
        (12, 100, E, ts("2024-01-15")),
        (12, 200, ts("2024-01-15"), ts("2024-03-15")),
        (12, 400, ts("2024-03-15"), None),
        (13, 500, E, None),
    ]
    df = pd.DataFrame(rows, columns=["supervoxel_id", "root_id", "valid_from", "valid_to"])
    return pa.Table.from_pandas(df, preserve_index=False)


def _nuclei_history() -> pd.DataFrame:
    n = 6
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "created": [E, T1, T1 + pd.Timedelta(microseconds=1), E, E, E],
            "deleted": [pd.NaT, pd.NaT, pd.NaT, T1, T3 + pd.Timedelta(days=1), pd.NaT],
            "superceded_id": pd.array([None] * n, dtype="Int64"),
            "valid": [True, True, True, True, True, False],
            "volume": [1.5, None, 3.0, 4.0, 5.0, 6.0],
            "bb_end_position_x": pd.array([None] * n, dtype="Int64"),
            "bb_end_position_y": pd.array([None] * n, dtype="Int64"),
            "bb_end_position_z": pd.array([None] * n, dtype="Int64"),
            "bb_start_position_x": pd.array([1, None, 1, 1, 1, 1], dtype="Int64"),
            "bb_start_position_y": pd.array([2, None, 2, 2, 2, 2], dtype="Int64"),
            "bb_start_position_z": pd.array([3, None, 3, 3, 3, 3], dtype="Int64"),
            "pt_supervoxel_id": pd.array([11, 0, None, 12, 13, 13], dtype="Int64"),
            "pt_position_x": np.arange(n) * 10,
            "pt_position_y": np.arange(n) * 20,
            "pt_position_z": np.arange(n) * 30,
        }
    )


def _small_stack(root: Path) -> Path:
    info = ds.write_datastack_json(root, name="t", soma_table="nuc")
    docs = ds.bundled_schemas()
    ds.write_schemas(root, {"nucleus_detection": docs["nucleus_detection"]})
    ds.write_versions(
        root,
        [
            ds.version_metadata(1, T1, datastack="t"),
            ds.version_metadata(2, T2, datastack="t", valid=False),
            ds.version_metadata(3, T3, datastack="t"),
        ],
    )
    ds.write_table_metadata(
        root,
        ds.table_metadata(
            "nuc",
            "nucleus_detection",
            aligned_volume=info["aligned_volume"],
            pcg_table_name="t_pcg",
            created=E,
        ),
    )
    ds.write_segmentation_history(root, _history())
    ds.write_annotations(root, "nuc", _nuclei_history())
    return root


def test_materialize_edge_cases_by_hand(tmp_path):
    """created == T is in, deleted == T is out, valid false is out; roots follow the history at T."""
    root = _small_stack(tmp_path / "s")
    counts = materialize(root)
    assert counts == {1: {"nuc": 3}, 3: {"nuc": 4}}
    assert not (root / "versions" / "2").exists()  # expired: no snapshot
    v1 = read(root / "versions" / "1" / "nuc")
    # id 2 created exactly at T1 (in), id 3 one µs later (out), id 4 deleted exactly at T1 (out),
    # id 6 valid=false (out); supervoxel 11 had root 200 at T1, supervoxel 0 → root 0
    assert v1["id"].tolist() == [1, 2, 5]
    assert v1["pt_root_id"].tolist() == [200, 0, 500]


def test_materialize_matches_pandas_oracle(tmp_path):
    """Every snapshot equals the pandas recomputation; types and column order follow the format."""
    root = _small_stack(tmp_path / "s")
    materialize(root)
    assert_snapshots_match(root)
    v3 = read(root / "versions" / "3" / "nuc")
    assert v3["id"].tolist() == [1, 2, 3, 5]
    assert v3["pt_root_id"].tolist()[0] == 300 and pd.isna(v3["pt_root_id"].iloc[2])
    schema = pq.read_schema(next((root / "versions" / "3" / "nuc").glob("*.parquet")))
    assert schema.field("created").type == pa.timestamp("us", tz="UTC")
    assert schema.field("pt_root_id").type == pa.int64()
    assert schema.names[:4] == ["id", "created", "valid", "volume"]


def test_materialize_selected_versions_and_errors(tmp_path):
    """Only listed versions are rebuilt; expired or unknown versions are refused."""
    root = _small_stack(tmp_path / "s")
    assert list(materialize(root, versions=[3])) == [3]
    assert (root / "versions" / "3").is_dir() and not (root / "versions" / "1").exists()
    with pytest.raises(DatastackError, match=r"version 2 is expired"):
        materialize(root, versions=[2])
    with pytest.raises(DatastackError, match=r"no version 9 .*known versions \[1, 2, 3\]"):
        materialize(root, versions=[9])
    assert not any(p.name.startswith(".tmp") for p in (root / "versions").iterdir())


def test_materialize_missing_root_names_supervoxel(tmp_path):
    """A supervoxel with no history interval at T is an error naming table, column, supervoxel and id."""
    root = _small_stack(tmp_path / "s")
    hist = _history().to_pandas()
    ds.write_segmentation_history(root, hist[hist["supervoxel_id"] != 13])
    with pytest.raises(DatastackError) as e:
        materialize(root)
    msg = str(e.value)
    assert (
        "'nuc'" in msg and "'pt_supervoxel_id'" in msg and "supervoxel 13" in msg and "annotation id 5" in msg
    )


def test_materialize_overlapping_history_is_an_error(tmp_path):
    root = _small_stack(tmp_path / "s")
    hist = _history().to_pandas()
    # typed as hist (pandas < 2.2 cannot concat an all-None object column with a datetime one)
    extra = pd.DataFrame([(13, 600, E, None)], columns=hist.columns).astype(hist.dtypes.to_dict())
    ds.write_segmentation_history(root, pd.concat([hist, extra], ignore_index=True))
    with pytest.raises(DatastackError, match=r"supervoxel 13 has two overlapping intervals"):
        materialize(root)


def test_materialize_streams_row_groups_and_files(tmp_path, monkeypatch):
    """With tiny row groups and files, a random history still materializes exactly and in id order."""
    from tablekit.datastack import parts

    monkeypatch.setattr(parts, "ROW_GROUP_ROWS", 37)
    monkeypatch.setattr(parts, "FILE_ROWS", 150)
    rng = np.random.default_rng(5)
    root = tmp_path / "r"
    ds.write_datastack_json(root, name="r", synapse_table="syn")
    docs = ds.bundled_schemas()
    ds.write_schemas(root, {"synapse": docs["synapse"]})
    times = [ts("2024-01-01") + pd.Timedelta(days=d) for d in (10, 20, 30, 40)]
    ds.write_versions(root, [ds.version_metadata(v + 1, t, datastack="r") for v, t in enumerate(times)])
    ds.write_table_metadata(
        root, ds.table_metadata("syn", "synapse", aligned_volume="a", pcg_table_name="p", created=E)
    )
    # history: 60 supervoxels, each with 1-3 contiguous intervals
    rows = []
    for sv in range(1, 61):
        cuts = sorted(rng.choice(np.arange(1, 50), rng.integers(0, 3), replace=False).tolist())
        bounds = [E] + [E + pd.Timedelta(days=int(c)) for c in cuts] + [None]
        for a, b in itertools.pairwise(bounds):
            rows.append((sv, int(rng.integers(10**17, 10**18)), a, b))
    hist = pd.DataFrame(rows, columns=["supervoxel_id", "root_id", "valid_from", "valid_to"])
    ds.write_segmentation_history(root, [hist.iloc[:50], hist.iloc[50:]])
    n = 700
    created = E + pd.to_timedelta(rng.integers(0, 45 * 86400, n), unit="s")
    deleted = created + pd.to_timedelta(rng.integers(1, 30 * 86400, n), unit="s")
    deleted = deleted.where(rng.random(n) < 0.3)
    sv_pre = pd.array(rng.integers(0, 61, n), dtype="Int64")
    sv_pre[rng.random(n) < 0.05] = pd.NA
    df = pd.DataFrame(
        {
            "id": np.sort(rng.choice(10**6, n, replace=False)),
            "created": created,
            "deleted": deleted,
            "superceded_id": pd.array([None] * n, dtype="Int64"),
            "valid": rng.random(n) > 0.05,
            "size": rng.random(n),
            "pre_pt_supervoxel_id": sv_pre,
            "post_pt_supervoxel_id": rng.integers(1, 61, n),
        }
    )
    for p in ("pre_pt", "post_pt", "ctr_pt"):
        for a in "xyz":
            df[f"{p}_position_{a}"] = rng.integers(0, 1000, n)
    batches = [pa.Table.from_pandas(df.iloc[i : i + 90], preserve_index=False) for i in range(0, n, 90)]
    assert ds.write_annotations(root, "syn", iter(batches)) == n
    files = sorted((root / "tables" / "syn" / "annotations").glob("*.parquet"))
    assert len(files) == 4 and pq.ParquetFile(files[0]).metadata.num_row_groups == 5
    assert pq.ParquetFile(files[0]).metadata.row_group(0).num_rows == 37
    materialize(root)
    assert_snapshots_match(root)
    assert len(list((root / "versions" / "4" / "syn").glob("*.parquet"))) >= 2


def test_write_annotations_rejects_unsorted_and_wrong_columns(tmp_path):
    root = _small_stack(tmp_path / "s")
    df = _nuclei_history()
    with pytest.raises(DatastackError, match=r"id 1 follows id 6; .*sorted by id"):
        ds.write_annotations(root, "nuc", [df, df.iloc[:1]])
    with pytest.raises(DatastackError, match=r"id 2 follows id 2"):
        ds.write_annotations(root, "nuc", df.iloc[[0, 1, 1]])
    with pytest.raises(DatastackError, match=r"missing \['volume'\], unexpected \['vol'\]"):
        ds.write_annotations(root, "nuc", df.rename(columns={"volume": "vol"}))
    naive = df.assign(created=df["created"].dt.tz_localize(None))
    with pytest.raises(DatastackError, match=r"column 'created': naive timestamps"):
        ds.write_annotations(root, "nuc", naive)
    # the failed writes left the existing history in place
    assert read(root / "tables" / "nuc" / "annotations")["id"].tolist() == [1, 2, 3, 4, 5, 6]


def test_annotation_history_layout(tmp_path):
    """Annotation files have the documented exact types, no root ids, and are sorted by id."""
    root = _small_stack(tmp_path / "s")
    f = next((root / "tables" / "nuc" / "annotations").glob("*.parquet"))
    schema = pq.read_schema(f)
    assert schema.names[:5] == ["id", "created", "deleted", "superceded_id", "valid"]
    assert not [n for n in schema.names if n.endswith("root_id")]
    assert schema.field("deleted").type == pa.timestamp("us", tz="UTC")
    for n in ("id", "pt_supervoxel_id", "pt_position_x", "bb_start_position_z"):
        assert schema.field(n).type == pa.int64()
    hist = pq.read_schema(next((root / "segmentation" / "history").glob("*.parquet")))
    assert hist.names == ["supervoxel_id", "root_id", "valid_from", "valid_to"]
    assert hist.field("valid_to").type == pa.timestamp("us", tz="UTC")


def test_json_documents(tmp_path):
    root = _small_stack(tmp_path / "s")
    info = json.loads((root / "datastack.json").read_text())
    assert info["format"] == "tablekit-datastack" and info["format_version"] == 1
    assert info["viewer_resolution"] == [4.0, 4.0, 40.0] and info["synapse_table"] is None
    versions = json.loads((root / "versions.json").read_text())
    assert versions[0]["time_stamp"] == "2024-02-01T00:00:00.000001"
    assert versions[1]["status"] == "EXPIRED" and versions[1]["valid"] is False
    meta = json.loads((root / "tables" / "nuc" / "metadata.json").read_text())
    for key in (
        "table_name schema_type description voxel_resolution_x voxel_resolution_y voxel_resolution_z "
        "reference_table notice_text created user_id valid read_permission write_permission last_modified "
        "aligned_volume pcg_table_name"
    ).split():
        assert key in meta
    assert list(json.loads((root / "schemas.json").read_text())) == ["nucleus_detection"]


# --------------------------------------------------------------------------- build_datastack


def cave_nuclei() -> pd.DataFrame:
    """A nucleus table as CAVE's query_table returns it (positions as arrays), unsorted."""
    return pd.DataFrame(
        {
            "id": [730537, 100200, 255001, 400000],
            "created": pd.to_datetime(["2020-09-28T22:40:41.780734Z"] * 4),
            "superceded_id": pd.array([None] * 4, dtype="Int64"),
            "valid": [True, "t", True, "t"],
            "volume": [32.307938, np.nan, 250.5, 99.0],
            "pt_supervoxel_id": [96218056992431305, 0, 96218056992431306, 96218056992431307],
            "pt_root_id": [864691136090135607, 0, 864691136090135607, 864691135000000001],
            "pt_position": [
                np.array([228816, 239776, 19593]),
                np.array([100000, 100000, 20000]),
                np.array([228900, 239800, 19600]),
                np.array([300000, 200000, 21000]),
            ],
            "bb_start_position": [np.array([pd.NA] * 3, dtype=object), None, [1, 2, 3], [4, 5, 6]],
            "bb_end_position": [np.array([pd.NA] * 3, dtype=object), None, [7, 8, 9], [10, 11, 12]],
        }
    )


def cave_types() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [36916, 36917, 36918],
            "valid": [True, True, True],
            "target_id": [730537, 255001, 730537],
            "classification_system": ["excitatory_neuron", "inhibitory_neuron", "excitatory_neuron"],
            "cell_type": ["5P-IT", "BC", "5P-ET"],
        }
    )


TS = ts("2025-01-01T00:00:00")


def build(tmp_path: Path, tables: list[TableSource], **kw) -> Path:
    kw.setdefault("name", "mine")
    kw.setdefault("timestamp", TS)
    return build_datastack(tmp_path / "stack", tables, **kw)


def test_build_round_trip_array_positions(tmp_path):
    """A CAVE-layout DataFrame with array positions comes back from the snapshot unchanged, by id."""
    src = cave_nuclei()
    path = build(
        tmp_path,
        [
            TableSource("nucleus_detection_v0", "nucleus_detection", src),
            TableSource(
                "cell_types", "cell_type_reference", cave_types(), reference_table="nucleus_detection_v0"
            ),
        ],
        soma_table="nucleus_detection_v0",
        views={"single": {"sql": 'SELECT id, pt_root_id FROM "nucleus_detection_v0"', "description": "d"}},
    )
    snap = read(path / "versions" / "1" / "nucleus_detection_v0")
    want = src.sort_values("id").reset_index(drop=True)
    assert snap["id"].tolist() == want["id"].tolist()
    assert snap["pt_root_id"].tolist() == want["pt_root_id"].tolist()
    assert snap["pt_supervoxel_id"].tolist() == want["pt_supervoxel_id"].tolist()
    assert snap["created"].tolist() == want["created"].tolist()
    assert snap["valid"].tolist() == [True] * 4
    np.testing.assert_allclose(snap["volume"].astype(float), want["volume"])
    for k, a in enumerate("xyz"):
        assert snap[f"pt_position_{a}"].tolist() == [int(p[k]) for p in want["pt_position"]]
    assert snap["bb_start_position_x"].isna().tolist() == [
        True,
        False,
        False,
        True,
    ]  # 100200, 255001, 400000, 730537
    assert snap["bb_end_position_z"].tolist()[1:3] == [9, 12]
    hist = read(path / "segmentation" / "history")
    assert sorted(hist["supervoxel_id"].tolist()) == [96218056992431305, 96218056992431306, 96218056992431307]
    assert (hist["valid_from"] < ts("2020-09-28T22:40:41.780734")).all() and hist["valid_to"].isna().all()
    types = read(path / "versions" / "1" / "cell_types")
    assert types["target_id"].tolist() == [730537, 255001, 730537]
    meta = json.loads((path / "tables" / "cell_types" / "metadata.json").read_text())
    assert meta["reference_table"] == "nucleus_detection_v0"
    view = json.loads((path / "views" / "single.json").read_text())
    assert view["voxel_resolution"] == [4.0, 4.0, 40.0] and view["live_compatible"] is False
    versions = json.loads((path / "versions.json").read_text())
    assert [(v["version"], v["time_stamp"], v["valid"]) for v in versions] == [
        (1, "2025-01-01T00:00:00.000000", True)
    ]
    assert_snapshots_match(path)


def test_build_round_trip_split_positions_from_parquet(tmp_path):
    """Split positions in Parquet files (a list of paths), a different resolution, integral float ids."""
    src = cave_nuclei()
    for k, a in enumerate("xyz"):
        src[f"pt_position_{a}"] = [int(p[k]) for p in src["pt_position"]]
    src = src.drop(columns=["pt_position", "bb_start_position", "bb_end_position"])
    src["id"] = src["id"].astype(float)
    src["valid"] = [True] * 4
    f1, f2 = tmp_path / "a.parquet", tmp_path / "b.parquet"
    src.iloc[:2].to_parquet(f1)
    src.iloc[2:].to_parquet(f2)
    path = build(tmp_path, [TableSource("nuc", "nucleus_detection", [f1, f2], voxel_resolution=(1, 1, 1))])
    snap = read(path / "versions" / "1" / "nuc")
    assert snap["id"].tolist() == sorted(int(i) for i in src["id"])
    assert snap["bb_start_position_x"].isna().all()
    meta = json.loads((path / "tables" / "nuc" / "metadata.json").read_text())
    assert [meta[f"voxel_resolution_{a}"] for a in "xyz"] == [1.0, 1.0, 1.0]
    assert json.loads((path / "datastack.json").read_text())["viewer_resolution"] == [1.0, 1.0, 1.0]


def test_build_keeps_deleted_rows_in_history_only(tmp_path):
    syn = pd.DataFrame(
        {
            "id": [1, 2],
            "created": [ts("2024-01-01"), ts("2024-01-01")],
            "deleted": [pd.NaT, ts("2024-06-01")],
            "size": [10.0, 20.0],
            "pre_pt_supervoxel_id": [5, 6],
            "pre_pt_root_id": [50, 60],
            "post_pt_supervoxel_id": [7, 7],
            "post_pt_root_id": [70, 70],
            "pre_pt_position": [[1, 2, 3]] * 2,
            "post_pt_position": [[1, 2, 3]] * 2,
            "ctr_pt_position": [[1, 2, 3]] * 2,
        }
    )
    path = build(tmp_path, [TableSource("syn", "synapse", syn)], synapse_table="syn")
    assert read(path / "versions" / "1" / "syn")["id"].tolist() == [1]
    assert read(path / "tables" / "syn" / "annotations")["id"].tolist() == [1, 2]


def test_build_overwrite_rules(tmp_path):
    tables = [TableSource("nuc", "nucleus_detection", cave_nuclei())]
    path = build(tmp_path, tables)
    with pytest.raises(DatastackError, match=r"exists and is not empty; pass overwrite=True"):
        build(tmp_path, tables)
    build(tmp_path, tables, overwrite=True, name="again")
    assert json.loads((path / "datastack.json").read_text())["name"] == "again"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "x.txt").write_text("keep me")
    with pytest.raises(DatastackError, match=r"not a tablekit datastack directory .* refusing"):
        build_datastack(other, tables, name="x", overwrite=True)
    assert (other / "x.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "stack"]  # no temp dirs left


# ---- validation errors: each names table, column, value and fix


def err(tmp_path: Path, tables: list[TableSource], **kw) -> str:
    with pytest.raises(DatastackError) as e:
        build(tmp_path, tables, **kw)
    assert not (tmp_path / "stack").exists()
    return str(e.value)


def test_error_unknown_schema_type(tmp_path):
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detect", cave_nuclei())])
    assert "table 'nuc'" in msg and "'nucleus_detect'" in msg and "did you mean 'nucleus_detection'" in msg


def test_error_required_column_missing(tmp_path):
    msg = err(
        tmp_path, [TableSource("nuc", "nucleus_detection", cave_nuclei().drop(columns=["pt_position"]))]
    )
    assert "table 'nuc'" in msg and "required column 'pt_position' is missing" in msg
    t = cave_types().drop(columns=["cell_type"])
    msg = err(
        tmp_path,
        [
            TableSource("nuc", "nucleus_detection", cave_nuclei()),
            TableSource("ct", "cell_type_reference", t, reference_table="nuc"),
        ],
    )
    assert "table 'ct'" in msg and "required column 'cell_type'" in msg
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", cave_nuclei().drop(columns=["pt_root_id"]))])
    assert "required column 'pt_root_id' is missing" in msg


def test_error_unexpected_column(tmp_path):
    df = cave_nuclei().assign(pt_root_idx=1)
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", df)])
    assert "table 'nuc': unexpected column 'pt_root_idx'" in msg
    assert "did you mean 'pt_root_id'" in msg and "'volume'" in msg and "has columns" in msg


def test_error_duplicate_ids(tmp_path):
    df = cave_nuclei()
    df.loc[3, "id"] = 730537
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", df)])
    assert "table 'nuc', column 'id': duplicate ids [730537]" in msg and "unique" in msg


def test_error_non_integer_ids(tmp_path):
    df = cave_nuclei()
    df["id"] = [1.0, 2.5, 3.0, 4.0]
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", df)])
    assert "table 'nuc', column 'id': non-integer values (2.5 at row 1" in msg
    df["id"] = ["1", "2", "3", "4"]
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", df)])
    assert "column 'id'" in msg and "are not integers" in msg and "'1'" in msg


def test_error_supervoxel_with_two_roots(tmp_path):
    df = cave_nuclei()
    df.loc[2, "pt_root_id"] = 864691135999999999  # same supervoxel as row 0 would need…
    df.loc[2, "pt_supervoxel_id"] = 96218056992431305
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", df)])
    assert "supervoxel 96218056992431305 is mapped to two different root ids" in msg
    assert "864691135999999999" in msg and "864691136090135607" in msg
    assert "table 'nuc' column 'pt_supervoxel_id' id 255001" in msg


def test_error_position_not_three_long(tmp_path):
    df = cave_nuclei()
    df.at[1, "pt_position"] = np.array([1, 2])
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", df)])
    assert "table 'nuc', column 'pt_position': positions that are not 3 long ([1, 2] at id 100200" in msg


def test_error_partial_position(tmp_path):
    df = cave_nuclei()
    df.at[2, "bb_start_position"] = [1, None, 3]
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", df)])
    assert "column 'bb_start_position': position [1, None, 3] at id 255001 is partly missing" in msg


def test_error_reference_table(tmp_path):
    nuc = TableSource("nuc", "nucleus_detection", cave_nuclei())
    msg = err(tmp_path, [nuc, TableSource("ct", "cell_type_reference", cave_types())])
    assert "table 'ct'" in msg and "'target_id'" in msg and "no reference_table" in msg
    msg = err(tmp_path, [nuc, TableSource("ct", "cell_type_reference", cave_types(), reference_table="nucs")])
    assert (
        "table 'ct': reference_table 'nucs' is not one of the tables" in msg and "did you mean 'nuc'" in msg
    )
    msg = err(tmp_path, [TableSource("n2", "nucleus_detection", cave_nuclei(), reference_table="nuc"), nuc])
    assert "schema 'nucleus_detection' has no 'target_id'" in msg


def test_error_target_ids_absent(tmp_path):
    t = cave_types()
    t.loc[1, "target_id"] = 111
    msg = err(
        tmp_path,
        [
            TableSource("nuc", "nucleus_detection", cave_nuclei()),
            TableSource("ct", "cell_type_reference", t, reference_table="nuc"),
        ],
    )
    assert "table 'ct', column 'target_id': values [111] are not ids of the reference table 'nuc'" in msg


@pytest.mark.parametrize("bad", ["Synapses", "2nd", "syn-v2", "a b", ""])
def test_error_invalid_table_name(tmp_path, bad):
    msg = err(tmp_path, [TableSource(bad, "nucleus_detection", cave_nuclei())])
    assert repr(bad) in msg and "^[a-z_][a-z0-9_]*$" in msg


def test_error_values_and_timestamps(tmp_path):
    nuc = cave_nuclei()
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", nuc.assign(valid=["t", "yes", True, True]))])
    assert "table 'nuc', column 'valid'" in msg and "'yes'" in msg
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", nuc)], timestamp=ts("2019-01-01"))
    assert "column 'created'" in msg and "after the version timestamp 2019-01-01T00:00:00.000000" in msg
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", nuc)], timestamp=pd.Timestamp("2025-01-01"))
    assert "no time zone" in msg
    naive = nuc.assign(created=nuc["created"].dt.tz_localize(None))
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", naive)])
    assert "column 'created': naive timestamps" in msg and "tz_localize('UTC')" in msg
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", nuc.assign(volume="big"))])
    assert "column 'volume'" in msg and "are not numbers" in msg and "'big'" in msg
    zero = nuc.copy()
    zero.loc[0, "pt_root_id"] = 0
    msg = err(tmp_path, [TableSource("nuc", "nucleus_detection", zero)])
    assert "column 'pt_root_id'" in msg and "root id 0" in msg and "id 730537" in msg


def test_error_roles_and_views(tmp_path):
    nuc = TableSource("nuc", "nucleus_detection", cave_nuclei())
    msg = err(tmp_path, [nuc], synapse_table="synapses")
    assert "synapse_table 'synapses' is not one of the tables ['nuc']" in msg
    msg = err(tmp_path, [nuc], views={"v": {"sql": 'SELECT nope FROM "nuc"'}})
    assert "view 'v': its SQL fails" in msg and "nope" in msg
    msg = err(tmp_path, [nuc], views={"v": {"sql": "SELECT 1", "colour": "red"}})
    assert "view 'v': unknown keys ['colour']" in msg


def test_custom_schemas_are_checked_as_json_schema(tmp_path):
    """A custom schema document passed to build_datastack is checked against its JSON Schema
    metaschema (jsonschema): a misspelt type is refused naming the schema type and where, before
    anything is written; the same document spelt right builds, and every bundled (real) document
    passes the same check."""
    import copy

    from tablekit.errors import SchemaError
    from tablekit.schema import check_json_schema

    good = copy.deepcopy(ds.bundled_schemas()["nucleus_detection"])
    name = next(iter(good["definitions"]))
    bad = copy.deepcopy(good)
    prop = next(iter(bad["definitions"][name]["properties"]))
    bad["definitions"][name]["properties"][prop]["type"] = "integr"
    with pytest.raises(SchemaError) as e:
        build(tmp_path, [TableSource("nuc", "my_nuclei", cave_nuclei())], schemas={"my_nuclei": bad})
    msg = str(e.value)
    assert "'my_nuclei'" in msg and f"definitions/{name}/properties/{prop}/type" in msg and "integr" in msg
    assert not (tmp_path / "stack").exists()
    path = build(tmp_path, [TableSource("nuc", "my_nuclei", cave_nuclei())], schemas={"my_nuclei": good})
    assert (path / "datastack.json").exists()
    for schema_type, doc in ds.bundled_schemas().items():
        check_json_schema(schema_type, doc)
