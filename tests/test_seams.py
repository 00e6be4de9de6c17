"""The public seams ``tablekit serve`` is built on (issue 14: the server uses only public seams):
``Client.answer`` (Arrow and warnings returned), ``Client.check_version``, ``Client.check_table``,
``Client.segmentation_history``, ``Field.predicate``, the one pending-lookup rule
(``tablekit.query.pending``); and an AST check that ``tablekit/server`` reaches into no other
module's private names. Oracles: the pandas replay of the raw history (tests/_oracle.py) and
hand-derived values."""

from __future__ import annotations

import ast
import datetime as dt
import pathlib

import _oracle
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_pending_lookups import LATER, build_pending_datastack

import tablekit
from tablekit.errors import FilterValueError, QueryError, UnknownTableError, VersionError
from tablekit.query.pending import find_pending, supervoxel_columns

NUC = "nucleus_detection_v0"
SERVER = pathlib.Path(tablekit.__file__).parent / "server"


# --------------------------------------------------------------------------- no private access


def _private_accesses(path: pathlib.Path) -> list[str]:
    """``obj._name`` (not a dunder) where ``obj`` is not the ``self``/``cls`` parameter of the
    method the access is in (or of a method it is nested in): a reach into another object's
    private names. A local variable called ``cls`` holding some filter class is not exempt."""
    out: list[str] = []

    def visit(node: ast.AST, own: frozenset[str], in_class: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args
            static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)
            if in_class and args and not static:
                own = own | {args[0].arg}
            for child in ast.iter_child_nodes(node):
                visit(child, own, False)
            return
        if isinstance(node, ast.ClassDef):
            for child in ast.iter_child_nodes(node):
                visit(child, own, True)
            return
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not (node.attr.startswith("__") and node.attr.endswith("__"))
            and not (isinstance(node.value, ast.Name) and node.value.id in own)
        ):
            out.append(f"{path.name}:{node.lineno}: {ast.unparse(node.value)}.{node.attr}")
        for child in ast.iter_child_nodes(node):
            visit(child, own, False)

    visit(ast.parse(path.read_text()), frozenset(), False)
    return sorted(out)


def test_the_server_reaches_into_no_private_name():
    found = [a for f in sorted(SERVER.glob("*.py")) for a in _private_accesses(f)]
    assert found == []


def test_the_private_access_check_sees_one():
    """The check itself: a reach into another object's private name is found, own names are not."""
    src = (
        "class A:\n    def f(self, c):\n        self._x = 1\n        return c._check_version(1), self._x\n"
        "def g(cls):\n    return cls._spec\n"
    )
    p = pathlib.Path(__file__).with_name("_seams_probe.py")
    try:
        p.write_text(src)
        assert _private_accesses(p) == ["_seams_probe.py:4: c._check_version", "_seams_probe.py:6: cls._spec"]
    finally:
        p.unlink()


# --------------------------------------------------------------------------- Client.answer


def test_answer_is_the_replay_as_arrow_with_warnings_returned(client, path):
    v = client.version
    q = client.tables[NUC](volume={">": 200}).to_query(limit=7, offset=3, select_columns=["id", "volume"])
    a = client.answer(q)
    want = _oracle.snapshot(path, NUC, _oracle.version_timestamp(path, v))
    want = want[want["volume"] > 200].sort_values("id").iloc[3:10]
    assert isinstance(a.table, pa.Table) and a.table.column_names == ["id", "volume"]
    assert a.table["id"].to_pylist() == want["id"].tolist()
    np.testing.assert_array_equal(a.table["volume"].to_numpy(), want["volume"].to_numpy())
    assert a.pending is None and a.pages == 1 and a.request  # what was run
    assert [c.name for c in a.layout] == [c.name for c in tablekit.introspect(client.tables[NUC]).layout]
    # execute is answer + output: the same rows
    assert client.execute(q)["id"].tolist() == want["id"].tolist()


