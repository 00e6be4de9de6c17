"""The stub renderer (tablekit/stubgen.py), the committed demo stubs and ``tablekit stubs``.

Rendering is checked against the runtime model it comes from: for every real schema document,
the keyword arguments of each stub class and the operator keys of their TypedDicts are exactly
those of :func:`tablekit.filters.table_fields`.
"""

from __future__ import annotations

import ast
import inspect
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import tablekit
from tablekit import stubgen
from tablekit.filters import TableFilter, table_fields
from tablekit.schema import schema_hash, table_spec, view_spec

ROOT = Path(__file__).resolve().parent.parent
DEMO_STUB = stubgen.stub_path(ROOT / "stubs", "demo")


def _spec(name, st, docs, **kw):
    return table_spec({"table_name": name, "schema_type": st, "voxel_resolution": [4, 4, 40], **kw}, docs)


@pytest.fixture(scope="module")
def demo_specs(schemas_current):
    """The demo's tables and view, built from the real schema documents (no backend)."""
    nuc = _spec("nucleus_detection_v0", "nucleus_detection", schemas_current)
    tables = [
        (nuc, None),
        (_spec("synapses_pni_2", "synapse", schemas_current), None),
        (
            _spec(
                "aibs_metamodel_celltypes_v661",
                "cell_type_reference",
                schemas_current,
                reference_table="nucleus_detection_v0",
            ),
            nuc,
        ),
        (_spec("allen_v1_column_types_slanted", "cell_type_local", schemas_current), None),
        (
            _spec(
                "proofreading_status_and_strategy", "compartment_proofread_status_strategy", schemas_current
            ),
            None,
        ),
    ]
    view = view_spec(
        "single_neurons",
        {
            "id": {"type": "integer"},
            "pt_root_id": {"type": "integer"},
            "pt_supervoxel_id": {"type": "integer"},
            "pt_position": {"type": "SpatialPoint"},
        },
        {"voxel_resolution": [4, 4, 40]},
    )
    return tables, [view]


def _classes(text: str, namespace: str = "Tables") -> dict[str, ast.ClassDef]:
    mod = ast.parse(text)
    (ns,) = [n for n in mod.body if isinstance(n, ast.ClassDef) and n.name == namespace]
    return {c.name: c for c in ns.body if isinstance(c, ast.ClassDef)}


