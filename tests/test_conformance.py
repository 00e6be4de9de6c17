"""Conformance with the real CAVE materialization service (issue 13 §3).

``tablekit serve --cave-quirks`` reproduces what MaterializationEngine 5.26.4
(``../shared/peers/MaterializationEngine``) does wrong; each test shows the defect on the wire (a
raw request to the quirks server, against values derived by hand or with pandas from the local
engine's rows) and that tablekit's HTTP backend still gives the local engine's answer over it.
The server function that causes each defect is named in the test's docstring and in the README's
table "Server defects tablekit compensates for".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import requests
from _server import NO_CREATED, running_server

import tablekit

pytestmark = [
    # the real server's (and so serve --cave-quirks') merged frozen tables and live answers have no
    # `created`: tablekit fills it with nulls and warns; same() checks the nulls
    pytest.mark.filterwarnings("ignore:the server sent no column 'created"),
]

SYN = "synapses_pni_2"
NUC = "nucleus_detection_v0"
CT = "aibs_metamodel_celltypes_v661"
COL = "allen_v1_column_types_slanted"
FLAGS = {
    "return_pyarrow": "True",
    "arrow_format": "True",
    "split_positions": "True",
    "direct_sql_pandas": "True",
}


@pytest.fixture(scope="module")
def quirks(path) -> Iterator[str]:
    with running_server(path, row_limit=300, cave_quirks=True) as url:
        yield url


@pytest.fixture(scope="module")
def tk(client, quirks) -> tablekit.Client:
    return tablekit.connect(client.datastack, server=quirks, cache_dir=False, progress=False)


def m3(url: str, client: Any) -> str:
    return f"{url}/materialize/api/v3/datastack/{client.datastack}"


def post(url: str, body: dict[str, Any], **params: str) -> requests.Response:
    return requests.post(url, params={**FLAGS, **params}, data=json.dumps(body), timeout=60)


def arrow(r: requests.Response) -> pa.Table:
    assert r.status_code == 200, r.text[:500]
    return pa.ipc.open_stream(r.content).read_all()


def same(got: pd.DataFrame, want: pd.DataFrame, float32: tuple[str, ...] = ()) -> None:
    """Row for row and type for type; ``float32`` columns carry the server's float32 precision;
    ``created`` is all null (:data:`~_server.NO_CREATED`)."""
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for c in want.columns:
        if c in NO_CREATED:
            assert got[c].isna().all(), c
        elif c in float32:
            assert got[c].dtype == want[c].dtype
            np.testing.assert_array_equal(
                got[c].to_numpy(dtype=float), want[c].to_numpy(dtype=float).astype(np.float32).astype(float)
            )
        else:
            pd.testing.assert_series_equal(got[c], want[c], check_exact=True, obj=c)


# ----------------------------------------------------------------------------- §3.1, §3.6


@pytest.mark.parametrize("res", [[8, 8, 40], [1000, 1000, 1000], [3, 7, 11], [4, 4, 40], [1, 1, 1]])
def test_fractional_desired_resolution_is_converted_by_the_client(quirks, tk, client, res):
    """``QueryManager.execute_query`` scales a position as ``CAST(ST_X AS INTEGER) * (voxel /
    desired)`` typed Integer and ``query.py`` ``dtype_map`` reads it as Int32: a fractional factor
    cuts positions to whole numbers ([1000]*3 from 4×4×40 gives whole microns). tablekit asks for the
    table's own resolution and converts in float64: the local engine's numbers, bit for bit."""
    raw = arrow(
        post(f"{m3(quirks, client)}/version/{client.version}/table/{NUC}/query", {"desired_resolution": res})
    )
    stored = client.tables[NUC]().query(split_positions=True)
    ratio = 4.0 / res[0]
    assert raw.schema.field("pt_position_x").type == pa.int32()
    want_x = dict(zip(stored["id"], stored["pt_position_x"], strict=True))  # the first 300 rows, shuffled
    assert raw["pt_position_x"].to_pylist() == [
        int(np.trunc(want_x[i] * ratio)) for i in raw["id"].to_pylist()
    ]

    want = client.tables[NUC]().query(desired_resolution=res, split_positions=True)
    got = tk.tables[NUC]().query(desired_resolution=res, split_positions=True)
    same(got, want, float32=("volume",))
    assert got.attrs["dataframe_resolution"] == want.attrs["dataframe_resolution"]


def test_a_join_of_tables_at_different_resolutions_is_asked_at_a_common_one(tk, client):
    """Every endpoint has its own default resolution (``generate_complex_query_dataframe``: the last
    table's; live: the queried table's): tablekit always sends one that every table reaches with a
    whole-number factor (here 4×4×40 and 1×1×1 → 1×1×1) and converts itself."""
    q = tk.tables[COL]().query  # 1×1×1 nm
    e = json.loads(tk.tables[NUC]().explain(desired_resolution=[8, 8, 40]))
    assert e["body"]["desired_resolution"] == [4.0, 4.0, 40.0]
    e = json.loads(tk.tables[CT](cell_type={"regex": "^5P"}).explain())
    assert e["endpoint"] == "join" and e["body"]["desired_resolution"] == [4.0, 4.0, 40.0]
    want = client.tables[COL]().query(desired_resolution=[8, 8, 40], split_positions=True)
    same(q(desired_resolution=[8, 8, 40], split_positions=True), want)
    want = client.tables[CT](cell_type={"regex": "^5P"}).query(
        desired_resolution=[3, 3, 30], split_positions=True
    )
    got = tk.tables[CT](cell_type={"regex": "^5P"}).query(desired_resolution=[3, 3, 30], split_positions=True)
    same(got, want, float32=("volume",))


# ----------------------------------------------------------------------------- §3.2


def test_random_sample_is_sampled_by_the_client(quirks, tk, client):
    """On merged versions ``QueryManager.add_table`` samples an alias that ``_find_relevant_model``
    never uses: the table endpoint returns every row. tablekit never sends ``random_sample``; it
    fetches the answer (paged past the 300-row limit) and keeps the local engine's sample."""
    url = f"{m3(quirks, client)}/version/{client.version}/table/{NUC}/query"
    everything = client.tables[NUC]().query(select_columns=["id"])
    raw = arrow(post(url, {"select_columns": ["id", "volume"]}, random_sample="10"))
    assert raw.num_rows == min(300, len(everything))  # not 10: the sample is ignored
    for kw in ({}, {"volume": {">": 300}}):
        want = client.tables[NUC](**kw).query(random_sample=25)
        got = tk.tables[NUC](**kw).query(random_sample=25)
        same(got, want, float32=("volume",))
        assert len(got) == 25
        assert tk.tables[NUC](**kw).query(random_sample=25, get_counts=True)["count"][0] == 25
    want = client.tables[SYN](size={">": 100}).query(random_sample=700, offset=10, limit=50)
    got = tk.tables[SYN](size={">": 100}).query(random_sample=700, offset=10, limit=50)
    same(got, want, float32=("size",))
    assert "random_sample" not in json.loads(tk.tables[NUC]().explain(random_sample=5))["query_string"]


