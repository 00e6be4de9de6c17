"""CAVE request bodies ↔ tablekit queries, and tablekit results → CAVE responses.

Nothing here answers a query by itself. A CAVE body (table-keyed filter dicts, ``tables`` /
``suffix_map`` joins, ``select_columns`` …) is translated into keyword filters of tablekit's
filter class for the table (or view, or join), validated by it, and compiled by
:meth:`tablekit.Client.build_query` into a :class:`~tablekit.query.Query`; :meth:`tablekit.Client.answer`
runs it and returns Arrow. This module then renames the columns the way the CAVE server names them (join
suffixes from the request), drops what the CAVE server drops, and encodes the Arrow IPC stream
(buffer compression from ``Accept-Encoding``), the JSON records and the headers.

CAVE filters that tablekit's DSL refuses on purpose but the CAVE server accepts (a range on a root
id, a filter on ``valid``) are validated with the same value checks and added as predicates of the
same :class:`~tablekit.query.Query`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import gzip
import json
import random
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import _time
from ..errors import FilterValueError, QueryError, TablekitError, UnknownColumnError, UnknownTableError
from ..filters import Field, ResultColumn, TableFilter, introspect
from ..query import CAVE_FILTER_DICTS, Join, Predicate, Query
from ..query import options as query_options
from ..query.pending import find_pending, supervoxel_columns
from ..schema import ColumnKind, ColumnRole, TableSpec

__all__ = [
    "FILTER_KEYS",
    "PENDING_LOOKUPS",
    "Abort",
    "ArgumentError",
    "BodyError",
    "Plan",
    "Translator",
    "WireError",
    "arrow_compression",
    "body_type_errors",
    "encode_arrow",
    "encode_json_records",
    "one_column_failure",
    "parse_bool",
    "real_columns",
    "real_types",
]

#: body key → tablekit operator
FILTER_KEYS: dict[str, str] = CAVE_FILTER_DICTS
_COMMON = frozenset(FILTER_KEYS) | {"offset", "limit", "desired_resolution"}
#: accepted body keys per endpoint (the server's marshmallow schemas reject unknown keys)
SIMPLE_KEYS = _COMMON | {"select_columns"}
JOIN_KEYS = _COMMON | {"tables", "select_columns", "select_column_map", "suffixes", "suffix_map"}
LIVE_KEYS = _COMMON | {"table", "timestamp", "join_tables", "select_columns", "suffixes"}
_DEFAULT_SUFFIXES = ("x", "y", "z", "xx", "yy", "zz")
LIMIT_WARNING = '201 - "Limited query to {limit} rows'
LIVE_LIMIT_WARNING = (
    "result has {n} entries, which is equal or more"
    + " " * 9
    + "than limit of {limit} there may be more results which are not shown"
)
#: the same warning from the live endpoint's second query, over the production tables
#: (``execute_production_query``: its line continuation is indented less)
LIVE_PROD_LIMIT_WARNING = LIVE_LIMIT_WARNING.replace(" " * 9, " " * 5)
#: the real server's warning texts (its line breaks sent as spaces), for cave_quirks
REAL_ARROW_FORMAT_WARNING = (
    "Response is in pyarrow IPC format. If you encounter a parsing error, please upgrade CAVEClient "
    "to >=5.9.0 with: pip install --upgrade caveclient. To suppress this warning, pass "
    "arrow_format=True in your query parameters."
)
REAL_CSV_WARNING = (
    "Query was executed using streaming via CSV, which can mangle types. Please upgrade to caveclient "
    "> 8.0.0 to avoid type mangling. Because you may have been affected by mangled types, this change "
    "is breaking, but it should provide an improved experience."
)
REAL_JOIN_CSV_WARNING = (
    "Using non-pandas query execution is deprecated as it can mangle types, please upgrade caveclient "
    "to >=8.0.0 to use pandas for improved type handling."
)
REAL_SUFFIXES_WARNING = (
    "Suffixes is deprecated for complex queries as it can be ambiguous what you desire, please pass "
    "suffix_map as a dictionary to explicitly set suffixes for individual tables. Upgrade caveclient "
    "to >=5.0.0"  # the real text ends in a blank, which an HTTP header value cannot
)
REAL_SELECT_WARNING = (
    "Select_columns is deprecated for join queries, please use select_column_map a dictionary which "
    "is more explicit about what columns to select from what tables. This query result will attempt "
    "to select the first column it finds of this name in any table, but if there are more than one "
    "such column it will not select both. Upgrade caveclient to >=5.0.0 ."
)
SUFFIXES_DEPRECATION = "suffixes is deprecated, use suffix_map (a dict {table: suffix})"
SELECT_DEPRECATION = "select_columns is deprecated for join queries, use select_column_map"


#: the live endpoint's text for annotations whose supervoxel lookup is pending (protocol §5.1, §5.3):
#: the message of its ``abort(406, …)`` and, with ``allow_missing_lookups=true``, its warning
PENDING_LOOKUPS = (
    "There are {n} annotations that need supervoxel lookups, wait till new annotation ingest is done "
    "or pick an less recent timestamp"
)


class WireError(TablekitError, ValueError):
    """A request the CAVE server would reject (bad body, bad parameter); sent as the 500 JSON."""


class Abort(WireError):
    """flask's ``abort(status, text)`` inside a materialization handler. The real server's catch-all
    answers it as HTTP 500 ``{"code": 500, "message": "<status> <reason>: <text>"}`` (protocol §6.3),
    and so does ``tablekit serve``."""

    def __init__(self, status: int, reason: str, text: str):
        super().__init__(f"{status} {reason}: {text}")
        self.status = status
        self.text = text


class ArgumentError(WireError):
    """A bad query-string argument. With cave_quirks it is sent as flask-restx's reqparse sends it
    through the real server's catch-all: 500 ``{"errors": {name: why}, "message": "Input payload
    validation failed"}``."""

    def __init__(self, name: str, why: str):
        super().__init__(f"{name}: {why}")
        self.errors = {name: why}


class BodyError(WireError):
    """A request body the server's marshmallow schema rejects. With cave_quirks it is sent as the
    real server's ``@accepts`` decorator's error reaches clients: 500 ``{"schema_errors": {field:
    [why]}}`` (no ``message``)."""

    def __init__(self, text: str, errors: Mapping[str, Any]):
        super().__init__(text)
        self.errors = dict(errors)


