"""A second virtual environment for the CAVEclient interoperability tests.

:func:`interop_python` creates (once) and returns the Python of a virtual environment that holds
``caveclient==8.2.1`` (which pins ``pandas<3``), pytest, and tablekit installed from this
repository (``pip install <repo>``, not editable). It lives at ``$TABLEKIT_INTEROP_VENV`` or
``<repo>/.venv-interop`` and needs only Python + pip and access to PyPI.

* The venv is rebuilt from scratch when :data:`REQUIREMENTS` (or the Python version) change: a
  stamp file inside the venv records what it was built from.
* tablekit is reinstalled (``--no-deps``, or with its dependencies when ``pyproject.toml``
  changed) whenever a file of the package or ``pyproject.toml`` changed: a second stamp holds a
  hash of them. The interop tests therefore always run the current tablekit.
* A lock file serialises concurrent callers (e.g. two pytest processes).

Progress goes to stderr (``pytest -s`` shows it); building takes a minute or two once.

:func:`run_checks` runs one checks module of ``tests/interop/`` under that venv's pytest (a clean
environment, a temporary ``HOME``, a timeout, the output's tail on failure); tests/test_interop.py
and tests/test_real_caveclient.py both use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "REPO",
    "REQUIREMENTS",
    "interop_python",
    "locked",
    "python_of",
    "run_checks",
    "tablekit_hash",
    "venv_dir",
]

REPO = Path(__file__).resolve().parent.parent
#: what the interop venv holds besides tablekit; changing this list rebuilds the venv
REQUIREMENTS = ("caveclient==8.2.1", "pytest>=7.4")
_STAMP = "tablekit-interop-stamp.json"
_TK_STAMP = "tablekit-interop-tablekit.sha256"


def venv_dir() -> Path:
    """Where the interop venv lives: ``$TABLEKIT_INTEROP_VENV`` or ``<repo>/.venv-interop``."""
    return Path(os.environ.get("TABLEKIT_INTEROP_VENV") or REPO / ".venv-interop").expanduser().resolve()


def _say(msg: str) -> None:
    print(f"[interop venv] {msg}", file=sys.stderr, flush=True)


def python_of(venv: Path) -> Path:
    """The ``python`` of a virtual environment."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _want_stamp() -> dict[str, object]:
    return {
        "requirements": list(REQUIREMENTS),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "base": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
    }


def tablekit_hash() -> tuple[str, str]:
    """(hash of the package sources + pyproject, hash of pyproject alone)."""
    h = hashlib.sha256()
    files = sorted(p for p in (REPO / "tablekit").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in [REPO / "pyproject.toml", *files]:
        h.update(str(p.relative_to(REPO)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest(), hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()


def _run(cmd: list[str], what: str) -> None:
    t0 = time.perf_counter()
    _say(f"{what} …")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"interop venv: {what} failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}")
    _say(f"{what}: done in {time.perf_counter() - t0:.0f} s")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (a lock file) for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def interop_python() -> str:
    """Create or reuse the interop venv and return the path of its ``python``."""
    venv = venv_dir()
    with locked(venv.parent / (venv.name + ".lock")):
        py = python_of(venv)
        stamp = venv / _STAMP
        want = _want_stamp()
        try:
            have = json.loads(stamp.read_text())
        except (OSError, ValueError):
            have = None
        if have != want or not py.exists():
            t0 = time.perf_counter()
            if venv.exists():
                import shutil

                _say(f"requirements changed; removing {venv}")
                shutil.rmtree(venv)
            _run([sys.executable, "-m", "venv", str(venv)], f"creating {venv}")
            _run([str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], "upgrading pip")
            _run(
                [str(py), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
                f"installing {' '.join(REQUIREMENTS)}",
            )
            (venv / _TK_STAMP).unlink(missing_ok=True)
            stamp.write_text(json.dumps(want))
            _say(f"venv ready in {time.perf_counter() - t0:.0f} s")
        tk_stamp = venv / _TK_STAMP
        src_hash, pyproject_hash = tablekit_hash()
        try:
            old_src, old_pyproject = tk_stamp.read_text().split()
        except (OSError, ValueError):
            old_src = old_pyproject = ""
        if old_src != src_hash:
            pip = [str(py), "-m", "pip", "install", "--quiet"]
            if old_pyproject != pyproject_hash:  # first install, or the dependencies may have changed
                _run([*pip, str(REPO)], "installing tablekit and its dependencies from the repository")
            # always swap in the current sources (pip may keep an installed copy of the same version)
            _run(
                [*pip, "--no-deps", "--force-reinstall", str(REPO)], "installing tablekit from the repository"
            )
            tk_stamp.write_text(f"{src_hash} {pyproject_hash}")
        return str(py)


INTEROP_DIR = REPO / "tests" / "interop"


def run_checks(checks: str, env: dict[str, str], workdir: Path, *, timeout: float = 900) -> str:
    """Run ``tests/interop/<checks>`` with the interop venv's pytest and return its output.

    The environment is this process's without ``PYTHONPATH``/``PYTHONHOME``/``VIRTUAL_ENV``, plus
    ``env`` and ``HOME=<workdir>/home`` (CAVEclient writes its token and caches under ``HOME``:
    never the user's). Raises ``AssertionError`` with the output's last 12,000 characters when a
    check fails or nothing passed; prints the last 3,000 and the time taken to stderr either way.
    """
    py = interop_python()
    home = Path(workdir) / "home"
    home.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    clean.update(env, HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [py, "-m", "pytest", "-c", str(INTEROP_DIR / "pytest.ini"), str(INTEROP_DIR / checks)],
        cwd=workdir,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    print(proc.stdout[-3000:], file=sys.stderr)
    print(f"[interop] {checks} ran in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if proc.returncode != 0 or " passed" not in proc.stdout or " failed" in proc.stdout:
        raise AssertionError(f"{checks} (exit {proc.returncode}):\n{proc.stdout[-12000:]}")
    return proc.stdout


if __name__ == "__main__":
    print(interop_python())
