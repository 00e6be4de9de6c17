"""The chunkedgraph (``/segmentation``) endpoints that live queries and the roots API need.

Answered from the datastack's segmentation history through tablekit's roots API
(:class:`tablekit.roots.RootsMixin` on the client, and the history primitives of
:class:`~tablekit.backends.local.LocalBackend`). Timestamps arrive as UNIX epoch seconds (floats)
in the query string; ids as JSON lists or, for ``roots_binary``, as raw little-endian uint64.

| endpoint | answer |
|---|---|
| ``POST …/is_latest_roots?timestamp=`` ``{"node_ids"}`` | ``{"is_latest": [bool]}`` |
| ``POST …/roots_binary?timestamp=`` raw uint64 | raw uint64 roots |
| ``POST …/root_timestamps?latest=&timestamp=`` ``{"node_ids"}`` | ``{"timestamp": [epoch s]}`` |
| ``GET  …/past_id_mapping?timestamp_past=&timestamp_future=`` ``{"root_ids"}`` (a GET with a body) | ``{"past_id_map": {"id": [ids]}, "future_id_map": {"id": id}}`` |
| ``POST …/lineage_graph_multiple?timestamp_past=&timestamp_future=`` ``{"root_ids"}`` | node-link graph |
| ``GET  …/node/{root_id}/leaves?stop_layer=&bounds=&int64_as_str=`` | ``{"leaf_ids": [supervoxel ids]}`` |
| ``GET  {local}/segmentation/table/{pcg}/info`` | the graph's layout: ``{"graph": {"n_layers": 2}, …}`` |

The chunkedgraph of a datastack has two layers: supervoxels (layer 1) and root ids (layer 2), so
``leaves`` answers ``stop_layer=1`` (the default) only, and refuses ``bounds`` (the history holds no
supervoxel positions). Like PyChunkedGraph's, it takes no timestamp: the supervoxels of a root id
never change. A node id that is not a uint64, or not a root id of the history, is an error; errors
are the 500 ``{code, message, traceback}`` of every endpoint here, except a request body that
cannot be read (not JSON, or ids that are not integers in [0, 2**63)): HTTP 400 ``{code, message}``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _time
from ..errors import FilterValueError
from ._wire import WireError, parse_bool, parse_int

__all__ = ["PCG_API_VERSIONS", "PCG_N_LAYERS", "PCG_SERVER_VERSION", "BadRequest", "Chunkedgraph"]

PCG_API_VERSIONS = [0, 1]
#: a PyChunkedGraph version that satisfies every version gate of CAVEclient 8.2.1
PCG_SERVER_VERSION = "3.0.5"
#: the layers of a datastack's chunkedgraph: 1 = supervoxels, 2 = root ids (nothing in between)
PCG_N_LAYERS = 2
_UINT = re.compile(r"[0-9]{1,20}")


def _epoch(params: Mapping[str, str], name: str, default: float | None) -> _dt.datetime | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            return None
        value = default
    else:
        try:
            value = float(raw)
        except ValueError:
            raise WireError(f"Timestamp parameter {name} is not a valid unix timestamp") from None
    return _dt.datetime.fromtimestamp(value, _dt.timezone.utc)


class BadRequest(WireError):
    """A request body the chunkedgraph cannot read (not JSON, ids that are not ids): HTTP 400
    ``{code, message}``, the client's mistake, not the server's."""


def _ids(payload: Any, key: str) -> list[int]:
    if not isinstance(payload, Mapping) or key not in payload:
        raise BadRequest(f"the request body must be a JSON object with {key!r}, e.g. {{{key!r}: [id, ...]}}")
    raw = payload[key]
    if not isinstance(raw, list):
        raise BadRequest(f"{key} must be a list of ids, got {raw!r}")
    out = []
    for x in raw:
        if isinstance(x, bool) or not isinstance(x, (int, str)) or not _UINT.fullmatch(str(x)):
            raise BadRequest(f"{key}: {x!r} is not an id; pass ids as integers (or strings of digits)")
        if int(x) >= 2**63:
            raise BadRequest(
                f"{key}: {x} is outside the ids of this datastack (integers from 0 to 2**63 - 1); check the id"
            )
        out.append(int(x))
    return out


def _node_id(raw: str) -> int:
    """A node id from the URL path: decimal digits of a uint64."""
    if not _UINT.fullmatch(raw or "") or int(raw) >= 2**64:
        raise WireError(f"node id {raw!r} is not a uint64 id; pass a root id in decimal digits")
    return int(raw)


def _load(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None


class Chunkedgraph:
    """The chunkedgraph answers of one client (its segmentation history)."""

    def __init__(self, client: Any, quirks: bool = False):
        self.client = client
        self.quirks = quirks

    @property
    def history(self) -> Any:
        return self.client.segmentation_history()

    def is_latest_roots(self, params: Mapping[str, str], body: bytes) -> dict[str, Any]:
        ids = _ids(_load(body), "node_ids")
        ts = _epoch(params, "timestamp", time.time())
        return {"is_latest": [bool(x) for x in self.client.is_latest_roots(ids, timestamp=ts)]}

    def roots_binary(self, params: Mapping[str, str], body: bytes) -> bytes:
        if len(body) % 8:
            raise WireError(
                "roots_binary: the body must be a little-endian uint64 array (a multiple of 8 bytes)"
            )
        sv = np.frombuffer(body, dtype="<u8").astype(np.int64)
        ts = _epoch(params, "timestamp", time.time())
        roots = self.history.roots_at(sv, ts) if len(sv) else np.zeros(0, dtype=np.int64)
        return np.asarray(roots, dtype=np.int64).astype("<u8").tobytes()

    def root_timestamps(self, params: Mapping[str, str], body: bytes) -> dict[str, Any]:
        ids = _ids(_load(body), "node_ids")
        latest = parse_bool(params.get("latest"), False, "latest")
        ts = _epoch(params, "timestamp", time.time())
        assert ts is not None
        info = self.history.root_info(ids)
        missing = [r for r in ids if r not in info]
        if missing:
            raise FilterValueError(
                f"root ids {missing} are not in the segmentation history of {self.client.datastack}"
            )
        out = []
        for r in ids:
            created, retired = info[r]
            if latest:
                # the last moment the root was valid: its retirement, or the query time if still valid
                t = retired if retired is not None and retired <= ts else ts
            else:
                t = created
            out.append(t.timestamp())
        return {"timestamp": out}

    def past_id_mapping(self, params: Mapping[str, str], body: bytes) -> dict[str, Any]:
        ids = _ids(_load(body), "root_ids")
        past = _epoch(params, "timestamp_past", 0.0)
        future = _epoch(params, "timestamp_future", time.time())
        past_map, future_map = self.history.id_maps(ids, past, future)
        return {
            "past_id_map": {str(k): v for k, v in past_map.items()},
            "future_id_map": {str(k): v[0] for k, v in future_map.items()},
        }

    def lineage_graph(self, params: Mapping[str, str], body: bytes) -> dict[str, Any]:
        ids = _ids(_load(body), "root_ids")
        past = _epoch(params, "timestamp_past", None)
        future = _epoch(params, "timestamp_future", None)
        exclude = parse_bool(params.get("exclude_links_to_future"), False, "exclude_links_to_future")
        nodes: dict[int, dict[str, Any]] = {}
        links: dict[tuple[int, int], dict[str, Any]] = {}
        for r in dict.fromkeys(ids):
            g = self.client.get_lineage_graph(r, timestamp_past=past, timestamp_future=future)
            if self.quirks and future is not None and not exclude:
                g = self._links_to_future(r, past, g)
            for n in g["nodes"]:
                t = n.get("timestamp")
                nodes[int(n["id"])] = {
                    "id": int(n["id"]),
                    "timestamp": None if t is None else _time.parse_utc(t).timestamp(),
                }
            for e in g["links"]:
                links[(int(e["source"]), int(e["target"]))] = {
                    "source": int(e["source"]),
                    "target": int(e["target"]),
                    "timestamp": _time.parse_utc(e["timestamp"]).timestamp(),
                }
        return {
            "directed": True,
            "multigraph": False,
            "graph": {},
            "nodes": [nodes[k] for k in sorted(nodes)],
            "links": [links[k] for k in sorted(links)],
        }

    def _links_to_future(self, root: int, past: _dt.datetime | None, g: dict[str, Any]) -> dict[str, Any]:
        """cave_quirks: PyChunkedGraph's lineage graph without ``exclude_links_to_future=true`` also
        holds the successors (created after ``timestamp_future``) of the roots it reached, and the
        links to them."""
        whole = self.client.get_lineage_graph(root, timestamp_past=past, timestamp_future=None)
        have = {int(n["id"]) for n in g["nodes"]}
        extra = [e for e in whole["links"] if int(e["source"]) in have and int(e["target"]) not in have]
        targets = {int(e["target"]) for e in extra}
        return {
            "nodes": [*g["nodes"], *(n for n in whole["nodes"] if int(n["id"]) in targets)],
            "links": [*g["links"], *extra],
        }

    def info(self, params: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """The segmentation info: only what this chunkedgraph knows (its layers, its API versions).

        CAVEclient reads ``graph.n_layers`` to choose the layer of ``suggest_latest_roots``
        (``n_layers - 4``, at least 1): with two layers it compares supervoxels."""
        return {
            "@type": "neuroglancer_multiscale_volume",
            "type": "segmentation",
            "data_type": "uint64",
            "num_channels": 1,
            "app": {"supported_api_versions": PCG_API_VERSIONS},
            "graph": {"n_layers": PCG_N_LAYERS},
        }

    def leaves(self, params: Mapping[str, str], body: bytes, node_id: str) -> dict[str, Any]:
        """The supervoxels of a root id (sorted): ``{"leaf_ids": [...]}``; strings with ``int64_as_str``."""
        node = _node_id(node_id)
        layer = parse_int(params.get("stop_layer"), "stop_layer")
        if layer is not None and layer != 1:
            raise WireError(
                f"stop_layer={layer} is not supported: this chunkedgraph has {PCG_N_LAYERS} layers, "
                "supervoxels (layer 1) under root ids, so the leaves of a root id are its supervoxels; "
                "leave stop_layer out or pass stop_layer=1"
            )
        if "bounds" in params:
            raise WireError(
                "bounds is not supported: the segmentation history of this datastack holds no supervoxel "
                "positions, so leaves cannot be limited to a box; leave bounds out to get every supervoxel"
            )
        as_str = parse_bool(params.get("int64_as_str"), False, "int64_as_str")
        sv = self.history.supervoxels_of(node) if 0 < node < 2**63 else []
        if not len(sv):
            raise FilterValueError(
                f"node id {node} is not a root id in the segmentation history of {self.client.datastack}; "
                "check the id (the root ids of this datastack are in its tables' *_root_id columns)"
            )
        ids = [int(x) for x in sv]
        return {"leaf_ids": [str(x) for x in ids] if as_str else ids}
