"""The question, in one backend-neutral form.

* :mod:`tablekit.query._model`: :class:`Query` (frozen: the *whole* question — table, filters,
  version or moment, paging, resolution, the live-query lookup policy and the output options),
  :class:`Predicate`, :class:`Join`;
* :mod:`tablekit.query.options`: :class:`QueryOptions` / :class:`OutputOptions`, the one
  definition of every query option that every entry point, the stubs and the CLI use;
* :mod:`tablekit.query.layout`: the result columns of a query (:class:`Layout`: names, source
  tables, position scales, selection, resolution), derived once from its table specs.

This package imports no backend.
"""

from ._model import CAVE_FILTER_DICTS, OPS, Join, Op, Predicate, Query, jsonable
from .layout import Layout, ResultColumn, layout, query_layout
from .options import LiveQueryKwargs, OutputOptions, QueryKwargs, QueryOptions

__all__ = [
    "CAVE_FILTER_DICTS",
    "OPS",
    "Join",
    "Layout",
    "LiveQueryKwargs",
    "Op",
    "OutputOptions",
    "Predicate",
    "Query",
    "QueryKwargs",
    "QueryOptions",
    "ResultColumn",
    "jsonable",
    "layout",
    "query_layout",
]
