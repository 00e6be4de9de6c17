"""End to end on a generated datastack: DSL vs classic dict API vs an independent pandas oracle.

The oracle (tests/_oracle.py) replays the raw annotation and segmentation history with pandas;
it never touches tablekit's engine or its materialized snapshots.
"""

from __future__ import annotations

import datetime as dt
import json

import _oracle
import attrs
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tablekit
from tablekit.errors import QueryError, UnknownTableError, VersionError

SYN = "synapses_pni_2"
NUC = "nucleus_detection_v0"
CT = "aibs_metamodel_celltypes_v661"


@pytest.fixture(scope="session")
def ts(path, client):
    return _oracle.version_timestamp(path, client.version)


def oracle(path, ts, table, *filters):
    df = _oracle.snapshot(path, table, ts)
    keep = pd.Series(True, index=df.index)
    for f in filters:
        keep &= _oracle.apply(df, *f)
    return df[keep].reset_index(drop=True)


def same_rows(got: pd.DataFrame, want: pd.DataFrame):
    """Compare a tablekit result (split positions) with an oracle frame on the result's columns."""
    assert list(got["id"]) == list(want["id"]), "different rows or order"
    for c in got.columns:
        if c in ("created", "valid"):
            continue
        g, w = got[c], want[c]
        if pd.api.types.is_float_dtype(w) or pd.api.types.is_float_dtype(g):
            np.testing.assert_allclose(g.astype(float), w.astype(float), equal_nan=True, err_msg=c)
        else:
            assert [None if pd.isna(x) else x for x in g] == [None if pd.isna(x) else x for x in w], c


# ----------------------------------------------------------------------------- DSL vs oracle
def test_root_id_lookup(client, path, ts):
    full = oracle(path, ts, SYN)
    root = int(full["post_pt_root_id"][full["post_pt_root_id"] != 0].value_counts().index[0])
    got = client.tables[SYN](post_pt_root_id=root).query(split_positions=True)
    want = oracle(path, ts, SYN, ("post_pt_root_id", "==", root))
    assert len(want) > 5
    same_rows(got, want)
    assert got["post_pt_root_id"].dtype == np.int64  # 18-digit ids stay exact integers


def test_ranges_membership_exclusion_and_bbox(client, path, ts):
    nuc = oracle(path, ts, NUC)
    lo, hi = nuc["volume"].quantile([0.2, 0.6])
    ids = list(nuc["id"].sample(40, random_state=1))
    x0, x1 = nuc["pt_position_x"].quantile([0.2, 0.8]).astype(int)
    box = [[int(x0), 0, 0], [int(x1), 10**7, 10**7]]
    cases = [
        ({"volume": {">": lo, "<": hi}}, [("volume", ">", lo), ("volume", "<", hi)]),
        ({"id": ids}, [("id", "in", ids)]),
        ({"id": {"not in": ids}, "pt_root_id": {"!=": 0}}, [("id", "not in", ids), ("pt_root_id", "!=", 0)]),
        ({"pt_position_bbox": box}, [("pt_position", "bbox", box)]),
        ({"bb_start_position_bbox": box}, [("bb_start_position", "bbox", box)]),
        (
            {"id": {">=": int(nuc["id"].median())}, "volume": {"<=": hi}},
            [("id", ">=", int(nuc["id"].median())), ("volume", "<=", hi)],
        ),
    ]
    for kwargs, filters in cases:
        got = client.tables[NUC](**kwargs).query(split_positions=True)
        want = oracle(path, ts, NUC, *filters)
        assert 0 < len(want) < len(nuc), kwargs
        same_rows(got, want)


def test_exclusion_keeps_nulls(client, path, ts):
    nuc = oracle(path, ts, NUC)
    assert nuc["volume"].isna().any(), "the demo has nuclei without a volume"
    v = float(nuc["volume"].dropna().iloc[0])
    got = client.tables[NUC](volume={"!=": v}).query(split_positions=True)
    same_rows(got, oracle(path, ts, NUC, ("volume", "!=", v)))
    assert got["volume"].isna().sum() == nuc["volume"].isna().sum()


def test_regex_and_strings_on_reference_table(client, path, ts):
    got = client.tables[CT](cell_type={"regex": "^5P"}).query(split_positions=True)
    ref = oracle(path, ts, CT)
    want_ids = sorted(ref[ref["cell_type"].str.match("^5P")]["id"])
    assert sorted(got["id_ref"]) == want_ids and want_ids
    assert set(got["cell_type"].str[:2]) == {"5P"}


