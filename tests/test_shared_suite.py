"""One behavioural suite, two paths: the local engine in-process, and the CAVE HTTP backend talking
to ``tablekit serve`` on 127.0.0.1 (with a 500-row limit, so that larger answers are paged).

Every answer, on both paths, is checked against the pandas oracle (``Raw`` below, over
tests/_oracle.py), which recomputes it from the datastack's raw Parquet history and never touches
tablekit: rows, ``id`` order, column names and order, every value. Over HTTP the frame must also
equal the local engine's row for row (values, dtypes, column order).
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


# ----------------------------------------------------------------------------- the oracle
def _xyz(*points: str) -> list[str]:
    return [f"{p}_position_{a}" for p in points for a in "xyz"]


#: each table's result columns (split), in the order the README's layout gives them: id, created,
#: valid, the scalar fields, each bound point's supervoxel and root id, then the positions by name
COLUMNS = {
    SYN: [
        "id", "created", "valid", "size", "post_pt_supervoxel_id", "post_pt_root_id",
        "pre_pt_supervoxel_id", "pre_pt_root_id", *_xyz("ctr_pt", "post_pt", "pre_pt"),
    ],
    NUC: ["id", "created", "valid", "volume", "pt_supervoxel_id", "pt_root_id", *_xyz("bb_end", "bb_start", "pt")],
    # the reference table merged with its target: the target's columns keep their names, the
    # reference's clashing ones get _ref, the positions (the target's) come last
    CT: [
        "id", "created", "valid", "volume", "pt_supervoxel_id", "pt_root_id", "id_ref", "created_ref",
        "valid_ref", "cell_type", "classification_system", "target_id", *_xyz("bb_end", "bb_start", "pt"),
    ],
    COL: ["id", "created", "valid", "cell_type", "classification_system", "pt_supervoxel_id", "pt_root_id", *_xyz("pt")],
    VIEW: ["id", "pt_root_id", "pt_supervoxel_id", *_xyz("pt")],
}  # fmt: skip


class Raw:
    """The answers recomputed with pandas from the datastack's raw annotation and segmentation
    histories (tests/_oracle.py), never through tablekit: tables at a version, the merge of a
    reference table with its target, the view ``single_neurons`` by its definition."""

    def __init__(self, path: str, version: int):
        self.path, self.version = path, version

    def table(self, name: str, *filters: tuple, version: int | None = None) -> pd.DataFrame:
        if name == CT:
            snap = self._merged(version)
        elif name == VIEW:
            snap = self._view()
        else:
            snap = self._snapshot(name, version)
        keep = pd.Series(True, index=snap.index)
        for f in filters:
            keep &= _oracle.apply(snap, *f)
        return snap[keep][COLUMNS[name]].reset_index(drop=True)

    def _snapshot(self, name: str, version: int | None = None) -> pd.DataFrame:
        ts = _oracle.version_timestamp(self.path, self.version if version is None else version)
        return _oracle.snapshot(self.path, name, ts)

    def _merged(self, version: int | None) -> pd.DataFrame:
        """Each cell-type row with the nucleus it points to (an inner join on target_id), ordered
        by the cell-type row's id."""
        ref = self._snapshot(CT, version).rename(
            columns={"id": "id_ref", "created": "created_ref", "valid": "valid_ref"}
        )
        target = self._snapshot(NUC, version)
        m = ref.merge(target, left_on="target_id", right_on="id", how="inner", validate="many_to_one")
        return m.sort_values("id_ref").reset_index(drop=True)

    def _view(self) -> pd.DataFrame:
        """``single_neurons`` by its description: nuclei whose root id is not 0 and carries
        exactly one nucleus."""
        nuc = self._snapshot(NUC)
        counts = nuc["pt_root_id"].value_counts()
        single = nuc["pt_root_id"].map(counts).eq(1) & nuc["pt_root_id"].ne(0)
        return nuc[single.astype(bool)].reset_index(drop=True)

    @staticmethod
    def rescale(df: pd.DataFrame, have: tuple[float, float, float], want: list[float]) -> pd.DataFrame:
        """Positions from ``have`` to ``want`` nm per unit, in float64."""
        out = df.copy()
        for c in out.columns:
            if "_position_" in c:
                i = "xyz".index(c[-1])
                out[c] = out[c].astype("float64") * (have[i] / want[i])
        return out

    @staticmethod
    def count(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"count": [len(df)]})


VOXELS = (4.0, 4.0, 40.0)  # SYN, NUC and CT's voxel resolution (tables/*/metadata.json)
Oracle = Callable[[Raw, dict[str, Any]], pd.DataFrame]

