"""The bad-input catalogue (issue 12): mistakes a careless user or a broken server makes, each
refused with a tablekit error of the expected class whose message names what was wrong (table,
column, value) and the fix.

Every case of ``CASES`` is a call, the exact error class it must raise and the words its message
must hold. It runs on the local engine and over HTTP against a real ``tablekit serve`` on
127.0.0.1, and both backends must raise the same class (issue 12, item 11). Over HTTP a case
marked ``before_request`` must send no request at all: the mistake is knowable from the arguments
and the cached metadata. ``MALFORMED`` are server answers no CAVE deployment should send, served
by a small proxy (tests/_crafted.py) in front of the real server; ``CLI`` are ``tablekit``
command lines. The figure for the issue: every parameter of this file is one case refused well.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import numpy as np
import pandas as pd
import pytest
import requests
from _crafted import crafted_proxy
from _server import running_server

import tablekit
from tablekit.backends.cave.transport import Urllib3Transport
from tablekit.errors import (
    DatastackError,
    FilterValueError,
    OperatorError,
    QueryError,
    SchemaError,
    ServerError,
    TablekitError,
    UnknownArgumentError,
    UnknownColumnError,
    UnknownTableError,
    VersionError,
)

N = "nucleus_detection_v0"
S = "synapses_pni_2"
C = "aibs_metamodel_celltypes_v661"
P = "proofreading_status_and_strategy"
V = "single_neurons"
UTC = dt.timezone.utc
BOX = [[0, 0, 0], [10, 10, 10]]


@attrs.frozen
class Case:
    """One bad input: ``call(client, facts)`` must raise exactly ``error`` with every needle in
    its message."""

    id: str
    call: Callable[[Any, Any], Any]
    error: type[TablekitError]
    needles: tuple[str, ...] = ()
    backends: tuple[str, ...] = ("local", "http")
    before_request: bool = True  # over HTTP: refused before any request


def case(
    id: str, call: Callable[[Any, Any], Any], error: type[TablekitError], *needles: str, **kw: Any
) -> Case:
    return Case(id, call, error, tuple(needles), **kw)


def t(name: str) -> Callable[[Any], Any]:
    return lambda c: c.tables[name]


nuc, syn, ct, pr = t(N), t(S), t(C), t(P)
FIX = "Pass"  # the fix of a wrong filter value starts with "Pass …"

# fmt: off
CASES: list[Case] = [
    # ---------------------------------------------------------------- filter values
    case("id-str", lambda c, f: nuc(c)(id="5"), FilterValueError, N, "'id'", "'5'", FIX),
    case("id-float", lambda c, f: nuc(c)(id=5.5), FilterValueError, N, "'id'", "5.5", FIX),
    case("id-bool", lambda c, f: nuc(c)(id=True), FilterValueError, N, "'id'", "True", "bool"),
    case("id-nan", lambda c, f: nuc(c)(id=float("nan")), FilterValueError, N, "'id'", "NaN"),
    case("id-2**63", lambda c, f: nuc(c)(id=2**63), FilterValueError, N, "'id'", str(2**63), "64-bit"),
    case("id-negative", lambda c, f: nuc(c)(id=-1), FilterValueError, N, "'id'", "-1", "never negative"),
    case("root-negative", lambda c, f: nuc(c)(pt_root_id=-5), FilterValueError, N, "pt_root_id", "-5", "never negative"),
    case("root-list-negative", lambda c, f: nuc(c)(pt_root_id=[1, -2]), FilterValueError, N, "pt_root_id", "-2"),
    case("root-array-negative", lambda c, f: nuc(c)(pt_root_id=np.array([-3])), FilterValueError, N, "pt_root_id", "-3"),
    case("root-long-list-negative", lambda c, f: nuc(c)(pt_root_id=[*range(100), -7]), FilterValueError, N, "-7"),
    case("root-uint64-big", lambda c, f: nuc(c)(pt_root_id=np.array([2**63], dtype=np.uint64)), FilterValueError, N, "pt_root_id", str(2**63)),
    case("root-float", lambda c, f: nuc(c)(pt_root_id=1.0e17), FilterValueError, N, "pt_root_id", "float", "int(x)"),
    case("root-list-str", lambda c, f: nuc(c)(pt_root_id=[1, "2"]), FilterValueError, N, "pt_root_id", "'2'"),
    case("root-nested-list", lambda c, f: nuc(c)(pt_root_id=[[1, 2]]), FilterValueError, N, "pt_root_id", "[1, 2]"),
    case("root-2d-array", lambda c, f: nuc(c)(pt_root_id=np.zeros((2, 2), int)), FilterValueError, N, "pt_root_id", "2-dimensional", "Flatten"),
    case("root-Int64-NA", lambda c, f: nuc(c)(pt_root_id=pd.Series([f.root, pd.NA], dtype="Int64")), FilterValueError, N, "pt_root_id", "missing", "position 1", "dropna"),
    case("root-float-series-nan", lambda c, f: nuc(c)(pt_root_id=pd.Series([1.0, np.nan])), FilterValueError, N, "pt_root_id", "missing", "position 1"),
    case("root-range", lambda c, f: nuc(c)(pt_root_id={">": 5}), OperatorError, N, "pt_root_id", "'>'", "allowed"),
    case("root-regex", lambda c, f: nuc(c)(pt_root_id={"regex": "1"}), OperatorError, N, "pt_root_id", "regex"),
    case("supervoxel-range", lambda c, f: nuc(c)(pt_supervoxel_id={"<": 5}), OperatorError, N, "pt_supervoxel_id", "'<'"),
    case("float-regex", lambda c, f: nuc(c)(volume={"regex": "x"}), OperatorError, N, "volume", "string columns"),
    case("float-range-str", lambda c, f: nuc(c)(volume={">": "big"}), FilterValueError, N, "volume", "'big'", FIX),
    case("float-inf", lambda c, f: nuc(c)(volume={">": float("inf")}), FilterValueError, N, "volume", "inf", "finite"),
    case("float-empty-ops", lambda c, f: nuc(c)(volume={}), FilterValueError, N, "volume", "empty operator dict"),
    case("float-unknown-op", lambda c, f: nuc(c)(volume={"~": 3}), OperatorError, N, "volume", "'~'", "allowed"),
    case("float-str", lambda c, f: nuc(c)(volume="x"), FilterValueError, N, "volume", "'x'", FIX),
    case("float-bool", lambda c, f: nuc(c)(volume=True), FilterValueError, N, "volume", "bool"),
    case("in-not-list", lambda c, f: nuc(c)(volume={"in": 5}), FilterValueError, N, "volume", "needs a list"),
    case("eq-list", lambda c, f: nuc(c)(volume={"==": [1, 2]}), FilterValueError, N, "volume", "one value", "'in'"),
    case("notin-not-list", lambda c, f: nuc(c)(id={"not in": 5}), FilterValueError, N, "'id'", "needs a list"),
    case("ne-list", lambda c, f: nuc(c)(id={"!=": [1, 2]}), FilterValueError, N, "'id'", "one value"),
    case("time-naive-str", lambda c, f: nuc(c)(created={">": "2025-01-01"}), FilterValueError, N, "created", "naive", "UTC"),
    case("time-naive-dt", lambda c, f: nuc(c)(created={">": dt.datetime(2025, 1, 1)}), FilterValueError, N, "created", "naive"),
    case("time-garbage", lambda c, f: nuc(c)(created={">": "yesterday"}), FilterValueError, N, "created", "'yesterday'", "ISO"),
    case("time-datetime64", lambda c, f: nuc(c)(created={">": np.datetime64("2025-01-01")}), FilterValueError, N, "created", "time zone"),
    case("time-date", lambda c, f: nuc(c)(created={">": dt.date(2025, 1, 1)}), FilterValueError, N, "created", "date"),
    case("time-int", lambda c, f: nuc(c)(created=12345), FilterValueError, N, "created", "12345", "not a timestamp"),
    case("str-int", lambda c, f: ct(c)(cell_type=5), FilterValueError, C, "cell_type", "5", "Pass a str"),
    case("str-surrogate", lambda c, f: ct(c)(cell_type="\ud800"), FilterValueError, C, "cell_type", "surrogate", "position 0"),
    case("str-list-surrogate", lambda c, f: ct(c)(cell_type=["5P-IT", "a\udc80"]), FilterValueError, C, "cell_type", "surrogate", "position 1"),
    case("regex-surrogate", lambda c, f: ct(c)(cell_type={"regex": "\udc80"}), FilterValueError, C, "cell_type", "surrogate"),
    case("regex-invalid", lambda c, f: ct(c)(cell_type={"regex": "("}), FilterValueError, C, "cell_type", "'('", "regular expression"),
    case("regex-not-str", lambda c, f: ct(c)(cell_type={"regex": 5}), FilterValueError, C, "cell_type", "must be a string"),
    case("str-range", lambda c, f: ct(c)(cell_type={">": "a"}), OperatorError, C, "cell_type", "'>'"),
    case("bool-str", lambda c, f: pr(c)(status_axon="yes"), FilterValueError, P, "status_axon", "'yes'", "True or False"),
    case("bool-int", lambda c, f: pr(c)(status_axon=1), FilterValueError, P, "status_axon", "True or False"),
    case("bbox-str", lambda c, f: nuc(c)(pt_position_bbox="0,0,0,1,1,1"), FilterValueError, N, "pt_position_bbox", "[[x0, y0, z0], [x1, y1, z1]]"),
    case("bbox-one-corner", lambda c, f: nuc(c)(pt_position_bbox=[[0, 0, 0]]), FilterValueError, N, "pt_position_bbox", "shape (1, 3)"),
    case("bbox-ragged", lambda c, f: nuc(c)(pt_position_bbox=[[0, 0, 0], [1, 1]]), FilterValueError, N, "pt_position_bbox", "2×3"),
    case("bbox-empty-range", lambda c, f: nuc(c)(pt_position_bbox=[[0, 0, 0], [0, 1, 1]]), FilterValueError, N, "pt_position_bbox", "min x 0 is not below max x 0"),
    case("bbox-str-coordinate", lambda c, f: nuc(c)(pt_position_bbox=[[0, 0, "a"], [1, 1, 1]]), FilterValueError, N, "'a'", "not a number"),
    case("bbox-nan", lambda c, f: nuc(c)(pt_position_bbox=[[0, 0, float("nan")], [1, 1, 1]]), FilterValueError, N, "nan", "not finite"),
    case("bbox-bool", lambda c, f: nuc(c)(pt_position_bbox=[[0, 0, True], [1, 1, 1]]), FilterValueError, N, "True", "not a number"),
    case("bbox-dict", lambda c, f: nuc(c)(pt_position_bbox={"a": 1}), FilterValueError, N, "pt_position_bbox", "2×3"),
    case("position-not-bbox", lambda c, f: nuc(c)(pt_position=BOX), UnknownColumnError, N, "'pt_position'", "pt_position_bbox"),
    case("column-misspelt", lambda c, f: nuc(c)(volumee=3), UnknownColumnError, N, "'volumee'", "did you mean 'volume'"),
    case("column-empty-name", lambda c, f: nuc(c)(**{"": 1}), UnknownColumnError, N, "''", "Filterable columns"),
    case("column-of-other-table", lambda c, f: nuc(c)(pre_pt_root_id=1), UnknownColumnError, N, "'pre_pt_root_id'"),
    case("filter-positional", lambda c, f: nuc(c)(5), UnknownArgumentError, N, "keyword arguments only"),
    case("synapse-root-str", lambda c, f: syn(c)(post_pt_root_id="abc"), FilterValueError, S, "post_pt_root_id", "'abc'"),
    case("view-root-str", lambda c, f: c.views[V](pt_root_id="x"), FilterValueError, V, "pt_root_id", "'x'"),
    case("view-unknown-column", lambda c, f: c.views[V](volume=1), UnknownColumnError, V, "'volume'"),
    # ---------------------------------------------------------------- query options
    case("limit-0", lambda c, f: nuc(c)().query(limit=0), QueryError, N, "limit", "positive int"),
    case("limit-negative", lambda c, f: nuc(c)().query(limit=-1), QueryError, N, "limit", "-1"),
    case("limit-2**63", lambda c, f: nuc(c)().query(limit=2**63), QueryError, N, "limit", str(2**63), "limit=None"),
    case("limit-float", lambda c, f: nuc(c)().query(limit=1.5), QueryError, N, "limit", "1.5"),
    case("limit-str", lambda c, f: nuc(c)().query(limit="10"), QueryError, N, "limit", "'10'"),
    case("limit-bool", lambda c, f: nuc(c)().query(limit=True), QueryError, N, "limit", "True"),
    case("offset-negative", lambda c, f: nuc(c)().query(offset=-1), QueryError, N, "offset", "-1"),
    case("offset-2**64", lambda c, f: nuc(c)().query(offset=2**64), QueryError, N, "offset", str(2**64), "smaller offset"),
    case("offset-2**63", lambda c, f: nuc(c)().query(offset=2**63), QueryError, N, "offset", str(2**63)),
    case("offset-float", lambda c, f: nuc(c)().query(offset=1.0), QueryError, N, "offset", "1.0"),
    case("offset-none", lambda c, f: nuc(c)().query(offset=None), QueryError, N, "offset", "None"),
    case("live-offset-2**64", lambda c, f: nuc(c)().live_query("now", offset=2**64), QueryError, N, "offset", str(2**64)),
    case("sample-0", lambda c, f: nuc(c)().query(random_sample=0), QueryError, N, "random_sample", "positive int"),
    case("sample-bool", lambda c, f: nuc(c)().query(random_sample=True), QueryError, N, "random_sample", "True"),
    case("sample-negative", lambda c, f: nuc(c)().query(random_sample=-3), QueryError, N, "random_sample", "-3"),
    case("select-str", lambda c, f: nuc(c)().query(select_columns="id"), QueryError, N, "select_columns", "list of column names"),
    case("select-unknown", lambda c, f: nuc(c)().query(select_columns=["nope"]), QueryError, N, "'nope'", "Columns:"),
    case("select-misspelt", lambda c, f: nuc(c)().query(select_columns=["volumee"]), QueryError, N, "Did you mean 'volume'"),
    case("select-empty", lambda c, f: nuc(c)().query(select_columns=[]), QueryError, N, "select_columns is empty"),
    case("select-split-name", lambda c, f: nuc(c)().query(select_columns=["pt_position_x"]), QueryError, N, "split_positions=True"),
    case("select-dict", lambda c, f: nuc(c)().query(select_columns={"id": 1}), QueryError, N, "select_columns"),
    case("resolution-str", lambda c, f: nuc(c)().query(desired_resolution="444"), QueryError, N, "desired_resolution", "'444'", "[1, 1, 1]"),
    case("resolution-bools", lambda c, f: nuc(c)().query(desired_resolution=[True] * 3), QueryError, N, "desired_resolution", "True"),
    case("resolution-two", lambda c, f: nuc(c)().query(desired_resolution=[1, 1]), QueryError, N, "desired_resolution", "three"),
    case("resolution-zero", lambda c, f: nuc(c)().query(desired_resolution=[0, 1, 1]), QueryError, N, "desired_resolution", "positive"),
    case("resolution-nan", lambda c, f: nuc(c)().query(desired_resolution=[1, 1, float("nan")]), QueryError, N, "desired_resolution"),
    case("resolution-str-items", lambda c, f: nuc(c)().query(desired_resolution=["4", "4", "40"]), QueryError, N, "desired_resolution"),
    case("resolution-scalar", lambda c, f: nuc(c)().query(desired_resolution=5), QueryError, N, "desired_resolution", "5"),
    case("output-unknown", lambda c, f: nuc(c)().query(output="polars", limit=1), QueryError, N, "output", "'polars'", "'arrow'"),
    case("complete-none", lambda c, f: nuc(c)().query(complete=None), QueryError, N, "complete must be True or False", "None"),
    case("counts-str", lambda c, f: nuc(c)().query(get_counts="yes"), QueryError, N, "get_counts", "'yes'"),
    case("split-NA", lambda c, f: nuc(c)().query(split_positions=pd.NA, limit=1), QueryError, N, "split_positions", "<NA>"),
    case("metadata-int", lambda c, f: nuc(c)().query(metadata=2, limit=1), QueryError, N, "metadata", "2"),
    case("merge-reference-str", lambda c, f: c.query_table(C, merge_reference="no"), QueryError, C, "merge_reference", "'no'"),
    case("autapses-none", lambda c, f: c.synapse_query(remove_autapses=None), QueryError, S, "remove_autapses", "None"),
    case("zeros-str", lambda c, f: c.synapse_query(include_zeros="false"), QueryError, S, "include_zeros", "'false'"),
    case("allow-invalid-str", lambda c, f: nuc(c)().live_query("now", allow_invalid_root_ids="yes"), QueryError, N, "allow_invalid_root_ids"),
    case("allow-missing-none", lambda c, f: nuc(c)().live_query("now", allow_missing_lookups=None), QueryError, N, "allow_missing_lookups"),
    case("version-str", lambda c, f: nuc(c)().query(materialization_version="abc"), VersionError, "'abc'", "an int"),
    case("version-float", lambda c, f: nuc(c)().query(materialization_version=2.5), VersionError, "2.5", "an int"),
    case("version-unknown", lambda c, f: nuc(c)().query(materialization_version=99999), VersionError, "99999", "Valid versions"),
    case("version-bool", lambda c, f: nuc(c)().query(materialization_version=True), VersionError, "True"),
    case("version-expired", lambda c, f: nuc(c)().query(materialization_version=f.expired), VersionError, "expired", "timestamp="),
    case("version-and-timestamp", lambda c, f: nuc(c)().query(materialization_version=f.version, timestamp="now"), QueryError, N, "not both"),
    case("timestamp-naive", lambda c, f: nuc(c)().query(timestamp=dt.datetime(2025, 1, 1)), VersionError, N, "naive", "UTC"),
    case("timestamp-future", lambda c, f: nuc(c)().query(timestamp=dt.datetime(2999, 1, 1, tzinfo=UTC)), VersionError, N, "in the future"),
    case("timestamp-too-early", lambda c, f: nuc(c)().query(timestamp=dt.datetime(1990, 1, 1, tzinfo=UTC)), VersionError, N, "before the first version", "valid timestamps"),
    case("timestamp-garbage", lambda c, f: nuc(c)().query(timestamp="x"), VersionError, N, "'x'", "ISO"),
    case("timestamp-int", lambda c, f: nuc(c)().query(timestamp=5), VersionError, N, "5", "not a timestamp"),
    case("live-none", lambda c, f: nuc(c)().live_query(None), VersionError, N, "needs a timestamp", "'now'", ".query()"),
    case("get-all-live-none", lambda c, f: nuc(c).get_all_live(None), VersionError, N, "needs a timestamp"),
    case("classic-live-none", lambda c, f: c.live_query(N, None), VersionError, N, "needs a timestamp", "query_table()"),
    case("view-live", lambda c, f: c.views[V]().live_query("now"), tablekit.UnsupportedError, V, "live-compatible"),
    # ---------------------------------------------------------------- unknown keywords
    case("query-misspelt", lambda c, f: nuc(c)().query(limt=3), UnknownArgumentError, N, "'limt'", "Did you mean 'limit'"),
    case("query-dict-api-keyword", lambda c, f: nuc(c)().query(filter_in_dict={"id": [1]}), UnknownArgumentError, N, "'filter_in_dict'"),
    case("query-column-keyword", lambda c, f: nuc(c)().query(volume=5), UnknownArgumentError, N, "'volume' is a column", f"{N}(volume=...)"),
    case("get-all-misspelt", lambda c, f: nuc(c).get_all(limt=5), UnknownArgumentError, N, "'limt'", "'limit'"),
    case("live-query-misspelt", lambda c, f: nuc(c)().live_query("now", limt=3), UnknownArgumentError, N, "'limt'", "'limit'"),
    case("explain-misspelt", lambda c, f: nuc(c)().explain(limt=3), UnknownArgumentError, N, "'limt'", "'limit'"),
    case("query-table-filter-in", lambda c, f: c.query_table(N, filter_in={"id": [1]}), UnknownArgumentError, "query_table", "'filter_in'", "'filter_in_dict'"),
    case("query-table-misspelt", lambda c, f: c.query_table(N, limt=3), UnknownArgumentError, "'limt'", "'limit'"),
    case("synapse-query-pre-id", lambda c, f: c.synapse_query(pre_id=5), UnknownArgumentError, "'pre_id'", "'pre_ids'"),
    case("query-view-filter-equal", lambda c, f: c.query_view(V, filter_equal={"id": 1}), UnknownArgumentError, "'filter_equal'", "'filter_equal_dict'"),
    case("classic-live-filter-in", lambda c, f: c.live_query(N, "now", filter_in={"id": [1]}), UnknownArgumentError, "'filter_in'", "'filter_in_dict'"),
    # ---------------------------------------------------------------- the dict API
    case("dict-not-mapping", lambda c, f: c.query_table(N, filter_in_dict=[1, 2]), QueryError, N, "filter_in_dict", "must be a dict"),
    case("dict-in-not-list", lambda c, f: c.query_table(N, filter_in_dict={"id": 5}), FilterValueError, N, "filter_in_dict['id']", "must be a list", "[5]"),
    case("dict-unknown-column", lambda c, f: c.query_table(N, filter_equal_dict={"nope": 1}), UnknownColumnError, N, "'nope'"),
    case("dict-spatial-str", lambda c, f: c.query_table(N, filter_spatial_dict={"pt_position": "x"}), FilterValueError, N, "pt_position_bbox"),
    case("dict-greater-root", lambda c, f: c.query_table(N, filter_greater_dict={"pt_root_id": 5}), OperatorError, N, "pt_root_id", "'>'"),
    case("dict-regex-int", lambda c, f: c.query_table(N, filter_regex_dict={"volume": "1"}), OperatorError, N, "volume", "regex"),
    case("dict-negative-id", lambda c, f: c.query_table(N, filter_in_dict={"pt_root_id": [-1]}), FilterValueError, N, "pt_root_id", "-1"),
    case("synapse-table-unknown", lambda c, f: c.synapse_query(synapse_table="nope"), UnknownTableError, "'nope'"),
    case("synapse-ids-str", lambda c, f: c.synapse_query(pre_ids="x"), FilterValueError, S, "pre_pt_root_id", "'x'"),
    case("synapse-box-str", lambda c, f: c.synapse_query(bounding_box="x"), FilterValueError, S, "post_pt_position_bbox"),
    case("synapse-box-column", lambda c, f: c.synapse_query(bounding_box=BOX, bounding_box_column="nope"), UnknownColumnError, S, "'nope_bbox'"),
    case("synapse-negative", lambda c, f: c.synapse_query(post_ids=[-4]), FilterValueError, S, "post_pt_root_id", "-4"),
    # ---------------------------------------------------------------- tables, views, versions
    case("tables-int", lambda c, f: c.tables[5], UnknownTableError, "a table name is a str", "5", "list(client.tables)"),
    case("tables-none", lambda c, f: c.tables[None], UnknownTableError, "a table name is a str", "None"),
    case("tables-misspelt", lambda c, f: c.tables["nucleus_detection_v1"], UnknownTableError, "'nucleus_detection_v1'", f"Did you mean '{N}'"),
    case("tables-attribute", lambda c, f: c.tables.nucleus_detecton_v0, UnknownTableError, "'nucleus_detecton_v0'", f"'{N}'"),
    case("tables-300-chars", lambda c, f: c.tables["a" * 300], UnknownTableError, "no table named 'aaaa", "..."),
    case("tables-surrogate", lambda c, f: c.tables["\ud800"], UnknownTableError, "no table named"),
    case("views-unknown", lambda c, f: c.views["nope"], UnknownTableError, "no view named 'nope'", "list(client.views)"),
    case("views-int", lambda c, f: c.views[3], UnknownTableError, "a view name is a str", "3"),
    case("query-table-none", lambda c, f: c.query_table(None), UnknownTableError, "a table name is a str", "None", "get_tables()"),
    case("query-table-int", lambda c, f: c.query_table(5), UnknownTableError, "a table name is a str", "5"),
    case("query-table-unknown", lambda c, f: c.query_table("nope"), UnknownTableError, "no table named 'nope'", "get_tables()"),
    case("query-table-300-chars", lambda c, f: c.query_table("b" * 300), UnknownTableError, "no table named 'bbbb", "..."),
    case("query-table-of-view", lambda c, f: c.query_table(V), UnknownTableError, f"'{V}' is a view", "query_view"),
    case("query-view-unknown", lambda c, f: c.query_view("nope"), UnknownTableError, "no view named 'nope'"),
    case("query-view-of-table", lambda c, f: c.query_view(N), UnknownTableError, f"no view named '{N}'", f"'{N}' is a table"),
    case("metadata-unknown", lambda c, f: c.get_table_metadata("nope"), UnknownTableError, "'nope'"),
    case("metadata-version-str", lambda c, f: c.get_table_metadata(N, version="abc"), VersionError, "'abc'", "an int", "get_versions()"),
    case("metadata-version-unknown", lambda c, f: c.get_table_metadata(N, version=99999), VersionError, "99999", "Valid versions"),
    case("timestamp-of-str", lambda c, f: c.get_timestamp("x"), VersionError, "'x'", "an int"),
    case("timestamp-of-unknown", lambda c, f: c.get_timestamp(99999), VersionError, "99999", "Valid versions"),
    case("count-version-float", lambda c, f: c.get_annotation_count(N, version=2.5), VersionError, "2.5", "an int"),
    case("count-unknown-table", lambda c, f: c.get_annotation_count("nope"), UnknownTableError, "'nope'"),
    case("count-table-none", lambda c, f: c.get_annotation_count(None), UnknownTableError, "a table name is a str"),
    case("view-metadata-unknown", lambda c, f: c.get_view_metadata("nope"), UnknownTableError, "'nope'"),
    case("version-metadata-bool", lambda c, f: c.get_version_metadata(True), VersionError, "True", "an int"),
    case("tables-of-version-str", lambda c, f: c.get_tables(version="x"), VersionError, "'x'"),
    case("views-of-version-float", lambda c, f: c.get_views(version=1.5), VersionError, "1.5"),
    case("set-version-str", lambda c, f: setattr(c, "version", "abc"), VersionError, "'abc'", "an int"),
    case("set-version-unknown", lambda c, f: setattr(c, "version", 99999), VersionError, "99999", "Valid versions"),
    case("set-version-expired", lambda c, f: setattr(c, "version", f.expired), VersionError, "has expired", "live"),
    case("metadata-table-list", lambda c, f: c.get_table_metadata(["a"]), UnknownTableError, "a table name is a str", "['a']"),
    case("count-table-dict", lambda c, f: c.get_annotation_count({}), UnknownTableError, "a table name is a str", "dict"),
    case("query-view-set", lambda c, f: c.query_view(set()), UnknownTableError, "a view name is a str", "set"),
    case("view-schema-list", lambda c, f: c.get_view_schema(["x"]), UnknownTableError, "a view name is a str"),
    case("tables-NA", lambda c, f: c.tables[pd.NA], UnknownTableError, "a table name is a str", "NAType"),
    case("tables-find-none", lambda c, f: c.tables.find(None), QueryError, "find()", "None", "pass a str"),
    case("views-find-int", lambda c, f: c.views.find(3), QueryError, "find()", "view names", "3"),
    case("synapse-table-list", lambda c, f: c.synapse_query(synapse_table=["x"]), UnknownTableError, "a table name is a str"),
    case("op-key-NA", lambda c, f: nuc(c)(volume={pd.NA: 1}), OperatorError, N, "volume", "<NA>", "Operators are strings"),
    case("op-key-int", lambda c, f: nuc(c)(volume={1: 1}), OperatorError, N, "volume", "operator 1"),
    case("synapse-table-NA", lambda c, f: c.synapse_query(synapse_table=pd.NA), UnknownTableError, "a table name is a str", "NAType"),
    case("versions-expired-NA", lambda c, f: c.get_versions(expired=pd.NA), QueryError, "expired must be True or False", "<NA>"),
    case("versions-metadata-expired-str", lambda c, f: c.get_versions_metadata(expired="yes"), QueryError, "expired", "'yes'"),
    case("output-NA", lambda c, f: nuc(c)().query(output=pd.NA), QueryError, N, "output", "<NA>"),
    # ---------------------------------------------------------------- the roots API
    case("latest-roots-empty", lambda c, f: c.get_latest_roots([]), FilterValueError, "one root id", "got 0"),
    case("suggest-two", lambda c, f: c.suggest_latest_roots([1, 2]), FilterValueError, "one root id", "got 2"),
    case("lineage-empty-set", lambda c, f: c.get_lineage_graph(set()), FilterValueError, "one root id"),
    case("latest-2**64", lambda c, f: c.is_latest_roots([2**64]), FilterValueError, str(2**64), "2**63 - 1"),
    case("latest-2**63", lambda c, f: c.is_latest_roots([2**63]), FilterValueError, str(2**63), "check the id"),
    case("latest-negative", lambda c, f: c.is_latest_roots([-1]), FilterValueError, "-1", "not a root id"),
    case("latest-str", lambda c, f: c.is_latest_roots("123"), FilterValueError, "'123'", "list of ints"),
    case("latest-float", lambda c, f: c.is_latest_roots([1.5]), FilterValueError, "1.5", "int ids"),
    case("latest-bool", lambda c, f: c.is_latest_roots([True]), FilterValueError, "True"),
    case("latest-none", lambda c, f: c.is_latest_roots(None), FilterValueError, "None"),
    case("latest-dict", lambda c, f: c.is_latest_roots({1: 2}), FilterValueError, "{1: 2}"),
    case("latest-timestamp-garbage", lambda c, f: c.is_latest_roots([f.root], timestamp="x"), VersionError, "'x'", "ISO"),
    case("latest-timestamp-naive", lambda c, f: c.is_latest_roots([f.root], timestamp=dt.datetime(2025, 1, 1)), VersionError, "naive"),
    case("root-timestamps-2**63", lambda c, f: c.get_root_timestamps([2**63]), FilterValueError, str(2**63)),
    case("root-timestamps-unknown", lambda c, f: c.get_root_timestamps([f.unknown]), FilterValueError, "{unknown}", "not in the segmentation history", before_request=False),
    case("latest-roots-negative", lambda c, f: c.get_latest_roots(-5), FilterValueError, "-5"),
    case("latest-roots-str", lambda c, f: c.get_latest_roots("x"), FilterValueError, "'x'"),
    case("latest-roots-timestamp", lambda c, f: c.get_latest_roots(f.root, timestamp="nope"), VersionError, "'nope'"),
    case("suggest-2**64", lambda c, f: c.suggest_latest_roots(2**64), FilterValueError, str(2**64)),
    case("past-ids-negative", lambda c, f: c.get_past_ids([-1]), FilterValueError, "-1"),
    case("lineage-float", lambda c, f: c.get_lineage_graph(1.5), FilterValueError, "1.5"),
    # ---------------------------------------------------------------- root ids not valid at the live query's time
    case("live-expired-root", lambda c, f: nuc(c)(pt_root_id=f.old).live_query("now"), VersionError, N, "pt_root_id", "expired", "{old}", "allow_invalid_root_ids", before_request=False),
    case("live-unknown-root", lambda c, f: nuc(c)(pt_root_id=f.unknown).live_query("now"), VersionError, N, "pt_root_id", "unknown", "{unknown}", "allow_invalid_root_ids", before_request=False),
    case("live-unknown-among-valid", lambda c, f: nuc(c)(pt_root_id=[f.root, f.unknown]).live_query("now"), VersionError, N, "pt_root_id", "{unknown}", before_request=False),
    case("live-dict-expired", lambda c, f: c.live_query(N, "now", filter_in_dict={"pt_root_id": [f.old]}), VersionError, N, "pt_root_id", "expired", before_request=False),
    case("live-synapse-expired", lambda c, f: syn(c)(pre_pt_root_id=[f.old]).live_query("now"), VersionError, S, "pre_pt_root_id", "expired", before_request=False),
    # ---------------------------------------------------------------- build_datastack (local)
    case("build-resolution-str", lambda c, f: _build(f, voxel_resolution="444"), DatastackError, "voxel_resolution", "'444'", "[4, 4, 40]", backends=("local")),
    case("build-resolution-bools", lambda c, f: _build(f, voxel_resolution=[True] * 3), DatastackError, "voxel_resolution", backends=("local")),
    case("build-viewer-resolution-str", lambda c, f: _build(f, viewer_resolution="444"), DatastackError, "viewer_resolution", "'444'", backends=("local")),
    case("build-enum", lambda c, f: _build_enum(f, "maybe"), DatastackError, "'status'", "'maybe'", "allowed values", "['non', 'clean', 'extended']", backends=("local")),
    case("build-name-newline", lambda c, f: _build(f, name="x\ny"), DatastackError, "datastack name", backends=("local")),
    case("build-path-none", lambda c, f: _build(f, path=None), DatastackError, "path must be a directory path", "None", backends=("local",)),
    case("build-path-int", lambda c, f: _build(f, path=5), DatastackError, "path", "5", backends=("local",)),
    case("build-tables-str", lambda c, f: _build(f, tables=lambda s: "nuc"), DatastackError, "tables must be a list of TableSource", "'nuc'", backends=("local",)),
    case("build-tables-one-source", lambda c, f: _build(f, tables=lambda s: s), DatastackError, "tables must be a list of TableSource", backends=("local",)),
    case("build-tables-dict", lambda c, f: _build(f, tables=lambda s: {"nuc": s}), DatastackError, "tables must be a list", backends=("local",)),
    case("build-tables-item-str", lambda c, f: _build(f, tables=lambda s: [s, "x"]), DatastackError, "expected TableSource objects", "str", backends=("local",)),
    case("build-description-nan", lambda c, f: _build(f, description=float("nan")), DatastackError, "description must be a str", "nan", backends=("local",)),
    case("build-description-surrogate", lambda c, f: _build(f, description="a\udc80"), DatastackError, "description", "not valid Unicode", backends=("local",)),
    case("build-synapse-table-list", lambda c, f: _build(f, synapse_table=["nuc"]), DatastackError, "synapse_table must be a str or None", backends=("local",)),
    case("build-synapse-table-unknown", lambda c, f: _build(f, synapse_table="syn"), DatastackError, "synapse_table 'syn'", "['nuc']", backends=("local",)),
    case("build-views-list", lambda c, f: _build(f, views=["v"]), DatastackError, "views must be a dict", backends=("local",)),
    case("build-view-str", lambda c, f: _build(f, views={"v": "select 1"}), DatastackError, "views['v'] must be a dict", backends=("local",)),
    case("build-schemas-str", lambda c, f: _build(f, schemas="x"), DatastackError, "schemas must be a dict", backends=("local",)),
    case("build-schemas-value-str", lambda c, f: _build(f, schemas={"x": "y"}), DatastackError, "schemas['x'] must be a dict", backends=("local",)),
    case("build-schema-type-int", lambda c, f: _build(f, source={"schema_type": 5}), DatastackError, "schema_type must be a str", "5", backends=("local",)),
    case("build-schema-type-unknown", lambda c, f: _build(f, source={"schema_type": "nucleus_detektion"}), DatastackError, "'nucleus_detektion'", backends=("local",)),
    case("build-notice-list", lambda c, f: _build(f, source={"notice_text": ["a"]}), DatastackError, "notice_text must be a str or None", backends=("local",)),
    case("build-reference-int", lambda c, f: _build(f, source={"reference_table": 3}), DatastackError, "reference_table must be a str or None", backends=("local",)),
    case("build-table-description-dict", lambda c, f: _build(f, source={"description": {}}), DatastackError, "table 'nuc': description", backends=("local",)),
    case("build-position-all-nan", lambda c, f: _build(f, data=lambda d: d.assign(pt_position=np.nan)), DatastackError, "'pt_position'", "every value is missing", backends=("local",)),
    case("build-created-all-nan", lambda c, f: _build(f, data=lambda d: d.assign(created=np.nan)), DatastackError, "'created'", "every value is missing", backends=("local",)),
    case("build-id-float", lambda c, f: _build(f, data=lambda d: d.assign(id=d["id"] + 0.5)), DatastackError, "'id'", "non-integer", backends=("local",)),
    case("build-volume-str", lambda c, f: _build(f, data=lambda d: d.assign(volume="big")), DatastackError, "'volume'", "not numbers", backends=("local",)),
    case("build-unknown-column", lambda c, f: _build(f, data=lambda d: d.assign(volumee=1.0)), DatastackError, "'volumee'", "did you mean", backends=("local",)),
    case("build-table-300-chars", lambda c, f: _build(f, table="t" * 300), DatastackError, "300 characters", "at most 128", backends=("local")),
]
# fmt: on


UNKNOWN_ROOT = 12345  # no root id of the demo history is that small


@attrs.define
class Facts:
    root: int  # valid now
    old: int  # retired before now
    unknown: int
    version: int
    expired: int
    frame: pd.DataFrame  # a few nucleus rows in CAVE's flat layout
    tmp: Any


def _build(
    f: Facts,
    *,
    voxel_resolution: Any = (4, 4, 40),
    name: str = "x",
    table: str = "nuc",
    path: Any = "",
    tables: Any = None,
    source: dict[str, Any] | None = None,
    data: Any = None,
    **kw: Any,
) -> Any:
    """build_datastack of the few nucleus rows, with one argument (or the data) changed."""
    frame = f.frame if data is None else data(f.frame.copy())
    args = {"schema_type": "nucleus_detection", "voxel_resolution": voxel_resolution, **(source or {})}
    src = tablekit.TableSource(table, data=frame, **args)
    dest = f.tmp / f"b{next(_n)}" if path == "" else path
    listed = [src] if tables is None else tables(src)
    return tablekit.build_datastack(dest, listed, name=name, timestamp=dt.datetime.now(UTC), **kw)


def _build_enum(f: Facts, status: str) -> Any:
    df = f.frame[["id", "created", "pt_position", "pt_supervoxel_id", "pt_root_id"]].copy()
    df["valid_id"] = df["pt_root_id"]
    df["status"] = ["clean"] * (len(df) - 1) + [status]
    src = tablekit.TableSource("status", "proofread_status", df)
    return tablekit.build_datastack(f.tmp / f"e{next(_n)}", [src], name="x", timestamp=dt.datetime.now(UTC))


_n = itertools.count()


class CountingTransport(Urllib3Transport):
    """The real transport, counting the requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self._count_lock = threading.Lock()

    def send(self, request: Any, *, timeout: Any) -> Any:
        with self._count_lock:
            self.sent += 1
        return super().send(request, timeout=timeout)


