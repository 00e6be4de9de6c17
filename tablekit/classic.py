"""CAVEclient's dict API over tablekit's one pipeline (mixed into :class:`tablekit.Client`).

``query_table(filter_in_dict=…)``, ``query_view``, ``synapse_query`` and ``live_query`` translate
their filter dicts into the keyword filters of the same filter classes the DSL uses, so the DSL
and the dict API return identical frames for the same question.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import pandas as pd

from . import _values
from .errors import FilterValueError, QueryError, UnknownTableError
from .filters import TableFilter, check_flags, keywords_checked, no_live_timestamp
from .query import CAVE_FILTER_DICTS, Predicate

__all__ = ["ClassicMixin"]

#: CAVEclient's user-facing argument names → tablekit operators (``filter_out_dict`` is sent as
#: ``filter_notin_dict``; spatial boxes are handled apart)
_CLASSIC_OPS = {**CAVE_FILTER_DICTS, "filter_out_dict": "not in"}


class ClassicMixin:
    """The classic query methods of the client."""

    # provided by Client
    _version_or_default: Any
    _filter_class: Any
    _view_class: Any
    _run: Any
    info: Any
    datastack: Any

    @keywords_checked
    def query_table(
        self,
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
        select_columns: list[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
        split_positions: bool = False,
        desired_resolution: list[float] | None = None,
        materialization_version: int | None = None,
        timestamp: Any = None,
        get_counts: bool = False,
        random_sample: int | None = None,
        metadata: bool = True,
        merge_reference: bool = True,
        output: str = "pandas",
        allow_invalid_root_ids: bool = False,
        allow_missing_lookups: bool = False,
        complete: bool = True,
    ) -> pd.DataFrame:
        """Query a table with CAVEclient's filter dicts (``{column: value}``).

        Same engine and same answers as ``client.tables.<table>(...).query()``: each dict becomes
        the equivalent keyword filter (``filter_in_dict={"c": [..]}`` → ``c=[..]``,
        ``filter_greater_dict={"c": x}`` → ``c={">": x}``, ``filter_out_dict`` → ``{"not in": …}``,
        ``filter_spatial_dict={"pt_position": box}`` → ``pt_position_bbox=box``). A reference table
        is merged with its target (the reference table's clashing columns get ``_ref``) unless
        ``merge_reference=False``.
        """
        check_flags(str(table), merge_reference=merge_reference)
        v = self._version_or_default(materialization_version)
        cls = self._filter_class(table, v, merge_reference=merge_reference)
        kwargs = _classic_kwargs(cls, {k: v for k, v in locals().items() if k.startswith("filter_")})
        return cls(**kwargs).query(
            select_columns=select_columns,
            offset=offset,
            limit=limit,
            split_positions=split_positions,
            materialization_version=materialization_version,
            timestamp=timestamp,
            metadata=metadata,
            desired_resolution=desired_resolution,
            get_counts=get_counts,
            random_sample=random_sample,
            output=output,
            allow_invalid_root_ids=allow_invalid_root_ids,
            allow_missing_lookups=allow_missing_lookups,
            complete=complete,
        )

    def live_query(self, table: str, timestamp: Any, **kwargs: Any) -> pd.DataFrame:
        """``query_table`` at a moment in time: rows present at ``timestamp``, root ids as of then."""
        if timestamp is None:
            raise no_live_timestamp(table, "query_table()")
        return self.query_table(table, timestamp=timestamp, **kwargs)

    @keywords_checked
    def query_view(
        self,
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
        select_columns: list[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
        split_positions: bool = False,
        desired_resolution: list[float] | None = None,
        materialization_version: int | None = None,
        get_counts: bool = False,
        random_sample: int | None = None,
        metadata: bool = True,
        output: str = "pandas",
        complete: bool = True,
    ) -> pd.DataFrame:
        """Query a view with filter dicts; same answers as ``client.views.<view>(...).query()``."""
        v = self._version_or_default(materialization_version)
        cls = self._view_class(view_name, v)
        kwargs = _classic_kwargs(cls, {k: v for k, v in locals().items() if k.startswith("filter_")})
        return cls(**kwargs).query(
            select_columns=select_columns,
            offset=offset,
            limit=limit,
            split_positions=split_positions,
            materialization_version=materialization_version,
            metadata=metadata,
            desired_resolution=desired_resolution,
            get_counts=get_counts,
            random_sample=random_sample,
            output=output,
            complete=complete,
        )

    @keywords_checked
    def synapse_query(
        self,
        pre_ids: Any = None,
        post_ids: Any = None,
        bounding_box: Any = None,
        bounding_box_column: str = "post_pt_position",
        timestamp: Any = None,
        remove_autapses: bool = True,
        include_zeros: bool = True,
        limit: int | None = None,
        offset: int = 0,
        split_positions: bool = False,
        desired_resolution: list[float] | None = None,
        materialization_version: int | None = None,
        synapse_table: str | None = None,
        select_columns: list[str] | None = None,
        metadata: bool = True,
        output: str = "pandas",
        complete: bool = True,
    ) -> pd.DataFrame:
        """Synapses by presynaptic / postsynaptic root id(s) and/or a bounding box.

        ``pre_ids``/``post_ids``: one root id or a list. ``remove_autapses`` drops synapses whose
        pre and post root ids are equal; ``include_zeros=False`` drops synapses with a root id of
        0 (outside the segmentation) on either side. The table defaults to the datastack's
        ``synapse_table``.
        """
        table = synapse_table if synapse_table is not None else self.info.get("synapse_table")
        if table is not None and not isinstance(table, str):
            raise UnknownTableError(
                f"{self.datastack}: a table name is a str, got synapse_table={_values.short(table)} "
                f"({type(table).__name__}); see client.get_tables()"
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
        v = self._version_or_default(materialization_version)
        cls = self._filter_class(table, v)
        q = cls(**kw).to_query(
            select_columns=select_columns,
            offset=offset,
            limit=limit,
            materialization_version=materialization_version,
            timestamp=timestamp,
            desired_resolution=desired_resolution,
            complete=complete,
        )
        if remove_autapses:
            q = attrs.evolve(
                q,
                predicates=(*q.predicates, Predicate(table, "pre_pt_root_id", "!=column", "post_pt_root_id")),
            )
        df = self._run(
            q,
            layout=cls._layout,
            split_positions=split_positions,
            output=output,
            metadata=metadata,
            given=cls(**kw).filters,
        )
        if metadata and output == "pandas":
            df.attrs["remove_autapses"] = remove_autapses
            df.attrs["include_zeros"] = include_zeros
        return df


def _classic_kwargs(cls: type[TableFilter], dicts: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """CAVEclient filter dicts → the filter class's keyword arguments."""
    kw: dict[str, dict[str, Any]] = {}
    for dname, d in dicts.items():
        if d is None:
            continue
        if not isinstance(d, Mapping):
            raise QueryError(f"{cls.table_name}: {dname} must be a dict {{column: value}}, got {d!r}")
        for col, value in d.items():
            if dname == "filter_spatial_dict":
                key = col if str(col).endswith("_bbox") else f"{col}_bbox"
                if key not in cls._fields and col in cls._fields:
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
