"""Arrow → result: the one place where backend output becomes a DataFrame (or stays Arrow).

* positions arrive split (``<P>_x/_y/_z``); by default each point becomes one column of
  3-element numpy arrays (CAVEclient's shape, ``None`` for a missing point), or stays split with
  ``split_positions=True`` (the fast path); position columns go last, in layout order;
* integer columns with nulls become pandas ``Int64`` (never float: 18-digit ids must not lose digits);
* ``df.attrs`` gets JSON-serialisable provenance.
"""

from __future__ import annotations

import json
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

__all__ = ["to_output"]


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


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
        df.attrs.update(_jsonable(dict(attrs)))
    return df