def test_reference_merge_matches_a_pandas_join(client, path, ts):
    nuc, ref = oracle(path, ts, NUC), oracle(path, ts, CT)
    root = int(nuc["pt_root_id"][nuc["pt_root_id"] != 0].iloc[3])
    got = client.tables[CT](pt_root_id=root).query(split_positions=True)
    joined = ref.merge(nuc, left_on="target_id", right_on="id", suffixes=("_ref", ""))
    want = joined[joined["pt_root_id"] == root].sort_values("id_ref")
    assert list(got["id_ref"]) == list(want["id_ref"])
    assert list(got["id"]) == list(want["id"])
    assert {"id", "id_ref", "created_ref", "target_id", "cell_type", "volume", "pt_position_x"} <= set(
        got.columns
    )


def test_empty_membership_is_no_rows_with_all_columns(client):
    df = client.tables[NUC](pt_root_id=[]).query()
    full = client.tables[NUC](id=[]).query(split_positions=True)
    assert len(df) == 0 and len(full) == 0
    assert "pt_position" in df.columns and "pt_position_x" in full.columns


# ----------------------------------------------------------------------------- dict API == DSL
def test_query_table_equals_dsl(client, path, ts):
    nuc = oracle(path, ts, NUC)
    lo = float(nuc["volume"].median())
    ids = [int(i) for i in nuc["id"][:50]]
    box = [[0, 0, 0], [10**7, 10**7, 10**7]]
    a = client.tables[NUC](volume={">": lo}, id={"not in": ids}, pt_position_bbox=box).query(limit=30)
    b = client.query_table(
        NUC,
        filter_greater_dict={"volume": lo},
        filter_out_dict={"id": ids},
        filter_spatial_dict={"pt_position": box},
        limit=30,
    )
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["request"] == b.attrs["request"]


def test_classic_dicts_combine_on_one_column(client, path, ts):
    syn = oracle(path, ts, SYN)
    lo, hi = syn["size"].quantile([0.3, 0.4])
    got = client.query_table(
        SYN, filter_greater_equal_dict={"size": lo}, filter_less_dict={"size": hi}, split_positions=True
    )
    same_rows(got, oracle(path, ts, SYN, ("size", ">=", lo), ("size", "<", hi)))


def test_synapse_query(client, path, ts):
    syn = oracle(path, ts, SYN)
    post = int(syn["post_pt_root_id"][syn["post_pt_root_id"] != 0].value_counts().index[0])
    got = client.synapse_query(post_ids=post, split_positions=True)
    want = syn[(syn["post_pt_root_id"] == post) & (syn["pre_pt_root_id"] != syn["post_pt_root_id"])]
    same_rows(got, want.reset_index(drop=True))
    auto = client.synapse_query(post_ids=post, remove_autapses=False)
    assert len(auto) == (syn["post_pt_root_id"] == post).sum()
    nz = client.synapse_query(include_zeros=False, remove_autapses=False, select_columns=["id"])
    assert len(nz) == ((syn["pre_pt_root_id"] != 0) & (syn["post_pt_root_id"] != 0)).sum()


def test_query_view(client, path, ts):
    nuc = oracle(path, ts, NUC)
    counts = nuc["pt_root_id"].value_counts()
    single = nuc[(nuc["pt_root_id"] != 0) & nuc["pt_root_id"].map(counts).eq(1)]
    got = client.views.single_neurons().query(split_positions=True)
    assert sorted(got["id"]) == sorted(single["id"])
    assert set(got.columns) >= {"id", "pt_root_id", "pt_supervoxel_id", "pt_position_x"}
    root = int(single["pt_root_id"].iloc[0])
    a = client.views.single_neurons(pt_root_id=[root]).query()
    b = client.query_view("single_neurons", filter_in_dict={"pt_root_id": [root]})
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 1


# ----------------------------------------------------------------------------- results
def test_paging_is_deterministic_and_complete(client):
    t = client.tables[SYN](size={">": 0})
    full = t.query(select_columns=["id", "size"])
    pages = [t.query(select_columns=["id", "size"], offset=o, limit=997) for o in range(0, len(full), 997)]
    together = pd.concat(pages, ignore_index=True)
    pd.testing.assert_frame_equal(together, full, check_like=False)
    assert full["id"].is_monotonic_increasing


