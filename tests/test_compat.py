"""The install bounds are the ones that work (issue 16): tablekit's core tests in fresh virtual
environments, on every Python ``requires-python`` claims that the machine has (pyenv's), with
every dependency at the lower bound ``pyproject.toml`` declares on the oldest Python, and at its
newest release on the others. The oldest set has pandas 2, the newest pandas 3; this process's own
environment (the README's test command) is a third.

The venvs are built once per machine by ``tests/_compat_env.py`` (a minute or two each, from the
package index); the tests then run the installed tablekit (``python -P``: not the checkout's
sources) on :data:`CORE`, the test modules that exercise each dependency: DuckDB and Parquet (the
local engine, live queries, datastacks), pandas and pyarrow conversions (frames), urllib3 (the
CAVE backend, paging, retries), starlette and uvicorn (``tablekit serve``, the ``serve`` extra).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _compat_env import claimed_pythons, compat_python, find_python, lower_bounds
from _interop_env import REPO

pytestmark = pytest.mark.slow

#: test modules run in each environment (each dependency is exercised; ~1-2 min per environment)
CORE = (
    "tests/test_filters.py",
    "tests/test_schema.py",
    "tests/test_frames.py",
    "tests/test_local_engine.py",
    "tests/test_live.py",
    "tests/test_datastack.py",
    "tests/test_server.py",
    "tests/test_cave_backend.py",
    "tests/test_shared_suite.py",
)

OLDEST = claimed_pythons()[0]
ENVIRONMENTS = [("oldest", OLDEST)] + [("newest", v) for v in claimed_pythons()[1:]]


def test_the_lower_bounds_are_exact_versions():
    """Every dependency has a ``>=`` lower bound to pin (``name==bound`` must name a release)."""
    pins = lower_bounds()
    assert pins and all("==" in p for p in pins)
    names = {p.split("==")[0].lower() for p in pins}
    assert {"pandas", "pyarrow", "duckdb", "numpy"} <= names


@pytest.mark.parametrize(
    ("kind", "version"), ENVIRONMENTS, ids=[f"{k}-{v[0]}.{v[1]}" for k, v in ENVIRONMENTS]
)
def test_core_suite_passes(kind, version, tmp_path):
    base = find_python(version)
    if base is None:
        if os.environ.get("CI"):
            pytest.fail(f"Python {version[0]}.{version[1]} is claimed by requires-python but not found")
        pytest.skip(f"no Python {version[0]}.{version[1]} on this machine (pyenv)")
    py = compat_python(base, kind)
    versions = subprocess.run(
        [
            py,
            "-P",
            "-c",
            "import pandas, pyarrow, duckdb, numpy; print(pandas.__version__, "
            "pyarrow.__version__, duckdb.__version__, numpy.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(TABLEKIT_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path / "home"))
    proc = subprocess.run(
        [py, "-P", "-m", "pytest", "-p", "no:cacheprovider", "-x", "-q", *CORE],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1500,
    )
    tail = proc.stdout[-4000:]
    print(f"[compat] {kind} Python {version[0]}.{version[1]}: pandas, pyarrow, duckdb, numpy = {versions}")
    print(tail, file=sys.stderr)
    assert proc.returncode == 0, f"{kind} on Python {version[0]}.{version[1]} ({versions}):\n{tail}"
    # the installed package ran, not the checkout's sources
    where = subprocess.run(
        [py, "-P", "-c", "import tablekit; print(tablekit.__file__)"],
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout
    assert "site-packages" in where, where
