"""The network under the CAVE backend: :class:`Request`, :class:`Response`, the :class:`Transport`
protocol (one method, :meth:`Transport.send`; tests can pass any object that has it) and its
urllib3 implementation (pools, proxies from the environment, certificates, pre-connection), with
:func:`map_transport_error` turning urllib3's failures into :class:`~tablekit.errors.HTTPError`
subclasses."""

from __future__ import annotations

# urllib3 checks host names with the idna codec: loaded with this module, not lazily inside the
# first request (or a preconnect thread)
import _thread
import encodings.idna  # noqa: F401
import http.client
import json
import logging
import os
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import unquote, urlencode, urlsplit

import attrs
import urllib3

from ...errors import ConnectionFailedError, HTTPError, RequestTimeoutError

logger = logging.getLogger("tablekit.http")

__all__ = ["Request", "Response", "Transport", "Urllib3Transport", "map_transport_error", "shared_transport"]


def pairs(v: Any) -> tuple[tuple[str, str], ...]:
    if v is None:
        return ()
    items = v.items() if isinstance(v, Mapping) else v
    return tuple((str(k), str(x)) for k, x in items)


@attrs.frozen
class Request:
    """One HTTP request: what a transport sends. ``params`` are ordered (name, value) pairs."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=pairs)
    json: Any = attrs.field(default=None, eq=False)
    data: bytes | None = attrs.field(default=None, eq=False, repr=False)
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=pairs)


@attrs.frozen
class Response:
    """One HTTP response. ``headers`` maps a lower-case name to every value sent under it, one
    per header line (repeated ``Warning`` lines stay apart)."""

    status: int
    url: str
    headers: Mapping[str, tuple[str, ...]]
    content: bytes = attrs.field(repr=False)
    #: what the session's ``read`` made of the body while checking it whole (the decoded Arrow
    #: table of a query answer), so that it is parsed once; None: not read
    parsed: Any = attrs.field(default=None, eq=False, repr=False)

    def header(self, name: str) -> str | None:
        """All values of a header joined with ``", "`` (as ``requests`` does), or ``None``."""
        v = self.headers.get(name.lower())
        return None if not v else ", ".join(v)

    def header_values(self, name: str) -> list[str]:
        """The values of a repeated header, one per header line."""
        return list(self.headers.get(name.lower(), ()))

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        return json.loads(self.content)


class Transport(Protocol):
    """Sends one request; raises :class:`~tablekit.errors.HTTPError` subclasses for network failures."""

    def send(self, request: Request, *, timeout: tuple[float, float]) -> Response: ...


class Urllib3Transport:
    """The default transport: urllib3 connection pools (kept-alive, thread-safe), no redirects
    followed, no retries (:class:`HTTPSession` does those), cookies never stored.

    Every request carries its own credentials, so one transport serves clients with different
    tokens (see :func:`shared_transport`). Proxies come from the environment (``https_proxy``,
    ``http_proxy``, ``all_proxy``, ``no_proxy``) and TLS is verified against
    ``$REQUESTS_CA_BUNDLE`` or ``$CURL_CA_BUNDLE`` if set, else certifi's bundle (what
    ``requests`` does); both are read once per host.
    """

    def __init__(self, pool_size: int = 16):
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._managers: dict[tuple[str | None, str | None], urllib3.PoolManager] = {}
        self._hosts: dict[str, tuple[urllib3.PoolManager, str | None]] = {}
        # origin → (scheme, host, port) as urllib3 keys its pools, parsed once: urllib3's URL
        # parser checks every character in Python (about 0.2 ms for a query URL)
        self._places: dict[str, tuple[str, str | None, int | None]] = {}
        self._opening: dict[str, threading.Event] = {}  # origin → set once its connection is open

    def __repr__(self) -> str:
        return "<Urllib3Transport>"

    def close(self) -> None:
        with self._lock:
            for m in self._managers.values():
                m.clear()
            self._managers.clear()
            self._hosts.clear()

    def _manager(self, url: str) -> tuple[urllib3.PoolManager, str | None]:
        """The pool manager for ``url``'s host (direct or through its proxy, made on first use)
        and the proxy's URL."""
        origin = _origin(url)
        known = self._hosts.get(origin)
        if known is not None:
            return known
        with self._lock:
            proxy = _environ_proxy(origin)
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
            key = (proxy, bundle)
            m = self._managers.get(key)
            if m is None:
                kw: dict[str, Any] = {
                    "num_pools": 8,
                    "maxsize": self._pool_size,
                    "cert_reqs": "CERT_REQUIRED",
                    "ca_certs": bundle or _certifi_bundle(),
                    "retries": False,
                }
                if proxy is None:
                    m = urllib3.PoolManager(**kw)
                elif proxy.lower().startswith("socks"):
                    try:
                        from urllib3.contrib.socks import SOCKSProxyManager
                    except ImportError:  # pragma: no cover - PySocks is not installed
                        raise HTTPError(
                            f"{origin}: the environment names the SOCKS proxy {_without_userinfo(proxy)!r}; "
                            "install PySocks (pip install pysocks) to use it, or unset the proxy",
                            url=url,
                        ) from None
                    m = SOCKSProxyManager(proxy, **kw)
                else:
                    userinfo = urlsplit(proxy).netloc.rpartition("@")[0]
                    if userinfo:  # credentials in the proxy URL: sent to the proxy, as requests does
                        kw["proxy_headers"] = urllib3.make_headers(proxy_basic_auth=unquote(userinfo))
                    m = urllib3.ProxyManager(proxy, **kw)
                self._managers[key] = m
            self._hosts[origin] = (m, proxy)
            return m, proxy

    def _pool(self, url: str, manager: urllib3.PoolManager | None = None) -> Any:
        """The connection pool requests to ``url`` take their connections from (``manager``: the
        host's, when the caller already has it)."""
        origin = _origin(url)
        place = self._places.get(origin)
        if place is None:
            u = urllib3.util.parse_url(origin)
            place = self._places[origin] = (u.scheme or "http", u.host, u.port)
        scheme, host, port = place
        if manager is None:
            manager = self._manager(origin)[0]
        return manager.connection_from_host(host, port=port, scheme=scheme)

    @staticmethod
    def _idle(pool: Any) -> bool:
        return any(c is not None and getattr(c, "is_connected", False) for c in list(pool.pool.queue))

    def connected(self, url: str) -> bool:
        """Whether a kept-alive connection to ``url``'s host is open and idle (a request there
        needs no handshake)."""
        try:
            return self._idle(self._pool(url))
        except Exception:  # best effort: "not known to be connected"
            return False

    def preconnect(self, url: str, timeout: float = 10.0) -> None:
        """Open a kept-alive connection (TCP, and TLS for https) to ``url``'s host unless one is
        already open, so that the next request there starts without a handshake. Failures are
        ignored: the request itself reports them."""
        try:
            pool = self._pool(url)
            if self._idle(pool):
                return
            conn = pool._get_conn(timeout=0)
            try:
                if not getattr(conn, "is_connected", False):
                    conn.timeout = timeout
                    conn.connect()
            finally:
                pool._put_conn(conn)
        except Exception:  # best effort by design: the request itself reports failures
            logger.debug("tablekit: could not open a connection to %s in advance", url, exc_info=True)

    def open_ahead(self, url: str, timeout: float = 10.0) -> None:
        """:meth:`preconnect` in a background thread. A request to that host made meanwhile waits
        for this connection instead of opening a second one: the handshake under way finishes
        before a new one would."""
        origin = _origin(url)
        if self.connected(url):
            return
        with self._lock:
            if origin in self._opening:
                return
            done = self._opening[origin] = threading.Event()

        def run() -> None:
            try:
                self.preconnect(url, timeout)
            finally:
                with self._lock:
                    self._opening.pop(origin, None)
                done.set()

        # not threading.Thread: its start() waits until the new thread runs, which costs the caller
        # a GIL hand-off; nothing needs to wait for this one but a request to the same host
        _thread.start_new_thread(run, ())

    def send(self, request: Request, *, timeout: tuple[float, float]) -> Response:
        url = request.url
        origin = _origin(url)
        opening = self._opening.get(origin) if self._opening else None
        if opening is not None:
            opening.wait(timeout[0])
        if request.params:
            url += ("&" if "?" in url else "?") + urlencode(request.params)
        headers = urllib3.HTTPHeaderDict({"Accept-Encoding": "gzip, deflate", "Accept": "*/*"})
        body = request.data
        if request.json is not None:
            try:
                body = json.dumps(request.json, allow_nan=False).encode("utf-8")
            except ValueError as e:
                raise HTTPError(
                    f"{request.method} {url}: the request body is not valid JSON ({e}); a value is NaN "
                    "or infinite: pass finite numbers",
                    url=url,
                ) from None
            headers["Content-Type"] = "application/json"
        for name, value in request.headers:  # the request's own replace the defaults, whatever the case
            headers[name] = value
        manager, proxy = self._manager(origin)
        kw: dict[str, Any] = {
            "body": body,
            "headers": headers,
            "timeout": urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            "retries": False,
            "redirect": False,
            "preload_content": True,
            "decode_content": True,
        }
        try:
            target = _request_target(url) if proxy is None else None
            if target is not None:  # straight to the host's pool: the URL is not parsed again
                r = self._pool(origin, manager).request(request.method, target, assert_same_host=False, **kw)
            else:
                r = manager.request(request.method, url, **kw)
        except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException, ValueError) as e:
            raise map_transport_error(e, request, proxy) from None
        raw = r.headers
        headers_out = {name: tuple(raw.getlist(name)) for name in {k.lower() for k in raw}}
        return Response(r.status, url, headers_out, r.data)


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (the scheme in lower case)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme.lower()}://{rest.split('/', 1)[0].split('?', 1)[0]}"


