"""Arrow → DataFrame (``tablekit.frames.to_output``) against pyarrow's own ``to_pandas`` and
hand-built expectations: dtypes, values, nulls, column order, position arrays, writeability."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tablekit import frames
from tablekit.frames import to_output

UTC = dt.timezone.utc


def _table(n_chunks: int = 1) -> pa.Table:
    stamps = [dt.datetime(2024, 1, 1, 12, 0, 0, 123456), None, dt.datetime(1999, 12, 31, 23, 59, 59)]
    cols = {
        "id": pa.array([3, 1, 2], pa.int64()),
        "created": pa.array(stamps, pa.timestamp("us", tz="UTC")),
        "created_full": pa.array(
            [s or dt.datetime(2000, 1, 1) for s in stamps], pa.timestamp("us", tz="UTC")
        ),
        "naive": pa.array(stamps, pa.timestamp("us")),
        "ns": pa.array(stamps, pa.timestamp("ns", tz="UTC")),
        "other_zone": pa.array(stamps, pa.timestamp("us", tz="America/New_York")),
        "valid": pa.array([True, False, True]),
        "maybe": pa.array([True, None, False]),
        "size": pa.array([1.5, float("nan"), -2.0]),
        "size_null": pa.array([1.5, None, -2.0]),
        "small": pa.array([1, 2, 3], pa.int32()),
        "tag": pa.array(["a", None, "c"]),
        "items": pa.array([[1, 2], [], None]),
    }
    t = pa.table(cols)
    if n_chunks > 1:
        t = pa.concat_tables([t.slice(0, 1), t.slice(1)])
    return t


@pytest.mark.parametrize("n_chunks", [1, 2])
def test_scalar_columns_convert_as_pyarrow_does(n_chunks):
    """Every column without integer nulls comes out exactly as pyarrow's ``to_pandas`` makes it."""
    t = _table(n_chunks)
    got = to_output(t, position_names=[], split_positions=False, output="pandas", attrs=None)
    pd.testing.assert_frame_equal(got, t.to_pandas())
    assert str(got["created"].dtype) == "datetime64[us, UTC]" and str(got["naive"].dtype) == "datetime64[us]"
    assert got["created"].iloc[1] is pd.NaT and got["created"].iloc[0] == pd.Timestamp(
        "2024-01-01 12:00:00.123456", tz="UTC"
    )


def test_integers_with_nulls_are_Int64_and_keep_every_digit():
    big = 864691135019149729
    t = pa.table(
        {"root": pa.array([big, None, big + 1], pa.int64()), "n": pa.array([None, 1, 2], pa.int32())}
    )
    got = to_output(t, position_names=[], split_positions=False, output="pandas", attrs=None)
    assert str(got["root"].dtype) == "Int64" and str(got["n"].dtype) == "Int64"
    assert got["root"].tolist() == [big, pd.NA, big + 1]
    assert got["n"].isna().tolist() == [True, False, False]


def test_positions_become_arrays_last_or_stay_split():
    t = pa.table(
        {
            "pt_position_x": pa.array([1, None, 3], pa.int64()),
            "id": pa.array([10, 11, 12], pa.int64()),
            "pt_position_y": pa.array([4, 5, 6], pa.int64()),
            "pt_position_z": pa.array([7, 8, 9], pa.int64()),
            "size": pa.array([0.5, 1.5, 2.5]),
        }
    )
    got = to_output(t, position_names=["pt_position"], split_positions=False, output="pandas", attrs={"a": 1})
    assert list(got.columns) == ["id", "size", "pt_position"]
    assert got["pt_position"].iloc[1] is None  # a point with a missing coordinate
    assert [a.tolist() for a in got["pt_position"][[0, 2]]] == [[1, 4, 7], [3, 6, 9]]
    assert got.attrs == {"a": 1}
    split = to_output(t, position_names=["pt_position"], split_positions=True, output="pandas", attrs=None)
    assert list(split.columns) == ["id", "size", "pt_position_x", "pt_position_y", "pt_position_z"]
    assert str(split["pt_position_x"].dtype) == "Int64" and split["pt_position_z"].tolist() == [7, 8, 9]


def test_every_column_is_writeable():
    """Arrow's buffers are read-only: a zero-copy column would refuse ``df.loc[...] = x``."""
    t = _table()
    t = t.append_column("p_x", pa.array([1, 2, 3])).append_column("p_y", pa.array([4, 5, 6]))
    t = t.append_column("p_z", pa.array([7, 8, 9]))
    df = to_output(t, position_names=["p"], split_positions=False, output="pandas", attrs=None)
    for c in df.columns:
        if c in ("p", "items"):
            continue
        df.loc[0, c] = df.loc[2, c]
        assert (pd.isna(df.loc[0, c]) and pd.isna(df.loc[2, c])) or df.loc[0, c] == df.loc[2, c], c
    df["p"].iloc[0][0] = 42  # the arrays in a position column are writeable too
    assert df["p"].iloc[0].tolist() == [42, 4, 7]
    assert t["p_x"][0].as_py() == 1  # and the Arrow table is untouched


