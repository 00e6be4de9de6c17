"""Input normalisation for :func:`tablekit.datastack.build_datastack`: frames in CAVE's flat-column
layout → the annotation history and the segmentation history, refusing anything lossy or ambiguous.

Every problem is a :class:`~tablekit.errors.DatastackError` naming the table, the column, the value
and the fix.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._values import short
from ..errors import DatastackError
from ..schema import ColumnKind, ColumnRole, PointKind, TableSpec
from .format import _KIND_TYPES, _TS, SEGMENTATION_SCHEMA, _us, annotation_schema, format_timestamp
from .parts import _filled


@attrs.define
class TableSource:
    """One table for :func:`build_datastack`.

    Args:
        name: table name (``^[a-z_][a-z0-9_]*$``).
        schema_type: a CAVE schema type such as ``"synapse"`` or ``"nucleus_detection"``.
        data: a pandas DataFrame, a Parquet file path, or a list of Parquet paths, in CAVE's
            flat-column layout (what a CAVE query returns or exports): ``id``, optionally
            ``created``, ``valid``, ``deleted``, ``superceded_id``, the scalar fields, and per point
            ``P`` either ``P_position`` (3-element arrays/lists) or ``P_position_x/_y/_z``, plus
            ``P_supervoxel_id`` and ``P_root_id`` for bound points.
        voxel_resolution: nm per stored position unit, per axis.
        description: table description shown to users.
        reference_table: for schemas with ``target_id``: the name of the table whose ``id`` it refers to.
        notice_text: an owner notice shown as a warning on every query.
    """

    name: str
    schema_type: str
    data: Any = attrs.field(repr=False)
    voxel_resolution: tuple[float, float, float] = (4.0, 4.0, 40.0)
    description: str = ""
    reference_table: str | None = None
    notice_text: str | None = None


# ---- input normalisation (CAVE flat layout → annotation history)


def _load_frame(s: TableSource) -> pd.DataFrame:
    data = s.data
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    if isinstance(data, (list, tuple)) and data and all(isinstance(p, (str, os.PathLike)) for p in data):
        parts = []
        for p in data:
            try:
                parts.append(pq.read_table(str(p)))
            except (OSError, pa.ArrowInvalid) as e:
                raise DatastackError(f"table {s.name!r}: cannot read Parquet file {str(p)!r} ({e})") from e
        try:
            t = pa.concat_tables(parts, promote_options="default")
        except pa.ArrowInvalid as e:
            raise DatastackError(
                f"table {s.name!r}: the Parquet files have incompatible columns ({e})"
            ) from e
        return t.to_pandas()
    raise DatastackError(
        f"table {s.name!r}: data must be a pandas DataFrame, a Parquet path or a list of Parquet paths, "
        f"got {type(data).__name__}"
    )


class _Ctx:
    """Row context for error messages: the table and its ids."""

    def __init__(self, table: str, ids: np.ndarray | None):
        self.table = table
        self.ids = ids

    def row(self, i: int) -> str:
        return f"row {i}" if self.ids is None else f"id {self.ids[i]}"


def _arrow(ctx: _Ctx, col: str, series: pd.Series) -> pa.Array:
    try:
        arr = pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        kinds = series.map(lambda v: type(v).__name__).to_numpy()
        first = kinds[0] if len(kinds) else "?"
        i = next((k for k, v in enumerate(kinds) if v != first), 0)
        raise DatastackError(
            f"table {ctx.table!r}, column {col!r}: mixed value types ({first} and {kinds[i]}, e.g. "
            f"{series.iloc[i]!r} at {ctx.row(i)}); give one type per column"
        ) from None
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _first_bad(ctx: _Ctx, col: str, arr: pa.Array, bad: np.ndarray, problem: str, fix: str) -> DatastackError:
    where = np.flatnonzero(bad)
    if not len(where):  # e.g. a column of NaN only, read as nulls of a wrong type
        return DatastackError(
            f"table {ctx.table!r}, column {col!r}: {problem} (every value is missing); {fix}"
        )
    i = int(where[0])
    return DatastackError(
        f"table {ctx.table!r}, column {col!r}: {problem} ({arr[i].as_py()!r} at {ctx.row(i)}; "
        f"{int(bad.sum())} such values); {fix}"
    )


def _text(what: str, value: Any, *, optional: bool = False) -> None:
    """A text argument of build_datastack: a str (or None when ``optional``) that is valid Unicode."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise DatastackError(
            f"build_datastack: {what} must be a str{' or None' if optional else ''}, got {short(value)} "
            f"({type(value).__name__})"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DatastackError(
            f"build_datastack: {what} {short(value)} is not valid Unicode text (a lone surrogate at position "
            f"{e.start}); fix how the text was decoded"
        ) from None