# ----------------------------------------------------------------------------- §3.3


def test_nan_arrives_as_null_and_floats_as_float32(quirks, tk, client):
    """``dtype_map`` reads Float columns as ``pd.Float32Dtype()``: float32 values, and NaN becomes
    NA (null in Arrow). PostgreSQL orders NaN above every number, so ``volume > x`` matches NaN rows;
    the client drops them as nulls too (a null never passes ``>``)."""
    url = f"{m3(quirks, client)}/version/{client.version}/table/{NUC}/query"
    local = client.tables[NUC]().query()
    nan_ids = [int(i) for i in local["id"][local["volume"].isna()]][:100]
    some = [int(i) for i in local["id"][local["volume"].notna()]][:100]
    raw = arrow(post(url, {"filter_in_dict": {NUC: {"id": nan_ids + some}}}))
    assert raw.schema.field("volume").type == pa.float32() and raw.num_rows == len(nan_ids) + len(some)
    assert nan_ids and sorted(raw.filter(raw["volume"].is_null())["id"].to_pylist()) == sorted(nan_ids)
    assert not np.isnan(raw["volume"].drop_null().to_numpy()).any()
    for kw in ({">": 300.5}, {">=": 0.0}, {">": 100, "<": 900}):
        want = client.tables[NUC](volume=kw).query()
        got = tk.tables[NUC](volume=kw).query()
        assert got["volume"].notna().all()
        same(got, want, float32=("volume",))


