"""Fakes shared by the producer's tests."""

from __future__ import annotations

from producer.apps import AppConfig
from producer.upstream.wechat import FetchedToken


class RecordingFetcher:
    """Hands out a new token per call and records whether force_refresh was asked."""

    def __init__(self) -> None:
        self.forced: list[bool] = []

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        self.forced.append(force_refresh)
        return FetchedToken(value=f"TOKEN-{len(self.forced):04d}-{'y' * 40}", expires_in_s=7200)
