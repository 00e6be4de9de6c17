"""The real-server harness leaves nothing behind when the test run is killed (tests/_real_server.py
``start_watchdog``): a process that started a private PostgreSQL cluster and an app is killed with
SIGKILL (no ``close``), and its cluster, app and directory are gone shortly after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import _real_server
import pytest

pytestmark = pytest.mark.realserver

HERE = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as gone
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ")[-1][0] != "Z"


def test_a_killed_test_run_leaves_no_cluster_or_app(tmp_path):
    reason = _real_server.unavailable()
    if reason:
        pytest.skip(f"real server: {reason}")
    _real_server.ensure_postgis()
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(HERE)!r})
        import _real_server
        pg = _real_server.PostgresCluster()
        _real_server.start_watchdog(pg.dir)
        app = subprocess.Popen(["sleep", "600"])  # stands for the Flask app
        with open(pg.dir / "pids", "a") as fh:
            fh.write(f"{{app.pid}}\\n")
        postmaster = (pg.data / "postmaster.pid").read_text().split()[0]
        print(pg.dir, app.pid, postmaster, flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 3, line
        pg_dir, app, postmaster = Path(line[0]), int(line[1]), int(line[2])
        assert pg_dir.exists() and _alive(app) and _alive(postmaster)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (pg_dir.exists() or _alive(app) or _alive(postmaster)):
        time.sleep(0.5)
    assert not _alive(app), "the app outlived the killed test run"
    assert not _alive(postmaster), "the PostgreSQL cluster outlived the killed test run"
    assert not pg_dir.exists(), f"{pg_dir} was left behind"