def check_build_arguments(path: Any, tables: Any, **args: Any) -> None:
    """build_datastack's arguments other than the tables' data, refused before anything is read
    or written: a path, a list of TableSource, texts that are str, views and schemas that are dicts."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise DatastackError(
            f"build_datastack: path must be a directory path (a str or pathlib.Path), got {short(path)}"
        )
    _text("path", os.fspath(path))
    if isinstance(tables, (str, bytes, Mapping, TableSource)) or not isinstance(tables, Iterable):
        raise DatastackError(
            f"build_datastack: tables must be a list of TableSource objects, got {short(tables)}"
        )
    _text("description", args["description"])
    for role in ("synapse_table", "soma_table"):
        _text(role, args[role], optional=True)
    for name in ("views", "schemas"):
        v = args[name]
        if v is not None and not (isinstance(v, Mapping) and all(isinstance(k, str) for k in v)):
            raise DatastackError(
                f"build_datastack: {name} must be a dict with str keys (or None), got {short(v)}"
            )
        if v is not None and not all(isinstance(d, Mapping) for d in v.values()):
            bad = next(k for k, d in v.items() if not isinstance(d, Mapping))
            raise DatastackError(f"build_datastack: {name}[{bad!r}] must be a dict, got {short(v[bad])}")


def check_source_texts(s: TableSource) -> None:
    """A TableSource's names and texts are str (reference_table and notice_text may be None)."""
    where = f"table {short(s.name)}"
    _text(f"{where}: schema_type", s.schema_type)
    _text(f"{where}: description", s.description)
    _text(f"{where}: reference_table", s.reference_table, optional=True)
    _text(f"{where}: notice_text", s.notice_text, optional=True)


def _int64(ctx: _Ctx, col: str, arr: Any) -> pa.Array:
    t = arr.type
    out: Any
    if pa.types.is_null(t):
        out = pa.nulls(len(arr), pa.int64())
    elif pa.types.is_integer(t):
        try:
            out = arr.cast(pa.int64(), safe=True)
        except pa.ArrowInvalid:
            big = _filled(pc.greater(arr, pa.scalar(np.iinfo(np.int64).max, pa.uint64())), False)
            raise _first_bad(
                ctx, col, arr, big, "values do not fit in int64", "ids must be < 2**63"
            ) from None
    elif pa.types.is_floating(t):
        v = _filled(arr, 0)
        bad = ~np.isfinite(v) | (v != np.floor(v)) | (np.abs(v) >= 2.0**63)
        if bad.any():
            raise _first_bad(
                ctx, col, arr, bad, "non-integer values", "this column holds integers; fix or drop those rows"
            )
        out = pa.array(v.astype(np.int64), mask=arr.is_null().to_numpy(zero_copy_only=False))
    else:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        raise _first_bad(
            ctx, col, arr, valid, f"values of type {t} are not integers", "convert the column to int64"
        )
    return out


def _float64(ctx: _Ctx, col: str, arr: Any) -> pa.Array:
    t = arr.type
    out: Any
    if pa.types.is_null(t):
        out = pa.nulls(len(arr), pa.float64())
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        out = arr.cast(pa.float64())
    else:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        raise _first_bad(
            ctx, col, arr, valid, f"values of type {t} are not numbers", "convert the column to float"
        )
    return out


def _string(ctx: _Ctx, col: str, arr: Any) -> pa.Array:
    t = arr.type
    out: Any
    if pa.types.is_null(t):
        out = pa.nulls(len(arr), pa.string())
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        out = arr.cast(pa.string())
    else:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        raise _first_bad(
            ctx, col, arr, valid, f"values of type {t} are not strings", "convert the column to str"
        )
    return out


_BOOL_STRINGS = {"t": True, "f": False, "true": True, "false": False}


