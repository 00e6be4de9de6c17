"""Arrow → result: the one place where backend output becomes a DataFrame (or stays Arrow).

* positions arrive split (``<P>_x/_y/_z``); by default each point becomes one column of
  3-element numpy arrays (CAVEclient's shape, ``None`` for a missing point), or stays split with
  ``split_positions=True`` (the fast path); position columns go last, in layout order;
* integer columns with nulls become pandas ``Int64`` (never float: 18-digit ids must not lose digits);
* ``df.attrs`` gets JSON-serialisable provenance, kept under :data:`ATTRS_BUDGET` bytes: pandas
  deep-copies ``attrs`` on every operation (pandas 3 even on ``df["col"]``), so a 20,000-id filter
  kept whole (twice: as given and in the request) made ordinary operations an order of magnitude
  slower. A list of more than :data:`LIST_KEEP` values is summarised as its count, a digest and its
  first values (then the largest remaining values, until it fits); the whole provenance stays
  reachable with :func:`provenance` while the result lives (an Arrow result keeps it whole in its
  schema metadata, which Arrow does not copy per operation).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

try:  # what pyarrow's pandas conversion imports on first use: loaded with tablekit instead
    import pyarrow.pandas_compat
    import pyarrow.vendored.version
except ImportError:  # pragma: no cover - another pyarrow layout: imported on first use
    pass

from .errors import TablekitError

__all__ = ["ATTRS_BUDGET", "LIST_KEEP", "provenance", "to_output"]

#: ``df.attrs`` of a result stays under this many bytes (compact JSON)
ATTRS_BUDGET = 4096
#: lists of up to this many values are kept whole in ``df.attrs``; longer ones are summarised
LIST_KEEP = 16
#: the ``df.attrs`` key naming the whole provenance of a summarised result (see :func:`provenance`)
_KEY = "provenance_key"
_FULL: dict[str, list[Any]] = {}  # key -> [whole provenance, results alive holding it]
_LOCK = threading.Lock()


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _summary(obj: Any) -> dict[str, Any]:
    """A value too long for ``df.attrs``: what it is, how long, a digest of its JSON (sha256, 16 hex
    digits, of the compact, key-sorted JSON) and its start."""
    if isinstance(obj, list):
        start: Any = [_short(v) for v in obj[:3]]
        return {"summarised": f"{len(obj)} values", "count": len(obj), "sha256": _digest(obj), "first": start}
    if isinstance(obj, str):
        return {
            "summarised": f"{len(obj)} characters",
            "count": len(obj),
            "sha256": _digest(obj),
            "first": obj[:64],
        }
    return {
        "summarised": f"{type(obj).__name__} of {len(obj)} entries",
        "count": len(obj),
        "sha256": _digest(obj),
    }


def _short(v: Any) -> Any:
    return v if _size(v) <= 64 else _summary(v) if isinstance(v, (list, str, dict)) else str(v)[:64]


def _lists_summarised(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists_summarised(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return _summary(obj) if len(obj) > LIST_KEEP else [_lists_summarised(v) for v in obj]
    return obj


def _largest(obj: Any, path: tuple[Any, ...] = ()) -> tuple[int, tuple[Any, ...]]:
    """(JSON size, path) of the largest summarisable value below ``obj`` (never ``obj`` itself)."""
    best: tuple[int, tuple[Any, ...]] = (0, ())
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        if isinstance(v, (dict, list, str)) and not (isinstance(v, dict) and "summarised" in v):
            best = max(best, (_size(v), (*path, k)), key=lambda b: b[0])
            if isinstance(v, (dict, list)):
                best = max(best, _largest(v, (*path, k)), key=lambda b: b[0])
    return best


def _within_budget(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with long lists summarised, then its largest values, until it fits :data:`ATTRS_BUDGET`
    (the largest value is summarised first, so a value is replaced only as deep as needed)."""
    out = _lists_summarised(meta)
    while _size(out) > ATTRS_BUDGET:
        size, path = _largest(out)
        if not path or size <= 200:  # nothing left worth summarising
            break
        holder = out
        for k in path[:-1]:
            holder = holder[k]
        holder[path[-1]] = _summary(holder[path[-1]])
    return out


def _release(key: str) -> None:
    with _LOCK:
        entry = _FULL.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del _FULL[key]


