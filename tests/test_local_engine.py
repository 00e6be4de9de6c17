"""The local engine (``tablekit.backends.local``) against independent pandas computations.

Real DuckDB over real Parquet: a tiny datastack is written by hand (``tests/_mini_datastack.py``)
and every answer is compared with pandas working on the raw snapshot files (or, for live
queries, with a pandas replay of the annotation and segmentation histories).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _mini_datastack as mini
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tablekit.backends.base import Backend
from tablekit.backends.local import LocalBackend
from tablekit.errors import (
    DatastackError,
    FilterValueError,
    OperatorError,
    QueryError,
    UnknownColumnError,
    UnknownTableError,
    UnsupportedError,
    VersionError,
)
from tablekit.query import Join, Predicate, Query

NUC, SYN, CT, RP = "nucleus_detection_v0", "synapses_pni_2", "cell_type_ref", "nucleus_ref_points"
UTC = dt.timezone.utc


# --------------------------------------------------------------------------- fixtures and oracle


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return mini.write_mini_datastack(tmp_path_factory.mktemp("mini") / "mini")


@pytest.fixture(scope="module")
def backend(ds) -> LocalBackend:
    b = LocalBackend(ds)
    yield b
    b.close()


def snap(ds: Path, table: str, version: int = 3) -> pd.DataFrame:
    return mini.read_snapshot(ds, table, version).to_pandas()


def test_a_first_query_on_big_files_reads_them_while_the_copy_is_built_later(ds, tmp_path, monkeypatch):
    """Issue 15 item 4: a first query of a big snapshot (``DIRECT_MIN_BYTES``) reads its Parquet
    files (checked first) instead of waiting for the native copy, which is built in the background
    once no query runs; the answers equal the pandas oracle both ways. Small file sets are still
    copied on first use."""
    import tablekit.backends.local.backend as local

    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(local, "DIRECT_MIN_BYTES", 0)  # every file set is "big"
    native = tmp_path / "cache" / "native"
    b = LocalBackend(ds)
    try:
        df = snap(ds, SYN)
        preds = [(SYN, "size", ">", 10.0)]
        first = b.execute(q(SYN, *preds))
        assert b.explain(q(SYN, *preds))["attach"] == {}  # read from the Parquet files
        assert_same(first.table, expected(df, preds)[stored_columns(b, SYN)])
        b.wait_for_copies()
        assert len(list(native.rglob("*.duckdb"))) == 1  # built once the query had returned
        assert len(b.explain(q(SYN, *preds))["attach"]) == 1
        assert_same(b.execute(q(SYN, *preds)).table, expected(df, preds)[stored_columns(b, SYN)])
    finally:
        b.close()
    monkeypatch.setattr(local, "DIRECT_MIN_BYTES", 64 * 2**20)  # the fixture's files are small
    b = LocalBackend(ds)
    try:
        b.execute(q(NUC))
        assert len(b.explain(q(NUC))["attach"]) == 1  # copied before the first answer
    finally:
        b.close()


def test_root_id_lookups_use_a_clustered_copy(ds, tmp_path, monkeypatch):
    """A lookup by a root id (``==`` or a short ``in``) on a big snapshot starts building a copy
    ordered by that column in the background and is answered from it once it is ready; the
    answers equal the pandas oracle before, during and after (ids still ascending)."""
    import tablekit.backends.local.backend as local

    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(local, "CLUSTER_MIN_ROWS", 1)  # the fixture's tables are tiny
    b = LocalBackend(ds)
    try:
        df = snap(ds, SYN)
        pre = pick(df[df["pre_pt_root_id"] != 0], "pre_pt_root_id", 3, seed=1)
        post = pick(df[df["post_pt_root_id"] != 0], "post_pt_root_id", 2, seed=2)
        questions = [
            [(SYN, "pre_pt_root_id", "==", pre[0])],
            [(SYN, "post_pt_root_id", "in", tuple(post))],
            [(SYN, "pre_pt_root_id", "in", tuple(pre)), (SYN, "size", ">", 10.0)],
            [(SYN, "pre_pt_root_id", "==", pre[1]), (SYN, "post_pt_root_id", "!=", post[0])],
        ]

        def relations(query: Query) -> set[str]:
            return set(b.explain(query)["attach"].values())

        plain = relations(q(SYN))
        for preds in questions:
            query = q(SYN, *preds)
            assert relations(query) <= plain | set(map(str, (tmp_path / "cache").rglob("*.duckdb")))
            assert_same(b.execute(query).table, expected(df, preds)[stored_columns(b, SYN)])
        b.wait_for_copies()
        files = {Path(f).name for f in (tmp_path / "cache" / "native").rglob("*.duckdb")}
        assert len(files) == 3  # the id-ordered copy and one clustered copy per root-id column
        for preds in questions:
            query = q(SYN, *preds)
            after = relations(query)
            assert after != plain and len(after) == 1
            sql = b.explain(query)["sql"]
            # one root fixed with ==: the clustered rows are already in id order, no sort needed
            assert ("ORDER BY" in sql) == (not any(p[2] == "==" for p in preds)), sql
            got = b.execute(query).table
            assert_same(got, expected(df, preds)[stored_columns(b, SYN)])
            assert got["id"].to_pylist() == sorted(got["id"].to_pylist())
        # other filters, and long membership lists, keep reading the id-ordered copy
        many = pick(df[df["pre_pt_root_id"] != 0], "pre_pt_root_id", 65, seed=3)
        assert relations(q(SYN, (SYN, "pre_pt_root_id", "in", tuple(many)))) == plain
        assert relations(q(SYN, (SYN, "size", ">", 10.0))) == plain
    finally:
        b.close()


def test_builds_clear_what_dead_builds_left_behind(ds, tmp_path, monkeypatch):
    """A build removes the temporary files and spill directories of its copy that a killed
    process left (older than six hours), and leaves a build in progress alone."""
    import os
    import time

    import tablekit.backends.local.backend as local

    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(local, "CLUSTER_MIN_ROWS", 1)
    b = LocalBackend(ds)
    try:
        root = int(snap(ds, SYN)["pre_pt_root_id"].iloc[0])
        query = q(SYN, (SYN, "pre_pt_root_id", "==", root))
        files = b._snapshot(SYN, 3)
        native = b._native_dir
        stem = b._native_key(files, "cluster:pre_pt_root_id")
        native.mkdir(parents=True, exist_ok=True)
        old_file, old_dir = native / f"{stem}.1.2.tmp", native / f"{stem}.1.2.tmp.tmp"
        running = native / f"{stem}.3.4.tmp"
        other = native / "0123456789abcdef01234567.1.2.tmp"
        old_file.write_bytes(b"x")
        old_dir.mkdir()
        (old_dir / "spill").write_bytes(b"x")
        running.write_bytes(b"x")
        other.write_bytes(b"x")
        day_ago = time.time() - 24 * 3600
        for p in (old_file, old_dir, other):
            os.utime(p, (day_ago, day_ago))
        b.execute(query)
        b.wait_for_copies()
        assert not old_file.exists() and not old_dir.exists()
        assert running.exists() and other.exists()  # a live build, and another copy's leftovers
        assert (native / f"{stem}.duckdb").exists()
    finally:
        b.close()


def test_native_copies_are_evicted_by_age_and_size(tmp_path, monkeypatch):
    """Copies unused for 30 days go (also another DuckDB version's), then the least recently used
    while the total exceeds TABLEKIT_NATIVE_CACHE_SIZE; ``keep`` (this process's copies) and
    copies used in the last 10 minutes stay."""
    import os

    from tablekit.backends.local.native import _prune_native

    now = 1_000_000_000.0
    root = tmp_path / "native"
    files = {  # name: (directory, size, last use in seconds before now)
        "stale": ("duckdb-2.0.1", 100, 31 * 86400),
        "old_version": ("duckdb-0.9.0", 100, 31 * 86400),
        "kept_stale": ("duckdb-2.0.1", 100, 40 * 86400),
        "lru": ("duckdb-2.0.1", 300, 7200),
        "next": ("duckdb-2.0.1", 300, 5400),
        "recent": ("duckdb-2.0.1", 300, 3600),
        "in_use": ("duckdb-2.0.1", 300, 60),
    }
    paths = {}
    for name, (d, size, age) in files.items():
        f = root / d / f"{name}.duckdb"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x" * size)
        os.utime(f, (now - age, now - age))
        paths[name] = f
    # after the stale ones: kept_stale 100 + 4 x 300 = 1300; a budget of 800 must drop 500 →
    # lru, then next (in_use is too recent, kept_stale is kept)
    monkeypatch.setenv("TABLEKIT_NATIVE_CACHE_SIZE", "800")
    deleted = _prune_native(root, keep={paths["kept_stale"]}, now=now)
    assert sorted(f.stem for f in deleted) == ["lru", "next", "old_version", "stale"]
    assert {n for n, f in paths.items() if f.exists()} == {"kept_stale", "recent", "in_use"}
    assert not (root / "duckdb-0.9.0").exists()
    monkeypatch.setenv("TABLEKIT_NATIVE_CACHE_SIZE", "0.5 KiB")  # 512 bytes: in_use still stays
    assert [f.stem for f in _prune_native(root, keep={paths["kept_stale"]}, now=now)] == ["recent"]
    monkeypatch.setenv("TABLEKIT_NATIVE_CACHE_SIZE", "10GB")
    later = now + 31 * 86400  # a month on, nothing kept: both go, least recently used first
    assert _prune_native(root, keep=set(), now=later) == [paths["kept_stale"], paths["in_use"]]


def test_a_build_prunes_and_attaching_marks_a_copy_used(ds, tmp_path, monkeypatch):
    """Building a copy deletes stale ones (never this process's); attaching a copy sets its last
    use; a bad TABLEKIT_NATIVE_CACHE_SIZE warns and deletes nothing; answers are unaffected."""
    import os
    import time

    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "cache"))
    month_ago = time.time() - 31 * 86400
    b = LocalBackend(ds)
    try:
        b.execute(q(NUC))
        native = b._native_dir
        (mine,) = native.glob("*.duckdb")
        stale = native / f"{'a' * 24}.duckdb"
        stale.write_bytes(b"x")
        for f in (stale, mine):
            os.utime(f, (month_ago, month_ago))
        b.execute(q(SYN))  # a build: prunes
        assert not stale.exists() and mine.exists()
        assert_same(b.execute(q(NUC)).table, expected(snap(ds, NUC), [])[stored_columns(b, NUC)])
    finally:
        b.close()
    b = LocalBackend(ds)  # a new process's first use of the copy counts as a use
    try:
        b.execute(q(NUC))
        assert time.time() - mine.stat().st_mtime < 60
        monkeypatch.setenv("TABLEKIT_NATIVE_CACHE_SIZE", "lots")
        stale.write_bytes(b"x")
        os.utime(stale, (month_ago, month_ago))
        with pytest.warns(
            UserWarning, match=r"TABLEKIT_NATIVE_CACHE_SIZE='lots' is not a size.*no native copy"
        ):
            b.execute(q(CT))
        assert stale.exists()
    finally:
        b.close()


def test_a_failed_clustered_build_warns_and_lookups_still_answer(ds, tmp_path, monkeypatch):
    """A background build that fails (here: an invalid TABLEKIT_BUILD_MEMORY) says so, and the
    lookups keep reading the id-ordered copy with the same answers."""
    import tablekit.backends.local.backend as local

    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TABLEKIT_BUILD_MEMORY", "lots")
    monkeypatch.setattr(local, "CLUSTER_MIN_ROWS", 1)
    attempts: list[str] = []
    build = LocalBackend._build_native

    def counted(self, files, layout, db):
        if layout:
            attempts.append(layout)
        return build(self, files, layout, db)

    monkeypatch.setattr(LocalBackend, "_build_native", counted)
    b = LocalBackend(ds)
    try:
        df = snap(ds, SYN)
        root = int(df.loc[df["pre_pt_root_id"] != 0, "pre_pt_root_id"].iloc[0])
        preds = [(SYN, "pre_pt_root_id", "==", root)]
        with pytest.warns(UserWarning, match="cluster:pre_pt_root_id copy .* could not be built"):
            b.execute(q(SYN, *preds))
            b.wait_for_copies()
        assert b.explain(q(SYN, *preds))["attach"] == b.explain(q(SYN))["attach"]
        assert_same(b.execute(q(SYN, *preds)).table, expected(df, preds)[stored_columns(b, SYN)])
        b.wait_for_copies()
        assert attempts == ["cluster:pre_pt_root_id"]  # a failed build is not tried again
    finally:
        b.close()


def test_small_snapshots_get_no_clustered_copy(ds, tmp_path, monkeypatch):
    """Below :data:`CLUSTER_MIN_ROWS` a lookup reads the id-ordered copy and builds nothing."""
    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "cache"))
    b = LocalBackend(ds)
    try:
        root = int(snap(ds, SYN)["pre_pt_root_id"].iloc[0])
        query = q(SYN, (SYN, "pre_pt_root_id", "==", root))
        b.execute(query)
        b.wait_for_copies()
        assert b.explain(query)["attach"] == b.explain(q(SYN))["attach"]
        assert len(list((tmp_path / "cache" / "native").rglob("*.duckdb"))) == 1
    finally:
        b.close()


def q(table: str, *preds: tuple, version: int | None = 3, **kw) -> Query:
    return Query(
        mini.DATASTACK,
        table,
        predicates=tuple(Predicate(t, c, o, v) for t, c, o, v in preds),
        version=version,
        **kw,
    )


def oracle_mask(df: pd.DataFrame, column: str, op: str, value) -> pd.Series:
    """tablekit's documented semantics, in pandas (NaN and NULL are both NaN/NA here)."""
    if op == "bbox":
        (x0, y0, z0), (x1, y1, z1) = value
        m = pd.Series(True, index=df.index)
        for axis, lo, hi in zip("xyz", (x0, y0, z0), (x1, y1, z1), strict=True):
            s = df[f"{column}_{axis}"]
            m &= (s >= lo) & (s <= hi)
        return m.fillna(False).astype(bool)
    s = df[column]
    if op == "regex":
        return s.str.contains(value, regex=True, na=False).astype(bool)
    if op in ("in", "not in"):
        m = s.isin(list(value))
        return ~m if op == "not in" else m
    m = {
        "==": lambda: s == value,
        "!=": lambda: ~(s == value),  # exclusion keeps NULL / NaN
        "<": lambda: s < value,
        "<=": lambda: s <= value,
        ">": lambda: s > value,
        ">=": lambda: s >= value,
    }[op]()
    return m.fillna(op == "!=").astype(bool)


def expected(df: pd.DataFrame, preds: list[tuple], order: str = "id") -> pd.DataFrame:
    m = pd.Series(True, index=df.index)
    for _, col, op, value in preds:
        m &= oracle_mask(df, col, op, value)
    return df[m].sort_values(order, kind="stable").reset_index(drop=True)


def assert_same(result: pa.Table, want: pd.DataFrame) -> None:
    got = result.to_pandas()
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)


def assert_tables_equal(a: pa.Table, b: pa.Table) -> None:
    """Same schema and values (NaN equal to NaN, unlike ``pa.Table.equals``)."""
    assert a.schema == b.schema
    pd.testing.assert_frame_equal(a.to_pandas(), b.to_pandas())


def stored_columns(backend: LocalBackend, table: str) -> list[str]:
    return list(backend._spec(table).stored_columns)


def pick(df: pd.DataFrame, column: str, k: int, seed: int = 0) -> list:
    vals = df[column].dropna().unique()
    vals = [v for v in vals if not (isinstance(v, float) and np.isnan(v))]
    rng = np.random.default_rng(seed)
    return [
        v.item() if hasattr(v, "item") else v
        for v in rng.choice(np.array(vals, dtype=object), k, replace=False)
    ]


# --------------------------------------------------------------------------- opening and metadata


def test_backend_protocol_and_info(backend, ds):
    """The backend satisfies the protocol; datastack.json comes back with local_server=None."""
    assert isinstance(backend, Backend)
    assert backend.name == "local" and backend.datastack == "mini" and backend.location == str(ds.resolve())
    info = backend.datastack_info()
    assert info["synapse_table"] == SYN and info["soma_table"] == NUC and info["local_server"] is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: (p / "datastack.json").unlink(), "datastack.json is missing"),
        (
            lambda p: (p / "datastack.json").write_text('{"format": "other", "format_version": 1}'),
            "format 'other'",
        ),
        (
            lambda p: (p / "datastack.json").write_text(
                '{"format": "tablekit-datastack", "format_version": 2}'
            ),
            "format_version 2",
        ),
        (lambda p: (p / "datastack.json").write_text("{not json"), "cannot be read"),
    ],
)
def test_open_validates_directory(tmp_path, edit, message):
    """A malformed datastack.json is refused on open, naming the path and the problem."""
    p = tmp_path / "ds"
    p.mkdir()
    (p / "datastack.json").write_text('{"format": "tablekit-datastack", "format_version": 1, "name": "x"}')
    edit(p)
    with pytest.raises(DatastackError, match=re.escape(message)) as e:
        LocalBackend(p)
    assert str(p) in str(e.value)


