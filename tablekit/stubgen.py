"""TableSpecs → ``.pyi`` stubs of a datastack's tables and views; write them, check them.

The runtime filter classes (:mod:`tablekit.filters`) exist only once a client has read the
schemas, so type checkers and IDEs cannot see them. ``tablekit stubs`` renders, from the same
:class:`~tablekit.schema.TableSpec` objects and the same :func:`~tablekit.filters.table_fields`,
a stub module that describes them: per table a class with one typed keyword-only argument per
column, ``query()``/``live_query()``/``get_all()`` with overloads on ``output``, and ``Tables``/
``Views`` namespace classes with one attribute per table and ``__getitem__`` overloads on the
table name.

Layout and use (the documented setup)
-------------------------------------
Stubs form a *stub-only package* ``tablekit_stubs`` with one module per datastack, written into
the user's project (never site-packages)::

    tablekit stubs demo --out stubs          # → stubs/tablekit_stubs/demo.pyi

Setup is one configuration line and one import::

    # pyproject.toml
    [tool.pyright]
    stubPath = "stubs"        # mypy: [tool.mypy] mypy_path = "stubs"

    # analysis.py
    if TYPE_CHECKING: from tablekit_stubs import demo  # pyright: ignore[reportMissingModuleSource]

(the comment silences pyright's warning that a stub-only module has no source; mypy needs
pandas-stubs and pyarrow-stubs only if the user wants result types other than ``Any``), and the
typed namespace is reached with ``cast``::

    tables = cast("demo.Tables", client.tables)     # views: cast("demo.Views", client.views)
    tables.nucleus_detection_v0(volume={">": 500}).query()

Why this design: ``client.tables`` is declared as the generic :class:`tablekit.tables.Tables` and
a checker cannot know which datastack a client will connect to, so the user states it once. An
annotation (``tables: demo.Tables = client.tables``) is an assignment error, and making
``Tables`` assignable to anything (an ``Any`` base) still fails under pyright, which narrows a
declared variable to the assigned value's type. A generic ``Client[demo.Tables]`` would need
``connect()`` to return ``Client[Any]`` and so would lose the namespace's types for everyone who
does not use stubs. ``cast`` is standard, checker-neutral, costs nothing at run time, and keeps
several datastacks apart in one project (``demo.Tables``, ``minnie65_public.Tables``). The stub
module imports only ``tablekit`` and numpy (result types come through :mod:`tablekit.stubgen`).

Types are flat: one shared ``TypedDict`` of allowed operators per column kind, one generic base
class for the query methods, and per table only a constructor, so a 300-table datastack renders
in well under a second and type-checks quickly (``benchmarks/stubgen.py``).

Staleness: the header records datastack, version, :func:`~tablekit.schema.schema_hash` and the
tablekit version. ``tablekit stubs … --check`` (:func:`check_stub_file`) compares the file with
what would be rendered now (the version line aside: a new materialization with the same tables
does not make stubs stale). At run time :func:`check_stubs` compares a client with the stubs in
use and warns when they differ.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import inspect
import keyword
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pandas as pd
import pyarrow as pa

from .filters import Field, TableFilter, _doc, layout, table_fields
from .query.options import option_fields
from .schema import ColumnKind, TableSpec, schema_hash
from .tables import _Namespace

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

# The result types the stubs name, imported by them from here: a checker without pandas-stubs or
# pyarrow-stubs then reports nothing in the user's stubs (tablekit's own imports are silenced as an
# installed package) and types results as Any; with the stub packages it sees the real classes.
DataFrame = pd.DataFrame
Series = pd.Series
Index = pd.Index
ArrowTable = pa.Table

__all__ = [
    "STUB_PACKAGE",
    "ArrowTable",
    "DataFrame",
    "Index",
    "Series",
    "StaleStubsWarning",
    "StubStatus",
    "add_stubs_command",
    "check_stub_file",
    "check_stubs",
    "client_specs",
    "module_name",
    "render_stub",
    "stub_path",
    "write_stubs",
]

#: name of the stub-only package the modules are written into
STUB_PACKAGE = "tablekit_stubs"

_INIT_TEXT = (
    "# Stub-only package written by `tablekit stubs`: one module per datastack. DO NOT EDIT.\n"
    "# Use: if TYPE_CHECKING: from tablekit_stubs import <datastack>\n"
)
_HEADER_KEYS = ("datastack", "version", "schema_hash", "tablekit")


def _tablekit_version() -> str:
    from . import __version__

    return __version__


class StaleStubsWarning(UserWarning):
    """The stubs in use do not describe the client's tables (see :func:`check_stubs`)."""


