"""Generated stubs cannot execute anything and always parse, whatever the names (issue 12, item 5).

Every name, description and enum value a schema or datastack holds ends up in a ``.pyi`` module:
in string literals, docstrings, ``#`` comments and identifiers. A name that could end one of them
(a line break, CR, a quote, a triple quote, a trailing backslash, U+2028, U+0085, NUL…) must either
be escaped or be refused when the schema is read. The oracle here is Python's own parser and
interpreter: the stub parses, executing it runs nothing but its imports and definitions, and the
values a checker would read back (``Literal`` members, docstrings) are the original strings.
"""

from __future__ import annotations

import ast
import builtins
import copy

import pytest

import tablekit
from tablekit import stubgen
from tablekit.errors import DatastackError, SchemaError
from tablekit.schema import table_spec, view_spec

PAYLOAD = '__import__("builtins").__dict__.__setitem__("TABLEKIT_PWNED", 1)'
#: texts that would break out of a literal, a docstring or a comment if written raw
HOSTILE = [
    f"x\n{PAYLOAD}\n#",
    f"x\r{PAYLOAD}\r#",
    f"x\r\n{PAYLOAD}\n#",
    f'x"\n{PAYLOAD}\n"',
    f'x"""\n{PAYLOAD}\n"""',
    f"x'''\n{PAYLOAD}\n'''",
    "trailing backslash \\",
    'ends with a quote "',
    'two quotes ""',
    '""""""',
    "x\u2028y\u2029z",
    "x\x85y",
    "x\x00y",
    "x\x0by\x0cz\x1c",
    "x\ty",
    "# not a comment",
    "\\N{BULLET} \\x41 \\u0041",
    "{braces} %s {0}",
    "\ud800 lone surrogate",
    "é ünïcödé ✓ 𝔘",
]
#: hostile but printable: allowed as names (tables, columns, datastacks), escaped in the stub
PRINTABLE_NAMES = ['a"b', "a'b", "a#b", "a\\b", 'q"""', "a b", "sp ace", "ﬁeld", "x" * 300, "ünï"]


def _exec_stub(text: str) -> dict:
    """Execute a stub module's text as Python (what an import of it would do)."""
    ns: dict = {"__name__": "tablekit_stubs.hostile"}
    exec(compile(text, "<stub>", "exec"), ns)
    return ns


def _top_level_is_declarative(text: str) -> None:
    """Every module-level statement is an import, a class, a type alias / TypeVar / TypedDict
    assignment or the module docstring: nothing that runs user code."""
    mod = ast.parse(text)
    for i, node in enumerate(mod.body):
        if isinstance(node, ast.Expr):
            assert i == 0 and isinstance(node.value, ast.Constant), ast.unparse(node)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            value = node.value
            if isinstance(value, ast.Call):
                assert isinstance(value.func, ast.Name) and value.func.id in ("TypeVar", "TypedDict")
        else:
            assert isinstance(node, ast.Import | ast.ImportFrom | ast.ClassDef), ast.unparse(node)
    for node in ast.walk(mod):
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name) and node.func.id in ("TypeVar", "TypedDict"), ast.unparse(
                node
            )


def _docs_with(schemas, *, description: str, enum: list[str], field: str = "label") -> dict:
    docs = {"hostile_type": copy.deepcopy(schemas["cell_type_local"])}
    props = docs["hostile_type"]["definitions"]["CellTypeLocal"]["properties"]
    props[field] = {"type": "string", "description": description, "enum": enum}
    props["cell_type"]["description"] = description
    return docs


@pytest.fixture(autouse=True)
def _no_pwn():
    builtins.__dict__.pop("TABLEKIT_PWNED", None)
    yield
    assert "TABLEKIT_PWNED" not in builtins.__dict__, "a generated stub executed injected code"


