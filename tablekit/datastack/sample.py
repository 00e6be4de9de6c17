"""The deterministic synthetic datastack ``demo``, modelled on MICrONS ``minnie65_public``.

:func:`build_sample` writes it to a directory; :func:`ensure_demo` builds it once into a cache
directory and reuses it. Everything is derived from ``seed`` and fixed base timestamps, never from
the clock, so the same arguments give byte-identical files.

What is inside (default ``synapses=200_000``):

* ``nucleus_detection_v0`` (soma table) — ~2,000 nuclei with 6-digit ids; a few % outside the
  segmentation (supervoxel and root 0); some roots carry two nuclei (merge errors).
* ``synapses_pni_2`` (synapse table) — heavy-tailed connectivity between neurons and orphan
  fragments, a few autapses and zero roots; ~3 % of synapses are created between versions and a
  few are deleted or superseded.
* ``aibs_metamodel_celltypes_v661`` — cell types of most nuclei (reference table on the nuclei).
* ``allen_v1_column_types_slanted`` — cell types in a column, positions in **nm**
  (voxel resolution [1, 1, 1]).
* ``proofreading_status_and_strategy`` — proofreading status of ~1.5 % of neurons.
* view ``single_neurons`` — nuclei whose root carries exactly one nucleus.
* versions 117 (expired), 343, 661 and 943, about four weeks apart. Between versions, and for two
  weeks after the last one, proofreading merges and splits change root ids (retired roots are
  never reused). At least three cells of every cell type, and a few two-nucleus roots, are never
  edited, so examples that name them work in every version.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .._paths import cache_root
from ..errors import DatastackError
from ..schema import TableSpec, table_spec
from .build import check_views, replacing_directory
from .format import (
    FORMAT_VERSION,
    SEGMENTATION_SCHEMA,
    annotation_schema,
    bundled_schemas,
    table_metadata,
    version_metadata,
    write_datastack_json,
    write_schemas,
    write_table_metadata,
    write_versions,
    write_view,
)
from .materialize import materialize
from .parts import write_annotations, write_segmentation_history

__all__ = ["SAMPLE_REVISION", "build_sample", "ensure_demo", "sample_versions"]

SAMPLE_REVISION = 2  # bump when the generator's output changes (invalidates cached demos)

_TS = pa.timestamp("us", tz="UTC")
CHUNK_ROWS = 2_000_000  # synapses generated and written per chunk


def _t(s: str) -> int:
    """Microseconds since the epoch of an ISO UTC time."""
    return int(pd.Timestamp(s, tz="UTC").value // 1000)


_HOUR = 3_600_000_000
_DAY = 24 * _HOUR
_EPOCH = _t("2024-06-03T00:00:00")  # segmentation history starts
_NUC_CREATED = _t("2024-09-02T14:00:00")
_SYN_CREATED = _t("2024-10-07T09:00:00")
_COL_CREATED = _t("2024-11-18T11:00:00")
_CT_CREATED = _t("2024-12-02T16:00:00")
_VERSIONS = (  # (version, time stamp, valid, expires_on)
    (117, _t("2025-01-06T08:00:00"), False, _t("2025-02-05T08:00:00")),
    (343, _t("2025-02-03T08:10:11.123456"), True, _t("2125-02-03T08:00:00")),
    (661, _t("2025-03-03T08:05:42.654321"), True, _t("2125-03-03T08:00:00")),
    (943, _t("2025-03-31T08:01:07.000250"), True, None),
)
_NOW = _VERSIONS[-1][1] + 14 * _DAY  # edits and churn stop here (fixed, not the clock)

_LO = np.array([60_000, 75_000, 14_000])
_HI = np.array([420_000, 280_000, 28_000])
_ROOT_BASE = 864691135_000_000_000  # 12 * 2**56 + offset, like minnie65 root ids
_NEW_ROOT_BASE = 864691136_000_000_000  # roots made by edits: fresh and larger
_SV_BASE = 2**56 + 10**15  # layer-1 ids

_EXC = ("23P", "4P", "5P-IT", "5P-ET", "5P-NP", "6P-IT", "6P-CT")
_INH = ("BC", "MC", "SC", "NGC")
_NON = ("astrocyte", "microglia", "oligo", "OPC")
_CLASSES = ("excitatory_neuron", "inhibitory_neuron", "nonneuron")
_STRATEGY_AXON = (
    "none",
    "axon_partially_extended",
    "axon_fully_extended",
    "axon_interareal",
    "axon_column_truncated",
)
_STRATEGY_DENDRITE = ("dendrite_clean", "dendrite_extended")

SYNAPSE_TABLE = "synapses_pni_2"
SOMA_TABLE = "nucleus_detection_v0"
CELL_TYPE_TABLE = "aibs_metamodel_celltypes_v661"
COLUMN_TABLE = "allen_v1_column_types_slanted"
PROOFREADING_TABLE = "proofreading_status_and_strategy"

_SINGLE_NEURONS_SQL = (
    'SELECT id, pt_root_id, pt_supervoxel_id, pt_position_x, pt_position_y, pt_position_z FROM "nucleus_detection_v0" '
    'WHERE pt_root_id != 0 AND pt_root_id IN (SELECT pt_root_id FROM "nucleus_detection_v0" '
    "GROUP BY pt_root_id HAVING count(*) = 1)"
)


def sample_versions() -> list[dict[str, Any]]:
    """The version metadata of the sample (the same for every seed and size)."""
    return [
        version_metadata(
            v,
            pd.Timestamp(t * 1000, tz="UTC"),
            datastack="",
            expires_on=None if exp is None else pd.Timestamp(exp * 1000, tz="UTC"),
            valid=valid,
        )
        for v, t, valid, exp in _VERSIONS
    ]


# --------------------------------------------------------------------------- public API


def build_sample(
    path: str | os.PathLike[str],
    *,
    synapses: int = 200_000,
    seed: int = 0,
    name: str = "demo",
    overwrite: bool = False,
) -> Path:
    """Write the deterministic synthetic datastack to ``path`` and return the path.

    Args:
        path: directory to create (must be new or empty unless ``overwrite=True``).
        synapses: rows of ``synapses_pni_2``; the other tables scale with it (nuclei ≈
            synapses / 100, at least 500 and at most 150,000). 200,000 builds in a few seconds;
            100,000,000 streams to disk in chunks and needs well under 24 GiB of memory.
        seed: random seed; the same seed and size always give byte-identical files.
        name: datastack name written to ``datastack.json``.
        overwrite: replace an existing datastack directory at ``path``.

    Open it with ``tablekit.connect(path=path)``.
    """
    synapses, seed = _check_args(synapses, seed)
    with replacing_directory(Path(path), overwrite=overwrite) as tmp:
        _write_sample(tmp, synapses=synapses, seed=seed, name=name)
    return Path(path)


def ensure_demo(synapses: int = 200_000, seed: int = 0) -> Path:
    """Return the path of the cached ``demo`` datastack, building it on first use.

    The cache is ``$TABLEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/tablekit``, else ``~/.cache/tablekit``; each (format version, generator
    revision, size, seed) gets its own subdirectory. The demo is built in a temporary directory and
    renamed into place, so concurrent processes never see a half-built demo.
    """
    synapses, seed = _check_args(synapses, seed)
    cache = cache_root()
    target = cache / f"demo-f{FORMAT_VERSION}-r{SAMPLE_REVISION}-syn{synapses}-seed{seed}"
    if (target / "datastack.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_sample(tmp, synapses=synapses, seed=seed, name="demo")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "datastack.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _check_args(synapses: Any, seed: Any) -> tuple[int, int]:
    if isinstance(synapses, bool) or not isinstance(synapses, (int, np.integer)) or synapses < 1000:
        raise DatastackError(f"build_sample: synapses={synapses!r}; give an int >= 1000")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatastackError(f"build_sample: seed={seed!r}; give an int >= 0")
    return int(synapses), int(seed)


# --------------------------------------------------------------------------- the synthetic world


def _rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *extra])


def _splitmix(x: np.ndarray) -> np.ndarray:
    """A fast deterministic 64-bit hash (splitmix64 finaliser) of uint64 values."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class _World:
    """Cells, segments (objects), supervoxels and the edit history of one sample."""

    def __init__(self, synapses: int, seed: int):
        self.seed = seed
        self.n_syn = synapses
        rng = _rng(seed, 1)
        n = self.n_cells = min(150_000, max(500, synapses // 100))

        # cells: position, class, type
        self.center = (_LO + 2_000 + rng.random((n, 3)) * (_HI - _LO - 4_000)).astype(np.int64)
        cls = rng.choice(3, size=n, p=[0.62, 0.12, 0.26])
        self.cls = cls
        self.cell_type = _cell_types(rng, cls, self.center[:, 1])
        self.outside = rng.random(n) < 0.03  # nucleus point outside the segmentation
        neuron = cls < 2
        # protected cells (never edited): the first 3 of every type with a nucleus inside the segmentation
        prot = np.zeros(n, bool)
        for t in np.unique(self.cell_type):
            idx = np.flatnonzero((self.cell_type == t) & ~self.outside)[:3]
            prot[idx] = True
        # two-nucleus roots: pairs of neurons (a, b) segmented as one root
        cand = np.flatnonzero(neuron & ~self.outside & ~prot)
        n_pairs = max(4, int(0.012 * neuron.sum()))
        chosen = rng.permutation(cand)[: 2 * n_pairs]
        self.pairs = chosen.reshape(-1, 2)
        self.protected_pairs = self.pairs[:2]

        # objects: cells, then orphan fragments (axon or dendrite pieces)
        n_frag = 2 * n
        n_obj = self.n_obj = n + n_frag
        w_out = np.empty(n_obj)
        w_in = np.empty(n_obj)
        base = rng.lognormal(0.0, 1.0, n) * 6.0
        w_out[:n] = np.where(neuron, base * np.where(cls == 1, 1.5, 1.0), 0.02)
        w_in[:n] = np.where(neuron, rng.lognormal(0.0, 1.0, n) * 6.0, 0.02)
        fb = rng.lognormal(0.0, 1.3, n_frag)
        axon = rng.random(n_frag) < 0.5
        w_out[n:] = np.where(axon, fb, 0.1 * fb)
        w_in[n:] = np.where(axon, 0.1 * fb, fb)
        self.w_out, self.w_in = w_out, w_in

        # supervoxels: contiguous blocks per object; cells' first supervoxel holds the nucleus
        min_count = np.where(np.arange(n_obj) < n, 4, 1)
        S = max(synapses // 20, int(min_count.sum()) * 2)
        w = w_in + w_out
        counts = min_count + rng.multinomial(S - int(min_count.sum()), w / w.sum())
        self.S = S
        self.count = counts
        self.start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.sv_obj = np.repeat(np.arange(n_obj), counts)
        g = (4 * 10**16) // S
        self.sv_ids = _SV_BASE + np.cumsum(rng.integers(1, 2 * g, S, dtype=np.int64))
        sigma = np.empty((n_obj, 3))
        sigma[:n] = np.where(neuron[:, None], [[12_000, 12_000, 1_200]], [[2_000, 2_000, 150]])
        sigma[n:] = [3_000, 3_000, 300]
        centers = np.empty((n_obj, 3), np.int64)
        centers[:n] = self.center
        centers[n:] = (_LO + rng.random((n_frag, 3)) * (_HI - _LO)).astype(np.int64)
        pos = centers[self.sv_obj] + rng.normal(0.0, 1.0, (S, 3)) * sigma[self.sv_obj]
        pos[self.start[:n]] = centers[:n]
        self.sv_pos = np.clip(np.round(pos), _LO, _HI).astype(np.int32)

        # initial roots (permuted, so root id order says nothing); pairs share the first cell's root
        roots = _ROOT_BASE + np.cumsum(rng.integers(50, 4_000, n_obj, dtype=np.int64))
        obj_root = rng.permutation(roots)
        obj_root[self.pairs[:, 1]] = obj_root[self.pairs[:, 0]]
        self.obj_root0 = obj_root
        self.sv_root0 = obj_root[self.sv_obj]
        self.protected_roots = set(obj_root[np.flatnonzero(prot)].tolist()) | set(
            obj_root[self.protected_pairs[:, 0]].tolist()
        )
        self.nucleus_sv = np.where(self.outside, 0, self.sv_ids[self.start[:n]])
        self.nucleus_id = np.sort(_rng(seed, 10).choice(np.arange(100_000, 800_000), n, replace=False))
        # proofread neurons (never protected); edits favour them, as proofreading means editing
        cand = np.flatnonzero(neuron & ~self.outside & ~prot & ~np.isin(np.arange(n), self.pairs))
        m = int(np.clip(round(0.015 * cand.size), 10, cand.size))
        self.proof_cells = _rng(seed, 6).choice(cand, m, replace=False)
        self._edits(_rng(seed, 2))

    # ---- edits

    def _edits(self, rng: np.random.Generator) -> None:
        """Merges and splits between versions (and up to _NOW); builds the segmentation history."""
        S = self.S
        sv_root = self.sv_root0.copy()
        per_sv = ((self.w_in + self.w_out) / self.count)[self.sv_obj]
        cdf = np.cumsum(per_sv)
        frag_lo = int(self.start[self.n_cells])
        next_root = _NEW_ROOT_BASE + int(rng.integers(10**6, 10**8))
        n_edits = 24 + int(math.sqrt(self.n_syn) / 50)
        times = [t for _, t, _, _ in _VERSIONS] + [_NOW]
        ev_sv: list[np.ndarray] = []
        ev_root: list[np.ndarray] = []
        ev_t: list[np.ndarray] = []
        self.retired: list[int] = []

        proof_sv = self.start[self.proof_cells]

        def pick(weighted: bool) -> int:
            if weighted and rng.random() < 0.3:
                return int(sv_root[proof_sv[rng.integers(proof_sv.size)]])
            for _ in range(1000):
                if weighted:
                    sv = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
                else:
                    sv = int(rng.integers(frag_lo, S))
                r = int(sv_root[min(sv, S - 1)])
                if r not in self.protected_roots:
                    return r
            raise RuntimeError("no editable root found")  # pragma: no cover

        for a, b in itertools.pairwise(times):
            ts = np.sort(rng.integers(a + _HOUR, b - _HOUR, n_edits))
            ts = ts + np.arange(n_edits)  # strictly increasing, distinct
            for t in ts.tolist():
                if rng.random() < 0.5:  # merge: a (weighted) segment absorbs an orphan fragment
                    ra = pick(True)
                    rb = pick(False)
                    if rb == ra:
                        continue
                    members = np.flatnonzero((sv_root == ra) | (sv_root == rb))
                    next_root += int(rng.integers(1_000, 2_000_000))
                    parts = [(members, next_root)]
                    self.retired += [ra, rb]
                else:  # split: a segment loses a piece
                    ra = pick(True)
                    members = np.flatnonzero(sv_root == ra)
                    if members.size < 2:
                        continue
                    k = int(np.clip(round(rng.uniform(0.1, 0.5) * members.size), 1, members.size - 1))
                    piece = np.zeros(members.size, bool)
                    piece[rng.choice(members.size, k, replace=False)] = True
                    r1 = next_root + int(rng.integers(1_000, 2_000_000))
                    r2 = r1 + int(rng.integers(1_000, 2_000_000))
                    next_root = r2
                    parts = [(members[piece], r1), (members[~piece], r2)]
                    self.retired.append(ra)
                for m, r in parts:
                    sv_root[m] = r
                    ev_sv.append(m)
                    ev_root.append(np.full(m.size, r, np.int64))
                    ev_t.append(np.full(m.size, t, np.int64))
        rec_sv = np.concatenate([np.arange(S), *ev_sv])
        rec_root = np.concatenate([self.sv_root0, *ev_root])
        rec_t = np.concatenate([np.full(S, _EPOCH, np.int64), *ev_t])
        order = np.lexsort((rec_t, rec_sv))
        self.h_sv, self.h_root, self.h_from = rec_sv[order], rec_root[order], rec_t[order]
        nxt = np.empty_like(self.h_from)
        nxt[:-1] = self.h_from[1:]
        last = np.ones(self.h_sv.size, bool)
        last[:-1] = self.h_sv[1:] != self.h_sv[:-1]
        nxt[last] = 0
        self.h_to, self.h_open = nxt, last
        self.sv_root_final = sv_root

    def root_at(self, sv_index: np.ndarray, t: int) -> np.ndarray:
        """Root of supervoxels (by index) at time ``t`` (µs)."""
        lo = np.searchsorted(self.h_sv, sv_index, side="left")
        hi = np.searchsorted(self.h_sv, sv_index, side="right")
        out = np.empty(sv_index.size, np.int64)
        for k, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            j = a + int(np.searchsorted(self.h_from[a:b], t, side="right")) - 1
            out[k] = self.h_root[j]
        return out

    def history(self) -> Iterator[pa.Table]:
        step = 1_000_000
        for i in range(0, self.h_sv.size, step):
            s = slice(i, i + step)
            yield pa.Table.from_arrays(
                [
                    pa.array(self.sv_ids[self.h_sv[s]]),
                    pa.array(self.h_root[s]),
                    pa.array(self.h_from[s]).cast(_TS),
                    pa.array(self.h_to[s], mask=self.h_open[s]).cast(_TS),
                ],
                schema=SEGMENTATION_SCHEMA,
            )


def _cell_types(rng: np.random.Generator, cls: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cell types consistent with the class, excitatory types by cortical layer (depth y)."""
    n = cls.size
    out = np.empty(n, dtype=object)
    layer = np.searchsorted([100_000, 145_000, 180_000, 220_000], y, side="right")  # 0 = L1 … 4 = L6
    u = rng.random(n)
    exc_by_layer = {
        0: (("23P",), (1.0,)),
        1: (("23P",), (1.0,)),
        2: (("4P",), (1.0,)),
        3: (("5P-IT", "5P-ET", "5P-NP"), (0.7, 0.18, 0.12)),
        4: (("6P-IT", "6P-CT"), (0.55, 0.45)),
    }
    for k, (types, p) in exc_by_layer.items():
        m = (cls == 0) & (layer == k)
        out[m] = np.array(types, dtype=object)[
            np.searchsorted(np.cumsum(p), u[m], side="right").clip(0, len(types) - 1)
        ]
    inh = cls == 1
    p_inh = np.where(layer[inh] == 0, 0.0, 1.0)
    t_inh = np.array(_INH, dtype=object)[
        np.searchsorted(np.cumsum([0.38, 0.27, 0.13, 0.22]), u[inh], side="right").clip(0, 3)
    ]
    out[inh] = np.where(p_inh == 0.0, "NGC", t_inh)
    non = cls == 2
    out[non] = np.array(_NON, dtype=object)[
        np.searchsorted(np.cumsum([0.35, 0.15, 0.35, 0.15]), u[non], side="right").clip(0, 3)
    ]
    return out


# --------------------------------------------------------------------------- tables


def _ts_array(us: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(us, np.int64), mask=mask).cast(_TS)


def _table(spec: TableSpec, cols: dict[str, Any]) -> pa.Table:
    schema = annotation_schema(spec)
    n = len(cols["id"])
    arrays = []
    for f in schema:
        v = cols.get(f.name)
        if v is None:
            arrays.append(pa.nulls(n, f.type))
        elif isinstance(v, pa.Array):
            arrays.append(v.cast(f.type))
        else:
            arrays.append(pa.array(v, type=f.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def _nuclei(w: _World, spec: TableSpec) -> pa.Table:
    rng = _rng(w.seed, 3)
    n = w.n_cells
    ids = w.nucleus_id
    volume = np.where(w.cls < 2, rng.lognormal(math.log(250), 0.35, n), rng.lognormal(math.log(90), 0.4, n))
    volume = np.round(volume, 6)
    volume[rng.random(n) < 0.015] = np.nan
    r_um = np.cbrt(3 * np.nan_to_num(volume, nan=150.0) / (4 * math.pi))
    half = np.stack([r_um * 250, r_um * 250, r_um * 25], axis=1).astype(np.int64)
    bb_null = rng.random(n) < 0.4
    cols: dict[str, Any] = {
        "id": ids,
        "created": _ts_array(_NUC_CREATED + np.arange(n, dtype=np.int64) * 250_000),
        "valid": np.ones(n, bool),
        "volume": pa.array(volume, from_pandas=True),
        "pt_supervoxel_id": w.nucleus_sv,
    }
    for k, ax in enumerate("xyz"):
        cols[f"pt_position_{ax}"] = w.center[:, k]
        cols[f"bb_start_position_{ax}"] = pa.array(w.center[:, k] - half[:, k], mask=bb_null)
        cols[f"bb_end_position_{ax}"] = pa.array(w.center[:, k] + half[:, k], mask=bb_null)
    return _table(spec, cols)


def _cell_type_rows(w: _World, spec: TableSpec) -> pa.Table:
    rng = _rng(w.seed, 4)
    n = w.n_cells
    classified = np.flatnonzero(rng.random(n) < 0.88)
    dup = classified[rng.random(classified.size) < 0.01]
    cells = rng.permutation(np.concatenate([classified, dup]))
    m = cells.size
    types = w.cell_type[cells].copy()
    # a duplicated target gets another type of the same class on its second row
    seen: set[int] = set()
    for k, c in enumerate(cells.tolist()):
        if c in seen:
            pool = (_EXC, _INH, _NON)[int(w.cls[c])]
            types[k] = pool[(pool.index(types[k]) + 1) % len(pool)]
        seen.add(c)
    cols = {
        "id": 1 + np.cumsum(rng.integers(1, 4, m, dtype=np.int64)),
        "created": _ts_array(_CT_CREATED + np.arange(m, dtype=np.int64) * 10_000),
        "valid": np.ones(m, bool),
        "target_id": w.nucleus_id[cells],
        "classification_system": np.array(_CLASSES, dtype=object)[w.cls[cells]],
        "cell_type": types,
    }
    return _table(spec, cols)


def _column_rows(w: _World, spec: TableSpec) -> pa.Table:
    rng = _rng(w.seed, 5)
    neurons = np.flatnonzero(w.cls < 2)
    count = int(np.clip(neurons.size // 8, 200, 1400))
    x0 = (_LO[0] + _HI[0]) // 2
    near = neurons[np.argsort(np.abs(w.center[neurons, 0] - x0), kind="stable")[:count]]
    near = np.sort(near)
    m = near.size
    label = {"5P-ET": "5P-PT", "SC": "BPC"}
    cols: dict[str, Any] = {
        "id": np.cumsum(rng.integers(1, 3, m, dtype=np.int64)),
        "created": _ts_array(_COL_CREATED + np.arange(m, dtype=np.int64) * 1_000_000),
        "valid": np.ones(m, bool),
        "classification_system": np.where(
            w.cls[near] == 0, "aibs_coarse_excitatory", "aibs_coarse_inhibitory"
        ),
        "cell_type": np.array([label.get(t, t) for t in w.cell_type[near]], dtype=object),
        "pt_supervoxel_id": w.nucleus_sv[near],
    }
    nm = w.center[near] * np.array([4, 4, 40]) + rng.integers(-20, 21, (m, 3))
    for k, ax in enumerate("xyz"):
        cols[f"pt_position_{ax}"] = nm[:, k]
    return _table(spec, cols)


def _proofreading_rows(w: _World, spec: TableSpec) -> pa.Table:
    rng = _rng(w.seed, 9)
    cells = w.proof_cells
    m = cells.size
    created = np.sort(rng.integers(_VERSIONS[0][1] - 45 * _DAY, _NOW, m))
    valid_id = np.array(
        [w.root_at(np.array([w.start[c]]), int(t))[0] for c, t in zip(cells, created, strict=True)]
    )
    strategy_axon = np.array(_STRATEGY_AXON, dtype=object)[rng.choice(5, m, p=[0.3, 0.25, 0.25, 0.1, 0.1])]
    cols: dict[str, Any] = {
        "id": np.cumsum(rng.integers(1, 6, m, dtype=np.int64)),
        "created": _ts_array(created),
        "valid": np.ones(m, bool),
        "valid_id": valid_id,
        "status_axon": strategy_axon != "none",
        "status_dendrite": rng.random(m) < 0.95,
        "strategy_axon": strategy_axon,
        "strategy_dendrite": np.array(_STRATEGY_DENDRITE, dtype=object)[rng.choice(2, m, p=[0.6, 0.4])],
        "pt_supervoxel_id": w.nucleus_sv[cells],
    }
    for k, ax in enumerate("xyz"):
        cols[f"pt_position_{ax}"] = w.center[cells, k]
    return _table(spec, cols)


class _Synapses:
    """Streams ``synapses_pni_2`` in chunks; row ``i`` has id ``id_of(i)`` (sorted, unique)."""

    def __init__(self, w: _World, spec: TableSpec):
        self.w, self.spec = w, spec
        n = self.n = w.n_syn
        self.n_new = max(20, round(0.03 * n))  # created between versions (the largest ids)
        self.n_base = n - self.n_new
        self.step = max(2, 450_000_000 // n)
        self.cdf_out = np.cumsum(w.w_out)
        self.cdf_in = np.cumsum(w.w_in)
        rng = _rng(w.seed, 7)
        n_sup = max(5, n // 40_000)
        self.sup_new = np.sort(rng.choice(np.arange(self.n_base, n), n_sup, replace=False))
        self.sup_old = rng.choice(self.n_base, n_sup, replace=False)
        self.sup_of_old = dict(zip(self.sup_old.tolist(), self.sup_new.tolist(), strict=True))
        self.sup_of_new = dict(zip(self.sup_new.tolist(), self.sup_old.tolist(), strict=True))
        self.saved: dict[int, tuple[Any, ...]] = {}

    def id_of(self, i: np.ndarray) -> np.ndarray:
        i = np.asarray(i, np.int64)
        jitter = (
            _splitmix(i.astype(np.uint64) ^ np.uint64(self.w.seed * 0x5851F42D)) % np.uint64(self.step)
        ).astype(np.int64)
        return 1_000_000 + i * self.step + jitter

    def created_of(self, i: np.ndarray) -> np.ndarray:
        i = np.asarray(i, np.int64)
        v1 = _VERSIONS[0][1]
        base = _SYN_CREATED + i * ((2 * _DAY) // max(self.n_base, 1))
        frac = ((i - self.n_base) * 2 + 1).astype(np.float64) / (2 * self.n_new)
        new = v1 + np.floor(frac * (_NOW - v1)).astype(np.int64)
        return np.where(i < self.n_base, base, new)

    def chunks(self) -> Iterator[pa.Table]:
        for k, lo in enumerate(range(0, self.n, CHUNK_ROWS)):
            yield self._chunk(k, lo, min(self.n, lo + CHUNK_ROWS))

    def _draw_sv(self, rng: np.random.Generator, obj: np.ndarray) -> np.ndarray:
        w = self.w
        return w.start[obj] + (rng.random(obj.size) * w.count[obj]).astype(np.int64)

    def _chunk(self, k: int, lo: int, hi: int) -> pa.Table:
        w = self.w
        rng = _rng(w.seed, 8, k)
        m = hi - lo
        rows = np.arange(lo, hi, dtype=np.int64)
        pre_obj = np.searchsorted(self.cdf_out, rng.random(m) * self.cdf_out[-1], side="right")
        post_obj = np.searchsorted(self.cdf_in, rng.random(m) * self.cdf_in[-1], side="right")
        np.minimum(pre_obj, w.n_obj - 1, out=pre_obj)
        np.minimum(post_obj, w.n_obj - 1, out=post_obj)
        autapse = rng.random(m) < max(1e-4, 10 / self.n)
        for _ in range(8):
            same = (post_obj == pre_obj) & ~autapse
            if not same.any():
                break
            post_obj[same] = np.minimum(
                np.searchsorted(self.cdf_in, rng.random(int(same.sum())) * self.cdf_in[-1], side="right"),
                w.n_obj - 1,
            )
        post_obj[autapse] = pre_obj[autapse]
        pre_sv = self._draw_sv(rng, pre_obj)
        post_sv = self._draw_sv(rng, post_obj)
        post = w.sv_pos[post_sv] + np.round(rng.normal(0, 1, (m, 3)) * [40, 40, 4]).astype(np.int64)
        pre = post + np.round(rng.normal(0, 1, (m, 3)) * [12, 12, 1.5]).astype(np.int64)
        post, pre = np.clip(post, _LO, _HI), np.clip(pre, _LO, _HI)
        ctr = (pre + post) // 2
        pre_id, post_id = w.sv_ids[pre_sv], w.sv_ids[post_sv]
        zero = rng.random(m) < 3e-4
        side = rng.random(m) < 0.5
        pre_id[zero & side] = 0
        post_id[zero & ~side] = 0
        size = np.round(rng.lognormal(math.log(350), 0.8, m))
        size[rng.random(m) < 1e-4] = np.nan
        created = self.created_of(rows)
        v1 = _VERSIONS[0][1]
        del_mask = rng.random(m) < 0.004
        start = np.maximum(created, v1) + 1_000_000
        deleted = start + (rng.random(m) * (_NOW - start)).astype(np.int64)
        valid = rng.random(m) >= 2e-4
        superceded = np.zeros(m, np.int64)
        sup_mask = np.zeros(m, bool)
        # superseded annotations: the old row is deleted when its replacement is created
        for i in self.sup_old[(self.sup_old >= lo) & (self.sup_old < hi)].tolist():
            j = self.sup_of_old[i]
            r = i - lo
            self.saved[i] = (pre_id[r], post_id[r], pre[r].copy(), post[r].copy(), ctr[r].copy(), size[r])
            del_mask[r], valid[r], sup_mask[r] = True, True, True
            deleted[r] = int(self.created_of(np.array([j]))[0])
            superceded[r] = int(self.id_of(np.array([j]))[0])
        for j in self.sup_new[(self.sup_new >= lo) & (self.sup_new < hi)].tolist():
            r = j - lo
            a, b, p0, p1, c, s = self.saved.pop(self.sup_of_new[j])
            shift = rng.integers(-3, 4, 3)
            pre_id[r], post_id[r], pre[r], post[r], ctr[r], size[r] = (
                a,
                b,
                p0 + shift,
                p1 + shift,
                c + shift,
                s,
            )
            del_mask[r], valid[r] = False, True
        cols: dict[str, Any] = {
            "id": self.id_of(rows),
            "created": _ts_array(created),
            "deleted": _ts_array(deleted, ~del_mask),
            "superceded_id": pa.array(superceded, mask=~sup_mask),
            "valid": valid,
            "size": pa.array(size, from_pandas=True),
            "pre_pt_supervoxel_id": pre_id,
            "post_pt_supervoxel_id": post_id,
        }
        for p, arr in (("pre_pt", pre), ("post_pt", post), ("ctr_pt", ctr)):
            for a, ax in enumerate("xyz"):
                cols[f"{p}_position_{ax}"] = arr[:, a]
        return _table(self.spec, cols)


# --------------------------------------------------------------------------- writing


_TABLES = (
    (
        SOMA_TABLE,
        "nucleus_detection",
        (4.0, 4.0, 40.0),
        None,
        _NUC_CREATED,
        "Synthetic nucleus detections (one point per detected nucleus, like minnie65 "
        "nucleus_detection_v0). pt is the nucleus centroid; bb_start/bb_end the bounding box where "
        "known; volume in um^3. A pt_root_id of 0 means the centroid lies outside the segmentation.",
    ),
    (
        SYNAPSE_TABLE,
        "synapse",
        (4.0, 4.0, 40.0),
        None,
        _SYN_CREATED,
        "Synthetic automated synapse detections (like minnie65 synapses_pni_2). pre_pt and post_pt are "
        "bound to the presynaptic and postsynaptic segments, ctr_pt is the cleft centre; size in voxels.",
    ),
    (
        CELL_TYPE_TABLE,
        "cell_type_reference",
        (4.0, 4.0, 40.0),
        SOMA_TABLE,
        _CT_CREATED,
        "Synthetic cell-type predictions for nuclei (like aibs_metamodel_celltypes_v661): "
        "classification_system is excitatory_neuron, inhibitory_neuron or nonneuron; target_id is the "
        "id of a row of nucleus_detection_v0. A few nuclei have two rows.",
    ),
    (
        COLUMN_TABLE,
        "cell_type_local",
        (1.0, 1.0, 1.0),
        None,
        _COL_CREATED,
        "Synthetic manual cell types of neurons in one cortical column (like "
        "allen_v1_column_types_slanted). Positions are stored in nanometres (voxel resolution 1x1x1 nm).",
    ),
    (
        PROOFREADING_TABLE,
        "compartment_proofread_status_strategy",
        (4.0, 4.0, 40.0),
        None,
        _VERSIONS[0][1] - 45 * _DAY,
        "Synthetic proofreading status of neurons (like proofreading_status_and_strategy). valid_id is "
        "the root id the neuron had when it was assessed; compare it with pt_root_id to see whether "
        "the segment changed since.",
    ),
)


def _write_sample(root: Path, *, synapses: int, seed: int, name: str) -> None:
    info = write_datastack_json(
        root,
        name=name,
        description=(
            f"Synthetic datastack modelled on MICrONS minnie65_public (tablekit sample, revision "
            f"{SAMPLE_REVISION}, seed {seed}, {synapses} synapses). All data is randomly generated."
        ),
        synapse_table=SYNAPSE_TABLE,
        soma_table=SOMA_TABLE,
        viewer_resolution=(4.0, 4.0, 40.0),
    )
    docs = bundled_schemas()
    write_schemas(root, {st: docs[st] for _, st, *_ in _TABLES})
    versions = sample_versions()
    for v in versions:
        v["datastack"] = name
    write_versions(root, versions)
    specs: dict[str, TableSpec] = {}
    last = pd.Timestamp(_NOW * 1000, tz="UTC")
    for tname, st, res, ref, created, desc in _TABLES:
        meta = table_metadata(
            tname,
            st,
            aligned_volume=info["aligned_volume"],
            pcg_table_name=info["pcg_table_name"],
            created=pd.Timestamp(created * 1000, tz="UTC"),
            last_modified=last,
            description=desc,
            voxel_resolution=res,
            reference_table=ref,
        )
        write_table_metadata(root, meta)
        specs[tname] = table_spec(meta, docs)

    w = _World(synapses, seed)
    write_segmentation_history(root, w.history())
    write_annotations(root, SOMA_TABLE, _nuclei(w, specs[SOMA_TABLE]), spec=specs[SOMA_TABLE])
    syn = _Synapses(w, specs[SYNAPSE_TABLE])
    write_annotations(root, SYNAPSE_TABLE, syn.chunks(), spec=specs[SYNAPSE_TABLE])
    write_annotations(
        root, CELL_TYPE_TABLE, _cell_type_rows(w, specs[CELL_TYPE_TABLE]), spec=specs[CELL_TYPE_TABLE]
    )
    write_annotations(root, COLUMN_TABLE, _column_rows(w, specs[COLUMN_TABLE]), spec=specs[COLUMN_TABLE])
    write_annotations(
        root,
        PROOFREADING_TABLE,
        _proofreading_rows(w, specs[PROOFREADING_TABLE]),
        spec=specs[PROOFREADING_TABLE],
    )
    write_view(
        root,
        "single_neurons",
        {
            "sql": _SINGLE_NEURONS_SQL,
            "description": "Nuclei whose segment (root id) carries exactly one nucleus and lies inside the "
            "segmentation: one row per single-soma cell.",
            "voxel_resolution": [4.0, 4.0, 40.0],
            "live_compatible": False,
        },
    )
    del w, syn
    materialize(root)
    check_views(root, _VERSIONS[-1][0])
