"""``tablekit export``: a version of a datastack written as CAVE's Delta Lake exports (issue 18).

The oracle is the datastack's own snapshot Parquet files read with pyarrow, and the lakes are read
back with delta-rs (``deltalake.DeltaTable``), not with tablekit.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

deltalake = pytest.importorskip("deltalake")

import tablekit  # noqa: E402
from tablekit.backends.delta import export_delta  # noqa: E402
from tablekit.backends.delta.layout import METADATA_FILE, morton_encode  # noqa: E402
from tablekit.errors import DatastackError, UnknownTableError  # noqa: E402


def _snapshot(path: str, version: int, table: str) -> pa.Table:
    files = sorted((Path(path) / "versions" / str(version) / table).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def _lake(vdir: Path, table: str, lake: str) -> tuple[pa.Table, pa.Table]:
    dt = deltalake.DeltaTable(str(vdir / table / lake))
    return dt.to_pyarrow_table(), pa.table(dt.get_add_actions(flatten=True))


def _morton_by_bits(x: int, y: int, z: int) -> int:
    """The Morton code bit by bit (bit k of x → bit 3k, of y → 3k+1, of z → 3k+2)."""
    out = 0
    for k in range(21):
        out |= ((x >> k) & 1) << (3 * k) | ((y >> k) & 1) << (3 * k + 1) | ((z >> k) & 1) << (3 * k + 2)
    return out


@pytest.fixture(scope="module")
def exported(path, tmp_path_factory):
    """The session's sample datastack (20k synapses), latest version, every lake, 4 partitions,
    small files (so that lakes have many)."""
    client = tablekit.connect(path=path)
    out = tmp_path_factory.mktemp("exports")
    vdir = export_delta(
        "demo",
        out,
        version=client.version,
        path=path,
        small_table_mb=0,
        n_partitions=4,
        target_file_bytes=100_000,
    )
    return client, out, vdir


def test_morton_codes_match_the_bit_definition():
    assert [
        int(v) for v in morton_encode(np.array([1, 0, 0, 3]), np.array([0, 1, 0, 0]), np.array([0, 0, 1, 0]))
    ] == [1, 2, 4, 9]
    rng = np.random.default_rng(3)
    xyz = rng.integers(0, 2**21, size=(3, 200))
    got = morton_encode(*xyz)
    assert [int(g) for g in got] == [_morton_by_bits(int(a), int(b), int(c)) for a, b, c in xyz.T]
    # the service takes coordinates modulo 2**21 (it masks, never refuses)
    assert int(morton_encode(np.array([2**21 + 5]), np.array([0]), np.array([0]))[0]) == _morton_by_bits(
        5, 0, 0
    )


def test_layout_lakes_and_partitioning(exported, path):
    client, out, vdir = exported
    assert vdir == out / "demo" / f"v{client.version}"
    tables = sorted(p.name for p in vdir.iterdir() if p.is_dir())
    assert tables == sorted([*client.get_tables(), *client.get_views()])
    lakes = {t: sorted(p.name for p in (vdir / t).iterdir()) for t in tables}
    assert lakes["synapses_pni_2"] == ["ctr_pt_position_morton", "id", "post_pt_root_id", "pre_pt_root_id"]
    # pt (rank 3) beats bb (rank 4) for the one spatial lake
    assert lakes["nucleus_detection_v0"] == ["id", "pt_position_morton", "pt_root_id"]
    assert lakes["aibs_metamodel_celltypes_v661"] == ["id", "target_id"]
    assert lakes["single_neurons"] == ["flat", "id", "pt_position_morton"]

    raw = _snapshot(path, client.version, "synapses_pni_2").sort_by("id")
    for lake in lakes["synapses_pni_2"]:
        rows, actions = _lake(vdir, "synapses_pni_2", lake)
        assert actions.num_rows > 4  # small target files: several per partition
        part = f"{lake}_partition"
        names = set(rows.column_names)
        assert not names & {"created", "deleted", "superceded_id"}
        assert part in names
        assert ("ctr_pt_position_morton" in names) == (lake == "ctr_pt_position_morton")
        for p in ("ctr_pt_position", "pre_pt_position", "post_pt_position"):
            for a in "xyz":
                assert rows.schema.field(f"{p}_{a}").type == pa.int32()
        # the same rows and values as the snapshot
        got = rows.sort_by("id")
        assert got["id"].to_pylist() == raw["id"].to_pylist()
        for name in raw.column_names:
            if name in ("created",):
                continue
            assert got[name].cast(raw.schema.field(name).type).equals(raw[name]), (lake, name)
        # partitions are ranges of the lake's column: each partition's values lie above the previous one's
        key = rows[lake].to_numpy()
        pv = rows[part].to_numpy()
        ranges = sorted((int(p), key[pv == p].min(), key[pv == p].max()) for p in np.unique(pv))
        assert all(a[2] <= b[1] for a, b in itertools.pairwise(ranges)), ranges
        if lake != "ctr_pt_position_morton":  # percentile ranges: near-equal sizes
            sizes = [int((pv == p).sum()) for p, _, _ in ranges]
            assert len(sizes) == 4 and max(sizes) - min(sizes) <= 0.05 * len(key) + 50, sizes
        # z-ordered on one column = sorted within each file; the log's stats are the files' own
        for f in actions["path"].to_pylist():
            t = pq.read_table(vdir / "synapses_pni_2" / lake / f)
            k = t[lake].to_numpy()
            assert (np.diff(k) >= 0).all(), f
        mins = actions[f"min.{lake}"].to_pylist()
        maxs = actions[f"max.{lake}"].to_pylist()
        assert all(a <= b for a, b in zip(mins, maxs, strict=True))
    rows, _ = _lake(vdir, "synapses_pni_2", "ctr_pt_position_morton")
    xyz = [rows[f"ctr_pt_position_{a}"].to_numpy() for a in "xyz"]
    m = rows["ctr_pt_position_morton"].to_numpy()
    sample = range(0, rows.num_rows, 997)
    assert [int(m[i]) for i in sample] == [
        _morton_by_bits(int(xyz[0][i]), int(xyz[1][i]), int(xyz[2][i])) for i in sample
    ]


def test_metadata_file(exported, path):
    client, _out, vdir = exported
    meta = json.loads((vdir / METADATA_FILE).read_text())
    assert meta["format"] == "tablekit-delta-export" and meta["format_version"] == 1
    assert meta["datastack"] == "demo"
    assert meta["version"]["version"] == client.version
    assert meta["version"]["time_stamp"].startswith(client.timestamp.isoformat()[:19])
    assert meta["datastack_info"]["viewer_resolution"] == client.get_datastack_info()["viewer_resolution"]
    syn = meta["tables"]["synapses_pni_2"]
    assert syn["rows"] == client.get_annotation_count("synapses_pni_2")
    res = [syn["metadata"][f"voxel_resolution_{a}"] for a in "xyz"]
    assert res == list(client.spec("synapses_pni_2").voxel_resolution)
    assert syn["metadata"]["schema_type"] in meta["schemas"]
    lake = syn["lakes"]["pre_pt_root_id"]
    assert lake["partition_column"] == "pre_pt_root_id_partition" and lake["strategy"] == "percentile_range"
    assert len(lake["breakpoints"]) == 3 and lake["n_partitions"] == 4
    assert syn["lakes"]["ctr_pt_position_morton"]["strategy"] == "uniform_range"
    assert syn["lakes"]["ctr_pt_position_morton"]["morton_of"] == "ctr_pt_position"
    fields = {f["name"]: f["type"] for f in syn["columns"]}
    assert fields["pre_pt_position_x"] == "int32" and fields["id"] == "int64" and "created" not in fields
    view = meta["views"]["single_neurons"]
    assert view["schema"] == client.get_view_schema("single_neurons")
    assert view["rows"] == len(client.views.single_neurons().query())


def test_small_tables_get_the_id_lake_only(path, tmp_path):
    """The service's rule: a table estimated below 200 MB is written as its ``id`` lake alone."""
    client = tablekit.connect(path=path)
    vdir = export_delta("demo", tmp_path, version=client.version, path=path, tables=["synapses_pni_2"])
    assert sorted(p.name for p in vdir.iterdir()) == sorted([METADATA_FILE, "synapses_pni_2"])
    assert [p.name for p in (vdir / "synapses_pni_2").iterdir()] == ["id"]
    rows, actions = _lake(vdir, "synapses_pni_2", "id")
    assert rows.num_rows == client.get_annotation_count("synapses_pni_2")
    assert set(actions["partition.id_partition"].to_pylist()) == {0}


