"""Queries → CAVE v3 requests. Pure: no I/O.

:func:`plan` turns a :class:`~tablekit.query.Query` (with the :class:`~tablekit.schema.TableSpec`
of every table it involves) into a :class:`Plan`; :func:`build` turns a plan into the exact HTTP
request a CAVE materialization server answers (optionally restricted to an ``id`` range, with a
``limit``, or as a ``count``). :mod:`tablekit.backends.cave.decode` reads the answers.

Endpoints (protocol notes §1.4, §1.5):

* a table: ``POST {v3}/datastack/{ds}/version/{v}/table/{t}/query``;
* a reference table merged with its target (a join): ``POST {v3}/datastack/{ds}/version/{v}/query``
  with ``tables = [[ref, "target_id"], [target, "id"]]`` and
  ``suffix_map = {ref: "_ref", target: ""}`` (as CAVEclient's tables interface);
* a view: ``POST {v3}/datastack/{ds}/version/{v}/views/{view}/query``;
* a live query (a timestamp instead of a version): ``POST {v3}/datastack/{ds}/query``.

Filter dicts are keyed by table, then column. Predicates map to them as ``==`` →
``filter_equal_dict``, ``in`` → ``filter_in_dict``, ``!=``/``not in`` → ``filter_notin_dict``,
ranges → the four inequality dicts, ``regex`` → ``filter_regex_dict``, ``bbox`` →
``filter_spatial_dict``. Two predicates of one kind on one column are combined exactly
(intersection of ``in`` lists, the tighter bound, the union of excluded values, the intersection
of boxes). Some conditions are (also) applied to the decoded rows — :class:`ClientFilter` — because
the server cannot or does not apply them: ``not in`` (ignored by every server endpoint),
``!=column`` (no wire form) and ``>``/``>=`` on float columns (PostgreSQL orders NaN above every
number; tablekit never matches NaN).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlencode

import attrs
import numpy as np
import pyarrow as pa

from ...errors import QueryError, UnsupportedError
from ...query import CAVE_FILTER_DICTS, Predicate, Query, jsonable
from ...query.layout import layout_for
from ...schema import ColumnKind, TableSpec
from ..base import ARROW_TYPES

__all__ = [
    "ARROW_CONTENT_TYPE",
    "DEFAULT_ROW_LIMIT",
    "ClientFilter",
    "Plan",
    "WireRequest",
    "build",
    "plan",
]

ARROW_CONTENT_TYPE = "data.arrow"
#: the server's QUERY_LIMIT_SIZE default (protocol §6.1)
DEFAULT_ROW_LIMIT = 200_000
JSON_HEADERS = (("Content-Type", "application/json"), ("Accept-Encoding", "zstd"))
QUERY_FLAGS = (
    ("return_pyarrow", "True"),
    ("arrow_format", "True"),
    ("split_positions", "True"),
    ("direct_sql_pandas", "True"),
)
LIVE_FLAGS = (
    ("return_pyarrow", "True"),
    ("arrow_format", "True"),
    ("merge_reference", "False"),
    ("allow_missing_lookups", "False"),
    ("allow_invalid_root_ids", "False"),
    ("direct_sql_pandas", "True"),
)
#: tablekit operator → the CAVE filter dict that carries it
_DICTS = {op: key for key, op in CAVE_FILTER_DICTS.items()}
#: body key order CAVEclient uses (bodies compare as dicts; the order only eases reading)
_DICT_ORDER = tuple(CAVE_FILTER_DICTS)


# --------------------------------------------------------------------------- plan


@attrs.frozen
class WireRequest:
    """One HTTP request to a CAVE server (without auth: the session adds it)."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...]
    body: Any = attrs.field(eq=False)
    headers: tuple[tuple[str, str], ...] = JSON_HEADERS

    @property
    def query_string(self) -> str:
        return urlencode(self.params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: method, URL, query string, params, body and headers."""
        return {
            "method": self.method,
            "url": self.url,
            "query_string": self.query_string,
            "params": dict(self.params),
            "body": self.body,
            "headers": dict(self.headers),
        }


@attrs.frozen
class ClientFilter:
    """A condition applied to decoded rows: ``column`` is a physical result column.

    ``op`` is ``"not in"`` (keep nulls; on a float column the server sent as float32 each value's
    float32 neighbour is excluded too, see :attr:`Plan.float32`), ``"!=column"`` (``value`` is the other result column;
    nulls kept), ``"not nan"`` (drops NaN and null: a real server sends NaN as null) or ``"in"``
    (``value``: the values a float column must equal, each also as its float32 neighbour).
    """

    column: str
    op: Literal["not in", "!=column", "not nan", "in"]
    value: Any = None


@attrs.frozen
class Plan:
    """Everything needed to ask a query of a CAVE server and to assemble its answer."""

    query: Query
    endpoint: Literal["table", "join", "view", "live"]
    url: str
    #: wire filter dicts without paging: {dict name: {table: {column: value}}}
    filters: Mapping[str, Mapping[str, Mapping[str, Any]]] = attrs.field(eq=False)
    client_filters: tuple[ClientFilter, ...]
    #: physical result columns of the answer, in order (after select_columns)
    columns: tuple[str, ...]
    #: physical result column → (table, stored column, kind); every column of the full layout
    sources: Mapping[str, tuple[str, str, ColumnKind]] = attrs.field(eq=False)
    #: result column that orders and pages the rows (``id``, ``id_ref``); None: a view without id
    key: str | None
    key_table: str | None
    resolution: tuple[float, float, float] | None
    matches_nothing: bool = False
    #: position columns converted to ``desired_resolution`` (floats); the others are whole numbers
    scaled: frozenset[str] = frozenset()
    #: the ``desired_resolution`` sent: one the server scales every table of the query to exactly
    #: (whole-number ratios), whatever the query asks; None when no table has positions
    wire_resolution: tuple[float, float, float] | None = None
    #: physical position column → (the server's whole-number factor per axis, the local engine's
    #: scale per axis or None): the client turns the server's numbers into the answer's
    rescale: Mapping[str, tuple[tuple[float, float, float], tuple[float, float, float] | None]] = attrs.field(
        factory=dict, eq=False
    )
    #: float columns the server sent as float32 (a real server stores them as PostgreSQL real);
    #: filled in by :func:`decode`, read by :func:`apply_client_filters`
    float32: set[str] = attrs.field(factory=set, eq=False)

    @property
    def filter_columns(self) -> tuple[str, ...]:
        """The key and the columns the client-side filters read."""
        extra = [self.key] if self.key else []
        for f in self.client_filters:
            extra.append(f.column)
            if f.op == "!=column":
                extra.append(f.value)
        return tuple(dict.fromkeys(e for e in extra if e))

    @property
    def needed(self) -> tuple[str, ...]:
        """Columns the rows must carry before :func:`finish` (answer, key, client-filter columns)."""
        return tuple(dict.fromkeys([*self.columns, *self.filter_columns]))

    def empty(self) -> pa.Table:
        """The answer with no rows, typed as the local engine types it."""
        return pa.table({c: pa.array([], type=self.arrow_type(c)) for c in self.columns})

    def arrow_type(self, column: str) -> pa.DataType:
        _t, _, kind = self.sources[column]
        if kind is ColumnKind.POSITION:
            return pa.float64() if column in self.scaled else pa.int64()
        return ARROW_TYPES[kind]


def _whole(x: float) -> bool:
    return x >= 1 and float(x).is_integer() and x < 2**15


def wire_resolution(
    query: Query, specs: Mapping[str, TableSpec]
) -> tuple[tuple[float, float, float] | None, dict[str, tuple[float, float, float]]]:
    """The ``desired_resolution`` to send and each table's factor (its voxel size over it, per axis).

    The server scales a position as ``CAST(coordinate AS INTEGER) * (voxel size / desired)`` and reads
    it as a 32-bit integer (``QueryManager.execute_query``, ``query.py`` ``dtype_map``): a fractional
    factor cuts the answer to whole numbers. tablekit asks for a resolution that every table of the
    query reaches with whole-number factors (its own voxel size when it can: factor 1, the stored
    numbers) and converts to ``desired_resolution`` itself, in float64, exactly as the local engine
    does. Each endpoint also has its own default (protocol §1.4), so one is always sent.
    """
    res = {t: specs[t].voxel_resolution for t in query.tables if t in specs and specs[t].positions}
    if not res:
        return None, {}
    if any(r is None for r in res.values()):
        d = query.desired_resolution
        return (None if d is None else tuple(float(x) for x in d)), {}  # type: ignore[return-value]
    have = [tuple(float(x) for x in r) for r in res.values() if r is not None]
    candidates = [*have, tuple(min(r[i] for r in have) for i in range(3))]
    for w in candidates:
        if all(_whole(r[i] / w[i]) for r in have for i in range(3)):
            factors = {
                t: tuple(float(r[i]) / w[i] for i in range(3)) for t, r in res.items() if r is not None
            }
            return w, factors  # type: ignore[return-value]
    raise UnsupportedError(
        f"{query.table}: the tables of this query have voxel resolutions "
        f"{ {t: list(r) for t, r in res.items() if r is not None} } that no one resolution divides into "
        "whole numbers; a CAVE server would cut their positions to integers. Query the tables one at a time"
    )


def plan(query: Query, specs: Mapping[str, TableSpec], *, v3: str) -> Plan:
    """Compile ``query``; ``v3`` is ``{local_server}/materialize/api/v3``."""
    if query.kind == "view" and query.timestamp is not None:
        raise UnsupportedError(
            f"{query.table}: the CAVE API has no live endpoint for views; query the view at a "
            "materialization version (materialization_version=...)"
        )
    if (query.version is None) == (query.timestamp is None):
        raise QueryError(f"{query.table}: a query needs exactly one of version and timestamp")
    lay = layout_for(query, specs)
    assert all(o.table in query.tables for o in lay.columns), "the layout names a table the query does not"
    sources, names = lay.sources, lay.names
    # position column → the local engine's scale (None: the stored values), every column of the layout
    scales = {n: o.scale for o in lay.columns if o.column.kind is ColumnKind.POSITION for n in o.names}
    scaled = frozenset(n for n, sc in scales.items() if sc is not None)
    wire_res, factors = wire_resolution(query, specs)
    rescale = {n: (factors[sources[n][0]], sc) for n, sc in scales.items() if sources[n][0] in factors}
    columns = lay.physical
    ds = query.datastack
    if query.timestamp is not None:
        endpoint: Literal["table", "join", "view", "live"] = "live"
        url = f"{v3}/datastack/{ds}/query"
    elif query.kind == "view":
        endpoint, url = "view", f"{v3}/datastack/{ds}/version/{query.version}/views/{query.table}/query"
    elif query.join is not None:
        endpoint, url = "join", f"{v3}/datastack/{ds}/version/{query.version}/query"
    else:
        endpoint, url = "table", f"{v3}/datastack/{ds}/version/{query.version}/table/{query.table}/query"
    key_table = query.join.ref_table if query.join is not None else query.table
    key = names.get((key_table, "id"))

    filters: dict[str, dict[str, dict[str, Any]]] = {}
    client: list[ClientFilter] = []
    nothing = False
    for p in query.predicates:
        spec = specs[p.table]
        kind = spec.column(p.column).kind if spec.has_column(p.column) else None
        result = names.get((p.table, p.column))
        op, value = p.op, p.value
        if op == "!=column":
            other = names.get((p.table, str(value)))
            if result is None or other is None:
                raise QueryError(f"{p.table}: '!=column' names an unknown column ({p.column!r}, {value!r})")
            client.append(ClientFilter(result, "!=column", other))
            continue
        if op in ("!=", "not in"):
            values = (value,) if op == "!=" else tuple(value)
            if not values:
                continue  # excluding nothing
            _add(filters, "not in", p.table, p.column, values)
            client.append(ClientFilter(_col(result, p), "not in", values))
            continue
        if op == "in" and len(value) == 0:
            nothing = True
            continue
        if op in ("==", "in") and endpoint == "live" and kind is ColumnKind.FLOAT:
            # the live endpoint filters again in pandas, float32 values against these float64 ones
            # (api2.py apply_filters): == / in match nothing. Send the range the values' float32
            # neighbours enclose instead, and keep the rows equal to a value (or its float32) here
            values = (value,) if op == "==" else tuple(value)
            f32 = np.array(values, dtype=np.float64).astype(np.float32)
            lo = float(np.nextafter(f32.min(), np.float32(-np.inf)))
            hi = float(np.nextafter(f32.max(), np.float32(np.inf)))
            if not (
                _add(filters, ">=", p.table, p.column, lo) and _add(filters, "<=", p.table, p.column, hi)
            ):
                nothing = True
            both = tuple(dict.fromkeys([*map(float, values), *map(float, f32)]))
            client.append(ClientFilter(_col(result, p), "in", both))
            continue
        if op == "==" and endpoint == "live" and p.column.endswith("root_id"):
            op, value = "in", (value,)  # protocol §5.1: a root-id equality can wipe other equalities
        if op in (">", ">=") and kind is ColumnKind.FLOAT:
            client.append(ClientFilter(_col(result, p), "not nan"))
        if not _add(filters, op, p.table, p.column, value):
            nothing = True
    return Plan(
        query=query,
        endpoint=endpoint,
        url=url,
        filters=filters,
        client_filters=tuple(dict.fromkeys(client)),
        columns=columns,
        sources=sources,
        key=key,
        key_table=key_table if key else None,
        resolution=lay.resolution,
        matches_nothing=nothing or query.matches_nothing,
        scaled=scaled,
        wire_resolution=wire_res,
        rescale=rescale,
    )


def _col(result: str | None, p: Predicate) -> str:
    if result is None:
        raise QueryError(f"{p.table}: a filter names column {p.column!r}, which is not a result column")
    return result


def _add(filters: dict[str, dict[str, dict[str, Any]]], op: str, table: str, column: str, value: Any) -> bool:
    """Put one condition into the wire dicts, combining it with one already there; False if the
    combination matches nothing."""
    d = filters.setdefault(_DICTS[op], {}).setdefault(table, {})
    if column not in d:
        d[column] = tuple(value) if op in ("in", "not in") else value
        return True
    old = d[column]
    if op == "==":
        return bool(old == value)
    if op == "in":
        keep = set(value)
        d[column] = tuple(v for v in old if v in keep)
        return bool(d[column])
    if op == "not in":
        d[column] = tuple(dict.fromkeys([*old, *value]))
        return True
    if op in (">", ">="):
        d[column] = max(old, value)
        return True
    if op in ("<", "<="):
        d[column] = min(old, value)
        return True
    if op == "bbox":
        lo = tuple(max(a, b) for a, b in zip(old[0], value[0], strict=True))
        hi = tuple(min(a, b) for a, b in zip(old[1], value[1], strict=True))
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            return False
        if any(a == b for a, b in zip(lo, hi, strict=True)):
            raise UnsupportedError(
                f"{table}.{column}: the two boxes meet in a flat box {[list(lo), list(hi)]}, which a CAVE "
                "server refuses (it needs min < max on every axis); pass one box"
            )
        d[column] = (lo, hi)
        return True
    raise UnsupportedError(
        f"{table}.{column}: two {op!r} conditions on one column cannot be sent to a CAVE server; combine "
        "them into one regular expression"
    )


# --------------------------------------------------------------------------- requests


def build(
    p: Plan,
    *,
    id_range: tuple[int | None, int | None] = (None, None),
    limit: int | None = None,
    count: bool = False,
    select: Sequence[str] | None = None,
    offset: int | None = None,
) -> WireRequest:
    """The request for ``p``, restricted to ``lo <= key < hi`` (either end open), with ``limit``
    (and ``offset``: rows the server skips, in its own order, which need not be ``id`` order), as a
    count query, or fetching only the result columns ``select`` (plus what the rows need)."""
    q = p.query
    filters = {k: {t: dict(c) for t, c in v.items()} for k, v in p.filters.items()}
    lo, hi = id_range
    if (lo is not None or hi is not None) and p.key_table is None:
        raise QueryError(f"{q.table}: has no id column to page by")
    if lo is not None:
        _add(filters, ">=", p.key_table, "id", int(lo))  # type: ignore[arg-type]
    if hi is not None:
        _add(filters, "<", p.key_table, "id", int(hi))  # type: ignore[arg-type]
    body: dict[str, Any] = {}
    j = q.join
    if p.endpoint == "live":
        body["table"] = q.table
        body["timestamp"] = q.timestamp.astimezone(_dt.timezone.utc).isoformat()  # type: ignore[union-attr]
        if j is not None:
            body["join_tables"] = [[j.ref_table, j.ref_column, j.target_table, j.target_column]]
    elif p.endpoint == "join" and j is not None:
        body["tables"] = [[j.ref_table, j.ref_column], [j.target_table, j.target_column]]
    for name in _DICT_ORDER:
        if filters.get(name):
            body[name] = {t: {c: jsonable(v) for c, v in cols.items()} for t, cols in filters[name].items()}
    if q.join is not None:
        suffixes = {q.join.ref_table: q.join.suffix, q.join.target_table: ""}
        body["suffixes" if p.endpoint == "live" else "suffix_map"] = suffixes
    if p.endpoint != "live" and not count:
        wanted = select if select is not None else (None if q.select_columns is None else p.needed)
        if wanted is not None:
            _select(p, wanted, body)
    if offset and not count:
        body["offset"] = int(offset)
    if limit is not None and not count:
        body["limit"] = int(limit)
    if p.wire_resolution is not None:
        body["desired_resolution"] = [float(x) for x in p.wire_resolution]
    params = list(LIVE_FLAGS if p.endpoint == "live" else QUERY_FLAGS)
    if p.endpoint == "live" and q.allow_missing_lookups:
        params = [(k, "True" if k == "allow_missing_lookups" else x) for k, x in params]
    if count:
        params.append(("count", "True"))
    # random_sample is never sent: see sample_rows
    return WireRequest("POST", p.url, tuple(params), body)


def _select(p: Plan, wanted: Sequence[str], body: dict[str, Any]) -> None:
    """``select_columns`` (a table or view) or ``select_column_map`` (a join) for result columns."""
    by_table: dict[str, list[str]] = {}
    for name in wanted:
        t, col, _ = p.sources[name]
        by_table.setdefault(t, [])
        if col not in by_table[t]:
            by_table[t].append(col)
    if p.endpoint != "join":
        cols = [c for cols in by_table.values() for c in cols]
        body["select_columns"] = cols + _partner(p, cols)
        return
    q = p.query
    ref, target = q.join.ref_table, q.join.target_table  # type: ignore[union-attr]
    stored = {t: {s[1] for s in p.sources.values() if s[0] == t} for t in (ref, target)}
    # a column selected on one side is selected on the other side too when both have it, so that
    # the server suffixes exactly the columns it suffixes without a selection
    for a, b in ((ref, target), (target, ref)):
        for col in list(by_table.get(a, [])):
            if col in stored[b] and col not in by_table.setdefault(b, []):
                by_table[b].append(col)
    if not by_table.get(target):
        by_table[target] = ["id"]
    body["select_column_map"] = {t: by_table[t] for t in (ref, target) if t in by_table}


#: columns a frozen merged table may lack (``merge_tables`` drops ``created``) or that are bookkeeping
_NOT_PARTNERS = frozenset({"created", "deleted", "superceded_id"})


def _partner(p: Plan, cols: Sequence[str]) -> list[str]:
    """A second column for a selection of exactly one non-position column, which the server fails
    with a 500 (``fix_columns_with_query`` reads the type of a one-entity query from a model it does
    not have); the client drops it again (:func:`finish` keeps the answer's columns)."""
    if len(cols) != 1:
        return []
    stored = [(col, kind) for t, col, kind in p.sources.values() if t == p.query.table]
    only = cols[0]
    if any(col == only and kind is ColumnKind.POSITION for col, kind in stored):
        return []  # a position is three columns
    names = list(dict.fromkeys(col for col, _k in stored))
    if only != "id" and "id" in names:
        return ["id"]
    for col, kind in stored:
        if col != only and col not in _NOT_PARTNERS and kind is not ColumnKind.POSITION:
            return [col]
    return []
