"""A datastack's views cannot read files they should not (issue 12, item 6).

A ``views/*.json`` file is SQL that the local engine runs. Two independent defences are tested:

* the view's SQL is checked when the views are read (one SELECT over the datastack's own tables:
  no table functions, file paths, COPY, ATTACH, INSTALL, SET, PRAGMA…) and refused with a
  ``DatastackError`` naming the view and its file;
* every DuckDB connection of the engine is locked down (``enable_external_access=false`` with
  ``allowed_directories`` = the datastack and the native-copy cache, no extension autoload or
  install, ``lock_configuration=true``), so even SQL that passed the check could not read
  ``/etc/hostname``.

``tablekit serve`` over such a directory is asked for its views over HTTP on 127.0.0.1: it
answers with an error and never with the file's content.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import duckdb
import pytest
import requests
from _mini_datastack import write_mini_datastack
from _server import running_server

import tablekit
from tablekit.backends.local import LocalBackend
from tablekit.errors import DatastackError

SECRET_FILE = "/etc/hostname"

ESCAPES = {
    "read_text": f"SELECT content AS c FROM read_text('{SECRET_FILE}')",
    "read_csv": f"SELECT * FROM read_csv('{SECRET_FILE}')",
    "read_blob": f"SELECT * FROM read_blob('{SECRET_FILE}')",
    "read_json": f"SELECT * FROM read_json_auto('{SECRET_FILE}')",
    "read_parquet": "SELECT * FROM read_parquet('/tmp/*.parquet')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "path_as_table": f"SELECT * FROM '{SECRET_FILE}'",
    "scalar_subquery": f"SELECT (SELECT content FROM read_text('{SECRET_FILE}')) AS c, id FROM \"nucleus_detection_v0\"",
    "lateral": f"SELECT n.id FROM \"nucleus_detection_v0\" n, LATERAL read_text('{SECRET_FILE}')",
    "union": f"SELECT id::VARCHAR AS c FROM \"nucleus_detection_v0\" UNION ALL SELECT content FROM read_text('{SECRET_FILE}')",
    "cte": f"WITH s AS (SELECT content FROM read_text('{SECRET_FILE}')) SELECT * FROM s",
    "copy_to": "COPY (SELECT 1) TO '/tmp/tablekit-pwned.csv'",
    "attach": "ATTACH '/tmp/tablekit-pwned.duckdb' AS x",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "set": "SET enable_external_access = true",
    "pragma": "PRAGMA database_list",
    "two_statements": 'SELECT id FROM "nucleus_detection_v0"; SELECT 1',
    "current_setting": "SELECT current_setting('allowed_directories') AS d",
    "settings_table": "SELECT * FROM duckdb_settings()",
    "catalog": "SELECT * FROM system.main.duckdb_tables",
    "describe": 'DESCRIBE "nucleus_detection_v0"',
    "unknown_table": "SELECT * FROM sqlite_master",
    "parameter": 'SELECT * FROM "nucleus_detection_v0" WHERE id = ?',
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_mini_datastack(tmp_path_factory.mktemp("hv") / "mini")


def _with_view(base: Path, tmp: Path, name: str, sql: str) -> Path:
    import shutil

    d = tmp / "ds"
    shutil.copytree(base, d)
    for f in (d / "views").glob("*.json"):
        f.unlink()
    (d / "views" / f"{name}.json").write_text(
        json.dumps({"sql": sql, "description": "", "voxel_resolution": [4, 4, 40], "live_compatible": False})
    )
    return d


@pytest.mark.parametrize("kind", sorted(ESCAPES))
def test_a_view_that_escapes_is_refused_naming_view_and_file(base, tmp_path, kind):
    d = _with_view(base, tmp_path, f"evil_{kind}", ESCAPES[kind])
    client = tablekit.connect(path=d)
    with pytest.raises(DatastackError) as info:
        client.get_views()
    msg = str(info.value)
    assert f"view 'evil_{kind}'" in msg and f"views/evil_{kind}.json" in msg and "Fix:" in msg
    assert client.tables.nucleus_detection_v0().query(limit=1) is not None  # tables still answer
    assert not Path("/tmp/tablekit-pwned.csv").exists() and not Path("/tmp/tablekit-pwned.duckdb").exists()


def test_build_datastack_refuses_an_escaping_view(base, tmp_path):
    import pandas as pd

    df = pd.DataFrame({"id": [1], "cell_type": ["a"], "classification_system": ["s"]})
    df[["pt_position_x", "pt_position_y", "pt_position_z"]] = [[1, 2, 3]]
    df["pt_supervoxel_id"], df["pt_root_id"] = [10], [20]
    src = tablekit.TableSource("cells", "cell_type_local", df)
    for sql in (ESCAPES["read_text"], ESCAPES["copy_to"], ESCAPES["path_as_table"]):
        with pytest.raises(DatastackError, match=r"view 'evil' \(evil\.json\) is refused: .*Fix:"):
            tablekit.build_datastack(tmp_path / "d", [src], name="x", views={"evil": {"sql": sql}})
        assert not (tmp_path / "d").exists()
    ok = tablekit.build_datastack(
        tmp_path / "d", [src], name="x", views={"good": {"sql": 'SELECT id, cell_type FROM "cells"'}}
    )
    assert tablekit.connect(path=ok).views.good().query()["cell_type"].tolist() == ["a"]


def test_the_engine_connection_is_locked_down(base):
    """Even SQL that reached DuckDB could not leave the datastack (the second defence)."""
    b = LocalBackend(base)
    try:
        con = b._con
        for sql in (
            f"SELECT * FROM read_text('{SECRET_FILE}')",
            f"SELECT * FROM read_csv('{SECRET_FILE}')",
            "SELECT * FROM glob('/etc/*')",
            "COPY (SELECT 1) TO '/tmp/tablekit-pwned.csv'",
            "ATTACH '/tmp/tablekit-pwned.duckdb' AS x",
            "INSTALL httpfs",
            "LOAD httpfs",
        ):
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
        for sql in (
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "PRAGMA enable_profiling",
        ):
            with pytest.raises(duckdb.InvalidInputException, match="locked"):
                con.execute(sql)
        # its own files stay readable
        n = con.execute(
            "SELECT count(*) FROM read_parquet(?)",
            [[str(p) for p in (base / "versions" / "3").rglob("*.parquet")]],
        ).fetchone()[0]
        assert n > 0
    finally:
        b.close()
    assert not Path("/tmp/tablekit-pwned.csv").exists()


def test_serve_never_publishes_a_file_a_view_reads(base, tmp_path):
    secret = Path(SECRET_FILE).read_text().strip() if Path(SECRET_FILE).exists() else socket.gethostname()
    d = _with_view(base, tmp_path, "evil", ESCAPES["read_text"])
    with running_server(d) as url:
        m3 = f"{url}/materialize/api/v3/datastack/mini"
        bodies = [
            requests.get(f"{m3}/version/3/views", timeout=30),
            requests.get(f"{m3}/version/3/views/schemas", timeout=30),
            requests.get(f"{m3}/version/3/views/evil/schema", timeout=30),
            requests.post(f"{m3}/version/3/views/evil/query", json={}, timeout=30),
        ]
        for r in bodies:
            assert r.status_code >= 400, (r.url, r.status_code)
            if len(secret) >= 4:
                assert secret not in r.text
        # the tables are still served
        r = requests.post(f"{m3}/version/3/table/nucleus_detection_v0/query", json={}, timeout=30)
        assert r.status_code == 200
