"""``tablekit demo``: a short guided run on the demo datastack that prints real query results."""

from __future__ import annotations

import textwrap
import time
from typing import Any


def _show(title: str, code: str, value: Any = None, *, seconds: float | None = None) -> None:
    import pandas as pd

    print(f"\n── {title}")
    print(textwrap.indent(code.strip(), ">>> "))
    if value is None:
        return
    with pd.option_context("display.width", 160, "display.max_columns", 12, "display.max_colwidth", 40):
        text = value.head(8).to_string() if isinstance(value, pd.DataFrame) else str(value)
    print(textwrap.indent(text, "    "))
    if isinstance(value, pd.DataFrame):
        timing = f" in {seconds * 1000:.0f} ms" if seconds is not None else ""
        print(f"    [{len(value):,} rows × {value.shape[1]} columns{timing}]")


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_demo(path: str | None = None) -> None:
    """Connect to the demo datastack (building it on first use) and run a few queries."""
    import tablekit

    t0 = time.perf_counter()
    client = tablekit.connect(path=path)
    print(
        f"Connected to {client.datastack!r} ({client.backend.location}) in {time.perf_counter() - t0:.1f} s"
    )
    versions = client.get_versions_metadata(expired=True)
    _show(
        "versions (the first one has expired)",
        "client.get_versions(expired=True); client.version",
        "\n".join(
            f"v{m['version']}  {m['time_stamp']:%Y-%m-%d %H:%M} UTC  {'valid' if m['valid'] else 'EXPIRED'}"
            for m in versions
        )
        + f"\nclient.version = {client.version}",
    )
    _show("tables", "client.tables", repr(client.tables))
    nuc = client.tables.nucleus_detection_v0
    _show("columns you can filter on", "client.tables.nucleus_detection_v0.fields", nuc.fields)

    df, s = _timed(
        lambda: nuc(volume={">": 500, "<": 750}).query(split_positions=True, desired_resolution=[1, 1, 1])
    )
    _show(
        "nuclei with 500 < volume < 750, positions in nm",
        'client.tables.nucleus_detection_v0(volume={">": 500, "<": 750}).query(\n'
        "    split_positions=True, desired_resolution=[1, 1, 1])",
        df,
        seconds=s,
    )

    syn_table = client.info["synapse_table"]
    posts = client.tables[syn_table]().query(select_columns=["post_pt_root_id"], metadata=False)
    counts = posts["post_pt_root_id"].value_counts()
    root = int(counts.index[counts.index != 0][0])
    syn = client.tables[syn_table]
    df, s = _timed(
        lambda: syn(post_pt_root_id=root).query(select_columns=["id", "pre_pt_root_id", "size"], limit=10)
    )
    _show(
        f"inputs onto the neuron with the most synapses ({counts[root]:,} of them)",
        f'client.tables["{syn_table}"](post_pt_root_id={root}).query(\n'
        '    select_columns=["id", "pre_pt_root_id", "size"], limit=10)',
        df,
        seconds=s,
    )

    df, s = _timed(
        lambda: client.tables.aibs_metamodel_celltypes_v661(cell_type="5P-IT").query(
            select_columns=["id", "pt_root_id", "cell_type", "id_ref"], limit=5
        )
    )
    _show(
        "a reference table, merged with its target (nucleus) table",
        'client.tables.aibs_metamodel_celltypes_v661(cell_type="5P-IT").query(\n'
        '    select_columns=["id", "pt_root_id", "cell_type", "id_ref"], limit=5)',
        df,
        seconds=s,
    )

    if "single_neurons" in client.views:
        df, s = _timed(lambda: client.views.single_neurons().query(limit=5))
        _show("a view", "client.views.single_neurons().query(limit=5)", df, seconds=s)

    _show(
        "the same question through the classic dict API",
        f'client.query_table("{syn_table}", filter_equal_dict={{"post_pt_root_id": {root}}}, limit=3)',
        client.query_table(syn_table, filter_equal_dict={"post_pt_root_id": root}, limit=3),
    )

    try:
        nuc(volume="large")
    except tablekit.TablekitError as e:
        _show("bad input is refused before anything runs", 'nuc(volume="large")', f"{type(e).__name__}: {e}")
    try:
        nuc(pt_rootid=1)
    except tablekit.TablekitError as e:
        _show("unknown columns get suggestions", "nuc(pt_rootid=1)", f"{type(e).__name__}: {e}")
    print("\nMore: help(client.tables.nucleus_detection_v0), README.md")
