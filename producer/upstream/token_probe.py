"""Checking a reported token upstream before refreshing it: is it really refused?

A refresh request only says that someone saw a token refused; any consumer can send one
about the current token. Before a request-caused refresh of an access token, the leader
asks upstream with one cheap call made with the token (`GET /cgi-bin/getcallbackip`, on
WeChat's or WeCom's base URL by the app):

- errcode 0: the token works, the report is false (`ProbeVerdict.ACCEPTED`);
- a token errcode (40001/40014/42001, WeCom's 40014/42001/301002): refused (`REFUSED`);
- anything else (no answer, an IP not whitelisted, garbage): `UNKNOWN`, it says nothing
  about the token.

Verdicts are kept per token fingerprint for `ttl_s`, so a flood of reports costs at most
one probe per token per `ttl_s`. Never raises.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from consumer_lib.wire.refresh_request import fingerprint
from producer.apps import AppConfig
from producer.ports import TokenProber
from producer.upstream.errors import TokenCheck, UpstreamError

log = logging.getLogger(__name__)

#: A verdict is reused this long: one probe per token per minute, whatever the flood.
PROBE_TTL_S = 60.0
#: Verdicts kept at most (the oldest go first): one per credential is the usual need.
PROBE_CACHE_ENTRIES = 4096


class ProbeVerdict(enum.StrEnum):
    """What upstream said about a reported token."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNKNOWN = "unknown"


class TokenProbe:
    """Asks upstream whether a token is refused, at most once per token per `ttl_s`."""

    def __init__(
        self,
        prober: TokenProber,
        *,
        clock: Callable[[], float] = time.time,
        ttl_s: float = PROBE_TTL_S,
        max_entries: int = PROBE_CACHE_ENTRIES,
    ) -> None:
        self._prober = prober
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[ProbeVerdict, float]] = OrderedDict()
        #: Upstream calls made (a flood shows here as at most one per token per minute).
        self.probes = 0

    @classmethod
    def of(cls, fetcher: object, *, clock: Callable[[], float], ttl_s: float) -> TokenProbe | None:
        """A probe through `fetcher` if it can check tokens (`TokenProber`), else None."""
        if isinstance(fetcher, TokenProber):
            return cls(fetcher, clock=clock, ttl_s=ttl_s)
        return None

    def check(self, app: AppConfig, token: str) -> ProbeVerdict:
        """The verdict on `token` of `app`: cached when asked within `ttl_s`."""
        sha = fingerprint(token)
        now_s = self._clock()
        with self._lock:
            cached = self._cache.get(sha)
            if cached is not None and 0 <= now_s - cached[1] < self._ttl_s:
                return cached[0]
        verdict = self._ask(app, token)
        with self._lock:
            self._cache[sha] = (verdict, now_s)
            self._cache.move_to_end(sha)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return verdict

    def _ask(self, app: AppConfig, token: str) -> ProbeVerdict:
        self.probes += 1
        try:
            answer = self._prober.check_token(app, token)
        except UpstreamError as exc:
            log.info("%s: token check said nothing about the token: %s", app.app_id, exc)
            return ProbeVerdict.UNKNOWN
        except Exception:  # a port that misbehaves must not stop the refresher
            log.exception("%s: token check failed", app.app_id)
            return ProbeVerdict.UNKNOWN
        if answer is TokenCheck.ACCEPTED:
            return ProbeVerdict.ACCEPTED
        if answer is TokenCheck.REFUSED:
            return ProbeVerdict.REFUSED
        return ProbeVerdict.UNKNOWN
