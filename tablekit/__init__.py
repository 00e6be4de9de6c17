"""tablekit: typed, content-aware queries of versioned connectomics annotation tables.

>>> import tablekit
>>> client = tablekit.connect()                      # the embedded demo datastack
>>> client.tables.nucleus_detection_v0(volume={">": 500}).query()

See :func:`connect`. Errors are in :mod:`tablekit.errors`.
"""

from __future__ import annotations

from .client import Client
from .datastack import TableSource, build_datastack
from .errors import (
    DatastackError,
    FilterError,
    FilterValueError,
    OperatorError,
    QueryError,
    SchemaError,
    TablekitError,
    UnknownColumnError,
    UnknownTableError,
    UnsupportedError,
    VersionError,
)
from .filters import TableFilter
from .query import Predicate, Query
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
) -> Client:
    """Connect to a datastack and return a :class:`Client`.

    * ``connect()`` or ``connect("demo")``: the embedded synthetic datastack ``demo``, built on
      first use into ``$TABLEKIT_CACHE_DIR`` (default ``~/.cache/tablekit``); works offline.
    * ``connect(path="DIR")``: a local datastack directory (see ``build_datastack``).
    * ``connect("name", server="https://…")``: a CAVE deployment over HTTP — not available in
      this release (raises :class:`UnsupportedError`).

    ``version`` pins the materialization version (default: the latest valid one).
    ``expired_versions="live"`` answers a query of an expired version as a live query at that
    version's timestamp (recorded in ``df.attrs["substitution"]``) instead of raising.
    """
    from .backends.local import LocalBackend

    if server is not None:
        raise UnsupportedError(
            f"the CAVE HTTP backend is not available in tablekit {__version__} yet; "
            "use a local datastack: connect(path=...) or connect() for the demo"
        )
    if path is None:
        if datastack not in (None, "demo"):
            raise DatastackError(
                f"unknown datastack {datastack!r}: without server= only the embedded 'demo' is known. "
                "Pass path='DIR' for a local datastack directory"
            )
        from .sample import ensure_demo

        path = str(ensure_demo())
    backend = LocalBackend(path)
    if datastack is not None and datastack != backend.datastack and path is not None and datastack != "demo":
        raise DatastackError(f"{path} holds datastack {backend.datastack!r}, not {datastack!r}")
    return Client(backend, version=version, expired_versions=expired_versions)


__all__ = [
    "Client",
    "DatastackError",
    "FilterError",
    "FilterValueError",
    "OperatorError",
    "Predicate",
    "Query",
    "QueryError",
    "SchemaError",
    "StaleStubsWarning",
    "TableFilter",
    "TableSource",
    "TablekitError",
    "UnknownColumnError",
    "UnknownTableError",
    "UnsupportedError",
    "VersionError",
    "__version__",
    "build_datastack",
    "check_stubs",
    "connect",
]
