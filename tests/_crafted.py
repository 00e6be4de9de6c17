"""Test helper: a tiny stdlib HTTP proxy on 127.0.0.1 that answers chosen paths with crafted bodies.

A malformed server answer (a versions list that is a number, a count of ``"many"``, garbage under
``Content-Encoding: zstd``…) is a fault a real ``tablekit serve`` never produces, so the bad-input
tests put this in front of one: a request whose path matches a rule gets the rule's answer, every
other request is forwarded unchanged. It binds loopback only, serves one request per connection
and holds nothing but the rules it is given.

>>> with crafted_proxy(base_url, {"/count": (200, "application/json", b'"many"')}) as url:  # doctest: +SKIP
...     tablekit.connect("demo", server=url, cache_dir=False)
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

__all__ = ["crafted_proxy"]

#: a rule's answer: (status, content type, body) or (status, content type, body, extra headers)
Answer = tuple


@contextlib.contextmanager
def crafted_proxy(upstream: str, rules: Mapping[str, Answer]) -> Iterator[str]:
    """Forward to ``upstream``; a request whose path ends with a rule's key (query string left out)
    gets that rule's answer instead. Yields the proxy's base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: nothing is left half-read

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _answer(self) -> None:
            path = self.path.split("?", 1)[0]
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            for key, rule in rules.items():
                if path.endswith(key):
                    status, ctype, data, *extra = rule
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    for k, v in (extra[0] if extra else {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
            req = urllib.request.Request(upstream + self.path, data=body, method=self.command)
            for k, v in self.headers.items():
                if k.lower() not in (
                    "content-length",
                    "connection",
                    "accept-encoding",
                ):  # Host kept: links point here
                    req.add_header(k, v)
            try:
                resp = urllib.request.urlopen(req, timeout=30)
            except urllib.error.HTTPError as e:
                resp = e
            data = resp.read()
            self.send_response(resp.status if hasattr(resp, "status") else resp.code)
            for k, v in resp.headers.items():
                if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="crafted-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
