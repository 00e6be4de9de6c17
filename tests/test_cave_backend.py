"""The CAVE HTTP backend: transport, decoding, paging, server-defect compensation, explain().

Everything runs on 127.0.0.1: a scripted ASGI app (:class:`Canned`) for the transport (retries,
timeouts, errors, headers), and ``tablekit serve`` — alone, behind a recording/fault-injecting
wrapper (:class:`Recorder`), with a small row limit, and in ``cave_quirks`` mode (the real
server's ignored not-in filter and missing ORDER BY) — for the backend end to end. Answers are
compared with the local engine on the same datastack.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import attrs
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import requests
from _server import assert_equal_but_created, running_server, serve_asgi

import tablekit
from tablekit.backends.cave import CaveBackend
from tablekit.backends.cave import compile as wire
from tablekit.backends.cave import decode as decoding
from tablekit.backends.cave.http import Budget, HTTPSession
from tablekit.backends.cave.pages import Answer
from tablekit.backends.cave.token import Token, find_token
from tablekit.backends.cave.transport import Response, Urllib3Transport, map_transport_error
from tablekit.errors import (
    AuthError,
    ConnectionFailedError,
    DatastackError,
    HTTPError,
    IncompleteResultError,
    QueryError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TablekitError,
    UnsupportedError,
)
from tablekit.server import create_app

SYN = "synapses_pni_2"
NUC = "nucleus_detection_v0"
CT = "aibs_metamodel_celltypes_v661"
VIEW = "single_neurons"
SECRET = "s3cr3t-T0KEN-d0-not-print"


# ============================================================================ loopback helpers


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        m = await receive()
        chunks.append(m.get("body", b""))
        if not m.get("more_body"):
            return b"".join(chunks)


def _record(scope: dict[str, Any], body: bytes) -> dict[str, Any]:
    return {
        "method": scope["method"],
        "path": scope["path"],
        "target": scope["raw_path"].decode("latin-1")
        + ("?" + scope["query_string"].decode() if scope["query_string"] else ""),
        "query": parse_qsl(scope["query_string"].decode(), keep_blank_values=True),
        "headers": {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]},
        "header_names": [k.decode().lower() for k, _ in scope["headers"]],
        "body": body,
        "peer": tuple(scope.get("client") or ()),  # (host, port): the TCP connection
    }


async def _send(send: Any, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
    raw = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content})


class Recorder:
    """ASGI wrapper: records every request (method, path, query pairs, headers, body, and the
    response's headers), answers
    ``GET /__case__/<name>`` markers itself, can delay every request, and lets ``faults``
    (``record -> (status, headers, body) | None``) answer instead of the wrapped app."""

    def __init__(self, app: Any, delay: float = 0.0):
        self.app = app
        self.log: list[dict[str, Any]] = []
        self.faults: list[Any] = []
        self.delay = delay

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _body(receive)
        rec = _record(scope, body)
        self.log.append(rec)
        if self.delay:
            await asyncio.sleep(self.delay)
        if scope["path"].startswith("/__case__/"):
            await _send(send, 200, [("content-type", "text/plain")], b"ok")
            return
        for fault in self.faults:
            answer = fault(rec)
            if answer is not None:
                await _send(send, *answer)
                return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def keep(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                rec["response_headers"] = {
                    k.decode().lower(): v.decode("latin-1") for k, v in message["headers"]
                }
            await send(message)

        await self.app(scope, replay, keep)

    def paths(self, method: str | None = None) -> list[str]:
        return [r["path"] for r in self.log if method is None or r["method"] == method]


class Canned:
    """A scripted server: each request takes the next ``(status, headers, body[, delay])`` of
    ``script`` (the last one repeats) and is recorded in ``log``."""

    def __init__(self) -> None:
        self.script: list[tuple[Any, ...]] = [(200, [], b"{}")]
        self.log: list[dict[str, Any]] = []

    def reset(self, *script: tuple[Any, ...]) -> None:
        self.script = list(script)
        self.log = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.log.append(_record(scope, await _body(receive)))
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        status, headers, content, *rest = step
        if rest and rest[0]:
            await asyncio.sleep(rest[0])
        if isinstance(content, (dict, list, str)) and not isinstance(content, bytes):
            content = json.dumps(content).encode()
            headers = [("content-type", "application/json"), *headers]
        await _send(send, status, headers, content)


def _json(status: int, body: Any, *headers: tuple[str, str]) -> tuple[Any, ...]:
    return (status, list(headers), body)


# ============================================================================ fixtures


@pytest.fixture(scope="module")
def canned() -> Iterator[tuple[Canned, str]]:
    app = Canned()
    with serve_asgi(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def served(path) -> Iterator[tuple[str, Recorder]]:
    rec = Recorder(create_app(path))
    with serve_asgi(rec) as url:
        yield url, rec


@pytest.fixture(scope="module")
def limited(path) -> Iterator[str]:
    with running_server(path, row_limit=300) as url:
        yield url


@pytest.fixture(scope="module")
def quirky(path) -> Iterator[str]:
    with running_server(path, row_limit=300, cave_quirks=True) as url:
        yield url


def connect(client, url: str, **kw: Any) -> tablekit.Client:
    kw.setdefault("cache_dir", False)
    kw.setdefault("progress", False)
    return tablekit.connect(client.datastack, server=url, **kw)


@pytest.fixture(scope="module")
def values(client) -> dict[str, Any]:
    syn = client.query_table(SYN, split_positions=True)
    ids = np.sort(syn["id"].to_numpy())
    cut = int(ids[2000])  # the first 2000 synapses by id
    roots = syn["pre_pt_root_id"][syn["pre_pt_root_id"] != 0].value_counts()
    return {"cut": cut, "busy_root": int(roots.index[0]), "syn": syn}


def session(**kw: Any) -> HTTPSession:
    kw.setdefault("sleep", lambda s: None)
    return HTTPSession(kw.pop("token", None), **kw)


# ============================================================================ transport


def test_auth_header_and_cookie_are_sent(canned):
    """Every request carries ``Authorization: Bearer <token>`` and the ``middle_auth_token`` cookie."""
    app, url = canned
    app.reset(_json(200, {"ok": True}))
    session(token=Token(SECRET, "test")).request("GET", f"{url}/x")
    h = app.log[0]["headers"]
    assert h["authorization"] == f"Bearer {SECRET}"
    assert f"middle_auth_token={SECRET}" in h["cookie"]
    app.reset(_json(200, {"ok": True}))
    session().request("GET", f"{url}/x")
    assert "authorization" not in app.log[0]["headers"] and "cookie" not in app.log[0]["headers"]


def test_clients_share_connections_but_never_credentials(canned):
    """Sessions share one process-wide transport (kept-alive connections outlive a client), yet
    a cookie the server sets for one token is never sent on another session's requests, and
    closing one session leaves the others working."""
    app, url = canned
    a, b = session(token=Token("token-a", "test")), session()
    assert a.transport is b.transport
    app.reset(_json(200, {"ok": True}, ("set-cookie", "middle_auth_token=token-a; Path=/")))
    a.request("GET", f"{url}/login")
    login_peer = app.log[0]["peer"]
    a.close()
    app.reset(_json(200, {"ok": True}))
    b.request("GET", f"{url}/x")
    b.request("GET", f"{url}/y")
    assert [r["path"] for r in app.log] == ["/x", "/y"]
    assert [r["peer"] for r in app.log] == [login_peer, login_peer]  # the same kept-alive connection
    assert all("cookie" not in r["headers"] and "authorization" not in r["headers"] for r in app.log)
    own = session(transport=Urllib3Transport())
    assert own.transport is not a.transport


def test_request_bodies_and_default_headers(canned):
    """A JSON body is sent compact-enough JSON with its content type; query parameters are
    encoded in order; the defaults (gzip) yield to the request's own header in any letter case."""
    app, url = canned
    app.reset(_json(200, {"ok": True}))
    s = session()
    s.request("POST", f"{url}/q?x=1", params=[("b", "2 3"), ("a", "é")], json={"k": [1, 2]})
    s.request("GET", f"{url}/g", headers={"accept-encoding": "zstd"})
    post, get = app.log
    assert post["query"] == [("x", "1"), ("b", "2 3"), ("a", "é")]
    assert json.loads(post["body"]) == {"k": [1, 2]} and post["headers"]["content-type"] == "application/json"
    assert post["headers"]["accept-encoding"] == "gzip, deflate"
    assert get["headers"]["accept-encoding"] == "zstd" and get["header_names"].count("accept-encoding") == 1
    with pytest.raises(HTTPError, match="not valid JSON"):
        s.request("POST", f"{url}/q", json={"v": float("nan")})
    assert len(app.log) == 2  # nothing was sent


def test_the_request_line_is_encoded_as_requests_encodes_it(canned):
    """Requests go straight to the host's connection pool with the URL's path and query (urllib3
    does not take the whole URL apart again): spaces, non-ASCII and existing %-escapes in the path,
    and parameters, reach the server as ``requests`` (what CAVEclient uses) encodes them."""
    app, url = canned
    app.reset(_json(200, {}))
    s = session(transport=Urllib3Transport())
    cases = [
        ("/a b/ü", {"q": "a b/é", "n": "1"}),
        ("/x%20y/z", None),
        ("", {"k": "v"}),
        ("/t", {"e": ""}),
        ("/d/./e/../f", {"p": "../x"}),  # dot segments go, as requests removes them
        ("/.hidden/g", None),
    ]
    for path, params in cases:
        s.request("GET", url + path, params=params)
    want = [requests.Request("GET", url + path, params=params).prepare().path_url for path, params in cases]
    assert [r["target"] for r in app.log] == want
    assert [r["path"] for r in app.log] == ["/a b/ü", "/x y/z", "/", "/t", "/d/f", "/.hidden/g"]


def test_proxies_from_the_environment(canned, monkeypatch):
    """``http_proxy`` sends requests through the proxy (credentials in its URL go to the proxy as
    Proxy-Authorization, the request keeps its own Host); ``no_proxy`` bypasses it. The loopback
    canned server plays the proxy; the proxied host name is never resolved."""
    app, url = canned
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    host_port = url.split("://", 1)[1]
    monkeypatch.setenv("http_proxy", f"http://alice:s%40cret@{host_port}")
    app.reset(_json(200, {"proxied": True}))
    resp = session(transport=Urllib3Transport()).request(
        "GET", "http://cave.invalid/info/x", params={"a": "1"}
    )
    assert resp.json() == {"proxied": True}
    (seen,) = app.log
    assert seen["path"].endswith("/info/x") and seen["query"] == [("a", "1")]
    assert seen["headers"]["host"] == "cave.invalid"
    assert seen["headers"]["proxy-authorization"] == "Basic " + base64.b64encode(b"alice:s@cret").decode()

    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")  # nothing listens there
    with pytest.raises(
        ConnectionFailedError, match=r"the proxy http://127.0.0.1:1 comes from the environment"
    ):
        session(transport=Urllib3Transport(), max_retries=0).request("GET", f"{url}/direct")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    app.reset(_json(200, {"direct": True}))
    assert session(transport=Urllib3Transport()).request("GET", f"{url}/direct").json() == {"direct": True}
    assert [r["path"] for r in app.log] == ["/direct"] and "proxy-authorization" not in app.log[0]["headers"]


def test_a_forked_child_does_not_reuse_the_parents_connections():
    """Kept-alive sockets must not be shared between processes: after a fork, new sessions get
    a transport of their own."""
    import os

    parent = session().transport
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether its new session got a fresh transport
        child = session().transport
        os.write(write, b"fresh" if child is not parent and child.pid == os.getpid() else b"shared")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    assert answer == b"fresh"
    assert session().transport is parent  # the parent keeps its own


def test_token_sources_in_caveclient_order(tmp_path, monkeypatch):
    """argument > $CAVE_TOKEN > {host}-cave-secret.json > cave-secret.json > chunkedgraph-secret.json."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CAVE_TOKEN", raising=False)
    secrets = tmp_path / ".cloudvolume" / "secrets"
    secrets.mkdir(parents=True)
    server = "https://global.example.org"
    assert find_token(None, server) is None
    (secrets / "chunkedgraph-secret.json").write_text(json.dumps({"token": "t-old"}))
    with pytest.warns(DeprecationWarning, match="deprecated secret file"):
        assert find_token(None, server).reveal() == "t-old"
    (secrets / "cave-secret.json").write_text(json.dumps({"token": "t-cave"}))
    assert find_token(None, server).reveal() == "t-cave"
    (secrets / "global.example.org-cave-secret.json").write_text(json.dumps({"token": "t-host"}))
    assert find_token(None, server).reveal() == "t-host"
    assert find_token(None, "https://other.example.org").reveal() == "t-cave"
    monkeypatch.setenv("CAVE_TOKEN", "t-env")
    tok = find_token(None, server)
    assert tok.reveal() == "t-env" and tok.source == "$CAVE_TOKEN"
    assert find_token("t-arg", server).reveal() == "t-arg"
    assert "t-" not in repr(tok) and "t-" not in str(tok)
    with pytest.raises(AuthError):
        find_token("   ", server)


def test_token_never_appears_in_reprs_logs_or_errors(canned, caplog, path, client):
    """A server that echoes the token, retries, auth failures: no message, log line or repr holds it."""
    app, url = canned
    tok = Token(SECRET, "test")
    s = session(token=tok)
    texts = [repr(tok), str(tok), repr(s)]
    caplog.set_level(logging.DEBUG, logger="tablekit.http")
    app.reset(
        _json(503, {"message": f"overloaded for Bearer {SECRET}"}, ("retry-after", "0")),
        _json(500, {"code": 500, "message": f"bad token {SECRET}", "traceback": [SECRET]}),
    )
    with pytest.raises(ServerError) as e:
        s.request("POST", f"{url}/q", json={"a": 1})
    texts += [str(e.value), repr(e.value), str(e.value.message), *map(str, e.value.args)]
    app.reset(_json(401, {"error": "invalid_token", "message": f"token {SECRET} unknown"}))
    with pytest.raises(AuthError) as e:
        s.request("GET", f"{url}/q")
    texts += [str(e.value), str(e.value.message)]
    with running_server(path, token=SECRET) as base:
        tk = tablekit.connect(client.datastack, server=base, token=SECRET, cache_dir=False)
        assert len(tk.query_table(NUC, limit=3)) == 3
        texts += [repr(tk), repr(tk.backend), json.dumps(tk.tables[NUC]().explain())]
        with pytest.raises(AuthError) as e:
            tablekit.connect(client.datastack, server=base, token="wrong-token", cache_dir=False)
        assert e.value.status == 401
        texts.append(str(e.value))
    texts += [r.getMessage() for r in caplog.records]
    assert any("retry" in t for t in texts)
    for t in texts:
        assert SECRET not in t, t


class EchoToken:
    """ASGI wrapper: every answer of ``app`` gets a ``Warning`` header line quoting the request's
    bearer token (as a careless server or proxy might)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = dict(scope["headers"]).get(b"authorization", b"")

        async def echo(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"warning", b"seen " + auth)]}
            await send(message)

        await self.app(scope, receive, echo)