@pytest.fixture(scope="module")
def server(path) -> Iterator[str]:
    with running_server(path) as url:
        yield url


@pytest.fixture(scope="module")
def remote(server, client, tmp_path_factory) -> tuple[tablekit.Client, CountingTransport]:
    """An HTTP client with every table's and view's metadata already fetched."""
    transport = CountingTransport()
    tk = tablekit.connect(
        client.datastack, server=server, cache_dir=str(tmp_path_factory.mktemp("c")), transport=transport
    )
    tk.get_versions(expired=True)
    for name in tk.tables:
        tk.tables[name]
    for name in tk.views:
        tk.views[name]
    assert tk.timestamp is not None
    return tk, transport


@pytest.fixture(scope="module")
def facts(client, path, tmp_path_factory) -> Facts:
    hist = pd.read_parquet(f"{path}/segmentation/history")
    now = pd.Timestamp.now(tz="UTC")
    old = int(hist.loc[hist["valid_to"].notna() & (hist["valid_to"] < now), "root_id"].iloc[0])
    assert UNKNOWN_ROOT not in set(hist["root_id"])
    root = int(client.tables[N]().query(limit=1)["pt_root_id"][0])
    valid, every = client.get_versions(), client.get_versions(expired=True)
    frame = client.query_table(N, limit=5, metadata=False)
    return Facts(
        root, old, UNKNOWN_ROOT, valid[-1], min(set(every) - set(valid)), frame, tmp_path_factory.mktemp("b")
    )


