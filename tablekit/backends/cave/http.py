"""HTTP for the CAVE backend: the token, one session, timeouts, retries and error mapping.

* :func:`find_token` looks for a token where CAVEclient users already keep one: the ``token``
  argument, the ``CAVE_TOKEN`` environment variable, then CAVEclient's secret files
  (``~/.cloudvolume/secrets/{host}-cave-secret.json``, ``cave-secret.json``, the deprecated
  ``chunkedgraph-secret.json``). A :class:`Token` never shows its value: not in ``repr``, not in
  logs, not in error messages (every message goes through :func:`redact`).
* :class:`HTTPSession` sends every request with ``Authorization: Bearer`` and the
  ``middle_auth_token`` cookie, a timeout, and retries with exponential backoff on connection
  errors (refused, reset, a body cut short), 502/503/504 and 429 (waiting as ``Retry-After``
  says), and, for idempotent requests, read timeouts — within a total time budget
  (:class:`Budget`). A body is checked before it is returned: an Arrow stream must end with its
  end-of-stream marker, and a body whose end only the closed connection marks must be JSON that
  parses (a bare JSON number, or any other format, must come back the same twice). Error statuses become
  :class:`tablekit.errors.HTTPError` subclasses carrying the status, the URL and the server's
  ``message``. Redirects to a login page become :class:`~tablekit.errors.AuthError`; a browser is
  never opened.
* The network is behind one method, :meth:`Transport.send`; tests can pass any object that has it.
"""

from __future__ import annotations

import datetime as _dt
import email.utils

# urllib3 checks host names with the idna codec: loaded with this module, not lazily inside the
# first request (or a preconnect thread)
import encodings.idna  # noqa: F401
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import attrs

from ...errors import (
    AuthError,
    ConnectionFailedError,
    HTTPError,
    QueryError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)
from .token import SECRETS_DIR, TOKEN_ENV, Token, find_token, redact, secret_files
from .transport import Request, Response, Transport, Urllib3Transport, pairs, shared_transport

__all__ = [
    "DEFAULT_RETRY_BUDGET",
    "RETRY_STATUSES",
    "TOKEN_ENV",
    "Budget",
    "HTTPSession",
    "Request",
    "Response",
    "Token",
    "Transport",
    "Urllib3Transport",
    "find_token",
    "redact",
    "secret_files",
    "shared_transport",
]