def parse_bool(value: str | None, default: bool, name: str = "parameter", *, strict: bool = False) -> bool:
    """Query-string booleans (case-insensitive): ``true/false``, ``1/0``, ``yes/no``, ``on/off``,
    ``t/f``, ``y/n``; absent or empty → ``default``. ``strict`` (cave_quirks) reads them as the real
    server's flask-restx ``inputs.boolean`` does: ``true/1/on``, ``false/0``, and empty is false."""
    if value is None:
        return default
    if strict:
        v = value.lower()
        if v in ("true", "1", "on"):
            return True
        if v in ("false", "0", ""):
            return False
        raise ArgumentError(name, f"Invalid literal for boolean(): {v}")
    if value == "":
        return default
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on", "t", "y"):
        return True
    if v in ("false", "0", "no", "off", "f", "n"):
        return False
    raise ArgumentError(name, f"{value!r} is not a valid boolean")


def parse_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ArgumentError(name, f"{value!r} is not a valid integer") from None


def check_body(body: Any, allowed: frozenset[str] | set[str], required: Sequence[str] = ()) -> dict[str, Any]:
    """Reject what the server's marshmallow schema rejects: a non-object, unknown or missing keys."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise WireError(f"the request body must be a JSON object, got {type(body).__name__}")
    errors: dict[str, list[str]] = {}
    for k in body:
        if k not in allowed:
            hint = " (the not-in filter is sent as filter_notin_dict)" if k == "filter_out_dict" else ""
            errors[k] = [f"Unknown field.{hint}"]
    for k in required:
        if body.get(k) is None:
            errors[k] = ["Missing data for required field."]
    if errors:
        raise BodyError(f"400 Bad Request: invalid request body: {errors}", errors)
    return body


#: cave_quirks: the types the real server's marshmallow schemas give the body's keys
#: (``schemas.py``: SimpleQuerySchema, ComplexQuerySchema, V2QuerySchema)
_BODY_TYPES: dict[str, dict[str, str]] = {
    "simple": {"select_columns": "list", "offset": "int", "limit": "int", "desired_resolution": "xyz"},
    "join": {
        "tables": "list",
        "select_columns": "list",
        "select_column_map": "dict",
        "offset": "int",
        "limit": "int",
        "suffixes": "list",
        "suffix_map": "dict",
        "desired_resolution": "xyz",
    },
    "live": {
        "table": "str",
        "timestamp": "str",
        "join_tables": "list",
        "select_columns": "dict",
        "offset": "int",
        "limit": "int",
        "suffixes": "dict",
        "desired_resolution": "xyz",
    },
}


def body_type_errors(body: Any, endpoint: Literal["simple", "join", "live"]) -> dict[str, list[str]]:
    """cave_quirks: the errors the real server's marshmallow schema reports for values of the wrong
    type (``{"limit": ["Not a valid integer."]}``), sent as :class:`BodyError`. Unknown and
    missing keys are :func:`check_body`'s."""
    if not isinstance(body, Mapping):
        return {}
    types = {**dict.fromkeys(FILTER_KEYS, "dict"), **_BODY_TYPES[endpoint]}
    errors: dict[str, list[str]] = {}
    for key, value in body.items():
        kind = types.get(key)
        if value is None or kind is None:
            continue
        if kind == "int":
            ok = not isinstance(value, bool) and isinstance(value, (int, float, str))
            try:
                ok = ok and int(value) == float(value)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                errors[key] = ["Not a valid integer."]
        elif kind == "dict" and not isinstance(value, Mapping):
            errors[key] = ["Not a valid mapping type."]
        elif kind in ("list", "xyz") and not isinstance(value, list):
            errors[key] = ["Not a valid list."]
        elif kind == "xyz" and len(value) != 3:
            errors[key] = ["Length must be 3."]
        elif kind == "str" and not isinstance(value, str):
            errors[key] = ["Not a valid string."]
    return errors


# --------------------------------------------------------------------------- the plan


@attrs.define
class Plan:
    """A translated request: the tablekit query plus how to shape its result the CAVE way."""

    query: Query
    layout: tuple[ResultColumn, ...]
    #: tablekit result name (positions unsplit) → CAVE column name
    rename: dict[str, str]
    #: tablekit result names (unsplit) the CAVE server would not return
    drop: set[str]
    warnings: list[str]
    resolution: tuple[float, float, float] | None
    limit: int | None  # the effective limit (None for counts)
    offset: int
    live: bool
    shuffle: bool = False  # cave_quirks: no ORDER BY
    #: live queries: rows whose supervoxel lookup is pending (null) are left out with a warning
    #: (True) or refuse the query with 406, sent as 500 (False)
    allow_missing_lookups: bool = False
    #: cave_quirks: rows of the main table created at or before this time come from the real
    #: server's materialized version, whose pending lookups refuse the query whatever
    #: ``allow_missing_lookups`` says (protocol §5.1 step 4)
    materialized_at: _dt.datetime | None = None
    #: the result column holding the main table's ``created`` (compared with ``materialized_at``)
    created_column: str | None = None
    #: rows left out for pending lookups (they were part of the sub-query the limit applied to)
    left_out: int = 0
    #: cave_quirks, live: the answer's rows that come from the live database (created after
    #: ``materialized_at``), which the real endpoint sends with a null ``valid``
    newer: np.ndarray | None = None
    #: cave_quirks, live: the body's filter dicts, which the real live endpoint applies again in
    #: pandas to its float32 answer (api2.py apply_filters)
    refilter: Mapping[str, Any] | None = None
    #: cave_quirks, live: how many answer rows come from the materialized version (the rest from
    #: the production tables), each part with its own row-limit warning
    mat_rows: int | None = None

    def column_names(self) -> dict[str, dict[str, str]]:
        """The ``column_names`` header: ``{table: {db column: result column}}``."""
        out: dict[str, dict[str, str]] = {}
        if self.query.count:
            return out
        sel = None if self.query.select_columns is None else set(self.query.select_columns)
        for rc in self.layout:
            if rc.name in self.drop or (sel is not None and rc.name not in sel):
                continue
            out.setdefault(rc.table, {})[rc.column.name] = self.rename.get(rc.name, rc.name)
        return out


