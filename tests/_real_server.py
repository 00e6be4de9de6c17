"""The real CAVE materialization service (MaterializationEngine), built and started for the tests.

The snapshot lives beside the repository at ``<repo>/../shared/peers/MaterializationEngine``
(``../shared/peers/README.md``). Everything it needs is made once per machine and cached under
``$TABLEKIT_REALSERVER_DIR`` (default ``${XDG_CACHE_HOME:-~/.cache}/tablekit-realserver``):

* PostgreSQL 15 with PostGIS: ``apt-get install -y postgresql-15-postgis-3`` when it is missing
  and we are root (CI machines are fresh Debian);
* a writable copy of the snapshot and its virtual environment (Python 3.12 from pyenv,
  ``uv sync --frozen --no-default-groups`` from its ``uv.lock``; ``uv`` comes from a small
  bootstrap venv), rebuilt when ``pyproject.toml``/``uv.lock``/the sources change.

Per test session: :class:`RealServer` starts a private PostgreSQL cluster (a temporary data
directory, a free port, trust auth on 127.0.0.1; run as the ``postgres`` system user when we are
root, as PostgreSQL refuses root), loads a tablekit datastack into it with
``tests/realserver_load.py`` (run in the server's venv: dynamicannotationdb creates the tables, COPY
fills them), starts the Flask app (``create_app()``, one request at a time) with ``AUTH_DISABLED``,
its info/schema/chunkedgraph services pointed at a ``tablekit serve`` of the same datastack, and a
routing proxy so one address serves ``/materialize/*`` from the real service and the rest from
``tablekit serve``. :meth:`RealServer.close` stops all of it.

:func:`unavailable` says in one line why this cannot run here (no peers, no PostGIS and not root,
no Python 3.12), or returns None.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEERS = (REPO.parent / "shared" / "peers").resolve()
ME_SOURCE = PEERS / "MaterializationEngine"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGIS_CONTROL = Path("/usr/share/postgresql/15/extension/postgis.control")
POSTGIS_PACKAGE = "postgresql-15-postgis-3"
PYTHON_VERSION = "3.12.1"
UV_REQUIREMENT = "uv>=0.5"
LOADER = Path(__file__).resolve().parent / "realserver_load.py"
APP = Path(__file__).resolve().parent / "realserver_app.py"


def cache_dir() -> Path:
    """Where the per-machine build lives (``$TABLEKIT_REALSERVER_DIR``)."""
    env = os.environ.get("TABLEKIT_REALSERVER_DIR")
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(base) / "tablekit-realserver").resolve()


def _say(msg: str) -> None:
    print(f"[real server] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    t0 = time.perf_counter()
    _say(f"{what} …")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"real server: {what} failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}")
    _say(f"{what}: done in {time.perf_counter() - t0:.1f} s")
    return proc.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _python312() -> Path | None:
    pyenv = shutil.which("pyenv") or str(Path.home() / ".pyenv" / "bin" / "pyenv")
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        prefix = subprocess.run(
            [pyenv, "prefix", PYTHON_VERSION], capture_output=True, text=True, check=True
        ).stdout.strip()
        py = Path(prefix) / "bin" / "python3.12"
        if py.exists():
            return py
    found = shutil.which("python3.12")
    return Path(found) if found else None


def unavailable() -> str | None:
    """One line saying why the real server cannot run on this machine, or None."""
    if not (ME_SOURCE / "uv.lock").exists():
        return f"the MaterializationEngine snapshot is not at {ME_SOURCE} (../shared/peers)"
    if not (PG_BIN / "initdb").exists() or not POSTGIS_CONTROL.exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            return f"PostgreSQL 15 + PostGIS is not installed and we cannot apt-get {POSTGIS_PACKAGE}"
    if _python312() is None:
        return f"no Python 3.12 (pyenv prefix {PYTHON_VERSION}) for MaterializationEngine"
    return None


def ensure_postgis() -> None:
    """Install PostgreSQL 15 + PostGIS from Debian's packages when they are missing (as root)."""
    if (PG_BIN / "initdb").exists() and POSTGIS_CONTROL.exists():
        return
    with _locked(cache_dir() / "apt.lock"):
        if (PG_BIN / "initdb").exists() and POSTGIS_CONTROL.exists():
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", POSTGIS_PACKAGE]
        try:
            _run(cmd, f"apt-get install {POSTGIS_PACKAGE}", env=env)
        except RuntimeError:  # a fresh machine may have no package lists yet
            _run(["apt-get", "update"], "apt-get update", env=env)
            _run(cmd, f"apt-get install {POSTGIS_PACKAGE}", env=env)


