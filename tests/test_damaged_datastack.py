"""Damaged datastack directories give a DatastackError naming the file and the fix, never wrong rows.

Each test copies the generated demo datastack (the session's ``path`` fixture, built by
``tablekit.sample``) to ``tmp_path``, damages the copy in one way, and asserts the error class
and that its message names the file, the table, the column or the value. ``tablekit serve`` over
a damaged copy answers an error too.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from _server import running_server

import tablekit
from tablekit.errors import DatastackError

NUC = "nucleus_detection_v0"
SYN = "synapses_pni_2"


@pytest.fixture(scope="module")
def version(path) -> int:
    return tablekit.connect(path=path).version


def _copy(path: str, tmp_path: Path) -> Path:
    dest = tmp_path / "ds"
    shutil.copytree(path, dest)
    return dest


def _snapshot(d: Path, version: int, table: str = NUC) -> Path:
    return d / "versions" / str(version) / table / "part-00000.parquet"


def _query(d: Path, table: str = NUC, live: bool = False):
    client = tablekit.connect(path=d)
    t = client.tables[table]
    return t.get_all_live("now") if live else t().query()


# --------------------------------------------------------------------------- missing files


@pytest.mark.parametrize("live", [False, True], ids=["version", "live"])
@pytest.mark.parametrize("what", ["file", "directory"])
def test_a_missing_snapshot_names_the_file(path, tmp_path, version, what, live):
    """A snapshot file or directory that is gone is an error naming it, not a vanished table."""
    d = _copy(path, tmp_path)
    f = _snapshot(d, version)
    f.unlink() if what == "file" else shutil.rmtree(f.parent)
    client = tablekit.connect(path=d)
    assert NUC in client.tables  # the table is still listed
    with pytest.raises(DatastackError) as e:
        _query(d, live=live)
    msg = str(e.value)
    assert f"versions/{version}/{NUC}/" in msg and NUC in msg and "materialize(" in msg


def test_a_lost_part_file_in_the_middle_is_named(path, tmp_path, version):
    """A gap in the part numbering names the lost part."""
    d = _copy(path, tmp_path)
    snap = _snapshot(d, version, SYN)
    shutil.copy(snap, snap.with_name("part-00002.parquet"))
    with pytest.raises(DatastackError, match=re.escape(f"versions/{version}/{SYN}/part-00001.parquet")):
        _query(d, SYN)


@pytest.mark.parametrize(
    ("rel", "named"),
    [
        (f"tables/{NUC}/annotations", f"tables/{NUC}/annotations/"),
        ("segmentation/history", "segmentation/history/"),
    ],
)
def test_a_missing_history_names_the_directory(path, tmp_path, rel, named):
    """Live queries need the annotation and segmentation histories; their loss is named."""
    d = _copy(path, tmp_path)
    shutil.rmtree(d / rel)
    with pytest.raises(DatastackError, match=re.escape(named)):
        _query(d, live=True)


def test_a_lost_metadata_file_is_named(path, tmp_path):
    """A table directory without its metadata.json is damage: the table is not silently dropped."""
    d = _copy(path, tmp_path)
    (d / "tables" / NUC / "metadata.json").unlink()
    with pytest.raises(DatastackError, match=re.escape(f"tables/{NUC}/metadata.json")):
        _query(d)


# --------------------------------------------------------------------------- JSON files


def _set_last(key: str, value: object) -> Callable[[list, int], None]:
    return lambda versions, v: versions[-1].__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_set_last("time_stamp", "yesterday"), ["version {v}", "'yesterday'", "time_stamp"]),
        (_set_last("time_stamp", None), ["version {v}", "'time_stamp' is null"]),
        (_set_last("time_stamp", 12), ["version {v}", "12 is not"]),
        (_set_last("expires_on", "soon"), ["version {v}", "'soon'", "expires_on"]),
        (lambda vs, v: vs[-1].__setitem__("version", str(v)), ["entry", "'{v}'", "not an integer"]),
        (lambda vs, v: vs.append(None), ["entry", "None is not a version object"]),
        (lambda vs, v: vs.append(dict(vs[-1])), ["version {v} is listed twice"]),
    ],
    ids=["ts-text", "ts-null", "ts-int", "expires-text", "version-str", "null-entry", "twice"],
)
def test_bad_versions_json_names_file_version_and_value(path, tmp_path, version, edit, named):
    d = _copy(path, tmp_path)
    p = d / "versions.json"
    versions = json.loads(p.read_text())
    edit(versions, version)
    p.write_text(json.dumps(versions))
    with pytest.raises(DatastackError) as e:
        _query(d)
    msg = str(e.value)
    assert "versions.json" in msg and "Fix:" in msg
    for part in named:
        assert part.format(v=version) in msg, msg


@pytest.mark.parametrize(
    ("rel", "content"),
    [
        ("datastack.json", "{not json"),
        ("datastack.json", ""),
        ("versions.json", "[{"),
        ("versions.json", ""),
        ("versions.json", '{"versions": 3}'),
        ("schemas.json", "{"),
        ("schemas.json", "[]"),
        ("schemas.json", '{"nucleus_detection": 3}'),
        (f"tables/{NUC}/metadata.json", "{"),
        (f"tables/{NUC}/metadata.json", "[1]"),
    ],
)
def test_malformed_json_files_name_the_file_and_the_fix(path, tmp_path, rel, content):
    d = _copy(path, tmp_path)
    (d / rel).write_text(content)
    with pytest.raises(DatastackError) as e:
        _query(d)
    msg = str(e.value)
    assert rel in msg, msg
    assert re.search(r"fix|rebuild|restore|correct", msg, re.IGNORECASE), msg


# --------------------------------------------------------------------------- damaged Parquet files


@pytest.mark.parametrize("damage", ["zero-byte", "truncated", "not-parquet"])
def test_an_unreadable_snapshot_file_is_named(path, tmp_path, version, damage):
    d = _copy(path, tmp_path)
    f = _snapshot(d, version)
    data = f.read_bytes()
    f.write_bytes(
        {"zero-byte": b"", "truncated": data[: len(data) // 2], "not-parquet": b"PAR1" * 100}[damage]
    )
    with pytest.raises(DatastackError) as e:
        _query(d)
    msg = str(e.value)
    assert f"versions/{version}/{NUC}/part-00000.parquet" in msg and "Fix:" in msg, msg


# --------------------------------------------------------------------------- tablekit serve


def test_serve_answers_an_error_over_a_damaged_datastack(path, tmp_path, version):
    """``tablekit serve`` over a datastack with a lost snapshot answers that table with an error
    naming the file, and keeps serving the other tables."""
    d = _copy(path, tmp_path)
    shutil.rmtree(_snapshot(d, version).parent)
    with running_server(d) as url:
        m3 = f"{url}/materialize/api/v3/datastack/demo/version/{version}"
        r = requests.post(f"{m3}/table/{NUC}/query", json={}, timeout=60)
        assert r.status_code == 500
        assert f"versions/{version}/{NUC}/" in r.json()["message"]
        assert requests.post(f"{m3}/table/{SYN}/query", json={}, timeout=60).status_code == 200


# --------------------------------------------------------------------------- wrong types, duplicate ids


def _rewrite(f: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite a Parquet file as another writer would (not through tablekit)."""
    pq.write_table(edit(pq.read_table(f)), f)


