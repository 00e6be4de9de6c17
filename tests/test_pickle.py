"""Filter objects pickle (issue 14): they go to a ``multiprocessing`` worker, run there, and
compare equal after a round trip."""

from __future__ import annotations

import multiprocessing
import pickle

import _oracle
import pandas as pd
import pytest

import tablekit

NUC, CT, VIEW = "nucleus_detection_v0", "aibs_metamodel_celltypes_v661", "single_neurons"


def _run(f):
    """In the worker: the filter's answer, and what it was."""
    return f.query(split_positions=True, metadata=False), repr(f), type(f).__name__


@pytest.fixture(scope="module")
def filters(client):
    nuc = client.tables[NUC]
    return [
        nuc(volume={">": 300, "<=": 700}, pt_root_id={"!=": 0}),
        nuc(id=[1, 2, 3]),
        client.tables[CT](cell_type={"regex": "^[0-9]P"}),
        client.views[VIEW](),
    ]


def test_round_trip_in_process_is_equal_and_of_the_same_class(filters, client):
    for f in filters:
        g = pickle.loads(pickle.dumps(f))
        assert g == f and type(g) is type(f) and g.filters == f.filters
        assert repr(g) == repr(f)
    assert filters[0] != filters[1]


def test_a_filter_runs_in_a_spawned_worker(filters, client, path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        answers = pool.map(_run, filters)
    for f, (df, text, name) in zip(filters, answers, strict=True):
        assert text == repr(f) and name == type(f).__name__
        pd.testing.assert_frame_equal(df, f.query(split_positions=True, metadata=False))
    # and the first is the pandas replay of the raw history
    snap = _oracle.snapshot(path, NUC, _oracle.version_timestamp(path, client.version))
    keep = (snap["volume"] > 300) & (snap["volume"] <= 700) & (snap["pt_root_id"] != 0)
    assert answers[0][0]["id"].tolist() == snap[keep]["id"].tolist() and keep.sum() > 0


def test_a_filter_pinned_to_an_older_version_keeps_it(client, path):
    old = client.get_versions()[0]
    pinned = tablekit.connect(path=path, version=old)
    f = pinned.tables[NUC](volume={">": 300})
    g = pickle.loads(pickle.dumps(f))
    assert g == f
    pd.testing.assert_frame_equal(g.query(metadata=False), f.query(metadata=False))


def test_a_cave_filter_is_refused_clearly(path, client, tmp_path):
    """A CAVE client holds a token, which is never written anywhere: its filters refuse to pickle
    with an error that says what to do instead."""
    from _server import running_server

    with running_server(path) as url:
        http = tablekit.connect(client.datastack, server=url, cache_dir=str(tmp_path), progress=False)
        with pytest.raises(TypeError, match=r"cannot be pickled.*connect\(\) again"):
            pickle.dumps(http.tables[NUC](volume={">": 300}))