def module_name(datastack: str) -> str:
    """The stub module of a datastack: its name made a Python identifier (``minnie65-public`` →
    ``minnie65_public``; a name of more than 100 characters is cut and gets a digest)."""
    m = re.sub(r"\W", "_", datastack)
    if not m or m[0].isdigit():
        m = "ds_" + m
    if keyword.iskeyword(m):
        m += "_"
    if len(m) > 100:  # a file name has at most 255 bytes: a long name keeps its start and a digest
        m = f"{m[:80]}_{hashlib.sha256(datastack.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    return m


def stub_path(out: str | os.PathLike[str], datastack: str) -> Path:
    """Where the stub module of ``datastack`` lives under the stub root ``out``."""
    return Path(out) / STUB_PACKAGE / f"{module_name(datastack)}.pyi"


# --------------------------------------------------------------------------- types per column


def _escape(ch: str) -> str:
    """A backslash escape of one character that must not appear raw in a stub."""
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def _q(s: str) -> str:
    """A double-quoted Python string literal of ``s``, whatever it holds: backslashes and quotes
    are escaped, and so is every character that is not printable (line breaks, CR, NUL, U+2028,
    U+0085, lone surrogates…), so a name or enum value can never end the literal or the line."""
    out = ['"']
    for ch in s:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(_escape(ch))
    out.append('"')
    return "".join(out)


def _comment(s: str) -> str:
    """``s`` as text in a ``#`` comment: itself when printable, else escaped as in :func:`_q`
    (a raw line break would end the comment and start a statement)."""
    return s if s.isprintable() else _q(s)[1:-1]


def _docstring(text: str, indent: str) -> str:
    """A triple-quoted docstring whose value is ``text`` (line breaks normalised, trailing
    space stripped): backslashes, non-printable characters and every quote that could close the
    literal (one followed by another, or the last) are escaped; a lone surrogate shows as its
    escape (``\\ud800``)."""
    lines = text.rstrip().splitlines() or [""]
    body = []
    for ln in lines:
        ln = ln.rstrip()
        out = []
        for i, ch in enumerate(ln):
            if ch == "\\":
                out.append("\\\\")
            elif ch == '"' and (i + 1 == len(ln) or ln[i + 1] == '"'):
                out.append('\\"')
            elif ch.isprintable():
                out.append(ch)
            elif "\ud800" <= ch <= "\udfff":  # CPython cannot make a docstring of a lone surrogate
                out.append("\\" + _escape(ch))  # so the docstring shows its escape as text
            else:
                out.append(_escape(ch))
        body.append("".join(out))
    out_lines = [f'{indent}"""{body[0]}']
    out_lines += [f"{indent}{ln}".rstrip() for ln in body[1:]]
    if len(body) > 1:
        out_lines.append(f'{indent}"""')
    else:
        out_lines[-1] += '"""'
    return "\n".join(out_lines)


