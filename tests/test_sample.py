"""Tests of tablekit.datastack.sample: the deterministic synthetic datastack.

The snapshots are checked against an independent pandas recomputation from the raw history files;
the segmentation history is checked for the format's invariants; the content is checked for the
properties the demo promises (versions, edits, churn, realistic magnitudes, stable examples).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tablekit.datastack import sample
from tablekit.errors import DatastackError
from tablekit.schema import PointKind, table_spec

N = 20_000


def read(path: Path) -> pd.DataFrame:
    """A Parquet file or directory as pandas with Arrow dtypes (exact int64, nulls kept)."""
    return pq.read_table(path).to_pandas(types_mapper=pd.ArrowDtype)


def oracle_snapshot(root: Path, table: str, T: pd.Timestamp) -> pd.DataFrame:
    """The snapshot of ``table`` at ``T`` recomputed with pandas from the raw history files."""
    meta = json.loads((root / "tables" / table / "metadata.json").read_text())
    spec = table_spec(meta, json.loads((root / "schemas.json").read_text()))
    ann = read(root / "tables" / table / "annotations")
    hist = read(root / "segmentation" / "history")
    present = ann[
        (ann["created"] <= T) & (ann["deleted"].isna() | (ann["deleted"] > T)) & ann["valid"]
    ].copy()
    now = hist[(hist["valid_from"] <= T) & (hist["valid_to"].isna() | (hist["valid_to"] > T))]
    now = now[["supervoxel_id", "root_id"]]
    for p in spec.points:
        if p.kind is PointKind.UNBOUND:
            continue
        sv = present[p.column("supervoxel_id")]
        looked = sv.to_frame("supervoxel_id").merge(now, on="supervoxel_id", how="left")["root_id"]
        looked.index = present.index
        assert looked[sv.notna() & (sv != 0)].notna().all()
        present[p.column("root_id")] = looked.where(sv != 0, 0)
    return present[list(spec.stored_columns)].sort_values("id").reset_index(drop=True)


def assert_snapshots_match(root: Path) -> None:
    for v in json.loads((root / "versions.json").read_text()):
        if not v["valid"]:
            continue
        T = pd.Timestamp(v["time_stamp"], tz="UTC")
        for tdir in sorted((root / "tables").iterdir()):
            got = read(root / "versions" / str(v["version"]) / tdir.name)
            want = oracle_snapshot(root, tdir.name, T)
            assert list(got.columns) == list(want.columns)
            pd.testing.assert_frame_equal(got, want, check_dtype=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return sample.build_sample(tmp_path_factory.mktemp("sample") / "demo", synapses=N, seed=0)


def files_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def versions(root: Path) -> list[dict]:
    return json.loads((root / "versions.json").read_text())


def valid_versions(root: Path) -> list[tuple[int, pd.Timestamp]]:
    return [(v["version"], pd.Timestamp(v["time_stamp"], tz="UTC")) for v in versions(root) if v["valid"]]


def snap(root: Path, v: int, table: str) -> pd.DataFrame:
    return read(root / "versions" / str(v) / table)


def test_snapshots_match_pandas_oracle(demo):
    """Every snapshot of every valid version equals the pandas recomputation from the raw history."""
    assert_snapshots_match(demo)


def test_deterministic_and_seeded(demo, tmp_path):
    """Same seed → byte-identical files; another seed → different data."""
    again = sample.build_sample(tmp_path / "again", synapses=N, seed=0)
    assert files_digest(again) == files_digest(demo)
    other = sample.build_sample(tmp_path / "other", synapses=N, seed=1)
    a = snap(demo, 943, "synapses_pni_2")
    b = snap(other, 943, "synapses_pni_2")
    assert not a["pre_pt_root_id"].equals(b["pre_pt_root_id"])
    assert files_digest(other)["versions.json"] == files_digest(demo)["versions.json"]


def test_versions(demo):
    """≥ 4 versions over ~3 months; the first is expired and has no snapshot, the rest are valid."""
    vs = versions(demo)
    assert len(vs) >= 4
    assert vs[0]["valid"] is False and vs[0]["status"] == "EXPIRED"
    assert not (demo / "versions" / str(vs[0]["version"])).exists()
    assert all(v["valid"] and v["status"] == "AVAILABLE" for v in vs[1:])
    times = [pd.Timestamp(v["time_stamp"]) for v in vs]
    assert times == sorted(times) and pd.Timedelta(days=70) < times[-1] - times[0] < pd.Timedelta(days=110)
    for v in vs[1:]:
        assert {p.name for p in (demo / "versions" / str(v["version"])).iterdir()} == {
            "nucleus_detection_v0",
            "synapses_pni_2",
            "aibs_metamodel_celltypes_v661",
            "allen_v1_column_types_slanted",
            "proofreading_status_and_strategy",
        }


def test_history_invariants(demo):
    """Intervals per supervoxel are contiguous; supervoxel 0 is absent; a root id is never reused."""
    h = read(demo / "segmentation" / "history").sort_values(["supervoxel_id", "valid_from"])
    assert (h["supervoxel_id"] > 0).all()
    same = h["supervoxel_id"].to_numpy()[1:] == h["supervoxel_id"].to_numpy()[:-1]
    to = h["valid_to"].to_numpy()[:-1][same]
    frm = h["valid_from"].to_numpy()[1:][same]
    assert (to == frm).all()  # contiguous and disjoint
    last = np.append(~same, True)
    assert h["valid_to"].isna().to_numpy()[last].all() and h["valid_to"].notna().to_numpy()[~last].all()
    # a root lives in one interval: all its rows share valid_from and valid_to
    far = pd.Timestamp("2200-01-01", tz="UTC")
    per_root = h.assign(vt=h["valid_to"].fillna(far)).groupby("root_id")[["valid_from", "vt"]].nunique()
    assert (per_root == 1).all().all()
    # edits create fresh, larger root ids
    first = h.groupby("root_id")["valid_from"].first()
    initial = first[first == first.min()].index
    later = first[first > first.min()].index
    assert len(later) > 50 and min(later) > max(initial)


def test_root_ids_valid_at_version_time(demo):
    """Every (supervoxel, root) pair in a snapshot is an interval of the history containing T."""
    h = read(demo / "segmentation" / "history")
    for v, T in valid_versions(demo):
        s = snap(demo, v, "synapses_pni_2")
        pairs = pd.concat(
            [
                s[["pre_pt_supervoxel_id", "pre_pt_root_id"]].set_axis(["supervoxel_id", "root_id"], axis=1),
                s[["post_pt_supervoxel_id", "post_pt_root_id"]].set_axis(
                    ["supervoxel_id", "root_id"], axis=1
                ),
            ]
        ).drop_duplicates()
        zero = pairs["supervoxel_id"] == 0
        assert (pairs.loc[zero, "root_id"] == 0).all() and zero.any()
        m = pairs[~zero].merge(h, on=["supervoxel_id", "root_id"], how="left")
        ok = (m["valid_from"] <= T) & (m["valid_to"].isna() | (m["valid_to"] > T))
        assert ok.groupby([m["supervoxel_id"], m["root_id"]]).any().all()


def test_versions_differ_by_edits_and_churn(demo):
    """Root ids of version N expire by N+1; synapses are added and deleted between versions."""
    vs = valid_versions(demo)
    for (v1, _), (v2, _) in itertools.pairwise(vs):
        a, b = snap(demo, v1, "synapses_pni_2"), snap(demo, v2, "synapses_pni_2")
        roots_a = set(a["post_pt_root_id"]) | set(a["pre_pt_root_id"])
        roots_b = set(b["post_pt_root_id"]) | set(b["pre_pt_root_id"])
        assert len(roots_a - roots_b) >= 5  # expired roots
        assert len(roots_b - roots_a) >= 5  # new roots
        ids_a, ids_b = set(a["id"]), set(b["id"])
        assert len(ids_b - ids_a) > 50 and len(ids_a - ids_b) >= 1
        both = a.merge(b, on="id", suffixes=("_a", "_b"))
        assert (both["post_pt_root_id_a"] != both["post_pt_root_id_b"]).sum() > 0
    ann = read(demo / "tables" / "synapses_pni_2" / "annotations")
    sup = ann[ann["superceded_id"].notna()]
    assert len(sup) >= 5 and set(sup["superceded_id"]) <= set(ann["id"])
    new = ann.set_index("id").loc[sup["superceded_id"].tolist()]
    assert (new["created"].to_numpy() == sup["deleted"].to_numpy()).all()
    assert (~ann["valid"]).sum() >= 1


def test_stable_examples_every_cell_type(demo):
    """For every cell type, some nucleus keeps the same non-zero root in all valid versions."""
    vs = [v for v, _ in valid_versions(demo)]
    nuc = {v: snap(demo, v, "nucleus_detection_v0").set_index("id")["pt_root_id"] for v in vs}
    stable = pd.concat(nuc, axis=1)
    stable = stable[(stable.nunique(axis=1) == 1) & (stable[vs[0]] != 0)]
    types = snap(demo, vs[-1], "aibs_metamodel_celltypes_v661")
    covered = set(types[types["target_id"].isin(stable.index)]["cell_type"])
    assert covered == set(types["cell_type"])
    # nuclei changed root somewhere too
    assert len(stable) < len(nuc[vs[0]])


def test_single_neurons_view(demo):
    """The view keeps nuclei whose root carries exactly one nucleus; two-nucleus roots exist in every version."""
    view = json.loads((demo / "views" / "single_neurons.json").read_text())
    assert view["voxel_resolution"] == [4.0, 4.0, 40.0]
    for v, _ in valid_versions(demo):
        con = duckdb.connect()
        glob = demo / "versions" / str(v) / "nucleus_detection_v0" / "*.parquet"
        con.execute(f"CREATE VIEW \"nucleus_detection_v0\" AS SELECT * FROM read_parquet('{glob}')")
        got = con.execute(view["sql"]).df()
        con.close()
        assert list(got.columns) == [
            "id",
            "pt_root_id",
            "pt_supervoxel_id",
            "pt_position_x",
            "pt_position_y",
            "pt_position_z",
        ]
        nuc = snap(demo, v, "nucleus_detection_v0")
        counts = nuc["pt_root_id"].value_counts()
        assert (counts[counts.index != 0] == 2).sum() >= 2
        want = nuc[(nuc["pt_root_id"] != 0) & nuc["pt_root_id"].map(counts).eq(1)]
        assert sorted(got["id"]) == sorted(want["id"])


def test_realistic_magnitudes(demo):
    v = valid_versions(demo)[-1][0]
    syn = snap(demo, v, "synapses_pni_2")
    assert len(syn) > 0.95 * N and syn["id"].max() < 5.2e8 and syn["id"].is_unique
    roots = syn["post_pt_root_id"][syn["post_pt_root_id"] != 0]
    assert roots.between(12 * 2**56, 13 * 2**56).all()
    assert str(int(roots.min())).startswith("864691135")
    svs = syn["pre_pt_supervoxel_id"][syn["pre_pt_supervoxel_id"] != 0]
    assert svs.between(2**56, 2**57).all()
    for p in ("pre_pt", "post_pt", "ctr_pt"):
        assert syn[f"{p}_position_x"].between(60_000, 420_000).all()
        assert syn[f"{p}_position_y"].between(75_000, 280_000).all()
        assert syn[f"{p}_position_z"].between(14_000, 28_000).all()
    autapse = (syn["pre_pt_root_id"] == syn["post_pt_root_id"]) & (syn["pre_pt_root_id"] != 0)
    assert 1 <= autapse.sum() < 0.01 * len(syn)
    assert 1 <= ((syn["pre_pt_root_id"] == 0) | (syn["post_pt_root_id"] == 0)).sum() < 0.01 * len(syn)
    deg = syn.groupby("post_pt_root_id").size()
    assert deg.max() > 10 * deg.median()  # heavy-tailed connectivity
    nuc = snap(demo, v, "nucleus_detection_v0")
    assert nuc["id"].between(100_000, 800_000).all() and len(nuc) >= 500
    assert nuc["volume"].isna().any() and nuc["bb_start_position_x"].isna().any()
    assert 0.005 < (nuc["pt_supervoxel_id"] == 0).mean() < 0.08
    assert (nuc.loc[nuc["pt_supervoxel_id"] == 0, "pt_root_id"] == 0).all()


def test_other_tables(demo):
    v = valid_versions(demo)[-1][0]
    meta = {
        t: json.loads((demo / "tables" / t / "metadata.json").read_text())
        for t in ("aibs_metamodel_celltypes_v661", "allen_v1_column_types_slanted", "nucleus_detection_v0")
    }
    assert meta["aibs_metamodel_celltypes_v661"]["reference_table"] == "nucleus_detection_v0"
    col = meta["allen_v1_column_types_slanted"]
    assert [col[f"voxel_resolution_{a}"] for a in "xyz"] == [1.0, 1.0, 1.0]
    info = json.loads((demo / "datastack.json").read_text())
    assert (info["synapse_table"], info["soma_table"]) == ("synapses_pni_2", "nucleus_detection_v0")
    types = snap(demo, v, "aibs_metamodel_celltypes_v661")
    nuc = snap(demo, v, "nucleus_detection_v0")
    assert types["target_id"].isin(nuc["id"]).all()
    assert types["target_id"].duplicated().any() and types["target_id"].nunique() > 0.7 * len(nuc)
    allowed = {
        "excitatory_neuron": {"23P", "4P", "5P-IT", "5P-ET", "5P-NP", "6P-IT", "6P-CT"},
        "inhibitory_neuron": {"BC", "MC", "SC", "NGC"},
        "nonneuron": {"astrocyte", "microglia", "oligo", "OPC"},
    }
    for cls, t in zip(types["classification_system"], types["cell_type"], strict=True):
        assert t in allowed[cls]
    column = snap(demo, v, "allen_v1_column_types_slanted")
    assert 200 <= len(column) <= 1400
    assert column["pt_position_x"].between(4 * 60_000, 4 * 420_000).all()  # nm
    assert column["pt_position_z"].between(40 * 14_000, 40 * 28_000).all()
    pr = snap(demo, v, "proofreading_status_and_strategy")
    assert 5 <= len(pr) and set(pr["strategy_axon"]) <= set(sample._STRATEGY_AXON)
    assert set(pr["strategy_dendrite"]) <= {"dendrite_clean", "dendrite_extended"}
    assert (pr["status_axon"] == (pr["strategy_axon"] != "none")).all()


def test_proofreading_valid_id_is_root_at_assessment(demo):
    """valid_id is the root of the nucleus supervoxel at the row's created time (history oracle)."""
    h = read(demo / "segmentation" / "history")
    pr = read(demo / "tables" / "proofreading_status_and_strategy" / "annotations")
    m = pr.merge(h, left_on="pt_supervoxel_id", right_on="supervoxel_id")
    m = m[(m["valid_from"] <= m["created"]) & (m["valid_to"].isna() | (m["valid_to"] > m["created"]))]
    assert len(m) == len(pr) and (m["valid_id"] == m["root_id"]).all()
    v = valid_versions(demo)[-1][0]
    last = snap(demo, v, "proofreading_status_and_strategy")
    assert (last["valid_id"] != last["pt_root_id"]).any()  # some neurons were edited after assessment


