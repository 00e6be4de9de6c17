"""The Delta Lake backend: queries answered from CAVE's exports of frozen versions.

``DeltaBackend(exports, datastack, fallback)`` answers a materialized query of an exported version
from the lakes under ``{exports}/{datastack}/v{version}/{table}/`` (``docs/delta-exports.md``):
it picks the lake whose column a filter fixes (``==``, ``in``, a range; a box → the spatial lake;
else ``id``), keeps the files the Delta log's statistics say can match (:mod:`.prune`), and runs the
local engine's SQL (:mod:`tablekit.backends.local.sql`) with DuckDB over those Parquet files, so
rows, types, order and positions are the local engine's. Metadata comes from ``fallback`` (a
local datastack or a CAVE server) or, standalone, from the export's ``tablekit_export.json``.
What the exports cannot answer (live queries, versions or tables not exported, filters on the
columns exports drop) goes to ``fallback``, or is refused naming what is missing.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import duckdb
import pyarrow as pa

from ... import _time
from ...errors import (
    DatastackError,
    FilterValueError,
    QueryError,
    UnknownTableError,
    UnsupportedError,
    VersionError,
)
from ...query import Query, jsonable
from ...schema import ColumnKind, TableSpec, load_schema_documents, table_spec, view_spec
from ..base import ARROW_TYPES, Backend, Capabilities, QueryResult
from ..local import sql as _sql
from ..local.lockdown import lock_down
from . import layout as _layout
from .export import FORMAT, _deltalake
from .prune import Pruned, prune

__all__ = ["DeltaBackend"]

_REEXPORT = "Fix: write the export again (tablekit export DATASTACK --version V --out DIR --overwrite)"


@attrs.frozen
class _Lake:
    """One lake of a table: where it is, its Arrow schema and its log's add actions."""

    table: str
    name: str
    path: str
    schema: pa.Schema
    actions: pa.Table
    morton_of: str | None

    def file(self, i: int) -> str:
        return os.path.join(self.path, urllib.parse.unquote(self.actions["path"][i].as_py()))


@attrs.frozen
class _Choice:
    lake: _Lake
    pruned: Pruned
    files: tuple[str, ...]
    missing: tuple[str, ...]  # dropped columns the result fills with nulls
    wkb: tuple[str, ...] = ()  # positions the lake keeps as WKB (the service's lakes)


