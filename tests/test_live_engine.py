"""Live queries answered from a snapshot plus the changes since (``_sql.LiveFromSnapshot``).

A live query at ``T`` starts from the newest valid version ``V <= T`` that has a snapshot of the
table, removes the annotations deleted in ``(V, T]``, adds those created in ``(V, T]`` and remaps
the root ids of the supervoxels edited in ``(V, T]``; before every valid version it rebuilds the
table from the whole history. Every answer here is checked against the pandas replay of the raw
annotation and segmentation histories of the hand-written mini datastack
(``tests/_mini_datastack.py``), which shares no code with the engine, and against the engine's
full-history path on a copy without valid versions.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import _mini_datastack as mini
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tablekit.backends.local import LocalBackend
from tablekit.query import Join, Predicate, Query

NUC, SYN, CT, RP = "nucleus_detection_v0", "synapses_pni_2", "cell_type_ref", "nucleus_ref_points"
UTC = dt.timezone.utc
V2, V3 = mini.VERSIONS[2], mini.VERSIONS[3]
BETWEEN = V2 + dt.timedelta(days=6, hours=5, minutes=7)  # between the two valid versions
AFTER = V3 + dt.timedelta(days=9, hours=3)  # after the last version and after most edits
BEFORE = mini.VERSIONS[1] + dt.timedelta(days=4)  # after the expired version, before every valid one


# --------------------------------------------------------------------------- fixtures and oracle


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return mini.write_mini_datastack(tmp_path_factory.mktemp("live") / "mini")


@pytest.fixture(scope="module")
def backend(ds) -> LocalBackend:
    b = LocalBackend(ds)
    yield b
    b.close()


@pytest.fixture(scope="module")
def full_history(ds, tmp_path_factory) -> LocalBackend:
    """The same datastack with every version marked expired: live queries rebuild from the history."""
    copy = tmp_path_factory.mktemp("nover") / "mini"
    shutil.copytree(ds, copy)
    versions = json.loads((copy / "versions.json").read_text())
    for v in versions:
        v["valid"], v["status"] = False, "EXPIRED"
    (copy / "versions.json").write_text(json.dumps(versions))
    b = LocalBackend(copy)
    yield b
    b.close()


@pytest.fixture(scope="module")
def history(ds) -> pd.DataFrame:
    return mini.read_history(ds)


def stored(backend: LocalBackend, table: str) -> list[str]:
    return list(backend._spec(table).stored_columns)


def oracle(ds, table: str, t: dt.datetime) -> pd.DataFrame:
    """The table at ``t``, replayed with pandas from the annotation and segmentation histories."""
    frame = mini.materialize(mini.read_annotations(ds, table), mini.read_history(ds), t, table)
    return mini.to_arrow(frame).to_pandas().sort_values("id").reset_index(drop=True)


def live(table: str, t: dt.datetime, *preds: tuple, **kw) -> Query:
    return Query(
        mini.DATASTACK,
        table,
        predicates=tuple(Predicate(tb, c, o, v) for tb, c, o, v in preds),
        timestamp=t,
        **kw,
    )


def assert_same(result: pa.Table, want: pd.DataFrame) -> None:
    got = result.to_pandas()
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)


def assert_tables_equal(a: pa.Table, b: pa.Table) -> None:
    """Same schema and values (NaN equal to NaN, unlike ``pa.Table.equals``)."""
    assert a.schema == b.schema
    pd.testing.assert_frame_equal(a.to_pandas(), b.to_pandas())


def roots_at(history: pd.DataFrame, t: dt.datetime) -> pd.DataFrame:
    ts = pd.Timestamp(t)
    return history[(history["valid_from"] <= ts) & (history["valid_to"].isna() | (history["valid_to"] > ts))]


def files_read(backend: LocalBackend, query: Query) -> set[str]:
    return {
        f.split("/")[0] + "/" + f.split("/")[1] for fs in backend.explain(query)["files"].values() for f in fs
    }


def mask_roots(df: pd.DataFrame, column: str, ids) -> pd.Series:
    return df[column].isin(list(ids)).fillna(False).astype(bool)


def times_between(history: pd.DataFrame, ds, lo: dt.datetime, hi: dt.datetime) -> list[dt.datetime]:
    """Edit, creation and deletion times in (lo, hi], each exactly and one microsecond before."""
    events: set[pd.Timestamp] = set(history["valid_from"])
    ann = mini.read_annotations(ds, SYN)
    events |= set(ann["created"]) | set(ann["deleted"].dropna())
    picked = sorted(t for t in events if pd.Timestamp(lo) < t <= pd.Timestamp(hi))
    picked = picked[:: max(1, len(picked) // 5)][:5]
    out = []
    for t in picked:
        out += [t.to_pydatetime(), (t - pd.Timedelta(microseconds=1)).to_pydatetime()]
    return out


# --------------------------------------------------------------------------- which source


def test_source_is_the_newest_valid_version_at_or_before_t(backend):
    """Live at T reads the snapshot of the newest valid version <= T plus the histories; before
    every valid version it reads the histories only."""
    assert files_read(backend, live(SYN, BETWEEN)) == {
        "versions/2",
        "tables/synapses_pni_2",
        "segmentation/history",
    }
    assert files_read(backend, live(SYN, V3)) >= {"versions/3"}
    assert files_read(backend, live(SYN, AFTER)) >= {"versions/3"}
    assert files_read(backend, live(SYN, V3 - dt.timedelta(microseconds=1))) >= {"versions/2"}
    assert files_read(backend, live(SYN, BEFORE)) == {"tables/synapses_pni_2", "segmentation/history"}
    sql = backend.explain(live(SYN, BETWEEN))["sql"]
    assert "__tk_new_" in sql and "__tk_changed_" in sql and "__tk_history" in sql


def test_the_fixture_changes_between_versions(ds, history):
    """Between V2 and BETWEEN there are creations, deletions (of snapshot rows and of rows made
    after V2), edits, and invalid annotations — so the tests below exercise every part."""
    a = mini.read_annotations(ds, SYN)
    v, t = pd.Timestamp(V2), pd.Timestamp(BETWEEN)
    created = (a["created"] > v) & (a["created"] <= t)
    gone = (a["deleted"] > v) & (a["deleted"] <= t)
    assert (created & ~gone).sum() > 50
    assert (gone & (a["created"] <= v) & a["valid"]).sum() > 10
    assert (created & gone).sum() > 0
    assert (created & ~a["valid"]).sum() > 0
    assert ((history["valid_from"] > v) & (history["valid_from"] <= t)).sum() > 10


# --------------------------------------------------------------------------- whole tables


@pytest.mark.parametrize("table", [SYN, NUC, CT, RP])
@pytest.mark.parametrize(
    "t", [BETWEEN, AFTER, V2, V3, BEFORE], ids=["between", "after", "v2", "v3", "before"]
)
def test_table_at_t_equals_the_replay(backend, ds, table, t):
    """The whole table at T equals the replay of both histories."""
    got = backend.execute(live(table, t)).table
    assert_same(got, oracle(ds, table, t)[stored(backend, table)])


def test_at_edit_creation_and_deletion_times(backend, ds, history):
    """Exactly at, and one microsecond before, edits, creations and deletions after a version."""
    times = times_between(history, ds, V2, V3) + times_between(history, ds, V3, AFTER)
    assert len(times) >= 16
    for t in times:
        for table in (SYN, NUC):
            got = backend.execute(live(table, t)).table
            assert_same(got, oracle(ds, table, t)[stored(backend, table)])


def test_live_at_a_version_is_its_snapshot(backend, ds):
    """Live at a version's timestamp equals that version, and both equal the pandas replay."""
    for v, t in ((2, V2), (3, V3)):
        for table in (SYN, NUC, CT):
            mat = backend.execute(Query(mini.DATASTACK, table, version=v)).table
            got = backend.execute(live(table, t)).table
            assert_tables_equal(got, mat)
            assert_same(got, oracle(ds, table, t)[stored(backend, table)])


