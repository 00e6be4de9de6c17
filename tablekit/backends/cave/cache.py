"""The CAVE backend's on-disk metadata cache: one directory per (server, datastack), one file per
document (datastack record, versions, table metadata and schemas per version), kept ``ttl`` seconds,
written atomically and parsed once per process while unchanged (:class:`DiskCache`); the schema
documents are one per line, parsed when first read (:class:`_Sections`)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..._paths import cache_root

__all__ = ["DEFAULT_TTL", "SCHEMAS_FILE", "VERSIONS_TTL", "DiskCache", "readable"]

DEFAULT_TTL = 12 * 3600.0
#: the schema documents' cache file (one document per line: see :class:`_Sections`)
SCHEMAS_FILE = "schemas.v2.json"
VERSIONS_TTL = 600.0


#: parsed cache files, shared by the clients of this process: ``path → (mtime_ns, size, entry)``
_PARSED: dict[Path, tuple[int, int, Any]] = {}
_PARSED_LOCK = threading.Lock()


def _read_cached(path: Path, parse: Callable[[bytes], tuple[float, Any]]) -> tuple[float, Any]:
    """A cache file's (fetch time, value), parsed with ``parse`` once per process while the file is
    unchanged (treat the value as read-only)."""
    st = os.stat(path)
    with _PARSED_LOCK:
        hit = _PARSED.get(path)
    if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
        return hit[2]
    with open(path, "rb") as f:
        entry = parse(f.read())
    with _PARSED_LOCK:
        _PARSED[path] = (st.st_mtime_ns, st.st_size, entry)
    return entry


def _remember(path: Path, entry: tuple[float, Any]) -> None:
    """A cache file just written: the next client of this process reads it from memory."""
    st = os.stat(path)
    with _PARSED_LOCK:
        _PARSED[path] = (st.st_mtime_ns, st.st_size, entry)


def _parse_json(data: bytes) -> tuple[float, Any]:
    """A cache file of one JSON document ``{"fetched_at": t, "value": v}``."""
    entry = json.loads(data)
    return float(entry["fetched_at"]), entry["value"]


class _Sections(Mapping[str, Any]):
    """A mapping stored one JSON document per line, each parsed when first looked up: a client
    reads the few schema documents its tables use, not all of them (a new process saves about
    0.6 ms on the 57 documents of a datastack)."""

    def __init__(self, names: list[str], lines: list[bytes]):
        if len(names) != len(lines) or len(set(names)) != len(names):
            raise ValueError("a sectioned cache file whose names and lines do not match")
        self._lines = dict(zip(names, lines, strict=True))
        self._parsed: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        try:
            return self._parsed[name]
        except KeyError:
            doc = self._parsed[name] = json.loads(self._lines[name])
            return doc

    def __contains__(self, name: object) -> bool:
        return name in self._lines

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    @staticmethod
    def encode(fetched_at: float, docs: Mapping[str, Any]) -> bytes:
        """A header line (fetch time, names), then each document on its own line."""
        names = list(docs)
        head = json.dumps({"fetched_at": fetched_at, "names": names})
        return "\n".join([head, *(json.dumps(docs[n]) for n in names)]).encode()  # JSON has no raw newline

    @classmethod
    def parse(cls, data: bytes) -> tuple[float, _Sections]:
        """(fetch time, mapping) of what :meth:`encode` wrote; only the header is parsed here."""
        head, *lines = data.split(b"\n")
        meta = json.loads(head)
        return float(meta["fetched_at"]), cls(list(meta["names"]), lines)

    @classmethod
    def read(cls, path: Path) -> tuple[float, _Sections]:
        """:meth:`parse` of the file at ``path``, once per process while it is unchanged."""
        return _read_cached(path, cls.parse)


def readable(docs: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """``{name: docs[name]}`` for the names whose cached document reads; a damaged line of the
    disk cache is left out (and so asked for again)."""
    out = {}
    for n in names:
        try:
            out[n] = docs[n]
        except ValueError:
            pass
    return out


class DiskCache:
    """JSON files under ``{root}/cave/{server}/{datastack}/``, each stamped with its fetch time."""

    def __init__(self, root: str | os.PathLike[str] | bool | None, server: str, datastack: str, ttl: float):
        self.ttl = float(ttl)
        if root is False:
            self.dir = None
            return
        base = Path(root) if isinstance(root, (str, os.PathLike)) and str(root) else cache_root()
        host = "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in server.split("://")[-1])[:60]
        key = hashlib.sha256(server.encode()).hexdigest()[:10]
        name = "".join(ch if ch.isalnum() or ch in ".-_" else "_" for ch in datastack) or "_"
        self.dir = base.expanduser() / "cave" / f"{host}-{key}" / name

    def get(self, name: str, ttl: float | None = None) -> Any:
        """The value :meth:`put` stored; None when absent, expired (``ttl``, at most the cache's)
        or unreadable."""
        return self._get(name, _parse_json, self.ttl if ttl is None else min(ttl, self.ttl))

    def get_sections(self, name: str) -> Mapping[str, Any] | None:
        """A mapping :meth:`put_sections` stored, each entry parsed when looked up; None when absent,
        expired or unreadable."""
        return self._get(name, _Sections.parse, self.ttl)

    def _get(self, name: str, parse: Callable[[bytes], tuple[float, Any]], ttl: float) -> Any:
        if self.dir is None:
            return None
        try:
            fetched_at, value = _read_cached(self.dir / name, parse)
            if time.time() - fetched_at <= ttl:
                return value
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def put(self, name: str, value: Any) -> None:
        self._write(name, json.dumps({"fetched_at": time.time(), "value": value}).encode(), _parse_json)

    def put_sections(self, name: str, docs: Mapping[str, Any]) -> None:
        """Store ``docs`` one per line, for :meth:`get_sections`."""
        self._write(name, _Sections.encode(time.time(), docs), _Sections.parse)

    def _write(self, name: str, data: bytes, parse: Callable[[bytes], tuple[float, Any]]) -> None:
        """Write a cache file whole (readers never see half of one); the next client of this process
        reads it back from memory (``parse`` of what was written, so it shares nothing with the
        caller's objects)."""
        if self.dir is None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.dir / name)
            _remember(self.dir / name, parse(data))
        except OSError as e:  # a cache that cannot be written is only slower
            warnings.warn(f"tablekit: cannot write the metadata cache {self.dir}: {e}", stacklevel=4)

    def clear(self) -> None:
        if self.dir is not None and self.dir.is_dir():
            for p in self.dir.glob("*.json"):
                p.unlink(missing_ok=True)
