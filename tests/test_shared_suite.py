"""One behavioural suite, two paths: the local engine in-process, and the CAVE HTTP backend talking
to ``tablekit serve`` on 127.0.0.1 (with a 500-row limit, so that larger answers are paged).

Every question is asked on the path under test and on the local engine; the frames must be equal
row for row (values, dtypes, column order, ``id`` order). Where a question is a plain filter, the
rows are also checked against the pandas oracle (tests/_oracle.py), which never touches tablekit's
engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import _oracle
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _server import running_server

import tablekit

SYN = "synapses_pni_2"
NUC = "nucleus_detection_v0"
CT = "aibs_metamodel_celltypes_v661"
COL = "allen_v1_column_types_slanted"
VIEW = "single_neurons"
ROW_LIMIT = 500


@pytest.fixture(scope="module")
def http(path, client, tmp_path_factory) -> Iterator[tablekit.Client]:
    with running_server(path, row_limit=ROW_LIMIT) as url:
        yield tablekit.connect(
            client.datastack, server=url, cache_dir=tmp_path_factory.mktemp("cave-cache"), progress=False
        )


@pytest.fixture(params=["local", "http"])
def tk(request, client) -> tablekit.Client:
    """The path under test."""
    return client if request.param == "local" else request.getfixturevalue("http")


@pytest.fixture(scope="module")
def v(client) -> dict[str, Any]:
    """Values that exist in the datastack, picked from the local engine."""
    syn = client.query_table(SYN, split_positions=True)
    nuc = client.query_table(NUC, split_positions=True)
    ct = client.query_table(CT, split_positions=True)
    pre = syn["pre_pt_root_id"][syn["pre_pt_root_id"] != 0].value_counts()
    post = syn["post_pt_root_id"][syn["post_pt_root_id"] != 0].value_counts()
    ids = np.sort(syn["id"].to_numpy())
    x, y, z = (nuc[f"pt_position_{a}"] for a in "xyz")
    box = [
        [int(x.quantile(0.2)), int(y.quantile(0.2)), int(z.quantile(0.2))],
        [int(x.quantile(0.7)), int(y.quantile(0.8)), int(z.quantile(0.9))],
    ]
    return {
        "root": int(pre.index[0]),
        "roots": [int(r) for r in pre.index[:4]],
        "post_root": int(post.index[1]),
        "id_lo": int(ids[700]),
        "id_hi": int(ids[2600]),
        "cut": int(ids[1500]),
        "created_mid": syn["created"].sort_values().iloc[len(syn) // 3].to_pydatetime(),
        "box": box,
        "cell_type": ct["cell_type"].value_counts().index[0],
        "nuc_roots": [int(r) for r in nuc["pt_root_id"][nuc["pt_root_id"] != 0][:40]],
        "old_version": client.get_versions()[0],
    }


Question = Callable[[tablekit.Client, dict[str, Any]], Any]

#: name → (question, oracle filters on the plain table or None)
QUESTIONS: dict[str, tuple[Question, Any]] = {
    "equality": (
        lambda c, v: c.tables[SYN](pre_pt_root_id=v["root"]).query(split_positions=True),
        lambda v: (SYN, [("pre_pt_root_id", "==", v["root"])]),
    ),
    "equality_classic_dicts": (
        lambda c, v: c.query_table(SYN, filter_equal_dict={"post_pt_root_id": v["post_root"]}),
        None,
    ),
    "membership": (
        lambda c, v: c.tables[SYN](pre_pt_root_id=v["roots"]).query(split_positions=True),
        lambda v: (SYN, [("pre_pt_root_id", "in", v["roots"])]),
    ),
    "empty_membership": (lambda c, v: c.tables[SYN](pre_pt_root_id=[]).query(), None),
    "float_range": (
        lambda c, v: c.tables[NUC](volume={">": 200, "<=": 700}).query(split_positions=True),
        lambda v: (NUC, [("volume", ">", 200), ("volume", "<=", 700)]),
    ),
    "id_range": (
        lambda c, v: c.tables[SYN](id={">=": v["id_lo"], "<": v["id_hi"]}).query(split_positions=True),
        lambda v: (SYN, [("id", ">=", v["id_lo"]), ("id", "<", v["id_hi"])]),
    ),
    "datetime_range": (
        lambda c, v: c.tables[SYN](created={"<": v["created_mid"]}, id={"<": v["id_hi"]}).query(),
        None,
    ),
    "exclusion": (
        lambda c, v: c.tables[SYN](pre_pt_root_id={"not in": v["roots"]}, id={"<": v["cut"]}).query(
            split_positions=True
        ),
        lambda v: (SYN, [("pre_pt_root_id", "not in", v["roots"]), ("id", "<", v["cut"])]),
    ),
    "exclusion_of_one_value": (
        lambda c, v: c.tables[NUC](pt_root_id={"!=": 0}).query(split_positions=True),
        lambda v: (NUC, [("pt_root_id", "!=", 0)]),
    ),
    "regex": (
        lambda c, v: c.tables[COL](cell_type={"regex": "^[0-9]P"}).query(split_positions=True),
        lambda v: (COL, [("cell_type", "regex", "^[0-9]P")]),
    ),
    "bbox": (
        lambda c, v: c.tables[NUC](pt_position_bbox=v["box"]).query(split_positions=True),
        lambda v: (NUC, [("pt_position", "bbox", v["box"])]),
    ),
    "reference_merge": (lambda c, v: c.tables[CT](cell_type=v["cell_type"]).query(), None),
    "reference_merge_target_filter": (lambda c, v: c.tables[CT](pt_root_id=v["nuc_roots"]).query(), None),
    "reference_merge_whole": (lambda c, v: c.tables[CT]().query(split_positions=True), None),
    "view": (lambda c, v: c.views[VIEW]().query(), None),
    "view_filter": (lambda c, v: c.views[VIEW](pt_root_id=v["nuc_roots"]).query(split_positions=True), None),
    "select_columns": (
        lambda c, v: c.tables[SYN](pre_pt_root_id=v["roots"]).query(
            select_columns=["size", "post_pt_position", "pre_pt_root_id"]
        ),
        None,
    ),
    "select_columns_of_a_merge": (
        lambda c, v: c.tables[CT]().query(select_columns=["cell_type", "pt_root_id", "id_ref"]),
        None,
    ),
    "paging_offset_limit": (
        lambda c, v: c.tables[SYN]().query(offset=1000, limit=700, split_positions=True),
        None,
    ),
    "paging_view": (lambda c, v: c.views[VIEW]().query(offset=10, limit=20), None),
    "whole_table_through_the_row_limit": (lambda c, v: c.tables[SYN]().query(split_positions=True), None),
    "desired_resolution": (
        lambda c, v: c.tables[SYN](pre_pt_root_id=v["root"]).query(desired_resolution=[1, 1, 1]),
        None,
    ),
    "desired_resolution_of_a_merge": (
        lambda c, v: c.tables[CT]().query(desired_resolution=[8, 8, 40], split_positions=True),
        None,
    ),
    "count": (lambda c, v: c.tables[SYN](pre_pt_root_id=v["roots"]).query(get_counts=True), None),
    "count_with_exclusion": (
        lambda c, v: c.tables[SYN](pre_pt_root_id={"!=": 0}).query(get_counts=True),
        None,
    ),
    "count_of_a_view": (lambda c, v: c.views[VIEW]().query(get_counts=True), None),
    "count_of_a_merge": (lambda c, v: c.tables[CT](cell_type=v["cell_type"]).query(get_counts=True), None),
    "synapse_query": (
        lambda c, v: c.synapse_query(post_ids=v["post_root"], include_zeros=False, remove_autapses=True),
        None,
    ),
    "older_version": (
        lambda c, v: c.tables[NUC](volume={">": 300}).query(materialization_version=v["old_version"]),
        None,
    ),
    "arrow_output": (lambda c, v: c.tables[CT](cell_type=v["cell_type"]).query(output="arrow"), None),
}


def _plain(result: Any) -> Any:
    if isinstance(result, pa.Table):
        return result.replace_schema_metadata(None)  # provenance differs by backend
    return result


def _assert_writeable(df: pd.DataFrame) -> None:
    """Users edit results in place (``df.loc[mask, col] = x``): no column may be backed by
    Arrow's read-only buffers, on pandas 2 or 3; position arrays are writeable too."""
    if not len(df):
        return
    first = df.index[0]
    for c in df.columns:
        value = df[c].iloc[-1]
        if isinstance(value, np.ndarray) or value is None:  # a position column: arrays (or None)
            arrays = [a for a in df[c] if a is not None]
            assert all(a.flags.writeable for a in arrays[:50]), c
            continue
        df.loc[first, c] = value
        after = df.loc[first, c]
        assert (pd.isna(after) and pd.isna(value)) or after == value, c


