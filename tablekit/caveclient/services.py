"""``client.info``, ``client.chunkedgraph`` and ``client.schema`` of the drop-in CAVEclient:
CAVEclient 8.2.1's method names, signatures and return shapes over :class:`tablekit.Client`."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np

from ..client import Client
from ..errors import FilterValueError, UnsupportedError, VersionError

__all__ = ["ChunkedGraphClient", "InfoClient", "SchemaClient"]


def _refuse(service: str, method: str, name: str, value: Any, why: str) -> None:
    raise UnsupportedError(f"{service}.{method}({name}={value!r}) is not offered by tablekit: {why}")


class InfoClient:
    """CAVEclient's ``client.info``: the datastack's info. On a local datastack the sources and
    the viewer site are placeholders (``None``) unless the datastack's info names them."""

    _KEYS = ("viewer_site", "image_source", "segmentation_source", "synapse_segmentation_source")

    def __init__(self, client: Client, server: str | None):
        self._tk = client
        self._server = server

    def _check_ds(self, datastack_name: Any, method: str) -> None:
        if datastack_name is not None and datastack_name != self._tk.datastack:
            raise UnsupportedError(
                f"info.{method}(datastack_name={datastack_name!r}): this client serves "
                f"{self._tk.datastack!r}; make another CAVEclient({datastack_name!r})"
            )

    def get_datastack_info(
        self, datastack_name: str | None = None, use_stored: bool = True, image_mirror: str | None = None
    ) -> dict[str, Any]:
        """The datastack's info dict (CAVE's keys: ``synapse_table``, ``soma_table``,
        ``segmentation_source``, ``viewer_site``, ``viewer_resolution_x/y/z``, ``aligned_volume``…)."""
        self._check_ds(datastack_name, "get_datastack_info")
        if image_mirror is not None:
            _refuse("info", "get_datastack_info", "image_mirror", image_mirror, "image mirrors are not known")
        if not use_stored:
            self._tk.refresh()
        info = dict(self._tk.info)
        for k in self._KEYS:
            info.setdefault(k, None)
        res = info.get("viewer_resolution")
        if res is not None and "viewer_resolution_x" not in info:
            info["viewer_resolution_x"], info["viewer_resolution_y"], info["viewer_resolution_z"] = list(res)
        for k in ("viewer_resolution_x", "viewer_resolution_y", "viewer_resolution_z"):
            info.setdefault(k, None)
        av = info.get("aligned_volume")
        if not isinstance(av, dict):
            name = str(av or self._tk.datastack)
            info["aligned_volume"] = {"name": name, "image_source": info.get("image_source")}
        return info

    def _get(
        self, key: str, method: str, datastack_name: Any, use_stored: bool, format_for: str = "raw"
    ) -> Any:
        self._check_ds(datastack_name, method)
        if format_for != "raw":
            _refuse("info", method, "format_for", format_for, "only 'raw' (the path as the info names it)")
        return self.get_datastack_info(use_stored=use_stored).get(key)

    def get_aligned_volume_info(
        self, datastack_name: str | None = None, use_stored: bool = True, image_mirror: str | None = None
    ) -> dict[str, Any]:
        self._check_ds(datastack_name, "get_aligned_volume_info")
        return dict(
            self.get_datastack_info(use_stored=use_stored, image_mirror=image_mirror)["aligned_volume"]
        )

    @property
    def aligned_volume_name(self) -> str:
        return str(self.get_datastack_info()["aligned_volume"]["name"])

    def get_datastacks(self) -> list[str]:
        """The datastacks this client knows: its own."""
        return [self._tk.datastack]

    def viewer_site(self, datastack_name: str | None = None, use_stored: bool = True) -> Any:
        return self._get("viewer_site", "viewer_site", datastack_name, use_stored)

    def segmentation_source(
        self, datastack_name: str | None = None, use_stored: bool = True, format_for: str = "raw"
    ) -> Any:
        return self._get("segmentation_source", "segmentation_source", datastack_name, use_stored, format_for)

    def synapse_segmentation_source(
        self, datastack_name: str | None = None, use_stored: bool = True, format_for: str = "raw"
    ) -> Any:
        return self._get(
            "synapse_segmentation_source",
            "synapse_segmentation_source",
            datastack_name,
            use_stored,
            format_for,
        )

    def image_source(
        self,
        datastack_name: str | None = None,
        use_stored: bool = True,
        format_for: str = "raw",
        image_mirror: str | None = None,
    ) -> Any:
        if image_mirror is not None:
            _refuse("info", "image_source", "image_mirror", image_mirror, "image mirrors are not known")
        self._check_ds(datastack_name, "image_source")
        if format_for != "raw":
            _refuse(
                "info", "image_source", "format_for", format_for, "only 'raw' (the path as the info names it)"
            )
        return self.get_aligned_volume_info(use_stored=use_stored).get("image_source")

    def viewer_resolution(self, datastack_name: str | None = None, use_stored: bool = True) -> np.ndarray:
        """``np.array([x, y, z])`` (nm per voxel of the viewer)."""
        self._check_ds(datastack_name, "viewer_resolution")
        d = self.get_datastack_info(use_stored=use_stored)
        return np.array([d["viewer_resolution_x"], d["viewer_resolution_y"], d["viewer_resolution_z"]])

    def local_server(self, datastack_name: str | None = None, use_stored: bool = True) -> Any:
        self._check_ds(datastack_name, "local_server")
        return self.get_datastack_info(use_stored=use_stored).get("local_server", self._server)

    def refresh_stored_data(self) -> None:
        self._tk.refresh()

    def __getattr__(self, name: str) -> Any:
        if name in _INFO_OUT_OF_SCOPE:
            raise UnsupportedError(
                f"info.{name} is not offered by tablekit; use caveclient.CAVEclient for info.{name}"
            )
        raise AttributeError(f"info has no attribute {name!r}")


