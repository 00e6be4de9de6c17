"""``tablekit serve`` over HTTP: a real uvicorn server on 127.0.0.1, spoken to with ``requests``.

Shapes follow cave-wire-protocol.md; every query answer is checked against tablekit's own local
engine (``client.query_table`` / ``query_view`` / live queries on the same datastack), which in
turn is checked against a pandas oracle in tests/test_queries.py.
"""

from __future__ import annotations

import ast
import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import requests
from _server import running_server

import tablekit
from tablekit.server import create_app

SYN = "synapses_pni_2"
NUC = "nucleus_detection_v0"
CT = "aibs_metamodel_celltypes_v661"
COL = "allen_v1_column_types_slanted"
VIEW = "single_neurons"
FLAGS = {
    "return_pyarrow": "True",
    "arrow_format": "True",
    "split_positions": "True",
    "direct_sql_pandas": "True",
}
LZ4_MAGIC = bytes.fromhex("04224d18")
ZSTD_MAGIC = bytes.fromhex("28b52ffd")


@pytest.fixture(scope="module")
def base(path):
    with running_server(path) as url:
        yield url


@pytest.fixture(scope="module")
def v(client):
    return client.version


@pytest.fixture(scope="module")
def m3(base, client):
    return f"{base}/materialize/api/v3/datastack/{client.datastack}"


def post(url, body, accept="zstd", **params):
    return requests.post(
        url,
        data=json.dumps(body),
        params={**FLAGS, **params},
        headers={"Content-Type": "application/json", "Accept-Encoding": accept},
        timeout=60,
    )


def decode(r) -> pd.DataFrame:
    assert r.status_code == 200, r.text[:2000]
    assert r.headers["Content-Type"] == "data.arrow"
    with pa.ipc.open_stream(r.content) as reader:
        return reader.read_pandas()


def same(got: pd.DataFrame, want: pd.DataFrame, *, order: bool = True, drop=()):
    """Server frame vs local-engine frame (same columns, same rows, same order unless told)."""
    want = want.drop(columns=[c for c in drop if c in want.columns])
    assert sorted(got.columns) == sorted(want.columns)
    got = got[list(want.columns)].reset_index(drop=True)
    want = want.reset_index(drop=True)
    if not order:
        got = got.sort_values(list(got.columns[:1])).reset_index(drop=True)
        want = want.sort_values(list(want.columns[:1])).reset_index(drop=True)
    assert len(got) == len(want)
    for c in want.columns:
        g, w = got[c], want[c]
        if pd.api.types.is_float_dtype(w) or pd.api.types.is_float_dtype(g):
            np.testing.assert_allclose(g.astype(float), w.astype(float), equal_nan=True, err_msg=c)
        else:
            assert [None if pd.isna(x) else x for x in g] == [None if pd.isna(x) else x for x in w], c


def local(client, table, **kw):
    return client.query_table(table, split_positions=True, metadata=False, **kw)


# ----------------------------------------------------------------------------- metadata endpoints
def test_info_and_schema_endpoints(base, client):
    ds = client.datastack
    assert requests.get(f"{base}/info/version").status_code == 200
    assert requests.get(f"{base}/info/api/v2/datastacks").json() == [ds]
    rec = requests.get(f"{base}/info/api/v2/datastack/full/{ds}").json()
    assert rec["local_server"] == base
    pcg = client.info["pcg_table_name"]
    assert rec["segmentation_source"] == f"graphene://{base}/segmentation/table/{pcg}"
    assert rec["synapse_table"] == SYN and rec["soma_table"] == NUC
    assert rec["aligned_volume"]["name"] == client.info["aligned_volume"]
    assert [rec[f"viewer_resolution_{a}"] for a in "xyz"] == list(client.info["viewer_resolution"])
    assert requests.get(f"{base}/info/api/v2/datastack/full/nope").status_code == 404
    av = requests.get(f"{base}/info/api/v2/aligned_volume/{rec['aligned_volume']['name']}").json()
    assert av["name"] == rec["aligned_volume"]["name"]

    assert requests.get(f"{base}/schema/versions").json() == [2]
    types = requests.get(f"{base}/schema/api/v2/type").json()
    assert "synapse" in types and "cell_type_local" in types and len(types) >= 57
    doc = requests.get(f"{base}/schema/api/v2/type/synapse").json()
    assert doc["$ref"].split("/")[-1] in doc["definitions"]
    assert requests.get(f"{base}/schema/api/v2/type/no_such_schema").status_code == 404
    many = requests.post(
        f"{base}/schema/api/v2/types", params={"schema_names": "synapse,nucleus_detection"}
    ).json()
    assert set(many) == {"synapse", "nucleus_detection"}
    assert set(requests.get(f"{base}/schema/api/v2/types_all").json()) == set(types)


