"""``client.tables`` and ``client.views``: lazy namespaces of filter classes.

A class is built the first time its table is touched; listing, ``in``, ``len`` and ``find`` only
need the table names. Every table is reachable as ``ns[name]``; a table whose name is not a
usable attribute (a Python keyword, a name starting with ``_``, or one of the namespace's own
members such as ``find``) is reachable only that way, and ``dir()`` leaves it out.
"""

from __future__ import annotations

import difflib
import html
import keyword
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from typing_extensions import Never, Self

from ._values import short
from .errors import QueryError, UnknownTableError
from .filters import TableFilter

__all__ = ["Tables", "Views", "namespace_attribute"]

_N = TypeVar("_N")

_MEMBERS = frozenset({"find", "names", "get", "items", "keys", "values"})


class _Namespace:
    """The shared behaviour of :class:`Tables` and :class:`Views`."""

    _kind = "table"

    def __init__(
        self, names: list[str], build: Callable[[str], type[TableFilter]], describe: Callable[[str], str]
    ):
        self._names = sorted(names)
        self._build = build
        self._describe = describe
        self._classes: dict[str, type[TableFilter]] = {}

    # -- access
    def __getitem__(self, name: str) -> type[TableFilter]:
        if name not in self:
            raise self._unknown(name)
        cls = self._classes.get(name)
        if cls is None:
            cls = self._classes[name] = self._build(name)
        return cls

    def __getattr__(self, name: str) -> type[TableFilter]:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def get(self, name: str, default: Any = None) -> Any:
        """The filter class of ``name``, or ``default`` if there is no such {kind}."""
        return self[name] if name in self else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._names

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def names(self) -> list[str]:
        """All names, sorted."""
        return list(self._names)

    def find(self, text: str) -> list[str]:
        """Names containing ``text`` (case-insensitive), sorted."""
        if not isinstance(text, str):
            raise QueryError(
                f"find() searches the {self._kind} names for a text, got {short(text)} ({type(text).__name__}); "
                f"pass a str, e.g. client.{self._kind}s.find('syn')"
            )
        t = text.lower()
        return [n for n in self._names if t in n.lower()]

    # -- discovery
    @staticmethod
    def _attr_ok(name: str) -> bool:
        return (
            name.isidentifier()
            and not keyword.iskeyword(name)
            and not name.startswith("_")
            and name not in _MEMBERS
        )

    def __dir__(self) -> list[str]:
        return sorted(
            {*(n for n in self._names if self._attr_ok(n)), *_MEMBERS} - {"items", "keys", "values"}
        )

    def _ipython_key_completions_(self) -> list[str]:
        return list(self._names)

    def _unknown(self, name: Any) -> UnknownTableError:
        if not isinstance(name, str):
            return UnknownTableError(
                f"a {self._kind} name is a str, got {short(name)} ({type(name).__name__}); list the "
                f"{self._kind}s with list(client.{self._kind}s) or search with client.{self._kind}s.find('...')"
            )
        close = difflib.get_close_matches(name, self._names, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        return UnknownTableError(
            f"no {self._kind} named {short(name)} in this datastack version.{hint} "
            f"{len(self._names)} {self._kind}s available; list them with list(client.{self._kind}s) "
            f"or search with client.{self._kind}s.find('...')"
        )

    def __repr__(self) -> str:
        shown = ", ".join(self._names[:20]) + (", …" if len(self._names) > 20 else "")
        return f"<{len(self._names)} {self._kind}s: {shown}>"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(n)}</code></td><td>{html.escape(self._describe(n))}</td></tr>"
            for n in self._names
        )
        return (
            f"<table><thead><tr><th>{self._kind}</th><th>description</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )


class Tables(_Namespace):
    """The tables of a datastack version: ``tables.<name>(filters).query()`` or ``tables["name"]``."""

    _kind = "table"


class Views(_Namespace):
    """The views of a datastack version: ``views.<name>(filters).query()`` or ``views["name"]``."""

    _kind = "view"


class namespace_attribute(Generic[_N]):
    """A read-only attribute computed on access, like ``property``, for ``Client.tables``/``views``.

    Use it as a decorator in place of ``@property``. It is not a ``property`` on purpose: for a
    property, jedi (IPython's completer) reads the getter's return annotation instead of running
    it, so ``client.tables.<TAB>`` would offer the methods of :class:`Tables` but no table names
    (CAVEclient's T13); IPython's own evaluator refuses properties too. Both run other
    descriptors, see the real namespace, and complete from its ``__dir__`` and
    ``_ipython_key_completions_``. Type checkers see the getter's return type.
    """

    def __init__(self, fget: Callable[[Any], _N]) -> None:
        self.fget = fget
        self.__doc__ = fget.__doc__
        self.__name__: str = fget.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _N: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> _N | Self:
        if obj is None:
            return self
        return self.fget(obj)

    def __set__(self, obj: object, value: Never) -> Never:
        raise AttributeError(f"{self.__name__} is read-only")
