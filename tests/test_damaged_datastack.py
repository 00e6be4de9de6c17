"""Damaged datastack directories give a DatastackError naming the file and the fix, never wrong rows.

Each test copies the generated demo datastack (the session's ``path`` fixture, built by
``tablekit.datastack.sample``) to ``tmp_path``, damages the copy in one way, and asserts the error class
and that its message names the file, the table, the column or the value. ``tablekit serve`` over
a damaged copy answers an error too.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
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


@pytest.fixture(scope="module")
def multipart(tmp_path_factory) -> Path:
    """A small demo datastack whose tables have several part files (1,000-row files)."""
    from tablekit.datastack import parts
    from tablekit.datastack.sample import build_sample

    mp = pytest.MonkeyPatch()
    mp.setattr(parts, "ROW_GROUP_ROWS", 500)
    mp.setattr(parts, "FILE_ROWS", 1000)
    try:
        return build_sample(tmp_path_factory.mktemp("multipart") / "demo", synapses=5000, seed=3)
    finally:
        mp.undo()


def _copy(path: str | Path, tmp_path: Path) -> Path:
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


def test_a_lost_part_file_is_named(multipart, tmp_path, version):
    """A part file that its directory's _checksums.json lists, and that is gone, is named."""
    d = _copy(multipart, tmp_path)
    snap = _snapshot(d, version, SYN)
    assert snap.with_name("part-00002.parquet").exists()
    snap.with_name("part-00002.parquet").unlink()
    with pytest.raises(
        DatastackError, match=re.escape(f"versions/{version}/{SYN}/part-00002.parquet is missing")
    ):
        _query(d, SYN)


def test_a_lost_part_file_without_checksums_is_named(path, tmp_path, version):
    """Without _checksums.json (an older datastack) a gap in the part numbering names the lost part."""
    d = _copy(path, tmp_path)
    snap = _snapshot(d, version, SYN)
    snap.with_name("_checksums.json").unlink()
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
    """Rewrite a Parquet file as another writer would: not through tablekit, so without updating
    the directory's _checksums.json (which is removed, as in a datastack written before them)."""
    pq.write_table(edit(pq.read_table(f)), f)
    f.with_name("_checksums.json").unlink(missing_ok=True)


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
    # the table and column by name, the value and the fix (rematerialize the snapshot)
    assert f"table {NUC!r}, column 'id'" in msg and "materialize" in msg.lower(), msg


def test_an_id_in_two_part_files_is_refused_naming_both(path, tmp_path, version):
    d = _copy(path, tmp_path)
    f = _snapshot(d, version)
    t = pq.read_table(f)
    pq.write_table(t.slice(0, 100), f)
    pq.write_table(t.slice(99), f.with_name("part-00001.parquet"))  # row 99 in both
    f.with_name("_checksums.json").unlink()
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


# --------------------------------------------------------------------------- checksums


def _flip(f: Path, seed: int, n: int = 64) -> int:
    """Invert ``n`` bytes of ``f`` at a seeded position (anywhere: data pages, footer, magic)."""
    data = bytearray(f.read_bytes())
    pos = int(np.random.default_rng(seed).integers(0, len(data) - n))
    for i in range(pos, pos + n):
        data[i] ^= 0xFF
    f.write_bytes(bytes(data))
    return pos


def _oracle(path: str | Path, version: int, table: str = NUC) -> pa.Table:
    """The undamaged snapshot, read with pyarrow (page CRCs verified), in id order."""
    rel = Path("versions") / str(version) / table
    t = pa.concat_tables(
        pq.read_table(f, page_checksum_verification=True)
        for f in sorted((Path(path) / rel).glob("*.parquet"))
    )
    return t.sort_by("id")


def _exact(df: pd.DataFrame, want: pa.Table) -> bool:
    """Every column of the oracle, value for value (nulls included), in the same order."""
    got = pa.Table.from_pandas(df, preserve_index=False)
    return got.num_rows == want.num_rows and all(
        got.column(c).cast(want.column(c).type).equals(want.column(c)) for c in want.column_names
    )


SEEDS = range(12)


@pytest.mark.parametrize("native", [True, False], ids=["native-copy", "parquet"])
def test_flipped_bytes_in_a_snapshot_never_give_wrong_rows(path, tmp_path, version, native, monkeypatch):
    """64 inverted bytes at 12 seeded positions of the nuclei snapshot: every query is refused
    naming the file (no run returns rows, so none returns wrong ones)."""
    monkeypatch.setenv("TABLEKIT_NATIVE_CACHE", "1" if native else "0")
    want = _oracle(path, version)
    outcomes = {"exact": 0, "error": 0, "wrong": 0}
    for seed in SEEDS:
        d = _copy(path, tmp_path / str(seed))
        f = _snapshot(d, version)
        _flip(f, seed)
        try:
            df = tablekit.connect(path=d).tables[NUC]().query(split_positions=True, metadata=False)
        except DatastackError as e:
            assert str(f.relative_to(d)) in str(e) and "Fix:" in str(e), str(e)
            outcomes["error"] += 1
        else:
            outcomes["exact" if _exact(df, want) else "wrong"] += 1
    assert outcomes == {"exact": 0, "error": len(SEEDS), "wrong": 0}