def _ts(value: Any, method: str, name: str) -> _dt.datetime | None:
    """A timestamp argument: ``None``, or an aware datetime (naive ones are refused, as everywhere in tablekit)."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime) and value.tzinfo is None:
        raise VersionError(
            f"chunkedgraph.{method}({name}={value.isoformat()}): a naive datetime is refused (CAVE times "
            "are UTC); pass datetime(..., tzinfo=timezone.utc)"
        )
    return value  # type: ignore[no-any-return]


class ChunkedGraphClient:
    """CAVEclient's ``client.chunkedgraph`` for the questions about roots, supervoxels and lineage
    that tablekit's roots API and segmentation history answer; the rest raise
    :class:`UnsupportedError` naming the CAVEclient method."""

    def __init__(self, client: Client, server: str | None):
        self._tk = client
        self._server = server

    # ------------------------------------------------------------------ roots
    def is_latest_roots(self, root_ids: Any, timestamp: _dt.datetime | None = None) -> np.ndarray:
        return self._tk.is_latest_roots(root_ids, timestamp=_ts(timestamp, "is_latest_roots", "timestamp"))

    def get_latest_roots(
        self,
        root_id: int,
        timestamp: _dt.datetime | None = None,
        timestamp_future: _dt.datetime | None = None,
    ) -> np.ndarray:
        if timestamp_future is not None:  # CAVEclient: deprecated alias of timestamp
            if timestamp is not None:
                raise VersionError("chunkedgraph.get_latest_roots: pass timestamp, not also timestamp_future")
            timestamp = timestamp_future
        return self._tk.get_latest_roots(root_id, timestamp=_ts(timestamp, "get_latest_roots", "timestamp"))

    def suggest_latest_roots(
        self,
        root_id: int,
        timestamp: _dt.datetime | None = None,
        stop_layer: int | None = None,
        return_all: bool = False,
        return_fraction_overlap: bool = False,
    ) -> Any:
        """The root at ``timestamp`` holding most of ``root_id``'s supervoxels (CAVEclient's rule:
        by overlap, descending; on a tie the larger id first); ``return_all`` gives every
        overlapping root in that order, ``return_fraction_overlap`` the fractions too. Overlap is
        counted in supervoxels (CAVEclient counts the chunks of ``stop_layer``, default
        ``n_layers - 4``; only ``stop_layer=1`` or ``None`` is offered); root 0 is never suggested."""
        if stop_layer not in (None, 1):
            _refuse(
                "chunkedgraph",
                "suggest_latest_roots",
                "stop_layer",
                stop_layer,
                "overlap is counted in supervoxels (stop_layer=1)",
            )
        _ts(timestamp, "suggest_latest_roots", "timestamp")
        leaves = self.get_leaves(root_id)
        if len(leaves) == 0:
            raise FilterValueError(f"chunkedgraph.suggest_latest_roots: root id {root_id} has no supervoxels")
        now = self.get_roots(leaves, timestamp=timestamp).astype(np.int64)
        ids, counts = np.unique(now[now != 0], return_counts=True)
        if len(ids) == 0:
            raise FilterValueError(f"root id {root_id} has no successor with supervoxels at that time")
        order = sorted(range(len(ids)), key=lambda k: (-int(counts[k]), -int(ids[k])))
        ids, frac = ids[order], counts[order] / len(leaves)
        if return_all:
            return (ids, frac) if return_fraction_overlap else ids
        return (int(ids[0]), float(frac[0])) if return_fraction_overlap else int(ids[0])

    def get_root_timestamps(
        self, root_ids: Any, latest: bool = False, timestamp: _dt.datetime | None = None
    ) -> np.ndarray:
        """When each root id was created: ``np.array`` of aware UTC datetimes, in the order given."""
        if latest:
            _refuse("chunkedgraph", "get_root_timestamps", "latest", latest, "only creation times are known")
        if timestamp is not None:
            _refuse(
                "chunkedgraph",
                "get_root_timestamps",
                "timestamp",
                timestamp,
                "it only matters with latest=True",
            )
        return np.array(self._tk.get_root_timestamps(root_ids))

    def get_past_ids(
        self,
        root_ids: Any,
        timestamp_past: _dt.datetime | None = None,
        timestamp_future: _dt.datetime | None = None,
    ) -> dict[str, Any]:
        """``{"past_id_map": {id: [past ids]}, "future_id_map": {past id: id}}`` (int keys; a past
        id whose supervoxels are split between several roots at ``timestamp_future`` is left out)."""
        r = self._tk.get_past_ids(
            root_ids,
            timestamp_past=_ts(timestamp_past, "get_past_ids", "timestamp_past"),
            timestamp_future=_ts(timestamp_future, "get_past_ids", "timestamp_future"),
        )
        past = {int(a): [int(x) for x in b] for a, b in r["past_id_map"].items()}
        future = {}
        for a, b in r["future_id_map"].items():  # the one root holding all of a past id's supervoxels
            b = [int(x) for x in b] if isinstance(b, (list, tuple, np.ndarray)) else [int(b)]
            if len(b) != 1:
                raise AssertionError(f"get_past_ids: past id {a} maps to {b}, not to one root")
            future[int(a)] = b[0]
        return {"past_id_map": past, "future_id_map": future}

    def get_lineage_graph(
        self,
        root_id: int,
        timestamp_past: _dt.datetime | None = None,
        timestamp_future: _dt.datetime | None = None,
        as_nx_graph: bool = False,
        exclude_links_to_future: bool = False,
        exclude_links_to_past: bool = False,
    ) -> Any:
        """The lineage around ``root_id``, limited to the edits between the two timestamps (tablekit's
        rule: no node created after ``timestamp_future``, whatever ``exclude_links_to_*`` say), as a
        node-link dict (``nodes``: ``id``, ``timestamp`` in POSIX seconds; ``links``: ``source``,
        ``target``) or, with ``as_nx_graph=True``, a ``networkx.DiGraph``."""
        for name, value in (
            ("exclude_links_to_future", exclude_links_to_future),
            ("exclude_links_to_past", exclude_links_to_past),
        ):
            if not isinstance(value, bool):
                raise FilterValueError(
                    f"chunkedgraph.get_lineage_graph({name}={value!r}): pass True or False"
                )
        g = self._tk.get_lineage_graph(
            root_id,
            timestamp_past=_ts(timestamp_past, "get_lineage_graph", "timestamp_past"),
            timestamp_future=_ts(timestamp_future, "get_lineage_graph", "timestamp_future"),
        )
        out = {
            "directed": True,
            "multigraph": False,
            "graph": {},
            "nodes": [
                {
                    "id": int(n["id"]),
                    "timestamp": None
                    if n["timestamp"] is None
                    else _dt.datetime.fromisoformat(n["timestamp"]).timestamp(),
                }
                for n in g["nodes"]
            ],
            "links": [{"source": int(e["source"]), "target": int(e["target"])} for e in g["links"]],
        }
        if not as_nx_graph:
            return out
        try:
            import networkx as nx
        except ImportError:
            raise UnsupportedError(
                "chunkedgraph.get_lineage_graph(as_nx_graph=True) needs networkx: pip install networkx"
            ) from None
        graph = nx.DiGraph()
        for n in out["nodes"]:
            graph.add_node(n["id"], timestamp=n["timestamp"])
        graph.add_edges_from((e["source"], e["target"]) for e in out["links"])
        return graph

    # ------------------------------------------------------------------ supervoxels
    def get_roots(
        self, supervoxel_ids: Any, timestamp: _dt.datetime | None = None, stop_layer: int | None = None
    ) -> np.ndarray:
        """The root id of each supervoxel at ``timestamp`` (default now): ``np.uint64`` array."""
        if stop_layer is not None:
            _refuse(
                "chunkedgraph", "get_roots", "stop_layer", stop_layer, "only roots (no chunkedgraph layers)"
            )
        ts = self._at(timestamp, "get_roots")
        sv = np.asarray(supervoxel_ids, dtype=np.int64).ravel()
        roots = self._tk.segmentation_history().roots_at(sv, ts)
        return np.asarray(roots).astype(np.uint64)

    def get_root_id(
        self, supervoxel_id: int, timestamp: _dt.datetime | None = None, level2: bool = False
    ) -> np.int64:
        if level2:
            _refuse("chunkedgraph", "get_root_id", "level2", level2, "there are no level 2 ids")
        return np.int64(self.get_roots([int(supervoxel_id)], timestamp=timestamp)[0])

    def get_leaves(self, root_id: int, bounds: Any = None, stop_layer: int | None = None) -> np.ndarray:
        """The supervoxels of ``root_id``: ``np.int64`` array."""
        if bounds is not None:
            _refuse("chunkedgraph", "get_leaves", "bounds", "...", "supervoxel positions are not known")
        if stop_layer is not None:
            _refuse("chunkedgraph", "get_leaves", "stop_layer", stop_layer, "only supervoxels (layer 1)")
        return np.asarray(self._tk.segmentation_history().supervoxels_of(int(root_id)), dtype=np.int64)

    def _at(self, timestamp: Any, method: str) -> _dt.datetime:
        ts = _ts(timestamp, method, "timestamp")
        if ts is None:
            return _dt.datetime.now(_dt.timezone.utc)
        from .._values import normalize_timestamp

        try:
            return normalize_timestamp(ts)
        except FilterValueError as e:
            raise VersionError(str(e)) from None

    def __getattr__(self, name: str) -> Any:
        if name in _CG_OUT_OF_SCOPE:
            raise UnsupportedError(
                f"chunkedgraph.{name} is not offered by tablekit (it answers is_latest_roots, get_latest_roots, "
                "suggest_latest_roots, get_root_timestamps, get_past_ids, get_lineage_graph, get_roots, "
                f"get_root_id, get_leaves); use caveclient.CAVEclient for chunkedgraph.{name}"
            )
        raise AttributeError(f"chunkedgraph has no attribute {name!r}")


#: CAVEclient 8.2.1's ChunkedGraphClient members tablekit does not offer (yet: issue 17)
_CG_OUT_OF_SCOPE = frozenset(
    "base_resolution cloudvolume_path do_merge execute_split find_path get_change_log get_children "
    "get_contact_sites get_delta_roots get_leaves_many get_merge_log get_minimal_covering_nodes "
    "get_oldest_timestamp get_operation_details get_original_roots get_subgraph get_tabular_change_log "
    "get_user_operations is_valid_nodes level2_chunk_graph preview_split remesh_level2_chunks "
    "segmentation_info table_name undo_operation".split()
)
#: CAVEclient 8.2.1's InfoServiceClient and SchemaClient members tablekit does not offer
_INFO_OUT_OF_SCOPE = frozenset(
    "aligned_volume_id annotation_endpoint get_aligned_volume_info_by_id get_aligned_volumes "
    "get_datastacks_by_aligned_volume get_image_mirror_names get_image_mirrors image_cloudvolume "
    "segmentation_cloudvolume".split()
)
_SCHEMA_OUT_OF_SCOPE = frozenset("schema_definition schema_definition_all schema_definition_multi".split())


class SchemaClient:
    """CAVEclient's ``client.schema``: the schema documents tablekit reads."""

    def __init__(self, client: Client):
        self._tk = client

    def get_schemas(self) -> list[str]:
        """The schema types of the datastack's tables."""
        return sorted({str(m.get("schema_type") or m.get("schema")) for m in self._tables()})

    def _tables(self) -> list[dict[str, Any]]:
        return [self._tk.get_table_metadata(t) for t in self._tk.get_tables()]

    def __getattr__(self, name: str) -> Any:
        if name in _SCHEMA_OUT_OF_SCOPE:
            raise UnsupportedError(
                f"schema.{name} is not offered by tablekit (only get_schemas); use caveclient.CAVEclient for schema.{name}"
            )
        raise AttributeError(f"schema has no attribute {name!r}")
