"""Correct use of the demo stubs: pyright and mypy (strict) must report nothing here.

Type-checked only (tests/test_typing.py), never run.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import pyarrow as pa
from typing_extensions import assert_type

import tablekit

if TYPE_CHECKING:
    from tablekit_stubs import demo  # pyright: ignore[reportMissingModuleSource]

client = tablekit.connect()
tables = cast("demo.Tables", client.tables)
views = cast("demo.Views", client.views)
when = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)

# every value form of design.md §3, per column kind
nuc = tables.nucleus_detection_v0
f = nuc(
    id=[255120, 301044],
    created={">=": when, "<": "2025-06-01T00:00:00+00:00"},
    volume={">": 500, "<=": 750.5},
    pt_root_id={"not in": [0]},
    pt_supervoxel_id={"!=": 0},
    pt_position_bbox=[[100_000, 100_000, 15_000], [200_000, 200_000, 20_000]],
)
nuc(pt_root_id=np.array([1, 2, 3]), bb_start_position_bbox=((0, 0, 0), (1.5, 1, 1)))
nuc(id={1, 2}, volume=[1.0, 2.0], pt_position_bbox=np.zeros((2, 3)))
nuc(pt_root_id=pd.Series([1, 2]))
syn = tables["synapses_pni_2"]
s = syn(pre_pt_root_id=864691135000000001, size={">": 100}, post_pt_root_id={"in": [1, 2]})
ct = tables.aibs_metamodel_celltypes_v661(
    cell_type={"regex": "^5P"}, classification_system="excitatory_neuron"
)
ct2 = tables.aibs_metamodel_celltypes_v661(id_ref=[1], target_id={">": 3}, cell_type=["5P-IT", "6P-CT"])
pr = tables.proofreading_status_and_strategy(status_axon=True, strategy_dendrite={"!=": "none"})
sn = views.single_neurons(pt_root_id=[1, 2], pt_position_bbox=[[0, 0, 0], [10, 10, 10]])

# results: DataFrame by default, Arrow on request; live queries need a timestamp
assert_type(f.query(), pd.DataFrame)
assert_type(f.query(output="pandas", limit=10, offset=5), pd.DataFrame)
assert_type(f.query(output="arrow"), pa.Table)
assert_type(
    s.query(select_columns=["id", "pre_pt_root_id", "pre_pt_position"], split_positions=True),
    pd.DataFrame,
)
assert_type(f.live_query(when), pd.DataFrame)
assert_type(f.live_query("now", output="arrow", select_columns=["id"]), pa.Table)
assert_type(f.query(timestamp=when, desired_resolution=[1, 1, 1]), pd.DataFrame)
assert_type(nuc.get_all(limit=3), pd.DataFrame)
assert_type(nuc.get_all_live(when, output="arrow"), pa.Table)
assert_type(ct.query(materialization_version=943, get_counts=True), pd.DataFrame)
assert_type(sn.query(random_sample=10, metadata=False), pd.DataFrame)
text: str = pr.explain()
given: dict[str, object] = ct2.filters

# class members
names: tuple[str, ...] = nuc.fields + nuc.numeric_fields + nuc.spatial_fields
table_name: str = nuc.table_name
assert_type(tables["nucleus_detection_v0"], type[demo.Tables.nucleus_detection_v0])
assert_type(views["single_neurons"], type[demo.Views.single_neurons])
is_filter: tablekit.TableFilter = f

# the namespaces
found: list[str] = tables.find("syn") + tables.names() + views.names()
n: int = len(tables)
has: bool = "synapses_pni_2" in tables
for name in tables:
    cls = tables.get(name)
    if cls is not None:
        fields: tuple[str, ...] = cls.fields