_SCALAR = {
    ColumnKind.INT: "int",
    ColumnKind.FLOAT: "float",
    ColumnKind.STRING: "str",
    ColumnKind.BOOL: "bool",
    ColumnKind.DATETIME: "_When",
}
_MEMBERSHIP = {
    "int": "_Ints",
    "float": "_Floats",
    "str": "_Strs",
    "bool": "_Bools",
    "_When": "_Whens",
}
#: shared aliases: name → definition (emitted only when used)
_ALIASES = {
    "_When": "datetime.datetime | str",
    "_Array": "numpy.ndarray[Any, Any] | Series | Index",
    "_Ints": "Sequence[int] | AbstractSet[int] | _Array",
    "_Floats": "Sequence[float] | AbstractSet[float] | _Array",
    "_Strs": "Sequence[str] | AbstractSet[str] | _Array",
    "_Bools": "Sequence[bool] | AbstractSet[bool] | _Array",
    "_Whens": "Sequence[_When] | AbstractSet[_When] | _Array",
    "_Point": "tuple[float, float, float]",
    "_BBox": "tuple[_Point, _Point] | list[_Point] | list[list[int]] | list[list[float]] | numpy.ndarray[Any, Any]",
}
_ALIAS_DEPS = {
    "_Ints": ("_Array",),
    "_Floats": ("_Array",),
    "_Strs": ("_Array",),
    "_Bools": ("_Array",),
    "_Whens": ("_Array", "_When"),
    "_BBox": ("_Point",),
}
_OPS_NAMES = {
    "id": "_IdOps",
    "root id": "_IdentOps",
    "supervoxel id": "_IdentOps",
    "int": "_IntOps",
    "float": "_FloatOps",
    "string": "_StrOps",
    "bool": "_BoolOps",
    "datetime": "_WhenOps",
}


@attrs.define
class _Types:
    """The shared type definitions a stub module needs, collected while rendering its classes."""

    aliases: set[str] = attrs.field(factory=set)
    enums: dict[tuple[Any, ...], str] = attrs.field(factory=dict)  # enum values → alias name
    ops: dict[str, str] = attrs.field(factory=dict)  # TypedDict body → name
    ops_order: list[tuple[str, str]] = attrs.field(factory=list)  # (name, body), first use first

    def use(self, name: str) -> str:
        if name in _ALIASES and name not in self.aliases:
            self.aliases.add(name)
            for dep in _ALIAS_DEPS.get(name, ()):
                self.use(dep)
        return name

    def enum(self, values: tuple[Any, ...]) -> str:
        if values not in self.enums:
            self.enums[values] = f"_Enum{len(self.enums) + 1}"
        return self.enums[values]

    def ops_dict(self, base: str, body: str) -> str:
        if body not in self.ops:
            taken = {n for n, _ in self.ops_order}
            name, i = base, 2
            while name in taken:
                name, i = f"{base}{i}", i + 1
            self.ops[body] = name
            self.ops_order.append((name, body))
        return self.ops[body]


def _param_type(f: Field, types: _Types) -> str:
    """The annotation of one keyword argument of a filter class."""
    if f.bbox:
        return f"{types.use('_BBox')} | None"
    c = f.column
    scalar = _SCALAR[c.kind]
    if c.kind is ColumnKind.STRING and c.enum:
        lit = types.enum(tuple(c.enum))
        scalar, many = lit, f"Sequence[{lit}] | AbstractSet[{lit}] | {types.use('_Array')}"
        base = f"_{lit[1:]}Ops"
    else:
        types.use(scalar)
        many = types.use(_MEMBERSHIP[scalar])
        base = _OPS_NAMES[f.kind_text()]
    # ranges: an int column accepts a float bound (``volume > 2.5`` on an int column is meaningful);
    # identifier columns (id, root/supervoxel ids) take ints only, as the runtime checks
    bound = "float" if c.kind is ColumnKind.INT and not c.is_identifier else scalar
    value = {"==": scalar, "!=": scalar, "in": many, "not in": many, "regex": "str"}
    items = ", ".join(f"{_q(op)}: {value.get(op, bound)}" for op in f.ops)
    ops = types.ops_dict(base, "{" + items + "}")
    return f"{scalar} | {many} | {ops} | None"


# --------------------------------------------------------------------------- query methods

