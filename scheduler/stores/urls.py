"""Database URLs in messages: the password is a secret, masked as written and percent-decoded."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

_USERINFO_PASSWORD = re.compile(r"^([a-z][a-z0-9+.\-]*://[^:/@]*:)[^@]*(@)", re.I)


def url_secrets(url: str | None) -> set[str]:
    """The password of a database URL, as written and percent-decoded (both must be masked)."""
    if not url:
        return set()
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return {password, unquote(password)} - {""} if password else set()


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    return _USERINFO_PASSWORD.sub(r"\1***\2", url)
