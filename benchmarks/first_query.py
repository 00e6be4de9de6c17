"""The first query on a fresh snapshot (issue 15 item 4): tablekit vs DuckDB over the Parquet files.

    python benchmarks/first_query.py [--synapses 10000000] [--data DIR] [--repeat 3]

Builds (or reuses) a ``tablekit sample`` datastack. Each run is a new process with an empty
native-copy cache (``$TABLEKIT_CACHE_DIR`` is a fresh directory), timing one question on the
synapse table at the latest version — every synapse onto one neuron, and a range on ``size`` —
from the call to its DataFrame:

* ``tablekit``: tablekit as it is (a big snapshot is read from its Parquet files, checked first;
  its native copy is built in the background after the answer);
* ``tablekit, copy first``: the previous behaviour (``DIRECT_MIN_BYTES`` set out of reach: the
  native copy is built before the first answer);
* ``DuckDB over Parquet``: the same SQL and parameters (from ``explain()``) run by DuckDB straight
  over the Parquet files, fetched as Arrow → pandas — the baseline, at its best.

The OS file cache is warm for every side (the files are read once before the runs). Prints the
median of ``--repeat`` runs and the ratios to the baseline (target: tablekit ≤ 1.5×).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent

_CHILD = r"""
import json, sys, time
mode, path, question = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if mode != "duckdb":
    import tablekit
    if mode == "copy-first":
        import tablekit.backends.local.backend as local
        local.DIRECT_MIN_BYTES = 2**62
    client = tablekit.connect(path=path)
    syn = client.tables[client.info["synapse_table"]]
if mode == "duckdb":
    import duckdb
    plan = question  # the SQL tablekit runs over the Parquet files (explain() without native copies)
    con = duckdb.connect()
    con.execute("SET parquet_can_have_nan = true")
    con.execute("SET enable_progress_bar = false")
    t0 = time.perf_counter()
    df = con.execute(plan["sql"], plan["params"]).to_arrow_table().to_pandas()
else:
    t0 = time.perf_counter()
    df = syn(**question).query(metadata=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": len(df)}))
"""


def _run(mode: str, path: str, question: dict) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TABLEKIT_CACHE_DIR": cache}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, mode, path, json.dumps(question)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synapses", type=int, default=10_000_000)
    ap.add_argument("--data", default=str(HERE / "_data"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import duckdb

    import tablekit
    from tablekit.datastack.sample import build_sample

    path = pathlib.Path(args.data) / f"synapses-{args.synapses}"
    if not (path / "datastack.json").exists():
        print(f"building {path} …", file=sys.stderr)
        build_sample(path, synapses=args.synapses)
    client = tablekit.connect(path=str(path))
    os.environ["TABLEKIT_NATIVE_CACHE"] = "0"  # this client reads Parquet only: explain() gives that SQL
    parquet_client = tablekit.connect(path=str(path))
    del os.environ["TABLEKIT_NATIVE_CACHE"]
    syn_table = client.info["synapse_table"]
    files = sorted(str(p) for p in (path / "versions" / str(client.version) / syn_table).glob("*.parquet"))
    con = duckdb.connect()
    root = con.execute(
        "SELECT post_pt_root_id FROM read_parquet(?) WHERE post_pt_root_id <> 0 "
        "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
        [files],
    ).fetchall()[0][0]
    for f in files:  # warm the OS file cache for every side
        pathlib.Path(f).read_bytes()
    questions = {
        "lookup post_pt_root_id": {"post_pt_root_id": int(root)},
        "range on size": {"size": {">": 200, "<": 210}},
    }
    print(
        f"{args.synapses:,} synapses, version {client.version}, {len(files)} Parquet files "
        f"({sum(os.path.getsize(f) for f in files) / 2**20:,.0f} MiB); each run a new process with an "
        f"empty native-copy cache, OS file cache warm; median of {args.repeat}"
    )
    print("| question | DuckDB over Parquet | tablekit | ratio | tablekit, copy first (before) | ratio |")
    print("|---|---|---|---|---|---|")
    for name, question in questions.items():
        times: dict[str, float] = {}
        rows: dict[str, int] = {}
        sql = json.loads(parquet_client.tables[syn_table](**question).explain())
        for mode in ("duckdb", "direct", "copy-first"):
            arg = {"sql": sql["sql"], "params": sql["parameters"]} if mode == "duckdb" else question
            runs = [_run(mode, str(path), arg) for _ in range(args.repeat)]
            times[mode] = statistics.median(r["seconds"] for r in runs)
            rows[mode] = runs[0]["rows"]
        assert len(set(rows.values())) == 1, rows
        base = times["duckdb"]
        print(
            f"| {name} ({rows['duckdb']:,} rows) | {base * 1000:,.0f} ms | {times['direct'] * 1000:,.0f} ms | "
            f"{times['direct'] / base:.2f} | {times['copy-first'] * 1000:,.0f} ms | {times['copy-first'] / base:.2f} |"
        )


if __name__ == "__main__":
    main()
