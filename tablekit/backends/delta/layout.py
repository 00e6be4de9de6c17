"""The layout of CAVE's Delta Lake exports, as the materialization service writes them.

Pure: no I/O, no ``deltalake`` import. Both the writer (:mod:`.export`) and the reader
(:mod:`.backend`) follow these rules; ``docs/delta-exports.md`` describes them for people.

* ``{base}/{datastack}/v{version}/{table}/{lake}``: one directory per table (or view) and version,
  holding several Delta lakes of the same rows, one per indexed column, each named after its
  column: ``id``, every indexed non-timestamp column (root ids, ``target_id``, fields the schema
  marks ``index``), and at most one spatial lake ``{P}_position_morton`` (the first position by
  the prefix priority ctr > post > pre > pt > bb). A view also has a ``flat`` lake (unpartitioned).
* Each lake is hive-partitioned by ``{column}_partition`` (Int32): percentile ranges for scalar
  columns, uniform ranges of the Morton code for the spatial one; a value ``v`` falls in partition
  ``i`` when ``b[i-1] < v <= b[i]`` (breakpoints ``b``, compared as float64); a null value has a
  null partition. Rows are z-ordered (sorted) on the lake's column.
* Positions are ``{P}_x/_y/_z`` int32; ``created``, ``deleted``, ``superceded_id`` are dropped; the
  spatial lake has the extra ``{P}_morton`` column (int64): the bits of x, y and z (21 bits each)
  interleaved, x lowest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DROPPED",
    "METADATA_FILE",
    "MORTON_BITS",
    "SPATIAL_PRIORITY",
    "lake_partition_column",
    "morton_encode",
    "morton_range",
    "partition_of",
    "percentile_breaks",
    "spatial_rank",
    "uniform_breaks",
    "version_dir",
]

#: columns the service drops from every export
DROPPED = ("created", "deleted", "superceded_id")
#: geometry prefixes in the order the service prefers them for the one spatial lake
SPATIAL_PRIORITY = ("ctr", "post", "pre", "pt", "bb")
#: bits per coordinate in a Morton code (63 bits in all)
MORTON_BITS = 21
#: the file tablekit writes beside the lakes of one version (``docs/delta-exports.md``)
METADATA_FILE = "tablekit_export.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")


def version_dir(version: int) -> str:
    """The directory name of a version: ``v{version}``."""
    return f"v{int(version)}"


def parse_version_dir(name: str) -> int | None:
    """``v12`` → 12; anything else → None."""
    m = _VERSION_DIR.match(name)
    return int(m.group(1)) if m else None


def spatial_rank(column: str) -> int:
    """The rank of a position column by :data:`SPATIAL_PRIORITY` (lower is preferred)."""
    for i, prefix in enumerate(SPATIAL_PRIORITY):
        if column.startswith(prefix):
            return i
    return len(SPATIAL_PRIORITY)


def lake_partition_column(lake_column: str) -> str:
    """The hive partition column of the lake of ``lake_column``."""
    return f"{lake_column}_partition"


def _spread_table() -> np.ndarray:
    """For each byte value, its 8 bits moved to every third bit (bit k → bit 3k)."""
    out = np.zeros(256, dtype=np.uint64)
    for value in range(256):
        spread = 0
        for bit in range(8):
            if value >> bit & 1:
                spread |= 1 << (3 * bit)
        out[value] = spread
    return out


_SPREAD = _spread_table()
_MASK = np.uint64((1 << MORTON_BITS) - 1)


def _spread(v: np.ndarray) -> np.ndarray:
    """The low 21 bits of each value, each moved to bit 3k (the service masks, never refuses)."""
    u = v.astype(np.int64).astype(np.uint64) & _MASK
    lo = _SPREAD[(u & np.uint64(0xFF)).astype(np.intp)]
    mid = _SPREAD[((u >> np.uint64(8)) & np.uint64(0xFF)).astype(np.intp)] << np.uint64(24)
    hi = _SPREAD[(u >> np.uint64(16)).astype(np.intp)] << np.uint64(48)
    return lo | mid | hi


def morton_encode(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The int64 Morton codes of integer coordinates (each taken modulo 2**21, as the service
    does; codes keep spatial order only for coordinates in ``[0, 2**21)``)."""
    return (
        _spread(np.asarray(x))
        | (_spread(np.asarray(y)) << np.uint64(1))
        | (_spread(np.asarray(z)) << np.uint64(2))
    ).astype(np.int64)


def morton_range(lo: Sequence[float], hi: Sequence[float]) -> tuple[int, int] | None:
    """The Morton codes a box ``[lo, hi]`` (faces included) can hold: every integer point of the
    box with coordinates in ``[0, 2**21)`` has a code in ``[morton(ceil lo), morton(floor hi)]``
    (interleaving is monotone in each coordinate). None when the box holds no such point."""
    top = (1 << MORTON_BITS) - 1
    a = [max(0, math.ceil(v)) for v in lo]
    b = [min(top, math.floor(v)) for v in hi]
    if any(x > y for x, y in zip(a, b, strict=True)):
        return None
    m = morton_encode(np.array([a[0], b[0]]), np.array([a[1], b[1]]), np.array([a[2], b[2]]))
    return int(m[0]), int(m[1])


