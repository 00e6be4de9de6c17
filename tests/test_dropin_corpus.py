"""Issue 17's snippet corpus: the unmodified CAVEclient 8.2.1 (the interop venv) against
``tablekit serve`` == the drop-in ``tablekit.CAVEclient``, over HTTP and offline.

tests/interop/dropin_checks.py runs every snippet of tests/interop/dropin_snippets.py in the
interop venv with both clients (and the drop-in client offline) and compares the results whole;
it writes CAVEclient's results to a directory, and this file runs the same snippets here, in
tablekit's own venv (pandas 3), with the drop-in client over HTTP (the same server) and on the
datastack directory, and compares them with CAVEclient's values column by column.
"""

from __future__ import annotations

import datetime as dt
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _interop_env import run_checks
from _server import running_server

import tablekit

sys.path.insert(0, str(Path(__file__).parent / "interop"))
from dropin_snippets import KNOWN, SNIPPETS

TOKEN = "dropin-test-token"


def _value(v):
    """One cell or value, made comparable across pandas 2 and 3 (missing values are None)."""
    if isinstance(v, (np.ndarray, list, tuple)):
        return [_value(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (pd.Timestamp, dt.datetime)):
        return pd.Timestamp(v).tz_convert("UTC") if pd.Timestamp(v).tzinfo else pd.Timestamp(v)
    return v


def _portable(x):
    if isinstance(x, pd.DataFrame):
        df = x.reset_index(drop=True)
        return {"__frame__": True, "columns": [str(c) for c in df.columns], "data": {
            str(c): [_value(v) for v in df[c].astype(object)] for c in df.columns
        }}  # fmt: skip
    if isinstance(x, dict):
        if x.get("__frame__") and "rows" in x:  # written by dropin_checks.py
            cols = x["columns"]
            return {"__frame__": True, "columns": cols, "data": {
                c: [_value(r[i]) for r in x["rows"]] for i, c in enumerate(cols)
            }}  # fmt: skip
        return {_value(k): _portable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_portable(v) for v in x]
    return _value(x)


def _same(got, want, name, where=""):
    if isinstance(want, dict) and want.get("__frame__"):
        known = KNOWN.get(name, set())
        missing = [c for c in want["columns"] if c not in got["columns"]]
        extra = [c for c in got["columns"] if c not in want["columns"]]
        if missing or extra:
            assert ("columns", tuple(sorted(missing + extra))) in known, (name, where, missing, extra)
        common = [c for c in want["columns"] if c in got["columns"]]
        if [c for c in got["columns"] if c in common] != common:
            assert ("column order", None) in known, (name, where, got["columns"], want["columns"])
        for c in common:
            assert got["data"][c] == want["data"][c], (name, where, c)
        return
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got, key=str) == sorted(want, key=str), (name, where)
        for k in want:
            _same(got[k], want[k], name, f"{where}[{k!r}]")
        return
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (name, where, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _same(g, w, name, f"{where}[{i}]")
        return
    assert got == want, (name, where, got, want)


@pytest.fixture(scope="module")
def served(path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dropin")
    out = tmp / "cave-results"
    with running_server(path, token=TOKEN) as base:
        env = {
            "TABLEKIT_INTEROP_BASE": base,
            "TABLEKIT_INTEROP_PATH": str(path),
            "TABLEKIT_INTEROP_TOKEN": TOKEN,
            "TABLEKIT_DROPIN_OUT": str(out),
        }
        report = run_checks("dropin_checks.py", env, tmp)
        yield base, out, report


def test_caveclient_equals_dropin_in_the_interop_venv(served):
    _, out, report = served
    assert f"{len(SNIPPETS) + 1} passed" in report  # every snippet, and the corpus size check
    assert len(SNIPPETS) >= 15
    assert sorted(p.stem for p in out.glob("*.pkl")) == sorted(SNIPPETS)


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_dropin_here_equals_caveclient(served, path, name):
    base, out, _ = served
    with open(out / f"{name}.pkl", "rb") as fh:
        want = _portable(pickle.load(fh))
    ds = tablekit.connect(path=path).datastack
    http = tablekit.CAVEclient(ds, server_address=base, auth_token=TOKEN)
    _same(_portable(SNIPPETS[name](http)), want, name, "http")
    _same(_portable(SNIPPETS[name](tablekit.CAVEclient(path))), want, name, "local")
