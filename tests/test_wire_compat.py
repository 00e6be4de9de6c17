"""Wire compatibility: tablekit's HTTP backend and CAVEclient 8.2.1 ask the same questions of the
same recording server (``tablekit serve`` behind :class:`test_cave_backend.Recorder` on
127.0.0.1); the query requests must be the same: URL, query string (as a set of pairs) and JSON
body. CAVEclient runs in its own venv (tests/_interop_env.py) in a subprocess; it marks each case
with ``GET /__case__/<name>`` so that the recorded requests can be told apart.

The cases are those of cave-wire-protocol.md §7 and the gaps of §7.1. Where tablekit differs on
purpose, the difference is asserted explicitly:

* tablekit never sends the user's ``offset``/``limit`` (the server has no ORDER BY, so a server
  page is not "rows offset… of the id order"): it asks for everything and slices the complete,
  id-ordered result;
* a join with ``select_columns`` is sent as ``select_column_map`` (the v3 form; CAVEclient sends
  the deprecated list), and selected columns are sent in result order plus the key ``id``;
* tablekit sends ``filter_notin_dict`` exactly as CAVEclient does — and also applies it to the
  rows (tests/test_cave_backend.py), because every server ignores it;
* tablekit always sends ``desired_resolution``, and it is a resolution the server scales every
  table of the query to exactly (the tables' own): the server cuts positions it scales by a
  fractional factor to integers and its default differs by endpoint (issue 13 §3.1, §3.6), so
  tablekit converts to the resolution asked for itself;
* tablekit never sends ``random_sample`` (the server's sample is wrong on merged versions): it
  samples the whole answer as the local engine does;
* start-up takes fewer requests.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from typing import Any

import pytest
from _interop_env import interop_python
from test_cave_backend import Recorder, serve_asgi

import tablekit
from tablekit.server import create_app

SYN = "synapses_pni_2"
NUC = "nucleus_detection_v0"
CT = "aibs_metamodel_celltypes_v661"
COL = "allen_v1_column_types_slanted"
VIEW = "single_neurons"

CAVECLIENT_SCRIPT = r"""
import datetime as dt, json, sys
import requests
from caveclient import CAVEclient

base, datastack, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
requests.get(f"{base}/__case__/bootstrap")
c = CAVEclient(datastack_name=datastack, server_address=base, write_server_cache=False)
mat = c.materialize
for case in cases:
    requests.get(f"{base}/__case__/{case['name']}")
    kw = dict(case.get("kwargs", {}))
    if "timestamp" in kw:
        kw["timestamp"] = dt.datetime.fromisoformat(kw["timestamp"])
    call = case["caveclient"]
    if call == "query_table":
        mat.query_table(**kw)
    elif call == "query_view":
        mat.query_view(**kw)
    elif call == "live_live_query":
        mat.live_live_query(**kw)
    elif call == "tables":
        getattr(mat.tables, case["table"])(**case["filters"]).query(**kw)
    elif call == "tables_live":
        getattr(mat.tables, case["table"])(**case["filters"]).live_query(**kw)
    elif call == "views":
        getattr(mat.views, case["table"])(**case["filters"]).query(**kw)
    else:
        raise SystemExit(f"unknown call {call}")