def _retype(column: str, make: Callable[[pa.ChunkedArray], pa.Array]) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.set_column(t.schema.get_field_index(column), column, make(t[column]))


@pytest.mark.parametrize(
    ("column", "make", "found", "want"),
    [
        ("volume", lambda c: pa.array([str(v) for v in c.to_pylist()]), "string", "double"),
        ("id", lambda c: pa.array([str(v) for v in c.to_pylist()]), "string", "int64"),
        ("pt_position_x", lambda c: c.cast(pa.float64()), "double", "int64"),
        ("pt_supervoxel_id", lambda c: c.cast(pa.uint64()), "uint64", "int64"),
        ("created", lambda c: c.cast(pa.timestamp("us")), "timestamp[us]", "timestamp[us, tz=UTC]"),
    ],
)
def test_a_snapshot_column_of_the_wrong_type_is_refused(path, tmp_path, version, column, make, found, want):
    """Refused on first use, naming table, column, file, the found and the format's type — not a
    DuckDB binder error in the middle of a query, and never served."""
    d = _copy(path, tmp_path)
    _rewrite(_snapshot(d, version), _retype(column, make))
    with pytest.raises(DatastackError) as e:
        _query(d)
    msg = str(e.value)
    for part in (NUC, f"column {column!r}", f"versions/{version}/{NUC}/part-00000.parquet", found, want):
        assert part in msg, msg