def test_open_rejects_missing_directory(tmp_path):
    """A path that is not a directory is refused on open."""
    with pytest.raises(DatastackError, match="not a directory"):
        LocalBackend(tmp_path / "nope")


def test_versions_metadata(backend):
    """Expired versions only with expired=True; timestamps are aware UTC datetimes."""
    valid = backend.versions_metadata()
    assert [v["version"] for v in valid] == [2, 3]
    every = backend.versions_metadata(expired=True)
    assert [v["version"] for v in every] == [1, 2, 3]
    assert every[0]["valid"] is False and every[0]["status"] == "EXPIRED"
    for v in every:
        assert v["time_stamp"] == mini.VERSIONS[v["version"]]
        assert v["time_stamp"].tzinfo is not None and v["time_stamp"].utcoffset() == dt.timedelta(0)
    assert every[2]["expires_on"] is None
    assert every[1]["expires_on"] == mini.VERSIONS[2] + dt.timedelta(days=15)


def test_tables_metadata_and_counts(backend, ds):
    """Table metadata is CAVE-shaped; annotation counts equal the snapshot row counts."""
    metas = {m["table_name"]: m for m in backend.tables_metadata(3)}
    assert set(metas) == set(mini.TABLES)
    assert (
        metas[RP]["voxel_resolution_x"],
        metas[RP]["voxel_resolution_y"],
        metas[RP]["voxel_resolution_z"],
    ) == (
        8.0,
        8.0,
        40.0,
    )
    assert metas[CT]["reference_table"] == NUC
    for t in mini.TABLES:
        assert backend.annotation_count(t, 3) == len(snap(ds, t, 3))
    assert backend.schemas(["synapse"])["synapse"]["$ref"].endswith("SynapseSchema")