#: annotations of the query options, by parameter name; ``_C`` is the table's result columns
#: each query option's stub type, from its one definition (tablekit.query.options)
_OPTION_TYPES = {name: a.metadata["stub"] for name, a in option_fields().items()}


def _default(v: Any) -> str:
    if v is None or isinstance(v, (bool, int, float, str)):
        return repr(v)
    return "..."


def _options(method: Any, skip: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    """``(name, annotation, default)`` of the keyword options of a TableFilter method, read from
    its real signature so that stubs follow the runtime (unknown options render as ``Any``)."""
    out = []
    for p in inspect.signature(method).parameters.values():
        if p.name in skip or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        ann = _OPTION_TYPES.get(p.name, "Any")
        out.append((p.name, ann, None if p.default is p.empty else _default(p.default)))
    return out


def _overloads(name: str, first: str, lead: str, opts: list[tuple[str, str, str | None]], doc: str) -> str:
    """Two overloads of a query method: ``output="arrow"`` → pyarrow.Table, else DataFrame.

    The per-table column literal narrows ``select_columns`` and the overloads narrow ``output``,
    which TableFilter's plainer signature cannot express: a deliberate override, hence the
    ignore comments where mypy (first decorator) and pyright (last name) report it.
    """
    parts = []
    for arrow in (True, False):
        params = [first, *([lead] if lead else []), "*"]
        for n, ann, default in opts:
            if n == "output":
                params.append('output: Literal["arrow"]' if arrow else 'output: Literal["pandas"] = "pandas"')
            else:
                params.append(f"{n}: {ann}" + (f" = {default}" if default is not None else ""))
        lines = ["    @overload" + ("  # type: ignore[override]" if arrow else "")]
        if first == "cls":
            lines.append("    @classmethod")
        lines.append(
            f"    def {name}(" + ("" if arrow else "  # pyright: ignore[reportIncompatibleMethodOverride]")
        )
        lines += [f"        {p}," for p in params]
        if arrow:
            lines.append("    ) -> ArrowTable: ...")
        else:
            lines += ["    ) -> DataFrame:", f'        """{doc}"""', ""]
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


def _base_class() -> str:
    q = _options(TableFilter.query, ("self",))
    lq = _options(TableFilter.live_query, ("self", "timestamp"))
    return (
        "class _Table(TableFilter, Generic[_C]):\n"
        '    """Query methods shared by every table and view; ``_C`` is the result column names."""\n'
        "\n"
        "    table_name: ClassVar[str]\n"
        "    fields: ClassVar[tuple[str, ...]]\n"
        "    numeric_fields: ClassVar[tuple[str, ...]]\n"
        "    spatial_fields: ClassVar[tuple[str, ...]]\n"
        + _overloads(
            "query",
            "self",
            "",
            q,
            'Run the query: a pandas DataFrame, or a pyarrow.Table with output="arrow".',
        )
        + _overloads(
            "live_query",
            "self",
            "timestamp: _When",
            lq,
            'The rows present at ``timestamp`` (timezone-aware, or "now"), root ids as of then.',
        )
        + _overloads("get_all", "cls", "", q, "Every row of the table: ``T().query(...)``.")
        + _overloads(
            "get_all_live",
            "cls",
            "timestamp: _When",
            lq,
            "Every row present at ``timestamp``: ``T().live_query(timestamp, ...)``.",
        )
    )


_NAMESPACE = '''class _Namespace:
    """Methods shared by Tables and Views."""

    def names(self) -> list[str]: ...
    def find(self, text: str) -> list[str]: ...
    @overload
    def get(self, name: str) -> type[TableFilter] | None: ...
    @overload
    def get(self, name: str, default: _D) -> type[TableFilter] | _D: ...
    def __contains__(self, name: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
'''


# --------------------------------------------------------------------------- rendering


def _class_name(name: str, i: int) -> str:
    """The class of a table inside its namespace: the table's name when it is reachable as an
    attribute at run time, else a private name (reachable only through ``ns["name"]``)."""
    return name if _Namespace._attr_ok(name) else f"_t{i}"


def _table_class(cls_name: str, spec: TableSpec, target: TableSpec | None, types: _Types, indent: str) -> str:
    flds = table_fields(spec, target)
    cols = ", ".join(_q(c.name) for c in layout(spec, target))
    me = "_tk_self" if any(f.attr in ("self", "_tk_self") for f in flds) else "self"
    params = [f"{f.attr}: {_param_type(f, types)} = None" for f in flds]
    inner = indent + "    "
    lines = [
        f"{indent}class {cls_name}(_Table[_Literal[{cols}]]):",
        _docstring(_doc(spec, target, flds), inner),
        f"{inner}def __init__(",
        f"{inner}    {me},",
        *([f"{inner}    *,"] if params else []),
        *(f"{inner}    {p}," for p in params),
        f"{inner}) -> None: ...",
    ]
    return "\n".join(lines)


def _namespace_class(
    kind: str, entries: Sequence[tuple[TableSpec, TableSpec | None]], datastack: str, types: _Types
) -> str:
    title = "Tables" if kind == "table" else "Views"
    doc = (
        f"The {kind}s of datastack {datastack!r}: ``{kind}s.<name>(filters).query()`` or "
        f'``{kind}s["<name>"]``.'
    )
    out = [f"class {title}(_Namespace):", _docstring(doc, "    ")]
    names = []
    for i, (spec, target) in enumerate(sorted(entries, key=lambda e: e[0].name)):
        cn = _class_name(spec.name, i)
        names.append((spec.name, cn))
        out.append("")
        out.append(_table_class(cn, spec, target, types, "    "))
    if names:
        out.append("")
        for name, cn in names:
            if len(names) > 1:  # a lone overload is an error: then a plain method
                out.append("    @_overload")
            out.append(f"    def __getitem__(self, name: _Literal[{_q(name)}]) -> _type[{cn}]: ...")
    return "\n".join(out)


def _header(datastack: str, version: int | None, digest: str) -> str:
    name = _comment(datastack)
    return (
        f"# Typed stubs of the tables and views of datastack {datastack!r}, written by `tablekit stubs`.\n"
        "# DO NOT EDIT: regenerate with\n"
        f"#   tablekit stubs {name} --out DIR\n"
        f"# datastack: {name}\n"
        f"# version: {version}\n"
        f"# schema_hash: {digest}\n"
        f"# tablekit: {_tablekit_version()}\n"
    )


def render_stub(
    datastack: str,
    version: int | None,
    tables: Iterable[tuple[TableSpec, TableSpec | None]],
    views: Iterable[TableSpec] = (),
) -> str:
    """The text of the stub module of one datastack version.

    ``tables`` are ``(spec, target)`` pairs (``target`` the reference table's target, or
    ``None``), as the client builds filter classes; ``views`` are view specs. Pure: no I/O.
    """
    tables = list(tables)
    views = list(views)
    digest = schema_hash([s for s, _ in tables] + views)
    types = _Types()
    body_tables = _namespace_class("table", tables, datastack, types)
    body_views = _namespace_class("view", [(v, None) for v in views], datastack, types)
    shared = []
    for name in _ALIASES:  # fixed order
        if name in types.aliases:
            shared.append(f"{name}: TypeAlias = {_ALIASES[name]}")
    for values, name in types.enums.items():
        shared.append(f"{name}: TypeAlias = Literal[{', '.join(_q(str(v)) for v in values)}]")
    for name, body in types.ops_order:
        shared.append(f"{name} = TypedDict({_q(name)}, {body}, total=False)")
    doc = (
        f"Tables and views of datastack {datastack!r}.\n\n"
        f"Use: ``if TYPE_CHECKING: from {STUB_PACKAGE} import {module_name(datastack)}``, then\n"
        f'``tables = cast("{module_name(datastack)}.Tables", client.tables)``.'
    )
    return "\n".join(
        [
            _header(datastack, version, digest),
            _docstring(doc, ""),
            "",
            "import datetime",
            "from builtins import type as _type",
            "from collections.abc import Iterator, Sequence, Set as AbstractSet",
            "from typing import Any, ClassVar, Generic, Literal, TypeAlias, TypedDict, TypeVar, overload",
            "from typing import Literal as _Literal",
            "from typing import overload as _overload",
            "",
            "import numpy",
            "from tablekit import TableFilter",
            "from tablekit.stubgen import ArrowTable, DataFrame, Index, Series",
            "",
            '_C = TypeVar("_C", bound=str)',
            '_D = TypeVar("_D")',
            "",
            *shared,
            "",
            _base_class(),
            _NAMESPACE,
            body_tables,
            "",
            body_views,
            "",
        ]
    )


# --------------------------------------------------------------------------- from a client


def client_specs(
    client: Client, version: int | None = None
) -> tuple[list[tuple[TableSpec, TableSpec | None]], list[TableSpec]]:
    """The ``(tables, views)`` specs of a client's version, as :func:`render_stub` takes them."""
    v = client.version if version is None else int(version)
    specs = client.table_specs(v)
    tables = [(s, specs[s.reference_table] if s.reference_table else None) for s in specs.values()]
    return tables, list(client.view_specs(v).values())


def _render_client(client: Client, version: int | None = None) -> str:
    v = client.version if version is None else int(version)
    tables, views = client_specs(client, v)
    return render_stub(client.datastack, v, tables, views)


# --------------------------------------------------------------------------- write / check


def _write_text(path: Path, text: str) -> None:
    """Write atomically: a temporary file in the same directory, renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        # mkstemp makes it 0600; stubs are ordinary source files (0644 under the usual umask 022)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_stubs(out: str | os.PathLike[str], datastack: str, text: str) -> Path:
    """Write a rendered stub module (and the package's ``__init__.pyi``) under the stub root
    ``out``; returns the module's path."""
    path = stub_path(out, datastack)
    init = path.parent / "__init__.pyi"
    if not init.exists() or init.read_text(encoding="utf-8") != _INIT_TEXT:
        _write_text(init, _INIT_TEXT)
    _write_text(path, text)
    return path


def _read_header(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines()[:12]:
        m = re.match(r"# (\w+): (.*)$", line)
        if m and m.group(1) in _HEADER_KEYS:
            out[m.group(1)] = m.group(2)
    return out


def _mask_version(text: str) -> str:
    return re.sub(r"(?m)^# version: .*$", "# version: -", text, count=1)


def check_stub_file(path: str | os.PathLike[str], expected: str) -> str | None:
    """``None`` when the stub file at ``path`` matches the freshly rendered ``expected`` text
    (its materialization version aside), else a message saying what differs."""
    p = Path(path)
    if not p.is_file():
        return f"{p}: missing"
    found = p.read_text(encoding="utf-8")
    if _mask_version(found) == _mask_version(expected):
        return None
    have, want = _read_header(found), _read_header(expected)
    reasons = [
        f"{k} {have.get(k)} → {want[k]}" for k in ("schema_hash", "tablekit") if have.get(k) != want[k]
    ]
    diff = list(
        difflib.unified_diff(
            found.splitlines(), expected.splitlines(), "committed", "current", n=0, lineterm=""
        )
    )
    shown = "\n".join(diff[2:14]) + ("\n…" if len(diff) > 14 else "")
    return f"{p}: stale ({'; '.join(reasons) or 'content differs'})\n{shown}"


@attrs.frozen
class StubStatus:
    """What :func:`check_stubs` found. ``stale`` is true when the stubs do not describe the
    client's tables; ``message`` says why and how to regenerate them."""

    path: Path
    datastack: str
    expected_hash: str
    found_hash: str | None
    stale: bool
    message: str


def check_stubs(
    client: Client, path: str | os.PathLike[str] = "stubs", *, version: int | None = None, warn: bool = True
) -> StubStatus:
    """Do the stubs under ``path`` describe ``client``'s tables and views?

    ``path`` is the stub root (the ``--out`` directory, holding ``tablekit_stubs/``) or the stub
    module itself. Compares the schema hash in the stub's header with the client's (at ``version``,
    default the client's) and the tablekit version that wrote it with this one. When they differ,
    or the file is missing, warns with :class:`StaleStubsWarning` (unless ``warn=False``); the
    returned :class:`StubStatus` says the same. Needs every table's schema (one request per schema
    type on the HTTP backend).
    """
    p = Path(path)
    if p.suffix != ".pyi":
        p = stub_path(p, client.datastack)
    tables, views = client_specs(client, version)
    want = schema_hash([s for s, _ in tables] + views)
    regen = f"regenerate with: tablekit stubs {client.datastack} --out {p.parent.parent}"
    if not p.is_file():
        status = StubStatus(
            p, client.datastack, want, None, True, f"no stubs for {client.datastack!r} at {p}; {regen}"
        )
    else:
        head = _read_header(p.read_text(encoding="utf-8"))
        problems = []
        if head.get("datastack") != _comment(client.datastack):
            problems.append(f"they describe datastack {head.get('datastack')!r}, not {client.datastack!r}")
        if head.get("schema_hash") != want:
            problems.append(
                f"the tables changed (schema hash {head.get('schema_hash')} in the stubs, {want} now)"
            )
        if head.get("tablekit") != _tablekit_version():
            problems.append(f"written by tablekit {head.get('tablekit')}, this is {_tablekit_version()}")
        msg = (
            f"stubs {p} are stale: " + "; ".join(problems) + f"; {regen}"
            if problems
            else f"stubs {p} are current"
        )
        status = StubStatus(p, client.datastack, want, head.get("schema_hash"), bool(problems), msg)
    if status.stale and warn:
        warnings.warn(status.message, StaleStubsWarning, stacklevel=2)
    return status


# --------------------------------------------------------------------------- command line


def _cmd_stubs(args: argparse.Namespace) -> int:
    import sys

    import tablekit

    if args.server and args.path:
        print("error: pass --server or --path, not both", file=sys.stderr)
        return 2
    client = tablekit.connect(args.datastack, path=args.path, server=args.server, version=args.version)
    text = _render_client(client)
    target = stub_path(args.out, client.datastack)
    if args.check:
        problem = check_stub_file(target, text)
        if problem is None:
            print(f"{target}: current")
            return 0
        print(problem, file=sys.stderr)
        print(f"regenerate with: tablekit stubs {args.datastack} --out {args.out}", file=sys.stderr)
        return 1
    path = write_stubs(args.out, client.datastack, text)
    n_t, n_v = len(client.get_tables()), len(client.get_views())
    print(f"wrote {path} ({n_t} tables, {n_v} views, version {client.version})")
    return 0


def add_stubs_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``tablekit stubs DATASTACK [--server URL | --path DIR] [--version V] --out DIR
    [--check]`` to the ``tablekit`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "stubs",
        help="write typed .pyi stubs of a datastack's tables (for pyright, mypy and IDEs)",
        description=(
            "Write OUT/tablekit_stubs/<datastack>.pyi. Then set stubPath = OUT (pyright) or "
            "mypy_path = OUT (mypy), and in code: if TYPE_CHECKING: from tablekit_stubs import "
            "<datastack>; tables = cast('<datastack>.Tables', client.tables)."
        ),
    )
    p.add_argument("datastack", help="datastack name ('demo' for the embedded demo)")
    p.add_argument("--server", help="CAVE server URL")
    p.add_argument("--path", help="local datastack directory")
    p.add_argument("--version", type=int, help="materialization version (default: latest valid)")
    p.add_argument("--out", required=True, help="stub root directory (e.g. stubs)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the stubs there are stale")
    p.set_defaults(func=_cmd_stubs)
    return p