#: name → (question, its answer recomputed by the oracle: split positions, in the result's columns)
QUESTIONS: dict[str, tuple[Question, Oracle]] = {
    "equality": (
        lambda c, v: c.tables[SYN](pre_pt_root_id=v["root"]).query(split_positions=True),
        lambda o, v: o.table(SYN, ("pre_pt_root_id", "==", v["root"])),
    ),
    "equality_classic_dicts": (
        lambda c, v: c.query_table(SYN, filter_equal_dict={"post_pt_root_id": v["post_root"]}),
        lambda o, v: o.table(SYN, ("post_pt_root_id", "==", v["post_root"])),
    ),
    "membership": (
        lambda c, v: c.tables[SYN](pre_pt_root_id=v["roots"]).query(split_positions=True),
        lambda o, v: o.table(SYN, ("pre_pt_root_id", "in", v["roots"])),
    ),
    "empty_membership": (
        lambda c, v: c.tables[SYN](pre_pt_root_id=[]).query(),
        lambda o, v: o.table(SYN, ("pre_pt_root_id", "in", [])),
    ),
    "float_range": (
        lambda c, v: c.tables[NUC](volume={">": 200, "<=": 700}).query(split_positions=True),
        lambda o, v: o.table(NUC, ("volume", ">", 200), ("volume", "<=", 700)),
    ),
    "id_range": (
        lambda c, v: c.tables[SYN](id={">=": v["id_lo"], "<": v["id_hi"]}).query(split_positions=True),
        lambda o, v: o.table(SYN, ("id", ">=", v["id_lo"]), ("id", "<", v["id_hi"])),
    ),
    "datetime_range": (
        lambda c, v: c.tables[SYN](created={"<": v["created_mid"]}, id={"<": v["id_hi"]}).query(),
        lambda o, v: o.table(SYN, ("created", "<", pd.Timestamp(v["created_mid"])), ("id", "<", v["id_hi"])),
    ),
    "exclusion": (
        lambda c, v: c.tables[SYN](pre_pt_root_id={"not in": v["roots"]}, id={"<": v["cut"]}).query(
            split_positions=True
        ),
        lambda o, v: o.table(SYN, ("pre_pt_root_id", "not in", v["roots"]), ("id", "<", v["cut"])),
    ),
    "exclusion_of_one_value": (
        lambda c, v: c.tables[NUC](pt_root_id={"!=": 0}).query(split_positions=True),
        lambda o, v: o.table(NUC, ("pt_root_id", "!=", 0)),
    ),
    "regex": (
        lambda c, v: c.tables[COL](cell_type={"regex": "^[0-9]P"}).query(split_positions=True),
        lambda o, v: o.table(COL, ("cell_type", "regex", "^[0-9]P")),
    ),
    "bbox": (
        lambda c, v: c.tables[NUC](pt_position_bbox=v["box"]).query(split_positions=True),
        lambda o, v: o.table(NUC, ("pt_position", "bbox", v["box"])),
    ),
    "reference_merge": (
        lambda c, v: c.tables[CT](cell_type=v["cell_type"]).query(),
        lambda o, v: o.table(CT, ("cell_type", "==", v["cell_type"])),
    ),
    "reference_merge_target_filter": (
        lambda c, v: c.tables[CT](pt_root_id=v["nuc_roots"]).query(),
        lambda o, v: o.table(CT, ("pt_root_id", "in", v["nuc_roots"])),
    ),
    "reference_merge_whole": (
        lambda c, v: c.tables[CT]().query(split_positions=True),
        lambda o, v: o.table(CT),
    ),
    "view": (lambda c, v: c.views[VIEW]().query(), lambda o, v: o.table(VIEW)),
    "view_filter": (
        lambda c, v: c.views[VIEW](pt_root_id=v["nuc_roots"]).query(split_positions=True),
        lambda o, v: o.table(VIEW, ("pt_root_id", "in", v["nuc_roots"])),
    ),
    "select_columns": (
        lambda c, v: c.tables[SYN](pre_pt_root_id=v["roots"]).query(
            select_columns=["size", "post_pt_position", "pre_pt_root_id"]
        ),
        # in the layout's order, whatever the order asked
        lambda o, v: o.table(SYN, ("pre_pt_root_id", "in", v["roots"]))[
            ["size", "pre_pt_root_id", *_xyz("post_pt")]
        ],
    ),
    "select_columns_of_a_merge": (
        lambda c, v: c.tables[CT]().query(select_columns=["cell_type", "pt_root_id", "id_ref"]),
        lambda o, v: o.table(CT)[["pt_root_id", "id_ref", "cell_type"]],
    ),
    "paging_offset_limit": (
        lambda c, v: c.tables[SYN]().query(offset=1000, limit=700, split_positions=True),
        lambda o, v: o.table(SYN).iloc[1000:1700],
    ),
    "paging_view": (
        lambda c, v: c.views[VIEW]().query(offset=10, limit=20),
        lambda o, v: o.table(VIEW).iloc[10:30],
    ),
    "whole_table_through_the_row_limit": (
        lambda c, v: c.tables[SYN]().query(split_positions=True),
        lambda o, v: o.table(SYN),
    ),
    "desired_resolution": (
        lambda c, v: c.tables[SYN](pre_pt_root_id=v["root"]).query(desired_resolution=[1, 1, 1]),
        lambda o, v: o.rescale(o.table(SYN, ("pre_pt_root_id", "==", v["root"])), VOXELS, [1, 1, 1]),
    ),
    "desired_resolution_of_a_merge": (
        lambda c, v: c.tables[CT]().query(desired_resolution=[8, 8, 40], split_positions=True),
        lambda o, v: o.rescale(o.table(CT), VOXELS, [8, 8, 40]),
    ),
    "count": (
        lambda c, v: c.tables[SYN](pre_pt_root_id=v["roots"]).query(get_counts=True),
        lambda o, v: o.count(o.table(SYN, ("pre_pt_root_id", "in", v["roots"]))),
    ),
    "count_with_exclusion": (
        lambda c, v: c.tables[SYN](pre_pt_root_id={"!=": 0}).query(get_counts=True),
        lambda o, v: o.count(o.table(SYN, ("pre_pt_root_id", "!=", 0))),
    ),
    "count_of_a_view": (
        lambda c, v: c.views[VIEW]().query(get_counts=True),
        lambda o, v: o.count(o.table(VIEW)),
    ),
    "count_of_a_merge": (
        lambda c, v: c.tables[CT](cell_type=v["cell_type"]).query(get_counts=True),
        lambda o, v: o.count(o.table(CT, ("cell_type", "==", v["cell_type"]))),
    ),
    "synapse_query": (
        lambda c, v: c.synapse_query(post_ids=v["post_root"], include_zeros=False, remove_autapses=True),
        # CAVEclient's meaning: no root id 0 on either side, and no synapse onto its own cell
        lambda o, v: (
            lambda df: df[(df["pre_pt_root_id"] != 0) & (df["pre_pt_root_id"] != df["post_pt_root_id"])]
        )(o.table(SYN, ("post_pt_root_id", "==", v["post_root"]), ("post_pt_root_id", "!=", 0))),
    ),
    "older_version": (
        lambda c, v: c.tables[NUC](volume={">": 300}).query(materialization_version=v["old_version"]),
        lambda o, v: o.table(NUC, ("volume", ">", 300), version=v["old_version"]),
    ),
    "arrow_output": (
        lambda c, v: c.tables[CT](cell_type=v["cell_type"]).query(output="arrow"),
        lambda o, v: o.table(CT, ("cell_type", "==", v["cell_type"])),
    ),
}