def test_an_annotation_history_column_of_the_wrong_type_is_refused(path, tmp_path):
    d = _copy(path, tmp_path)
    f = d / "tables" / NUC / "annotations" / "part-00000.parquet"
    _rewrite(f, _retype("deleted", lambda c: c.cast(pa.int64())))
    with pytest.raises(DatastackError, match=r"column 'deleted' has type int64.*timestamp\[us, tz=UTC\]"):
        _query(d, live=True)


def _duplicate_row(i: int) -> Callable[[pa.Table], pa.Table]:
    return lambda t: pa.concat_tables([t, t.slice(i, 1)]).sort_by("id")


@pytest.mark.parametrize("native", [True, False], ids=["native-copy", "parquet"])
def test_duplicate_ids_in_a_snapshot_are_refused(path, tmp_path, version, native, monkeypatch):
    d = _copy(path, tmp_path)
    f = _snapshot(d, version)
    dup = pq.read_table(f, columns=["id"])["id"][7].as_py()
    _rewrite(f, _duplicate_row(7))
    monkeypatch.setenv("TABLEKIT_NATIVE_CACHE", "1" if native else "0")
    with pytest.raises(DatastackError) as e:
        _query(d)
    msg = str(e.value)
    assert f"id {dup} 2 times" in msg and NUC in msg and str(f.relative_to(d)) in msg, msg


def test_an_id_in_two_part_files_is_refused_naming_both(path, tmp_path, version):
    d = _copy(path, tmp_path)
    f = _snapshot(d, version)
    t = pq.read_table(f)
    pq.write_table(t.slice(0, 100), f)
    pq.write_table(t.slice(99), f.with_name("part-00001.parquet"))  # row 99 in both
    with pytest.raises(DatastackError) as e:
        _query(d)
    msg = str(e.value)
    assert f"id {t['id'][99].as_py()} 2 times" in msg
    assert "part-00000.parquet" in msg and "part-00001.parquet" in msg


def test_duplicate_ids_in_an_annotation_history_are_refused(path, tmp_path):
    d = _copy(path, tmp_path)
    f = d / "tables" / NUC / "annotations" / "part-00000.parquet"
    dup = pq.read_table(f, columns=["id"])["id"][3].as_py()
    _rewrite(f, _duplicate_row(3))
    with pytest.raises(DatastackError, match=f"id {dup} 2 times"):
        _query(d, live=True)


def test_serve_refuses_duplicate_ids(path, tmp_path, version):
    d = _copy(path, tmp_path)
    _rewrite(_snapshot(d, version), _duplicate_row(0))
    with running_server(d) as url:
        m3 = f"{url}/materialize/api/v3/datastack/demo/version/{version}"
        r = requests.post(f"{m3}/table/{NUC}/query", json={}, timeout=60)
        assert r.status_code == 500 and "2 times" in r.json()["message"]