# --------------------------------------------------------------------------- root ids


def _busy(df: pd.DataFrame, column: str, candidates) -> int:
    counts = df[column].value_counts()
    best = max((int(r) for r in candidates if counts.get(r, 0) > 0), key=lambda r: counts[r])
    return best


def test_root_created_after_the_version(backend, ds, history):
    """A root made by an edit after V: its rows at T, though no snapshot row has it."""
    t = BETWEEN
    want = oracle(ds, SYN, t)
    at_t = roots_at(history, t)
    fresh = at_t[at_t["valid_from"] > pd.Timestamp(V2)]["root_id"].unique()
    for column in ("pre_pt_root_id", "post_pt_root_id"):
        root = _busy(want, column, fresh)
        assert root not in set(
            backend.execute(Query(mini.DATASTACK, SYN, version=2)).table[column].to_pylist()
        )
        got = backend.execute(live(SYN, t, (SYN, column, "==", root))).table
        expect = want[mask_roots(want, column, [root])][stored(backend, SYN)]
        assert len(expect) > 0
        assert_same(got, expect)


def test_root_retired_after_the_version(backend, ds, history):
    """A root of the snapshot retired by an edit after V matches nothing at T; its successors
    hold its rows."""
    t = BETWEEN
    snap = oracle(ds, SYN, V2)
    h = history
    retired = h[(h["valid_from"] <= pd.Timestamp(V2)) & (h["valid_to"] > pd.Timestamp(V2))]
    retired = retired[retired["valid_to"] <= pd.Timestamp(t)]["root_id"].unique()
    old = _busy(snap, "post_pt_root_id", retired)
    assert backend.execute(live(SYN, t, (SYN, "post_pt_root_id", "==", old))).table.num_rows == 0
    at_v = backend.execute(live(SYN, V2, (SYN, "post_pt_root_id", "==", old))).table
    assert at_v.num_rows == int((snap["post_pt_root_id"] == old).sum()) > 0
    svs = sorted(set(h.loc[h["root_id"] == old, "supervoxel_id"]))
    now = roots_at(h, t)
    successors = sorted(set(now.loc[now["supervoxel_id"].isin(svs), "root_id"]))
    want = oracle(ds, SYN, t)
    got = backend.execute(live(SYN, t, (SYN, "post_pt_root_id", "in", tuple(successors)))).table
    assert_same(got, want[mask_roots(want, "post_pt_root_id", successors)][stored(backend, SYN)])
    # old and new ids together: every row once
    both = backend.execute(live(SYN, t, (SYN, "post_pt_root_id", "in", (old, *successors)))).table
    assert both.equals(got)