def test_unknown_and_expired_versions(backend):
    """Unknown or expired versions and unknown tables raise before any scan."""
    with pytest.raises(VersionError, match="expired"):
        backend.tables_metadata(1)
    with pytest.raises(VersionError, match="no materialization version 9"):
        backend.execute(q(NUC, version=9))
    with pytest.raises(UnknownTableError, match="Did you mean 'nucleus_detection_v0'"):
        backend.execute(q("nucleus_detection_v1"))
    with pytest.raises(QueryError, match="exactly one of version"):
        backend.execute(q(NUC, version=None))


# --------------------------------------------------------------------------- filters vs pandas

FILTER_CASES = [
    # float with NULL and NaN
    (NUC, "volume", ">", 40.0),
    (NUC, "volume", ">=", 40.0),
    (NUC, "volume", "<", 40.0),
    (NUC, "volume", "<=", 40),
    # ids and root ids (NULL root ids from pending supervoxels, 0 from supervoxel 0)
    (NUC, "id", ">", 2000),
    (NUC, "id", "<=", 999),
    (SYN, "pre_pt_root_id", "==", 0),
    (SYN, "pre_pt_root_id", "!=", 0),
    (SYN, "post_pt_supervoxel_id", "<", 100),
    # bookkeeping
    (NUC, "valid", "==", True),
    (NUC, "created", ">=", dt.datetime(2025, 1, 10, 12, tzinfo=UTC)),
    (NUC, "created", "<", dt.datetime(2025, 1, 3, tzinfo=UTC)),
    # strings
    (CT, "cell_type", "regex", "^5P"),
    (CT, "cell_type", "regex", "DROP"),
    (CT, "cell_type", "regex", "drop"),  # case-sensitive: nothing
    (CT, "cell_type", "regex", r"\$1"),
    (CT, "cell_type", "==", "it's"),
    (CT, "cell_type", "==", "x'; DROP TABLE cell_type_ref; --"),
    (CT, "cell_type", "!=", "23P"),
    (CT, "cell_type", "in", ("23P", 'Robert"); DROP TABLE "nucleus_detection_v0"; --', "? OR TRUE")),
    (CT, "cell_type", "not in", ("23P", "")),
    # boxes, faces included (coordinates lie on a grid of 50 / 10)
    (NUC, "pt_position", "bbox", ((100, 100, 50), (500, 400, 200))),
    (NUC, "bb_start_position", "bbox", ((0, 0, 0), (1000, 1000, 250))),
    (SYN, "pre_pt_position", "bbox", ((10, 20, 10), (100, 100, 50))),
]