class Translator:
    """Turns CAVE bodies into :class:`Plan` s for one :class:`tablekit.Client`."""

    def __init__(self, client: Any, *, row_limit: int, cave_quirks: bool = False):
        self.client = client
        self.row_limit = int(row_limit)
        self.quirks = bool(cave_quirks)
        self.lock = threading.RLock()
        self._classes: dict[Any, type[TableFilter]] = {}

    # ------------------------------------------------------------------ classes
    def require_version(self, version: int) -> int:
        """The version if it can be queried; VersionError (unknown or expired) otherwise."""
        with self.lock:
            return self.client.check_version(version)

    def table_class(self, table: str, version: int, merge_reference: bool = False) -> type[TableFilter]:
        with self.lock:
            return self.client.filter_class(table, version, merge_reference=merge_reference)

    def view_class(self, view: str, version: int) -> type[TableFilter]:
        with self.lock:
            return self.client.filter_class(view, version, view=True)

    def join_class(self, a: str, b: str, version: int) -> type[TableFilter]:
        """``a`` merged with ``b`` (``b``'s columns keep their names, ``a``'s clashing ones get ``_ref``)."""
        with self.lock:
            key = (a, b, version)
            if key not in self._classes:
                self._classes[key] = self.client.join_class(a, b, version)
            return self._classes[key]

    # ------------------------------------------------------------------ filters
    def _predicates(
        self, cls: type[TableFilter], body: Mapping[str, Any], tables: Sequence[str]
    ) -> tuple[Predicate, ...]:
        """Table-keyed filter dicts → predicates, validated by the filter class of the query."""
        info = introspect(cls)
        by_col: dict[tuple[str, str, bool], Field] = {}
        for fl in info.fields.values():
            by_col.setdefault((fl.table, fl.column.name, fl.bbox), fl)
        specs = {info.spec.name: info.spec}
        if info.target is not None:
            specs[info.target.name] = info.target
        kwargs: dict[str, dict[str, Any]] = {}
        extra: list[Predicate] = []
        name = cls.table_name
        for key, op in FILTER_KEYS.items():
            d = body.get(key)
            if d is None:
                continue
            if key == "filter_notin_dict" and self.quirks:
                continue  # the real server reads `filter_out_dict`, so not-in is never applied
            if not isinstance(d, Mapping):
                raise WireError(f"{key} must be an object {{table: {{column: value}}}}, got {d!r}")
            for table, cols in d.items():
                if table not in tables:
                    raise QueryError(
                        f"{key} names table {table!r}, which is not part of this query ({', '.join(tables)})"
                    )
                if not isinstance(cols, Mapping):
                    raise WireError(f"{key}[{table!r}] must be an object {{column: value}}, got {cols!r}")
                spec = specs[table]
                for col, value in cols.items():
                    f = by_col.get((table, col, op == "bbox"))
                    if f is None:
                        if not spec.has_column(col):
                            raise UnknownColumnError(
                                f"{key}: column {col!r} not found in {table!r}. Columns: "
                                f"{', '.join(spec.column_names)}",
                                table=table,
                                column=col,
                            )
                        c = spec.column(col)
                        f = Field(col, table, c, col, bbox=c.kind is ColumnKind.POSITION and op == "bbox")
                        if op == "bbox" and not f.bbox:
                            raise FilterValueError(
                                f"{key}: column {col!r} of {table!r} is not a position; spatial filters "
                                "take a position column such as 'pt_position'",
                                table=table,
                                column=col,
                            )
                    if f.bbox and f.attr in info.fields:
                        kwargs.setdefault(f.attr, {})["bbox"] = value
                    elif f.bbox:
                        extra.extend(f.predicates(name, value))
                    elif f.attr in info.fields and op in f.ops and value is not None:
                        slot = kwargs.setdefault(f.attr, {})
                        if op in slot:
                            raise QueryError(f"{name}: column {col!r} of {table!r} is given twice for {op!r}")
                        slot[op] = value
                    else:
                        # an operator the DSL refuses on purpose (a range on a root id, a filter on
                        # `valid`) but the CAVE server accepts: same value checks, same Query
                        extra.append(f.predicate(name, op, value))
        kw: dict[str, Any] = {}
        for attr, ops in kwargs.items():
            kw[attr] = ops["bbox"] if "bbox" in ops else ops
        obj = cls(**kw)
        return (*obj.predicates, *extra)

    # ------------------------------------------------------------------ options
    def _limit(self, body: Mapping[str, Any], count: bool) -> int | None:
        limit = body.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise WireError(f"limit: {limit!r} is not a valid integer")
        if count:
            return None
        if limit is None or limit > self.row_limit:
            return self.row_limit
        return limit

    @staticmethod
    def _offset(body: Mapping[str, Any]) -> int:
        off = body.get("offset")
        if off is None:
            return 0
        if isinstance(off, bool) or not isinstance(off, int):
            raise WireError(f"offset: {off!r} is not a valid integer")
        return off

    @staticmethod
    def _root_partners(spec: TableSpec, cols: list[str]) -> list[str]:
        """Selecting ``X_root_id`` also selects ``X_supervoxel_id`` (CAVE's rule)."""
        out = list(cols)
        for c in cols:
            if isinstance(c, str) and c.endswith("root_id"):
                sv = c[: -len("root_id")] + "supervoxel_id"
                if spec.has_column(sv) and sv not in out:
                    out.append(sv)
        return out

    def _select(
        self,
        layout: tuple[ResultColumn, ...],
        per_table: Mapping[str, Sequence[str]] | None,
        specs: Mapping[str, TableSpec],
        *,
        partners: bool,
        strict_tables: bool = False,
    ) -> tuple[str, ...] | None:
        """``{table: [db columns]}`` → tablekit result names (validated)."""
        if per_table is None:
            return None
        if strict_tables:
            missing = [t for t in specs if t not in per_table]
            if missing:
                raise KeyError(missing[0])  # what the real live endpoint does (a 500 with KeyError)
        names: list[str] = []
        where = {(rc.table, rc.column.name): rc.name for rc in layout}
        for table, cols in per_table.items():
            if table not in specs:
                raise QueryError(f"select_columns names table {table!r}, which is not part of this query")
            if isinstance(cols, str) or not isinstance(cols, Sequence):
                raise WireError(f"select columns of {table!r} must be a list of column names, got {cols!r}")
            if partners:
                cols = self._root_partners(specs[table], list(cols))
            for c in cols:
                if (table, c) not in where:
                    raise QueryError(
                        f"column {c!r} not found in {table!r}. Columns: {', '.join(specs[table].column_names)}"
                    )
                names.append(where[(table, c)])
        if not names:
            raise QueryError("select_columns selects no column")
        return tuple(dict.fromkeys(names))

    def _notices(self, specs: Sequence[TableSpec]) -> list[str]:
        return [f"Table Owner Notice on {s.name}: {s.notice_text}" for s in specs if s.notice_text]

    def _suffixes(
        self, body: Mapping[str, Any], tables: Sequence[str], warn: list[str], key_map: str
    ) -> dict[str, str]:
        sm = body.get(key_map)
        lst = body.get("suffixes") if key_map != "suffixes" else None
        out: dict[str, str] = {}
        if isinstance(lst, list):
            warn.append(SUFFIXES_DEPRECATION)
            for t, s in zip(tables, lst, strict=False):
                out[t] = s
        if sm is not None:
            if not isinstance(sm, Mapping):
                raise WireError(f"{key_map} must be an object {{table: suffix}}, got {sm!r}")
            out.update(sm)
        for t, s in out.items():
            if not isinstance(s, str):
                raise WireError(f"{key_map}: the suffix of {t!r} must be a string, got {s!r}")
        vals = [out[t] for t in tables if t in out]
        if len(set(vals)) != len(vals):
            raise QueryError(f"Duplicate suffixes set in {out}")
        for i, t in enumerate(tables):
            if t not in out:
                out[t] = _DEFAULT_SUFFIXES[i]
        return out

    @staticmethod
    def _join_rename(
        layout: tuple[ResultColumn, ...], a: TableSpec, b: TableSpec, suffixes: Mapping[str, str]
    ) -> dict[str, str]:
        """tablekit's join names (``b`` plain, ``a``'s clashes + ``_ref``) → the request's suffixes."""
        clash = set(a.column_names) & set(b.column_names)
        out = {}
        for rc in layout:
            c = rc.column.name
            if c in clash:
                out[rc.name] = c + suffixes[rc.table]
        return out

    # ------------------------------------------------------------------ endpoints
    def _finish(
        self,
        *,
        cls: type[TableFilter],
        predicates: tuple[Predicate, ...],
        layout: tuple[ResultColumn, ...],
        join: Join | None,
        kind: str,
        body: Mapping[str, Any],
        params: Mapping[str, str],
        version: int | None,
        timestamp: _dt.datetime | None,
        select: tuple[str, ...] | None,
        count: bool,
        rename: dict[str, str],
        drop: set[str],
        warn: list[str],
        default_resolution: tuple[float, float, float] | None,
        allow_invalid: bool = False,
        live: bool = False,
    ) -> Plan:
        limit = self._limit(body, count)
        offset = self._offset(body)
        rs = parse_int(params.get("random_sample"), "random_sample")
        if rs is not None and rs <= 0:
            raise ArgumentError("random_sample", f"must be a positive integer, got {rs}")
        if self.quirks and rs is not None and kind == "table" and join is None and not live:
            # merged versions (all of tablekit's): QueryManager.add_table samples an alias that
            # _find_relevant_model never uses, so every matching row comes back
            rs = None
        desired = body.get("desired_resolution")
        shuffle = self.quirks and not count
        with self.lock:
            opts, _ = query_options.parse(
                {
                    "select_columns": select,
                    "offset": 0 if shuffle else offset,
                    "limit": None if shuffle else limit,
                    "timestamp": timestamp,
                    "desired_resolution": desired,
                    "get_counts": count,
                    "random_sample": rs,
                    "allow_invalid_root_ids": allow_invalid,
                },
                table=cls.table_name,
                what=cls.table_name,
            )
            q = self.client.build_query(cls, predicates=predicates, options=opts, warn=False)
        warn.extend(q.notes)
        res = q.desired_resolution or default_resolution
        return Plan(
            query=q,
            layout=layout,
            rename=rename,
            drop=drop,
            warnings=warn,
            resolution=None if res is None else tuple(float(x) for x in res),  # type: ignore[arg-type]
            limit=limit,
            offset=offset,
            live=live,
            shuffle=shuffle,
        )

    def simple(self, table: str, version: int, body: Any, params: Mapping[str, str]) -> Plan:
        """``POST …/version/{v}/table/{t}/query``: one table, no reference merge."""
        return self._single(table, "table", version, body, params)

    def view(self, view: str, version: int, body: Any, params: Mapping[str, str]) -> Plan:
        """``POST …/version/{v}/views/{view}/query``."""
        return self._single(view, "view", version, body, params)

    def _validate_tables(self, tables: Sequence[str], version: int) -> None:
        """cave_quirks: ``validate_table_args``'s 404s (sent as 500 by the catch-all) for a version
        or table the analysis database does not hold."""
        if not self.quirks:
            return
        ds = self.client.datastack
        with self.lock:
            known = {m["version"] for m in self.client.get_versions_metadata(expired=True)}
            if version not in known:
                raise Abort(404, "Not Found", f"Analysis version {version} not found for datastack {ds}")
            try:
                have = set(self.client.get_tables(version))
            except TablekitError:
                have = set()
        for t in tables:
            if t not in have:
                raise Abort(
                    404,
                    "Not Found",
                    f"Analysis table '{t}' not found for version {version} in datastack {ds}",
                )

    def _single(self, name: str, kind: str, version: int, body: Any, params: Mapping[str, str]) -> Plan:
        body = check_body(body, SIMPLE_KEYS)
        if kind == "table":
            self._validate_tables([name], version)
        self.require_version(version)
        cls = self.table_class(name, version) if kind == "table" else self.view_class(name, version)
        info = introspect(cls)
        spec = info.spec
        warn = self._notices([spec])
        preds = self._predicates(cls, body, [name])
        sel = body.get("select_columns")
        if sel is not None and (isinstance(sel, (str, Mapping)) or not isinstance(sel, list)):
            raise WireError(f"select_columns must be a list of column names, got {sel!r}")
        select = self._select(info.layout, None if sel is None else {name: sel}, {name: spec}, partners=True)
        count = parse_bool(params.get("count"), False, "count", strict=self.quirks)
        if self.quirks and not count:
            failure = one_column_failure(info.layout, select)
            if failure is not None:
                raise failure
        return self._finish(
            cls=cls,
            predicates=preds,
            layout=info.layout,
            join=None,
            kind=kind,
            body=body,
            params=params,
            version=version,
            timestamp=None,
            select=select,
            count=count,
            rename={},
            drop=set(),
            warn=warn,
            default_resolution=spec.voxel_resolution,
        )

    def _two_tables(self, pairs: Any, what: str) -> tuple[str, str, str, str]:
        if not isinstance(pairs, list) or len(pairs) < 2:
            raise WireError(f"{what} must list two [table, column] pairs, got {pairs!r}")
        if len(pairs) > 2 and not self.quirks:
            raise QueryError(f"{what}: only joins of two tables are supported, got {len(pairs)}")
        (a, ca), (b, cb) = pairs[0], pairs[1]
        for x in (a, ca, b, cb):
            if not isinstance(x, str):
                raise WireError(f"{what} must list [table, column] pairs of strings, got {pairs!r}")
        if a == b:
            raise QueryError(f"{what}: a table cannot be joined with itself ({a!r})")
        return a, ca, b, cb

    def join(self, version: int, body: Any, params: Mapping[str, str]) -> Plan:
        """``POST …/version/{v}/query``: two tables joined on ``tables``."""
        body = check_body(body, JOIN_KEYS, required=("tables",))
        pairs = body["tables"]
        if isinstance(pairs, list) and len(pairs) == 1 and isinstance(pairs[0], list):
            raise QueryError("tables lists one table; query it with the table endpoint (…/table/{t}/query)")
        a, ca, b, cb = self._two_tables(pairs, "tables")
        self._validate_tables([a, b], version)
        self.require_version(version)
        cls = self.join_class(a, b, version)
        info = introspect(cls)
        sa, sb = info.spec, info.target
        assert sb is not None
        warn = self._notices([sa, sb])
        preds = self._predicates(cls, body, [a, b])
        select_map = body.get("select_column_map")
        sel_list = body.get("select_columns")
        if sel_list is not None:
            if not isinstance(sel_list, list):
                raise WireError(f"select_columns must be a list, got {sel_list!r}")
            warn.append(SELECT_DEPRECATION)
            per: dict[str, list[str]] = {}
            for c in sel_list:
                owner = next((t for t, s in ((a, sa), (b, sb)) if s.has_column(c)), None)
                if owner is None:
                    raise QueryError(f"column {c!r} not found in {a!r} or {b!r}")
                per.setdefault(owner, []).append(c)
            select_map = {**per, **(select_map or {})}
        if select_map is not None and not isinstance(select_map, Mapping):
            raise WireError(f"select_column_map must be an object {{table: [columns]}}, got {select_map!r}")
        select = self._select(info.layout, select_map, {a: sa, b: sb}, partners=True)
        suffixes = self._suffixes(body, [a, b], warn, "suffix_map")
        return self._finish(
            cls=cls,
            predicates=preds,
            layout=info.layout,
            join=Join(a, b, ca, cb),
            kind="table",
            body=body,
            params=params,
            version=version,
            timestamp=None,
            select=select,
            # the real join endpoint ignores count (generate_complex_query_dataframe: get_count=False)
            count=parse_bool(params.get("count"), False, "count", strict=self.quirks) and not self.quirks,
            rename=self._join_rename(info.layout, sa, sb, suffixes),
            drop=set(),
            warn=warn,
            default_resolution=sb.voxel_resolution or sa.voxel_resolution,
        )

    def live(self, body: Any, params: Mapping[str, str]) -> Plan:
        """``POST /materialize/api/v3/datastack/{ds}/query``: a table (and joins) at a timestamp."""
        body = check_body(body, LIVE_KEYS, required=("table", "timestamp"))
        table = body["table"]
        if not isinstance(table, str):
            raise WireError(f"table must be a string, got {table!r}")
        ts = _parse_timestamp(body["timestamp"])
        if self.quirks:
            with self.lock:
                stamps = {
                    m["time_stamp"] for m in self.client.get_versions_metadata() if m.get("valid", True)
                }
            if ts in stamps:  # execute_production_query (the tables here change after every version)
                raise Abort(
                    400, "Bad Request", "do not use live live query to query a materialized timestamp"
                )
        version = self.client.version  # the class layout: any valid version with the table
        version = _version_with(self.client, table, version)
        joins = body.get("join_tables")
        warn: list[str] = []
        if joins:
            if not isinstance(joins, list) or not all(isinstance(j, list) and len(j) == 4 for j in joins):
                raise WireError(
                    f"join_tables must be a list of [table1, column1, table2, column2], got {joins!r}"
                )
            if len(joins) > 1:
                raise QueryError("join_tables: only one join is supported")
            t1, c1, t2, c2 = joins[0]
            if t1 != table:
                t1, c1, t2, c2 = t2, c2, t1, c1
            if t1 != table:
                raise QueryError(f"join_tables must join the queried table {table!r}, got {joins[0]!r}")
            a, ca, b, cb = self._two_tables([[t1, c1], [t2, c2]], "join_tables")
            cls = self.join_class(a, b, version)
            info = introspect(cls)
            sa, sb = info.spec, info.target
            assert sb is not None
            tables, specs = [a, b], {a: sa, b: sb}
            join: Join | None = Join(a, b, ca, cb)
        else:
            cls = self.table_class(table, version)
            info = introspect(cls)
            sa = info.spec
            tables, specs, join = [table], {table: sa}, None
        preds = self._predicates(cls, body, tables)
        sel = body.get("select_columns")
        if sel is not None and not isinstance(sel, Mapping):
            raise WireError(
                f"select_columns must be an object {{table: [columns]}} for live queries, got {sel!r}"
            )
        select = self._select(info.layout, sel, specs, partners=False, strict_tables=self.quirks)
        suffixes = body.get("suffixes")
        if suffixes is not None and not isinstance(suffixes, Mapping):
            raise WireError(f"suffixes must be an object {{table: suffix}}, got {suffixes!r}")
        rename = (
            self._join_rename(
                info.layout, sa, specs[tables[1]], self._suffixes(body, tables, warn, "suffixes")
            )
            if join is not None
            else {}
        )
        drop = {rc.name for rc in info.layout if rc.column.name in ("valid", "superceded_id")}
        allow_invalid = parse_bool(
            params.get("allow_invalid_root_ids"), False, "allow_invalid_root_ids", strict=self.quirks
        )
        allow_missing = parse_bool(
            params.get("allow_missing_lookups"), False, "allow_missing_lookups", strict=self.quirks
        )
        plan = self._finish(
            cls=cls,
            predicates=preds,
            layout=info.layout,
            join=join,
            kind="table",
            body=body,
            params=params,
            version=version,
            timestamp=ts,
            select=select,
            count=False,
            rename=rename,
            drop=drop,
            warn=warn,
            default_resolution=sa.voxel_resolution,
            allow_invalid=allow_invalid,
            live=True,
        )
        plan.allow_missing_lookups = allow_missing
        if self.quirks:
            plan.refilter = {k: body[k] for k in _REFILTERED if body.get(k)}
        # pending lookups are found in the supervoxel ids, selected or not (the real server checks
        # them before it applies select_columns)
        need = list(supervoxel_columns(info.layout))
        if self.quirks:
            created = next(
                (rc.name for rc in info.layout if rc.table == table and rc.column.name == "created"), None
            )
            with self.lock:
                past = [
                    m["time_stamp"]
                    for m in self.client.get_versions_metadata()
                    if m.get("valid", True) and m["time_stamp"] <= ts
                ]
            if created is not None and past:
                plan.materialized_at, plan.created_column = max(past), created
                need.append(created)
        sel = plan.query.select_columns
        extra = [] if sel is None else [n for n in need if n not in sel]
        plan.query = attrs.evolve(
            plan.query,
            allow_missing_lookups=allow_missing,
            select_columns=(*sel, *extra) if sel is not None and extra else sel,
        )
        plan.drop |= set(extra)
        return plan

    # ------------------------------------------------------------------ results
    def shape(self, plan: Plan, table: pa.Table) -> pa.Table:
        """The backend's Arrow table → the columns, names and rows the CAVE server returns."""
        if plan.query.count:
            return table
        if plan.shuffle:  # cave_quirks: no ORDER BY, so offset/limit pages are not stable either
            idx = list(range(table.num_rows))
            random.Random().shuffle(idx)
            idx = idx[plan.offset :]
            if plan.limit is not None:
                idx = idx[: plan.limit]
            table = table.take(pa.array(idx, type=pa.int64()))
        if plan.live:
            table = self._pending_lookups(plan, table)
            if plan.materialized_at is not None and plan.created_column in table.column_names:
                created = table.column(plan.created_column)
                at = pa.scalar(plan.materialized_at, type=created.type)
                plan.mat_rows = int(pc.sum(pc.fill_null(pc.less_equal(created, at), False)).as_py() or 0)
        if self.quirks:
            table = real_types(plan.layout, table)
            if plan.refilter:
                table = pandas_refilter(plan.layout, table, plan.refilter)
            if plan.live and plan.materialized_at is not None and plan.created_column in table.column_names:
                created = table.column(plan.created_column)
                at = pa.scalar(plan.materialized_at, type=created.type)
                plan.newer = ~pc.fill_null(pc.less_equal(created, at), False).to_numpy(zero_copy_only=False)
        physical: dict[str, str | None] = {}
        for rc in plan.layout:
            new = None if rc.name in plan.drop else plan.rename.get(rc.name, rc.name)
            if rc.column.kind is ColumnKind.POSITION:
                for axis in ("_x", "_y", "_z"):
                    physical[rc.name + axis] = None if new is None else new + axis
            else:
                physical[rc.name] = new
        keep = [n for n in table.column_names if physical.get(n, n) is not None]
        table = table.select(keep)
        return table.rename_columns([physical.get(n) or n for n in table.column_names])

    @staticmethod
    def _pending_lookups(plan: Plan, table: pa.Table) -> pa.Table:
        """Rows whose supervoxel lookup is pending (null supervoxel id), as the real live endpoint
        treats them (``update_rootids``, protocol §5.1 steps 4-5): supervoxel column by column,
        :data:`PENDING_LOOKUPS` with the column's count is a warning and those rows are left out
        (``allow_missing_lookups``), or the query fails with 406 (sent as 500). With ``cave_quirks``
        the rows of the materialized version are checked first and fail whatever the flag says."""
        pending = find_pending(table, supervoxel_columns(plan.layout))
        if not any(x.any() for x in pending.nulls):
            return table
        everything = np.ones(table.num_rows, dtype=bool)
        parts = [(everything, plan.allow_missing_lookups)]
        if plan.materialized_at is not None and plan.created_column in table.column_names:
            created = table.column(plan.created_column)
            at = pa.scalar(plan.materialized_at, type=created.type)
            mat = pc.fill_null(pc.less_equal(created, at), False).to_numpy(zero_copy_only=False)
            parts = [(mat, False), (~mat, plan.allow_missing_lookups)]
        keep = everything.copy()
        for part, allow in parts:
            for _column, rows in pending.by_column(part & keep):
                n = int(rows.sum())
                if not n:
                    continue
                text = PENDING_LOOKUPS.format(n=n)
                if not allow:
                    raise Abort(406, "Not Acceptable", text)
                plan.warnings.append(text)
                plan.left_out += n
                keep &= ~rows
        return table if keep.all() else table.filter(pa.array(keep))

    def limit_warnings(self, plan: Plan, rows: int) -> list[str]:
        if plan.limit is None:
            return []
        if plan.live:  # counted before the pending lookups were left out, as the sub-query's rows
            rows += plan.left_out
            if self.quirks and plan.mat_rows is not None:
                mat, prod = plan.mat_rows, rows - plan.mat_rows
                out = [LIVE_LIMIT_WARNING.format(n=mat, limit=plan.limit)] if mat >= plan.limit else []
                if prod >= plan.limit:
                    out.append(LIVE_PROD_LIMIT_WARNING.format(n=prod, limit=plan.limit))
                if out or rows < plan.limit:
                    return out
            return [LIVE_LIMIT_WARNING.format(n=rows, limit=plan.limit)] if rows >= plan.limit else []
        return [LIMIT_WARNING.format(limit=plan.limit)] if rows == plan.limit else []