def test_materialize_metadata_endpoints(base, m3, client, v):
    ds = client.datastack
    assert requests.get(f"{base}/materialize/api/versions").json() == [2, 3]
    assert requests.get(f"{base}/materialize/version").json() == "5.26.4"
    assert requests.get(f"{m3}/versions").json() == client.get_versions()
    assert requests.get(f"{m3}/versions", params={"expired": "True"}).json() == client.get_versions(
        expired=True
    )
    meta = requests.get(f"{m3}/version/{v}").json()
    assert set(meta) == {
        "id",
        "datastack",
        "version",
        "time_stamp",
        "expires_on",
        "valid",
        "status",
        "is_merged",
    }
    want_ts = client.get_timestamp(v).astimezone(dt.timezone.utc).replace(tzinfo=None)
    assert dt.datetime.strptime(meta["time_stamp"], "%Y-%m-%dT%H:%M:%S.%f") == want_ts
    r = requests.get(f"{m3}/version/999999")
    assert (r.status_code, r.json()) == (404, "No version found")
    allm = requests.get(f"{m3}/metadata", params={"expired": "True"}).json()
    assert [m["version"] for m in allm] == client.get_versions(expired=True)
    for m in allm:  # CAVEclient's strict parser
        dt.datetime.strptime(m["time_stamp"], "%Y-%m-%dT%H:%M:%S.%f")

    v2 = f"{base}/materialize/api/v2/datastack/{ds}"
    assert requests.get(f"{v2}/version/{v}/tables").json() == client.get_tables(v)
    assert requests.get(f"{v2}/version/{v}/table/{SYN}/count").json() == client.get_annotation_count(SYN, v)
    md = requests.get(f"{m3}/version/{v}/table/{CT}/metadata").json()
    for k in (
        "id",
        "schema",
        "schema_type",
        "table_name",
        "valid",
        "created",
        "description",
        "reference_table",
        "voxel_resolution_x",
        "voxel_resolution_y",
        "voxel_resolution_z",
        "read_permission",
        "write_permission",
        "last_modified",
        "pcg_table_name",
        "segmentation_source",
        "notice_text",
    ):
        assert k in md, k
    assert md["table_name"] == CT and md["reference_table"] == NUC
    assert [md[f"voxel_resolution_{a}"] for a in "xyz"] == client.get_table_metadata(CT)["voxel_resolution"]
    allmd = requests.get(f"{m3}/version/{v}/tables/metadata").json()
    assert sorted(m["table_name"] for m in allmd) == client.get_tables(v)
    r = requests.get(f"{m3}/version/{v}/table/no_such_table/metadata")
    assert r.status_code == 500 and "no_such_table" in r.json()["message"]

    views = requests.get(f"{m3}/version/{v}/views").json()
    assert isinstance(views, dict) and VIEW in views and "id" in views[VIEW] and "description" in views[VIEW]
    vm = requests.get(f"{m3}/version/{v}/views/{VIEW}/metadata").json()
    assert vm["table_name"] == VIEW and "live_compatible" in vm and "voxel_resolution_x" in vm
    assert requests.get(f"{m3}/version/{v}/views/{VIEW}/schema").json() == client.get_view_schema(VIEW, v)
    assert requests.get(f"{m3}/version/{v}/views/schemas").json() == client.get_view_schemas(v)
    us = requests.get(f"{m3}/table/{CT}/unique_string_values").json()
    full = local(client, CT, merge_reference=False)
    assert us["cell_type"] == sorted(full["cell_type"].dropna().unique())

    assert requests.get(f"{base}/segmentation/api/versions").json() == [0, 1]
    assert isinstance(requests.get(f"{base}/segmentation/api/version").json(), str)


def test_unknown_datastack_and_bad_version_are_500_json(m3, base):
    r = requests.get(f"{base}/materialize/api/v3/datastack/other/versions")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert "other" in r.json()["message"]
    r = post(f"{m3}/version/1/table/{SYN}/query", {})
    body = r.json()
    assert r.status_code == 500 and set(body) == {"code", "message", "traceback"} and body["code"] == 500
    assert "1" in body["message"] and isinstance(body["traceback"], list)


# ----------------------------------------------------------------------------- encoding
@pytest.mark.parametrize(
    "accept, magic",
    [("lz4", LZ4_MAGIC), ("zstd", ZSTD_MAGIC), ("gzip, deflate, lz4, zstd", LZ4_MAGIC), ("identity", None)],
)
def test_arrow_buffer_compression_from_accept_encoding(m3, v, client, accept, magic):
    r = post(f"{m3}/version/{v}/table/{NUC}/query", {"limit": 300}, accept=accept)
    raw = r.content  # requests undoes a whole-body gzip; the Arrow buffers stay compressed
    df = decode(r)
    same(df, local(client, NUC, limit=300))
    if "gzip" in accept:
        assert r.headers["Content-Encoding"] == "gzip"  # requests undid it
    else:
        assert "Content-Encoding" not in r.headers
    if magic is None:
        assert LZ4_MAGIC not in raw and ZSTD_MAGIC not in raw
    else:
        assert magic in raw
        other = ZSTD_MAGIC if magic == LZ4_MAGIC else LZ4_MAGIC
        assert other not in raw
    # ipc_compress=False switches compression off
    r2 = post(f"{m3}/version/{v}/table/{NUC}/query", {"limit": 300}, accept=accept, ipc_compress="False")
    assert LZ4_MAGIC not in r2.content and ZSTD_MAGIC not in r2.content
    same(decode(r2), df)