logger = logging.getLogger("tablekit.http")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: seconds after a request (or a query: see :class:`Budget`) starts beyond which it is not retried
DEFAULT_RETRY_BUDGET = 600.0
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Arrow IPC stream content types (CAVE's materialization service sends ``data.arrow``)
_ARROW_STREAM = ("data.arrow", "application/vnd.apache.arrow.stream", "application/arrow.stream")
_REDIRECTS = (301, 302, 303, 307, 308)


# --------------------------------------------------------------------------- budget, body checks


@attrs.define
class Budget:
    """The time the requests of one query may take to be retried, shared by all of them.

    No attempt is retried once ``deadline`` (``time.monotonic()``) has passed, a retry's read
    timeout is cut to the time left, and a wait that would end after it is not made. Setting
    ``cancel`` stops the retries of every request holding this budget (the page workers of a
    download that failed or was interrupted): each raises instead of trying again.
    """

    seconds: float
    deadline: float
    cancel: threading.Event = attrs.field(factory=threading.Event)

    @classmethod
    def start(cls, seconds: float) -> Budget:
        return cls(seconds, time.monotonic() + seconds)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sharing(self) -> Budget:
        """The same deadline with a cancel of its own (for a group of workers stopped together)."""
        return Budget(self.seconds, self.deadline)


def _framed(resp: Response) -> bool:
    """Whether HTTP itself says where the body ends (Content-Length or chunked): urllib3 then
    raises when the connection closes early. Otherwise only the closed connection ends it."""
    if resp.header("content-length") is not None:
        return True
    return "chunked" in (resp.header("transfer-encoding") or "").lower()


def _arrow_ends(body: bytes) -> bool | None:
    """Whether an Arrow IPC stream is whole messages ending with the end-of-stream marker (8 bytes
    ``ff ff ff ff 00 00 00 00``, or the legacy 4 zero bytes): a stream cut between two messages
    reads as a shorter valid stream without it. None when the bytes are no Arrow stream at all
    (or whole-body zstd that does not decompress)."""
    import pyarrow as pa

    if body[:4] == b"\x28\xb5\x2f\xfd":  # whole-body zstd the HTTP stack left alone
        try:
            body = pa.input_stream(pa.py_buffer(body), compression="zstd").read()
        except (OSError, ValueError, pa.ArrowException):
            return None
    reader = pa.BufferReader(pa.py_buffer(body))
    whole = 0  # messages read
    try:
        messages = pa.ipc.MessageReader.open_stream(reader)
        while True:
            before = reader.tell()
            try:
                messages.read_next_message()
            except StopIteration:
                return reader.tell() > before  # the marker was read, not the end of the bytes
            whole += 1
    except (OSError, ValueError, pa.ArrowException):
        return False if whole else None


#: reads an Arrow stream body in one pass: its value when that read shows it whole (it ends with
#: the end-of-stream marker), else None (see :func:`tablekit.backends.cave.decode.read_arrow`)
ArrowReader = Callable[[Response], Any]


def _body_check(resp: Response, read_arrow: ArrowReader | None = None) -> tuple[str | None, Any]:
    """What is wrong with a 2xx body, or None when it is known whole (or is for the decoder to
    refuse): ``"cut"`` (it ended early: only the closed connection marked its end), ``"short"``
    (HTTP says it all arrived but the Arrow stream stops before its end marker: the server cut it),
    ``"unverified"`` (nothing shows whether it is whole); with what ``read_arrow`` made of an Arrow
    body it read whole (else None). With ``read_arrow`` a whole Arrow body is parsed once, by it;
    the message-by-message check (:func:`_arrow_ends`) only classifies one it did not read."""
    if resp.status == 204:
        return None, None
    ctype = resp.content_type
    framed = _framed(resp)
    if ctype in _ARROW_STREAM or ctype.endswith("arrow.stream"):
        if read_arrow is not None:
            parsed = read_arrow(resp)
            if parsed is not None:
                return None, parsed
        ends = _arrow_ends(resp.content)
        if ends:
            return None, None
        if not framed:
            return "cut", None
        # not Arrow at all: the decoder says what it is
        return ("short" if ends is False else None), None
    if framed:
        return None, None
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            value = json.loads(resp.content)
        except ValueError:
            return "cut", None
        # a cut object, array or string does not parse; a cut number ("2000" → "20") does
        return (None if isinstance(value, (dict, list, str)) else "unverified"), None
    return "unverified", None


# --------------------------------------------------------------------------- session


def _timeout(t: float | tuple[float, float] | None) -> tuple[float, float]:
    if t is None:
        return (10.0, 300.0)
    c = r = -1.0
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        c = r = float(t)
    elif isinstance(t, (tuple, list)) and len(t) == 2:
        try:
            c, r = float(t[0]), float(t[1])
        except (TypeError, ValueError):
            pass
    if not (c > 0 and r > 0):
        raise QueryError(f"timeout must be seconds > 0, or a (connect, read) pair of them; got {t!r}")
    return (c, r)


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, when.timestamp() - now)