def _check(err: BaseException, c: Case, f: Facts) -> None:
    assert type(err) is c.error, f"{type(err).__name__} ({err}) is not {c.error.__name__}"
    text = str(err)
    needles = [n.replace("{old}", str(f.old)).replace("{unknown}", str(f.unknown)) for n in c.needles]
    missing = [n for n in needles if n not in text]
    assert not missing, f"{missing} not in the message: {text}"
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("c", "backend"),
    [pytest.param(c, b, id=f"{c.id}-{b}") for c in CASES for b in c.backends],
)
def test_bad_input_is_refused_well(c: Case, backend: str, client, remote, facts) -> None:
    tk, transport = remote
    target = client if backend == "local" else tk
    before = transport.sent
    with pytest.raises(TablekitError) as e:
        c.call(target, facts)
    _check(e.value, c, facts)
    if backend == "http" and c.before_request:
        assert transport.sent == before, f"{transport.sent - before} request(s) sent before the refusal"


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) + len(MALFORMED) + len(CLI) + len(SERVE_BODIES) >= 150


def test_empty_well_formed_frame_builds(facts) -> None:
    """An empty frame in the right layout is a table with no rows, not an IndexError."""
    empty = facts.frame.iloc[:0]
    src = tablekit.TableSource("nuc", "nucleus_detection", empty)
    out = tablekit.build_datastack(facts.tmp / "empty", [src], name="x", timestamp=dt.datetime.now(UTC))
    tk = tablekit.connect(path=str(out))
    assert tk.get_annotation_count("nuc") == 0 and len(tk.tables.nuc().query()) == 0


