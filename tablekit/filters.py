"""TableSpec → one attrs filter class per table or view.

A filter class takes one keyword argument per filterable column (and ``<P>_position_bbox`` per
point), validates every value when the object is built, and turns it into
:class:`~tablekit.query.Predicate` objects. ``.query()`` hands a :class:`~tablekit.query.Query`
to the client that made the class.

Naming rules (documented for users in the README):

* a keyword is the column's name in query results; on a reference table merged with its target,
  the reference table's columns that clash with the target's get ``_ref`` (``id_ref``);
* a point ``P`` gets ``P_position_bbox`` (views: ``<column>_bbox``);
* a column whose name is a Python keyword, starts with ``_`` or a digit, or equals one of the class's
  own members (``query``, ``fields`` …) gets a trailing ``_`` (``class_``, ``query_``); the original
  name is always accepted too, through ``T(**{"class": 5})``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import keyword
import threading
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

import attrs
from typing_extensions import Unpack

from . import _values
from .errors import (
    FilterValueError,
    OperatorError,
    QueryError,
    UnknownArgumentError,
    UnknownColumnError,
    VersionError,
)
from .query import Join, Predicate, Query
from .query import options as _options
from .query.layout import ResultColumn, layout
from .query.options import LiveQueryKwargs, QueryKwargs
from .schema import ColumnKind, ColumnRole, ColumnSpec, TableSpec

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "Field",
    "FilterInfo",
    "ResultColumn",
    "TableFilter",
    "introspect",
    "layout",
    "make_filter_class",
    "table_fields",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

RANGE_OPS = ("<", "<=", ">", ">=")
#: members of every filter class; columns with these names get a trailing underscore
RESERVED = frozenset(
    {
        "query",
        "live_query",
        "explain",
        "fields",
        "numeric_fields",
        "spatial_fields",
        "get_all",
        "get_all_live",
        "table_name",
        "filters",
        "spec",
        "to_query",
        "columns",
        "mro",
    }
)


@attrs.frozen
class Field:
    """One keyword argument of a filter class."""

    attr: str  # the keyword
    table: str  # the table that owns the column
    column: ColumnSpec  # for bbox fields: the position column
    result_name: str  # the column's name in results
    bbox: bool = False

    @property
    def original(self) -> str:
        """Name before mangling: the result name (bbox: ``<position>_bbox``)."""
        return self.result_name + "_bbox" if self.bbox else self.result_name

    @property
    def ops(self) -> tuple[str, ...]:
        """Operators this field accepts in a dict value."""
        c = self.column
        if self.bbox:
            return ()
        base = ("==", "in", "!=", "not in")
        if c.role in (ColumnRole.ROOT_ID, ColumnRole.SUPERVOXEL_ID):
            return base
        if c.kind in (ColumnKind.INT, ColumnKind.FLOAT, ColumnKind.DATETIME):
            return base + RANGE_OPS
        if c.kind is ColumnKind.STRING:
            return (*base, "regex")
        return base

    @property
    def numeric(self) -> bool:
        return any(op in self.ops for op in RANGE_OPS)

    def kind_text(self) -> str:
        c = self.column
        if self.bbox:
            return "bounding box"
        if c.role is ColumnRole.ID:
            return "id"
        if c.role is ColumnRole.ROOT_ID:
            return "root id"
        if c.role is ColumnRole.SUPERVOXEL_ID:
            return "supervoxel id"
        return c.kind.value

    def predicates(self, table_name: str, value: Any) -> list[Predicate]:
        """Validate ``value`` and turn it into predicates."""
        col = self.column
        name = self.attr
        if self.bbox:
            return [Predicate(self.table, col.name, "bbox", _values.bbox(table_name, name, value))]
        if isinstance(value, Mapping):
            if not value:
                raise FilterValueError(
                    f"{table_name}: column {name!r} got an empty operator dict. "
                    f"Pass e.g. {{'>': x}}; allowed operators: {list(self.ops)}",
                    table=table_name,
                    column=name,
                )
            out: list[Predicate] = []
            for op, v in value.items():
                if not isinstance(op, str) or op not in self.ops:
                    hint = ""
                    if not isinstance(op, str):
                        hint = " Operators are strings."
                    elif op in RANGE_OPS:
                        hint = f" Ranges need an integer, float or datetime column (or id); {name!r} is a {self.kind_text()}."
                    elif op == "regex":
                        hint = f" regex works on string columns; {name!r} is a {self.kind_text()}."
                    raise OperatorError(
                        f"{table_name}: column {name!r} ({self.kind_text()}) does not support operator "
                        f"{op!r}; allowed: {list(self.ops)}.{hint}",
                        table=table_name,
                        column=name,
                    )
                out.append(self.predicate(table_name, op, v))
            return out
        if _values.is_membership(value):
            return [self.predicate(table_name, "in", value)]
        return [self.predicate(table_name, "==", value)]

    def predicate(self, table_name: str, op: str, v: Any) -> Predicate:
        """Validate one condition ``op`` (``==``, ``!=``, ``<`` …, ``in``, ``not in``) on this field's
        column with value ``v`` (the operators the keyword allows are in :attr:`ops`; this checks the
        value only, for tools that accept more operators, such as ``tablekit serve``)."""
        col, name = self.column, self.attr
        if op in ("in", "not in"):
            if not _values.is_membership(v):
                raise FilterValueError(
                    f"{table_name}: column {name!r}: {op!r} needs a list, got {v!r}. Pass e.g. [{v!r}]",
                    table=table_name,
                    column=name,
                )
            val: Any = _values.membership(table_name, name, col, v)
        elif op == "regex":
            val = _values.regex(table_name, name, col, v)
        else:
            if _values.is_membership(v):
                fix = "use 'in'/'not in' for lists" if op in ("==", "!=") else "pass one value"
                raise FilterValueError(
                    f"{table_name}: column {name!r}: {op!r} takes one value, got a list {v!r}; {fix}",
                    table=table_name,
                    column=name,
                )
            val = _values.scalar(table_name, name, col, v, bound=op in RANGE_OPS)
        return Predicate(self.table, col.name, op, val)  # type: ignore[arg-type]


def _safe(name: str, taken: set[str]) -> str:
    # NFKC as Python's parser normalises identifiers (a keyword ``ﬁ=`` arrives as ``fi``); every
    # character that cannot continue an identifier becomes ``_``
    a = "".join(ch if ("a" + ch).isidentifier() else "_" for ch in unicodedata.normalize("NFKC", name))
    if not a or a[:1].isdigit():
        a = "f_" + a
    if keyword.iskeyword(a) or keyword.issoftkeyword(a) or a in RESERVED or a.startswith("_"):
        a = a + "_"
    while a in taken:
        a += "_"
    return a


def table_fields(spec: TableSpec, target: TableSpec | None = None) -> tuple[Field, ...]:
    """The keyword arguments of the filter class, in order: columns, then bounding boxes."""
    cols = layout(spec, target)
    taken: set[str] = set()
    plain: list[Field] = []
    boxes: list[Field] = []
    for rc in cols:
        c = rc.column
        if c.name == "valid" and c.role is ColumnRole.BOOKKEEPING:
            continue  # always true in results
        if c.kind is ColumnKind.POSITION:
            attr = _safe(rc.name + "_bbox", taken)
            taken.add(attr)
            boxes.append(Field(attr, rc.table, c, rc.name, bbox=True))
        else:
            attr = _safe(rc.name, taken)
            taken.add(attr)
            plain.append(Field(attr, rc.table, c, rc.name))
    return tuple(plain + boxes)


def _type_text(f: Field) -> str:
    if f.bbox:
        return "Sequence[Sequence[float]] | None"
    scalar = {
        ColumnKind.INT: "int",
        ColumnKind.FLOAT: "float",
        ColumnKind.STRING: "str",
        ColumnKind.BOOL: "bool",
        ColumnKind.DATETIME: "datetime | str",
    }[f.column.kind]
    return f"{scalar} | Sequence[{scalar}] | Mapping[str, Any] | None"


def _doc(spec: TableSpec, target: TableSpec | None, fields: tuple[Field, ...]) -> str:
    res = spec.voxel_resolution
    lines = [
        f"{'View' if spec.is_view else 'Table'} {spec.name!r}"
        + (f" (schema {spec.schema_type})" if spec.schema_type else "")
        + (f", merged with its reference target {target.name!r}" if target is not None else ""),
        "",
    ]
    if spec.description:
        lines += [spec.description.strip(), ""]
    if target is not None and target.description:
        lines += [f"Target table {target.name!r}: {target.description.strip()}", ""]
    if spec.notice_text:
        lines += [f"Notice: {spec.notice_text}", ""]
    lines += [
        "Build a filter with keyword arguments, then call .query():",
        "  col=value  equality;  col=[a, b]  membership ([] matches nothing);",
        "  col={'>': a, '<=': b}  ranges (integer, float, datetime columns and id);",
        "  col={'!=': x} / {'not in': [...]}  exclusion;  col={'regex': '...'}  string columns;",
        "  P_position_bbox=[[x0, y0, z0], [x1, y1, z1]]  box in the table's voxel units"
        + (f" ({res[0]:g}×{res[1]:g}×{res[2]:g} nm)" if res else "")
        + ", faces included.",
        "",
        "Columns:",
    ]
    for f in fields:
        c = f.column
        desc = c.description or ""
        extra = []
        if c.enum:
            extra.append(f"one of {list(c.enum)}")
        if c.nullable and not f.bbox and c.role is ColumnRole.VALUE:
            extra.append("may be null")
        if f.bbox:
            desc = f"box on {f.result_name}" + (f": {c.description}" if c.description else "")
        tail = f" ({'; '.join(extra)})" if extra else ""
        owner = f" [{f.table}]" if target is not None else ""
        lines.append(f"  {f.attr}: {f.kind_text()}{owner} — {desc}{tail}".rstrip(" —"))
    return "\n".join(lines)


@attrs.frozen
class FilterInfo:
    """What a filter class asks about, for tools built on tablekit (the server, the CLI, the
    classic API): see :func:`introspect`."""

    #: the queried table or view
    table: str
    #: ``"table"`` or ``"view"``
    kind: str
    #: the queried table's (or view's) spec
    spec: TableSpec
    #: a reference table's target when the class merges it (its columns come first), else None
    target: TableSpec | None
    #: the materialization version whose schemas the class was built from
    version: int
    #: the keyword arguments, by keyword (in signature order)
    fields: Mapping[str, Field]
    #: the result columns (before ``select_columns``)
    layout: tuple[ResultColumn, ...]

    @property
    def join(self) -> Join | None:
        return None if self.target is None else Join(self.spec.name, self.target.name)

    @property
    def live_compatible(self) -> bool:
        return not self.spec.is_view or self.spec.live_compatible


def introspect(obj: TableFilter | type[TableFilter]) -> FilterInfo:
    """The table, fields, target and result layout of a filter class (or object), read from the
    class's attrs field metadata::

        info = tablekit.introspect(client.tables.synapses_pni_2)
        info.fields["pre_pt_root_id"].column.kind, [c.name for c in info.layout]
    """
    cls = obj if isinstance(obj, type) else type(obj)
    if not (isinstance(cls, type) and issubclass(cls, TableFilter)) or cls is TableFilter:
        raise TypeError(f"introspect() takes a filter class or object (client.tables.<name>), got {obj!r}")
    fields = {a.name: a.metadata[_FIELD] for a in attrs.fields(cls) if _FIELD in a.metadata}
    spec, target = cls._spec, cls._target
    return FilterInfo(
        table=spec.name,
        kind="view" if spec.is_view else "table",
        spec=spec,
        target=target,
        version=cls._version,
        fields=fields,
        layout=cls._layout,
    )


#: the attrs metadata key under which each field of a filter class keeps its :class:`Field`
_FIELD = "tablekit.field"


class TableFilter:
    """Base class of the generated filter classes (one per table or view).

    Options of :meth:`query` / :meth:`live_query` / :meth:`explain` / :meth:`to_query` are
    defined once, in :mod:`tablekit.query.options`.
    """

    if TYPE_CHECKING:  # the generated classes take one keyword per column; stubs give exact types

        def __init__(self, **filters: Any) -> None: ...

    _spec: ClassVar[TableSpec]
    _target: ClassVar[TableSpec | None]
    _fields: ClassVar[dict[str, Field]]
    _layout: ClassVar[tuple[ResultColumn, ...]]
    _client: ClassVar[Any]
    _version: ClassVar[int]
    table_name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    numeric_fields: ClassVar[tuple[str, ...]]
    spatial_fields: ClassVar[tuple[str, ...]]
    _predicates: tuple[Predicate, ...]

    def __attrs_post_init__(self) -> None:
        preds: list[Predicate] = []
        for name, f in self._fields.items():
            v = getattr(self, name)
            if v is not None:
                preds.extend(f.predicates(self.table_name, v))
        object.__setattr__(self, "_predicates", tuple(preds))

    @property
    def filters(self) -> dict[str, Any]:
        """The filters as given (keyword → value), without the unset ones."""
        return {n: getattr(self, n) for n in self._fields if getattr(self, n) is not None}

    def __reduce__(self) -> Any:
        """Pickle as (client, version, table, filters): the generated class is rebuilt by the
        client on the other side (a process that has none reconnects to the same datastack), so a
        filter can go to a ``multiprocessing`` or Dask worker and compares equal after the trip."""
        merge = self._target is not None or not self._spec.reference_table
        return (
            _unpickle,
            (self._client, self._version, self._spec.is_view, self.table_name, merge, self.filters),
        )

    @property
    def predicates(self) -> tuple[Predicate, ...]:
        """The validated conditions these filters stand for."""
        return self._predicates

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.filters.items())
        return f"{self.table_name}({args})"

    def _options(self, method: str, given: Mapping[str, Any], allowed: tuple[str, ...]) -> Query:
        opts, out = _options.parse(
            given,
            table=self.table_name,
            what=f"{self.table_name}.{method}",
            allowed=allowed,
            filters=self._fields,
        )
        return self._client.build_query(self, options=opts, output=out)

    def to_query(self, **options: Unpack[QueryKwargs]) -> Query:
        """The backend-neutral :class:`~tablekit.query.Query` that ``.query(**options)`` runs."""
        return self._options("to_query", options, _options.QUERY_OPTIONS)

    def query(self, **options: Unpack[QueryKwargs]) -> pd.DataFrame:
        """Run the query and return the matching rows, ordered by ``id``."""
        q = self._options("query", options, _options.QUERY_OPTIONS)
        return self._client.execute(q, given=self.filters)

    def live_query(self, timestamp: Any, **options: Unpack[LiveQueryKwargs]) -> pd.DataFrame:
        """The rows present at ``timestamp`` (timezone-aware, or ``"now"``), with root ids as they
        were at that moment. Root-id filters are interpreted at ``timestamp``: ids not valid then
        raise an error naming them, unless ``allow_invalid_root_ids=True`` (they are dropped with a
        warning). Other parameters as in :meth:`query`."""
        if timestamp is None:
            raise no_live_timestamp(self.table_name, ".query() or get_all()")
        _options.check_keywords(f"{self.table_name}.live_query", options, _options.LIVE_OPTIONS, self._fields)
        return self.query(timestamp=timestamp, **options)

    def explain(self, **options: Unpack[QueryKwargs]) -> str:
        """What ``.query(**options)`` would run (SQL and parameters, or the HTTP request),
        without running it."""
        return self._client.explain(self._options("explain", options, _options.QUERY_OPTIONS))

    @classmethod
    def get_all(cls, **options: Unpack[QueryKwargs]) -> pd.DataFrame:
        """Every row of the table: ``T().query(**options)``."""
        return cls().query(**options)

    @classmethod
    def get_all_live(cls, timestamp: Any, **options: Unpack[LiveQueryKwargs]) -> pd.DataFrame:
        """Every row present at ``timestamp``: ``T().live_query(timestamp, **options)``."""
        return cls().live_query(timestamp, **options)


def _unpickle(
    client: Any, version: int, is_view: bool, table: str, merge: bool, filters: dict[str, Any]
) -> TableFilter:
    """A pickled filter object again, from its client's filter class (see ``TableFilter.__reduce__``)."""
    cls = client.filter_class(table, version, view=is_view, merge_reference=merge)
    return cls(**filters)