def test_small_answers_are_sent_with_uncompressed_buffers(m3, v, client):
    """Under SMALL_ANSWER raw bytes the buffers are not compressed whatever Accept-Encoding says,
    and the answer reads the same."""
    from tablekit.server._wire import SMALL_ANSWER

    for accept in ("zstd", "lz4"):
        r = post(f"{m3}/version/{v}/table/{NUC}/query", {"limit": 3}, accept=accept)
        t = pa.ipc.open_stream(r.content).read_all()
        assert t.num_rows == 3 and t.nbytes < SMALL_ANSWER
        assert LZ4_MAGIC not in r.content and ZSTD_MAGIC not in r.content
        same(decode(r), local(client, NUC, limit=3))


def test_arrow_dtypes_are_the_servers_nullable_ones(m3, v):
    df = decode(post(f"{m3}/version/{v}/table/{NUC}/query", {"limit": 20}))
    assert str(df["id"].dtype) == "Int64" and str(df["pt_root_id"].dtype) == "Int64"
    assert str(df["valid"].dtype) == "boolean"
    assert isinstance(df["created"].dtype, pd.DatetimeTZDtype) and str(df["created"].dt.tz) == "UTC"


def test_json_records_with_gzip(m3, v, client):
    r = requests.post(
        f"{m3}/version/{v}/table/{NUC}/query",
        json={"limit": 25},
        params={**FLAGS, "return_pyarrow": "False", "arrow_format": "False"},
        headers={"Accept-Encoding": "gzip"},
    )
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.headers["Content-Encoding"] == "gzip" and r.headers["Vary"] == "Accept-Encoding"
    rows = r.json()
    want = local(client, NUC, limit=25)
    assert [x["id"] for x in rows] == list(want["id"])
    assert [x["pt_position_x"] for x in rows] == list(want["pt_position_x"])


def test_headers_warning_lines_resolution_and_column_names(m3, v, client):
    # a bare request (no flags): two deprecation warnings, plus the limit warning
    r = requests.post(f"{m3}/version/{v}/table/{NUC}/query", json={"limit": 7})
    lines = r.raw.headers.getlist("Warning")
    assert len(lines) == 3
    assert lines[0] == '201 - "Limited query to 7 rows'
    assert any("arrow_format" in x for x in lines) and any("direct_sql_pandas" in x for x in lines)
    assert r.headers["Warning"] == ", ".join(lines)  # how requests joins them
    assert r.raw.headers.getlist("dataframe_resolution") == ["4.0", "4.0", "40.0"]
    assert r.headers["dataframe_resolution"] == "4.0, 4.0, 40.0"
    names = ast.literal_eval(r.headers["column_names"])
    assert names[NUC]["pt_root_id"] == "pt_root_id"
    # desired resolution: echoed, positions scaled (bounding boxes stay in voxels)
    r = post(f"{m3}/version/{v}/table/{NUC}/query", {"limit": 5, "desired_resolution": [1, 1, 1]})
    assert r.raw.headers.getlist("dataframe_resolution") == ["1.0", "1.0", "1.0"]
    same(decode(r), local(client, NUC, limit=5, desired_resolution=[1, 1, 1]))
    # no warning at all for a flagged query under the limit
    r = post(f"{m3}/version/{v}/table/{NUC}/query", {"filter_equal_dict": {NUC: {"id": 2**62}}})
    assert "Warning" not in r.headers and len(decode(r)) == 0


