"""Virtual environments that prove the install bounds ``pyproject.toml`` claims.

:func:`compat_python` creates (once per machine and set of requirements) and returns the Python of
a virtual environment built from a given base Python (pyenv's, found by :func:`find_python`) with
tablekit installed from this repository and either

* ``"oldest"``: every dependency pinned to the lower bound ``pyproject.toml`` declares
  (:func:`lower_bounds`: ``name>=X`` becomes ``name==X``), or
* ``"newest"``: the newest release of every dependency the index has;

plus pytest, requests and hypothesis (the test suite's own needs). The venvs live under
``$TABLEKIT_COMPAT_DIR`` (default ``<repo>/.venv-compat``); each is rebuilt when its stamp (the
base Python, the requirements) changes, and tablekit is reinstalled whenever its sources change
(as ``tests/_interop_env.py`` does for the CAVEclient venv). A lock file serialises builders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _interop_env import REPO, locked, python_of, tablekit_hash

__all__ = ["TEST_REQUIREMENTS", "claimed_pythons", "compat_python", "find_python", "lower_bounds"]

#: what the suite itself needs besides tablekit (at their lower bounds in the "oldest" venv)
TEST_REQUIREMENTS = ("pytest", "requests", "hypothesis")
#: extras the compat runs install with tablekit (when pyproject.toml declares them)
EXTRAS = ("serve",)


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirements(extra_names: tuple[str, ...] = EXTRAS) -> list[str]:
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for name in extra_names:
        reqs += project.get("optional-dependencies", {}).get(name, [])
    return reqs


_BOUND = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)\s*(;.*)?$")


def lower_bounds() -> list[str]:
    """Every dependency (and :data:`TEST_REQUIREMENTS`, with those of the ``test`` extra) as
    ``name==lower bound``. A dependency without a plain ``>=`` lower bound is an error: the bounds
    are what this proves."""
    pins = []
    test = {
        re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower(): r
        for r in _pyproject()["project"].get("optional-dependencies", {}).get("test", [])
    }
    for req in [*_requirements(), *(test.get(n, n) for n in TEST_REQUIREMENTS)]:
        m = _BOUND.match(req)
        if m is None:
            raise ValueError(f"pyproject.toml: {req!r} has no plain '>=' lower bound to test")
        name, _extras, version, marker = m.groups()
        pins.append(f"{name}=={version}{marker or ''}")
    return pins


def claimed_pythons() -> list[tuple[int, int]]:
    """The minor Pythons 3.x ``requires-python`` (``>=3.N``) admits, up to 3.13."""
    spec = _pyproject()["project"]["requires-python"]
    m = re.fullmatch(r"\s*>=\s*3\.(\d+)\s*", spec)
    if m is None:
        raise ValueError(f"requires-python {spec!r}: only '>=3.N' is understood here")
    return [(3, n) for n in range(int(m.group(1)), 14)]


def find_python(version: tuple[int, int]) -> str | None:
    """A ``python3.N`` executable: pyenv's newest 3.N, else one on ``PATH``."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    want = f"{version[0]}.{version[1]}"
    found = sorted(
        (p for p in root.glob(f"{want}.*") if re.fullmatch(rf"{re.escape(want)}\.\d+", p.name)),
        key=lambda p: int(p.name.rsplit(".", 1)[1]),
    )
    if found:
        return str(found[-1] / "bin" / "python3")
    return shutil.which(f"python{want}")


def _say(msg: str) -> None:
    print(f"[compat venv] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str) -> None:
    t0 = time.perf_counter()
    _say(f"{what} …")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    for k in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(k, None)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"compat venv: {what} failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}")
    _say(f"{what}: done in {time.perf_counter() - t0:.0f} s")


def compat_python(base: str, kind: str) -> str:
    """Create or reuse the ``kind`` (``"oldest"`` or ``"newest"``) venv on the ``base`` Python and
    return its ``python``."""
    if kind not in ("oldest", "newest"):
        raise ValueError(f"kind must be 'oldest' or 'newest', got {kind!r}")
    ver = subprocess.run(
        [base, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    root = Path(os.environ.get("TABLEKIT_COMPAT_DIR") or REPO / ".venv-compat").expanduser().resolve()
    venv = root / f"{kind}-{ver}"
    reqs = lower_bounds() if kind == "oldest" else [*_requirements(), *TEST_REQUIREMENTS]
    want = {"base": os.path.realpath(base), "requirements": reqs}
    with locked(root / f"{venv.name}.lock"):
        py = python_of(venv)
        stamp = venv / "tablekit-compat-stamp.json"
        try:
            have = json.loads(stamp.read_text())
        except (OSError, ValueError):
            have = None
        if have != want or not py.exists():
            if venv.exists():
                shutil.rmtree(venv)
            _run([base, "-m", "venv", str(venv)], f"creating {venv}")
            _run([str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], "upgrading pip")
            pip = [str(py), "-m", "pip", "install", "--quiet"]
            _run([*pip, *reqs], f"installing the {kind} requirements on Python {ver}")
            (venv / "tablekit-compat-src.sha256").unlink(missing_ok=True)
            stamp.write_text(json.dumps(want))
        src = venv / "tablekit-compat-src.sha256"
        digest = tablekit_hash()[0]
        if not src.exists() or src.read_text() != digest:
            # --no-deps: the requirements above are exactly what this venv is meant to hold
            _run(
                [str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(REPO)],
                f"installing tablekit from the repository on Python {ver}",
            )
            _run([str(py), "-m", "pip", "check"], "checking the installed requirements agree (pip check)")
            src.write_text(digest)
        return str(py)
