"""materialize(): snapshots rebuilt from the annotation and segmentation histories."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DatastackError
from ..schema import TableSpec
from .checksums import verify
from .format import (
    _INT64_MAX,
    _MISSING,
    _bound_points,
    _us,
    annotation_schema,
    format_timestamp,
    load_table_specs,
    read_datastack_json,
    read_versions,
    snapshot_schema,
)
from .parts import _filled, _PartWriter, _swap_in

_DAMAGED = "Fix: restore the datastack from where it came from, or rebuild it; materialize() reads it"


def _parquet_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


class _RootLookup:
    """Supervoxel → root at a fixed set of times, from the segmentation history.

    ``keys`` are all supervoxels in the history (sorted); ``roots[i, k]`` is the root of ``keys[k]``
    at ``times[i]`` (``_MISSING`` if no interval contains that time).
    """

    def __init__(self, files: list[Path], times: list[int], labels: list[str]):
        self.labels = labels
        parts = [pq.read_table(f, columns=["supervoxel_id"]).column(0).to_numpy() for f in files]
        self.keys = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        del parts
        self.roots = np.full((len(times), len(self.keys)), _MISSING, dtype=np.int64)
        t_arr = np.asarray(times, dtype=np.int64)
        for f in files:
            pf = pq.ParquetFile(f, page_checksum_verification=True)
            for g in range(pf.num_row_groups):
                rg = pf.read_row_group(g)
                sv = rg.column("supervoxel_id").to_numpy()
                root = rg.column("root_id").to_numpy()
                vf = rg.column("valid_from").cast(pa.int64()).to_numpy()
                vt = _filled(rg.column("valid_to").cast(pa.int64()), _INT64_MAX)
                idx = np.searchsorted(self.keys, sv)
                for i, t in enumerate(t_arr):
                    m = (vf <= t) & (t < vt)
                    sel = idx[m]
                    taken = self.roots[i, sel] != _MISSING
                    if taken.any() or np.unique(sel).size != sel.size:
                        dup = int(sv[m][taken][0]) if taken.any() else int(_first_duplicate(sv[m]))
                        raise DatastackError(
                            f"segmentation history: supervoxel {dup} has two overlapping intervals at "
                            f"{labels[i]}; each supervoxel's intervals must be disjoint — fix the history"
                        )
                    self.roots[i, sel] = root[m]

    def locate(self, sv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index into ``keys`` (clipped) and whether the supervoxel is in the history."""
        if self.keys.size == 0:
            return np.zeros(sv.shape, np.int64), np.zeros(sv.shape, bool)
        idx = np.searchsorted(self.keys, sv)
        np.minimum(idx, self.keys.size - 1, out=idx)
        return idx, self.keys[idx] == sv


def _first_duplicate(a: np.ndarray) -> int:
    s = np.sort(a)
    return int(s[np.flatnonzero(s[1:] == s[:-1])[0]])


def materialize(
    path: str | os.PathLike[str], versions: Iterable[int] | None = None
) -> dict[int, dict[str, int]]:
    """(Re)build the snapshots ``versions/<v>/<table>/`` from the annotation and segmentation history.

    For each valid version (or only ``versions``) with time stamp ``T``, every table's snapshot holds
    the annotations with ``created <= T``, ``deleted`` null or ``> T`` and ``valid = true``, sorted by
    id, with each bound point's root id looked up in the segmentation history at ``T`` (supervoxel
    0 → root 0, null supervoxel → null root). Tables are streamed one row group at a time, so memory
    is bounded by the row-group size and the number of supervoxels, not by the table size. Each
    version directory is replaced as a whole once all its tables are written.

    Returns ``{version: {table: rows}}``. Raises :class:`~tablekit.errors.DatastackError` for an
    unknown or expired version, an unsorted annotation history, or a supervoxel that has no root
    at ``T``.
    """
    root = Path(path)
    read_datastack_json(root)
    vmeta = {v["version"]: v for v in read_versions(root)}
    if versions is None:
        todo = [v for v, m in vmeta.items() if m.get("valid")]
    else:
        todo = []
        for v in versions:
            if v not in vmeta:
                raise DatastackError(
                    f"{root}: no version {v!r} in versions.json; known versions {sorted(vmeta)}"
                )
            if not vmeta[v].get("valid"):
                raise DatastackError(
                    f"{root}: version {v} is expired (valid false, status {vmeta[v].get('status')}); "
                    "expired versions have no snapshot — mark it valid in versions.json to materialize it"
                )
            todo.append(int(v))
        todo = sorted(set(todo))
    result: dict[int, dict[str, int]] = {v: {} for v in todo}
    if not todo:
        return result
    times = [_us(vmeta[v]["time_stamp"]) for v in todo]
    labels = [f"version {v} ({format_timestamp(vmeta[v]['time_stamp'])})" for v in todo]
    specs = load_table_specs(root)
    history = _parquet_files(root / "segmentation" / "history")
    verify([str(f) for f in history], str(root), _DAMAGED)
    lookup = _RootLookup(history, times, labels)
    vdir = root / "versions"
    vdir.mkdir(exist_ok=True)
    build = vdir / f".tmp-{uuid.uuid4().hex[:8]}"
    try:
        for name, spec in specs.items():
            counts = _materialize_table(root, build, spec, todo, times, labels, lookup)
            for v, n in zip(todo, counts, strict=True):
                result[v][name] = n
        for v in todo:
            out = build / str(v)
            out.mkdir(parents=True, exist_ok=True)
            _swap_in(out, vdir / str(v))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return result