def test_ensure_demo_builds_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "cache"))
    p1 = sample.ensure_demo(synapses=5_000, seed=3)
    assert p1.parent == tmp_path / "cache" and (p1 / "datastack.json").is_file()
    assert f"f{1}" in p1.name and "5000" in p1.name and "seed3" in p1.name
    stamp = (p1 / "datastack.json").stat().st_mtime_ns
    p2 = sample.ensure_demo(synapses=5_000, seed=3)
    assert p2 == p1 and (p1 / "datastack.json").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [p1.name]  # no temp dirs left


def test_build_sample_arguments(tmp_path):
    with pytest.raises(DatastackError, match=r"synapses=10; give an int >= 1000"):
        sample.build_sample(tmp_path / "x", synapses=10)
    with pytest.raises(DatastackError, match=r"seed=-1"):
        sample.build_sample(tmp_path / "x", seed=-1)
    p = sample.build_sample(tmp_path / "x", synapses=2_000, seed=4, name="tiny")
    assert json.loads((p / "datastack.json").read_text())["name"] == "tiny"
    with pytest.raises(DatastackError, match=r"overwrite=True"):
        sample.build_sample(tmp_path / "x", synapses=2_000)
    sample.build_sample(tmp_path / "x", synapses=2_000, seed=5, overwrite=True)
    assert pq.read_table(p / "versions" / "943" / "synapses_pni_2").num_rows > 1_900
