"""Issue 13 §3 item 11 against the *real* MaterializationEngine: a rate-limit refusal.

The service limits its query endpoints per user and category with flask-limiter, configured by
``LIMITER_CATEGORIES`` (``limiter.py`` ``limit_by_category``). Its catch-all (``common.py``
``unhandled_exception``) answers flask-limiter's ``TooManyRequests`` as HTTP 500 with the message
``429 Too Many Requests: …``. A real server with a limit of 2 queries a minute shows that shape on
the wire, and that tablekit retries it and then raises :class:`~tablekit.errors.RateLimitError`
(``tests/test_conformance.py`` asks the same of a canned server). With ``AUTH_DISABLED`` the service
applies no limit at all (every request is user 0, an empty key to flask-limiter), so the harness
keys user 0 by its id's text (``tests/realserver_app.py``, ``TABLEKIT_LIMIT_USER_0``).
"""

from __future__ import annotations

import json

import pytest
import requests

import tablekit
from tablekit.errors import RateLimitError

pytest.importorskip("_real_server", reason="the real-server harness (tests/_real_server.py) is absent")
import _real_server

pytestmark = [
    pytest.mark.realserver,
    pytest.mark.filterwarnings("ignore:the server sent no column 'created"),
]

NUC = "nucleus_detection_v0"
PER_MINUTE = 2


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    reason = _real_server.unavailable()
    if reason:
        pytest.skip(f"real server: {reason}")
    from tablekit.datastack.sample import build_sample

    path = build_sample(tmp_path_factory.mktemp("real-ratelimit") / "demo", synapses=2_000, seed=3)
    limits = json.dumps({"query": f"{PER_MINUTE}/minute", "fast_query": f"{PER_MINUTE}/minute"})
    # TABLEKIT_LIMIT_USER_0: with AUTH_DISABLED no limit applies (tests/realserver_app.py says why)
    server = _real_server.RealServer(path, env={"LIMITER_CATEGORIES": limits, "TABLEKIT_LIMIT_USER_0": "1"})
    try:
        yield server, tablekit.connect(path=path)
    finally:
        server.close()


def test_a_rate_limited_query_is_a_500_then_a_rate_limit_error(limited):
    server, local = limited
    url = (
        f"{server.url}/materialize/api/v3/datastack/{server.datastack}/version/{local.version}"
        f"/table/{NUC}/query"
    )
    flags = {"return_pyarrow": "True", "arrow_format": "True", "split_positions": "True"}
    answers = [requests.post(url, params=flags, json={}, timeout=60) for _ in range(PER_MINUTE + 1)]
    assert [r.status_code for r in answers[:PER_MINUTE]] == [200] * PER_MINUTE
    refused = answers[-1]
    assert refused.status_code == 500  # not 429: the catch-all turns it into a 500
    body = refused.json()
    assert body["code"] == 500 and body["message"].startswith("429 Too Many Requests")
    assert f"{PER_MINUTE} per 1 minute" in body["message"]

    tk = tablekit.connect(
        server.datastack, server=server.url, cache_dir=False, progress=False, max_retries=1, backoff=0.1
    )
    with pytest.raises(RateLimitError, match="429 Too Many Requests"):
        tk.tables[NUC]().query()