def test_answer_returns_notices_instead_of_warning(tmp_path):
    """A table notice is in Answer.warnings, and no Python warning is issued; execute issues it."""
    import warnings

    root = tmp_path / "ds"
    tablekit.build_datastack(
        root,
        [tablekit.TableSource("n", "nucleus_detection", _nuclei(), notice_text="under review")],
        name="notice",
        timestamp=dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc),
    )
    c = tablekit.connect(path=str(root))
    q = c.tables["n"]().to_query()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = c.answer(q)
    assert a.table["id"].to_pylist() == [1, 2, 3]
    assert any("under review" in w for w in a.warnings)
    with pytest.warns(UserWarning, match="under review"):
        c.execute(q)


def _nuclei() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3],
            "created": [dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)] * 3,
            "valid": True,
            "volume": [1.0, 2.0, 3.0],
            "pt_position": [np.array([1, 2, 3])] * 3,
            "pt_supervoxel_id": pd.array([11, 12, 13], dtype="Int64"),
            "pt_root_id": pd.array([21, 22, 23], dtype="Int64"),
        }
    )


# --------------------------------------------------------------------------- pending lookups


@pytest.fixture(scope="module")
def pending_client(tmp_path_factory):
    return tablekit.connect(path=build_pending_datastack(tmp_path_factory.mktemp("pending") / "ds"))


def test_the_pending_rule_finds_the_null_supervoxel_ids():
    """Hand-derived: rows 1 and 3 are null in a, rows 3 and 4 in b; column by column b counts
    only row 4 (row 3 was a's)."""
    t = pa.table({"a": pa.array([5, None, 7, None, 9]), "b": pa.array([1, 2, 3, None, None]), "x": range(5)})
    p = find_pending(t, ["a", "b", "missing"])
    assert p.columns == ("a", "b") and p.count == 3
    assert p.mask.tolist() == [False, True, False, True, True]
    by = p.by_column()
    assert [(c, m.tolist()) for c, m in by] == [
        ("a", [False, True, False, True, False]),
        ("b", [False, False, False, False, True]),
    ]
    within = np.array([True, False, True, False, True])
    assert [int(m.sum()) for _, m in p.by_column(within)] == [0, 1]


def test_answer_applies_the_policy_or_keeps_the_pending_rows(pending_client):
    """tags: ids 3 and 5 wait for their lookup (tests/test_pending_lookups.py builds them so)."""
    c = pending_client
    q = c.tables["tags"]().to_query(timestamp=LATER, select_columns=["id", "tag"])
    with pytest.raises(QueryError, match=r"tags: 2 annotation\(s\).*allow_missing_lookups=True"):
        c.answer(q)
    left = c.answer(c.tables["tags"]().to_query(timestamp=LATER, allow_missing_lookups=True))
    assert left.table["id"].to_pylist() == [1, 2, 4, 6]
    assert any("left out" in w for w in left.warnings)
    kept = c.answer(q, keep_pending=True)  # the caller's own policy (tablekit serve)
    assert kept.table["id"].to_pylist() == [1, 2, 3, 4, 5, 6]
    assert "pt_supervoxel_id" in kept.table.column_names  # looked at though not selected
    assert kept.pending is not None and kept.pending.columns == ("pt_supervoxel_id",)
    assert kept.table["id"].filter(pa.array(kept.pending.mask)).to_pylist() == [3, 5]
    assert supervoxel_columns(kept.layout) == ("pt_supervoxel_id",)


# --------------------------------------------------------------------------- small seams


def test_check_version_and_check_table(client, path):
    import json

    versions = json.loads((pathlib.Path(path) / "versions.json").read_text())
    valid = [v["version"] for v in versions if v.get("valid", True)]
    assert client.check_version(valid[0]) == valid[0]
    with pytest.raises(VersionError, match="no materialization version 999"):
        client.check_version(999)
    with pytest.raises(VersionError, match="is an int"):
        client.check_version("1")
    assert client.check_table(NUC) == NUC
    with pytest.raises(UnknownTableError, match="Did you mean 'nucleus_detection_v0'"):
        client.check_table("nucleus_detection_v1")
    with pytest.raises(UnknownTableError, match="a table name is a str"):
        client.check_table(3)


def test_field_predicate_checks_the_value_of_any_operator(client):
    f = tablekit.introspect(client.tables[NUC]).fields["volume"]
    p = f.predicate(NUC, ">", 2.5)
    assert (p.table, p.column, p.op, p.value) == (NUC, "volume", ">", 2.5)
    with pytest.raises(FilterValueError, match="volume"):
        f.predicate(NUC, "in", 2.5)


