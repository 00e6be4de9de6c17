"""tablekit's CAVE HTTP backend vs CAVEclient 8.2.1, side by side against the same ``tablekit serve``.

    python benchmarks/vs_caveclient.py [--synapses 2000000] [--data DIR] [--reps 3] [--tables 45] [--keep-data]

Every measurement runs in a fresh subprocess: tablekit with this Python, CAVEclient with the
interop venv's (tests/_interop_env.py builds it: caveclient==8.2.1, pandas 2). Each server runs
in its own process on 127.0.0.1 (``tablekit serve`` plus, for a remote deployment, an ASGI
wrapper that delays every request by 50 ms); one with no row limit and one with CAVE's default
limit of 200,000 rows.

(a) connect → first query result through the content-aware table interface, for a cheap query
    (a nucleus by id) and a realistic one (synapses by root id, a scan of the synapse table),
    cold (empty caches) and warm (the same process connects again; tablekit also from a new
    process with its disk cache). Imports are outside the timings for both. Targets: ≥ 2.5×
    faster cold, ≥ 8× warm. Measured on the 5-table sample and again on a copy with small tables
    added up to ``--tables`` (default 45, the size of minnie65_public: a real datastack has
    45–100 tables), because CAVEclient builds a filter class for every table when it starts and
    tablekit only for the tables used.
(b) a 1M-row synapse download with positions, by default (3-element arrays per point) and with
    ``split_positions=True``: wall time and peak memory (RSS growth during the call). Targets:
    ≥ 3× faster by default, ≥ 1.2× split, no more memory.
(c) all 2M synapses through the 200,000-row limit: what each client gets, and tablekit's
    throughput through the limit against one unlimited request. Target: every row, ≥ 0.7×.

Results are printed as a table with ratios (CAVEclient time / tablekit time). The generated data
lives in ``benchmarks/_data`` (git-ignored) and is deleted afterwards unless ``--keep-data``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SYN = "synapses_pni_2"
LATENCY = 0.05
LIMIT = 200_000

# --------------------------------------------------------------------------- data


def _prepare(client: Any, root: int) -> None:
    """Build the server's native copies before timing, as on a long-running server (id-ordered,
    and clustered by the root-id columns the synapse table is looked up by); servers of the same
    datastack share them."""
    for col in ("pre_pt_root_id", "post_pt_root_id"):
        client.tables[SYN](**{col: root}).query(limit=1)
    client.backend.wait_for_copies()


def _probe(schema_type: str) -> dict[str, Any]:
    """Table metadata of schema ``schema_type`` with nothing else: enough to read its columns."""
    return {"table_name": "probe", "schema_type": schema_type, "reference_table": None}


def _add_tables(src: Path, dst: Path, n_tables: int, rows: int = 20) -> None:
    """Copy the datastack ``src`` to ``dst`` with small tables added until it has ``n_tables``.

    Each added table takes a real schema type in turn (those without a reference target). Its
    rows are placeholders: supervoxel 0, so root 0.
    """
    import datetime as dt

    import pyarrow as pa

    from tablekit.datastack import (
        annotation_schema,
        bundled_schemas,
        materialize,
        read_datastack_json,
        read_schemas,
        read_versions,
        table_metadata,
        write_annotations,
        write_schemas,
        write_table_metadata,
    )
    from tablekit.schema import ColumnRole, table_spec

    tmp = dst.with_name(dst.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("versions"))  # snapshots are rebuilt
    docs = bundled_schemas()
    info = read_datastack_json(tmp)
    used = read_schemas(tmp)
    first = min(v["time_stamp"] for v in read_versions(tmp))
    if not isinstance(first, dt.datetime):
        first = dt.datetime.fromisoformat(str(first))
    created = first - dt.timedelta(days=1)  # in every version

    # the schema types whose tables need no reference table (no target_id column)
    plain = [
        st
        for st in sorted(docs)
        if not any(c.role is ColumnRole.TARGET_ID for c in table_spec(_probe(st), docs).columns)
    ]
    for i in range(n_tables - sum(1 for _ in (tmp / "tables").iterdir())):
        st = plain[i % len(plain)]
        name = f"{st}_{i:02d}"
        meta = table_metadata(
            name,
            st,
            aligned_volume=info["aligned_volume"],
            pcg_table_name=info["pcg_table_name"],
            created=created,
            description=f"A small table of schema {st}, added so the datastack has {n_tables} tables.",
        )
        write_table_metadata(tmp, meta)
        spec = table_spec(meta, docs)
        schema = annotation_schema(spec)
        cols: dict[str, list[Any]] = {}
        for f in schema:
            t = f.type
            if f.name == "id":
                cols[f.name] = list(range(1, rows + 1))
            elif f.name in ("deleted", "superceded_id"):  # never deleted or superseded
                cols[f.name] = [None] * rows
            elif pa.types.is_timestamp(t):
                cols[f.name] = [created] * rows
            elif pa.types.is_boolean(t):
                cols[f.name] = [True] * rows
            elif pa.types.is_integer(t):
                cols[f.name] = [0 if "supervoxel" in f.name else i for i in range(rows)]
            elif pa.types.is_floating(t):
                cols[f.name] = [float(i) for i in range(rows)]
            else:  # strings
                cols[f.name] = [f"tag{i % 3}" for i in range(rows)]
        write_annotations(tmp, name, pa.table(cols, schema=schema), spec=spec)
        used[st] = docs[st]
    write_schemas(tmp, used)
    materialize(tmp)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


# --------------------------------------------------------------------------- servers


def _serve(path: str, port: int, row_limit: int, latency: float) -> None:
    """Run ``tablekit serve`` (optionally delaying every request) until killed."""
    import asyncio

    import uvicorn

    from tablekit.server import create_app

    app = create_app(path, row_limit=row_limit)

    async def delayed(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and latency:
            await asyncio.sleep(latency)
        await app(scope, receive, send)

    uvicorn.run(delayed, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, path: str, row_limit: int, latency: float):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", path, str(self.port), str(row_limit), str(latency)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        import requests

        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{self.url}/info/api/v2/datastacks", timeout=2)
                break
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server did not start: {self.proc.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


# --------------------------------------------------------------------------- measured code

COMMON = r"""
import json, os, resource, sys, time, tempfile, warnings, logging
warnings.simplefilter("ignore"); logging.disable(logging.WARNING)
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
def peak():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
A = json.loads(sys.argv[1])
out = {}
"""

TABLEKIT = r"""
import tablekit, tablekit.backends.cave  # imports are outside the timings, as CAVEclient's are
url, ds = A["url"], A["datastack"]
def first_query(c):
    if A["what"] == "nucleus":
        return c.tables.nucleus_detection_v0(id=A["nucleus"]).query()
    return c.tables.synapses_pni_2(pre_pt_root_id=A["root"]).query()
