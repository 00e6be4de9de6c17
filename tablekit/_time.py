"""The one place tablekit reads a moment in time (issue 14: six ISO parsers became this module).

Two conventions, one parser:

* what a **user** passes (a filter value, ``timestamp=``, ``build_datastack(timestamp=)``):
  :func:`utc_timestamp` — an aware datetime, an aware pandas ``Timestamp`` or an ISO-8601 string
  with an offset or ``Z``; naive values are refused (all CAVE timestamps are UTC, and guessing caused
  hour-shift bugs). :func:`moment` also takes ``"now"``.
* what a **CAVE service or a datastack file** writes (metadata, Arrow/JSON columns, a live body):
  :func:`parse_utc` — ISO-8601 text whose naive form means UTC, as the servers write it
  (``'2025-03-31T08:01:07.000250'``).

Every result is an aware datetime in UTC. Callers that add a table, column or file to the message
pass ``what``; callers whose errors are not :class:`~tablekit.errors.FilterValueError` pass ``error``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np

from .errors import FilterValueError

UTC = _dt.timezone.utc

#: the fix every refused user timestamp names
FIX = (
    "All timestamps are UTC: pass an aware datetime, e.g. datetime.now(timezone.utc) or "
    "datetime(2025, 3, 1, tzinfo=timezone.utc), or an ISO string with an offset such as "
    "'2025-03-01T00:00:00+00:00'"
)


def parse_iso(text: str) -> _dt.datetime:
    """ISO-8601 text → datetime (``Z`` is UTC); naive text stays naive; ``ValueError`` otherwise."""
    return _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def as_utc(t: _dt.datetime) -> _dt.datetime:
    """``t`` in UTC; a naive ``t`` is read as UTC (the CAVE services' convention)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_utc(text: str) -> _dt.datetime:
    """ISO-8601 text as a CAVE service or a datastack file writes it (naive = UTC) → aware UTC."""
    return as_utc(parse_iso(text))


def utc_timestamp(
    value: Any, *, what: str = "timestamp", error: type[Exception] = FilterValueError
) -> _dt.datetime:
    """A user's aware datetime / pandas Timestamp / ISO string with an offset → aware UTC datetime.

    Naive values, dates, numbers and numpy ``datetime64`` are refused with ``error`` naming
    ``what``, the value and the fix.
    """
    v = value
    if isinstance(v, str):
        try:
            v = parse_iso(v.strip())
        except ValueError:
            raise error(f"{what}: {value!r} is not an ISO-8601 timestamp. {FIX}") from None
    elif hasattr(v, "to_pydatetime") and not isinstance(v, _dt.datetime):
        v = v.to_pydatetime()
    elif isinstance(v, np.datetime64):
        raise error(f"{what}: numpy datetime64 {value!r} carries no time zone. {FIX}")
    if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
        raise error(f"{what}: a date {value!r} has no time or time zone. {FIX}")
    if not isinstance(v, _dt.datetime):
        raise error(f"{what}: {value!r} of type {type(value).__name__} is not a timestamp. {FIX}")
    if v.tzinfo is None or v.tzinfo.utcoffset(v) is None:
        raise error(f"{what}: {value!r} is naive (no time zone). {FIX}")
    return v.astimezone(UTC)


def is_now(value: Any) -> bool:
    """Is ``value`` the string ``"now"`` (any case, surrounding blanks allowed)?"""
    return isinstance(value, str) and value.strip().lower() == "now"


def moment(value: Any, *, what: str = "timestamp", error: type[Exception] = FilterValueError) -> _dt.datetime:
    """:func:`utc_timestamp`, or the current UTC time for ``"now"``."""
    return _dt.datetime.now(UTC) if is_now(value) else utc_timestamp(value, what=what, error=error)
