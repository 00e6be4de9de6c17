"""The cache's place (XDG honoured) and the native copies' budget, which adapts to the free disk."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tablekit._paths import cache_root
from tablekit.backends.local.native import NATIVE_MAX_BUDGET, _prune_native, native_budget


def test_cache_root_follows_tablekit_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TABLEKIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "tablekit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG rule: ignored
    assert cache_root() == tmp_path / "home" / ".cache" / "tablekit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "tablekit"
    monkeypatch.setenv("TABLEKIT_CACHE_DIR", str(tmp_path / "own"))
    assert cache_root() == tmp_path / "own"


def test_the_demo_and_its_native_copies_go_under_xdg_cache_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TABLEKIT_CACHE_DIR"}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    code = textwrap.dedent(
        """
        import tablekit
        c = tablekit.connect()
        print(len(c.tables.nucleus_detection_v0(volume={">": 300}).query()))
        """
    )
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert int(p.stdout) > 0
    root = tmp_path / "xdg" / "tablekit"
    assert any(root.glob("demo-*/datastack.json")) and any(root.glob("native/duckdb-*/*.duckdb"))
    assert not (tmp_path / "home").exists()  # nothing written under $HOME


def test_the_default_budget_is_a_quarter_of_free_plus_used_at_most_50gb(monkeypatch, tmp_path):
    monkeypatch.delenv("TABLEKIT_NATIVE_CACHE_SIZE", raising=False)
    st = os.statvfs(tmp_path)  # the oracle: the file system's free blocks for unprivileged users
    free = st.f_bavail * st.f_frsize
    used = 123_456_789
    want = min(50 * 10**9, (free + used) // 4)
    assert abs(native_budget(tmp_path, used) - want) <= 4 * 2**20  # the disk moves a little between
    assert native_budget(tmp_path, 0, free=8 * 10**9) == 2 * 10**9  # a quota-sized disk: 2 GB
    assert native_budget(tmp_path, 0, free=10**13) == NATIVE_MAX_BUDGET == 50 * 10**9
    monkeypatch.setenv("TABLEKIT_NATIVE_CACHE_SIZE", "1GB")  # the setting wins
    assert native_budget(tmp_path, 0, free=10**13) == 10**9


@pytest.mark.parametrize(
    ("free", "left"), [(2000, ["recent", "in_use"]), (10**6, ["lru", "next", "recent", "in_use"])]
)
def test_pruning_follows_the_free_space(monkeypatch, tmp_path, free, left):
    monkeypatch.delenv("TABLEKIT_NATIVE_CACHE_SIZE", raising=False)
    now = 1_000_000_000.0
    root = tmp_path / "native"
    for name, age in [("lru", 7200), ("next", 5400), ("recent", 3600), ("in_use", 60)]:
        f = root / "duckdb-2.0.1" / f"{name}.duckdb"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x" * 300)
        os.utime(f, (now - age, now - age))
    # 4 x 300 = 1200 used; free 2000: budget (2000 + 1200) / 4 = 800 -> the two least recently used go
    _prune_native(root, keep=set(), now=now, free=free)
    assert sorted(f.stem for f in root.glob("*/*.duckdb")) == sorted(left)
