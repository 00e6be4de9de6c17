"""CAVE answers → tables. Pure: no I/O.

:func:`decode` turns a response body (Arrow IPC, with zstd/lz4 buffers or whole-body zstd, or JSON)
into an Arrow table with the column types tablekit's local engine produces (:func:`normalize`:
casts, ``desired_resolution`` rescaling); :func:`finish` assembles pages into the result (client
filters — :class:`~tablekit.backends.cave.compile.ClientFilter` — ``id`` order, ``offset`` /
``limit``, the columns asked). The rest reads what a server says besides its rows: the ``Warning``
lines (:func:`truncation`, the pending supervoxel lookups), the ``dataframe_resolution`` header,
timestamps in metadata (:func:`parse_time`) and :func:`malformed` answers.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Collection, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ... import _time
from ...errors import QueryError, ServerError, UnsupportedError
from ...query.pending import pending_text, refusal
from ...schema import ColumnKind
from ..base import ARROW_TYPES
from .compile import ARROW_CONTENT_TYPE, DEFAULT_ROW_LIMIT, ClientFilter, Plan
from .http import Response

__all__ = [
    "decode",
    "finish",
    "malformed",
    "normalize",
    "parse_resolution",
    "parse_time",
    "pending_left_out",
    "pending_lookups_error",
    "pending_lookups_notes",
    "read_arrow",
    "truncation",
    "without_pending",
]

#: an answer body up to this size (bytes) decodes as a small one (see :func:`decode`)
_SMALL_ANSWER = 256 * 1024
_LIMITED = re.compile(r"Limited query to (\d+) rows")
_MORE = re.compile(r"equal or more\s+than\s+limit of (\d+)")
#: the live endpoint's words for annotations whose supervoxel lookup is pending (protocol §5.1, §5.3)
_PENDING = re.compile(r"There are (\d+) annotations that need supervoxel lookups")


def parse_time(value: Any) -> _dt.datetime | None:
    """CAVE's naive-UTC ISO strings (with or without a fraction), epoch seconds, or datetimes → aware UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _dt.datetime.fromtimestamp(float(value), _dt.timezone.utc)
    if isinstance(value, _dt.datetime):
        return _time.as_utc(value)
    s = str(value).strip()
    try:
        return _time.parse_utc(s)
    except ValueError:
        import email.utils

        return _time.as_utc(email.utils.parsedate_to_datetime(s))


#: what to do about an answer that is not what the CAVE protocol says (see :func:`malformed`)
MALFORMED_FIX = (
    "Retry (a proxy or an overloaded server can damage answers); if it persists the server does not "
    "answer as a CAVE deployment should: report it to its maintainers"
)


def malformed(url: str, what: str, fix: str = MALFORMED_FIX) -> ServerError:
    """The error for a server answer that cannot be right: the endpoint, what is wrong, the fix."""
    return ServerError(f"{url}: the server's answer is malformed: {what}. {fix}", url=url, status=200)


def counts_here(p: Plan) -> bool:
    """Whether the endpoint of ``p`` answers ``count=true`` with a count. The live endpoint ignores
    it, and so does the join endpoint (``generate_complex_query_dataframe`` builds its
    ``QueryManager`` with ``get_count=False``): both return rows, up to the row limit."""
    return p.endpoint in ("table", "view")


def check_resolution(p: Plan, res: tuple[float, float, float] | None) -> None:
    """The ``dataframe_resolution`` the server says it sent must be the one asked for: positions
    are converted from it."""
    if res is None or p.wire_resolution is None:
        return
    if any(abs(a - b) > 1e-9 * max(abs(b), 1.0) for a, b in zip(res, p.wire_resolution, strict=True)):
        raise ServerError(
            f"{p.query.table}: the server sent positions at {list(res)} nm per voxel, not at the "
            f"{list(p.wire_resolution)} tablekit asked for; the answer is not trustworthy",
            url=p.url,
        )


def parse_resolution(values: Sequence[str]) -> tuple[float, float, float] | None:
    """``dataframe_resolution`` header lines (``4.0, 4.0, 40.0`` or one line per axis) → floats."""
    parts = [x.strip() for v in values for x in v.split(",") if x.strip()]
    if len(parts) != 3:
        return None
    try:
        out = tuple(float(x) for x in parts)
    except ValueError:
        return None
    return out  # type: ignore[return-value]