@pytest.mark.parametrize(("table", "column", "op", "value"), FILTER_CASES)
def test_operator_matches_pandas(backend, ds, table, column, op, value):
    """Each operator selects exactly the rows pandas selects with the documented semantics."""
    df = snap(ds, table)
    pred = (table, column, op, value)
    result = backend.execute(q(table, pred))
    want = expected(df, [pred])[stored_columns(backend, table)]
    assert_same(result.table, want)
    if op == "regex" and value == "drop":
        assert len(want) == 0


def test_fixture_has_nulls_nans_zero_roots(ds):
    """The fixture really holds NULLs, NaNs and root 0 (so the other tests cover them)."""
    vol = mini.read_snapshot(ds, NUC, 3)["volume"]
    assert vol.null_count > 0 and pc.sum(pc.is_nan(vol)).as_py() > 0
    roots = mini.read_snapshot(ds, SYN, 3)["pre_pt_root_id"]
    assert roots.null_count > 0 and pc.sum(pc.equal(roots, 0)).as_py() > 0


def test_equality_and_membership_on_values_from_the_data(backend, ds):
    """Equality, exclusion and membership with values that occur in the data."""
    df = snap(ds, NUC)
    v = pick(df, "volume", 1)[0]
    roots = pick(df, "pt_root_id", 3)
    for pred in [
        (NUC, "volume", "==", v),
        (NUC, "volume", "!=", v),
        (NUC, "pt_root_id", "==", roots[0]),
        (NUC, "pt_root_id", "!=", roots[0]),
        (NUC, "pt_root_id", "in", (*roots, 0)),
        (NUC, "pt_root_id", "not in", (*roots, 0)),
        (NUC, "pt_root_id", "in", (roots[0],)),
        (NUC, "pt_root_id", "not in", (roots[0],)),
        (NUC, "volume", "in", (v, 1e9)),
    ]:
        want = expected(df, [pred])[stored_columns(backend, NUC)]
        assert_same(backend.execute(q(NUC, pred)).table, want)


def test_exclusion_keeps_null_and_nan_rows(backend, ds):
    """!= and not in keep NULL and NaN rows; ranges never return them."""
    raw = mini.read_snapshot(ds, NUC, 3)
    v = pick(raw.to_pandas(), "volume", 1)[0]
    got = backend.execute(q(NUC, (NUC, "volume", "!=", v))).table["volume"]
    assert got.null_count == raw["volume"].null_count > 0
    assert pc.sum(pc.is_nan(got)).as_py() == pc.sum(pc.is_nan(raw["volume"])).as_py() > 0
    roots = backend.execute(q(NUC, (NUC, "pt_root_id", "not in", (0, 1)))).table["pt_root_id"]
    assert roots.null_count == raw["pt_root_id"].null_count > 0
    # ranges and membership never match NULL or NaN
    for pred in [(NUC, "volume", ">", -1.0), (NUC, "volume", "<", 1e12)]:
        t = backend.execute(q(NUC, pred)).table["volume"]
        assert t.null_count == 0 and pc.sum(pc.is_nan(t)).as_py() == 0


def test_several_filters_across_kinds(backend, ds):
    """Filters on float, root id, position and timestamp columns are ANDed."""
    df = snap(ds, SYN)
    preds = [
        (SYN, "size", ">", 200.0),
        (SYN, "pre_pt_root_id", "not in", (0,)),
        (SYN, "post_pt_position", "bbox", ((0, 0, 0), (200, 200, 60))),
        (SYN, "created", "<", dt.datetime(2025, 1, 20, tzinfo=UTC)),
    ]
    want = expected(df, preds)[stored_columns(backend, SYN)]
    assert len(want) > 10
    assert_same(backend.execute(q(SYN, *preds)).table, want)


def test_column_inequality(backend, ds):
    """!=column keeps rows whose two columns differ or hold a NULL."""
    df = snap(ds, SYN)
    a, b = df["pre_pt_root_id"], df["post_pt_root_id"]
    want = df[a.isna() | b.isna() | (a != b)].sort_values("id")[stored_columns(backend, SYN)]
    assert (a == b).sum() > 0 and (a.isna() | b.isna()).sum() > 0
    got = backend.execute(q(SYN, (SYN, "pre_pt_root_id", "!=column", "post_pt_root_id")))
    assert_same(got.table, want)
    with pytest.raises(UnknownColumnError, match="'post_pt_root'"):
        backend.execute(q(SYN, (SYN, "pre_pt_root_id", "!=column", "post_pt_root")))


def test_bbox_includes_faces(backend, ds):
    """A point on a face of the box is inside; one voxel beyond is not."""
    df = snap(ds, NUC)
    row = df.dropna(subset=["pt_position_x"]).iloc[0]
    x, y, z = (int(row[f"pt_position_{a}"]) for a in "xyz")
    for box in [((x, y, z), (x + 50, y + 50, z + 50)), ((x - 50, y - 50, z - 50), (x, y, z))]:
        ids = backend.execute(q(NUC, (NUC, "pt_position", "bbox", box))).table["id"].to_pylist()
        assert int(row["id"]) in ids
    inner = ((x + 1, y, z), (x + 50, y + 50, z + 50))
    assert (
        int(row["id"])
        not in backend.execute(q(NUC, (NUC, "pt_position", "bbox", inner))).table["id"].to_pylist()
    )


def test_empty_in_returns_empty_table_with_schema(backend):
    """in () gives an empty table with the full schema; not in () excludes nothing."""
    full = backend.execute(q(NUC, limit=1)).table
    empty = backend.execute(q(NUC, (NUC, "pt_root_id", "in", ()))).table
    assert empty.num_rows == 0 and empty.schema == full.schema
    assert "FALSE" in backend.explain(q(NUC, (NUC, "pt_root_id", "in", ())))["sql"]
    count = backend.execute(q(NUC, (NUC, "pt_root_id", "in", ()), count=True)).table
    assert count.to_pylist() == [{"count": 0}]
    # not in () excludes nothing
    assert backend.execute(q(NUC, (NUC, "pt_root_id", "not in", ()), count=True)).table["count"][
        0
    ].as_py() == len(backend.execute(q(NUC)).table)


