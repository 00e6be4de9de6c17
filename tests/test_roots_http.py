"""The roots API over HTTP (chunkedgraph endpoints of `tablekit serve`) agrees with the local history."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from _server import running_server

import tablekit
from tablekit.errors import UnsupportedError


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
        with pytest.raises(UnsupportedError, match="suggest_latest_roots"):
            remote.suggest_latest_roots(old)
