"""Lakes written by MaterializationEngine's own export functions, read by tablekit (issue 18).

The service's ``workflows/deltalake_export.py`` runs in its own venv against the real-server
fixture's frozen database (tests/realserver_delta_export.py); tablekit reads the lakes with
``connect(path=..., exports=...)`` and must answer as its local engine does over the same
datastack. The service's lakes differ from tablekit's own in ways the reader
absorbs: ``created`` is dropped (null in the answer, with a warning), the positions other than
the spatial lake's stay WKB bytes, integer fields are int32.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("deltalake")

import tablekit

pytestmark = [
    pytest.mark.realserver,
    pytest.mark.filterwarnings("ignore:the Delta Lake export has no column 'created'"),
]

HERE = Path(__file__).resolve().parent
SYN = "synapses_pni_2"


@pytest.fixture(scope="module")
def service_export(real_server, path, tmp_path_factory):
    local = tablekit.connect(path=path)
    out = tmp_path_factory.mktemp("service-exports")
    r = subprocess.run(
        [
            str(real_server.python),
            str(HERE / "realserver_delta_export.py"),
            real_server.pg_uri,
            real_server.datastack,
            str(local.version),
            str(out),
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    return local, out, report


def _compare(got: pd.DataFrame, want: pd.DataFrame) -> None:
    for name in ("created", "created_ref"):
        if name in got.columns:
            assert got[name].isna().all()
            got, want = got.drop(columns=name), want.drop(columns=name)
    assert list(got.columns) == list(want.columns)
    assert (got.dtypes == want.dtypes).all(), (got.dtypes[got.dtypes != want.dtypes], want.dtypes)
    assert len(got) == len(want)
    got, want = got.reset_index(drop=True), want.reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_the_service_lakes_are_its_layout(service_export):
    local, out, report = service_export
    vdir = out / local.datastack / f"v{local.version}"
    lakes = sorted(p.name for p in (vdir / SYN).iterdir())
    assert set(report["tables"][SYN]) == set(lakes)
    assert "id" in lakes and "ctr_pt_position_morton" in lakes
    assert {"pre_pt_root_id", "post_pt_root_id"} <= set(lakes), lakes
    import deltalake
    import pyarrow as pa

    # the service decodes only its spatial lake's position; the others stay WKB bytes
    for lake in lakes:
        schema = pa.schema(deltalake.DeltaTable(str(vdir / SYN / lake)).schema().to_arrow())
        assert schema.field("ctr_pt_position_x").type == pa.int32()
        assert pa.types.is_binary(schema.field("pre_pt_position").type) or pa.types.is_large_binary(
            schema.field("pre_pt_position").type
        ), schema
        assert "pre_pt_position_x" not in schema.names and "created" not in schema.names


def test_tablekit_reads_the_service_lakes(service_export, path):
    local, out, report = service_export
    delta = tablekit.connect(path=path, exports=str(out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for table in report["tables"]:
            got = delta.tables[table]().query(split_positions=True)
            assert tablekit.provenance(got)["request"]["answered_by"] == "delta", table
            _compare(got, local.tables[table]().query(split_positions=True))
        raw = local.tables[SYN]().query(split_positions=True)
        root = int(raw["post_pt_root_id"].value_counts().index[0])
        got = delta.tables[SYN](post_pt_root_id=root).query(
            split_positions=True, desired_resolution=[1, 1, 1]
        )
        lake = tablekit.provenance(got)["request"]["lakes"][SYN]
        assert lake["lake"] == "post_pt_root_id" and lake["files_read"] < lake["files_total"], lake
        _compare(
            got,
            local.tables[SYN](post_pt_root_id=root).query(split_positions=True, desired_resolution=[1, 1, 1]),
        )
        x = raw["ctr_pt_position_x"]
        box = [[int(x.quantile(0.2)), 0, 0], [int(x.quantile(0.3)), 10**7, 10**6]]
        got = delta.tables[SYN](ctr_pt_position_bbox=box).query()
        assert tablekit.provenance(got)["request"]["lakes"][SYN]["lake"] == "ctr_pt_position_morton"
        _compare(got, local.tables[SYN](ctr_pt_position_bbox=box).query())
        box = [[int(raw["pre_pt_position_x"].quantile(0.5)), 0, 0], [10**7, 10**7, 10**6]]
        _compare(
            delta.tables[SYN](pre_pt_position_bbox=box).query(),
            local.tables[SYN](pre_pt_position_bbox=box).query(),
        )
        for view in report["views"]:
            _compare(delta.views[view]().query(), local.views[view]().query())
