"""``tablekit serve``'s dependencies are the ``serve`` extra: without starlette/uvicorn the library
works and the server says how to install them. The missing install is simulated in a subprocess
by a meta-path finder that refuses both modules, as an environment without them would."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

import tablekit

BLOCKER = textwrap.dedent(
    """
    import sys

    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("starlette", "uvicorn"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _Blocker())
    """
)


def run_blocked(code: str):
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_without_the_extra_the_library_works_and_serve_names_the_install(path):
    p = run_blocked(
        f"""
        import tablekit
        c = tablekit.connect(path={path!r})
        print(len(c.tables.nucleus_detection_v0(volume={{">": 300}}).query()))
        import starlette
        """
    )
    assert p.returncode == 1 and "No module named 'starlette'" in p.stderr  # the blocker works
    assert int(p.stdout.strip()) > 0  # queries ran without the server's dependencies
    p = run_blocked(
        f"""
        from tablekit.cli import main
        raise SystemExit(main(["serve", {path!r}, "--port", "0"]))
        """
    )
    assert p.returncode == 2, p.stderr
    assert "pip install 'tablekit[serve]'" in p.stderr and "starlette and uvicorn" in p.stderr
    assert "Traceback" not in p.stderr
    p = run_blocked(
        f"""
        from tablekit.server import create_app
        try:
            create_app({path!r})
        except ModuleNotFoundError as e:
            print(e.name, "|", e)
        """
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("starlette |") and "pip install 'tablekit[serve]'" in p.stdout


def test_the_extras_declare_the_server_dependencies():
    import pathlib

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())[
        "project"
    ]

    def names(reqs):
        return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}

    core, extras = names(project["dependencies"]), project["optional-dependencies"]
    assert not core & {"starlette", "uvicorn"}
    assert {"starlette", "uvicorn"} <= names(extras["serve"]) and {"starlette", "uvicorn"} <= names(
        extras["test"]
    )
    # the core's dependencies are what tablekit imports: jsonschema checks custom schema documents
    assert "jsonschema" in core and "from jsonschema" in "".join(
        p.read_text() for p in pathlib.Path(tablekit.__file__).parent.rglob("*.py")
    )