def _request_target(url: str) -> str | None:
    """The path and query of an absolute ``url`` (what the request line carries); None for a URL
    urllib3 must take apart itself (user info, a fragment, a path with ``.``/``..`` segments to
    remove)."""
    _, sep, rest = url.partition("://")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    target = rest[cut:]
    if not sep or "@" in rest[:cut] or "#" in target or "/." in target.split("?", 1)[0]:
        return None
    return target if target.startswith("/") else "/" + target


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return url if "@" not in parts.netloc else url.replace(parts.netloc, parts.netloc.rsplit("@", 1)[1])


def _environ_proxy(origin: str) -> str | None:
    """The proxy the environment names for ``origin`` (``scheme://host[:port]``), honouring ``no_proxy``."""
    proxies = urllib.request.getproxies()
    if not proxies:
        return None
    host = urlsplit(origin).netloc
    if urllib.request.proxy_bypass(host):
        return None
    scheme = origin.split("://", 1)[0]
    proxy = proxies.get(scheme) or proxies.get("all")
    if proxy and "://" not in proxy:
        proxy = "http://" + proxy
    return proxy or None


def _certifi_bundle() -> str | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi is a dependency; the system store otherwise
        return None
    return certifi.where()


class _SharedTransport(Urllib3Transport):
    """The process-wide transport: clients come and go, its connections stay open for the next."""

    def __init__(self) -> None:
        super().__init__()
        self.pid = os.getpid()

    def __repr__(self) -> str:
        return "<Urllib3Transport shared>"

    def close(self) -> None:  # owned by the process, not by a client
        pass


