"""Which files of a lake can hold rows a query wants, from the Delta log alone. Pure: no I/O.

A lake's log lists every file with its partition value, row count and per-column min/max/null
counts (``DeltaTable.get_add_actions(flatten=True)``). A file is skipped only when one of the
query's conditions (they are ANDed) provably matches none of its rows:

* ``==`` / ``in`` / ``<`` / ``<=`` / ``>`` / ``>=`` on an integer column: the values against the
  file's ``[min, max]`` (these never match NULL, so an all-null file is skipped too);
* ``bbox`` on a position: each axis against the file's ``[min, max]`` of ``P_x/_y/_z``; on the
  spatial lake also the box's Morton range ``[m(lo), m(hi)]`` against the file's Morton
  ``[min, max]``, used only for files whose coordinates all lie in ``[0, 2**21)`` (the stats say
  so), where Morton order is spatial order.

Float, string, bool and timestamp columns never prune (NaN and collations make min/max unsafe to
reason about), nor does a file whose statistics are missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import pyarrow as pa

from ...query import Predicate
from ...schema import ColumnKind, TableSpec
from . import layout as _layout

__all__ = ["Pruned", "prune"]

_TOP = (1 << _layout.MORTON_BITS) - 1


@attrs.frozen
class Pruned:
    """The files of a lake a query reads (indexes into the log's add actions) and why."""

    keep: tuple[int, ...]
    total: int
    #: the conditions that skipped files: ``{"pre_pt_root_id in": 12, …}`` (files skipped by each)
    reasons: Mapping[str, int] = attrs.field(factory=dict)


def _column(actions: pa.Table, name: str) -> list[Any] | None:
    return actions[name].to_pylist() if name in actions.column_names else None


def _can_match(op: str, value: Any, lo: Any, hi: Any) -> bool:
    """Whether some value in ``[lo, hi]`` (a file's min and max) satisfies ``x op value``."""
    if op == "==":
        return lo <= value <= hi
    if op == "<":
        return lo < value
    if op == "<=":
        return lo <= value
    if op == ">":
        return hi > value
    if op == ">=":
        return hi >= value
    return True


def _in_any(values: np.ndarray, lo: Any, hi: Any) -> bool:
    i = int(np.searchsorted(values, lo, side="left"))
    return i < len(values) and values[i] <= hi


def prune(
    actions: pa.Table,
    predicates: Sequence[Predicate],
    spec: TableSpec,
    *,
    morton_of: str | None = None,
) -> Pruned:
    """The files of ``actions`` (a lake's flattened add actions) that ``predicates`` (those on
    ``spec``'s table) may match; ``morton_of``: the position the lake's Morton column encodes."""
    n = actions.num_rows
    keep = np.ones(n, dtype=bool)
    reasons: dict[str, int] = {}

    def skip(mask: np.ndarray, why: str) -> None:
        new = mask & keep
        if new.any():
            reasons[why] = reasons.get(why, 0) + int(new.sum())
            keep[new] = False

    for p in predicates:
        if p.table != spec.name or not spec.has_column(p.column):
            continue
        col = spec.column(p.column)
        if p.op == "bbox" and col.kind is ColumnKind.POSITION:
            _prune_box(actions, p, col.split_names, morton_of == p.column, skip)
            continue
        if col.kind is not ColumnKind.INT or p.op not in ("==", "in", "<", "<=", ">", ">="):
            continue
        lo, hi = _column(actions, f"min.{p.column}"), _column(actions, f"max.{p.column}")
        if lo is None or hi is None:
            continue
        if p.op == "in":
            values = np.sort(np.asarray([v for v in p.value if v is not None], dtype=object))
            mask = np.array(
                [
                    a is not None and b is not None and not _in_any(values, a, b)
                    for a, b in zip(lo, hi, strict=True)
                ],
                dtype=bool,
            )
        else:
            mask = np.array(
                [
                    a is not None and b is not None and not _can_match(p.op, p.value, a, b)
                    for a, b in zip(lo, hi, strict=True)
                ],
                dtype=bool,
            )
        skip(mask, f"{p.column} {p.op}")
    return Pruned(tuple(int(i) for i in np.flatnonzero(keep)), n, reasons)


def _prune_box(actions: pa.Table, p: Predicate, axes: Sequence[str], spatial: bool, skip: Any) -> None:
    (lo, hi) = p.value
    n = actions.num_rows
    stats = [(_column(actions, f"min.{a}"), _column(actions, f"max.{a}")) for a in axes]
    outside = np.zeros(n, dtype=bool)
    for i, (mins, maxs) in enumerate(stats):
        if mins is None or maxs is None:
            continue
        outside |= np.array(
            [
                a is not None and b is not None and (b < lo[i] or a > hi[i])
                for a, b in zip(mins, maxs, strict=True)
            ],
            dtype=bool,
        )
    skip(outside, f"{p.column} bbox (x/y/z statistics)")
    if not spatial or any(m is None or x is None for m, x in stats):
        return
    column = f"{p.column}_morton"
    mmin, mmax = _column(actions, f"min.{column}"), _column(actions, f"max.{column}")
    if mmin is None or mmax is None:
        return
    in_range = np.ones(n, dtype=bool)  # every coordinate of the file in [0, 2**21): Morton order is spatial
    for mins, maxs in stats:
        in_range &= np.array(
            [
                a is not None and b is not None and a >= 0 and b <= _TOP
                for a, b in zip(mins, maxs, strict=True)
            ],
            dtype=bool,
        )
    box = _layout.morton_range(lo, hi)
    if box is None:
        miss = in_range.copy()
    else:
        miss = in_range & np.array(
            [
                a is not None and b is not None and (b < box[0] or a > box[1])
                for a, b in zip(mmin, mmax, strict=True)
            ],
            dtype=bool,
        )
    skip(miss, f"{p.column} bbox (Morton range)")
