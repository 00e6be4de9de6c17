"""The result columns of a query, derived once from the resolved table specs.

A query on a table returns its columns in the schema's order; a reference table merged with its
target returns the target's columns first, then the reference table's, those that clash with the
target's renamed with a suffix (``id_ref``). Filter classes, both compilers and the server read
the layout from here.
"""

from __future__ import annotations

import attrs

from ..schema import ColumnSpec, TableSpec

__all__ = ["ResultColumn", "layout"]


@attrs.frozen
class ResultColumn:
    """A column of a query result: its name there, and where it comes from."""

    name: str
    table: str
    column: ColumnSpec


def layout(
    spec: TableSpec, target: TableSpec | None = None, suffix: str = "_ref"
) -> tuple[ResultColumn, ...]:
    """Result columns of a query on ``spec`` (merged with ``target`` for reference tables)."""
    if target is None:
        return tuple(ResultColumn(c.name, spec.name, c) for c in spec.columns)
    out = [ResultColumn(c.name, target.name, c) for c in target.columns]
    taken = {c.name for c in target.columns}
    for c in spec.columns:
        out.append(ResultColumn(c.name + suffix if c.name in taken else c.name, spec.name, c))
    return tuple(out)
