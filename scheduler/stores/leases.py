"""Run ownership shared by every store: who claimed a run, and for how long the claim holds.

A run row claimed by :meth:`StateStore.start_run` carries ``owner`` (the claiming store's
:func:`new_owner` id) and ``lease_until``.  The owner keeps its runs by calling
``renew_leases(owner, ttl)`` well within ``ttl``; once a lease has run out, ``expire_leases``
(any replica) marks the run ``abandoned`` and ``start_run`` may claim the slot again.

Leases compare timestamps written by different hosts, so the replicas' clocks must agree to well
within the TTL (NTP); :data:`DEFAULT_LEASE_TTL` leaves a minute.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta

DEFAULT_LEASE_TTL = timedelta(seconds=60)


def new_owner() -> str:
    """A replica id unique across hosts and restarts: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def expired_reason(owner: str | None, until: datetime | None) -> str:
    """The one-line error recorded on a run abandoned because its lease ran out."""
    when = until.isoformat() if until is not None else "an unknown time"
    return f"lease of {owner or 'an unknown owner'} expired at {when} (scheduler replica lost)"
