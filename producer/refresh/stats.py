"""Counters of one credential's refresher, for a status page or a test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RefresherStats:
    """What one refresher did; plain counters, read without a lock."""

    fetches: int = 0
    fetch_failures: int = 0
    adopted: int = 0
    store_failures: int = 0
    writes_refused: int = 0
    writes_fenced: int = 0
    requests_received: int = 0
    requests_about_old_tokens: int = 0
    requests_over_budget: int = 0
    #: Reports of the current token that upstream said it accepts (`token_probe`).
    requests_refuted: int = 0
    forced_refreshes: int = 0
    last_error: str | None = None
    #: The held version upstream refused (`token_probe`) while a budget held its refresh
    #: back, and when that refresh is due; None once it is replaced (or never refused).
    refused_version: int | None = None
    refused_refresh_due_at_s: float | None = None