def test_large_membership_list(backend, ds):
    """A 66 667-value list is bound as an Arrow table and answers like pandas."""
    df = snap(ds, SYN)
    ids = tuple(range(0, 200_000, 3))
    want = expected(df, [(SYN, "id", "in", ids)])[stored_columns(backend, SYN)]
    result = backend.execute(q(SYN, (SYN, "id", "in", ids)))
    assert_same(result.table, want)
    assert len(result.request["value_lists"]) == 1 and "__tk_values_0" in result.request["sql"]


# --------------------------------------------------------------------------- order, paging, columns, count


def test_order_and_paging(backend, ds):
    """Rows come ordered by id; concatenated pages equal the full result."""
    full = backend.execute(q(SYN)).table
    ids = full["id"].to_pylist()
    assert ids == sorted(ids) and len(ids) == len(snap(ds, SYN))
    pages = [backend.execute(q(SYN, limit=250, offset=o)).table for o in range(0, len(ids) + 250, 250)]
    assert pa.concat_tables(pages).equals(full)
    assert pages[-1].num_rows == 0
    assert backend.execute(q(SYN, limit=0)).table.num_rows == 0


def test_result_columns_follow_the_spec(backend):
    """Columns follow the TableSpec, not the Parquet file's column order."""
    t = backend.execute(q(SYN, limit=3)).table
    # the snapshot stores pre_pt before ctr_pt; results follow the TableSpec
    assert t.column_names == stored_columns(backend, SYN)
    assert t.schema.field("created").type == pa.timestamp("us", tz="UTC")
    assert t.schema.field("pre_pt_position_x").type == pa.int64()


def test_select_columns(backend, ds):
    """select_columns keeps the table's column order; a position selects its three columns."""
    t = backend.execute(q(NUC, select_columns=("pt_position", "volume", "id"), limit=5)).table
    assert t.column_names == ["id", "volume", "pt_position_x", "pt_position_y", "pt_position_z"]
    want = snap(ds, NUC).sort_values("id").head(5)[t.column_names]
    assert_same(t, want)
    # ordering is by id even when id is not selected
    t = backend.execute(q(NUC, select_columns=("volume",))).table
    assert t["volume"].to_pandas().equals(snap(ds, NUC).sort_values("id")["volume"].reset_index(drop=True))


def test_select_columns_errors(backend):
    """An unknown selected column names the table, the column and the alternatives."""
    with pytest.raises(QueryError) as e:
        backend.execute(q(NUC, select_columns=("id", "pt_positon")))
    msg = str(e.value)
    assert NUC in msg and "'pt_positon'" in msg and "pt_position" in msg and "volume" in msg
    assert "Did you mean 'pt_position'" in msg
    with pytest.raises(QueryError, match="'pt_position_x'"):
        backend.execute(q(NUC, select_columns=("pt_position_x",)))
    with pytest.raises(QueryError, match=re.escape("'id\" FROM x; --'")):
        backend.execute(q(NUC, select_columns=('id" FROM x; --',)))


def test_count(backend, ds):
    """count=True counts the matching rows, ignoring offset and limit."""
    df = snap(ds, NUC)
    pred = (NUC, "volume", ">", 30.0)
    n = len(expected(df, [pred]))
    t = backend.execute(q(NUC, pred, count=True, limit=5, offset=3)).table
    assert t.column_names == ["count"] and t.schema.field("count").type == pa.int64()
    assert t["count"].to_pylist() == [n]


# --------------------------------------------------------------------------- random sample


def test_random_sample_is_deterministic_subset(backend, ds):
    """random_sample returns the same min(n, matches) matching rows every time."""
    pred = (SYN, "size", ">", 100.0)
    full = backend.execute(q(SYN, pred)).table
    a = backend.execute(q(SYN, pred, random_sample=100)).table
    b = backend.execute(q(SYN, pred, random_sample=100)).table
    assert a.equals(b) and a.num_rows == 100
    ids = a["id"].to_pylist()
    assert ids == sorted(ids) and set(ids) <= set(full["id"].to_pylist())
    assert ids != full["id"].to_pylist()[:100]  # not simply the first rows
    # paging and counting work on the sample
    assert backend.execute(q(SYN, pred, random_sample=100, limit=10, offset=20)).table.equals(a.slice(20, 10))
    assert backend.execute(q(SYN, pred, random_sample=100, count=True)).table["count"][0].as_py() == 100
    # n >= matching rows: everything
    assert backend.execute(q(SYN, pred, random_sample=10**9)).table.equals(full)


# --------------------------------------------------------------------------- resolution


def test_desired_resolution_scales_positions(backend, ds):
    """Positions are scaled to desired_resolution; boxes stay in voxel units."""
    raw = backend.execute(q(NUC, limit=50))
    assert raw.resolution == (4.0, 4.0, 40.0)
    assert raw.table.schema.field("pt_position_x").type == pa.int64()
    same = backend.execute(q(NUC, limit=50, desired_resolution=(4.0, 4.0, 40.0)))
    assert_tables_equal(same.table, raw.table)
    assert same.resolution == (4.0, 4.0, 40.0)
    scaled = backend.execute(q(NUC, limit=50, desired_resolution=(8.0, 2.0, 1.0)))
    assert scaled.resolution == (8.0, 2.0, 1.0)
    df, sdf = raw.table.to_pandas(), scaled.table.to_pandas()
    for p in ("pt_position", "bb_start_position"):
        for axis, f in zip("xyz", (0.5, 2.0, 40.0), strict=True):
            assert scaled.table.schema.field(f"{p}_{axis}").type == pa.float64()
            pd.testing.assert_series_equal(sdf[f"{p}_{axis}"], df[f"{p}_{axis}"] * f, check_dtype=False)
    assert sdf["pt_root_id"].equals(df["pt_root_id"])
    # bbox stays in the table's voxel units whatever desired_resolution says
    box = (NUC, "pt_position", "bbox", ((0, 0, 0), (500, 500, 100)))
    assert backend.execute(q(NUC, box, desired_resolution=(1.0, 1.0, 1.0))).table.num_rows == len(
        backend.execute(q(NUC, box)).table
    )
    # a table at another resolution; no positions selected → no resolution
    assert backend.execute(q(RP, limit=1)).resolution == (8.0, 8.0, 40.0)
    assert backend.execute(q(NUC, select_columns=("id",), limit=1)).resolution is None


# --------------------------------------------------------------------------- joins


def join_oracle(ds, ref: str, target: str) -> pd.DataFrame:
    r, b = snap(ds, ref), snap(ds, target)
    clash = set(r.columns) & set(b.columns)
    ren = {}
    for c in r.columns:
        if c in clash:
            m = re.fullmatch(r"(.*_position)_([xyz])", c)
            ren[c] = f"{m.group(1)}_ref_{m.group(2)}" if m else c + "_ref"
    r = r.rename(columns=ren)
    out = b.merge(r, left_on="id", right_on="target_id", how="inner")
    return out.sort_values("id_ref", kind="stable").reset_index(drop=True)