def _bool(ctx: _Ctx, col: str, arr: Any) -> pa.Array:
    t = arr.type
    out: Any
    if pa.types.is_null(t):
        out = pa.nulls(len(arr), pa.bool_())
    elif pa.types.is_boolean(t):
        out = arr
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        vals = arr.to_pylist()
        bad = np.array([v is not None and v not in _BOOL_STRINGS for v in vals], dtype=bool)
        if bad.any():
            raise _first_bad(
                ctx, col, arr, bad, "strings other than 't'/'f'", "give booleans (True/False) or 't'/'f'"
            )
        out = pa.array([None if v is None else _BOOL_STRINGS[v] for v in vals], type=pa.bool_())
    else:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        raise _first_bad(ctx, col, arr, valid, f"values of type {t} are not booleans", "give True/False")
    return out


def _datetime(ctx: _Ctx, col: str, arr: Any) -> pa.Array:
    t = arr.type
    out: Any
    if pa.types.is_null(t):
        out = pa.nulls(len(arr), _TS)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            parsed = pd.to_datetime(pd.Series(arr.to_pylist(), dtype=object), format="ISO8601")
        except (ValueError, TypeError) as e:
            raise DatastackError(
                f"table {ctx.table!r}, column {col!r}: unreadable timestamp strings ({e})"
            ) from e
        if parsed.dt.tz is None:
            raise DatastackError(
                f"table {ctx.table!r}, column {col!r}: timestamps without a time zone (e.g. "
                f"{arr[0].as_py()!r}); give aware UTC timestamps, e.g. with a 'Z' or '+00:00' suffix"
            )
        return _datetime(ctx, col, pa.array(parsed, from_pandas=True))
    elif pa.types.is_timestamp(t):
        if t.tz is None:
            raise DatastackError(
                f"table {ctx.table!r}, column {col!r}: naive timestamps (e.g. {arr[0].as_py()!r}); CAVE "
                "timestamps are UTC — use df[col].dt.tz_localize('UTC') or aware datetimes"
            )
        try:
            out = arr.cast(_TS, safe=True)
        except pa.ArrowInvalid:
            raise DatastackError(
                f"table {ctx.table!r}, column {col!r}: timestamps finer than a microsecond; round them "
                "with df[col].dt.floor('us')"
            ) from None
    else:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        raise _first_bad(
            ctx, col, arr, valid, f"values of type {t} are not timestamps", "give aware UTC datetimes"
        )
    return out


_CONVERT = {
    ColumnKind.INT: _int64,
    ColumnKind.FLOAT: _float64,
    ColumnKind.STRING: _string,
    ColumnKind.BOOL: _bool,
    ColumnKind.DATETIME: _datetime,
}


def _column(ctx: _Ctx, col: str, series: pd.Series, kind: ColumnKind, nullable: bool) -> pa.Array:
    """Convert one input column to its stored Arrow type; refuse anything lossy or ambiguous."""
    if kind is ColumnKind.BOOL and series.dtype == object:
        series = series.map(lambda v: _BOOL_STRINGS.get(v, v) if isinstance(v, str) else v)
    arr = _arrow(ctx, col, series)
    out = _CONVERT[kind](ctx, col, arr)
    if not nullable and out.null_count:
        fix = "give True or False" if kind is ColumnKind.BOOL else "the column is required"
        raise _first_bad(ctx, col, arr, out.is_null().to_numpy(zero_copy_only=False), "missing values", fix)
    return out


def _check_enum(ctx: _Ctx, col: str, arr: pa.Array, allowed: Any) -> None:
    """An enumerated column holds only its allowed values (or nulls)."""
    ok = pc.is_in(arr, value_set=pa.array(list(allowed), type=arr.type), skip_nulls=True)
    bad = ~_filled(ok, True)
    if bad.any():
        raise _first_bad(
            ctx,
            col,
            arr,
            bad,
            f"values outside the schema's allowed values {list(allowed)}",
            "use one of the allowed values (they are case-sensitive), or fix or drop those rows",
        )