#: ints the real server reads as 64-bit (its models' BigInteger columns); other ints are Integer
_BIG_INTS = (ColumnRole.ID, ColumnRole.TARGET_ID, ColumnRole.ROOT_ID, ColumnRole.SUPERVOXEL_ID)


def real_types(layout: Sequence[ResultColumn], table: pa.Table) -> pa.Table:
    """cave_quirks: the column types of a real server's answer (``query.py`` ``dtype_map`` and
    ``QueryManager.execute_query``): positions and ``Integer`` columns as int32 (a position scaled
    by a fractional factor is cut to a whole number: ``CAST(ST_X AS INTEGER) * factor`` read as
    Int32), ``Float`` as float32 with NaN as null (``Float32Dtype``), datetimes as
    ``timestamp[ns, UTC]``."""
    specs: dict[str, Any] = {}
    for rc in layout:
        if rc.column.kind is ColumnKind.POSITION:
            for axis in ("_x", "_y", "_z"):
                specs[rc.name + axis] = rc.column
        else:
            specs[rc.name] = rc.column
    cols = []
    for name in table.column_names:
        arr = table[name]
        c = specs.get(name)
        if c is None or pa.types.is_null(arr.type):
            pass
        elif c.kind is ColumnKind.POSITION:
            if pa.types.is_floating(arr.type):
                arr = pc.trunc(arr)
            arr = arr.cast(pa.int32(), safe=False)
        elif c.kind is ColumnKind.INT:
            arr = arr.cast(pa.int64() if c.role in _BIG_INTS else pa.int32())
        elif c.kind is ColumnKind.FLOAT:
            arr = arr.cast(pa.float64())
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, pa.float64()), arr).cast(pa.float32())
        elif c.kind is ColumnKind.DATETIME:
            arr = arr.cast(pa.timestamp("ns", tz="UTC"))
        cols.append(arr)
    return pa.table(cols, names=table.column_names)


