"""Run MaterializationEngine's Flask app on 127.0.0.1, one request at a time.

Run in the *server's* virtual environment by ``tests/_real_server.py``::

    <server venv>/bin/python tests/realserver_app.py SETTINGS_PYFILE

The settings file (a Flask pyfile) and the environment (``AUTH_DISABLED``, ``PCG_SERVER_URL``,
``GLOBAL_SERVER_URL``, ``QUEUE_LENGTH_LIMIT``…) are written by the harness. ``run.py`` of the
snapshot binds 0.0.0.0 with a self-signed certificate and threads; this serves plain HTTP on
loopback without threads (threaded, werkzeug leaked a database connection per request), and
HTTP/1.0, so that one kept-alive connection cannot hold the only worker.
It binds port 0 (the OS picks a free port: no race with other processes for it) and prints
``READY <port>`` when the socket is listening.
"""

from __future__ import annotations

import os
import sys
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    settings = sys.argv[1]
    os.environ["MATERIALIZATION_ENGINE_SETTINGS"] = settings
    if os.environ.get("TABLEKIT_LIMIT_USER_0"):
        # With AUTH_DISABLED every request is user 0 (middle_auth_client), whose rate-limit key
        # (limiter.py _user_key: the id) flask-limiter reads as empty and skips ("Empty value
        # found in parameters"): no limit ever applies. A deployment's users have ids; key user 0
        # by its id's text so LIMITER_CATEGORIES applies. Set before the API modules bind it.
        import flask
        import materializationengine.limiter as limiter

        limiter._user_key = lambda: str(flask.g.auth_user["id"])
    from materializationengine.app import create_app
    from werkzeug.serving import make_server

    app = create_app()
    server = make_server("127.0.0.1", 0, app, threaded=False, processes=1)
    print(f"READY {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