def test_positions_arrays_split_and_resolution(client, path, ts):
    df = client.tables[NUC]().query(limit=50)
    sp = client.tables[NUC]().query(limit=50, split_positions=True)
    nm = client.tables[NUC]().query(limit=50, split_positions=True, desired_resolution=[1, 1, 1])
    first = df["pt_position"].iloc[0]
    assert isinstance(first, np.ndarray) and first.shape == (3,)
    assert list(first) == [sp["pt_position_x"][0], sp["pt_position_y"][0], sp["pt_position_z"][0]]
    np.testing.assert_allclose(nm["pt_position_x"], sp["pt_position_x"] * 4)
    np.testing.assert_allclose(nm["pt_position_z"], sp["pt_position_z"] * 40)
    assert list(df.columns[-3:]) == ["bb_end_position", "bb_start_position", "pt_position"] or df.columns[
        -1
    ].endswith("position")
    missing = df["bb_start_position"].isna()
    nucs = oracle(path, ts, NUC).head(50)
    assert missing.tolist() == nucs["bb_start_position_x"].isna().tolist()


def test_table_with_nm_resolution(client):
    meta = client.get_table_metadata("allen_v1_column_types_slanted")
    assert meta["voxel_resolution"] == [1.0, 1.0, 1.0]
    raw = client.tables.allen_v1_column_types_slanted().query(limit=5, split_positions=True)
    vox = client.tables.allen_v1_column_types_slanted().query(
        limit=5, split_positions=True, desired_resolution=[4, 4, 40]
    )
    np.testing.assert_allclose(vox["pt_position_z"], raw["pt_position_z"] / 40)
    assert raw.attrs["dataframe_resolution"] == [1.0, 1.0, 1.0]
    assert vox.attrs["dataframe_resolution"] == [4.0, 4.0, 40.0]


def test_select_columns(client):
    df = client.tables[SYN]().query(select_columns=["id", "pre_pt_root_id", "ctr_pt_position"], limit=3)
    assert list(df.columns) == ["id", "pre_pt_root_id", "ctr_pt_position"]
    with pytest.raises(QueryError, match=r"synapses_pni_2: select_columns names unknown column 'pre_root'"):
        client.tables[SYN]().query(select_columns=["pre_root"])
    with pytest.raises(
        QueryError, match="Select the position 'ctr_pt_position'; split_positions=True splits it"
    ):
        client.tables[SYN]().query(select_columns=["ctr_pt_position_x"])


def test_counts_and_random_sample(client, path, ts):
    syn = oracle(path, ts, SYN)
    n = client.tables[SYN](size={">": float(syn["size"].median())}).query(get_counts=True)
    assert int(n["count"].iloc[0]) == (syn["size"] > syn["size"].median()).sum()
    a = client.tables[SYN]().query(random_sample=500, select_columns=["id"])
    b = client.tables[SYN]().query(random_sample=500, select_columns=["id"])
    assert list(a["id"]) == list(b["id"]) and 300 <= len(a) <= 700
    assert set(a["id"]) <= set(syn["id"]) and a["id"].is_monotonic_increasing


def test_output_arrow_matches_pandas(client):
    tbl = client.tables[NUC]().query(limit=20, output="arrow")
    df = client.tables[NUC]().query(limit=20)
    assert isinstance(tbl, pa.Table)
    assert tbl.column("id").to_pylist() == df["id"].tolist()
    assert tbl.column("pt_position").to_pylist()[0] == df["pt_position"].iloc[0].tolist()


def test_metadata_attrs_are_json_and_complete(client):
    df = client.tables[NUC](volume={">": 1}).query(limit=3)
    json.dumps(df.attrs)
    a = df.attrs
    assert a["datastack_name"] == client.datastack and a["materialization_version"] == client.version
    assert a["filters"] == {"volume": {">": 1}}
    assert a["table_metadata"][NUC]["voxel_resolution"] == [4.0, 4.0, 40.0]
    assert (
        "$2" in a["request"]["sql"]
        and 1.0 in a["request"]["parameters"]
        and a["timestamp"].startswith(str(client.timestamp.date()))
    )


def test_explain_shows_sql_without_running(client, monkeypatch):
    """explain() compiles the query and runs nothing: the backend is never asked to execute."""
    ran = []
    real = client.backend.execute
    monkeypatch.setattr(client.backend, "execute", lambda q: ran.append(q) or real(q))
    text = client.tables[NUC](volume={">": 123.5}).explain(limit=3)
    assert ran == []
    plan = json.loads(text)
    assert "123.5" not in plan["sql"] and 123.5 in plan["parameters"]
    assert "LIMIT" in plan["sql"].upper()
    client.tables[NUC](volume={">": 123.5}).query(limit=3)  # the guard itself sees a query
    assert len(ran) == 1