@pytest.mark.parametrize("secret", ["k9", "abc1234", SECRET])
def test_tokens_of_any_length_are_redacted_from_warnings_and_errors(canned, path, client, secret):
    """A token of 2, 7 or 25 characters never shows: not in a login redirect that echoes it
    (plain or URL-encoded), nor in a server's ``Warning`` header that reaches ``warnings.warn``
    and ``df.attrs["warnings"]``."""
    app, url = canned
    tok = Token(secret, "test")
    for loc in (f"https://x.org/auth/login?token={secret}", f"https://x.org/auth/login?t={secret}%21"):
        app.reset((302, [("location", loc)], b""))
        with pytest.raises(AuthError) as e:
            session(token=tok).request("GET", f"{url}/v")
        assert secret not in str(e.value) and "<redacted>" in str(e.value)
    app.reset(_json(200, {"ok": 1}, ("warning", f"hello {secret}")))
    assert session(token=tok).request("GET", f"{url}/v").header_values("warning") == ["hello <redacted>"]
    with serve_asgi(EchoToken(create_app(path, token=secret))) as base:
        tk = tablekit.connect(client.datastack, server=base, token=secret, cache_dir=False)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            df = tk.query_table(NUC, limit=3)
        texts = [str(w.message) for w in seen] + list(df.attrs["warnings"])
        assert any("seen Bearer <redacted>" in t for t in texts), texts
        assert all(secret not in t for t in texts), texts
        assert secret not in json.dumps(df.attrs, default=str)