def test_refusals(path, tmp_path):
    client = tablekit.connect(path=path)
    export_delta("demo", tmp_path, version=client.version, path=path, tables=["nucleus_detection_v0"])
    with pytest.raises(DatastackError, match=r"already there; pass overwrite=True"):
        export_delta("demo", tmp_path, version=client.version, path=path, tables=["nucleus_detection_v0"])
    export_delta(
        "demo", tmp_path, version=client.version, path=path, tables=["nucleus_detection_v0"], overwrite=True
    )
    with pytest.raises(UnknownTableError, match=r"no table 'nucleus' to export"):
        export_delta("demo", tmp_path / "x", version=client.version, path=path, tables=["nucleus"])
    with pytest.raises(DatastackError, match=r"holds datastack 'demo', not 'minnie'"):
        export_delta("minnie", tmp_path / "y", version=client.version, path=path)


def test_cli_export(path, tmp_path):
    client = tablekit.connect(path=path)
    args = [
        sys.executable,
        "-m",
        "tablekit",
        "export",
        "demo",
        "--path",
        path,
        "--version",
        str(client.version),
    ]
    r = subprocess.run(
        [*args, "--out", str(tmp_path), "--table", "nucleus_detection_v0", "--small-table-mb", "0"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert f"demo v{client.version}" in r.stdout
    vdir = tmp_path / "demo" / f"v{client.version}"
    assert sorted(p.name for p in (vdir / "nucleus_detection_v0").iterdir()) == [
        "id",
        "pt_position_morton",
        "pt_root_id",
    ]
    r = subprocess.run([*args, "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "add --overwrite to replace it" in r.stderr
    r = subprocess.run(
        [*args[:-2], "--version", "99999", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert r.returncode == 2 and "no materialization version 99999" in r.stderr