def test_untouched_root_and_membership_mixes(backend, ds, history):
    """Untouched, new, retired roots and 0 in one list; exclusions; two root filters; a root
    filter with another filter."""
    t = BETWEEN
    want = oracle(ds, SYN, t)
    at_t = roots_at(history, t)
    v = pd.Timestamp(V2)
    untouched = _busy(want, "post_pt_root_id", at_t[at_t["valid_from"] <= v]["root_id"].unique())
    fresh = _busy(want, "post_pt_root_id", at_t[at_t["valid_from"] > v]["root_id"].unique())
    retired = int(
        history[(history["valid_to"] > v) & (history["valid_to"] <= pd.Timestamp(t))]["root_id"].iloc[0]
    )
    pre = _busy(want, "pre_pt_root_id", at_t["root_id"].unique())
    cases = [
        [(SYN, "post_pt_root_id", "==", untouched)],
        [(SYN, "post_pt_root_id", "in", (untouched, fresh, retired, 0))],
        [(SYN, "post_pt_root_id", "in", (0,))],
        [(SYN, "post_pt_root_id", "not in", (untouched, fresh)), (SYN, "pre_pt_root_id", "!=", 0)],
        [(SYN, "pre_pt_root_id", "==", pre), (SYN, "post_pt_root_id", "in", (untouched, fresh, 0))],
        [(SYN, "post_pt_root_id", "in", (untouched, fresh)), (SYN, "size", ">", 500.0)],
        [(SYN, "post_pt_root_id", "in", (retired,))],
        [(SYN, "pre_pt_root_id", "!=column", "post_pt_root_id"), (SYN, "id", ">", 3000)],
    ]
    nonempty = 0
    for preds in cases:
        m = pd.Series(True, index=want.index)
        for _, col, op, value in preds:
            s = want[col]
            if op == "==":
                m &= (s == value).fillna(False).astype(bool)
            elif op == "in":
                m &= mask_roots(want, col, value)
            elif op == "not in":
                m &= ~mask_roots(want, col, value)
            elif op == "!=":
                m &= ~(s == value).fillna(False).astype(bool)
            elif op == ">":
                m &= (s > value).fillna(False).astype(bool)
            elif op == "!=column":
                o = want[value]
                m &= (s.isna() | o.isna() | (s != o)).fillna(True).astype(bool)
        expect = want[m][stored(backend, SYN)]
        nonempty += len(expect) > 0
        assert_same(backend.execute(live(SYN, t, *preds)).table, expect)
    assert nonempty >= 6


