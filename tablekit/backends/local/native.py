"""Native copies of Parquet file sets: their layouts, keys and the cache's pruning."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from ...query import Query
from . import sql as _sql

#: native copies of a Parquet file set: all of it (None), or a derived layout for live queries —
#: ``deletions`` (an annotation history's deletion times) and ``changes`` (the segmentation
#: history) ordered by time, so that DuckDB's zone maps confine "what changed in (V, T]" to the
#: row groups that hold it
_LAYOUTS: dict[str | None, str] = {
    None: "SELECT * FROM read_parquet(?)",
    "deletions": 'SELECT "id", "deleted" FROM read_parquet(?) WHERE "deleted" IS NOT NULL ORDER BY "deleted", "id"',
    "changes": 'SELECT "supervoxel_id", "root_id", "valid_from", "valid_to" FROM read_parquet(?) '
    'ORDER BY "valid_from", "supervoxel_id"',
}


#: memory a background build of a clustered copy may use before spilling to disk
_BUILD_MEMORY = "1GB"  # $TABLEKIT_BUILD_MEMORY overrides it
#: ``in`` lists longer than this span too much of a column for a clustered copy to help
_CLUSTER_MAX_VALUES = 64


def _layout_sql(layout: str | None) -> str:
    if layout is not None and layout.startswith("cluster:"):
        column = layout.split(":", 1)[1]
        return f'SELECT * FROM read_parquet(?) ORDER BY {_sql.quote(column)}, "id"'
    return _LAYOUTS[layout]


def _lookup_column(query: Query, table: str) -> str | None:
    """The root-id column ``query`` looks ``table`` up by (``==`` or a short ``in``), if any."""
    best: tuple[int, str] | None = None
    for p in query.predicates:
        if p.table != table or not p.column.endswith("_root_id"):
            continue
        n = 1 if p.op == "==" else len(p.value) if p.op == "in" else None
        if n is not None and 0 < n <= _CLUSTER_MAX_VALUES and (best is None or n < best[0]):
            best = (n, p.column)
    return None if best is None else best[1]


def _remove_abandoned(directory: Path, stem: str, age: float = 6 * 3600) -> None:
    """Delete what a build of ``stem`` left behind when its process died (files and DuckDB's
    spill directories older than ``age`` seconds; a build still running is younger)."""
    import shutil

    for p in directory.glob(f"{stem}.*.tmp*"):
        try:
            if time.time() - p.stat().st_mtime <= age:
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            pass


#: native copies not used for this long are deleted (when a new copy is built)
NATIVE_MAX_AGE = 30 * 86400
#: the most the native copies may take by default ($TABLEKIT_NATIVE_CACHE_SIZE overrides the budget)
NATIVE_MAX_BUDGET = 50 * 10**9
#: by default the copies may take this share of what they could take: the free space on the
#: cache's file system plus what they take now (so a small disk or home quota gets a small budget)
NATIVE_FREE_SHARE = 0.25
#: copies used this recently may be open in another process: never deleted for the budget
_IN_USE = 600
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def _parse_size(text: str) -> int:
    """``"50GB"``, ``"512 MiB"``, ``"1e9"`` → bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if m is None or m.group(2).upper() not in _UNITS:
        raise ValueError(
            f"TABLEKIT_NATIVE_CACHE_SIZE={text!r} is not a size; use a number of bytes or one like '50GB'"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


#: what a native copy's build checks (part of its key: a copy built before these checks is rebuilt)
_CHECKS = "checks:crc32,unique-ids"


def native_budget(root: Path, used: int, free: int | None = None) -> int:
    """The native copies' budget in bytes: ``$TABLEKIT_NATIVE_CACHE_SIZE`` when set, else
    :data:`NATIVE_FREE_SHARE` of (``free`` bytes on ``root``'s file system + ``used``, what the
    copies take now), at most :data:`NATIVE_MAX_BUDGET`."""
    text = os.environ.get("TABLEKIT_NATIVE_CACHE_SIZE")
    if text:
        return _parse_size(text)
    if free is None:
        try:
            free = shutil.disk_usage(root).free
        except OSError:  # the cache's directory is gone: nothing to weigh, the cap applies
            return NATIVE_MAX_BUDGET
    return min(NATIVE_MAX_BUDGET, int((free + used) * NATIVE_FREE_SHARE))


def _prune_native(
    root: Path, keep: set[Path], now: float | None = None, free: int | None = None
) -> list[Path]:
    """Delete native copies (under ``root``, every DuckDB version's directory) that were not
    used for :data:`NATIVE_MAX_AGE`, then the least recently used until the rest fit in
    the budget (:func:`native_budget`). A copy's modification time is its last use (set when a
    process attaches it); ``keep`` (this process's copies) and copies used in the last
    :data:`_IN_USE` seconds are never deleted. Returns what was deleted."""
    now = time.time() if now is None else now
    copies = []
    for f in root.glob("duckdb-*/*.duckdb"):
        try:
            st = f.stat()
        except OSError:
            continue
        copies.append((st.st_mtime, st.st_size, f))
    copies.sort()  # least recently used first
    total = sum(size for _, size, _ in copies)
    budget = native_budget(root, total, free)
    deleted = []
    for used, size, f in copies:
        stale = now - used > NATIVE_MAX_AGE
        if not stale and (total <= budget or now - used < _IN_USE):
            continue
        if f in keep:
            continue
        try:
            f.unlink()  # a process that has it open keeps reading it (POSIX)
        except OSError:  # open elsewhere (Windows), or removed by another process
            continue
        total -= size
        deleted.append(f)
    for d in root.glob("duckdb-*"):  # a DuckDB version's directory left empty
        try:
            d.rmdir()
        except OSError:
            pass
    return deleted
