"""Fault injection: no answer through a failing network is ever silently partial or wrong.

A :class:`~_fault_proxy.FaultProxy` on 127.0.0.1 sits in front of ``tablekit serve`` of the demo
datastack (the session's 20k-synapse build) with a 500-row limit, so most queries are paged. Over
a set of paged, offset/limit, count, join, view and live queries, each scenario injects one kind
of fault (or a mix) into about 30 % of the requests, for two seeds. The oracle is the same query
through the local engine on the same datastack directory. Each query must come back

* without stalls: exactly equal to the oracle;
* with stalls (longer than the read timeout): equal to the oracle, or a clean tablekit error
  raised within the query's retry budget (plus one read timeout);

and never (in any scenario) as a silently wrong answer. The figures are printed by
:func:`test_fault_figures` (``pytest -s``): scenarios × seeds × queries → exact / clean errors /
silent wrong, and the faults injected.
"""

from __future__ import annotations

import datetime as dt
import io
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _fault_proxy import FAULTS, NO_STALLS, FaultProxy, _arrow_boundaries, stats_line
from _server import running_server

import tablekit
from tablekit.errors import ConnectionFailedError, TablekitError

SYN = "synapses_pni_2"
NUC = "nucleus_detection_v0"
CT = "aibs_metamodel_celltypes_v661"
VIEW = "single_neurons"
READ_TIMEOUT = 0.5  # the client's in the scenarios with stalls (which last longer)
STALL = 0.8
BUDGET = 8.0  # retry budget of one query, seconds, in the scenarios with stalls
_PATIENT = {"timeout": (10.0, 60.0), "retry_budget": 300.0}  # the scenarios without
RATE = 0.3

#: scenario → (fault kinds, share of requests faulted, seeds, whether every answer must be exact):
#: each kind alone for one seed, the mixes (the issue's ~30 %) for two
SCENARIOS: dict[str, tuple[tuple[str, ...], float, tuple[int, ...], bool]] = {
    "502/503/504": (("502", "503", "504"), RATE, (1,), True),
    "429 Retry-After": (("429",), RATE, (1,), True),
    "reset mid-body": (("reset",), RATE, (1,), True),
    "cut, with length": (("cut",), RATE, (1,), True),
    "cut, no length": (("cut_nolength", "cut_between"), RATE, (1,), True),
    "stalls": (("stall",), 0.15, (1,), False),
    "mixed, no stalls": (NO_STALLS, RATE, (1, 2), True),
    "mixed with stalls": (FAULTS, RATE, (1, 2), False),
}

FIGURES: dict[str, dict[str, Any]] = {}


# ============================================================================ queries


def _queries(v: dict[str, Any]) -> dict[str, Callable[[tablekit.Client], Any]]:
    cut, ts, roots = v["cut"], v["ts"], v["roots"]
    return {
        "paged synapses": lambda c: c.tables[SYN](id={"<=": cut}).query(split_positions=True),
        "paged, select + not-in": lambda c: c.tables[SYN](
            id={"<=": cut}, pre_pt_root_id={"not in": [v["busy_root"]]}
        ).query(select_columns=["id", "size", "pre_pt_root_id"]),
        "offset/limit": lambda c: c.tables[SYN](id={"<=": cut}).query(offset=1000, limit=700),
        "all nuclei": lambda c: c.tables[NUC].get_all(split_positions=True),
        "count, filtered": lambda c: c.tables[SYN](id={"<=": cut}, size={">": 100}).query(get_counts=True),
        "annotation count": lambda c: c.get_annotation_count(SYN),
        "join (reference table)": lambda c: c.tables[CT]().query(),
        "view": lambda c: c.views[VIEW]().query(),
        "live, all nuclei": lambda c: c.tables[NUC].get_all_live(ts),
        "live, 10 roots": lambda c: c.tables[SYN](post_pt_root_id=roots).live_query(ts),
    }


@pytest.fixture(scope="module")
def values(client) -> dict[str, Any]:
    syn = client.query_table(SYN)
    ids = np.sort(syn["id"].to_numpy())
    posts = syn["post_pt_root_id"][syn["post_pt_root_id"] != 0].value_counts()
    pres = syn["pre_pt_root_id"][syn["pre_pt_root_id"] != 0].value_counts()
    return {
        "cut": int(ids[2000]),
        "busy_root": int(pres.index[0]),
        "roots": [int(r) for r in posts[posts <= 150].index[:10]],  # 10 roots, ~1,000 synapses: paged
        "ts": client.get_timestamp() + dt.timedelta(days=2),
    }


@pytest.fixture(scope="module")
def oracle(client, values) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: q(client) for name, q in _queries(values).items()}


@pytest.fixture(scope="module")
def upstream(path) -> Iterator[str]:
    with running_server(path, row_limit=500) as url:
        yield url


