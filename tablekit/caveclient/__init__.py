"""A drop-in ``CAVEclient`` over tablekit (issue 17): ``from tablekit import CAVEclient``.

``CAVEclient(datastack_name, server_address=None, auth_token=None, version=None, ...)`` takes
CAVEclient 8.2.1's constructor arguments and offers ``materialize``, ``info``, ``chunkedgraph``
and ``schema`` with CAVEclient's method names, signatures, defaults and return shapes. Every
materialization call goes through tablekit's one pipeline (:class:`tablekit.Client`: its filter
classes, ``query_table``/``query_view``/``synapse_query`` and the roots API), so answers are
tablekit's: complete, in ``id`` order, checked before any request.

It works over HTTP (``server_address=``: a CAVE deployment or a ``tablekit serve`` URL) and on a
local datastack (``CAVEclient("demo")`` offline, or ``CAVEclient("/path/to/datastack")``).
The method-by-method map and the rules where behaviour differs are in
``docs/migrating-from-caveclient.md``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..client import Client
from ..errors import DatastackError, UnsupportedError
from .materialize import MaterializeClient
from .services import ChunkedGraphClient, InfoClient, SchemaClient

__all__ = ["CAVEclient", "ChunkedGraphClient", "InfoClient", "MaterializeClient", "SchemaClient"]

#: CAVEclient's default global server, used when ``server_address`` is not given for a datastack
#: that is neither ``demo`` nor a local directory (as CAVEclient does)
DEFAULT_SERVER = "https://global.daf-apis.com"
_DEFAULT_TOKEN_FILE = "~/.cloudvolume/secrets/cave-secret.json"

#: CAVEclient's client attributes that tablekit does not offer, and what to use instead
_OUT_OF_SCOPE = {
    "annotation": "client.annotation (annotation upload) is not offered: use caveclient.CAVEclient",
    "state": "client.state (the neuroglancer state service) is not offered: use caveclient.CAVEclient",
    "skeleton": "client.skeleton (the skeleton service) is not offered: use caveclient.CAVEclient",
    "l2cache": "client.l2cache (the L2 cache) is not offered: use caveclient.CAVEclient",
    "auth": "client.auth (token management) is not offered: pass auth_token= or set CAVE_TOKEN",
}


def _token_from_file(path: str, key: str) -> str:
    p = os.path.expanduser(path)
    try:
        with open(p) as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as e:
        raise DatastackError(
            f"CAVEclient(auth_token_file={path!r}): cannot read it ({e}); fix the file"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get(key), str):
        raise DatastackError(
            f"CAVEclient(auth_token_file={path!r}, auth_token_key={key!r}): the file has no string {key!r}; "
            "pass auth_token= or the key the file uses"
        )
    return str(doc[key])


class CAVEclient:
    """CAVEclient's client over tablekit: ``materialize``, ``info``, ``chunkedgraph``, ``schema``.

    The arguments are CAVEclient 8.2.1's. ``datastack_name`` is required (a global-only client is
    not offered). Without ``server_address`` the datastack ``"demo"`` or a directory path is opened
    locally (offline); any other name goes to CAVEclient's default server, as CAVEclient does.
    ``auth_token`` (else ``auth_token_file``'s ``auth_token_key``, else ``$CAVE_TOKEN`` and
    CAVEclient's secret files), ``max_retries``, ``desired_resolution`` (the default of every
    materialization query) and ``version`` are honoured; ``pool_maxsize``, ``pool_block``,
    ``info_cache`` and ``global_only=True`` cannot be and raise :class:`UnsupportedError`.
    tablekit writes no server-address cache, so ``write_server_cache`` (either value) changes
    nothing; the server-only arguments given for a local datastack raise.
    """

    def __init__(
        self,
        datastack_name: str | None = None,
        server_address: str | None = None,
        auth_token_file: str | None = None,
        auth_token_key: str | None = None,
        auth_token: str | None = None,
        global_only: bool = False,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        desired_resolution: Any = None,
        info_cache: Any = None,
        write_server_cache: bool = True,
        version: int | None = None,
    ) -> None:
        if global_only:
            raise UnsupportedError(
                "CAVEclient(global_only=True): a global-only client (no datastack) is not offered; "
                "pass datastack_name"
            )
        if not datastack_name or not isinstance(datastack_name, str):
            raise DatastackError(
                f"CAVEclient(datastack_name={datastack_name!r}): tablekit needs a datastack name (or a "
                "local datastack directory); CAVEclient() without one is a global-only client, not offered"
            )
        for name, value in (
            ("pool_maxsize", pool_maxsize),
            ("pool_block", pool_block),
            ("info_cache", info_cache),
        ):
            if value is not None:
                raise UnsupportedError(
                    f"CAVEclient({name}={value!r}) cannot be honoured: tablekit's HTTP clients share one "
                    "connection pool and fetch the datastack info themselves; leave it out"
                )
        if not isinstance(write_server_cache, bool):
            raise UnsupportedError(
                f"CAVEclient(write_server_cache={write_server_cache!r}): pass True or False"
            )
        local = server_address is None and (datastack_name == "demo" or os.path.isdir(datastack_name))
        if local:
            given = {
                k: v
                for k, v in (
                    ("auth_token", auth_token),
                    ("auth_token_file", auth_token_file),
                    ("auth_token_key", auth_token_key),
                    ("max_retries", max_retries),
                )
                if v is not None
            }
            if given:
                raise UnsupportedError(
                    f"CAVEclient({datastack_name!r}, {', '.join(f'{k}=...' for k in sorted(given))}): "
                    "a local datastack makes no requests, so these server arguments cannot apply; leave them out"
                )
            from .. import connect

            tk = (
                connect("demo", version=version)
                if datastack_name == "demo"
                else connect(path=datastack_name, version=version)
            )
            self._server: str | None = None
        else:
            token = auth_token
            if token is None and (auth_token_file is not None or auth_token_key is not None):
                token = _token_from_file(auth_token_file or _DEFAULT_TOKEN_FILE, auth_token_key or "token")
            from .. import connect

            self._server = str(server_address or DEFAULT_SERVER).rstrip("/")
            opts: dict[str, Any] = {} if max_retries is None else {"max_retries": max_retries}
            tk = connect(datastack_name, server=self._server, token=token, version=version, **opts)
        self._client: Client = tk
        self._materialize = MaterializeClient(tk, desired_resolution=desired_resolution)
        self._info = InfoClient(tk, self._server)
        self._chunkedgraph = ChunkedGraphClient(tk, self._server)
        self._schema = SchemaClient(tk)
        self._desired_resolution = desired_resolution

    # ------------------------------------------------------------------ CAVEclient's attributes
    @property
    def datastack_name(self) -> str:
        """The datastack's name."""
        return self._client.datastack

    @property
    def server_address(self) -> str | None:
        """The server's address (``None`` for a local datastack)."""
        return self._server

    @property
    def desired_resolution(self) -> Any:
        """The default ``desired_resolution`` of materialization queries (``None``: the tables' own)."""
        return self._desired_resolution

    @property
    def version(self) -> int:
        """The materialization version every query uses unless told otherwise."""
        return self._client.version

    @version.setter
    def version(self, value: int | None) -> None:
        self._client.version = value  # type: ignore[assignment]

    @property
    def timestamp(self) -> Any:
        """The timestamp of :attr:`version`."""
        return self._client.timestamp

    @property
    def materialize(self) -> MaterializeClient:
        """CAVEclient's ``client.materialize``."""
        return self._materialize

    @property
    def info(self) -> InfoClient:
        """CAVEclient's ``client.info``."""
        return self._info

    @property
    def chunkedgraph(self) -> ChunkedGraphClient:
        """CAVEclient's ``client.chunkedgraph`` (the roots, supervoxels and lineage questions)."""
        return self._chunkedgraph

    @property
    def schema(self) -> SchemaClient:
        """CAVEclient's ``client.schema``."""
        return self._schema

    @property
    def tablekit(self) -> Client:
        """The :class:`tablekit.Client` underneath (tablekit's own API)."""
        return self._client

    def __getattr__(self, name: str) -> Any:
        if name in _OUT_OF_SCOPE:
            raise UnsupportedError(_OUT_OF_SCOPE[name])
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __repr__(self) -> str:
        where = self._server or "local"
        return f"CAVEclient<datastack_name={self.datastack_name!r}, version={self.version}, server={where}>"