# ----------------------------------------------------------------------------- versions & metadata
def test_versions_and_expired_version(client, path):
    meta = json.loads((__import__("pathlib").Path(path) / "versions.json").read_text())
    valid = sorted(v["version"] for v in meta if v["valid"])
    expired = sorted(v["version"] for v in meta if not v["valid"])
    assert client.get_versions() == valid and expired
    assert client.get_versions(expired=True) == sorted(valid + expired)
    assert client.version == valid[-1]
    with pytest.raises(VersionError, match=rf"version {expired[0]} has expired .* \.query\(timestamp="):
        client.tables[NUC]().query(materialization_version=expired[0])
    with pytest.raises(VersionError, match="no materialization version 999"):
        client.get_version_metadata(999)
    ts = client.get_timestamp(valid[0])
    assert ts.tzinfo is not None and ts == _oracle.version_timestamp(path, valid[0]).to_pydatetime()


def test_every_valid_version_equals_the_history_replay(client, path):
    for v in client.get_versions():
        ts = _oracle.version_timestamp(path, v)
        got = client.tables[SYN]().query(materialization_version=v, split_positions=True)
        same_rows(got, oracle(path, ts, SYN))
        assert client.get_annotation_count(SYN, version=v) == len(got)


def test_versions_differ_by_edits(client):
    vs = client.get_versions()
    a = client.tables[NUC]().query(materialization_version=vs[0], select_columns=["id", "pt_root_id"])
    b = client.tables[NUC]().query(materialization_version=vs[-1], select_columns=["id", "pt_root_id"])
    m = a.merge(b, on="id", suffixes=("_a", "_b"))
    assert (m["pt_root_id_a"] != m["pt_root_id_b"]).any(), "proofreading should change some root ids"


def test_client_version_is_settable(path):
    c = tablekit.connect(path=path)
    vs = c.get_versions()
    c.version = vs[0]
    assert c.timestamp == c.get_timestamp(vs[0])
    df = c.tables[NUC]().query(limit=1)
    assert df.attrs["materialization_version"] == vs[0]


def test_metadata_api(client, path, ts):
    assert client.get_tables() == sorted(
        [NUC, SYN, CT, "allen_v1_column_types_slanted", "proofreading_status_and_strategy"]
    )
    m = client.get_table_metadata(CT)
    assert m["reference_table"] == NUC and m["schema_type"] == "cell_type_reference"
    for t in client.get_tables():
        assert client.get_annotation_count(t) == len(oracle(path, ts, t))
    assert client.info["synapse_table"] == SYN and client.info["soma_table"] == NUC
    assert client.get_views() == ["single_neurons"]


def test_namespace(client):
    t = client.tables
    assert NUC in t and "nope" not in t and len(t) == 5
    assert t.find("SYN") == [SYN]
    assert t[NUC] is t.nucleus_detection_v0
    assert NUC in dir(t) and t._ipython_key_completions_() == sorted(t)
    assert "<table>" in t._repr_html_()
    with pytest.raises(
        UnknownTableError, match=r"no table named 'nucleus_detection_v1'.*Did you mean 'nucleus_detection_v0'"
    ):
        _ = t["nucleus_detection_v1"]
    with pytest.raises(AttributeError):
        _ = t.synapses_pni_3


def test_live_queries_are_refused_or_exact(client):
    # issue 3 covers live queries; until then the refusal must be explicit, never a silent version query
    with pytest.raises(VersionError, match="naive"):
        client.tables[NUC]().query(timestamp=dt.datetime(2025, 3, 1))


# ----------------------------------------------------------------------------- random filters
_OPS_NUM = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]


