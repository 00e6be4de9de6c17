"""tablekit: typed, content-aware queries of versioned connectomics annotation tables.

>>> import tablekit
>>> client = tablekit.connect()                      # the embedded demo datastack
>>> client.tables.nucleus_detection_v0(volume={">": 500}).query()

See :func:`connect`. Errors are in :mod:`tablekit.errors`.
"""

from __future__ import annotations

from typing import Any

from .backends.delta import export_delta
from .caveclient import CAVEclient
from .client import Client
from .datastack import TableSource, build_datastack
from .errors import (
    AuthError,
    ConnectionFailedError,
    DatastackError,
    FilterError,
    FilterValueError,
    HTTPError,
    IncompleteResultError,
    OperatorError,
    QueryError,
    RateLimitError,
    RequestTimeoutError,
    SchemaError,
    ServerError,
    TablekitError,
    UnknownArgumentError,
    UnknownColumnError,
    UnknownTableError,
    UnsupportedError,
    VersionError,
)
from .filters import FilterInfo, TableFilter, introspect
from .frames import provenance
from .query import OutputOptions, Predicate, Query, QueryOptions
from .stubgen import StaleStubsWarning, check_stubs

__version__ = "0.1.0"


def connect(
    datastack: str | None = None,
    *,
    path: str | None = None,
    server: str | None = None,
    token: str | None = None,
    version: int | None = None,
    expired_versions: str = "error",
    timeout: float | tuple[float, float] | None = None,
    cache_dir: str | None = None,
    max_retries: int = 3,
    exports: str | None = None,
    **server_options: Any,
) -> Client:
    """Connect to a datastack and return a :class:`Client`.

    * ``connect()`` or ``connect("demo")``: the embedded synthetic datastack ``demo``, built on
      first use into ``$TABLEKIT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/tablekit``, else
      ``~/.cache/tablekit``); works offline.
    * ``connect(path="DIR")``: a local datastack directory (see ``build_datastack``).
    * ``connect("name", server="https://…")``: a CAVE deployment over HTTP (the global server
      of the deployment, e.g. ``https://global.daf-apis.com``, or a ``tablekit serve`` URL). The
      token is ``token``, else ``$CAVE_TOKEN``, else CAVEclient's secret files
      (``~/.cloudvolume/secrets/{host}-cave-secret.json``, ``cave-secret.json``); it is never
      printed. ``timeout`` (seconds, or ``(connect, read)``) applies to every request,
      ``max_retries`` to connection errors, resets, bodies cut short, read timeouts and
      429/502/503/504 answers, retried with backoff while the query's ``retry_budget`` lasts
      (default 600 s: no retry starts later than that after the query started); table metadata and
      schemas are cached in ``cache_dir`` (default the same cache directory;
      ``False`` for none). Further options (``max_workers``,
      ``page_size``, ``progress``, ``cache_ttl``) go to
      :class:`tablekit.backends.cave.CaveBackend` (``retry_budget`` too).

    ``exports="DIR"``: also read CAVE's Delta Lake exports under ``DIR`` (``tablekit export``,
    docs/delta-exports.md): materialized queries of an exported version are answered from its
    lakes, the rest (live queries, versions not exported) by the server or datastack given with
    it; with neither, ``connect("name", exports="DIR")`` reads the export alone, its metadata from
    the ``tablekit_export.json`` files. Needs the ``delta`` extra.

    ``version`` pins the materialization version (default: the latest valid one).
    ``expired_versions="live"`` answers a query of an expired version as a live query at that
    version's timestamp (recorded in ``df.attrs["substitution"]``) instead of raising.
    """
    if server is not None:
        from .backends.cave import CaveBackend

        if path is not None:
            raise DatastackError(
                "pass either path= (a local datastack) or server= (a CAVE deployment), not both"
            )
        if not datastack:
            raise DatastackError("connect(server=...) needs the datastack name: connect('name', server=URL)")
        cave = CaveBackend(
            datastack,
            server,
            token,
            timeout=timeout,
            cache_dir=cache_dir,
            max_retries=max_retries,
            **server_options,
        )
        return Client(
            _with_exports(cave, datastack, exports), version=version, expired_versions=expired_versions
        )
    if exports is not None and path is None:
        from .backends.delta.backend import DeltaBackend

        if not datastack:
            raise DatastackError(
                "connect(exports=...) needs the datastack name: connect('name', exports=DIR)"
            )
        if server_options:
            raise TypeError(
                f"connect() got options for a CAVE server without server=: {sorted(server_options)}"
            )
        return Client(DeltaBackend(exports, datastack), version=version, expired_versions=expired_versions)
    if server_options:
        raise TypeError(f"connect() got options for a CAVE server without server=: {sorted(server_options)}")
    from .backends.local import LocalBackend

    if path is None:
        if datastack not in (None, "demo"):
            raise DatastackError(
                f"unknown datastack {datastack!r}: without server= only the embedded 'demo' is known. "
                "Pass path='DIR' for a local datastack directory"
            )
        from .datastack.sample import ensure_demo

        path = str(ensure_demo())
    backend = LocalBackend(path)
    if datastack is not None and datastack != backend.datastack and path is not None and datastack != "demo":
        raise DatastackError(f"{path} holds datastack {backend.datastack!r}, not {datastack!r}")
    return Client(
        _with_exports(backend, backend.datastack, exports), version=version, expired_versions=expired_versions
    )


def _with_exports(backend: Any, datastack: str, exports: str | None) -> Any:
    """The backend itself, or with ``exports``: the Delta Lake exports first, falling back to it."""
    if exports is None:
        return backend
    from .backends.delta.backend import DeltaBackend

    return DeltaBackend(exports, datastack, fallback=backend)


__all__ = [
    "AuthError",
    "CAVEclient",
    "Client",
    "ConnectionFailedError",
    "DatastackError",
    "FilterError",
    "FilterInfo",
    "FilterValueError",
    "HTTPError",
    "IncompleteResultError",
    "OperatorError",
    "OutputOptions",
    "Predicate",
    "Query",
    "QueryError",
    "QueryOptions",
    "RateLimitError",
    "RequestTimeoutError",
    "SchemaError",
    "ServerError",
    "StaleStubsWarning",
    "TableFilter",
    "TableSource",
    "TablekitError",
    "UnknownArgumentError",
    "UnknownColumnError",
    "UnknownTableError",
    "UnsupportedError",
    "VersionError",
    "__version__",
    "build_datastack",
    "check_stubs",
    "connect",
    "export_delta",
    "introspect",
    "provenance",
]
