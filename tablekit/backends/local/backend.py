"""The local engine: DuckDB over a datastack directory (``docs/datastack-format.md``).

``LocalBackend(path)`` answers the :class:`~tablekit.backends.base.Backend` protocol from the
files of a datastack directory: metadata from its JSON files, materialized queries from the
Parquet snapshots under ``versions/<v>/<table>/``, live queries (a timestamp ``T`` instead of a
version) from the snapshot of the newest valid version at or before ``T`` plus what the
annotation and segmentation histories say changed since (before every valid version: from the
histories alone). The SQL comes from the pure compiler :mod:`tablekit.backends.local.sql`; this
module does the I/O around it.

One DuckDB connection lives as long as the backend; each call runs on its own cursor, so a
backend can be shared between threads. Results are fetched as Arrow tables, never row by row.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import functools
import hashlib
import json
import os
import re
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ... import _time, _values
from ..._paths import cache_root
from ...datastack import checksums as _checksums
from ...errors import (
    DatastackError,
    FilterValueError,
    QueryError,
    SchemaError,
    UnknownTableError,
    UnsupportedError,
    VersionError,
)
from ...query import Query, jsonable
from ...schema import TableSpec, load_schema_documents, table_spec, view_spec
from ..base import ARROW_TYPES, Capabilities, QueryResult
from . import sql as _sql
from .history import History
from .lockdown import lock_down, view_sql_problem
from .native import _BUILD_MEMORY, _CHECKS, _layout_sql, _lookup_column, _prune_native, _remove_abandoned

__all__ = ["FORMAT", "FORMAT_VERSION", "LocalBackend"]

FORMAT = "tablekit-datastack"
FORMAT_VERSION = 1

_INT_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}

#: a snapshot with at least this many rows gets, on its first lookup by a root id, a copy of its
#: rows ordered by that column (built in the background); DuckDB's zone maps then confine a
#: lookup to the row groups that hold the root instead of scanning every row
CLUSTER_MIN_ROWS = 1_000_000
#: what to do about a damaged or missing file of a datastack directory
_RESTORE = (
    "Fix: restore the datastack from where it came from (copy or download it again), or rebuild it "
    "(tablekit.build_datastack; `tablekit sample` for a synthetic one)"
)
#: … and about a damaged or missing snapshot, which is derived from the histories
_REMATERIALIZE = (
    "Fix: rebuild the snapshots from the histories with tablekit.datastack.materialize({path!r}, "
    "versions=[{version}]), or restore the datastack from where it came from"
)
_PART = re.compile(r"part-(\d{5})\.parquet")
#: backends that may be building native copies in background threads (see _stop_all_builds)
_BUILDERS: weakref.WeakSet[LocalBackend] = weakref.WeakSet()


@atexit.register
def _stop_all_builds() -> None:
    """At exit, interrupt the native copies still being built and wait for their threads: a
    DuckDB connection working in a daemon thread while the interpreter finalizes aborts the
    process. An interrupted copy is left unfinished (its temporary file is removed by the next
    build) and built again on next use."""
    for backend in list(_BUILDERS):
        backend._stop_builds()


#: Parquet file sets at least this big are read directly by the queries that first need them, while
#: their native copy is built in the background once no query runs (a first query then answers as
#: fast as DuckDB reads the Parquet files); smaller ones are copied first, which costs little
DIRECT_MIN_BYTES = 64 * 2**20


def _reason(e: BaseException) -> str:
    """An exception's message as a clause of ours (no trailing period)."""
    return str(e).strip().rstrip(".")


def _reads_as(found: pa.DataType, want: pa.DataType) -> bool:
    """Whether a Parquet column of type ``found`` holds exactly the values of the format's type
    ``want``: the same type, or a narrower one of the same kind (int32 for int64, float32 for
    float64, large strings, dictionary-encoded strings, another unit of an aware timestamp)."""
    if found == want:
        return True
    if pa.types.is_dictionary(found):
        found = found.value_type
    if pa.types.is_integer(want):
        return pa.types.is_signed_integer(found) or found in (pa.uint8(), pa.uint16(), pa.uint32())
    if pa.types.is_floating(want):
        return pa.types.is_floating(found)
    if pa.types.is_string(want):
        return pa.types.is_string(found) or pa.types.is_large_string(found) or pa.types.is_string_view(found)
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(found) and found.tz is not None
    return found == want


