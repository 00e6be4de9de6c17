"""The CAVE HTTP backend (``connect(ds, server=URL)``): a CAVE deployment's materialization API v3.

* :mod:`.backend` — :class:`CaveBackend`: start-up, metadata, queries (paged to complete results);
* :mod:`.cache` — the on-disk metadata cache;
* :mod:`.compile` — queries → requests (pure); :mod:`.decode` — answers → tables (pure);
* :mod:`.pages` — paging over ``id`` ranges; :mod:`.history` — the roots API over the chunkedgraph;
* :mod:`.http` — the session: retries, budgets, body checks, error mapping; :mod:`.transport` — requests,
  responses, urllib3; :mod:`.token` — finding the token, redaction.
"""

from .backend import CaveBackend
from .history import CaveHistory

__all__ = ["CaveBackend", "CaveHistory"]