if A["case"] == "startup":
    cache = A["cache"]
    t = time.perf_counter()
    c = tablekit.connect(ds, server=url, cache_dir=cache, progress=False)
    df = first_query(c)
    out["first"] = time.perf_counter() - t
    t = time.perf_counter()
    c = tablekit.connect(ds, server=url, cache_dir=cache, progress=False)
    df = first_query(c)
    out["second"] = time.perf_counter() - t
    out["rows"] = len(df)
else:
    c = tablekit.connect(ds, server=url, cache_dir=False, progress=False, page_size=A.get("page_size"), max_workers=A.get("workers", 4))
    c.version
    c.tables.synapses_pni_2
    kw = dict(split_positions=A["split"])
    if A.get("below") is not None:
        kw["filter_less_dict"] = {"id": A["below"]}
    reset_peak(); base = rss()
    t = time.perf_counter()
    df = c.query_table("synapses_pni_2", **kw)
    out["time"] = time.perf_counter() - t
    out["mem"] = peak() - base
    out["rows"] = len(df)
    out["requests"] = df.attrs.get("request", {}).get("requests", 1)
print("RESULT" + json.dumps(out))
"""

CAVECLIENT = r"""
from caveclient import CAVEclient
url, ds = A["url"], A["datastack"]
def first_query(c):
    if A["what"] == "nucleus":
        return c.materialize.tables.nucleus_detection_v0(id=A["nucleus"]).query()
    return c.materialize.tables.synapses_pni_2(pre_pt_root_id=A["root"]).query()
if A["case"] == "startup":
    t = time.perf_counter()
    c = CAVEclient(datastack_name=ds, server_address=url, write_server_cache=False)
    df = first_query(c)
    out["first"] = time.perf_counter() - t
    t = time.perf_counter()
    c = CAVEclient(datastack_name=ds, server_address=url, write_server_cache=False)
    df = first_query(c)
    out["second"] = time.perf_counter() - t
    out["rows"] = len(df)
