"""build_datastack(): a whole datastack from CAVE flat-column tables."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DatastackError, SchemaError
from ..schema import ColumnRole, TableSpec, check_json_schema, table_spec
from .format import (
    FORMAT,
    _bundled,
    _check_table_name,
    _read_json,
    _resolution,
    _utc,
    check_datastack_name,
    table_metadata,
    version_metadata,
    write_datastack_json,
    write_schemas,
    write_table_metadata,
    write_versions,
    write_view,
)
from .ingest import TableSource
from .materialize import materialize
from .parts import _replace_on_success, write_annotations, write_segmentation_history

# --------------------------------------------------------------------------- build_datastack


def build_datastack(
    path: str | os.PathLike[str],
    tables: Iterable[TableSource],
    *,
    name: str,
    synapse_table: str | None = None,
    soma_table: str | None = None,
    timestamp: Any = None,
    views: Mapping[str, Mapping[str, Any]] | None = None,
    description: str = "",
    overwrite: bool = False,
    viewer_resolution: Sequence[float] | None = None,
    schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Build a local datastack directory from your own tables; return its path.

    Each :class:`TableSource` holds one table in CAVE's flat-column layout (a DataFrame from
    ``client.materialize.query_table`` or a Parquet export). The datastack gets one
    materialization version, ``1``, at ``timestamp`` (default: now, UTC); its segmentation history
    says each observed supervoxel belonged to the observed root id since before the earliest
    ``created``. Open it with ``tablekit.connect(path=path)``.

    Args:
        path: the directory to write. It must not exist (or be empty) unless ``overwrite=True``,
            which replaces an existing datastack directory (never any other directory).
        tables: the tables.
        name: the datastack name.
        synapse_table, soma_table: names of the synapse and soma (nucleus) tables, if any.
        timestamp: aware datetime of version 1; must not be earlier than any ``created``.
        views: ``{view: {"sql": ..., "description": ..., "voxel_resolution": [x, y, z],
            "live_compatible": bool}}``; ``sql`` is a DuckDB SELECT over the quoted table names.
            Each view's SQL is run once against the new snapshot to check it.
        description: datastack description.
        overwrite: replace an existing datastack at ``path``.
        viewer_resolution: the datastack's viewer resolution (default: that of the synapse, soma
            or first table).
        schemas: extra ``{schema_type: JSON Schema}`` documents, for schema types tablekit does not bundle.

    Raises:
        DatastackError: for invalid input. The message names the table, the column and the
            offending value, and says what to change. Nothing is dropped or coerced silently:
            float ids must be integral, ``valid`` may be bools or ``"t"``/``"f"``, every
            supervoxel must map to one root id, ``target_id`` values must exist in the
            reference table.

    Example::

        build_datastack("my_stack", [TableSource("synapses", "synapse", syn_df)],
                        name="my_stack", synapse_table="synapses")
    """
    from .ingest import (
        _check_supervoxel_roots,
        _check_targets,
        _history_from_pairs,
        _normalize,
        check_build_arguments,
        check_source_texts,
    )

    check_build_arguments(
        path,
        tables,
        description=description,
        synapse_table=synapse_table,
        soma_table=soma_table,
        views=views,
        schemas=schemas,
    )
    dest = Path(path)
    check_datastack_name(name, "build_datastack: ")
    docs = dict(_bundled())
    if schemas:
        for schema_type, doc in schemas.items():
            check_json_schema(schema_type, doc)
        docs.update(schemas)
    sources = list(tables)
    if not sources:
        raise DatastackError("build_datastack: no tables given; pass a list of TableSource objects")
    names: list[str] = []
    for s in sources:
        if not isinstance(s, TableSource):
            raise DatastackError(f"build_datastack: expected TableSource objects, got {type(s).__name__}")
        _check_table_name(s.name)
        check_source_texts(s)
        if s.name in names:
            raise DatastackError(f"table {s.name!r} is given twice; table names must be unique")
        names.append(s.name)
    ts = pd.Timestamp.now(tz="UTC") if timestamp is None else _utc(timestamp, "build_datastack: timestamp")
    ts = ts.floor("us")
    for role, t in (("synapse_table", synapse_table), ("soma_table", soma_table)):
        if t is not None and t not in names:
            raise DatastackError(f"{role} {t!r} is not one of the tables {names}; pass one of them or None")
    specs = {s.name: _source_spec(s, docs, names) for s in sources}
    view_defs = _check_views(views, names)

    frames: dict[str, pa.Table] = {}
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, str]] = []
    for s in sources:
        frames[s.name] = _normalize(s, specs[s.name], ts, pairs)
    _check_supervoxel_roots(pairs)
    for s in sources:
        if s.reference_table:
            _check_targets(s.name, frames[s.name], s.reference_table, frames[s.reference_table])

    created_min = [pc.min(t.column("created")).as_py() for t in frames.values() if t.num_rows]
    epoch = (min(created_min) if created_min else ts) - pd.Timedelta(seconds=1)
    epoch = pd.Timestamp(epoch).tz_convert("UTC")
    if viewer_resolution is None:
        first = synapse_table or soma_table or names[0]
        viewer_resolution = next(s.voxel_resolution for s in sources if s.name == first)

    with replacing_directory(dest, overwrite=overwrite) as tmp:
        info = write_datastack_json(
            tmp,
            name=name,
            description=description,
            synapse_table=synapse_table,
            soma_table=soma_table,
            viewer_resolution=viewer_resolution,
        )
        write_schemas(tmp, {s.schema_type: docs[s.schema_type] for s in sources})
        write_versions(tmp, [version_metadata(1, ts, datastack=name)])
        for s in sources:
            write_table_metadata(
                tmp,
                table_metadata(
                    s.name,
                    s.schema_type,
                    aligned_volume=info["aligned_volume"],
                    pcg_table_name=info["pcg_table_name"],
                    created=epoch,
                    last_modified=ts,
                    description=s.description,
                    voxel_resolution=s.voxel_resolution,
                    reference_table=s.reference_table,
                    notice_text=s.notice_text,
                ),
            )
            write_annotations(tmp, s.name, frames[s.name], spec=specs[s.name])
        write_segmentation_history(tmp, _history_from_pairs(pairs, epoch))
        for vname, vdef in view_defs.items():
            d = dict(vdef)
            d.setdefault("voxel_resolution", viewer_resolution)
            write_view(tmp, vname, d)
        materialize(tmp)
        check_views(tmp, 1)
    return dest