class HTTPSession:
    """Auth, timeouts, retries and error mapping around a :class:`Transport`.

    ``timeout`` is seconds (one number, or ``(connect, read)``); ``max_retries`` is the number of
    retries after the first attempt; the wait before retry ``n`` is ``backoff * 2**n`` seconds
    (±25 %, at most ``max_wait``), or what ``Retry-After`` asks for when the server sends it (a
    wait longer than ``max_wait`` is not made: the error is raised with the time to come back).
    Retried: connection failures (refused, reset, a body cut short), 429/502/503/504 and, for
    idempotent requests, read timeouts. ``retry_budget`` (default
    :data:`DEFAULT_RETRY_BUDGET`, 600 s) bounds the time: no retry starts later than that after
    the request (or the query, with a shared :class:`Budget`) started, and a retry's read timeout
    is cut to what is left, so a request fails within about ``retry_budget`` plus one read timeout.
    """

    def __init__(
        self,
        token: Token | None,
        *,
        timeout: float | tuple[float, float] | None = None,
        max_retries: int = 3,
        backoff: float = 0.25,
        max_wait: float = 60.0,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
        transport: Transport | None = None,
        user_agent: str = "tablekit",
        sleep: Callable[[float], None] | None = None,
    ):
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise QueryError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if (
            isinstance(retry_budget, bool)
            or not isinstance(retry_budget, (int, float))
            or not retry_budget > 0
            or retry_budget == float("inf")
        ):
            raise QueryError(f"retry_budget must be a finite number of seconds > 0, got {retry_budget!r}")
        self.retry_budget = float(retry_budget)
        self.token = token
        self.timeout = _timeout(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_wait = float(max_wait)
        self.transport: Transport = transport if transport is not None else shared_transport()
        self.user_agent = user_agent
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"<HTTPSession token={self.token!r} timeout={self.timeout} max_retries={self.max_retries}>"

    def close(self) -> None:
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    def _headers(self, extra: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        h = [("User-Agent", self.user_agent), ("X-Requested-With", "tablekit")]
        if self.token is not None:
            t = self.token.reveal()
            h += [("Authorization", f"Bearer {t}"), ("Cookie", f"middle_auth_token={t}")]
        names = {k.lower() for k, _ in extra}
        return tuple((k, v) for k, v in h if k.lower() not in names) + tuple(extra)

    def redact(self, text: str) -> str:
        return redact(text, self.token)

    def _redact_headers(self, resp: Response) -> Response:
        """``resp`` with the token redacted from its header values (a server's ``Warning`` lines
        reach ``warnings.warn`` and ``df.attrs``)."""
        if self.token is None:
            return resp
        clean = {k: tuple(self.redact(v) for v in vs) for k, vs in resp.headers.items()}
        return resp if clean == resp.headers else attrs.evolve(resp, headers=clean)

    def budget(self) -> Budget:
        """A new :class:`Budget` of ``retry_budget`` seconds, to share between the requests of one query."""
        return Budget.start(self.retry_budget)

    def open_ahead(self, url: str) -> None:
        """Start opening a connection to ``url``'s host in the background, ahead of the first
        request there, if the transport can."""
        ahead = getattr(self.transport, "open_ahead", None)
        if ahead is not None:
            ahead(url, timeout=self.timeout[0])

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Any = None,
        timeout: float | tuple[float, float] | None = None,
        ok: Sequence[int] = (),
        idempotent: bool | None = None,
        budget: Budget | None = None,
        read_arrow: ArrowReader | None = None,
    ) -> Response:
        """Send a request and return the response of status 2xx (or one listed in ``ok``).

        ``read_arrow`` reads an Arrow body while checking it whole (:data:`ArrowReader`); what it
        returns is the response's ``parsed``.

        ``idempotent`` (default: true for GET, HEAD, OPTIONS, PUT, DELETE) lets a read timeout be
        retried; ``budget`` is the query's (default: one of ``retry_budget`` for this request).
        Raises :class:`~tablekit.errors.HTTPError` subclasses; their messages never hold the token.
        """
        base = Request(method, url, params=params, json=json, data=data, headers=pairs(headers))
        req = attrs.evolve(base, headers=self._headers(base.headers))
        tmo = self.timeout if timeout is None else _timeout(timeout)
        if idempotent is None:
            idempotent = method.upper() in _IDEMPOTENT
        try:
            return self._send(req, tmo, ok, idempotent, budget or self.budget(), read_arrow)
        except HTTPError as e:  # last line of defence: no message may carry the token
            text = self.redact(str(e))
            if text != str(e):
                e.args = (text,)
            raise

    def _send(
        self,
        req: Request,
        timeout: tuple[float, float],
        ok: Sequence[int],
        idempotent: bool,
        budget: Budget,
        read_arrow: ArrowReader | None = None,
    ) -> Response:
        attempt = 0
        redirects = 0
        unverified: bytes | None = None  # a body nothing shows whole, waiting for a second copy
        while True:
            if budget.cancel.is_set():
                raise HTTPError(
                    f"{req.method} {req.url}: stopped, another request of the same query failed or it was "
                    "interrupted",
                    url=req.url,
                    method=req.method,
                )
            t0 = time.perf_counter()
            tmo = timeout if attempt == 0 else (timeout[0], max(0.05, min(timeout[1], budget.left())))
            try:
                resp = self.transport.send(req, timeout=tmo)
            except (ConnectionFailedError, RequestTimeoutError) as e:
                if isinstance(e, RequestTimeoutError) and not idempotent:
                    raise
                self._retry(
                    req, e, attempt, budget, self._backoff(attempt), f"failed ({self.redact(str(e))})"
                )
                attempt += 1
                continue
            logger.debug(
                "%s %s -> %d (%.3fs, %d bytes)",
                req.method,
                req.url,
                resp.status,
                time.perf_counter() - t0,
                len(resp.content),
            )
            if resp.status in _REDIRECTS:
                loc = resp.header("location") or ""
                if (
                    "authorize" in loc
                    or "/auth/" in loc
                    or redirects >= 5
                    or (req.method != "GET" and resp.status not in (307, 308))
                ):
                    raise AuthError(
                        f"{req.method} {req.url}: the server redirected to {self.redact(loc)!r} (HTTP "
                        f"{resp.status}) instead of answering: it wants a login. {self._token_hint()}",
                        status=resp.status,
                        url=req.url,
                        method=req.method,
                    )
                target = urljoin(req.url, loc)
                if urlsplit(target)[:2] != urlsplit(req.url)[:2]:  # never carry the token elsewhere
                    raise ServerError(
                        f"{req.method} {req.url}: the server redirected to another host ({target!r}, HTTP "
                        f"{resp.status}); connect to that server instead",
                        status=resp.status,
                        url=req.url,
                        method=req.method,
                    )
                req = attrs.evolve(req, url=target, params=())
                redirects += 1
                continue
            if 200 <= resp.status < 300:
                problem, parsed = _body_check(resp, read_arrow)
                if problem == "unverified" and unverified is not None and unverified == resp.content:
                    problem = None  # the same body twice: whole
                if problem is not None:
                    unverified = resp.content if problem == "unverified" else None
                    e = _incomplete(req, resp, problem)
                    if not idempotent:
                        raise e
                    # a second copy to compare with is asked for at once; a cut one after a backoff
                    wait = 0.0 if problem == "unverified" else self._backoff(attempt)
                    why = (
                        "answer to confirm with a second copy"
                        if problem == "unverified"
                        else "answer cut short"
                    )
                    self._retry(req, e, attempt, budget, wait, why)
                    attempt += 1
                    continue
                resp = self._redact_headers(resp)
                return resp if parsed is None else attrs.evolve(resp, parsed=parsed)
            if resp.status in ok:
                return self._redact_headers(resp)
            if (resp.status in RETRY_STATUSES or _rate_limited_500(resp)) and attempt < self.max_retries:
                after = _retry_after(resp.header("retry-after"), time.time())
                if after is not None and after > self.max_wait:
                    raise self._error(req, resp, f" (the server asks to retry in {after:.0f} s)")
                wait = after if after is not None else self._backoff(attempt)
                if wait >= budget.left():
                    raise self._error(req, resp, self._spent(attempt, budget))
                self._pause(req, f"-> HTTP {resp.status}", attempt, wait, budget)
                attempt += 1
                continue
            raise self._error(req, resp, f" (after {attempt + 1} attempts)" if attempt else "")

    def _spent(self, attempt: int, budget: Budget) -> str:
        return (
            f" (after {attempt + 1} attempts; the retry budget of {budget.seconds:g} s is spent: "
            "connect(..., retry_budget=SECONDS) allows longer)"
        )

    def _retry(self, req: Request, e: HTTPError, attempt: int, budget: Budget, wait: float, why: str) -> None:
        """Wait before trying ``req`` again after ``e``, or raise ``e`` (with the attempts made)
        when the retries or the budget are spent."""
        if attempt >= self.max_retries:
            tail = f" (after {attempt + 1} attempts)"
        elif wait >= budget.left():
            tail = self._spent(attempt, budget)
        else:
            self._pause(req, why, attempt, wait, budget)
            return
        raise type(e)(self.redact(f"{e}{tail}"), status=e.status, url=req.url, method=req.method) from None

    def _pause(self, req: Request, why: str, attempt: int, wait: float, budget: Budget | None = None) -> None:
        """Say why a request is tried again, then wait (cut short when the budget is cancelled)."""
        logger.warning(
            "tablekit: %s %s %s; retry %d/%d in %.2fs",
            req.method,
            req.url,
            why,
            attempt + 1,
            self.max_retries,
            wait,
        )
        if self._sleep is not None:
            self._sleep(wait)
        elif budget is not None:
            budget.cancel.wait(wait)
        elif wait > 0:
            time.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        return min(self.max_wait, self.backoff * (2**attempt) * random.uniform(0.75, 1.25))

    def _token_hint(self) -> str:
        if self.token is None:
            return (
                f"No token was sent: pass token=..., set ${TOKEN_ENV}, or save one in "
                f'{SECRETS_DIR / "cave-secret.json"} as {{"token": "..."}}'
            )
        return f"The token from {self.token.source} was sent"

    def _error(self, req: Request, resp: Response, tail: str = "") -> HTTPError:
        code, server_msg, data = _error_body(resp)
        where = f"{req.method} {req.url}"
        kw: dict[str, Any] = {
            "status": resp.status,
            "url": req.url,
            "method": req.method,
            "server_message": self.redact(server_msg) if server_msg else server_msg,
            "code": code,
        }
        said = f": {server_msg}" if server_msg else ""
        if resp.status == 403 and code == "missing_tos":
            form = data.get("tos_form_url") or "(the server gave no form URL)"
            name = data.get("tos_name") or data.get("tos_id") or "the dataset's terms of service"
            msg = (
                f"{where}: HTTP 403 missing_tos: this dataset requires accepting {name}. Open {form} "
                "in a browser, accept, and retry (tablekit never opens a browser)"
            )
            return AuthError(self.redact(msg), **kw)
        if resp.status == 403 and code == "missing_permission":
            msg = (
                f"{where}: HTTP 403 missing_permission: the token from "
                f"{self.token.source if self.token else '(none)'} lacks permission "
                f"{data.get('required_permission')!r} on {data.get('auth_dataset')!r}{said}"
            )
            return AuthError(self.redact(msg), **kw)
        if resp.status in (401, 403) or code in ("bad_auth_header", "invalid_token", "no_token"):
            hint = self._token_hint()
            if code == "invalid_token" and self.token is not None:
                hint = f"The token from {self.token.source} is unknown or expired; get a new one and retry"
            return AuthError(
                self.redact(f"{where}: HTTP {resp.status} {code or ''}{said}. {hint}".replace("  ", " ")),
                **kw,
            )
        if resp.status == 429 or _rate_limited_500(resp):
            return RateLimitError(
                self.redact(
                    f"{where}: HTTP 429: the server's rate limit refused the request{said}{tail}; "
                    "wait and retry, or lower connect(..., max_workers=...)"
                ),
                **kw,
            )
        return ServerError(self.redact(f"{where}: HTTP {resp.status}{said}{tail}"), **kw)


def _rate_limited_500(resp: Response) -> bool:
    """A rate-limit refusal the server's catch-all turned into a 500: MaterializationEngine's
    ``unhandled_exception`` answers flask-limiter's ``TooManyRequests`` as
    ``500 {"code": 500, "message": "429 Too Many Requests: …"}``."""
    if resp.status != 500:
        return False
    msg = _error_body(resp)[1]
    return bool(msg) and msg.startswith("429 ")  # type: ignore[union-attr]


def _incomplete(req: Request, resp: Response, problem: str) -> HTTPError:
    """The error for a 2xx body that :func:`_body_check` found incomplete (``problem``)."""
    what = resp.content_type or "body"
    kw: dict[str, Any] = {"status": resp.status, "url": req.url, "method": req.method}
    if problem == "short":
        return ServerError(
            f"{req.method} {req.url}: the server's {what} answer stops before the Arrow end-of-stream "
            f"marker although all {len(resp.content)} bytes it announced arrived: the server cut it short. "
            "Retry; if it persists, report it to the server's operators",
            **kw,
        )
    said = (
        f"the answer was cut short ({len(resp.content)} bytes arrived; a {what} that does not end where "
        "its format ends)"
        if problem == "cut"
        else f"the answer's end is marked only by the closed connection and two copies of it ({what}) "
        "did not agree"
    )
    return ConnectionFailedError(
        f"{req.method} {req.url}: {said}; a proxy or the network dropped part of it. Retry, or check the "
        "proxy settings (http_proxy/https_proxy)",
        **kw,
    )


def _error_body(resp: Response) -> tuple[str | None, str | None, dict[str, Any]]:
    """``(error code, message, data)`` from an error body: CAVE's ``{error, message, data}`` or
    ``{code, message, traceback}``, a JSON string, or text."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.content[:500].decode("utf-8", "replace").strip()
        return None, (text or None), {}
    if isinstance(body, dict):
        code = body.get("error")
        msg = body.get("message")
        errors = body.get("errors")
        if isinstance(errors, (dict, list)):  # flask-restx: {"errors": {arg: why}, "message": "Input …"}
            msg = json.dumps(errors) if msg is None else f"{msg}: {json.dumps(errors)}"
        if msg is None and isinstance(body.get("schema_errors"), (dict, list)):
            # MaterializationEngine's @accepts body validation: 500 {"schema_errors": {field: [why]}}
            msg = f"the request body is invalid: {json.dumps(body['schema_errors'])}"
        raw = body.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        return (str(code) if code else None), (str(msg) if msg is not None else None), data
    if isinstance(body, str):
        return None, body, {}
    return None, json.dumps(body)[:500], {}
