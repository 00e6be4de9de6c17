"""CAVEclient → the real server == CAVEclient → ``tablekit serve --cave-quirks`` (issue 13 §2).

An unmodified CAVEclient 8.2.1 (the interop venv, tests/_interop_env.py) makes the same calls —
the tables and views interfaces, ``query_table`` with every filter dict, reference tables,
``live_live_query``, metadata — against the real MaterializationEngine (the ``real_server``
fixture, tests/_real_server.py) and against ``tablekit serve --cave-quirks`` of the same
datastack with the same row limit (``QUERY_LIMIT_SIZE``). The calls, the comparison (DataFrames
whole: columns and order, dtypes, values, attrs; warnings in order; errors) and the known
differences, each of which must be seen, are in tests/interop/real_checks.py.
"""

from __future__ import annotations

import pytest
from _interop_env import run_checks
from _server import running_server
from conftest import REAL_SERVER_QUERY_LIMIT

pytestmark = pytest.mark.realserver

TOKEN = "real-caveclient-token"


def test_caveclient_real_server_equals_serve_quirks(path, real_server, tmp_path):
    with running_server(path, cave_quirks=True, row_limit=REAL_SERVER_QUERY_LIMIT) as serve:
        env = {
            "TABLEKIT_REAL_BASE": real_server.url,
            "TABLEKIT_QUIRKS_BASE": serve,
            "TABLEKIT_INTEROP_PATH": str(path),
            "TABLEKIT_INTEROP_TOKEN": TOKEN,
        }
        run_checks("real_checks.py", env, tmp_path, timeout=1200)