def test_retries_502_503_504_then_succeeds(canned):
    app, url = canned
    waits: list[float] = []
    app.reset(
        _json(503, {"message": "busy"}, ("retry-after", "0")),
        _json(502, {"message": "bad gateway"}),
        _json(504, {"message": "timeout"}),
        _json(200, [1, 2, 3]),
    )
    s = HTTPSession(None, max_retries=3, backoff=0.01, sleep=waits.append)
    assert s.request("GET", f"{url}/x").json() == [1, 2, 3]
    assert len(app.log) == 4
    assert waits[0] == 0 and all(0 < w < 0.1 for w in waits[1:])


def test_429_waits_as_retry_after_says(canned):
    app, url = canned
    app.reset(_json(429, {"message": "slow down"}, ("retry-after", "1")), _json(200, {"ok": 1}))
    t0 = time.perf_counter()
    assert HTTPSession(None).request("GET", f"{url}/x").json() == {"ok": 1}
    assert 0.9 <= time.perf_counter() - t0 < 5
    assert len(app.log) == 2
    when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    waits: list[float] = []
    app.reset(_json(429, {}, ("retry-after", when)), _json(200, {"ok": 2}))
    assert HTTPSession(None, sleep=waits.append).request("GET", f"{url}/x").json() == {"ok": 2}
    assert 1 < waits[0] <= 3.5


def test_retry_after_beyond_the_limit_and_exhausted_retries_raise(canned):
    app, url = canned
    app.reset(_json(429, {"message": "quota"}, ("retry-after", "3600")))
    with pytest.raises(RateLimitError, match="retry in 3600 s") as e:
        session(max_wait=60).request("GET", f"{url}/x")
    assert e.value.status == 429 and len(app.log) == 1
    app.reset(_json(503, {"message": "down for maintenance"}))
    with pytest.raises(ServerError, match=r"down for maintenance.*after 3 attempts") as e:
        session(max_retries=2).request("GET", f"{url}/x")
    assert e.value.status == 503 and len(app.log) == 3


def test_connection_errors_are_retried_then_mapped():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    waits: list[float] = []
    s = HTTPSession(None, max_retries=2, backoff=0.01, sleep=waits.append)
    with pytest.raises(ConnectionFailedError, match="after 3 attempts") as e:
        s.request("GET", f"http://127.0.0.1:{port}/x")
    assert isinstance(e.value, ConnectionError) and len(waits) == 2
    assert e.value.url == f"http://127.0.0.1:{port}/x"


def test_read_timeout_is_an_error_not_a_hang(canned):
    """A read timeout of an idempotent request is retried (then raised, naming the attempts); a
    POST not known to be idempotent is not retried."""
    app, url = canned
    app.reset((200, [], b"{}", 3.0))
    t0 = time.perf_counter()
    with pytest.raises(RequestTimeoutError, match=r"timeout.*after 3 attempts") as e:
        session(timeout=(2, 0.3), max_retries=2).request("GET", f"{url}/slow")
    assert isinstance(e.value, TimeoutError)
    assert time.perf_counter() - t0 < 2.5 and len(app.log) == 3
    app.reset((200, [], b"{}", 3.0))
    with pytest.raises(RequestTimeoutError):
        session(timeout=(2, 0.3)).request("POST", f"{url}/slow", json={})
    assert len(app.log) == 1
    app.reset((200, [], b"{}", 0.5), _json(200, {"ok": 1}))  # one stall, then an answer
    assert session(timeout=(2, 0.3)).request("POST", f"{url}/x", json={}, idempotent=True).json() == {"ok": 1}