def test_table_notice_is_a_warning_line(tmp_path, path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(path, ds)
    meta_file = ds / "tables" / NUC / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["notice_text"] = "NOTE: nuclei\nwere re-detected"
    meta_file.write_text(json.dumps(meta))
    c = tablekit.connect(path=str(ds))
    with running_server(c) as url:
        m3 = f"{url}/materialize/api/v3/datastack/{c.datastack}"
        r = post(f"{m3}/version/{c.version}/table/{NUC}/query", {"limit": 3})
        assert (
            r.raw.headers.getlist("Warning")[0]
            == f"Table Owner Notice on {NUC}: NOTE: nuclei were re-detected"
        )
        r = requests.get(
            f"{url}/materialize/api/v2/datastack/{c.datastack}/version/{c.version}/table/{NUC}/metadata"
        )
        assert r.headers["Warning"].startswith(f"Table Owner Notice on {NUC}")
        r = post(f"{m3}/version/{c.version}/query", {"tables": [[CT, "target_id"], [NUC, "id"]], "limit": 3})
        assert f"Table Owner Notice on {NUC}" in r.headers["Warning"]


# ----------------------------------------------------------------------------- row limit
def test_row_limit_caps_and_warns(path, client):
    with running_server(path, row_limit=50) as url:
        m3 = f"{url}/materialize/api/v3/datastack/{client.datastack}"
        q = f"{m3}/version/{client.version}/table/{SYN}/query"
        r = post(q, {})
        df = decode(r)
        assert len(df) == 50 and r.headers["Warning"] == '201 - "Limited query to 50 rows'
        same(df, local(client, SYN, limit=50))
        r = post(q, {"limit": 10_000, "offset": 50})  # capped at 50 too
        assert len(decode(r)) == 50 and "Limited query to 50 rows" in r.headers["Warning"]
        same(decode(r), local(client, SYN, limit=50, offset=50))
        r = post(q, {"limit": 10})
        assert len(decode(r)) == 10 and r.headers["Warning"] == '201 - "Limited query to 10 rows'
        n = client.get_annotation_count(SYN)
        r = post(q, {"offset": n - 3})
        assert len(decode(r)) == 3 and "Warning" not in r.headers
        r = post(q, {}, count="True")  # counts are not limited
        assert decode(r)["count"].tolist() == [n]
        # live: its own text, when the count reaches the limit
        ts = dt.datetime.now(dt.timezone.utc).isoformat()
        r = post(f"{m3}/query", {"table": SYN, "timestamp": ts})
        assert len(decode(r)) == 50
        assert r.headers["Warning"] == (
            "result has 50 entries, which is equal or more"
            + " " * 9
            + "than limit of 50 there may be more results "
            "which are not shown"
        )


# ----------------------------------------------------------------------------- query answers
@pytest.fixture(scope="module")
def sample_values(client):
    nuc = local(client, NUC)
    syn = local(client, SYN)
    roots = syn["post_pt_root_id"][syn["post_pt_root_id"] != 0].value_counts().index[:3].tolist()
    return {"roots": [int(x) for x in roots], "nuc_ids": nuc["id"].tolist()[:50:7], "syn": syn, "nuc": nuc}


def test_simple_query_every_filter_kind(m3, v, client, sample_values):
    url = f"{m3}/version/{v}/table/{SYN}/query"
    roots = sample_values["roots"]
    cases = [
        ({"filter_in_dict": {"post_pt_root_id": roots}}, {"filter_in_dict": {"post_pt_root_id": roots}}),
        (
            {"filter_notin_dict": {"post_pt_root_id": roots[:1]}},
            {"filter_out_dict": {"post_pt_root_id": roots[:1]}},
        ),
        (
            {"filter_equal_dict": {"post_pt_root_id": roots[0]}},
            {"filter_equal_dict": {"post_pt_root_id": roots[0]}},
        ),
        ({"filter_greater_dict": {"size": 300}}, {"filter_greater_dict": {"size": 300}}),
        ({"filter_less_dict": {"size": 40}}, {"filter_less_dict": {"size": 40}}),
        ({"filter_greater_equal_dict": {"size": 300}}, {"filter_greater_equal_dict": {"size": 300}}),
        ({"filter_less_equal_dict": {"size": 40}}, {"filter_less_equal_dict": {"size": 40}}),
        (
            {
                "filter_spatial_dict": {
                    "post_pt_position": [[100_000, 100_000, 15_000], [250_000, 200_000, 22_000]]
                }
            },
            {
                "filter_spatial_dict": {
                    "post_pt_position": [[100_000, 100_000, 15_000], [250_000, 200_000, 22_000]]
                }
            },
        ),
    ]
    for wire, kw in cases:
        body = {k: {SYN: d} for k, d in wire.items()}
        got = decode(post(url, body))
        want = local(client, SYN, **kw)
        assert 0 < len(want) < len(sample_values["syn"]), wire
        same(got, want)
    # regex on a string column
    got = decode(
        post(f"{m3}/version/{v}/table/{CT}/query", {"filter_regex_dict": {CT: {"cell_type": "^5P"}}})
    )
    same(got, local(client, CT, merge_reference=False, filter_regex_dict={"cell_type": "^5P"}))
    assert set(got["cell_type"].str[:2]) == {"5P"}


def test_ranges_on_root_ids_and_valid_filter_are_accepted(m3, v, client, sample_values):
    # CAVE's server accepts these; tablekit's DSL refuses them on purpose, the server still answers
    url = f"{m3}/version/{v}/table/{SYN}/query"
    syn = sample_values["syn"]
    got = decode(
        post(
            url,
            {
                "filter_greater_dict": {SYN: {"pre_pt_root_id": 0}},
                "filter_equal_dict": {SYN: {"valid": True}},
            },
        )
    )
    want = syn[syn["pre_pt_root_id"] > 0]
    assert list(got["id"]) == list(want["id"])


def test_select_columns_offset_count_random_sample(m3, v, client):
    url = f"{m3}/version/{v}/table/{SYN}/query"
    got = decode(
        post(
            url, {"select_columns": ["id", "post_pt_root_id", "ctr_pt_position"], "offset": 100, "limit": 40}
        )
    )
    # selecting a root id brings its supervoxel id along (CAVE's rule)
    assert sorted(got.columns) == sorted(
        [
            "id",
            "post_pt_root_id",
            "post_pt_supervoxel_id",
            "ctr_pt_position_x",
            "ctr_pt_position_y",
            "ctr_pt_position_z",
        ]
    )
    same(
        got,
        local(
            client,
            SYN,
            select_columns=["id", "post_pt_root_id", "post_pt_supervoxel_id", "ctr_pt_position"],
            offset=100,
            limit=40,
        ),
    )
    cnt = decode(post(url, {"filter_greater_dict": {SYN: {"size": 300}}}, count="True"))
    assert cnt["count"].tolist() == [len(local(client, SYN, filter_greater_dict={"size": 300}))]
    rs = decode(post(url, {}, random_sample="25"))
    same(rs, local(client, SYN, random_sample=25))
    assert len(rs) == 25


def test_join_suffixes_follow_the_request(m3, v, client):
    url = f"{m3}/version/{v}/query"
    tables = [[CT, "target_id"], [NUC, "id"]]
    # the tables interface: the reference table's clashes get _ref (tablekit's own naming)
    body = {
        "tables": tables,
        "suffix_map": {CT: "_ref", NUC: ""},
        "filter_equal_dict": {CT: {"cell_type": "BC"}},
    }
    r = post(url, body)
    got = decode(r)
    want = client.tables[CT](cell_type="BC").query(split_positions=True, metadata=False)
    same(got, want)
    names = ast.literal_eval(r.headers["column_names"])
    assert names[CT]["id"] == "id_ref" and names[NUC]["id"] == "id"
    # query_table(merge_reference=True) sends the opposite: the target's clashes get _ref
    body["suffix_map"] = {CT: "", NUC: "_ref"}
    got2 = decode(post(url, body))
    assert got2["id"].tolist() == want["id_ref"].tolist() and got2["id_ref"].tolist() == want["id"].tolist()
    assert got2["pt_position_x"].tolist() == want["pt_position_x"].tolist()
    # no suffixes: the server's defaults x, y (no underscore)
    body.pop("suffix_map")
    got3 = decode(post(url, body))
    assert got3["idx"].tolist() == want["id_ref"].tolist() and got3["idy"].tolist() == want["id"].tolist()
    # deprecated suffixes list + select_column_map
    body = {
        "tables": tables,
        "suffixes": ["_ct", "_nuc"],
        "select_column_map": {CT: ["id", "cell_type"], NUC: ["id", "pt_root_id"]},
        "filter_in_dict": {NUC: {"pt_root_id": want["pt_root_id"].tolist()[:5]}},
        "filter_equal_dict": {CT: {"cell_type": "BC"}},
    }
    r = post(url, body)
    got4 = decode(r)
    assert sorted(got4.columns) == sorted(["id_ct", "cell_type", "id_nuc", "pt_root_id", "pt_supervoxel_id"])
    assert "deprecated" in r.headers["Warning"]
    sub = want[want["pt_root_id"].isin(want["pt_root_id"].tolist()[:5])]
    assert got4["id_ct"].tolist() == sub["id_ref"].tolist()
    r = post(url, {"tables": tables, "suffix_map": {CT: "_a", NUC: "_a"}})
    assert r.status_code == 500 and "Duplicate suffixes" in r.json()["message"]


def test_simple_query_on_a_reference_table_is_not_merged(m3, v, client):
    got = decode(post(f"{m3}/version/{v}/table/{CT}/query", {"filter_equal_dict": {CT: {"cell_type": "BC"}}}))
    same(got, local(client, CT, merge_reference=False, filter_equal_dict={"cell_type": "BC"}))


def test_view_query(m3, v, client, sample_values):
    url = f"{m3}/version/{v}/views/{VIEW}/query"
    same(decode(post(url, {})), client.query_view(VIEW, split_positions=True, metadata=False))
    box = [[100_000, 100_000, 15_000], [300_000, 250_000, 25_000]]
    got = decode(post(url, {"filter_spatial_dict": {VIEW: {"pt_position": box}}, "limit": 30}))
    same(
        got,
        client.query_view(
            VIEW, filter_spatial_dict={"pt_position": box}, limit=30, split_positions=True, metadata=False
        ),
    )
    cnt = decode(post(url, {}, count="True"))
    assert cnt["count"].tolist() == [len(client.query_view(VIEW, metadata=False))]
    r = post(url, {"desired_resolution": [8, 8, 40]}, count="True")
    assert decode(r)["count"].tolist() == cnt["count"].tolist()
    assert r.headers["dataframe_resolution"] == "8.0, 8.0, 40.0"


def test_live_query(m3, client, sample_values):
    now = dt.datetime.now(dt.timezone.utc)
    ts = client.get_timestamp() + dt.timedelta(days=3)  # between the last version and the last edits
    roots = [
        int(r)
        for r in client.query_table(SYN, timestamp=ts, limit=2000, metadata=False)["post_pt_root_id"]
        if r
    ][:3]
    body = {"table": SYN, "timestamp": ts.isoformat(), "filter_in_dict": {SYN: {"post_pt_root_id": roots}}}
    got = decode(post(f"{m3}/query", body))
    want = local(client, SYN, timestamp=ts, filter_in_dict={"post_pt_root_id": roots})
    assert len(want) > 0
    same(got, want, drop=("valid",))  # the live endpoint returns no `valid`
    # a naive timestamp is UTC, as on the server
    naive = ts.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat()
    same(decode(post(f"{m3}/query", {**body, "timestamp": naive})), want, drop=("valid",))
    # a reference table with its join, and select_columns as a dict
    body = {
        "table": CT,
        "timestamp": ts.isoformat(),
        "join_tables": [[CT, "target_id", NUC, "id"]],
        "suffixes": {CT: "_ref", NUC: ""},
        "filter_equal_dict": {CT: {"cell_type": "BC"}},
    }
    got = decode(post(f"{m3}/query", body))
    want = client.tables[CT](cell_type="BC").query(timestamp=ts, split_positions=True, metadata=False)
    same(got, want, drop=("valid", "valid_ref"))
    body["select_columns"] = {CT: ["id", "cell_type"], NUC: ["pt_root_id"]}
    got = decode(post(f"{m3}/query", body))
    assert sorted(got.columns) == ["cell_type", "id_ref", "pt_root_id"]
    # an invalid root id: error, unless allow_invalid_root_ids
    first = client.query_table(
        SYN, materialization_version=client.get_versions()[0], limit=2000, metadata=False
    )
    stale = [
        int(r)
        for r in first["post_pt_root_id"].unique()
        if r and not client.is_latest_roots([int(r)], timestamp=now)[0]
    ]
    old_root = stale[0]
    body = {
        "table": SYN,
        "timestamp": now.isoformat(),
        "filter_in_dict": {SYN: {"post_pt_root_id": [old_root]}},
    }
    r = post(f"{m3}/query", body)
    assert r.status_code == 500 and str(old_root) in r.json()["message"]
    r = post(f"{m3}/query", body, allow_invalid_root_ids="True")
    assert r.status_code == 200 and len(decode(r)) == 0 and str(old_root) in r.headers["Warning"]


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "body, needle",
    [
        ({"filter_equal_dict": {SYN: {"no_such_column": 1}}}, "no_such_column"),
        ({"filter_equal_dict": {"other_table": {"size": 1}}}, "other_table"),
        ({"filter_equal_dict": {SYN: {"size": "big"}}}, "size"),
        ({"filter_in_dict": {SYN: {"size": 5}}}, "list"),
        ({"filter_regex_dict": {SYN: {"size": "^1"}}}, "regex"),
        ({"filter_spatial_dict": {SYN: {"post_pt_position": [[1, 1, 1], [0, 0, 0]]}}}, "post_pt_position"),
        ({"filter_out_dict": {SYN: {"size": [1]}}}, "filter_out_dict"),
        ({"select_columns": ["nope"]}, "nope"),
        ({"limit": "ten"}, "limit"),
        ({"desired_resolution": [1, 1]}, "desired_resolution"),
    ],
)
def test_query_errors_are_500_json(m3, v, body, needle):
    r = post(f"{m3}/version/{v}/table/{SYN}/query", body)
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    j = r.json()
    assert j["code"] == 500 and needle in j["message"] and isinstance(j["traceback"], list)


