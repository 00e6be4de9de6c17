"""Pending supervoxel lookups in live queries, end to end over a real ``tablekit serve`` on 127.0.0.1.

An annotation whose supervoxel lookup has not run yet (a null supervoxel id in a local datastack,
the placeholder ``1`` on a deployment) has no root id at any time. The real live endpoint
(cave-wire-protocol.md §5.1 steps 4-5, §5.3) checks every supervoxel column of the answer:

* ``allow_missing_lookups=false``: ``abort(406, "There are N annotations that need supervoxel
  lookups, …")``, which its catch-all sends as HTTP 500 ``{"code": 500, "message": "406 Not
  Acceptable: …", "traceback": [...]}`` (§6.3);
* ``allow_missing_lookups=true``: those rows are left out and the same text is a ``Warning``;
* the rows of the materialized version it starts from fail whatever the flag says (emulated with
  ``cave_quirks``).

tablekit over HTTP must raise the local engine's ``QueryError`` (naming the table, the columns, how
many, and the fix) and, with ``allow_missing_lookups=True``, return the local engine's rows.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings

import _mini_datastack as mini
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import requests
from _server import running_server

import tablekit
from tablekit import TableSource, build_datastack
from tablekit.errors import QueryError

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 1, 1, tzinfo=UTC)
LATER = T0 + dt.timedelta(days=2)
SYN, NUC, CT = "synapses_pni_2", "nucleus_detection_v0", "cell_type_ref"
AFTER = mini.VERSIONS[3] + dt.timedelta(days=9, hours=3)  # after the last version of the mini datastack
TEXT = (
    "There are {n} annotations that need supervoxel lookups, wait till new annotation ingest is done "
    "or pick an less recent timestamp"
)
FLAGS = {"return_pyarrow": "True", "arrow_format": "True", "direct_sql_pandas": "True"}


# --------------------------------------------------------------------------- datastacks and servers


def _tags() -> pd.DataFrame:
    """Six tags; the lookups of ids 3 and 5 are pending (null supervoxel and root id)."""
    rng = np.random.default_rng(9)
    n = 6
    sv = [2**56 + i for i in range(n)]
    roots = [864691135000000000 + i % 4 for i in range(n)]
    for i in (2, 4):
        sv[i] = roots[i] = None
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "created": [T0] * n,
            "valid": True,
            "tag": rng.choice(["a", "b", "c"], n),
            "pt_position": [np.array(p) for p in rng.integers(1000, 9000, size=(n, 3))],
            "pt_supervoxel_id": pd.array(sv, dtype="Int64"),
            "pt_root_id": pd.array(roots, dtype="Int64"),
        }
    )


def build_pending_datastack(path) -> str:
    """Datastack ``pending``: table ``tags`` (version 1 a day after ``T0``); also used by the
    CAVEclient interop test (tests/test_interop.py)."""
    build_datastack(
        path,
        [TableSource("tags", "bound_tag", _tags())],
        name="pending",
        timestamp=T0 + dt.timedelta(days=1),
    )
    return str(path)


@pytest.fixture(scope="module")
def tags_path(tmp_path_factory) -> str:
    return build_pending_datastack(tmp_path_factory.mktemp("pending") / "ds")


@pytest.fixture(scope="module")
def tags_local(tags_path):
    return tablekit.connect(path=tags_path)


@pytest.fixture(scope="module")
def tags_base(tags_path):
    with running_server(tags_path) as url:
        yield url


@pytest.fixture(scope="module")
def tags_http(tags_base):
    return tablekit.connect("pending", server=tags_base, cache_dir=False)


@pytest.fixture(scope="module")
def mini_path(tmp_path_factory) -> str:
    return str(mini.write_mini_datastack(tmp_path_factory.mktemp("pending-mini") / "mini"))


@pytest.fixture(scope="module")
def mini_local(mini_path):
    return tablekit.connect(path=mini_path)


@pytest.fixture(scope="module")
def mini_base(mini_path):
    with running_server(mini_path) as url:
        yield url


@pytest.fixture(scope="module")
def mini_quirks(mini_path):
    with running_server(mini_path, cave_quirks=True) as url:
        yield url


def live_post(base: str, ds: str, body: dict, **params: str) -> requests.Response:
    return requests.post(
        f"{base}/materialize/api/v3/datastack/{ds}/query",
        data=json.dumps(body),
        params={**FLAGS, **params},
        headers={"Content-Type": "application/json", "Accept-Encoding": "zstd"},
        timeout=60,
    )


def assert_refused(r: requests.Response, n: int) -> None:
    """The deployment's answer to ``abort(406, …)``: HTTP 500 with ``{code, message, traceback}``."""
    assert r.status_code == 500, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert sorted(body) == ["code", "message", "traceback"]
    assert body["code"] == 500
    assert body["message"] == "406 Not Acceptable: " + TEXT.format(n=n)
    assert isinstance(body["traceback"], list) and all(isinstance(x, str) for x in body["traceback"])