def warnings_of(resp: Response) -> list[str]:
    """The ``Warning`` header lines, stripped (a joined line is kept whole: notices contain commas)."""
    return [w.strip() for w in resp.header_values("warning") if w.strip()]


def truncation(
    warnings: Sequence[str], rows: int, sent_limit: int | None, known_cap: int | None
) -> tuple[bool, int | None]:
    """``(was the answer cut at a row limit?, that limit if known)`` — protocol §3.6 and §6.2."""
    cap = None
    for w in warnings:
        m = _LIMITED.search(w) or _MORE.search(w)
        if m:
            cap = int(m.group(1))
    if cap is not None:
        return True, cap
    if sent_limit is not None:
        return (True, sent_limit) if rows >= sent_limit else (False, None)
    # no limit sent: the server applied its own; exactly that many rows (and no warning) is suspect
    cap = known_cap or DEFAULT_ROW_LIMIT
    return (True, cap) if rows == cap else (False, None)


def is_truncation_warning(w: str) -> bool:
    return bool(_LIMITED.search(w) or _MORE.search(w))


def _pending_text(p: Plan, n: int | str, detail: str) -> str:
    """What the local engine says about ``n`` pending lookups (client.py), from a server's answer
    (``n`` may be a bound such as ``"at least 3"``)."""
    q = p.query
    cols = [name for name, (_t, col, _k) in p.sources.items() if col.endswith("supervoxel_id")]
    roots = sorted({pr.column for pr in q.predicates if pr.column.endswith("root_id")})
    # the live endpoint checks the query without its root-id filters (new_query.py
    # strip_root_id_filters, then update_rootids): the rows it counts need not match the query
    which = (
        f"selected by this live query's filters other than its root-id filters ({', '.join(roots)}; "
        "the server checks the rows before it applies those)"
        if roots
        else "matching this live query"
    )
    return pending_text(
        q.table, n, which, f"pending {' / '.join(cols) or 'supervoxel ids'}{detail}", q.timestamp
    )


def pending_lookups_error(p: Plan, server_message: str | None) -> QueryError | None:
    """The live endpoint's refusal of annotations whose supervoxel lookup is pending (``abort(406,
    "There are N annotations that need supervoxel lookups …")``, which reaches clients as a 500;
    protocol §5.1 steps 4-5, §5.3) → the :class:`QueryError` the local engine raises for them.
    ``None`` for any other error."""
    m = _PENDING.search(server_message or "")
    if p.endpoint != "live" or m is None:
        return None
    n = int(m.group(1))
    several = sum(col.endswith("supervoxel_id") for _t, col, _k in p.sources.values()) > 1
    # the server counts the first supervoxel column that has pending lookups: a lower bound
    text = _pending_text(p, f"at least {n}" if several else n, f"; the server says {server_message!r}")
    if p.query.allow_missing_lookups:
        # the server's materialized step refuses them whatever allow_missing_lookups says
        return QueryError(
            f"{text}. The server refuses them even with allow_missing_lookups=True because they are part "
            "of the materialized version its live query starts from; query an earlier time (before they "
            "were created)"
        )
    return QueryError(refusal(text))


_NO_CRUD = re.compile(r"^'?(created|deleted|superceded_id)'?(?: not in model or models for (\S+))?$")


def frozen_column_error(p: Plan, server_message: str | None) -> UnsupportedError | None:
    """A real deployment's 500 for a filter on, or a selection of, ``created`` (or ``deleted``,
    ``superceded_id``) at a materialized version → an :class:`UnsupportedError` naming the table,
    the column and what to do. Its frozen tables have no such column: the materialization drops
    them (``create_frozen_database.py``), so the server fails with ``KeyError('created')`` or "created
    not in model or models for …". ``None`` for any other error."""
    m = _NO_CRUD.match((server_message or "").strip())
    if p.endpoint not in ("table", "join") or m is None:
        return None
    col = m.group(1)
    tables = (
        [m.group(2)]
        if m.group(2)
        else sorted({t for by_table in p.filters.values() for t, cols in by_table.items() if col in cols})
        or list(p.query.tables)
    )
    return UnsupportedError(
        f"table {', '.join(tables)}, version {p.query.version}: this deployment's frozen tables have no "
        f"column {col!r} (its materialization drops it), so a filter on {col!r} or selecting it cannot "
        f"be answered (the server says {server_message!r}). Leave {col!r} out of the filters and "
        "select_columns; without select_columns the answer has it as nulls, with a warning"
    )