def test_join_columns_order_and_filters(backend, ds):
    """Target columns first, clashing reference columns suffixed, ordered by id_ref."""
    join = Join(CT, NUC)
    want = join_oracle(ds, CT, NUC)
    result = backend.execute(q(CT, join=join))
    cols = result.table.column_names
    assert cols[: len(stored_columns(backend, NUC))] == stored_columns(backend, NUC)
    assert cols[len(stored_columns(backend, NUC)) :] == [
        "id_ref",
        "created_ref",
        "valid_ref",
        "cell_type",
        "classification_system",
        "target_id",
    ]
    assert_same(result.table, want[cols])
    roots = pick(snap(ds, NUC), "pt_root_id", 40, seed=3)
    preds = [(NUC, "pt_root_id", "in", tuple(roots)), (CT, "cell_type", "!=", "23P"), (CT, "id", ">", 100)]
    got = backend.execute(q(CT, *preds, join=join)).table
    m = want["pt_root_id"].isin(roots) & ~(want["cell_type"] == "23P") & (want["id_ref"] > 100)
    assert len(got) > 0
    assert_same(got, want[m][cols])
    # select by result (suffixed) names, order by the reference table's id
    sel = backend.execute(
        q(CT, join=join, select_columns=("id_ref", "cell_type", "pt_position"), limit=7)
    ).table
    assert sel.column_names == ["pt_position_x", "pt_position_y", "pt_position_z", "id_ref", "cell_type"]
    assert sel["id_ref"].to_pylist() == want["id_ref"].head(7).tolist()


def test_join_resolutions_and_position_suffix(backend, ds):
    """In a join, positions of both tables come in the target's resolution."""
    join = Join(RP, NUC)
    want = join_oracle(ds, RP, NUC)
    res = backend.execute(q(RP, join=join))
    assert res.resolution == (4.0, 4.0, 40.0)  # the target's
    t = res.table
    assert "pt_position_ref_x" in t.column_names and "pt_root_id_ref" in t.column_names
    assert t.schema.field("pt_position_x").type == pa.int64()
    assert t.schema.field("pt_position_ref_x").type == pa.float64()
    got = t.to_pandas()
    for axis, f in zip("xyz", (2.0, 2.0, 1.0), strict=True):
        assert (got[f"pt_position_ref_{axis}"] == want[f"pt_position_ref_{axis}"] * f).all()
        assert (got[f"pt_position_{axis}"] == want[f"pt_position_{axis}"]).all()
    d = backend.execute(q(RP, join=join, desired_resolution=(8.0, 8.0, 40.0)))
    dt_ = d.table
    assert d.resolution == (8.0, 8.0, 40.0)
    assert dt_.schema.field("pt_position_ref_x").type == pa.int64()
    assert (dt_["pt_position_x"].to_pandas() == want["pt_position_x"] * 0.5).all()


def test_join_predicate_on_unknown_table_or_column(backend):
    """Filters must name a table of the join and a column of that table."""
    with pytest.raises(QueryError, match="not part of this query"):
        backend.execute(q(CT, (SYN, "id", "==", 1), join=Join(CT, NUC)))
    with pytest.raises(UnknownColumnError) as e:
        backend.execute(q(CT, (NUC, "cell_type", "==", "x"), join=Join(CT, NUC)))
    assert e.value.table == NUC and e.value.column == "cell_type"


# --------------------------------------------------------------------------- views


def view_oracle_large(ds) -> pd.DataFrame:
    """``nuclei_large``'s SQL (``volume > 40``) runs in DuckDB, where NaN > 40 is true."""
    t = mini.read_snapshot(ds, NUC, 3)
    vol = t["volume"]
    keep = pc.or_(pc.fill_null(pc.greater(vol, 40.0), False), pc.fill_null(pc.is_nan(vol), False))
    cols = [
        "id",
        "volume",
        "pt_root_id",
        "pt_supervoxel_id",
        "pt_position_x",
        "pt_position_y",
        "pt_position_z",
    ]
    return t.filter(keep).select(cols).to_pandas().sort_values("id").reset_index(drop=True)


def test_view_metadata_and_schemas(backend):
    """View metadata and DESCRIBE-derived schemas in CAVE's shape."""
    meta = backend.views_metadata(3)
    assert set(meta) == {"nuclei_large", "synapse_out_degree"}
    assert meta["nuclei_large"]["live_compatible"] is True
    assert (meta["nuclei_large"]["voxel_resolution_x"], meta["nuclei_large"]["voxel_resolution_z"]) == (
        4.0,
        40.0,
    )
    schemas = backend.view_schemas(3)
    assert schemas["nuclei_large"] == {
        "id": {"type": "integer"},
        "volume": {"type": "float"},
        "pt_root_id": {"type": "integer"},
        "pt_supervoxel_id": {"type": "integer"},
        "pt_position": {"type": "SpatialPoint"},
    }
    assert schemas["synapse_out_degree"] == {
        "root_id": {"type": "integer"},
        "n_out": {"type": "integer"},
        "total_size": {"type": "float"},
    }
    json.dumps(schemas)


def test_view_schema_types(backend):
    """DuckDB types map to CAVE view types; an x/y/z trio is one SpatialPoint."""
    got = backend._view_schema(
        "v",
        [
            ("a", "BIGINT"),
            ("b", "DECIMAL(18,3)"),
            ("c", "TIMESTAMP WITH TIME ZONE"),
            ("d", "BOOLEAN"),
            ("p_x", "DOUBLE"),
            ("p_y", "DOUBLE"),
            ("p_z", "INTEGER"),
            ("q_x", "VARCHAR"),
        ],
    )
    assert got == {
        "a": {"type": "integer"},
        "b": {"type": "number"},
        "c": {"type": "string", "format": "date-time"},
        "d": {"type": "boolean"},
        "p": {"type": "SpatialPoint"},
        "q_x": {"type": "string"},
    }
    with pytest.raises(DatastackError, match="BLOB"):
        backend._view_schema("v", [("x", "BLOB")])


def test_view_queries(backend, ds):
    """Filters, boxes, scaling and counts on a view match pandas over its SQL."""
    want = view_oracle_large(ds)
    result = backend.execute(q("nuclei_large", kind="view"))
    assert result.resolution == (4.0, 4.0, 40.0)
    assert_same(result.table, want)
    preds = [
        ("nuclei_large", "volume", ">", 60.0),
        ("nuclei_large", "pt_position", "bbox", ((0, 0, 0), (1000, 1000, 300))),
        ("nuclei_large", "pt_root_id", "not in", (0,)),
    ]
    got = backend.execute(q("nuclei_large", *preds, kind="view")).table
    assert len(got) > 0
    assert_same(got, expected(want, preds))
    scaled = backend.execute(
        q("nuclei_large", kind="view", desired_resolution=(1.0, 1.0, 1.0), limit=5)
    ).table
    assert (scaled["pt_position_z"].to_pandas() == want["pt_position_z"].head(5) * 40.0).all()
    assert backend.execute(q("nuclei_large", kind="view", count=True)).table["count"][0].as_py() == len(want)