def arrow_of(r: requests.Response) -> pd.DataFrame:
    assert r.status_code == 200, r.text[:2000]
    with pa.ipc.open_stream(r.content) as reader:
        return reader.read_pandas()


def warning_lines(r: requests.Response) -> list[str]:
    return [v for k, v in r.raw.headers.items() if k.lower() == "warning"]


def deployment(
    frame: pd.DataFrame, sv_columns: list[str], allow: bool, materialized: np.ndarray | None = None
) -> tuple[int | None, list[int], list[int]]:
    """The real server's ``update_rootids`` on a pandas oracle frame: ``(refused with N or None,
    ids kept, warning counts)``, supervoxel column by column, the materialized part first."""
    every = np.ones(len(frame), dtype=bool)
    parts = [(every, allow)] if materialized is None else [(materialized, False), (~materialized, allow)]
    keep = every.copy()
    counts: list[int] = []
    for part, allowed in parts:
        for c in sv_columns:
            pending = part & keep & frame[c].isna().to_numpy()
            n = int(pending.sum())
            if n and not allowed:
                return n, [], counts
            if n:
                counts.append(n)
                keep &= ~pending
    return None, frame["id"][keep].tolist(), counts


def mini_frame(mini_path: str, table: str, t: dt.datetime) -> pd.DataFrame:
    """The table at ``t`` replayed with pandas (independent of the engine), sorted by id."""
    f = mini.materialize(mini.read_annotations(mini_path, table), mini.read_history(mini_path), t, table)
    return f.sort_values("id").reset_index(drop=True)


# --------------------------------------------------------------------------- raw HTTP


def test_raw_http_refuses_pending_lookups_like_a_deployment(tags_base):
    body = {"table": "tags", "timestamp": LATER.isoformat()}
    assert_refused(live_post(tags_base, "pending", body), 2)  # the default is false
    assert_refused(live_post(tags_base, "pending", body, allow_missing_lookups="False"), 2)
    # found in the supervoxel ids even when they are not selected, and on the JSON path too
    sel = {**body, "select_columns": {"tags": ["id", "tag"]}}
    assert_refused(live_post(tags_base, "pending", sel, allow_missing_lookups="false"), 2)
    assert_refused(live_post(tags_base, "pending", body, return_pyarrow="False"), 2)
    # a filter that leaves the pending rows out: no refusal
    ok = {**body, "filter_in_dict": {"tags": {"id": [1, 2, 4]}}}
    assert arrow_of(live_post(tags_base, "pending", ok))["id"].tolist() == [1, 2, 4]