def test_enum_values_inside_the_schema_build(facts) -> None:
    tk = tablekit.connect(path=str(_build_enum(facts, "extended")))
    assert sorted(tk.tables.status().query()["status"]) == ["clean"] * 4 + ["extended"]


# ==================================================================== malformed server answers
J = "application/json"


def _versions(body: Any) -> dict[str, Any]:
    return {"/metadata": (200, J, json.dumps(body).encode())}


def _answer(suffix: str, body: Any, ctype: str = J, headers: dict[str, str] | None = None) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {suffix: (200, ctype, data, headers or {})}


GOOD_VERSION = {"version": 1, "time_stamp": "2025-01-01T00:00:00.000000", "valid": True, "datastack": "demo"}

#: (id, rules for the proxy, call, error, needles)
# fmt: off
MALFORMED: list[
    tuple[str, dict[str, Any], Callable[[Any, Any], Any], type[TablekitError], tuple[str, ...]]
] = [
    ("versions-object", _versions({"versions": 3}), lambda c, f: c.get_versions(), ServerError, ("/metadata", "not a list of version objects", "Retry")),
    ("versions-number", _versions(3), lambda c, f: c.get_versions(), ServerError, ("/metadata", "3", "not a list")),
    ("version-without-number", _versions([{"time_stamp": "2025-01-01T00:00:00"}]), lambda c, f: c.get_versions(), ServerError, ("no integer 'version'")),
    ("version-number-str", _versions([{**GOOD_VERSION, "version": "7"}]), lambda c, f: c.get_versions(), ServerError, ("no integer 'version'", "'7'")),
    ("version-time-garbage", _versions([{**GOOD_VERSION, "time_stamp": "yesterday"}]), lambda c, f: c.get_versions(), ServerError, ("version 1", "time_stamp", "'yesterday'", "not a timestamp")),
    ("version-time-missing", _versions([{"version": 1, "valid": True}]), lambda c, f: c.get_versions(), ServerError, ("version 1 has no time_stamp")),
    ("version-expires-garbage", _versions([{**GOOD_VERSION, "expires_on": [1]}]), lambda c, f: c.get_versions(), ServerError, ("expires_on", "[1]")),
    ("version-valid-str", _versions([{**GOOD_VERSION, "valid": "yes"}]), lambda c, f: c.get_versions(), ServerError, ("'valid'", "'yes'")),
    ("version-entry-str", _versions(["v1"]), lambda c, f: c.get_versions(), ServerError, ("'v1'", "not an object")),
    ("versions-at-connect-version", _versions({"a": 1}), lambda c, f: c.version, ServerError, ("not a list of version objects")),
    ("tables-object", _answer("/tables/metadata", {"a": 1}), lambda c, f: c.get_tables(), ServerError, ("/tables/metadata", "not a list of table objects")),
    ("table-without-name", _answer("/tables/metadata", [{"schema_type": "synapse"}]), lambda c, f: c.get_tables(), ServerError, ("names no table")),
    ("table-without-schema", _answer("/tables/metadata", [{"table_name": N}]), lambda c, f: c.tables[N], SchemaError, (N, "names no schema_type", "refresh()")),
    ("table-schema-number", _answer("/tables/metadata", [{"table_name": N, "schema_type": 5}]), lambda c, f: c.get_table_metadata(N), SchemaError, (N, "schema_type", "5")),
    ("zstd-garbage", _answer("/query", b"\x28\xb5\x2f\xfd" + b"garbage" * 10, "data.arrow", {"Content-Encoding": "zstd"}), lambda c, f: c.tables[N]().query(limit=3), ServerError, ("/query", "zstd", "cannot be decompressed", "Retry")),
    ("arrow-garbage", _answer("/query", b"garbage" * 10, "data.arrow"), lambda c, f: c.tables[N]().query(limit=3), ServerError, ("/query", "Arrow answer cannot be read")),
    ("json-garbage", _answer("/query", b"{not json", J), lambda c, f: c.tables[N]().query(limit=3), ServerError, ("/query", "JSON answer cannot be read")),
    ("json-rows-object", _answer("/query", {"rows": 1}), lambda c, f: c.tables[N]().query(limit=3), ServerError, (N, "rows without id", "not trustworthy")),
    ("query-html", _answer("/query", b"<html>", "text/html"), lambda c, f: c.tables[N]().query(limit=3), ServerError, ("/query", "'text/html'")),
    ("count-many", _answer("/count", "many"), lambda c, f: c.get_annotation_count(N), ServerError, ("/count", N, "'many'", "not a number of rows")),
    ("count-negative", _answer("/count", -5), lambda c, f: c.get_annotation_count(N), ServerError, ("/count", "-5")),
    ("count-fraction", _answer("/count", 2.5), lambda c, f: c.get_annotation_count(N), ServerError, ("/count", "2.5")),
    ("count-bool", _answer("/count", True), lambda c, f: c.get_annotation_count(N), ServerError, ("/count", "True")),
    ("count-not-json", _answer("/count", b"many", "text/plain"), lambda c, f: c.get_annotation_count(N), ServerError, ("/count", "not JSON")),
    ("is-latest-not-json", _answer("/is_latest_roots", b"<html>", "text/html"), lambda c, f: c.is_latest_roots([f.root]), ServerError, ("is_latest_roots", "not JSON", "Retry")),
    ("is-latest-list", _answer("/is_latest_roots", [True]), lambda c, f: c.is_latest_roots([f.root]), ServerError, ("is_latest_roots", "JSON object")),
    ("is-latest-short", _answer("/is_latest_roots", {"is_latest": []}), lambda c, f: c.is_latest_roots([f.root]), ServerError, ("is_latest_roots", "is_latest list of 1")),
    ("root-timestamps-not-json", _answer("/root_timestamps", b"oops", "text/plain"), lambda c, f: c.get_root_timestamps([f.root]), ServerError, ("root_timestamps", "not JSON")),
    ("root-timestamps-garbage", _answer("/root_timestamps", {"timestamp": ["x"]}), lambda c, f: c.get_root_timestamps([f.root]), ServerError, ("root_timestamps", "not all times")),
    ("root-timestamps-short", _answer("/root_timestamps", {"timestamp": []}), lambda c, f: c.get_root_timestamps([f.root]), ServerError, ("root_timestamps", "1 entries")),
    ("leaves-not-json", _answer("/leaves", b"<html>", "text/html"), lambda c, f: c.suggest_latest_roots(f.root), ServerError, ("leaves", "not JSON")),
    ("leaves-not-ids", _answer("/leaves", {"leaf_ids": ["a"]}), lambda c, f: c.suggest_latest_roots(f.root), ServerError, ("leaves", "not int64 ids")),
    ("lineage-garbage", _answer("/lineage_graph_multiple", {"nodes": [{"x": 1}]}), lambda c, f: c.get_lineage_graph(f.root), ServerError, ("lineage_graph_multiple", "node-link graph")),
    ("lineage-not-json", _answer("/lineage_graph_multiple", b"x", "text/plain"), lambda c, f: c.get_lineage_graph(f.root), ServerError, ("lineage_graph_multiple", "not JSON")),
    ("past-ids-garbage", _answer("/past_id_mapping", {"past_id_map": {"a": [1]}}), lambda c, f: c.get_past_ids([f.root]), ServerError, ("past_id_mapping", "id maps")),
    ("past-ids-not-json", _answer("/past_id_mapping", b"x", "text/plain"), lambda c, f: c.get_past_ids([f.root]), ServerError, ("past_id_mapping", "not JSON")),
]
# fmt: on