_REFILTERED = {
    "filter_in_dict": "in",
    "filter_equal_dict": "==",
    "filter_greater_dict": ">",
    "filter_less_dict": "<",
    "filter_greater_equal_dict": ">=",
    "filter_less_equal_dict": "<=",
}


def pandas_refilter(layout: Sequence[ResultColumn], table: pa.Table, dicts: Mapping[str, Any]) -> pa.Table:
    """cave_quirks: the live endpoint's second filtering (``api2.py`` ``apply_filters``) of its
    float32 answer with NumPy 1.26's rules: ``isin`` compares float64 (the float32 values widened,
    so a float filter value matches nothing it was not exactly), ``==`` and ranges compare in float32
    (the Python float value cast down); nulls never pass."""
    names = {(rc.table, rc.column.name): rc.name for rc in layout}
    mask = np.ones(table.num_rows, dtype=bool)
    for key, op in _REFILTERED.items():
        for t, cols in (dicts.get(key) or {}).items():
            for c, v in cols.items():
                name = names.get((t, c))
                if name is None or name not in table.column_names:
                    continue
                col = table[name]
                vals = col.to_numpy(zero_copy_only=False)
                valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
                if pa.types.is_floating(col.type):
                    vals = np.where(valid, vals, 0).astype(np.float32)
                    if op == "in":
                        m = np.isin(vals.astype(np.float64), np.asarray(v, dtype=np.float64))
                    else:
                        w = np.float32(v)
                        m = {"==": vals == w, ">": vals > w, "<": vals < w, ">=": vals >= w, "<=": vals <= w}[
                            op
                        ]
                else:
                    continue  # integers, strings, times: filtering again changes nothing
                mask &= valid & m
    return table if mask.all() else table.filter(pa.array(mask))