def test_root_filter_on_new_annotations(backend, ds, history):
    """Rows created after V on a root: found through the history at T."""
    t = AFTER
    want = oracle(ds, NUC, t)
    new = want[want["created"] > pd.Timestamp(V3)]
    root = int(new["pt_root_id"][new["pt_root_id"] != 0].value_counts().index[0])
    got = backend.execute(live(NUC, t, (NUC, "pt_root_id", "==", root))).table
    expect = want[mask_roots(want, "pt_root_id", [root])][stored(backend, NUC)]
    assert (expect["created"] > pd.Timestamp(V3)).any()
    assert_same(got, expect)


# --------------------------------------------------------------------------- joins, views, shapes


def test_reference_table_joined_live(backend, ds, history):
    """A reference table merged with its target at T, with and without a root filter on the target."""
    t = BETWEEN
    ref, target = oracle(ds, CT, t), oracle(ds, NUC, t)
    want = target.merge(
        ref.rename(columns={"id": "id_ref", "created": "created_ref", "valid": "valid_ref"}),
        left_on="id",
        right_on="target_id",
    ).sort_values("id_ref", kind="stable")
    got = backend.execute(live(CT, t, join=Join(CT, NUC))).table
    assert_same(got, want[got.column_names])
    at_t = roots_at(history, t)
    roots = [
        r
        for r in at_t[at_t["valid_from"] > pd.Timestamp(V2)]["root_id"].unique()
        if r in set(want["pt_root_id"])
    ]
    assert roots
    preds = [(NUC, "pt_root_id", "in", tuple(int(r) for r in roots)), (CT, "cell_type", "!=", "23P")]
    got = backend.execute(live(CT, t, *preds, join=Join(CT, NUC))).table
    m = want["pt_root_id"].isin(roots) & ~(want["cell_type"] == "23P")
    assert m.sum() > 0
    assert_same(got, want[m][got.column_names])
    # a reference table with a bound point of its own, at another resolution
    rp = backend.execute(live(RP, t, join=Join(RP, NUC))).table
    assert rp.num_rows == len(oracle(ds, RP, t).merge(target, left_on="target_id", right_on="id"))