# ----------------------------------------------------------------------------- §3.8


def test_one_selected_column_is_never_sent_alone(quirks, tk, client):
    """``fix_columns_with_query`` takes a one-column query's column type for its model and fails
    (``'BigInteger' object has no attribute 'id'``, a 500). tablekit adds a second column and drops
    it, also for counts whose only client-side filter reads ``id``."""
    url = f"{m3(quirks, client)}/version/{client.version}/table/{NUC}/query"
    r = post(url, {"select_columns": ["id"]})
    assert r.status_code == 500 and "has no attribute 'id'" in r.json()["message"]
    for cols in (["id"], ["volume"], ["pt_root_id"], ["pt_position"]):
        same(
            tk.tables[NUC]().query(select_columns=cols),
            client.tables[NUC]().query(select_columns=cols),
            float32=("volume",),
        )
    ids = client.tables[NUC]().query(select_columns=["id"])["id"].tolist()[:7]
    for kw in ({"id": {"not in": ids}}, {"id": {"!=": ids[0]}}):
        assert (
            tk.tables[NUC](**kw)
            .query(get_counts=True)
            .equals(client.tables[NUC](**kw).query(get_counts=True))
        )


# ----------------------------------------------------------------------------- §3.10


def test_the_join_endpoint_is_never_asked_to_count(quirks, tk, client):
    """``generate_complex_query_dataframe`` builds its QueryManager with ``get_count=False``: a
    join's ``count=true`` returns rows (up to the row limit). tablekit counts the rows it fetches."""
    body = {"tables": [[CT, "target_id"], [NUC, "id"]], "suffix_map": {CT: "_ref", NUC: ""}}
    raw = arrow(post(f"{m3(quirks, client)}/version/{client.version}/query", body, count="True"))
    assert "count" not in raw.column_names and raw.num_rows > 1
    for kw in ({}, {"cell_type": {"regex": "^5P"}}):
        want = client.tables[CT](**kw).query(get_counts=True)
        assert tk.tables[CT](**kw).query(get_counts=True).equals(want)
        e = json.loads(tk.tables[CT](**kw).explain(get_counts=True))
        assert "count" not in e["params"]


# ----------------------------------------------------------------------------- §3.7