def _attach(df: pd.DataFrame, meta: dict[str, Any]) -> None:
    """``df.attrs``: ``meta`` when it fits the budget, else its summary naming the whole of it,
    which stays in this process while ``df`` lives."""
    if _size(meta) <= ATTRS_BUDGET:
        df.attrs.update(meta)
        return
    small = _within_budget(meta)
    key = _digest(meta)
    small[_KEY] = key
    with _LOCK:
        entry = _FULL.setdefault(key, [meta, 0])
        entry[1] += 1
    weakref.finalize(df, _release, key)
    df.attrs.update(small)


def provenance(result: pd.DataFrame | pa.Table) -> dict[str, Any]:
    """The whole provenance of a query's result (a new dict): what ``df.attrs`` holds, with every
    value it summarises (long filter value lists, the request's value lists) written out whole, so
    the query can be rebuilt from it.

    ``df.attrs`` keeps under 4 KB (pandas copies it on every operation); a summarised one names its
    whole provenance by ``df.attrs["provenance_key"]``, held in this process as long as the
    DataFrame the query returned is alive (frames derived from it, which copy its ``attrs``, find
    it too while it lives). An Arrow result keeps its provenance whole in its schema metadata
    (``b"tablekit"``). Raises :class:`~tablekit.TablekitError` when there is none: a result of
    ``metadata=False``, or one whose whole provenance is gone (pickled into another process, or the
    original result was garbage-collected).
    """
    if isinstance(result, pa.Table):
        raw = (result.schema.metadata or {}).get(b"tablekit")
        if raw is None:
            raise TablekitError("this Arrow table has no tablekit provenance (queried with metadata=False?)")
        return json.loads(raw)
    attrs = getattr(result, "attrs", None)
    if not isinstance(attrs, Mapping) or not attrs:
        raise TablekitError(
            f"this {type(result).__name__} has no tablekit provenance in its attrs (queried with metadata=False?)"
        )
    key = attrs.get(_KEY)
    if key is None:
        return copy.deepcopy(dict(attrs))
    with _LOCK:
        entry = _FULL.get(key)
    if entry is None:
        raise TablekitError(
            f"the whole provenance {key} of this result is no longer held: the DataFrame the query returned "
            "was garbage-collected, or this one was unpickled in another process. df.attrs keeps its "
            "summary (each long value list as its count and sha256 digest); run the query again to get it whole"
        )
    return copy.deepcopy(entry[0])


def _position_groups(
    table: pa.Table, position_names: Sequence[str]
) -> list[tuple[str, tuple[str, str, str]]]:
    names = set(table.column_names)
    out = []
    for p in position_names:
        trio = (f"{p}_x", f"{p}_y", f"{p}_z")
        if all(t in names for t in trio):
            out.append((p, trio))
    return out


def _own_view(col: pa.ChunkedArray, taken: set[int] | None) -> np.ndarray | None:
    """A writeable zero-copy numpy view of a column's values, when Arrow allows one: one chunk, no
    nulls, numbers or timestamps, in a mutable buffer (what decoding a compressed answer allocates)
    that no other column of this result views (``taken``: buffer addresses; None: the table's
    buffers may be referenced elsewhere, e.g. cached, so none is adopted). Else None."""
    if taken is None or col.num_chunks != 1 or col.null_count:
        return None
    chunk = col.chunk(0)
    t = chunk.type
    if pa.types.is_timestamp(t):
        dtype = np.dtype(f"M8[{t.unit}]")
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        dtype = np.dtype(t.to_pandas_dtype())
    else:
        return None
    buf = chunk.buffers()[1]
    if buf is None or not buf.is_mutable or buf.address in taken:
        return None
    taken.add(buf.address)
    return np.frombuffer(buf, dtype=dtype, count=len(chunk), offset=chunk.offset * dtype.itemsize)


def _bools(col: pa.ChunkedArray) -> np.ndarray:
    """A boolean column without nulls → a new numpy bool array, unpacked by numpy (Arrow's own
    conversion would be the process's first allocation from pyarrow's default memory pool, which
    costs about 0.5 ms, at times 10 ms, to set up)."""
    parts = []
    for chunk in col.chunks:
        n, off = len(chunk), chunk.offset
        buf = chunk.buffers()[1]
        if n == 0 or buf is None:
            continue
        bits = np.frombuffer(buf, dtype=np.uint8)
        parts.append(np.unpackbits(bits, count=off + n, bitorder="little")[off:].view(np.bool_))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.bool_)


