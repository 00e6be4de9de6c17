"""Query → DuckDB SQL with bound parameters. Pure: no I/O, no DuckDB import.

:func:`compile_query` turns a :class:`~tablekit.query.Query` into one ``SELECT`` statement. Every
value (filter values, file lists, timestamps, limits, scale factors) is a numbered parameter
(``$1``, ``$2`` …); every identifier is checked against the :class:`~tablekit.schema.TableSpec`
and double-quoted. Membership lists (``in`` / ``not in`` with two or more values) are not
parameters but :class:`ValueList` s: the backend registers each as a one-column Arrow table
(column ``v``) under the name the SQL uses. Binding a 100 000-element list as a DuckDB list
parameter costs about 1.4 µs per element in the Python client; an Arrow table costs almost
nothing, and the semi-join over it is what DuckDB runs either way.

Semantics (the local engine's contract):

* ``==``, ``in`` and the ranges never match NULL; on float columns they never match NaN either
  (DuckDB, like PostgreSQL, orders NaN above every number; tablekit treats NaN like a missing
  value, as pandas and NumPy do).
* ``!=`` and ``not in`` keep NULL (and NaN) rows: ``col IS DISTINCT FROM v``,
  ``col IS NULL OR col NOT IN (…)``. Excluding one value must not make unrelated rows vanish.
* ``in ()`` matches nothing (``FALSE``: DuckDB answers without reading row data).
* ``!=column`` (value: another column of the same table) keeps rows where the two differ or either
  is NULL (``synapse_query(remove_autapses=True)``).
* ``regex`` is ``regexp_matches(col, pattern)``: RE2 syntax, unanchored, case-sensitive
  (PostgreSQL ``~``).
* ``bbox`` on ``P_position`` is ``P_position_x BETWEEN x0 AND x1 AND …`` (faces included), in the
  table's voxel units; ``desired_resolution`` does not apply to it.
* Rows come in the order of the queried table's ``id`` (a reference table's ``id`` in a join; all
  columns for a view without ``id``); ``LIMIT``/``OFFSET`` apply after that order.
* ``random_sample=n`` keeps the ``n`` matching rows with the smallest ``hash(id)`` (the whole row
  for a view without ``id``): deterministic whatever the thread count, exactly ``min(n, matches)``
  rows, then ordered and paged like any result.
* ``count=True`` returns one row ``count`` (BIGINT): the number of rows the query returns
  without ``offset``/``limit``.
* Live queries return the table at ``T``: rows with ``created <= T``, ``deleted`` null or
  ``> T`` and ``valid``; each bound point's root id is the root of its supervoxel at ``T``
  (supervoxel ``0`` → root ``0``, null → null). Two sources give exactly that:

  - :class:`Live` rebuilds it from the whole annotation history. A root-id ``==``/``in`` filter is
    first turned into the supervoxel set of those roots at ``T`` and applied to the annotation scan.
  - :class:`LiveFromSnapshot` starts from the snapshot of a version ``V <= T`` and applies what
    changed in ``(V, T]`` (a CAVE server's live query, but exact): the snapshot's rows minus the
    ids deleted in ``(V, T]``, plus the annotations created in ``(V, T]`` and present at ``T``. A
    supervoxel's root at ``T`` differs from its root at ``V`` only if its history row valid at
    ``T`` started after ``V`` (the *changed* supervoxels, as many as the edits touched): snapshot
    rows keep their root ids except there; new rows look theirs up in the history at ``T``. A
    root-id ``==``/``in`` filter selects the snapshot rows whose root at ``V`` is one of the ids,
    or the root at ``V`` of a changed supervoxel that now belongs to one of them; the filter on
    the mapped root ids stays as the exact check.
"""

from __future__ import annotations

import datetime as _dt
import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ...errors import FilterValueError, OperatorError, QueryError, UnknownColumnError
from ...query import Predicate, Query
from ...query.layout import layout_for
from ...schema import ColumnKind, ColumnRole, ColumnSpec, TableSpec

__all__ = [
    "HISTORY",
    "CompiledSQL",
    "Files",
    "Live",
    "LiveFromSnapshot",
    "Source",
    "ValueList",
    "View",
    "compile_query",
    "describe_view",
    "quote",
]

#: name of the CTE holding the supervoxel → root map at the query timestamp (live queries)
HISTORY = "__tk_history"
_KEY = "__tk_key"


