"""The local engine (``connect(path=...)``): DuckDB over a datastack directory.

* :mod:`.backend` — :class:`LocalBackend`: metadata, planning, reading, views, errors;
* :mod:`.native` — native DuckDB copies of Parquet file sets: layouts, keys, pruning the cache;
* :mod:`.sql` — queries → DuckDB SQL (pure);
* :mod:`.lockdown` — the DuckDB lock-down for view SQL;
* :mod:`.history` — the segmentation history (roots API).
"""

from .backend import LocalBackend
from .history import History

__all__ = ["History", "LocalBackend"]