def _position(ctx: _Ctx, df: pd.DataFrame, name: str, nullable: bool) -> list[Any] | None:
    """The three int64 coordinate arrays of position column ``name`` (None if absent)."""
    split = [f"{name}_{a}" for a in "xyz"]
    have = [c for c in split if c in df.columns]
    if name in df.columns and have:
        raise DatastackError(
            f"table {ctx.table!r}: both {name!r} and {have} are given; give the position either as one "
            f"column of [x, y, z] or as {split}, not both"
        )
    if have:
        if len(have) < 3:
            miss = [c for c in split if c not in have]
            raise DatastackError(
                f"table {ctx.table!r}: column {miss[0]!r} is missing (found {have}); give all of {split}"
            )
        xyz = [_column(ctx, c, df[c], ColumnKind.INT, True) for c in split]
    elif name in df.columns:
        arr = _arrow(ctx, name, df[name])
        if pa.types.is_null(arr.type):
            xyz = [pa.nulls(len(arr), pa.int64()) for _ in range(3)]
        elif not (
            pa.types.is_list(arr.type)
            or pa.types.is_large_list(arr.type)
            or pa.types.is_fixed_size_list(arr.type)
        ):
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            raise _first_bad(
                ctx,
                name,
                arr,
                valid,
                f"values of type {arr.type} are not [x, y, z] positions",
                f"give 3-element lists/arrays or split columns {split}",
            )
        else:
            lengths = _filled(pc.list_value_length(arr), 3)
            if (lengths != 3).any():
                raise _first_bad(
                    ctx,
                    name,
                    arr,
                    lengths != 3,
                    "positions that are not 3 long",
                    "every position is [x, y, z] (or None)",
                )
            isnull = arr.is_null().to_numpy(zero_copy_only=False)
            lists: Any = arr.filter(pa.array(~isnull))
            inner = _int64(ctx, name, lists.flatten())
            full = np.zeros((len(arr), 3), np.int64)
            fnull = np.ones((len(arr), 3), bool)
            full[~isnull] = _filled(inner, 0).reshape(-1, 3)
            fnull[~isnull] = inner.is_null().to_numpy(zero_copy_only=False).reshape(-1, 3)
            xyz = [pa.array(full[:, k], mask=fnull[:, k]) for k in range(3)]
    else:
        return None
    nulls = np.stack([a.is_null().to_numpy(zero_copy_only=False) for a in xyz], axis=1)
    partial = nulls.any(axis=1) & ~nulls.all(axis=1)
    if partial.any():
        i = int(np.flatnonzero(partial)[0])
        raise DatastackError(
            f"table {ctx.table!r}, column {name!r}: position {[a[i].as_py() for a in xyz]} at {ctx.row(i)} is "
            "partly missing; a position is 3 integers or entirely missing"
        )
    if not nullable and nulls.any():
        i = int(np.flatnonzero(nulls.any(axis=1))[0])
        raise DatastackError(
            f"table {ctx.table!r}, column {name!r}: missing position at {ctx.row(i)}; this point is required"
        )
    return xyz


