"""An independent oracle: replay a datastack's raw history with pandas.

Nothing here imports tablekit's engine: the snapshot of a table at a moment is recomputed from
``tables/<t>/annotations`` and ``segmentation/history`` by the rules of docs/datastack-format.md,
and filters are applied with plain pandas boolean masks.
"""

from __future__ import annotations

import json
import pathlib
import re
from functools import cache

import numpy as np
import pandas as pd


@cache
def _annotations(path: str, table: str) -> pd.DataFrame:
    return pd.read_parquet(pathlib.Path(path) / "tables" / table / "annotations")


@cache
def _history(path: str) -> pd.DataFrame:
    return pd.read_parquet(pathlib.Path(path) / "segmentation" / "history")


def version_timestamp(path: str, version: int) -> pd.Timestamp:
    for v in json.loads((pathlib.Path(path) / "versions.json").read_text()):
        if v["version"] == version:
            return pd.Timestamp(v["time_stamp"], tz="UTC")
    raise KeyError(version)


def snapshot(path: str, table: str, ts: pd.Timestamp) -> pd.DataFrame:
    """Rows of ``table`` present at ``ts`` with root ids as of ``ts``, sorted by id."""
    ann = _annotations(str(path), table)
    alive = ann[
        (ann["created"] <= ts) & (ann["deleted"].isna() | (ann["deleted"] > ts)) & ann["valid"]
    ].copy()
    hist = _history(str(path))
    h = hist[(hist["valid_from"] <= ts) & (hist["valid_to"].isna() | (hist["valid_to"] > ts))]
    assert h["supervoxel_id"].is_unique, "a supervoxel has two roots at once"
    lookup = pd.DataFrame(
        {"_sv": h["supervoxel_id"].astype("Int64"), "_root": h["root_id"].astype("Int64")}
    )  # Int64 all the way: 18-digit ids must not pass through float
    for col in [c for c in alive.columns if c.endswith("supervoxel_id")]:
        root = col[: -len("supervoxel_id")] + "root_id"
        sv = alive[col].astype("Int64")
        merged = pd.DataFrame({"_sv": sv}).merge(lookup, on="_sv", how="left")
        roots = pd.Series(merged["_root"].array, index=alive.index, dtype="Int64")
        roots[sv == 0] = 0
        assert not roots[sv.notna()].isna().any(), f"{table}.{col}: supervoxel without a root at {ts}"
        alive[root] = roots
    return (
        alive.drop(columns=["deleted", "superceded_id"], errors="ignore")
        .sort_values("id")
        .reset_index(drop=True)
    )


def apply(df: pd.DataFrame, column: str, op: str, value) -> pd.Series:
    """The rows of ``df`` a single filter keeps, by tablekit's documented semantics."""
    if op == "bbox":
        (x0, y0, z0), (x1, y1, z1) = value
        m = pd.Series(True, index=df.index)
        for axis, lo, hi in (("x", x0, x1), ("y", y0, y1), ("z", z0, z1)):
            c = df[f"{column}_{axis}"]
            m &= c.notna() & (c >= lo) & (c <= hi)
        return m.fillna(False).astype(bool)
    s = df[column]
    present = s.notna()
    if op == "==":
        return (present & (s == value)).fillna(False).astype(bool)
    if op == "in":
        return (present & s.isin(list(value))).fillna(False).astype(bool)
    if op == "!=":
        return (~present | (s != value)).fillna(True).astype(bool)
    if op == "not in":
        return (~present | ~s.isin(list(value))).fillna(True).astype(bool)
    if op == "regex":
        rx = re.compile(value)
        return s.map(lambda v: isinstance(v, str) and rx.search(v) is not None).astype(bool)
    cmp = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}[op]
    return (present & cmp(s, value)).fillna(False).astype(bool)
