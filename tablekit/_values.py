"""Validation and normalisation of filter values (scalars, lists, ranges, boxes, timestamps).

Every function raises :class:`~tablekit.errors.FilterValueError` with a message that names the
table, the column, the value and the fix. Accepted values are normalised to plain Python
objects (int, float, str, bool, aware UTC datetime) so that a Query is hashable and backends
never see numpy or pandas types.
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import re
from typing import Any

import numpy as np

from . import _time
from .errors import FilterValueError
from .schema import ColumnKind, ColumnSpec

__all__ = ["normalize_timestamp"]

_MEMBERSHIP_TYPES: tuple[type, ...] = (list, tuple, set, frozenset, range, np.ndarray)


def short(v: Any, n: int = 60) -> str:
    """``repr(v)`` cut to about ``n`` characters, for messages (a cut string says its length)."""
    r = repr(v)
    if len(r) <= n:
        return r
    return f"{r[: n - 12]}…{r[-8:]} ({len(v) if isinstance(v, str) else '?'} characters)"


def is_membership(value: Any) -> bool:
    """Is this value a collection to test membership against (not a str, bytes or dict)?"""
    if isinstance(value, (str, bytes, dict)):
        return False
    if isinstance(value, _MEMBERSHIP_TYPES):
        return not (isinstance(value, np.ndarray) and value.ndim == 0)
    mod = type(value).__module__
    return mod.startswith("pandas") and hasattr(value, "__len__") and hasattr(value, "to_numpy")


def kind_name(col: ColumnSpec) -> str:
    """Short name of a column's kind for messages: ``root id``, ``float``, ``string`` …"""
    if col.is_identifier:
        return col.role.value.replace("_", " ")
    return col.kind.value


def _kind_word(col: ColumnSpec) -> str:
    if col.is_identifier:
        return "an integer id"
    return {
        ColumnKind.INT: "an integer",
        ColumnKind.FLOAT: "a number",
        ColumnKind.STRING: "a string",
        ColumnKind.BOOL: "a bool (True/False)",
        ColumnKind.DATETIME: "a timezone-aware datetime or ISO string with offset",
        ColumnKind.POSITION: "a bounding box [[x0, y0, z0], [x1, y1, z1]]",
    }[col.kind]


def scalar(table: str, attr: str, col: ColumnSpec, value: Any, *, bound: bool = False) -> Any:
    """Validate one scalar value for column ``col``; ``bound`` relaxes ints to numbers for ranges."""

    def bad(why: str, fix: str) -> FilterValueError:
        return FilterValueError(
            f"{table}: column {attr!r} ({kind_name(col)}) "
            f"got {short(value)} of type {type(value).__name__}: {why}. {fix}",
            table=table,
            column=attr,
        )

    kind = col.kind
    if value is None or value is getattr(np, "nan", None):
        raise bad("None/null cannot be filtered for", f"Pass {_kind_word(col)}, or leave the filter out")
    if kind is ColumnKind.INT:
        if isinstance(value, (bool, np.bool_)):
            raise bad("a bool is not an integer", "Pass an int")
        if isinstance(value, numbers.Integral):
            iv = int(value)
            if not -(2**63) <= iv < 2**63:
                raise bad("outside the signed 64-bit range of CAVE ids and integers", "Check the value")
            if iv < 0 and col.is_identifier and not bound:
                raise bad("ids are never negative", "Check the value (ids run from 0 to 2**63 - 1)")
            return iv
        if isinstance(value, numbers.Real):
            fv = float(value)
            if math.isnan(fv):
                raise bad("NaN never matches anything", "Leave the filter out or pass a number")
            if bound and not col.is_identifier and math.isfinite(fv):
                return fv
            raise bad(
                "a float for an integer column"
                + (" (ids above 2**53 lose digits as floats)" if col.is_identifier else ""),
                "Pass an int, e.g. int(x)" if fv.is_integer() else "Pass an int",
            )
        raise bad("expected an integer", f"Pass {_kind_word(col)}")
    if kind is ColumnKind.FLOAT:
        if isinstance(value, (bool, np.bool_)):
            raise bad("a bool is not a number", "Pass a float")
        if isinstance(value, numbers.Real):
            fv = float(value)
            if not math.isfinite(fv):
                raise bad("NaN/inf never match anything", "Pass a finite number")
            return fv
        raise bad("expected a number", "Pass a float or int")
    if kind is ColumnKind.STRING:
        if isinstance(value, str):
            _check_unicode(table, attr, value)
            if col.enum is not None and value not in col.enum:
                raise bad(
                    f"not one of the allowed values {list(col.enum)}",
                    "Use one of the allowed values (they are case-sensitive)",
                )
            return value
        raise bad("expected a string", "Pass a str")
    if kind is ColumnKind.BOOL:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise bad("expected a bool", "Pass True or False")
    if kind is ColumnKind.DATETIME:
        try:
            return normalize_timestamp(value, what=f"{table}: column {attr!r}")
        except FilterValueError as e:
            raise FilterValueError(str(e), table=table, column=attr) from None
    raise bad("positions are filtered with a bounding box", f"Use {attr}_bbox=[[x0, y0, z0], [x1, y1, z1]]")


