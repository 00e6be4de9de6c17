"""Completing an answer cut at a CAVE server's row limit: ``id`` ranges, planned and fetched.

The server has no ORDER BY and no paging token, so ``offset``/``limit`` pages are neither stable
nor complete. An ``id`` range is: ``lo <= id < hi`` is a filter every endpoint honours, and a
range whose answer holds fewer rows than the limit is complete. So:

1. the first answer (cut) gives a sample of ids; counts of all rows, of the rows below the sample
   and above it (one round, in parallel) tell how many rows lie where — :func:`plan` turns that
   into ranges of about ``0.7 × limit`` rows each (none at all below or above the sample when the
   counts say there is nothing there; the first answer itself is kept when the counts show it
   holds every row of its range, as when the server returns the lowest ids first);
2. :func:`run` fetches the ranges, at most ``workers`` at a time, lowest ids first; a range that
   comes back full is split (:func:`split`) and fetched again; with a ``need`` (the user's
   ``offset + limit``) it stops once the completed lowest ranges hold that many rows.

Without counts (the live endpoint ignores ``count``), ranges come from the sample alone and the
open ends reach further each time they come back full.

A small ``limit`` (:func:`lowest`) is sent to the server instead, with its ``offset``, and the
rows it returns are checked by counts to be the ones asked for in ``id`` order (a server that
returns rows in ``id`` order passes in one answer and one count); when they are not (no ORDER BY),
ranges ``id < b`` are narrowed with samples of their ids until one is known whole, and its
lowest rows fetched. Only what is checked is returned; otherwise the caller pages as above.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import numpy as np
import pyarrow as pa

__all__ = [
    "FILL",
    "SAMPLE",
    "Answer",
    "Page",
    "cuts",
    "lowest",
    "plan",
    "prefix_rows",
    "progress_bar",
    "run",
    "split",
]

#: planned rows per range, as a share of the row limit (a full range costs a split and a refetch)
FILL = 0.7
#: ids asked for per narrowing round of :func:`lowest` (the key column only: 8 bytes each)
SAMPLE = 4096
#: narrowing rounds of :func:`lowest` before it gives up (each shrinks the range about SAMPLE / n times)
ROUNDS = 16


@attrs.define
class Page:
    """One ``id`` range: ``lo <= id < hi`` (``None``: open), and its answer once fetched."""

    lo: int | None
    hi: int | None
    width: int  # how far an open range reaches when it is split
    table: pa.Table | None = None
    rows: int = 0  # rows after the client-side filters


@attrs.frozen
class Answer:
    """One decoded server answer."""

    table: pa.Table
    warnings: tuple[str, ...]
    truncated: bool
    cap: int | None  # the row limit it was cut at
    resolution: tuple[float, float, float] | None


def _start(g: Page) -> float:
    return -math.inf if g.lo is None else g.lo


def cuts(ids: np.ndarray, k: int) -> list[int]:
    """``k - 1`` ids that cut the range of the sorted sample ``ids`` into ``k`` pieces of about
    equal row counts, interpolating between sample ids when there are more pieces than ids."""
    if k <= 1 or len(ids) < 2:
        return []
    q = np.quantile(ids.astype(np.float64), np.linspace(0.0, 1.0, k + 1)[1:-1])
    lo, hi = int(ids[0]), int(ids[-1])
    return list(dict.fromkeys(int(c) for c in np.ceil(q) if lo < c <= hi))


def plan(
    ids: np.ndarray, counts: Sequence[int] | None, first_rows: int, limit: int
) -> tuple[list[Page], bool]:
    """Initial ranges around the first answer's sorted unique ``ids``: ``(pages, keep the first answer)``.

    ``counts`` is ``(all rows, rows below ids[0], rows above ids[-1])`` or ``None``.
    """
    target = max(1, int(limit * FILL))
    lo_s, hi_s = int(ids[0]), int(ids[-1])
    span = hi_s - lo_s + 1
    pages: list[Page] = []
    if counts is None:
        width = max(1, math.ceil(target * span / len(ids)))
        bounds = [lo_s, *cuts(ids, math.ceil(len(ids) / target)), hi_s + 1]
        pages.append(Page(None, lo_s, width))
        pages += [Page(a, b, width) for a, b in itertools.pairwise(bounds) if a < b]
        pages.append(Page(hi_s + 1, None, width))
        return pages, False
    n_all, n_low, n_high = counts
    inside = n_all - n_low - n_high
    keep_first = inside == first_rows
    width = max(1, math.ceil(target * span / max(inside, len(ids))))
    if not keep_first:
        bounds = [lo_s, *cuts(ids, math.ceil(inside / target)), hi_s + 1]
        pages += [Page(a, b, width) for a, b in itertools.pairwise(bounds) if a < b]
    if n_high:
        edges = [hi_s + 1 + i * width for i in range(math.ceil(n_high / target))]
        pages += [Page(a, b, width) for a, b in itertools.pairwise(edges)]
        pages.append(Page(edges[-1], None, width))
    if n_low:
        edges = [lo_s - i * width for i in range(math.ceil(n_low / target))][::-1]
        pages.append(Page(None, edges[0], width))
        pages += [Page(a, b, width) for a, b in itertools.pairwise(edges)]
    return sorted(pages, key=_start), keep_first


def split(g: Page, workers: int, single: Callable[[int], Exception]) -> list[Page]:
    """A range that came back full, in smaller pieces: a closed range in two halves, an open end in
    ``workers`` ranges of its width plus an open rest that reaches twice as far next time.
    ``single(id)`` is the error for a one-id range that is still full."""
    w = max(1, g.width)
    if g.lo is not None and g.hi is not None:
        if g.hi - g.lo <= 1:
            raise single(g.lo)
        mid = g.lo + (g.hi - g.lo) // 2
        return [Page(g.lo, mid, w), Page(mid, g.hi, w)]
    k = max(2, workers)
    if g.hi is None:
        edges = [int(g.lo) + i * w for i in range(k + 1)]  # type: ignore[arg-type]
        return [Page(a, b, w) for a, b in itertools.pairwise(edges)] + [Page(edges[-1], None, 2 * w)]
    edges = [int(g.hi) - i * w for i in range(k + 1)][::-1]
    return [Page(None, edges[0], 2 * w)] + [Page(a, b, w) for a, b in itertools.pairwise(edges)]


def prefix_rows(done: Iterable[Page], waiting: Iterable[Page]) -> int:
    """Rows of the completed ranges that lie below every range still waiting (the id-ordered prefix)."""
    bound = math.inf
    for g in waiting:
        if g.lo is None:
            return 0
        bound = min(bound, g.lo)
    return sum(g.rows for g in done if (math.inf if g.hi is None else g.hi) <= bound)


def run(
    pending: list[Page],
    done: list[Page],
    submit: Callable[[Page], cf.Future[Answer]],
    *,
    workers: int,
    split_full: Callable[[Page], list[Page]],
    rows: Callable[[pa.Table], int],
    need: int | None = None,
    on_answer: Callable[[Answer], None] = lambda a: None,
) -> int:
    """Fetch ``pending`` into ``done`` (lowest ids first, ``workers`` at a time); return the number
    of requests made. A full answer is replaced by ``split_full(page)``; with ``need``, stop once the
    prefix holds that many rows (requests still running are cancelled or ignored)."""
    requests = 0
    running: dict[cf.Future[Answer], Page] = {}
    pending.sort(key=_start)
    try:
        while pending or running:
            if need is not None and prefix_rows(done, [*pending, *running.values()]) >= need:
                break
            while pending and len(running) < workers:
                g = pending.pop(0)
                running[submit(g)] = g
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in sorted(finished, key=lambda f: _start(running[f])):
                g = running.pop(fut)
                ans = fut.result()
                requests += 1
                if ans.truncated:
                    pending.extend(split_full(g))
                    pending.sort(key=_start)
                    continue
                g.table, g.rows = ans.table, rows(ans.table)
                done.append(g)
                on_answer(ans)
    finally:
        for fut in running:
            fut.cancel()
    done.sort(key=_start)
    return requests


def _ids(t: pa.Table, key: str) -> np.ndarray | None:
    """The sorted ``key`` values of ``t``, or ``None`` when some are null or repeated (no ``id`` order)."""
    col = t[key]
    if col.null_count:
        return None
    ids = np.sort(col.to_numpy())
    return None if len(ids) > 1 and bool((ids[1:] == ids[:-1]).any()) else ids


def lowest(
    n: int,
    offset: int,
    first: Answer,
    key: str,
    *,
    count: Callable[[Sequence[tuple[int | None, int | None]]], list[int]],
    ask: Callable[[int | None, int | None, int, bool], Answer],
    sample: int,
) -> tuple[Answer | None, int]:
    """Rows ``offset .. offset + n`` of the answer in ``key`` order, from ``first`` (the server's
    answer to ``limit=n`` with ``offset``, in its own order): ``(answer holding exactly them, requests
    made here)``, or ``(None, requests)`` when they could not be checked (the caller pages instead).

    ``count(ranges)`` counts rows over ``(lo, hi)`` key ranges (one request each); ``ask(lo, hi,
    limit, ids_only)`` is the server's answer for ``lo <= key < hi`` (``None``: open) with ``limit``
    (only the key column when ``ids_only``).

    ``first`` is kept when the counts say its rows are those asked for: as many rows below its lowest
    key as ``offset``, none missing between its lowest and highest (and none above, when it is short).
    Else (the server's order is not ``id`` order), with ``offset`` 0: a range ``key < b`` holding at
    least ``n`` rows is narrowed — ``b`` becomes one past the ``n``-th lowest of a sample of
    ``sample`` of its ids (so ``n`` rows stay below it) — until the sample is the whole range (the
    answer is not cut); then its ``n`` lowest rows are fetched and must be the ids sampled. With an
    ``offset``, a bracket around the ranks asked for is narrowed the same way, with counts
    (:func:`_deep`). Rows asked for are never guessed: whatever is returned was counted or seen whole.
    """
    t = first.table
    got = t.num_rows
    if got > n or (got < n and first.truncated):  # more than asked, or the server's own limit is below n
        return None, 0
    if got < n and offset == 0:
        return first, 0  # not cut: every row there is
    ids = _ids(t, key)
    if ids is None:
        return None, 0
    if got == 0:
        return (first, 1) if count([(None, None)])[0] <= offset else (None, 1)
    lo, hi = int(ids[0]), int(ids[-1]) + 1
    end: int | None = hi if got == n else None  # a short page: nothing may follow it
    ranges: list[tuple[int | None, int | None]] = [(None, hi)] if offset == 0 else [(None, lo), (lo, end)]
    want = [got] if offset == 0 else [offset, got]
    counted = count(ranges)
    requests = len(ranges)  # one count request per range
    if counted == want:
        return first, requests
    if offset:
        return _deep(
            n, offset, key, (lo, hi, end), counted, count=count, ask=ask, sample=sample, spent=requests
        )
    if counted[0] < n:  # the data changed: page
        return None, requests
    b, seen = hi, None
    for _ in range(ROUNDS):
        part = ask(None, b, sample, True)
        requests += 1
        ids = _ids(part.table, key)
        if ids is None or len(ids) < n:
            return None, requests
        b = int(ids[n - 1]) + 1
        if not part.truncated:
            seen = ids[:n]
            break
    if seen is None:
        return None, requests
    return _rows(seen, key, ask), requests + 1


def _rows(
    seen: np.ndarray, key: str, ask: Callable[[int | None, int | None, int, bool], Answer]
) -> Answer | None:
    """The rows of the ids ``seen`` (sorted, the whole of the range they span), checked to be those."""
    rows = ask(int(seen[0]), int(seen[-1]) + 1, len(seen) + 1, False)
    ids = _ids(rows.table, key)
    return None if rows.truncated or ids is None or not np.array_equal(ids, seen) else rows


def _spread(i: float, size: int) -> int:
    """A margin around sample index ``i`` of ``size``: three standard deviations of where the
    row of that rank falls in a uniform sample, and two more."""
    p = min(max(i / size, 0.0), 1.0)
    return math.ceil(3 * math.sqrt(size * p * (1 - p))) + 2


def _deep(
    n: int,
    offset: int,
    key: str,
    first: tuple[int, int, int | None],
    counted: Sequence[int],
    *,
    count: Callable[[Sequence[tuple[int | None, int | None]]], list[int]],
    ask: Callable[[int | None, int | None, int, bool], Answer],
    sample: int,
    spent: int,
) -> tuple[Answer | None, int]:
    """Rows ``offset .. offset + n`` in ``key`` order from a server without ORDER BY: a bracket
    ``[a, b)`` with ``count(key < a) <= offset`` and ``count(key < b) >= offset + n`` (both
    counted) is narrowed around the ranks asked for with samples of its ids, until a sample is the
    whole bracket; its ids of those ranks are then fetched whole. ``first`` is ``(lowest, highest
    + 1, end)`` of the server's first answer and ``counted`` the rows below its lowest and in
    ``[lowest, end)``, which start the bracket."""
    want = offset + n
    a: int | None = None
    ca = 0
    b: int | None = None
    cb: int | None = None  # rows below b (the total when b is open), once counted
    lo, hi, end = first

    def narrow(x: int | None, cx: int) -> None:
        nonlocal a, ca, b, cb
        if cx <= offset and (a is None or (x is not None and x > a)):
            a, ca = x, cx
        elif cx >= want and x is not None and (b is None or x < b):
            b, cb = x, cx

    narrow(lo, counted[0])
    if end is not None:
        narrow(hi, counted[0] + counted[1])
    requests = spent
    for _ in range(ROUNDS):
        part = ask(a, b, sample, True)
        requests += 1
        ids = _ids(part.table, key)
        if ids is None:
            return None, requests
        if not part.truncated:  # every id of [a, b): their ranks are known
            if cb is not None and len(ids) != cb - ca:
                return None, requests  # the data changed
            seen = ids[offset - ca : want - ca]
            if len(seen) == 0:
                return None, requests
            return _rows(seen, key, ask), requests + 1
        if cb is None:
            cb = ca + count([(a, None)])[0]
            requests += 1
        m, size = cb - ca, len(ids)
        i1, i2 = (offset - ca) * size / m, (want - ca) * size / m
        j1, j2 = math.floor(i1) - _spread(i1, size), math.ceil(i2) + _spread(i2, size)
        a2 = int(ids[j1]) if j1 > 0 else a
        b2 = int(ids[j2]) if j2 < size else b
        if a2 == a and b2 == b:
            return None, requests  # the sample cannot narrow it (a limit near the sample's size)
        ranges = [(a, a2)] if a2 != a else []
        ranges.append((a2, b2))
        got = count(ranges)
        requests += len(ranges)
        ca2 = ca + (got[0] if a2 != a else 0)
        cb2 = ca2 + got[-1]
        narrow(a2, ca2)
        if b2 is not None:
            narrow(b2, cb2)
    return None, requests


def progress_bar(progress: bool | None, total: int | None, what: str) -> Any:
    """A tqdm bar on stderr (``None``: only on a terminal; ``False``: never)."""
    if progress is False:
        return None
    from tqdm.auto import tqdm  # type: ignore[import-untyped, unused-ignore]

    return tqdm(
        total=total,
        unit="rows",
        unit_scale=True,
        desc=f"{what} (pages)",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        leave=False,
    )
