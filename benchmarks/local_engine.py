"""Local engine benchmark: tablekit vs the same SQL in DuckDB vs pandas with a boolean mask.

    python benchmarks/local_engine.py --synapses 10000000 [--repeat 5] [--data DIR]

Builds (or reuses) a synthetic datastack with ``tablekit sample``, then times three questions on
the synapse table at the latest version:

* lookup:  every synapse onto one neuron (``post_pt_root_id == ROOT``)
* bbox:    synapses whose ``post_pt_position`` lies in a box
* range:   synapses with ``lo < size < hi``

For each it prints the median wall time of tablekit, of the identical SQL run directly in DuckDB
(the SQL and parameters come from ``explain()``, over the engine's native copies; fetched as
Arrow → pandas, the same conversion), of the same question as SQL straight over the Parquet files
(what the native copies buy), and of a user without tablekit (``pd.read_parquet`` of the snapshot + a boolean mask), and the
ratios. Targets: tablekit / DuckDB ≤ 1.3; pandas / tablekit ≥ 10. Each approach's peak RSS is
measured in its own subprocess and compared with the table's in-memory (pandas) size.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def _median_time(fn, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up (file cache, DuckDB metadata)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _pick(client) -> dict:
    """Choose the three questions once (in the parent process) from the data itself."""
    import duckdb

    syn = client.tables[client.info["synapse_table"]]
    files = sorted(
        str(p)
        for p in (
            pathlib.Path(client.backend.location) / "versions" / str(client.version) / syn.table_name
        ).glob("*.parquet")
    )
    con = duckdb.connect()
    sample = con.execute(
        "SELECT post_pt_root_id, count(*) AS n FROM read_parquet(?) WHERE post_pt_root_id <> 0 "
        "GROUP BY 1 ORDER BY n DESC, 1 LIMIT 200",
        [files],
    ).fetchall()
    q = con.execute(
        "SELECT quantile_cont(post_pt_position_x, [0.45, 0.55]), quantile_cont(post_pt_position_y, [0.45, 0.55]), "
        "quantile_cont(post_pt_position_z, [0.45, 0.55]), quantile_cont(size, [0.50, 0.51]) FROM read_parquet(?)",
        [files],
    ).fetchone()
    return {
        "table": syn.table_name,
        "files": files,
        "root": int(sample[len(sample) // 2][0]),  # a typical busy neuron, not the very largest
        "box": [[int(q[0][0]), int(q[1][0]), int(q[2][0])], [int(q[0][1]), int(q[1][1]), int(q[2][1])]],
        "lo": float(q[3][0]),
        "hi": float(q[3][1]),
    }


def _questions(p: dict) -> dict:
    root, box, lo, hi = p["root"], p["box"], p["lo"], p["hi"]
    return {
        "lookup": ({"post_pt_root_id": root}, lambda df: df["post_pt_root_id"] == root),
        "bbox": (
            {"post_pt_position_bbox": box},
            lambda df: (
                df["post_pt_position_x"].between(box[0][0], box[1][0])
                & df["post_pt_position_y"].between(box[0][1], box[1][1])
                & df["post_pt_position_z"].between(box[0][2], box[1][2])
            ),
        ),
        "range": ({"size": {">": lo, "<": hi}}, lambda df: (df["size"] > lo) & (df["size"] < hi)),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_one(path: str, approach: str, name: str, repeat: int, picked: dict) -> dict:
    """Time one approach for one question (in this process); return timings and row count."""
    import duckdb
    import pandas as pd
    import pyarrow as pa

    import tablekit
    from tablekit.backends.local import LocalBackend

    kwargs, mask = _questions(picked)[name]
    files = picked["files"]
    if approach != "pandas":
        client = tablekit.connect(path=path)
        f = client.tables[picked["table"]](**kwargs)
    if approach == "tablekit":
        t, df = _median_time(lambda: f.query(split_positions=True, metadata=False), repeat)
    elif approach in ("duckdb", "parquet"):
        if approach == "parquet":  # the same question as SQL straight over the Parquet files
            f = tablekit.Client(LocalBackend(path, native_cache=False)).tables[picked["table"]](**kwargs)
        plan = json.loads(f.explain())
        con = duckdb.connect()
        con.execute("SET parquet_can_have_nan = true")  # the engine's setting: pyarrow files may hold NaN
        sql, params = plan["sql"], plan["parameters"]
        for alias, file in plan.get("attach", {}).items():  # the engine's native copies, read-only
            con.execute(f"ATTACH '{file}' AS {alias} (READ_ONLY)")
        for name, values in plan.get("value_lists", {}).items():  # membership lists travel as tables
            con.register(name, pa.table({"v": values}))

        def direct():
            return con.execute(sql, params).to_arrow_table().to_pandas()

        t, df = _median_time(direct, repeat)
    else:

        def by_hand():
            full = pd.read_parquet(files)
            return full[mask(full)]

        t, df = _median_time(by_hand, max(1, min(repeat, 3)))
    return {
        "seconds": t,
        "rows": len(df),
        "maxrss_mb": _peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synapses", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", default=str(HERE / "_data"))
    ap.add_argument(
        "--pandas-max-rows",
        type=int,
        default=30_000_000,
        help="skip the pandas baseline above this many rows (it needs the whole table in memory)",
    )
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, approach, name, picked = args.child
        print(json.dumps(_run_one(path, approach, name, args.repeat, json.loads(picked))))
        return

    from tablekit.datastack.sample import build_sample

    path = pathlib.Path(args.data) / f"synapses-{args.synapses}"
    if not (path / "datastack.json").exists():
        t0 = time.perf_counter()
        build_sample(path, synapses=args.synapses)
        print(f"built {path} in {time.perf_counter() - t0:.0f} s")

    import tablekit

    client = tablekit.connect(path=str(path))
    picked = _pick(client)
    qs = _questions(picked)
    syn, files = client.tables[picked["table"]], picked["files"]
    for kwargs, _ in qs.values():  # build the engine's native copies once, outside the timings
        syn(**kwargs).query(limit=1, metadata=False)
    client.backend.wait_for_copies()  # (the root-id lookup's clustered copy is built in the background)
    rows = client.get_annotation_count(syn.table_name)
    import pyarrow.parquet as pq

    one = pq.ParquetFile(files[0]).read_row_group(0).to_pandas()
    per_row = one.memory_usage(deep=True).sum() / max(len(one), 1)
    in_memory_mb = per_row * rows / 2**20
    print(
        f"synapse table: {rows:,} rows at version {client.version}; ≈{in_memory_mb:,.0f} MB as a pandas DataFrame"
    )
    print(
        f"{'question':<8} {'rows':>8} {'tablekit':>10} {'duckdb':>10} {'parquet':>10} {'pandas':>10} {'tk/duckdb':>10} "
        f"{'parquet/tk':>10} {'pandas/tk':>10}  peak RSS MB tk / duckdb / pandas"
    )
    for name in qs:
        res = {}
        approaches = ["tablekit", "duckdb", "parquet"] + (["pandas"] if rows <= args.pandas_max_rows else [])
        for approach in approaches:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--repeat",
                    str(args.repeat),
                    "--child",
                    str(path),
                    approach,
                    name,
                    json.dumps(picked),
                ],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ},
            )
            if out.returncode:
                raise SystemExit(f"{approach}/{name} failed:\n{out.stderr}")
            res[approach] = json.loads(out.stdout.strip().splitlines()[-1])
        res.setdefault(
            "pandas", {"seconds": float("nan"), "rows": res["tablekit"]["rows"], "maxrss_mb": float("nan")}
        )
        assert (
            res["tablekit"]["rows"]
            == res["duckdb"]["rows"]
            == res["parquet"]["rows"]
            == res["pandas"]["rows"]
        ), res
        tk, dd, pq_, pdx = (res[a]["seconds"] for a in ("tablekit", "duckdb", "parquet", "pandas"))
        print(
            f"{name:<8} {res['tablekit']['rows']:>8,} {tk * 1000:>8.1f}ms {dd * 1000:>8.1f}ms {pq_ * 1000:>8.1f}ms "
            f"{pdx * 1000:>8.0f}ms {tk / dd:>10.2f} {pq_ / tk:>10.1f} {pdx / tk:>10.1f}  "
            f"{res['tablekit']['maxrss_mb']:.0f} / {res['duckdb']['maxrss_mb']:.0f} / {res['pandas']['maxrss_mb']:.0f}"
        )
    if rows > args.pandas_max_rows:
        print(
            f"pandas baseline skipped: it would hold the whole table (≈{in_memory_mb / 1024:,.0f} GB) in memory"
        )
    print("targets: tk/duckdb ≤ 1.3, pandas/tk ≥ 10, tablekit peak RSS well under the in-memory table size")
    print("(peak RSS is the whole child process, including ≈150 MB of imported libraries)")


if __name__ == "__main__":
    main()