_SHARED: list[_SharedTransport] = []
_SHARED_LOCK = threading.Lock()


def shared_transport() -> Urllib3Transport:
    """The transport every HTTP client of this process uses unless given its own: a new client of
    a server reuses the kept-alive connections (and TLS sessions) of the previous ones. A forked
    child gets its own (sockets must not be shared between processes)."""
    with _SHARED_LOCK:
        if not _SHARED or _SHARED[0].pid != os.getpid():
            _SHARED[:] = [_SharedTransport()]
        return _SHARED[0]


def map_transport_error(e: BaseException, request: Request, proxy: str | None = None) -> HTTPError:
    """A urllib3 (or socket) exception → the tablekit error for it (the most specific class wins);
    ``proxy``: the environment's proxy the request went through."""
    what = f"{request.method} {request.url}"
    text = f"{type(e).__name__}: {e}"
    kw: dict[str, Any] = {"url": request.url, "method": request.method}
    x = urllib3.exceptions
    if isinstance(e, x.ProxyError):
        fix = (
            ""
            if proxy is None
            else f" [the proxy {_without_userinfo(proxy)} comes from the environment "
            "(http_proxy/https_proxy/all_proxy); add the host to no_proxy to bypass it]"
        )
        return ConnectionFailedError(f"{what}: the proxy failed ({text}){fix}", **kw)
    if isinstance(e, x.ConnectTimeoutError) and not isinstance(e, x.NewConnectionError):
        return ConnectionFailedError(
            f"{what}: could not connect within the timeout ({text}); check the server URL and that the "
            "host is reachable, or give connect(..., timeout=(CONNECT, READ)) a longer connect time",
            **kw,
        )
    if isinstance(e, (x.ReadTimeoutError, TimeoutError)) and not isinstance(e, x.NewConnectionError):
        return RequestTimeoutError(
            f"{what}: the server did not answer within the read timeout ({text}); raise it with "
            "connect(..., timeout=SECONDS) or narrow the query",
            **kw,
        )
    if isinstance(e, x.DecodeError):
        return ConnectionFailedError(
            f"{what}: the response body could not be decoded ({text}); the server or a proxy sent a "
            "damaged answer: retry, or check the proxy settings (http_proxy/https_proxy)",
            **kw,
        )
    if isinstance(e, (x.LocationValueError, x.ProxySchemeUnsupported, x.InvalidHeader, ValueError)):
        return HTTPError(f"{what}: invalid request ({text}); check the server URL", **kw)
    # refused or reset connections, name resolution, TLS, a connection closed mid-answer
    return ConnectionFailedError(
        f"{what}: connection failed ({text}); check the server URL, that the server is up and "
        "reachable from here, and the proxy settings (http_proxy/https_proxy/no_proxy)",
        **kw,
    )
