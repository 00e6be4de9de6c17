"""Random questions over both backends (issue 14): the local engine in-process and the CAVE HTTP
backend against ``tablekit serve`` on 127.0.0.1 (a 500-row limit, so larger answers are paged). Each
draws filters (ranges, membership, exclusion, boxes), query options (offset, limit,
select_columns, split_positions) and a moment (the latest version, an older one, or a live
timestamp anywhere in the history) and is compared with the pandas replay of the raw Parquet
history (tests/_oracle.py). Derandomized and bounded (10 examples per backend, ~30 s in all).
"""

from __future__ import annotations

import json
import pathlib

import _oracle
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_shared_suite import http, tk  # noqa: F401 (the two paths, a 500-row limit)

NUC = "nucleus_detection_v0"


@pytest.fixture(scope="module")
def moments(path) -> dict:
    versions = json.loads((pathlib.Path(path) / "versions.json").read_text())
    valid = sorted(v["version"] for v in versions if v["valid"])
    first = min(pd.Timestamp(v["time_stamp"], tz="UTC") for v in versions if v["valid"])
    hist = pd.read_parquet(pathlib.Path(path) / "segmentation" / "history")
    last = hist["valid_to"].dropna().max() + pd.Timedelta(days=1)
    return {"valid": valid, "first": first, "last": last}


@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_question_equals_the_replay(tk, client, path, moments, data):  # noqa: F811
    draw = data.draw
    when = draw(st.sampled_from(["latest", "version", "live"]))
    options: dict = {"split_positions": True, "metadata": False}
    if when == "latest":
        ts = _oracle.version_timestamp(path, client.version)
    elif when == "version":
        version = draw(st.sampled_from(moments["valid"]))
        options["materialization_version"] = version
        ts = _oracle.version_timestamp(path, version)
    else:
        frac = draw(st.floats(0, 1))
        ts = (moments["first"] + (moments["last"] - moments["first"]) * frac).floor("us")
        options["timestamp"] = ts.to_pydatetime()
    snap = _oracle.snapshot(path, NUC, ts)
    filters: dict = {}
    oracle: list[tuple] = []
    if draw(st.booleans()):
        lo, hi = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
        a, b = (float(snap["volume"].quantile(x, interpolation="nearest")) for x in (lo, hi))
        op_lo, op_hi = draw(st.sampled_from([">", ">="])), draw(st.sampled_from(["<", "<="]))
        filters["volume"] = {op_lo: a, op_hi: b}
        oracle += [("volume", op_lo, a), ("volume", op_hi, b)]
    roots = sorted(int(r) for r in snap["pt_root_id"].unique() if r != 0)
    kind = draw(st.sampled_from(["none", "in", "not in", "!="]))
    if kind == "in":
        picked = draw(st.lists(st.sampled_from(roots), min_size=1, max_size=5, unique=True))
        filters["pt_root_id"], oracle = picked, [*oracle, ("pt_root_id", "in", picked)]
    elif kind == "not in":
        picked = draw(st.lists(st.sampled_from(roots), min_size=1, max_size=5, unique=True))
        filters["pt_root_id"] = {"not in": picked}
        oracle.append(("pt_root_id", "not in", picked))
    elif kind == "!=":
        filters["pt_root_id"] = {"!=": 0}
        oracle.append(("pt_root_id", "!=", 0))
    if draw(st.booleans()):
        q = [draw(st.floats(0, 0.45)), draw(st.floats(0.55, 1))]  # a box with some extent
        box = [[int(snap[f"pt_position_{a}"].quantile(x, interpolation="nearest")) for a in "xyz"] for x in q]
        filters["pt_position_bbox"] = box
        oracle.append(("pt_position", "bbox", box))
    offset = draw(st.sampled_from([0, 0, 3, 40]))
    limit = draw(st.sampled_from([None, None, 1, 25, 400]))
    if offset:
        options["offset"] = offset
    if limit is not None:
        options["limit"] = limit
    select = draw(st.sampled_from([None, ["id", "volume", "pt_root_id"], ["pt_position", "id"]]))
    if select is not None:
        options["select_columns"] = select

    event(f"{when}, {len(oracle)} filter terms")
    got = tk.tables[NUC](**filters).query(**options)

    keep = pd.Series(True, index=snap.index)
    for f in oracle:
        keep &= _oracle.apply(snap, *f)
    want = snap[keep].iloc[offset : None if limit is None else offset + limit]
    event(f"rows: {'none' if not len(want) else 'some'}")
    assert got["id"].tolist() == want["id"].tolist()
    for c in got.columns:
        assert c in want.columns, c
        g, w = got[c].to_numpy(), want[c].to_numpy()
        assert [None if pd.isna(x) else x for x in g] == [None if pd.isna(x) else x for x in w], c
    if select is not None:
        assert {c.rsplit("_", 1)[0] if c.startswith("pt_position_") else c for c in got.columns} == set(
            select
        )
    assert np.all(np.diff(got["id"].to_numpy()) > 0)
