"""CAVEclient's dict API over tablekit's one pipeline (mixed into :class:`tablekit.Client`; it
uses only the client's public methods: ``filter_class``, ``build_query``, ``execute``).

``query_table(filter_in_dict=…)``, ``query_view``, ``synapse_query`` and ``live_query`` translate
their filter dicts into the keyword filters of the same filter classes the DSL uses, so the DSL
and the dict API return identical frames for the same question.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import pandas as pd
from typing_extensions import Unpack

from . import _values
from .errors import FilterValueError, QueryError, UnknownTableError
from .filters import TableFilter, check_flags, introspect, no_live_timestamp
from .query import CAVE_FILTER_DICTS, Predicate, Query
from .query import options as _options

__all__ = ["ClassicMixin"]

#: CAVEclient's user-facing argument names → tablekit operators (``filter_out_dict`` is sent as
#: ``filter_notin_dict``; spatial boxes are handled apart)
_CLASSIC_OPS = {**CAVE_FILTER_DICTS, "filter_out_dict": "not in"}


_DICTS = (
    "filter_in_dict",
    "filter_out_dict",
    "filter_equal_dict",
    "filter_greater_dict",
    "filter_less_dict",
    "filter_greater_equal_dict",
    "filter_less_equal_dict",
    "filter_spatial_dict",
    "filter_regex_dict",
)


class _Host(Protocol):
    """What the classic API uses of the client that holds it: public methods only."""

    @property
    def datastack(self) -> str: ...
    @property
    def info(self) -> dict[str, Any]: ...
    def filter_class(
        self, table: str, version: int | None = None, *, view: bool = False, merge_reference: bool = True
    ) -> type[TableFilter]: ...
    def build_query(
        self,
        source: TableFilter | type[TableFilter],
        *,
        predicates: Any = None,
        options: _options.QueryOptions | None = None,
        output: _options.OutputOptions | None = None,
    ) -> Query: ...
    def execute(self, query: Query, *, given: Mapping[str, Any] | None = None) -> Any: ...


class ClassicMixin:
    """The classic query methods of the client."""

    def query_table(
        self: _Host,
        table: str,
        filter_in_dict: Mapping[str, Any] | None = None,
        filter_out_dict: Mapping[str, Any] | None = None,
        filter_equal_dict: Mapping[str, Any] | None = None,
        filter_greater_dict: Mapping[str, Any] | None = None,
        filter_less_dict: Mapping[str, Any] | None = None,
        filter_greater_equal_dict: Mapping[str, Any] | None = None,
        filter_less_equal_dict: Mapping[str, Any] | None = None,
        filter_spatial_dict: Mapping[str, Any] | None = None,
        filter_regex_dict: Mapping[str, Any] | None = None,
        *,
        merge_reference: bool = True,
        **options: Unpack[_options.QueryKwargs],
    ) -> pd.DataFrame:
        """Query a table with CAVEclient's filter dicts (``{column: value}``).

        Same engine and same answers as ``client.tables.<table>(...).query()``: each dict becomes
        the equivalent keyword filter (``filter_in_dict={"c": [..]}`` → ``c=[..]``,
        ``filter_greater_dict={"c": x}`` → ``c={">": x}``, ``filter_out_dict`` → ``{"not in": …}``,
        ``filter_spatial_dict={"pt_position": box}`` → ``pt_position_bbox=box``). A reference table
        is merged with its target (the reference table's clashing columns get ``_ref``) unless
        ``merge_reference=False``. The options are those of ``.query()``.
        """
        dicts = {k: v for k, v in locals().items() if k.startswith("filter_")}
        opts, out = _options.parse(
            options, table=str(table), what="query_table", allowed=_QUERY_TABLE_ARGS[1:]
        )
        check_flags(str(table), merge_reference=merge_reference)
        cls = self.filter_class(table, opts.materialization_version, merge_reference=merge_reference)
        obj = cls(**_classic_kwargs(cls, dicts))
        return self.execute(self.build_query(obj, options=opts, output=out), given=obj.filters)

    def live_query(self: _Host, table: str, timestamp: Any, **kwargs: Any) -> pd.DataFrame:
        """``query_table`` at a moment in time: rows present at ``timestamp``, root ids as of then."""
        if timestamp is None:
            raise no_live_timestamp(table, "query_table()")
        return self.query_table(table, timestamp=timestamp, **kwargs)  # type: ignore[attr-defined,no-any-return]

    def query_view(
        self: _Host,
        view_name: str,
        filter_in_dict: Mapping[str, Any] | None = None,
        filter_out_dict: Mapping[str, Any] | None = None,
        filter_equal_dict: Mapping[str, Any] | None = None,
        filter_greater_dict: Mapping[str, Any] | None = None,
        filter_less_dict: Mapping[str, Any] | None = None,
        filter_greater_equal_dict: Mapping[str, Any] | None = None,
        filter_less_equal_dict: Mapping[str, Any] | None = None,
        filter_spatial_dict: Mapping[str, Any] | None = None,
        filter_regex_dict: Mapping[str, Any] | None = None,
        **options: Unpack[_options.QueryKwargs],
    ) -> pd.DataFrame:
        """Query a view with filter dicts; same answers as ``client.views.<view>(...).query()``
        (the options are those of ``.query()``)."""
        dicts = {k: v for k, v in locals().items() if k.startswith("filter_")}
        opts, out = _options.parse(
            options, table=str(view_name), what="query_view", allowed=_QUERY_VIEW_ARGS[1:]
        )
        cls = self.filter_class(view_name, opts.materialization_version, view=True)
        obj = cls(**_classic_kwargs(cls, dicts))
        return self.execute(self.build_query(obj, options=opts, output=out), given=obj.filters)

    def synapse_query(
        self: _Host,
        pre_ids: Any = None,
        post_ids: Any = None,
        bounding_box: Any = None,
        bounding_box_column: str = "post_pt_position",
        *,
        remove_autapses: bool = True,
        include_zeros: bool = True,
        synapse_table: str | None = None,
        **options: Unpack[_options.QueryKwargs],
    ) -> pd.DataFrame:
        """Synapses by presynaptic / postsynaptic root id(s) and/or a bounding box.

        ``pre_ids``/``post_ids``: one root id or a list. ``remove_autapses`` drops synapses whose
        pre and post root ids are equal; ``include_zeros=False`` drops synapses with a root id of
        0 (outside the segmentation) on either side. The table defaults to the datastack's
        ``synapse_table``. The options are those of ``.query()``.
        """
        table = synapse_table if synapse_table is not None else self.info.get("synapse_table")
        if table is not None and not isinstance(table, str):
            raise UnknownTableError(
                f"{self.datastack}: a table name is a str, got synapse_table={_values.short(table)} "
                f"({type(table).__name__}); see client.get_tables()"
            )
        opts, out = _options.parse(
            options, table=str(table), what="synapse_query", allowed=_SYNAPSE_QUERY_ARGS[1:]
        )
        check_flags(str(table), remove_autapses=remove_autapses, include_zeros=include_zeros)
        if not table:
            raise QueryError(
                f"{self.datastack}: the datastack names no synapse_table; pass synapse_table='...'"
            )
        kw: dict[str, Any] = {}
        for col, ids in (("pre_pt_root_id", pre_ids), ("post_pt_root_id", post_ids)):
            ops: dict[str, Any] = {}
            if ids is not None:
                ops["in" if _values.is_membership(ids) else "=="] = ids
            if not include_zeros:
                ops["!="] = 0
            if ops:
                kw[col] = ops
        if bounding_box is not None:
            kw[f"{bounding_box_column}_bbox"] = bounding_box
        cls = self.filter_class(table, opts.materialization_version)
        obj = cls(**kw)
        q = self.build_query(obj, options=opts, output=out)
        if remove_autapses:
            q = attrs.evolve(
                q,
                predicates=(*q.predicates, Predicate(table, "pre_pt_root_id", "!=column", "post_pt_root_id")),
            )
        df = self.execute(q, given=obj.filters)
        if out.metadata and out.output == "pandas":
            df.attrs["remove_autapses"] = remove_autapses
            df.attrs["include_zeros"] = include_zeros
        return df


def _with_options(fn: Any, lead: int, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Give ``fn`` (explicit leading parameters, then ``**options``) the full signature users see
    in ``help()`` and Jupyter, with every option from its one definition; return its argument names."""
    params = list(inspect.signature(fn).parameters.values())[: lead + 1]
    sig = _options.signature(allowed, lead=params)
    fn.__signature__ = sig
    fn.__doc__ = inspect.cleandoc(fn.__doc__ or "") + "\n\n" + _options.docs(allowed)
    return tuple(sig.parameters)


_QUERY_TABLE_ARGS = _with_options(ClassicMixin.query_table, 11, _options.QUERY_OPTIONS)
_QUERY_VIEW_ARGS = _with_options(ClassicMixin.query_view, 10, _options.QUERY_OPTIONS)
_SYNAPSE_QUERY_ARGS = _with_options(ClassicMixin.synapse_query, 7, _options.QUERY_OPTIONS)


def _classic_kwargs(cls: type[TableFilter], dicts: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """CAVEclient filter dicts → the filter class's keyword arguments."""
    fields = introspect(cls).fields
    kw: dict[str, dict[str, Any]] = {}
    for dname, d in dicts.items():
        if d is None:
            continue
        if not isinstance(d, Mapping):
            raise QueryError(f"{cls.table_name}: {dname} must be a dict {{column: value}}, got {d!r}")
        for col, value in d.items():
            if dname == "filter_spatial_dict":
                key = col if str(col).endswith("_bbox") else f"{col}_bbox"
                if key not in fields and col in fields:
                    key = col
                kw.setdefault(key, {})["bbox"] = value
                continue
            op = _CLASSIC_OPS[dname]
            slot = kw.setdefault(col, {})
            if op in slot:
                raise QueryError(f"{cls.table_name}: column {col!r} is given twice for {op!r}")
            slot[op] = value
    out: dict[str, Any] = {}
    for col, ops in kw.items():
        if "bbox" in ops:
            out[col] = ops["bbox"]
        elif list(ops) == ["=="]:
            out[col] = ops["=="]
        elif list(ops) == ["in"]:
            if not _values.is_membership(ops["in"]):
                raise FilterValueError(
                    f"{cls.table_name}: filter_in_dict[{col!r}] must be a list, got {ops['in']!r}. "
                    f"Pass [{ops['in']!r}] or use filter_equal_dict",
                    table=cls.table_name,
                    column=col,
                )
            out[col] = ops["in"]
        else:
            out[col] = ops
    return out