class DeltaBackend:
    """Materialized queries from Delta Lake exports, everything else through ``fallback``.

    ``exports`` is the base directory (``{exports}/{datastack}/v{version}/{table}/{lake}``).
    Without ``fallback`` the export's metadata file is the only source of metadata (standalone).
    """

    name = "delta"

    def __init__(
        self, exports: str | os.PathLike[str], datastack: str, fallback: Backend | None = None
    ) -> None:
        _deltalake()  # the extra is needed: refuse now, naming it
        self.base = Path(exports).expanduser().absolute()
        self.datastack = datastack
        self.fallback = fallback
        self.root = self.base / datastack
        self.location = str(self.root) + (f" (else {fallback.name}: {fallback.location})" if fallback else "")
        if not self.root.is_dir():
            held = sorted(p.name for p in self.base.iterdir() if p.is_dir()) if self.base.is_dir() else None
            where = f"it holds {held}" if held else "it does not exist" if held is None else "it is empty"
            raise DatastackError(
                f"{self.base}: no Delta Lake export of datastack {datastack!r} ({self.root} is missing; {where}). "
                "Fix: pass the base directory the exports were written to (tablekit export ... --out DIR)"
            )
        caps = fallback.capabilities if fallback is not None else Capabilities()
        self.capabilities = Capabilities(
            live=caps.live, live_views=caps.live_views, history=caps.history, refresh=True, views=True
        )
        self._lock = threading.RLock()
        self._cache: dict[Any, Any] = {}
        self._con = duckdb.connect(":memory:")
        for stmt in ("SET GLOBAL TimeZone = 'UTC'", "SET GLOBAL parquet_can_have_nan = true"):
            try:
                self._con.execute(stmt)
            except duckdb.Error:  # pragma: no cover - ICU missing
                pass
        lock_down(self._con, [self.root])
        self._views_made = 0
        if fallback is None and not self._exported_versions():
            raise DatastackError(
                f"{self.root}: no version directory with {_layout.METADATA_FILE} (found "
                f"{sorted(p.name for p in self.root.iterdir()) or 'nothing'}); a standalone export needs the "
                "metadata file tablekit export writes. Fix: connect with path= or server= for its metadata, "
                "or export with tablekit export"
            )

    def __repr__(self) -> str:
        return f"<DeltaBackend {self.datastack!r} at {self.location}>"

    # ------------------------------------------------------------------ the export on disk
    def _cached(self, key: Any, make: Any) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def refresh(self) -> None:
        """Forget what was read of the export (and the fallback's cached metadata)."""
        with self._lock:
            self._cache.clear()
        if self.fallback is not None and self.fallback.capabilities.refresh:
            self.fallback.refresh()  # type: ignore[attr-defined]

    @property
    def history(self) -> Any:
        return self.fallback.history if self.fallback is not None else None  # type: ignore[attr-defined]

    def _version_dirs(self) -> dict[int, Path]:
        def make() -> dict[int, Path]:
            out = {}
            for p in sorted(self.root.iterdir()):
                v = _layout.parse_version_dir(p.name)
                if p.is_dir() and v is not None:
                    out[v] = p
            return out

        return self._cached("dirs", make)

    def _meta(self, version: int) -> dict[str, Any] | None:
        """The metadata file of ``version`` (None when the export has none: the service's)."""

        def make() -> dict[str, Any] | None:
            d = self._version_dirs().get(version)
            f = None if d is None else d / _layout.METADATA_FILE
            if f is None or not f.is_file():
                return None
            try:
                m = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise DatastackError(f"{f}: cannot be read: {e}. {_REEXPORT}") from e
            if not isinstance(m, dict) or m.get("format") != FORMAT:
                raise DatastackError(f"{f}: not a {FORMAT} metadata file. {_REEXPORT}")
            got = (m.get("version") or {}).get("version")
            if got != version or m.get("datastack") != self.datastack:
                raise DatastackError(
                    f"{f}: this directory is v{version} of {self.datastack!r} but its metadata file is for "
                    f"version {got} of {m.get('datastack')!r}; the directory was renamed or copied into the wrong "
                    f"place. Fix: move it to {self.root}/v{got}, or export again"
                )
            return m

        return self._cached(("meta", version), make)

    def _exported_versions(self) -> list[int]:
        return [v for v in self._version_dirs() if self._meta(v) is not None]

    def _standalone_meta(self, version: int) -> dict[str, Any]:
        m = self._meta(version)
        if m is None:
            raise VersionError(
                f"{self.datastack}: no materialization version {version!r} in the export at {self.root}; "
                f"exported versions: {self._exported_versions()}"
            )
        return m

    def _relations(self, version: int) -> set[str]:
        d = self._version_dirs().get(version)
        return set() if d is None else {p.name for p in d.iterdir() if p.is_dir()}

    def _lake(self, version: int, table: str, lake: str) -> _Lake:
        def make() -> _Lake:
            path = self._version_dirs()[version] / table / lake
            where = f"{table}, lake {lake!r} of version {version} at {path}"
            if not (path / "_delta_log").is_dir():
                raise DatastackError(f"{where}: not a Delta table (no _delta_log). {_REEXPORT}")
            dl = _deltalake()
            try:
                dt = dl.DeltaTable(str(path))
                schema = pa.schema(dt.schema().to_arrow())
                actions = pa.table(dt.get_add_actions(flatten=True))
            except Exception as e:  # delta-rs raises its own kinds for a damaged log
                raise DatastackError(f"{where}: the Delta log cannot be read ({e}). {_REEXPORT}") from e
            morton_of = lake[: -len("_morton")] if lake.endswith("_morton") else None
            return _Lake(table, lake, str(path), schema, actions, morton_of)

        return self._cached(("lake", version, table, lake), make)

    def _lakes(self, version: int, table: str) -> list[str]:
        d = self._version_dirs()[version] / table
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))

    # ------------------------------------------------------------------ metadata
    def datastack_info(self) -> dict[str, Any]:
        if self.fallback is not None:
            return self.fallback.datastack_info()
        m = self._standalone_meta(max(self._exported_versions()))
        return dict(m.get("datastack_info") or {})

    def versions_metadata(self, expired: bool = False) -> list[dict[str, Any]]:
        if self.fallback is not None:
            return self.fallback.versions_metadata(expired=expired)
        out = []
        for v in self._exported_versions():
            m = dict(self._standalone_meta(v)["version"])
            m["time_stamp"] = _time.parse_utc(m["time_stamp"])
            m["expires_on"] = None if m.get("expires_on") is None else _time.parse_utc(m["expires_on"])
            if expired or (m.get("valid", True) and m.get("status") != "EXPIRED"):
                out.append(m)
        return sorted(out, key=lambda m: m["version"])

    def schemas(self, schema_types: list[str]) -> dict[str, Mapping[str, Any]]:
        if self.fallback is not None:
            return self.fallback.schemas(schema_types)
        docs: dict[str, Mapping[str, Any]] = {}
        for v in self._exported_versions():
            docs.update(self._standalone_meta(v).get("schemas") or {})
        return {t: docs[t] for t in schema_types if t in docs}

    def tables_metadata(self, version: int) -> list[dict[str, Any]]:
        if self.fallback is not None:
            return self.fallback.tables_metadata(version)
        return [dict(t["metadata"]) for t in self._standalone_meta(version)["tables"].values()]

    def table_spec(self, table: str, version: int) -> TableSpec:
        if self.fallback is not None:
            return self.fallback.table_spec(table, version)
        tables = self._standalone_meta(version)["tables"]
        if table not in tables:
            raise UnknownTableError(
                f"{self.datastack}: no table {table!r} in version {version} of the export. Tables: {', '.join(tables)}"
            )

        def make() -> TableSpec:
            meta = tables[table]["metadata"]
            st = meta.get("schema_type") or meta.get("schema")
            return table_spec(meta, load_schema_documents(self.schemas([st])))

        return self._cached(("spec", version, table), make)

    def views_metadata(self, version: int) -> dict[str, dict[str, Any]]:
        if self.fallback is not None:
            return self.fallback.views_metadata(version)
        return {n: dict(v["metadata"]) for n, v in self._standalone_meta(version)["views"].items()}

    def view_schemas(self, version: int) -> dict[str, dict[str, Any]]:
        if self.fallback is not None:
            return self.fallback.view_schemas(version)
        return {n: dict(v["schema"]) for n, v in self._standalone_meta(version)["views"].items()}

    def view_specs(self, version: int) -> dict[str, TableSpec]:
        if self.fallback is not None:
            return self.fallback.view_specs(version)

        def make() -> dict[str, TableSpec]:
            views = self._standalone_meta(version)["views"]
            return {
                n: view_spec(n, v["schema"], {**v["metadata"], "table_name": n}) for n, v in views.items()
            }

        return self._cached(("views", version), make)

    def annotation_count(self, table: str, version: int) -> int:
        if self.fallback is not None:
            return self.fallback.annotation_count(table, version)
        self.table_spec(table, version)
        return int(self._standalone_meta(version)["tables"][table]["rows"])

    # ------------------------------------------------------------------ planning
    def _why_not(self, query: Query) -> str | None:
        """Why the export cannot answer ``query`` (None: it can)."""
        if query.version is None:
            return "exports hold frozen versions; a live (timestamp) query needs a server or the datastack"
        if query.version not in self._version_dirs():
            return (
                f"version {query.version} is not exported under {self.root} "
                f"(exported: {sorted(self._version_dirs())})"
            )
        have = self._relations(query.version)
        for t in query.tables:
            if t not in have:
                return f"{t!r} is not exported in v{query.version} ({self._version_dirs()[query.version]})"
        for p in query.predicates:
            if p.column in _layout.DROPPED or (p.op == "!=column" and p.value in _layout.DROPPED):
                return f"the export has no column {p.column!r} to filter on (exports drop {', '.join(_layout.DROPPED)})"
        return None

    def _specs(self, query: Query) -> dict[str, TableSpec]:
        v = query.version
        assert v is not None
        if query.kind == "view":
            specs = self.view_specs(v)
            if query.table not in specs:
                raise UnknownTableError(f"{self.datastack}: no view {query.table!r} in version {v}")
            return {query.table: specs[query.table]}
        return {t: self.table_spec(t, v) for t in query.tables}

    def _choose(self, query: Query, table: str, spec: TableSpec) -> _Choice:
        """The lake that reads the fewest files for this table's filters, and those files."""
        v = query.version
        assert v is not None
        names = self._lakes(v, table)
        preds = [p for p in query.predicates if p.table == table]
        candidates = []
        for p in preds:
            if p.op in ("==", "in", "<", "<=", ">", ">=") and p.column in names:
                candidates.append(p.column)
            if p.op == "bbox" and f"{p.column}_morton" in names:
                candidates.append(f"{p.column}_morton")
        default = "id" if "id" in names else "flat" if "flat" in names else None
        if default is None and not candidates:
            raise DatastackError(
                f"{table}: the export of v{v} at {self._version_dirs()[v] / table} holds no id lake "
                f"(lakes: {names or 'none'}). {_REEXPORT}"
            )
        best: _Choice | None = None
        for name in dict.fromkeys([*candidates, *([default] if default else [])]):
            lake = self._lake(v, table, name)
            pruned = prune(lake.actions, preds, spec, morton_of=lake.morton_of)
            if best is None or len(pruned.keep) < len(best.pruned.keep):
                best = _Choice(lake, pruned, tuple(lake.file(i) for i in pruned.keep), ())
        assert best is not None
        missing, wkb = self._check_columns(best.lake, spec)
        return attrs.evolve(best, missing=missing, wkb=wkb)

    def _check_columns(self, lake: _Lake, spec: TableSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The spec's columns the lake lacks because exports drop them, and the positions it keeps
        as WKB (one binary column ``P``: the service decodes only its spatial lake's position);
        anything else missing or of another kind is damage, named."""
        have = {f.name: f.type for f in lake.schema}
        missing = []
        wkb = []
        where = f"{spec.name}: lake {lake.name!r} at {lake.path}"
        for c in spec.columns:
            if c.kind is ColumnKind.POSITION and c.split_names[0] not in have and c.name in have:
                t = have[c.name]
                if not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
                    raise DatastackError(
                        f"{where}: position {c.name!r} is {t}, neither WKB bytes nor {c.name}_x/_y/_z. {_REEXPORT}"
                    )
                wkb.append(c.name)
                continue
            names = c.split_names if c.kind is ColumnKind.POSITION else (c.name,)
            for n in names:
                t = have.get(n)
                if t is None:
                    if c.name in _layout.DROPPED:
                        missing.append(n)
                        continue
                    raise DatastackError(
                        f"{where} has no column {n!r}, which the table's schema has; the lake does not match "
                        f"the table (columns: {', '.join(have)}). {_REEXPORT}"
                    )
                if not _compatible(c.kind, t):
                    raise DatastackError(
                        f"{where}: column {n!r} is {t}, but the table's schema says {c.kind.value}. {_REEXPORT}"
                    )
        return tuple(missing), tuple(wkb)

    def _plan(self, query: Query) -> tuple[_sql.CompiledSQL, dict[str, _Choice], dict[str, str], list[str]]:
        specs = self._specs(query)
        choices: dict[str, _Choice] = {}
        views: dict[str, str] = {}
        sources: dict[str, _sql.Source] = {}
        notes: list[str] = []
        with self._lock:
            for t in query.tables:
                c = choices[t] = self._choose(query, t, specs[t])
                self._views_made += 1
                name = f"__tk_lake_{self._views_made}"
                views[name] = _view_sql(c)
                sources[t] = _sql.Files(c.files, relation=("temp", name))
                for n in c.missing:
                    if query.select_columns is None or n in query.select_columns:
                        notes.append(
                            f"the Delta Lake export has no column {n!r} (exports drop it); it is filled with nulls"
                        )
        compiled = _sql.compile_query(query, specs, sources)
        notices = [s.notice_text for s in specs.values() if s.notice_text]
        return compiled, choices, views, list(dict.fromkeys([*notices, *notes]))

    def _request(
        self, compiled: _sql.CompiledSQL, choices: Mapping[str, _Choice], views: Mapping[str, str]
    ) -> dict[str, Any]:
        lakes = {}
        for t, c in choices.items():
            keep = list(c.pruned.keep)
            sizes = (
                c.lake.actions["size_bytes"].to_pylist()
                if "size_bytes" in c.lake.actions.column_names
                else []
            )
            lakes[t] = {
                "lake": c.lake.name,
                "path": c.lake.path,
                "files_read": len(keep),
                "files_total": c.pruned.total,
                "bytes_read": sum(sizes[i] for i in keep) if sizes else None,
                "bytes_total": sum(sizes) if sizes else None,
                "skipped_by": dict(c.pruned.reasons),
                "files": [os.path.relpath(f, c.lake.path) for f in c.files],
            }
        return {
            "answered_by": "delta",
            "engine": "duckdb",
            "duckdb_version": duckdb.__version__,
            "export": str(self.root),
            "lakes": lakes,
            "views": dict(views),
            "sql": compiled.sql,
            "parameters": jsonable(compiled.params),
            "value_lists": {vl.name: jsonable(vl.values) for vl in compiled.value_lists},
            "columns": list(compiled.columns),
        }

    # ------------------------------------------------------------------ queries
    def _route(self, query: Query) -> Backend | None:
        why = self._why_not(query)
        if why is None:
            return None
        if self.fallback is None:
            raise UnsupportedError(
                f"{query.table}: the Delta Lake export cannot answer this query: {why}. Fix: connect with "
                "server=URL or path=DIR as well (tablekit.connect(..., exports=...)) to answer it there"
            )
        return self.fallback

    def explain(self, query: Query) -> dict[str, Any]:
        other = self._route(query)
        if other is not None:
            return {"answered_by": other.name, **other.explain(query)}
        compiled, choices, views, _ = self._plan(query)
        return self._request(compiled, choices, views)

    def execute(self, query: Query) -> QueryResult:
        other = self._route(query)
        if other is not None:
            r = other.execute(query)
            return attrs.evolve(r, request={"answered_by": other.name, **r.request})
        compiled, choices, views, notes = self._plan(query)
        table = self._run(query, compiled, choices, views)
        return QueryResult(
            table=table,
            resolution=compiled.resolution,
            warnings=tuple(notes),
            request=self._request(compiled, choices, views),
        )

    def _run(
        self,
        query: Query,
        compiled: _sql.CompiledSQL,
        choices: Mapping[str, _Choice],
        views: Mapping[str, str],
    ) -> pa.Table:
        for c in choices.values():
            gone = [f for f in c.files if not os.path.isfile(f)]
            if gone:
                raise DatastackError(
                    f"{c.lake.table}: lake {c.lake.name!r} at {c.lake.path} is damaged: its log lists "
                    f"{len(gone)} file(s) that are not there, e.g. {gone[0]}. {_REEXPORT}"
                )
        cur = self._con.cursor()
        try:
            for c in choices.values():
                if c.wkb:
                    cur.register(_arrow_name(c), _decoded(c))
            for name, sql in views.items():
                cur.execute(f"CREATE OR REPLACE TEMP VIEW {_sql.quote(name)} AS {sql}")
            for vl in compiled.value_lists:
                try:
                    arr = pa.array(vl.values, type=ARROW_TYPES[vl.kind])
                except (pa.ArrowException, OverflowError, TypeError, ValueError) as e:
                    raise FilterValueError(
                        f"{query.table}: a membership list holds a value that is not {vl.kind.value}: {e}",
                        table=query.table,
                    ) from e
                cur.register(vl.name, pa.table({"v": arr}))
            table = cur.sql(compiled.sql, params=compiled.params or None).to_arrow_table()
        except duckdb.Error as e:
            msg = (str(e).strip().splitlines() or [""])[0]
            lakes = ", ".join(f"{c.lake.table}/{c.lake.name} at {c.lake.path}" for c in choices.values())
            if isinstance(e, (duckdb.IOException, duckdb.InvalidInputException)):
                raise DatastackError(
                    f"{query.table}: the files of {lakes} cannot be read: {msg}. {_REEXPORT}"
                ) from e
            raise QueryError(f"{query.table}: the Delta Lake query failed ({lakes}): {msg}") from e
        finally:
            cur.close()
        return _as_local(table, query, compiled)


def _arrow_name(c: _Choice) -> str:
    return f"__tk_wkb_{c.lake.table}_{c.lake.name}"


def _decoded(c: _Choice) -> pa.Table:
    """The chosen files read with pyarrow, each WKB position replaced by ``P_x/_y/_z`` (int64 when
    every coordinate is whole, as the local engine stores them; float64 otherwise)."""
    import numpy as np
    import pyarrow.parquet as pq

    part = _layout.lake_partition_column(c.lake.name)
    schema = pa.schema([f for f in c.lake.schema if f.name != part])
    parts = [pq.read_table(f, partitioning=None) for f in c.files]
    t = pa.concat_tables(parts, promote_options="permissive") if parts else schema.empty_table()
    if part in t.column_names:
        t = t.drop_columns([part])
    for p in c.wkb:
        try:
            x, y, z, valid = _layout.wkb_points(t[p])
        except ValueError as e:
            raise DatastackError(
                f"{c.lake.table}: lake {c.lake.name!r} at {c.lake.path}, position {p!r}: {e}. {_REEXPORT}"
            ) from e
        i = t.column_names.index(p)
        t = t.remove_column(i)
        for axis, v in zip("xyz", (x, y, z), strict=True):
            whole = bool(np.all(np.isfinite(v[valid]) & (v[valid] == np.round(v[valid]))))
            arr = pa.array(np.where(valid, v, 0).astype(np.int64) if whole else v, mask=~valid)
            t = t.append_column(f"{p}_{axis}", arr)
    return t


def _view_sql(c: _Choice) -> str:
    """The lake's chosen files as the snapshot layout: the columns exports drop as typed nulls."""
    files = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in c.files) + "]"
    extra = "".join(f", CAST(NULL AS TIMESTAMPTZ) AS {_sql.quote(n)}" for n in c.missing)
    if c.wkb:
        return f"SELECT *{extra} FROM {_sql.quote(_arrow_name(c))}"
    if not c.files:  # no file can match: the lake's columns, no rows
        cols = ", ".join(f"CAST(NULL AS {_duck_type(f.type)}) AS {_sql.quote(f.name)}" for f in c.lake.schema)
        return f"SELECT {cols}{extra} WHERE FALSE"
    return f"SELECT *{extra} FROM read_parquet({files}, hive_partitioning = false)"


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "BIGINT" if t.bit_width == 64 else "INTEGER"
    if pa.types.is_floating(t):
        return "DOUBLE" if t.bit_width == 64 else "FLOAT"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BLOB"
    return "VARCHAR"


def _compatible(kind: ColumnKind, t: pa.DataType) -> bool:
    if kind in (ColumnKind.INT, ColumnKind.POSITION):
        return pa.types.is_integer(t) or (kind is ColumnKind.POSITION and pa.types.is_floating(t))
    if kind is ColumnKind.FLOAT:
        return pa.types.is_floating(t) or pa.types.is_integer(t)
    if kind is ColumnKind.STRING:
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    if kind is ColumnKind.BOOL:
        return pa.types.is_boolean(t)
    return pa.types.is_timestamp(t)


def _as_local(table: pa.Table, query: Query, compiled: _sql.CompiledSQL) -> pa.Table:
    """The local engine's types: int64 ids and positions, float64, UTC timestamps (lakes hold
    int32 positions, the service's lakes int32 fields and float32 floats)."""
    if query.count:
        return table
    want = []
    for f in table.schema:
        t = f.type
        if pa.types.is_integer(t):
            t = pa.int64()
        elif pa.types.is_floating(t):
            t = pa.float64()
        elif pa.types.is_timestamp(t):
            t = pa.timestamp("us", tz="UTC")
        elif pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        want.append(f.with_type(t))
    schema = pa.schema(want)
    return table if schema.equals(table.schema) else table.cast(schema)