@pytest.mark.parametrize("name", list(QUESTIONS))
def test_question(name, tk, client, v, path):
    question, oracle = QUESTIONS[name]
    got, want = _plain(question(tk, v)), _plain(question(client, v))
    if isinstance(want, pa.Table):
        assert got.equals(want), name
        return
    pd.testing.assert_frame_equal(got, want)
    assert len(want) or name == "empty_membership", f"{name}: the question should have an answer"
    key = "id_ref" if "id_ref" in want.columns else "id"  # a merge repeats the target's id
    if key in want.columns:
        assert want[key].is_unique and want[key].is_monotonic_increasing
    if oracle is not None:
        table, filters = oracle(v)
        snap = _oracle.snapshot(path, table, _oracle.version_timestamp(path, client.version))
        keep = pd.Series(True, index=snap.index)
        for f in filters:
            keep &= _oracle.apply(snap, *f)
        assert got["id"].tolist() == snap[keep]["id"].tolist()
    _assert_writeable(got)


def test_the_http_path_pages(http, v):
    """The suite's larger answers really went through several pages."""
    df = http.tables[SYN]().query(offset=1000, limit=700)
    assert df.attrs["request"]["paged"] and df.attrs["pages"] > 1
    assert df.attrs["backend"] == "cave"


def test_editing_a_result_changes_no_later_answer(tk, v):
    """A result's columns may be the backend's own buffers: writing into every cell of one must
    leave the next answers (cached metadata, native copies, pages) untouched."""
    question = QUESTIONS["equality"][0]
    first = question(tk, v)
    before = first.copy(deep=True)
    for c in first.columns:
        if first[c].dtype.kind in "iuf":
            first.loc[:, c] = 7
    assert (first["id"] == 7).all()
    pd.testing.assert_frame_equal(question(tk, v), before)