def test_unknown_table_and_view_errors(m3, v):
    r = post(f"{m3}/version/{v}/table/no_such_table/query", {})
    assert r.status_code == 500 and "no_such_table" in r.json()["message"]
    r = post(f"{m3}/version/{v}/views/no_such_view/query", {})
    assert r.status_code == 500 and "no_such_view" in r.json()["message"]


# ----------------------------------------------------------------------------- chunkedgraph
def test_chunkedgraph_endpoints(base, client, sample_values):
    pcg = f"{base}/segmentation/api/v1/table/{client.info['pcg_table_name']}"
    hist = client.backend.history
    now = dt.datetime.now(dt.timezone.utc)
    v_ts = client.get_timestamp(client.get_versions()[0])
    syn_old = client.query_table(
        SYN, materialization_version=client.get_versions()[0], limit=500, metadata=False
    )
    old_roots = sorted({int(x) for x in syn_old["post_pt_root_id"] if x})[:40]
    r = requests.post(
        f"{pcg}/is_latest_roots",
        params={"timestamp": now.timestamp()},
        data=json.dumps({"node_ids": old_roots}),
    )
    assert r.json()["is_latest"] == client.is_latest_roots(old_roots, timestamp=now).tolist()
    assert not all(r.json()["is_latest"])  # some were edited since

    svs = np.array([int(x) for x in syn_old["post_pt_supervoxel_id"] if x][:30], dtype=np.uint64)
    r = requests.post(f"{pcg}/roots_binary", params={"timestamp": now.timestamp()}, data=svs.tobytes())
    got = np.frombuffer(r.content, dtype=np.uint64)
    assert got.tolist() == hist.roots_at(svs.astype(np.int64), now).tolist()

    r = requests.post(
        f"{pcg}/root_timestamps", params={"latest": "False"}, data=json.dumps({"node_ids": old_roots[:5]})
    )
    want = [t.timestamp() for t in client.get_root_timestamps(old_roots[:5])]
    assert r.json()["timestamp"] == pytest.approx(want)

    current = [
        int(x)
        for x in client.query_table(SYN, timestamp=now, limit=300, metadata=False)["post_pt_root_id"]
        if x
    ][:20]
    r = requests.get(
        f"{pcg}/past_id_mapping",
        params={"timestamp_past": v_ts.timestamp(), "timestamp_future": now.timestamp()},
        data=json.dumps({"root_ids": current}),
    )
    j = r.json()
    assert set(j) == {"past_id_map", "future_id_map"}
    for rid in current:
        past = j["past_id_map"][str(rid)]
        sv = hist.supervoxels_of(rid)
        assert sorted(past) == sorted({int(x) for x in hist.roots_at(sv, v_ts) if x} or {rid})
    for p, fut in j["future_id_map"].items():
        assert {int(x) for x in hist.roots_at(hist.supervoxels_of(int(p)), now) if x} == {fut}

    edited = [r for r in old_roots if not client.is_latest_roots([r], timestamp=now)[0]][:2]
    r = requests.post(f"{pcg}/lineage_graph_multiple", data=json.dumps({"root_ids": edited}))
    g = r.json()
    assert set(g) == {"directed", "multigraph", "graph", "nodes", "links"}
    ids = {n["id"] for n in g["nodes"]}
    assert set(edited) <= ids and g["links"] and all(isinstance(n["timestamp"], float) for n in g["nodes"])
    r = requests.post(
        f"{base}/segmentation/api/v1/table/wrong_table/is_latest_roots", data=json.dumps({"node_ids": [1]})
    )
    assert r.status_code == 500


