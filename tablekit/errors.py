"""tablekit's errors.

Every error tablekit raises derives from :class:`TablekitError`. Leaves also derive from the
builtin a Python user would expect, so ``except ValueError`` keeps working::

    TablekitError
    ├── SchemaError(ValueError)            a schema document or table metadata cannot be read
    ├── FilterError                        a filter given to a table is wrong
    │   ├── UnknownColumnError(FilterError, TypeError)     no such column (suggests close matches)
    │   ├── FilterValueError(FilterError, ValueError)      value of the wrong type, NaN, bad bbox …
    │   └── OperatorError(FilterError, ValueError)         operator the column kind does not allow
    ├── UnknownTableError(TablekitError, KeyError, AttributeError)   no such table or view
    ├── QueryError(ValueError)             query options that cannot be honoured (bad limit, column …)
    │   └── UnknownArgumentError(QueryError, TypeError)    an argument the method does not take (suggests close matches)
    ├── VersionError(ValueError)           unknown or expired materialization version, bad timestamp
    ├── UnsupportedError(NotImplementedError)   the backend cannot answer this kind of query
    ├── DatastackError(ValueError)         a datastack directory or build input is malformed
    └── HTTPError                          a CAVE server could not answer (status, URL, server message)
        ├── ConnectionFailedError(HTTPError, ConnectionError)   no connection, after retries
        ├── RequestTimeoutError(HTTPError, TimeoutError)        no answer within the timeout
        ├── AuthError(HTTPError, PermissionError)               401/403: no/invalid token, permission, terms of service
        ├── RateLimitError(HTTPError)                           429 still, after the retries
        ├── ServerError(HTTPError)                              any other error status, with the server's message
        └── IncompleteResultError(HTTPError)                    a result cut at the server's row limit that cannot be completed

Messages always name the table, the column and the offending value, and end with what to do.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConnectionFailedError",
    "DatastackError",
    "FilterError",
    "FilterValueError",
    "HTTPError",
    "IncompleteResultError",
    "OperatorError",
    "QueryError",
    "RateLimitError",
    "RequestTimeoutError",
    "SchemaError",
    "ServerError",
    "TablekitError",
    "UnknownArgumentError",
    "UnknownColumnError",
    "UnknownTableError",
    "UnsupportedError",
    "VersionError",
]


class TablekitError(Exception):
    """Base class of every error raised by tablekit."""


class SchemaError(TablekitError, ValueError):
    """A schema document or table metadata could not be interpreted."""


class FilterError(TablekitError):
    """A filter passed to a table class is invalid. Raised before any request is sent."""

    def __init__(self, message: str, *, table: str | None = None, column: str | None = None):
        super().__init__(message)
        self.table = table
        self.column = column


class UnknownColumnError(FilterError, TypeError):
    """A filter names a column the table does not have."""


class FilterValueError(FilterError, ValueError):
    """A filter value has the wrong type or shape for its column."""


class OperatorError(FilterError, ValueError):
    """A filter uses an operator the column's kind does not support."""


class UnknownTableError(TablekitError, KeyError, AttributeError):
    """No table or view of that name exists in this datastack version."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class QueryError(TablekitError, ValueError):
    """Query options that cannot be honoured (bad limit, unknown select column, …)."""


class UnknownArgumentError(QueryError, TypeError):
    """A method was given an argument it does not take (a misspelt ``limit=`` or
    ``filter_in_dict=``, a filter passed by position); the message suggests the close matches."""


class VersionError(TablekitError, ValueError):
    """Unknown or expired materialization version, or an unusable timestamp."""


class UnsupportedError(TablekitError, NotImplementedError):
    """The backend cannot answer this kind of query; the message says what to do instead."""


class DatastackError(TablekitError, ValueError):
    """A datastack directory, or the input to build one, is malformed."""


class HTTPError(TablekitError):
    """A CAVE server could not answer a request.

    ``status`` is the HTTP status (``None`` when no response arrived), ``url`` the request URL
    (never with a token in it), ``method`` the HTTP method, ``message`` the server's own message
    (the ``message`` field of its JSON error body) and ``code`` its error code (``missing_tos``,
    ``invalid_token`` …) when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str | None = None,
        method: str | None = None,
        server_message: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.url = url
        self.method = method
        self.message = server_message
        self.code = code


class ConnectionFailedError(HTTPError, ConnectionError):
    """The server could not be reached (connection refused, DNS, reset), after the retries."""


class RequestTimeoutError(HTTPError, TimeoutError):
    """The server did not answer within the timeout."""


class AuthError(HTTPError, PermissionError):
    """401/403: no token, an invalid or expired token, a missing permission or unaccepted terms of service."""


class RateLimitError(HTTPError):
    """429: the server's rate limit still refused the request after the retries."""


class ServerError(HTTPError):
    """Any other error status; the message carries the server's own message."""


class IncompleteResultError(HTTPError):
    """A result was cut at the server's row limit and tablekit could not complete it."""


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame outside tablekit (the
    user's line), however deep inside tablekit it is raised."""
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level