def one_column_failure(layout: Sequence[ResultColumn], select: Sequence[str] | None) -> AttributeError | None:
    """cave_quirks: the real server fails a query that selects exactly one SQL column (one
    non-position column without a supervoxel partner): ``fix_columns_with_query`` then reads the
    column's type as the query's model (``getattr(BigInteger(), 'id')``) and its catch-all sends
    the ``AttributeError`` as a 500."""
    if select is None or len(select) != 1:
        return None
    rc = next((r for r in layout if r.name == select[0]), None)
    if rc is None or rc.column.kind is ColumnKind.POSITION:
        return None
    sql_type = {
        ColumnKind.INT: "BigInteger" if rc.column.role in _BIG_INTS else "Integer",
        ColumnKind.FLOAT: "Float",
        ColumnKind.STRING: "String",
        ColumnKind.BOOL: "Boolean",
        ColumnKind.DATETIME: "DateTime",
    }.get(rc.column.kind, "String")
    return AttributeError(f"'{sql_type}' object has no attribute '{rc.column.name}'")


def real_warnings(plan: Plan, others: Sequence[str], limits: Sequence[str], *, direct: bool) -> list[str]:
    """cave_quirks: the ``Warning`` lines in the real server's order and words: a table query
    (``generate_simple_query_dataframe``) row limit, owner notices, CSV; a view
    (``assemble_view_dataframe``) CSV, row limit, notices; a join
    (``generate_complex_query_dataframe``) notices, suffixes, CSV, select_columns, row limit; a
    live query (``assemble_live_query_dataframe``) pending lookups and row limits, then the CSV
    warning twice. ``others`` are the plan's own warnings (notices, deprecations, pending lookups)."""
    notices = [w for w in others if w.startswith("Table Owner Notice on ")]
    rest = [w for w in others if w not in notices and w not in (SUFFIXES_DEPRECATION, SELECT_DEPRECATION)]
    q = plan.query
    if plan.live:
        return [*rest, *limits, *([] if direct else [REAL_CSV_WARNING] * 2)]
    if q.kind == "view":
        return [*([] if direct else [REAL_CSV_WARNING]), *limits, *notices, *rest]
    if q.join is not None:
        return [
            *notices,
            *([REAL_SUFFIXES_WARNING] if SUFFIXES_DEPRECATION in others else []),
            *([] if direct else [REAL_JOIN_CSV_WARNING]),
            *([REAL_SELECT_WARNING] if SELECT_DEPRECATION in others else []),
            *limits,
            *rest,
        ]
    return [*limits, *notices, *([] if direct else [REAL_CSV_WARNING]), *rest]


