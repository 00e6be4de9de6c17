"""Interoperability: an unmodified CAVEclient (8.2.1, in its own venv with pandas 2) against
``tablekit serve``. The checks themselves are tests/interop/interop_checks.py; they run under the
interop venv's python (tests/_interop_env.py builds it once, ~1 min) and compare every CAVEclient
answer with tablekit's local engine, computed inside that venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from _interop_env import interop_python
from _server import running_server
from test_pending_lookups import build_pending_datastack

HERE = Path(__file__).resolve().parent
TOKEN = "interop-test-token"


def test_caveclient_against_tablekit_serve(path, tmp_path):
    py = interop_python()
    home = tmp_path / "home"
    home.mkdir()
    pending = build_pending_datastack(tmp_path / "pending")  # annotations whose lookup is pending
    with (
        running_server(path, token=TOKEN) as base,
        running_server(path, token=TOKEN, cave_quirks=True) as quirks,
        running_server(pending, token=TOKEN) as pending_base,
    ):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(
            HOME=str(home),
            TABLEKIT_INTEROP_BASE=base,
            TABLEKIT_INTEROP_QUIRKS_BASE=quirks,
            TABLEKIT_INTEROP_PATH=str(path),
            TABLEKIT_INTEROP_PENDING_BASE=pending_base,
            TABLEKIT_INTEROP_PENDING_PATH=pending,
            TABLEKIT_INTEROP_TOKEN=TOKEN,
            PYTHONDONTWRITEBYTECODE="1",
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                py,
                "-m",
                "pytest",
                "-c",
                str(HERE / "interop" / "pytest.ini"),
                str(HERE / "interop" / "interop_checks.py"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=900,
        )
    print(proc.stdout[-3000:], file=sys.stderr)
    print(f"[interop] checks ran in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    assert proc.returncode == 0, proc.stdout[-12000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
