"""The query options are defined once (tablekit.query.options) and every entry point forwards to
them: the filter methods, the classic API, the stubs; the public seams (``Client.build_query``,
``Client.execute``, ``tablekit.introspect``) run a question end to end. Oracles: the pandas replay
of the raw history (tests/_oracle.py) and hand-written option lists."""

from __future__ import annotations

import datetime as dt
import inspect
import typing

import _oracle
import attrs
import numpy as np
import pytest

import tablekit
from tablekit.errors import QueryError, UnknownArgumentError, VersionError
from tablekit.query import options

NUC = "nucleus_detection_v0"
SYN = "synapses_pni_2"

#: hand-written: what `.query()` takes (issue 14: spelled out once, here only as the oracle)
QUERY = [
    "select_columns", "offset", "limit", "split_positions", "materialization_version", "timestamp",
    "metadata", "desired_resolution", "get_counts", "random_sample", "output",
    "allow_invalid_root_ids", "allow_missing_lookups", "complete",
]  # fmt: skip


def test_every_entry_point_takes_the_same_options(client):
    f = client.tables[NUC]()
    assert list(inspect.signature(f.query).parameters) == QUERY
    assert list(inspect.signature(f.explain).parameters) == QUERY
    live = [n for n in QUERY if n not in ("materialization_version", "timestamp", "get_counts")]
    assert list(inspect.signature(f.live_query).parameters) == ["timestamp", *live]
    for method, lead in ((client.query_table, 11), (client.query_view, 10), (client.synapse_query, 7)):
        assert list(inspect.signature(method).parameters)[lead:] == QUERY, method.__name__


def test_type_checker_kwargs_match_the_runtime_options():
    """QueryKwargs (for mypy/pyright) names exactly the options, each with a type."""
    hints = typing.get_type_hints(options.QueryKwargs)
    assert sorted(hints) == sorted(QUERY)
    live = typing.get_type_hints(options.LiveQueryKwargs)
    assert sorted(live) == sorted(set(QUERY) - {"materialization_version", "timestamp", "get_counts"})
    for name, a in options.option_fields().items():
        assert a.metadata["doc"].strip() and a.metadata["stub"].strip(), name


def test_explain_takes_every_query_option(client):
    """Before: explain(split_positions=True) (also output=, allow_missing_lookups=) was a TypeError."""
    f = client.tables[NUC](volume={">": 100})
    for kw in (
        {"split_positions": True},
        {"output": "arrow"},
        {"allow_missing_lookups": True},
        {"metadata": False},
    ):
        assert "volume" in f.explain(**kw)
    with pytest.raises(UnknownArgumentError, match=r"explain\(\) has no argument 'limt'.*'limit'"):
        f.explain(limt=3)
    with pytest.raises(
        QueryError, match=r"nucleus_detection_v0: output must be 'pandas' or 'arrow', got 'csv'"
    ):
        f.explain(output="csv")


@pytest.mark.parametrize(
    ("kw", "err", "text"),
    [
        ({"limit": 0}, QueryError, "limit must be a positive int or None"),
        ({"offset": -1}, QueryError, "offset must be an int >= 0"),
        ({"limit": 2**63}, QueryError, "beyond any table"),
        ({"random_sample": True}, QueryError, "random_sample must be a positive int"),
        ({"desired_resolution": [1, 1]}, QueryError, "desired_resolution must be three positive numbers"),
        ({"complete": None}, QueryError, "complete must be True or False, got None"),
        ({"metadata": "yes"}, QueryError, "metadata must be True or False"),
        ({"materialization_version": "1"}, VersionError, "a materialization version is an int"),
    ],
)
def test_bad_options_name_the_table_the_option_and_the_value(client, kw, err, text):
    for call in (
        lambda: client.tables[NUC]().query(**kw),
        lambda: client.tables[NUC]().explain(**kw),
        lambda: client.query_table(NUC, **kw),
        lambda: client.synapse_query(pre_ids=[1], **kw),
    ):
        with pytest.raises(err, match=text) as e:
            call()
        assert str(e.value).split(":")[0] in (NUC, SYN)


def test_execute_a_built_query_equals_the_replay(client, path):
    """The public seams: to_query → Client.execute, against the pandas replay of the raw history."""
    v = client.version
    q = client.tables[NUC](volume={">": 200}).to_query(limit=7, offset=3, select_columns=["id", "volume"])
    assert q.version == v and q.limit == 7 and q.output == tablekit.OutputOptions()
    got = client.execute(q)
    want = _oracle.snapshot(path, NUC, _oracle.version_timestamp(path, v))
    want = want[want["volume"] > 200].sort_values("id").iloc[3:10]
    assert got["id"].tolist() == want["id"].tolist()
    np.testing.assert_array_equal(got["volume"].to_numpy(), want["volume"].to_numpy())
    # the output options travel with the Query
    q2 = client.build_query(
        client.tables[NUC](volume={">": 200}),
        options=tablekit.QueryOptions(limit=7, offset=3),
        output=tablekit.OutputOptions(output="arrow", split_positions=True, metadata=False),
    )
    t = client.execute(q2)
    assert t.num_rows == 7 and "pt_position_x" in t.column_names


def test_introspect_reads_the_class(client):
    info = tablekit.introspect(client.tables[SYN])
    assert info.table == SYN and info.kind == "table" and info.version == client.version
    assert info.fields["pre_pt_root_id"].column.role.value == "root_id"
    assert "pre_pt_position_bbox" in info.fields and info.fields["pre_pt_position_bbox"].bbox
    assert [c.name for c in info.layout][:1] == ["id"]
    assert tablekit.introspect(client.tables[SYN](size=5)) == info
    with pytest.raises(TypeError, match="filter class"):
        tablekit.introspect(object())


def test_synapse_query_takes_allow_missing_lookups(client):
    """Its live error told users to pass allow_missing_lookups, which it did not take."""
    t = client.get_timestamp(client.version) + dt.timedelta(hours=1)
    pre = int(client.tables[SYN]().query(limit=1)["pre_pt_root_id"].iloc[0])
    a = client.synapse_query(pre_ids=[pre], timestamp=t, allow_missing_lookups=True, metadata=False)
    b = client.tables[SYN](pre_pt_root_id=[pre]).live_query(t, metadata=False)
    b = b[b["pre_pt_root_id"] != b["post_pt_root_id"]].reset_index(drop=True)
    assert a["id"].tolist() == b["id"].tolist()


def test_options_are_frozen_and_validated_on_construction():
    o = tablekit.QueryOptions(limit=np.int64(5), select_columns=["id"])
    assert o.limit == 5 and type(o.limit) is int and o.select_columns == ("id",)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        o.limit = 3  # type: ignore[misc]
    with pytest.raises(QueryError, match="limit must be a positive int"):
        tablekit.QueryOptions(limit=-1)