def _unknown(cls: type[TableFilter], bad: list[str]) -> UnknownColumnError:
    names = list(cls._fields)
    parts = []
    for k in bad:
        close = difflib.get_close_matches(k, names, n=3, cutoff=0.6)
        hint = ""
        if k.endswith("_position") and f"{k}_bbox" in cls._fields:
            hint = f"; positions are filtered with a box: {k}_bbox=[[x0, y0, z0], [x1, y1, z1]]"
        elif close:
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)"
        parts.append(f"{k!r}{hint}")
    return UnknownColumnError(
        f"{cls.table_name}: no column {', '.join(parts)}. Filterable columns: {', '.join(names)}",
        table=cls.table_name,
        column=bad[0],
    )


#: generated classes by ``(spec, target)``, shared by every client of the process (building one
#: costs about a millisecond; a client binds its own subclass)
_BASES: dict[tuple[TableSpec, TableSpec | None], type[TableFilter]] = {}
_BASES_LOCK = threading.Lock()
_BASES_MAX = 2048


def make_filter_class(
    spec: TableSpec, target: TableSpec | None, client: Any, version: int
) -> type[TableFilter]:
    """The filter class of one table (merged with ``target`` for a reference table), bound to
    ``client`` (which builds and runs its queries: ``build_query``, ``execute``, ``explain``)
    and to the version whose schemas ``spec`` comes from."""
    key = (spec, target)
    try:
        with _BASES_LOCK:
            base = _BASES.get(key)
    except TypeError:  # a spec that cannot be hashed: no sharing
        key, base = None, None
    if base is None:
        base = _build_filter_class(spec, target)
        if key is not None:
            with _BASES_LOCK:
                if len(_BASES) >= _BASES_MAX:
                    _BASES.clear()
                base = _BASES.setdefault(key, base)
    cls = type(
        spec.name,
        (base,),
        {
            "_client": client,
            "_version": version,
            # this client's own specs: the base is shared by specs that compare equal, and a
            # spec's metadata takes no part in that (TableSpec.metadata is eq=False)
            "_spec": spec,
            "_target": target,
            "__doc__": base.__doc__,
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
        },
    )
    return cls