def test_an_arrow_stream_without_its_end_marker_is_never_taken_as_whole(canned):
    """A framed Arrow body (Content-Length) whose stream stops between two messages: the server
    cut it; it is asked for again, then refused with a ServerError (never decoded shorter)."""
    app, url = canned
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("id", pa.int64())])) as w:
        for i in range(3):
            w.write_batch(pa.record_batch([pa.array([i], pa.int64())], names=["id"]))
    whole = sink.getvalue().to_pybytes()
    assert whole.endswith(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    app.reset((200, [("content-type", "data.arrow")], whole[:-8]))
    with pytest.raises(ServerError, match=r"stops before the Arrow end-of-stream marker.*after 3 attempts"):
        session(max_retries=2).request("POST", f"{url}/q", json={}, idempotent=True)
    assert len(app.log) == 3
    app.reset(
        (200, [("content-type", "data.arrow")], whole[:-8]), (200, [("content-type", "data.arrow")], whole)
    )
    assert session().request("POST", f"{url}/q", json={}, idempotent=True).content == whole


def test_retries_stop_when_the_budget_is_spent_or_cancelled(canned):
    """Retries stop once the retry budget is spent (a retry's read timeout is cut to what is
    left), and at once when the query's budget is cancelled (a sibling page failed)."""
    app, url = canned
    app.reset((200, [], b"{}", 3.0))
    t0 = time.perf_counter()
    with pytest.raises(RequestTimeoutError, match=r"retry budget of 1 s is spent.*retry_budget="):
        HTTPSession(None, timeout=(2, 0.4), max_retries=50, backoff=0.05, retry_budget=1).request(
            "GET", f"{url}/slow"
        )
    assert time.perf_counter() - t0 < 1.0 + 0.4 + 0.5 and 2 <= len(app.log) <= 6
    app.reset(_json(503, {"message": "busy"}))
    s = HTTPSession(None, max_retries=50, backoff=5)
    budget = s.budget()
    threading.Timer(0.3, budget.cancel.set).start()
    t0 = time.perf_counter()
    with pytest.raises(HTTPError, match="stopped, another request of the same query failed"):
        s.request("GET", f"{url}/x", budget=budget)
    assert time.perf_counter() - t0 < 2 and len(app.log) == 1
    with pytest.raises(QueryError, match="retry_budget"):
        HTTPSession(None, retry_budget=0)


def test_error_statuses_carry_status_url_and_server_message(canned, monkeypatch):
    """500 with CAVE's {code, message, traceback}, a 404 string, auth errors, missing_tos (no browser)."""
    import webbrowser

    monkeypatch.setattr(webbrowser, "open", lambda *a, **k: pytest.fail("a browser was opened"))
    app, url = canned
    app.reset(
        _json(500, {"code": 500, "message": "404 Not Found: Cannot find table nope", "traceback": ["x"]})
    )
    with pytest.raises(ServerError) as e:
        session().request("POST", f"{url}/q", json={})
    assert e.value.status == 500 and e.value.url == f"{url}/q" and e.value.method == "POST"
    assert e.value.message == "404 Not Found: Cannot find table nope"
    assert str(e.value) == f"POST {url}/q: HTTP 500: 404 Not Found: Cannot find table nope"
    app.reset(_json(404, "No version found"))
    with pytest.raises(ServerError, match="HTTP 404: No version found"):
        session().request("GET", f"{url}/v")
    app.reset((502, [("content-type", "text/html")], b"<html>Bad Gateway</html>"))
    with pytest.raises(ServerError, match="Bad Gateway"):
        session(max_retries=0).request("GET", f"{url}/v")
    app.reset(_json(401, {"error": "no_token", "message": "Unauthorized - No Token Provided", "data": {}}))
    with pytest.raises(AuthError, match=r"No token was sent: pass token=\.\.\., set \$CAVE_TOKEN") as e:
        session().request("GET", f"{url}/v")
    assert isinstance(e.value, PermissionError) and e.value.code == "no_token"
    form = "https://global.example.org/sticky_auth/api/v1/tos/2/accept"
    app.reset(
        _json(
            403,
            {
                "error": "missing_tos",
                "message": "tos",
                "data": {"tos_id": 2, "tos_name": "MICrONS ToS", "tos_form_url": form},
            },
        )
    )
    with pytest.raises(AuthError) as e:
        session(token=Token("tok-12345678", "test")).request("GET", f"{url}/v")
    assert f"Open {form} in a browser" in str(e.value) and "MICrONS ToS" in str(e.value)
    app.reset(
        _json(
            403,
            {
                "error": "missing_permission",
                "message": "no",
                "data": {"required_permission": "view", "auth_dataset": "minnie"},
            },
        )
    )
    with pytest.raises(AuthError, match="lacks permission 'view' on 'minnie'"):
        session(token=Token("tok-12345678", "test")).request("GET", f"{url}/v")


def test_redirects_to_a_login_page_or_another_host_are_not_followed(canned):
    """A login redirect is an AuthError; a redirect to another host is refused (the token would
    go along); a same-host redirect of a GET is followed."""
    app, url = canned
    app.reset((302, [("location", "https://global.example.org/auth/api/v1/authorize?redirect=x")], b""))
    with pytest.raises(AuthError, match=r"wants a login\. No token was sent"):
        session().request("GET", f"{url}/v")
    app.reset((301, [("location", "http://127.0.0.2:9/elsewhere")], b""))
    with pytest.raises(ServerError, match="redirected to another host"):
        session(token=Token(SECRET, "test")).request("GET", f"{url}/v")
    assert len(app.log) == 1
    app.reset((302, [("location", "/moved")], b""), _json(200, {"here": True}))
    assert session().request("GET", f"{url}/v").json() == {"here": True}
    assert [r["path"] for r in app.log] == ["/v", "/moved"]


def test_every_transport_exception_is_mapped():
    """Each urllib3 exception class (and socket errors) maps to an HTTPError subclass, never
    escaping unmapped; timeouts, refused connections and bad URLs get their own classes."""

    import urllib3

    from tablekit.backends.cave.transport import Request

    req = Request("GET", "http://127.0.0.1:1/x")
    x = urllib3.exceptions
    classes = {
        c
        for c in vars(x).values()
        if isinstance(c, type) and issubclass(c, x.HTTPError) and not issubclass(c, Warning)
    }
    assert len(classes) > 20

    class Partial:  # what InvalidChunkLength asks of a response
        length_remaining = 1

        def tell(self) -> int:
            return 0

    def make(cls: type) -> BaseException:
        tries = (
            (None, "boom"),
            ("boom",),
            ("boom", "doc"),
            (0, 1),
            ("host", None, "boom"),
            (Partial(), b"zz"),
        )
        for args in tries:
            try:
                exc = cls(*args)
                str(exc)  # some classes only format numbers
                return exc
            except (TypeError, AttributeError):
                continue
        raise AssertionError(cls)

    for cls in classes:
        err = map_transport_error(make(cls), req)
        assert isinstance(err, HTTPError) and isinstance(err, TablekitError), cls
        assert err.url == req.url
    assert isinstance(map_transport_error(x.ReadTimeoutError(None, "/x", "slow"), req), RequestTimeoutError)
    assert isinstance(map_transport_error(TimeoutError("slow"), req), RequestTimeoutError)
    connect_timeout = map_transport_error(x.ConnectTimeoutError(None, "slow"), req)
    assert isinstance(connect_timeout, ConnectionFailedError) and "within the timeout" in str(connect_timeout)
    refused = map_transport_error(x.NewConnectionError(None, "refused"), req)
    assert isinstance(refused, ConnectionFailedError) and "connection failed" in str(refused)
    assert isinstance(map_transport_error(ConnectionResetError("reset"), req), ConnectionFailedError)
    bad_url = map_transport_error(x.LocationParseError("http://[::1"), req)
    assert type(bad_url) is HTTPError and "check the server URL" in str(bad_url)


# ============================================================================ decoding


def _plan(client, table: str = NUC, **kw: Any) -> wire.Plan:
    q = client.tables[table]().to_query(**kw)
    return wire.plan(q, client.table_specs(), v3="http://cave.test/materialize/api/v3")


def _arrow(table: pa.Table, compression: str | None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _response(content: bytes, ctype: str, **headers: Any) -> Response:
    h = {"content-type": (ctype,), **{k.replace("_", "-"): tuple(v) for k, v in headers.items()}}
    return Response(200, "http://cave.test/q", h, content)


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_an_arrow_answer_is_read_once_and_only_when_whole(compression):
    """read_arrow reads an Arrow stream in the pass that shows it whole (its end-of-stream marker),
    so the session's check and the decoder share one parse; a stream cut between messages (which
    pyarrow reads as a shorter valid one), cut inside one, or not Arrow gives None. Whole-body zstd
    is decompressed once, only when Content-Encoding says so."""
    # batches whose last bytes look like a marker: -1 then 0 as int32 little-endian
    want = pa.table({"id": pa.array([1, 2, 3, 4], pa.int64()), "v": pa.array([0, 0, -1, 0], pa.int32())})
    sink = pa.BufferOutputStream()
    opts = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, want.schema, options=opts) as w:
        w.write_table(want, max_chunksize=2)
    whole = sink.getvalue().to_pybytes()
    assert whole.endswith(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    got = decoding.read_arrow(_response(whole, wire.ARROW_CONTENT_TYPE))
    assert got is not None and got.equals(want)
    no_marker = whole[:-8]  # whole messages: pyarrow alone reads it as a valid 4-row stream
    assert pa.ipc.open_stream(no_marker).read_all().num_rows == 4
    assert decoding.read_arrow(_response(no_marker, wire.ARROW_CONTENT_TYPE)) is None
    assert decoding.read_arrow(_response(no_marker + b"\x00\x00\x00\x00", wire.ARROW_CONTENT_TYPE)).equals(
        want
    )
    for cut in (len(whole) - 9, len(whole) - 20, len(whole) // 2, 3):
        assert decoding.read_arrow(_response(whole[:cut], wire.ARROW_CONTENT_TYPE)) is None, cut
    assert decoding.read_arrow(_response(b'{"a": 1}', wire.ARROW_CONTENT_TYPE)) is None
    zipped = pa.compress(whole, codec="zstd", asbytes=True)
    assert decoding.read_arrow(_response(zipped, wire.ARROW_CONTENT_TYPE, content_encoding=["zstd"])).equals(
        want
    )
    assert decoding.read_arrow(_response(zipped, wire.ARROW_CONTENT_TYPE)) is None  # not said: not read


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_decode_arrow_streams_to_local_engine_types(client, compression):
    """The real server's pandas-made Arrow (Int32 positions, naive UTC times, an index column) →
    the local engine's types; buffer compression is transparent."""
    p = _plan(client)
    local = client.backend.execute(p.query).table
    df = local.to_pandas()
    df["created"] = df["created"].dt.tz_localize(None)
    for c in [c for c in df.columns if "_position_" in c]:
        df[c] = df[c].astype("Int32")  # the server's nullable 32-bit positions
    df.index = pd.Index(np.arange(len(df)) * 2)  # written as the column __index_level_0__
    served = pa.Table.from_pandas(df)
    assert "__index_level_0__" in served.column_names
    got = decoding.decode(_response(_arrow(served, compression), "data.arrow"), p)
    assert got.select(local.column_names).equals(local)
    assert "__index_level_0__" not in got.column_names


@pytest.mark.filterwarnings("ignore:.*'epoch' date format")
def test_decode_json_records_and_bad_bodies(client):
    p = _plan(client)
    local = client.backend.execute(p.query).table
    records = local.to_pandas().to_json(orient="records", date_format="epoch").encode()
    got = decoding.decode(_response(records, "application/json"), p)
    assert got.select(local.column_names).equals(local)
    rows = json.loads(records)
    for r in rows:
        r["created"] = dt.datetime.fromtimestamp(r["created"] / 1000, dt.timezone.utc).isoformat()
    got = decoding.decode(_response(json.dumps(rows).encode(), "application/json"), p)
    assert got["created"].equals(local["created"])
    with pytest.raises(ServerError, match="legacy pyarrow serialization"):
        decoding.decode(_response(b"xx", "x-application/pyarrow"), p)
    with pytest.raises(ServerError, match="unknown response type 'text/csv'"):
        decoding.decode(_response(b"a,b", "text/csv"), p)
    with pytest.raises(ServerError, match="Arrow answer cannot be read"):
        decoding.decode(_response(b"not arrow", "data.arrow"), p)


def test_warning_and_resolution_headers_over_several_lines(canned):
    """Repeated ``Warning`` lines stay apart (notices contain commas); ``dataframe_resolution``
    parses from one line per axis or one joined line."""
    app, url = canned
    notice = "Table Owner Notice on syn: sizes are preliminary, do not publish"
    app.reset(
        (
            200,
            [
                ("warning", notice),
                ("warning", '201 - "Limited query to 300 rows'),
                ("dataframe_resolution", "4.0"),
                ("dataframe_resolution", "4.0"),
                ("dataframe_resolution", "40.0"),
            ],
            b"",
        )
    )
    resp = session().request("POST", f"{url}/q")
    assert decoding.warnings_of(resp) == [notice, '201 - "Limited query to 300 rows']
    assert decoding.parse_resolution(resp.header_values("dataframe_resolution")) == (4.0, 4.0, 40.0)
    assert decoding.parse_resolution(["1, 1,1"]) == (1.0, 1.0, 1.0)
    assert decoding.parse_resolution(["4.0, 4.0"]) is None
    assert decoding.truncation(decoding.warnings_of(resp), 300, None, None) == (True, 300)
    live = "result has 200000 entries, which is equal or more         than limit of 200000 there may be more results which are not shown"
    assert decoding.truncation([live], 12, None, None) == (True, 200000)
    assert decoding.truncation([notice], 299, None, 300) == (False, None)
    assert decoding.truncation([], 500, 500, None) == (True, 500)


# ============================================================================ the backend on tablekit serve


def test_connect_is_two_requests_and_metadata_is_lazy_and_cached(served, client, tmp_path):
    url, rec = served
    rec.log.clear()
    tk = connect(client, url, cache_dir=tmp_path)
    assert tk.get_versions() == client.get_versions()  # the versions were asked for in the same round
    assert sorted(rec.paths()) == sorted(
        [
            "/info/api/v2/datastack/full/" + client.datastack,
            "/materialize/api/versions",
            f"/materialize/api/v3/datastack/{client.datastack}/metadata",
        ]
    )
    assert not any("tables" in p or "schema" in p for p in rec.paths())
    rec.log.clear()
    got = tk.tables[NUC](volume={">": 100}).query()
    pd.testing.assert_frame_equal(got, client.tables[NUC](volume={">": 100}).query())
    m3 = f"/materialize/api/v3/datastack/{client.datastack}/version/{client.version}"
    assert sorted(rec.paths()) == sorted(
        [f"{m3}/tables/metadata", "/schema/api/v2/types_all", f"{m3}/table/{NUC}/query"]
    )
    rec.log.clear()  # a second process: everything but the query comes from the disk cache
    tk2 = connect(client, url, cache_dir=tmp_path)
    assert rec.log == []
    pd.testing.assert_frame_equal(tk2.tables[NUC](volume={">": 100}).query(), got)
    assert rec.paths() == [
        f"/materialize/api/v3/datastack/{client.datastack}/version/{client.version}/table/{NUC}/query"
    ]
    tk2.backend.refresh()
    rec.log.clear()
    tk2.backend.tables_metadata(client.version)
    assert any(p.endswith("/tables/metadata") for p in rec.paths())


def test_a_cached_start_opens_the_first_querys_connection_in_advance(served, client, tmp_path):
    """When every start-up answer comes from the disk cache, the connection the first query needs is
    opened in the background (a TLS handshake to a remote server costs round trips), without a
    request; the first query then goes over that very connection."""
    url, rec = served
    connect(client, url, cache_dir=tmp_path).tables[NUC](volume={">": 100}).query()  # fills the cache
    rec.log.clear()
    transport = Urllib3Transport()  # no kept-alive connection from earlier tests
    backend = CaveBackend(client.datastack, url, cache_dir=tmp_path, transport=transport, progress=False)
    pool = transport._manager(url)[0].connection_from_url(url)
    deadline = time.monotonic() + 10
    while not [c for c in list(pool.pool.queue) if c is not None and c.is_connected]:
        assert time.monotonic() < deadline, "no connection was opened in advance"
        time.sleep(0.01)
    assert rec.log == []  # opened, not used
    (opened,) = [c for c in list(pool.pool.queue) if c is not None and c.is_connected]
    port = opened.sock.getsockname()[1]
    tk = tablekit.Client(backend)
    tk.tables[NUC](volume={">": 100}).query()
    assert [r["peer"][1] for r in rec.log] == [port]
    assert pool.num_connections == 1
    transport.preconnect(url)  # already open: nothing new
    assert pool.num_connections == 1
    assert transport.connected(url)
    # a second client of this process finds the idle connection: no background work at all
    again = CaveBackend(client.datastack, url, cache_dir=tmp_path, transport=transport, progress=False)
    assert again._pool._threads == set() and transport._opening == {}  # no preconnect under way
    tablekit.Client(again).tables[NUC](volume={">": 100}).query()
    assert pool.num_connections == 1


def test_a_request_waits_for_the_connection_being_opened_for_it(served, client, tmp_path):
    """A query sent while its connection is still being opened in advance (a slow handshake,
    played by a transport whose handshake takes 0.3 s) goes over that connection instead of
    opening a second one."""
    url, rec = served
    connect(client, url, cache_dir=tmp_path).tables[NUC](volume={">": 100}).query()  # fills the cache

    class SlowHandshake(Urllib3Transport):
        def preconnect(self, url: str, timeout: float = 10.0) -> None:
            time.sleep(0.3)
            super().preconnect(url, timeout)

    transport = SlowHandshake()
    rec.log.clear()
    t0 = time.monotonic()
    backend = CaveBackend(client.datastack, url, cache_dir=tmp_path, transport=transport, progress=False)
    tablekit.Client(backend).tables[NUC](volume={">": 100}).query()
    assert time.monotonic() - t0 >= 0.3  # it waited for the handshake under way
    pool = transport._manager(url)[0].connection_from_url(url)
    assert pool.num_connections == 1
    assert len(rec.log) == 1 and transport._opening == {}


def test_the_idna_codec_is_loaded_with_the_http_module():
    """urllib3 encodes every host name with the idna codec; it comes with tablekit's HTTP module,
    so a new process's first request (or its preconnect thread) does not import it."""
    code = "import sys, tablekit.backends.cave.transport; print('encodings.idna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_cache_files_rewritten_elsewhere_are_read_again(served, client, tmp_path):
    """Clients of one process keep parsed cache files in memory, but a file another process
    rewrote (new size or time) is read again: the next client sees the new content."""
    url, rec = served
    tk = connect(client, url, cache_dir=tmp_path)
    assert tk.info["description"] == client.info["description"]
    (info_file,) = tmp_path.rglob("info.json")
    entry = json.loads(info_file.read_text())
    entry["value"]["description"] = "rewritten by another process"
    info_file.write_text(json.dumps(entry))
    rec.log.clear()
    assert connect(client, url, cache_dir=tmp_path).info["description"] == "rewritten by another process"
    assert not any("/info/" in p for p in rec.paths())  # still from the disk cache, not the server


def test_a_cached_start_parses_only_the_schema_documents_it_uses(served, client, tmp_path):
    """The schema documents are cached one per line: a new process (played by forgetting what this
    one parsed) reads the file and parses only the documents of the tables it queries. A damaged
    file, or a damaged document a table needs, is asked for again (the readable lines are kept); a
    damaged line nothing reads costs nothing."""
    from tablekit.backends.cave import cache

    url, rec = served
    want = connect(client, url, cache_dir=tmp_path).tables[SYN](id=1).query()  # fills the cache
    (path,) = tmp_path.rglob(cache.SCHEMAS_FILE)
    n_docs = len(path.read_bytes().split(b"\n")) - 1
    assert n_docs == len(connect(client, url).backend._types_all()) > 1
    cache._PARSED.clear()
    rec.log.clear()
    tk = connect(client, url, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(tk.tables[SYN](id=1).query(), want)
    assert not any("/schema/" in p for p in rec.paths())  # from the disk cache
    docs = tk.backend._mem[cache.SCHEMAS_FILE]
    used = {m["schema_type"] for m in tk.backend.tables_metadata(tk.version) if m["table_name"] == SYN}
    assert set(docs._parsed) == used and len(docs) == n_docs
    assert dict(docs) == connect(client, url).backend._types_all()  # every line is its document

    good = path.read_bytes()
    head, *lines = good.split(b"\n")
    names = json.loads(head)["names"]
    (mine,) = used
    other = next(n for n in names if n != mine)

    def garbled(*cut: str) -> bytes:  # documents' lines cut short; the file keeps its shape
        at = {names.index(n) for n in cut}
        return b"\n".join([head, *(ln[: len(ln) // 2] if i in at else ln for i, ln in enumerate(lines))])

    # a line nobody reads is never parsed: the query needs no schema request
    path.write_bytes(garbled(other))
    cache._PARSED.clear()
    rec.log.clear()
    pd.testing.assert_frame_equal(connect(client, url, cache_dir=tmp_path).tables[SYN](id=1).query(), want)
    assert not any("/schema/" in p for p in rec.paths())
    for damage in (b"not json", good.replace(b"\n", b"\n\n", 1), garbled(mine), garbled(mine, other)):
        path.write_bytes(damage)
        cache._PARSED.clear()
        rec.log.clear()
        again = connect(client, url, cache_dir=tmp_path)
        pd.testing.assert_frame_equal(again.tables[SYN](id=1).query(), want)
        assert any(p.startswith("/schema/api/v2/types") for p in rec.paths())  # asked again
        cache._PARSED.clear()
        _, rewritten = cache._Sections.read(path)  # written again, whole
        assert used <= set(rewritten) and all(rewritten[t] == docs[t] for t in rewritten)
        if damage == garbled(mine, other):  # the good lines are kept, the damaged ones are not
            assert other not in rewritten and len(rewritten) == n_docs - 1


def test_failing_views_endpoints_never_break_tables(served, client):
    url, rec = served
    rec.faults.append(
        lambda r: (
            (500, [("content-type", "application/json")], b'{"code": 500, "message": "views are broken"}')
            if "/views" in r["path"]
            else None
        )
    )
    try:
        tk = connect(client, url)
        assert tk.get_tables() == client.get_tables()
        with pytest.warns(UserWarning, match="views unavailable"):
            assert tk.get_views() == []
        assert len(tk.query_table(NUC, limit=5)) == 5
    finally:
        rec.faults.clear()


def test_a_views_failure_is_not_remembered(served, client):
    """One failing views request warns and shows no views for that call; the next call asks
    again and sees every view (nothing cached from the failure, in memory or on disk)."""
    url, rec = served
    fail = [True]
    rec.faults.append(
        lambda r: (
            (503, [("content-type", "application/json")], b'{"message": "views are busy"}')
            if "/views" in r["path"] and fail[0]
            else None
        )
    )
    try:
        tk = connect(client, url, max_retries=0)
        with pytest.warns(UserWarning, match="views unavailable.*asked for again"):
            assert tk.get_views() == []
        with pytest.warns(UserWarning, match="views unavailable"):
            assert list(tk.views) == []
        fail[0] = False
        assert tk.get_views() == client.get_views() != []
        assert sorted(tk.views) == sorted(client.views)
        got = tk.views[VIEW]().query(limit=5)
        pd.testing.assert_frame_equal(got, client.views[VIEW]().query(limit=5))
    finally:
        rec.faults.clear()


@pytest.mark.parametrize(
    ("part", "body", "words"),
    [
        ("/views", b'["a view"]', "the views metadata is ['a view'], not an object of views by name"),
        ("/views", b'"views"', "the views metadata is 'views', not an object of views by name"),
        ("/views", b'{"v": 3}', "the views metadata give view 'v' as 3, not an object"),
        ("/views/schemas", b"[1, 2]", "the view schemas is [1, 2], not an object of schemas by name"),
        ("/views/schemas", b'{"v": null}', "the view schemas give schema 'v' as None, not an object"),
    ],
)
def test_a_views_answer_that_is_not_an_object_is_a_server_error(served, client, part, body, words):
    """A views answer of the wrong JSON shape (a list, a string, entries that are not objects) is
    a ServerError naming the endpoint, the fault and the fix (before: AttributeError 'list' object
    has no attribute 'items'); the client warns with it and tables still answer."""
    url, rec = served
    rec.faults.append(
        lambda r: (200, [("content-type", "application/json")], body) if r["path"].endswith(part) else None
    )
    try:
        tk = connect(client, url, max_retries=0)
        v = tk.version
        with pytest.raises(ServerError) as e:
            tk.backend.views_metadata(v)
        endpoint = f"/materialize/api/v3/datastack/{client.datastack}/version/{v}{part}"
        assert endpoint in str(e.value) and words in str(e.value), str(e.value)
        assert "the server's answer is malformed" in str(e.value) and "Retry" in str(e.value)
        assert e.value.url.endswith(endpoint)
        with pytest.warns(UserWarning, match="views unavailable") as w:
            assert tk.get_views() == []
        assert words in str(w[0].message)
        assert len(tk.query_table(NUC, limit=5)) == 5
    finally:
        rec.faults.clear()


def test_a_materialization_service_without_api_v3_is_named(served, client):
    """A service whose API versions lack v3 is refused with what to use instead, whether its
    versions request fails (an old server has no v3 route) or answers."""
    url, rec = served
    v2_only = (200, [("content-type", "application/json")], b"[2]")
    missing = (404, [("content-type", "application/json")], b'{"message": "not found"}')
    for versions_fail in (True, False):
        rec.faults.append(
            lambda r, fail=versions_fail: (
                v2_only
                if r["path"] == "/materialize/api/versions"
                else missing
                if fail and r["path"].endswith("/metadata")
                else None
            )
        )
        try:
            with pytest.raises(UnsupportedError, match=r"speaks API versions \[2\]; tablekit needs API v3"):
                connect(client, url).get_versions()
        finally:
            rec.faults.clear()


def test_unknown_datastack_is_a_clear_error(served):
    url, _ = served
    with pytest.raises(DatastackError, match="knows no datastack 'nope'"):
        tablekit.connect("nope", server=url, cache_dir=False)


def test_explain_and_empty_membership_send_nothing(served, client):
    url, rec = served
    tk = connect(client, url)
    tk.tables[SYN]  # metadata fetched
    tk.get_tables()
    rec.log.clear()
    text = tk.tables[SYN](pre_pt_root_id={"not in": [0]}, size={">": 10}).explain(limit=5)
    e = json.loads(text)
    assert e["method"] == "POST" and e["endpoint"] == "table"
    assert (
        e["url"]
        == f"{url}/materialize/api/v3/datastack/{client.datastack}/version/{client.version}/table/{SYN}/query"
    )
    assert (
        e["query_string"]
        == "return_pyarrow=True&arrow_format=True&split_positions=True&direct_sql_pandas=True"
    )
    assert e["body"] == {
        "filter_notin_dict": {SYN: {"pre_pt_root_id": [0]}},
        "filter_greater_dict": {SYN: {"size": 10.0}},
        "desired_resolution": [4.0, 4.0, 40.0],  # always sent, the table's own (issue 13 §3.1, §3.6)
    }
    assert e["headers"]["Accept-Encoding"] == "zstd"
    assert {"column": "pre_pt_root_id", "op": "not in", "value": [0]} in e["client_side"]
    empty = tk.tables[SYN](pre_pt_root_id=[]).query()
    pd.testing.assert_frame_equal(empty, client.tables[SYN](pre_pt_root_id=[]).query())
    assert tk.tables[SYN](pre_pt_root_id=[]).query(get_counts=True)["count"].tolist() == [0]
    assert rec.log == []


@pytest.mark.filterwarnings("ignore:the server sent no column 'created")
@pytest.mark.parametrize("server", ["limited", "quirky"])
def test_paging_through_a_300_row_limit_is_complete_and_exact(request, server, client, values):
    """2,000 rows through a 300-row limit: equal to the local engine row for row (no duplicates,
    no gaps, id order), whether the server orders rows (tablekit serve) or not (cave_quirks)."""
    tk = connect(client, request.getfixturevalue(server))
    # cave_quirks, as the real server: frozen tables without `created` (nulls and a warning)
    same = pd.testing.assert_frame_equal if server == "limited" else assert_equal_but_created
    q = {"id": {"<=": values["cut"]}}
    got = tk.tables[SYN](**q).query(split_positions=True)
    want = client.tables[SYN](**q).query(split_positions=True)
    assert len(want) == 2001
    same(got, want)
    assert got["id"].is_unique and got["id"].is_monotonic_increasing
    assert got.attrs["request"]["paged"] and got.attrs["pages"] > 7
    assert got.attrs["request"]["expected_rows"] == 2001 and got.attrs["request"]["row_limit"] == 300
    # offset/limit apply to the complete, id-ordered result
    for kw in ({"offset": 1500, "limit": 100}, {"limit": 10}, {"offset": 1990}):
        same(tk.tables[SYN](**q).query(**kw), client.tables[SYN](**q).query(**kw))
    sel = tk.tables[SYN](**q).query(select_columns=["size", "post_pt_position"], offset=5, limit=700)
    same(sel, client.tables[SYN](**q).query(select_columns=["size", "post_pt_position"], offset=5, limit=700))
    assert tk.tables[SYN](**q).query(get_counts=True)["count"].tolist() == [2001]
    ref = tk.tables[CT]().query()  # a join, paged over the reference table's id
    same(ref, client.tables[CT]().query())


def test_complete_false_returns_the_first_page_with_a_warning(limited, client, values):
    tk = connect(client, limited)
    with pytest.warns(
        UserWarning, match=r"cut the answer at its row limit \(300 rows\); this is the first page"
    ):
        got = tk.tables[SYN](id={"<=": values["cut"]}).query(complete=False)
    assert len(got) == 300 and got["id"].is_monotonic_increasing and got.attrs["request"]["truncated"]
    with pytest.warns(UserWarning, match="first page only"):
        df = tk.query_table(SYN, filter_less_equal_dict={"id": values["cut"]}, limit=5, complete=False)
    assert len(df) == 5 and df["id"].is_monotonic_increasing


def test_a_view_without_id_cannot_be_paged_and_says_so(client):
    """A cut answer that has no id to page by raises IncompleteResultError (never silent)."""
    p = wire.plan(client.views[VIEW]().to_query(), client.view_specs(), v3="http://x")
    p = attrs.evolve(p, key=None, key_table=None)
    fake = CaveBackend.__new__(CaveBackend)
    fake.page_size, fake._cap = None, None
    table = pa.table({"id": pa.array(np.arange(300), pa.int64())})
    fake._ask = lambda *a, **k: Answer(table, (), True, 300, None)
    with pytest.raises(IncompleteResultError, match="has no id column to page by"):
        CaveBackend._collect(fake, p, need=None, complete=True, budget=Budget.start(10))
    # an answer that has an id but arrived cut to nothing is not blamed on a missing id column
    p = wire.plan(client.tables[NUC]().to_query(), client.table_specs(), v3="http://x")
    fake._ask = lambda *a, **k: Answer(table.slice(0, 0), (), True, 300, None)
    with pytest.raises(
        IncompleteResultError,
        match=r"sent no rows holding its key column .id., so there is nothing to page from: every row is missing. Retry",
    ):
        CaveBackend._collect(fake, p, need=None, complete=True, budget=Budget.start(10))


@pytest.mark.filterwarnings("ignore:the server sent no column 'created")
def test_not_in_is_applied_although_the_server_ignores_it(quirky, client, values):
    """cave_quirks: the server ignores filter_notin_dict (like every real CAVE server); tablekit's
    answers still exclude the values."""
    root = values["busy_root"]
    url = (
        f"{quirky}/materialize/api/v3/datastack/{client.datastack}/version/{client.version}/table/{SYN}/query"
    )
    raw = requests.post(
        url,
        json={
            "filter_notin_dict": {SYN: {"pre_pt_root_id": [root]}},
            "filter_less_equal_dict": {SYN: {"id": values["cut"]}},
        },
        params=dict(wire.QUERY_FLAGS),
        timeout=60,
    )
    served = pa.ipc.open_stream(raw.content).read_all()
    assert root in served["pre_pt_root_id"].to_pylist()  # the server did not exclude it
    tk = connect(client, quirky)
    for kw in ({"pre_pt_root_id": {"not in": [root, 0]}}, {"pre_pt_root_id": {"!=": root}}):
        kw["id"] = {"<=": values["cut"]}
        got = tk.tables[SYN](**kw).query()
        assert_equal_but_created(got, client.tables[SYN](**kw).query())
        assert root not in set(got["pre_pt_root_id"])
        assert (
            tk.tables[SYN](**kw)
            .query(get_counts=True)
            .equals(client.tables[SYN](**kw).query(get_counts=True))
        )
        assert_equal_but_created(
            tk.tables[SYN](**kw).query(limit=20, offset=3), client.tables[SYN](**kw).query(limit=20, offset=3)
        )
    got = tk.synapse_query(pre_ids=root, include_zeros=False, remove_autapses=True)
    assert_equal_but_created(
        got, client.synapse_query(pre_ids=root, include_zeros=False, remove_autapses=True)
    )
    got = tk.query_table(
        SYN, filter_out_dict={"pre_pt_root_id": [root]}, filter_less_equal_dict={"id": values["cut"]}
    )
    assert len(got) and root not in set(got["pre_pt_root_id"])


def test_progress_bar_only_for_several_pages_and_only_on_stderr(limited, client, values, capfd):
    tk = connect(client, limited, progress=True)
    tk.tables[SYN](id={"<=": values["cut"]}).query()
    out, err = capfd.readouterr()
    assert out == "" and "rows" in err
    tk.tables[NUC]().query(limit=3, select_columns=["id"])
    tk.tables[SYN](id={"<=": values["cut"] // 20}).query()  # fewer rows than the limit
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_live_queries_and_roots_over_http(served, client, values):
    url, rec = served
    tk = connect(client, url)
    ts = client.get_timestamp() + dt.timedelta(days=2)
    root = values["busy_root"]
    a = tk.tables[SYN](pre_pt_root_id=root).live_query(ts, split_positions=True)
    b = client.tables[SYN](pre_pt_root_id=root).live_query(ts, split_positions=True)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(tk.tables[CT]().live_query(ts), client.tables[CT]().live_query(ts))
    roots = [root, int(values["syn"]["post_pt_root_id"].iloc[0])]
    assert tk.get_root_timestamps(roots) == client.get_root_timestamps(roots)
    for t in (ts, client.get_timestamp(343)):
        assert (
            tk.is_latest_roots(roots, timestamp=t).tolist()
            == client.is_latest_roots(roots, timestamp=t).tolist()
        )
    sv = values["syn"]["pre_pt_supervoxel_id"].to_numpy()[:50]
    assert tk.backend.history.roots_at(sv, ts).tolist() == client.backend.history.roots_at(sv, ts).tolist()
    assert tk.get_latest_roots(root).tolist() == client.get_latest_roots(root).tolist()  # via the lineage
    # supervoxels through node/{root}/leaves (layer 1), over the same transport: a 503 is retried
    rec.log.clear()
    busy = [True]  # the first leaves request only

    def once_busy(r: dict[str, Any]) -> tuple[Any, ...] | None:
        if not (busy and r["path"].endswith("/leaves")):
            return None
        busy.clear()
        return (503, [("content-type", "application/json"), ("retry-after", "0")], b'{"message": "busy"}')

    rec.faults.append(once_busy)
    try:
        assert tk.suggest_latest_roots(root, timestamp=ts) == client.suggest_latest_roots(root, timestamp=ts)
    finally:
        rec.faults.clear()
    leaves = [r for r in rec.log if r["path"].endswith(f"/node/{root}/leaves")]
    assert len(leaves) == 2 and all(
        r["method"] == "GET" and r["query"] == [("stop_layer", "1")] for r in leaves
    )
    live_view = attrs.evolve(client.views[VIEW]().to_query(), version=None, timestamp=ts)
    with pytest.raises(UnsupportedError, match="no live endpoint for views"):
        tk.backend.explain(live_view)


def test_desired_resolution_counts_and_regex_and_boxes(limited, client):
    tk = connect(client, limited)
    cases = [
        lambda c: c.tables[CT](cell_type={"regex": "^5P"}).query(desired_resolution=[1, 1, 1]),
        lambda c: c.tables[NUC](pt_position_bbox=[[0, 0, 0], [200_000, 200_000, 30_000]]).query(),
        lambda c: c.tables[NUC](volume={">=": 200.5, "<": 600}).query(get_counts=True),
        lambda c: c.views[VIEW]().query(desired_resolution=[8, 8, 40], split_positions=True),
    ]
    for case in cases:
        pd.testing.assert_frame_equal(case(tk), case(client))


def test_a_small_answer_is_decoded_outside_pyarrows_default_memory_pool(served, client, values, monkeypatch):
    """pyarrow's default memory pool (mimalloc) costs a process about 0.5 ms, at times 10 ms, to set
    up on first use; a small answer (a zstd-compressed Arrow body) is decoded into the system
    allocator's memory, so a first query does not pay for that. Rows equal the local engine's."""
    url, rec = served
    pool = pa.default_memory_pool()
    if not hasattr(pool, "num_allocations"):
        pytest.skip(f"pyarrow {pa.__version__} cannot count a memory pool's allocations (20 can)")
    seen: list[tuple[int, int]] = []  # (body size, default-pool allocations while reading it)
    read = decoding.read_arrow  # reads an Arrow answer once, while the session checks it whole

    def counted(resp: Any) -> pa.Table | None:
        before = pool.num_allocations()  # the server runs in this process: count the read only
        table = read(resp)
        seen.append((len(resp.content), pool.num_allocations() - before))
        return table

    monkeypatch.setattr(decoding, "read_arrow", counted)
    tk = connect(client, url)
    root = values["busy_root"]
    rec.log.clear()
    got = tk.tables[SYN](pre_pt_root_id=root).query(split_positions=True)
    (req,) = [r for r in rec.log if r["path"].endswith("/query")]
    assert req["response_headers"]["content-type"] == wire.ARROW_CONTENT_TYPE
    assert "zstd" in req["headers"]["accept-encoding"]  # Arrow buffers compressed: decoding allocates
    assert len(seen) == 1 and seen[0][0] <= decoding._SMALL_ANSWER and seen[0][1] == 0, seen
    want = client.tables[SYN](pre_pt_root_id=root).query(split_positions=True)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got, want)
    # a large answer keeps the default pool (faster for big buffers): the decode does allocate there
    seen.clear()
    tk.query_table(SYN, split_positions=True)
    assert (
        seen
        and max(size for size, _ in seen) > decoding._SMALL_ANSWER
        and all(n > 0 for size, n in seen if size > decoding._SMALL_ANSWER)
    )
