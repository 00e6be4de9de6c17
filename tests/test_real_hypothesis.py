"""Hypothesis-random filters (issue 13 §2): tablekit HTTP → the *real* MaterializationEngine
(tests/_real_server.py) == tablekit's local engine on the same datastack, row for row and type for
type (``_assert_same`` of tests/test_real_server.py: floats exactly after float32 rounding).

The strategy draws a table of the demo datastack and one to three filters over its real columns,
with values taken from the table's own rows (so most questions have answers): root ids (==, in,
not in, !=), floats (==, in, not in, ranges with every bound kind), strings (==, in, not in,
regex), booleans, integers (ids, ``valid_id``), position boxes; then ``select_columns``,
``desired_resolution`` (native, nm, a fractional ratio, microns) and ``split_positions``. Every
synapse question also gets a window of at most 1200 ids, so no answer needs more than three pages
of the server's QUERY_LIMIT_SIZE (500). Derandomized with a fixed number of examples, so CI sees
the same questions every run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tablekit

pytest.importorskip("_real_server", reason="the real-server harness (tests/_real_server.py) is absent")
_assert_same = getattr(pytest.importorskip("test_real_server"), "_assert_same", None)
if _assert_same is None:
    pytest.skip("test_real_server has no _assert_same", allow_module_level=True)

pytestmark = [
    pytest.mark.realserver,
    pytest.mark.filterwarnings("ignore:the server sent no column 'created'"),
]

SYN, NUC, COL, CT = (
    "synapses_pni_2",
    "nucleus_detection_v0",
    "allen_v1_column_types_slanted",
    "aibs_metamodel_celltypes_v661",
)
PROOF = "proofreading_status_and_strategy"
#: column → kind, per table (``created`` is left out: a frozen merged table has none, a 500)
COLUMNS: dict[str, dict[str, str]] = {
    SYN: {"pre_pt_root_id": "root", "post_pt_root_id": "root", "size": "float", "id": "int",
          "post_pt_position": "position", "ctr_pt_position": "position"},
    NUC: {"pt_root_id": "root", "volume": "float", "id": "int", "pt_position": "position",
          "bb_start_position": "position"},
    COL: {"cell_type": "string", "classification_system": "string", "pt_root_id": "root",
          "pt_position": "position"},
    PROOF: {"status_axon": "bool", "status_dendrite": "bool", "strategy_axon": "string",
            "valid_id": "int", "pt_root_id": "root"},
    CT: {"cell_type": "string", "volume": "float", "pt_root_id": "root", "pt_position": "position"},
}  # fmt: skip
RESOLUTIONS = [None, [1, 1, 1], [4, 4, 40], [8, 8, 40], [1000, 1000, 1000]]
SYN_WINDOW = 1200
EXAMPLES = 120


@pytest.fixture(scope="module")
def real(real_server, tmp_path_factory) -> tablekit.Client:
    return tablekit.connect(
        real_server.datastack, server=real_server.url, cache_dir=tmp_path_factory.mktemp("rh"), progress=False
    )


@pytest.fixture(scope="module")
def frames(client) -> dict[str, pd.DataFrame]:
    """Each table's rows (the local engine's), to draw filter values from."""
    return {
        t: client.query_table(t, metadata=False).sort_values("id").reset_index(drop=True) for t in COLUMNS
    }


def _present(df: pd.DataFrame, col: str) -> list[Any]:
    s = df[col].dropna()
    if df[col].dtype == np.float64:
        s = s[np.isfinite(s)]
    return s.tolist()


@st.composite
def _filter(draw, df: pd.DataFrame, col: str, kind: str) -> tuple[str, Any]:
    vals = _present(df, col)
    pick = st.sampled_from(vals)
    if kind == "position":
        pts = np.stack(df[col].dropna().to_numpy())
        lo_q = draw(st.floats(0.0, 0.6))
        hi_q = draw(st.floats(lo_q + 0.1, 1.0))
        lo = [int(np.quantile(pts[:, a], lo_q)) for a in range(3)]
        hi = [int(np.quantile(pts[:, a], hi_q)) for a in range(3)]
        return f"{col}_bbox", [lo, hi]
    if kind == "bool":
        return col, draw(st.booleans())
    ops = {
        "root": ["==", "in", "not in", "!="],
        "float": ["==", "in", "not in", "range"],
        "int": ["==", "in", "range"],
        "string": ["==", "in", "not in", "regex"],
    }[kind]
    op = draw(st.sampled_from(ops))
    if kind in ("root", "int") and op != "range":
        vals = [int(x) for x in vals]
        pick = st.sampled_from(vals)
    if op == "==":
        return col, draw(pick)
    if op == "!=":
        return col, {"!=": draw(pick)}
    if op in ("in", "not in"):
        xs = draw(st.lists(pick, min_size=1, max_size=6, unique=True))
        return col, (xs if op == "in" else {"not in": xs})
    if op == "regex":
        s = draw(pick)
        return col, {"regex": "^" + s[: draw(st.integers(1, max(1, len(s))))]}
    q = sorted(draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2)))
    lo, hi = (float(np.quantile(vals, x)) for x in q)
    if kind == "int":
        lo, hi = int(lo), int(hi)
    bounds = {}
    if draw(st.booleans()):
        bounds[draw(st.sampled_from([">", ">="]))] = lo
    if draw(st.booleans()) or not bounds:
        bounds[draw(st.sampled_from(["<", "<="]))] = hi
    return col, bounds


@st.composite
def questions(draw, frames: dict[str, pd.DataFrame]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    table = draw(st.sampled_from(sorted(COLUMNS)))
    df = frames[table]
    cols = draw(st.lists(st.sampled_from(sorted(COLUMNS[table])), min_size=1, max_size=3, unique=True))
    filters: dict[str, Any] = {}
    for col in cols:
        key, value = draw(_filter(df, col, COLUMNS[table][col]))
        filters[key] = value
    if table == SYN:  # at most SYN_WINDOW rows: a few pages of the server's 500
        ids = df["id"].to_numpy()
        start = draw(st.integers(0, len(ids) - SYN_WINDOW))
        width = draw(st.integers(1, SYN_WINDOW))
        window = {">=": int(ids[start]), "<": int(ids[min(start + width, len(ids) - 1)])}
        filters["id"] = {**window, **filters["id"]} if isinstance(filters.get("id"), dict) else window
    kw: dict[str, Any] = {"split_positions": draw(st.booleans())}
    res = draw(st.sampled_from(RESOLUTIONS))
    if res is not None:
        kw["desired_resolution"] = res
    if draw(st.booleans()):
        every = [c for c in df.columns if c != "created" and not c.endswith("_ref")]
        kw["select_columns"] = draw(st.lists(st.sampled_from(every), min_size=1, max_size=4, unique=True))
    return table, filters, kw


def test_random_filters_real_server_equals_local(real, client, frames):
    seen: list[tuple[str, int]] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(questions(frames))
    def check(q):
        table, filters, kw = q
        want = client.tables[table](**filters).query(metadata=False, **kw)
        got = real.tables[table](**filters).query(metadata=False, **kw)
        _assert_same(got, want, f"{table}({filters}).query({kw})")
        seen.append((table, len(want)))

    check()
    assert len(seen) >= EXAMPLES // 2
    assert sum(n > 0 for _t, n in seen) >= len(seen) // 3, seen  # most questions have answers
