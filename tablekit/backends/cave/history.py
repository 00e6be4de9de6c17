"""The roots API over a CAVE chunkedgraph (protocol notes §1.8), for :class:`~tablekit.backends.cave.CaveBackend`.

:class:`CaveHistory` has the shape :mod:`tablekit.roots` needs from a backend's ``history``:
``root_info`` and ``roots_at`` come from the chunkedgraph endpoints ``root_timestamps``,
``is_latest_roots`` and ``roots_binary``; ``supervoxels_of`` (and with it
``suggest_latest_roots``) from ``node/{root_id}/leaves``. ``get_past_ids``,
``get_lineage_graph`` and ``get_latest_roots`` use the chunkedgraph's own ``past_id_mapping``
and ``lineage_graph_multiple``. Only the lineage of every root (``edges``) has no endpoint.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..._values import short
from ...errors import FilterValueError, ServerError, UnsupportedError
from .decode import malformed, parse_time
from .http import HTTPSession

__all__ = ["CaveHistory"]


class CaveHistory:
    """Root-id history from a chunkedgraph (protocol §1.8), in the shape the roots API needs.

    ``root_info`` uses ``root_timestamps`` (first and last moment of each root) and
    ``is_latest_roots``; ``roots_at`` uses ``roots_binary`` (supervoxel 0 is never sent);
    :meth:`supervoxels_of` and :meth:`supervoxels_at` use ``node/{id}/leaves`` (supervoxels, layer
    1); :meth:`past_id_mapping`, :meth:`lineage_graph` and :meth:`latest_roots` call the
    chunkedgraph. Only :meth:`edges` raises :class:`~tablekit.errors.UnsupportedError`.
    """

    def __init__(self, http: HTTPSession, url: str, pool: cf.ThreadPoolExecutor, chunk: int = 100_000):
        self._http = http
        self.url = url
        self._pool = pool
        self._chunk = chunk

    def __repr__(self) -> str:
        return f"<CaveHistory {self.url}>"

    def _post_json(self, path: str, params: Any, body: Any) -> Any:
        resp = self._http.request("POST", f"{self.url}/{path}", params=params, json=body, idempotent=True)
        return _object(resp)

    def _times(self, future: cf.Future[Any], n: int) -> list[_dt.datetime | None]:
        """The ``timestamp`` list of a ``root_timestamps`` answer, parsed (``n`` of them)."""
        url = f"{self.url}/root_timestamps"
        raw = future.result().get("timestamp")
        if not isinstance(raw, list) or len(raw) != n:
            raise malformed(url, f"expected a timestamp list of {n} entries, got {short(raw)}")
        try:
            return [parse_time(t) for t in raw]
        except (ValueError, TypeError, OverflowError, OSError):
            raise malformed(url, f"the timestamps {short(raw)} are not all times") from None

    def root_info(self, root_ids: Sequence[int]) -> dict[int, tuple[_dt.datetime, _dt.datetime | None]]:
        """``{root: (created, retired or None)}`` (0 is never sent): ``root_timestamps`` gives the first
        and (``latest=True``) the last moment of each root, ``is_latest_roots`` whether it is current.
        The three requests go out together."""
        ids = sorted({int(r) for r in root_ids if int(r) != 0})
        if not ids:
            return {}
        moment = _dt.datetime.now(_dt.timezone.utc)
        now = str(moment.timestamp())
        body = {"node_ids": ids}
        first_f = self._pool.submit(
            self._post_json, "root_timestamps", {"latest": "False", "timestamp": now}, body
        )
        last_f = self._pool.submit(
            self._post_json, "root_timestamps", {"latest": "True", "timestamp": now}, body
        )
        try:
            current = self.is_latest(ids, moment)
            created = self._times(first_f, len(ids))
            last = self._times(last_f, len(ids))
        except ServerError as e:
            if e.status == 200:  # a malformed answer, not an error about the ids
                raise
            raise _unknown_ids(e, ids, self.url) from e
        return {
            r: (c, None if cur else t)  # type: ignore[misc]
            for r, c, t, cur in zip(ids, created, last, current, strict=True)
            if c is not None
        }

    def is_latest(self, root_ids: Sequence[int], ts: _dt.datetime) -> np.ndarray:
        """For each id, is it a current root at ``ts``: one ``is_latest_roots`` request (0 is never
        sent and is never current). An id the chunkedgraph does not know is not current, as in
        PyChunkedGraph and the local engine."""
        ids = [int(r) for r in root_ids]
        asked = sorted({r for r in ids if r != 0})
        if not asked:
            return np.zeros(len(ids), dtype=bool)
        answer = self._post_json("is_latest_roots", {"timestamp": str(ts.timestamp())}, {"node_ids": asked})
        flags = answer.get("is_latest") if isinstance(answer, dict) else None
        if not isinstance(flags, list) or len(flags) != len(asked):
            raise ServerError(
                f"{self.url}/is_latest_roots: the answer has no is_latest list of {len(asked)} flags; the "
                "datastack's segmentation source is not a PyChunkedGraph tablekit can read"
            )
        current = {r for r, f in zip(asked, flags, strict=True) if f}
        return np.array([r in current for r in ids], dtype=bool)

    def roots_at(self, supervoxel_ids: Sequence[int] | np.ndarray, ts: _dt.datetime) -> np.ndarray:
        """The root of each supervoxel at ``ts`` (``0`` for supervoxel 0, which is never sent)."""
        sv = np.asarray(supervoxel_ids, dtype=np.int64)
        out = np.zeros(len(sv), dtype=np.int64)
        uniq = np.unique(sv[sv != 0])
        if len(uniq) == 0:
            return out
        params = {"timestamp": str(ts.timestamp())}

        def one(chunk: np.ndarray) -> np.ndarray:
            resp = self._http.request(
                "POST",
                f"{self.url}/roots_binary",
                params=params,
                data=chunk.astype("<u8").tobytes(),
                headers={"Content-Type": "application/octet-stream"},
                idempotent=True,  # a lookup
            )
            roots = np.frombuffer(resp.content, dtype="<u8").astype(np.int64)
            if len(roots) != len(chunk):
                raise ServerError(f"{self.url}/roots_binary: {len(roots)} roots for {len(chunk)} supervoxels")
            return roots

        chunks = [uniq[i : i + self._chunk] for i in range(0, len(uniq), self._chunk)]
        roots = np.concatenate(list(self._pool.map(one, chunks)) if len(chunks) > 1 else [one(chunks[0])])
        nz = sv != 0
        out[nz] = roots[np.searchsorted(uniq, sv[nz])]
        return out

    def supervoxels_of(self, root_id: int) -> np.ndarray:
        """The supervoxels of ``root_id`` (sorted; empty for 0): ``node/{root_id}/leaves`` at layer 1.
        A root id the chunkedgraph does not know is its error (a real deployment may answer none)."""
        rid = int(root_id)
        if rid == 0:
            return np.zeros(0, dtype=np.int64)
        try:
            resp = self._http.request("GET", f"{self.url}/node/{rid}/leaves", params={"stop_layer": 1})
        except ServerError as e:
            raise _unknown_ids(e, [rid], self.url) from e
        data = _object(resp)
        leaves = data.get("leaf_ids") if isinstance(data, dict) else None
        if not isinstance(leaves, list):
            raise ServerError(
                f"{self.url}/node/{rid}/leaves: the answer has no leaf_ids list; the datastack's "
                "segmentation source is not a PyChunkedGraph tablekit can read"
            )
        try:
            return np.unique(np.array([int(x) for x in leaves], dtype=np.int64))
        except (TypeError, ValueError, OverflowError):
            raise ServerError(
                f"{self.url}/node/{rid}/leaves: leaf_ids are not int64 ids; the datastack's segmentation "
                "source is not a PyChunkedGraph tablekit can read"
            ) from None

    def supervoxels_at(self, root_ids: Sequence[int], ts: _dt.datetime) -> np.ndarray:
        """The supervoxels whose root at ``ts`` is one of ``root_ids``: the leaves of those valid then
        (a root's supervoxels never change while it is valid)."""
        info = self.root_info(root_ids)
        valid = [r for r, (c, x) in info.items() if c <= ts and (x is None or x > ts)]
        parts = list(self._pool.map(self.supervoxels_of, valid))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def edges(self) -> list[tuple[int, int, _dt.datetime]]:
        raise UnsupportedError(
            "the lineage of every root id: the CAVE chunkedgraph API has no endpoint for it; "
            "get_lineage_graph asks lineage_graph_multiple for the roots it needs"
        )

    # -- higher-level answers the chunkedgraph gives directly (used by tablekit.roots when present)
    def past_id_mapping(
        self, root_ids: Sequence[int], ts_past: _dt.datetime, ts_future: _dt.datetime
    ) -> dict[str, dict[int, list[int]]]:
        """``past_id_mapping`` (a GET with a JSON body): ``{"past_id_map": {id: [past ids]},
        "future_id_map": {past id: [ids]}}`` with int keys."""
        resp = self._http.request(
            "GET",
            f"{self.url}/past_id_mapping",
            params={"timestamp_past": ts_past.timestamp(), "timestamp_future": ts_future.timestamp()},
            json={"root_ids": [int(r) for r in root_ids]},
        )
        data = _object(resp)

        def ints(m: Any) -> dict[int, list[int]]:
            return {
                int(k): [int(x) for x in (v if isinstance(v, list) else [v])] for k, v in (m or {}).items()
            }

        try:
            return {
                "past_id_map": ints(data.get("past_id_map")),
                "future_id_map": ints(data.get("future_id_map")),
            }
        except (ValueError, TypeError, AttributeError):
            raise malformed(resp.url, f"the id maps are not {{id: [ids]}} objects: {short(data)}") from None

    def lineage_graph(
        self, root_id: int, ts_past: _dt.datetime | None, ts_future: _dt.datetime | None
    ) -> dict[str, Any]:
        """``lineage_graph_multiple`` for one root, in tablekit's shape (ISO timestamps)."""
        params: dict[str, Any] = {}
        if ts_past is not None:
            params["timestamp_past"] = ts_past.timestamp()
        if ts_future is not None:
            # without it PyChunkedGraph also returns the successors created after timestamp_future
            # (CAVEclient sends it too); nodes after it are dropped below whatever the server does
            params["timestamp_future"] = ts_future.timestamp()
            params["exclude_links_to_future"] = "True"
        g = self._post_json("lineage_graph_multiple", params, {"root_ids": [int(root_id)]})

        def iso(t: Any) -> str | None:
            return None if t is None else _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc).isoformat()

        try:
            nodes = [{"id": int(n["id"]), "timestamp": iso(n.get("timestamp"))} for n in g.get("nodes", [])]
            when = {n["id"]: n["timestamp"] for n in nodes}
            links = [
                {
                    "source": int(e["source"]),
                    "target": int(e["target"]),
                    "timestamp": iso(e["timestamp"])
                    if e.get("timestamp") is not None
                    else when.get(int(e["target"])),
                }
                for e in g.get("links", [])
            ]
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError):
            raise malformed(
                f"{self.url}/lineage_graph_multiple", f"not a node-link graph of ids and times: {short(g)}"
            ) from None
        if ts_future is not None:
            late = {
                n["id"]
                for n in nodes
                if n["timestamp"] is not None and parse_time(n["timestamp"]) > ts_future
            }
            nodes = [n for n in nodes if n["id"] not in late]
            links = [e for e in links if e["source"] not in late and e["target"] not in late]
        return {
            "nodes": sorted(nodes, key=lambda n: n["id"]),
            "links": sorted(links, key=lambda e: (e["source"], e["target"])),
        }

    def latest_roots(self, root_id: int, ts: _dt.datetime) -> np.ndarray:
        """The descendants of ``root_id`` valid at ``ts``: the leaves of its lineage up to ``ts``."""
        g = self.lineage_graph(root_id, None, ts)
        later = {root_id}
        links = [(e["source"], e["target"]) for e in g["links"]]
        changed = True
        while changed:  # descendants only, not the ancestors the graph also holds
            changed = False
            for a, b in links:
                if a in later and b not in later:
                    later.add(b)
                    changed = True
        has_child = {a for a, b in links if a in later and b in later}
        return np.array(sorted(later - has_child), dtype=np.int64)


def _object(resp: Any) -> dict[str, Any]:
    """A chunkedgraph answer's JSON object, or the error for an answer that is not one."""
    try:
        data = resp.json()
    except ValueError:
        raise malformed(resp.url, f"not JSON ({short(resp.content[:60])})") from None
    if not isinstance(data, dict):
        raise malformed(resp.url, f"expected a JSON object, got {short(data)}")
    return data


def _unknown_ids(e: ServerError, ids: Sequence[int], url: str) -> Exception:
    """A chunkedgraph error about the ids asked (a 4xx, or a message that names one of them) → the
    local engine's error for ids not in the segmentation history; any other error is itself."""
    said = e.message or ""
    named = [i for i in ids if str(i) in said]
    if e.status is None or not (400 <= e.status < 500 or named):
        return e
    which = f"root id {named[0]}" if len(named) == 1 else f"root ids {named or list(ids)}"
    return FilterValueError(
        f"{which} {'is' if len(named) == 1 else 'are'} not in the segmentation history of {url} "
        f"(HTTP {e.status}: {said or 'no message'}); check the ids, or the datastack they come from"
    )
