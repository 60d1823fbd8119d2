"""The one secret masker: :class:`Redactor`, used by logging, stored errors, alerts and ingest.

What it masks, in this order:

1. every known secret of at least :data:`MIN_SECRET_LENGTH` characters, in each form it travels
   in (see :func:`secret_forms`): as written, URL-quoted (``%2B``/``+`` for a space), and
   base64-encoded (standard and URL-safe alphabets, padding optional), longest form first so a
   secret containing another is hidden whole;
2. credential-shaped text even when no secret is known: ``Authorization:`` header values,
   ``Bearer`` tokens, the values of ``token``/``key``/``password``/``secret``/``sig`` query
   parameters, and the password of ``scheme://user:password@host`` URLs.

Invariants: the mask is always :data:`MASK`; a value shorter than :data:`MIN_SECRET_LENGTH` is
never treated as a known secret (it would mask ordinary words); masking is idempotent.
This module imports only the standard library: the daemon loads it at start.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
# header names whose values are never credentials; any other header value a job sends (an ingest's
# ``source.headers``) is treated as a secret wherever it is shown or logged
PLAIN_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "content-type", "user-agent",
                           "cache-control"})
MIN_SECRET_LENGTH = 4  # shorter values are never masked (they would mask ordinary text); one rule everywhere

# (pattern, replacement): credential-shaped text, masked even when it is not a known secret
_PATTERNS = [
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer |basic |token )?)[^\s\"',}]+"), r"\1***"),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1***"),
    (re.compile(r"(?i)([?&;](?:access_token|token|api_key|apikey|key|password|secret|sig|signature)=)[^&\s\"']+"),
     r"\1***"),
    (re.compile(r"(://[^:/@\s]+:)[^@\s/]+(@)"), r"\1***\2"),
]


def secret_forms(secret: str) -> set[str]:
    """The forms ``secret`` can appear in: raw, URL-quoted, base64 (both alphabets, unpadded).

    The unpadded base64 is a prefix of the padded one, so masking it hides either; a secret that
    is only part of a base64 payload (``user:password`` in a Basic header) is not covered here:
    callers that send such a payload register the encoded payload as a secret of its own.
    """
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return set()
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote_plus(secret),
             base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def redact_all(value: Any, redact: Callable[[str], str]) -> Any:
    """``value`` with every string inside it (dict values, list and tuple items, exception text)
    passed through ``redact``; keys and other types are returned as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_all(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(v, redact) for v in value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


class Redactor:
    """Masks known secrets (in all their forms) and credential-shaped substrings.

    ``redactor(text)`` and :meth:`redact` mask one string; :meth:`redact_all` masks a nested
    value; :meth:`process` is the structlog processor.  ``secrets`` may be replaced at any time
    (:meth:`set_secrets`, on a config reload): the swap is one attribute store, so a thread
    redacting concurrently sees either the old or the new set, never a mix.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            forms |= secret_forms(secret)
        self._forms = sorted(forms, key=len, reverse=True)

    def redact(self, text: object) -> str:
        """``str(text)`` with every secret form, then every credential-shaped part, masked."""
        out = str(text)
        for form in self._forms:
            if form in out:
                out = out.replace(form, MASK)
        for pattern, replacement in _PATTERNS:
            out = pattern.sub(replacement, out)
        return out

    __call__ = redact

    def redact_all(self, value: Any) -> Any:
        """``value`` with every string inside it masked (see :func:`redact_all`)."""
        return redact_all(value, self.redact)

    def process(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        """structlog processor: every value of the event masked, exception objects included."""
        return {k: redact_all(v, self.redact) for k, v in event.items()}
