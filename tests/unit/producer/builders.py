"""Builders shared by the tests: the one place a test makes an `AppRefresher`.

Tests call `build_refresher`, never the constructor, so a change in how a refresher is
assembled is made here once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import fakeredis

from consumer_lib.wire.update import TokenKind, TokenUpdate
from producer.apps import AppConfig
from producer.leadership.clock import boottime
from producer.limits.budget import RefreshBudget
from producer.ports import Fetcher, Gate
from producer.refresh.refresher import AppRefresher, RefreshKit
from producer.refresh.sources import CredentialSource
from producer.refresh.timing import RefreshTiming
from producer.store.audit import AuditLog
from producer.store.tokens import TokenStore
from producer.upstream.errors import UpstreamError
from producer.upstream.gate import UpstreamGate
from producer.upstream.token_probe import TokenProbe

#: The producer id of a test's refresher unless the test names another.
TEST_PRODUCER_ID = "prod-test"


def discard(update: TokenUpdate) -> None:
    """A publish for tests that look at Redis or the refresher, not at what is published."""


def build_refresher(
    app: AppConfig,
    *,
    fetcher: Fetcher | None = None,
    source: CredentialSource | None = None,
    store: TokenStore | None = None,
    publish: Callable[[TokenUpdate], None] = discard,
    producer_id: str = TEST_PRODUCER_ID,
    timing: RefreshTiming | None = None,
    gate: Gate | None = None,
    budget: RefreshBudget | None = None,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
    audit: AuditLog | None = None,
    upstream: UpstreamGate | None = None,
    follows_store: bool = True,
    republish_phase_s: float | None = None,
    on_fetch_failed: Callable[[str, TokenKind, UpstreamError], None] | None = None,
    on_refused: Callable[[str, TokenKind, TokenUpdate, float | None], None] | None = None,
    kind: TokenKind = TokenKind.ACCESS_TOKEN,
    probe: TokenProbe | None = None,
    steady: Callable[[], float] = boottime,
) -> AppRefresher:
    """A refresher of `app`'s credential `kind`, fetched through `fetcher` or `source`.

    Test defaults: a store on a fakeredis of its own, a publish that discards, the producer
    id `TEST_PRODUCER_ID`; the other arguments default as `RefreshKit.build`'s and
    `AppRefresher`'s do. Each gets a kit of its own (a producer's credentials share one)."""
    kit = RefreshKit.build(
        store=store if store is not None else TokenStore(fakeredis.FakeRedis()),
        publish=publish,
        producer_id=producer_id,
        timing=timing,
        gate=gate,
        budget=budget,
        clock=clock,
        audit=audit,
        upstream=upstream,
        follows_store=follows_store,
        probe=probe,
        on_fetch_failed=on_fetch_failed,
        on_refused=on_refused,
    )
    return AppRefresher(
        app,
        kit,
        fetcher=fetcher,
        source=source,
        kind=kind,
        republish_phase_s=republish_phase_s,
        rand=rand,
        steady=steady,
    )