def membership(table: str, attr: str, col: ColumnSpec, value: Any) -> tuple[Any, ...]:
    """Validate a list-like for membership tests; returns a de-duplicated tuple (order kept)."""
    if isinstance(value, (set, frozenset)):
        seq: Any = sorted(value, key=repr)
    elif hasattr(value, "to_numpy"):
        _check_no_missing(table, attr, value)
        seq = value.to_numpy()
    else:
        seq = value
    if isinstance(seq, np.ndarray):
        if seq.ndim != 1:
            raise FilterValueError(
                f"{table}: column {attr!r} got a {seq.ndim}-dimensional array {short(value)}; "
                "membership needs a flat list. Flatten it, e.g. list(np.ravel(x))",
                table=table,
                column=attr,
            )
        if col.kind is ColumnKind.INT and seq.dtype.kind in "iu":  # fast path for big id arrays
            if seq.dtype.kind == "u" and seq.size and int(seq.max()) >= 2**63:
                raise FilterValueError(
                    f"{table}: column {attr!r} got {int(seq.max())}, outside the signed 64-bit range. "
                    "Check the ids",
                    table=table,
                    column=attr,
                )
            if col.is_identifier and seq.dtype.kind == "i" and seq.size and int(seq.min()) < 0:
                raise FilterValueError(
                    f"{table}: column {attr!r} got {int(seq.min())}: ids are never negative. Check the ids "
                    "(ids run from 0 to 2**63 - 1)",
                    table=table,
                    column=attr,
                )
            return tuple(dict.fromkeys(seq.astype(np.int64).tolist()))
        seq = seq.tolist() if seq.dtype.kind != "O" else list(seq)
    items = list(seq)
    if col.kind is ColumnKind.INT and all(type(v) is int for v in items):  # fast path for lists of ints
        return (
            tuple(dict.fromkeys(scalar(table, attr, col, v) for v in items))
            if len(items) < 64
            else (_checked_ints(table, attr, col, items))
        )
    return tuple(dict.fromkeys(scalar(table, attr, col, v) for v in items))


def _check_no_missing(table: str, attr: str, value: Any) -> None:
    """A pandas Series/Index/array holding missing values (``<NA>``, NaN, None) is refused, naming
    the first position, before numpy turns it into floats that would blame a valid id."""
    isna = getattr(value, "isna", None)
    if isna is None:
        return
    mask = np.asarray(isna(), dtype=bool)
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise FilterValueError(
            f"{table}: column {attr!r} got a {type(value).__name__} holding {int(mask.sum())} missing "
            f"value(s) (<NA>/NaN/None; the first at position {i}): a missing value cannot be filtered for. "
            "Drop them first, e.g. ids.dropna()",
            table=table,
            column=attr,
        )


def _check_unicode(table: str, attr: str, value: str) -> None:
    """A str that cannot be UTF-8 (a lone surrogate, e.g. from a bad decode) is refused up front."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FilterValueError(
            f"{table}: column {attr!r} got {short(value)}, which is not valid Unicode text (a lone "
            f"surrogate {value[e.start]!r} at position {e.start}). Fix how the text was decoded, or drop "
            "the character",
            table=table,
            column=attr,
        ) from None


def _checked_ints(table: str, attr: str, col: ColumnSpec, items: list[int]) -> tuple[int, ...]:
    lo, hi = min(items), max(items)
    for v in (lo, hi):
        scalar(table, attr, col, v)
    return tuple(dict.fromkeys(items))


def regex(table: str, attr: str, col: ColumnSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise FilterValueError(
            f"{table}: column {attr!r}: a regex must be a string, got {short(value)}. Pass a str pattern",
            table=table,
            column=attr,
        )
    _check_unicode(table, attr, value)
    try:
        re.compile(value)
    except re.error as e:
        raise FilterValueError(
            f"{table}: column {attr!r}: {value!r} is not a valid regular expression ({e}). Fix the pattern",
            table=table,
            column=attr,
        ) from None
    return value


def bbox(table: str, attr: str, value: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Validate ``[[x0, y0, z0], [x1, y1, z1]]`` (min corner, max corner; faces included)."""

    def bad(why: str) -> FilterValueError:
        return FilterValueError(
            f"{table}: {attr} got {short(value)}: {why}. Pass [[x0, y0, z0], [x1, y1, z1]] in the "
            "table's voxel units with x0 < x1, y0 < y1, z0 < z1",
            table=table,
            column=attr,
        )

    if isinstance(value, (str, bytes, dict)) or value is None:
        raise bad("not a 2×3 box")
    try:
        arr = np.asarray(value, dtype=object)
    except Exception:  # pragma: no cover - numpy refuses ragged input in odd ways
        raise bad("not a 2×3 box") from None
    if arr.ndim != 2:
        raise bad("not a 2×3 box (two corners of three coordinates each)")
    if arr.shape != (2, 3):
        raise bad(f"shape {arr.shape}, expected (2, 3)")
    corners: list[tuple[Any, ...]] = []
    for row in arr:
        vals = []
        for v in row:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
                raise bad(f"coordinate {v!r} is not a number")
            fv = float(v)
            if not math.isfinite(fv):
                raise bad(f"coordinate {v!r} is not finite")
            vals.append(int(v) if isinstance(v, numbers.Integral) else fv)
        corners.append(tuple(vals))
    lo, hi = corners
    for axis, a, b in zip("xyz", lo, hi, strict=True):
        if not a < b:
            raise bad(f"min {axis} {a} is not below max {axis} {b}")
    return lo, hi


def normalize_timestamp(value: Any, *, what: str = "timestamp") -> _dt.datetime:
    """Aware datetime / pandas Timestamp / ISO string with offset → aware UTC datetime
    (:func:`tablekit._time.utc_timestamp`; naive values are refused)."""
    return _time.utc_timestamp(value, what=what)
