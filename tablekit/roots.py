"""The roots API: how root ids change with proofreading (mixed into :class:`tablekit.Client`).

A root id names a segment between two edits. An edit (merge or split) retires root ids and creates
new ones; a root id is never reused. "Valid at T" means created at or before T and not retired by T.
"""

from __future__ import annotations

import datetime as _dt
import numbers
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _time, _values
from .errors import FilterValueError, UnsupportedError, VersionError

__all__ = ["RootsMixin", "check_roots_valid"]


def _ids(ids: Any, what: str = "root ids") -> list[int]:
    """Root ids as ints, refused before any request unless each is an int in [0, 2**63)."""
    if isinstance(ids, np.ndarray) and ids.ndim == 0:
        ids = ids.item()
    if isinstance(ids, numbers.Integral) and not isinstance(ids, bool):
        ids = [ids]
    if isinstance(ids, (str, bytes, dict)) or not isinstance(ids, Iterable):
        raise FilterValueError(
            f"{what} must be an int or a list of ints, got {_values.short(ids)}; pass e.g. [864691135000000001]"
        )
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise FilterValueError(
                f"{what} must be ints, got {_values.short(i)} ({type(i).__name__}); pass int ids, e.g. int(x)"
            )
        if not 0 <= int(i) < 2**63:
            raise FilterValueError(
                f"{what}: {int(i)} is not a root id (root ids are integers from 0 to 2**63 - 1); check the id"
            )
        out.append(int(i))
    return out


def _one_id(root_id: Any) -> int:
    """The one root id a method takes (an int, or a list holding one)."""
    ids = _ids(root_id, "root id")
    if len(ids) != 1:
        raise FilterValueError(
            f"this method takes one root id, got {len(ids)} ({_values.short(root_id)}); pass one int, or call "
            "it once per id"
        )
    return ids[0]


def _status(info: dict[int, tuple[_dt.datetime, _dt.datetime | None]], root: int, ts: _dt.datetime) -> str:
    if root == 0:
        return "valid"
    if root not in info:
        return "unknown"
    created, retired = info[root]
    if created > ts:
        return "too recent"
    if retired is not None and retired <= ts:
        return "expired"
    return "valid"


def _known_root_info(history: Any, roots: list[int]) -> dict[int, Any]:
    """``history.root_info(roots)`` without the ids the history does not know. A chunkedgraph
    refuses a request naming an unknown id (the local history leaves it out): the request is split
    in halves until the unknown ids are alone, so both backends classify them alike."""
    if not roots:
        return {}
    try:
        return history.root_info(roots)
    except FilterValueError:  # tablekit's error for ids not in the segmentation history
        if len(roots) == 1:
            return {}
        mid = len(roots) // 2
        return {**_known_root_info(history, roots[:mid]), **_known_root_info(history, roots[mid:])}


def check_roots_valid(
    history: Any, table: str, column: str, roots: Iterable[int], ts: _dt.datetime
) -> dict[str, list[int]]:
    """Classify root ids at ``ts``: ``{"expired": [...], "too recent": [...], "unknown": [...]}`` (invalid only)."""
    roots = list(roots)
    info = _known_root_info(history, sorted({r for r in roots if r != 0}))
    bad: dict[str, list[int]] = {}
    for r in roots:
        s = _status(info, r, ts)
        if s != "valid":
            bad.setdefault(s, []).append(r)
    return bad


