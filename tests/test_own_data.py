"""Bring your own data: build_datastack from CAVE-layout frames, then query it; name hazards."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pandas as pd
import pytest

import tablekit
from tablekit import TableSource, build_datastack

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 1, 1, tzinfo=UTC)


def _points(n, seed):
    rng = np.random.default_rng(seed)
    return [np.array(p) for p in rng.integers(1000, 9000, size=(n, 3))]


def _tag_frame(n, seed, start_id=1):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(start_id, start_id + n),
            "created": [T0] * n,
            "valid": True,
            "tag": rng.choice(["a", "b", "c"], n),
            "pt_position": _points(n, seed),
            "pt_supervoxel_id": 2**56 + np.arange(n) + seed * 10_000,
            "pt_root_id": 864691135000000000 + (np.arange(n) % 7) + seed * 100,
        }
    )


@pytest.fixture(scope="module")
def hazard(tmp_path_factory):
    """Tables whose names are a keyword, a namespace method and private; a notice on one."""
    p = tmp_path_factory.mktemp("own") / "ds"
    build_datastack(
        p,
        [
            TableSource("class", "bound_tag", _tag_frame(30, 1), description="a keyword as a table name"),
            TableSource("find", "bound_tag", _tag_frame(20, 2), notice_text="this table is deprecated"),
            TableSource("_private", "bound_tag", _tag_frame(10, 3)),
            TableSource("ordinary", "bound_tag", _tag_frame(40, 4), voxel_resolution=(8, 8, 40)),
        ],
        name="hazard",
        timestamp=T0 + dt.timedelta(days=1),
    )
    return str(p), tablekit.connect(path=str(p))


def test_round_trip_equals_the_input(hazard):
    _, c = hazard
    want = _tag_frame(40, 4)
    got = c.tables.ordinary().query()
    assert got["id"].tolist() == want["id"].tolist()
    assert got["tag"].tolist() == want["tag"].tolist()
    assert got["pt_root_id"].tolist() == want["pt_root_id"].tolist()
    assert [p.tolist() for p in got["pt_position"]] == [p.tolist() for p in want["pt_position"]]
    nm = c.tables.ordinary().query(split_positions=True, desired_resolution=[1, 1, 1])
    assert nm["pt_position_x"].tolist() == [p[0] * 8 for p in want["pt_position"]]


def test_hazardous_table_names_stay_reachable(hazard):
    _, c = hazard
    t = c.tables
    assert {"class", "find", "_private", "ordinary"} <= set(t)
    assert callable(t.find) and t.find("ORD") == ["ordinary"]  # the method wins as an attribute
    assert "ordinary" in dir(t) and not {"class", "_private"} & set(dir(t))
    assert "class" in t._ipython_key_completions_()
    assert len(t["class"]().query()) == 30
    assert len(t["_private"](tag="a").query()) == (_tag_frame(10, 3)["tag"] == "a").sum()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        df = t["find"]().query()
    assert len(df) == 20 and any("this table is deprecated" in str(x.message) for x in w)
    assert all(x.filename == __file__ for x in w), "warnings point at the user's line, not tablekit's"
    assert c.query_table("class", filter_equal_dict={"tag": "b"})["tag"].eq("b").all()


def test_metadata_of_own_datastack(hazard):
    _, c = hazard
    assert c.get_versions() == [1]
    assert c.get_annotation_count("class") == 30
    assert c.get_table_metadata("ordinary")["voxel_resolution"] == [8.0, 8.0, 40.0]


def test_pending_supervoxel_lookups_in_live_queries(tmp_path):
    """Annotations whose supervoxel lookup is pending have no root id: live queries refuse them
    unless allow_missing_lookups=True, which leaves them out with a warning."""
    from tablekit.errors import QueryError

    df = _tag_frame(6, 9)
    df["pt_supervoxel_id"] = pd.array(
        [*df["pt_supervoxel_id"][:2], None, df["pt_supervoxel_id"][3], None, df["pt_supervoxel_id"][5]],
        dtype="Int64",
    )
    df["pt_root_id"] = pd.array(
        [*df["pt_root_id"][:2], None, df["pt_root_id"][3], None, df["pt_root_id"][5]], dtype="Int64"
    )
    p = build_datastack(
        tmp_path / "p", [TableSource("tags", "bound_tag", df)], name="p", timestamp=T0 + dt.timedelta(days=1)
    )
    c = tablekit.connect(path=str(p))
    later = T0 + dt.timedelta(days=2)
    with pytest.raises(
        QueryError,
        match=r"tags: 2 annotation\(s\) matching this live query still wait for their supervoxel lookup \(null pt_supervoxel_id; e.g. ids \[3, 5\]\).*allow_missing_lookups=True",
    ):
        c.tables.tags().live_query(later, select_columns=["id", "tag"])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = c.tables.tags().live_query(later, allow_missing_lookups=True, select_columns=["id", "tag"])
    assert got["id"].tolist() == [1, 2, 4, 6] and list(got.columns) == ["id", "tag"]
    assert any("left out" in str(x.message) for x in w)
    assert len(c.live_query("tags", later, allow_missing_lookups=True)) == 4
    # materialized queries show them, with null root ids (they are part of the snapshot)
    snap = c.tables.tags().query()
    assert len(snap) == 6 and snap["pt_root_id"].isna().sum() == 2


def test_refresh_rebuilds_classes_and_sees_new_metadata(tmp_path):
    p = build_datastack(
        tmp_path / "r",
        [TableSource("tags", "bound_tag", _tag_frame(5, 1), description="old")],
        name="r",
        timestamp=T0 + dt.timedelta(days=1),
    )
    c = tablekit.connect(path=str(p))
    before = c.tables.tags
    assert "old" in before.__doc__
    meta = p / "tables" / "tags" / "metadata.json"
    meta.write_text(meta.read_text().replace('"old"', '"new description"'))
    c.refresh()
    after = c.tables.tags
    assert after is not before and "new description" in after.__doc__
    assert len(after().query()) == 5
