"""The result columns of a query, derived once from the resolved table specs.

A query on a table returns its columns in the schema's order; a reference table merged with its
target returns the target's columns first, then the reference table's, those that clash with the
target's renamed with a suffix (``id_ref``). :func:`layout` gives a filter class's columns;
:func:`query_layout` gives a query's :class:`Layout`: those columns with the scale of each
position (to ``desired_resolution``, or to the target's resolution in a join), the ones
``select_columns`` keeps and the resolution of the returned positions. The client derives it once
when it builds the :class:`~tablekit.query.Query` (``Query.layout``); both compilers (the local
engine's SQL, the CAVE requests) and the server read it from there and do not derive it again.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import QueryError
from ..schema import ColumnKind, ColumnSpec, TableSpec, resolution_triple

if TYPE_CHECKING:
    from ._model import Query

__all__ = ["AXES", "Layout", "ResultColumn", "check_select", "layout", "layout_for", "query_layout"]

AXES = ("x", "y", "z")
Triple = tuple[float, float, float]


@attrs.frozen
class ResultColumn:
    """A column of a query result: its name there, and where it comes from.

    ``scale`` (positions of a :class:`Layout` only): the factors from the table's voxel units to
    the answer's resolution, per axis; None keeps the stored values.
    """

    name: str
    table: str
    column: ColumnSpec
    scale: Triple | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The physical result columns (``<name>_x/_y/_z`` for a position)."""
        if self.column.kind is ColumnKind.POSITION:
            return tuple(f"{self.name}_{a}" for a in AXES)
        return (self.name,)


def layout(
    spec: TableSpec, target: TableSpec | None = None, suffix: str = "_ref"
) -> tuple[ResultColumn, ...]:
    """Result columns of a query on ``spec`` (merged with ``target`` for reference tables)."""
    if target is None:
        return tuple(ResultColumn(c.name, spec.name, c) for c in spec.columns)
    out = [ResultColumn(c.name, target.name, c) for c in target.columns]
    taken = {c.name for c in target.columns}
    for c in spec.columns:
        out.append(ResultColumn(c.name + suffix if c.name in taken else c.name, spec.name, c))
    return tuple(out)


def _basis(spec: TableSpec) -> tuple[str, tuple[ColumnSpec, ...], Triple | None]:
    return (spec.name, spec.columns, spec.voxel_resolution)


@attrs.frozen
class Layout:
    """The result of one query: every column of its table(s) (``columns``, with the scale of each
    position), those it returns (``selected``, after ``select_columns``) and the resolution of the
    returned positions (None when it returns none)."""

    columns: tuple[ResultColumn, ...]
    selected: tuple[ResultColumn, ...]
    resolution: Triple | None
    #: what the layout was derived from: the query's (table, join, select_columns,
    #: desired_resolution) and each table's (name, columns, voxel_resolution)
    basis: tuple[Any, ...] = attrs.field(repr=False)

    @property
    def physical(self) -> tuple[str, ...]:
        """The physical result columns of the answer, in order (positions split)."""
        return tuple(n for o in self.selected for n in o.names)

    @property
    def sources(self) -> dict[str, tuple[str, str, ColumnKind]]:
        """``{physical result column: (table, stored column, kind)}`` over every column."""
        return {n: (o.table, o.column.name, o.column.kind) for o in self.columns for n in o.names}

    @property
    def names(self) -> dict[tuple[str, str], str]:
        """``{(table, stored column): result name}`` over every column."""
        return {(o.table, o.column.name): o.name for o in self.columns}

    def asks(self, query: Query) -> bool:
        """Whether this layout was derived for ``query``'s table, join, selection and resolution."""
        return bool(self.basis[0] == _question(query))

    def fits(self, query: Query, specs: Mapping[str, TableSpec]) -> bool:
        """Whether this is the layout of ``query`` over ``specs`` (the specs it was derived from)."""
        return self.asks(query) and all(b[0] in specs and _basis(specs[b[0]]) == b for b in self.basis[1])


def _question(query: Query) -> tuple[Any, ...]:
    return (query.table, query.join, query.select_columns, query.desired_resolution)


def layout_for(query: Query, specs: Mapping[str, TableSpec]) -> Layout:
    """``query.layout`` when it was derived from ``specs`` (a query the client built); otherwise
    (a :class:`~tablekit.query.Query` made by hand, or validated at another version than the one a
    backend answers from) the layout derived from ``specs``."""
    lay = query.layout
    return lay if lay is not None and lay.fits(query, specs) else query_layout(query, specs)