def test_raw_http_allow_missing_lookups_leaves_them_out_with_the_deployments_warning(tags_base, tags_local):
    body = {"table": "tags", "timestamp": LATER.isoformat()}
    r = live_post(tags_base, "pending", body, allow_missing_lookups="True")
    got = arrow_of(r)
    assert TEXT.format(n=2) in warning_lines(r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = tags_local.live_query(
            "tags", LATER, allow_missing_lookups=True, split_positions=True, metadata=False
        )
    assert got["id"].tolist() == want["id"].tolist() == [1, 2, 4, 6]
    assert got["pt_root_id"].notna().all()
    pd.testing.assert_frame_equal(
        got[list(want.columns.drop("valid"))], want.drop(columns="valid"), check_dtype=False
    )
    # not selected: the supervoxel ids are checked, then left out of the answer and its column_names
    r = live_post(
        tags_base,
        "pending",
        {**body, "select_columns": {"tags": ["id", "tag"]}},
        allow_missing_lookups="true",
    )
    got = arrow_of(r)
    assert list(got.columns) == ["id", "tag"] and got["id"].tolist() == [1, 2, 4, 6]
    assert r.headers["column_names"] == repr({"tags": {"id": "id", "tag": "tag"}})
    assert TEXT.format(n=2) in warning_lines(r)


def test_raw_http_counts_supervoxel_column_by_column(mini_base, mini_local, mini_path):
    """Two bound points: the count is the first supervoxel column's; with allow_missing_lookups
    one warning per column, the rows of both left out."""
    frame = mini_frame(mini_path, SYN, AFTER)
    body = {"table": SYN, "timestamp": AFTER.isoformat()}
    ok = live_post(mini_base, "mini", body, allow_missing_lookups="True")
    got = arrow_of(ok)
    svs = [c for c in got.columns if c.endswith("_supervoxel_id")]
    assert sorted(svs) == ["post_pt_supervoxel_id", "pre_pt_supervoxel_id"]
    n, _, _ = deployment(frame, svs, allow=False)
    assert n is not None and n > 0
    assert_refused(live_post(mini_base, "mini", body), n)
    _, ids, counts = deployment(frame, svs, allow=True)
    assert len(counts) == 2 and all(TEXT.format(n=k) in warning_lines(ok) for k in counts)
    assert got["id"].tolist() == ids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = mini_local.query_table(SYN, timestamp=AFTER, allow_missing_lookups=True, metadata=False)
    assert want["id"].tolist() == ids
    assert got[svs].notna().all().all()


def test_quirks_refuse_pending_lookups_of_the_materialized_version_whatever_the_flag(mini_quirks, mini_path):
    """§5.1 step 4: the materialized step does not consult allow_missing_lookups. In a local
    datastack a pending lookup is part of every snapshot taken after the annotation was created,
    so this does happen; ``tablekit serve`` emulates it only with ``cave_quirks``."""
    frame = mini_frame(mini_path, SYN, AFTER)
    v3 = pd.Timestamp(mini.VERSIONS[3])
    materialized = (frame["created"] <= v3).to_numpy()
    svs = ["post_pt_supervoxel_id", "pre_pt_supervoxel_id"]
    body = {"table": SYN, "timestamp": AFTER.isoformat()}
    n, _, _ = deployment(frame, svs, allow=True, materialized=materialized)
    assert n is not None and n < deployment(frame, svs, allow=False)[0]  # the materialized rows only
    assert_refused(live_post(mini_quirks, "mini", body, allow_missing_lookups="True"), n)
    assert_refused(live_post(mini_quirks, "mini", body, allow_missing_lookups="False"), n)
    # only rows created after the version: the flag decides again
    first_new = int(frame["id"][~materialized].min())
    new = {**body, "filter_greater_equal_dict": {SYN: {"id": first_new}}}
    sub = frame[frame["id"] >= first_new].reset_index(drop=True)
    n, _, _ = deployment(sub, svs, allow=False)
    assert n
    assert_refused(live_post(mini_quirks, "mini", new), n)
    r = live_post(mini_quirks, "mini", new, allow_missing_lookups="True")
    _, ids, counts = deployment(sub, svs, allow=True)
    assert sorted(arrow_of(r)["id"]) == ids  # quirks: no ORDER BY
    assert all(TEXT.format(n=k) in warning_lines(r) for k in counts)


# --------------------------------------------------------------------------- tablekit over HTTP


def _refusal(fn) -> QueryError:
    with pytest.raises(QueryError) as info:
        fn()
    return info.value


def test_tablekit_over_http_raises_the_local_error(tags_local, tags_http):
    calls = {
        "dsl": lambda c: c.tables.tags().live_query(LATER, select_columns=["id", "tag"]),
        "classic": lambda c: c.live_query("tags", LATER),
        "count": lambda c: c.live_query("tags", LATER, get_counts=True),
    }
    for name, call in calls.items():
        local = _refusal(lambda call=call: call(tags_local))
        remote = _refusal(lambda call=call: call(tags_http))
        assert type(remote) is type(local) is QueryError, name
        for e in (local, remote):
            text = str(e)
            assert text.startswith(
                "tags: 2 annotation(s) matching this live query still wait for their supervoxel lookup"
            )
            assert "pt_supervoxel_id" in text and LATER.isoformat() in text
            assert "Pass allow_missing_lookups=True to leave them out, or query an earlier time" in text
        assert "There are 2 annotations that need supervoxel lookups" in str(remote)  # the server's words
        assert isinstance(remote.__cause__, tablekit.errors.ServerError)  # status and URL kept
        assert remote.__cause__.status == 500 and "/query" in remote.__cause__.url


def test_tablekit_over_http_allow_missing_lookups_gives_the_local_rows_and_warning(tags_local, tags_http):
    for c in (tags_local, tags_http):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            got = c.tables.tags().live_query(LATER, allow_missing_lookups=True, metadata=False)
        notes = [str(x.message) for x in w if "supervoxel lookup" in str(x.message)]
        assert len(notes) == 1, [str(x.message) for x in w]
        assert notes[0].startswith("tags: 2 annotation(s) matching this live query still wait")
        assert notes[0].endswith("; left out") and "pt_supervoxel_id" in notes[0]
        if c is tags_local:
            want = got
    pd.testing.assert_frame_equal(got, want)
    assert got["id"].tolist() == [1, 2, 4, 6]
    # the supervoxel column not selected: still checked, still left out
    with pytest.warns(UserWarning, match="left out"):
        sel = tags_http.tables.tags().live_query(
            LATER, allow_missing_lookups=True, select_columns=["id", "tag"], metadata=False
        )
    pd.testing.assert_frame_equal(sel, want[["id", "tag"]])


def test_a_live_count_counts_the_rows_the_live_query_gives(tags_local, tags_http):
    """A count equals len() of the rows: the pending lookups are refused (above) or, allowed, left
    out with the same single warning, on both paths; a root-id filter no pending row can match
    counts without them."""
    for c in (tags_local, tags_http):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            n = c.live_query("tags", LATER, get_counts=True, allow_missing_lookups=True, metadata=False)
        rows = c.live_query("tags", LATER, allow_missing_lookups=True, metadata=False)
        assert n["count"].tolist() == [len(rows)] == [4]
        notes = [str(x.message) for x in w if "supervoxel lookup" in str(x.message)]
        assert len(notes) == 1 and notes[0].endswith("; left out")
        root = int(rows["pt_root_id"].iloc[0])
        one = c.live_query("tags", LATER, get_counts=True, filter_equal_dict={"pt_root_id": root})
        assert one["count"].tolist() == [int((rows["pt_root_id"] == root).sum())]


def test_tablekit_over_http_two_points_and_joins(mini_local, mini_base):
    http = tablekit.connect("mini", server=mini_base, cache_dir=False)
    for table in (SYN, CT):  # two bound points; a reference table merged with the nuclei
        local = _refusal(lambda table=table: mini_local.query_table(table, timestamp=AFTER))
        remote = _refusal(lambda table=table: http.query_table(table, timestamp=AFTER))
        assert str(local).startswith(f"{table}: ") and str(remote).startswith(f"{table}: ")
        svs = ["post_pt_supervoxel_id", "pre_pt_supervoxel_id"] if table == SYN else ["pt_supervoxel_id"]
        for c in svs:
            assert c in str(local) and c in str(remote)
        if table == SYN:  # the server counts one column: a lower bound of the annotations
            assert " at least " in str(remote)
        frames, notes = [], []
        for c in (mini_local, http):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                frames.append(
                    c.query_table(table, timestamp=AFTER, allow_missing_lookups=True, metadata=False)
                )
            notes.append([str(x.message) for x in w if "supervoxel lookup" in str(x.message)])
        want, got = frames
        assert len(want) > 0
        pd.testing.assert_frame_equal(got, want)
        # one warning with the same count (the server's per-column counts add up)
        assert [len(x) for x in notes] == [1, 1]
        assert notes[1][0].split(" (")[0] == notes[0][0].split(" (")[0]
        assert notes[1][0].endswith("; left out")


def test_tablekit_over_http_names_the_materialized_rule(mini_quirks):
    """Against a server that refuses pending lookups of its materialized version whatever the flag
    says (a real deployment, or cave_quirks), the message does not suggest the flag again."""
    http = tablekit.connect("mini", server=mini_quirks, cache_dir=False)
    e = _refusal(lambda: http.query_table(SYN, timestamp=AFTER, allow_missing_lookups=True))
    assert str(e).startswith(f"{SYN}: at least ")
    assert "even with allow_missing_lookups=True" in str(e) and "earlier time" in str(e)


def test_a_paged_live_answer_warns_once_with_the_total(tags_path, tags_local):
    """Through a 2-row limit the live answer comes in pages, each with its own server warning;
    the user gets one warning with the total the server left out (2), as from the local engine."""
    with running_server(tags_path, row_limit=2) as url:
        http = tablekit.connect("pending", server=url, cache_dir=False, progress=False)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            got = http.tables.tags().live_query(LATER, allow_missing_lookups=True, metadata=False)
    assert got.attrs == {} and len(got) == 4
    notes = [str(x.message) for x in w if "supervoxel lookup" in str(x.message)]
    assert len(notes) == 1, notes
    assert notes[0].startswith("tags: 2 annotation(s) matching this live query still wait")
    want = tags_local.tables.tags().live_query(LATER, allow_missing_lookups=True, metadata=False)
    pd.testing.assert_frame_equal(got, want)


def test_paging_counts_rows_a_server_left_out_toward_its_limit(tags_path, tags_local, monkeypatch):
    """A deployment may count its answer for the "there may be more results" warning after leaving
    out the pending lookups (a page of 2 then holds 1 row and no warning). The client adds the rows
    the server says it left out, sees the page was full, and still gets every row."""
    from tablekit.server import _wire as server_wire

    def after_leaving_out(self, plan, rows):  # the warning as such a deployment would count it
        if plan.live and plan.limit is not None and rows >= plan.limit:
            return [server_wire.LIVE_LIMIT_WARNING.format(n=rows, limit=plan.limit)]
        return []

    monkeypatch.setattr(server_wire.Translator, "limit_warnings", after_leaving_out)
    with running_server(tags_path, row_limit=2) as url:
        http = tablekit.connect("pending", server=url, cache_dir=False, progress=False)
        with pytest.warns(UserWarning, match="2 annotation"):
            got = http.tables.tags().live_query(LATER, allow_missing_lookups=True, metadata=False)
    assert got["id"].tolist() == [1, 2, 4, 6]
    want = tags_local.tables.tags().live_query(LATER, allow_missing_lookups=True, metadata=False)
    pd.testing.assert_frame_equal(got, want)