def test_lineage_up_to_a_time_holds_no_later_successors(quirks, tk, client):
    """PyChunkedGraph's ``lineage_graph_multiple`` follows lineage edges past ``timestamp_future``
    unless ``exclude_links_to_future=true`` (CAVEclient sends it): successors created after T come
    back. tablekit sends it and drops nodes created after T whatever the server does."""
    edges = sorted(client.segmentation_history().edges(), key=lambda e: e[2])
    parent, child, when = edges[len(edges) // 2]
    born = client.get_root_timestamps([parent])[0]
    t = born + (when - born) / 2  # parent is valid at t; child is created after t
    pcg = f"{quirks}/segmentation/api/v1/table/{tk.info['pcg_table_name']}/lineage_graph_multiple"
    raw = requests.post(
        pcg, params={"timestamp_future": t.timestamp()}, json={"root_ids": [parent]}, timeout=30
    )
    assert child in {n["id"] for n in raw.json()["nodes"]}  # the defect
    assert list(tk.get_latest_roots(parent, timestamp=t)) == list(
        client.get_latest_roots(parent, timestamp=t)
    )
    assert list(client.get_latest_roots(parent, timestamp=t)) == [parent]
    got = tk.get_lineage_graph(parent, timestamp_future=t)
    want = client.get_lineage_graph(parent, timestamp_future=t)
    assert got == want and child not in {n["id"] for n in got["nodes"]}


# ----------------------------------------------------------------------------- §3.11, §3.12


@pytest.fixture(scope="module")
def canned():
    from test_cave_backend import Canned, serve_asgi

    app = Canned()
    with serve_asgi(app) as url:
        yield app, url


def test_a_rate_limit_sent_as_a_500_is_a_rate_limit(canned):
    """The real server's catch-all (``common.py`` ``unhandled_exception``) answers flask-limiter's
    ``TooManyRequests`` as ``500 {"code": 500, "message": "429 Too Many Requests: …"}``: tablekit
    waits and retries it, then raises :class:`~tablekit.errors.RateLimitError`."""
    from tablekit.backends.cave.http import HTTPSession
    from tablekit.errors import RateLimitError

    app, url = canned
    limited = (500, [], {"code": 500, "message": "429 Too Many Requests: 10 per 1 second", "traceback": []})
    waits: list[float] = []
    http = HTTPSession(None, max_retries=2, backoff=0.1, sleep=waits.append)
    app.reset(limited, (200, [], {"ok": 1}))
    assert http.request("GET", f"{url}/x").json() == {"ok": 1} and len(waits) == 1
    app.reset(limited)
    with pytest.raises(RateLimitError, match="429 Too Many Requests"):
        http.request("GET", f"{url}/x")
    assert len(app.log) == 3 and len(waits) == 3  # two retries after the first
    app.reset((500, [], {"code": 500, "message": "4290 rows", "traceback": []}))
    with pytest.raises(tablekit.errors.ServerError) as e:
        http.request("GET", f"{url}/x")
    assert not isinstance(e.value, RateLimitError) and len(app.log) == 1


def test_validation_error_bodies_are_read(quirks, client, canned):
    """Body validation (``@accepts`` with ``V2QuerySchema``) fails as ``500 {"schema_errors": …}``
    with no ``message``; a bad query-string argument (flask-restx reqparse) as ``500 {"errors": …,
    "message": "Input payload validation failed"}``. ``serve --cave-quirks`` sends both; tablekit's
    errors carry what they say."""
    from tablekit.backends.cave.http import HTTPSession

    url = f"{m3(quirks, client)}/version/{client.version}/table/{NUC}/query"
    r = post(url, {"filter_out_dict": {NUC: {"id": [1]}}})
    assert r.status_code == 500 and list(r.json()) == ["schema_errors"]
    assert "filter_out_dict" in r.json()["schema_errors"]
    r = post(url, {}, count="maybe")
    assert r.status_code == 500 and r.json()["message"] == "Input payload validation failed"
    assert "count" in r.json()["errors"]
    http = HTTPSession(None, max_retries=0)
    for body, params, said in (
        ({"filter_out_dict": {NUC: {"id": [1]}}}, FLAGS, "filter_out_dict"),
        ({}, {**FLAGS, "count": "maybe"}, 'Input payload validation failed: {"count"'),
    ):
        with pytest.raises(tablekit.errors.ServerError) as e:
            http.request("POST", url, params=params, json=body)
        assert said in str(e.value) and said in (e.value.message or "")


# ----------------------------------------------------------------------------- §3.4


def test_live_float_equality_and_membership(quirks, tk, client):
    """The live endpoint filters its answer again in pandas (``api2.py`` ``apply_filters``), float32
    values against the request's float64 values: ``isin`` on a float column matches nothing.
    tablekit sends the range the values' float32 neighbours enclose and keeps the equal rows itself."""
    import datetime as dt

    t = client.get_timestamp(client.version) + dt.timedelta(hours=1)
    local = client.tables[NUC]().query()
    vols = [float(v) for v in local["volume"].dropna()[:5]]
    assert any(float(np.float32(v)) != v for v in vols)  # values float32 cannot hold exactly
    body = {"table": NUC, "timestamp": t.isoformat(), "filter_in_dict": {NUC: {"volume": vols}}}
    live = f"{m3(quirks, client)}/query"
    params = {"return_pyarrow": "True", "arrow_format": "True", "direct_sql_pandas": "True"}
    r = requests.post(live, params=params, data=json.dumps(body), timeout=60)
    assert (r.status_code == 500 and "returned no results" in r.json()["message"]) or arrow(r).num_rows == 0
    for kw in ({"volume": vols[0]}, {"volume": vols}, {"volume": vols[:3], "id": {"!=": 0}}):
        want = client.tables[NUC](**kw).live_query(t)
        got = tk.tables[NUC](**kw).live_query(t)
        assert len(want) >= 1
        same(got, want, float32=("volume",))


def test_float_not_in_excludes_the_values_the_server_stored(quirks, tk, client):
    """The server ignores ``filter_notin_dict`` (it reads ``filter_out_dict``) and stores Float
    columns as PostgreSQL ``real``: the float32 values it sends never equal the float64 values
    excluded, so a not-in applied to them as sent excludes nothing. tablekit excludes, on columns
    that arrive as float32, each value's float32 neighbour too."""
    local = client.tables[NUC]().query()
    vols = [float(v) for v in local["volume"].dropna()[5:9]]
    assert any(float(np.float32(v)) != v for v in vols)  # values float32 cannot hold exactly
    body = {"filter_notin_dict": {NUC: {"volume": vols}}}
    raw = arrow(post(f"{m3(quirks, client)}/version/{client.version}/table/{NUC}/query", body))
    assert raw.schema.field("volume").type == pa.float32()
    assert raw.num_rows == min(len(local), 300)  # nothing excluded on the wire
    assert not set(raw["volume"].to_numpy(zero_copy_only=False).astype(float)) & set(vols)
    oracle = local[~local["volume"].isin(vols)]  # pandas on the local engine's rows
    assert len(oracle) == len(local) - len(vols)
    for kw, want_ids in (
        ({"volume": {"not in": vols}}, oracle["id"]),
        ({"volume": {"!=": vols[0]}}, local[local["volume"] != vols[0]]["id"]),
    ):
        want = client.tables[NUC](**kw).query()
        assert list(want["id"]) == list(want_ids)
        same(tk.tables[NUC](**kw).query(), want, float32=("volume",))
    want = client.query_table(NUC, filter_out_dict={"volume": vols})
    assert list(want["id"]) == list(oracle["id"])
    same(tk.query_table(NUC, filter_out_dict={"volume": vols}), want, float32=("volume",))
    n = tk.query_table(NUC, filter_out_dict={"volume": vols}, get_counts=True)
    pd.testing.assert_frame_equal(
        n, client.query_table(NUC, filter_out_dict={"volume": vols}, get_counts=True)
    )
    assert int(n["count"].iloc[0]) == len(oracle)


# ----------------------------------------------------------------------------- §3.5


def test_a_live_query_at_a_versions_timestamp_is_that_version(quirks, tk, client):
    """``execute_production_query`` refuses a live query at exactly a version's timestamp once the
    table changed after it ("do not use live live query to query a materialized timestamp"):
    tablekit asks for that version instead; the local engine's live answer at that time is the oracle."""
    for v in client.get_versions():
        t = client.get_timestamp(v)
        body = {"table": NUC, "timestamp": t.isoformat()}
        r = requests.post(f"{m3(quirks, client)}/query", params=FLAGS, data=json.dumps(body), timeout=60)
        assert r.status_code == 500 and "do not use live live query" in r.json()["message"]
        same(tk.tables[NUC]().live_query(t), client.tables[NUC]().live_query(t), float32=("volume",))
        kw = {"pt_root_id": int(client.tables[NUC]().live_query(t)["pt_root_id"].iloc[-1])}
        same(tk.tables[NUC](**kw).live_query(t), client.tables[NUC](**kw).live_query(t), float32=("volume",))


# ----------------------------------------------------------------------------- §3.9


def test_the_pending_lookups_refusal_says_which_rows_the_server_checked(tk, client):
    """The live endpoint checks pending lookups on the query without its root-id filters
    (``execute_production_query``: ``strip_root_id_filters``, then ``update_rootids``), so it can
    refuse for annotations the query does not select: tablekit's error says so (the text derived
    by hand); without root-id filters it says "matching this live query"."""
    import datetime as dt

    from tablekit.backends.cave import decode as decoding
    from tablekit.query import Predicate, Query

    t = client.get_timestamp(client.version) + dt.timedelta(hours=1)
    said = "406 Not Acceptable: There are 3 annotations that need supervoxel lookups, wait till new ..."
    for preds, words in (
        (
            (Predicate(NUC, "pt_root_id", "in", (5, 6)),),
            "selected by this live query's filters other than "
            "its root-id filters (pt_root_id; the server checks the rows before it applies those)",
        ),
        ((Predicate(NUC, "volume", ">", 1.0),), "matching this live query"),
    ):
        p = tk.backend.plan(Query(client.datastack, NUC, predicates=preds, timestamp=t))
        e = decoding.pending_lookups_error(p, said)
        assert str(e).startswith(f"{NUC}: 3 annotation(s) {words} still wait for their supervoxel lookup")


# ----------------------------------------------------------------------------- §3.13-17: serve --cave-quirks


def warnings_of(r: requests.Response) -> list[str]:
    """The ``Warning`` header lines, one per warning (requests joins repeated headers)."""
    return [w.strip() for w in r.raw.headers.getlist("Warning")]


def test_quirks_types_json_times_and_warnings(quirks, client):
    """What ``serve --cave-quirks`` sends as the real server does (hand-derived from its code):
    column types (``dtype_map``: int32 positions and Integer columns, float32, timestamp[ns, UTC];
    BigInteger ids int64), JSON datetimes as epoch milliseconds (``create_query_response``:
    ``to_json(orient="records")``), ``Warning`` lines in each endpoint's order, and without
    ``arrow_format=true`` only the Arrow-format warning (``add_warnings_to_headers`` replaces the
    list)."""
    import datetime as dt

    from tablekit.server import _wire as sw

    base = f"{m3(quirks, client)}/version/{client.version}"
    raw = arrow(post(f"{base}/table/{NUC}/query", {}))
    types = {f.name: f.type for f in raw.schema}
    assert types["id"] == types["pt_root_id"] == types["pt_supervoxel_id"] == pa.int64()
    assert types["pt_position_x"] == types["bb_start_position_z"] == pa.int32()
    assert types["volume"] == pa.float32() and types["valid"] == pa.bool_()
    assert "created" not in types  # merge_tables drops it from the frozen tables

    t = client.get_timestamp(client.version) + dt.timedelta(hours=1)
    live = arrow(post(f"{m3(quirks, client)}/query", {"table": NUC, "timestamp": t.isoformat()}))
    assert "created" not in live.column_names and live.num_rows
    r = post(f"{base}/table/{NUC}/query", {}, return_pyarrow="False")
    rows = r.json()
    assert rows and all("created" not in x for x in rows)
    # no datetime column is left in an annotation answer; the encoding, on a hand-made one
    when = pa.array([dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)], pa.timestamp("ns", tz="UTC"))
    assert json.loads(sw.encode_json_records(pa.table({"t": when}), epoch_ms=True)) == [{"t": 1704153600000}]

    limit = '201 - "Limited query to 300 rows'
    csv = {"direct_sql_pandas": "False"}
    r = post(f"{base}/table/{SYN}/query", {}, **csv)
    assert warnings_of(r) == [limit, sw.REAL_CSV_WARNING]
    r = post(f"{base}/views/single_neurons/query", {}, **csv)
    assert warnings_of(r)[0] == sw.REAL_CSV_WARNING
    join = {"tables": [[CT, "target_id"], [NUC, "id"]], "suffixes": ["_ref", ""]}
    r = post(f"{base}/query", {**join, "select_columns": ["id", "cell_type"]}, **csv)
    assert warnings_of(r)[:3] == [sw.REAL_SUFFIXES_WARNING, sw.REAL_JOIN_CSV_WARNING, sw.REAL_SELECT_WARNING]
    r = post(f"{base}/table/{SYN}/query", {}, arrow_format="False", **csv)
    assert warnings_of(r) == [sw.REAL_ARROW_FORMAT_WARNING]


