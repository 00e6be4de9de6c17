"""Quick start: query the embedded demo datastack, with static types from the generated stubs.

Run it::

    python examples/quickstart.py

Type-check it (pyproject.toml sets ``stubPath``/``mypy_path`` to ``stubs/``, which holds the stubs
``tablekit stubs demo --out stubs`` wrote)::

    pyright examples/quickstart.py
    mypy examples/quickstart.py

A typo in a table or column name, a string where a number belongs, or a forgotten timestamp in
``live_query`` is then reported before anything runs.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

import tablekit

if TYPE_CHECKING:
    from tablekit_stubs import demo  # pyright: ignore[reportMissingModuleSource]


def main() -> None:
    """Connect, filter a few tables, print what comes back."""
    client = tablekit.connect()  # the demo datastack, built on first use
    tables = cast("demo.Tables", client.tables)  # the stubs of this datastack describe its tables
    views = cast("demo.Views", client.views)
    print(f"{client.datastack} version {client.version}: {', '.join(tables.names())}")

    nuclei = tables.nucleus_detection_v0(volume={">": 500, "<": 750}, pt_root_id={"!=": 0})
    df = nuclei.query(select_columns=["id", "volume", "pt_root_id", "pt_position"], limit=5)
    print(df)

    root = int(df["pt_root_id"].iloc[0])
    inputs = tables["synapses_pni_2"](post_pt_root_id=root, size={">=": 50}).query(
        select_columns=["id", "pre_pt_root_id", "size"], split_positions=True
    )
    print(f"{len(inputs)} synapses of size >= 50 onto {root}")

    excitatory = tables.aibs_metamodel_celltypes_v661(
        classification_system="excitatory_neuron",
        cell_type={"regex": "^5P"},
        pt_position_bbox=[[100_000, 100_000, 15_000], [300_000, 300_000, 25_000]],
    ).query(output="arrow")
    print(f"{excitatory.num_rows} layer-5 excitatory cells in the box (an Arrow table)")

    singles = views.single_neurons(pt_root_id=[root]).query()
    print(f"{root} {'is' if len(singles) else 'is not'} a single-soma neuron")

    week_later = client.timestamp + dt.timedelta(days=7)
    live = tables.nucleus_detection_v0(id=int(df["id"].iloc[0])).live_query(week_later)
    print(
        f"a week after version {client.version} nucleus {int(live['id'].iloc[0])} has root {int(live['pt_root_id'].iloc[0])}"
    )


if __name__ == "__main__":
    main()