def test_segmentation_history_is_the_roots_api_source(client, path):
    h = client.segmentation_history()
    hist = pd.read_parquet(pathlib.Path(path) / "segmentation" / "history")
    row = hist[hist["valid_to"].isna()].iloc[0]
    now = dt.datetime.now(dt.timezone.utc)
    got = h.roots_at(np.array([row["supervoxel_id"]], dtype=np.int64), now)
    assert int(got[0]) == int(row["root_id"])


# --------------------------------------------------------------------------- one TableSpec


@pytest.fixture(scope="module")
def mini_ds(tmp_path_factory):
    import _mini_datastack as mini

    return mini.write_mini_datastack(tmp_path_factory.mktemp("mini") / mini.DATASTACK)


def _one_spec_per_table(c) -> None:
    for v in c.get_versions():
        for t in c.get_tables(v):
            spec = c.backend.table_spec(t, v)
            assert c.spec(t, v) is spec  # the client's is the backend's, not a second one
            assert c.backend.table_spec(t, v) is spec  # built once
            # filter classes share their attrs base across clients by spec equality (filters.py)
            assert tablekit.introspect(c.filter_class(t, v, merge_reference=False)).spec == spec
        with pytest.raises(UnknownTableError):
            c.backend.table_spec("no_such_table", v)
        views = c.backend.view_specs(v)
        assert c.get_views(v) == sorted(views)
        for n in views:
            assert c.spec(n, v, view=True) is views[n] is c.backend.view_specs(v)[n]


def test_client_and_local_backend_share_one_spec(mini_ds):
    c = tablekit.connect(path=str(mini_ds))
    _one_spec_per_table(c)
    # a table's spec is its own, not a version's: the versions that hold it share it
    t = c.get_tables(c.get_versions()[0])[0]
    assert {id(c.spec(t, v)) for v in c.get_versions() if t in c.get_tables(v)} == {id(c.spec(t))}
    # the columns are the stored annotations' (oracle: the Parquet files as pandas reads them)
    raw = pd.read_parquet(pathlib.Path(mini_ds) / "tables" / t / "annotations").columns
    stored = set(c.spec(t).stored_columns)
    assert stored <= set(raw) | {c for c in stored if c.endswith("root_id")}


def test_filter_classes_keep_their_own_clients_metadata(mini_ds, tmp_path):
    """Two clients whose specs differ only in metadata (which TableSpec equality ignores) share a
    generated base class, but each class introspects to its own client's spec and metadata
    (before: the first client's, from the shared base)."""
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(mini_ds, other)
    a = tablekit.connect(path=str(mini_ds))
    t = a.get_tables()[0]
    meta_file = other / "tables" / t / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["user_id"] = "someone-else"
    meta_file.write_text(json.dumps(meta))
    b = tablekit.connect(path=str(other))
    ca, cb = a.filter_class(t), b.filter_class(t)
    assert a.spec(t) == b.spec(t) and type.mro(ca)[1] is type.mro(cb)[1]  # one shared base
    assert tablekit.introspect(ca).spec is a.spec(t) and tablekit.introspect(cb).spec is b.spec(t)
    assert tablekit.introspect(cb).spec.metadata["user_id"] == "someone-else"
    assert (
        tablekit.introspect(ca).spec.metadata["user_id"]
        == json.loads((mini_ds / "tables" / t / "metadata.json").read_text())["user_id"]
        != "someone-else"
    )


def test_client_and_cave_backend_share_one_spec(mini_ds, tmp_path):
    import _mini_datastack as mini
    from _server import serve_asgi

    from tablekit.server import create_app

    with serve_asgi(create_app(str(mini_ds))) as url:
        c = tablekit.connect(mini.DATASTACK, server=url, cache_dir=tmp_path)
        _one_spec_per_table(c)
        local = tablekit.connect(path=str(mini_ds))
        v = c.version
        for t in c.get_tables(v):  # the same spec as the local engine builds from the same files
            assert c.spec(t, v) == local.spec(t, v)