class RootsMixin:
    """Root-id methods of the client (need a backend with a segmentation history)."""

    _backend: Any

    def segmentation_history(self) -> Any:
        """The backend's segmentation history (``roots_at``, ``root_info``, ``edges`` …: what the
        roots API and ``tablekit serve``'s chunkedgraph answers read); :class:`UnsupportedError` for
        a backend without one (its :class:`~tablekit.backends.base.Capabilities`)."""
        h = self._backend.history if self._backend.capabilities.history else None
        if h is None:
            raise UnsupportedError(
                f"the {self._backend.name} backend has no segmentation history for the roots API"
            )
        return h

    def _ts(self, timestamp: Any, default_now: bool = True) -> _dt.datetime:
        if timestamp is None:
            return _dt.datetime.now(_dt.timezone.utc)
        return _time.moment(timestamp, error=VersionError)

    def get_root_timestamps(self, root_ids: Any) -> list[_dt.datetime]:
        """When each root id was created (aware UTC datetimes), in the order given."""
        ids = _ids(root_ids)
        info = self.segmentation_history().root_info(ids)
        missing = [r for r in ids if r not in info]
        if missing:
            raise FilterValueError(
                f"root ids {missing} are not in the segmentation history of {self._backend.datastack}"
            )
        return [info[r][0] for r in ids]

    def is_latest_roots(self, root_ids: Any, timestamp: Any = None) -> np.ndarray:
        """For each root id: is it valid (current) at ``timestamp`` (default now)?"""
        ids = _ids(root_ids)
        ts = self._ts(timestamp)
        h = self.segmentation_history()
        if hasattr(h, "is_latest"):  # the backend answers it directly (chunkedgraph)
            return np.asarray(h.is_latest(ids, ts), dtype=bool)
        info = h.root_info(ids)
        return np.array([_status(info, r, ts) == "valid" and r != 0 for r in ids], dtype=bool)

    def _successors(self, root_id: int, ts: _dt.datetime) -> tuple[np.ndarray, np.ndarray]:
        h = self.segmentation_history()
        sv = h.supervoxels_of(root_id)
        if len(sv) == 0:
            raise FilterValueError(
                f"root id {root_id} is not in the segmentation history of {self._backend.datastack}"
            )
        return sv, h.roots_at(sv, ts)

    def get_latest_roots(self, root_id: int, timestamp: Any = None) -> np.ndarray:
        """The root ids at ``timestamp`` (default now) that descend from ``root_id`` (itself if still valid)."""
        rid = _one_id(root_id)
        ts = self._ts(timestamp)
        h = self.segmentation_history()
        created, _ = h.root_info([rid]).get(rid, (None, None))
        if created is not None and created > ts:
            raise VersionError(
                f"root id {rid} was created at {created.isoformat()}, after {ts.isoformat()}; "
                "use get_past_ids for earlier moments"
            )
        if hasattr(h, "latest_roots"):  # the backend answers it directly (chunkedgraph)
            return np.asarray(h.latest_roots(rid, ts), dtype=np.int64)
        _, roots = self._successors(rid, ts)
        return np.unique(roots[roots != 0])

    def suggest_latest_roots(self, root_id: int, timestamp: Any = None) -> int:
        """The root id at ``timestamp`` that inherited most of ``root_id``'s supervoxels (on a tie,
        the smallest id)."""
        rid = _one_id(root_id)
        _, roots = self._successors(rid, self._ts(timestamp))
        counts = Counter(int(r) for r in roots if r != 0)
        if not counts:
            raise FilterValueError(f"root id {rid} has no successor with supervoxels at that time")
        return max(counts.items(), key=lambda kv: (kv[1], -kv[0]))[0]

    def get_past_ids(
        self, root_ids: Any, timestamp_past: Any = None, timestamp_future: Any = None
    ) -> dict[str, Any]:
        """Map root ids to the root ids their supervoxels had at ``timestamp_past`` (default: the
        first version's time). Returns CAVE's shape: ``{"past_id_map": {id: [past ids]},
        "future_id_map": {past id: [id]}}``, as the chunkedgraph means them: a past id maps to the one
        root holding all its supervoxels at ``timestamp_future`` (default: now), and is left out
        when they are split between several."""
        ids = _ids(root_ids)
        if timestamp_past is None:
            timestamp_past = min(m["time_stamp"] for m in self._backend.versions_metadata(expired=True))
        ts = self._ts(timestamp_past)
        h = self.segmentation_history()
        if hasattr(h, "past_id_mapping"):  # the backend answers it directly (chunkedgraph)
            return h.past_id_mapping(ids, ts, self._ts(timestamp_future))
        past, future = h.id_maps(ids, ts, self._ts(timestamp_future))
        return {"past_id_map": past, "future_id_map": future}

    def get_lineage_graph(
        self, root_id: int, timestamp_past: Any = None, timestamp_future: Any = None
    ) -> dict[str, Any]:
        """The edit history around ``root_id`` as a node-link graph:
        ``{"nodes": [{"id", "timestamp"}], "links": [{"source", "target", "timestamp"}]}``
        (source = older root): the ancestors and descendants of ``root_id``. Limited to edits between the two timestamps (default: all)."""
        rid = _one_id(root_id)
        lo = None if timestamp_past is None else self._ts(timestamp_past)
        hi = None if timestamp_future is None else self._ts(timestamp_future)
        h = self.segmentation_history()
        if hasattr(h, "lineage_graph"):  # the backend answers it directly (chunkedgraph)
            return h.lineage_graph(rid, lo, hi)
        edges = [e for e in h.edges() if (lo is None or e[2] >= lo) and (hi is None or e[2] <= hi)]
        fwd: dict[int, list[tuple[int, _dt.datetime]]] = {}
        back: dict[int, list[tuple[int, _dt.datetime]]] = {}
        for a, b, t in edges:
            fwd.setdefault(a, []).append((b, t))
            back.setdefault(b, []).append((a, t))
        seen = {rid}
        for graph in (fwd, back):  # descendants, then ancestors
            stack = [rid]
            while stack:
                n = stack.pop()
                for m, _ in graph.get(n, []):
                    if m not in seen:
                        seen.add(m)
                        stack.append(m)
        info = h.root_info(sorted(seen))
        nodes = [{"id": n, "timestamp": info[n][0].isoformat() if n in info else None} for n in sorted(seen)]
        links = [
            {"source": a, "target": b, "timestamp": t.isoformat()}
            for a, b, t in sorted(edges)
            if a in seen and b in seen
        ]
        return {"nodes": nodes, "links": links}
