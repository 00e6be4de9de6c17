"""The segmentation history of a local datastack: which supervoxel belonged to which root, when.

Three primitives answer every root-id question (the client builds the roots API on them):

* :meth:`History.root_info` — when each root id was created and retired (``None``: still current);
* :meth:`History.roots_at` — the root of each supervoxel at a moment;
* :meth:`History.supervoxels_of` — the supervoxels a root id was made of.

The history is read where the engine keeps it: given a ``source`` (the local engine's own
connection and its native DuckDB copy of the history files, which its live queries read too),
each question reads that copy; the roots' creation and retirement are aggregated for the roots
asked about only. Without one (no native-copy cache), the files are loaded once into an
in-memory DuckDB table. Either way queries bind their values as parameters.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
from collections.abc import Callable, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from .lockdown import lock_down

__all__ = ["History"]


class History:
    """Root-id history over ``segmentation/history/*.parquet`` (see docs/datastack-format.md)."""

    def __init__(
        self,
        files: Sequence[str],
        source: Callable[[], tuple[duckdb.DuckDBPyConnection, str] | None] | None = None,
    ):
        """``source()``: a connection that holds the history and the name of the relation holding
        it, asked once (``None``: there is none; the files are loaded here)."""
        self._files = list(files)
        self._source = source
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._h = "h"  # the relation queried: this class's own table, or the source's

    def _roots(self) -> str:
        """The relation of (root_id, created, retired) for the roots in ``q``."""
        if self._h == "h":
            return "(SELECT r.* FROM roots r JOIN q USING (root_id))"
        return (
            "(SELECT root_id, min(valid_from) AS created, CASE WHEN bool_or(valid_to IS NULL) THEN NULL "
            f"ELSE max(valid_to) END AS retired FROM {self._h} JOIN q USING (root_id) GROUP BY root_id)"
        )

    def _connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._con is None and self._source is not None and self._files:
                got = self._source()
                if got is not None:
                    self._con, self._h = got
            if self._con is None:
                con = duckdb.connect()
                lock_down(con, sorted({os.path.dirname(f) for f in self._files}))
                if self._files:
                    con.execute(
                        "CREATE TABLE h AS SELECT * FROM read_parquet(?) ORDER BY supervoxel_id, valid_from",
                        [self._files],
                    )
                else:
                    con.execute(
                        "CREATE TABLE h (supervoxel_id BIGINT, root_id BIGINT, valid_from TIMESTAMPTZ, "
                        "valid_to TIMESTAMPTZ)"
                    )
                con.execute(
                    "CREATE TABLE roots AS SELECT root_id, min(valid_from) AS created, "
                    "CASE WHEN bool_or(valid_to IS NULL) THEN NULL ELSE max(valid_to) END AS retired "
                    "FROM h GROUP BY root_id"
                )
                self._con = con
            return self._con.cursor()

    def root_info(self, root_ids: Sequence[int]) -> dict[int, tuple[_dt.datetime, _dt.datetime | None]]:
        """``{root: (created, retired or None)}`` for the known ids among ``root_ids`` (0 is never listed)."""
        ids = pa.table({"root_id": pa.array(np.asarray(list(root_ids), dtype=np.int64))})
        con = self._connection()
        con.register("q", ids)
        rows = con.execute(f"SELECT root_id, created, retired FROM {self._roots()}").fetchall()
        return {int(r): (_utc(c), _utc(x)) for r, c, x in rows}

    def roots_at(self, supervoxel_ids: Sequence[int] | np.ndarray, ts: _dt.datetime) -> np.ndarray:
        """Root of each supervoxel at ``ts`` (``0`` for supervoxel 0 or one with no root then)."""
        sv = np.asarray(supervoxel_ids, dtype=np.int64)
        con = self._connection()
        con.register("q", pa.table({"i": pa.array(np.arange(len(sv))), "supervoxel_id": pa.array(sv)}))
        res = con.sql(
            f"SELECT q.i, h.root_id FROM q JOIN {self._h} h ON h.supervoxel_id = q.supervoxel_id "
            "AND h.valid_from <= $1 AND (h.valid_to IS NULL OR h.valid_to > $1)",
            params=[ts],
        ).to_arrow_table()
        out = np.zeros(len(sv), dtype=np.int64)
        out[res.column("i").to_numpy()] = res.column("root_id").to_numpy()
        return out

    def supervoxels_of(self, root_id: int) -> np.ndarray:
        """Every supervoxel that belonged to ``root_id`` (a root's supervoxel set never changes)."""
        con = self._connection()
        t = con.sql(
            f"SELECT DISTINCT supervoxel_id FROM {self._h} WHERE root_id = $1 ORDER BY 1",
            params=[int(root_id)],
        )
        return t.to_arrow_table().column(0).to_numpy()

    def supervoxels_at(self, root_ids: Sequence[int], ts: _dt.datetime) -> np.ndarray:
        """The supervoxels whose root at ``ts`` is one of ``root_ids``."""
        con = self._connection()
        con.register("q", pa.table({"root_id": pa.array(np.asarray(list(root_ids), dtype=np.int64))}))
        t = con.sql(
            f"SELECT h.supervoxel_id FROM {self._h} h JOIN q USING (root_id) WHERE h.valid_from <= $1 "
            "AND (h.valid_to IS NULL OR h.valid_to > $1)",
            params=[ts],
        ).to_arrow_table()
        return t.column(0).to_numpy()

    def id_maps(
        self, root_ids: Sequence[int], past: _dt.datetime, future: _dt.datetime
    ) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
        """The chunkedgraph's ``past_id_mapping``, as ``(past_id_map, future_id_map)``.

        ``past_id_map``: each root id → the roots its supervoxels had at ``past`` (the id itself
        when it has none then). ``future_id_map``: each of those past ids → the one root holding
        all its supervoxels at ``future``, as a one-element list; a past id whose supervoxels are
        split between several roots then is absent (PyChunkedGraph leaves out a past id whose
        descendants split). Root id 0 maps to nothing.
        """
        past_map: dict[int, list[int]] = {}
        every_past: dict[int, None] = {}
        for r in dict.fromkeys(int(x) for x in root_ids):
            olds = (
                sorted({int(x) for x in self.roots_at(self.supervoxels_of(r), past) if x != 0}) if r else []
            )
            past_map[r] = olds or ([r] if r else [])
            every_past.update(dict.fromkeys(past_map[r]))
        future_map: dict[int, list[int]] = {}
        for p in every_past:
            sv = self.supervoxels_of(p)
            fut = {int(x) for x in self.roots_at(sv, future) if x != 0} if len(sv) else set()
            if len(fut) == 1:
                future_map[p] = [fut.pop()]
        return past_map, future_map

    def edges(self) -> list[tuple[int, int, _dt.datetime]]:
        """Every (old root, new root, time) succession caused by an edit."""
        con = self._connection()
        return [
            (int(a), int(b), _utc(t))
            for a, b, t in con.execute(
                f"SELECT DISTINCT a.root_id, b.root_id, b.valid_from FROM {self._h} a JOIN {self._h} b "
                "ON a.supervoxel_id = b.supervoxel_id AND a.valid_to = b.valid_from AND a.root_id <> b.root_id"
            ).fetchall()
        ]


def _utc(t: _dt.datetime | None) -> _dt.datetime | None:
    return None if t is None else t.astimezone(_dt.timezone.utc)
