"""What a refresher does about refresh requests: check, space, cap, and audit in summary.

Requests (`RefreshRequest`s) are hints anyone holding a consumer's broker credentials can
send, about the current token too (every consumer receives it, so it knows its
fingerprint). The leader therefore acts on a batch of reports of the current access token
like this (`RequestHandling._handle_reports`):

1. Check before refresh (`TokenProbe`): upstream accepts the token → the report is false,
   counted as refuted, the token re-published, nothing refreshed. Upstream refuses it →
   refresh (and if the producer still thought it valid, one ERROR line: something else
   refreshed this app). No verdict (network, IP whitelist, garbage) → as before.
2. A request-caused refresh spends its own budget first (`RefreshBudget.
   try_spend_requested`: 50 a day per app by default, 60 s apart, 31 s for stable apps;
   a classic or WeCom refusal verified upstream skips the spacing, not the cap), then
   WeChat's (`try_spend`).
3. Audit entries of request batches are summed up (`RequestAudit`): at most one
   `refresh_request` (and one `request_over_budget`) entry per credential per minute,
   carrying the counts since the last one; the over-budget warning is logged as seldom.

Ticket reports (a ticket is not revoked by a refresh and has its own upstream limits) skip
the check and the request budget, as before. `AppRefresher.refresh_refused` (a ticket
fetch refused the token: the producer's own verified call) does not come through here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from consumer_lib.wire.kinds import TokenKind
from consumer_lib.wire.refresh_request import RefreshRequest, fingerprint
from consumer_lib.wire.update import TokenUpdate
from producer.apps import AppConfig
from producer.limits.budget import BudgetDecision, RefreshBudget
from producer.refresh.reports import AUDIT_NAMED_REQUESTERS, Batch, ReportBox, named
from producer.refresh.sources import CredentialSource
from producer.refresh.stats import RefresherStats
from producer.store.audit import AuditEvent
from producer.store.issuing import Issuer
from producer.upstream.token_probe import ProbeVerdict, TokenProbe

log = logging.getLogger(__name__)

#: Answering refresh requests about an old token re-publishes at most this often.
REPUBLISH_ON_REQUEST_MIN_S = 1.0
#: At most one audit entry of each request event per credential this often.
AUDIT_EVERY_S = 60.0


@dataclass(slots=True)
class _Pending:
    """Counts of the batches not yet in the audit trail."""

    about_current: int = 0
    about_old: int = 0
    refuted: int = 0
    over_budget: int = 0
    refreshed: int = 0
    requesters: set[str] = field(default_factory=set)
    #: The token the latest refuted reports were about, and how many were about it.
    refuted_about: TokenUpdate | None = None
    refuted_about_count: int = 0

    def __bool__(self) -> bool:
        return bool(self.about_current or self.about_old)

    def summary(self) -> str:
        total = self.about_current + self.about_old
        return (
            f"{total} report(s), {self.about_current} of the current token, "
            f"{self.about_old} of older ones; {self.refuted} refuted upstream, "
            f"{self.over_budget} over budget, {self.refreshed} refresh(es); "
            f"from {named(self.requesters)}"
        )


class RequestAudit:
    """Sums up request batches into at most one audit entry per event every `every_s`."""

    __slots__ = (
        "_clock",
        "_every_s",
        "_issuer",
        "_over_budget_at",
        "_over_budget_entry",
        "_pending",
        "_written_at",
    )

    def __init__(
        self, issuer: Issuer, *, clock: Callable[[], float], every_s: float = AUDIT_EVERY_S
    ) -> None:
        self._issuer = issuer
        self._clock = clock
        self._every_s = every_s
        self._pending: _Pending | None = None  # made by the first report (most never get one)
        self._written_at = -math.inf
        self._over_budget_at = -math.inf
        self._over_budget_entry: tuple[TokenUpdate, str] | None = None

    def _counts(self) -> _Pending:
        if self._pending is None:
            self._pending = _Pending()
        return self._pending

    def add(self, batch: Batch, about_current: int) -> None:
        pending = self._counts()
        pending.about_current += about_current
        pending.about_old += sum(batch.counts.values()) - about_current
        for requester in sorted(batch.requesters):
            if len(pending.requesters) > AUDIT_NAMED_REQUESTERS:
                break
            pending.requesters.add(requester)

    def refuted(self, about: TokenUpdate, count: int) -> None:
        """`count` reports of `about` that upstream said it accepts. Refuted reports of an
        earlier token are logged now, naming it (each line names the token it is about)."""
        pending = self._counts()
        earlier = pending.refuted_about
        if earlier is not None and earlier.version != about.version:
            _log_refuted(earlier, pending.refuted_about_count, pending.summary())
            pending.refuted_about_count = 0
        pending.refuted += count
        pending.refuted_about = about
        pending.refuted_about_count += count

    def refreshed(self) -> None:
        self._counts().refreshed += 1

    def over_budget(self, held: TokenUpdate, count: int, reason: str) -> bool:
        """Count reports the budget turned away; True (and an audit entry) at most once
        every `every_s`, when the caller should log it too."""
        self._counts().over_budget += count
        now_s = self._clock()
        if now_s - self._over_budget_at < self._every_s:
            return False
        self._over_budget_at = now_s
        self._over_budget_entry = (held, reason)  # written by `flush`, after the batch's
        return True

    def flush(self, held: TokenUpdate | None, *, force: bool = False) -> None:
        """Write the pending counts if there are any and the last entry is old enough."""
        now_s = self._clock()
        if (
            held is not None
            and self._pending
            and (force or now_s - self._written_at >= self._every_s)
        ):
            self._write(held, now_s)
        if self._over_budget_entry is not None:
            self._issuer.record(AuditEvent.REQUEST_OVER_BUDGET, *self._over_budget_entry)
            self._over_budget_entry = None

    def _write(self, held: TokenUpdate, now_s: float) -> None:
        pending, self._pending = self._counts(), None
        self._written_at = now_s
        self._issuer.record(AuditEvent.REFRESH_REQUEST, held, pending.summary())
        about = pending.refuted_about
        if pending.refuted_about_count and about is not None:
            # Named as judged: by the time this is written the held token may be another.
            _log_refuted(about, pending.refuted_about_count, pending.summary())


def _log_refuted(about: TokenUpdate, count: int, summary: str) -> None:
    log.info(
        "%s: %d report(s) of %s v%d refuted: upstream accepts it (%s)",
        about.app_id,
        count,
        about.masked,
        about.version,
        summary,
    )


class RequestHandling:
    """Refresh requests of one credential; mixed into `AppRefresher`."""

    if not TYPE_CHECKING:  # the state is in `AppRefresher`'s slots (mypy checks those)
        __slots__ = ()
    app: AppConfig
    kind: TokenKind
    stats: RefresherStats
    _reports: ReportBox
    _budget: RefreshBudget | None
    _source: CredentialSource
    _probe: TokenProbe | None
    _request_audit: RequestAudit
    _held: TokenUpdate | None
    _recent: tuple[bytes, ...]
    _last_publish_s: float
    _clock: Callable[[], float]
    #: The fingerprint of the last token an ERROR line said someone else had replaced.
    _foreign_logged: str | None
    #: Told of a token upstream refuses whose refresh a budget holds back (`wxtoken status`).
    _on_refused: Callable[[str, TokenKind, TokenUpdate, float | None], None] | None

    if TYPE_CHECKING:  # in `Fetching` and `AppRefresher`: stubs here would shadow them

        def _refresh(self, *, forced: bool = False, reason: str = "scheduled") -> None: ...

        def _republish(self, held: TokenUpdate, now_s: float) -> None: ...

    def knows_token(self, token_sha256: str) -> bool:
        """True when `token_sha256` is the fingerprint of the held token or of one of the
        last tokens held before it; thread-safe (the listener asks before charging)."""
        try:
            digest = bytes.fromhex(token_sha256)
        except ValueError:
            return False
        return digest in self._recent

    def request_refresh(self, request: RefreshRequest) -> None:
        """Note that a subscriber or operator saw a token rejected; thread-safe.

        The service wakes this refresher; `step()` decides what to do.
        """
        self._reports.add(request)
        self.stats.requests_received = self._reports.received

    def _handle_reports(self) -> None:
        held = self._held
        if held is None or not self._reports:
            self._reports.drain()
            self._request_audit.flush(held)
            return
        batch = self._reports.drain()
        about_current = batch.counts.get(fingerprint(held.value), 0)
        self.stats.requests_about_old_tokens += sum(batch.counts.values()) - about_current
        self._request_audit.add(batch, about_current)
        refresh_reason = self._judge_current(held, about_current) if about_current else None
        self._request_audit.flush(held)
        if refresh_reason is not None:
            self.stats.forced_refreshes += 1
            self._refresh(forced=True, reason=refresh_reason)
            return
        now_s = self._clock()
        if held.is_valid_at(now_s) and now_s - self._last_publish_s >= REPUBLISH_ON_REQUEST_MIN_S:
            self._republish(held, now_s)

    def _note_refused(self, held: TokenUpdate, due_at_s: float | None) -> None:
        """Upstream refuses `held` but a budget holds its refresh back until `due_at_s`:
        status and metrics say so, and the refresher asks again then (`AppRefresher`)."""
        stats = self.stats
        if stats.refused_version == held.version and stats.refused_refresh_due_at_s == due_at_s:
            return
        stats.refused_version, stats.refused_refresh_due_at_s = held.version, due_at_s
        if self._on_refused is not None:
            self._on_refused(self.app.app_id, self.kind, held, due_at_s)

    def _judge_current(self, held: TokenUpdate, count: int) -> str | None:
        """What `count` reports of the current token call for: the reason of a forced
        refresh, or None (refuted, or over budget: re-publish)."""
        app_id, token_api = self.app.app_id, self.app.token_api
        verdict = ProbeVerdict.UNKNOWN
        if self.kind is TokenKind.ACCESS_TOKEN and self._probe is not None:
            verdict = self._probe.check(self.app, held.value)
        if verdict is ProbeVerdict.ACCEPTED:
            self.stats.requests_refuted += count
            self._request_audit.refuted(held, count)
            return None
        sha = fingerprint(held.value)
        if (
            verdict is ProbeVerdict.REFUSED
            and held.is_valid_at(self._clock())
            and self._foreign_logged != sha
        ):
            self._foreign_logged = sha  # one line per token, even if its refresh fails
            log.error(
                "%s: upstream refuses %s v%d that should live %.0f s more: something else "
                "has refreshed this app (another server fetching tokens with the same "
                "secret?); refreshing it as soon as the budgets allow",
                app_id,
                held.masked,
                held.version,
                held.seconds_left(self._clock()),
            )
        decisions: list[BudgetDecision] = []
        if self._budget is not None:
            if self.kind is TokenKind.ACCESS_TOKEN:
                verified = verdict is ProbeVerdict.REFUSED
                decisions.append(
                    self._budget.try_spend_requested(app_id, token_api, verified=verified)
                )
            if all(d.allowed for d in decisions):
                # The credential's own count: a ticket's never spends its access token's.
                spent = self._source.spend_on_report(self.app, self.kind)
                if spent is not None:
                    decisions.append(spent)
        refused = next((d for d in decisions if not d.allowed), None)
        if refused is not None:
            self.stats.requests_over_budget += count
            reason = f"reported rejected ({count} reports); {refused.reason}"
            if verdict is ProbeVerdict.REFUSED:
                self._note_refused(held, refused.refused_until_s)
            if self._request_audit.over_budget(held, count, reason):
                log.warning(
                    "%s: refresh request about %s v%d over budget (%s); re-publishing it instead",
                    app_id,
                    held.masked,
                    held.version,
                    refused.reason,
                )
            return None
        self._request_audit.refreshed()
        notes = "".join(f"; {d.reason}" for d in decisions)
        checked = "" if verdict is ProbeVerdict.UNKNOWN else f", upstream {verdict} it"
        log.warning(
            "%s: %s v%d reported rejected upstream (%d report(s)%s); refreshing it now%s",
            app_id,
            held.masked,
            held.version,
            count,
            checked,
            f" ({notes[2:]})" if notes else "",
        )
        return f"reported rejected ({count} reports{checked}){notes}"