def test_live_compatible_view_between_versions(backend, ds):
    """``nuclei_large`` (volume > 40, NaN included: DuckDB orders NaN above every number) at T."""
    t = BETWEEN
    view = backend.execute(Query(mini.DATASTACK, "nuclei_large", kind="view", timestamp=t)).table
    nuc = mini.to_arrow(mini.materialize(mini.read_annotations(ds, NUC), mini.read_history(ds), t, NUC))
    keep = pc.or_(
        pc.fill_null(pc.greater(nuc["volume"], 40.0), False), pc.fill_null(pc.is_nan(nuc["volume"]), False)
    )
    want = nuc.filter(keep).to_pandas().sort_values("id").reset_index(drop=True)
    assert view["id"].to_pylist() == want["id"].tolist()
    assert view["pt_root_id"].to_pylist() == [None if pd.isna(x) else int(x) for x in want["pt_root_id"]]
    assert "versions/2" in files_read(
        backend, Query(mini.DATASTACK, "nuclei_large", kind="view", timestamp=t)
    )


def test_paging_count_sample_columns_resolution(backend, ds):
    """offset/limit over the merged id order, count, random_sample, select_columns and
    desired_resolution work on the snapshot-based source as on any other."""
    t = BETWEEN
    full = backend.execute(live(SYN, t)).table
    ids = full["id"].to_pylist()
    assert ids == sorted(ids) and ids == oracle(ds, SYN, t)["id"].tolist()
    pages = [backend.execute(live(SYN, t, limit=700, offset=o)).table for o in range(0, len(ids) + 700, 700)]
    assert pa.concat_tables(pages).equals(full)
    assert backend.execute(live(SYN, t, count=True)).table["count"].to_pylist() == [len(ids)]
    pred = (SYN, "size", ">", 100.0)
    a = backend.execute(live(SYN, t, pred, random_sample=50)).table
    assert a.equals(backend.execute(live(SYN, t, pred, random_sample=50)).table) and a.num_rows == 50
    assert set(a["id"].to_pylist()) <= set(backend.execute(live(SYN, t, pred)).table["id"].to_pylist())
    assert backend.execute(live(SYN, t, pred, random_sample=50, count=True)).table["count"].to_pylist() == [
        50
    ]
    sel = backend.execute(live(NUC, t, select_columns=("pt_position", "pt_root_id"), limit=20)).table
    assert sel.column_names == ["pt_root_id", "pt_position_x", "pt_position_y", "pt_position_z"]
    scaled = backend.execute(live(NUC, t, desired_resolution=(1.0, 1.0, 1.0), limit=20)).table
    raw = backend.execute(live(NUC, t, limit=20)).table
    assert (scaled["pt_position_z"].to_pandas() == raw["pt_position_z"].to_pandas() * 40.0).all()
    assert scaled["pt_root_id"].equals(raw["pt_root_id"])


# --------------------------------------------------------------------------- exactness at scale


def test_agrees_with_the_full_history_path(backend, full_history, ds, history):
    """Random times and root filters: the snapshot-based answer equals the full-history one."""
    rng = np.random.default_rng(5)
    lo, hi = pd.Timestamp(V2), pd.Timestamp(AFTER) + pd.Timedelta(days=3)
    checked = 0
    for _ in range(30):
        t = (lo + (hi - lo) * float(rng.random())).round("us").to_pydatetime()
        table = [SYN, NUC, RP][int(rng.integers(0, 3))]
        column = {SYN: "post_pt_root_id", NUC: "pt_root_id", RP: "pt_root_id"}[table]
        alive = roots_at(history, t)["root_id"].unique()
        ids = tuple(int(x) for x in rng.choice(alive, int(rng.integers(1, 4)), replace=False))
        for preds in ([], [(table, column, "in" if len(ids) > 1 else "==", ids if len(ids) > 1 else ids[0])]):
            q = live(table, t, *preds)
            a, b = backend.execute(q).table, full_history.execute(q).table
            assert_tables_equal(a, b)
            checked += a.num_rows
    assert checked > 1000


