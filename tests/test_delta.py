"""The Delta Lake backend (issue 18): queries answered from exports written by ``tablekit export``.

Oracles: the local engine's answer for the same question (itself checked against pandas elsewhere),
and pandas over the datastack's raw snapshot Parquet files for the filters below; the lakes are
written by delta-rs and read by DuckDB over the files the Delta log's statistics leave.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("deltalake")

import tablekit
from tablekit.backends.delta import export_delta
from tablekit.backends.delta.layout import METADATA_FILE
from tablekit.errors import DatastackError, UnsupportedError, VersionError

pytestmark = pytest.mark.filterwarnings("ignore:the Delta Lake export has no column 'created'")

SYN = "synapses_pni_2"
NUC = "nucleus_detection_v0"


@pytest.fixture(scope="module")
def exports(path, tmp_path_factory):
    """The session's sample datastack (20k synapses): the latest version exported with every lake,
    4 partitions and small files (so that pruning has files to skip); the local engine beside it."""
    local = tablekit.connect(path=path)
    out = tmp_path_factory.mktemp("exports")
    export_delta(
        "demo",
        out,
        version=local.version,
        path=path,
        small_table_mb=0,
        n_partitions=4,
        target_file_bytes=60_000,
    )
    return local, out


@pytest.fixture(scope="module")
def delta(exports, path):
    _local, out = exports
    return tablekit.connect(path=path, exports=str(out))


@pytest.fixture(scope="module")
def standalone(exports):
    return tablekit.connect("demo", exports=str(exports[1]))


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Identical results but for ``created``, which exports drop (null in the export's answer)."""
    for name in ("created", "created_ref"):
        if name in got.columns:
            assert got[name].isna().all()
            got, want = got.drop(columns=name), want.drop(columns=name)
    assert list(got.columns) == list(want.columns)
    assert (got.dtypes == want.dtypes).all(), (got.dtypes, want.dtypes)
    assert len(got) == len(want)
    if len(got):
        pd.testing.assert_frame_equal(
            got.reset_index(drop=True), want.reset_index(drop=True), check_exact=True
        )


def _raw(path: str, version: int, table: str) -> pd.DataFrame:
    files = sorted((Path(path) / "versions" / str(version) / table).glob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files]).sort_values("id").reset_index(drop=True)


def _lake(df: pd.DataFrame, table: str = SYN) -> dict:
    return tablekit.provenance(df)["request"]["lakes"][table]


def test_equality_reads_the_root_lake_and_few_files(delta, exports, path):
    local, _ = exports
    raw = _raw(path, local.version, SYN)
    root = int(raw["post_pt_root_id"].value_counts().index[0])
    got = delta.tables[SYN](post_pt_root_id=root).query(split_positions=True)
    want = raw[raw["post_pt_root_id"] == root]
    assert got["id"].tolist() == want["id"].tolist()  # pandas over the raw snapshot
    _same(got, local.tables[SYN](post_pt_root_id=root).query(split_positions=True))
    lake = _lake(got)
    assert lake["lake"] == "post_pt_root_id" and lake["files_read"] < lake["files_total"] / 4, lake
    assert got.attrs["backend"] == "delta" and tablekit.provenance(got)["request"]["answered_by"] == "delta"


