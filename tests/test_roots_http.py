"""The roots API over HTTP (chunkedgraph endpoints of `tablekit serve`) agrees with the local history."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from _server import running_server

import tablekit
from tablekit.errors import FilterValueError, ServerError, UnsupportedError


@pytest.fixture(scope="module")
def hist(path) -> pd.DataFrame:
    return pd.read_parquet(f"{path}/segmentation/history")


@pytest.fixture(scope="module")
def remote(path, client, tmp_path_factory) -> Iterator[tuple[tablekit.Client, str]]:
    """A client over HTTP and the chunkedgraph base URL of the server it talks to."""
    with running_server(path) as url:
        tk = tablekit.connect(client.datastack, server=url, cache_dir=str(tmp_path_factory.mktemp("c")))
        yield tk, tk.backend.history.url


# ----------------------------------------------------------------------------- oracles (pandas)
def leaves_oracle(h: pd.DataFrame, root: int) -> list[int]:
    return sorted({int(x) for x in h.loc[h["root_id"] == root, "supervoxel_id"]})


def overlap_oracle(h: pd.DataFrame, root: int, ts: dt.datetime) -> Counter:
    """How many of ``root``'s supervoxels each root id holds at ``ts`` (from the history rows)."""
    t = pd.Timestamp(ts)
    at = h[(h["valid_from"] <= t) & (h["valid_to"].isna() | (h["valid_to"] > t))]
    at = at[at["supervoxel_id"].isin(leaves_oracle(h, root))]
    return Counter(int(r) for r in at["root_id"])


def best(counts: Counter) -> int:
    """The most supervoxels; on a tie the smallest id (tablekit's rule)."""
    return min(counts, key=lambda r: (-counts[r], r))


@pytest.fixture(scope="module")
def cases(hist) -> dict[str, Any]:
    """Roots of the demo history by what happened to them since (the successors now)."""
    now = dt.datetime.now(dt.timezone.utc)
    by_kind: dict[str, list[int]] = {"several": [], "tie": [], "one": []}
    for r in hist.loc[hist["valid_to"].notna(), "root_id"].drop_duplicates():
        c = overlap_oracle(hist, int(r), now)
        top = c.most_common()
        if len(top) == 1:
            by_kind["one"].append(int(r))
        elif top[0][1] == top[1][1]:
            by_kind["tie"].append(int(r))
        else:
            by_kind["several"].append(int(r))
        if all(len(v) >= 3 for v in by_kind.values()):
            break
    assert all(len(v) >= 3 for v in by_kind.values()), {k: len(v) for k, v in by_kind.items()}
    by_kind["current"] = [int(x) for x in hist.loc[hist["valid_to"].isna(), "root_id"].drop_duplicates()[:3]]
    return {**by_kind, "now": now}


# ----------------------------------------------------------------------------- the roots API
def test_roots_api_over_http_matches_local(client, path, tmp_path):
    h = pd.read_parquet(f"{path}/segmentation/history")
    old = int(h[h["valid_to"].notna()]["root_id"].iloc[0])
    cur = int(h[h["valid_to"].isna()]["root_id"].iloc[0])
    first = min(m["time_stamp"] for m in client.get_versions_metadata(expired=True))
    now = dt.datetime.now(dt.timezone.utc)
    with running_server(path) as url:
        remote = tablekit.connect("demo", server=url, cache_dir=str(tmp_path / "c"))
        assert remote.is_latest_roots([old, cur]).tolist() == client.is_latest_roots([old, cur]).tolist()
        assert remote.get_root_timestamps([cur]) == client.get_root_timestamps([cur])
        assert sorted(remote.get_latest_roots(old, timestamp=now)) == sorted(
            client.get_latest_roots(old, timestamp=now)
        )
        want = client.get_past_ids([cur], timestamp_past=first)["past_id_map"][cur]
        assert remote.get_past_ids([cur], timestamp_past=first)["past_id_map"][cur] == want
        g_remote, g_local = remote.get_lineage_graph(old), client.get_lineage_graph(old)
        assert {n["id"] for n in g_remote["nodes"]} == {n["id"] for n in g_local["nodes"]}
        assert {(e["source"], e["target"]) for e in g_remote["links"]} == {
            (e["source"], e["target"]) for e in g_local["links"]
        }
        assert remote.suggest_latest_roots(old) == client.suggest_latest_roots(old)


