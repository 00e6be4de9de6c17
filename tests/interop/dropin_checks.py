"""The drop-in ``tablekit.CAVEclient`` == ``caveclient.CAVEclient`` 8.2.1 — run UNDER the interop venv.

tests/test_dropin_corpus.py starts ``tablekit serve`` over a sample datastack and runs this file
with the interop venv's pytest (``_interop_env.run_checks``). Every snippet of
dropin_snippets.py runs three times: with the unmodified CAVEclient against the server (the
oracle: CAVEclient decoding the server's answers), with ``tablekit.CAVEclient`` against the same
server, and with ``tablekit.CAVEclient`` on the datastack directory (offline); the results are
compared whole (DataFrames with ``pandas.testing.assert_frame_equal``: columns and their order,
values, index; dtypes may differ, docs/migrating-from-caveclient.md). The CAVEclient results are also written to ``$TABLEKIT_DROPIN_OUT`` (one
pickle of plain values and Parquet-free frames per snippet) for the same comparison in tablekit's
own venv. Not named ``test_*``: the main test run must not collect it.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import pickle

import numpy as np
import pandas as pd
import pytest
from caveclient import CAVEclient as CaveClient
from dropin_snippets import KNOWN, SNIPPETS

import tablekit

BASE = os.environ["TABLEKIT_INTEROP_BASE"]
PATH = os.environ["TABLEKIT_INTEROP_PATH"]
TOKEN = os.environ.get("TABLEKIT_INTEROP_TOKEN") or None
OUT = os.environ.get("TABLEKIT_DROPIN_OUT")


@pytest.fixture(scope="session")
def datastack():
    return tablekit.connect(path=PATH).datastack


@pytest.fixture(scope="session")
def cave(datastack):
    assert pathlib.Path.home() != pathlib.Path("/root"), "run with HOME set to a temporary directory"
    return CaveClient(datastack, server_address=BASE, auth_token=TOKEN, write_server_cache=False)


@pytest.fixture(scope="session")
def dropin(datastack):
    return tablekit.CAVEclient(datastack, server_address=BASE, auth_token=TOKEN, write_server_cache=False)


@pytest.fixture(scope="session")
def local():
    return tablekit.CAVEclient(PATH)


def plain(x):
    """A result as plain, comparable values (DataFrames kept, numpy scalars and arrays made Python)."""
    if isinstance(x, pd.DataFrame):
        df = x.reset_index(drop=True)
        df.attrs = {}
        return df
    if isinstance(x, dict):
        return {plain(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(plain(v) for v in x)
    if isinstance(x, np.ndarray):
        return [plain(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dt.datetime):
        return pd.Timestamp(x).tz_convert("UTC") if x.tzinfo else pd.Timestamp(x)
    return x


def same(got, want, where="result", seen=None):
    """Assert ``got`` equals ``want`` whole; a known kind of difference (see KNOWN) is recorded in
    ``seen`` and the rest still compared."""
    seen = set() if seen is None else seen
    if isinstance(want, pd.DataFrame):
        assert isinstance(got, pd.DataFrame), (where, type(got))
        if set(got.columns) != set(want.columns):
            seen.add(("columns", tuple(sorted(set(got.columns) ^ set(want.columns)))))
            want = want[[c for c in want.columns if c in set(got.columns)]]
        if list(got.columns) != list(want.columns):
            seen.add(("column order", None))
            got = got[list(want.columns)]
        pd.testing.assert_frame_equal(got, want, obj=where, check_dtype=False)
        return seen
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got, key=str) == sorted(want, key=str), (where, got, want)
        for k in want:
            same(got[k], want[k], f"{where}[{k!r}]", seen)
        return seen
    if isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            same(g, w, f"{where}[{i}]", seen)
        return seen
    assert type(got) is type(want) and got == want, (where, got, want)
    return seen


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_snippet(name, cave, dropin, local):
    fn = SNIPPETS[name]
    want = plain(fn(cave))
    if OUT:
        pathlib.Path(OUT).mkdir(parents=True, exist_ok=True)
        with open(pathlib.Path(OUT) / f"{name}.pkl", "wb") as fh:
            pickle.dump(_portable(want), fh)
    got_http = plain(fn(dropin))
    seen = same(got_http, want, f"{name}: drop-in over HTTP vs CAVEclient")
    got_local = plain(fn(local))
    assert same(got_local, got_http, f"{name}: drop-in offline vs over HTTP") == set()
    assert seen == KNOWN.get(name, set()), (name, seen)


def _portable(x):
    """Frames as {columns, dtypes, rows} so tablekit's venv (pandas 3) reads them without pandas 2's pickles."""
    if isinstance(x, pd.DataFrame):
        return {
            "__frame__": True,
            "columns": list(x.columns),
            "dtypes": [str(t) for t in x.dtypes],
            "rows": [[_portable(plain(v)) for v in row] for row in x.astype(object).itertuples(index=False)],
        }
    if isinstance(x, dict):
        return {k: _portable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_portable(v) for v in x)
    if isinstance(x, pd.Timestamp):
        return x.to_pydatetime()
    return x


def test_the_corpus_is_big_enough():
    assert len(SNIPPETS) >= 15
