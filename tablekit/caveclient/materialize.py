"""``client.materialize`` of the drop-in CAVEclient: CAVEclient 8.2.1's MaterializationClient
method names, signatures and defaults over :class:`tablekit.Client`'s public API."""

from __future__ import annotations

import contextlib
import datetime as _dt
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd

from ..client import Client
from ..errors import QueryError, UnsupportedError

__all__ = ["MaterializeClient"]

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

#: CAVEclient MaterializationClient methods tablekit does not offer, and what to use instead
_OUT_OF_SCOPE = {
    "homepage": "the materialization service's web page; open the server's /materialize/ in a browser",
    "ingest_annotation_table": "annotation upload; use caveclient.CAVEclient",
    "lookup_supervoxel_ids": "triggering supervoxel lookups on the server; use caveclient.CAVEclient",
    "get_unique_string_values": "use the table's query and pandas .unique() on the column",
    "neuroglancer_annotation_path": "neuroglancer precomputed annotations; use caveclient.CAVEclient",
    "neuroglancer_annotation_info": "neuroglancer precomputed annotations; use caveclient.CAVEclient",
    "neuroglancer_segprop_path": "neuroglancer segment properties; use caveclient.CAVEclient",
    "neuroglancer_segprop_info": "neuroglancer segment properties; use caveclient.CAVEclient",
    "map_filters": "tablekit maps root-id filters to a live query's time itself; pass them to live_query",
}


@contextlib.contextmanager
def _warnings(log_warning: bool) -> Iterator[None]:
    """``log_warning=False``: the call's warnings (the server's notices tablekit passes on) are not
    shown, as CAVEclient then does not log the server's Warning header."""
    if log_warning:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _cave_order(df: Any, split_positions: bool) -> Any:
    """Split positions in CAVEclient's column order: the other columns as they come, then each point
    (by name) as ``P_supervoxel_id, P_root_id, P_position_x/_y/_z``. A merged reference table keeps
    tablekit's order (docs/migrating-from-caveclient.md)."""
    if not split_positions or not isinstance(df, pd.DataFrame):
        return df
    cols = [str(c) for c in df.columns]
    if any(c.endswith("_ref") for c in cols):
        return df
    points = sorted({c[: -len("_position_x")] for c in cols if c.endswith("_position_x")})
    grouped = [
        c
        for p in points
        for c in (
            f"{p}_supervoxel_id",
            f"{p}_root_id",
            f"{p}_position_x",
            f"{p}_position_y",
            f"{p}_position_z",
        )
        if c in cols
    ]
    order = [c for c in cols if c not in set(grouped)] + grouped
    return df if order == cols else df[order]