def test_quirks_live_limit_warnings_and_404s(quirks, tk, client):
    """The live endpoint's two row-limit warnings (``execute_materialized_query``: nine spaces
    before "than", ``execute_production_query``: five), which tablekit reads alike; a query of an
    unknown version or table fails as ``validate_table_args`` aborts (404, sent as 500)."""
    import datetime as dt

    from tablekit.backends.cave import decode as decoding
    from tablekit.server import _wire as sw

    t = client.get_timestamp(client.version) + dt.timedelta(days=3)
    body = {"table": SYN, "timestamp": t.isoformat(), "limit": 1}
    r = requests.post(f"{m3(quirks, client)}/query", params=FLAGS, data=json.dumps(body), timeout=60)
    (w,) = warnings_of(r)
    assert w in (sw.LIVE_LIMIT_WARNING.format(n=1, limit=1), sw.LIVE_PROD_LIMIT_WARNING.format(n=1, limit=1))
    for text in (sw.LIVE_LIMIT_WARNING, sw.LIVE_PROD_LIMIT_WARNING):
        assert decoding.truncation([text.format(n=300, limit=300)], 300, None, None) == (True, 300)
    ds = client.datastack
    r = post(f"{m3(quirks, client)}/version/999/table/{NUC}/query", {})
    assert (
        r.status_code == 500
        and r.json()["message"] == f"404 Not Found: Analysis version 999 not found for datastack {ds}"
    )
    r = post(f"{m3(quirks, client)}/version/{client.version}/table/nope/query", {})
    assert r.json()["message"] == (
        f"404 Not Found: Analysis table 'nope' not found for version {client.version} in datastack {ds}"
    )


def test_quirks_booleans_as_flask_restx_reads_them(quirks, client):
    """The real server's query-string booleans are flask-restx's ``inputs.boolean``: ``true``,
    ``1``, ``on`` / ``false``, ``0``, and an empty value is false; anything else is refused as
    ``reqparse`` refuses it (``Input payload validation failed``)."""
    url = f"{m3(quirks, client)}/version/{client.version}/table/{NUC}/query"
    n = len(client.tables[NUC]().query(select_columns=["id"]))
    for text in ("on", "TRUE", "1"):
        assert arrow(post(url, {}, count=text))["count"].to_pylist() == [n]
    for text in ("", "0", "False"):
        assert "count" not in arrow(post(url, {}, count=text)).column_names
    for text in ("yes", "t", "y"):
        r = post(url, {}, count=text)
        assert r.status_code == 500 and r.json()["message"] == "Input payload validation failed"
        assert r.json()["errors"] == {"count": f"Invalid literal for boolean(): {text}"}