"""


def _cases(client) -> list[dict[str, Any]]:
    v = client.version
    syn = client.query_table(SYN, split_positions=True, limit=200)
    nuc = client.query_table(NUC, split_positions=True)
    ts = client.get_timestamp(v) + dt.timedelta(days=2)
    live = client.tables[SYN]().live_query(ts, limit=50)
    live_root = int(live["pre_pt_root_id"][live["pre_pt_root_id"] != 0].iloc[0])
    r1, r2 = int(syn["pre_pt_root_id"].iloc[3]), int(syn["post_pt_root_id"].iloc[5])
    nroots = [int(x) for x in nuc["pt_root_id"][nuc["pt_root_id"] != 0][:3]]
    cell_type = client.query_table(CT, limit=1)["cell_type"].iloc[0]
    box = [[50_000, 50_000, 10_000], [300_000, 250_000, 25_000]]
    return [
        {  # §7.3, with CAVEclient's filter_out_dict (sent as filter_notin_dict)
            "name": "plain_query_table",
            "caveclient": "query_table",
            "kwargs": {
                "table": SYN,
                "filter_in_dict": {"pre_pt_root_id": [r1]},
                "filter_out_dict": {"post_pt_root_id": [r2]},
                "filter_equal_dict": {"size": 100},
                "limit": 1000,
                "offset": 0,
            },
        },
        {  # §7.4
            "name": "desired_resolution",
            "caveclient": "query_table",
            "kwargs": {
                "table": SYN,
                "filter_in_dict": {"pre_pt_root_id": [r1]},
                "desired_resolution": [1, 1, 1],
            },
        },
        {  # §7.2, the tables interface over a reference table (a join)
            "name": "tables_interface_join",
            "caveclient": "tables",
            "table": CT,
            "filters": {"pt_root_id": nroots[:2], "target_id": int(nuc["id"].iloc[0])},
            "kwargs": {"metadata": False},
        },
        {
            "name": "tables_interface_ranges",
            "caveclient": "tables",
            "table": NUC,
            "filters": {"volume": {">": 200.0, "<": 750.0}, "pt_root_id": nroots},
            "kwargs": {},
        },
        {
            "name": "tables_interface_join_select",
            "caveclient": "tables",
            "table": CT,
            "filters": {"cell_type": cell_type},
            "kwargs": {"select_columns": ["cell_type", "pt_root_id"]},
        },
        {
            "name": "spatial",
            "caveclient": "query_table",
            "kwargs": {"table": NUC, "filter_spatial_dict": {"pt_position": box}},
        },
        {
            "name": "regex",
            "caveclient": "query_table",
            "kwargs": {"table": COL, "filter_regex_dict": {"cell_type": "^[0-9]P"}},
        },
        {
            "name": "inequalities",
            "caveclient": "query_table",
            "kwargs": {
                "table": NUC,
                "filter_greater_dict": {"volume": 200.0},
                "filter_less_equal_dict": {"volume": 750.0},
                "filter_greater_equal_dict": {"id": 3},
                "filter_less_dict": {"id": 900_000},
            },
        },
        {
            "name": "select_columns",
            "caveclient": "query_table",
            "kwargs": {"table": NUC, "select_columns": ["id", "volume", "pt_root_id"]},
        },
        {"name": "random_sample", "caveclient": "query_table", "kwargs": {"table": SYN, "random_sample": 10}},
        {
            "name": "count",
            "caveclient": "query_table",
            "kwargs": {"table": SYN, "filter_in_dict": {"pre_pt_root_id": [r1]}, "get_counts": True},
        },
        {
            "name": "query_view",
            "caveclient": "query_view",
            "kwargs": {"view_name": VIEW, "filter_in_dict": {"pt_root_id": nroots}},
        },
        {
            "name": "query_view_count",
            "caveclient": "query_view",
            "kwargs": {"view_name": VIEW, "filter_in_dict": {"pt_root_id": nroots}, "get_counts": True},
        },
        {
            "name": "views_interface",
            "caveclient": "views",
            "table": VIEW,
            "filters": {"pt_root_id": nroots},
            "kwargs": {},
        },
        {
            "name": "live_live_query",
            "caveclient": "live_live_query",
            "kwargs": {
                "table": SYN,
                "timestamp": ts.isoformat(),
                "filter_in_dict": {SYN: {"pre_pt_root_id": [live_root]}},
            },
        },
        {
            "name": "live_live_query_join",
            "caveclient": "tables_live",
            "table": CT,
            "filters": {"cell_type": cell_type},
            "kwargs": {"timestamp": ts.isoformat()},
        },
    ]


def _tablekit(tk: tablekit.Client, case: dict[str, Any]) -> None:
    """The same question through tablekit's own API."""
    kw = dict(case.get("kwargs", {}))
    call = case["caveclient"]
    if call == "query_table":
        tk.query_table(**kw)
    elif call == "query_view":
        tk.query_view(**kw)
    elif call == "live_live_query":
        table = kw["table"]
        tk.tables[table](**kw["filter_in_dict"][table]).live_query(dt.datetime.fromisoformat(kw["timestamp"]))
    elif call == "tables":
        kw.pop("metadata", None)
        tk.tables[case["table"]](**case["filters"]).query(**kw)
    elif call == "tables_live":
        tk.tables[case["table"]](**case["filters"]).live_query(dt.datetime.fromisoformat(kw["timestamp"]))
    elif call == "views":
        tk.views[case["table"]](**case["filters"]).query(**kw)


