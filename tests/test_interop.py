"""Interoperability: an unmodified CAVEclient (8.2.1, in its own venv with pandas 2) against
``tablekit serve``. The checks themselves are tests/interop/interop_checks.py; they run under the
interop venv's python (tests/_interop_env.py builds it once, ~1 min; ``run_checks`` runs them) and
compare every CAVEclient answer with tablekit's local engine, computed inside that venv.
"""

from __future__ import annotations

from _interop_env import run_checks
from _server import running_server
from test_pending_lookups import build_pending_datastack

TOKEN = "interop-test-token"


def test_caveclient_against_tablekit_serve(path, tmp_path):
    pending = build_pending_datastack(tmp_path / "pending")  # annotations whose lookup is pending
    with (
        running_server(path, token=TOKEN) as base,
        running_server(path, token=TOKEN, cave_quirks=True) as quirks,
        running_server(pending, token=TOKEN) as pending_base,
    ):
        env = {
            "TABLEKIT_INTEROP_BASE": base,
            "TABLEKIT_INTEROP_QUIRKS_BASE": quirks,
            "TABLEKIT_INTEROP_PATH": str(path),
            "TABLEKIT_INTEROP_PENDING_BASE": pending_base,
            "TABLEKIT_INTEROP_PENDING_PATH": str(pending),
            "TABLEKIT_INTEROP_TOKEN": TOKEN,
        }
        run_checks("interop_checks.py", env, tmp_path)
