"""Cleaning for the ``daily_sales`` ingest job that the declarative steps do not cover."""

from __future__ import annotations

import pandas as pd

KNOWN_CURRENCIES = frozenset({"USD", "EUR", "GBP", "CHF", "JPY", "CAD", "AUD"})


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalise currency codes and segments; rows with an unknown currency are rejected.

    Returns ``(clean, rejects)``; ``rejects`` carries a ``reason`` column, so every row that
    leaves here is accounted for.
    """
    currency = frame["currency"].astype("str").str.strip().str.upper()
    known = currency.isin(KNOWN_CURRENCIES)
    if known.all():  # the usual batch: no row to move, so no copies of the frame
        segment = frame["customer_segment"].str.strip().str.lower()
        return frame.assign(currency=currency, customer_segment=segment), frame.iloc[:0]
    rejects = frame[~known].assign(reason="unknown currency " + currency[~known].map(repr))
    clean = frame[known].assign(
        currency=currency[known],
        customer_segment=frame.loc[known, "customer_segment"].str.strip().str.lower(),
    )
    return clean, rejects