# --------------------------------------------------------------------------- sources


def _paths(v: Iterable[str]) -> tuple[str, ...]:
    return tuple(v)


def _relation(v: tuple[str, str] | None) -> tuple[str, str] | None:
    return None if v is None else (str(v[0]), str(v[1]))


@attrs.frozen
class Files:
    """A table stored as Parquet files: ``read_parquet($n)`` with the path list bound — or, when
    ``relation`` (catalog, table) is set, the backend's native DuckDB copy of exactly those files."""

    paths: tuple[str, ...] = attrs.field(converter=_paths)
    relation: tuple[str, str] | None = attrs.field(default=None, converter=_relation)
    #: the relation's rows are ordered by ``(clustered_by, id)``: the rows matching one value of
    #: that column are contiguous and already in id order
    clustered_by: str | None = None


@attrs.frozen
class Live:
    """A table at the query timestamp, derived from its annotation history and the segmentation
    history (each optionally through a native copy, as for :class:`Files`)."""

    annotations: tuple[str, ...] = attrs.field(converter=_paths)
    history: tuple[str, ...] = attrs.field(converter=_paths)
    annotations_relation: tuple[str, str] | None = attrs.field(default=None, converter=_relation)
    history_relation: tuple[str, str] | None = attrs.field(default=None, converter=_relation)


@attrs.frozen
class LiveFromSnapshot:
    """A table at the query timestamp ``T`` from the snapshot of a version ``V <= T`` (taken at
    ``version_time``) plus what changed in ``(V, T]``, read from the annotation history and the
    segmentation history.

    ``deletions`` and ``changes`` hold the same rows as ``annotations`` and ``history`` (the SQL
    reads only ``id, deleted`` and ``supervoxel_id, root_id, valid_from, valid_to`` from them),
    optionally as native copies ordered by ``deleted`` and ``valid_from``, so that the ``(V, T]``
    ranges read little more than their own rows; None reads ``annotations`` / ``history``.
    """

    snapshot: Files
    version_time: _dt.datetime
    annotations: Files
    history: Files
    deletions: Files | None = None
    changes: Files | None = None


def _scan(paths: Iterable[str], relation: tuple[str, str] | None, params: _Params) -> str:
    """What to read a stored table from: its native copy if there is one, else its Parquet files."""
    if relation is not None:
        return f"{quote(relation[0])}.{quote(relation[1])}"
    return f"read_parquet({params(list(paths))})"


def _files_scan(f: Files, params: _Params) -> str:
    return _scan(f.paths, f.relation, params)


Stored = Files | Live | LiveFromSnapshot


def _tables(v: Mapping[str, Stored]) -> dict[str, Stored]:
    return dict(v)


@attrs.frozen
class View:
    """A view: its ``SELECT`` over the tables it names, each a :class:`Files`, :class:`Live` or
    :class:`LiveFromSnapshot`."""

    sql: str
    tables: dict[str, Stored] = attrs.field(converter=_tables, hash=False)


Source = Files | Live | LiveFromSnapshot | View


@attrs.frozen
class ValueList:
    """A membership list, registered by the backend as an Arrow table ``name(v)``."""

    name: str
    kind: ColumnKind
    values: tuple[Any, ...]


@attrs.frozen
class CompiledSQL:
    """A compiled query: run ``sql`` with ``params`` after registering ``value_lists``."""

    sql: str
    params: list[Any]
    value_lists: tuple[ValueList, ...]
    columns: tuple[str, ...]  # physical result column names, in order
    resolution: tuple[float, float, float] | None  # of the returned positions; None if none returned


# --------------------------------------------------------------------------- helpers


