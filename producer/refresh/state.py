"""What one credential's refresher knows: the state of one credential, in one slotted object.

Everything here is this credential's own: the token held and the last few before it, a
token not yet in Redis, when to fetch again, the backoff, the reports and operator requests
waiting for the next step, counters. The parts that act on it (`store_sync`, `fetching`,
`request_policy`, `operator`, `publishing`) are shared by every credential of a producer
and are handed the state explicitly; `AppRefresher` (a `CredentialState` with a step)
orchestrates them.

Slots, not a dict: an instance dict took about 0.8 KiB (45 MiB at 30,000 credentials).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from consumer_lib.wire.update import TokenKind, TokenUpdate
from producer.apps import AppConfig, TokenApi
from producer.leadership.clock import JumpProofDeadline
from producer.refresh.operator import OperatorBox
from producer.refresh.reports import RECENT_TOKENS, ReportBox, fingerprint_digest
from producer.refresh.request_policy import RequestAudit
from producer.refresh.sources import CredentialSource
from producer.refresh.stats import RefresherStats
from producer.refresh.timing import RefreshTiming, Retries
from producer.store.audit import AuditRecord

#: A WeCom credential is asked for again this long after its expiry (plus the answer lag).
WECOM_AFTER_EXPIRY_S = 0.02


class CredentialState:
    """One credential (an app's access token or one of its tickets) and what is known of it."""

    __slots__ = (
        "_deadline",
        "answer_lag_s",
        "app",
        "foreign_logged",
        "held",
        "kind",
        "last_publish_s",
        "last_version",
        "operator",
        "recent",
        "replace_reason",
        "reports",
        "republish_at",
        "republish_phase_s",
        "request_audit",
        "retried_on_request_at",
        "retries",
        "retry_at",
        "retry_wanted",
        "source",
        "stats",
        "step_lock",
        "store_probed_at",
        "store_reachable",
        "taken_version",
        "timing",
        "unsaved",
        "unsaved_audit",
        "warned_margin",
    )

    def __init__(
        self,
        app: AppConfig,
        *,
        kind: TokenKind,
        source: CredentialSource,
        timing: RefreshTiming,
        rand: Callable[[], float],
        wall: Callable[[], float],
        steady: Callable[[], float],
        republish_phase_s: float | None,
    ) -> None:
        #: Replaced by a reload when the secret or API changes; read at each fetch.
        self.app = app
        self.kind = kind
        #: What it is fetched from: the one upstream call and what it needs (`sources`).
        self.source = source
        self.timing = timing
        self.republish_phase_s = republish_phase_s
        self.stats = RefresherStats()
        #: Never two steps at once (the scheduler's promise; `observe` and `take_over` skip).
        self.step_lock = threading.Lock()
        #: The newest token known (fetched or adopted).
        self.held: TokenUpdate | None = None
        #: SHA-256 digests of the last `RECENT_TOKENS` tokens held, the current one first.
        self.recent: tuple[bytes, ...] = ()
        #: Issued while Redis was away (or unconfirmed by a replica): written when it is back.
        self.unsaved: TokenUpdate | None = None
        #: The audit entry `unsaved` was issued with, for the write that lands it.
        self.unsaved_audit: AuditRecord | None = None
        self.last_version = 0
        #: A fencing version taken with this step's snapshot read, for its fetch.
        self.taken_version: int | None = None
        #: No fetch before this moment (backoff, rate cap, a dependency not there yet).
        self.retry_at = 0.0
        #: An operator's "try now" (SIGHUP) cuts a failed fetch's backoff short.
        self.retry_wanted = False
        self.retried_on_request_at = -math.inf
        self.republish_at = 0.0
        self.last_publish_s = -math.inf
        self.store_reachable = True
        self.store_probed_at = -math.inf
        self.warned_margin = False
        #: How late upstream may have started a value's life after our request.
        self.answer_lag_s = 0.0
        #: The fingerprint of the last token an ERROR line said someone else had replaced.
        self.foreign_logged: str | None = None
        #: Set by `replace_now`: fetch at the next step, whatever is held.
        self.replace_reason: str | None = None
        self.retries = Retries(timing, rand=rand, app_id=app.app_id)
        self.reports = ReportBox()
        self.operator = OperatorBox()
        #: Request batches summed up for the audit trail; made by the first report.
        self.request_audit: RequestAudit | None = None
        self._deadline = JumpProofDeadline(wall, steady)

    @property
    def key(self) -> tuple[str, TokenKind]:
        """This credential's key in the scheduler: (app id, kind)."""
        return (self.app.app_id, self.kind)

    def holds_valid_at(self, now_s: float) -> bool:
        held = self.held
        return held is not None and held.is_valid_at(now_s)

    def hold(self, update: TokenUpdate) -> None:
        """Make `update` the held token, remembering the fingerprints of the last
        `RECENT_TOKENS` held (what reports may be about)."""
        self.held = update
        digest = fingerprint_digest(update.value)
        if digest not in self.recent:
            self.recent = (digest, *self.recent)[:RECENT_TOKENS]

    def refresh_at(self, held: TokenUpdate) -> float:
        """When to fetch again. WeCom hands out the same value until it has expired (its
        tokens and tickets alike): asking earlier only gets it back, so ask right after the
        expiry, late by as much as upstream may have started its life after our request."""
        if self.app.token_api is TokenApi.WECOM:
            at_s = held.expires_at + self.answer_lag_s + WECOM_AFTER_EXPIRY_S
        else:
            at_s = self.timing.refresh_at(held)
        # Never later than the same moment counted on a clock that does not jump.
        return self._deadline.effective((held.version, held.expires_at), at_s)

    def refresh_due(self, now_s: float) -> bool:
        held = self.held
        return held is None or now_s >= self.refresh_at(held)