@st.composite
def synapse_filters(draw, frame):
    cols = draw(
        st.lists(
            st.sampled_from(["size", "pre_pt_root_id", "post_pt_root_id", "id", "post_pt_position"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    kwargs, filters = {}, []
    for c in cols:
        if c == "post_pt_position":
            xs = sorted(draw(st.lists(st.integers(60_000, 420_000), min_size=2, max_size=2, unique=True)))
            box = [[xs[0], 0, 0], [xs[1], 10**6, 10**6]]
            kwargs["post_pt_position_bbox"] = box
            filters.append(("post_pt_position", "bbox", box))
            continue
        pool = frame[c].dropna()
        ops = ["==", "!=", "in", "not in"] if c.endswith("root_id") else _OPS_NUM
        op = draw(st.sampled_from(ops))
        if op in ("in", "not in"):
            val = [draw(st.sampled_from(list(pool.iloc[:300]))) for _ in range(draw(st.integers(0, 4)))]
            val = [int(v) if c != "size" else float(v) for v in val]
        else:
            v = draw(st.sampled_from(list(pool.iloc[:300])))
            val = int(v) if c != "size" else float(v)
        kwargs.setdefault(c, {})[op] = val
        filters.append((c, op, val))
    return kwargs, filters


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_filters_match_oracle(client, path, ts, data):
    frame = oracle(path, ts, SYN)
    kwargs, filters = data.draw(synapse_filters(frame))
    got = client.tables[SYN](**kwargs).query(split_positions=True)
    same_rows(got, oracle(path, ts, SYN, *filters))


def test_counts_ignore_desired_resolution(client):
    # regression: the unused position-scale parameters used to be bound into the count statement
    n = len(client.views.single_neurons().query(select_columns=["id"]))
    got = client.query_view("single_neurons", desired_resolution=[8, 8, 40], get_counts=True)
    assert int(got["count"].iloc[0]) == n
    t = client.tables[NUC]().query(desired_resolution=[1, 1, 1], get_counts=True)
    assert int(t["count"].iloc[0]) == client.get_annotation_count(NUC)


def test_attrs_stay_small_and_provenance_keeps_the_whole_query(client):
    """A 20,000-id filter: ``df.attrs`` stays under 4 KB (each long list as its count and the
    sha256 of its JSON, checked here with hashlib), ``tablekit.provenance(df)`` gives the filters
    and request whole, and re-running the filters it records gives the same rows."""
    import hashlib

    ids = client.tables[SYN]().query(select_columns=["id"], limit=20_000)["id"].tolist()
    ids = ids + list(range(10**15, 10**15 + 20_000 - len(ids)))  # 20,000 ids, some matching nothing
    df = client.tables[SYN](id=ids).query()
    size = len(json.dumps(df.attrs, separators=(",", ":")).encode())
    assert size <= 4096, size
    summary = df.attrs["filters"]["id"]
    text = json.dumps(ids, sort_keys=True, separators=(",", ":"))
    assert summary["count"] == 20_000 and summary["first"] == ids[:3]
    assert summary["sha256"] == hashlib.sha256(text.encode()).hexdigest()[:16]
    full = tablekit.provenance(df)
    assert full["filters"] == {"id": ids} and full["table_name"] == SYN
    assert tablekit.provenance(df.head(3))["filters"]["id"] == ids  # derived frames find it too
    again = client.tables[full["table_name"]](**full["filters"]).query()
    pd.testing.assert_frame_equal(again, df)
    want = sorted(set(ids) & set(client.tables[SYN]().query(select_columns=["id"])["id"]))
    assert df["id"].tolist() == want  # the oracle: the ids asked for that exist, in id order
    small = client.tables[SYN](id=ids[:3]).query()
    assert "provenance_key" not in small.attrs and tablekit.provenance(small) == small.attrs
    with pytest.raises(tablekit.TablekitError, match="metadata=False"):
        tablekit.provenance(client.tables[SYN](id=ids[:3]).query(metadata=False))


def test_the_layout_is_derived_once_when_the_query_is_built(client, path, monkeypatch):
    """build_query derives the result layout once (names, source tables, position scales, the
    selection, the resolution) and the compiler reads it from the Query: running it derives
    nothing again. Expected values written out from the datastack's metadata."""
    import sys

    lay_mod = sys.modules["tablekit.query.layout"]  # (tablekit.query.layout is also a function)

    meta = {
        t: json.loads((__import__("pathlib").Path(path) / "tables" / t / "metadata.json").read_text())
        for t in (CT, NUC)
    }
    assert [meta[NUC][f"voxel_resolution_{a}"] for a in "xyz"] == [4, 4, 40]
    q = client.tables[CT]().to_query(
        select_columns=["id_ref", "cell_type", "pt_position"], desired_resolution=[8, 2, 1], limit=3
    )
    lay = q.layout
    assert [(c.name, c.table) for c in lay.selected] == [
        ("pt_position", NUC),
        ("id_ref", CT),
        ("cell_type", CT),
    ]
    assert lay.physical == ("pt_position_x", "pt_position_y", "pt_position_z", "id_ref", "cell_type")
    assert {c.name: c.scale for c in lay.columns if c.name.endswith("position")}["pt_position"] == (
        0.5,
        2.0,
        40.0,
    )
    assert lay.resolution == (8.0, 2.0, 1.0)
    calls = []
    real = lay_mod.query_layout
    monkeypatch.setattr(lay_mod, "query_layout", lambda *a: calls.append(a) or real(*a))
    t = client.answer(q).table
    assert calls == [] and t.column_names == list(lay.physical)
    # a hand-made Query (no layout) is laid out by the backend from its own specs, the same way
    bare = attrs.evolve(q, layout=None)
    assert client.answer(bare).table.equals(t) and len(calls) >= 1