def _materialize_table(
    root: Path,
    build: Path,
    spec: TableSpec,
    todo: list[int],
    times: list[int],
    labels: list[str],
    lookup: _RootLookup,
) -> list[int]:
    out_schema = snapshot_schema(spec)
    in_schema = annotation_schema(spec)
    points = _bound_points(spec)
    writers = [_PartWriter(build / str(v) / spec.name, out_schema, sorted_by_id=True) for v in todo]
    files = _parquet_files(root / "tables" / spec.name / "annotations")
    if not files:
        raise DatastackError(f"table {spec.name!r}: no annotation files in tables/{spec.name}/annotations")
    verify([str(f) for f in files], str(root), _DAMAGED)
    last_id: int | None = None
    for f in files:
        pf = pq.ParquetFile(f, page_checksum_verification=True)
        missing = [n for n in in_schema.names if n not in pf.schema_arrow.names]
        if missing:
            raise DatastackError(f"table {spec.name!r}: {f} lacks columns {missing}; rewrite the annotations")
        for g in range(pf.num_row_groups):
            rg = pf.read_row_group(g, columns=in_schema.names)
            if rg.num_rows == 0:
                continue
            ids = rg.column("id").to_numpy()
            if (last_id is not None and ids[0] <= last_id) or (np.diff(ids) <= 0).any():
                raise DatastackError(
                    f"table {spec.name!r}: the annotation history in {f} is not sorted by unique id; "
                    "rewrite it with write_annotations()"
                )
            last_id = int(ids[-1])
            created = rg.column("created").cast(pa.int64()).to_numpy()
            deleted = _filled(rg.column("deleted").cast(pa.int64()), _INT64_MAX)
            valid = _filled(rg.column("valid"), False)
            located = []
            for sv_col, _ in points:
                col = rg.column(sv_col)
                isnull = col.is_null().to_numpy(zero_copy_only=False)
                sv = _filled(col, 0)
                idx, found = lookup.locate(sv)
                located.append((sv, isnull, idx, found))
            for i, t in enumerate(times):
                mask = (created <= t) & (deleted > t) & valid
                if not mask.any():
                    continue
                cols: dict[str, Any] = {n: rg.column(n) for n in in_schema.names}
                for (sv_col, root_col), (sv, isnull, idx, found) in zip(points, located, strict=True):
                    roots = lookup.roots[i][idx] if lookup.keys.size else np.full(sv.shape, _MISSING)
                    roots = np.where(sv == 0, 0, roots)
                    bad = mask & ~isnull & (sv != 0) & (~found | (roots == _MISSING))
                    if bad.any():
                        j = int(np.flatnonzero(bad)[0])
                        raise DatastackError(
                            f"table {spec.name!r}, column {sv_col!r}: supervoxel {sv[j]} (annotation id "
                            f"{ids[j]}) has no root at {labels[i]} — the segmentation history has no "
                            "interval containing that time; add one and run materialize() again"
                        )
                    cols[root_col] = pa.array(roots, type=pa.int64(), mask=isnull)
                snap = pa.Table.from_arrays([cols[n] for n in out_schema.names], schema=out_schema)
                writers[i].write(snap.filter(pa.array(mask)))
    return [w.close() for w in writers]
