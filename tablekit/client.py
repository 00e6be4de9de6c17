"""The Client: versions, metadata, the tables/views namespaces and the classic dict API.

Every query path (DSL, ``query_table``, ``synapse_query``, ``query_view``, live queries,
``tablekit serve``) ends in :meth:`Client.build_query` → :meth:`Client.execute` → backend →
:func:`tablekit.frames.to_output`.
"""

from __future__ import annotations

import datetime as _dt
import json
import numbers
import uuid
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from . import _time, _values
from .backends.base import Backend, QueryResult, count_table
from .classic import ClassicMixin
from .errors import (
    HTTPError,
    QueryError,
    SchemaError,
    UnknownTableError,
    UnsupportedError,
    VersionError,
    user_stacklevel,
)
from .filters import FilterInfo, TableFilter, check_flags, introspect, make_filter_class
from .frames import to_output
from .query import OutputOptions, Predicate, Query, QueryOptions
from .query.layout import ResultColumn, check_select, layout, query_layout
from .query.pending import Pending, find_pending, pending_text, refusal, supervoxel_columns
from .roots import RootsMixin, check_roots_valid
from .schema import (
    ColumnKind,
    ColumnRole,
    TableSpec,
)
from .tables import Tables, Views, namespace_attribute

__all__ = ["Answer", "Client"]


@attrs.frozen(eq=False)
class Answer:
    """What :meth:`Client.answer` returns: one query's answer as Arrow, before it becomes a
    DataFrame. ``table`` has the result columns (:attr:`layout`, after ``select_columns``) with
    positions split into ``<col>_x/_y/_z`` and scaled to ``resolution``; ``warnings`` are the
    answer's notices (table notices, truncation, pending lookups left out), not yet issued;
    ``request`` is what was run (SQL or HTTP), ``pages`` how many backend requests made it;
    ``owned``: nothing else holds the table's buffers. ``pending``: for a live query, the rows the
    pending-lookup rule found (:class:`tablekit.query.pending.Pending`), else None."""

    table: pa.Table
    layout: tuple[ResultColumn, ...]
    resolution: tuple[float, float, float] | None = None
    warnings: tuple[str, ...] = ()
    request: Mapping[str, Any] = attrs.field(factory=dict)
    pages: int = 1
    owned: bool = False
    pending: Pending | None = None


