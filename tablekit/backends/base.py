"""The interface every backend implements.

A backend turns a :class:`~tablekit.query.Query` into an Arrow table. It never builds pandas
objects: :mod:`tablekit.frames` does that, in one place, for every backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
import pyarrow as pa

from ..query import Query
from ..schema import ColumnKind, TableSpec

__all__ = ["ARROW_TYPES", "Backend", "Capabilities", "QueryResult", "count_table"]

#: the Arrow type of each non-position column kind, as every backend returns it
ARROW_TYPES: dict[ColumnKind, pa.DataType] = {
    ColumnKind.INT: pa.int64(),
    ColumnKind.FLOAT: pa.float64(),
    ColumnKind.STRING: pa.string(),
    ColumnKind.BOOL: pa.bool_(),
    ColumnKind.DATETIME: pa.timestamp("us", tz="UTC"),
}


def count_table(n: int) -> pa.Table:
    """A count answer: one row, one int64 ``count`` column."""
    return pa.table({"count": pa.array([int(n)], type=pa.int64())})


@attrs.frozen
class QueryResult:
    """What a backend returns for one query.

    ``table`` has positions split into ``<col>_x/_y/_z`` columns, already scaled to
    ``resolution`` (nm per unit; ``None`` when the result has no positions). ``warnings`` are
    human-readable notices (table notices, substitutions). ``request`` describes what was run
    (SQL and parameters, or the HTTP request) and must be JSON-serialisable. ``pages`` is the
    number of backend requests the result was assembled from. ``owned``: nothing else references
    the table's buffers (a decoded answer), so the DataFrame may adopt them instead of copying.
    """

    table: pa.Table
    resolution: tuple[float, float, float] | None = None
    warnings: tuple[str, ...] = ()
    request: Mapping[str, Any] = attrs.field(factory=dict)
    pages: int = 1
    owned: bool = False


@attrs.frozen
class Capabilities:
    """What a backend can do beyond the versioned queries every backend answers. The client reads
    these instead of probing the backend, and refuses what a backend cannot do before any I/O.

    ``live``: queries at a timestamp (:meth:`Backend.execute` with ``version=None``).
    ``live_views``: live queries of live-compatible views (the CAVE API has no live view endpoint).
    ``history``: a ``history`` attribute with the roots API (``root_info`` …; it may still be
    ``None`` for a datastack without a segmentation). ``refresh``: a ``refresh()`` that forgets
    cached metadata. ``views``: ``views_metadata``/``view_schemas`` name views that can be queried.
    """

    live: bool = False
    live_views: bool = False
    history: bool = False
    refresh: bool = False
    views: bool = True


@runtime_checkable
class Backend(Protocol):
    """What the client needs from a backend. All metadata is CAVE-shaped (plain dicts)."""

    name: str  # "local" or "cave"
    datastack: str
    location: str  # path or server URL, for provenance
    capabilities: Capabilities

    def datastack_info(self) -> dict[str, Any]:
        """Datastack info: ``synapse_table``, ``soma_table``, ``viewer_resolution`` …"""
        ...

    def versions_metadata(self, expired: bool = False) -> list[dict[str, Any]]:
        """Version metadata objects (``version``, ``time_stamp`` aware UTC datetime, ``expires_on``,
        ``valid``, ``status``), sorted by version."""
        ...

    def schemas(self, schema_types: list[str]) -> dict[str, Mapping[str, Any]]:
        """The JSON Schema documents of these schema types."""
        ...

    def tables_metadata(self, version: int) -> list[dict[str, Any]]:
        """Raw metadata of every table valid in this version."""
        ...

    def table_spec(self, table: str, version: int) -> TableSpec:
        """The :class:`~tablekit.schema.TableSpec` of a table of ``version`` (from its metadata and
        schema document): built once per (version, table) and kept, so the client, its filter
        classes and the backend's compiler share the one object."""
        ...

    def views_metadata(self, version: int) -> dict[str, dict[str, Any]]:
        """``{view: metadata}`` (``description``, ``voxel_resolution_x/_y/_z``, ``live_compatible`` …)."""
        ...

    def view_schemas(self, version: int) -> dict[str, dict[str, Any]]:
        """``{view: {column: {"type": …}}}`` as the CAVE view-schema endpoint returns."""
        ...

    def view_specs(self, version: int) -> dict[str, TableSpec]:
        """``{view: TableSpec}`` for the views of ``version`` (from their metadata and schemas),
        built once per version and kept: the client and the compiler share them."""
        ...

    def annotation_count(self, table: str, version: int) -> int: ...

    def execute(self, query: Query) -> QueryResult:
        """Run the query. The query is already validated against the table specs."""
        ...

    def explain(self, query: Query) -> dict[str, Any]:
        """What :meth:`execute` would run (SQL + parameters, or method/URL/body), without running it."""
        ...