def _groups(log: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    current = None
    for r in log:
        if r["path"].startswith("/__case__/"):
            current = r["path"].rsplit("/", 1)[-1]
            out[current] = []
        elif current is not None:
            out[current].append(r)
    return out


def _query(requests: list[dict[str, Any]]) -> dict[str, Any]:
    posts = [r for r in requests if r["method"] == "POST" and r["path"].startswith("/materialize/")]
    assert len(posts) == 1, [r["path"] for r in posts]
    r = posts[0]
    return {"path": r["path"], "query": set(r["query"]), "body": json.loads(r["body"] or b"{}")}


@pytest.fixture(scope="module")
def recorded(path, client, tmp_path_factory):
    """``(cases, CAVEclient's requests by case, tablekit's requests by case)``."""
    py = interop_python()
    cases = _cases(client)
    rec = Recorder(create_app(path))
    home = tmp_path_factory.mktemp("home")
    with serve_asgi(rec) as url:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CAVE_TOKEN")
        }
        env.update(HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run(
            [py, "-c", CAVECLIENT_SCRIPT, url, client.datastack, json.dumps(cases)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        cave = _groups(rec.log)
        rec.log.clear()
        rec.log.append({"method": "GET", "path": "/__case__/bootstrap", "query": [], "body": b""})
        tk = tablekit.connect(
            client.datastack, server=url, cache_dir=tmp_path_factory.mktemp("cache"), progress=False
        )
        for case in cases:
            rec.log.append({"method": "GET", "path": f"/__case__/{case['name']}", "query": [], "body": b""})
            _tablekit(tk, case)
        ours = _groups(rec.log)
    return cases, cave, ours


CASE_NAMES = (
    "plain_query_table",
    "desired_resolution",
    "tables_interface_join",
    "tables_interface_ranges",
    "tables_interface_join_select",
    "spatial",
    "regex",
    "inequalities",
    "select_columns",
    "random_sample",
    "count",
    "query_view",
    "query_view_count",
    "views_interface",
    "live_live_query",
    "live_live_query_join",
)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_same_request_as_caveclient(recorded, name):
    cases, cave, ours = recorded
    assert {c["name"] for c in cases} == set(CASE_NAMES)
    a, b = _query(cave[name]), _query(ours[name])
    assert a["path"] == b["path"]
    if name == "random_sample":  # documented: sampled by tablekit from the whole answer
        assert ("random_sample", "10") in a["query"] and ("random_sample", "10") not in b["query"]
        a = {**a, "query": {kv for kv in a["query"] if kv[0] != "random_sample"}}
    assert a["query"] == b["query"]
    want = dict(a["body"])
    # documented: the tables' own resolution is always sent; tablekit converts positions itself
    want.pop("desired_resolution", None)
    assert b["body"].pop("desired_resolution") in ([4.0, 4.0, 40.0], [1.0, 1.0, 1.0])
    if name == "plain_query_table":  # documented: the user's offset/limit are applied client-side
        assert (want.pop("offset"), want.pop("limit")) == (0, 1000)
        assert "offset" not in b["body"] and "limit" not in b["body"]
    if name == "tables_interface_join_select":  # documented: the v3 select_column_map, not the list
        assert sorted(want.pop("select_columns")) == ["cell_type", "pt_root_id"]
        sel = b["body"].pop("select_column_map")
        assert set(sel[CT]) >= {"cell_type", "id"} and set(sel[NUC]) >= {"pt_root_id", "id"}
    if name == "select_columns":  # the same columns; tablekit sends them in result order
        assert sorted(want.pop("select_columns")) == sorted(b["body"].pop("select_columns"))
    assert want == b["body"]


def test_the_wire_cases_cover_protocol_section_7(recorded):
    """Every body key and query flag of §7/§7.1 was exercised at least once."""
    _, _, ours = recorded
    keys: set[str] = set()
    flags: set[str] = set()
    for reqs in ours.values():
        for r in reqs:
            if r["method"] == "POST" and r["path"].startswith("/materialize/"):
                keys |= set(json.loads(r["body"] or b"{}"))
                flags |= {k for k, _ in r["query"]}
    assert keys >= {
        "filter_in_dict",
        "filter_notin_dict",
        "filter_equal_dict",
        "filter_greater_dict",
        "filter_less_dict",
        "filter_greater_equal_dict",
        "filter_less_equal_dict",
        "filter_spatial_dict",
        "filter_regex_dict",
        "select_columns",
        "select_column_map",
        "suffix_map",
        "tables",
        "desired_resolution",
        "table",
        "timestamp",
        "join_tables",
        "suffixes",
    }
    assert flags >= {  # random_sample is never sent: tablekit samples (issue 13 §3.2)
        "count",
        "merge_reference",
        "allow_missing_lookups",
        "allow_invalid_root_ids",
    }


def test_startup_takes_fewer_requests_than_caveclient(recorded):
    """Documented difference: tablekit's connect + first query costs fewer requests (metadata is
    fetched in bulk, in parallel, and the version negotiation rides along with the versions)."""
    _, cave, ours = recorded
    first = "plain_query_table"
    n_cave = len(cave["bootstrap"]) + len(cave[first])
    n_ours = len(ours["bootstrap"]) + len(ours[first])
    assert n_ours < n_cave, (n_ours, n_cave)