@pytest.mark.parametrize(
    ("rules", "call", "error", "needles"), [pytest.param(*m[1:], id=m[0]) for m in MALFORMED]
)
def test_malformed_server_answer_is_refused_well(server, client, facts, rules, call, error, needles) -> None:
    with crafted_proxy(server, rules) as url:
        tk = tablekit.connect(client.datastack, server=url, cache_dir=False, max_retries=0)
        with pytest.raises(TablekitError) as e:
            call(tk, facts)
    _check(e.value, Case("malformed", call, error, needles), facts)


def test_a_malformed_answer_is_not_cached(server, client, tmp_path) -> None:
    """A refused versions answer is not kept: the next client of the same cache asks again."""
    cache = str(tmp_path / "c")
    with crafted_proxy(server, _versions({"versions": 3})) as url:
        bad = tablekit.connect(client.datastack, server=url, cache_dir=cache, max_retries=0)
        with pytest.raises(ServerError):
            bad.get_versions()
    good = tablekit.connect(client.datastack, server=server, cache_dir=cache)
    assert good.get_versions() == client.get_versions()


# ==================================================================== tablekit serve: bad request bodies
#: (id, chunkedgraph endpoint, raw body, words of the 400 message)
# fmt: off
SERVE_BODIES = [
    ("is-latest-2**64", "is_latest_roots", json.dumps({"node_ids": [2**64]}), (str(2**64), "2**63 - 1")),
    ("is-latest-2**63", "is_latest_roots", json.dumps({"node_ids": [2**63]}), (str(2**63))),
    ("is-latest-negative", "is_latest_roots", json.dumps({"node_ids": [-1]}), ("-1", "not an id")),
    ("is-latest-str", "is_latest_roots", json.dumps({"node_ids": ["abc"]}), ("'abc'", "not an id")),
    ("is-latest-float", "is_latest_roots", json.dumps({"node_ids": [1.5]}), ("1.5", "not an id")),
    ("is-latest-not-list", "is_latest_roots", json.dumps({"node_ids": 5}), ("must be a list")),
    ("is-latest-no-key", "is_latest_roots", json.dumps({"ids": [1]}), ("'node_ids'")),
    ("is-latest-not-json", "is_latest_roots", "{nope", ("not valid JSON")),
    ("root-timestamps-2**64", "root_timestamps", json.dumps({"node_ids": [2**64]}), (str(2**64))),
    ("lineage-negative", "lineage_graph_multiple", json.dumps({"root_ids": [-3]}), ("-3")),
]
# fmt: on


