"""The backend-neutral query form.

Every way of asking a question — the DSL (``tables.T(...).query()``), the classic dict API
(``query_table``, ``synapse_query``, ``query_view``), live queries — builds one :class:`Query`.
Backends see nothing else. Query and Predicate are frozen and hashable; this module imports no
backend.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any, Literal

import attrs

from .options import OutputOptions

if TYPE_CHECKING:
    from .layout import Layout

__all__ = ["CAVE_FILTER_DICTS", "OPS", "Join", "Op", "Predicate", "Query", "jsonable"]

#: CAVE's filter-dict body keys (in CAVEclient's order) → the tablekit operator each one carries
CAVE_FILTER_DICTS: dict[str, str] = {
    "filter_in_dict": "in",
    "filter_notin_dict": "not in",
    "filter_equal_dict": "==",
    "filter_greater_dict": ">",
    "filter_less_dict": "<",
    "filter_greater_equal_dict": ">=",
    "filter_less_equal_dict": "<=",
    "filter_spatial_dict": "bbox",
    "filter_regex_dict": "regex",
}

Op = Literal["==", "!=", "in", "not in", "<", "<=", ">", ">=", "regex", "bbox", "!=column"]
OPS: tuple[str, ...] = ("==", "!=", "in", "not in", "<", "<=", ">", ">=", "regex", "bbox", "!=column")


@attrs.frozen
class Predicate:
    """One condition on one stored column of one table.

    ``table`` is the table (or view) that owns the column, ``column`` its stored name
    (``pt_root_id``; for ``bbox`` the position column ``pt_position``). ``value`` is a scalar for
    comparisons and ``regex``, a tuple for ``in``/``not in`` and ``((x0, y0, z0), (x1, y1, z1))``
    for ``bbox`` (voxel units of the table, faces included), and for ``!=column`` the name of
    another column of the same table (rows where the two differ, NULLs kept: used by
    ``synapse_query(remove_autapses=True)``). Values are already validated and
    normalised to plain Python ints/floats/strs/bools or aware UTC datetimes.
    """

    table: str
    column: str
    op: Op
    value: Any

    @property
    def matches_nothing(self) -> bool:
        """``col in []`` — the query has no rows and needs no request."""
        return self.op == "in" and len(self.value) == 0


@attrs.frozen
class Join:
    """A reference table joined to its target: ``ref.target_id = target.id``.

    Result columns of the target keep their names; the reference table's columns that clash
    get ``suffix`` (``id_ref``, ``created_ref``, ``valid_ref``).
    """

    ref_table: str
    target_table: str
    ref_column: str = "target_id"
    target_column: str = "id"
    suffix: str = "_ref"


@attrs.frozen
class Query:
    """A complete, validated question for a backend.

    ``table`` is the queried table or view. For a reference table merged with its target,
    ``join`` is set and ``table`` is the reference table. Rows are always returned in the order
    of the queried table's ``id`` (``id_ref`` for a merged reference table), so that
    ``offset``/``limit`` pages are stable.

    Build one with ``client.tables.T(...).to_query(**options)`` (or
    :meth:`tablekit.Client.build_query`) and run it with :meth:`tablekit.Client.execute`.

    Exactly one of ``version`` (materialized) and ``timestamp`` (live) is set once the client has
    resolved defaults. ``select_columns`` are result column names (positions by their unsplit
    name, e.g. ``pt_position``); ``None`` means all.
    """

    datastack: str
    table: str
    kind: Literal["table", "view"] = "table"
    join: Join | None = None
    predicates: tuple[Predicate, ...] = ()
    select_columns: tuple[str, ...] | None = None
    offset: int = 0
    limit: int | None = None
    version: int | None = None
    timestamp: _dt.datetime | None = None
    desired_resolution: tuple[float, float, float] | None = None
    count: bool = False
    random_sample: int | None = None
    #: set when an expired version was answered as a live query at its timestamp (provenance only)
    substituted_version: int | None = None
    #: a result cut at a server's row limit is completed by paging (True) or returned as its first
    #: page with a warning (False); the local engine never cuts results
    complete: bool = True
    #: live queries: annotations whose supervoxel lookup is still pending are left out (True) or
    #: refused (False). The client applies it to every backend's rows; an HTTP backend also sends
    #: it to the server, which otherwise refuses such a query (protocol §5.3)
    allow_missing_lookups: bool = False
    #: how the answer is returned (pandas or Arrow, split positions, provenance); backends ignore it
    output: OutputOptions = attrs.field(factory=OutputOptions)
    #: the materialization version whose table specs the question was validated against (for a
    #: live query, the version its filter class was built for)
    schema_version: int | None = None
    #: the result layout, derived once by the client from the specs it validated the question
    #: against (:func:`tablekit.query.layout.query_layout`); not part of the question's identity.
    #: A backend uses it when it fits its own specs (:func:`~tablekit.query.layout.layout_for`)
    layout: Layout | None = attrs.field(default=None, eq=False, repr=False)
    #: what building the question changed and its asker should know (e.g. root ids a live query
    #: dropped from a filter because they are not valid at its moment); :meth:`Client.build_query`
    #: also issues them as warnings unless told not to (``warn=False``, for tools that report them)
    notes: tuple[str, ...] = attrs.field(default=(), eq=False, repr=False)

    @property
    def live(self) -> bool:
        return self.timestamp is not None

    @property
    def matches_nothing(self) -> bool:
        return any(p.matches_nothing for p in self.predicates)

    @property
    def tables(self) -> tuple[str, ...]:
        """Tables involved, the queried one first."""
        return (self.table,) if self.join is None else (self.join.ref_table, self.join.target_table)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (for ``df.attrs`` and ``explain()``)."""
        return {
            "datastack": self.datastack,
            "table": self.table,
            "kind": self.kind,
            "join": None if self.join is None else attrs.asdict(self.join),
            "filters": [
                {"table": p.table, "column": p.column, "op": p.op, "value": jsonable(p.value)}
                for p in self.predicates
            ],
            "select_columns": None if self.select_columns is None else list(self.select_columns),
            "offset": self.offset,
            "limit": self.limit,
            "materialization_version": self.version,
            "timestamp": None if self.timestamp is None else self.timestamp.isoformat(),
            "desired_resolution": None if self.desired_resolution is None else list(self.desired_resolution),
            "count": self.count,
            "random_sample": self.random_sample,
            "substituted_version": self.substituted_version,
            "complete": self.complete,
            "allow_missing_lookups": self.allow_missing_lookups,
        }


def jsonable(v: Any) -> Any:
    """Tuples → lists, datetimes → ISO strings (values of predicates and engine parameters)."""
    if isinstance(v, (tuple, list)):
        return [jsonable(x) for x in v]
    if isinstance(v, _dt.datetime):
        return v.isoformat()
    return v
