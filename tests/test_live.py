"""Live queries, timestamps, versions and the roots API (issue 3), against a history replay.

The oracle (tests/_oracle.py) recomputes "the table at T" from the raw annotation and
segmentation history with pandas; it shares no code with the engine.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import warnings
from collections import Counter

import _oracle
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tablekit
from tablekit.errors import UnsupportedError, VersionError

UTC = dt.timezone.utc
SYN, NUC, CT = "synapses_pni_2", "nucleus_detection_v0", "aibs_metamodel_celltypes_v661"


def _versions(path):
    return json.loads((pathlib.Path(path) / "versions.json").read_text())


def _frame_equal(a: pd.DataFrame, b: pd.DataFrame):
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_like=False)


def _history(path) -> pd.DataFrame:
    return pd.read_parquet(pathlib.Path(path) / "segmentation" / "history")


def _edit_times(path) -> list[pd.Timestamp]:
    h = _history(path)
    return sorted(set(h["valid_to"].dropna()))


def _same_as_oracle(got: pd.DataFrame, want: pd.DataFrame):
    assert list(got["id"]) == list(want["id"])
    for c in got.columns:
        if c.endswith("root_id") or c.endswith("supervoxel_id"):
            assert [None if pd.isna(x) else int(x) for x in got[c]] == [
                None if pd.isna(x) else int(x) for x in want[c]
            ], c


# ----------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("table", [SYN, NUC, CT, "proofreading_status_and_strategy"])
def test_live_at_a_version_timestamp_equals_the_version(client, path, table):
    for v in client.get_versions():
        ts = client.get_timestamp(v)
        mat = client.tables[table]().query(materialization_version=v, split_positions=True, metadata=False)
        live = client.tables[table]().live_query(ts, split_positions=True, metadata=False)
        _frame_equal(live, mat)
        # and both are the replay (a reference table merged with its target: an inner join)
        want = _oracle.snapshot(path, table, pd.Timestamp(ts))
        if table == CT:
            nuc = _oracle.snapshot(path, NUC, pd.Timestamp(ts))
            m = want.merge(nuc, left_on="target_id", right_on="id", suffixes=("_ref", "")).sort_values(
                "id_ref"
            )
            assert live["id_ref"].tolist() == m["id_ref"].tolist()
            want = m.drop(columns="id_ref")
        _same_as_oracle(live, want)


def test_live_between_edits_equals_history_replay(client, path):
    """Just before and just after several edits, the live table equals the replay."""
    times = _edit_times(path)
    picks = [times[len(times) * k // 6] for k in range(1, 6)]
    for t in picks:
        for ts in (t - pd.Timedelta(microseconds=1), t):
            got = client.tables[SYN]().live_query(ts.to_pydatetime(), split_positions=True, metadata=False)
            _same_as_oracle(got, _oracle.snapshot(path, SYN, ts))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frac=st.floats(0, 1))
def test_live_at_any_time_equals_history_replay(client, path, frac):
    first = min(m["time_stamp"] for m in client.get_versions_metadata(expired=True))
    last = max(_edit_times(path)).to_pydatetime() + dt.timedelta(days=1)
    ts = first + (last - first) * frac
    got = client.tables[NUC]().live_query(ts, split_positions=True, metadata=False)
    _same_as_oracle(got, _oracle.snapshot(path, NUC, pd.Timestamp(ts)))


def test_root_filter_at_t_is_exactly_that_roots_supervoxels(client, path):
    times = _edit_times(path)
    ts = times[len(times) // 2]
    snap = _oracle.snapshot(path, SYN, ts)
    h = _history(path)
    alive = h[(h["valid_from"] <= ts) & (h["valid_to"].isna() | (h["valid_to"] > ts))]
    # a root created by an edit before ts and still valid at ts
    fresh = alive[alive["valid_from"] > h["valid_from"].min()]
    counts = snap["post_pt_root_id"].value_counts()
    root = int(next(r for r in fresh["root_id"].unique() if counts.get(r, 0) > 0))
    svs = set(alive.loc[alive["root_id"] == root, "supervoxel_id"])
    got = client.tables[SYN](post_pt_root_id=root).live_query(ts.to_pydatetime(), split_positions=True)
    want = snap[snap["post_pt_supervoxel_id"].isin(svs)]
    assert list(got["id"]) == list(want["id"]) and len(want) > 0
    assert set(got["post_pt_root_id"]) == {root}


@pytest.mark.parametrize("seed", [11, 12])
def test_generated_datastacks_with_random_edits(tmp_path, seed):
    from tablekit.datastack.sample import build_sample

    p = str(build_sample(tmp_path / f"s{seed}", synapses=4_000, seed=seed))
    c = tablekit.connect(path=p)
    for v in c.get_versions():
        ts = c.get_timestamp(v)
        a = c.tables[SYN]().query(materialization_version=v, split_positions=True, metadata=False)
        b = c.tables[SYN]().live_query(ts, split_positions=True, metadata=False)
        _frame_equal(a, b)
        _same_as_oracle(a, _oracle.snapshot(p, SYN, pd.Timestamp(ts)))
    t = _edit_times(p)[-1]
    _same_as_oracle(
        c.tables[NUC]().live_query(t.to_pydatetime(), metadata=False), _oracle.snapshot(p, NUC, t)
    )


# ----------------------------------------------------------------------------- entry points
def test_entry_points_agree(client, path):
    ts = _edit_times(path)[-1].to_pydatetime()
    snap = _oracle.snapshot(path, NUC, pd.Timestamp(ts))
    root = int(snap["pt_root_id"][snap["pt_root_id"] != 0].iloc[5])
    a = client.tables[NUC](pt_root_id=root).live_query(ts, metadata=False)
    b = client.tables[NUC](pt_root_id=root).query(timestamp=ts, metadata=False)
    c = client.live_query(NUC, ts, filter_equal_dict={"pt_root_id": root}, metadata=False)
    d = client.query_table(NUC, timestamp=ts, filter_in_dict={"pt_root_id": [root]}, metadata=False)
    for other in (b, c, d):
        _frame_equal(a, other)
    assert list(a["id"]) == list(snap[snap["pt_root_id"] == root]["id"])
    allrows = client.tables[NUC].get_all_live(ts, metadata=False)
    assert list(allrows["id"]) == list(snap["id"])


def test_reference_tables_join_at_t(client, path):
    ts = _edit_times(path)[-1]
    nuc, ref = _oracle.snapshot(path, NUC, ts), _oracle.snapshot(path, CT, ts)
    joined = ref.merge(nuc, left_on="target_id", right_on="id", suffixes=("_ref", "")).sort_values("id_ref")
    got = client.tables[CT]().live_query(ts.to_pydatetime(), metadata=False)
    assert list(got["id_ref"]) == list(joined["id_ref"])
    assert [int(x) for x in got["pt_root_id"]] == [int(x) for x in joined["pt_root_id"]]


def test_live_paging_is_over_the_merged_id_ordered_result(client, path):
    ts = _edit_times(path)[-1].to_pydatetime()
    full = client.tables[SYN]().live_query(ts, select_columns=["id"], metadata=False)
    pages = [
        client.tables[SYN]().live_query(ts, select_columns=["id"], offset=o, limit=1500, metadata=False)
        for o in range(0, len(full), 1500)
    ]
    assert pd.concat(pages, ignore_index=True)["id"].tolist() == full["id"].tolist()
    assert full["id"].is_monotonic_increasing


def test_views_refuse_live_unless_live_compatible(client, path):
    ts = client.get_timestamp(client.version)
    with pytest.raises(UnsupportedError, match="view 'single_neurons' is not live-compatible"):
        client.views.single_neurons().live_query(ts)
    with pytest.raises(UnsupportedError, match="not live-compatible"):
        client.views.single_neurons().query(timestamp=ts)


# ----------------------------------------------------------------------------- timestamps
def test_timestamp_forms(client):
    ts = client.get_timestamp(client.version)
    want = client.tables[NUC]().live_query(ts, select_columns=["id"], metadata=False)
    for form in (pd.Timestamp(ts), ts.isoformat(), ts.astimezone(dt.timezone(dt.timedelta(hours=-5)))):
        got = client.tables[NUC]().live_query(form, select_columns=["id"], metadata=False)
        _frame_equal(got, want)
    now = client.tables[NUC]().live_query("now", select_columns=["id"])
    assert now.attrs["live_query"] is True


def test_naive_timestamp_is_refused_with_the_fix(client):
    with pytest.raises(VersionError) as e:
        client.tables[NUC]().live_query(dt.datetime(2025, 3, 1))
    assert isinstance(e.value, ValueError)
    assert "is naive (no time zone). All timestamps are UTC" in str(e.value)
    assert "datetime.now(timezone.utc)" in str(e.value)


def test_timestamp_out_of_range(client):
    first = min(m["time_stamp"] for m in client.get_versions_metadata(expired=True))
    with pytest.raises(
        VersionError, match=r"is before the first version \(2025-01-06T08:00:00.*valid timestamps run from"
    ):
        client.tables[NUC]().live_query(first - dt.timedelta(days=1))
    with pytest.raises(VersionError, match="is in the future"):
        client.tables[NUC]().live_query(dt.datetime.now(UTC) + dt.timedelta(days=3))
    with pytest.raises(VersionError, match="not an ISO-8601 timestamp"):
        client.tables[NUC]().live_query("yesterday")


# ----------------------------------------------------------------------------- invalid root ids
def _expired_and_future_roots(client, path):
    h = _history(path)
    times = _edit_times(path)
    ts = times[len(times) // 2]
    expired = int(h[h["valid_to"].notna() & (h["valid_to"] <= ts)]["root_id"].iloc[0])
    future = int(h[h["valid_from"] > ts]["root_id"].iloc[0])
    return ts.to_pydatetime(), expired, future


def test_invalid_root_ids_are_named(client, path):
    ts, expired, future = _expired_and_future_roots(client, path)
    with pytest.raises(VersionError) as e:
        client.tables[SYN](post_pt_root_id=[expired, future]).live_query(ts)
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert f"expired: [{expired}]" in msg and f"too recent: [{future}]" in msg
    assert "client.get_latest_roots" in msg and "allow_invalid_root_ids=True" in msg


def test_allow_invalid_root_ids_drops_them_and_keeps_other_filters(client, path):
    ts, expired, future = _expired_and_future_roots(client, path)
    snap = _oracle.snapshot(path, SYN, pd.Timestamp(ts))
    good = int(snap["post_pt_root_id"][snap["post_pt_root_id"] != 0].value_counts().index[0])
    size = float(snap["size"].median())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = client.tables[SYN](post_pt_root_id=[expired, good, future], size={">": size}).live_query(
            ts, allow_invalid_root_ids=True
        )
    assert any("dropped invalid root ids" in str(x.message) and str(expired) in str(x.message) for x in w)
    want = snap[(snap["post_pt_root_id"] == good) & (snap["size"] > size)]
    assert list(got["id"]) == list(want["id"]) and len(want) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        none = client.tables[SYN](post_pt_root_id=[expired]).live_query(ts, allow_invalid_root_ids=True)
    assert len(none) == 0, "dropping every id must give no rows, never an unfiltered table"


def test_build_notes_travel_on_the_query(client, path):
    """The ids a live query drops are the Query's notes; build_query warns them unless warn=False
    (tablekit serve reports them itself, without catching warnings)."""
    from tablekit.query import QueryOptions

    ts, expired, _future = _expired_and_future_roots(client, path)
    f = client.tables[SYN](post_pt_root_id=[expired])
    opts = QueryOptions(timestamp=ts, allow_invalid_root_ids=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        quiet = client.build_query(f, options=opts, warn=False)
    assert w == []
    (note,) = quiet.notes
    assert "dropped invalid root ids from the post_pt_root_id filter" in note and str(expired) in note
    with pytest.warns(UserWarning) as w:
        loud = client.build_query(f, options=opts)
    assert [str(x.message) for x in w] == [note] and w[0].filename == __file__
    assert loud == quiet and loud.notes == quiet.notes
    assert client.build_query(client.tables[SYN](), options=opts).notes == ()


# ----------------------------------------------------------------------------- roots API
def test_roots_api_against_the_history(client, path):
    h = _history(path)
    times = _edit_times(path)
    ts = times[len(times) // 2]
    roots = list(h["root_id"].drop_duplicates().sample(60, random_state=3))
    created = h.groupby("root_id")["valid_from"].min()
    retired = h.groupby("root_id")["valid_to"].agg(lambda s: None if s.isna().any() else s.max())
    want = [bool(created[r] <= ts and (pd.isna(retired[r]) or retired[r] > ts)) for r in roots]
    assert client.is_latest_roots(roots, timestamp=ts.to_pydatetime()).tolist() == want
    assert [pd.Timestamp(t) for t in client.get_root_timestamps(roots[:5])] == [created[r] for r in roots[:5]]

    # an expired root: its successors now are the current roots of its supervoxels
    old = int(h[h["valid_to"].notna()]["root_id"].iloc[0])
    svs = set(h.loc[h["root_id"] == old, "supervoxel_id"])
    now = h[h["valid_to"].isna() & h["supervoxel_id"].isin(svs)]
    assert sorted(client.get_latest_roots(old).tolist()) == sorted(set(now["root_id"]))
    best = Counter(now["root_id"]).most_common(1)[0][0]
    assert client.suggest_latest_roots(old) == best

    # past ids of a current root: the roots its supervoxels had at the first version
    cur = int(now["root_id"].iloc[0])
    first = min(m["time_stamp"] for m in client.get_versions_metadata(expired=True))
    cur_svs = set(h.loc[h["root_id"] == cur, "supervoxel_id"])
    then = h[
        (h["valid_from"] <= first)
        & (h["valid_to"].isna() | (h["valid_to"] > first))
        & h["supervoxel_id"].isin(cur_svs)
    ]
    mapping = client.get_past_ids([cur], timestamp_past=first)
    assert mapping["past_id_map"][cur] == sorted(set(then["root_id"]))
    for past in set(then["root_id"]):  # → the one root holding all its supervoxels now, if one does
        now_of_past = set(
            h[h["valid_to"].isna() & h["supervoxel_id"].isin(h.loc[h["root_id"] == past, "supervoxel_id"])][
                "root_id"
            ]
        )
        assert mapping["future_id_map"].get(past) == (sorted(now_of_past) if len(now_of_past) == 1 else None)

    g = client.get_lineage_graph(old)
    ids = {n["id"] for n in g["nodes"]}
    assert old in ids and set(now["root_id"]) <= ids
    assert all(link["source"] in ids and link["target"] in ids for link in g["links"])


# ----------------------------------------------------------------------------- versions
def test_version_moves_timestamp_and_expired_listing(path):
    c = tablekit.connect(path=path)
    meta = _versions(path)
    valid = sorted(v["version"] for v in meta if v["valid"])
    expired = sorted(v["version"] for v in meta if not v["valid"])
    c.version = valid[0]
    assert c.timestamp == pd.Timestamp(
        next(v["time_stamp"] for v in meta if v["version"] == valid[0]), tz="UTC"
    )
    assert c.get_versions(expired=True) == sorted(valid + expired)
    with pytest.raises(VersionError, match=f"version {expired[0]} has expired"):
        c.version = expired[0]


def test_expired_version_opt_in_answers_live_and_records_it(path):
    meta = _versions(path)
    expired = next(v for v in meta if not v["valid"])
    ts = pd.Timestamp(expired["time_stamp"], tz="UTC")
    strict = tablekit.connect(path=path)
    with pytest.raises(VersionError, match=r"\.query\(timestamp="):
        strict.tables[NUC]().query(materialization_version=expired["version"])
    c = tablekit.connect(path=path, expired_versions="live")
    df = c.tables[NUC]().query(materialization_version=expired["version"])
    assert df.attrs["substitution"].startswith(f"version {expired['version']} has expired")
    assert df.attrs["live_query"] is True and df.attrs["materialization_version"] is None
    _same_as_oracle(df, _oracle.snapshot(path, NUC, ts))


def test_provenance_of_live_results(client):
    ts = client.get_timestamp(client.version) + dt.timedelta(hours=1)
    df = client.tables[NUC]().live_query(ts, limit=2)
    assert df.attrs["live_query"] is True and df.attrs["materialization_version"] is None
    assert df.attrs["timestamp"] == ts.isoformat() and df.attrs["substitution"] is None
    json.dumps(df.attrs)
    assert np.all(df["id"].diff().dropna() > 0)