def _normalize(
    s: TableSource,
    spec: TableSpec,
    ts: pd.Timestamp,
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, str]],
) -> pa.Table:
    """Validate one table in CAVE layout and return its annotation history (sorted by id)."""
    df = _load_frame(s)
    n = len(df)
    ctx = _Ctx(s.name, None)
    schema = annotation_schema(spec)

    accepted = {"id", "created", "valid", "deleted", "superceded_id"}
    for c in spec.columns:
        if c.kind is ColumnKind.POSITION:
            accepted.update((c.name, *c.split_names))
        else:
            accepted.add(c.name)
    extra = [str(c) for c in df.columns if c not in accepted]
    if extra:
        close = difflib.get_close_matches(extra[0], sorted(accepted), n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise DatastackError(
            f"table {s.name!r}: unexpected column {extra[0]!r}{hint}"
            + (f" (and {extra[1:]})" if len(extra) > 1 else "")
            + f"; schema {spec.schema_type!r} has columns {list(spec.column_names)} (positions also as "
            "<P>_position_x/_y/_z) plus optional 'deleted' and 'superceded_id' — drop or rename it"
        )
    if df.columns.duplicated().any():
        dup = list(df.columns[df.columns.duplicated()])
        raise DatastackError(f"table {s.name!r}: column {dup[0]!r} appears twice; drop the duplicate")
    if "id" not in df.columns:
        raise DatastackError(
            f"table {s.name!r}: required column 'id' is missing; every annotation needs a unique id"
        )
    ids_arr = _column(ctx, "id", df["id"], ColumnKind.INT, False)
    ids = ids_arr.to_numpy()
    ctx.ids = ids
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup_ids = uniq[counts > 1]
        raise DatastackError(
            f"table {s.name!r}, column 'id': duplicate ids {dup_ids[:5].tolist()}"
            + (f" and {dup_ids.size - 5} more" if dup_ids.size > 5 else "")
            + "; annotation ids must be unique — drop or renumber the duplicates"
        )

    cols: dict[str, pa.Array] = {"id": ids_arr}
    if "created" in df.columns:
        cols["created"] = _column(ctx, "created", df["created"], ColumnKind.DATETIME, False)
        late = pc.greater(cols["created"], pa.scalar(ts.to_pydatetime(), _TS)).to_numpy(zero_copy_only=False)
        if late.any():
            raise _first_bad(
                ctx,
                "created",
                cols["created"],
                late,
                f"annotations created after the version timestamp {format_timestamp(ts)}",
                "pass a later timestamp= to build_datastack",
            )
    else:
        cols["created"] = pa.array(np.full(n, _us(ts), np.int64)).cast(_TS)
    if "deleted" in df.columns:
        cols["deleted"] = _column(ctx, "deleted", df["deleted"], ColumnKind.DATETIME, True)
        early = _filled(pc.less_equal(cols["deleted"], cols["created"]), False)
        if early.any():
            raise _first_bad(
                ctx,
                "deleted",
                cols["deleted"],
                early,
                "deleted at or before created",
                "deleted must be later than created (or null)",
            )
    else:
        cols["deleted"] = pa.nulls(n, _TS)
    if "superceded_id" in df.columns:
        cols["superceded_id"] = _column(ctx, "superceded_id", df["superceded_id"], ColumnKind.INT, True)
    else:
        cols["superceded_id"] = pa.nulls(n, pa.int64())
    if "valid" in df.columns:
        cols["valid"] = _column(ctx, "valid", df["valid"], ColumnKind.BOOL, False)
    else:
        cols["valid"] = pa.array(np.ones(n, bool))

    for c in spec.columns:
        if c.role not in (ColumnRole.VALUE, ColumnRole.TARGET_ID):
            continue  # bookkeeping and point columns are handled above and below
        if c.name not in df.columns:
            if not c.nullable:
                raise DatastackError(
                    f"table {s.name!r}: required column {c.name!r} ({c.kind.value}) is missing; "
                    f"schema {spec.schema_type!r} needs it"
                )
            cols[c.name] = pa.nulls(n, _KIND_TYPES[c.kind])  # type: ignore[call-overload]
            continue
        cols[c.name] = _column(ctx, c.name, df[c.name], c.kind, c.nullable)
        if c.enum is not None:
            _check_enum(ctx, c.name, cols[c.name], c.enum)

    for p in spec.points:
        pos_name = p.column("position")
        xyz = _position(ctx, df, pos_name, p.nullable)
        bound = p.kind in (PointKind.BOUND, PointKind.DERIVED)
        sv_col, root_col = p.column("supervoxel_id"), p.column("root_id")
        if xyz is None:
            if not p.nullable:
                raise DatastackError(
                    f"table {s.name!r}: required column {pos_name!r} is missing; give it as one column of "
                    f"[x, y, z] or as {pos_name}_x/_y/_z"
                )
            xyz = [pa.nulls(n, pa.int64()) for _ in range(3)]
            if bound and (sv_col in df.columns or root_col in df.columns):
                raise DatastackError(
                    f"table {s.name!r}: {sv_col!r}/{root_col!r} given without {pos_name!r}; give the position too"
                )
        for name, a in zip((f"{pos_name}_x", f"{pos_name}_y", f"{pos_name}_z"), xyz, strict=True):
            cols[name] = a
        if p.kind is PointKind.DERIVED:
            for extra_col in (p.column("dependent_chunk"), p.column("level")):
                cspec = spec.column(extra_col)
                if extra_col in df.columns:
                    cols[extra_col] = _column(ctx, extra_col, df[extra_col], ColumnKind.INT, cspec.nullable)
                elif cspec.nullable:
                    cols[extra_col] = pa.nulls(n, pa.int64())
                else:
                    raise DatastackError(f"table {s.name!r}: required column {extra_col!r} is missing")
        if bound:
            cols[sv_col] = _bound_point(ctx, df, sv_col, root_col, xyz, pairs)

    t = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
    return t.take(pc.sort_indices(t.column("id")))


def _bound_point(
    ctx: _Ctx,
    df: pd.DataFrame,
    sv_col: str,
    root_col: str,
    xyz: list[Any],
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, str]],
) -> pa.Array:
    pos_given = ~xyz[0].is_null().to_numpy(zero_copy_only=False)
    for c in (sv_col, root_col):
        if c not in df.columns and pos_given.any():
            raise DatastackError(
                f"table {ctx.table!r}: required column {c!r} is missing; a bound point needs "
                f"{sv_col!r} and {root_col!r} (query CAVE without select_columns, or add them)"
            )
    if sv_col not in df.columns:
        return pa.nulls(len(df), pa.int64())
    sv = _column(ctx, sv_col, df[sv_col], ColumnKind.INT, True)
    root = _column(ctx, root_col, df[root_col], ColumnKind.INT, True)
    svn, rn = sv.is_null().to_numpy(zero_copy_only=False), root.is_null().to_numpy(zero_copy_only=False)
    s, r = _filled(sv, 0), _filled(root, 0)
    checks = [
        (
            svn & ~rn,
            root_col,
            root,
            f"root ids given where {sv_col} is null",
            f"set {root_col} to null there",
        ),
        (~svn & (s < 0), sv_col, sv, "negative supervoxel ids", "supervoxel ids are >= 0"),
        (
            ~svn & rn,
            root_col,
            sv,
            f"supervoxels without a root id in {root_col}",
            "give the root id of every supervoxel",
        ),
        (
            ~svn & (s == 0) & ~rn & (r != 0),
            root_col,
            root,
            f"non-zero root ids where {sv_col} is 0",
            "supervoxel 0 has root 0",
        ),
        (
            ~svn & (s > 0) & ~rn & (r <= 0),
            root_col,
            root,
            f"root id 0 (or negative) for a non-zero {sv_col}",
            "a supervoxel inside the segmentation has a positive root id",
        ),
    ]
    for bad, col, arr, problem, fix in checks:
        if bad.any():
            raise _first_bad(ctx, col, arr, bad, problem, fix)
    keep = ~svn & (s > 0)
    assert ctx.ids is not None
    pairs.append((s[keep], r[keep], ctx.ids[keep], ctx.table, sv_col))
    return sv