def _column(col: pa.ChunkedArray, taken: set[int] | None) -> Any:
    """One Arrow column → an array pandas adopts as it is (no Series, no alignment), always
    writeable: a view of the column's own mutable buffer (:func:`_own_view`), else a copy (Arrow
    shares read-only buffers). Integers with nulls become ``Int64`` (never float); everything
    else converts as ``to_pandas`` does."""
    t = col.type
    if pa.types.is_integer(t) and col.null_count:
        values = col.fill_null(0).to_numpy().astype(np.int64)  # a new array
        mask = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        return pd.arrays.IntegerArray(values, mask)
    if pa.types.is_boolean(t) and not col.null_count:
        return _bools(col)
    if (pa.types.is_integer(t) or pa.types.is_floating(t)) and not col.null_count:
        own = _own_view(col, taken)
        if own is not None:
            return own
        a = col.to_numpy()
        return a if a.flags.writeable else a.copy()
    if pa.types.is_timestamp(t) and t.tz in (None, "UTC"):  # 6x faster than to_pandas
        own = _own_view(col, taken)
        stamps = own if own is not None else col.to_numpy()  # datetime64 of the column's unit, NaT for nulls
        a = pd.array(stamps, dtype=pd.DatetimeTZDtype(t.unit, "UTC") if t.tz else stamps.dtype)
    else:
        a = col.to_pandas().array
    if isinstance(a, pd.arrays.DatetimeArray) and not a.asi8.flags.writeable:
        a = a.copy()
    return a


def _points(x: pa.ChunkedArray, y: pa.ChunkedArray, z: pa.ChunkedArray) -> np.ndarray:
    n = len(x)
    nulls = None
    if x.null_count or y.null_count or z.null_count:
        nulls = np.asarray(x.is_null().to_numpy(zero_copy_only=False)) | np.asarray(
            y.is_null().to_numpy(zero_copy_only=False)
        )
        nulls |= np.asarray(z.is_null().to_numpy(zero_copy_only=False))
        x, y, z = (c.fill_null(0) for c in (x, y, z))
    xyz = np.empty((n, 3), dtype=np.result_type(*(c.type.to_pandas_dtype() for c in (x, y, z))))
    for i, c in enumerate((x, y, z)):
        xyz[:, i] = c.to_numpy()
    out = np.fromiter(xyz, dtype=object, count=n)  # one view per row, no list in between
    if nulls is not None:
        out[nulls] = None
    return out


def to_output(
    table: pa.Table,
    *,
    position_names: Sequence[str],
    split_positions: bool,
    output: str,
    attrs: Mapping[str, Any] | None,
    adopt: bool = False,
) -> pd.DataFrame | pa.Table:
    """Turn a backend's Arrow table into the user's result. ``adopt``: nothing else references the
    table's buffers, so the DataFrame may take over the mutable ones instead of copying them."""
    groups = _position_groups(table, position_names)
    split_cols = {c for _, trio in groups for c in trio}
    scalars = [c for c in table.column_names if c not in split_cols]
    if output == "arrow":
        cols: list[pa.ChunkedArray] = [table[c] for c in scalars]
        names = list(scalars)
        for p, trio in groups:
            if split_positions:
                cols.extend(table[c] for c in trio)
                names.extend(trio)
            else:
                xyz = [table[c].combine_chunks() for c in trio]
                vt = xyz[0].type
                flat = pa.array(
                    np.stack([a.fill_null(0).to_numpy() for a in xyz], axis=1).reshape(-1), type=vt
                )
                mask = None
                if any(a.null_count for a in xyz):
                    mask = pa.array(
                        np.logical_or.reduce([a.is_null().to_numpy(zero_copy_only=False) for a in xyz])
                    )
                cols.append(pa.chunked_array([pa.FixedSizeListArray.from_arrays(flat, 3, mask=mask)]))
                names.append(p)
        out_t = pa.table(cols, names=names)
        if attrs is not None:
            meta = dict(out_t.schema.metadata or {})
            meta[b"tablekit"] = json.dumps(_jsonable(dict(attrs))).encode()
            out_t = out_t.replace_schema_metadata(meta)
        return out_t
    plain = list(scalars) + ([c for _, trio in groups for c in trio] if split_positions else [])
    taken: set[int] | None = set() if adopt else None
    arrays = {c: _column(table[c], taken) for c in plain}  # one DataFrame construction; positions last
    if not split_positions:
        arrays.update((p, _points(*(table[c] for c in trio))) for p, trio in groups)
    df = pd.DataFrame(arrays, copy=False) if arrays else pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    if attrs is not None:
        _attach(df, _jsonable(dict(attrs)))
    return df
