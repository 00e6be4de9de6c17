"""Snapshots of what a fixed set of questions compiles to: the local engine's SQL and parameters
(``explain()``), and the HTTP requests the CAVE backend sends to ``tablekit serve`` (method, path,
query string, JSON body). They guard refactors (issue 14): a change in either shows as a diff of
tests/snapshots/*.json.

Refresh after an intended change with ``TABLEKIT_UPDATE_SNAPSHOTS=1 python -m pytest
tests/test_snapshots.py`` and review the diff before committing it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from _server import serve_asgi
from test_cave_backend import Recorder

import tablekit
from tablekit.backends.local import LocalBackend
from tablekit.server import create_app

SNAPSHOTS = pathlib.Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("TABLEKIT_UPDATE_SNAPSHOTS") == "1"
SYN, NUC, CT, COL, VIEW = (
    "synapses_pni_2",
    "nucleus_detection_v0",
    "aibs_metamodel_celltypes_v661",
    "allen_v1_column_types_slanted",
    "single_neurons",
)
UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def v(path) -> dict[str, Any]:
    """Values picked from the raw Parquet of the seeded sample (deterministic)."""
    ann = pd.read_parquet(pathlib.Path(path) / "segmentation" / "history")
    roots = sorted(int(r) for r in ann["root_id"].unique())
    versions = json.loads((pathlib.Path(path) / "versions.json").read_text())
    valid = [x for x in versions if x["valid"]]
    t = pd.Timestamp(valid[-1]["time_stamp"], tz="UTC") + pd.Timedelta(days=1, hours=3)
    return {"root": roots[0], "roots": roots[:3], "old": valid[0]["version"], "t": t.to_pydatetime()}


Question = Callable[[tablekit.Client, dict[str, Any]], Any]

#: name → (filter object, query options); ``run`` calls ``.query(**options)``, ``explain(**options)``
QUESTIONS: dict[str, Callable[[tablekit.Client, dict[str, Any]], tuple[Any, dict[str, Any]]]] = {
    "equality": lambda c, v: (c.tables[SYN](pre_pt_root_id=v["root"]), {}),
    "membership": lambda c, v: (c.tables[SYN](post_pt_root_id=v["roots"]), {}),
    "empty_membership": lambda c, v: (c.tables[SYN](post_pt_root_id=[]), {}),
    "float_range": lambda c, v: (c.tables[NUC](volume={">": 200.5, "<=": 700}), {}),
    "id_range": lambda c, v: (c.tables[SYN](id={">=": 1000, "<": 5000}), {}),
    "datetime_range": lambda c, v: (c.tables[SYN](created={"<": dt.datetime(2025, 1, 1, tzinfo=UTC)}), {}),
    "not_equal": lambda c, v: (c.tables[NUC](pt_root_id={"!=": 0}), {}),
    "not_in": lambda c, v: (c.tables[SYN](pre_pt_root_id={"not in": v["roots"]}, size={"<": 100}), {}),
    "regex": lambda c, v: (c.tables[COL](cell_type={"regex": "^[0-9]P"}), {}),
    "enum_string": lambda c, v: (c.tables[COL](cell_type="5P-IT"), {}),
    "bbox": lambda c, v: (c.tables[NUC](pt_position_bbox=[[100, 200, 300], [50000, 60000, 70000]]), {}),
    "reference_merge": lambda c, v: (c.tables[CT](cell_type="5P-IT", pt_root_id={"!=": 0}), {}),
    "view": lambda c, v: (c.views[VIEW](pt_root_id=v["roots"]), {}),
    "view_paged": lambda c, v: (c.views[VIEW](), {"offset": 10, "limit": 20}),
    "offset_limit": lambda c, v: (c.tables[SYN](), {"offset": 100, "limit": 50}),
    "select_columns": lambda c, v: (c.tables[SYN](size={">": 10}), {"select_columns": ["size", "pre_pt_position"]}),
    "desired_resolution": lambda c, v: (c.tables[SYN](pre_pt_root_id=v["root"]), {"desired_resolution": [1, 1, 1]}),
    "count": lambda c, v: (c.tables[NUC](volume={">": 300}), {"get_counts": True}),
    "older_version": lambda c, v: (c.tables[NUC](volume={">": 300}), {"materialization_version": v["old"]}),
    "live": lambda c, v: (c.tables[NUC](volume={">": 300}), {"timestamp": v["t"]}),
    "live_reference": lambda c, v: (c.tables[CT](cell_type="5P-IT"), {"timestamp": v["t"], "limit": 5}),
}  # fmt: skip


def _check(kind: str, got: dict[str, Any]) -> None:
    file = SNAPSHOTS / f"{kind}.json"
    text = json.dumps(got, indent=1, sort_keys=True, default=str) + "\n"
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        file.write_text(text)
        return
    assert file.exists(), f"no snapshot {file}; write it with TABLEKIT_UPDATE_SNAPSHOTS=1"
    want = json.loads(file.read_text())
    assert sorted(got) == sorted(want), f"{file.name}: the question set changed"
    for name in want:
        assert json.loads(json.dumps(got[name], default=str)) == want[name], (
            f"{file.name}: {name} differs from the snapshot; if intended, refresh with TABLEKIT_UPDATE_SNAPSHOTS=1"
        )


def test_local_sql(path, v):
    """The SQL, parameters, value lists and files of each question (no native copies: file
    paths, relative to the datastack, stand in the SQL)."""
    client = tablekit.Client(LocalBackend(path, native_cache=False))
    root = str(pathlib.Path(path).resolve())
    got = {}
    for name, q in QUESTIONS.items():
        f, options = q(client, v)
        plan = json.loads(f.explain(**options))
        got[name] = {
            k: json.loads(json.dumps(plan[k]).replace(root, "$DATASTACK"))
            for k in ("sql", "parameters", "value_lists", "files", "columns")
        }
    _check("local_sql", got)


def test_cave_requests(path, client, v, tmp_path):
    """The requests each question sends once metadata is cached (its second run)."""
    rec = Recorder(create_app(path))
    with serve_asgi(rec) as url:
        http = tablekit.connect(client.datastack, server=url, cache_dir=str(tmp_path), progress=False)
        got = {}
        for name, q in QUESTIONS.items():
            f, options = q(http, v)
            f.query(**options)
            start = len(rec.log)
            f.query(**options)
            # as a set: pages and the counts that prove a limited answer go out concurrently, so
            # their order on the wire varies from run to run
            got[name] = sorted(
                (
                    {
                        "method": r["method"],
                        "path": r["path"],
                        "query": [list(p) for p in r["query"]],
                        "body": json.loads(r["body"]) if r["body"] else None,
                    }
                    for r in rec.log[start:]
                ),
                key=lambda r: json.dumps(r, sort_keys=True),
            )
    _check("cave_requests", got)