else:
    c = CAVEclient(datastack_name=ds, server_address=url, write_server_cache=False)
    c.materialize.version
    c.materialize.get_table_metadata("synapses_pni_2")
    kw = dict(split_positions=A["split"])
    if A.get("below") is not None:
        kw["filter_less_dict"] = {"id": A["below"]}
    reset_peak(); base = rss()
    t = time.perf_counter()
    df = c.materialize.query_table("synapses_pni_2", **kw)
    out["time"] = time.perf_counter() - t
    out["mem"] = peak() - base
    out["rows"] = len(df)
print("RESULT" + json.dumps(out))
"""


def _run(python: str, code: str, args: dict[str, Any], home: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CAVE_TOKEN")}
    env["HOME"] = home
    env["TABLEKIT_NATIVE_CACHE"] = "0"
    proc = subprocess.run(
        [python, "-c", COMMON + code, json.dumps(args)], capture_output=True, text=True, env=env, timeout=1800
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT") :])
    raise RuntimeError(
        f"measurement failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synapses", type=int, default=2_000_000)
    ap.add_argument("--data", default=str(HERE / "_data" / "vs_caveclient"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--parts", default="abc", help="which measurements to run (default: abc)")
    ap.add_argument(
        "--latencies",
        default=f"0,{int(LATENCY * 1000)}",
        help="injected per-request latencies in ms (default: 0,50)",
    )
    ap.add_argument(
        "--tables",
        type=int,
        default=45,
        help="(a) also on a copy of the datastack with small tables added up to this many "
        "(minnie65_public has 45; 0: only the 5-table sample)",
    )
    ap.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        _serve(a.serve[0], int(a.serve[1]), int(a.serve[2]), float(a.serve[3]))
        return

    sys.path.insert(0, str(REPO / "tests"))
    from _interop_env import interop_python

    import tablekit

    cave_py = interop_python()
    data = Path(a.data)
    if not (data / "datastack.json").exists():
        print(f"writing a {a.synapses:,}-synapse datastack to {data} …", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tablekit",
                "sample",
                "--out",
                str(data),
                "--synapses",
                str(a.synapses),
                "--overwrite",
            ],
            check=True,
        )
    local = tablekit.connect(path=str(data))
    ds = local.datastack
    ids = local.query_table(SYN, select_columns=["id"])["id"].to_numpy()
    below = int(sorted(ids)[1_000_000]) if len(ids) > 1_000_000 else None
    syn = local.query_table(SYN, select_columns=["pre_pt_root_id"], limit=50_000)
    root = int(syn["pre_pt_root_id"][syn["pre_pt_root_id"] != 0].value_counts().index[0])
    total = len(ids)
    _prepare(local, root)
    nucleus = int(local.query_table("nucleus_detection_v0", select_columns=["id"], limit=1)["id"].iloc[0])
    wide = None  # (a) again on a copy with as many tables as a real datastack
    if "a" in a.parts and a.tables > len(local.get_tables()):
        wide = data.with_name(f"{data.name}-{a.tables}-tables")
        if not (wide / "datastack.json").exists():
            print(f"writing a copy with {a.tables} tables to {wide} …", file=sys.stderr)
            _add_tables(data, wide, a.tables)
        copy = tablekit.connect(path=str(wide))
        assert len(copy.get_tables()) == a.tables
        _prepare(copy, root)
    home = tempfile.mkdtemp(prefix="tk-bench-home-")
    results: list[tuple[str, str, float, float, str]] = []
    base_args = {"datastack": ds, "root": root, "nucleus": nucleus}

    def both(args: dict[str, Any], reps: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Alternate tablekit and CAVEclient runs (drift hits both alike)."""
        tk, cc = [], []
        for _ in range(reps):
            tk.append(_run(sys.executable, TABLEKIT, args, home))
            cc.append(_run(cave_py, CAVECLIENT, args, home))
        return tk, cc

    try:
        for latency in [float(x) / 1000 for x in a.latencies.split(",")]:
            tag = f"{int(latency * 1000)} ms"
            unlimited = Server(str(data), 10 * total, latency)
            limited = Server(str(data), LIMIT, latency)
            wide_server = (
                Server(str(wide), 10 * total, latency) if wide is not None and "a" in a.parts else None
            )
            try:
                url = unlimited.url
                one_m = {**base_args, "case": "download", "url": url, "below": below}
                both({**one_m, "split": True}, 1)  # warm the server (caches, DuckDB) for both clients
                # (a) start-up, on the sample and on its copy with a realistic number of tables
                for a_url, size in (
                    (url, ""),
                    (wide_server.url if wide_server else None, f", {a.tables} tables"),
                ):
                    if "a" not in a.parts or a_url is None:
                        continue
                    for what, label in (("nucleus", "a nucleus by id"), ("synapses", "synapses by root id")):
                        tk_rows, cc_rows = [], []
                        for _ in range(a.reps):
                            cache = tempfile.mkdtemp(prefix="tk-bench-cache-")
                            args = {
                                **base_args,
                                "case": "startup",
                                "url": a_url,
                                "what": what,
                                "cache": cache,
                            }
                            tk_rows.append(_run(sys.executable, TABLEKIT, args, home))
                            tk_rows[-1]["new_process"] = _run(sys.executable, TABLEKIT, args, home)["first"]
                            shutil.rmtree(cache, ignore_errors=True)
                            cc_rows.append(_run(cave_py, CAVECLIENT, args, home))
                        cold_cc = _median(cc_rows, "first")
                        where = f"[{tag}{size}]"
                        results.append(
                            (
                                f"(a) connect → {label}, cold {where}",
                                "s",
                                cold_cc,
                                _median(tk_rows, "first"),
                                "≥ 2.5×",
                            )
                        )
                        results.append(
                            (
                                f"(a) connect → {label}, warm, same process {where}",
                                "s",
                                _median(cc_rows, "second"),
                                _median(tk_rows, "second"),
                                "≥ 8×",
                            )
                        )
                        results.append(
                            (
                                f"(a) connect → {label}, warm, new process (disk cache) {where}",
                                "s",
                                cold_cc,
                                _median(tk_rows, "new_process"),
                                "≥ 8×",
                            )
                        )
                # (b) 1M rows
                for split in (False, True) if "b" in a.parts else ():
                    what = "split_positions=True" if split else "default (position arrays)"
                    tk, cc = both({**one_m, "split": split}, a.reps)
                    n = tk[0]["rows"]
                    assert all(r["rows"] == n for r in tk + cc), (tk, cc)
                    target = "≥ 1.2×" if split else "≥ 3×"
                    results.append(
                        (
                            f"(b) {n:,} rows, {what}: time [{tag}]",
                            "s",
                            _median(cc, "time"),
                            _median(tk, "time"),
                            target,
                        )
                    )
                    results.append(
                        (
                            f"(b) {n:,} rows, {what}: peak memory [{tag}]",
                            "MiB",
                            _median(cc, "mem"),
                            _median(tk, "mem"),
                            "≥ 1×",
                        )
                    )
                # (c) through the row limit
                if "c" not in a.parts:
                    continue
                args = {**base_args, "case": "download", "url": limited.url, "split": True, "below": None}
                _run(sys.executable, TABLEKIT, args, home)  # warm
                single = {**args, "url": url, "page_size": 10 * total}
                tk, one = [], []
                for _ in range(a.reps):
                    tk.append(_run(sys.executable, TABLEKIT, args, home))
                    one.append(_run(sys.executable, TABLEKIT, single, home))
                cc = _run(cave_py, CAVECLIENT, args, home)
                assert all(r["rows"] == total for r in tk + one), (tk, one)
                results.append(
                    (
                        f"(c) all {total:,} rows through a {LIMIT:,}-row limit vs one unlimited request [{tag}]",
                        "s",
                        _median(one, "time"),
                        _median(tk, "time"),
                        "≥ 0.7×",
                    )
                )
                results.append(
                    (
                        f"(c)   rows received: tablekit {tk[0]['rows']:,} of {total:,} in {tk[0]['requests']} requests; "
                        f"CAVEclient {cc['rows']:,} ({cc['time']:.2f} s) [{tag}]",
                        "",
                        0,
                        0,
                        "",
                    )
                )
            finally:
                unlimited.stop()
                limited.stop()
                if wide_server is not None:
                    wide_server.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if not a.keep_data:
            shutil.rmtree(data, ignore_errors=True)
            if wide is not None:
                shutil.rmtree(wide, ignore_errors=True)

    print(f"\n{'measurement':<100} {'baseline':>10} {'tablekit':>10} {'ratio':>7}  target")
    for name, unit, base, ours, target in results:
        if not unit:
            print(name)
            continue
        ratio = base / ours if ours else float("nan")
        print(f"{name:<100} {base:>9.3f}{unit[0]} {ours:>9.3f}{unit[0]} {ratio:>6.2f}×  {target}")
    print(
        "\nbaseline = CAVEclient 8.2.1, except (c): one unlimited tablekit request (ratio = throughput through the "
        "limit / unlimited). Memory: RSS growth during the call (MiB); ratio > 1 means tablekit used less."
    )


if __name__ == "__main__":
    main()
