"""Test helper: a fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of a ``tablekit serve``.

>>> with FaultProxy(upstream_url, seed=1, rate=0.3, kinds=MIXED) as url:   # doctest: +SKIP
...     tablekit.connect("demo", server=url).query_table("synapses_pni_2")

Each request is forwarded to the upstream whole (the upstream's answer is read to its end), then
answered as is or with one fault:

* ``"502"``, ``"503"``, ``"504"``: that status with a JSON ``message`` (the connection stays open);
* ``"429"``: 429 with ``Retry-After: 0``;
* ``"reset"``: the headers and part of the body, then a TCP reset (RST);
* ``"cut"``: the headers with the whole body's ``Content-Length``, part of the body, then a close;
* ``"cut_nolength"``: no ``Content-Length`` (the body ends when the connection closes), part of
  the body, then a close;
* ``"cut_between"``: as ``cut_nolength``, but an Arrow stream is cut between two of its messages
  (it then reads as a shorter valid stream unless its end-of-stream marker is checked);
* ``"stall"``: nothing (or the headers and part of the body) for ``stall`` seconds, then a close.

Which request gets which fault is decided by a random generator seeded with ``seed``, the
request (method, target, body) and how many times that same request came before, so a run is
the same whatever order the client's threads send in. Bounded: after ``max_requests`` requests
every answer passes untouched, and a stall lasts ``stall`` seconds (at most 5). Only loopback is
ever used. ``stats`` counts the requests and the faults of each kind; ``forwarded`` lists each request
forwarded with the size of the body the upstream answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import random
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from _server import loopback_socket

__all__ = ["FAULTS", "NO_STALLS", "Fault", "FaultProxy", "stats_line"]

#: every fault kind, and the ones without stalls
FAULTS = ("502", "503", "504", "429", "reset", "cut", "cut_nolength", "cut_between", "stall")
NO_STALLS = tuple(k for k in FAULTS if k != "stall")

_REASONS = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}
_REASONS |= {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
_ARROW = b"application/vnd.apache.arrow.stream"


Fault = Callable[[str, str, bytes, int], "str | None"]  # (method, target, body, occurrence) -> kind


def _arrow_boundaries(body: bytes) -> list[int]:
    """Offsets just after each whole message of an Arrow IPC stream (the schema, each batch)."""
    import pyarrow as pa

    try:
        reader = pa.BufferReader(pa.py_buffer(body))
        messages = pa.ipc.MessageReader.open_stream(reader)
        out = []
        while True:
            try:
                messages.read_next_message()
            except StopIteration:
                return out[:-1] if out and out[-1] == len(body) else out
            out.append(reader.tell())
    except (pa.ArrowException, OSError, ValueError):
        return []


class FaultProxy:
    """The proxy (a context manager yielding its base URL); see the module docstring."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        rate: float = 0.3,
        kinds: Sequence[str] = FAULTS,
        stall: float = 1.5,
        max_requests: int = 20_000,
        decide: Fault | None = None,
    ):
        u = urlsplit(upstream)
        if u.hostname != "127.0.0.1":
            raise ValueError("the fault proxy only talks to 127.0.0.1")
        unknown = set(kinds) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULTS}")
        self.upstream = (u.hostname, u.port or 80)
        self.seed, self.rate, self.kinds = seed, float(rate), tuple(kinds)
        self.stall = min(float(stall), 5.0)
        self.max_requests = max_requests
        self._decide = decide
        self.stats: collections.Counter[str] = collections.Counter()
        #: (method, target, body bytes of the upstream's answer) of every request forwarded
        self.forwarded: list[tuple[str, str, int]] = []
        self._seen: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> str:
        sock = loopback_socket()
        sock.listen(128)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(asyncio.start_server(self._client, sock=sock))
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                loop.run_until_complete(server.wait_closed())
                tasks = list(asyncio.all_tasks(loop))
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self.url

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ decisions
    def _fault(self, method: str, target: str, body: bytes) -> tuple[str | None, random.Random]:
        """The fault for this request (or None) and the generator that shapes it (where to cut)."""
        digest = hashlib.sha256(body).hexdigest()[:16]
        key = (method, target, digest)
        n = self._seen[key]
        self._seen[key] += 1
        self.stats["requests"] += 1
        rng = random.Random(f"{self.seed}|{method}|{target}|{digest}|{n}")
        if self.stats["requests"] > self.max_requests:
            return None, rng
        if self._decide is not None:
            return self._decide(method, target, body, n), rng
        if rng.random() >= self.rate:
            return None, rng
        return rng.choice(self.kinds), rng

    # ------------------------------------------------------------------ the proxy
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, target, headers, body = request
                kind, rng = self._fault(method, target, body)
                if kind is not None:
                    self.stats[kind] += 1
                if kind == "stall" and rng.random() < 0.5:
                    await asyncio.sleep(self.stall)  # nothing at all, then a close
                    return
                status, out_headers, content = await self._forward(method, target, headers, body)
                self.forwarded.append((method, target, len(content)))
                if not await self._answer(writer, kind, rng, status, out_headers, content):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError, asyncio.CancelledError):
            return  # a client gone, or the proxy shutting down
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        r, w = await asyncio.open_connection(*self.upstream)
        try:
            keep = [(k, v) for k, v in headers if k.lower() not in ("connection", "keep-alive")]
            head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in keep)
            w.write((head + "Connection: close\r\n\r\n").encode("latin-1") + body)
            await w.drain()
            raw = await r.read()
        finally:
            w.close()
        top, _, content = raw.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        out = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if ":" in line]
        if any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in out):
            content = _dechunk(content)
        drop = ("content-length", "transfer-encoding", "connection", "keep-alive")
        return status, [(k, v) for k, v in out if k.lower() not in drop], content  # type: ignore[misc]

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        kind: str | None,
        rng: random.Random,
        status: int,
        headers: list[tuple[str, str]],
        content: bytes,
    ) -> bool:
        """Send the answer (with ``kind``'s fault); whether the connection stays open."""
        if kind in ("500", "502", "503", "504", "429"):  # 500: only through ``decide``
            status = int(kind)
            content = b'{"message": "fault proxy: ' + kind.encode() + b'"}'
            headers = [("content-type", "application/json")]
            if kind == "429":
                headers.append(("retry-after", "0"))
        cut = rng.randrange(len(content)) if content else 0
        if kind == "cut_between" and _ARROW in b"".join(v.encode() for _, v in headers):
            bounds = _arrow_boundaries(content)
            if bounds:
                cut = rng.choice(bounds)  # a shorter stream that is valid but for its end marker
        unframed = kind in ("cut_nolength", "cut_between")
        length = [] if unframed else [("Content-Length", str(len(content)))]
        closing = [("Connection", "close")] if unframed or kind in ("cut", "reset", "stall") else []
        head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in [*headers, *length, *closing]) + "\r\n"
        if unframed or kind in ("reset", "cut", "stall"):
            writer.write(head.encode("latin-1") + content[:cut])
            await writer.drain()
            if kind == "stall":
                await asyncio.sleep(self.stall)
            elif kind == "reset":
                sock = writer.get_extra_info("socket")
                if sock is not None:  # close with RST, not FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        writer.write(head.encode("latin-1") + content)
        await writer.drain()
        return True


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, list[tuple[str, str]], bytes] | None:
    line = await reader.readline()
    if not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: list[tuple[str, str]] = []
    while True:
        h = (await reader.readline()).decode("latin-1").rstrip("\r\n")
        if not h:
            break
        k, _, v = h.partition(":")
        headers.append((k.strip(), v.strip()))
    n = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    body = await reader.readexactly(n) if n else b""
    return method, target, headers, body


def _dechunk(data: bytes) -> bytes:
    out, i = [], 0
    while True:
        j = data.index(b"\r\n", i)
        size = int(data[i:j].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[j + 2 : j + 2 + size])
        i = j + 2 + size + 2


def stats_line(stats: Any) -> str:
    """``requests=N 502=… …`` for a report."""
    return " ".join(f"{k}={stats[k]}" for k in ("requests", *FAULTS) if stats.get(k))
