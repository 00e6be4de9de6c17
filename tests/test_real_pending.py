"""Pending supervoxel lookups against the *real* MaterializationEngine (issue 13 §2): a second real
server (tests/_real_server.py) over a datastack whose newest annotations still wait for their
supervoxel lookup (no segmentation row in the live database, as a deployment holds them while
"new annotation ingest" runs). tests/test_pending_lookups.py asks the same of ``tablekit serve``.

* tablekit's live queries raise tablekit's :class:`QueryError` as the local engine does (the same
  text, the server's own words kept after it);
* with ``allow_missing_lookups=True`` they return the local engine's rows and its one warning;
* issue 13 §3 item 9: the real live path checks the rows *before* it applies root-id filters
  (``new_query.py`` ``strip_root_id_filters``), so it refuses a query whose root-id filter no
  pending annotation matches, which the local engine answers; tablekit's error says so (not
  "matching this live query").

The pending annotations are created after the datastack's only version: a frozen version never
holds an annotation without its segmentation row (``merge_tables`` joins the two tables).
"""

from __future__ import annotations

import datetime as dt
import warnings

import pandas as pd
import pytest
from test_pending_lookups import LATER, T0, _tags

import tablekit
import tablekit.datastack as tkds
from tablekit import TableSource, build_datastack
from tablekit.errors import QueryError, ServerError

pytest.importorskip("_real_server", reason="the real-server harness (tests/_real_server.py) is absent")

pytestmark = [
    pytest.mark.realserver,
    pytest.mark.filterwarnings("ignore:the server sent no column 'created'"),
]

#: the two annotations (ids 3, 5) whose lookup is pending are made half a day after version 1
PENDING_CREATED = T0 + dt.timedelta(days=1, hours=12)


@pytest.fixture(scope="module")
def pending_path(tmp_path_factory) -> str:
    path = build_datastack(
        tmp_path_factory.mktemp("real-pending") / "ds",
        [TableSource("tags", "bound_tag", _tags())],
        name="pending",
        timestamp=T0 + dt.timedelta(days=1),
    )
    # the pending two are made after version 1: rewrite their history, rebuild the snapshot
    ann = pd.read_parquet(f"{path}/tables/tags/annotations")
    ann["created"] = ann["created"].where(~ann["id"].isin([3, 5]), pd.Timestamp(PENDING_CREATED))
    tkds.write_annotations(path, "tags", ann)
    tkds.materialize(path)
    return path


@pytest.fixture(scope="module")
def servers(pending_path):
    import _real_server

    reason = _real_server.unavailable()
    if reason:
        pytest.skip(f"real server: {reason}")
    server = _real_server.RealServer(pending_path, query_limit=500)
    try:
        yield (
            tablekit.connect(path=pending_path),
            tablekit.connect(server.datastack, server=server.url, cache_dir=False, progress=False),
        )
    finally:
        server.close()


def _refusal(fn) -> QueryError:
    with pytest.raises(QueryError) as info:
        fn()
    return info.value


def test_the_version_has_no_pending_rows(servers):
    local, real = servers
    for c in (local, real):
        assert sorted(c.query_table("tags", metadata=False)["id"]) == [1, 2, 4, 6]


def test_live_queries_raise_the_local_error(servers):
    local, real = servers
    calls = {
        "dsl": lambda c: c.tables.tags().live_query(LATER, select_columns=["id", "tag"]),
        "classic": lambda c: c.live_query("tags", LATER),
        "count": lambda c: c.live_query("tags", LATER, get_counts=True),
        "tag filter": lambda c: c.tables.tags(tag=["a", "b", "c"]).live_query(LATER),
    }
    for name, call in calls.items():
        want, got = _refusal(lambda call=call: call(local)), _refusal(lambda call=call: call(real))
        head = "tags: 2 annotation(s) matching this live query still wait for their supervoxel lookup"
        for e in (want, got):
            assert str(e).startswith(head), (name, str(e))
            assert "pt_supervoxel_id" in str(e) and LATER.isoformat() in str(e)
            assert str(e).endswith(
                "Pass allow_missing_lookups=True to leave them out, or query an earlier time"
            ), name
        assert "There are 2 annotations that need supervoxel lookups" in str(got)  # the server's words
        assert isinstance(got.__cause__, ServerError) and got.__cause__.status == 500


def test_allow_missing_lookups_gives_the_local_rows_and_warning(servers):
    local, real = servers
    frames, notes = [], []
    for c in (local, real):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            frames.append(c.tables.tags().live_query(LATER, allow_missing_lookups=True, metadata=False))
        notes.append([str(x.message) for x in w if "supervoxel lookup" in str(x.message)])
    want, got = frames
    assert want["id"].tolist() == [1, 2, 4, 6]
    pd.testing.assert_frame_equal(got.drop(columns="created"), want.drop(columns="created"))
    assert [len(x) for x in notes] == [1, 1], notes
    for n in notes:
        assert n[0].startswith("tags: 2 annotation(s) matching this live query still wait")
        assert n[0].endswith("; left out")
    n = real.live_query("tags", LATER, get_counts=True, allow_missing_lookups=True)
    assert n["count"].tolist() == [4]


def test_item9_a_root_filter_is_applied_after_the_check(servers):
    """The local engine answers a root-id filter that no pending annotation matches; the real
    server counts the pending annotations before it applies the root-id filter and refuses. The
    error says which rows it counted; allow_missing_lookups=True gives the local answer."""
    local, real = servers
    rows = local.live_query("tags", LATER, allow_missing_lookups=True, metadata=False)
    root = int(rows["pt_root_id"].iloc[0])
    want = local.live_query("tags", LATER, filter_equal_dict={"pt_root_id": root}, metadata=False)
    assert len(want) >= 1
    e = _refusal(lambda: real.live_query("tags", LATER, filter_equal_dict={"pt_root_id": root}))
    assert str(e).startswith(
        "tags: 2 annotation(s) selected by this live query's filters other than its root-id filters "
        "(pt_root_id; the server checks the rows before it applies those) still wait for their "
        "supervoxel lookup"
    ), str(e)
    assert "matching this live query" not in str(e)
    with pytest.warns(UserWarning, match="left out"):
        got = real.live_query(
            "tags", LATER, filter_equal_dict={"pt_root_id": root}, allow_missing_lookups=True, metadata=False
        )
    pd.testing.assert_frame_equal(got.drop(columns="created"), want.drop(columns="created"))