#: the methods of a filter class that take query options: (options, leading positional parameter)
_OPTION_METHODS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "query": (_options.QUERY_OPTIONS, None),
    "live_query": (_options.LIVE_OPTIONS, "timestamp"),
    "explain": (_options.QUERY_OPTIONS, None),
    "to_query": (_options.QUERY_OPTIONS, None),
}


def _method_signature(name: str, first: str = "self") -> inspect.Signature:
    names, lead = _OPTION_METHODS[name]
    params = [inspect.Parameter(first, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if lead:
        params.append(inspect.Parameter(lead, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="Any"))
    returns = {"explain": "str", "to_query": "Query"}.get(name, "pd.DataFrame")
    return _options.signature(names, lead=params, returns=returns)


def _method_doc(name: str) -> str:
    names, lead = _OPTION_METHODS[name]
    head = inspect.cleandoc(getattr(TableFilter, name).__doc__ or "").split("\n\nParameters\n", 1)[0]
    extra = (
        'timestamp : the moment (timezone-aware datetime, ISO string with an offset, or ``"now"``).'
        if lead
        else ""
    )
    return head + "\n\n" + _options.docs(names, lead=extra)


for _name in _OPTION_METHODS:  # help(TableFilter.query) shows every option, from its one definition
    _fn = getattr(TableFilter, _name)
    _fn.__doc__ = _method_doc(_name)
    _fn.__signature__ = _method_signature(_name)  # type: ignore[attr-defined]


def _build_filter_class(spec: TableSpec, target: TableSpec | None) -> type[TableFilter]:
    flds = table_fields(spec, target)
    body = {
        f.attr: attrs.field(
            default=None, kw_only=True, alias=f.attr, type=_type_text(f), repr=False, metadata={_FIELD: f}
        )
        for f in flds
    }
    cls = attrs.make_class(
        spec.name, body, bases=(TableFilter,), frozen=True, eq=True, repr=False, slots=False
    )
    by_attr = {f.attr: f for f in flds}
    originals = {f.original: f.attr for f in flds if f.original != f.attr}
    cls._spec = spec
    cls._target = target
    cls._fields = by_attr
    cls._layout = layout(spec, target)
    cls._client = None
    cls.table_name = spec.name
    cls.fields = tuple(f.attr for f in flds)
    cls.numeric_fields = tuple(f.attr for f in flds if f.numeric)
    cls.spatial_fields = tuple(f.attr for f in flds if f.bbox)
    cls.__doc__ = _doc(spec, target, flds)
    cls.__module__ = "tablekit.tables"
    cls.__qualname__ = spec.name

    generated = cls.__init__

    @functools.wraps(generated)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if args:
            raise UnknownArgumentError(
                f"{spec.name}() takes filters as keyword arguments only, got {len(args)} positional; "
                f"e.g. {spec.name}({flds[0].attr}=...)"
            )
        for k in [k for k in kwargs if k in originals and k not in by_attr]:
            kwargs[originals[k]] = kwargs.pop(k)
        bad = [k for k in kwargs if k not in by_attr]
        if bad:
            raise _unknown(cls, bad)
        generated(self, **kwargs)

    __init__.__signature__ = inspect.signature(generated)  # type: ignore[attr-defined]
    cls.__init__ = __init__
    columns = "\n\nColumns of " + spec.name + ":\n" + cls.__doc__.split("Columns:\n", 1)[-1]
    for name in ("query", "live_query", "explain"):
        base = getattr(TableFilter, name)

        def method(self: Any, *args: Any, _base: Any = base, **kwargs: Any) -> Any:
            return _base(self, *args, **kwargs)

        functools.update_wrapper(method, base)
        method.__doc__ = (base.__doc__ or "") + columns
        method.__qualname__ = f"{spec.name}.{name}"
        method.__signature__ = base.__signature__  # type: ignore[attr-defined]
        setattr(cls, name, method)
    return cls


def check_flags(table: str, **flags: Any) -> None:
    """Options that are True or False must be given as such: ``complete=None`` would otherwise
    read as False and return a first page only."""
    for name, v in flags.items():
        if not (isinstance(v, bool) or type(v).__name__ == "bool_"):  # numpy's bools too
            raise QueryError(
                f"{table}: {name} must be True or False, got {_values.short(v)} ({type(v).__name__})"
            )


def no_live_timestamp(table: str, instead: str) -> VersionError:
    """The error for a live query given no moment (it would otherwise be a materialized query)."""
    return VersionError(
        f"{table}: a live query needs a timestamp, got None. Pass a timezone-aware datetime, an ISO string "
        f"with an offset, or 'now'; for the client's materialization version use {instead}"
    )