def _connect(client: tablekit.Client, url: str, **kw: Any) -> tablekit.Client:
    kw = {
        "cache_dir": False,
        "progress": False,
        "max_retries": 12,
        "backoff": 0.02,
        "timeout": (2.0, READ_TIMEOUT),
        "retry_budget": BUDGET,
        **kw,
    }
    return tablekit.connect(client.datastack, server=url, **kw)


def _same(got: Any, want: Any) -> tuple[bool, int, int]:
    """(equal, rows lost, rows duplicated) of an answer against the oracle's."""
    if not isinstance(want, pd.DataFrame):
        return got == want, 0, 0
    try:
        pd.testing.assert_frame_equal(got, want)
        return True, 0, 0
    except AssertionError:
        pass
    key = "id" if "id" in want.columns else want.columns[0]
    if not isinstance(got, pd.DataFrame) or key not in got.columns:
        return False, len(want), 0
    lost = len(set(want[key]) - set(got[key]))
    return False, lost, int(len(got) - got[key].nunique())


# ============================================================================ the rounds


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_faults_never_give_a_silent_partial_answer(scenario, client, values, oracle, upstream):
    kinds, rate, seeds, must_be_exact = SCENARIOS[scenario]
    queries = _queries(values)
    fig = FIGURES[scenario] = dict.fromkeys(_COUNTS, 0)
    fig.update(faults={}, seeds=len(seeds), rate=rate)
    problems: list[str] = []
    for seed in seeds:
        proxy = FaultProxy(upstream, seed=seed, rate=rate, kinds=kinds, stall=STALL, max_requests=5000)
        with proxy as url, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tk: tablekit.Client | None = None
            for name, q in queries.items():
                fig["queries"] += 1
                t0 = time.monotonic()
                try:
                    if tk is None:
                        # without stalls nothing needs a short read timeout: a slow machine must
                        # not turn the answers the test wants exact into timeouts
                        tk = _connect(client, url) if not must_be_exact else _connect(client, url, **_PATIENT)
                    got = q(tk)
                except TablekitError as e:
                    took = time.monotonic() - t0
                    fig["clean"] += 1
                    if must_be_exact:
                        problems.append(f"seed {seed} {name}: {type(e).__name__}: {e}")
                    elif took > BUDGET + 2 * READ_TIMEOUT + 3:
                        problems.append(
                            f"seed {seed} {name}: failed after {took:.1f} s, over its budget: {e}"
                        )
                    continue
                except Exception as e:  # not a tablekit error: a failure not reported well
                    fig["other"] += 1
                    problems.append(f"seed {seed} {name}: {type(e).__name__} escaped: {e}")
                    continue
                equal, lost, dup = _same(got, oracle[name])
                if equal:
                    fig["exact"] += 1
                else:
                    fig["wrong"] += 1
                    fig["lost"] += lost
                    fig["dup"] += dup
                    problems.append(
                        f"seed {seed} {name}: SILENTLY WRONG ({lost} rows lost, {dup} duplicated)"
                    )
        for k, n in proxy.stats.items():
            fig["faults"][k] = fig["faults"].get(k, 0) + n
    assert fig["wrong"] == 0 and not problems, "\n".join(problems)
    injected = sum(n for k, n in fig["faults"].items() if k != "requests")
    assert injected > rate / 2 * fig["faults"]["requests"], fig["faults"]  # the faults really happened


_COUNTS = ("queries", "exact", "clean", "other", "wrong", "lost", "dup")


def test_fault_figures():
    """Print the figures of the rounds above (run with ``-s`` to see them); no silent wrong answer."""
    out = io.StringIO()
    print(
        f"\nfault suite: {len(FIGURES)} scenarios, {len(_queries(_DUMMY))} queries each per seed, row limit "
        f"500; with stalls ({STALL:g} s): read timeout {READ_TIMEOUT:g} s, retry budget {BUDGET:g} s per query",
        file=out,
    )
    cols = ("queries", "exact", "clean", "other", "wrong")
    names = {"clean": "clean err", "other": "other err"}
    print(
        f"{'scenario':<18} {'rate':>4} {'seeds':>5} "
        + " ".join(f"{names.get(c, c):>9}" for c in cols)
        + "  faults injected / requests",
        file=out,
    )
    total = dict.fromkeys(_COUNTS, 0)
    for name, f in FIGURES.items():
        nums = " ".join(f"{f[c]:>9}" for c in cols)
        print(f"{name:<18} {f['rate']:>4.0%} {f['seeds']:>5} {nums}  {stats_line(f['faults'])}", file=out)
        for k in total:
            total[k] += f[k]
    nums = " ".join(f"{total[c]:>9}" for c in cols)
    print(f"{'total':<29} {nums}  rows lost {total['lost']}, duplicated {total['dup']}", file=out)
    print(out.getvalue())
    assert total["wrong"] == total["lost"] == total["dup"] == total["other"] == 0


