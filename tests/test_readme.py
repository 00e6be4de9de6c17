"""Every Python code block of the README runs, in order and in one namespace (as a reader pastes
them into one notebook), on the embedded demo datastack with loopback traffic only. An expression
statement that gives a DataFrame or Arrow table must give rows; a line whose comment says
``# error`` must raise a tablekit error (the README shows a mistake there)."""

from __future__ import annotations

import ast
import pathlib
import re
import socket

import pandas as pd
import pyarrow as pa
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def _rows(value):
    """The row counts of the tables a value shows (a frame, or a tuple holding some)."""
    if isinstance(value, (pd.DataFrame, pa.Table)):
        return [len(value)]
    if isinstance(value, tuple):
        return [n for v in value for n in _rows(v)]
    return []


@pytest.fixture
def loopback_only(monkeypatch):
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"the README's code reached for {address!r}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def test_the_readme_has_python_blocks():
    assert len(python_blocks()) >= 3


def test_every_python_block_runs_and_shows_rows(loopback_only):
    import tablekit

    namespace: dict = {"__name__": "readme"}
    checked = errors = 0
    for i, block in enumerate(python_blocks()):
        lines = block.splitlines()
        for stmt in ast.parse(block).body:
            src = "\n".join(lines[stmt.lineno - 1 : stmt.end_lineno])
            where = f"README python block {i + 1}, line {stmt.lineno}: {src.strip()[:80]}"
            if "# error" in src:
                with pytest.raises(tablekit.TablekitError):
                    exec(compile(src, where, "exec"), namespace)
                errors += 1
                continue
            if isinstance(stmt, ast.Expr):
                value = eval(compile(ast.Expression(stmt.value), where, "eval"), namespace)
                for n in _rows(value):
                    assert n > 0, f"{where}: shows rows and returned none"
                    checked += 1
            else:
                exec(compile(ast.Module([stmt], []), where, "exec"), namespace)
    # the queries shown: 9 in "Using it", 4 in "Versions, time and live queries", 1 in "Delta Lake exports"
    assert checked == 14 and errors == 1, (checked, errors)