# ----------------------------------------------------------------------------- auth
def test_token_required(path, client):
    secret = "s3cret-token"
    with running_server(path, token=secret) as url:
        u = f"{url}/materialize/api/v3/datastack/{client.datastack}/versions"
        r = requests.get(u)
        assert r.status_code == 401 and r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "no_token" and "WWW-Authenticate" in r.headers
        r = requests.get(u, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        r = requests.get(u, headers={"Authorization": secret})
        assert r.status_code == 400 and r.json()["error"] == "bad_auth_header"
        assert requests.get(u, headers={"Authorization": f"Bearer {secret}"}).json() == client.get_versions()
        assert requests.get(u, cookies={"middle_auth_token": secret}).status_code == 200
        assert requests.get(u, params={"middle_auth_token": secret}).status_code == 200
        assert requests.get(u, params={"middle_auth_token": "nope"}).status_code == 401
        # the header wins over the cookie
        r = requests.get(u, headers={"Authorization": "Bearer wrong"}, cookies={"middle_auth_token": secret})
        assert r.status_code == 401
        r = post(
            f"{url}/materialize/api/v3/datastack/{client.datastack}/version/{client.version}/table/{NUC}/query",
            {},
        )
        assert r.status_code == 401


# ----------------------------------------------------------------------------- quirks
def test_cave_quirks_emulate_the_real_servers_wrong_answers(path, client, sample_values):
    with running_server(path, cave_quirks=True) as url:
        m3 = f"{url}/materialize/api/v3/datastack/{client.datastack}"
        q = f"{m3}/version/{client.version}/table/{SYN}/query"
        roots = sample_values["roots"][:1]
        got = decode(post(q, {"filter_notin_dict": {SYN: {"post_pt_root_id": roots}}}))
        assert len(got) == len(sample_values["syn"])  # not-in ignored
        assert got["id"].tolist() != sorted(got["id"].tolist())  # no ORDER BY
        assert sorted(got["id"].tolist()) == sample_values["syn"]["id"].tolist()
        pages = [decode(post(q, {"offset": o, "limit": 500}))["id"].tolist() for o in (0, 500)]
        assert len(pages[0]) == 500
        r = post(
            f"{url}/materialize/api/v2/datastack/{client.datastack}/version/{client.version}/table/{SYN}/query",
            {},
        )
        assert r.status_code == 500 and r.json()["message"] == "'ipc_compress'"
        # a version time stamp with zero microseconds loses its fraction (CAVEclient cannot parse it)
        meta = requests.get(f"{m3}/metadata", params={"expired": "True"}).json()
        zero = [m for m in meta if m["time_stamp"].endswith(":00")]
        assert zero and all("." not in m["time_stamp"] for m in zero)


def test_v2_query_endpoint_without_quirks(base, client, v):
    url = f"{base}/materialize/api/v2/datastack/{client.datastack}/version/{v}/table/{NUC}/query"
    r = post(url, {"limit": 5, "desired_resolution": [1, 1, 1]})
    same(decode(r), local(client, NUC, limit=5))  # v2 ignores desired_resolution, sends no header
    assert "dataframe_resolution" not in r.headers


# ----------------------------------------------------------------------------- API and CLI
def test_create_app_arguments(path):
    with pytest.raises(ValueError):
        create_app(path, row_limit=0)
    with pytest.raises(ValueError):
        create_app(path, token="  ")
    app = create_app(tablekit.connect(path=path), row_limit=10, token="t", cave_quirks=True)
    assert app.state.tablekit.translator.row_limit == 10


def test_serve_command_is_registered():
    from tablekit.cli import _parser

    args = _parser().parse_args(
        ["serve", "--demo", "--port", "0", "--row-limit", "5", "--token", "t", "--cave-quirks"]
    )
    assert (
        args.demo
        and args.row_limit == 5
        and args.token == "t"
        and args.cave_quirks
        and args.host == "127.0.0.1"
    )


def test_allow_missing_lookups_drops_rows_with_pending_supervoxels(client):
    from tablekit.server._wire import PENDING_LOOKUPS as PENDING_TEXT
    from tablekit.server._wire import Abort, Translator

    tr = Translator(client, row_limit=100)
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    plan = tr.live({"table": NUC, "timestamp": now, "limit": 5}, {"allow_missing_lookups": "True"})
    res = client.backend.execute(plan.query).table
    i = res.column_names.index("pt_supervoxel_id")
    sv = res.column(i).to_pylist()
    sv[1] = None  # a lookup still pending
    out = tr.shape(plan, res.set_column(i, "pt_supervoxel_id", pa.array(sv, pa.int64())))
    assert out.num_rows == 4 and "valid" not in out.column_names
    assert plan.warnings[-1] == PENDING_TEXT.format(n=1)
    # without allow_missing_lookups the query fails (406, sent as 500), never null root ids
    plan = tr.live({"table": NUC, "timestamp": now, "limit": 5}, {})
    with pytest.raises(Abort, match=r"^406 Not Acceptable: There are 1 annotations that need supervoxel"):
        tr.shape(plan, res.set_column(i, "pt_supervoxel_id", pa.array(sv, pa.int64())))


def test_concurrent_requests_get_their_own_answers(m3, v, client, sample_values):
    from concurrent.futures import ThreadPoolExecutor

    roots = sample_values["roots"]
    ts = (client.get_timestamp() + dt.timedelta(days=2)).isoformat()
    jobs = [
        (f"{m3}/version/{v}/table/{SYN}/query", {"filter_in_dict": {SYN: {"post_pt_root_id": [r]}}})
        for r in roots
    ] + [
        (f"{m3}/version/{v}/query", {"tables": [[CT, "target_id"], [NUC, "id"]], "limit": 50}),
        (f"{m3}/version/{v}/views/{VIEW}/query", {"limit": 40}),
        (f"{m3}/query", {"table": NUC, "timestamp": ts, "limit": 30}),
    ]
    first = [decode(post(u, b)) for u, b in jobs]
    with ThreadPoolExecutor(8) as pool:
        again = list(pool.map(lambda i: decode(post(*jobs[i % len(jobs)])), range(4 * len(jobs))))
    for i, df in enumerate(again):
        pd.testing.assert_frame_equal(df, first[i % len(jobs)])


def test_the_pandas_metadata_of_an_answer_follows_its_column_names_and_types():
    """The ``pandas`` metadata (remembered per schema) changes with a column's type or name, not
    with the schema's own metadata."""
    from tablekit.server import _wire

    def numpy_types(schema: pa.Schema) -> list[tuple[str, str]]:
        return [(c["name"], c["numpy_type"]) for c in json.loads(_wire._pandas_metadata(schema))["columns"]]

    a = pa.schema([("x", pa.int64()), ("t", pa.timestamp("us", tz="UTC")), ("ok", pa.bool_())])
    assert numpy_types(a) == [("x", "Int64"), ("t", "datetime64[us]"), ("ok", "boolean")]
    assert numpy_types(pa.schema([("x", pa.float64()), *list(a)[1:]]))[0] == ("x", "float64")
    assert numpy_types(pa.schema([("y", pa.int64()), *list(a)[1:]]))[0] == ("y", "Int64")
    assert numpy_types(a.with_metadata({b"k": b"v"})) == numpy_types(a)