def test_view_without_id(backend, ds):
    """A view without id is ordered by all columns; samples and pages are stable."""
    s = snap(ds, SYN)
    s = s[s["pre_pt_root_id"] != 0].dropna(subset=["pre_pt_root_id"])
    g = s.groupby("pre_pt_root_id").agg(
        n_out=("id", "size"), total_size=("size", lambda x: x.sum(min_count=1))
    )
    want = g.reset_index().rename(columns={"pre_pt_root_id": "root_id"})
    want = want.sort_values(["root_id", "n_out", "total_size"]).reset_index(drop=True)
    result = backend.execute(q("synapse_out_degree", kind="view"))
    assert result.warnings == ("counts exclude root 0",)
    assert result.resolution is None
    assert_same(result.table, want)
    sample = backend.execute(q("synapse_out_degree", kind="view", random_sample=20)).table
    assert sample.num_rows == 20 and sample.equals(
        backend.execute(q("synapse_out_degree", kind="view", random_sample=20)).table
    )
    assert set(sample["root_id"].to_pylist()) <= set(want["root_id"])
    pages = [
        backend.execute(q("synapse_out_degree", kind="view", limit=30, offset=o)).table
        for o in range(0, 400, 30)
    ]
    assert pa.concat_tables(pages).equals(result.table)


def test_unknown_view(backend):
    """An unknown view raises UnknownTableError with a suggestion."""
    with pytest.raises(UnknownTableError, match="nuclei_large"):
        backend.execute(q("nuclei_larg", kind="view"))


# --------------------------------------------------------------------------- explain, injection, errors


def test_explain_binds_every_value(backend):
    """explain() shows the SQL with placeholders only; every value is a parameter."""
    marker = 987_654_321
    nasty = "x'; DROP TABLE cell_type_ref; --"
    query = q(
        CT,
        (CT, "id", "!=", marker),
        (CT, "cell_type", "in", (nasty, "23P")),
        (CT, "classification_system", "regex", "^aibs_(coarse|fine)$"),
        (NUC, "created", ">", dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        join=Join(CT, NUC),
        limit=17,
        offset=4,
    )
    ex = backend.explain(query)
    assert ex["engine"] == "duckdb"
    sql = re.sub(r'"native_[0-9a-f]+"', '"native"', ex["sql"])  # cache names are hashes: digits
    for literal in (str(marker), "DROP", "aibs_", "2025", "17", "read_parquet('"):
        assert literal not in sql
    params = ex["parameters"]
    assert marker in params and 17 in params and 4 in params and "^aibs_(coarse|fine)$" in params
    assert "2025-01-02T03:04:05+00:00" in params
    assert list(ex["value_lists"].values()) == [[nasty, "23P"]]
    assert set(ex["files"]) == {CT, NUC}
    assert all(f.startswith("versions/3/") for fs in ex["files"].values() for f in fs)
    json.dumps(ex)
    result = backend.execute(query)
    assert result.request == ex


def test_injection_looking_values_are_inert(backend, ds):
    """Values that look like SQL are matched as plain strings."""
    df = snap(ds, CT)
    for value in mini.NASTY:
        got = backend.execute(q(CT, (CT, "cell_type", "==", value))).table
        assert got["id"].to_pylist() == df[df["cell_type"] == value].sort_values("id")["id"].tolist()
        assert len(got) > 0
    assert backend.annotation_count(CT, 3) == len(df)
    assert backend.execute(q(NUC, count=True)).table["count"][0].as_py() == len(snap(ds, NUC))


def test_identifiers_are_validated(backend):
    """Column names are checked against the spec before they reach SQL."""
    for column in ['id" = 1 OR "1', "id; DROP TABLE x", "pt_position_x"]:
        with pytest.raises(UnknownColumnError) as e:
            backend.execute(q(NUC, (NUC, column, "==", 1)))
        assert e.value.column == column
    with pytest.raises(OperatorError, match="'bbox' needs a position column"):
        backend.execute(q(NUC, (NUC, "volume", "bbox", ((0, 0, 0), (1, 1, 1)))))
    with pytest.raises(OperatorError, match="'regex' needs a string column"):
        backend.execute(q(NUC, (NUC, "volume", "regex", "x")))
    with pytest.raises(OperatorError, match="only takes 'bbox'"):
        backend.execute(q(NUC, (NUC, "pt_position", "==", 1)))
    with pytest.raises(QueryError, match="datastack 'other'"):
        backend.execute(Query("other", NUC, version=3))


def test_duckdb_errors_are_mapped(backend):
    """A DuckDB error becomes a tablekit error chained to it."""
    with pytest.raises(FilterValueError, match="cell_type") as e:
        backend.execute(q(CT, (CT, "cell_type", "regex", "(unclosed")))
    assert e.value.__cause__ is not None


def test_notice_text_becomes_a_warning(backend):
    """A table's notice_text is returned as a warning."""
    assert backend.execute(q(SYN, limit=1)).warnings == ("synapse sizes are preliminary",)
    assert backend.execute(q(NUC, limit=1)).warnings == ()


def test_missing_snapshot_columns_are_reported(tmp_path, ds):
    """A snapshot lacking a column of its schema is a DatastackError."""
    copy = tmp_path / "copy"
    shutil.copytree(ds, copy)
    part = copy / "versions" / "3" / NUC / "part-00000.parquet"
    t = pq.read_table(part).drop_columns(["volume"])
    pq.write_table(t, part)
    with LocalBackend(copy) as b:
        with pytest.raises(DatastackError, match=r"lacks columns \['volume'\]"):
            b.execute(q(NUC))


def test_threads_share_one_backend(backend):
    """Concurrent queries on one backend give the serial answers."""
    bounds = range(0, 2000, 100)
    queries = [q(SYN, (SYN, "size", ">", float(s)), limit=200) for s in bounds]
    serial = [backend.execute(x).table for x in queries]
    # one SQL text, parsed once per thread: each answer still has its own bound
    assert all(pc.min(t["size"]).as_py() > s for t, s in zip(serial, bounds, strict=True) if t.num_rows)
    assert len({t["id"][0].as_py() for t in serial if t.num_rows}) > 1
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda x: backend.execute(x).table, queries))
    assert all(a.equals(b) for a, b in zip(serial, parallel, strict=True))


# --------------------------------------------------------------------------- live queries


def live_arrow(ds, table: str, t: dt.datetime) -> pa.Table:
    """The table at ``t``, replayed with pandas from the annotation and segmentation histories."""
    return mini.to_arrow(mini.materialize(mini.read_annotations(ds, table), mini.read_history(ds), t, table))


