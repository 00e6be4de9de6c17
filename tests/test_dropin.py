"""The drop-in ``tablekit.CAVEclient`` (issue 17), in tablekit's own venv: its signatures are
CAVEclient 8.2.1's (written out here from CAVEclient's source, an independent list), the arguments
it cannot honour raise, an unknown one raises, and offline answers equal pandas over the raw data."""

from __future__ import annotations

import datetime as dt
import inspect

import numpy as np
import pandas as pd
import pytest

import tablekit
from tablekit import CAVEclient, UnsupportedError, VersionError

#: CAVEclient 8.2.1's parameters (frameworkclient.CAVEclient.__new__, materializationengine.py)
CAVE_PARAMS = {
    "__init__": "datastack_name server_address auth_token_file auth_token_key auth_token global_only max_retries "
    "pool_maxsize pool_block desired_resolution info_cache write_server_cache version",
    "query_table": "table filter_in_dict filter_out_dict filter_equal_dict filter_greater_dict filter_less_dict "
    "filter_greater_equal_dict filter_less_equal_dict filter_spatial_dict filter_regex_dict select_columns offset "
    "limit datastack_name return_df split_positions materialization_version timestamp metadata merge_reference "
    "desired_resolution get_counts random_sample log_warning",
    "live_live_query": "table timestamp joins filter_in_dict filter_out_dict filter_equal_dict filter_greater_dict "
    "filter_less_dict filter_greater_equal_dict filter_less_equal_dict filter_spatial_dict filter_regex_dict "
    "select_columns offset limit datastack_name split_positions metadata suffixes desired_resolution "
    "allow_missing_lookups allow_invalid_root_ids random_sample log_warning",
    "synapse_query": "pre_ids post_ids bounding_box bounding_box_column timestamp remove_autapses include_zeros "
    "limit offset split_positions desired_resolution materialization_version synapse_table datastack_name metadata",
    "get_table_metadata": "table_name datastack_name version log_warning",
    "get_tables_metadata": "datastack_name version log_warning",
    "get_versions": "datastack_name expired",
    "get_timestamp": "version datastack_name",
    "get_annotation_count": "table_name datastack_name version",
    "get_roots": "supervoxel_ids timestamp stop_layer",
    "get_lineage_graph": "root_id timestamp_past timestamp_future as_nx_graph exclude_links_to_future "
    "exclude_links_to_past",
    "get_datastack_info": "datastack_name use_stored image_mirror",
}


@pytest.fixture(scope="module")
def cc():
    return CAVEclient("demo")


def _params(fn):
    return " ".join(p for p in inspect.signature(fn).parameters if p != "self")


def test_signatures_are_cavecients(cc):
    assert _params(CAVEclient.__init__) == CAVE_PARAMS["__init__"]
    m = cc.materialize
    for name in (
        "query_table",
        "live_live_query",
        "synapse_query",
        "get_table_metadata",
        "get_tables_metadata",
    ):
        assert _params(getattr(m, name)) == CAVE_PARAMS[name], name
    for name in ("get_versions", "get_timestamp", "get_annotation_count"):
        assert _params(getattr(m, name)) == CAVE_PARAMS[name], name
    assert _params(cc.chunkedgraph.get_roots) == CAVE_PARAMS["get_roots"]
    assert _params(cc.chunkedgraph.get_lineage_graph) == CAVE_PARAMS["get_lineage_graph"]
    assert _params(cc.info.get_datastack_info) == CAVE_PARAMS["get_datastack_info"]


def test_accepted_kwargs_and_unknown_ones(cc):
    nuc = cc.materialize.query_table("nucleus_detection_v0", limit=5, log_warning=False, metadata=False)
    assert len(nuc) == 5
    CAVEclient("demo", write_server_cache=False, desired_resolution=[1, 1, 1], version=661)
    with pytest.raises(TypeError):
        cc.materialize.query_table("nucleus_detection_v0", limt=5)
    with pytest.raises(TypeError):
        CAVEclient("demo", servr_address="http://x")
    for bad in ({"pool_maxsize": 4}, {"pool_block": True}, {"info_cache": {}}, {"global_only": True}):
        with pytest.raises(UnsupportedError, match=next(iter(bad))):
            CAVEclient("demo", **bad)
    with pytest.raises(UnsupportedError, match="max_retries"):
        CAVEclient("demo", max_retries=2)  # a local datastack makes no requests
    with pytest.raises(UnsupportedError, match="return_df"):
        cc.materialize.query_table("nucleus_detection_v0", return_df=False)
    with pytest.raises(UnsupportedError, match="post_filter"):
        cc.materialize.live_query("nucleus_detection_v0", dt.datetime.now(dt.timezone.utc), post_filter=False)
    with pytest.raises(UnsupportedError, match="datastack_name"):
        cc.materialize.get_tables(datastack_name="minnie65_public")
    with pytest.raises(UnsupportedError, match="get_tabular_change_log"):
        cc.chunkedgraph.get_tabular_change_log([1])
    with pytest.raises(UnsupportedError, match="ingest_annotation_table"):
        _ = cc.materialize.ingest_annotation_table
    with pytest.raises(UnsupportedError, match=r"client\.annotation"):
        _ = cc.annotation
    assert not hasattr(cc.chunkedgraph, "no_such_method")  # a misspelling is an AttributeError


def test_naive_datetimes_are_refused(cc):
    naive = dt.datetime(2025, 4, 5, 12)
    with pytest.raises(VersionError, match=r"naive|timezone"):
        cc.materialize.live_query("nucleus_detection_v0", naive)
    with pytest.raises(VersionError, match="naive"):
        cc.chunkedgraph.is_latest_roots([1], timestamp=naive)
    with pytest.raises(VersionError, match="naive"):
        cc.chunkedgraph.get_roots([1], timestamp=naive)


def test_offline_answers_against_pandas(cc):
    # the oracle: tablekit's own datastack read by pandas (the Parquet snapshot of the version)
    nuc = cc.materialize.query_table("nucleus_detection_v0", split_positions=True, metadata=False)
    assert nuc["id"].is_monotonic_increasing and len(nuc) == cc.materialize.get_annotation_count(
        "nucleus_detection_v0"
    )
    root = int(nuc["pt_root_id"][nuc["pt_root_id"] != 0].iloc[0])
    big = nuc[nuc["volume"] > 500]
    got = cc.materialize.query_table(
        "nucleus_detection_v0", filter_greater_dict={"volume": 500}, split_positions=True, metadata=False
    )
    pd.testing.assert_frame_equal(got.reset_index(drop=True), big.reset_index(drop=True))
    # chunkedgraph: a root's leaves map back to it now; get_root_id of one of them is it
    cg = cc.chunkedgraph
    if cg.is_latest_roots([root])[0]:
        leaves = cg.get_leaves(root)
        assert leaves.dtype == np.int64 and len(leaves) > 0
        roots = cg.get_roots(leaves)
        assert roots.dtype == np.uint64 and set(roots.tolist()) == {root}
        assert cg.get_root_id(int(leaves[0])) == root
    ts = cg.get_root_timestamps([root])
    assert isinstance(ts, np.ndarray) and ts[0].tzinfo is not None
    info = cc.info.get_datastack_info()
    assert info["synapse_table"] == "synapses_pni_2" and cc.info.viewer_site() is None
    assert list(cc.info.viewer_resolution()) == [4.0, 4.0, 40.0]
    assert isinstance(cc.tablekit, tablekit.Client)