def query_layout(query: Query, specs: Mapping[str, TableSpec]) -> Layout:
    """The :class:`Layout` of ``query``; ``specs`` holds the spec of every table it involves.

    Positions of every table are converted to ``desired_resolution``, or to the target's
    resolution in a join (CAVE's rule: the last table of the join), or stay in the table's own
    units. Raises :class:`~tablekit.errors.QueryError` for a ``desired_resolution`` that is not
    three positive numbers or that a table without a voxel resolution cannot be converted to, and
    for ``select_columns`` that name no result column.
    """
    desired = _check_desired(query)
    if query.join is None:
        spec = _spec(specs, query.table)
        used = (spec,)
        common = desired or spec.voxel_resolution
        scales = {spec.name: _scale(spec, common)}
        cols = layout(spec)
    else:
        ref = _spec(specs, query.join.ref_table)
        target = _spec(specs, query.join.target_table)
        used = (ref, target)
        common = desired or target.voxel_resolution or ref.voxel_resolution
        scales = {target.name: _scale(target, common), ref.name: _scale(ref, common)}
        cols = layout(ref, target, query.join.suffix)
    outs = tuple(
        attrs.evolve(o, scale=scales[o.table]) if o.column.kind is ColumnKind.POSITION else o for o in cols
    )
    physical = [n for o in outs for n in o.names]
    dup = sorted({n for n in physical if physical.count(n) > 1})
    if dup:
        raise QueryError(f"{query.table}: result columns {dup} would appear twice; change the join suffix")
    selected = outs
    if query.select_columns is not None:
        wanted = set(check_select(query.table, query.select_columns, outs) or ())
        selected = tuple(o for o in outs if o.name in wanted)
    has_positions = any(o.column.kind is ColumnKind.POSITION for o in selected)
    resolution = tuple(common) if has_positions and common is not None else None
    basis = (_question(query), tuple(_basis(s) for s in used))
    return Layout(outs, selected, resolution, basis)  # type: ignore[arg-type]


def check_select(table: str, select: Any, cols: tuple[ResultColumn, ...]) -> tuple[str, ...] | None:
    """Validate ``select_columns`` against the result layout (before any request)."""
    if select is None:
        return None
    if isinstance(select, str) or not hasattr(select, "__iter__") or isinstance(select, Mapping):
        raise QueryError(
            f"{table}: select_columns must be a list of column names, got {select!r}. "
            f"Pass e.g. select_columns=[{cols[0].name!r}]"
        )
    names = [c.name for c in cols]
    out = []
    for s in select:
        if s not in names:
            close = difflib.get_close_matches(str(s), names, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            if isinstance(s, str) and s[-2:] in ("_x", "_y", "_z") and s[:-2] in names:
                hint = f" Select the position {s[:-2]!r}; split_positions=True splits it."
            raise QueryError(
                f"{table}: select_columns names unknown column {s!r}.{hint} Columns: {', '.join(names)}"
            )
        out.append(s)
    if not out:
        raise QueryError(f"{table}: select_columns is empty. Pass at least one column, or None for all")
    return tuple(dict.fromkeys(out))


def _spec(specs: Mapping[str, TableSpec], name: str) -> TableSpec:
    try:
        return specs[name]
    except KeyError:
        raise QueryError(
            f"no table spec for {name!r}; the backend must pass every table of the query"
        ) from None


def _check_desired(q: Query) -> Triple | None:
    d = q.desired_resolution
    if d is None:
        return None
    out = resolution_triple(d)
    if out is None:
        raise QueryError(f"{q.table}: desired_resolution {d!r} is not three positive numbers (nm per voxel)")
    return out


def _scale(spec: TableSpec, target: Triple | None) -> Triple | None:
    """Factors from ``spec``'s voxel units to ``target`` (None: the stored values)."""
    table_res = spec.voxel_resolution
    if target is None or table_res is None or tuple(table_res) == tuple(target):
        if target is not None and table_res is None and spec.positions:
            raise QueryError(
                f"{spec.name}: the table has no voxel_resolution in its metadata, so its positions "
                f"cannot be converted to {list(target)} nm; query without desired_resolution"
            )
        return None
    return (table_res[0] / target[0], table_res[1] / target[1], table_res[2] / target[2])
