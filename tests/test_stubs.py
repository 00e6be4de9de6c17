"""The stub renderer (tablekit/stubgen.py), the committed demo stubs and ``tablekit stubs``.

For every real schema document (and every reference schema merged with a target), the keyword
arguments of each stub class, their types and the operator keys of their TypedDicts, and the
runtime class's keywords and accepted operators, are checked against an oracle written here from
the spec that reads the raw JSON Schema documents (no tablekit.schema/filters helper).
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
from tablekit.errors import FilterValueError, OperatorError
from tablekit.filters import TableFilter, make_filter_class, table_fields
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


# ------------------------------------------------ an oracle from the raw schema documents
#
# Hand-written from design.md §3 and cave-data-model.md §1, reading the JSON Schema documents
# directly (no tablekit.schema / tablekit.filters helper):
# * every table has ``id`` (equality, membership, exclusion and ranges) and ``created`` (a
#   datetime: ranges); ``valid`` is no keyword (rows are always valid = true, data model §1.4);
# * a scalar property's type is ``format`` if given, else ``type`` (a string or a list; "null"
#   only makes it nullable, and nullable fields are ordinary columns): integer → int, float /
#   number → float, string → str, boolean → bool, date-time → datetime;
# * ints, floats and datetimes take ranges; strings take ``regex``; booleans only
#   equality/membership/exclusion; a string enum is typed as the Literal of its values;
# * a property that ``$ref``s a point definition is flattened by joining names with ``_``
#   (a document whose root *is* a point has no prefix): ``position`` → ``{p}_position_bbox``,
#   ``supervoxel_id`` / ``root_id`` → identifiers (equality, membership, exclusion, no ranges),
#   any other point property (``dependent_chunk``, ``level``) by its own type;
# * a reference table merged with its target has the target's keywords, then its own, those
#   whose column name clashes with a target column getting ``_ref`` (``id_ref``,
#   ``pt_position_ref`` → ``pt_position_ref_bbox``);
# * keywords are keyword-only, typed ``T | <many T> | <T>Ops | None`` (bbox: ``_BBox | None``),
#   bounding boxes last.

_EQ = ("==", "in", "!=", "not in")
_RANGE = ("<", "<=", ">", ">=")
_ALL_OPS = (*_EQ, *_RANGE, "regex")
_OPS_BY_KIND = {
    "int": {*_EQ, *_RANGE},
    "float": {*_EQ, *_RANGE},
    "datetime": {*_EQ, *_RANGE},
    "str": {*_EQ, "regex"},
    "bool": set(_EQ),
    "identifier": set(_EQ),
}
_STUB_SCALAR = {
    "int": "int",
    "identifier": "int",
    "float": "float",
    "str": "str",
    "bool": "bool",
    "datetime": "_When",
}
_POINT_DEFS = ("BoundSpatialPoint", "SpatialPoint", "DerivedSpatialPoint")


def _oracle_kind(prop: dict) -> str:
    t = prop.get("type")
    types = [x for x in ([t] if isinstance(t, str) else list(t or [])) if x != "null"]
    spelled = prop.get("format") or types[0]
    return {
        "integer": "int",
        "float": "float",
        "number": "float",
        "string": "str",
        "boolean": "bool",
        "date-time": "datetime",
    }[spelled]


def _oracle_columns(doc: dict) -> dict[str, tuple[str, tuple | None]]:
    """``{column: (kind, enum)}`` of one schema document (``position`` columns have kind "bbox")."""
    cols: dict[str, tuple[str, tuple | None]] = {"id": ("int", None), "created": ("datetime", None)}
    root = doc["$ref"].rsplit("/", 1)[-1]

    def point(prefix: str, definition: dict) -> None:
        for name, prop in definition["properties"].items():
            col = f"{prefix}_{name}" if prefix else name
            if name == "position":
                cols[col] = ("bbox", None)
            elif name in ("supervoxel_id", "root_id"):
                cols[col] = ("identifier", None)
            else:
                cols[col] = (_oracle_kind(prop), None)

    if root in _POINT_DEFS:
        point("", doc["definitions"][root])
        return cols
    for name, prop in doc["definitions"][root]["properties"].items():
        if name == "valid":
            continue
        if "$ref" in prop:
            point(name, doc["definitions"][prop["$ref"].rsplit("/", 1)[-1]])
        else:
            kind = _oracle_kind(prop)
            cols[name] = (kind, tuple(prop["enum"]) if kind == "str" and prop.get("enum") else None)
    return cols


def _oracle_keywords(doc: dict, target_doc: dict | None = None) -> dict[str, tuple[str, tuple | None]]:
    """``{keyword: (kind, enum)}`` of a table's filter class."""
    own = _oracle_columns(doc)
    if target_doc is None:
        merged = own
    else:
        merged = _oracle_columns(target_doc)
        merged = {**merged, **{(c + "_ref" if c in merged else c): k for c, k in own.items()}}
    return {(c + "_bbox" if k[0] == "bbox" else c): k for c, k in merged.items()}


