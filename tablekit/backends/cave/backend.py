"""The CAVE HTTP backend: a CAVE deployment's materialization API v3 (``connect(ds, server=URL)``).

``CaveBackend`` answers the :class:`~tablekit.backends.base.Backend` protocol over HTTP:

* **Start-up** costs one or two round trips: the datastack record from the info service and, in
  the same round where possible, the materialization API versions and the versions metadata.
  Table metadata and schemas are fetched when first needed, through the bulk endpoints
  (``tables/metadata`` with ``types_all`` in parallel) and kept on disk per (server, datastack,
  version) for ``cache_ttl`` seconds (:meth:`CaveBackend.refresh` forgets them). The views
  endpoints are optional: their failure never breaks tables.
* **Queries** compile (:mod:`~tablekit.backends.cave.compile`, pure) to the v3 requests, are
  decoded from Arrow IPC (zstd/lz4 buffers) or JSON, and come back complete and in ``id`` order:
  a result cut at the server's row limit is completed by paging over ``id`` ranges (a ``count``
  to size the pages, pages in parallel, a page that comes back full is split in two, the total is
  checked against the count). ``Query.complete = False`` returns the first page with a warning.
* **Server defects** that would give wrong answers are compensated (README, "Server defects
  tablekit compensates for").
* **Roots**: :class:`CaveHistory` answers the roots API from the chunkedgraph endpoints.

Over 600 lines: one class, whose halves share its state (session, pool, memory and disk caches,
server row limit): metadata (start-up, versions, tables, schemas, views; ~350 lines) and running a
query (plan, pages, counts, totals checked; ~400). The pure parts are already out
(:mod:`.compile`, :mod:`.decode`, :mod:`.pages`, :mod:`.cache`); splitting the class further would
only move ``self`` across modules.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import pyarrow as pa

from ..._values import short
from ...errors import (
    DatastackError,
    HTTPError,
    IncompleteResultError,
    QueryError,
    SchemaError,
    ServerError,
    UnknownTableError,
    UnsupportedError,
    VersionError,
)
from ...query import Query
from ...schema import TableSpec, load_schema_documents, table_spec, view_spec
from ..base import Capabilities, QueryResult, count_table
from . import compile as wire
from . import decode as decoding
from . import pages as paging
from .cache import DEFAULT_TTL, SCHEMAS_FILE, VERSIONS_TTL, DiskCache, readable
from .history import CaveHistory
from .http import DEFAULT_RETRY_BUDGET, Budget, HTTPSession
from .pages import Answer
from .token import Token, find_token
from .transport import Response, Transport

__all__ = ["CaveBackend", "CaveHistory"]


def _objects(url: str, got: Any, what: str, entry: str, nulls: bool = False) -> dict[str, Any]:
    """A views answer: an object of objects (or, with ``nulls``, nulls) by name; else malformed."""
    if not isinstance(got, dict):
        raise decoding.malformed(url, f"{what} is {short(got)}, not an object of {entry}s by name")
    for n, m in got.items():
        if not (isinstance(m, dict) or (nulls and m is None)):
            raise decoding.malformed(url, f"{what} give {entry} {n!r} as {short(m)}, not an object")
    return got


class CaveBackend:
    """A CAVE datastack over HTTP. Make one with ``tablekit.connect(datastack, server=URL)``.

    ``server`` is the global server (the info service); the materialization and chunkedgraph
    services are found at the datastack's ``local_server``. ``token``: see
    :func:`tablekit.backends.cave.token.find_token` (argument, ``$CAVE_TOKEN``, CAVEclient's secret
    files). ``timeout`` (seconds, or ``(connect, read)``), ``max_retries`` and ``backoff`` shape
    every request; ``retry_budget`` (seconds, default 600) is the time a query (all its requests)
    may spend before failures are no longer retried; ``cache_dir`` (``False`` disables it) and ``cache_ttl`` the metadata cache;
    ``max_workers`` bounds parallel requests; ``page_size`` caps the rows asked per request
    (default: the server's own limit); ``progress`` shows a progress bar on stderr for multi-page
    downloads (``None``: only on a terminal).
    """

    name = "cave"
    capabilities = Capabilities(live=True, live_views=False, history=True, refresh=True)

    def __init__(
        self,
        datastack: str,
        server: str,
        token: str | Token | None = None,
        *,
        timeout: float | tuple[float, float] | None = None,
        max_retries: int = 3,
        backoff: float = 0.25,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
        cache_dir: str | os.PathLike[str] | bool | None = None,
        cache_ttl: float = DEFAULT_TTL,
        max_workers: int = 4,
        page_size: int | None = None,
        progress: bool | None = None,
        transport: Transport | None = None,
    ):
        if not isinstance(server, str) or "://" not in server:
            raise DatastackError(
                f"server must be a URL such as 'https://global.daf-apis.com', got {server!r}"
            )
        if page_size is not None and (
            isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
        ):
            raise QueryError(f"page_size must be a positive int or None, got {page_size!r}")
        self.datastack = datastack
        self.location = server.rstrip("/")
        self._http = HTTPSession(
            find_token(token, self.location),
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            retry_budget=retry_budget,
            transport=transport,
        )
        self._workers = max(1, int(max_workers))
        self._pool = cf.ThreadPoolExecutor(self._workers, thread_name_prefix="tablekit-cave")
        self._disk = DiskCache(cache_dir, self.location, datastack, cache_ttl)
        self._mem: dict[Any, Any] = {}
        self._mem_time: dict[Any, float] = {}
        self._lock = threading.RLock()
        self.page_size = page_size
        self.progress = progress
        self._cap: int | None = None  # the server's row limit, once seen
        self._bootstrap()

    # ------------------------------------------------------------------ lifecycle
    def __reduce__(self) -> Any:  # its token must not be written anywhere
        raise TypeError(
            f"a CAVE client ({self.datastack!r} at {self.location}) cannot be pickled, nor its filter "
            "objects: it holds a token. In the other process connect() again and rebuild the filter "
            "with client.tables[f.table_name](**f.filters)"
        )

    def __repr__(self) -> str:
        tok = "no token" if self._http.token is None else f"token from {self._http.token.source}"
        return f"<CaveBackend {self.datastack!r} at {self.location} ({tok})>"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> CaveBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> None:
        """Forget every cached answer (memory and disk): metadata, schemas, versions, views."""
        with self._lock:
            self._mem = {k: v for k, v in self._mem.items() if k in ("info", "local")}
            self._disk.clear()

    # ------------------------------------------------------------------ plumbing
    def _get(self, url: str, *, params: Any = None, ok: Sequence[int] = ()) -> Response:
        return self._http.request("GET", url, params=params, ok=ok, idempotent=True)

    def _json(self, url: str, *, params: Any = None, missing: Any = ..., method: str = "GET") -> Any:
        """JSON from ``url``; ``missing`` is the answer to a 404 (the CAVE servers' "nothing here")."""
        ok = (404,) if missing is not ... else ()
        resp = self._http.request(method, url, params=params, ok=ok, idempotent=True)  # reads
        if resp.status == 404:
            return missing
        try:
            return resp.json()
        except ValueError as e:
            raise ServerError(
                f"{method} {url}: the answer is not JSON ({e})", url=url, status=resp.status
            ) from None

    def _cached(self, key: str, fetch: Callable[[], Any], ttl: float | None = None) -> Any:
        """``fetch()``'s answer, kept in memory and on disk (for ``ttl`` seconds, at most the cache TTL)."""
        limit = self._disk.ttl if ttl is None else min(ttl, self._disk.ttl)
        with self._lock:
            if key in self._mem and time.monotonic() - self._mem_time.get(key, 0.0) <= limit:
                return self._mem[key]
        value = self._disk.get(key, ttl)
        if value is None:
            value = fetch()
            self._disk.put(key, value)
        with self._lock:
            self._mem[key] = value
            self._mem_time[key] = time.monotonic()
        return value

    def _bootstrap(self) -> None:
        """Datastack record → local server; versions in the same round when the cache allows."""
        info = self._disk.get("info.json")
        speculative: dict[str, cf.Future[Any]] = {}
        if info is None:
            url = f"{self.location}/info/api/v2/datastack/full/{self.datastack}"
            fut = self._pool.submit(self._json, url)
            # most deployments put materialization on another host; when it is this one, the
            # versions arrive in the same round trip
            speculative = self._versions_requests(self.location)
            try:
                info = fut.result()
            except HTTPError as e:
                if e.status == 404:
                    raise DatastackError(
                        f"{self.location}: the info service knows no datastack {self.datastack!r} ({e.message or e})"
                    ) from None
                raise
            if not isinstance(info, dict):
                raise DatastackError(
                    f"{self.location}: the info service answered {type(info).__name__} for {self.datastack!r}"
                )
            self._disk.put("info.json", info)
        local = str(info.get("local_server") or self.location).rstrip("/")
        self._mem["info"], self._mem["local"] = info, local
        self._v3 = f"{local}/materialize/api/v3"
        self._v2 = f"{local}/materialize/api/v2"
        if self._disk.get("versions.json", VERSIONS_TTL) is not None:
            # everything came from the cache: open the connection the first query will use while
            # the caller builds it (a TLS handshake to a remote server costs round trips); not when
            # this process already holds one (no thread is started then)
            self._http.open_ahead(local)
            return
        if local != self.location or not speculative:
            speculative = self._versions_requests(local)
        self._mem["versions_future"] = speculative

    def _versions_requests(self, local: str) -> dict[str, cf.Future[Any]]:
        base = f"{local}/materialize"
        return {
            "api": self._pool.submit(self._json, f"{base}/api/versions"),
            "versions": self._pool.submit(
                self._json,
                f"{base}/api/v3/datastack/{self.datastack}/metadata",
                params={"expired": "True"},
                missing=[],
            ),
        }

    # ------------------------------------------------------------------ metadata
    def datastack_info(self) -> dict[str, Any]:
        info = dict(self._mem["info"])
        if "viewer_resolution" not in info and "viewer_resolution_x" in info:
            info["viewer_resolution"] = [info.get(f"viewer_resolution_{a}") for a in "xyz"]
        if "pcg_table_name" not in info and info.get("segmentation_source"):
            info["pcg_table_name"] = str(info["segmentation_source"]).rstrip("/").rsplit("/", 1)[-1]
        return info

    def _raw_versions(self) -> list[dict[str, Any]]:
        def fetch() -> Any:
            futures = self._mem.pop("versions_future", None)
            if futures is None:
                futures = self._versions_requests(self._mem["local"])
            try:
                versions = futures["versions"].result()
            except HTTPError as e:
                unsupported = self._without_v3(futures["api"])
                if unsupported is not None:
                    raise unsupported from None
                raise e
            unsupported = self._without_v3(futures["api"])
            if unsupported is not None:
                raise unsupported
            self._checked_versions(versions)  # a malformed answer is refused, never cached
            return versions

        return self._cached("versions.json", fetch, VERSIONS_TTL)

    def _checked_versions(self, raw: Any) -> list[dict[str, Any]]:
        """The versions metadata, each version's times parsed; a malformed answer is a ServerError
        naming the endpoint and what is wrong."""
        url = f"{self._v3}/datastack/{self.datastack}/metadata"
        if not isinstance(raw, list):
            raise decoding.malformed(
                url, f"the versions metadata is {short(raw)}, not a list of version objects"
            )
        out = []
        for v in raw:
            if not isinstance(v, Mapping):
                raise decoding.malformed(url, f"a version entry is {short(v)}, not an object")
            n = v.get("version")
            if isinstance(n, bool) or not isinstance(n, int):
                raise decoding.malformed(url, f"a version entry has no integer 'version': {short(v)}")
            m = dict(v)
            for k in ("time_stamp", "expires_on"):
                try:
                    m[k] = decoding.parse_time(m.get(k))
                except (ValueError, TypeError, OverflowError, OSError):
                    raise decoding.malformed(
                        url, f"version {n}: its {k} {short(v.get(k))} is not a timestamp"
                    ) from None
            if m["time_stamp"] is None:
                raise decoding.malformed(url, f"version {n} has no time_stamp")
            if not isinstance(m.setdefault("valid", True), bool):
                raise decoding.malformed(
                    url, f"version {n}: its 'valid' {short(m['valid'])} is not true/false"
                )
            out.append(m)
        return out

    def _without_v3(self, api_future: cf.Future[Any]) -> UnsupportedError | None:
        """The error for a materialization service whose API versions (asked for with the versions,
        so waiting for them costs no round trip) do not include v3; None if they do or are unknown."""
        try:
            api = api_future.result()
        except HTTPError:
            return None
        if not isinstance(api, list) or not api or 3 in api:
            return None
        return UnsupportedError(
            f"{self._mem['local']}: the materialization service speaks API versions {api}; tablekit "
            "needs API v3 (MaterializationEngine >= 4.x). Use CAVEclient < 8 for this server"
        )

    def versions_metadata(self, expired: bool = False) -> list[dict[str, Any]]:
        out = []
        for m in self._checked_versions(self._raw_versions()):
            m.setdefault("status", "AVAILABLE" if m["valid"] else "EXPIRED")
            if expired or (m["valid"] and m["status"] != "EXPIRED"):
                out.append(m)
        return sorted(out, key=lambda m: m["version"])

    def tables_metadata(self, version: int) -> list[dict[str, Any]]:
        key = f"v{int(version)}.tables.json"
        url = f"{self._v3}/datastack/{self.datastack}/version/{int(version)}/tables/metadata"

        def fetch() -> Any:
            if self._schema_docs() is None and "schemas_future" not in self._mem:
                self._mem["schemas_future"] = self._pool.submit(self._types_all)
            got = self._json(url, missing=[])
            _check_tables(url, got)  # a malformed answer is refused, never cached
            return got

        got = self._cached(key, fetch)
        _check_tables(url, got)
        return [dict(m) for m in got]

    def _types_all(self) -> dict[str, Any]:
        return self._json(f"{self.location}/schema/api/v2/types_all")

    def _schema_docs(self) -> Mapping[str, Any] | None:
        """The schema documents known so far (memory, else the disk cache), or None."""
        with self._lock:
            if SCHEMAS_FILE in self._mem:
                return self._mem[SCHEMAS_FILE]
        docs = self._disk.get_sections(SCHEMAS_FILE)
        if docs is not None:
            with self._lock:
                self._mem[SCHEMAS_FILE] = docs
        return docs

    def schemas(self, schema_types: list[str]) -> dict[str, Mapping[str, Any]]:
        docs = self._schema_docs() or {}
        known = readable(docs, [s for s in schema_types if s in docs])
        missing = [s for s in schema_types if s not in known]
        if missing:
            fut = self._mem.pop("schemas_future", None)
            fetched: dict[str, Any] = {}
            if fut is not None:
                try:
                    fetched = fut.result() or {}
                except HTTPError:
                    fetched = {}
            still = [s for s in missing if s not in fetched]
            if still:
                fetched.update(self._fetch_schemas(still))
            docs = {**readable(docs, [s for s in docs if s not in fetched]), **fetched}
            with self._lock:
                self._mem[SCHEMAS_FILE] = docs
            self._disk.put_sections(SCHEMAS_FILE, docs)
        absent = [s for s in schema_types if s not in docs]
        if absent:
            raise SchemaError(
                f"{self.location}: the schema service has no document for schema type(s) {absent}"
            )
        return {s: docs[s] for s in schema_types}

    def _fetch_schemas(self, names: list[str]) -> dict[str, Any]:
        url = f"{self.location}/schema/api/v2"
        try:
            got = self._json(f"{url}/types", params={"schema_names": ",".join(names)}, method="POST")
            if isinstance(got, dict) and all(n in got for n in names):
                return got
        except HTTPError:
            pass
        try:
            return self._types_all()
        except HTTPError:
            futures = {n: self._pool.submit(self._json, f"{url}/type/{n}") for n in names}
            return {n: f.result() for n, f in futures.items()}

    def _views(self, version: int) -> tuple[dict[str, Any], dict[str, Any]]:
        key = f"v{int(version)}.views.json"
        base = f"{self._v3}/datastack/{self.datastack}/version/{int(version)}/views"

        def fetch() -> Any:
            meta_f = self._pool.submit(self._json, base, missing={})
            schema_f = self._pool.submit(self._json, f"{base}/schemas", missing={})
            meta = _objects(base, meta_f.result() or {}, "the views metadata", "view", nulls=True)
            schemas = _objects(f"{base}/schemas", schema_f.result() or {}, "the view schemas", "schema")
            lacking = [n for n, m in meta.items() if "voxel_resolution_x" not in (m or {})]
            per = {n: self._pool.submit(self._json, f"{base}/{n}/metadata") for n in lacking}
            for n, f in per.items():  # a failure raises: views with half their metadata are not cached
                one = f.result()
                if not isinstance(one, dict):
                    raise decoding.malformed(
                        f"{base}/{n}/metadata", f"the metadata of view {n!r} is {short(one)}, not an object"
                    )
                meta[n] = {**(meta[n] or {}), **one}
            return {"metadata": meta, "schemas": schemas}

        got = self._cached(key, fetch)
        return got["metadata"], got["schemas"]

    def views_metadata(self, version: int) -> dict[str, dict[str, Any]]:
        return {n: dict(m or {}) for n, m in self._views(version)[0].items()}

    def view_schemas(self, version: int) -> dict[str, dict[str, Any]]:
        return {n: dict(s) for n, s in self._views(version)[1].items()}

    def annotation_count(self, table: str, version: int) -> int:
        url = f"{self._v2}/datastack/{self.datastack}/version/{int(version)}/table/{table}/count"
        n = self._json(url)
        if isinstance(n, float) and n.is_integer():
            n = int(n)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise decoding.malformed(
                url, f"the count of {table!r} is {short(n)}, not a number of rows (an int >= 0)"
            )
        return n

    @property
    def history(self) -> CaveHistory | None:
        """The roots API over the chunkedgraph (None when the datastack names no segmentation)."""
        info = self.datastack_info()
        pcg = info.get("pcg_table_name")
        if not pcg:
            return None
        with self._lock:
            if "history" not in self._mem:
                url = f"{self._mem['local']}/segmentation/api/v1/table/{pcg}"
                self._mem["history"] = CaveHistory(self._http, url, self._pool)
            return self._mem["history"]

    # ------------------------------------------------------------------ specs
    def table_spec(self, table: str, version: int) -> TableSpec:
        """The spec of ``table`` in ``version``, built once and kept (until :meth:`refresh`): the
        client's filter classes and this backend's compiler use the same object."""
        key = ("spec", table, version)
        with self._lock:
            if key in self._mem:
                return self._mem[key]
        metas = {m.get("annotation_table") or m["table_name"]: m for m in self.tables_metadata(version)}
        if table not in metas:
            raise UnknownTableError(
                f"{self.datastack} v{version}: no table named {table!r} on {self.location}"
            )
        meta = metas[table]
        st = meta.get("schema_type") or meta.get("schema")
        if not isinstance(st, str):
            raise SchemaError(f"{self.location}: the metadata of table {table!r} names no schema_type")
        spec = table_spec(meta, load_schema_documents(self.schemas([st])))
        with self._lock:
            spec = self._mem.setdefault(key, spec)  # two threads building it keep the first
        return spec

    def view_specs(self, version: int) -> dict[str, TableSpec]:
        """The specs of the views of ``version`` (those with metadata and a schema), built once and
        kept (until :meth:`refresh`): the client's filter classes and the compiler share them."""
        key = ("view_specs", int(version))
        with self._lock:
            if key in self._mem:
                return self._mem[key]
        meta, schemas = self._views(version)
        specs = {
            n: view_spec(n, schemas[n], {**(meta[n] or {}), "table_name": n}) for n in meta if n in schemas
        }
        with self._lock:
            return self._mem.setdefault(key, specs)

    def _specs(self, query: Query) -> dict[str, TableSpec]:
        v = query.version if query.version is not None else self._version_at(query.timestamp)
        if query.kind == "view":
            views = self.view_specs(v)
            if query.table not in views:
                raise UnknownTableError(
                    f"{self.datastack} v{v}: no view named {query.table!r} on {self.location}"
                )
            return {query.table: views[query.table]}
        return {t: self.table_spec(t, v) for t in query.tables}

    def _version_exactly_at(self, ts: _dt.datetime, tables: Sequence[str]) -> int | None:
        """The valid version whose timestamp is ``ts`` and which has every table of ``tables``."""
        for m in self.versions_metadata():
            if m["time_stamp"] == ts:
                names = {
                    t.get("annotation_table") or t.get("table_name")
                    for t in self.tables_metadata(m["version"])
                }
                return m["version"] if all(t in names for t in tables) else None
        return None

    def _version_at(self, ts: _dt.datetime | None) -> int:
        """The version whose tables describe a live query at ``ts``: the newest valid one not after it."""
        valid = self.versions_metadata()
        if not valid:
            raise VersionError(f"{self.datastack}: the datastack has no valid materialization version")
        before = [m for m in valid if ts is None or m["time_stamp"] <= ts]
        return (before or valid)[-1]["version"]

    # ------------------------------------------------------------------ queries
    def plan(self, query: Query) -> wire.Plan:
        """The compiled :class:`~tablekit.backends.cave.compile.Plan` of ``query``."""
        if query.datastack != self.datastack:
            raise QueryError(
                f"{query.table}: the query is for datastack {query.datastack!r}, this backend serves {self.datastack!r}"
            )
        return wire.plan(query, self._specs(query), v3=self._v3)

    def explain(self, query: Query) -> dict[str, Any]:
        p = self.plan(query)
        return self._describe(p)

    def _describe(self, p: wire.Plan) -> dict[str, Any]:
        q = p.query
        count_here = q.count and not p.client_filters and decoding.counts_here(p)
        req = wire.build(p, count=count_here, limit=self.page_size)
        out = {"backend": "cave", "endpoint": p.endpoint, **req.to_dict()}
        out["client_side"] = [attrs.asdict(f) for f in p.client_filters]
        out["paging"] = (
            "none: the query matches nothing, no request is sent"
            if p.matches_nothing
            else "none (one count request)"
            if count_here
            else f"id ranges over {p.key!r} when the answer is cut at the server's row limit; offset/limit "
            "are applied to the complete, id-ordered result"
            if p.key
            else "none possible (no id column); a cut answer raises IncompleteResultError"
        )
        return json.loads(json.dumps(out, default=str))

    def execute(self, query: Query) -> QueryResult:
        if query.timestamp is not None and query.kind != "view":
            v = self._version_exactly_at(query.timestamp, query.tables)
            if v is not None:
                # the live endpoint refuses a version's own timestamp ("do not use live live query to
                # query a materialized timestamp", api2.py execute_production_query) once the table
                # changed after it; the version is that answer
                return self.execute(attrs.evolve(query, timestamp=None, version=v))
        p = self.plan(query)
        request = self._describe(p)
        if p.matches_nothing:
            table = count_table(0) if query.count else p.empty()
            return QueryResult(
                table=table, resolution=None if query.count else p.resolution, request=request, pages=0
            )
        if query.random_sample is not None:
            return self._sampled(p, request)
        budget = self._http.budget()  # shared by every request of this query
        if query.count and not p.client_filters and decoding.counts_here(p):
            n, ans = self._count(p, budget=budget)
            if n is not None:
                return QueryResult(table=count_table(n), warnings=_notices(p, ans.warnings), request=request)
        need = None if query.count or query.limit is None else query.offset + query.limit
        first_rows, spent = self._first_rows(p, budget)
        if first_rows is not None:  # the server applied offset/limit, checked: finish must not again
            pages, answers, info = first_rows
            p = attrs.evolve(p, query=attrs.evolve(query, offset=0))
        else:
            pages, answers, info = self._collect(
                p, need=need, complete=query.complete or query.count, budget=budget
            )
            info["requests"] += spent
        notes: list[str] = []
        if query.count:  # counted here: some condition is applied client-side, or the endpoint has no count
            table = count_table(
                decoding.apply_client_filters(_concat(p, pages), p.client_filters, p.float32).num_rows
            )
        else:
            table, notes = decoding.finish(p, pages)
            table = self._contiguous(table)
        warns = (
            _notices(p, [w for a in answers for w in a.warnings])
            + tuple(notes)
            + tuple(info.pop("warnings", ()))
        )
        request.update(info)
        return QueryResult(
            table=table,
            # positions were converted here from what was asked of the server (wire_resolution)
            resolution=None if query.count else p.resolution,
            warnings=tuple(dict.fromkeys(warns)),
            request=request,
            pages=info["requests"],
            owned=True,  # decoded here, referenced nowhere else
        )

    def _sampled(self, p: wire.Plan, request: dict[str, Any]) -> QueryResult:
        """``random_sample``, sampled here from the complete answer (:func:`decoding.sample_rows`)."""
        q = p.query
        if q.count:  # min(n, matches), as the local engine counts a sample
            counted = self.execute(attrs.evolve(q, random_sample=None))
            n = min(int(counted.table["count"][0].as_py()), int(q.random_sample))  # type: ignore[arg-type]
            return attrs.evolve(counted, table=count_table(n), request=request)
        if p.key is None:
            decoding.sample_rows(p.empty(), p, 0)  # raises: no id to sample by
        whole = attrs.evolve(p, query=attrs.evolve(q, random_sample=None, offset=0, limit=None))
        pages, answers, info = self._collect(whole, need=None, complete=True)
        table, notes = decoding.finish(p, pages)
        warns = _notices(p, [w for a in answers for w in a.warnings]) + tuple(notes)
        request.update(info, sampled_by="tablekit: the n rows of smallest hash(id) of the whole answer")
        return QueryResult(
            table=self._contiguous(table),
            resolution=p.resolution,
            warnings=tuple(dict.fromkeys(warns)),
            request=request,
            pages=info["requests"],
            owned=True,
        )

    def _contiguous(self, table: pa.Table) -> pa.Table:
        """One chunk per column (pages arrive as chunks); columns are joined in parallel, which is
        several times faster than letting pandas join them one by one."""
        if all(c.num_chunks <= 1 for c in table.columns):
            return table
        cols = list(self._pool.map(lambda c: c.combine_chunks(), table.columns))
        return pa.table(cols, names=table.column_names)

    def _post(self, req: wire.WireRequest, budget: Budget | None = None) -> Response:
        return self._http.request(
            req.method,
            req.url,
            params=req.params,
            json=req.body,
            headers=req.headers,
            idempotent=True,  # queries only read
            budget=budget,
            read_arrow=decoding.read_arrow,  # an Arrow answer is parsed once, while checked whole
        )

    def _ask(
        self,
        p: wire.Plan,
        id_range: tuple[int | None, int | None] = (None, None),
        limit: int | None = None,
        select: Sequence[str] | None = None,
        budget: Budget | None = None,
        offset: int | None = None,
    ) -> Answer:
        req = wire.build(p, id_range=id_range, limit=limit, select=select, offset=offset)
        try:
            resp = self._post(req, budget)
        except ServerError as e:
            if p.endpoint == "live" and "returned no results" in (e.message or ""):
                # the live endpoint reports an empty answer as an error (protocol §5.1, step 6)
                return Answer(pa.table({}), (), False, None, None)
            pending = decoding.pending_lookups_error(p, e.message)
            if pending is not None:  # the same error as the local engine's (client._pending_lookups)
                raise pending from e
            frozen = decoding.frozen_column_error(p, e.message)
            if frozen is not None:
                raise frozen from e
            raise
        table = decoding.decode(resp, p)
        warns = decoding.warnings_of(resp)
        # rows the live endpoint left out for pending lookups were part of what its limit cut
        left_out = decoding.pending_left_out(p, warns)
        truncated, cap = decoding.truncation(warns, table.num_rows + left_out, limit, self._cap)
        # a cut at the limit sent is that limit, not the server's own
        if cap is not None and (limit is None or cap < limit) and (self._cap is None or cap < self._cap):
            self._cap = cap
        res = decoding.parse_resolution(resp.header_values("dataframe_resolution"))
        decoding.check_resolution(p, res)
        return Answer(table, tuple(warns), truncated, cap, res)

    def _count(
        self,
        p: wire.Plan,
        id_range: tuple[int | None, int | None] = (None, None),
        budget: Budget | None = None,
    ) -> tuple[int | None, Answer]:
        req = wire.build(p, id_range=id_range, count=True)
        resp = self._post(req, budget)
        table = decoding.decode(resp, p)
        ans = Answer(table, tuple(decoding.warnings_of(resp)), False, None, None)
        return decoding.is_count(table), ans

    # ------------------------------------------------------------------ paging
    def _first_rows(
        self, p: wire.Plan, budget: Budget
    ) -> tuple[tuple[list[pa.Table], list[Answer], dict[str, Any]] | None, int]:
        """A small ``limit`` (below the server's row limit) sent to the server with its ``offset``,
        the rows checked by counts to be those asked for in ``id`` order (:func:`.pages.lowest`):
        the download is the page, not the table (or the rows before ``offset``). ``None`` when the
        query does not allow it (counts, samples, ``complete=False``, conditions applied here, no
        count endpoint, no id) or the rows could not be checked: the caller pages as before. The
        second value is the number of requests made."""
        q = p.query
        n = q.limit
        cap = min(c for c in (self._cap, self.page_size, wire.DEFAULT_ROW_LIMIT) if c)
        if (
            n is None
            or not 0 < n < cap
            or q.count
            or q.random_sample is not None
            or not q.complete
            or p.key is None
            or p.client_filters
            or not decoding.counts_here(p)
        ):
            return None, 0
        select: Sequence[str] | None = p.needed if q.select_columns is not None else None
        first = self._ask(p, limit=n, select=select, budget=budget, offset=q.offset)
        found, requests = paging.lowest(
            n,
            q.offset,
            first,
            p.key,
            count=lambda ranges: self._counts(p, ranges, budget, "to check the rows of a limit"),
            ask=lambda lo, hi, limit, ids_only: self._ask(
                p, (lo, hi), limit, [p.key] if ids_only else select, budget
            ),
            sample=max(n + 1, min(paging.SAMPLE, cap - 1)),
        )
        if found is None:
            return None, 1 + requests
        how = "sent to the server" if found is first else "found by narrowing id ranges"
        info = {"requests": 1 + requests, "paged": False, "limit": f"{how}, checked by counts"}
        return ([found.table], [found], info), 1 + requests

    def _collect(
        self, p: wire.Plan, *, need: int | None, complete: bool, budget: Budget | None = None
    ) -> tuple[list[pa.Table], list[Answer], dict[str, Any]]:
        """Every row of ``p`` (with ``need``: at least the ``need`` lowest in id order), as pages.

        A paged download is checked before it is returned: against the server's counts (every row,
        or, when only the lowest ``need`` were fetched, the rows of the pages fetched), and on the
        live and join endpoints, which ignore count, by every page's body being whole and the
        ranges tiling the ids without a repeated id (:func:`~tablekit.backends.cave.decode.finish`)."""
        budget = budget or self._http.budget()
        select: Sequence[str] | None = p.needed if p.query.select_columns is not None else None
        if p.query.count and p.endpoint != "live":
            select = p.filter_columns or None  # a count fetches only what the client-side filters read
        first = self._ask(p, limit=self.page_size, select=select, budget=budget)
        info: dict[str, Any] = {"requests": 1, "paged": False}
        if not first.truncated:
            return [first.table], [first], info
        cap = first.cap or first.table.num_rows
        if not complete:
            info["truncated"] = True
            info["warnings"] = (
                f"{p.query.table}: the server cut the answer at its row limit ({cap} rows); this is the first "
                "page only (rows in no particular order before sorting). Pass complete=True (the default) "
                "to get every row",
            )
            return [first.table], [first], info
        if p.key is None:
            raise IncompleteResultError(
                f"{p.query.table}: the server cut the answer at its row limit ({cap} rows) and the answer has no "
                "id column to page by; narrow the query with filters, or pass complete=False for the first page"
            )
        keys: Any = first.table[p.key].drop_null().to_numpy() if first.table.num_rows else []
        if len(keys) == 0:
            raise IncompleteResultError(
                f"{p.query.table}: the server said its answer was cut at its row limit ({cap} rows) but sent "
                f"no rows holding its key column {p.key!r}, so there is nothing to page from: every row is missing. Retry; if "
                "it persists the server is failing: narrow the query, or pass complete=False"
            )
        ids = np.unique(keys)
        limit = min(cap, self.page_size or cap)
        counts = None
        if decoding.counts_here(p):  # the live and join endpoints ignore count
            ranges = ((None, None), (None, int(ids[0])), (int(ids[-1]) + 1, None))
            counts = self._counts(p, ranges, budget, "to plan the pages")
            info["requests"] += 3
        pending, keep_first = paging.plan(ids, counts, first.table.num_rows, limit)
        done: list[paging.Page] = []
        if keep_first:
            done.append(paging.Page(int(ids[0]), int(ids[-1]) + 1, 0, first.table, _rows(p, first.table)))
        if need is not None and paging.prefix_rows(done, pending) >= need:
            pending = []  # the first answer already holds the rows asked for
        # the answers whose rows are kept: a first answer cut short is refetched in pages, and
        # only its other warnings stay (its pending lookups are counted again by the pages)
        answers = [
            first if keep_first else attrs.evolve(first, warnings=decoding.without_pending(first.warnings))
        ]
        total = None if counts is None else counts[0]
        bar = paging.progress_bar(self.progress, total, p.query.table) if pending else None
        if bar is not None and keep_first:
            bar.update(first.table.num_rows)

        def on_answer(ans: Answer) -> None:
            answers.append(ans)
            if bar is not None:
                bar.update(ans.table.num_rows)

        def single(i: int) -> Exception:
            return IncompleteResultError(
                f"{p.query.table}: more rows than the server's row limit ({limit}) share {p.key} = {i}; cannot page"
            )

        workers = budget.sharing()  # stopped once the pages are done or one of them failed
        try:
            info["requests"] += paging.run(
                pending,
                done,
                lambda g: self._pool.submit(self._ask, p, (g.lo, g.hi), limit, select, workers),
                workers=self._workers,
                split_full=lambda g: paging.split(g, self._workers, single),
                rows=lambda t: _rows(p, t),
                need=need,
                on_answer=on_answer,
            )
        finally:
            workers.cancel.set()  # requests still running stop instead of retrying
            if bar is not None:
                bar.close()
        if counts is not None and p.query.random_sample is None:
            info["requests"] += self._check_total(p, done, counts, ids, budget)
        info.update(paged=True, row_limit=cap, pages=len(done), expected_rows=total)
        return [g.table for g in done if g.table is not None], answers, info

    def _counts(
        self, p: wire.Plan, ranges: Sequence[tuple[int | None, int | None]], budget: Budget, why: str
    ) -> list[int]:
        """The server's row counts of ``p`` over ``ranges`` of its key (in parallel); an answer that
        is not a count raises: a paged download is never left unchecked."""
        group = budget.sharing()
        futures = [self._pool.submit(self._count, p, r, group) for r in ranges]
        try:
            got = [f.result()[0] for f in futures]
        finally:
            group.cancel.set()
        if any(n is None or n < 0 for n in got):
            raise IncompleteResultError(
                f"{p.query.table}: the answer is cut at the server's row limit and must be paged, but the "
                f"server's count of its rows (asked {why}) is not a count; without it the pages cannot be "
                "checked to hold every row. Retry; if it persists, narrow the query below the row limit"
            )
        return got  # type: ignore[return-value]

    def _check_total(
        self, p: wire.Plan, done: list[paging.Page], counts: Sequence[int], ids: np.ndarray, budget: Budget
    ) -> int:
        """Raise unless the pages hold as many rows as the server counts: all of them when the
        pages reach both ends, else (the download stopped once it held the lowest rows asked for,
        ``offset``/``limit``) those of the contiguous run of pages from the lowest, counted over
        its id range (one more count request). ``counts`` are the planning counts (all, below
        ``ids[0]``, above ``ids[-1]``). Returns the requests made."""
        n_all, n_low, n_high = counts
        prefix: list[paging.Page] = []
        for g in sorted(done, key=lambda g: -np.inf if g.lo is None else g.lo):
            if prefix and (prefix[-1].hi is None or g.lo != prefix[-1].hi):
                break
            prefix.append(g)
        if not prefix:  # nothing asked for (limit=0)
            return 0
        got = sum(g.table.num_rows for g in prefix if g.table is not None)
        lo, end = prefix[0].lo, prefix[-1].hi
        starts = lo is None or (n_low == 0 and lo <= int(ids[0]))
        ends = end is None or (n_high == 0 and end > int(ids[-1]))
        if starts and ends:
            want, requests, what = n_all, 0, "rows"
        else:
            want = self._counts(p, [(lo, end)], budget, "to check the pages")[0]
            span = " and ".join(
                x
                for x in (f"{p.key} >= {lo}" if lo is not None else "", f"{p.key} < {end}" if end else "")
                if x
            )
            requests, what = 1, f"rows with {span}"
        if got != want:
            raise IncompleteResultError(
                f"{p.query.table}: the server counted {want} {what} but its pages hold {got}: "
                f"{abs(want - got)} row(s) {'lost' if got < want else 'too many'} (the data changed while "
                "paging, or the server or a proxy dropped or repeated part of an answer). Retry, or narrow "
                "the query"
            )
        return requests


def _check_tables(url: str, got: Any) -> None:
    """The tables metadata answer must be a list of objects, each naming its table."""
    if not isinstance(got, list):
        raise decoding.malformed(url, f"the tables metadata is {short(got)}, not a list of table objects")
    for m in got:
        name = m.get("annotation_table") or m.get("table_name") if isinstance(m, Mapping) else None
        if not isinstance(name, str) or not name:
            raise decoding.malformed(url, f"a table entry names no table (no table_name string): {short(m)}")


def _rows(p: wire.Plan, table: pa.Table) -> int:
    return (
        decoding.apply_client_filters(table, p.client_filters, p.float32).num_rows
        if p.client_filters
        else table.num_rows
    )


def _concat(p: wire.Plan, pages: Sequence[pa.Table]) -> pa.Table:
    cols = [c for c in p.needed]
    aligned = [t.select([c for c in cols if c in t.column_names]) for t in pages if t.num_rows]
    if not aligned:
        return pa.table({c: pa.array([], type=pa.null()) for c in cols})
    return pa.concat_tables(aligned, promote_options="default")


def _notices(p: wire.Plan, warns: Sequence[str]) -> tuple[str, ...]:
    """The server's warnings for the user: row-limit ones dropped (paging dealt with them), the
    pending-lookup ones of every page as one (with their total), each other text once."""
    kept = [w for w in warns if not decoding.is_truncation_warning(w)]
    return tuple(dict.fromkeys(decoding.pending_lookups_notes(p, kept)))
