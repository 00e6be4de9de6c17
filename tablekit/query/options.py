"""The query options, defined once.

:class:`QueryOptions` (what is asked: paging, version or moment, resolution, counts, samples, the
live-query policies) and :class:`OutputOptions` (how the answer is shaped: pandas or Arrow, split
positions, provenance) are the one definition of every option. Each attrs field carries its
documentation, its stub type and its command-line help in its metadata; its validator refuses a
wrong value with a message that names the option, the value and the fix.

Every entry point forwards to them: the filter classes' ``query`` / ``live_query`` / ``explain`` /
``to_query``, the classic ``query_table`` / ``query_view`` / ``synapse_query`` / ``live_query``,
``tablekit serve`` and the CLI; :mod:`tablekit.stubgen` renders the stubs' signatures from them,
and the runtime signatures users see in Jupyter (``help()``, ``?``, completion) are built from them
by :func:`signature`. :class:`QueryKwargs` / :class:`LiveQueryKwargs` are the same options for
static type checkers (``**options: Unpack[QueryKwargs]``); ``tests/test_query_options.py`` checks
that they name the same options with the same types.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import inspect
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs
from typing_extensions import TypedDict

from .._values import short
from ..errors import QueryError, UnknownArgumentError
from ..schema import resolution_triple

__all__ = [
    "LIVE_OPTIONS",
    "QUERY_OPTIONS",
    "LiveQueryKwargs",
    "OutputOptions",
    "QueryKwargs",
    "QueryOptions",
    "check_keywords",
    "docs",
    "option_fields",
    "parse",
    "signature",
]

#: offsets and limits are row counts in signed 64 bits (DuckDB's BIGINT, the server's int64)
MAX_ROWS = 2**63


def _meta(stub: str, doc: str, cli: str | None = None) -> dict[str, Any]:
    return {"stub": stub, "doc": doc, "cli": cli}


def _flag(_inst: Any, a: attrs.Attribute, v: Any) -> None:
    if not (isinstance(v, bool) or type(v).__name__ == "bool_"):  # numpy's bools too
        raise QueryError(f"{a.name} must be True or False, got {short(v)} ({type(v).__name__})")


def _to_bool(v: Any) -> Any:
    return bool(v) if type(v).__name__ == "bool_" else v


def _count(name: str, v: Any, *, positive: bool, fix: str) -> int | None:
    if v is None and name != "offset":
        return None
    low = 1 if positive else 0
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        what = {
            "offset": "an int >= 0",
            "limit": "a positive int or None (no limit)",
            "random_sample": "a positive int (a row count)",
        }[name]
        raise QueryError(f"{name} must be {what}, got {v!r}")
    if v >= MAX_ROWS:  # both backends count rows in signed 64 bits
        raise QueryError(f"{name} {v} is beyond any table (at most 2**63 - 1 rows). {fix}")
    return int(v)


def _offset(v: Any) -> int:
    return _count("offset", v, positive=False, fix="Pass a smaller offset")  # type: ignore[return-value]


def _limit(v: Any) -> int | None:
    return _count("limit", v, positive=True, fix="Pass limit=None for every row")


def _sample(v: Any) -> int | None:
    return _count("random_sample", v, positive=True, fix="Pass a smaller sample")


def _resolution(v: Any) -> tuple[float, float, float] | None:
    if v is None:
        return None
    res = resolution_triple(v)
    if res is None:
        raise QueryError(
            "desired_resolution must be three positive numbers (nm per unit, e.g. [1, 1, 1] "
            f"for nm), got {v!r}"
        )
    return res


def _select(v: Any) -> Any:
    """A list of names becomes a tuple; anything else is kept for the layout check (which knows
    the table's columns and says what to pass)."""
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return tuple(v)
    if v is None or isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Iterable):
        return v
    try:
        items = list(v)
    except TypeError:
        return v
    return tuple(items) if all(isinstance(x, str) for x in items) else v


def _output(_inst: Any, _a: attrs.Attribute, v: Any) -> None:
    if not isinstance(v, str) or v not in ("pandas", "arrow"):
        raise QueryError(f"output must be 'pandas' or 'arrow', got {v!r}")


def _version(_inst: Any, _a: attrs.Attribute, v: Any) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
        from ..errors import VersionError

        raise VersionError(
            f"a materialization version is an int, got {short(v)} ({type(v).__name__}); "
            "see client.get_versions()"
        )