def roots_at_oracle(h: pd.DataFrame, svs: Any, ts: dt.datetime) -> set[int]:
    t = pd.Timestamp(ts)
    at = h[
        (h["valid_from"] <= t) & (h["valid_to"].isna() | (h["valid_to"] > t)) & h["supervoxel_id"].isin(svs)
    ]
    return {int(r) for r in at["root_id"]}


def id_maps_oracle(h: pd.DataFrame, ids: list[int], past: dt.datetime, future: dt.datetime):
    """The chunkedgraph's past_id_mapping from the history rows: each id → the roots of its
    supervoxels at ``past``; each of those → the one root holding all of its supervoxels at
    ``future`` (absent when they are split between several)."""
    past_map = {r: sorted(roots_at_oracle(h, leaves_oracle(h, r), past)) or [r] for r in ids}
    future_map = {}
    for p in {p for v in past_map.values() for p in v}:
        fut = roots_at_oracle(h, leaves_oracle(h, p), future)
        if len(fut) == 1:
            future_map[p] = sorted(fut)
    return past_map, future_map


def test_past_ids_over_http_and_locally_are_the_chunkedgraphs(remote, client, hist, cases):
    """get_past_ids' two maps mean the same over HTTP and locally, and what the history says
    (before: the local future_id_map mapped a past id to the given ids it became, split or not)."""
    tk, _ = remote
    first = min(m["time_stamp"] for m in client.get_versions_metadata(expired=True))
    ids = cases["current"] + cases["several"][:2] + cases["one"][:2]
    edits = sorted(hist.loc[hist["valid_to"].notna(), "valid_to"].unique())
    futures = [pd.Timestamp(edits[len(edits) // 2]).to_pydatetime(), cases["now"]]
    split_seen = False
    for future in futures:
        want_past, want_future = id_maps_oracle(hist, ids, first, future)
        split_seen |= len(want_future) < len({p for v in want_past.values() for p in v})
        for c in (tk, client):
            got = c.get_past_ids(ids, timestamp_past=first, timestamp_future=future)
            assert {int(k): sorted(v) for k, v in got["past_id_map"].items()} == want_past
            assert {int(k): sorted(v) for k, v in got["future_id_map"].items()} == want_future
    assert split_seen, "no past id was split at either moment: the test shows nothing"


def test_suggest_latest_roots_over_http_matches_local_and_the_history(remote, client, hist, cases):
    tk, _ = remote
    now = cases["now"]
    for kind in ("several", "tie", "one", "current"):
        for r in cases[kind]:
            want = best(overlap_oracle(hist, r, now))
            assert client.suggest_latest_roots(r, timestamp=now) == want, (kind, r)
            assert tk.suggest_latest_roots(r, timestamp=now) == want, (kind, r)
    for r in cases["current"]:  # a root still valid is its own best successor
        assert tk.suggest_latest_roots(r) == r
    for r in cases["one"]:
        (only,) = overlap_oracle(hist, r, now)
        assert only != r and tk.suggest_latest_roots(r) == only
    # several successors: the winner holds strictly more supervoxels than any other
    for r in cases["several"]:
        c = overlap_oracle(hist, r, now)
        got = tk.suggest_latest_roots(r)
        assert len(c) > 1 and all(c[got] > n for k, n in c.items() if k != got)


def test_suggest_latest_roots_at_past_moments(remote, client, hist, cases):
    tk, _ = remote
    r = cases["several"][0]
    created = hist.loc[hist["root_id"] == r, "valid_from"].min()
    edits = sorted(t for t in hist["valid_from"].unique() if t > created)
    seen = set()
    for t in [created, *edits[:: max(1, len(edits) // 8)]]:
        ts = pd.Timestamp(t).to_pydatetime()
        want = best(overlap_oracle(hist, r, ts))
        seen.add(want)
        assert (
            tk.suggest_latest_roots(r, timestamp=ts) == client.suggest_latest_roots(r, timestamp=ts) == want
        )
    assert r in seen and len(seen) > 1  # the answer changes with the timestamp
    before = hist["valid_from"].min() - pd.Timedelta(days=1)  # no supervoxel had a root yet
    for c in (tk, client):
        with pytest.raises(FilterValueError, match="no successor"):
            c.suggest_latest_roots(r, timestamp=before.to_pydatetime())


def test_unknown_root_is_an_error_over_http_too(remote, client, hist):
    tk, _ = remote
    unknown = int(hist["root_id"].max()) + 1
    with pytest.raises(FilterValueError, match="not in the segmentation history"):
        client.suggest_latest_roots(unknown)
    known = int(hist["root_id"].min())
    calls = {  # the same error class as the local engine's, with the server's own words
        "suggest_latest_roots": (
            lambda c: c.suggest_latest_roots(unknown),
            f"node id {unknown} is not a root id",
        ),
        "get_latest_roots": (lambda c: c.get_latest_roots(unknown), "are not in the segmentation history"),
        "get_root_timestamps": (lambda c: c.get_root_timestamps([known, unknown]), f"{unknown}"),
    }
    for name, (call, server_words) in calls.items():
        with pytest.raises(FilterValueError, match=f"{unknown}.* not in the segmentation history"):
            call(client)
        with pytest.raises(
            FilterValueError, match=f"root id {unknown} is not in the segmentation history"
        ) as e:
            call(tk)
        assert server_words in str(e.value), name
        assert isinstance(e.value.__cause__, ServerError) and e.value.__cause__.status == 500


def test_is_latest_roots_over_http_answers_unknown_ids_like_the_local_engine(remote, client, hist):
    """An id the chunkedgraph does not know (and 0) is not current, as in PyChunkedGraph; the
    answer keeps the order and repeats of the ids asked."""
    tk, _ = remote
    unknown = int(hist["root_id"].max()) + 1
    retired = hist[hist["valid_to"].notna()].iloc[0]
    current = int(hist.loc[hist["valid_to"].isna(), "root_id"].iloc[0])
    ids = [unknown, int(retired["root_id"]), 0, current, unknown, int(retired["root_id"])]
    before_retired = (retired["valid_to"] - pd.Timedelta(seconds=1)).to_pydatetime()

    def oracle(r: int, ts: dt.datetime) -> bool:
        rows = hist[hist["root_id"] == r]
        t = pd.Timestamp(ts)
        return bool(((rows["valid_from"] <= t) & (rows["valid_to"].isna() | (rows["valid_to"] > t))).any())

    for ts in (dt.datetime.now(dt.timezone.utc), before_retired):
        want = [oracle(r, ts) for r in ids]
        assert want[1] == (ts == before_retired) and want[0] is False and want[2] is False
        assert tk.is_latest_roots(ids, timestamp=ts).tolist() == want
        assert client.is_latest_roots(ids, timestamp=ts).tolist() == want


def test_supervoxels_over_http_equal_the_local_history(remote, client, hist, cases):
    tk, _ = remote
    h_remote, h_local = tk.backend.history, client.backend.history
    roots = cases["several"][:2] + cases["current"][:2]
    for r in roots:
        got = h_remote.supervoxels_of(r)
        assert got.dtype == np.int64
        assert got.tolist() == h_local.supervoxels_of(r).tolist() == leaves_oracle(hist, r)
    assert h_remote.supervoxels_of(0).tolist() == []
    for ts in (cases["now"], pd.Timestamp(hist["valid_from"].min()).to_pydatetime()):
        assert sorted(h_remote.supervoxels_at(roots, ts).tolist()) == sorted(
            h_local.supervoxels_at(roots, ts).tolist()
        )
    with pytest.raises(UnsupportedError, match="lineage of every root"):
        h_remote.edges()


# ----------------------------------------------------------------------------- the endpoint itself
def test_leaves_endpoint_answers_the_supervoxels(remote, hist, cases):
    _, pcg = remote
    for r in cases["several"][:2] + cases["one"][:1] + cases["current"][:1]:
        want = leaves_oracle(hist, r)
        for q in ({}, {"stop_layer": "1"}, {"timestamp": "0"}):  # no timestamp: a root's leaves never change
            resp = requests.get(f"{pcg}/node/{r}/leaves", params=q, timeout=30)
            assert resp.status_code == 200
            assert resp.json() == {"leaf_ids": want}
        resp = requests.get(f"{pcg}/node/{r}/leaves", params={"int64_as_str": "true"}, timeout=30)
        assert resp.json() == {"leaf_ids": [str(x) for x in want]}


@pytest.mark.parametrize(
    ("node", "params", "message"),
    [
        ("abc", {}, "node id 'abc' is not a uint64 id"),
        ("-5", {}, "node id '-5' is not a uint64 id"),
        ("1_000", {}, "node id '1_000' is not a uint64 id"),
        (str(2**64), {}, "is not a uint64 id"),
        ("12345", {}, "node id 12345 is not a root id in the segmentation history of demo"),
        ("0", {}, "node id 0 is not a root id"),
        ("ROOT", {"stop_layer": "2"}, "stop_layer=2 is not supported"),
        ("ROOT", {"stop_layer": "0"}, "stop_layer=0 is not supported"),
        ("ROOT", {"stop_layer": "x"}, "stop_layer: 'x' is not a valid integer"),
        ("ROOT", {"bounds": "0-100_0-100_0-10"}, "bounds is not supported"),
        ("ROOT", {"int64_as_str": "maybe"}, "int64_as_str: 'maybe' is not a valid boolean"),
    ],
)
def test_leaves_endpoint_errors(remote, cases, node, params, message):
    _, pcg = remote
    node = str(cases["current"][0]) if node == "ROOT" else node
    resp = requests.get(f"{pcg}/node/{node}/leaves", params=params, timeout=30)
    assert resp.status_code == 500
    body = resp.json()
    assert body["code"] == 500 and message in body["message"] and isinstance(body["traceback"], list)


def test_leaves_and_info_of_another_table_are_refused(remote, cases):
    _, pcg = remote
    base, table = pcg.split("/segmentation/api/v1/table/")
    resp = requests.get(
        f"{base}/segmentation/api/v1/table/nope/node/{cases['current'][0]}/leaves", timeout=30
    )
    assert resp.status_code == 500 and "chunkedgraph table 'nope' not found" in resp.json()["message"]
    info = requests.get(f"{base}/segmentation/table/{table}/info", timeout=30)
    assert info.status_code == 200 and info.json()["graph"]["n_layers"] == 2
    assert requests.get(f"{base}/segmentation/table/nope/info", timeout=30).status_code == 500


def test_only_errors_about_the_ids_become_filter_errors():
    """A chunkedgraph failure that is not about the ids asked (a 500 that names none of them, a
    lost connection) stays what it is; a 4xx, or a message naming an id, is about the ids."""
    from tablekit.backends.cave.history import _unknown_ids

    down = ServerError("boom", status=500, server_message="database unavailable")
    assert _unknown_ids(down, [5, 6], "http://x") is down
    lost = ServerError("boom", status=None)
    assert _unknown_ids(lost, [5], "http://x") is lost
    named = _unknown_ids(ServerError("e", status=500, server_message="node 6 missing"), [5, 6], "http://x")
    assert isinstance(named, FilterValueError) and str(named).startswith("root id 6 is not")
    refused = _unknown_ids(ServerError("e", status=400, server_message="bad ids"), [5, 6], "http://x")
    assert isinstance(refused, FilterValueError) and "root ids [5, 6] are not" in str(refused)