@pytest.mark.parametrize(
    ("endpoint", "body", "needles"), [pytest.param(*s[1:], id=s[0]) for s in SERVE_BODIES]
)
def test_serve_answers_a_bad_body_with_400(server, client, endpoint, body, needles) -> None:
    pcg = client.info["pcg_table_name"]
    r = requests.post(f"{server}/segmentation/api/v1/table/{pcg}/{endpoint}", data=body, timeout=30)
    assert r.status_code == 400, r.text
    j = r.json()
    assert j["code"] == 400 and all(n in j["message"] for n in needles), j


# ==================================================================== the command line
#: (id, argv after "tablekit", words of the error on stderr); every one exits 2 without a traceback
# fmt: off
CLI: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("bbox-letters", ["query", N, "--where", "pt_position_bbox=a,b,c,d,e,f"], ("pt_position_bbox", "'a'", "six numbers")),
    ("bbox-three", ["query", N, "--where", "pt_position_bbox=0,0,0"], ("six numbers")),
    ("bbox-operator", ["query", N, "--where", "pt_position_bbox>0,0,0,9,9,9"], ("pt_position_bbox", "'>'", "=")),
    ("bbox-empty-range", ["query", N, "--where", "pt_position_bbox=0,0,0,0,9,9"], ("min x 0 is not below max x 0")),
    ("where-unreadable", ["query", N, "--where", "volume"], ("cannot read --where 'volume'", "COLUMN OP VALUE")),
    ("where-unknown-column", ["query", N, "--where", "volumee>3"], ("'volumee'", "did you mean 'volume'")),
    ("where-root-str", ["query", N, "--where", "pt_root_id=abc"], ("pt_root_id", "'abc'")),
    ("where-time-garbage", ["query", N, "--where", "created>yesterday"], ("created", "'yesterday'")),
    ("where-regex-float", ["query", N, "--where", "volume~1"], ("volume", "regex")),
    ("out-missing-dir", ["query", N, "--limit", "2", "--format", "csv", "--out", "/nonexistent-dir/x.csv"], ("--out", "/nonexistent-dir", "does not exist")),
    ("out-missing-dir-parquet", ["query", N, "--limit", "2", "--format", "parquet", "--out", "/nonexistent-dir/x.parquet"], ("/nonexistent-dir", "does not exist")),
    ("table-misspelt", ["query", "nucleus_detecton_v0"], ("no table or view named 'nucleus_detecton_v0'", f"'{N}'")),
    ("table-unknown", ["query", "nope"], ("no table or view named 'nope'", "tablekit tables")),
    ("select-unknown", ["query", N, "--select", "nope"], ("'nope'")),
    ("limit-0", ["query", N, "--limit", "0"], ("limit")),
    ("version-unknown", ["query", N, "--version", "99999"], ("99999")),
    ("tables-missing-path", ["tables", "--path", "/nonexistent-datastack"], ("/nonexistent-datastack")),
    ("serve-row-limit-0", ["serve", "PATH", "--row-limit", "0"], ("--row-limit", "0", "positive")),
    ("serve-token-empty", ["serve", "PATH", "--token", ""], ("--token", "empty")),
    ("serve-port-in-use", ["serve", "PATH", "--port", "BUSY"], ("port", "in use", "--port 0")),
    ("serve-port-negative", ["serve", "PATH", "--port", "-1"], ("--port", "-1", "0–65535")),
    ("serve-port-too-big", ["serve", "PATH", "--port", "70000"], ("--port", "70000")),
    ("serve-missing-path", ["serve", "/nonexistent-datastack"], ("/nonexistent-datastack")),
]
# fmt: on


