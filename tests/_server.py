"""Test helper: a real ``tablekit serve`` (uvicorn) on 127.0.0.1 in a background thread.

>>> with running_server(path) as base_url:        # doctest: +SKIP
...     requests.get(base_url + "/materialize/api/versions").json()
[2, 3]

``create_app_kwargs`` go to :func:`tablekit.server.create_app` (``row_limit``, ``token``,
``cave_quirks``); :func:`serve_asgi` serves any ASGI app the same way. The socket is bound before
uvicorn starts (port 0: the OS picks a free port), so there is no race for the port; only loopback
is ever used.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["NO_CREATED", "assert_equal_but_created", "loopback_socket", "running_server", "serve_asgi"]

#: the columns the real server's merged frozen tables and its live answers do not have
#: (``merge_tables`` drops them), nor has ``tablekit serve --cave-quirks``: tablekit's HTTP backend
#: fills them with nulls and warns ("the server sent no column 'created'")
NO_CREATED = ("created", "created_ref")


def assert_equal_but_created(got: Any, want: Any) -> None:
    """``got`` (over a real or quirks server) equals ``want`` (the local engine) row for row and
    type for type, except that its :data:`NO_CREATED` columns are there and all null."""
    import pandas as pd

    gone = [c for c in NO_CREATED if c in want.columns]
    for c in gone:
        assert c in got.columns and got[c].isna().all(), f"{c}: {got[c].dropna().head().tolist()}"
    pd.testing.assert_frame_equal(got.drop(columns=gone), want.drop(columns=gone))


def loopback_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a free port, with ``TCP_NODELAY`` (accepted connections
    inherit it). Without it every kept-alive answer written in two parts (headers, then body) waits
    for the client's delayed ACK under Nagle's algorithm: ~42 ms a request here, against ~1.4 ms
    with it. asyncio sets ``TCP_NODELAY`` itself only on sockets whose ``proto`` is
    ``IPPROTO_TCP``, and ``socket.socket(AF_INET, SOCK_STREAM)`` has ``proto`` 0."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Run any ASGI app with uvicorn on 127.0.0.1 (an OS-chosen port) and yield its base URL."""
    import uvicorn

    sock = loopback_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
    server = uvicorn.Server(config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as e:  # pragma: no cover - surfaced below
            errors.append(e)

    thread = threading.Thread(target=run, name=f"tablekit-serve-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if errors or not thread.is_alive():
            raise RuntimeError(f"the test server did not start: {errors[0] if errors else 'thread exited'}")
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start within 30 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def running_server(path: Any, **create_app_kwargs: Any) -> Iterator[str]:
    """Serve ``path`` (a datastack directory or a ``tablekit.Client``) and yield its base URL."""
    from tablekit.server import create_app

    with serve_asgi(create_app(path, **create_app_kwargs)) as url:
        yield url