class MaterializeClient:
    """CAVEclient's ``client.materialize`` over a :class:`tablekit.Client`."""

    def __init__(self, client: Client, *, desired_resolution: Any = None):
        self._tk = client
        self._desired_resolution = desired_resolution

    # ------------------------------------------------------------------ helpers
    def _check_ds(self, datastack_name: Any, method: str) -> None:
        if datastack_name is not None and datastack_name != self._tk.datastack:
            raise UnsupportedError(
                f"materialize.{method}(datastack_name={datastack_name!r}): this client serves "
                f"{self._tk.datastack!r}; make another CAVEclient({datastack_name!r}) for that datastack"
            )

    def _resolution(self, desired_resolution: Any) -> Any:
        return self._desired_resolution if desired_resolution is None else desired_resolution

    @staticmethod
    def _refuse(method: str, **args: Any) -> None:
        for name, (value, fine) in args.items():
            if value != fine:
                raise UnsupportedError(
                    f"materialize.{method}({name}={value!r}) is not offered by tablekit: {_WHY[name]}"
                )

    @staticmethod
    def _options(**kw: Any) -> dict[str, Any]:
        """Options for tablekit, leaving out CAVEclient's defaults (``None``, and ``offset=None``)."""
        return {k: v for k, v in kw.items() if v is not None}

    # ------------------------------------------------------------------ versions
    @property
    def datastack_name(self) -> str:
        return self._tk.datastack

    @property
    def version(self) -> int:
        """The default version (set it to pin every later call; ``None`` for the most recent)."""
        return self._tk.version

    @version.setter
    def version(self, x: int | None) -> None:
        self._tk.version = x  # type: ignore[assignment]

    def most_recent_version(self, datastack_name: str | None = None) -> int:
        """The newest valid version."""
        self._check_ds(datastack_name, "most_recent_version")
        return max(self._tk.get_versions())

    def get_versions(self, datastack_name: str | None = None, expired: bool = False) -> list[int]:
        self._check_ds(datastack_name, "get_versions")
        return list(self._tk.get_versions(expired=expired))

    def get_version_metadata(
        self, version: int | None = None, datastack_name: str | None = None
    ) -> dict[str, Any]:
        self._check_ds(datastack_name, "get_version_metadata")
        return self._tk.get_version_metadata(version)

    def get_versions_metadata(
        self, datastack_name: str | None = None, expired: bool = False
    ) -> list[dict[str, Any]]:
        self._check_ds(datastack_name, "get_versions_metadata")
        return self._tk.get_versions_metadata(expired=expired)

    def get_timestamp(self, version: int | None = None, datastack_name: str | None = None) -> _dt.datetime:
        self._check_ds(datastack_name, "get_timestamp")
        return self._tk.get_timestamp(version)

    # ------------------------------------------------------------------ tables and views
    def get_tables(self, datastack_name: str | None = None, version: int | None = None) -> list[str]:
        self._check_ds(datastack_name, "get_tables")
        return list(self._tk.get_tables(version))

    def get_annotation_count(
        self, table_name: str, datastack_name: str | None = None, version: int | None = None
    ) -> int:
        self._check_ds(datastack_name, "get_annotation_count")
        return int(self._tk.get_annotation_count(table_name, version))

    def get_table_metadata(
        self,
        table_name: str,
        datastack_name: str | None = None,
        version: int | None = None,
        log_warning: bool = True,
    ) -> dict[str, Any]:
        self._check_ds(datastack_name, "get_table_metadata")
        with _warnings(log_warning):
            return self._tk.get_table_metadata(table_name, version)

    def get_tables_metadata(
        self, datastack_name: str | None = None, version: int | None = None, log_warning: bool = True
    ) -> list[dict[str, Any]]:
        """Every table's metadata (a list of dicts, as CAVEclient returns)."""
        self._check_ds(datastack_name, "get_tables_metadata")
        with _warnings(log_warning):
            return [self._tk.get_table_metadata(t, version) for t in self._tk.get_tables(version)]

    def get_views(self, version: int | None = None, datastack_name: str | None = None) -> list[str]:
        self._check_ds(datastack_name, "get_views")
        return list(self._tk.get_views(version))

    def get_view_metadata(
        self,
        view_name: str,
        materialization_version: int | None = None,
        datastack_name: str | None = None,
        log_warning: bool = True,
    ) -> dict[str, Any]:
        self._check_ds(datastack_name, "get_view_metadata")
        with _warnings(log_warning):
            return self._tk.get_view_metadata(view_name, materialization_version)

    def get_view_schema(
        self,
        view_name: str,
        materialization_version: int | None = None,
        datastack_name: str | None = None,
        log_warning: bool = True,
    ) -> dict[str, Any]:
        self._check_ds(datastack_name, "get_view_schema")
        with _warnings(log_warning):
            return self._tk.get_view_schema(view_name, materialization_version)

    def get_view_schemas(
        self,
        materialization_version: int | None = None,
        datastack_name: str | None = None,
        log_warning: bool = True,
    ) -> dict[str, Any]:
        self._check_ds(datastack_name, "get_view_schemas")
        with _warnings(log_warning):
            return self._tk.get_view_schemas(materialization_version)

    @property
    def tables(self) -> Any:
        """The content-aware tables interface (``tables.<name>(col=...).query()``)."""
        return self._tk.tables

    @property
    def views(self) -> Any:
        """The content-aware views interface."""
        return self._tk.views

    # ------------------------------------------------------------------ queries
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
        select_columns: Any = None,
        offset: int | None = None,
        limit: int | None = None,
        datastack_name: str | None = None,
        return_df: bool = True,
        split_positions: bool = False,
        materialization_version: int | None = None,
        timestamp: _dt.datetime | None = None,
        metadata: bool = True,
        merge_reference: bool = True,
        desired_resolution: Any = None,
        get_counts: bool = False,
        random_sample: int | None = None,
        log_warning: bool = True,
    ) -> pd.DataFrame:
        """CAVEclient's ``query_table``; a ``timestamp`` makes it a live query (as in CAVEclient)."""
        self._check_ds(datastack_name, "query_table")
        self._refuse("query_table", return_df=(return_df, True))
        dicts = {k: v for k, v in locals().items() if k in _DICTS and v is not None}
        opts = self._options(
            select_columns=select_columns,
            offset=offset,
            limit=limit,
            materialization_version=materialization_version,
            timestamp=timestamp,
            desired_resolution=self._resolution(desired_resolution),
            random_sample=random_sample,
        )
        with _warnings(log_warning):
            df = self._tk.query_table(
                table,
                **dicts,
                merge_reference=merge_reference,
                split_positions=split_positions,
                metadata=metadata,
                get_counts=get_counts,
                **opts,
            )
            return _cave_order(df, split_positions)

    def live_query(
        self,
        table: str,
        timestamp: _dt.datetime,
        filter_in_dict: Mapping[str, Any] | None = None,
        filter_out_dict: Mapping[str, Any] | None = None,
        filter_equal_dict: Mapping[str, Any] | None = None,
        filter_greater_dict: Mapping[str, Any] | None = None,
        filter_less_dict: Mapping[str, Any] | None = None,
        filter_greater_equal_dict: Mapping[str, Any] | None = None,
        filter_less_equal_dict: Mapping[str, Any] | None = None,
        filter_spatial_dict: Mapping[str, Any] | None = None,
        filter_regex_dict: Mapping[str, Any] | None = None,
        select_columns: Any = None,
        offset: int | None = None,
        limit: int | None = None,
        datastack_name: str | None = None,
        split_positions: bool = False,
        post_filter: bool = True,
        metadata: bool = True,
        merge_reference: bool = True,
        desired_resolution: Any = None,
        random_sample: int | None = None,
        log_warning: bool = True,
    ) -> pd.DataFrame:
        """CAVEclient's ``live_query``: the table at ``timestamp`` with root ids as of then."""
        self._check_ds(datastack_name, "live_query")
        self._refuse("live_query", post_filter=(post_filter, True))
        dicts = {k: v for k, v in locals().items() if k in _DICTS and v is not None}
        opts = self._options(
            select_columns=select_columns,
            offset=offset,
            limit=limit,
            desired_resolution=self._resolution(desired_resolution),
            random_sample=random_sample,
        )
        with _warnings(log_warning):
            df = self._tk.live_query(
                table,
                timestamp,
                **dicts,
                merge_reference=merge_reference,
                split_positions=split_positions,
                metadata=metadata,
                **opts,
            )
            return _cave_order(df, split_positions)

    def live_live_query(
        self,
        table: str,
        timestamp: _dt.datetime,
        joins: Any = None,
        filter_in_dict: Mapping[str, Any] | None = None,
        filter_out_dict: Mapping[str, Any] | None = None,
        filter_equal_dict: Mapping[str, Any] | None = None,
        filter_greater_dict: Mapping[str, Any] | None = None,
        filter_less_dict: Mapping[str, Any] | None = None,
        filter_greater_equal_dict: Mapping[str, Any] | None = None,
        filter_less_equal_dict: Mapping[str, Any] | None = None,
        filter_spatial_dict: Mapping[str, Any] | None = None,
        filter_regex_dict: Mapping[str, Any] | None = None,
        select_columns: Any = None,
        offset: int | None = None,
        limit: int | None = None,
        datastack_name: str | None = None,
        split_positions: bool = False,
        metadata: bool = True,
        suffixes: Any = None,
        desired_resolution: Any = None,
        allow_missing_lookups: bool = False,
        allow_invalid_root_ids: bool = False,
        random_sample: int | None = None,
        log_warning: bool = True,
    ) -> pd.DataFrame:
        """CAVEclient's ``live_live_query``: filter dicts are keyed by table
        (``{table: {column: value}}``); ``select_columns`` a list or ``{table: [columns]}``. A
        reference table is merged with its target as the tables interface does."""
        self._check_ds(datastack_name, "live_live_query")
        self._refuse("live_live_query", joins=(joins, None), suffixes=(suffixes, None))
        dicts = {}
        for name in _DICTS:
            d = locals()[name]
            if d is None:
                continue
            if not isinstance(d, Mapping) or set(d) - {table}:
                raise QueryError(
                    f"live_live_query({table!r}, {name}={d!r}): filters are keyed by table name, "
                    f"{{{table!r}: {{column: value}}}}; other tables need joins=, which tablekit does not offer here"
                )
            if d.get(table):
                dicts[name] = d[table]
        if isinstance(select_columns, Mapping):
            if set(select_columns) - {table}:
                raise QueryError(
                    f"live_live_query({table!r}, select_columns={select_columns!r}): only {table!r} is queried"
                )
            select_columns = select_columns.get(table)
        opts = self._options(
            select_columns=select_columns,
            offset=offset,
            limit=limit,
            desired_resolution=self._resolution(desired_resolution),
            random_sample=random_sample,
        )
        with _warnings(log_warning):
            df = self._tk.live_query(
                table,
                timestamp,
                **dicts,
                split_positions=split_positions,
                metadata=metadata,
                allow_missing_lookups=allow_missing_lookups,
                allow_invalid_root_ids=allow_invalid_root_ids,
                **opts,
            )
            return _cave_order(df, split_positions)

    def join_query(
        self,
        tables: Any,
        filter_in_dict: Mapping[str, Any] | None = None,
        filter_out_dict: Mapping[str, Any] | None = None,
        filter_equal_dict: Mapping[str, Any] | None = None,
        filter_greater_dict: Mapping[str, Any] | None = None,
        filter_less_dict: Mapping[str, Any] | None = None,
        filter_greater_equal_dict: Mapping[str, Any] | None = None,
        filter_less_equal_dict: Mapping[str, Any] | None = None,
        filter_spatial_dict: Mapping[str, Any] | None = None,
        filter_regex_dict: Mapping[str, Any] | None = None,
        select_columns: Any = None,
        offset: int | None = None,
        limit: int | None = None,
        suffixes: Any = None,
        datastack_name: str | None = None,
        return_df: bool = True,
        split_positions: bool = False,
        materialization_version: int | None = None,
        metadata: bool = True,
        desired_resolution: Any = None,
        random_sample: int | None = None,
        log_warning: bool = True,
    ) -> pd.DataFrame:
        """CAVEclient's ``join_query`` for the join tablekit offers: ``tables=[[table, "target_id"],
        [target, "id"]]`` (a table joined with the table its ``target_id`` points to). ``target``'s
        columns keep their names and ``table``'s clashing ones get ``_ref`` (tablekit's rule, not
        CAVEclient's ``suffixes``); filter dicts are keyed by table."""
        self._check_ds(datastack_name, "join_query")
        self._refuse("join_query", return_df=(return_df, True), suffixes=(suffixes, None))
        table, target = _reference_join(tables)
        tk = self._tk
        if tk.spec(table, materialization_version).reference_table != target:
            raise UnsupportedError(
                f"join_query({tables!r}): {table!r} is not a reference table of {target!r}; tablekit joins "
                "a reference table with its target only (query both tables and pandas.merge them)"
            )
        clash = set(tk.spec(target, materialization_version).column_names)
        dicts: dict[str, dict[str, Any]] = {}
        for name in _DICTS:
            d = locals()[name]
            if d is None:
                continue
            if not isinstance(d, Mapping) or set(d) - {table, target}:
                raise QueryError(
                    f"join_query({name}={d!r}): filters are keyed by the joined tables' names {table!r}, {target!r}"
                )
            flat: dict[str, Any] = {}
            for t, cols in d.items():
                for c, v in (cols or {}).items():
                    flat[f"{c}_ref" if t == table and c in clash and c != "target_id" else c] = v
            dicts[name] = flat
        if isinstance(select_columns, Mapping):
            select_columns = [
                f"{c}_ref" if t == table and c in clash else c for t, cs in select_columns.items() for c in cs
            ]
        opts = self._options(
            select_columns=select_columns,
            offset=offset,
            limit=limit,
            materialization_version=materialization_version,
            desired_resolution=self._resolution(desired_resolution),
            random_sample=random_sample,
        )
        with _warnings(log_warning):
            df = tk.query_table(table, **dicts, split_positions=split_positions, metadata=metadata, **opts)
            return _cave_order(df, split_positions)

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
        select_columns: Any = None,
        offset: int | None = None,
        limit: int | None = None,
        datastack_name: str | None = None,
        return_df: bool = True,
        split_positions: bool = False,
        materialization_version: int | None = None,
        metadata: bool = True,
        desired_resolution: Any = None,
        get_counts: bool = False,
        random_sample: int | None = None,
    ) -> pd.DataFrame:
        self._check_ds(datastack_name, "query_view")
        self._refuse("query_view", return_df=(return_df, True))
        dicts = {k: v for k, v in locals().items() if k in _DICTS and v is not None}
        opts = self._options(
            select_columns=select_columns,
            offset=offset,
            limit=limit,
            materialization_version=materialization_version,
            desired_resolution=self._resolution(desired_resolution),
            random_sample=random_sample,
        )
        return self._tk.query_view(
            view_name,
            **dicts,
            split_positions=split_positions,
            metadata=metadata,
            get_counts=get_counts,
            **opts,
        )

    def synapse_query(
        self,
        pre_ids: Any = None,
        post_ids: Any = None,
        bounding_box: Any = None,
        bounding_box_column: str = "post_pt_position",
        timestamp: _dt.datetime | None = None,
        remove_autapses: bool = True,
        include_zeros: bool = True,
        limit: int | None = None,
        offset: int | None = None,
        split_positions: bool = False,
        desired_resolution: Any = None,
        materialization_version: int | None = None,
        synapse_table: str | None = None,
        datastack_name: str | None = None,
        metadata: bool = True,
    ) -> pd.DataFrame:
        self._check_ds(datastack_name, "synapse_query")
        opts = self._options(
            timestamp=timestamp,
            limit=limit,
            offset=offset,
            desired_resolution=self._resolution(desired_resolution),
            materialization_version=materialization_version,
        )
        df = self._tk.synapse_query(
            pre_ids,
            post_ids,
            bounding_box,
            bounding_box_column,
            remove_autapses=remove_autapses,
            include_zeros=include_zeros,
            synapse_table=synapse_table,
            split_positions=split_positions,
            metadata=metadata,
            **opts,
        )
        return _cave_order(df, split_positions)

    def __getattr__(self, name: str) -> Any:
        why = _OUT_OF_SCOPE.get(name)
        if why:
            raise UnsupportedError(f"materialize.{name} is not offered by tablekit: {why}")
        raise AttributeError(f"materialize has no attribute {name!r}")


_WHY = {
    "return_df": "answers are always DataFrames (return_df=False gives the server's raw body in CAVEclient)",
    "post_filter": "tablekit always filters a live answer exactly (post_filter=False gives unfiltered rows)",
    "joins": "live joins are not offered; query each table and pandas.merge them",
    "suffixes": "a reference table's clashing columns get '_ref' (tablekit's one rule); rename them after",
}


def _reference_join(tables: Any) -> tuple[str, str]:
    ok = (
        isinstance(tables, (list, tuple))
        and len(tables) == 2
        and all(isinstance(t, (list, tuple)) and len(t) == 2 for t in tables)
    )
    if ok:
        (a, ca), (b, cb) = tables
        if ca == "target_id" and cb == "id":
            return str(a), str(b)
        if cb == "target_id" and ca == "id":
            return str(b), str(a)
    raise UnsupportedError(
        f"join_query(tables={tables!r}): tablekit joins a reference table with its target only, "
        "tables=[[table, 'target_id'], [target, 'id']]; query both tables and pandas.merge them"
    )