def quote(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


class _Params:
    """Numbered parameters; equal values of the same type share a number."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.lists: list[ValueList] = []
        self.names = 0

    def name(self, what: str) -> str:
        """A fresh CTE name for this statement."""
        self.names += 1
        return f"__tk_{what}_{self.names}"

    def __call__(self, value: Any) -> str:
        for i, v in enumerate(self.values):
            if type(v) is type(value) and v == value:
                return f"${i + 1}"
        self.values.append(value)
        return f"${len(self.values)}"

    def value_list(self, kind: ColumnKind, values: tuple[Any, ...]) -> str:
        for vl in self.lists:
            if vl.kind is kind and (vl.values is values or vl.values == values):
                break
        else:
            vl = ValueList(f"__tk_values_{len(self.lists)}", kind, values)
            self.lists.append(vl)
        return f"(SELECT {quote('v')} FROM {quote(vl.name)})"


def _point_column(col: ColumnSpec, what: str) -> str:
    prefix = col.point or ""
    return f"{prefix}_{what}" if prefix else what


def _unknown_column(spec: TableSpec, column: str, what: str) -> UnknownColumnError:
    close = difflib.get_close_matches(column, spec.column_names, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    return UnknownColumnError(
        f"{spec.name}: {what} names column {column!r}, which the table does not have.{hint} "
        f"Columns: {', '.join(spec.column_names)}",
        table=spec.name,
        column=column,
    )


def _spec(specs: Mapping[str, TableSpec], name: str) -> TableSpec:
    try:
        return specs[name]
    except KeyError:
        raise QueryError(
            f"no table spec for {name!r}; the backend must pass every table of the query"
        ) from None


# --------------------------------------------------------------------------- predicates


def _predicate(p: Predicate, spec: TableSpec, alias: str, params: _Params) -> str | None:
    """SQL for one predicate on ``alias``; None when it is always true (``not in ()``)."""
    if not spec.has_column(p.column):
        raise _unknown_column(spec, p.column, "a filter")
    col = spec.column(p.column)
    where = f"{spec.name}.{p.column}"
    if p.op == "bbox":
        if col.kind is not ColumnKind.POSITION:
            raise OperatorError(
                f"{where}: 'bbox' needs a position column, {p.column!r} is {col.kind.value}",
                table=spec.name,
                column=p.column,
            )
        try:
            lo, hi = p.value
            lo, hi = tuple(lo), tuple(hi)
            if len(lo) != 3 or len(hi) != 3:
                raise ValueError
        except (TypeError, ValueError):
            raise FilterValueError(
                f"{where}: a bbox is ((x0, y0, z0), (x1, y1, z1)), got {p.value!r}",
                table=spec.name,
                column=p.column,
            ) from None
        return " AND ".join(
            f"{alias}.{quote(n)} BETWEEN {params(lo[i])} AND {params(hi[i])}"
            for i, n in enumerate(col.split_names)
        )
    if col.kind is ColumnKind.POSITION:
        raise OperatorError(
            f"{where}: a position column only takes 'bbox', got {p.op!r}", table=spec.name, column=p.column
        )
    e = f"{alias}.{quote(col.name)}"
    op = p.op
    if op == "!=column":  # the two columns differ; a NULL on either side keeps the row
        other = p.value
        if not isinstance(other, str) or not spec.has_column(other):
            raise _unknown_column(spec, str(other), f"'!=column' on {p.column!r}")
        if spec.column(other).kind is ColumnKind.POSITION:
            raise OperatorError(
                f"{where}: '!=column' cannot compare with a position", table=spec.name, column=other
            )
        o = f"{alias}.{quote(other)}"
        return f"({e} IS NULL OR {o} IS NULL OR {e} <> {o})"
    if op in ("in", "not in"):
        values = tuple(p.value)
        if not values:
            return "FALSE" if op == "in" else None
        if len(values) == 1:
            op, value = ("==" if op == "in" else "!="), values[0]
        else:
            sub = params.value_list(col.kind, values)
            return f"{e} IN {sub}" if op == "in" else f"({e} IS NULL OR {e} NOT IN {sub})"
    else:
        value = p.value
    if op == "==":
        return f"{e} = {params(value)}"
    if op == "!=":
        return f"{e} IS DISTINCT FROM {params(value)}"
    if op in ("<", "<="):
        return f"{e} {op} {params(value)}"
    if op in (">", ">="):
        if col.kind is ColumnKind.FLOAT:  # DuckDB sorts NaN above +inf; tablekit never matches it
            return f"({e} {op} {params(value)} AND NOT isnan({e}))"
        return f"{e} {op} {params(value)}"
    if op == "regex":
        if col.kind is not ColumnKind.STRING:
            raise OperatorError(
                f"{where}: 'regex' needs a string column, {p.column!r} is {col.kind.value}",
                table=spec.name,
                column=p.column,
            )
        return f"regexp_matches({e}, {params(value)})"
    raise OperatorError(f"{where}: unknown operator {p.op!r}", table=spec.name, column=p.column)


def _root_filter(p: Predicate, spec: TableSpec) -> tuple[str, str, tuple[Any, ...]] | None:
    """``(root column, its supervoxel column, ids)`` of a live-pushable ``P_root_id ==/in ids``."""
    if p.op not in ("==", "in") or not spec.has_column(p.column):
        return None
    col = spec.column(p.column)
    if col.role is not ColumnRole.ROOT_ID:
        return None
    sv = _point_column(col, "supervoxel_id")
    if not spec.has_column(sv):
        return None
    values = (p.value,) if p.op == "==" else tuple(p.value)
    if not values:
        return None
    return col.name, sv, values


def _ids_cond(expr: str, values: tuple[Any, ...], params: _Params) -> str:
    """``expr`` is one of ``values`` (a root-id list: one parameter, or a registered value list)."""
    if len(values) == 1:
        return f"{expr} = {params(values[0])}"
    return f"{expr} IN {params.value_list(ColumnKind.INT, values)}"


def _root_pushdown(p: Predicate, spec: TableSpec, params: _Params) -> str | None:
    """Live queries: ``P_root_id ==/in S`` → ``P_supervoxel_id`` in the supervoxels of S at T (alias ``a``)."""
    f = _root_filter(p, spec)
    if f is None:
        return None
    _, sv, values = f
    cond = _ids_cond(quote("root_id"), values, params)
    sql = f"a.{quote(sv)} IN (SELECT {quote('supervoxel_id')} FROM {quote(HISTORY)} WHERE {cond})"
    if 0 in values:
        sql = f"({sql} OR a.{quote(sv)} = 0)"
    return sql


# --------------------------------------------------------------------------- sources


def _live_table(spec: TableSpec, src: Live, t: _dt.datetime, params: _Params, pushdown: Iterable[str]) -> str:
    """A ``SELECT`` giving the snapshot layout of ``spec`` at ``t`` from the annotation history."""
    cols: list[str] = []
    joins: list[str] = []
    for c in spec.columns:
        if c.kind is ColumnKind.POSITION:
            cols.extend(f"a.{quote(n)}" for n in c.split_names)
        elif c.role is ColumnRole.ROOT_ID:
            sv = quote(_point_column(c, "supervoxel_id"))
            h = f"h{len(joins)}"
            joins.append(f"LEFT JOIN {quote(HISTORY)} AS {h} ON {h}.{quote('supervoxel_id')} = a.{sv}")
            cols.append(f"CASE WHEN a.{sv} = 0 THEN 0 ELSE {h}.{quote('root_id')} END AS {quote(c.name)}")
        else:
            cols.append(f"a.{quote(c.name)}")
    ts = params(t)
    where = [
        f"a.{quote('created')} <= {ts}",
        f"(a.{quote('deleted')} IS NULL OR a.{quote('deleted')} > {ts})",
        f"a.{quote('valid')}",
        *pushdown,
    ]
    return (
        f"SELECT {', '.join(cols)} FROM {_scan(src.annotations, src.annotations_relation, params)} AS a"
        + "".join(" " + j for j in joins)
        + " WHERE "
        + " AND ".join(where)
    )


def _history_cte(history: Files, t: _dt.datetime, params: _Params, inline: bool = False) -> str:
    """The supervoxel → root map at ``t``. ``inline``: never materialize it (the snapshot-based
    plan reads it only through filters that select few of its rows)."""
    ts = params(t)
    mode = " NOT MATERIALIZED" if inline else ""
    return (
        f"{quote(HISTORY)} AS{mode} (SELECT {quote('supervoxel_id')}, {quote('root_id')} "
        f"FROM {_files_scan(history, params)} "
        f"WHERE {quote('valid_from')} <= {ts} AND ({quote('valid_to')} IS NULL OR {quote('valid_to')} > {ts}))"
    )


def _snapshot_names(spec: TableSpec) -> list[str]:
    """The snapshot layout: every stored column, positions split."""
    out: list[str] = []
    for c in spec.columns:
        out.extend(c.split_names if c.kind is ColumnKind.POSITION else (c.name,))
    return out


def _sv_list(cte: str, svs: Sequence[str]) -> str:
    """The supervoxels of the rows of ``cte`` (all its bound points) as one aggregated list, unnested.

    Aggregating first makes DuckDB see one small side (cardinality estimate 1) and build its hash
    table there, probing the large history with it, instead of the other way round.
    """
    lists = ", ".join(f"list({quote(sv)})" for sv in svs)
    return f"SELECT unnest(flatten([{lists}])) FROM {quote(cte)}"


def _snapshot_live(
    spec: TableSpec,
    src: LiveFromSnapshot,
    t: _dt.datetime,
    params: _Params,
    root_preds: Sequence[Predicate],
) -> tuple[list[str], str]:
    """Helper CTEs and a ``SELECT`` giving the snapshot layout of ``spec`` at ``t`` from the
    snapshot at ``src.version_time`` plus the changes since (see the module docstring).

    ``root_preds`` are the query's pushable root-id filters on this table; with one, the
    snapshot is read for candidate rows only (and both parts are materialized: they are small);
    without, the snapshot is read whole and its root ids mapped through the changed supervoxels.
    """
    if t < src.version_time:
        raise QueryError(f"{spec.name}: the snapshot is newer than the query timestamp")
    q = quote
    ts, vs = params(t), params(src.version_time)
    sv_c, root_c, id_c = q("supervoxel_id"), q("root_id"), q("id")
    names = _snapshot_names(spec)
    # root column → its supervoxel column
    root_names = {
        c.name: _point_column(c, "supervoxel_id") for c in spec.columns if c.role is ColumnRole.ROOT_ID
    }
    roots = bool(root_names)
    svs = list(root_names.values())
    snap = _files_scan(src.snapshot, params)
    changed = (
        f"SELECT {sv_c}, {root_c} FROM {_files_scan(src.changes or src.history, params)} "
        f"WHERE {q('valid_from')} > {vs} AND {q('valid_from')} <= {ts} "
        f"AND ({q('valid_to')} IS NULL OR {q('valid_to')} > {ts})"
    )
    deleted = (
        f"SELECT {id_c} FROM {_files_scan(src.deletions or src.annotations, params)} "
        f"WHERE {q('deleted')} > {vs} AND {q('deleted')} <= {ts}"
    )
    ctes: list[str] = []
    pushdown = [pd for p in root_preds if (pd := _root_pushdown(p, spec, params)) is not None]
    selective = bool(pushdown)

    # ---- annotations created in (V, T] and present at T; their roots from the history at T
    new = params.name("new")
    where = [
        f"a.{q('created')} > {vs}",
        f"a.{q('created')} <= {ts}",
        f"(a.{q('deleted')} IS NULL OR a.{q('deleted')} > {ts})",
        f"a.{q('valid')}",
        *pushdown,
    ]
    ann_cols = ", ".join(f"a.{q(n)}" for n in names if n not in root_names)
    mode = "MATERIALIZED" if selective else "NOT MATERIALIZED"
    ctes.append(
        f"{q(new)} AS {mode} (SELECT {ann_cols} FROM {_files_scan(src.annotations, params)} AS a "
        f"WHERE {' AND '.join(where)})"
    )
    new_roots = params.name("new_roots")
    if roots:
        ctes.append(
            f"{q(new_roots)} AS MATERIALIZED (SELECT {sv_c}, {root_c} FROM {q(HISTORY)} "
            f"WHERE {sv_c} IN ({_sv_list(new, svs)}))"
        )
    new_cols: list[str] = []
    new_joins: list[str] = []
    for n in names:
        if n in root_names:
            sv = q(root_names[n])
            h = f"h{len(new_joins)}"
            new_joins.append(f"LEFT JOIN {q(new_roots)} AS {h} ON {h}.{sv_c} = n.{sv}")
            new_cols.append(f"CASE WHEN n.{sv} = 0 THEN 0 ELSE {h}.{root_c} END AS {q(n)}")
        else:
            new_cols.append(f"n.{q(n)}")
    new_sql = f"SELECT {', '.join(new_cols)} FROM {q(new)} AS n" + "".join(" " + j for j in new_joins)

    # ---- the snapshot's rows minus those deleted in (V, T]; roots remapped where they changed
    remap = params.name("changed")
    snap_from = f"{snap} AS s"
    if selective:
        col, _, values = next(
            f for p in sorted(root_preds, key=lambda p: p.op != "==") if (f := _root_filter(p, spec))
        )
        # the roots at V of the changed supervoxels that belong to one of the ids at T, as a list
        old = (
            f"SELECT list(h.{root_c}) FROM {_files_scan(src.history, params)} AS h "
            f"WHERE h.{sv_c} IN (SELECT c.{sv_c} FROM ({changed}) AS c "
            f"WHERE {_ids_cond(f'c.{root_c}', values, params)}) "
            f"AND h.{q('valid_from')} <= {vs} AND h.{q('valid_to')} > {vs} "
            f"AND NOT ({_ids_cond(f'h.{root_c}', values, params)})"
        )
        base = params.name("snapshot")
        cols = ", ".join(f"s.{q(n)}" for n in names)
        ctes.append(
            f"{q(base)} AS MATERIALIZED (SELECT {cols} FROM {snap} AS s "
            f"WHERE {_ids_cond(f's.{q(col)}', values, params)} "
            f"UNION ALL SELECT {cols} FROM {snap} AS s WHERE s.{q(col)} IN (SELECT unnest(({old}))))"
        )
        ctes.append(
            f"{q(remap)} AS MATERIALIZED (SELECT c.{sv_c}, c.{root_c} FROM ({changed}) AS c "
            f"WHERE c.{sv_c} IN ({_sv_list(base, svs)}))"
        )
        snap_from = f"{q(base)} AS s"
    elif roots:
        ctes.append(f"{q(remap)} AS ({changed})")
    snap_cols: list[str] = []
    snap_joins: list[str] = []
    for n in names:
        if n in root_names:
            c = f"c{len(snap_joins)}"
            snap_joins.append(f"LEFT JOIN {q(remap)} AS {c} ON {c}.{sv_c} = s.{q(root_names[n])}")
            snap_cols.append(f"CASE WHEN {c}.{sv_c} IS NULL THEN s.{q(n)} ELSE {c}.{root_c} END AS {q(n)}")
        else:
            snap_cols.append(f"s.{q(n)}")
    snap_sql = (
        f"SELECT {', '.join(snap_cols)} FROM {snap_from}"
        + "".join(" " + j for j in snap_joins)
        + f" WHERE s.{id_c} NOT IN ({deleted})"
    )
    return ctes, f"{snap_sql} UNION ALL {new_sql}"


def _table_source(
    name: str,
    spec: TableSpec | None,
    src: Stored,
    query: Query,
    params: _Params,
    root_preds: Sequence[Predicate],
    ctes: list[str],
) -> str:
    """SQL text usable after ``FROM`` (without alias) for a stored table; helper CTEs go to ``ctes``."""
    if isinstance(src, Files):
        return _files_scan(src, params)
    if isinstance(src, (Live, LiveFromSnapshot)):
        if query.timestamp is None or spec is None:
            raise QueryError(f"{name}: a live source needs a timestamp and a table spec")
        if isinstance(src, Live):
            pushdown = [pd for p in root_preds if (pd := _root_pushdown(p, spec, params)) is not None]
            return f"({_live_table(spec, src, query.timestamp, params, pushdown)})"
        helpers, body = _snapshot_live(spec, src, query.timestamp, params, root_preds)
        ctes.extend(helpers)
        return f"({body})"
    raise QueryError(f"{name}: unsupported source {src!r}")


def _stored(src: Source | None) -> list[Stored]:
    if isinstance(src, View):
        return list(src.tables.values())
    return [] if src is None else [src]


def _history_of(srcs: Iterable[Source | None]) -> tuple[Files | None, bool]:
    """The segmentation history the live sources read, and whether every one is snapshot-based."""
    history: Files | None = None
    inline = True
    for src in srcs:
        for s in _stored(src):
            if isinstance(s, Live):
                history = history or Files(s.history, s.history_relation)
                inline = False
            elif isinstance(s, LiveFromSnapshot):
                history = history or s.history
    return history, inline


def _view_sql(src: View) -> str:
    return src.sql.strip().rstrip(";").strip()


def _view_ctes(
    src: View, specs: Mapping[str, TableSpec], timestamp: _dt.datetime | None, params: _Params
) -> list[str]:
    """One CTE per table the view reads, named after the table (shadowing nothing else), after
    the helper CTEs of the snapshot-based ones."""
    ctes = []
    for name, tsrc in src.tables.items():
        if isinstance(tsrc, Files):
            body = f"SELECT * FROM {_files_scan(tsrc, params)}"
        else:
            if timestamp is None:
                raise QueryError(f"{name}: a live source needs a timestamp")
            if isinstance(tsrc, Live):
                body = _live_table(_spec(specs, name), tsrc, timestamp, params, ())
            else:
                helpers, body = _snapshot_live(_spec(specs, name), tsrc, timestamp, params, ())
                ctes.extend(helpers)
        ctes.append(f"{quote(name)} AS NOT MATERIALIZED ({body})")
    return ctes


def describe_view(
    src: View, specs: Mapping[str, TableSpec], timestamp: _dt.datetime | None = None
) -> tuple[str, list[Any]]:
    """``DESCRIBE`` of a view's ``SELECT`` over its tables (snapshots, or live at ``timestamp``)."""
    params = _Params()
    ctes = []
    history, inline = _history_of([src])
    if history is not None:
        if timestamp is None:
            raise QueryError("a live view needs a timestamp")
        ctes.append(_history_cte(history, timestamp, params, inline))
    ctes.extend(_view_ctes(src, specs, timestamp, params))
    with_sql = f"WITH {', '.join(ctes)} " if ctes else ""
    return f"DESCRIBE {with_sql}SELECT * FROM ({_view_sql(src)}) AS t0", params.values


# --------------------------------------------------------------------------- compile


def compile_query(query: Query, specs: Mapping[str, TableSpec], sources: Mapping[str, Source]) -> CompiledSQL:
    """Compile ``query`` to one DuckDB ``SELECT``.

    ``specs`` holds the TableSpec of every table of the query (and of the view for a view query,
    and of every table a live view reads); ``sources`` says where each table's rows come from:
    :class:`Files` (a snapshot), :class:`Live` (annotation + segmentation history, needs
    ``query.timestamp``), :class:`LiveFromSnapshot` (a snapshot at or before ``query.timestamp``
    plus both histories) or, for a view, :class:`View`. The result columns are ``query.layout``
    (derived by the client from these specs), or derived from ``specs`` for a hand-made query.
    """
    params = _Params()
    lay = layout_for(query, specs)
    outs = lay.selected
    if query.offset is None or query.offset < 0:
        raise QueryError(f"{query.table}: offset must be >= 0, got {query.offset!r}")
    if query.limit is not None and query.limit < 0:
        raise QueryError(f"{query.table}: limit must be >= 0 or None, got {query.limit!r}")
    if query.random_sample is not None and query.random_sample < 0:
        raise QueryError(f"{query.table}: random_sample must be >= 0, got {query.random_sample!r}")

    aliases = (
        {query.table: "t0"}
        if query.join is None
        else {query.join.ref_table: "t0", query.join.target_table: "t1"}
    )
    assert all(o.table in aliases for o in outs), "the layout names a table the query does not"
    ctes: list[str] = []
    live = query.timestamp is not None and query.version is None

    # ---- where the rows come from
    root_preds: dict[str, list[Predicate]] = {t: [] for t in aliases}
    if live:
        for p in query.predicates:
            if p.table in specs and p.table in root_preds and not specs[p.table].is_view:
                if _root_filter(p, specs[p.table]) is not None:
                    root_preds[p.table].append(p)
    history, inline = _history_of(sources.get(t) for t in aliases)
    if live and history is not None:
        ctes.append(_history_cte(history, query.timestamp, params, inline))  # type: ignore[arg-type]

    from_items: dict[str, str] = {}
    for t in aliases:
        if t not in sources:
            raise QueryError(f"{query.table}: no source for table {t!r}")
        src = sources[t]
        if isinstance(src, View):
            ctes.extend(_view_ctes(src, specs, query.timestamp if live else None, params))
            from_items[t] = f"({_view_sql(src)})"
        else:
            from_items[t] = _table_source(t, specs.get(t), src, query, params, root_preds[t], ctes)

    if query.join is None:
        from_sql = f"{from_items[query.table]} AS t0"
    else:
        j = query.join
        r, b = _spec(specs, j.ref_table), _spec(specs, j.target_table)
        if not r.has_column(j.ref_column):
            raise _unknown_column(r, j.ref_column, "the join")
        if not b.has_column(j.target_column):
            raise _unknown_column(b, j.target_column, "the join")
        from_sql = (
            f"{from_items[j.ref_table]} AS t0 JOIN {from_items[j.target_table]} AS t1 "
            f"ON t0.{quote(j.ref_column)} = t1.{quote(j.target_column)}"
        )

    # ---- filters
    conds: list[str] = []
    for p in query.predicates:
        if p.table not in aliases:
            raise QueryError(
                f"{query.table}: a filter names table {p.table!r}, which is not part of this query "
                f"({', '.join(aliases)})"
            )
        c = _predicate(p, _spec(specs, p.table), aliases[p.table], params)
        if c is not None:
            conds.append(c)
    where_sql = f" WHERE {' AND '.join(conds)}" if conds else ""

    with_sql = f"WITH {', '.join(ctes)} " if ctes else ""
    n = query.random_sample

    if query.count:  # before the projection: its scale parameters must not be bound here
        if n is None:
            sql = f'{with_sql}SELECT count(*) AS "count" FROM {from_sql}{where_sql}'
        else:
            sql = f'{with_sql}SELECT CAST(least(count(*), {params(int(n))}) AS BIGINT) AS "count" FROM {from_sql}{where_sql}'
        return CompiledSQL(sql, params.values, tuple(params.lists), ("count",), None)

    # ---- projection and order
    proj: list[str] = []
    for o in outs:
        is_view = specs[o.table].is_view
        if o.column.kind is ColumnKind.POSITION:
            for axis, (src_name, out_name) in enumerate(zip(o.column.split_names, o.names, strict=True)):
                e = f"{aliases[o.table]}.{quote(src_name)}"
                if o.scale is not None:
                    e = f"CAST({e} AS DOUBLE) * {params(float(o.scale[axis]))}"
                proj.append(f"{e} AS {quote(out_name)}")
        else:
            e = f"{aliases[o.table]}.{quote(o.column.name)}"
            if is_view:
                e = _view_cast(e, o.column)
            proj.append(f"{e} AS {quote(o.name)}")
    base = _spec(specs, query.table)
    key = f"t0.{quote('id')}" if base.has_column("id") else None

    page = sample_n = ""
    if n is not None:
        sample_n = params(int(n))
    if query.limit is not None:
        page += f" LIMIT {params(int(query.limit))}"
    if query.offset:
        page += f" OFFSET {params(int(query.offset))}"
    if n is None:
        order = f" ORDER BY {key}" if key else " ORDER BY ALL"
        if key and _stored_in_id_order(query, sources, params):
            order = ""  # the scan returns them in id order (DuckDB preserves insertion order)
        sql = f"{with_sql}SELECT {', '.join(proj)} FROM {from_sql}{where_sql}{order}{page}"
    elif key:
        inner = (
            f"SELECT {', '.join(proj)}, {key} AS {quote(_KEY)} FROM {from_sql}{where_sql} "
            f"ORDER BY hash({key}), {key} LIMIT {sample_n}"
        )
        names = ", ".join(quote(x) for o in outs for x in o.names)
        sql = f"{with_sql}SELECT {names} FROM ({inner}) AS s ORDER BY s.{quote(_KEY)}{page}"
    else:
        inner = f"SELECT {', '.join(proj)} FROM {from_sql}{where_sql} ORDER BY hash(t0), t0 LIMIT {sample_n}"
        sql = f"{with_sql}SELECT * FROM ({inner}) AS s ORDER BY ALL{page}"
    return CompiledSQL(sql, params.values, tuple(params.lists), lay.physical, lay.resolution)


def _stored_in_id_order(query: Query, sources: Mapping[str, Source], params: Any) -> bool:
    """True when a plain scan already yields the answer in id order: one table read from a copy
    clustered by a column the query fixes with ``==``, filters that compile to plain conditions
    (no membership tables joined in)."""
    src = sources.get(query.table)
    if query.join is not None or not isinstance(src, Files) or src.relation is None or params.lists:
        return False
    return src.clustered_by is not None and any(
        p.table == query.table and p.column == src.clustered_by and p.op == "==" for p in query.predicates
    )


def _view_cast(e: str, col: ColumnSpec) -> str:
    """View columns come from arbitrary SQL (``sum()`` gives HUGEINT, literals DECIMAL): normalise."""
    if col.kind is ColumnKind.INT:
        return f"CAST({e} AS BIGINT)"
    if col.kind is ColumnKind.FLOAT:
        return f"CAST({e} AS DOUBLE)"
    if col.kind is ColumnKind.DATETIME:
        return f"CAST({e} AS TIMESTAMPTZ)"
    return e
