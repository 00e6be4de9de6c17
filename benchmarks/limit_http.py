"""``query(limit=N, offset=K)`` over HTTP: requests, bytes and time, tablekit vs CAVEclient 8.2.1 (issue 15, item 2).

    python benchmarks/limit_http.py [--reps 3] [--offset 150000]

The embedded ``demo`` datastack (200,000 synapses) served three ways by ``tablekit serve`` in its
own process on 127.0.0.1: rows in ``id`` order (the default row limit, 200,000), and
``--cave-quirks`` (no ORDER BY: every answer shuffled, as the real server may) with the default
row limit and with ``--row-limit 1000``. Each behind a loopback proxy (tests/_fault_proxy.py,
no faults) that counts the query requests and the bytes of their answers. For ``limit=5`` and
for a 5-row page at ``--offset``: tablekit's table interface (this Python) and CAVEclient's
``query_table`` (the interop venv's Python, tests/_interop_env.py), each in a fresh process,
its client built and the table's metadata fetched before the timing (warm: connection set up,
metadata cached; the server's native copies built by a first query before anything is timed).
Prints requests, bytes and the best of ``--reps`` wall times for each side, and the ratios
(tablekit / CAVEclient) measured in this run. CAVEclient's rows are whatever the server sends
(not the first rows by id when the server shuffles); tablekit's are checked against them when
the server orders rows. Run it with ``PYTHONPATH=<other tree>`` to measure another tablekit
(the proxy and the interop venv come from this tree).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SYN = "synapses_pni_2"

COMMON = r"""
import json, sys, time, warnings, logging
warnings.simplefilter("ignore"); logging.disable(logging.WARNING)
A = json.loads(sys.argv[1])
"""

TABLEKIT = r"""
import tablekit
c = tablekit.connect("demo", server=A["url"], cache_dir=False, progress=False)
c.tables.synapses_pni_2
def run():
    return c.tables.synapses_pni_2().query(offset=A["offset"], limit=A["limit"])
"""

CAVECLIENT = r"""
from caveclient import CAVEclient
c = CAVEclient(datastack_name="demo", server_address=A["url"], write_server_cache=False)
c.materialize.version
c.materialize.get_table_metadata("synapses_pni_2")
def run():
    return c.materialize.query_table("synapses_pni_2", offset=A["offset"], limit=A["limit"])
"""

TIMED = r"""
import urllib.error, urllib.request
def mark(what):  # the proxy counts what lies between two marks (the server answers 404)
    try:
        urllib.request.urlopen(A["url"] + "/__mark__/" + what).read()
    except urllib.error.HTTPError:
        pass
times = []
for i in range(A["reps"]):
    mark(f"start{i}")
    t = time.perf_counter()
    df = run()
    times.append(time.perf_counter() - t)
    mark(f"end{i}")
print("RESULT" + json.dumps({"time": min(times), "ids": [int(x) for x in df["id"]], "rows": len(df)}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``tablekit serve --demo`` in its own process."""

    def __init__(self, *flags: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "tablekit", "serve", "--demo", "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tablekit serve {' '.join(flags)} did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def _run(python: str, code: str, args: dict[str, Any], home: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CAVE_TOKEN")}
    if "caveclient" in code:
        env.pop("PYTHONPATH", None)
    env["HOME"] = home
    proc = subprocess.run(
        [python, "-c", COMMON + code + TIMED, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,  # not this tree: the tablekit measured is the installed one, or PYTHONPATH's
        timeout=1800,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT") :])
    raise RuntimeError(
        f"measurement failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def _between(forwarded: list[tuple[str, str, int]], i: int) -> tuple[int, int]:
    """Query requests and answer bytes between the marks of repetition ``i`` (the last one)."""
    targets = [t for _, t, _ in forwarded]
    a, b = targets.index(f"/__mark__/start{i}"), targets.index(f"/__mark__/end{i}")
    got = [n for m, t, n in forwarded[a + 1 : b] if m == "POST" and "/query" in t]
    return len(got), sum(got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--offset", type=int, default=150_000)
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from _fault_proxy import FaultProxy
    from _interop_env import interop_python

    import tablekit

    cave_py = interop_python()
    local = tablekit.connect("demo")
    for col in ("pre_pt_root_id", "post_pt_root_id"):  # the native copies, built before any timing
        local.tables[SYN](**{col: 1}).query(limit=1)
    local.backend.wait_for_copies()
    print(f"tablekit {tablekit.__version__} from {tablekit.__file__}; CAVEclient 8.2.1 ({cave_py})")
    print(
        f"{'server':<28}{'query':<22}{'tablekit req / bytes / ms':>28}{'CAVEclient req / bytes / ms':>30}"
        f"{'ratio bytes':>13}{'ratio ms':>10}  exact"
    )
    home = tempfile.mkdtemp(prefix="tk-limit-home-")
    for label, flags in (
        ("serve (id order)", ()),
        ("serve --cave-quirks", ("--cave-quirks",)),
        ("serve --cave-quirks 1000", ("--cave-quirks", "--row-limit", "1000")),
    ):
        server = Server(*flags)
        try:
            proxy = FaultProxy(server.url, rate=0.0)
            with proxy as url:
                for offset, limit in ((0, 5), (a.offset, 5)):
                    args = {"url": url, "offset": offset, "limit": limit, "reps": a.reps}
                    want = local.tables[SYN]().query(offset=offset, limit=limit)["id"].tolist()
                    row = []
                    for python, code in ((sys.executable, TABLEKIT), (cave_py, CAVECLIENT)):
                        del proxy.forwarded[:]
                        got = _run(python, code, args, home)
                        n, size = _between(proxy.forwarded, a.reps - 1)
                        row.append((n, size, got["time"] * 1e3, got["ids"] == want))
                    (tn, tb, tt, tok), (cn, cb, ct, cok) = row
                    print(
                        f"{label:<28}{f'offset={offset} limit={limit}':<22}"
                        f"{f'{tn} / {tb:,} / {tt:.0f}':>28}{f'{cn} / {cb:,} / {ct:.0f}':>30}"
                        f"{tb / cb:>12.2f}x{tt / ct:>9.2f}x  tablekit {tok}, CAVEclient {cok}"
                    )
        finally:
            server.stop()
    print(
        "\nexact: the rows are those of the local engine (the first by id after offset). Warm on both sides: "
        "client built, metadata fetched, server copies built; best of reps; bytes of the last repetition."
    )


if __name__ == "__main__":
    main()