def _parse_time(value: Any, what: str, fix: str = "") -> _dt.datetime | None:
    """CAVE's naive-UTC ISO strings (or aware ones) → aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return _time.as_utc(value)
    try:
        if not isinstance(value, str):
            raise ValueError(type(value).__name__)
        return _time.parse_utc(value)
    except ValueError as e:
        raise DatastackError(
            f"{what}: {_values.short(value)} is not an ISO-8601 timestamp (CAVE writes UTC as "
            f"'2025-03-31T08:01:07.000250'). {fix}".rstrip()
        ) from e


class LocalBackend:
    """A datastack directory queried with DuckDB.

    >>> backend = LocalBackend("path/to/datastack")      # doctest: +SKIP
    >>> backend.execute(Query("demo", "nucleus_detection_v0", version=3)).table  # doctest: +SKIP

    ``threads`` caps DuckDB's worker threads (default: all cores). The directory is read when
    first needed and cached; call :meth:`refresh` after changing it on disk.
    """

    name = "local"
    capabilities = Capabilities(live=True, live_views=True, history=True, refresh=True)

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int | None = None, native_cache: bool | None = None
    ) -> None:
        """Open a datastack directory.

        ``native_cache`` (default: on unless ``$TABLEKIT_NATIVE_CACHE=0``): on first use of a
        snapshot or history, copy its Parquet files once into a DuckDB database file under
        ``$TABLEKIT_CACHE_DIR/native`` (default ``$XDG_CACHE_HOME/tablekit/native``, else
        ``~/.cache/tablekit/native``) and query that copy
        — DuckDB's own storage skips and decodes far less than Parquet (10–30× on 10M-row
        scans). The copy is keyed by the files' paths, sizes and modification times and by the
        DuckDB version, so it can never be stale; the Parquet files stay the source of truth.
        Live queries also use two time-ordered copies (an annotation history's deletion times,
        the segmentation history by ``valid_from``) so that "what changed since the version"
        reads only the row groups holding it. When the cache directory is not writable the
        engine reads the Parquet files directly. Each time a copy is built, copies not used for
        30 days are deleted, then the least recently used beyond ``$TABLEKIT_NATIVE_CACHE_SIZE``
        (default: a quarter of the space the copies could take — free space on the cache's file
        system plus the copies' own — at most 50GB) in total.
        """
        self.path = Path(path).expanduser().resolve()
        self.location = str(self.path)
        self._options = {"threads": threads, "native_cache": native_cache}
        self._info = self._read_info()
        self.datastack: str = str(self._info["name"])
        config: dict[str, Any] = {}
        if threads is not None:
            config["threads"] = int(threads)
        self._con = duckdb.connect(":memory:", config=config)
        if native_cache is None:
            native_cache = os.environ.get("TABLEKIT_NATIVE_CACHE", "1") != "0"
        self._native_dir: Path | None = (
            cache_root().absolute() / "native" / f"duckdb-{duckdb.__version__}" if native_cache else None
        )
        for stmt in (
            "SET GLOBAL TimeZone = 'UTC'",
            "SET GLOBAL parquet_metadata_cache = true",
            # scans without ORDER BY keep the stored order (relied on for clustered copies)
            "SET GLOBAL preserve_insertion_order = true",
            # Parquet files written by pyarrow carry no nan_count; with the default (false) DuckDB
            # prunes row groups by min/max as if floats had no NaN and answers `x < 1e300` or
            # `isnan(x)` wrongly. Correctness first.
            "SET GLOBAL parquet_can_have_nan = true",
        ):
            try:
                self._con.execute(stmt)
            except duckdb.Error:  # pragma: no cover - ICU missing: timestamps are re-labelled below
                pass
        # from here on the connection reads only the datastack's files and the native copies
        lock_down(self._con, [self.path, *([self._native_dir] if self._native_dir else [])])
        self._lock = threading.RLock()
        self._statements = threading.local()  # per thread: SQL text → parsed statement
        self._cache: dict[Any, Any] = {}
        self._attached: dict[str, tuple[str, str]] = {}
        self._native_files: dict[str, str] = {}  # catalog alias → database file
        self._building: dict[str, threading.Thread] = {}  # native copies being built
        # queries running now: a copy is built in the background only while none runs, so a first
        # query answers from the Parquet files as fast as DuckDB reads them (no build competes)
        self._active = 0
        self._idle = threading.Condition(self._lock)
        self._stopping = False
        self._build_cons: set[duckdb.DuckDBPyConnection] = set()  # interrupted by _stop_builds
        self._failed: set[str] = set()  # … and those whose build failed
        self._rows: dict[str, int] = {}  # rows of a native copy, by alias
        self._checked: set[str] = set()  # file sets read directly whose ids were checked

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the DuckDB connection."""
        self._con.close()

    def _stop_builds(self, timeout: float = 60.0) -> None:
        with self._lock:
            self._stopping = True
            threads = list(self._building.values())
            for con in self._build_cons:
                with contextlib.suppress(duckdb.Error):
                    con.interrupt()
            self._idle.notify_all()
        for th in threads:
            if th is not threading.current_thread():
                th.join(timeout)

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LocalBackend {self.datastack!r} at {self.location}>"

    def refresh(self) -> None:
        """Forget cached metadata and file lists (after the directory changed on disk)."""
        with self._lock:
            self._cache.clear()
            self._info = self._read_info()

    # ------------------------------------------------------------------ files
    def _read_json(self, rel: str, what: str) -> Any:
        p = self.path / rel
        try:
            with open(p, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            raise DatastackError(f"{self.location}: {what} is missing ({rel}). {_RESTORE}") from None
        except (OSError, ValueError) as e:
            raise DatastackError(
                f"{self.location}: {what} ({rel}) cannot be read: {_reason(e)}. {_RESTORE}"
            ) from e

    def _read_info(self) -> dict[str, Any]:
        if not self.path.is_dir():
            raise DatastackError(f"{self.location}: not a directory; pass the path of a datastack directory")
        info = self._read_json("datastack.json", "datastack.json")
        if not isinstance(info, dict):
            raise DatastackError(f"{self.location}: datastack.json does not hold a JSON object. {_RESTORE}")
        if info.get("format") != FORMAT:
            raise DatastackError(
                f"{self.location}: datastack.json has format {info.get('format')!r}, expected {FORMAT!r}; "
                "this is not a tablekit datastack directory (see tablekit.build_datastack)"
            )
        if info.get("format_version") != FORMAT_VERSION:
            raise DatastackError(
                f"{self.location}: datastack.json has format_version {info.get('format_version')!r}; "
                f"this tablekit reads format_version {FORMAT_VERSION}"
            )
        if not info.get("name"):
            raise DatastackError(f"{self.location}: datastack.json has no 'name'. {_RESTORE}")
        from ...datastack import check_datastack_name

        check_datastack_name(info["name"], f"{self.location}/datastack.json: ")
        return info

    def _fresh(self) -> None:
        """Drop the caches when ``versions.json`` changed on disk (a version was added or expired)."""
        try:
            st = (self.path / "versions.json").stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if self._cache.get("stamp", stamp) != stamp:
                self._cache.clear()
            self._cache["stamp"] = stamp

    def _cached(self, key: Any, make: Any) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def _parquet_files(self, rel: str) -> tuple[str, ...]:
        d = self.path / rel
        if not d.is_dir():
            return ()
        return tuple(str(p) for p in sorted(d.glob("*.parquet")))

    # ------------------------------------------------------------------ metadata
    def datastack_info(self) -> dict[str, Any]:
        info = dict(self._info)
        info.setdefault("local_server", None)
        return info

    def _versions(self) -> list[dict[str, Any]]:
        def make() -> list[dict[str, Any]]:
            raw = self._read_json("versions.json", "versions.json")
            file = f"{self.location}/versions.json"
            fix = f"Fix: correct it in {file}, or restore the datastack from where it came from"
            if not isinstance(raw, list):
                raise DatastackError(
                    f"{file} holds {type(raw).__name__}, not a list of version objects "
                    f"(docs/datastack-format.md). {fix}"
                )
            out = []
            seen: set[int] = set()
            for i, v in enumerate(raw):
                if not isinstance(v, dict):
                    raise DatastackError(
                        f"{file}, entry {i}: {_values.short(v)} is not a version object "
                        f"(an object with 'version' and 'time_stamp'). {fix}"
                    )
                num = v.get("version")
                if isinstance(num, bool) or not isinstance(num, int):
                    raise DatastackError(
                        f"{file}, entry {i}: 'version' is {_values.short(num)}, not an integer. {fix}"
                    )
                if num in seen:
                    raise DatastackError(f"{file}: version {num} is listed twice. {fix}")
                seen.add(num)
                m = dict(v)
                what = f"{file}, version {num}"
                if m.get("time_stamp") is None:
                    raise DatastackError(
                        f"{what}: 'time_stamp' is {'null' if 'time_stamp' in m else 'missing'}; every "
                        f"version needs its UTC time stamp, e.g. '2025-03-31T08:01:07.000250'. {fix}"
                    )
                m["time_stamp"] = _parse_time(m["time_stamp"], what + ", 'time_stamp'", fix)
                m["expires_on"] = _parse_time(m.get("expires_on"), what + ", 'expires_on'", fix)
                m.setdefault("valid", True)
                m.setdefault("status", "AVAILABLE" if m["valid"] else "EXPIRED")
                m.setdefault("datastack", self.datastack)
                out.append(m)
            return sorted(out, key=lambda m: m["version"])

        return self._cached("versions", make)

    def versions_metadata(self, expired: bool = False) -> list[dict[str, Any]]:
        self._fresh()
        return [
            dict(m) for m in self._versions() if expired or (m.get("valid") and m.get("status") != "EXPIRED")
        ]

    def _version(self, version: int) -> dict[str, Any]:
        for m in self._versions():
            if m["version"] == version:
                if not m.get("valid") or m.get("status") == "EXPIRED":
                    raise VersionError(
                        f"{self.datastack}: version {version} has expired (status {m.get('status')}); "
                        f"query a valid version ({[v['version'] for v in self.versions_metadata()]}) "
                        f"or the same moment live (timestamp={m['time_stamp'].isoformat()!r})"
                    )
                return m
        raise VersionError(
            f"{self.datastack}: no materialization version {version!r}; "
            f"valid versions: {[v['version'] for v in self.versions_metadata()]}"
        )

    def schemas(self, schema_types: list[str]) -> dict[str, Mapping[str, Any]]:
        def make() -> dict[str, Any]:
            docs = self._read_json("schemas.json", "schemas.json")
            if not isinstance(docs, dict):
                problem = f"it holds a {type(docs).__name__}"
            else:
                bad = sorted(k for k, d in docs.items() if not isinstance(d, dict))
                problem = f"the entries {bad} are not objects" if bad else ""
            if problem:
                raise DatastackError(
                    f"{self.location}/schemas.json must map each schema type to its JSON Schema "
                    f"document; {problem}. {_RESTORE}"
                )
            return docs

        docs = self._cached("schemas", make)
        missing = [s for s in schema_types if s not in docs]
        if missing:
            raise SchemaError(
                f"{self.location}: schemas.json has no document for schema type(s) {missing}; "
                f"it has {sorted(docs)}"
            )
        return {s: docs[s] for s in schema_types}

    def _table_names(self) -> tuple[str, ...]:
        def make() -> tuple[str, ...]:
            d = self.path / "tables"
            if not d.is_dir():
                return ()
            # a table's directory without its metadata.json is damage, not an absent table: it
            # stays listed and its first use names the missing file
            return tuple(
                sorted(
                    p.name
                    for p in d.iterdir()
                    if not p.name.startswith(".")
                    and ((p / "metadata.json").is_file() or (p / "annotations").is_dir())
                )
            )

        return self._cached("table_names", make)

    def _table_metadata(self, table: str) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            m = self._read_json(f"tables/{table}/metadata.json", f"metadata of table {table!r}")
            if not isinstance(m, dict):
                raise DatastackError(
                    f"{self.location}: tables/{table}/metadata.json is not a JSON object. {_RESTORE}"
                )
            m.setdefault("table_name", table)
            vr = m.pop("voxel_resolution", None)
            if vr is not None and "voxel_resolution_x" not in m:
                m["voxel_resolution_x"], m["voxel_resolution_y"], m["voxel_resolution_z"] = vr
            return m

        return dict(self._cached(("table_meta", table), make))

    def _tables_in_version(self, version: int) -> tuple[str, ...]:
        """The tables of ``version``: those with a snapshot, and those that should have one (a
        missing snapshot is then an error naming its files when the table is used)."""
        meta = self._version(version)
        return self._cached(
            ("tables", version),
            lambda: tuple(
                t
                for t in self._table_names()
                if self._parquet_files(f"versions/{version}/{t}") or self._expected_in(t, meta)
            ),
        )

    def _expected_in(self, table: str, version: Mapping[str, Any]) -> bool:
        """Whether ``version`` should hold a snapshot of ``table``: the table was created at or
        before the version's time stamp (CAVE's rule; a table made later is not in it)."""
        rel = f"tables/{table}/metadata.json"
        created = _parse_time(
            self._table_metadata(table).get("created"),
            f"{self.location}/{rel}, 'created'",
            f"Fix: correct it in {rel}",
        )
        return created is None or created <= version["time_stamp"]

    def tables_metadata(self, version: int) -> list[dict[str, Any]]:
        self._fresh()
        return [self._table_metadata(t) for t in self._tables_in_version(version)]

    def table_spec(self, table: str, version: int) -> TableSpec:
        """The spec of ``table`` in ``version``: a table's metadata and schema are its own, not a
        version's, so every version holding it shares one object (built once, kept until the
        datastack changes), which the client's filter classes and this engine's compiler use."""
        tables = self._tables_in_version(version)
        if table not in tables:
            raise self._unknown_table(table, tables, f"version {version}")
        return self._spec(table)

    def _spec(self, table: str) -> TableSpec:
        if table not in self._table_names():  # also keeps names out of file paths
            raise self._unknown_table(table, self._table_names(), "the datastack")

        def make() -> TableSpec:
            meta = self._table_metadata(table)
            st = meta.get("schema_type") or meta.get("schema")
            if not isinstance(st, str):
                raise DatastackError(
                    f"{self.location}: tables/{table}/metadata.json names no schema_type. {_RESTORE}"
                )
            return table_spec(meta, load_schema_documents(self.schemas([st])))

        return self._cached(("spec", table), make)

    def _snapshot(self, table: str, version: int) -> tuple[str, ...]:
        """The snapshot files of ``table`` in ``version``, checked against its spec once."""

        def make() -> tuple[str, ...]:
            if table not in self._tables_in_version(version):
                raise self._unknown_table(table, self._tables_in_version(version), f"version {version}")
            rel = f"versions/{version}/{table}"
            files = self._parquet_files(rel)
            fix = _REMATERIALIZE.format(path=self.location, version=version)
            self._check_parts(f"the snapshot of {table!r} in version {version}", rel, files, fix)
            from ...datastack import snapshot_schema

            spec = self._spec(table)
            what = f"table {table!r}, version {version}"
            self._check_columns(what, files, snapshot_schema(spec), spec.stored_columns, fix)
            return files

        return self._cached(("snapshot", table, version), make)

    def _annotations(self, table: str) -> tuple[str, ...]:
        def make() -> tuple[str, ...]:
            if table not in self._table_names():
                raise self._unknown_table(table, self._table_names(), "the annotation history")
            rel = f"tables/{table}/annotations"
            files = self._parquet_files(rel)
            self._check_parts(f"the annotation history of {table!r}", rel, files, _RESTORE)
            from ...datastack import annotation_schema

            spec = self._spec(table)
            roots = {c.name for c in spec.columns if c.role.value == "root_id"}
            need = [c for c in spec.stored_columns if c not in roots] + ["deleted"]
            what = f"annotation history of table {table!r}"
            self._check_columns(what, files, annotation_schema(spec), need, _RESTORE)
            return files

        return self._cached(("annotations", table), make)

    def _history(self) -> tuple[str, ...]:
        def make() -> tuple[str, ...]:
            files = self._parquet_files("segmentation/history")
            self._check_parts(
                "the segmentation history (live queries and root ids need it)",
                "segmentation/history",
                files,
                _RESTORE,
            )
            from ...datastack import SEGMENTATION_SCHEMA

            self._check_columns(
                "segmentation history", files, SEGMENTATION_SCHEMA, SEGMENTATION_SCHEMA.names, _RESTORE
            )
            return files

        return self._cached("history", make)

    @property
    def history(self) -> History:
        """The segmentation history, for the client's root-id API (:mod:`tablekit.roots`)."""

        def make() -> History:
            files = self._history()
            _checksums.verify(files, self.location, _RESTORE)

            def source() -> tuple[duckdb.DuckDBPyConnection, str] | None:
                # the native copy live queries read: no second, in-memory copy per process
                mirror = self._mirror(files)
                return None if mirror is None else (self._con, f'"{mirror[0]}"."{mirror[1]}"')

            return History(files, source)

        return self._cached("history_api", make)

    def _check_parts(self, what: str, rel: str, files: Sequence[str], fix: str) -> None:
        """Refuse a Parquet directory that is missing or has lost part files (a gap in the
        ``part-NNNNN.parquet`` numbering), naming what is missing."""
        if not files:
            d = self.path / rel
            state = "has no Parquet files" if d.is_dir() else "does not exist"
            raise DatastackError(f"{self.location}: {what} is missing: {rel}/ {state}. {fix}")
        names = [os.path.basename(f) for f in files]
        listed = _checksums.listed(self.path / rel, self.location)
        if listed is not None:
            lost = [n for n in listed if n not in names]
            extra = [n for n in names if n not in listed]
            if lost:
                raise DatastackError(
                    f"{self.location}: {what} is incomplete: {', '.join(f'{rel}/{n}' for n in lost[:5])}"
                    f"{' …' if len(lost) > 5 else ''} is missing ({rel}/{_checksums.MANIFEST} lists it). {fix}"
                )
            if extra:
                raise DatastackError(
                    f"{self.location}: {rel}/{extra[0]} is not listed in {rel}/{_checksums.MANIFEST}: "
                    f"tablekit did not write it. Fix: remove it, or rebuild {what}"
                )
            _checksums.check_sizes(files, self.location, fix)
            return
        numbers = [_PART.fullmatch(n) for n in names]
        if all(numbers):
            have = {int(m.group(1)) for m in numbers if m}
            lost = [f"{rel}/part-{i:05d}.parquet" for i in range(max(have)) if i not in have]
            if lost:
                raise DatastackError(
                    f"{self.location}: {what} is incomplete: {', '.join(lost[:5])}"
                    f"{' …' if len(lost) > 5 else ''} is missing. {fix}"
                )

    def _check_columns(
        self, what: str, files: Sequence[str], expected: pa.Schema, needed: Sequence[str], fix: str
    ) -> None:
        """Refuse Parquet files (every one of them: their footers are small) that cannot be read,
        lack a column ``needed``, or hold one whose type is not the format's (``expected``; a
        narrower type of the same kind reads the same and is accepted)."""
        for file in files:
            rel = os.path.relpath(file, self.location)
            try:
                schema = pq.read_schema(file)
            except (OSError, pa.ArrowException) as e:
                _checksums.verify([file], self.location, fix)  # names the damage when it can
                raise DatastackError(
                    f"{self.location}: {rel} ({what}) cannot be read: {_reason(e)}. {_RESTORE}"
                ) from e
            missing = [c for c in needed if c not in schema.names]
            if missing:
                raise DatastackError(
                    f"{self.location}: {rel} ({what}) lacks columns {missing} that its schema requires. {fix}"
                )
            for name in needed:
                found, want = schema.field(name).type, expected.field(name).type
                if not _reads_as(found, want):
                    raise DatastackError(
                        f"{self.location}: {rel} ({what}), column {name!r} has type {found}; the format "
                        f"stores it as {want} (docs/datastack-format.md). {fix}"
                    )

    def _unknown_table(self, table: str, names: Sequence[str], where: str) -> UnknownTableError:
        import difflib

        close = difflib.get_close_matches(table, list(names), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        return UnknownTableError(
            f"{self.datastack}: no table {table!r} in {where}.{hint} Tables: {', '.join(names) or 'none'}"
        )

    def annotation_count(self, table: str, version: int) -> int:
        self._fresh()
        files = self._snapshot(table, version)
        try:
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        except (OSError, pa.ArrowException) as e:
            raise DatastackError(f"{self.location}: the snapshot of {table!r} cannot be read: {e}") from e
        written = _checksums.expected_rows(files, self.location)
        if written is not None and written != rows:  # a damaged footer; the data is checked when read
            raise DatastackError(
                f"{self.location}: the snapshot of {table!r} in version {version} is damaged: its files "
                f"say {rows} rows, {written} when written. {self._fix_for(files)}"
            )
        return rows

    # ------------------------------------------------------------------ views
    def _view_defs(self) -> dict[str, dict[str, Any]]:
        def make() -> dict[str, dict[str, Any]]:
            d = self.path / "views"
            out = {}
            if d.is_dir():
                for p in sorted(d.glob("*.json")):
                    v = self._read_json(f"views/{p.name}", f"view {p.stem!r}")
                    if not isinstance(v, dict) or not isinstance(v.get("sql"), str):
                        raise DatastackError(
                            f"{self.location}: views/{p.name} has no 'sql' string. Fix: give it one, or "
                            "remove the file"
                        )
                    problem = view_sql_problem(self._con, v["sql"], self._table_names())
                    if problem is not None:
                        raise DatastackError(
                            f"{self.location}: view {p.stem!r} (views/{p.name}) is refused: {problem}. "
                            "Fix: make its 'sql' one SELECT over the datastack's tables by their quoted names, "
                            "or remove the file"
                        )
                    out[p.stem] = v
            return out

        return self._cached("view_defs", make)

    def _view_source(self, view: str, tables: Sequence[str], source: Any) -> _sql.View:
        sql = self._view_defs()[view]["sql"]
        return _sql.View(sql, {t: source(t) for t in tables if t in sql})

    def _describe_view(
        self, name: str, src: _sql.View, specs: Mapping[str, TableSpec], ts: Any
    ) -> dict[str, Any] | None:
        """The view schema from DuckDB's ``DESCRIBE``; None if the view reads a table that is absent."""
        sql, params = _sql.describe_view(src, specs, ts)
        cur = self._con.cursor()
        try:
            rows = cur.execute(sql, params).fetchall()
        except duckdb.CatalogException:
            return None
        except duckdb.Error as e:
            raise DatastackError(
                f"{self.location}: view {name!r} (views/{name}.json) cannot be run: {e}"
            ) from e
        finally:
            cur.close()
        return self._view_schema(name, [(r[0], str(r[1])) for r in rows])

    def _view_schema(self, view: str, columns: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """DuckDB column types → CAVE view-schema types; ``P_x/P_y/P_z`` trios → ``P: SpatialPoint``."""
        types = dict(columns)
        numeric = _INT_TYPES | _FLOAT_TYPES

        def is_num(t: str) -> bool:
            return t in numeric or t.startswith("DECIMAL")

        out: dict[str, Any] = {}
        done: set[str] = set()
        for col, t in columns:
            if col in done:
                continue
            if col.endswith("_x"):
                p = col[:-2]
                trio = [f"{p}_x", f"{p}_y", f"{p}_z"]
                if all(c in types and is_num(types[c]) for c in trio):
                    out[p] = {"type": "SpatialPoint"}
                    done.update(trio)
                    continue
            if t in _INT_TYPES:
                out[col] = {"type": "integer"}
            elif t in _FLOAT_TYPES:
                out[col] = {"type": "float"}
            elif t.startswith("DECIMAL"):
                out[col] = {"type": "number"}
            elif t == "VARCHAR":
                out[col] = {"type": "string"}
            elif t == "BOOLEAN":
                out[col] = {"type": "boolean"}
            elif t.startswith("TIMESTAMP") or t == "DATE":
                out[col] = {"type": "string", "format": "date-time"}
            else:
                raise DatastackError(
                    f"{self.location}: view {view!r}, column {col!r} has DuckDB type {t}, which a view "
                    "schema cannot express; cast it to an integer, float, string, boolean or timestamp"
                )
        return out

    def _views(self, version: int) -> dict[str, tuple[dict[str, Any], TableSpec]]:
        """``{view: (view schema, spec)}`` for the views that run on this version's snapshots."""

        def make() -> dict[str, tuple[dict[str, Any], TableSpec]]:
            tables = self._tables_in_version(version)
            specs = {t: self._spec(t) for t in tables}
            out = {}
            for name in self._view_defs():
                src = self._view_source(name, tables, lambda t: _sql.Files(self._snapshot(t, version)))
                schema = self._describe_view(name, src, specs, None)
                if schema is None:
                    continue  # the view reads a table this version does not have
                out[name] = (schema, view_spec(name, schema, {**self._view_meta(name), "table_name": name}))
            return out

        return self._cached(("views", version), make)

    def _view_meta(self, view: str) -> dict[str, Any]:
        d = self._view_defs()[view]
        vr = d.get("voxel_resolution") or [None, None, None]
        names = sorted(self._view_defs())
        return {
            "id": names.index(view) + 1,
            "table_name": view,
            "datastack_name": self.datastack,
            "description": d.get("description", ""),
            "notice_text": d.get("notice_text"),
            "live_compatible": bool(d.get("live_compatible", False)),
            "voxel_resolution_x": vr[0],
            "voxel_resolution_y": vr[1],
            "voxel_resolution_z": vr[2],
        }

    def views_metadata(self, version: int) -> dict[str, dict[str, Any]]:
        self._fresh()
        return {name: self._view_meta(name) for name in self._views(version)}

    def view_schemas(self, version: int) -> dict[str, dict[str, Any]]:
        self._fresh()
        return {name: json.loads(json.dumps(schema)) for name, (schema, _) in self._views(version).items()}

    def view_specs(self, version: int) -> dict[str, TableSpec]:
        """The specs of the views of ``version``, the ones this engine compiles with."""
        self._fresh()
        return {name: spec for name, (_, spec) in self._views(version).items()}

    # ------------------------------------------------------------------ queries
    def _plan(self, query: Query) -> tuple[_sql.CompiledSQL, dict[str, tuple[str, ...]], tuple[str, ...]]:
        """Compile ``query``; also return the files it reads and the notices of its tables."""
        self._fresh()
        if query.datastack != self.datastack:
            raise QueryError(
                f"{query.table}: the query is for datastack {query.datastack!r}, this backend serves {self.datastack!r}"
            )
        live = query.timestamp is not None
        if live == (query.version is not None):
            raise QueryError(
                f"{query.table}: a query needs exactly one of version (materialized) and timestamp (live)"
            )
        specs: dict[str, TableSpec] = {}
        sources: dict[str, _sql.Source] = {}
        files: dict[str, tuple[str, ...]] = {}

        def table_source(t: str) -> _sql.Stored:
            src: _sql.Stored
            if live:
                annotations, history = self._annotations(t), self._history()
                files["segmentation/history"] = history
                base = self._base_version(t, query.timestamp)  # type: ignore[arg-type]
                if base is None:  # before every valid version: rebuild from the whole history
                    files[t] = annotations
                    src = _sql.Live(annotations, history, self._copy(annotations), self._copy(history))
                else:
                    snapshot = self._snapshot(t, base["version"])
                    files[t] = (*snapshot, *annotations)
                    src = _sql.LiveFromSnapshot(
                        snapshot=_sql.Files(snapshot, self._copy(snapshot)),
                        version_time=base["time_stamp"],
                        annotations=_sql.Files(annotations, self._copy(annotations)),
                        history=_sql.Files(history, self._copy(history)),
                        deletions=_sql.Files(annotations, self._copy(annotations, "deletions")),
                        changes=_sql.Files(history, self._copy(history, "changes")),
                    )
            else:
                files[t] = self._snapshot(t, query.version)  # type: ignore[arg-type]
                relation, clustered_by = self._snapshot_relation(files[t], query, t)
                src = _sql.Files(files[t], relation, clustered_by)
            specs[t] = self._spec(t)
            return src

        if query.kind == "view":
            if query.join is not None:
                raise QueryError(f"{query.table}: a view cannot be joined")
            if query.table not in self._view_defs():
                raise self._unknown_table(query.table, sorted(self._view_defs()), "the views")
            if live:
                meta = self._view_meta(query.table)
                if not meta["live_compatible"]:
                    raise UnsupportedError(
                        f"{query.table}: this view is not live-compatible; query it at a materialization "
                        "version instead"
                    )
                tables = [t for t in self._table_names() if t in self._view_defs()[query.table]["sql"]]
                src = self._view_source(query.table, tables, table_source)
                schema = self._describe_view(query.table, src, specs, query.timestamp)
                if schema is None:
                    raise DatastackError(
                        f"{self.location}: view {query.table!r} reads a table that has no annotation history"
                    )
                specs[query.table] = view_spec(query.table, schema, meta)
            else:
                views = self._views(query.version)  # type: ignore[arg-type]
                if query.table not in views:
                    raise self._unknown_table(
                        query.table, sorted(views), f"the views of version {query.version}"
                    )
                src = self._view_source(query.table, self._tables_in_version(query.version), table_source)  # type: ignore[arg-type]
                specs[query.table] = views[query.table][1]
            sources[query.table] = src
        else:
            for t in query.tables:
                sources[t] = table_source(t)
        try:
            compiled = _sql.compile_query(query, specs, sources)
        except KeyError as e:  # pragma: no cover - defensive
            raise QueryError(f"{query.table}: {e}") from e
        notices = tuple(
            dict.fromkeys(
                specs[t].notice_text
                for t in ((query.table,) if query.kind == "view" else query.tables)
                if specs[t].notice_text
            )
        )
        return compiled, files, notices  # type: ignore[return-value]

    def _base_version(self, table: str, t: _dt.datetime) -> dict[str, Any] | None:
        """The newest valid version at or before ``t`` that has a snapshot of ``table`` (None: none).

        A live query at ``t`` starts from its snapshot and applies only what changed since.
        """
        best: dict[str, Any] | None = None
        for m in self._versions():
            if not m.get("valid") or m.get("status") == "EXPIRED" or m["time_stamp"] > t:
                continue
            if best is not None and (m["time_stamp"], m["version"]) < (best["time_stamp"], best["version"]):
                continue
            if table in self._tables_in_version(m["version"]):
                best = m
        return best

    def _snapshot_relation(
        self, files: Sequence[str], query: Query, table: str
    ) -> tuple[tuple[str, str] | None, str | None]:
        """The native copy a snapshot query reads, and the column it is clustered by: the root id
        it looks up when that copy is ready (:data:`CLUSTER_MIN_ROWS`), otherwise the id-ordered
        copy (and None)."""
        stamp = self._files_stamp(files)  # the files are looked at once for both copies
        plain = self._mirror(files, stamp=stamp, background=True, direct=True)
        column = _lookup_column(query, table)
        if plain is None or column is None:
            return plain, None
        key = plain[0]  # the copy's alias: it changes with the files' contents
        if key not in self._rows:
            cur = self._con.cursor()
            try:
                self._rows[key] = int(cur.sql(f"SELECT count(*) FROM {plain[0]}.{plain[1]}").fetchall()[0][0])
            finally:
                cur.close()
        if self._rows[key] < CLUSTER_MIN_ROWS:
            return plain, None
        clustered = self._mirror(files, f"cluster:{column}", background=True, stamp=stamp)
        return (plain, None) if clustered is None else (clustered, column)

    def wait_for_copies(self, timeout: float | None = None) -> None:
        """Wait until the native copies being built in the background are ready (tests, benchmarks)."""
        with self._lock:
            threads = list(self._building.values())
        for th in threads:
            th.join(timeout)

    @staticmethod
    def _files_stamp(files: Sequence[str]) -> str:
        """What a native copy is keyed by: the DuckDB version and each file's path, size and mtime."""
        stamp = [duckdb.__version__, _CHECKS]
        for f in files:
            st = os.stat(f)
            stamp.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
        return "\n".join(stamp)

    def _native_key(self, files: Sequence[str], layout: str | None, stamp: str | None = None) -> str:
        text = self._files_stamp(files) if stamp is None else stamp
        if layout is not None:
            text += f"\nlayout:{layout}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _build_native(self, files: Sequence[str], layout: str | None, db: Path) -> None:
        assert self._native_dir is not None
        self._native_dir.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(self._native_dir, db.stem)
        tmp = db.with_name(f"{db.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        with self._lock:  # read directly first (_check_direct): the same files, already checked
            checked = self._files_stamp(files) in self._checked
        if not checked:
            _checksums.verify(files, self.location, self._fix_for(files))
        con = duckdb.connect(str(tmp))
        with self._lock:
            stopping = self._stopping
            if not stopping:
                self._build_cons.add(con)
        if stopping:  # the process is exiting (_stop_all_builds)
            con.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        try:
            con.execute("SET parquet_can_have_nan = true")
            if layout is not None and layout.startswith("cluster:"):
                # a background job: sort within a bounded amount of memory (DuckDB spills the rest
                # to a temporary directory next to the copy)
                limit = os.environ.get("TABLEKIT_BUILD_MEMORY", _BUILD_MEMORY).replace("'", "''")
                con.execute(f"SET memory_limit = '{limit}'")
            lock_down(con, [self.path, self._native_dir])
            con.execute(f"CREATE TABLE t AS {_layout_sql(layout)}", [list(files)])
            if layout is None and not checked:  # the copy every other layout comes after
                self._check_unique_ids(con, "t", [], files)
        except DatastackError:
            con.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            with self._lock:
                self._build_cons.discard(con)
            con.close()
        if self._stopping:  # interrupted at exit: the copy may be incomplete
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        os.replace(tmp, db)
        with self._lock:
            keep = {Path(f) for f in self._native_files.values()} | {db}
        try:
            _prune_native(self._native_dir.parent, keep)
        except ValueError as e:  # a bad $TABLEKIT_NATIVE_CACHE_SIZE: nothing is deleted
            warnings.warn(f"tablekit: {e}; no native copy was deleted", stacklevel=2)

    def _check_direct(self, files: Sequence[str]) -> None:
        """Check Parquet files that queries read directly (no native copy) once per backend, as a
        native copy's build checks them: checksums, unique ids."""
        stamp = self._files_stamp(files)
        with self._lock:
            if stamp in self._checked:
                return
        _checksums.verify(files, self.location, self._fix_for(files))
        cur = self._con.cursor()
        try:
            self._check_unique_ids(cur, "read_parquet(?)", [list(files)], files)
        finally:
            cur.close()
        with self._lock:
            self._checked.add(stamp)

    def _fix_for(self, files: Sequence[str]) -> str:
        """What to do about damaged ``files``: a snapshot is rebuilt from the histories."""
        parts = os.path.relpath(files[0], self.location).split(os.sep)
        if parts[0] == "versions" and len(parts) > 1:
            return _REMATERIALIZE.format(path=self.location, version=parts[1])
        return _RESTORE

    def _check_unique_ids(
        self, con: duckdb.DuckDBPyConnection, source: str, params: list[Any], files: Sequence[str]
    ) -> None:
        """Refuse a table (``source``: the native copy, or ``read_parquet`` of ``files``) that holds
        an id twice, naming the id and its files. Rows are stored by increasing id, which one
        streaming pass confirms (a strictly increasing column has no repeats); only when it does
        not are the ids counted."""
        names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}", params).fetchall()]
        if "id" not in names:
            return
        (unsorted,) = con.execute(  # type: ignore[misc]
            f'SELECT count(*) FROM (SELECT "id", lag("id") OVER () AS prev FROM {source}) WHERE "id" <= prev',
            params,
        ).fetchone()
        if not unsorted:
            return
        row = con.execute(
            f'SELECT "id", count(*) FROM {source} GROUP BY "id" HAVING count(*) > 1 ORDER BY "id" LIMIT 1',
            params,
        ).fetchone()
        if row is None:
            return  # unsorted but unique: answers are ordered by id anyway
        dup, n = int(row[0]), int(row[1])
        held = con.execute(
            'SELECT DISTINCT filename FROM read_parquet(?, filename = true) WHERE "id" = ? ORDER BY 1',
            [list(files), dup],
        ).fetchall()
        rels = ", ".join(os.path.relpath(r[0], self.location) for r in held)
        where = os.path.dirname(os.path.relpath(files[0], self.location))
        parts = where.split(os.sep)
        table = parts[2] if parts[0] == "versions" and len(parts) > 2 else parts[min(1, len(parts) - 1)]
        fix = self._fix_for(files)
        raise DatastackError(
            f"{self.location}: table {table!r}, column 'id': {where}/ holds id {dup} {n} times ({rels}); ids are unique "
            f"in a table (docs/datastack-format.md), and tablekit does not guess which row is right. {fix}"
        )

    def _build_in_background(self, files: Sequence[str], layout: str | None, db: Path, key: str) -> None:
        def work() -> None:
            with self._idle:  # not while a query runs: it would compete for the cores
                while self._active and not self._stopping:
                    self._idle.wait()
                if self._stopping:
                    self._building.pop(key, None)
                    return
            try:
                self._build_native(files, layout, db)
            except (OSError, duckdb.Error, DatastackError) as e:  # the id-ordered copy keeps answering
                with self._lock:
                    self._failed.add(key)  # not tried again by this process
                if isinstance(e, duckdb.InterruptException):  # the process is exiting: built next time
                    return
                snapshot = Path(files[0]).parent  # versions/<v>/<table>/
                if layout is not None and layout.startswith("cluster:"):
                    column = layout.split(":", 1)[-1]
                    warnings.warn(
                        f"tablekit: {snapshot.name} (version {snapshot.parent.name}): the {layout} copy (rows "
                        f"ordered by {column}) could not be built under {db.parent} ({e}); lookups by {column} "
                        "keep reading the id-ordered copy, with the same answers. Fix: free space there, or set "
                        "TABLEKIT_BUILD_MEMORY to a valid DuckDB size such as '2GB'",
                        stacklevel=1,
                    )
                else:
                    warnings.warn(
                        f"tablekit: {os.path.relpath(snapshot, self.location)}: its native DuckDB copy could "
                        f"not be built under {db.parent} ({e}); queries keep reading the Parquet files, "
                        "with the same answers. Fix: free space there or make it writable",
                        stacklevel=1,
                    )
            finally:
                with self._lock:
                    self._building.pop(key, None)

        with self._lock:
            if key in self._building or key in self._failed:
                return
            th = threading.Thread(target=work, name=f"tablekit-native-{key[:8]}", daemon=True)
            self._building[key] = th
            _BUILDERS.add(self)
        th.start()

    def _copy(self, files: Sequence[str], layout: str | None = None) -> tuple[str, str] | None:
        """A native copy if it is ready, else None (the Parquet files are read, checked first) and
        the copy is built in the background."""
        return self._mirror(files, layout, background=True, direct=True)

    def _mirror(
        self,
        files: Sequence[str],
        layout: str | None = None,
        *,
        background: bool = False,
        stamp: str | None = None,
        direct: bool = False,
    ) -> tuple[str, str] | None:
        """The native DuckDB copy of these Parquet files as ``(catalog, table)``, built on first use
        (with ``background``: in a thread once no query runs, and None until it is ready; with
        ``direct`` the caller then reads the Parquet files, which are checked first).

        ``layout`` names a derived copy (:data:`_LAYOUTS`, or ``cluster:<column>``): some of the
        columns, or the rows in another order.
        """
        if not files:
            return None
        if self._native_dir is None:
            self._check_direct(files)
            return None
        key = self._native_key(files, layout, stamp)
        with self._lock:
            if key in self._attached:
                return self._attached[key]
            if background and (key in self._building or key in self._failed):
                if direct:
                    self._check_direct(files)
                return None
            db = self._native_dir / f"{key}.duckdb"
            try:
                if not db.exists():
                    if direct and sum(os.path.getsize(f) for f in files) < DIRECT_MIN_BYTES:
                        background = False  # small: building the copy costs less than reading twice
                    if background:
                        self._build_in_background(files, layout, db, key)
                        if direct:
                            self._check_direct(files)
                        return None
                    self._build_native(files, layout, db)
                alias = f"native_{key}"
                literal = str(db).replace("'", "''")
                self._con.execute(f"ATTACH '{literal}' AS {alias} (READ_ONLY)")
                with contextlib.suppress(OSError):
                    os.utime(db)  # its last use, which decides when it is deleted (_prune_native)
            except (OSError, duckdb.Error):  # read-only or full cache dir: read the Parquet files
                self._check_direct(files)
                return None
            self._attached[key] = (alias, "t")
            self._native_files[alias] = str(db)
            return self._attached[key]

    def _request(self, compiled: _sql.CompiledSQL, files: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        return {
            # native copies the SQL reads: ATTACH them (READ_ONLY) under these names to re-run it
            "attach": {a: f for a, f in self._native_files.items() if f'"{a}"' in compiled.sql},
            "engine": "duckdb",
            "duckdb_version": duckdb.__version__,
            "sql": compiled.sql,
            "parameters": jsonable(compiled.params),
            "value_lists": {vl.name: jsonable(vl.values) for vl in compiled.value_lists},
            "files": {t: [os.path.relpath(f, self.location) for f in fs] for t, fs in files.items()},
            "columns": list(compiled.columns),
        }

    def __reduce__(self) -> Any:
        """Pickled as the directory and options: unpickling opens it again (its own DuckDB)."""
        return (functools.partial(LocalBackend, **self._options), (str(self.path),))

    def explain(self, query: Query) -> dict[str, Any]:
        compiled, files, _ = self._plan(query)
        return self._request(compiled, files)

    def execute(self, query: Query) -> QueryResult:
        with self._lock:
            self._active += 1
        try:
            compiled, files, notices = self._plan(query)
            table = self._run(compiled, query)
        finally:
            with self._lock:
                self._active -= 1
                self._idle.notify_all()
        return QueryResult(
            table=table,
            resolution=compiled.resolution,
            warnings=notices,
            request=self._request(compiled, files),
        )

    def _run(self, compiled: _sql.CompiledSQL, query: Query) -> pa.Table:
        cur = self._con.cursor()
        try:
            for vl in compiled.value_lists:
                try:
                    arr = pa.array(vl.values, type=ARROW_TYPES[vl.kind])
                except (pa.ArrowException, OverflowError, TypeError, ValueError) as e:
                    raise FilterValueError(
                        f"{query.table}: a membership list holds a value that is not {vl.kind.value}: {e}",
                        table=query.table,
                    ) from e
                cur.register(vl.name, pa.table({"v": arr}))
            table = cur.sql(self._parsed(compiled.sql), params=compiled.params or None).to_arrow_table()
        except duckdb.Error as e:
            if "corrupt database file" in str(e).lower():
                copies = sorted(f for a, f in self._native_files.items() if f'"{a}"' in compiled.sql)
                raise DatastackError(
                    f"{query.table}: a native DuckDB copy this query reads is damaged ({_reason(e)}); the "
                    f"Parquet files are not. Fix: delete {', '.join(copies) or 'it'} — tablekit builds it "
                    "again from the Parquet files on next use"
                ) from e
            raise self._error(e, query) from e
        finally:
            cur.close()
        return _utc(table)

    def _parsed(self, sql: str) -> Any:
        """``sql`` parsed once per thread: DuckDB takes a parsed statement without parsing its text
        again (a query's text repeats; its values are parameters)."""
        cache: dict[str, Any] | None = getattr(self._statements, "cache", None)
        if cache is None:
            cache = self._statements.cache = {}
        statement = cache.get(sql)
        if statement is None:
            (statement,) = self._con.extract_statements(sql)
            if len(cache) >= 256:
                cache.pop(next(iter(cache)))
            cache[sql] = statement
        return statement

    def _error(self, e: duckdb.Error, query: Query) -> Exception:
        msg = str(e).strip()
        if isinstance(e, duckdb.IOException):
            return DatastackError(f"{self.location}: cannot read the files of {query.table!r}: {msg}")
        regex = [p for p in query.predicates if p.op == "regex"]
        if regex and isinstance(e, duckdb.InvalidInputException):
            p = next((p for p in regex if str(p.value) in msg), regex[0])
            return FilterValueError(
                f"{p.table}.{p.column}: DuckDB rejects the regular expression {p.value!r} "
                f"(RE2 syntax, see https://github.com/google/re2/wiki/Syntax): {msg}",
                table=p.table,
                column=p.column,
            )
        if isinstance(e, duckdb.OutOfMemoryException):
            return QueryError(
                f"{query.table}: out of memory; narrow the query or page it with limit/offset ({msg})"
            )
        return QueryError(f"{query.table}: the local engine failed: {msg}")


def _utc(table: pa.Table) -> pa.Table:
    """Label every timestamp column ``UTC`` (DuckDB uses the session zone name, e.g. ``Etc/UTC``)."""
    fields = list(table.schema)
    changed = False
    for i, f in enumerate(fields):
        if pa.types.is_timestamp(f.type) and f.type.tz is not None and f.type.tz != "UTC":
            fields[i] = f.with_type(pa.timestamp(f.type.unit, tz="UTC"))
            changed = True
    return table.cast(pa.schema(fields)) if changed else table
