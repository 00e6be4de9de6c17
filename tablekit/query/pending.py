"""The pending-lookup rule, written once.

An annotation whose supervoxel lookup is still pending has a null supervoxel id, hence no root id
at any time: a live query cannot say where it belongs. The rule: a row of a live answer waits
for its lookup when any of its supervoxel-id columns (:func:`supervoxel_columns`, looked at even
when ``select_columns`` leaves them out) is null (:func:`find_pending`). What is then done with
such rows is the query's policy (``allow_missing_lookups``: refuse, or leave them out with a
warning): the client applies it for every backend (:meth:`tablekit.Client.execute`), ``tablekit
serve`` in the live endpoint's own words, and the CAVE backend reads a server's verdict into the
same words (:func:`pending_text`, :func:`refusal`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import attrs
import numpy as np
import pyarrow as pa

from ..schema import ColumnRole
from .layout import ResultColumn

__all__ = ["Pending", "find_pending", "pending_text", "refusal", "supervoxel_columns"]


def supervoxel_columns(cols: Sequence[ResultColumn]) -> tuple[str, ...]:
    """The result names of the supervoxel-id columns of a layout: the columns the rule reads."""
    return tuple(c.name for c in cols if c.column.role is ColumnRole.SUPERVOXEL_ID)


@attrs.frozen(eq=False)
class Pending:
    """The rows of an answer that wait for their supervoxel lookup."""

    #: the supervoxel-id columns the answer holds, in layout order
    columns: tuple[str, ...]
    #: per column, which rows are null there (NumPy bool arrays, one per column)
    nulls: tuple[np.ndarray, ...]
    #: the answer's number of rows
    rows: int

    @property
    def mask(self) -> np.ndarray:
        """Rows null in any supervoxel-id column."""
        out = np.zeros(self.rows, dtype=bool)
        for n in self.nulls:
            out |= n
        return out

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    def by_column(self, within: np.ndarray | None = None) -> list[tuple[str, np.ndarray]]:
        """Column by column, the pending rows (of ``within``, default all) that the columns before
        did not already count — how the CAVE live endpoint counts them (``update_rootids``)."""
        seen = np.zeros(self.rows, dtype=bool)
        out = []
        for name, isnull in zip(self.columns, self.nulls, strict=True):
            rows = isnull & ~seen if within is None else isnull & within & ~seen
            seen |= rows
            out.append((name, rows))
        return out


def find_pending(table: pa.Table, columns: Sequence[str]) -> Pending:
    """The rows of ``table`` whose supervoxel lookup is pending: null in any of ``columns`` (the
    :func:`supervoxel_columns` of the query's layout; those ``table`` lacks are skipped)."""
    present = tuple(c for c in columns if c in table.column_names)
    nulls = tuple(
        np.asarray(table.column(c).is_null().to_numpy(zero_copy_only=False), dtype=bool) for c in present
    )
    return Pending(columns=present, nulls=nulls, rows=table.num_rows)


def pending_text(table: str, n: int | str, which: str, detail: str, timestamp: _dt.datetime | None) -> str:
    """The sentence tablekit says about ``n`` annotations (a number or a bound such as ``"at least
    3"``) ``which`` (e.g. ``"matching this live query"``) that wait for their lookup; ``detail``
    is the parenthesis (the columns, example ids, what a server said)."""
    ts = timestamp.isoformat() if timestamp is not None else "the query time"
    return (
        f"{table}: {n} annotation(s) {which} still wait for their supervoxel lookup ({detail}), "
        f"so their root ids at {ts} are unknown"
    )


def refusal(text: str) -> str:
    """The error text of a live query refused for pending lookups (``allow_missing_lookups=False``)."""
    return f"{text}. Pass allow_missing_lookups=True to leave them out, or query an earlier time"
