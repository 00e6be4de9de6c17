"""Shared fixtures: the real CAVE schema documents, and small specs built from them."""

from __future__ import annotations

import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "cave-schemas"


def _load(name: str) -> dict:
    p = FIXTURES / name
    if not p.exists():  # CI clones main next to shared/; fall back to the bundled copy
        if name == "types_all.json":
            p = ROOT / "tablekit" / "_data" / "cave_schemas.json"
        else:
            pytest.skip(f"fixture {name} not found next to the repository")
    return json.loads(p.read_text())


@pytest.fixture(scope="session", autouse=True)
def _own_cache_dir(tmp_path_factory):
    """Tests never write to the user's cache: the demo datastack, native DuckDB copies and CAVE
    metadata of this session go to a temporary directory (subprocesses inherit it)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TABLEKIT_CACHE_DIR", str(tmp_path_factory.mktemp("tablekit-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def schemas_current() -> dict:
    return _load("types_all.json")


@pytest.fixture(scope="session")
def schemas_old() -> dict:
    return _load("types_all_before_2025-07.json")


@pytest.fixture(scope="session")
def path(tmp_path_factory) -> str:
    """A generated datastack (20k synapses), built once per test session."""
    from tablekit.datastack.sample import build_sample

    return str(build_sample(tmp_path_factory.mktemp("ds") / "demo", synapses=20_000, seed=7))


@pytest.fixture(scope="session")
def real_server(path):
    """The real MaterializationEngine over the session's datastack (``path``), behind one loopback
    address with ``tablekit serve`` (tests/_real_server.py), with QUERY_LIMIT_SIZE = 500 so that
    larger answers are paged. Skips with a one-line reason where it cannot run (no
    ``../shared/peers``, no PostGIS and not root, no Python 3.12)."""
    import _real_server

    reason = _real_server.unavailable()
    if reason:
        pytest.skip(f"real server: {reason}")
    server = _real_server.RealServer(path, query_limit=REAL_SERVER_QUERY_LIMIT)
    yield server
    server.close()


#: the real server's QUERY_LIMIT_SIZE in the tests (small, so that answers are paged)
REAL_SERVER_QUERY_LIMIT = 500


@pytest.fixture(scope="session")
def client(path):
    import tablekit

    return tablekit.connect(path=path)
