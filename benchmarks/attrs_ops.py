"""What ``df.attrs`` costs: 50 ordinary pandas operations on a query result (issue 15, item 3).

    python benchmarks/attrs_ops.py [--ids 20000] [--reps 5]

One process, the embedded ``demo`` datastack (local engine), a filter of ``--ids`` ids (spread over the
table, every one matching) on ``synapses_pni_2``. The same 50 operations (column access, selection,
boolean masks, sort, groupby, assign, copy, head, describe...) run on the result three ways: with
the default ``df.attrs``, queried with ``metadata=False``, and the default result with its attrs
cleared (the reference), taken in turn. Prints the JSON size of ``df.attrs``, the best of ``--reps`` times of
the 50 operations for each, and the ratios to the reference, all measured in this run. The query
runs once before timing (warm: the engine's copies and the OS page cache). pandas deep-copies
``attrs`` on every operation that returns a new object, so their size is what this measures.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import timeit

import pandas as pd

import tablekit

SYN = "synapses_pni_2"


def ops(df: pd.DataFrame) -> int:
    """50 ordinary operations; returns how many ran."""
    n = 0
    for _ in range(5):
        s = df["size"]
        sub = df[["id", "size", "pre_pt_root_id"]]
        big = df[df["size"] > s.median()]
        srt = df.sort_values("size")
        grp = df.groupby("pre_pt_root_id")["size"].sum()
        asg = df.assign(double=s * 2)
        cp = df.copy()
        hd = df.head(100)
        loc = df.loc[df.index[:1000], ["id", "size"]]
        ren = df.rename(columns={"size": "sz"})
        n += 10
        del sub, big, srt, grp, asg, cp, hd, loc, ren
    return n


def best(frames: list[pd.DataFrame], reps: int) -> list[float]:
    """Best time of the 50 operations on each frame, the frames taken in turn in every repetition
    (so that the load of a shared machine falls on all of them alike)."""
    times: list[list[float]] = [[] for _ in frames]
    for _ in range(reps):
        for got, df in zip(times, frames, strict=True):
            t = time.perf_counter()
            assert ops(df) == 50
            got.append(time.perf_counter() - t)
    return [min(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    client = tablekit.connect("demo")
    every = client.tables[SYN]().query(select_columns=["id"])["id"].to_numpy()
    ids = [int(x) for x in every[:: max(1, len(every) // a.ids)][: a.ids]]
    q = client.tables[SYN](id=ids)
    q.query()  # warm
    df = q.query()
    plain = q.query(metadata=False)
    bare = q.query()  # the same result, built the same way, its attrs then cleared
    bare.attrs.clear()
    size = len(json.dumps(df.attrs, separators=(",", ":"), default=str).encode())
    t_def, t_plain, t_ref = best([df, plain, bare], a.reps)
    print(f"tablekit {tablekit.__version__} from {tablekit.__file__}; pandas {pd.__version__}")
    print(f"{len(ids)} ids -> {len(df)} rows; df.attrs {size:,} bytes of JSON")
    print(
        f"50 operations (best of {a.reps}): default attrs {t_def * 1e3:.1f} ms, "
        f"metadata=False {t_plain * 1e3:.1f} ms, attrs cleared {t_ref * 1e3:.1f} ms"
    )
    deep = min(timeit.repeat(lambda: copy.deepcopy(df.attrs), number=20, repeat=5)) / 20
    print(f"one deep copy of df.attrs (what pandas does per operation): {deep * 1e6:.0f} us")
    print(f"ratio default / cleared {t_def / t_ref:.2f}x; metadata=False / cleared {t_plain / t_ref:.2f}x")


if __name__ == "__main__":
    main()
