"""The routes of ``tablekit serve``: the CAVE info, schema, materialization and chunkedgraph APIs.

Every handler is thin: metadata comes from the :class:`tablekit.Client`, queries are translated
by :mod:`tablekit.server._wire` into the client's own query pipeline, chunkedgraph answers come
from :mod:`tablekit.server._pcg`. Errors take the shapes a CAVE deployment sends (see
``cave-wire-protocol.md`` §1.2, §6.3): the auth layer's JSON ``{error, message, data}`` with
401/400, explicit 404 bodies for the metadata endpoints that have them, and for everything raised
inside a materialization handler HTTP 500 with ``{code, message, traceback}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

import pyarrow as pa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from ..errors import UnknownTableError
from ..filters import introspect
from ..query import QueryOptions
from . import _wire
from ._pcg import PCG_API_VERSIONS, PCG_SERVER_VERSION, BadRequest, Chunkedgraph
from ._wire import Plan, Translator, WireError, cave_time, jsonable, parse_bool

__all__ = ["MATERIALIZE_SERVER_VERSION", "build_app"]

log = logging.getLogger("tablekit.server")

#: the MaterializationEngine version this server speaks (CAVEclient gates features on >= 5.13.0)
MATERIALIZE_SERVER_VERSION = "5.26.4"
ARROW_DEPRECATION = (
    "Response is in pyarrow IPC format; arrow_format=False is deprecated, pass arrow_format=True"
)
CSV_DEPRECATION = (
    "direct_sql_pandas=False (CSV streaming) is deprecated; this result was read directly, "
    "pass direct_sql_pandas=True"
)


def _tk_version() -> str:
    from .. import __version__

    return __version__


# --------------------------------------------------------------------------- responses


def error_500(e: BaseException, quirks: bool = False) -> JSONResponse:
    """The catch-all of the materialization namespaces: HTTP 500 with ``{code, message, traceback}``.
    With ``quirks``, bad arguments and bodies take the real server's shapes (see
    :class:`~tablekit.server._wire.ArgumentError`, :class:`~tablekit.server._wire.BodyError`)."""
    if quirks and isinstance(e, _wire.ArgumentError):
        return JSONResponse(
            {"errors": e.errors, "message": "Input payload validation failed"}, status_code=500
        )
    if quirks and isinstance(e, _wire.BodyError):
        return JSONResponse({"schema_errors": e.errors}, status_code=500)
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip("\n").split("\n")
    return JSONResponse({"code": 500, "message": str(e), "traceback": tb}, status_code=500)


def _header_text(s: str) -> bytes:
    s = " ".join(str(s).splitlines()).strip()  # h11 refuses leading/trailing blanks in a value
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


def _add(resp: Response, name: str, value: str) -> None:
    resp.raw_headers.append((name.lower().encode("latin-1"), _header_text(value)))


class ServerState:
    """What the routes share: the client, the translator, the options."""

    def __init__(self, client: Any, *, row_limit: int, token: str | None, cave_quirks: bool):
        self.client = client
        self.translator = Translator(client, row_limit=row_limit, cave_quirks=cave_quirks)
        self.pcg = Chunkedgraph(client, quirks=cave_quirks)
        self.token = token
        self.quirks = cave_quirks
        info = client.info
        self.datastack: str = client.datastack
        seg = str(info.get("segmentation_source") or "")
        self.pcg_table: str = str(
            info.get("pcg_table_name") or seg.rstrip("/").split("/")[-1] or self.datastack
        )

    # ------------------------------------------------------------------ helpers
    def check_datastack(self, ds: str) -> None:
        if ds != self.datastack:
            raise UnknownTableError(f"datastack {ds!r} not found; this server serves {self.datastack!r}")

    def check_pcg(self, table_id: str) -> None:
        if table_id != self.pcg_table:
            raise UnknownTableError(
                f"chunkedgraph table {table_id!r} not found; this server serves {self.pcg_table!r}"
            )

    def version_object(self, m: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": m.get("id", m["version"]),
            "datastack": m.get("datastack", self.datastack),
            "version": m["version"],
            "time_stamp": cave_time(m["time_stamp"], self.quirks),
            "expires_on": cave_time(m.get("expires_on"), self.quirks),
            "valid": bool(m.get("valid", True)),
            "status": m.get("status", "AVAILABLE"),
            "is_merged": bool(m.get("is_merged", True)),
        }

    def table_metadata(self, version: int) -> list[dict[str, Any]]:
        """Every table's metadata object of a version, in the v3 server's shape."""
        self.translator.require_version(version)
        ts = self.client.get_timestamp(version)
        out = []
        for i, m in enumerate(
            sorted(self.client.backend.tables_metadata(version), key=lambda m: m["table_name"])
        ):
            m = dict(m)
            vr = m.pop("voxel_resolution", None)
            if vr is not None and "voxel_resolution_x" not in m:
                m["voxel_resolution_x"], m["voxel_resolution_y"], m["voxel_resolution_z"] = vr
            m.pop("annotation_table", None)
            st = m.get("schema_type") or m.get("schema")
            m.setdefault("schema_type", st)
            m.setdefault("schema", st)
            m.setdefault("id", version * 1000 + i + 1)
            m.setdefault("valid", True)
            m.setdefault("aligned_volume", self.aligned_volume()["name"])
            m.setdefault("pcg_table_name", self.pcg_table)
            m.setdefault("segmentation_source", "")
            m.setdefault("last_updated", cave_time(ts))
            for k in ("reference_table", "notice_text", "flat_segmentation_source"):
                m.setdefault(k, None)
            if self.quirks and m["reference_table"]:  # it has no segmentation table to name
                m.pop("pcg_table_name", None)
                m.pop("segmentation_source", None)
            elif self.quirks and not m["segmentation_source"]:
                m["segmentation_source"] = None  # the real metadata's null, not ''
            out.append(jsonable(m))
        return out

    def aligned_volume(self) -> dict[str, Any]:
        av = self.client.info.get("aligned_volume")
        if isinstance(av, dict):
            return {"id": 1, "description": "", "image_source": "", **av}
        name = str(av or self.datastack)
        return {"id": 1, "name": name, "display_name": name, "description": "", "image_source": ""}

    def datastack_record(self, base: str) -> dict[str, Any]:
        info = self.client.info
        res = info.get("viewer_resolution") or [
            info.get("viewer_resolution_x"),
            info.get("viewer_resolution_y"),
            info.get("viewer_resolution_z"),
        ]
        return {
            "id": 1,
            "name": self.datastack,
            "description": info.get("description", ""),
            "aligned_volume": self.aligned_volume(),
            "segmentation_source": f"graphene://{base}/segmentation/table/{self.pcg_table}",
            "skeleton_source": None,
            "analysis_database": None,
            "viewer_site": None,
            "synapse_table": info.get("synapse_table"),
            "soma_table": info.get("soma_table"),
            "local_server": base,
            "viewer_resolution_x": res[0],
            "viewer_resolution_y": res[1],
            "viewer_resolution_z": res[2],
        }

    def schema_documents(self) -> dict[str, Any]:
        """Every schema document the server knows: CAVE's bundled set, the datastack's own winning."""
        from ..datastack import bundled_schemas

        docs = dict(bundled_schemas())
        types = set()
        for v in self.client.get_versions():
            for m in self.client.backend.tables_metadata(v):
                st = m.get("schema_type") or m.get("schema")
                if st:
                    types.add(st)
        if types:
            docs.update(self.client.backend.schemas(sorted(types)))
        return docs


def _base(request: Request) -> str:
    u = request.url
    root = request.scope.get("root_path", "") or ""
    return f"{u.scheme}://{u.netloc}{root}".rstrip("/")


def _version_of(request: Request) -> int:
    raw = request.path_params["version"]
    try:
        return int(raw)
    except ValueError:
        raise WireError(f"version {raw!r} is not an integer") from None


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise WireError("400 Bad Request: the request body is not valid JSON") from None


Handler = Callable[[Request], Awaitable[Response]]


def build_app(state: ServerState) -> Starlette:
    """The Starlette application over one :class:`ServerState`."""
    tr = state.translator
    client = state.client

    def guarded(fn: Callable[[Request], Awaitable[Response]]) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                ds = request.path_params.get("ds")
                if ds is not None:
                    state.check_datastack(ds)
                table_id = request.path_params.get("table_id")
                if table_id is not None:
                    state.check_pcg(table_id)
                return await fn(request)
            except Exception as e:
                return error_500(e, state.quirks)

        handler.__name__ = fn.__name__
        return handler

    # ------------------------------------------------------------------ info
    async def info_version(request: Request) -> Response:
        return JSONResponse(_tk_version())

    async def datastacks(request: Request) -> Response:
        return JSONResponse([state.datastack])

    async def datastack_full(request: Request) -> Response:
        ds = request.path_params["name"]
        if ds != state.datastack:
            return JSONResponse({"message": f"datastack {ds!r} not found"}, status_code=404)
        return JSONResponse(state.datastack_record(_base(request)))

    async def aligned_volumes(request: Request) -> Response:
        return JSONResponse([state.aligned_volume()])

    async def aligned_volume(request: Request) -> Response:
        av = state.aligned_volume()
        key = request.path_params.get("name")
        if key is not None and key != av["name"]:
            return JSONResponse({"message": f"aligned volume {key!r} not found"}, status_code=404)
        if "id" in request.path_params and request.path_params["id"] != str(av["id"]):
            return JSONResponse({"message": "aligned volume not found"}, status_code=404)
        return JSONResponse(av)

    async def aligned_volume_datastacks(request: Request) -> Response:
        if request.path_params["name"] != state.aligned_volume()["name"]:
            return JSONResponse([], status_code=404)
        return JSONResponse([state.datastack])

    # ------------------------------------------------------------------ schema
    async def schema_versions(request: Request) -> Response:
        return JSONResponse([2])

    async def schema_types(request: Request) -> Response:
        return JSONResponse(sorted(await run_in_threadpool(state.schema_documents)))

    async def schema_type(request: Request) -> Response:
        docs = await run_in_threadpool(state.schema_documents)
        st = request.path_params["schema_type"]
        if st not in docs:
            return JSONResponse({"message": f"schema type {st!r} not found"}, status_code=404)
        return JSONResponse(docs[st])

    async def schema_many(request: Request) -> Response:
        docs = await run_in_threadpool(state.schema_documents)
        names = [n for n in (request.query_params.get("schema_names") or "").split(",") if n]
        missing = [n for n in names if n not in docs]
        if missing:
            return JSONResponse({"message": f"schema types {missing} not found"}, status_code=404)
        return JSONResponse({n: docs[n] for n in names})

    async def schema_all(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(state.schema_documents))

    # ------------------------------------------------------------------ materialize metadata
    async def mat_api_versions(request: Request) -> Response:
        return JSONResponse([2, 3])

    async def mat_version(request: Request) -> Response:
        return JSONResponse(MATERIALIZE_SERVER_VERSION)

    async def versions(request: Request) -> Response:
        expired = parse_bool(request.query_params.get("expired"), False, "expired", strict=state.quirks)
        return JSONResponse(client.get_versions(expired=expired))

    async def version_meta(request: Request) -> Response:
        v = _version_of(request)
        for m in client.get_versions_metadata(expired=True):
            if m["version"] == v:
                return JSONResponse(state.version_object(m))
        return JSONResponse("No version found", status_code=404)

    async def versions_meta(request: Request) -> Response:
        expired = parse_bool(request.query_params.get("expired"), False, "expired", strict=state.quirks)
        ms = [state.version_object(m) for m in client.get_versions_metadata(expired=expired)]
        if not ms:
            return JSONResponse("No valid versions found", status_code=404)
        return JSONResponse(ms)

    async def tables(request: Request) -> Response:
        v = _version_of(request)
        if state.quirks and v not in client.get_versions(expired=True):
            return JSONResponse(None, status_code=404)  # FrozenTableVersions.get: `return None, 404`
        tr.require_version(v)
        return JSONResponse(client.get_tables(v))

    async def table_meta(request: Request) -> Response:
        v = _version_of(request)
        t = request.path_params["table"]
        ms = {m["table_name"]: m for m in await run_in_threadpool(state.table_metadata, v)}
        if t not in ms:
            if state.quirks:  # FrozenTableMetadata.get's answer for a table the version lacks
                msg = f"No table named '{t}' found for version '{v}' in datastack '{state.datastack}'"
                return JSONResponse(msg, status_code=404)
            client.check_table(t, v)  # raises UnknownTableError (close names, or that it is a view)
        resp = JSONResponse(ms[t])
        if request.url.path.startswith("/materialize/api/v2/") and ms[t].get("notice_text"):
            _add(resp, "Warning", f"Table Owner Notice on {t}: {ms[t]['notice_text']}")
        return resp

    async def tables_meta(request: Request) -> Response:
        ms = await run_in_threadpool(state.table_metadata, _version_of(request))
        return JSONResponse(ms, status_code=200 if ms else 404)

    async def table_count(request: Request) -> Response:
        v = _version_of(request)
        tr.require_version(v)
        n = await run_in_threadpool(client.get_annotation_count, request.path_params["table"], v)
        return JSONResponse(n)

    async def views(request: Request) -> Response:
        v = _version_of(request)
        tr.require_version(v)
        out = {}
        for name in client.get_views(v):
            m = dict(client.get_view_metadata(name, v))
            m.pop("table_name", None)
            out[name] = jsonable(m)
        return JSONResponse(out)

    async def view_meta(request: Request) -> Response:
        v = _version_of(request)
        tr.require_version(v)
        name = request.path_params["view"]
        return JSONResponse(jsonable({**client.get_view_metadata(name, v), "table_name": name}))

    async def view_schema(request: Request) -> Response:
        v = _version_of(request)
        tr.require_version(v)
        return JSONResponse(client.get_view_schema(request.path_params["view"], v))

    async def view_schemas(request: Request) -> Response:
        v = _version_of(request)
        tr.require_version(v)
        s = client.get_view_schemas(v)
        return JSONResponse(s, status_code=200 if s else 404)

    async def unique_strings(request: Request) -> Response:
        t = request.path_params["table"]

        def work() -> dict[str, list[str]]:
            from ..schema import ColumnKind

            v = client.version
            cls = tr.table_class(t, v)
            cols = [rc.name for rc in introspect(cls).layout if rc.column.kind is ColumnKind.STRING]
            if not cols:
                return {}
            q = client.build_query(cls, options=QueryOptions(select_columns=cols))
            table = client.answer(q).table
            import pyarrow.compute as pc

            return {
                c: sorted(x for x in pc.unique(table.column(c)).to_pylist() if x is not None) for c in cols
            }

        return JSONResponse(await run_in_threadpool(work))

    # ------------------------------------------------------------------ queries
    def _flags(request: Request) -> tuple[bool, list[str]]:
        p = request.query_params
        arrow = parse_bool(p.get("return_pyarrow"), True, "return_pyarrow", strict=state.quirks)
        warn = []
        if arrow and not parse_bool(p.get("arrow_format"), False, "arrow_format", strict=state.quirks):
            warn.append(ARROW_DEPRECATION)
        if not parse_bool(p.get("direct_sql_pandas"), False, "direct_sql_pandas", strict=state.quirks):
            warn.append(CSV_DEPRECATION)
        parse_bool(p.get("split_positions"), False, "split_positions", strict=state.quirks)
        return arrow, warn

    def _execute(plan: Plan, request: Request) -> tuple[pa.Table, list[str]]:
        # the wire's own pending-lookup policy applies (Translator.shape): rows waiting are kept
        result = client.answer(plan.query, keep_pending=True)
        table = tr.shape(plan, result.table)
        extra = [w for w in result.warnings if not any(x.endswith(": " + w) for x in plan.warnings)]
        limits = tr.limit_warnings(plan, table.num_rows)
        if state.quirks:
            table = _wire.real_columns(plan, table)
            direct = parse_bool(
                request.query_params.get("direct_sql_pandas"), False, "direct_sql_pandas", strict=state.quirks
            )
            return table, _wire.real_warnings(plan, [*plan.warnings, *extra], limits, direct=direct)
        return table, [*plan.warnings, *extra, *limits]

    def _respond(
        request: Request, plan: Plan, table: pa.Table, warn: list[str], *, resolution_header: bool = True
    ) -> Response:
        arrow, flag_warn = _flags(request)
        if state.quirks:
            # create_query_response: without arrow_format its one warning replaces all the others;
            # the CSV warnings are already in place (real_warnings)
            pa_format = parse_bool(
                request.query_params.get("arrow_format"), False, "arrow_format", strict=state.quirks
            )
            warn, flag_warn = ([_wire.REAL_ARROW_FORMAT_WARNING] if arrow and not pa_format else warn), []
        accept = request.headers.get("accept-encoding")
        if arrow:
            ipc = parse_bool(
                request.query_params.get("ipc_compress"), True, "ipc_compress", strict=state.quirks
            )
            body = _wire.encode_arrow(
                table, _wire.arrow_compression(accept, ipc), quirks=state.quirks, count=plan.query.count
            )
            media = "data.arrow"
        else:
            body = _wire.encode_json_records(table, epoch_ms=state.quirks)
            media = "application/json"
        body, enc_headers = _wire.maybe_gzip(body, accept)
        resp = Response(body, media_type=media)
        for k, val in enc_headers:
            resp.headers[k] = val
        for w in [*warn, *flag_warn]:
            _add(resp, "Warning", w)
        if resolution_header and plan.resolution is not None:
            for x in plan.resolution:
                _add(resp, "dataframe_resolution", repr(float(x)))
        _add(resp, "column_names", repr(plan.column_names()))
        resp.headers["Access-Control-Expose-Headers"] = "column_names, dataframe_resolution, Warning"
        return resp

    def query_route(
        build: Callable[[Request, Any], Plan], *, v2: bool = False, endpoint: str = "simple"
    ) -> Handler:
        async def handler(request: Request) -> Response:
            if v2 and state.quirks:
                # the real v2 handlers read args["ipc_compress"], which the v2 parser lacks
                raise KeyError("ipc_compress")
            body = await _json_body(request)
            if state.quirks:
                errors = _wire.body_type_errors(body, endpoint)  # type: ignore[arg-type]
                if errors:
                    raise _wire.BodyError(f"400 Bad Request: invalid request body: {errors}", errors)
            if v2 and isinstance(body, dict):
                body = {k: x for k, x in body.items() if k != "desired_resolution"}  # v2 ignores it

            def work() -> Response:
                plan = build(request, body)
                table, warn = _execute(plan, request)
                # answered here too: compression does not hold up the event loop's other requests
                return _respond(request, plan, table, warn, resolution_header=not v2)

            return await run_in_threadpool(work)

        return handler

    def simple_plan(request: Request, body: Any) -> Plan:
        return tr.simple(request.path_params["table"], _version_of(request), body, request.query_params)

    def join_plan(request: Request, body: Any) -> Plan:
        return tr.join(_version_of(request), body, request.query_params)

    def view_plan(request: Request, body: Any) -> Plan:
        return tr.view(request.path_params["view"], _version_of(request), body, request.query_params)

    def live_plan(request: Request, body: Any) -> Plan:
        return tr.live(body, request.query_params)

    # ------------------------------------------------------------------ chunkedgraph
    async def seg_api_versions(request: Request) -> Response:
        return JSONResponse(PCG_API_VERSIONS)

    async def seg_version(request: Request) -> Response:
        return JSONResponse(PCG_SERVER_VERSION)

    def pcg_route(name: str, binary: bool = False) -> Handler:
        async def handler(request: Request) -> Response:
            body = await request.body()
            ids = {k: v for k, v in request.path_params.items() if k != "table_id"}  # e.g. node_id
            try:
                out = await run_in_threadpool(getattr(state.pcg, name), request.query_params, body, **ids)
            except BadRequest as e:  # the caller's mistake: 400 with what to fix
                return JSONResponse({"code": 400, "message": str(e)}, status_code=400)
            if binary:
                return Response(out, media_type="application/octet-stream")
            return JSONResponse(out)

        handler.__name__ = name
        return handler

    m2 = "/materialize/api/v2/datastack/{ds}"
    m3 = "/materialize/api/v3/datastack/{ds}"
    pcg = "/segmentation/api/v1/table/{table_id}"
    routes: list[tuple[str, Handler, list[str]]] = [
        ("/info/version", info_version, ["GET"]),
        ("/info/api/v2/datastacks", datastacks, ["GET"]),
        ("/info/api/v2/datastack/full/{name}", datastack_full, ["GET"]),
        ("/info/api/v2/aligned_volume", aligned_volumes, ["GET"]),
        ("/info/api/v2/aligned_volume/id/{id}", aligned_volume, ["GET"]),
        ("/info/api/v2/aligned_volume/{name}", aligned_volume, ["GET"]),
        ("/info/api/v2/aligned_volume/{name}/datastacks", aligned_volume_datastacks, ["GET"]),
        ("/schema/versions", schema_versions, ["GET"]),
        ("/schema/api/v2/type", schema_types, ["GET"]),
        ("/schema/api/v2/type/{schema_type}", schema_type, ["GET"]),
        ("/schema/api/v2/types", schema_many, ["GET", "POST"]),
        ("/schema/api/v2/types_all", schema_all, ["GET"]),
        ("/materialize/api/versions", mat_api_versions, ["GET"]),
        ("/materialize/version", mat_version, ["GET"]),
        ("/segmentation/api/versions", seg_api_versions, ["GET"]),
        ("/segmentation/api/version", seg_version, ["GET"]),
    ]
    for base in (m2, m3):
        routes += [
            (base + "/versions", versions, ["GET"]),
            (base + "/version/{version}", version_meta, ["GET"]),
            (base + "/metadata", versions_meta, ["GET"]),
            (base + "/version/{version}/tables", tables, ["GET"]),
            (base + "/version/{version}/table/{table}/metadata", table_meta, ["GET"]),
            (base + "/version/{version}/table/{table}/count", table_count, ["GET"]),
            (
                base + "/version/{version}/table/{table}/query",
                query_route(simple_plan, v2=base == m2),
                ["POST"],
            ),
            (
                base + "/version/{version}/query",
                query_route(join_plan, v2=base == m2, endpoint="join"),
                ["POST"],
            ),
        ]
    routes += [
        (m3 + "/version/{version}/tables/metadata", tables_meta, ["GET"]),
        (m3 + "/version/{version}/views", views, ["GET"]),
        (m3 + "/version/{version}/views/schemas", view_schemas, ["GET"]),
        (m3 + "/version/{version}/views/{view}/metadata", view_meta, ["GET"]),
        (m3 + "/version/{version}/views/{view}/schema", view_schema, ["GET"]),
        (m3 + "/version/{version}/views/{view}/query", query_route(view_plan), ["POST"]),
        (m3 + "/query", query_route(live_plan, endpoint="live"), ["POST"]),
        (m3 + "/table/{table}/unique_string_values", unique_strings, ["GET"]),
        (pcg + "/is_latest_roots", pcg_route("is_latest_roots"), ["POST"]),
        (pcg + "/roots_binary", pcg_route("roots_binary", binary=True), ["POST"]),
        (pcg + "/root_timestamps", pcg_route("root_timestamps"), ["POST"]),
        (pcg + "/past_id_mapping", pcg_route("past_id_mapping"), ["GET", "POST"]),
        (pcg + "/lineage_graph_multiple", pcg_route("lineage_graph"), ["POST"]),
        (pcg + "/node/{node_id}/leaves", pcg_route("leaves"), ["GET"]),
        ("/segmentation/table/{table_id}/info", pcg_route("info"), ["GET"]),
    ]
    app = Starlette(
        routes=[Route(path, guarded(fn), methods=methods) for path, fn, methods in routes],
        middleware=[Middleware(_AuthAndLog, token=state.token)],
    )
    app.state.tablekit = state
    return app


# --------------------------------------------------------------------------- auth and access log


class _AuthAndLog:
    """ASGI wrapper: middle_auth_client's token check (when a token is set) and an access log.

    The token is read from the ``Authorization: Bearer`` header (highest priority), the
    ``middle_auth_token`` query parameter, or the ``middle_auth_token`` cookie. It is compared in
    constant time and never logged; the access log shows method, path (no query string), status
    and time.
    """

    def __init__(self, app: Any, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 0}

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.token is not None:
                denied = self._check(scope)
                if denied is not None:
                    await denied(scope, receive, send_logged)
                    return
            await self.app(scope, receive, send_logged)
        finally:
            log.info(
                "%s %s %s %.1f ms",
                scope.get("method"),
                scope.get("path"),
                status["code"],
                (time.perf_counter() - t0) * 1000,
            )

    def _check(self, scope: Scope) -> Response | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        token = None
        cookie = headers.get("cookie")
        if cookie:
            c: SimpleCookie = SimpleCookie()
            try:
                c.load(cookie)
            except Exception:  # a malformed cookie header is no token
                c = SimpleCookie()
            if "middle_auth_token" in c:
                token = c["middle_auth_token"].value
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if qs.get("middle_auth_token"):
            token = qs["middle_auth_token"][0]
        auth = headers.get("authorization")
        if auth is not None:
            if not auth.startswith("Bearer "):
                return JSONResponse(
                    {
                        "error": "bad_auth_header",
                        "message": "Authorization header must start with 'Bearer '",
                        "data": {},
                    },
                    status_code=400,
                )
            token = auth[len("Bearer ") :].strip()
        if not token:
            return JSONResponse(
                {"error": "no_token", "message": "Unauthorized - No Token Provided", "data": {}},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="tablekit", error="invalid_token"'},
            )
        assert self.token is not None
        if not hmac.compare_digest(token.encode("utf-8"), self.token.encode("utf-8")):
            return JSONResponse(
                {
                    "error": "invalid_token",
                    "message": "Unauthorized - Token is Invalid or Expired",
                    "data": {},
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="tablekit", error="invalid_token"'},
            )
        return None
