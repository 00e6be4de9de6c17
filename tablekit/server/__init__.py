"""``tablekit serve``: a CAVE-compatible REST server over a local datastack.

It speaks the CAVE wire protocol (``cave-wire-protocol.md``) — the info, schema, materialization
(v2 paths CAVEclient uses, and v3) and chunkedgraph endpoints that queries and live queries need —
so that an unmodified CAVEclient (``CAVEclient("demo", server_address=base_url)``) and tablekit's
own HTTP backend can query a local datastack. Every query is answered by tablekit's own pipeline
(filter class → :class:`~tablekit.query.Query` → local engine), so the answers are the local
engine's: rows in ``id`` order and the not-in filter applied. ``cave_quirks=True`` instead
emulates the real server's wrong answers (ignored ``filter_notin_dict``, no ORDER BY, broken v2
query endpoints, version timestamps without a zero microsecond fraction) so that client-side
workarounds can be tested.

>>> from tablekit.server import create_app, serve         # doctest: +SKIP
>>> serve("path/to/datastack", port=8000)                  # doctest: +SKIP

The server binds 127.0.0.1 unless told otherwise; with ``token`` every request must carry it
(``Authorization: Bearer``, the ``middle_auth_token`` cookie or query parameter).
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette

    from ..client import Client

__all__ = ["add_serve_command", "create_app", "serve"]

DEFAULT_ROW_LIMIT = 200_000
SERVE_INSTALL = "pip install 'tablekit[serve]'"


def _require_serve_dependencies() -> None:
    """Import the server's dependencies (the ``serve`` extra), or say how to install them."""
    missing = []
    for module in ("starlette", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ModuleNotFoundError(
            f"tablekit serve needs {' and '.join(missing)}, which tablekit installs only with its "
            f"'serve' extra: {SERVE_INSTALL}",
            name=missing[0],
        )


def _client(path_or_client: Any) -> Client:
    from ..client import Client

    if isinstance(path_or_client, Client):
        return path_or_client
    import tablekit

    return tablekit.connect(path=os.fspath(path_or_client))


def create_app(
    path_or_client: Any,
    *,
    row_limit: int = DEFAULT_ROW_LIMIT,
    token: str | None = None,
    cave_quirks: bool = False,
) -> Starlette:
    """The ASGI application (Starlette) serving a datastack directory or a :class:`tablekit.Client`.

    ``row_limit`` caps every query's ``limit`` (CAVE's ``QUERY_LIMIT_SIZE``); a result that
    reaches it carries the ``201 - "Limited query to N rows`` Warning header. ``token``: require
    this auth token. ``cave_quirks``: emulate the real server's wrong answers (see module docs).
    """
    from ..errors import QueryError

    _require_serve_dependencies()
    from .app import ServerState, build_app

    if isinstance(row_limit, bool) or not isinstance(row_limit, int) or row_limit <= 0:
        raise QueryError(f"row_limit must be a positive int (rows per answer), got {row_limit!r}")
    if token is not None and not str(token).strip():
        raise QueryError("token must be a non-empty string (or None for no auth)")
    client = _client(path_or_client)
    state = ServerState(client, row_limit=row_limit, token=token, cave_quirks=cave_quirks)
    return build_app(state)


def serve(
    path_or_client: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    row_limit: int = DEFAULT_ROW_LIMIT,
    token: str | None = None,
    cave_quirks: bool = False,
    log_level: str = "info",
) -> None:
    """Run the server (uvicorn) until interrupted.

    The address is bound before anything is printed: a port in use raises :class:`OSError` saying
    so, and ``port=0`` serves on (and prints) the free port the system picked. Binding an address
    other than loopback without a ``token`` prints a warning: anyone who can reach it reads the
    datastack."""
    import logging

    _require_serve_dependencies()
    import uvicorn

    app = create_app(path_or_client, row_limit=row_limit, token=token, cave_quirks=cave_quirks)
    state = app.state.tablekit
    if token is None and not _is_loopback(host):
        print(
            f"tablekit serve: warning: {host} is not a loopback address and no token is required: anyone "
            "who can reach this machine can read the datastack. Pass --token (or $TABLEKIT_SERVER_TOKEN), "
            "or serve on 127.0.0.1",
            file=sys.stderr,
            flush=True,
        )
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=log_level.upper())
    shown = f"[{host}]" if ":" in host else host
    print(
        f"tablekit serve: datastack {state.datastack!r} at http://{shown}:{port}"
        + (" (token required)" if token else "")
        + (" — emulating CAVE server quirks" if cave_quirks else "")
        + f"; row limit {row_limit}.\n"
        f"  CAVEclient('{state.datastack}', server_address='http://{shown}:{port}'"
        + (", auth_token=...)" if token else ")")
        + "   (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn's access log prints query strings (which may hold a middle_auth_token): the app logs
    # requests itself, without them
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; OSError naming the address and the fix if it cannot be."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, OverflowError) as e:
        raise OSError(f"cannot serve on {host}:{port}: {e}; check --host and --port") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        why = "the port is in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise OSError(
            e.errno,
            f"cannot serve on {host}:{port}: {why}; stop what holds it, pick another --port, or pass "
            "--port 0 for a free one",
        ) from None
    return sock


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.demo and args.path:
        print("error: pass a datastack PATH or --demo, not both", file=sys.stderr)
        return 2
    if args.demo:
        from ..datastack.sample import ensure_demo

        path: Any = ensure_demo()
    elif args.path:
        path = args.path
    else:
        print("error: pass a datastack PATH, or --demo for the embedded demo datastack", file=sys.stderr)
        return 2
    try:
        _require_serve_dependencies()  # before the datastack is opened
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.row_limit <= 0:
        print(f"error: --row-limit must be a positive number of rows, got {args.row_limit}", file=sys.stderr)
        return 2
    if args.token is not None and not args.token.strip():
        print(
            "error: --token is empty; pass a non-empty token, or leave --token out for no auth",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be 0–65535 (0: a free port), got {args.port}", file=sys.stderr)
        return 2
    token = args.token if args.token is not None else os.environ.get("TABLEKIT_SERVER_TOKEN") or None
    try:
        serve(
            path,
            host=args.host,
            port=args.port,
            row_limit=args.row_limit,
            token=token,
            cave_quirks=args.cave_quirks,
            log_level=args.log_level,
        )
    except OSError as e:  # the address cannot be bound
        print(f"error: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


def add_serve_command(subparsers: Any) -> None:
    """Add ``tablekit serve`` to the CLI's subcommands."""
    s = subparsers.add_parser(
        "serve",
        help="serve a datastack over the CAVE REST API (for CAVEclient and tablekit's HTTP backend)",
        description=(
            "Serve a local datastack over the CAVE REST API (info, schema, materialization v2/v3, "
            "chunkedgraph). Point CAVEclient at it with server_address=http://HOST:PORT."
        ),
    )
    s.add_argument("path", nargs="?", help="datastack directory")
    s.add_argument("--demo", action="store_true", help="serve the embedded demo datastack")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument(
        "--row-limit",
        type=int,
        default=DEFAULT_ROW_LIMIT,
        help=f"cap on rows per query, like CAVE's QUERY_LIMIT_SIZE (default {DEFAULT_ROW_LIMIT})",
    )
    s.add_argument(
        "--token",
        help="require this auth token (default: $TABLEKIT_SERVER_TOKEN if set; otherwise no auth)",
    )
    s.add_argument(
        "--cave-quirks",
        action="store_true",
        help="emulate the real CAVE server's wrong answers (ignored not-in filter, unordered rows, broken v2 queries)",
    )
    s.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default info)",
    )
    s.set_defaults(func=_cmd_serve)