@contextlib.contextmanager
def replacing_directory(dest: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temp dir to build a datastack in; on success it atomically becomes ``dest``.

    ``dest`` must be absent or an empty directory, or (with ``overwrite``) a datastack directory.
    """
    dest = Path(dest)
    if dest.exists():
        if not dest.is_dir():
            raise DatastackError(f"{dest} exists and is not a directory; choose another path")
        if any(dest.iterdir()):
            if not overwrite:
                raise DatastackError(f"{dest} exists and is not empty; pass overwrite=True to replace it")
            marker = dest / "datastack.json"
            try:
                ok = json.loads(marker.read_text(encoding="utf-8")).get("format") == FORMAT
            except (OSError, ValueError, AttributeError):
                ok = False
            if not ok:
                raise DatastackError(
                    f"{dest} is not a tablekit datastack directory (no datastack.json); refusing to "
                    "overwrite it — choose an empty or new path"
                )
    with _replace_on_success(dest) as tmp:
        yield tmp


def _source_spec(s: TableSource, docs: Mapping[str, Any], names: list[str]) -> TableSpec:
    if not isinstance(s.schema_type, str) or s.schema_type not in docs:
        close = difflib.get_close_matches(str(s.schema_type), list(docs), n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise DatastackError(
            f"table {s.name!r}: unknown schema type {s.schema_type!r}; {hint}tablekit knows "
            f"{len(docs)} CAVE schema types (tablekit.datastack.bundled_schemas()); pass schemas= for others"
        )
    try:
        spec = table_spec(
            {
                "table_name": s.name,
                "schema_type": s.schema_type,
                "voxel_resolution": _resolution(s.voxel_resolution, f"table {s.name!r}: voxel_resolution"),
                "description": s.description,
            },
            docs,
        )
    except SchemaError as e:
        raise DatastackError(f"table {s.name!r}: {e}") from e
    has_target = any(c.role is ColumnRole.TARGET_ID for c in spec.columns)
    if has_target and not s.reference_table:
        raise DatastackError(
            f"table {s.name!r}: schema {s.schema_type!r} has a 'target_id' column but no reference_table "
            f"was given; pass reference_table=<the table target_id refers to>, one of {names}"
        )
    if s.reference_table and not has_target:
        raise DatastackError(
            f"table {s.name!r}: reference_table {s.reference_table!r} given, but schema {s.schema_type!r} "
            "has no 'target_id'; drop reference_table"
        )
    if s.reference_table and s.reference_table not in names:
        close = difflib.get_close_matches(s.reference_table, names, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise DatastackError(
            f"table {s.name!r}: reference_table {s.reference_table!r} is not one of the tables being "
            f"built{hint}; add it or pass one of {names}"
        )
    return spec


def _check_views(
    views: Mapping[str, Mapping[str, Any]] | None, names: list[str]
) -> dict[str, Mapping[str, Any]]:
    out = {}
    for vname, vdef in (views or {}).items():
        _check_table_name(vname, "view")
        if vname in names:
            raise DatastackError(f"view {vname!r} has the name of a table; give it another name")
        if not isinstance(vdef, Mapping) or "sql" not in vdef:
            raise DatastackError(f"view {vname!r}: expected a dict with at least 'sql', got {vdef!r}")
        out[vname] = vdef
    return out


def check_views(path: str | os.PathLike[str], version: int) -> None:
    """Run every view's SQL (``LIMIT 0``) against the snapshot of ``version``; raise if one fails."""
    import duckdb

    root = Path(path)
    vfiles = sorted((root / "views").glob("*.json"))
    if not vfiles:
        return
    from ..backends.local.lockdown import lock_down, view_sql_problem

    con = duckdb.connect()
    try:
        lock_down(con, [root])
        snapshots = sorted((root / "versions" / str(version)).iterdir())
        for d in snapshots:
            glob = str(d / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW \"{d.name}\" AS SELECT * FROM read_parquet('{glob}')")
        for vf in vfiles:
            sql = _read_json(vf)["sql"]
            problem = view_sql_problem(con, sql, [d.name for d in snapshots])
            if problem is not None:
                raise DatastackError(
                    f"view {vf.stem!r} ({vf.name}) is refused: {problem}. Fix: make its 'sql' one SELECT "
                    "over the datastack's tables by their quoted names"
                )
            try:
                con.execute(f"SELECT * FROM ({sql}) AS v LIMIT 0")
            except duckdb.Error as e:
                raise DatastackError(f"view {vf.stem!r}: its SQL fails on version {version}: {e}") from e
    finally:
        con.close()