def _check_supervoxel_roots(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, str]]) -> None:
    if not pairs:
        return
    sv = np.concatenate([p[0] for p in pairs])
    root = np.concatenate([p[1] for p in pairs])
    order = np.lexsort((root, sv))
    s, r = sv[order], root[order]
    conflict = np.flatnonzero((s[1:] == s[:-1]) & (r[1:] != r[:-1]))
    if conflict.size == 0:
        return
    k = int(conflict[0])
    bad_sv, r1, r2 = int(s[k]), int(r[k]), int(r[k + 1])

    def where(rootv: int) -> str:
        for psv, proot, pids, table, col in pairs:
            hit = np.flatnonzero((psv == bad_sv) & (proot == rootv))
            if hit.size:
                return f"table {table!r} column {col!r} id {pids[hit[0]]}"
        return "?"

    raise DatastackError(
        f"supervoxel {bad_sv} is mapped to two different root ids: {r1} ({where(r1)}) and {r2} "
        f"({where(r2)}); root ids must come from one moment of the segmentation — export all tables "
        "at the same materialization version or timestamp"
    )


def _check_targets(table: str, t: pa.Table, ref: str, ref_t: pa.Table) -> None:
    target = t.column("target_id").to_numpy()
    ok = np.isin(target, ref_t.column("id").to_numpy())
    if not ok.all():
        missing = np.unique(target[~ok])
        raise DatastackError(
            f"table {table!r}, column 'target_id': values {missing[:5].tolist()}"
            + (f" and {missing.size - 5} more" if missing.size > 5 else "")
            + f" are not ids of the reference table {ref!r}; every target_id must be an id of {ref!r} — "
            "drop those rows or add the referenced annotations"
        )


def _history_from_pairs(
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, str]], epoch: pd.Timestamp
) -> pa.Table:
    if pairs:
        sv = np.concatenate([p[0] for p in pairs])
        root = np.concatenate([p[1] for p in pairs])
        sv, first = np.unique(sv, return_index=True)
        root = root[first]
    else:
        sv = root = np.zeros(0, np.int64)
    n = len(sv)
    return pa.Table.from_arrays(
        [
            pa.array(sv, pa.int64()),
            pa.array(root, pa.int64()),
            pa.array(np.full(n, _us(epoch), np.int64)).cast(_TS),
            pa.nulls(n, _TS),
        ],
        schema=SEGMENTATION_SCHEMA,
    )
