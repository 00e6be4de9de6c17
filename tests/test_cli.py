"""The ``tablekit`` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pandas as pd

NUC = "nucleus_detection_v0"


def run(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "tablekit", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_query_csv_matches_the_library(path, client):
    out = run(
        "query", NUC, "--path", path, "--where", "volume>300", "--where", "pt_root_id!=0", "--format", "csv"
    )
    got = pd.read_csv(io.StringIO(out.stdout))
    want = client.tables[NUC](volume={">": 300}, pt_root_id={"!=": 0}).query(split_positions=True)
    assert got["id"].tolist() == want["id"].tolist() and len(want) > 0
    assert "pt_position_x" in got.columns


def test_query_membership_select_limit_and_parquet(path, client, tmp_path):
    ids = client.tables[NUC]().query(limit=3, select_columns=["id"])["id"].tolist()
    f = tmp_path / "out.parquet"
    run(
        "query",
        NUC,
        "--path",
        path,
        "--where",
        f"id={','.join(map(str, ids))}",
        "--select",
        "id,volume",
        "--format",
        "parquet",
        "--out",
        str(f),
    )
    got = pd.read_parquet(f)
    assert got["id"].tolist() == ids and list(got.columns) == ["id", "volume"]


def test_query_errors_are_clear_and_exit_2(path):
    p = run("query", NUC, "--path", path, "--where", "volum>3", check=False)
    assert p.returncode == 2
    assert "error: nucleus_detection_v0: no column 'volum' (did you mean 'volume'?)" in p.stderr
    p = run("query", NUC, "--path", path, "--where", "volume>big", check=False)
    assert p.returncode == 2 and "column 'volume' (float) got 'big'" in p.stderr


def test_explain(path):
    out = run("query", NUC, "--path", path, "--where", "volume>=12.5", "--explain")
    plan = json.loads(out.stdout)
    assert 12.5 in plan["parameters"]


def test_tables_lists_counts(path, client):
    out = run("tables", "--path", path).stdout
    for t in client.get_tables():
        assert t in out
        assert f"{client.get_annotation_count(t):,} rows" in out
    assert "single_neurons" in out


def test_demo_prints_real_results(path):
    out = run("demo", "--path", path).stdout
    assert "nuclei with 500 < volume < 750" in out and "rows ×" in out
    assert "UnknownColumnError" in out and "did you mean 'pt_root_id'" in out