def _version_with(client: Any, table: str, preferred: int) -> int:
    """A valid version whose tables include ``table`` (newest first), for the filter class layout."""
    versions = [preferred, *reversed(client.get_versions())]
    for v in dict.fromkeys(versions):
        if table in client.get_tables(v):
            return v
    client.check_table(table, preferred)  # in no version: raises UnknownTableError (close names)
    raise UnknownTableError(f"no valid version has a table {table!r}")


def _parse_timestamp(value: Any) -> _dt.datetime:
    """The live body's ``timestamp``: ISO-8601 (naive = UTC, as the server's marshmallow field)."""
    if not isinstance(value, str):
        raise WireError(f"timestamp: {value!r} is not an ISO-8601 datetime string")
    try:
        return _time.parse_utc(value.strip())
    except ValueError:
        raise WireError(f"timestamp: {value!r} is not an ISO-8601 datetime string") from None


# --------------------------------------------------------------------------- encoding


def arrow_compression(
    accept_encoding: str | None, ipc_compress: bool = True
) -> Literal["lz4", "zstd"] | None:
    """Arrow buffer compression as the CAVE server picks it: ``lz4`` first, then ``zstd``
    (case-sensitive substring checks of the request's ``Accept-Encoding``)."""
    if not ipc_compress:
        return None
    a = accept_encoding or ""
    if "lz4" in a:
        return "lz4"
    if "zstd" in a:
        return "zstd"
    return None