@pytest.mark.parametrize("rel", [f"tables/{NUC}/annotations", "segmentation/history"])
def test_flipped_bytes_in_a_history_are_refused(path, tmp_path, rel):
    """Live queries read the annotation and segmentation histories: damage there is refused too."""
    for seed in range(4):
        d = _copy(path, tmp_path / str(seed))
        f = d / rel / "part-00000.parquet"
        _flip(f, seed)
        with pytest.raises(DatastackError, match=re.escape(f"{rel}/part-00000.parquet is damaged")):
            _query(d, live=True)


def test_pyarrow_readers_see_the_page_checksums(path, tmp_path, version):
    """The files carry Parquet page CRCs: pyarrow with page_checksum_verification refuses a
    flipped data page (DuckDB does not check them, hence the whole-file CRC)."""
    d = _copy(path, tmp_path)
    f = _snapshot(d, version, SYN)
    _flip(f, 0, n=8)  # near the start: the first data page
    data = f.read_bytes()
    assert data[:4] == b"PAR1"
    with pytest.raises(OSError, match="CRC"):
        pq.read_table(f, page_checksum_verification=True)


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda f: f.write_bytes(f.read_bytes()[:-100]), "bytes, "),
        (lambda f: f.write_bytes(f.read_bytes() + b"\0" * 8), "bytes, "),
        (lambda f: f.with_name("_checksums.json").write_text("{"), "_checksums.json cannot be read"),
        (lambda f: shutil.copy(f, f.with_name("part-00009.parquet")), "part-00009.parquet is not listed"),
    ],
    ids=["truncated", "appended", "manifest-not-json", "unlisted-part"],
)
def test_damage_the_checksums_see(path, tmp_path, version, damage, named):
    d = _copy(path, tmp_path)
    damage(_snapshot(d, version))
    with pytest.raises(DatastackError, match=re.escape(named)):
        _query(d)


def test_every_file_tablekit_writes_is_listed_with_its_checksum(path):
    """Every Parquet file of a datastack written by tablekit (sample → write_annotations,
    write_segmentation_history, materialize) is in its directory's _checksums.json."""
    import zlib

    files = sorted(Path(path).rglob("*.parquet"))
    assert files
    for f in files:
        record = json.loads((f.parent / "_checksums.json").read_text())["files"][f.name]
        assert record["bytes"] == f.stat().st_size
        assert record["crc32"] == f"{zlib.crc32(f.read_bytes()):08x}"
        assert record["rows"] == pq.ParquetFile(f).metadata.num_rows


def test_build_datastack_writes_checksums(tmp_path):
    from tablekit.datastack import TableSource, build_datastack

    df = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "pt_position": [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
            "pt_supervoxel_id": [11, 12, 13],
            "pt_root_id": [21, 22, 23],
            "volume": [1.0, 2.0, 3.0],
        }
    )
    d = build_datastack(tmp_path / "own", [TableSource("nuclei", "nucleus_detection", df)], name="own")
    dirs = {f.parent for f in d.rglob("*.parquet")}
    assert dirs and all((p / "_checksums.json").is_file() for p in dirs)
    f = next((d / "versions" / "1" / "nuclei").glob("*.parquet"))
    _flip(f, 1, n=4)
    with pytest.raises(DatastackError, match="is damaged"):
        tablekit.connect(path=d).tables.nuclei().query()


def test_a_datastack_without_checksums_still_opens(path, tmp_path, version):
    """A datastack written before checksums (no _checksums.json) opens and answers exactly; its
    files are read unchecked."""
    d = _copy(path, tmp_path)
    for m in d.rglob("_checksums.json"):
        m.unlink()
    df = tablekit.connect(path=d).tables[NUC]().query(split_positions=True, metadata=False)
    assert _exact(df, _oracle(path, version))
    assert len(tablekit.connect(path=d).tables[NUC].get_all_live("now")) > 0


def test_a_damaged_native_copy_is_never_served(path, tmp_path, version, monkeypatch):
    """The native DuckDB copies carry DuckDB's block checksums: a damaged copy is refused (or
    passed over for the Parquet files), never read as data."""
    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "cache"))
    d = _copy(path, tmp_path)
    want = _oracle(path, version)
    client = tablekit.connect(path=d)
    client.tables[NUC]().query(metadata=False)
    copies = sorted(client.backend._native_files.values())
    assert copies
    for c in copies:
        _flip(Path(c), 5, n=4096)
    for _ in range(2):  # a new backend attaching the damaged copy
        try:
            df = tablekit.connect(path=d).tables[NUC]().query(split_positions=True, metadata=False)
        except DatastackError as e:
            assert "native DuckDB copy" in str(e) and "delete" in str(e)
        else:
            assert _exact(df, want)


def test_serve_answers_an_error_for_flipped_bytes(path, tmp_path, version):
    d = _copy(path, tmp_path)
    _flip(_snapshot(d, version), 3)
    with running_server(d) as url:
        m3 = f"{url}/materialize/api/v3/datastack/demo/version/{version}"
        r = requests.post(f"{m3}/table/{NUC}/query", json={}, timeout=60)
        assert r.status_code == 500 and "is damaged" in r.json()["message"]
        r = requests.post(f"{m3}/table/{SYN}/query", json={"limit": 5}, timeout=60)
        assert r.status_code == 200