def test_parquet_and_native_copies_agree(ds, tmp_path, monkeypatch):
    """The time-ordered native copies are an optimisation only: reading the Parquet files gives
    the same answers."""
    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "cache"))
    native, plain = LocalBackend(ds, native_cache=True), LocalBackend(ds, native_cache=False)
    try:
        root = int(oracle(ds, SYN, BETWEEN)["post_pt_root_id"].dropna().iloc[3])
        for q in (
            live(SYN, BETWEEN),
            live(SYN, AFTER, (SYN, "post_pt_root_id", "==", root)),
            live(CT, BETWEEN, join=Join(CT, NUC)),
        ):
            assert_tables_equal(native.execute(q).table, plain.execute(q).table)
        ex = native.explain(live(SYN, BETWEEN))
        assert "read_parquet" not in ex["sql"] and len(ex["attach"]) == 5  # snapshot, 2 × 2 histories
        assert "read_parquet" in plain.explain(live(SYN, BETWEEN))["sql"]
    finally:
        native.close()
        plain.close()


def test_every_value_is_bound(backend):
    """Timestamps, root ids and version times are parameters; identifiers are quoted."""
    marker = 987_654_321_123
    ex = backend.explain(live(SYN, BETWEEN, (SYN, "post_pt_root_id", "==", marker)))
    sql = re.sub(r'"native_[0-9a-f]+"', '"native"', ex["sql"])  # cache names are hashes: digits
    assert str(marker) not in sql and "2025" not in sql and marker in ex["parameters"]
    assert V2.isoformat() in ex["parameters"] and BETWEEN.isoformat() in ex["parameters"]
    assert '"post_pt_root_id"' in ex["sql"] and '"supervoxel_id"' in ex["sql"]


# --------------------------------------------------------------------------- version choice


def _copy(ds: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(ds, copy)
    return copy


def test_expired_or_missing_snapshots_fall_back(ds, tmp_path):
    """An expired version is never a base; a version without the table's snapshot (the table was
    created after it) is skipped for that table (an older one, or the full history, is used) — the
    answers stay exact."""
    copy = _copy(ds, tmp_path)
    versions = json.loads((copy / "versions.json").read_text())
    for v in versions:
        if v["version"] == 3:
            v["valid"], v["status"] = False, "EXPIRED"
    (copy / "versions.json").write_text(json.dumps(versions))
    shutil.rmtree(copy / "versions" / "2" / NUC)
    meta_file = copy / "tables" / NUC / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["created"] = (V2 + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")
    meta_file.write_text(json.dumps(meta))
    with LocalBackend(copy) as b:
        assert files_read(b, live(SYN, AFTER)) >= {"versions/2"}
        assert "versions/3" not in files_read(b, live(SYN, AFTER))
        assert not any(f.startswith("versions/") for f in files_read(b, live(NUC, AFTER)))
        for table in (SYN, NUC):
            assert_same(b.execute(live(table, AFTER)).table, oracle(ds, table, AFTER)[stored(b, table)])
        # a join whose tables start from different places
        q = live(CT, AFTER, join=Join(CT, NUC))
        assert {"versions/2", "tables/nucleus_detection_v0"} <= files_read(b, q)
        ref, target = oracle(ds, CT, AFTER), oracle(ds, NUC, AFTER)
        assert b.execute(q).table["id_ref"].to_pylist() == sorted(
            ref.merge(target, left_on="target_id", right_on="id", suffixes=("_ref", ""))["id_ref"]
        )


def test_before_the_first_valid_version_uses_the_history(backend, ds, history):
    """Before every valid version (after an expired one) the table is rebuilt from the history,
    root filters included."""
    t = BEFORE
    want = oracle(ds, SYN, t)
    root = int(want["post_pt_root_id"][want["post_pt_root_id"] != 0].value_counts().index[0])
    q = live(SYN, t, (SYN, "post_pt_root_id", "==", root))
    assert not any(f.startswith("versions/") for f in files_read(backend, q))
    assert "__tk_new_" not in backend.explain(q)["sql"]
    assert_same(
        backend.execute(q).table, want[mask_roots(want, "post_pt_root_id", [root])][stored(backend, SYN)]
    )
