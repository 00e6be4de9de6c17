"""Backend capabilities (issue 14): every backend declares what it can do (:class:`Capabilities`)
and the client decides from them, in one place and before any I/O, which live queries it refuses.

Over HTTP the mini datastack (``tests/_mini_datastack.py``: view ``nuclei_large`` live-compatible,
``synapse_out_degree`` not) is served by ``tablekit serve``; a recording wrapper shows which
requests a refused query sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import _mini_datastack as mini
import pytest
from _server import serve_asgi

import tablekit
from tablekit.backends.base import Backend, Capabilities
from tablekit.backends.cave import CaveBackend
from tablekit.errors import UnsupportedError
from tablekit.server import create_app


class Paths:
    """An ASGI wrapper recording each request's path."""

    def __init__(self, app: Any):
        self.app, self.paths = app, []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Any:
    return mini.write_mini_datastack(tmp_path_factory.mktemp("mini") / mini.DATASTACK)


@pytest.fixture(scope="module")
def served(ds) -> Iterator[tuple[str, Paths]]:
    rec = Paths(create_app(ds))
    with serve_asgi(rec) as url:
        yield url, rec


def test_every_backend_declares_its_capabilities(ds, served, tmp_path):
    local = tablekit.connect(path=ds).backend
    cave = tablekit.connect(mini.DATASTACK, server=served[0], cache_dir=tmp_path).backend
    assert isinstance(local, Backend) and isinstance(cave, CaveBackend) and isinstance(cave, Backend)
    assert local.capabilities == Capabilities(live=True, live_views=True, history=True, refresh=True)
    assert cave.capabilities == Capabilities(live=True, live_views=False, history=True, refresh=True)
    with pytest.raises(AttributeError):  # frozen
        cave.capabilities.live = False  # type: ignore[misc]


def test_live_view_queries_are_refused_by_the_client_before_any_request(ds, served, tmp_path):
    url, rec = served
    tk = tablekit.connect(mini.DATASTACK, server=url, cache_dir=tmp_path)
    local = tablekit.connect(path=ds)
    ts = local.get_timestamp(3)
    good, bad = tk.views.nuclei_large, tk.views.synapse_out_degree  # classes built: metadata fetched
    assert (
        local.views.nuclei_large().live_query(ts, allow_missing_lookups=True)["id"].is_monotonic_increasing
    )  # answered locally
    for view, cls, words in (
        ("nuclei_large", good, "the cave backend has no live endpoint for views"),
        ("synapse_out_degree", bad, "is not live-compatible"),
    ):
        rec.paths.clear()
        with pytest.raises(UnsupportedError, match=words) as e:
            cls().live_query(ts)
        assert view in str(e.value) and "materialization version" in str(e.value)
        assert rec.paths == []  # refused before any request
    with pytest.raises(UnsupportedError, match="is not live-compatible"):
        local.views.synapse_out_degree().live_query(ts)
