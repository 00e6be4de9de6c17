"""Checksums of a datastack's Parquet files: written with them, verified before they are read.

Every directory of Parquet part files that tablekit writes (``tables/<t>/annotations``,
``segmentation/history``, ``versions/<v>/<t>``) gets a ``_checksums.json`` next to its parts::

    {"format": "tablekit-checksums", "algorithm": "crc32",
     "files": {"part-00000.parquet": {"bytes": 123456, "crc32": "89abcdef", "rows": 2000}}}

(Parquet readers skip files whose name starts with ``_``.) The files also carry Parquet page
CRCs, which pyarrow verifies with ``page_checksum_verification=True``; DuckDB does not verify
them, and they do not cover the footer (statistics DuckDB skips row groups by), so the engine
checks the CRC-32 of each whole file (zlib, about 2 GB/s) before it first reads it: once per
process and file state (path, size, modification time, inode). A directory without
``_checksums.json`` (written by tablekit 0.1.0 before checksums, or by another writer) is read unchecked.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DatastackError

__all__ = ["MANIFEST", "check_sizes", "expected_rows", "file_record", "listed", "verify", "write_manifest"]

MANIFEST = "_checksums.json"
_FORMAT = "tablekit-checksums"
_CHUNK = 1 << 22

_lock = threading.Lock()
_verified: set[tuple[str, int, int, int]] = set()  # (path, size, mtime_ns, inode) checked this process
_manifests: dict[tuple[str, int, int], dict[str, Any] | None] = {}


def _crc32(path: str | os.PathLike[str]) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def file_record(path: str | os.PathLike[str], rows: int) -> dict[str, Any]:
    """The manifest entry of a file just written: its size, CRC-32 and number of rows."""
    return {"bytes": os.path.getsize(path), "crc32": f"{_crc32(path):08x}", "rows": int(rows)}


def write_manifest(directory: str | os.PathLike[str], records: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``directory/_checksums.json`` for the part files ``records`` (by file name)."""
    doc = {"format": _FORMAT, "algorithm": "crc32", "files": {k: dict(records[k]) for k in sorted(records)}}
    out = Path(directory) / MANIFEST
    tmp = out.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)


def _manifest(directory: str, root: str) -> dict[str, Any] | None:
    """``{file name: record}`` of ``directory``'s manifest, None when it has none."""
    path = os.path.join(directory, MANIFEST)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    key = (path, st.st_size, st.st_mtime_ns)
    with _lock:
        if key in _manifests:
            return _manifests[key]
    rel = os.path.relpath(path, root)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        files = doc["files"] if isinstance(doc, dict) and doc.get("format") == _FORMAT else None
        if not isinstance(files, dict) or not all(
            isinstance(r, dict) and isinstance(r.get("bytes"), int) and isinstance(r.get("crc32"), str)
            for r in files.values()
        ):
            raise ValueError("not a tablekit checksums file")
    except (OSError, ValueError, KeyError) as e:
        raise DatastackError(
            f"{root}: {rel} cannot be read ({e}); it records the checksums of the files next to it. "
            "Fix: restore the datastack from where it came from, or rebuild it"
        ) from e
    with _lock:
        _manifests[key] = files
    return files


def listed(directory: str | os.PathLike[str], root: str) -> list[str] | None:
    """The part files ``directory``'s manifest lists (None: it has no manifest)."""
    files = _manifest(os.fspath(directory), root)
    return None if files is None else sorted(files)


def expected_rows(files: Sequence[str], root: str) -> int | None:
    """The rows the manifests record for ``files`` (None when one has no manifest)."""
    total = 0
    for f in files:
        files_of = _manifest(os.path.dirname(f), root)
        if files_of is None or os.path.basename(f) not in files_of:
            return None
        total += int(files_of[os.path.basename(f)].get("rows", 0))
    return total


def check_sizes(files: Sequence[str], root: str, fix: str) -> None:
    """Compare each file's size with its manifest (a stat, no reading): a truncated or extended
    file is named at once."""
    for f in files:
        files_of = _manifest(os.path.dirname(f), root)
        rec = None if files_of is None else files_of.get(os.path.basename(f))
        if rec is not None:
            _check_size(f, os.stat(f).st_size, rec, root, fix)


def _check_size(f: str, size: int, rec: Mapping[str, Any], root: str, fix: str) -> None:
    if rec["bytes"] != size:
        raise DatastackError(
            f"{root}: {os.path.relpath(f, root)} is damaged: it has {size} bytes, {rec['bytes']} when it "
            f"was written (truncated or overwritten). {fix}"
        )


def verify(files: Sequence[str], root: str, fix: str) -> None:
    """Check each file against its directory's manifest (size, then CRC-32 of the whole file),
    once per process and file state; raise :class:`DatastackError` naming a damaged file.
    Files in a directory without a manifest are not checked."""
    for f in files:
        rel = os.path.relpath(f, root)
        try:
            st = os.stat(f)
        except FileNotFoundError:
            raise DatastackError(f"{root}: {rel} is missing. {fix}") from None
        key = (f, st.st_size, st.st_mtime_ns, st.st_ino)
        with _lock:
            if key in _verified:
                continue
        files_of = _manifest(os.path.dirname(f), root)
        if files_of is not None:
            rec = files_of.get(os.path.basename(f))
            if rec is None:
                raise DatastackError(
                    f"{root}: {rel} is not listed in {os.path.join(os.path.dirname(rel), MANIFEST)}: "
                    f"tablekit did not write it. {fix}"
                )
            _check_size(f, st.st_size, rec, root, fix)
            crc = f"{_crc32(f):08x}"
            if crc != rec["crc32"].lower():
                raise DatastackError(
                    f"{root}: {rel} is damaged: its CRC-32 is {crc}, {rec['crc32']} when it was written "
                    f"(bytes changed on disk or in a copy). {fix}"
                )
        with _lock:
            _verified.add(key)