def _source_hash() -> str:
    h = hashlib.sha256()
    files = [ME_SOURCE / "pyproject.toml", ME_SOURCE / "uv.lock"]
    files += sorted(p for p in (ME_SOURCE / "materializationengine").rglob("*.py"))
    for p in files:
        h.update(str(p.relative_to(ME_SOURCE)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def server_python() -> Path:
    """Build (once per machine) and return the Python of MaterializationEngine's venv."""
    root = cache_dir()
    src, venv, boot = root / "MaterializationEngine", root / "venv", root / "bootstrap"
    stamp = root / "stamp.json"
    py312 = _python312()
    if py312 is None:
        raise RuntimeError(unavailable() or "no Python 3.12")
    want = {"source": _source_hash(), "python": str(py312), "uv": UV_REQUIREMENT}
    with _locked(root / "build.lock"):
        with contextlib.suppress(OSError, ValueError):
            if json.loads(stamp.read_text()) == want and (venv / "bin" / "python").exists():
                return venv / "bin" / "python"
        t0 = time.perf_counter()
        stamp.unlink(missing_ok=True)
        for d in (src, venv):
            if d.exists():
                shutil.rmtree(d)
        uv = boot / "bin" / "uv"
        if not uv.exists():
            _run([sys.executable, "-m", "venv", str(boot)], "creating the bootstrap venv for uv")
            _run(
                [str(boot / "bin" / "python"), "-m", "pip", "install", "-q", UV_REQUIREMENT], "installing uv"
            )
        shutil.copytree(
            ME_SOURCE, src, ignore=shutil.ignore_patterns("__pycache__", ".git", "static", "templates")
        )
        for sub in ("static", "templates"):  # Flask may look for them; small
            if (ME_SOURCE / sub).exists():
                shutil.copytree(ME_SOURCE / sub, src / sub)
        for p in [src, *src.rglob("*")]:  # the snapshot is read-only; uv writes beside it
            p.chmod(p.stat().st_mode | 0o200)
        env = {**os.environ, "UV_PYTHON": str(py312), "UV_PROJECT_ENVIRONMENT": str(venv)}
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        _run(
            [str(uv), "sync", "--frozen", "--no-default-groups", "--python", str(py312)],
            "uv sync --frozen --no-default-groups (MaterializationEngine's uv.lock)",
            env=env,
            cwd=src,
        )
        stamp.write_text(json.dumps(want))
        _say(f"MaterializationEngine venv ready in {time.perf_counter() - t0:.0f} s")
        return venv / "bin" / "python"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """A private PostgreSQL cluster: temporary data directory, free port, trust auth on 127.0.0.1.

    Run as the ``postgres`` system user when we are root (PostgreSQL refuses root). The machine's
    own cluster is never touched. :meth:`stop` stops it and removes the directory.
    """

    def __init__(self) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="tablekit-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        _run(
            [
                *self._as,
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            "initdb (private cluster)",
        )
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        _run(
            [
                *self._as,
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
            f"starting PostgreSQL on 127.0.0.1:{self.port}",
        )

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                [*self._as, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


def _watch(parent: int, pg_dir: Path) -> None:
    """Run detached (``python tests/_real_server.py --watch PARENT DIR``): once ``parent`` (the test
    process) is gone without closing (killed), kill the processes listed in ``DIR/pids`` (the
    app), stop the cluster in ``DIR/data`` (immediate mode) and remove the directory. Exits when
    the directory goes away (a normal close) or after cleaning up."""
    import signal

    while pg_dir.exists():
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        return
    pids = (pg_dir / "pids").read_text().split() if (pg_dir / "pids").exists() else []
    for pid in map(int, pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    data = pg_dir / "data"
    if data.exists():
        user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    shutil.rmtree(pg_dir, ignore_errors=True)


def start_watchdog(pg_dir: Path) -> subprocess.Popen[bytes]:
    """Start :func:`_watch` for this process in its own session (so a signal to the test run's
    process group does not reach it): a killed pytest leaves no cluster or app behind."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--watch", str(os.getpid()), str(pg_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class _Proxy:
    """One loopback address: ``/materialize/*`` to the real service, the rest to ``tablekit serve``.

    The ``Host`` header is passed on unchanged, so ``tablekit serve``'s info document names this
    address as ``local_server``. One upstream connection per request (the real service runs one
    request at a time).
    """

    def __init__(self, materialize: str, rest: str) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        routes = {True: urlsplit(materialize), False: urlsplit(rest)}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                up = routes[self.path.startswith("/materialize")]
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=600)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response_only(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="realserver-proxy", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


_SETTINGS = """\
SQLALCHEMY_DATABASE_URI = {db_uri!r}
SQLALCHEMY_TRACK_MODIFICATIONS = False
GLOBAL_SERVER_URL = {serve!r}
LOCAL_SERVER_URL = {serve!r}
INFOSERVICE_ENDPOINT = {serve!r} + "/info"
SCHEMA_SERVICE_ENDPOINT = {serve!r} + "/schema/"
SEGMENTATION_ENDPOINT = {serve!r} + "/segmentation"
ANNO_ENDPOINT = {serve!r} + "/annotation/"
AUTH_URI = {serve!r} + "/auth"
DATASTACKS = [{datastack!r}]
TEST_DB_NAME = {aligned_volume!r}
STAGING_DATABASE_NAME = ""
RATELIMIT_STORAGE_URI = "memory://"
CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = "cache+memory://"
BEAT_SCHEDULES = []
QUERY_LIMIT_SIZE = {query_limit!r}
DB_CONNECTION_POOL_SIZE = 5
DB_CONNECTION_MAX_OVERFLOW = 5
MEMORY_AUDIT_ENABLED = False
TESTING = True
"""


class RealServer:
    """The real materialization service over a tablekit datastack, on 127.0.0.1.

    ``url`` answers ``/materialize/*`` from MaterializationEngine and everything else (info,
    schema, chunkedgraph) from a ``tablekit serve`` of the same datastack. ``load_report`` is what
    the loader put in the databases. ``env`` adds to the service's environment (its configuration,
    such as ``LIMITER_CATEGORIES``). :meth:`close` stops the service, the proxy, ``tablekit serve``
    and the PostgreSQL cluster.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, query_limit: int = 200_000, env: dict[str, str] | None = None
    ) -> None:
        from _server import running_server

        self.timings: dict[str, float] = {}
        self._closers: list = []
        self._proc: subprocess.Popen[str] | None = None
        try:
            t0 = time.perf_counter()
            ensure_postgis()
            self.timings["postgis"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            py = server_python()
            self.timings["venv"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            pg = PostgresCluster()
            self._closers.append(pg.stop)
            start_watchdog(pg.dir)
            info = json.loads((Path(path) / "datastack.json").read_text())
            out = _run([str(py), str(LOADER), pg.uri, str(path)], "loading the datastack into PostgreSQL")
            self.load_report = json.loads(out.strip().splitlines()[-1])
            self.timings["databases"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            serve_cm = running_server(path)
            serve = serve_cm.__enter__()
            self._closers.append(lambda: serve_cm.__exit__(None, None, None))
            settings = pg.dir / "materialize.cfg"
            settings.write_text(
                _SETTINGS.format(
                    db_uri=pg.uri.rpartition("/")[0] + "/" + info["aligned_volume"],
                    serve=serve,
                    datastack=info["name"],
                    aligned_volume=info["aligned_volume"],
                    query_limit=query_limit,
                )
            )
            env = {
                **os.environ,
                "AUTH_DISABLED": "true",
                "QUEUE_LENGTH_LIMIT": "10000",
                "PCG_SERVER_URL": serve,
                "GLOBAL_SERVER_URL": serve,
                "LOCAL_SERVER_URL": serve,
                "NO_GCE_CHECK": "true",
                "FLASK_CONFIGURATION": "default",
                "HOME": str(pg.dir),
                **(env or {}),  # e.g. LIMITER_CATEGORIES (the service's own rate limits)
            }
            for k in ("VIRTUAL_ENV", "PYTHONPATH", "TABLEKIT_CACHE_DIR", "DAF_CREDENTIALS"):
                env.pop(k, None)
            self.log = pg.dir / "materialize.log"
            logf = open(self.log, "w")
            self._proc = subprocess.Popen(
                [str(py), str(APP), str(settings)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=str(pg.dir),
            )
            self._closers.append(self._stop_app)
            self._closers.append(logf.close)
            with open(pg.dir / "pids", "a") as fh:  # for the watchdog
                fh.write(f"{self._proc.pid}\n")
            port = self._wait_up()
            proxy = _Proxy(f"http://127.0.0.1:{port}", serve)
            self._closers.append(proxy.close)
            self.url = proxy.url
            self.materialize_url = f"http://127.0.0.1:{port}"
            self.serve_url = serve
            self.datastack = info["name"]
            self.pg_uri = pg.uri  # the cluster (database postgres): frozen databases are {datastack}__mat{v}
            self.python = py  # the service's interpreter (its venv)
            self.timings["start"] = time.perf_counter() - t0
            _say("up: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()))
        except BaseException:
            self.close()
            raise

    def _wait_up(self) -> int:
        """Wait for the app's ``READY <port>`` line and its first answer; return the port."""
        import re
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + 300
        port = None
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"MaterializationEngine exited at start:\n{self.log.read_text()[-6000:]}")
            if port is None:
                m = re.search(r"^READY (\d+)$", self.log.read_text(), re.M)
                port = int(m.group(1)) if m else None
            if port is not None:
                try:
                    url = f"http://127.0.0.1:{port}/materialize/version"
                    with urllib.request.urlopen(url, timeout=5) as r:
                        if r.status == 200:
                            return port
                except (urllib.error.URLError, OSError):
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"MaterializationEngine did not answer in 300 s:\n{self.log.read_text()[-6000:]}"
                )
            time.sleep(0.25)

    def _stop_app(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def close(self) -> None:
        while self._closers:
            with contextlib.suppress(Exception):
                self._closers.pop()()


if __name__ == "__main__" and sys.argv[1:2] == ["--watch"]:
    _watch(int(sys.argv[2]), Path(sys.argv[3]))