_DUMMY = {"cut": 0, "ts": None, "roots": [], "busy_root": 0}


# ============================================================================ the faults one by one


def _first_answers(kind: str) -> Callable[[str, str, bytes, int], str | None]:
    """A fault for the first copy of every query request."""
    return lambda method, target, body, n: kind if n == 0 and "/query" in target else None


def test_an_arrow_answer_cut_between_messages_is_not_read_as_a_shorter_one(client, values, oracle, upstream):
    """A body without Content-Length cut between two Arrow messages is a valid shorter stream to
    pyarrow; tablekit sees its end-of-stream marker missing and asks again (or says so)."""
    table = pa.table({"a": np.arange(1000)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        for b in table.to_batches(max_chunksize=100):
            w.write_batch(b)
    whole = sink.getvalue().to_pybytes()
    bounds = _arrow_boundaries(whole)
    assert len(bounds) == 11  # the schema, then 10 batches
    assert pa.ipc.open_stream(whole[: bounds[5]]).read_all().num_rows == 500  # pyarrow does not notice
    name = "paged synapses"
    with FaultProxy(upstream, decide=_first_answers("cut_between")) as url:
        got = _queries(values)[name](_connect(client, url))
    pd.testing.assert_frame_equal(got, oracle[name])
    with FaultProxy(upstream, decide=_first_answers("cut_between")) as url:
        with pytest.raises(ConnectionFailedError, match=r"cut short.*Retry"):
            _queries(values)[name](_connect(client, url, max_retries=0))


def test_a_count_that_cannot_be_had_never_turns_the_check_off(client, values, upstream):
    """The counts that size and check a paged download must be had: when they keep failing, the
    download raises (after the retries) instead of going on unchecked."""

    def counts_fail(method: str, target: str, body: bytes, n: int) -> str | None:
        return "503" if "count=True" in target else None

    with FaultProxy(upstream, decide=counts_fail) as url:
        tk = _connect(client, url, max_retries=1)
        with pytest.raises(TablekitError, match=r"HTTP 503.*after 2 attempts"):
            _queries(values)["paged synapses"](tk)
        with pytest.raises(TablekitError, match=r"HTTP 503.*after 2 attempts"):
            _queries(values)["offset/limit"](tk)


class DropsARow:
    """ASGI wrapper: the answer to every paged (``id`` range) query loses its last row, the
    body staying a well-formed Arrow stream of the right length: a server bug no transport check
    can see, which only the count cross-check catches."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].endswith("/query")
            or b"count=True" in scope["query_string"]
        ):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        paged = b"filter_greater_equal_dict" in body or b"filter_less_dict" in body
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def keep(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, replay, keep)
        content = b"".join(chunks)
        if paged and start.get("status") == 200:
            table = pa.ipc.open_stream(content).read_all()
            if table.num_rows:
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, table.schema) as w:
                    w.write_table(table.slice(0, table.num_rows - 1))
                content = sink.getvalue().to_pybytes()
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(content)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def test_pages_that_lose_rows_are_caught_by_the_counts(path, client, values):
    """A server whose page answers each lose a row (whole, well-formed bodies): a full download
    and an offset/limit one both raise IncompleteResultError naming the rows lost. (The live
    endpoint has no count: there only the transport checks and the id tiling hold.)"""
    from test_cave_backend import serve_asgi

    from tablekit.errors import IncompleteResultError
    from tablekit.server import create_app

    with serve_asgi(DropsARow(create_app(path, row_limit=500))) as url:
        tk = _connect(client, url)
        for name in ("paged synapses", "offset/limit", "paged, select + not-in"):
            with pytest.raises(IncompleteResultError, match=r"the server counted \d+ rows.*row\(s\) lost"):
                _queries(values)[name](tk)


def test_a_failed_download_stops_its_page_workers(client, values, upstream):
    """When one page fails for good, the pages still being retried stop: no request reaches the
    server once the query has raised (no retries left running in the background)."""
    pages: list[bytes] = []

    def one_fails_the_rest_busy(method: str, target: str, body: bytes, n: int) -> str | None:
        if "/query" not in target or "count=True" in target:
            return None
        if b"filter_greater_equal_dict" not in body and b"filter_less_dict" not in body:
            return None  # the first answer
        pages.append(body)
        return "500" if body == pages[0] and n >= 1 else "503"  # the first page's retry fails for good

    proxy = FaultProxy(upstream, decide=one_fails_the_rest_busy)
    with proxy as url:
        tk = _connect(client, url, max_retries=100, backoff=0.05)
        with pytest.raises(TablekitError, match="HTTP 500"):
            _queries(values)["paged synapses"](tk)
        at_raise = proxy.stats["requests"]
        time.sleep(1.5)  # 100 retries of 503s would go on for minutes
        assert proxy.stats["requests"] - at_raise <= 4, "page requests went on after the query failed"
        assert len(set(pages)) >= 2
