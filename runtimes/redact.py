"""Which environment values are secret, and which part of them, so inspect and export never show
them by default.

The rules, applied to every ``NAME=value``:

1. a name that looks secret (``PASSWORD``, ``TOKEN``, …): the whole value;
2. a value that holds URLs (``scheme://…``, anywhere in it, several at once): the password of each
   URL's user info (``postgres://u:***@db/x``), and the value of each query parameter whose name
   looks secret (``?sslpassword=***``, ``?access_token=***``);
3. a connection name (``*_URL``, ``*_URI``, ``*_DSN``, ``*_CONN*``): also a URL's user when it has no
   password (a token given as the user, ``https://***@host``), and the whole value when it is not a
   URL but a ``key=value`` string with a password (``host=db user=u password=…``,
   ``Server=db;Password=…``).

A password that breaks the URL's syntax (an unencoded ``/``, ``?``, ``#``, ``@`` or space) is still
found: the user info then runs to the URL's last ``@``, so more is hidden rather than some shown.
Only where what precedes that ``@`` reads as a host and port (``http://h:8080/@x``) is it taken for
a path, except under a connection name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from urllib.parse import unquote_plus, urlsplit

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

# Where a URL starts: "scheme://" not inside a longer word. Only finds the starts; each URL's
# authority is then checked with urlsplit.
_URL_START = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://")
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
    starts = [m.start() for m in _URL_START.finditer(value)]
    parts = [Part(value[: starts[0]] if starts else value)]
    for begin, end in pairwise([*starts, len(value)]):
        parts += _url_parts(value[begin:end], connection)
    if connection and not has_secret(parts) and _has_keyword_password(value):
        return [Part(value, WHOLE)]
    return [p for p in parts if p.text or p.secret is not None]


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


def _url_parts(text: str, connection: bool) -> list[Part]:
    """One URL, from its scheme to where the next URL starts (or the value ends)."""
    start = text.index("://") + 3
    body = text[start:]
    authority = _authority(body)
    # The last "@": a password may hold an "@" (or break the syntax), a host never does.
    at = body.rfind("@")
    user, colon, password = body[:at].partition(":") if at >= 0 else ("", "", "")
    # Ambiguous "h:8080/@x" (a port, then an "@" in the path) counts as a password under a
    # connection name only.
    if colon and password and ("@" in authority or connection or not _is_host_port(authority)):
        parts = [Part(text[:start] + user + ":"), Part(password, "PASSWORD")]
    elif at >= 0 and not colon and user and "@" in authority and connection:
        parts = [Part(text[:start]), Part(user, "USER")]
    else:
        return [Part(text[:start]), *_query_parts(body)]
    return [*parts, *_query_parts(body[at:])]


def _authority(body: str) -> str:
    """What RFC 3986 reads as the authority: up to the first "/", "?" or "#" (or a space)."""
    end = len(body)
    for stop in ("/", "?", "#", " ", "\t", "\n"):
        found = body.find(stop)
        if 0 <= found < end:
            end = found
    return body[:end]


def _is_host_port(authority: str) -> bool:
    """Whether ``authority`` (without "@") reads as host[:port]; "u:pa", "h:" or ":1" do not."""
    try:
        url = urlsplit(f"//{authority}")
        url.port  # noqa: B018 - reading it is the check: it raises for "h:pa"
    except ValueError:
        return False
    return bool(url.hostname) and not authority.endswith(":")


def _query_parts(rest: str) -> list[Part]:
    """Host, path and fragment as they are; the values of secret-looking query parameters hidden."""
    path, question, after = rest.partition("?")
    query, hash_, fragment = after.partition("#")
    parts = [Part(path + question)]
    for i, item in enumerate(query.split("&") if query else ()):
        key, eq, val = item.partition("=")
        separator = "&" if i else ""
        if eq and val and is_secret_name(unquote_plus(key)):
            parts += [Part(f"{separator}{key}="), Part(val, unquote_plus(key).upper())]
        else:
            parts.append(Part(separator + item))
    return [*parts, Part(hash_ + fragment)]


def _has_keyword_password(value: str) -> bool:
    """A "key=value" connection string (libpq's, ADO.NET's) with a password among its keys."""
    for item in _KEYWORD_SEPARATORS.split(value):
        key, eq, _ = item.partition("=")
        key = key.strip().upper()
        if eq and (is_secret_name(key) or key in _PASSWORD_KEYS):
            return True
    return False
