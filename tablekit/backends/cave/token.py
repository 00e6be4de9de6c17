"""The CAVE token: where CAVEclient users keep one (:func:`find_token`), a :class:`Token` that never
shows its value, and :func:`redact` for every message that could carry it."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

from ...errors import AuthError

__all__ = ["REDACTED", "SECRETS_DIR", "TOKEN_ENV", "Token", "find_token", "redact", "secret_files"]

TOKEN_ENV = "CAVE_TOKEN"
SECRETS_DIR = Path("~/.cloudvolume/secrets")
REDACTED = "<redacted>"


class Token:
    """A bearer token that never shows its value (``repr``/``str`` name only where it came from)."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str):
        self._value = value
        self.source = source

    def reveal(self) -> str:
        """The token itself, for the Authorization header and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return f"<Token from {self.source}>"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # pickling would write the value somewhere
        raise TypeError("a tablekit Token cannot be pickled")


def secret_files(server: str | None) -> list[Path]:
    """CAVEclient's secret files, in the order it reads them (§1.2 of the protocol notes)."""
    base = SECRETS_DIR.expanduser()
    files = []
    netloc = urlsplit(server).netloc if server else ""
    if netloc:
        files.append(base / f"{netloc}-cave-secret.json")
    files.append(base / "cave-secret.json")
    files.append(base / "chunkedgraph-secret.json")
    return files


def find_token(token: str | Token | None = None, server: str | None = None) -> Token | None:
    """The token to use: ``token``, else ``$CAVE_TOKEN``, else CAVEclient's secret files; ``None`` if none."""
    if isinstance(token, Token):
        return token
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise AuthError(
                "token must be a non-empty string (or None to look in $CAVE_TOKEN and the secret files)"
            )
        return Token(token.strip(), "the token argument")
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return Token(env, f"${TOKEN_ENV}")
    for path in secret_files(server):
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("token")
        except (OSError, ValueError, AttributeError) as e:
            warnings.warn(
                f"tablekit: cannot read the CAVE secret file {path}: {type(e).__name__}", stacklevel=3
            )
            continue
        if isinstance(value, str) and value.strip():
            if path.name == "chunkedgraph-secret.json":
                warnings.warn(
                    f"tablekit: using the deprecated secret file {path}; move the token to "
                    f"{path.with_name('cave-secret.json')}",
                    DeprecationWarning,
                    stacklevel=3,
                )
            return Token(value.strip(), str(path))
    return None


def redact(text: str, token: Token | None) -> str:
    """``text`` with the token's value replaced by ``<redacted>``, whatever the token's length, as
    written and URL-encoded (a login redirect echoes it in a query string)."""
    if token is None or not text:
        return text
    value = token.reveal()
    if not value:
        return text
    for form in sorted({value, quote(value, safe=""), quote_plus(value, safe="")}, key=len, reverse=True):
        if form in text:
            text = text.replace(form, REDACTED)
    return text