@pytest.mark.parametrize("text", HOSTILE, ids=[repr(h)[:30] for h in HOSTILE])
def test_hostile_datastack_name_description_and_enum(schemas_current, text, tmp_path):
    docs = _docs_with(schemas_current, description=text, enum=["ok", text, text + "2"])
    spec = table_spec(
        {
            "table_name": "cells",
            "schema_type": "hostile_type",
            "voxel_resolution": [4, 4, 40],
            "description": text,
            "notice_text": text,
        },
        docs,
    )
    stub = stubgen.render_stub(text, 1, [(spec, None)], [])
    _top_level_is_declarative(stub)
    ns = _exec_stub(stub)
    cls = ns["Tables"].cells
    # the values a checker reads back are the original strings
    lit = ns[next(n for n in ns if n.startswith("_Enum"))]
    assert lit.__args__ == ("ok", text, text + "2")
    for line in text.splitlines():  # the description, line by line (a surrogate shows escaped)
        assert line.strip().replace("\ud800", "\\ud800") in cls.__doc__
    # written and read back, the file is current (not permanently stale); the header names it
    path = stubgen.write_stubs(tmp_path, text, stub)
    assert stubgen.check_stub_file(path, stub) is None
    head = stubgen._read_header(path.read_text(encoding="utf-8"))
    assert head["datastack"] == stubgen._comment(text) and head["version"] == "1"


@pytest.mark.parametrize("name", PRINTABLE_NAMES)
def test_printable_hostile_table_and_column_names(schemas_current, name, tmp_path):
    docs = _docs_with(schemas_current, description="d", enum=[name], field=name)
    spec = table_spec(
        {"table_name": name, "schema_type": "hostile_type", "voxel_resolution": [4, 4, 40]}, docs
    )
    view = view_spec(name + "_v", {name: {"type": "integer"}, "id": {"type": "integer"}})
    stub = stubgen.render_stub(name, None, [(spec, None)], [view])
    _top_level_is_declarative(stub)
    ns = _exec_stub(stub)
    # the table is reached through __getitem__'s literal (its original name)
    getitem = ns["Tables"].__getitem__
    assert name in ast.unparse(ast.parse(stub)) or getitem is not None
    lits = [n for n in ast.walk(ast.parse(stub)) if isinstance(n, ast.Constant) and n.value == name]
    assert lits, "the table's name is not in the stub as a literal"
    path = stubgen.write_stubs(tmp_path, name, stub)
    assert stubgen.check_stub_file(path, stub) is None


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\u2028b", "a\x85b", "a\x00b", "a\x1bb", "\ud800", "a\tb"])
def test_unprintable_names_are_refused_at_schema_load(schemas_current, bad):
    docs = _docs_with(schemas_current, description="d", enum=["x"], field=bad)
    with pytest.raises(SchemaError, match=r"non-printable character U\+[0-9A-F]{4}.*rename"):
        table_spec({"table_name": "cells", "schema_type": "hostile_type"}, docs)
    with pytest.raises(SchemaError, match=r"table name .* non-printable"):
        table_spec({"table_name": bad, "schema_type": "cell_type_local"}, schemas_current)
    with pytest.raises(SchemaError, match=r"view name .* non-printable"):
        view_spec(bad, {"id": {"type": "integer"}})
    with pytest.raises(SchemaError, match=r"column name .* non-printable"):
        view_spec("v", {bad: {"type": "integer"}})


@pytest.mark.parametrize(
    "name", ["x\n" + PAYLOAD, "x\r#", "a b", "a'b", 'a"b', "-x", ".hidden", "../up", "x\u2028", "", "x" * 200]
)
def test_build_datastack_refuses_unusable_datastack_names(tmp_path, name):
    import pandas as pd

    df = pd.DataFrame({"id": [1], "cell_type": ["a"], "classification_system": ["s"]})
    df[["pt_position_x", "pt_position_y", "pt_position_z"]] = [[1, 2, 3]]
    df["pt_supervoxel_id"], df["pt_root_id"] = [10], [20]
    src = tablekit.TableSource("cells", "cell_type_local", df)
    with pytest.raises(DatastackError, match=r"datastack name .* is invalid.*e.g. 'my_stack'"):
        tablekit.build_datastack(tmp_path / "d", [src], name=name)
    assert not (tmp_path / "d").exists()


def test_a_hand_edited_datastack_json_name_is_refused(tmp_path):
    import json

    from _mini_datastack import write_mini_datastack

    d = write_mini_datastack(tmp_path / "ds")
    info = json.loads((d / "datastack.json").read_text())
    info["name"] = "x\n" + PAYLOAD
    (d / "datastack.json").write_text(json.dumps(info))
    with pytest.raises(DatastackError, match=r"datastack\.json: datastack name .* is invalid"):
        tablekit.connect(path=d).get_tables()
