"""Operations: health/metrics endpoint, alerts, freshness, backfill and status."""

from __future__ import annotations

from typing import Any


def attach(daemon: Any) -> None:
    """Wire the configured operations features into a daemon before it serves."""
