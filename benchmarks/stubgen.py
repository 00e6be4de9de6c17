"""Stub generation and type-checking time for a large datastack.

    python benchmarks/stubgen.py [--tables 300] [--repeat 5] [--no-check]

Builds ``--tables`` synthetic TableSpecs from the real CAVE schema documents (every schema type in
turn, every fourth schema with a reference target, plus a view), then:

* times :func:`tablekit.stubgen.render_stub` (median of ``--repeat``; target: under 1 s for 300
  tables; the script exits 1 when it is missed);
* writes the stubs and a usage file that touches a few tables, and times pyright and mypy
  (strict, cold cache) on it, next to the same checkers on an empty file: the difference is what
  the stubs cost a user's type check.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tablekit import stubgen  # noqa: E402
from tablekit.schema import table_spec, view_spec  # noqa: E402

TARGET_SECONDS = 1.0


def synthetic_specs(n: int):
    """``n`` tables over the real schema documents (references merged with a target), one view."""
    docs = json.loads((ROOT / "tablekit" / "_data" / "cave_schemas.json").read_text())
    types = sorted(docs)
    target = table_spec(
        {"table_name": "nuclei_000", "schema_type": "nucleus_detection", "voxel_resolution": [4, 4, 40]}, docs
    )
    tables = [(target, None)]
    for i in range(1, n):
        st = types[i % len(types)]
        meta = {"table_name": f"{st}_{i:03d}", "schema_type": st, "voxel_resolution": [4, 4, 40]}
        spec = table_spec(meta, docs)
        if any(c.name == "target_id" for c in spec.columns):
            spec = table_spec({**meta, "reference_table": target.name}, docs)
            tables.append((spec, target))
        else:
            tables.append((spec, None))
    view = view_spec(
        "single_neurons",
        {
            "id": {"type": "integer"},
            "pt_root_id": {"type": "integer"},
            "pt_position": {"type": "SpatialPoint"},
        },
    )
    return tables, [view]


USAGE = """from typing import TYPE_CHECKING, cast
import tablekit
if TYPE_CHECKING:
    from tablekit_stubs import big  # pyright: ignore[reportMissingModuleSource]
tables = cast("big.Tables", tablekit.connect().tables)
df = tables.nuclei_000(volume={">": 1}, pt_root_id=[1, 2]).query(select_columns=["id", "volume"])
arrow = tables["{second}"]().query(output="arrow", limit=3)
n = len(tables.find("syn"))
"""


def _time(cmd: list[str], cwd: pathlib.Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-check", action="store_true", help="skip the pyright/mypy timings")
    args = ap.parse_args()

    tables, views = synthetic_specs(args.tables)
    times, text = [], ""
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        text = stubgen.render_stub("big", 1, tables, views)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    n_ref = sum(t is not None for _, t in tables)
    print(
        f"render_stub: {len(tables)} tables ({n_ref} merged references) + {len(views)} view → "
        f"{len(text.splitlines()):,} lines, {len(text) / 1e6:.2f} MB in {med * 1000:.0f} ms "
        f"(median of {args.repeat}; target < {TARGET_SECONDS * 1000:.0f} ms)"
    )
    ok = med < TARGET_SECONDS
    if args.no_check:
        return 0 if ok else 1

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        stubgen.write_stubs(work / "stubs", "big", text)
        (work / "use.py").write_text(USAGE.replace("{second}", tables[1][0].name))
        (work / "empty.py").write_text("import tablekit\n")
        (work / "pyrightconfig.json").write_text(
            json.dumps({"stubPath": "stubs", "extraPaths": [str(ROOT)], "pythonVersion": "3.10"})
        )
        (work / "mypy.ini").write_text(
            f"[mypy]\nmypy_path = stubs:{ROOT}\nstrict = True\n[mypy-tablekit.*]\nfollow_imports = silent\n"
        )
        rows = []
        for name, cmd in (
            ("pyright", [sys.executable, "-m", "pyright", "--pythonpath", sys.executable]),
            ("mypy", [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", "/dev/null"]),
        ):
            base, _ = _time([*cmd, "empty.py"], work)
            full, p = _time([*cmd, "use.py"], work)
            errors = p.returncode != 0
            rows.append((name, base, full, errors))
            if errors:
                print(p.stdout[-2000:], p.stderr[-2000:])
                ok = False
        for name, base, full, errors in rows:
            print(
                f"{name:8s} use.py {full:5.1f} s   empty file {base:5.1f} s   stubs cost {full - base:+5.1f} s"
                + ("   ERRORS" if errors else "")
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
