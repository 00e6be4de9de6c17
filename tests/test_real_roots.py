"""The roots API over the real deployment (issue 13 §2): tablekit connected to the real server's
address (tests/_real_server.py; its chunkedgraph, like a deployment's, is the ``/segmentation``
service at the same address, here ``tablekit serve`` behind the harness proxy) answers every root-id
question as the local engine does on the same datastack, at the present, at moments between an
edit's parent and child (issue 13 §3 item 7: lineage edges past ``timestamp_future`` are not
followed) and before the first version.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

import tablekit
from tablekit.errors import FilterValueError, VersionError

pytest.importorskip("_real_server", reason="the real-server harness (tests/_real_server.py) is absent")

pytestmark = pytest.mark.realserver


@pytest.fixture(scope="module")
def real(real_server, tmp_path_factory) -> tablekit.Client:
    return tablekit.connect(
        real_server.datastack, server=real_server.url, cache_dir=tmp_path_factory.mktemp("rr"), progress=False
    )


@pytest.fixture(scope="module")
def hist(path) -> pd.DataFrame:
    return pd.read_parquet(f"{path}/segmentation/history")


@pytest.fixture(scope="module")
def moments(client, hist) -> dict:
    """Roots that were edited (parent, child, edit time), roots still current, and times."""
    edges = sorted(client.segmentation_history().edges(), key=lambda e: e[2])
    picks = [edges[i] for i in range(0, len(edges), max(1, len(edges) // 6))][:6]
    current = [int(x) for x in hist.loc[hist["valid_to"].isna(), "root_id"].drop_duplicates()[:6]]
    first = min(m["time_stamp"] for m in client.get_versions_metadata(expired=True))
    return {"edges": picks, "current": current, "first": first, "now": dt.datetime.now(dt.timezone.utc)}


def test_the_roots_api_reaches_the_deployments_chunkedgraph(real, real_server):
    assert real.backend.history.url.startswith(real_server.url + "/segmentation")


def test_latest_roots_and_lineage_at_every_moment(real, client, moments):
    """get_latest_roots, suggest_latest_roots, get_lineage_graph and is_latest_roots of edited
    roots at the present and half-way between the parent's creation and its edit (item 7: a
    successor made after ``timestamp_future`` is not an answer)."""
    n = 0
    for parent, child, when in moments["edges"]:
        born = client.get_root_timestamps([parent])[0]
        for t in (born + (when - born) / 2, when - dt.timedelta(seconds=1), moments["now"]):
            got = sorted(int(x) for x in real.get_latest_roots(parent, timestamp=t))
            assert got == sorted(int(x) for x in client.get_latest_roots(parent, timestamp=t)), (parent, t)
            if t < when:
                assert got == [parent] and child not in got
            assert real.suggest_latest_roots(parent, timestamp=t) == client.suggest_latest_roots(
                parent, timestamp=t
            )
            ids = [parent, child, *moments["current"][:2]]
            if client.get_root_timestamps([child])[0] <= t:
                assert (
                    real.is_latest_roots(ids, timestamp=t).tolist()
                    == client.is_latest_roots(ids, timestamp=t).tolist()
                )
            for lo, hi in ((None, t), (moments["first"], t), (None, None)):
                g_real = real.get_lineage_graph(parent, timestamp_past=lo, timestamp_future=hi)
                g_local = client.get_lineage_graph(parent, timestamp_past=lo, timestamp_future=hi)
                assert {x["id"] for x in g_real["nodes"]} == {x["id"] for x in g_local["nodes"]}, (
                    parent,
                    lo,
                    hi,
                )
                assert {(e["source"], e["target"]) for e in g_real["links"]} == {
                    (e["source"], e["target"]) for e in g_local["links"]
                }
            n += 1
    assert n >= 15


def test_timestamps_past_ids_and_current_roots(real, client, moments):
    roots = moments["current"] + [p for p, _c, _w in moments["edges"]]
    assert real.get_root_timestamps(roots) == client.get_root_timestamps(roots)
    now = moments["now"]
    assert (
        real.is_latest_roots(roots, timestamp=now).tolist()
        == client.is_latest_roots(roots, timestamp=now).tolist()
    )
    for r in moments["current"]:
        assert list(real.get_latest_roots(r)) == list(client.get_latest_roots(r)) == [r]
    cur = moments["current"] + [c for _p, c, _w in moments["edges"]]
    for past in (moments["first"], None):
        got = real.get_past_ids(cur, timestamp_past=past)
        want = client.get_past_ids(cur, timestamp_past=past)
        assert {int(k): sorted(map(int, v)) for k, v in got["past_id_map"].items()} == {
            int(k): sorted(map(int, v)) for k, v in want["past_id_map"].items()
        }


def test_errors_are_the_local_engines(real, client, moments):
    """An unknown root id, and a latest-roots question before the root existed: the same tablekit
    error type on both paths."""
    _parent, child, _when = moments["edges"][0]
    before = client.get_root_timestamps([child])[0] - dt.timedelta(seconds=5)
    for c in (real, client):
        with pytest.raises(VersionError, match=f"root id {child} was created at"):
            c.get_latest_roots(child, timestamp=before)
        with pytest.raises(FilterValueError, match="12345"):
            c.get_root_timestamps([12345])


def test_future_id_map_is_the_local_engines(real, client, moments):
    """A past id → the one root holding all its supervoxels at timestamp_future, on both paths
    (once a new finding: locally it meant the given ids a past id became)."""
    cur = moments["current"] + [c for _p, c, _w in moments["edges"]]
    got = real.get_past_ids(cur)["future_id_map"]
    want = client.get_past_ids(cur)["future_id_map"]
    assert {int(k): sorted(map(int, v)) for k, v in got.items()} == {
        int(k): sorted(map(int, v)) for k, v in want.items()
    }