@pytest.mark.parametrize(("argv", "needles"), [pytest.param(*x[1:], id=x[0]) for x in CLI])
def test_cli_refuses_well(argv, needles, path, capsys) -> None:
    from tablekit.cli import main

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        argv = [a.replace("PATH", path).replace("BUSY", str(busy.getsockname()[1])) for a in argv]
        if argv[0] in ("query", "tables") and "--path" not in argv:
            argv += ["--path", path]
        code = main(argv)
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "serving at" not in err and "tablekit serve: datastack" not in err
    missing = [n for n in needles if n not in err]
    assert not missing, f"{missing} not in: {err}"


def test_cli_bbox_takes_exponents(path, capsys) -> None:
    from tablekit.cli import main

    assert (
        main(["query", N, "--path", path, "--where", "pt_position_bbox=0,0,0,1e9,1e9,1e9", "--limit", "3"])
        == 0
    )
    assert "[3 rows]" in capsys.readouterr().out


def test_serve_port_0_prints_the_port_it_serves(path) -> None:
    """``serve --port 0`` binds a free port and its banner names that port, not ``:0``."""
    import re
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "tablekit", "serve", path, "--port", "0", "--log-level", "warning"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        m = re.search(r"at http://127\.0\.0\.1:(\d+)", banner)
        assert m and int(m.group(1)) > 0, banner
        r = requests.get(f"http://127.0.0.1:{m.group(1)}/materialize/api/versions", timeout=30)
        assert r.json() == [2, 3]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_off_loopback_without_token_warns_first(path, capsys, monkeypatch) -> None:
    """Binding a non-loopback address without a token prints a warning before anything is bound
    (the bind is stopped here: the test never listens beyond 127.0.0.1)."""
    import tablekit.server as srv
    from tablekit.cli import main

    def refuse(host: str, port: int) -> Any:
        raise OSError(f"not bound in this test: {host}:{port}")

    monkeypatch.setattr(srv, "_bind", refuse)
    assert main(["serve", path, "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "0.0.0.0 is not a loopback address and no token is required" in err and "--token" in err
    assert "not bound in this test" in err and "Traceback" not in err
    assert main(["serve", path, "--host", "0.0.0.0", "--token", "secret-token"]) == 2
    assert "warning" not in capsys.readouterr().err