def live_oracle(ds, table: str, t: dt.datetime) -> pd.DataFrame:
    return live_arrow(ds, table, t).to_pandas()


LIVE_TIMES = [
    dt.datetime(2025, 1, 5, 6, 7, 8, tzinfo=UTC),
    dt.datetime(2025, 1, 24, 23, 59, 59, 999999, tzinfo=UTC),
    mini.VERSIONS[3],
]


@pytest.mark.parametrize("t", LIVE_TIMES)
def test_live_query_matches_history_replay(backend, ds, t):
    """A live query equals the pandas replay of both histories at T."""
    for table in (SYN, NUC):
        want = live_oracle(ds, table, t)[stored_columns(backend, table)]
        result = backend.execute(q(table, version=None, timestamp=t))
        assert_same(result.table, want.sort_values("id").reset_index(drop=True))


def test_live_at_version_time_equals_snapshot(backend):
    """Live at a version's time stamp equals that version's snapshot."""
    live = backend.execute(q(SYN, version=None, timestamp=mini.VERSIONS[3])).table
    assert live.equals(backend.execute(q(SYN)).table)


def test_live_root_filters(backend, ds):
    """Root-id filters in live queries use roots at T; retired roots match nothing."""
    t = LIVE_TIMES[1]
    want = live_oracle(ds, SYN, t)[stored_columns(backend, SYN)]
    roots = pick(want, "pre_pt_root_id", 15, seed=5)
    hist = mini.read_history(ds)
    retired = [int(r) for r in hist.loc[hist["valid_to"] < pd.Timestamp(t), "root_id"].unique()[:5]]
    cases = [
        [(SYN, "pre_pt_root_id", "in", (*roots, *retired))],
        [(SYN, "pre_pt_root_id", "==", roots[0])],
        [(SYN, "pre_pt_root_id", "in", (0, roots[1]))],
        [(SYN, "post_pt_root_id", "not in", tuple(roots)), (SYN, "pre_pt_root_id", "!=", 0)],
        [(SYN, "pre_pt_root_id", "in", tuple(retired))],
    ]
    for preds in cases:
        got = backend.execute(q(SYN, *preds, version=None, timestamp=t))
        assert_same(got.table, expected(want, preds))
    assert backend.execute(q(SYN, cases[-1][0], version=None, timestamp=t)).table.num_rows == 0
    assert "__tk_history" in backend.explain(q(SYN, *cases[0], version=None, timestamp=t))["sql"]


def test_live_join_and_view(backend, ds):
    """Live joins and live-compatible views; other views are refused live."""
    t = LIVE_TIMES[1]
    ref, target = live_oracle(ds, CT, t), live_oracle(ds, NUC, t)
    want = target.merge(
        ref.rename(columns={"id": "id_ref", "created": "created_ref", "valid": "valid_ref"}),
        left_on="id",
        right_on="target_id",
    ).sort_values("id_ref")
    got = backend.execute(q(CT, version=None, timestamp=t, join=Join(CT, NUC))).table
    assert_same(got, want[got.column_names])
    view = backend.execute(q("nuclei_large", version=None, timestamp=t, kind="view")).table
    vol = live_arrow(ds, NUC, t)["volume"]
    keep = pc.or_(pc.fill_null(pc.greater(vol, 40.0), False), pc.fill_null(pc.is_nan(vol), False))
    assert view["id"].to_pylist() == sorted(live_arrow(ds, NUC, t).filter(keep)["id"].to_pylist())
    with pytest.raises(UnsupportedError, match="live-compatible"):
        backend.execute(q("synapse_out_degree", version=None, timestamp=t, kind="view"))


def test_new_version_on_disk_is_seen(tmp_path, ds):
    """A version added to versions.json while open is seen without reopening."""
    copy = tmp_path / "copy"
    shutil.copytree(ds, copy)
    with LocalBackend(copy) as b:
        assert [v["version"] for v in b.versions_metadata()] == [2, 3]
        versions = json.loads((copy / "versions.json").read_text())
        versions.append({**versions[-1], "version": 4, "id": 4})
        shutil.copytree(copy / "versions" / "3", copy / "versions" / "4")
        (copy / "versions.json").write_text(json.dumps(versions))
        assert [v["version"] for v in b.versions_metadata()] == [2, 3, 4]
        assert b.execute(q(NUC, version=4, count=True)).table["count"][0].as_py() == b.annotation_count(
            NUC, 3
        )


def test_views_that_cannot_run(tmp_path, ds):
    """A view over a missing table is left out; a broken view is an error."""
    copy = tmp_path / "copy"
    shutil.copytree(ds, copy)
    (copy / "views" / "orphan.json").write_text(json.dumps({"sql": 'SELECT id FROM "no_such_table"'}))
    with LocalBackend(copy) as b:
        assert "orphan" not in b.views_metadata(3) and "nuclei_large" in b.view_schemas(3)
    (copy / "views" / "broken.json").write_text(json.dumps({"sql": "SELEC id FROM nucleus_detection_v0"}))
    with LocalBackend(copy) as b, pytest.raises(DatastackError, match=r"'broken' \(views/broken.json\)"):
        b.views_metadata(3)


def test_history_is_exposed(backend):
    """``backend.history`` is the segmentation history the client's roots API uses, built once."""
    from tablekit.backends.local.history import History

    assert isinstance(backend.history, History) and backend.history is backend.history


def test_history_for_the_roots_api(backend, ds):
    """``backend.history`` answers roots-at-T like the pandas lookup (supervoxel 0 → 0)."""
    hist = mini.read_history(ds)
    t = LIVE_TIMES[1]
    svs = pd.Series([0, 1, 2, 57, 399, 400])
    want = mini.roots_at(hist, svs, t).fillna(0).astype(int).tolist()
    assert backend.history.roots_at(svs.to_numpy(), t).tolist() == want


def test_native_copy_and_parquet_give_identical_results(ds, tmp_path, monkeypatch):
    """The native DuckDB copy is an optimisation only: every answer equals the Parquet scan."""
    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "cache"))
    import tablekit

    native = tablekit.Client(LocalBackend(ds, native_cache=True))
    plain = tablekit.Client(LocalBackend(ds, native_cache=False))
    for c in (native, plain):
        assert c.get_tables() == native.get_tables()
    checked = 0
    for t in native.get_tables():
        for v in native.get_versions():
            a = native.query_table(t, materialization_version=v, metadata=False, split_positions=True)
            b = plain.query_table(t, materialization_version=v, metadata=False, split_positions=True)
            pd.testing.assert_frame_equal(a, b)
            checked += 1
    assert checked > 0
    q = native.tables[native.get_tables()[0]]().explain()
    assert (
        "read_parquet" not in q
        and '"native_' in q
        and list((tmp_path / "cache" / "native").rglob("*.duckdb"))
    )
    assert "read_parquet" in plain.tables[plain.get_tables()[0]]().explain()