def _flag_field(default: bool, doc: str, cli: str | None = None) -> Any:
    return attrs.field(default=default, converter=_to_bool, validator=_flag, metadata=_meta("bool", doc, cli))


@attrs.frozen(kw_only=True)
class QueryOptions:
    """What a query asks besides its filters. Every field is validated when the object is built
    (:func:`parse` names the table in the error); ``timestamp`` and ``materialization_version``
    are checked against the datastack's versions by the client."""

    select_columns: tuple[str, ...] | None = attrs.field(
        default=None,
        converter=_select,
        metadata=_meta(
            "Sequence[_C] | None",
            'columns to return (result names; positions by their unsplit name, e.g. ``"pt_position"``). '
            "Default: all.",
            "comma-separated columns to return (default: all)",
        ),
    )
    offset: int = attrs.field(
        default=0,
        converter=_offset,
        metadata=_meta(
            "int", "skip this many rows of the id-ordered result (pages are stable).", "rows to skip"
        ),
    )
    limit: int | None = attrs.field(
        default=None,
        converter=_limit,
        metadata=_meta(
            "int | None", "return at most this many rows of the id-ordered result.", "rows at most"
        ),
    )
    materialization_version: int | None = attrs.field(
        default=None,
        validator=_version,
        converter=lambda v: (
            v if v is None or isinstance(v, bool) or not isinstance(v, numbers.Integral) else int(v)
        ),
        metadata=_meta(
            "int | None", "the version to query; default the client's version.", "version to query"
        ),
    )
    timestamp: Any = attrs.field(
        default=None,
        metadata=_meta(
            "_When | None",
            "query the table as it was at this moment (a live query): a timezone-aware datetime, an "
            'ISO string with an offset, or ``"now"``.',
        ),
    )
    desired_resolution: tuple[float, float, float] | None = attrs.field(
        default=None,
        converter=_resolution,
        metadata=_meta(
            "Sequence[float] | numpy.ndarray[Any, Any] | None",
            "nm per unit of the returned positions, e.g. ``[1, 1, 1]`` for nm. Bounding-box filters "
            "always stay in the table's voxel units.",
        ),
    )
    get_counts: bool = _flag_field(
        False, "return one row with the number of matching rows instead of the rows."
    )
    random_sample: int | None = attrs.field(
        default=None,
        converter=_sample,
        metadata=_meta("int | None", "return a deterministic sample of about this many matching rows."),
    )
    allow_invalid_root_ids: bool = _flag_field(
        False,
        "live queries only: drop (with a warning) filter root ids that are not valid at ``timestamp`` "
        "instead of raising.",
    )
    allow_missing_lookups: bool = _flag_field(
        False,
        "live queries only: annotations whose supervoxel lookup is still pending (no root id yet) make "
        "the query fail unless this is ``True``; then they are left out, with a warning.",
    )
    complete: bool = _flag_field(
        True,
        "a CAVE server cuts answers at its row limit; tablekit completes them by paging (default). "
        "``False`` returns the first page only, with a warning.",
    )


@attrs.frozen(kw_only=True)
class OutputOptions:
    """How an answer is returned (the backends never see these)."""

    split_positions: bool = _flag_field(
        False,
        "return ``<P>_position_x/_y/_z`` columns instead of one column of 3-element arrays per point "
        "(faster, less memory).",
    )
    metadata: bool = _flag_field(
        True, "attach provenance to ``df.attrs`` (version, filters, request, resolution)."
    )
    output: Literal["pandas", "arrow"] = attrs.field(
        default="pandas",
        validator=_output,
        metadata=_meta(
            'Literal["pandas", "arrow"]', '``"pandas"`` (default) or ``"arrow"`` for a ``pyarrow.Table``.'
        ),
    )


class LiveQueryKwargs(TypedDict, total=False):
    """The options of ``live_query`` for static type checkers (see :class:`QueryOptions`)."""

    select_columns: Sequence[str] | None
    offset: int
    limit: int | None
    split_positions: bool
    metadata: bool
    desired_resolution: Sequence[float] | None
    random_sample: int | None
    output: Literal["pandas", "arrow"]
    allow_invalid_root_ids: bool
    allow_missing_lookups: bool
    complete: bool


class QueryKwargs(LiveQueryKwargs, total=False):
    """The options of ``query`` for static type checkers (see :class:`QueryOptions`)."""

    materialization_version: int | None
    timestamp: _dt.datetime | str | None
    get_counts: bool