def real_columns(plan: Plan, table: pa.Table) -> pa.Table:
    """cave_quirks: the columns the real server has that the plan's layout does not say. Its
    frozen (merged) tables have no ``created`` (``merge_tables`` drops it), nor has a live answer;
    a live answer has each table's ``valid``, last: true for the rows of its materialized part,
    null for the newer rows ``combine_queries`` appends from the live database, whose frame has no
    ``valid``. Views are left as they are (their SQL says their columns)."""
    if plan.query.count or plan.query.kind == "view":
        return table
    names = {rc.name: plan.rename.get(rc.name, rc.name) for rc in plan.layout}
    created = [names[rc.name] for rc in plan.layout if rc.column.name == "created"]
    table = table.drop_columns([c for c in created if c in table.column_names])
    if plan.live:
        sel = plan.query.select_columns
        for rc in plan.layout:
            name = names[rc.name]
            if (
                rc.column.name == "valid"
                and name not in table.column_names
                and (sel is None or rc.name in sel)
            ):
                newer = plan.newer if plan.newer is not None else np.zeros(table.num_rows, dtype=bool)
                table = table.append_column(name, pa.array(np.ones(table.num_rows, dtype=bool), mask=newer))
    return table


@functools.lru_cache(maxsize=256)  # a table's answers share one schema (names and types)
def _pandas_columns(
    fields: tuple[tuple[str, pa.DataType], ...], quirks: bool = False, count: bool = False
) -> tuple[dict, ...]:
    """The ``columns`` of the ``pandas`` schema metadata. By default with the nullable extension
    dtypes a pandas-built table of the CAVE server's columns has (``Int64``, ``boolean``); with
    ``quirks`` as the real server's ``RecordBatch.from_pandas`` of its ``dtype_map`` frame writes
    them: integers and floats by width (``Int32``, ``Float32``), strings as ``string``, and a count
    as plain NumPy ``int64`` (its frame is not retyped). Keyed by the fields' names and types: a
    schema with metadata is not hashable before pyarrow 22."""
    cols = []
    for name, t in fields:
        meta = None
        if pa.types.is_integer(t):
            pt, nt = "int64", "Int64"
            if quirks:
                pt = f"{'u' if pa.types.is_unsigned_integer(t) else ''}int{t.bit_width}"
                nt = pt if count else pt.capitalize()
        elif pa.types.is_boolean(t):
            pt, nt = "bool", "boolean"
        elif pa.types.is_floating(t):
            pt, nt = "float64", "float64"
            if quirks and pa.types.is_float32(t):
                pt, nt = "float32", "Float32"
        elif pa.types.is_timestamp(t):
            pt, nt = (
                ("datetimetz", f"datetime64[{t.unit}]") if t.tz else ("datetime", f"datetime64[{t.unit}]")
            )
            meta = {"timezone": t.tz} if t.tz else None
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            pt, nt = "unicode", "string" if quirks else "object"
        else:
            pt, nt = "object", "object"
        cols.append({"name": name, "field_name": name, "pandas_type": pt, "numpy_type": nt, "metadata": meta})
    return tuple(cols)


def _pandas_metadata(schema: pa.Schema, quirks: bool = False, *, rows: int = 0, count: bool = False) -> bytes:
    """The ``pandas`` schema metadata a pandas-built table carries (see :func:`_pandas_columns`);
    with ``quirks`` also the frame's ``RangeIndex`` (``rows`` long) as ``from_pandas`` records it."""
    index = [{"kind": "range", "name": None, "start": 0, "stop": rows, "step": 1}] if quirks else []
    doc = {
        "index_columns": index,
        "column_indexes": [],
        "columns": list(_pandas_columns(tuple((f.name, f.type) for f in schema), quirks, count)),
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return json.dumps(doc).encode()


#: answers smaller than this (raw Arrow bytes) are sent with uncompressed buffers: compressing
#: a few hundred bytes costs more than it saves (as ``gzip_min_length`` in web servers); Arrow
#: readers see the difference only in the stream's metadata
SMALL_ANSWER = 16 * 1024


def encode_arrow(
    table: pa.Table, compression: Literal["lz4", "zstd"] | None, *, quirks: bool = False, count: bool = False
) -> bytes:
    """One Arrow IPC stream with one record batch (buffers compressed with ``compression``, unless
    the answer is under :data:`SMALL_ANSWER` bytes); ``quirks``/``count``: the pandas metadata as
    the real server writes it (:func:`_pandas_metadata`)."""
    size = table.nbytes
    if size < SMALL_ANSWER:
        compression = None
    meta = dict(table.schema.metadata or {})
    meta[b"pandas"] = _pandas_metadata(table.schema, quirks, rows=table.num_rows, count=count)
    table = table.replace_schema_metadata(meta).combine_chunks()
    sink = pa.BufferOutputStream()
    # small answers are written faster without pyarrow's thread pool
    opts = pa.ipc.IpcWriteOptions(compression=compression, use_threads=size > 65536)
    with pa.ipc.new_stream(sink, table.schema, options=opts) as writer:
        if table.num_rows:
            for batch in table.to_batches(max_chunksize=max(table.num_rows, 1)):
                writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def encode_json_records(table: pa.Table, epoch_ms: bool = False) -> bytes:
    """``DataFrame.to_json(orient="records")`` of the result, as the server's JSON path sends it:
    datetimes as ISO text, or (``epoch_ms``: what the real server's ``to_json`` default does) as
    epoch milliseconds."""
    df = table.to_pandas()
    return df.to_json(orient="records", date_format="epoch" if epoch_ms else "iso").encode()


def maybe_gzip(body: bytes, accept_encoding: str | None) -> tuple[bytes, list[tuple[str, str]]]:
    """Whole-body gzip when the request accepts it (case-insensitive), as the server does."""
    if "gzip" in (accept_encoding or "").lower():
        return gzip.compress(body, compresslevel=5), [
            ("Content-Encoding", "gzip"),
            ("Vary", "Accept-Encoding"),
        ]
    return body, []


def jsonable(v: Any) -> Any:
    """Metadata values → JSON (datetimes as CAVE's naive-UTC ISO strings with microseconds)."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, _dt.datetime):
        return cave_time(v)
    return v


def cave_time(t: _dt.datetime | None, quirks: bool = False) -> str | None:
    """Naive UTC ISO text; always with microseconds (the real server drops a zero fraction,
    which CAVEclient's strict parser then rejects: emulated with ``quirks``)."""
    if t is None:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return t.isoformat() if quirks else t.strftime("%Y-%m-%dT%H:%M:%S.%f")


__all__ += [
    "LIMIT_WARNING",
    "LIVE_LIMIT_WARNING",
    "LIVE_PROD_LIMIT_WARNING",
    "REAL_ARROW_FORMAT_WARNING",
    "cave_time",
    "jsonable",
    "maybe_gzip",
    "real_warnings",
]