def test_membership_range_box_choose_their_lakes(delta, exports, path):
    local, _ = exports
    raw = _raw(path, local.version, SYN)
    roots = [int(r) for r in raw["pre_pt_root_id"].drop_duplicates().head(5)]
    got = delta.tables[SYN](pre_pt_root_id=roots).query()
    assert _lake(got)["lake"] == "pre_pt_root_id" and _lake(got)["files_read"] < _lake(got)["files_total"]
    assert sorted(got["id"]) == sorted(raw[raw["pre_pt_root_id"].isin(roots)]["id"])

    ids = raw["id"].to_numpy()
    lo, hi = int(ids[len(ids) // 3]), int(ids[len(ids) // 3 + 100])
    got = delta.tables[SYN](id={">=": lo, "<": hi}).query()
    assert _lake(got)["lake"] == "id" and _lake(got)["files_read"] < _lake(got)["files_total"] / 2
    assert got["id"].tolist() == [i for i in ids if lo <= i < hi]

    x = raw["ctr_pt_position_x"]
    box = [[int(x.quantile(0.4)), 0, 0], [int(x.quantile(0.45)), 10**7, 10**6]]
    got = delta.tables[SYN](ctr_pt_position_bbox=box).query(split_positions=True)
    lake = _lake(got)
    assert lake["lake"] == "ctr_pt_position_morton" and lake["files_read"] < lake["files_total"], lake
    inside = raw[(x >= box[0][0]) & (x <= box[1][0])]
    assert got["id"].tolist() == inside["id"].tolist()

    got = delta.tables[SYN]().query(limit=3)
    assert _lake(got)["lake"] == "id"


def _random_filters(rng: np.random.Generator, raw: pd.DataFrame) -> dict:
    f: dict = {}
    pick = rng.integers(0, 7)
    roots = raw["pre_pt_root_id"].to_numpy()
    if pick == 0:
        f["pre_pt_root_id"] = int(rng.choice(roots))
    elif pick == 1:
        f["post_pt_root_id"] = [
            int(v) for v in rng.choice(raw["post_pt_root_id"].to_numpy(), rng.integers(1, 40))
        ] + [12345]
    elif pick == 2:
        ids = raw["id"].to_numpy()
        a, b = sorted(int(v) for v in rng.choice(ids, 2))
        f["id"] = {rng.choice([">", ">="]): a, rng.choice(["<", "<="]): b}
    elif pick == 3:
        p = rng.choice(["ctr_pt_position", "pre_pt_position", "post_pt_position"])
        c = raw[[f"{p}_{a}" for a in "xyz"]].to_numpy()
        lo = c.min(0) + rng.random(3) * (c.max(0) - c.min(0)) * 0.7
        hi = lo + (c.max(0) - c.min(0)) * rng.uniform(0.05, 0.5)
        f[f"{p}_bbox"] = [[float(v) for v in lo], [float(v) for v in hi]]
    elif pick == 4:
        f["size"] = {">": float(raw["size"].quantile(rng.random()))}
        f["pre_pt_root_id"] = {"not in": [int(v) for v in rng.choice(roots, 3)]}
    elif pick == 5:
        f["post_pt_root_id"] = int(rng.choice(raw["post_pt_root_id"].to_numpy()))
        f["pre_pt_root_id"] = [int(v) for v in rng.choice(roots, 30)]
    return f


@pytest.mark.parametrize("seed", range(6))
def test_differential_random_filters(delta, exports, path, seed):
    """Random filters and options: the export answers exactly as the local engine does."""
    local, _ = exports
    raw = _raw(path, local.version, SYN)
    rng = np.random.default_rng(seed)
    for _ in range(8):
        f = _random_filters(rng, raw)
        opts: dict = {"split_positions": bool(rng.integers(0, 2))}
        if rng.random() < 0.4:
            opts["limit"] = int(rng.integers(0, 30))
        if rng.random() < 0.3:
            opts["offset"] = int(rng.integers(0, 20))
        if rng.random() < 0.4:
            opts["desired_resolution"] = [float(v) for v in rng.choice([1.0, 2.0, 4.0, 8.0, 40.0, 3.3], 3)]
        if rng.random() < 0.2:
            opts["select_columns"] = ["id", "pre_pt_root_id", "ctr_pt_position"]
        if rng.random() < 0.1:
            opts["random_sample"] = int(rng.integers(1, 50))
        got = delta.tables[SYN](**f).query(**opts)
        want = local.tables[SYN](**f).query(**opts)
        try:
            _same(got, want)
        except AssertionError as e:
            raise AssertionError(f"seed {seed}: {f} {opts}: {e}") from None
        assert got.attrs["dataframe_resolution"] == want.attrs["dataframe_resolution"]
        n = delta.tables[SYN](**f).query(get_counts=True)
        assert int(n["count"].iloc[0]) == int(local.tables[SYN](**f).query(get_counts=True)["count"].iloc[0])


def test_other_tables_joins_and_views(delta, exports):
    local, _ = exports
    for table in local.get_tables():
        _same(delta.tables[table]().query(), local.tables[table]().query())
    nuc = local.tables[NUC]().query(split_positions=True)
    box = [
        [float(nuc["pt_position_x"].median()), 0, 0],
        [float(nuc["pt_position_x"].quantile(0.6)), 10**7, 10**6],
    ]
    got = delta.tables[NUC](pt_position_bbox=box).query(desired_resolution=[1, 1, 1])
    _same(got, local.tables[NUC](pt_position_bbox=box).query(desired_resolution=[1, 1, 1]))
    assert _lake(got, NUC)["lake"] == "pt_position_morton"
    # a reference table merged with its target: both tables' lakes
    ref = "aibs_metamodel_celltypes_v661"
    target = int(nuc["id"].iloc[5])
    got = delta.tables[ref](id=target).query()
    _same(got, local.tables[ref](id=target).query())
    assert set(tablekit.provenance(got)["request"]["lakes"]) == {ref, NUC}
    for view in local.get_views():
        _same(delta.views[view]().query(), local.views[view]().query())
        _same(delta.views[view]().query(limit=5, offset=3), local.views[view]().query(limit=5, offset=3))


def test_standalone_reads_the_metadata_file(standalone, exports):
    local, _ = exports
    assert standalone.version == local.version
    assert standalone.get_tables() == local.get_tables()
    assert standalone.get_views() == local.get_views()
    assert standalone.get_annotation_count(SYN) == local.get_annotation_count(SYN)
    assert standalone.get_timestamp() == local.get_timestamp()
    assert (
        standalone.get_table_metadata(SYN)["voxel_resolution"]
        == local.get_table_metadata(SYN)["voxel_resolution"]
    )
    assert standalone.get_view_schema("single_neurons") == local.get_view_schema("single_neurons")
    root = int(local.tables[SYN]().query(limit=1)["pre_pt_root_id"].iloc[0])
    _same(standalone.tables[SYN](pre_pt_root_id=root).query(), local.tables[SYN](pre_pt_root_id=root).query())
    with pytest.raises(UnsupportedError, match="live"):
        standalone.tables[SYN]().query(timestamp="now")
    with pytest.raises(VersionError, match="no materialization version"):
        standalone.tables[SYN]().query(materialization_version=local.version - 1)


def test_what_the_export_cannot_answer_goes_to_the_fallback(delta, exports):
    local, _ = exports
    older = next(v for v in local.get_versions() if v != local.version)
    got = delta.tables[SYN]().query(materialization_version=older, limit=5)
    assert tablekit.provenance(got)["request"]["answered_by"] == "local"
    pd.testing.assert_frame_equal(got, local.tables[SYN]().query(materialization_version=older, limit=5))
    got = delta.tables[SYN]().query(timestamp="now", limit=5)
    assert tablekit.provenance(got)["request"]["answered_by"] == "local"
    # created is dropped by exports: a filter on it is answered where it exists
    t = local.get_timestamp()
    got = delta.tables[NUC](created={"<=": t}).query()
    assert tablekit.provenance(got)["request"]["answered_by"] == "local" and got["created"].notna().all()


def test_explain_shows_lake_files_and_sql(delta, exports):
    local, _ = exports
    root = int(local.tables[SYN]().query(limit=1)["post_pt_root_id"].iloc[0])
    plan = json.loads(delta.tables[SYN](post_pt_root_id=root).explain())
    lake = plan["lakes"][SYN]
    assert lake["lake"] == "post_pt_root_id"
    assert 1 <= lake["files_read"] < lake["files_total"] and len(lake["files"]) == lake["files_read"]
    assert lake["skipped_by"] == {"post_pt_root_id ==": lake["files_total"] - lake["files_read"]}
    assert "SELECT" in plan["sql"] and root in plan["parameters"]


def _copy_export(out: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(out, dst)
    return dst


def test_damaged_lakes_are_named(exports, path, tmp_path):
    local, out = exports
    v = local.version
    base = _copy_export(out, tmp_path)
    lake = base / "demo" / f"v{v}" / SYN / "pre_pt_root_id"
    root = int(local.tables[SYN]().query(limit=1)["pre_pt_root_id"].iloc[0])
    # a data file gone
    c = tablekit.connect(path=path, exports=str(base))
    plan = json.loads(c.tables[SYN](pre_pt_root_id=root).explain())
    victim = lake / plan["lakes"][SYN]["files"][0]
    os.remove(victim)
    with pytest.raises(
        DatastackError, match=r"synapses_pni_2: lake 'pre_pt_root_id' at .* is damaged.*not there"
    ):
        c.tables[SYN](pre_pt_root_id=root).query()
    # a data file overwritten with garbage
    c.refresh()
    victim.write_bytes(b"not parquet at all")
    with pytest.raises(DatastackError, match=r"cannot be read.*tablekit export"):
        c.tables[SYN](pre_pt_root_id=root).query()
    # the log gone
    shutil.rmtree(lake / "_delta_log")
    c.refresh()
    with pytest.raises(DatastackError, match=r"lake 'pre_pt_root_id' of version \d+ at .*not a Delta table"):
        c.tables[SYN](pre_pt_root_id=root).query()


def test_wrong_version_directory_and_schema_mismatch(exports, tmp_path):
    local, out = exports
    v = local.version
    base = _copy_export(out, tmp_path)
    os.rename(base / "demo" / f"v{v}", base / "demo" / f"v{v + 1}")
    with pytest.raises(
        DatastackError, match=rf"is v{v + 1} of 'demo' but its metadata file is for version {v}"
    ):
        tablekit.connect("demo", exports=str(base))
    os.rename(base / "demo" / f"v{v + 1}", base / "demo" / f"v{v}")
    # the id lake of the nucleus table replaced by the synapses' id lake: columns do not match
    vdir = base / "demo" / f"v{v}"
    shutil.rmtree(vdir / NUC / "id")
    shutil.copytree(vdir / SYN / "id", vdir / NUC / "id")
    c = tablekit.connect("demo", exports=str(base))
    with pytest.raises(DatastackError, match=r"nucleus_detection_v0: lake 'id' at .* has no column 'volume'"):
        c.tables[NUC]().query()
    with pytest.raises(DatastackError, match=r"no Delta Lake export of datastack 'minnie'.*holds \['demo'\]"):
        tablekit.connect("minnie", exports=str(base))
    (vdir / METADATA_FILE).unlink()
    with pytest.raises(DatastackError, match=r"needs the metadata file"):
        tablekit.connect("demo", exports=str(base))


def test_export_of_the_demo_with_the_service_defaults(tmp_path):
    """The embedded demo with the service's own rules (small tables: the id lake only): every
    table still answers as the local engine does."""
    local = tablekit.connect()
    export_delta("demo", tmp_path, version=local.version)
    c = tablekit.connect("demo", exports=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for table in local.get_tables():
            _same(c.tables[table]().query(), local.tables[table]().query())
        root = int(local.tables[SYN]().query(limit=1)["pre_pt_root_id"].iloc[0])
        got = c.tables[SYN](pre_pt_root_id=root).query()
    assert _lake(got)["lake"] == "id"
    _same(got, local.tables[SYN](pre_pt_root_id=root).query())


def _ewkb(x, y, z) -> bytes:
    """PostGIS EWKB of a POINT Z with an SRID (what the service's lakes hold), little endian."""
    import struct

    return struct.pack("<BII3d", 1, 0xA0000001, 0, float(x), float(y), float(z))


def test_lakes_shaped_like_the_services(exports, path, tmp_path):
    """The service's own lakes keep the positions it does not partition on as WKB bytes and its
    integer fields as int32: written here by hand with delta-rs, read as the local engine answers."""
    import deltalake
    import pyarrow as pa

    local, out = exports
    base = _copy_export(out, tmp_path)
    lake = base / "demo" / f"v{local.version}" / SYN / "id"
    t = deltalake.DeltaTable(str(lake)).to_pyarrow_table()
    for p in ("pre_pt_position", "post_pt_position"):
        cols = [t[f"{p}_{a}"].to_pylist() for a in "xyz"]
        wkb = pa.array([_ewkb(*v) for v in zip(*cols, strict=True)], type=pa.binary())
        t = t.drop_columns([f"{p}_{a}" for a in "xyz"]).append_column(p, wkb)
    t = t.set_column(t.column_names.index("id"), "id", t["id"].cast(pa.int32()))
    shutil.rmtree(lake)
    deltalake.write_deltalake(str(lake), t, partition_by=["id_partition"])
    c = tablekit.connect(path=path, exports=str(base))
    box = [[100_000, 100_000, 0], [300_000, 300_000, 10**6]]
    for f in ({}, {"pre_pt_position_bbox": box}, {"id": {">": int(t["id"][100].as_py())}}):
        got = c.tables[SYN](**f).query(split_positions=True, desired_resolution=[2, 2, 20])
        assert _lake(got)["lake"] == "id"
        _same(got, local.tables[SYN](**f).query(split_positions=True, desired_resolution=[2, 2, 20]))
    # a WKB value that is not a point is refused naming the lake and the position
    bad = t.set_column(
        t.column_names.index("pre_pt_position"),
        "pre_pt_position",
        pa.array([b"\x01\x03\x00\x00\x00" + b"\x00" * 24] * t.num_rows, pa.binary()),
    )
    shutil.rmtree(lake)
    deltalake.write_deltalake(str(lake), bad, partition_by=["id_partition"])
    c = tablekit.connect(path=path, exports=str(base))
    with pytest.raises(DatastackError, match=r"lake 'id' at .*position 'pre_pt_position': .*not POINT Z"):
        c.tables[SYN]().query()