def option_fields() -> dict[str, attrs.Attribute]:
    """Every option by name, in the order signatures show them."""
    q = {a.name: a for a in attrs.fields(QueryOptions)}
    o = {a.name: a for a in attrs.fields(OutputOptions)}
    order = (
        "select_columns",
        "offset",
        "limit",
        "split_positions",
        "materialization_version",
        "timestamp",
        "metadata",
        "desired_resolution",
        "get_counts",
        "random_sample",
        "output",
        "allow_invalid_root_ids",
        "allow_missing_lookups",
        "complete",
    )
    both = {**q, **o}
    assert set(order) == set(both), "a new option needs its place in option_fields()"
    return {n: both[n] for n in order}


#: the options of ``query`` (and ``query_table``), in signature order
QUERY_OPTIONS: tuple[str, ...] = tuple(option_fields())
#: the options of ``live_query`` (the moment is its first argument; a live query counts no rows)
LIVE_OPTIONS: tuple[str, ...] = tuple(
    n for n in QUERY_OPTIONS if n not in ("materialization_version", "timestamp", "get_counts")
)


def check_keywords(what: str, given: Mapping[str, Any], allowed: Iterable[str], filters: Any = None) -> None:
    """Refuse a keyword ``what()`` does not take, suggesting the close matches (``limt`` →
    ``limit``; a column name given to ``query()`` → a filter of the table)."""
    allowed = tuple(allowed)
    bad = [k for k in given if k not in allowed]
    if not bad:
        return
    k = bad[0]
    close = difflib.get_close_matches(str(k), list(allowed), n=3, cutoff=0.6)
    if filters and k in filters:
        hint = f" {k!r} is a column: filter with {what.rsplit('.', 1)[0]}({k}=...).query()."
    elif close:
        hint = f" Did you mean {' or '.join(map(repr, close))}?"
    else:
        hint = ""
    raise UnknownArgumentError(f"{what}() has no argument {k!r}.{hint} Its arguments: {', '.join(allowed)}")


def parse(
    given: Mapping[str, Any],
    *,
    table: str,
    what: str,
    allowed: Iterable[str] = QUERY_OPTIONS,
    filters: Any = None,
) -> tuple[QueryOptions, OutputOptions]:
    """``given`` (keyword → value) as validated options of ``what()`` (``"T.query"``): an unknown
    keyword is refused with suggestions, a wrong value with ``table`` named first."""
    from ..errors import TablekitError

    check_keywords(what, given, allowed, filters)
    q = {k: v for k, v in given.items() if k in _QUERY_NAMES}
    o = {k: v for k, v in given.items() if k in _OUTPUT_NAMES}
    try:
        return QueryOptions(**q), OutputOptions(**o)
    except TablekitError as e:
        raise type(e)(f"{table}: {e}") from None


_QUERY_NAMES = frozenset(a.name for a in attrs.fields(QueryOptions))
_OUTPUT_NAMES = frozenset(a.name for a in attrs.fields(OutputOptions))


def signature(
    names: Sequence[str], *, lead: Sequence[inspect.Parameter] = (), returns: Any = "pd.DataFrame"
) -> inspect.Signature:
    """The runtime signature of a method taking these options keyword-only (after ``lead``), for
    ``help()``, IPython's ``?`` and completion."""
    fields = option_fields()
    params = list(lead)
    for n in names:
        a = fields[n]
        params.append(
            inspect.Parameter(
                n, inspect.Parameter.KEYWORD_ONLY, default=a.default, annotation=_runtime_annotation(a)
            )
        )
    return inspect.Signature(params, return_annotation=returns)


def _runtime_annotation(a: attrs.Attribute) -> str:
    stub = a.metadata["stub"]
    return {
        "Sequence[_C] | None": "list[str] | None",
        "_When | None": "Any",
        "Sequence[float] | numpy.ndarray[Any, Any] | None": "list[float] | None",
        'Literal["pandas", "arrow"]': "str",
    }.get(stub, stub)


def docs(names: Sequence[str], *, lead: str = "") -> str:
    """The numpydoc "Parameters" section of these options."""
    fields = option_fields()
    lines = ["Parameters", "----------"]
    if lead:
        lines.append(lead)
    for n in names:
        lines.append(f"{n} : {fields[n].metadata['doc']}")
    return "\n".join(lines)