class Client(ClassicMixin, RootsMixin):
    """A connection to one datastack through one backend. Make one with :func:`tablekit.connect`.

    ``client.tables`` / ``client.views`` hold one filter class per table / view;
    ``client.version`` is the materialization version every query uses unless told otherwise
    (default: the latest valid one).
    """

    def __init__(self, backend: Backend, *, version: int | None = None, expired_versions: str = "error"):
        if expired_versions not in ("error", "live"):
            raise QueryError(f"expired_versions must be 'error' or 'live', got {expired_versions!r}")
        self._backend = backend
        self._pickle_id = uuid.uuid4().hex  # names this client in pickles of its filter objects
        _CLIENTS[self._pickle_id] = self
        #: what a query of an expired version does: "error" (default) or "live" (the same moment as
        #: a live query, recorded in df.attrs["substitution"])
        self.expired_versions = expired_versions
        self._version: int | None = None
        self._specs: dict[int, dict[str, Any]] = {}
        self._view_specs: dict[int, dict[str, TableSpec]] = {}
        self._namespaces: dict[tuple[str, int], Any] = {}
        if version is not None:
            self.version = version

    def __reduce__(self) -> Any:
        """Pickled as its backend and options; unpickled in the same process it is this client
        again (so filter classes stay the same), elsewhere one new client per pickled client."""
        return (_reconnect, (self._pickle_id, self._backend, self._version, self.expired_versions))

    # ------------------------------------------------------------------ basics
    @property
    def datastack(self) -> str:
        """The datastack's name."""
        return self._backend.datastack

    @property
    def backend(self) -> Backend:
        return self._backend

    def __repr__(self) -> str:
        return f"<tablekit.Client datastack={self.datastack!r} version={self.version} backend={self._backend.name}:{self._backend.location}>"

    @property
    def info(self) -> dict[str, Any]:
        """Datastack info (``synapse_table``, ``soma_table``, ``viewer_resolution`` …)."""
        return dict(self._backend.datastack_info())

    def refresh(self) -> None:
        """Forget cached versions, metadata, schemas and filter classes (also the backend's on-disk
        cache), so the next access sees the datastack as it is now."""
        if self._backend.capabilities.refresh:
            self._backend.refresh()  # type: ignore[attr-defined]
        self._specs.clear()
        self._view_specs.clear()
        self._namespaces.clear()

    def get_datastack_info(self) -> dict[str, Any]:
        """Same as :attr:`info`."""
        return self.info

    # ------------------------------------------------------------------ versions
    def get_versions_metadata(self, expired: bool = False) -> list[dict[str, Any]]:
        """Metadata of every version (``time_stamp``, ``expires_on``, ``valid``, ``status``)."""
        check_flags(self.datastack, expired=expired)
        return [dict(v) for v in self._backend.versions_metadata(expired=expired)]

    def get_versions(self, expired: bool = False) -> list[int]:
        """Version numbers, ascending. ``expired=True`` includes expired ones."""
        check_flags(self.datastack, expired=expired)
        return [v["version"] for v in self._backend.versions_metadata(expired=expired)]

    def get_version_metadata(self, version: int | None = None) -> dict[str, Any]:
        """Metadata of one version (default: the client's)."""
        v = self._version_or_default(version)
        for m in self._backend.versions_metadata(expired=True):
            if m["version"] == v:
                return dict(m)
        raise self._no_version(v)

    def get_timestamp(self, version: int | None = None) -> _dt.datetime:
        """The snapshot time (aware, UTC) of a version (default: the client's)."""
        return self.get_version_metadata(version)["time_stamp"]

    def _no_version(self, v: Any) -> VersionError:
        valid = self.get_versions()
        expired = sorted(set(self.get_versions(expired=True)) - set(valid))
        return VersionError(
            f"{self.datastack}: no materialization version {v!r}. Valid versions: {valid}"
            + (f"; expired: {expired}" if expired else "")
        )

    @property
    def version(self) -> int:
        """The materialization version queries use by default; settable."""
        if self._version is None:
            valid = self.get_versions()
            if not valid:
                raise VersionError(f"{self.datastack}: the datastack has no valid materialization version")
            self._version = valid[-1]
        return self._version

    @version.setter
    def version(self, value: int | None) -> None:
        if value is None:
            self._version = None
            return
        self._version = self.check_version(value)

    @property
    def timestamp(self) -> _dt.datetime:
        """The snapshot time of :attr:`version`."""
        return self.get_timestamp(self.version)

    def check_version(self, value: Any) -> int:
        """``value`` as an int if it names a valid (queryable) materialization version;
        :class:`VersionError` naming the valid ones otherwise (unknown, expired, not an int)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise VersionError(f"{self.datastack}: a materialization version is an int, got {value!r}")
        v = int(value)
        meta = {m["version"]: m for m in self._backend.versions_metadata(expired=True)}
        if v not in meta:
            raise self._no_version(v)
        if not meta[v].get("valid", True):
            ts = meta[v]["time_stamp"]
            raise VersionError(
                f"{self.datastack}: version {v} has expired (status {meta[v].get('status')}); its snapshot "
                f"is gone. Query a valid version ({self.get_versions()}) or ask for the same moment live: "
                f".query(timestamp={ts.isoformat()!r})"
            )
        return v

    def _version_or_default(self, version: int | None) -> int:
        """``version`` (default: the client's), refused unless it is an int naming a version
        (expired ones included); a wrong type is refused before any request."""
        if version is None:
            return self.version
        if isinstance(version, bool) or not isinstance(version, numbers.Integral):
            raise VersionError(
                f"{self.datastack}: a materialization version is an int, got {_values.short(version)} "
                f"({type(version).__name__}); see client.get_versions()"
            )
        v = int(version)
        if v not in {m["version"] for m in self._backend.versions_metadata(expired=True)}:
            raise self._no_version(v)
        return v

    # ------------------------------------------------------------------ specs
    def _table_specs(self, version: int) -> dict[str, Any]:
        """``{name: raw metadata | TableSpec}``; specs are built on first use."""
        if version not in self._specs:
            self._specs[version] = {
                m.get("annotation_table") or m["table_name"]: m
                for m in self._backend.tables_metadata(version)
            }
        return self._specs[version]

    def _spec(self, table: str, version: int) -> TableSpec:
        specs = self._table_specs(version)
        if not isinstance(table, str) or table not in specs:
            raise self._unknown_table(table, version)
        s = specs[table]
        if not isinstance(s, TableSpec):
            st = s.get("schema_type") or s.get("schema")
            if not isinstance(st, str) or not st:
                raise SchemaError(
                    f"{self.datastack} v{version}: the metadata of table {table!r} names no schema_type "
                    f"(got {st!r}), so its columns are unknown. The datastack's table metadata is damaged: "
                    "client.refresh() reads it again; if it persists, report it to the datastack's maintainers"
                )
            s = specs[table] = self._backend.table_spec(table, version)  # the backend's one spec
        return s

    def check_table(self, table: Any, version: int | None = None) -> str:
        """``table`` if a version (default: the client's) has a table of that name, without reading
        its schema; :class:`UnknownTableError` otherwise, naming close names (or saying it is a view)."""
        v = self._version_or_default(version)
        if isinstance(table, str) and table in self._table_specs(v):
            return table
        raise self._unknown_table(table, v)

    def _unknown_table(self, table: Any, version: int) -> UnknownTableError:
        import difflib

        if not isinstance(table, str):
            return UnknownTableError(
                f"{self.datastack}: a table name is a str, got {_values.short(table)} "
                f"({type(table).__name__}). See client.get_tables() or client.tables.find('...')"
            )
        names = list(self._table_specs(version))
        close = difflib.get_close_matches(table, names, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        views = self._views(version) if not close else {}
        if table in views:
            hint = f" {table!r} is a view: client.views[{table!r}] or client.query_view({table!r})."
        return UnknownTableError(
            f"{self.datastack} v{version}: no table named {_values.short(table)}.{hint} See client.get_tables() "
            "or client.tables.find('...')"
        )

    def _views(self, version: int) -> dict[str, TableSpec]:
        """The views of ``version``. A failed request for them (an optional endpoint: any
        :class:`HTTPError`) warns and gives no views for this call only: it is not remembered, so the next call asks again."""
        if version not in self._view_specs:
            try:
                views = self._backend.view_specs(version)  # the backend's, shared with its compiler
            except HTTPError as e:  # an optional endpoint that fails must never break tables
                # (only the failures of a request: a bug, or a refused or damaged view file of a
                # local datastack, DatastackError, is raised as it is)
                warnings.warn(
                    f"{self.datastack}: views unavailable ({e}); they are asked for again on next use",
                    stacklevel=user_stacklevel(),
                )
                return {}
            self._view_specs[version] = dict(views)
        return self._view_specs[version]

    def spec(self, table: str, version: int | None = None, *, view: bool = False) -> TableSpec:
        """The :class:`~tablekit.schema.TableSpec` of a table (or, with ``view=True``, a view) in a
        version (default: the client's): its columns, their kinds and roles, its resolution."""
        v = self._version_or_default(version)
        if view:
            views = self._views(v)
            if not isinstance(table, str) or table not in views:
                raise self._unknown_view(table, v)
            return views[table]
        return self._spec(table, v)

    def filter_class(
        self, table: str, version: int | None = None, *, view: bool = False, merge_reference: bool = True
    ) -> type[TableFilter]:
        """The filter class of a table (``client.tables[table]`` at the client's version) or, with
        ``view=True``, of a view. A reference table is merged with its target unless
        ``merge_reference=False``."""
        v = self._version_or_default(version)
        return self._view_class(table, v) if view else self._filter_class(table, v, merge_reference)

    def join_class(self, table: str, target: str, version: int | None = None) -> type[TableFilter]:
        """A filter class of ``table`` merged with ``target`` on ``table.target_id = target.id`` (as
        the CAVE join endpoint does for any pair): ``target``'s columns keep their names, the clashing
        ones of ``table`` get ``_ref``."""
        v = self._version_or_default(version)
        spec = self._spec(table, v)
        if spec.reference_table == target:
            return self._filter_class(table, v, True)
        key = (f"j:{table}:{target}", v)
        if key not in self._namespaces:
            self._namespaces[key] = make_filter_class(spec, self._spec(target, v), self, v)
        return self._namespaces[key]

    def _filter_class(self, table: str, version: int, merge_reference: bool = True) -> type[TableFilter]:
        key = (f"t:{table}:{merge_reference}", version)
        if key not in self._namespaces:
            spec = self._spec(table, version)
            target = (
                self._spec(spec.reference_table, version)
                if spec.reference_table and merge_reference
                else None
            )
            self._namespaces[key] = make_filter_class(spec, target, self, version)
        return self._namespaces[key]

    def _unknown_view(self, view: Any, version: int) -> UnknownTableError:
        err = (
            self.views._unknown(view)
            if version == self.version
            else UnknownTableError(f"{self.datastack} v{version}: no view named {_values.short(view)}")
        )
        if isinstance(view, str) and view in self._table_specs(version):
            err = UnknownTableError(
                f"{err} {view!r} is a table: client.tables[{view!r}] or client.query_table({view!r})"
            )
        return err

    def _view_class(self, view: str, version: int) -> type[TableFilter]:
        key = (f"v:{view}", version)
        if key not in self._namespaces:
            views = self._views(version)
            if not isinstance(view, str) or view not in views:
                raise self._unknown_view(view, version)
            self._namespaces[key] = make_filter_class(views[view], None, self, version)
        return self._namespaces[key]

    # ------------------------------------------------------------------ namespaces
    @namespace_attribute
    def tables(self) -> Tables:
        """One filter class per table of :attr:`version`: ``client.tables.<name>(filters).query()``."""
        v = self.version
        key = ("tables", v)
        if key not in self._namespaces:
            names = list(self._table_specs(v))
            self._namespaces[key] = Tables(
                names,
                lambda n: self._filter_class(n, v),
                lambda n: _first_line(
                    self._table_specs(v)[n].description
                    if isinstance(self._table_specs(v)[n], TableSpec)
                    else self._table_specs(v)[n].get("description")
                ),
            )
        return self._namespaces[key]

    @namespace_attribute
    def views(self) -> Views:
        """One filter class per view of :attr:`version`: ``client.views.<name>(filters).query()``."""
        v = self.version
        key = ("views", v)
        if key not in self._namespaces:
            views = self._views(v)
            names = Views(
                list(views), lambda n: self._view_class(n, v), lambda n: _first_line(views[n].description)
            )
            if v not in self._view_specs:  # the views could not be read: ask again next time
                return names
            self._namespaces[key] = names
        return self._namespaces[key]

    # ------------------------------------------------------------------ metadata API
    def table_specs(self, version: int | None = None) -> dict[str, TableSpec]:
        """The :class:`~tablekit.schema.TableSpec` of every table in a version (default: the client's)."""
        v = self._version_or_default(version)
        return {name: self._spec(name, v) for name in self.get_tables(v)}

    def view_specs(self, version: int | None = None) -> dict[str, TableSpec]:
        """The :class:`~tablekit.schema.TableSpec` of every view in a version (default: the client's)."""
        return dict(self._views(self._version_or_default(version)))

    def get_tables(self, version: int | None = None) -> list[str]:
        """Names of the tables in a version (default: the client's), sorted."""
        return sorted(self._table_specs(self._version_or_default(version)))

    def get_table_metadata(self, table_name: str, version: int | None = None) -> dict[str, Any]:
        """A table's metadata (``voxel_resolution`` as ``[x, y, z]``, ``schema_type``, ``description`` …)."""
        v = self._version_or_default(version)
        return dict(self._spec(table_name, v).metadata)

    def get_annotation_count(self, table_name: str, version: int | None = None) -> int:
        """Number of rows of a table in a version (reference tables included)."""
        v = self._version_or_default(version)
        self._spec(table_name, v)
        return int(self._backend.annotation_count(table_name, v))

    def get_views(self, version: int | None = None) -> list[str]:
        """Names of the views in a version, sorted."""
        return sorted(self._views(self._version_or_default(version)))

    def get_view_metadata(self, view_name: str, version: int | None = None) -> dict[str, Any]:
        """A view's metadata."""
        v = self._version_or_default(version)
        self._view_class(view_name, v)
        return dict(self._views(v)[view_name].metadata)

    def get_view_schema(self, view_name: str, version: int | None = None) -> dict[str, Any]:
        """A view's columns ``{column: {"type": …}}``."""
        v = self._version_or_default(version)
        self._view_class(view_name, v)
        return dict(self._backend.view_schemas(v)[view_name])

    def get_view_schemas(self, version: int | None = None) -> dict[str, Any]:
        """Every view's columns."""
        return dict(self._backend.view_schemas(self._version_or_default(version)))

    # ------------------------------------------------------------------ the pipeline
    def build_query(
        self,
        source: TableFilter | type[TableFilter],
        *,
        predicates: Sequence[Predicate] | None = None,
        options: QueryOptions | None = None,
        output: OutputOptions | None = None,
        warn: bool = True,
    ) -> Query:
        """The :class:`~tablekit.query.Query` a filter object (or class, with ``predicates``) asks
        with these options, resolved against the datastack: the version (default: the one the
        filter class was built for) or the moment of a live query, root-id filters checked at
        that moment, ``select_columns`` checked against the result columns, the result layout
        derived (``query.layout``). Nothing runs.
        ``client.tables.T(...).to_query(**options)`` is the same with keyword options.

        What building changed that the asker should know (root ids dropped with
        ``allow_invalid_root_ids=True``) is ``query.notes``, and issued as warnings unless
        ``warn=False`` (for tools that report the notes themselves, as ``tablekit serve`` does)."""
        info = introspect(source)
        if predicates is None:
            predicates = source.predicates if isinstance(source, TableFilter) else ()
        o = options if options is not None else QueryOptions()
        out = output if output is not None else OutputOptions()
        table = info.table
        ts = None
        v: int | None = None
        substituted: int | None = None
        if o.timestamp is not None:
            if o.materialization_version is not None:
                raise QueryError(
                    f"{table}: pass either materialization_version or timestamp, not both "
                    "(a version is itself a moment: its timestamp is client.get_timestamp(v))"
                )
            self._check_live(info)
            ts = self._check_timestamp(o.timestamp, table)
        elif o.materialization_version is None:
            v = info.version
        else:
            v, ts = self._resolve_version(o.materialization_version)
            if ts is not None:
                substituted = v
                v = None
                self._check_live(info)
                ts = self._check_timestamp(ts, table)
            elif v != info.version:
                self._check_same_layout(info, v)
        preds = tuple(predicates)
        notes: tuple[str, ...] = ()
        if ts is not None:
            preds, notes = self._live_roots(table, preds, info.layout, ts, o.allow_invalid_root_ids)
        sel = check_select(table, o.select_columns, info.layout)
        query = Query(
            datastack=self.datastack,
            table=table,
            kind=info.kind,  # type: ignore[arg-type]
            join=info.join,
            predicates=preds,
            select_columns=sel,
            offset=o.offset,
            limit=o.limit,
            version=v,
            timestamp=ts,
            desired_resolution=o.desired_resolution,
            count=o.get_counts,
            random_sample=o.random_sample,
            substituted_version=substituted,
            complete=o.complete,
            allow_missing_lookups=o.allow_missing_lookups,
            output=out,
            schema_version=info.version,
            notes=notes,
        )
        specs = (
            {info.spec.name: info.spec}
            if info.target is None
            else {s.name: s for s in (info.spec, info.target)}
        )
        query = attrs.evolve(query, layout=query_layout(query, specs))
        if warn:
            for note in notes:
                warnings.warn(note, stacklevel=user_stacklevel())
        return query

    def answer(self, query: Query, *, keep_pending: bool = False) -> Answer:
        """Run a :class:`~tablekit.query.Query` and return its :class:`Answer`: the Arrow table as
        the backend gives it (result column names, positions split into ``_x/_y/_z``) with its
        warnings *returned*, not issued, for tools that shape answers themselves (``tablekit
        serve``). Live queries apply the pending-lookup policy (``allow_missing_lookups``,
        :mod:`tablekit.query.pending`) unless ``keep_pending``: then rows waiting for their lookup
        stay in the table and :attr:`Answer.pending` says which (the supervoxel ids are then part of
        the table even when ``select_columns`` leaves them out), so the caller applies its own."""
        if not isinstance(query, Query):
            raise TypeError(
                f"execute() takes a tablekit Query (T(...).to_query()), got {_values.short(query)}"
            )
        if query.datastack != self.datastack:
            raise QueryError(
                f"{query.table}: the query is for datastack {query.datastack!r}, this client serves {self.datastack!r}"
            )
        cols = self._layout_of(query)
        pending = None
        if query.live and query.count:
            result = self._live_count(query, cols)
        elif query.live:
            result, pending = self._pending_lookups(query, cols, keep=keep_pending)
        else:
            result = self._backend.execute(query)
        return Answer(
            table=result.table,
            layout=cols,
            resolution=result.resolution,
            warnings=tuple(result.warnings),
            request=result.request,
            pages=result.pages,
            owned=result.owned,
            pending=pending,
        )

    def execute(self, query: Query, *, given: Mapping[str, Any] | None = None) -> Any:
        """Run a :class:`~tablekit.query.Query` (from :meth:`build_query` or ``to_query``) and
        return its answer as ``query.output`` says: a DataFrame (default) or a ``pyarrow.Table``,
        with provenance in ``df.attrs`` (``given``: the filters as the user wrote them, recorded
        there). Warnings of the answer (table notices, substitutions) are issued as Python warnings.
        Live queries apply the pending-lookup policy (``allow_missing_lookups``) to every backend.
        :meth:`answer` is the same question answered as Arrow with the warnings returned."""
        result = self.answer(query)
        for w in result.warnings:
            warnings.warn(w, stacklevel=user_stacklevel())
        out = query.output
        positions = [c.name for c in result.layout if c.column.kind is ColumnKind.POSITION]
        meta = self._provenance(query, result, given or {}) if out.metadata else None
        return to_output(
            result.table,
            position_names=positions,
            split_positions=out.split_positions,
            output=out.output,
            attrs=meta,
            adopt=result.owned,
        )

    def explain(self, query: Query) -> str:
        """What :meth:`execute` would run for ``query`` (SQL and parameters, or the HTTP request),
        as indented JSON, without running it."""
        return json.dumps(self._backend.explain(query), indent=2, default=str)

    def _layout_of(self, query: Query) -> tuple[ResultColumn, ...]:
        """The result columns of ``query``, from the specs of the version it was validated at
        (``query.layout``, derived once in :meth:`build_query`)."""
        if query.layout is not None and query.layout.asks(query):
            return query.layout.columns
        v = query.schema_version if query.schema_version is not None else query.version
        if v is None:
            raise QueryError(f"{query.table}: the query names no version; build it with client.build_query")
        if query.kind == "view":
            return layout(self.spec(query.table, v, view=True))
        target = None if query.join is None else self._spec(query.join.target_table, v)
        return layout(self._spec(query.table, v), target)

    def _resolve_version(self, version: Any) -> tuple[int, _dt.datetime | None]:
        """``(version, None)``, or ``(version, its timestamp)`` for an expired version when
        :attr:`expired_versions` is ``"live"``."""
        try:
            return self.check_version(version), None
        except VersionError:
            meta = {m["version"]: m for m in self._backend.versions_metadata(expired=True)}
            v = (
                int(version)
                if isinstance(version, numbers.Integral) and not isinstance(version, bool)
                else None
            )
            if self.expired_versions == "live" and v in meta and not meta[v].get("valid", True):
                return v, meta[v]["time_stamp"]
            raise

    def _check_same_layout(self, info: FilterInfo, v: int) -> None:
        """A filter class built for one version may query another only if its columns are the same there."""
        if info.kind == "table":
            spec = self._spec(info.table, v)
        else:
            spec = self._views(v).get(info.table)
            if spec is None:
                raise UnknownTableError(f"{self.datastack} v{v}: no view named {info.table!r}")
        target = self._spec(info.target.name, v) if info.target is not None else None
        here = [(c.name, c.column.kind) for c in layout(spec, target)]
        if here != [(c.name, c.column.kind) for c in info.layout]:
            raise QueryError(
                f"{info.table}: its columns differ between version {info.version} and version {v}; set "
                f"client.version = {v} and build the filter from client.tables.{info.table}, or use query_table"
            )

    def _kind_of(self, table: str, version: int) -> str:
        return "table" if table in self._table_specs(version) else "view"

    def _live_roots(
        self,
        table: str,
        predicates: tuple[Predicate, ...],
        cols: tuple[ResultColumn, ...],
        ts: _dt.datetime,
        allow_invalid: bool,
    ) -> tuple[tuple[Predicate, ...], tuple[str, ...]]:
        """Root-id filters of a live query must name roots valid at ``ts``; the filters, and the
        notes saying which ids were dropped (``allow_invalid``)."""
        roots = {(c.table, c.column.name) for c in cols if c.column.role is ColumnRole.ROOT_ID}
        out: list[Predicate] = []
        notes: list[str] = []
        history = self._backend.history if self._backend.capabilities.history else None  # type: ignore[attr-defined]
        for p in predicates:
            if (
                (p.table, p.column) not in roots
                or history is None
                or p.op not in ("==", "in", "!=", "not in")
            ):
                out.append(p)
                continue
            ids = [p.value] if p.op in ("==", "!=") else list(p.value)
            bad = check_roots_valid(history, table, p.column, ids, ts)
            if not bad:
                out.append(p)
                continue
            text = f"at {ts.isoformat()}: " + "; ".join(f"{k}: {v}" for k, v in bad.items())
            if not allow_invalid:
                raise VersionError(
                    f"{table}: {p.column} filter names root ids that are not valid at the query time — {text}. "
                    "Map them with client.get_latest_roots(id, timestamp=...) / client.get_past_ids(...), "
                    "check with client.is_latest_roots(ids, timestamp=...), or pass allow_invalid_root_ids=True "
                    "to drop them"
                )
            notes.append(f"{table}: dropped invalid root ids from the {p.column} filter ({text})")
            dropped = {i for v in bad.values() for i in v}
            keep = tuple(i for i in ids if i not in dropped)
            if p.op in ("==", "in"):
                out.append(
                    Predicate(p.table, p.column, "in", keep)
                )  # nothing left → no rows, never "no filter"
            elif keep:
                out.append(Predicate(p.table, p.column, "not in", keep))
        return tuple(out), tuple(notes)

    def _check_live(self, info: Any) -> None:
        """Refuse a live query the backend cannot answer (its :class:`Capabilities`), or of a view
        that is not live-compatible: the one place this is decided, before any I/O."""
        caps, table = self._backend.capabilities, info.table
        if not caps.live:
            raise UnsupportedError(
                f"{table}: the {self._backend.name} backend cannot answer live (timestamp) queries yet; "
                "query a materialization version instead (materialization_version=...)"
            )
        if info.kind != "view":
            return
        if not info.live_compatible:
            raise UnsupportedError(
                f"view {table!r} is not live-compatible (its metadata says live_compatible=false); "
                "query it at a materialization version instead"
            )
        if not caps.live_views:
            raise UnsupportedError(
                f"view {table!r}: the {self._backend.name} backend has no live endpoint for views; query "
                "the view at a materialization version (materialization_version=...)"
            )

    def _check_timestamp(self, timestamp: Any, table: str) -> _dt.datetime:
        now = _dt.datetime.now(_dt.timezone.utc)
        ts = (
            now
            if _time.is_now(timestamp)
            else _time.utc_timestamp(timestamp, what=f"{table}: timestamp", error=VersionError)
        )
        first = min((m["time_stamp"] for m in self._backend.versions_metadata(expired=True)), default=None)
        if first is not None and ts < first:
            raise VersionError(
                f"{table}: timestamp {ts.isoformat()} is before the first version ({first.isoformat()}); "
                f"valid timestamps run from {first.isoformat()} to now"
            )
        if ts > now + _dt.timedelta(seconds=5):
            raise VersionError(
                f"{table}: timestamp {ts.isoformat()} is in the future (now is {now.isoformat()})"
            )
        return ts

    def _pending_lookups(
        self, query: Query, cols: tuple[ResultColumn, ...], *, keep: bool = False
    ) -> tuple[QueryResult, Pending]:
        """Run a live query and deal with annotations whose supervoxel lookup is still pending
        (:mod:`tablekit.query.pending`): refuse them, or leave them out with a warning when
        ``allow_missing_lookups``; ``keep``: leave them in (and the supervoxel ids too)."""
        svs = supervoxel_columns(cols)
        extra: list[str] = []
        q = query
        if query.select_columns is not None:  # look at the supervoxel ids even when not selected
            extra = [c for c in svs if c not in query.select_columns]
            if extra:
                q = attrs.evolve(q, select_columns=(*query.select_columns, *extra))
        result = self._backend.execute(q)
        table = result.table
        pending = find_pending(table, svs)
        if keep:
            return result, pending
        n = pending.count
        if n:
            mask = pa.array(pending.mask)
            ids = table["id"].filter(mask).to_pylist()[:5] if "id" in table.column_names else []
            text = pending_text(
                query.table,
                n,
                "matching this live query",
                f"null {' / '.join(pending.columns)}; e.g. ids {ids}",
                query.timestamp,
            )
            if not query.allow_missing_lookups:  # an HTTP backend also sends it to the server
                raise QueryError(refusal(text))
            table = table.filter(pc.invert(mask))
            result = attrs.evolve(result, table=table, warnings=(*result.warnings, f"{text}; left out"))
        if extra:
            result = attrs.evolve(result, table=result.table.drop_columns(extra))
        return result, pending

    def _live_count(self, query: Query, cols: tuple[ResultColumn, ...]) -> Any:
        """A live count counts the rows the live query gives: annotations still waiting for their
        supervoxel lookup are refused, or (``allow``) left out with a warning, as for the rows."""
        first = "id" if any(c.name == "id" for c in cols) else cols[0].name
        rows = attrs.evolve(query, count=False, select_columns=(first,), offset=0, limit=None)
        result, _ = self._pending_lookups(rows, cols)
        table = count_table(result.table.num_rows)
        return QueryResult(table=table, warnings=result.warnings, request=result.request, pages=result.pages)

    def _provenance(self, query: Query, result: Any, given: Mapping[str, Any]) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "datastack_name": self.datastack,
            "backend": self._backend.name,
            "source": self._backend.location,
            "table_name": query.table,
            "kind": query.kind,
            "join_query": query.join is not None,
            "materialization_version": query.version,
            "timestamp": (query.timestamp or self.get_timestamp(query.version)).isoformat()
            if query.version is not None or query.timestamp
            else None,
            "live_query": query.live,
            "substitution": None
            if query.substituted_version is None
            else f"version {query.substituted_version} has expired; answered as a live query at its timestamp",
            "filters": {k: _plain(v) for k, v in given.items()},
            "select_columns": None if query.select_columns is None else list(query.select_columns),
            "offset": query.offset,
            "limit": query.limit,
            "dataframe_resolution": None if result.resolution is None else list(result.resolution),
            "request": dict(result.request),
            "pages": result.pages,
            "warnings": list(result.warnings),
        }
        if query.kind == "table" and query.version is not None:
            md = {}
            for t in query.tables:
                md[t] = dict(self._spec(t, query.version).metadata)
            meta["table_metadata"] = md
        return meta


#: the live clients of this process by pickle id (see Client.__reduce__)
_CLIENTS: weakref.WeakValueDictionary[str, Client] = weakref.WeakValueDictionary()


def _reconnect(pickle_id: str, backend: Backend, version: int | None, expired_versions: str) -> Client:
    client = _CLIENTS.get(pickle_id)
    if client is None:
        client = Client(backend, version=version, expired_versions=expired_versions)
        _CLIENTS.pop(client._pickle_id, None)
        client._pickle_id = pickle_id
        _CLIENTS[pickle_id] = client
    return client


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (str, bytes)):
        return v
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_plain(x) for x in v]
    if isinstance(v, _dt.datetime):
        return v.isoformat()
    return v


def _first_line(text: Any) -> str:
    s = str(text or "").strip().splitlines()
    return s[0][:200] if s else ""