def _oracle_ops(kind: str) -> set[str]:
    return set() if kind == "bbox" else _OPS_BY_KIND[kind]


def _stub_enum_aliases(text: str) -> dict[str, tuple]:
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Subscript):
            if ast.unparse(node.value.value) == "Literal":
                elts = node.value.slice
                elts = elts.elts if isinstance(elts, ast.Tuple) else [elts]
                out[node.target.id] = tuple(e.value for e in elts)
    return out


def _check_stub_class(cls: ast.ClassDef, expected: dict, tds: dict, enums: dict) -> None:
    args = _init_args(cls)
    where = cls.name
    assert set(args) == set(expected), (where, sorted(set(args) ^ set(expected)))
    boxes = [k for k in args if expected[k][0] == "bbox"]
    assert list(args)[len(args) - len(boxes) :] == boxes, (where, "bounding boxes come last")
    for kw, (kind, enum) in expected.items():
        ann = args[kw]
        if kind == "bbox":
            assert ann == "_BBox | None", (where, kw, ann)
            continue
        parts = ann.split(" | ")
        assert parts[-1] == "None", (where, kw, ann)
        if enum is not None:
            assert enums[parts[0]] == enum, (where, kw, ann)
        else:
            assert parts[0] == _STUB_SCALAR[kind], (where, kw, ann)
        assert set(tds[_ops_of(ann)]) == _oracle_ops(kind), (where, kw, ann, tds[_ops_of(ann)])


_SAMPLE = {
    "int": 5,
    "identifier": 5,
    "float": 1.5,
    "str": "a",
    "bool": True,
    "datetime": "2024-01-01T00:00:00+00:00",
}


def _check_runtime_class(cls: type, expected: dict) -> None:
    """The runtime class: its signature and introspection name the expected keywords, and building
    an object accepts exactly the expected operators of each (the others raise OperatorError)."""
    where = cls.__name__
    params = inspect.signature(cls).parameters
    assert set(params) == set(expected), (where, sorted(set(params) ^ set(expected)))
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values()), where
    assert set(tablekit.introspect(cls).fields) == set(expected), where
    for kw, (kind, enum) in expected.items():
        if kind == "bbox":
            cls(**{kw: [[0, 0, 0], [1, 1, 1]]})
            continue
        v = enum[0] if enum else _SAMPLE[kind]
        cls(**{kw: v}), cls(**{kw: [v]})
        for op in _ALL_OPS:
            arg = [v] if op in ("in", "not in") else ("a.*" if op == "regex" else v)
            if op in _oracle_ops(kind):
                cls(**{kw: {op: arg}})
            else:
                with pytest.raises(OperatorError):
                    cls(**{kw: {op: arg}})
        if enum:
            with pytest.raises(FilterValueError, match="allowed values"):
                cls(**{kw: "not-" + str(enum[0])})


def test_every_real_schema_renders_and_agrees_with_the_runtime(schemas_current):
    """All 57 schema types, and every reference schema merged with a nucleus_detection target: the
    stub's keywords, types and operator keys, and the runtime class's keywords and accepted
    operators, are those the oracle derives from the raw schema documents."""
    nuc = _spec("nuc", "nucleus_detection", schemas_current)
    plain = [(_spec(f"t_{st}", st, schemas_current), None) for st in sorted(schemas_current)]
    refs = [
        (_spec(f"r_{st}", st, schemas_current, reference_table="nuc"), nuc)
        for st, doc in sorted(schemas_current.items())
        if "target_id" in doc["definitions"][doc["$ref"].rsplit("/", 1)[-1]]["properties"]
    ]
    assert len(plain) == 57 and len(refs) == 19
    text = stubgen.render_stub("all", 1, plain + refs)
    classes, tds, enums = _classes(text), _typed_dicts(text), _stub_enum_aliases(text)
    assert len(classes) == 57 + 19
    for spec, target in plain + refs:
        expected = _oracle_keywords(
            schemas_current[spec.schema_type],
            None if target is None else schemas_current["nucleus_detection"],
        )
        _check_stub_class(classes[spec.name], expected, tds, enums)
        _check_runtime_class(make_filter_class(spec, target, None, 1), expected)


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
