"""Which environment values are secret, and which part of them, so inspect and export never show
them by default.

The rules, applied to every ``NAME=value``:

1. a name that looks secret (``PASSWORD``, ``TOKEN``, …): the whole value;
2. a value that holds URLs (``scheme://…``, several may be separated by spaces, ``,`` or ``;``):
   the password of each URL's user info (``postgres://u:***@db/x``), and the value of each query
   parameter whose name looks secret (``?sslpassword=***``, ``?access_token=***``);
3. a connection name (``*_URL``, ``*_URI``, ``*_DSN``, ``*_CONN*``): also a URL's user when it has no
   password (a token given as the user, ``https://***@host``), and the whole value when it is not a
   URL but a ``key=value`` string with a password (``host=db user=u password=…``,
   ``Server=db;Password=…``).

URLs are read with the standard library's ``urllib.parse``; a value it cannot read is hidden
whole when it could hold credentials, rather than shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote_plus, urlsplit

SECRET_MARKERS = (
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "ACCESS_KEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
)
# Words of a name (split at "_") that make it a connection string.
CONNECTION_WORDS = ("URL", "URLS", "URI", "URIS", "DSN")
CONNECTION_PREFIX = "CONN"  # CONN, CONNECTION, CONNSTR, …
# Keys of a "key=value" connection string that hold a password, beyond the secret-looking names.
_PASSWORD_KEYS = ("PWD",)
MASK = "***"
WHOLE = ""  # the label of a secret that is the whole value

# Where a new URL starts inside a list: after a "," or ";" and before "scheme://". Only splits the
# list; each URL is then read by urlsplit.
_NEXT_URL = re.compile(r"(?<=[,;])(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_SPACES = re.compile(r"(\s+)")
_KEYWORD_SEPARATORS = re.compile(r"[;\s]+")


@dataclass(frozen=True, slots=True)
class Part:
    """A piece of a value: shown as it is, or a secret with a label saying what it is
    (``WHOLE``, ``PASSWORD``, ``USER`` or the query parameter's name)."""

    text: str
    secret: str | None = None


def is_secret_name(name: str) -> bool:
    upper = name.upper().replace("-", "_")
    return any(marker in upper for marker in SECRET_MARKERS)


def is_connection_name(name: str) -> bool:
    words = name.upper().replace("-", "_").split("_")
    return any(w in CONNECTION_WORDS or w.startswith(CONNECTION_PREFIX) for w in words)


def secret_parts(name: str, value: str) -> list[Part]:
    """``value`` cut into the pieces shown and the secret ones, by the rules above."""
    if is_secret_name(name):
        return [Part(value, WHOLE)]
    connection = is_connection_name(name)
    parts = [part for token in _SPACES.split(value) for part in _token_parts(token, connection)]
    if connection and not any(p.secret is not None for p in parts) and _has_keyword_password(value):
        return [Part(value, WHOLE)]
    return parts


def has_secret(parts: Iterable[Part]) -> bool:
    return any(p.secret is not None for p in parts)


def mask_value(name: str, value: str) -> str:
    """``value`` with every secret piece replaced by ``***``."""
    return "".join(MASK if p.secret is not None else p.text for p in secret_parts(name, value))


def mask_env_list(env: Iterable[str]) -> list[str]:
    """``NAME=value`` entries with their secrets masked; an entry without "=" is kept as it is."""
    masked = []
    for entry in env:
        name, sep, value = entry.partition("=")
        masked.append(f"{name}={mask_value(name, value)}" if sep else entry)
    return masked


def _token_parts(token: str, connection: bool) -> Iterator[Part]:
    """The parts of a token without spaces, which may be several URLs joined by "," or ";"."""
    if "://" not in token:
        yield Part(token)
        return
    for piece in _NEXT_URL.split(token):
        yield from _url_parts(piece, connection)


def _url_parts(text: str, connection: bool) -> list[Part]:
    try:
        url = urlsplit(text)
    except ValueError:
        # urlsplit refuses some malformed authorities (an unbalanced "[", say): fail closed.
        return [Part(text, WHOLE)] if "@" in text or connection else [Part(text)]
    start = text.find("://") + 3
    netloc = url.netloc
    if not url.scheme or not netloc or text[start : start + len(netloc)] != netloc:
        return [Part(text, WHOLE)] if "@" in text else [Part(text)]
    rest = text[start + len(netloc) :]
    if "@" not in netloc and "@" in rest and not _port_is_valid(url):
        # "postgres://u:pa/ss@db": a "/", "?" or "#" in the password ended the authority early.
        return [Part(text, WHOLE)]
    parts = [Part(text[:start])]
    userinfo, at, host = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if at and colon and password:
        parts += [Part(f"{user}:"), Part(password, "PASSWORD"), Part(f"@{host}")]
    elif at and not colon and user and connection:
        parts += [Part(user, "USER"), Part(f"@{host}")]
    else:
        parts.append(Part(netloc))
    path, question, after = rest.partition("?")
    parts.append(Part(path + question))
    query, hash_, fragment = after.partition("#")
    for i, item in enumerate(query.split("&") if query else ()):
        key, eq, val = item.partition("=")
        separator = "&" if i else ""
        if eq and val and is_secret_name(unquote_plus(key)):
            parts += [Part(f"{separator}{key}="), Part(val, unquote_plus(key).upper())]
        else:
            parts.append(Part(separator + item))
    parts.append(Part(hash_ + fragment))
    return [p for p in parts if p.text or p.secret is not None]


def _port_is_valid(url: SplitResult) -> bool:
    try:
        url.port  # noqa: B018 - reading it is the check: it raises for "host:notaport"
    except ValueError:
        return False
    return True


def _has_keyword_password(value: str) -> bool:
    """A "key=value" connection string (libpq's, ADO.NET's) with a password among its keys."""
    for item in _KEYWORD_SEPARATORS.split(value):
        key, eq, _ = item.partition("=")
        key = key.strip().upper()
        if eq and (is_secret_name(key) or key in _PASSWORD_KEYS):
            return True
    return False