def pending_lookups_notes(p: Plan, warnings: Sequence[str]) -> list[str]:
    """The live endpoint's warnings about pending lookups it left out with
    ``allow_missing_lookups=true`` (one per supervoxel column, each counting rows the previous ones
    did not) → one warning as the local engine gives, with their sum; other warnings unchanged."""
    out: list[str] = []
    n, at = 0, None
    for w in warnings:
        m = _PENDING.search(w)
        if p.endpoint == "live" and m is not None:
            n += int(m.group(1))
            if at is None:
                at = len(out)
                out.append(w)
        else:
            out.append(w)
    if at is not None:
        out[at] = _pending_text(p, n, "; the server left them out") + "; left out"
    return out


def pending_left_out(p: Plan, warnings: Sequence[str]) -> int:
    """How many rows the live endpoint left out of its answer for pending lookups."""
    if p.endpoint != "live":
        return 0
    return sum(int(m.group(1)) for w in warnings if (m := _PENDING.search(w)))


def without_pending(warnings: Sequence[str]) -> tuple[str, ...]:
    """``warnings`` without the live endpoint's pending-lookup ones."""
    return tuple(w for w in warnings if not _PENDING.search(w))


#: the end-of-stream marker of an Arrow IPC stream, and its legacy form (4 zero bytes)
_EOS = (b"\xff\xff\xff\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _body(resp: Response) -> bytes:
    """The body, whole-body zstd the HTTP stack left alone decompressed (raises OSError or
    ArrowException when it does not decompress)."""
    body = resp.content
    enc = (resp.header("content-encoding") or "").lower()
    if "zstd" in enc and body[:4] == _ZSTD_MAGIC:
        body = pa.input_stream(pa.py_buffer(body), compression="zstd").read()
    return body


def _read_ipc(buf: pa.Buffer, size: int) -> pa.Table:
    # small answers decode faster without handing buffers to pyarrow's thread pool, and into the
    # system allocator's memory: pyarrow's default pool (mimalloc) costs a new process about
    # 0.5 ms, at times 10 ms, to set up on first use
    opts = pa.ipc.IpcReadOptions(use_threads=size > _SMALL_ANSWER // 4)
    pool = pa.system_memory_pool() if size <= _SMALL_ANSWER else None
    return pa.ipc.open_stream(buf, options=opts, memory_pool=pool).read_all()


def read_arrow(resp: Response) -> pa.Table | None:
    """An Arrow IPC answer read in one pass, when that pass shows it whole, else None (the HTTP
    session then finds what is wrong with it; :func:`decode` says why it cannot be read).

    A stream cut between two messages reads as a shorter valid stream: only its end-of-stream
    marker shows it whole. The bytes before a trailing marker are read as a stream: a cut one
    ends there with a message whose declared length runs into the marker, and does not read; a
    whole one reads to its last byte, so the marker is its own.
    """
    try:
        body = _body(resp)
    except (OSError, ValueError, pa.ArrowException):
        return None
    buf = pa.py_buffer(body)
    for eos in _EOS:
        if len(body) > len(eos) and body.endswith(eos):
            try:
                return _read_ipc(buf.slice(0, len(body) - len(eos)), len(body))
            except (OSError, ValueError, pa.ArrowException):
                continue
    return None


def decode(resp: Response, p: Plan) -> pa.Table:
    """The body of a query response → an Arrow table with tablekit's column types (an Arrow
    answer's table already read by :func:`read_arrow`, while the session checked it whole, is
    taken as it is: each body is parsed once)."""
    ctype = resp.content_type
    if resp.parsed is not None:
        return normalize(resp.parsed, p)
    try:
        body = _body(resp)
    except (OSError, pa.ArrowException) as e:
        raise malformed(
            p.url, f"its body, sent with Content-Encoding: zstd, cannot be decompressed ({e})"
        ) from e
    if (
        ctype == ARROW_CONTENT_TYPE
        or ctype.endswith("arrow.stream")
        or ctype.endswith("vnd.apache.arrow.stream")
    ):
        try:
            table = _read_ipc(pa.py_buffer(body), len(body))
        except pa.ArrowInvalid as e:
            raise ServerError(f"{p.url}: the server's Arrow answer cannot be read: {e}", url=p.url) from e
    elif ctype == "application/json":
        try:
            rows = json.loads(body)
        except ValueError as e:
            raise ServerError(f"{p.url}: the server's JSON answer cannot be read: {e}", url=p.url) from e
        table = _from_records(rows, p)
    elif ctype == "x-application/pyarrow":
        raise ServerError(
            f"{p.url}: the server answered in the legacy pyarrow serialization format, which modern "
            "pyarrow cannot read; the server is too old for tablekit (it needs the v3 API)",
            url=p.url,
        )
    else:
        raise ServerError(f"{p.url}: unknown response type {ctype!r}", url=p.url)
    return normalize(table, p)


def _from_records(rows: Any, p: Plan) -> pa.Table:
    if isinstance(rows, dict):  # {"count": n} or columns
        rows = [rows] if not any(isinstance(v, list) for v in rows.values()) else pa.table(rows).to_pylist()
    if not isinstance(rows, list):
        raise ServerError(f"{p.url}: expected a list of rows in the JSON answer, got {type(rows).__name__}")
    if not rows:
        return pa.table({})
    table = pa.Table.from_pylist(rows)
    cols = []
    for name in table.column_names:
        arr: Any = table[name]
        kind = p.sources.get(name, (None, None, None))[2]
        if kind is ColumnKind.DATETIME and pa.types.is_integer(arr.type):  # to_json's epoch ms
            arr = arr.cast(pa.timestamp("ms", tz="UTC"))
        elif kind is ColumnKind.DATETIME and pa.types.is_string(arr.type):
            arr = _iso(arr)
        elif kind is ColumnKind.POSITION and pa.types.is_floating(arr.type) and name not in p.scaled:
            # JSON has no integers with nulls: unscaled coordinates are whole numbers
            vals = arr.drop_null().to_numpy()
            if bool(np.all(np.mod(vals, 1) == 0)):
                arr = arr.cast(pa.int64())
        cols.append(arr)
    return pa.table(cols, names=table.column_names)


def _iso(arr: pa.ChunkedArray) -> pa.Array:
    vals: list[_dt.datetime | None] = []
    for s in arr.to_pylist():
        if s is None:
            vals.append(None)
            continue
        vals.append(_time.parse_utc(s))
    return pa.array(vals, type=pa.timestamp("us", tz="UTC"))


def normalize(table: pa.Table, p: Plan) -> pa.Table:
    """Cast the columns tablekit knows to the local engine's types; drop pandas index columns."""
    names, cols = [], []
    for name in table.column_names:
        if name.startswith("__index_level_"):
            continue
        arr = table[name]
        src = p.sources.get(name)
        if name in p.rescale:
            arr = _rescale(arr, name, *p.rescale[name])
        elif src is not None:
            if src[2] is ColumnKind.FLOAT and pa.types.is_float32(arr.type):
                p.float32.add(name)
            arr = _cast(arr, src[2], name)
            if (name == "valid" or name.startswith("valid_")) and arr.null_count:
                # the live endpoint's answer concatenates (pandas) its materialized rows, which have
                # `valid`, with its newer rows, whose `valid` it dropped (api2.py `combine_queries`):
                # nulls there; it returns only valid rows, so they are true
                arr = pc.fill_null(arr, True)
        elif name == "count" and pa.types.is_integer(arr.type):
            arr = arr.cast(pa.int64())
        names.append(name)
        cols.append(arr)
    return pa.table(cols, names=names)


_AXIS = {"x": 0, "y": 1, "z": 2}


def _rescale(
    arr: Any,
    name: str,
    factor: tuple[float, float, float],
    scale: tuple[float, float, float] | None,
) -> Any:
    """A position coordinate as the server sent it (at :attr:`Plan.wire_resolution`: the stored
    number times a whole ``factor``) → the local engine's value: the stored integer (int64), or
    ``CAST(stored AS DOUBLE) * scale`` (float64) when the query converts it."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_null(arr.type):
        return arr.cast(pa.float64() if scale is not None else pa.int64())
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        raise ServerError(f"column {name!r}: the server sent {arr.type}, which is not a position coordinate")
    axis = _AXIS[name[-1]]
    f = factor[axis]
    if f == 1 and pa.types.is_integer(arr.type):  # the stored numbers (the usual case)
        if scale is None:
            return arr if arr.type == pa.int64() else arr.cast(pa.int64())
        return pc.multiply(arr.cast(pa.float64()), pa.scalar(scale[axis], pa.float64()))
    v = arr.cast(pa.float64())
    if f != 1:
        v = pc.divide(v, pa.scalar(f, pa.float64()))
    whole = pc.equal(pc.floor(v), v)
    if pc.all(pc.fill_null(whole, True)).as_py() is False:
        raise ServerError(
            f"column {name!r}: the server sent coordinates that are not whole numbers at the resolution "
            "tablekit asked for; the answer is not trustworthy"
        )
    if scale is None:
        return v.cast(pa.int64())
    return pc.multiply(v, pa.scalar(scale[axis], pa.float64()))


def _cast(arr: Any, kind: ColumnKind, name: str) -> Any:
    want: pa.DataType
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if kind is ColumnKind.POSITION:
        want = pa.int64() if (pa.types.is_integer(t) or pa.types.is_null(t)) else pa.float64()
    elif kind is ColumnKind.DATETIME and pa.types.is_timestamp(t) and t.tz is None:
        arr = arr.cast(pa.timestamp(t.unit, tz="UTC"))  # CAVE stores naive UTC
        want = ARROW_TYPES[kind]
    else:
        want = ARROW_TYPES[kind]
    if arr.type == want:
        return arr
    try:
        return arr.cast(want, safe=not pa.types.is_timestamp(want))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ServerError(
            f"column {name!r}: the server sent {arr.type}, which is not {kind.value}: {e}"
        ) from e


def finish(p: Plan, pages: Sequence[pa.Table], *, apply_filters: bool = True) -> tuple[pa.Table, list[str]]:
    """Pages → the answer: client-side filters, ``id`` order, ``offset``/``limit``, the columns asked.

    Returns the table and notes (columns the server did not send, filled in).
    """
    notes: list[str] = []
    need = p.needed
    aligned = [_align(t, p, need, notes) for t in pages] or [_align(pa.table({}), p, need, notes)]
    table = aligned[0] if len(aligned) == 1 else pa.concat_tables(aligned)
    if apply_filters:
        table = apply_client_filters(table, p.client_filters, p.float32)
    q = p.query
    if q.random_sample is not None:
        table = sample_rows(table, p, int(q.random_sample))
    table = sort(table, p)
    if q.offset or q.limit is not None:
        table = table.slice(q.offset, q.limit if q.limit is not None else None)
    table = table.select(list(p.columns))
    return table, list(dict.fromkeys(notes))


def _align(t: pa.Table, p: Plan, need: Sequence[str], notes: list[str]) -> pa.Table:
    if list(need) == t.column_names:
        return t
    cols = []
    have = set(t.column_names)
    for name in need:
        if name in have:
            cols.append(t[name])
            continue
        typ = p.arrow_type(name) if name in p.sources else pa.null()
        if name == "valid" or name.startswith("valid_"):
            # the live endpoint leaves out `valid`; it only returns valid rows
            cols.append(pa.chunked_array([pa.array(np.ones(t.num_rows, dtype=bool))], type=pa.bool_()))
        else:
            if t.num_rows:
                notes.append(f"the server sent no column {name!r}; it is filled with nulls")
            cols.append(pa.nulls(t.num_rows, type=typ))  # type: ignore[call-overload, unused-ignore]
    return pa.table(cols, names=list(need))


def apply_client_filters(
    table: pa.Table, filters: Sequence[ClientFilter], float32: Collection[str] = ()
) -> pa.Table:
    """Keep the rows that pass every client-side condition (vectorised).

    ``float32``: the float columns the server sent as float32 (:attr:`Plan.float32`). A value the
    server stored as float32 is the float32 nearest the local engine's float64 value, so ``not in``
    excludes, on those columns, each value's float32 neighbour too (as ``in`` matches it).
    """
    if not filters or table.num_rows == 0:
        return table
    mask: Any = None
    for f in filters:
        col = table[f.column]
        m: Any
        if f.op == "not in":
            vals = list(f.value)
            if f.column in float32 and pa.types.is_floating(col.type):
                vals = list(dict.fromkeys([*vals, *_float32_neighbours(vals)]))
            values = pa.array(vals, type=col.type)
            m = pc.or_kleene(pc.is_null(col), pc.invert(pc.is_in(col, value_set=values)))
        elif f.op == "in":
            m = pc.is_in(col, value_set=pa.array(list(f.value), type=col.type))
        elif f.op == "!=column":
            other = table[f.value]
            m = pc.or_kleene(pc.or_kleene(pc.is_null(col), pc.is_null(other)), pc.not_equal(col, other))
        else:  # not nan: a NaN the server sent as null too (``dtype_map``'s Float32Dtype reads NaN as
            # NA); a null never passes ``>``/``>=`` in SQL, so a null row here is always a NaN
            if not pa.types.is_floating(col.type):
                continue
            m = pc.and_kleene(pc.is_valid(col), pc.invert(pc.is_nan(col)))
        m = pc.fill_null(m, True)
        mask = m if mask is None else pc.and_(mask, m)
    return table if mask is None else table.filter(mask)


def _float32_neighbours(values: Sequence[Any]) -> list[float]:
    """Each number of ``values`` rounded to float32, as a Python float (others are left out)."""
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [float(x) for x in np.asarray(nums, dtype=np.float64).astype(np.float32)]


def sample_rows(table: pa.Table, p: Plan, n: int) -> pa.Table:
    """The local engine's ``random_sample``: the ``n`` rows with the smallest ``hash(id)`` (DuckDB's
    hash, ties by id) of the complete answer.

    A CAVE server's sample is wrong on merged versions (the default): ``QueryManager.add_table``
    samples an alias that ``_find_relevant_model`` never uses, so the table endpoint returns every
    row and the join endpoint a cross join of the sample with the table; elsewhere it is a
    TABLESAMPLE of about ``n`` rows, different on every call. tablekit therefore never sends
    ``random_sample``: it fetches the matching rows (paged like any answer) and samples them here.
    """
    if p.key is None:
        raise UnsupportedError(
            f"{p.query.table}: random_sample over a CAVE server needs an id column to sample by; "
            "query without random_sample and sample the rows yourself"
        )
    if table.num_rows <= n:
        return table
    import duckdb

    keys = pa.table({"k": table[p.key].cast(pa.int64())})
    con = duckdb.connect()
    try:
        con.register("keys", keys)
        chosen = con.sql(f"SELECT k FROM keys ORDER BY hash(k), k LIMIT {int(n)}").to_arrow_table()
    finally:
        con.close()
    return table.filter(pc.is_in(table[p.key], value_set=chosen["k"].combine_chunks()))


def sort(table: pa.Table, p: Plan) -> pa.Table:
    """Rows in ``id`` order (every column for a view without ``id``), as the local engine orders them.

    The key must come out unique and non-null: a repeated ``id`` means the pages overlap, and the
    result is refused rather than returned with duplicates.
    """
    if p.key is None:
        if table.num_rows < 2:
            return table
        keys: list[tuple[str, Literal["ascending", "descending"]]] = [(c, "ascending") for c in p.columns]
        return table.take(pc.sort_indices(table, sort_keys=keys, null_placement="at_end"))
    col = table[p.key]
    if col.null_count:
        raise ServerError(
            f"{p.query.table}: the server sent rows without {p.key}; the result is not trustworthy"
        )
    k = col.to_numpy()
    if not bool(np.all(k[1:] > k[:-1])):
        order = np.argsort(k, kind="stable")
        k = k[order]
        if bool(np.any(k[1:] == k[:-1])):
            raise ServerError(
                f"{p.query.table}: the server's pages repeat {p.key} values; the result is not trustworthy"
            )
        table = table.take(order)
    return table


def is_count(table: pa.Table) -> int | None:
    """The number in a count answer (one row, a ``count`` column), or None if it is not one."""
    if table.num_rows == 1 and "count" in table.column_names:
        v = table["count"][0].as_py()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return int(v)
    return None