def partition_of(values: np.ndarray, breaks: Sequence[float]) -> np.ndarray:
    """The partition of each value (float64 comparisons): the number of breakpoints below it, i.e.
    ``b[i-1] < v <= b[i]`` is partition ``i``."""
    b = np.sort(np.asarray(list(breaks), dtype=np.float64))
    return np.searchsorted(b, np.asarray(values, dtype=np.float64), side="left").astype(np.int32)


def percentile_breaks(values: np.ndarray, n_partitions: int) -> list[float | int]:
    """``n - 1`` breakpoints splitting ``values`` (no nulls) into ``n`` near-equal ranges: the
    discrete percentiles ``i/n`` (the first value whose rank reaches the fraction, PostgreSQL's
    ``percentile_disc``), as the service computes them."""
    if n_partitions <= 1 or len(values) == 0:
        return []
    s = np.sort(values)
    n = len(s)
    out = []
    for i in range(1, n_partitions):
        rank = max(1, math.ceil(i / n_partitions * n))
        out.append(s[rank - 1].item())
    return out


def uniform_breaks(lo: float, hi: float, n_partitions: int) -> list[float]:
    """``n - 1`` equally spaced breakpoints between ``lo`` and ``hi`` (none when they are equal)."""
    if n_partitions <= 1 or lo == hi:
        return []
    return [float(v) for v in np.linspace(lo, hi, n_partitions + 1)[1:-1]]


def n_partitions(rows: int, bytes_per_row: float, target_mb: float) -> int:
    """The service's partition count: ``ceil(rows × bytes per row / target size)``, at least 1."""
    return max(1, math.ceil(rows * bytes_per_row / (target_mb * 1024 * 1024)))


def lake_names(indexed: Iterable[str], spatial: Iterable[str]) -> list[str]:
    """The lakes of a table: ``id`` first, the indexed columns, the one spatial lake."""
    out = ["id"]
    out.extend(c for c in indexed if c != "id" and c not in out)
    positions = sorted(spatial, key=spatial_rank)  # stable: ties keep the table's order
    if positions:
        out.append(f"{positions[0]}_morton")
    return out


def wkb_points(values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode a binary Arrow array of WKB / PostGIS EWKB ``POINT Z`` values (the service's lakes
    keep the positions it does not partition on so) into float64 x, y, z and a validity mask.

    Each value is a byte order (1 = little endian), a uint32 type (1001 ISO ``POINT Z``, or
    ``0x80000001`` with EWKB's Z flag, ``| 0x20000000`` when an SRID follows), the SRID if
    flagged, then three doubles. Anything else raises ``ValueError`` naming the first bad value.
    """
    import pyarrow as pa

    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_large_binary(arr.type):
        arr = arr.cast(pa.binary())
    n = len(arr)
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    xyz = [np.full(n, np.nan) for _ in range(3)]
    if not valid.any():
        return (*xyz, valid)  # type: ignore[return-value]
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1][valid].astype(np.int64)
    lengths = (offsets[1:] - offsets[:-1])[valid]
    if (lengths < 29).any():
        raise ValueError(f"a position holds {int(lengths.min())} bytes, too few for a WKB POINT Z")
    order = data[starts]
    if not np.isin(order, (0, 1)).all():
        raise ValueError("a position is not WKB (its first byte is not a byte order)")

    def u32(at: np.ndarray) -> np.ndarray:
        b = data[at[:, None] + np.arange(4)].astype(np.uint32)
        little = b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16 | b[:, 3] << 24
        big = b[:, 3] | b[:, 2] << 8 | b[:, 1] << 16 | b[:, 0] << 24
        return np.where(order == 1, little, big)

    kind = u32(starts + 1)
    base = kind & 0x0FFFFFFF
    has_z = (kind & 0x80000000).astype(bool) | (base == 1001)
    if not ((base == 1) | (base == 1001)).all() or not has_z.all():
        bad = int(kind[~(((base == 1) | (base == 1001)) & has_z)][0])
        raise ValueError(f"a position is WKB geometry type {bad:#x}, not POINT Z")
    first = starts + 5 + np.where(kind & 0x20000000, 4, 0)
    if (first + 24 > starts + lengths).any():
        raise ValueError("a position's WKB is cut short")
    for axis in range(3):
        raw = data[(first + 8 * axis)[:, None] + np.arange(8)]
        little = raw.copy().view("<f8").ravel()
        big = raw.copy().view(">f8").ravel()
        xyz[axis][valid] = np.where(order == 1, little, big)
    return (*xyz, valid)  # type: ignore[return-value]
