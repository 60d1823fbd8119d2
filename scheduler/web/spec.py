"""A job's spec as YAML for the job page, with every secret masked.

What must hold: no value the config marks secret, no environment value, no request header value
or query parameter text, no notifier or ping URL and no value under a secret-looking key
(``token``, ``password``, ``routing_key``, ...) reaches the page.  Three layers, each enough for
its own case:

1. ``env`` values, request header values (but those of :data:`~scheduler.redaction.PLAIN_HEADERS`)
   and query parameter values (but numbers and booleans) are replaced by the mask whatever they
   hold (jobs pass credentials there);
2. values under secret-looking keys (the loader's own rule, ``SECRET_KEY``) and alert/ping URLs
   (webhook URLs carry tokens in their path) are replaced by the mask;
3. every remaining string goes through the one :class:`~scheduler.redaction.Redactor` (known
   secrets in all their forms, credentials in URLs, ``Authorization`` values).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from scheduler.config.compiled import CompiledJob
from scheduler.redaction import MASK, PLAIN_HEADERS

_URL_HOLDERS = ("on_failure", "on_recovery", "on_success", "ping")
_PLAIN_PARAM = re.compile(r"-?\d+(\.\d+)?|true|false")  # query parameter values shown as they are


def _secret_key(key: str) -> bool:
    from scheduler.config.yamlsrc import SECRET_KEY

    return bool(SECRET_KEY.search(key))


def _prune(value: Any) -> Any:
    """Drop unset values (None, empty lists and mappings) so the YAML shows what is configured."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _mask(value: Any, redact: Callable[[str], str], top: str) -> Any:
    """``value`` (found under the job's top-level key ``top``) with secrets masked."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = str(k)
            if name == "env" and isinstance(v, dict):
                out[k] = {e: MASK for e in v}
            elif name == "headers" and isinstance(v, dict):
                out[k] = {h: (redact(str(hv)) if str(h).lower() in PLAIN_HEADERS else MASK) for h, hv in v.items()}
            elif name == "params" and isinstance(v, dict):
                out[k] = {p: (pv if _PLAIN_PARAM.fullmatch(str(pv)) else MASK) for p, pv in v.items()}
            elif (isinstance(v, str) and _secret_key(name)) or (name == "url" and top in _URL_HOLDERS):
                out[k] = MASK
            else:
                out[k] = _mask(v, redact, top)
        return out
    if isinstance(value, list):
        return [_mask(v, redact, top) for v in value]
    if isinstance(value, str):
        return MASK if top == "ping" else redact(value)  # ``ping: URL``, the short form
    return value


def masked_spec(job: CompiledJob, redact: Callable[[str], str]) -> dict[str, Any]:
    """The job's configured values with secrets masked (see the module docstring)."""
    spec: dict[str, Any] = _prune(json.loads(job.json))
    return {key: _mask({key: value}, redact, key)[key] for key, value in spec.items()}


def spec_yaml(job: CompiledJob, redact: Callable[[str], str]) -> str:
    import yaml

    text: str = yaml.safe_dump(masked_spec(job, redact), sort_keys=False, allow_unicode=True, width=100)
    return text