def _split(df: pd.DataFrame, names: list[str]) -> dict[str, list[Any]]:
    """The columns' cells as lists, with the columns of 3-element arrays (None where the point is
    missing) that ``names`` holds split as ``_x/_y/_z`` (lists, not a frame: a frame would turn
    an int column holding None into floats)."""
    out: dict[str, list[Any]] = {}
    for c in df.columns:
        if c not in names and f"{c}_x" in names:
            values = [x for x in df[c] if x is not None]
            assert all(isinstance(x, np.ndarray) and x.shape == (3,) for x in values), c
            for i, a in enumerate("xyz"):
                out[f"{c}_{a}"] = [None if x is None else x[i] for x in df[c]]
        else:
            out[c] = df[c].tolist()
    return out


def _cells(values: Any) -> list[Any]:
    """Plain Python values, every kind of missing as None (18-digit ids stay exact ints)."""
    return [
        None if pd.api.types.is_scalar(x) and pd.isna(x) else (x.item() if hasattr(x, "item") else x)
        for x in values
    ]


def _same_as_oracle(got: Any, want: pd.DataFrame) -> None:
    frame = got.to_pandas() if isinstance(got, pa.Table) else got
    cells = _split(frame, list(want.columns))
    assert list(cells) == list(want.columns)
    assert len(frame) == len(want)
    for c in want.columns:
        assert _cells(cells[c]) == _cells(want[c]), c


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
    """The answer equals the oracle's, on both paths; over HTTP it also equals the local engine's
    frame exactly (dtypes, column order)."""
    question, oracle = QUESTIONS[name]
    got = question(tk, v)
    want = oracle(Raw(path, client.version), v)
    assert len(want) or name == "empty_membership", f"{name}: the question should have an answer"
    _same_as_oracle(got, want)
    if tk is not client:
        local = _plain(question(client, v))
        if isinstance(local, pa.Table):
            assert _plain(got).equals(local), name
        else:
            pd.testing.assert_frame_equal(got, local)
    if isinstance(got, pd.DataFrame):
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