def test_empty_answers_keep_their_columns_and_dtypes():
    t = _table().slice(0, 0)
    got = to_output(t, position_names=[], split_positions=False, output="pandas", attrs=None)
    pd.testing.assert_frame_equal(got, t.to_pandas())
    none = to_output(pa.table({}), position_names=[], split_positions=False, output="pandas", attrs=None)
    assert none.shape == (0, 0)
    rows_only = to_output(
        pa.table({"a": [1, 2]}).select([]),
        position_names=[],
        split_positions=False,
        output="pandas",
        attrs=None,
    )
    assert rows_only.shape == (2, 0)  # the rows are counted even when no column is selected


def _decoded(t: pa.Table) -> pa.Table:
    """``t`` through a zstd-compressed Arrow IPC stream, as an HTTP answer arrives."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(t)
    return pa.ipc.open_stream(sink.getvalue()).read_all()


def test_decoded_answers_are_adopted_without_a_copy_and_never_aliased():
    """A decoded answer's own (mutable) buffers become the columns as they are when the backend
    says nothing else references them (no second copy of a large download), still writeable; one buffer under two names is copied for the second, so
    editing one column never changes another; the values equal pyarrow's conversion."""
    n = 50_000
    t = _decoded(
        pa.table(
            {
                "id": pa.array(np.arange(n), pa.int64()),
                "size": pa.array(np.linspace(0, 1, n)),
                "created": pa.array(np.arange(n).astype("M8[us]"), pa.timestamp("us", tz="UTC")),
            }
        )
    )
    t = t.append_column("id_again", t["id"])
    raw = np.frombuffer(t["id"].chunk(0).buffers()[1], dtype=np.int64)
    kept = to_output(t, position_names=[], split_positions=False, output="pandas", attrs=None)
    assert not np.shares_memory(kept["id"].to_numpy(), raw)  # not told it owns the table: copied
    df = to_output(t, position_names=[], split_positions=False, output="pandas", attrs=None, adopt=True)
    pd.testing.assert_frame_equal(df, t.to_pandas())
    assert np.shares_memory(df["id"].to_numpy(), raw)  # adopted
    assert not np.shares_memory(df["id_again"].to_numpy(), raw)  # the same buffer again: copied
    df.loc[0, "id"] = -1
    df.loc[1, "created"] = pd.Timestamp("2030-01-01", tz="UTC")
    assert df["id_again"].iloc[0] == 0 and df["id"].iloc[0] == -1
    assert df["created"].iloc[1] == pd.Timestamp("2030-01-01", tz="UTC")


def test_booleans_at_any_bit_offset_convert_without_pyarrows_default_pool():
    """Booleans are bit-packed, and a slice starts mid-byte: every offset and chunking gives
    ``to_pandas``'s values in a writeable bool column, unpacked without allocating from pyarrow's
    default memory pool (whose first use costs a process about 0.5 ms, at times 10 ms)."""
    rng = np.random.default_rng(7)
    bits = rng.random(203) < 0.5
    full = pa.array(bits)
    pool = pa.default_memory_pool()
    # pyarrow < 20 cannot count a pool's allocations: there the values are checked, not the pool
    allocations = getattr(pool, "num_allocations", lambda: 0)
    for start in range(0, 17):
        for cuts in ([], [1], [8, 9], [50, 51, 120]):
            edges = [start, *[start + c for c in cuts if start + c < len(bits)], len(bits)]
            col = pa.chunked_array([full.slice(a, b - a) for a, b in itertools.pairwise(edges)], pa.bool_())
            t = pa.table({"valid": col})
            before = allocations()
            column = frames._column(col, set())  # (pandas 3 makes the column labels with pyarrow)
            assert allocations() == before
            np.testing.assert_array_equal(column, bits[start:])
            got = to_output(t, position_names=[], split_positions=False, output="pandas", attrs=None)
            assert column.dtype == np.bool_ and column.flags.writeable
            pd.testing.assert_series_equal(got["valid"], t.to_pandas()["valid"])
            got.loc[0, "valid"] = not got.loc[0, "valid"]  # writeable in the frame too
            assert got.loc[0, "valid"] != bits[start] and full[start].as_py() == bits[start]


def test_attrs_summary_fits_the_budget_whatever_the_provenance():
    """Long lists, long strings and many entries: ``attrs`` stays under ATTRS_BUDGET and
    ``provenance`` gives back the whole, until the result is garbage-collected."""
    import gc
    import json

    import tablekit
    from tablekit.frames import ATTRS_BUDGET

    t = pa.table({"id": pa.array([1, 2], pa.int64())})
    meta = {
        "filters": {"id": list(range(100_000)), "name": ["x" * 500] * 3},
        "request": {"value_lists": [list(range(50_000))], "sql": "SELECT " + "a, " * 3000},
        "table_metadata": {f"t{i}": {"description": "d" * 300} for i in range(40)},
        "version": 7,
    }
    df = to_output(t, position_names=[], split_positions=False, output="pandas", attrs=meta)
    assert len(json.dumps(df.attrs, separators=(",", ":")).encode()) <= ATTRS_BUDGET
    assert df.attrs["version"] == 7 and df.attrs["filters"]["id"]["count"] == 100_000
    assert tablekit.provenance(df) == meta
    key = df.attrs["provenance_key"]
    copy_ = df.copy()
    del df
    gc.collect()
    with pytest.raises(tablekit.TablekitError, match=key):
        tablekit.provenance(copy_)
    arrow = to_output(t, position_names=[], split_positions=False, output="arrow", attrs=meta)
    assert tablekit.provenance(arrow) == meta  # Arrow keeps it whole in its schema metadata