def _init_args(cls: ast.ClassDef) -> dict[str, str]:
    (init,) = [f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
    assert not init.args.args[1:] and init.args.vararg is None and init.args.kwarg is None
    return {a.arg: ast.unparse(a.annotation) for a in init.args.kwonlyargs}


def _typed_dicts(text: str) -> dict[str, list[str]]:
    """``{name: [keys]}`` of the functional TypedDicts of a stub."""
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            if isinstance(call.func, ast.Name) and call.func.id == "TypedDict":
                out[call.args[0].value] = [k.value for k in call.args[1].keys]
    return out


def _ops_of(annotation: str) -> str:
    return next(p for p in annotation.split(" | ") if p.endswith("Ops"))


# ---------------------------------------------------------------- rendering


def test_demo_classes_follow_table_fields(demo_specs):
    """Per table: keyword-only arguments = table_fields, typed by kind; TypedDict keys = ops."""
    tables, views = demo_specs
    text = stubgen.render_stub("demo", 943, tables, views)
    classes, tds = _classes(text), _typed_dicts(text)
    assert sorted(classes) == sorted(s.name for s, _ in tables)
    for spec, target in tables:
        args = _init_args(classes[spec.name])
        flds = table_fields(spec, target)
        assert list(args) == [f.attr for f in flds]
        for f in flds:
            if not f.bbox:
                assert tds[_ops_of(args[f.attr])] == list(f.ops), (spec.name, f.attr)
    nuc = _init_args(classes["nucleus_detection_v0"])
    assert nuc["volume"] == "float | _Floats | _FloatOps | None"
    assert nuc["id"] == "int | _Ints | _IdOps | None"
    assert nuc["created"] == "_When | _Whens | _WhenOps | None"
    assert nuc["pt_root_id"] == "int | _Ints | _IdentOps | None"
    assert nuc["pt_position_bbox"] == "_BBox | None"
    assert tds["_IdentOps"] == ["==", "in", "!=", "not in"]
    assert tds["_StrOps"] == ["==", "in", "!=", "not in", "regex"]
    assert tds["_FloatOps"] == ["==", "in", "!=", "not in", "<", "<=", ">", ">="]
    ref = _init_args(classes["aibs_metamodel_celltypes_v661"])
    assert {"id_ref", "created_ref", "cell_type", "target_id", "volume"} <= set(ref)
    (view,) = _classes(text, "Views").values()
    assert list(_init_args(view)) == ["id", "pt_root_id", "pt_supervoxel_id", "pt_position_bbox"]


def test_result_columns_and_getitem(demo_specs):
    """The class is parametrised by its result columns; ``__getitem__`` has one overload per table."""
    tables, views = demo_specs
    text = stubgen.render_stub("demo", 943, tables, views)
    assert (
        'class nucleus_detection_v0(_Table[_Literal["id", "created", "valid", "volume", '
        '"bb_end_position", "bb_start_position", "pt_supervoxel_id", "pt_root_id", "pt_position"]]):'
    ) in text
    for spec, _ in tables:
        assert f'def __getitem__(self, name: _Literal["{spec.name}"]) -> _type[{spec.name}]: ...' in text
    # a lone overload is an error for type checkers: one view gets a plain method
    views_part = text.split("class Views(_Namespace):")[1]
    assert "@_overload" not in views_part


def test_every_real_schema_renders_and_agrees_with_the_runtime(schemas_current):
    """All 57 schema types: the stub parses, and arguments and operators match table_fields."""
    tables = [(_spec(f"t_{st}", st, schemas_current), None) for st in sorted(schemas_current)]
    text = stubgen.render_stub("all", 1, tables)
    classes, tds = _classes(text), _typed_dicts(text)
    assert len(classes) == 57
    for spec, target in tables:
        args = _init_args(classes[spec.name])
        flds = table_fields(spec, target)
        assert list(args) == [f.attr for f in flds]
        for f in flds:
            if not f.bbox:
                assert tds[_ops_of(args[f.attr])] == list(f.ops)


def test_enum_columns_are_literals(schemas_current):
    """A string column with an enum takes exactly its allowed values."""
    text = stubgen.render_stub("x", 1, [(_spec("pr", "proofread_status", schemas_current), None)])
    assert '_Enum1: TypeAlias = Literal["non", "clean", "extended"]' in text
    args = _init_args(_classes(text)["pr"])
    assert args["status"].startswith("_Enum1 | Sequence[_Enum1] | AbstractSet[_Enum1] | _Array | _Enum1Ops")
    assert _typed_dicts(text)["_Enum1Ops"] == ["==", "in", "!=", "not in", "regex"]


def test_hazardous_names(schemas_current):
    """Tables that are not attributes at run time get private classes, reachable by ``[name]``;
    a column named ``self`` does not clash with the method's own parameter."""
    doc = {
        "$ref": "#/definitions/H",
        "definitions": {
            "H": {"type": "object", "properties": {"self": {"type": "integer"}, "class": {"type": "string"}}}
        },
    }
    docs = {**schemas_current, "h": doc}
    tables = [(_spec(n, "h", docs), None) for n in ("find", "_private", "class", "Tables", "ok")]
    text = stubgen.render_stub("odd-name", 1, tables)
    ast.parse(text)
    classes = _classes(text)
    assert set(classes) == {"Tables", "ok", "_t1", "_t2", "_t3"}  # sorted: Tables _private class find ok
    assert '_Literal["_private"]) -> _type[_t1]' in text
    assert '_Literal["class"]) -> _type[_t2]' in text
    assert '_Literal["find"]) -> _type[_t3]' in text
    (init,) = [f for f in classes["ok"].body if isinstance(f, ast.FunctionDef)]
    assert init.args.args[0].arg == "_tk_self" and "self" in _init_args(classes["ok"])
    assert stubgen.module_name("odd-name") == "odd_name" and stubgen.module_name("2x") == "ds_2x"


def test_header_and_determinism(demo_specs):
    """The header names datastack, version, schema hash and tablekit version; order of input does
    not matter."""
    tables, views = demo_specs
    text = stubgen.render_stub("demo", 943, tables, views)
    digest = schema_hash([s for s, _ in tables] + views)
    assert (
        f"# datastack: demo\n# version: 943\n# schema_hash: {digest}\n# tablekit: {tablekit.__version__}\n"
        in text
    )
    shuffled = list(tables)
    random.Random(3).shuffle(shuffled)
    assert stubgen.render_stub("demo", 943, shuffled, views) == text


def test_query_options_follow_the_runtime_signature():
    """Every option of TableFilter.query/live_query has a stub type (none falls back to Any)."""
    for method in (TableFilter.query, TableFilter.live_query):
        names = [p for p in inspect.signature(method).parameters if p not in ("self", "timestamp", "output")]
        missing = [n for n in names if n not in stubgen._OPTION_TYPES]
        assert not missing, f"add stub types for {missing} to stubgen._OPTION_TYPES"
    base = stubgen._base_class()
    assert "def query(" in base and "def live_query(" in base and "timestamp: _When," in base
    assert base.count('        output: Literal["arrow"],\n') == 4 and base.count(") -> ArrowTable: ...") == 4
    assert (
        base.count('        output: Literal["pandas"] = "pandas",\n') == 4
        and base.count(") -> DataFrame:") == 4
    )


# ---------------------------------------------------------------- the committed demo stubs


def test_committed_demo_stubs_are_current(client):
    """stubs/tablekit_stubs/demo.pyi is what `tablekit stubs demo --out stubs` writes today."""
    problem = stubgen.check_stub_file(DEMO_STUB, stubgen._render_client(client))
    assert problem is None, f"{problem}\nregenerate: python -m tablekit stubs demo --out stubs"


def test_check_stub_file(tmp_path, demo_specs):
    """--check's comparison: a new version number alone is not stale; a changed table is."""
    tables, views = demo_specs
    text = stubgen.render_stub("demo", 943, tables, views)
    path = stubgen.write_stubs(tmp_path, "demo", text)
    assert path == tmp_path / "tablekit_stubs" / "demo.pyi"
    assert (tmp_path / "tablekit_stubs" / "__init__.pyi").is_file()
    assert stubgen.check_stub_file(path, stubgen.render_stub("demo", 1078, tables, views)) is None
    fewer = stubgen.render_stub("demo", 943, tables[:-1], views)
    problem = stubgen.check_stub_file(path, fewer)
    assert problem is not None and problem.startswith(f"{path}: stale (schema_hash ")
    assert "proofreading_status_and_strategy" in problem
    assert stubgen.check_stub_file(tmp_path / "nope.pyi", text) == f"{tmp_path / 'nope.pyi'}: missing"


def test_check_stubs_at_run_time(client, tmp_path):
    """check_stubs: current stubs pass silently; stale or missing ones warn and say how to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        status = stubgen.check_stubs(client, ROOT / "stubs")
    assert not status.stale and status.found_hash == status.expected_hash
    stale = DEMO_STUB.read_text().replace(f"# schema_hash: {status.expected_hash}", "# schema_hash: 0000")
    stubgen.write_stubs(tmp_path, "demo", stale)
    with pytest.warns(stubgen.StaleStubsWarning, match="the tables changed") as w:
        s2 = stubgen.check_stubs(client, tmp_path)
    assert s2.stale and s2.found_hash == "0000"
    assert f"regenerate with: tablekit stubs demo --out {tmp_path}" in str(w[0].message)
    missing = stubgen.check_stubs(client, tmp_path / "elsewhere", warn=False)
    assert missing.stale and missing.message.startswith("no stubs for 'demo' at ")


# ---------------------------------------------------------------- the command


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tablekit", "stubs", *args], capture_output=True, text=True, timeout=300
    )


def test_command_writes_and_checks(path, tmp_path):
    """`tablekit stubs demo --path P --out D` writes the module; --check exits 0, then 1 when stale."""
    out = _cli("demo", "--path", path, "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    written = stubgen.stub_path(tmp_path, "demo")
    assert out.stdout.startswith(f"wrote {written} (5 tables, 1 views, version 943)")
    assert written.read_text() == DEMO_STUB.read_text()
    ok = _cli("demo", "--path", path, "--out", str(tmp_path), "--check")
    assert ok.returncode == 0 and ok.stdout.strip() == f"{written}: current"
    written.write_text(written.read_text().replace("size: float", "size: int"))
    bad = _cli("demo", "--path", path, "--out", str(tmp_path), "--check")
    assert bad.returncode == 1 and f"{written}: stale (content differs)" in bad.stderr
    assert "regenerate with: tablekit stubs demo --out" in bad.stderr


def test_command_errors(path, tmp_path):
    """A datastack/path mismatch is refused with exit 2."""
    out = _cli("minnie65_public", "--path", path, "--out", str(tmp_path))
    assert out.returncode == 2 and "holds datastack 'demo', not 'minnie65_public'" in out.stderr
