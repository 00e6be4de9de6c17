"""tablekit._time, the one moment parser, against hand-derived values (issue 14)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tablekit import _time
from tablekit.errors import DatastackError, FilterValueError, VersionError

UTC = dt.timezone.utc
# 2025-03-01T02:30:00+02:30 is 00:00 UTC, worked out by hand
MIDNIGHT = dt.datetime(2025, 3, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "2025-03-01T00:00:00Z",
        "2025-03-01T00:00:00+00:00",
        " 2025-03-01T02:30:00+02:30 ",
        "2025-02-28T19:00:00-05:00",
        dt.datetime(2025, 3, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        pd.Timestamp("2025-03-01T09:00", tz="Asia/Tokyo"),
    ],
)
def test_user_timestamps_with_a_zone_are_read_in_utc(value):
    t = _time.utc_timestamp(value)
    assert t == MIDNIGHT and t.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2025-03-01T00:00:00", "is naive (no time zone)"),
        (dt.datetime(2025, 3, 1), "is naive (no time zone)"),
        (pd.Timestamp("2025-03-01"), "is naive (no time zone)"),
        (np.datetime64("2025-03-01"), "numpy datetime64"),
        (dt.date(2025, 3, 1), "a date"),
        (12345, "is not a timestamp"),
        ("yesterday", "is not an ISO-8601 timestamp"),
    ],
)
def test_user_timestamps_without_a_zone_are_refused_with_the_fix(value, words):
    with pytest.raises(FilterValueError) as e:
        _time.utc_timestamp(value, what="t: column 'created'")
    assert str(e.value).startswith("t: column 'created': ") and words in str(e.value)
    assert "All timestamps are UTC" in str(e.value)
    with pytest.raises(VersionError):
        _time.utc_timestamp(value, error=VersionError)


def test_now_is_the_current_utc_time():
    before = dt.datetime.now(UTC)
    t = _time.moment(" NOW ")
    assert before <= t <= dt.datetime.now(UTC) and t.tzinfo is UTC
    assert _time.moment("2025-03-01T00:00:00Z") == MIDNIGHT


def test_service_text_is_naive_utc():
    assert _time.parse_utc("2025-03-31T08:01:07.000250") == dt.datetime(2025, 3, 31, 8, 1, 7, 250, tzinfo=UTC)
    assert _time.parse_utc("2025-03-31T10:01:07+02:00") == dt.datetime(2025, 3, 31, 8, 1, 7, tzinfo=UTC)
    with pytest.raises(ValueError):
        _time.parse_utc("yesterday")


def test_the_callers_read_through_it():
    from tablekit.backends.cave.decode import parse_time
    from tablekit.datastack.format import _utc, parse_timestamp

    assert parse_time("2025-03-01T00:00:00") == MIDNIGHT
    assert parse_time(1740787200) == MIDNIGHT  # 2025-03-01 00:00 UTC in epoch seconds
    assert parse_time("Sat, 01 Mar 2025 00:00:00 GMT") == MIDNIGHT
    assert parse_timestamp("2025-03-01T00:00:00.000000") == pd.Timestamp("2025-03-01", tz="UTC")
    assert _utc("2025-03-01T02:30:00+02:30", "x") == pd.Timestamp("2025-03-01", tz="UTC")
    ns = pd.Timestamp("2025-03-01T00:00:00.000000001", tz="UTC")
    assert _utc(ns, "x") == ns
    with pytest.raises(DatastackError, match=r"build: .*is naive"):
        _utc("2025-03-01T00:00:00", "build")
