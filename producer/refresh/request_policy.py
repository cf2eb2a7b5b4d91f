"""What a refresher does about refresh requests: check, space, cap, and audit in summary.

Requests (`RefreshRequest`s) are hints anyone holding a consumer's broker credentials can
send, about the current token too (every consumer receives it, so it knows its
fingerprint). The leader therefore acts on a batch of reports of the current access token
like this (`RequestHandling.judge`):

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
from consumer_lib.wire.refresh_request import fingerprint
from consumer_lib.wire.update import TokenUpdate
from producer.limits.budget import BudgetDecision, RefreshBudget
from producer.refresh.reports import AUDIT_NAMED_REQUESTERS, Batch, named
from producer.store.audit import AuditEvent
from producer.store.issuing import Issuer
from producer.upstream.token_probe import ProbeVerdict, TokenProbe

if TYPE_CHECKING:  # the state module makes a `RequestAudit` for each credential's reports
    from producer.refresh.state import CredentialState

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


@dataclass(frozen=True, slots=True)
class ReportsAnswer:
    """What a credential's reports call for."""

    #: The reason of a forced refresh of the current token (its reports were upheld).
    refresh_reason: str | None = None
    #: Re-publish the held token (reports of older tokens, refuted or over budget): the
    #: services that reported an old one may have missed the current one.
    republish: bool = False


NOTHING_TO_DO = ReportsAnswer()
REPUBLISH = ReportsAnswer(republish=True)


class RequestHandling:
    """Judges the refresh requests of every credential of one producer."""

    __slots__ = ("_budget", "_clock", "_issuer", "_on_refused", "_probe")

    def __init__(
        self,
        *,
        issuer: Issuer,
        budget: RefreshBudget | None,
        probe: TokenProbe | None,
        clock: Callable[[], float],
        on_refused: Callable[[str, TokenKind, TokenUpdate, float | None], None] | None,
    ) -> None:
        self._issuer = issuer
        self._budget = budget
        self._probe = probe
        self._clock = clock
        #: Told of a token upstream refuses whose refresh a budget holds back (`wxtoken status`).
        self._on_refused = on_refused

    def judge(self, cred: CredentialState) -> ReportsAnswer:
        """Drain `cred`'s reports and say what they call for (`ReportsAnswer`). Also writes
        the summed-up audit entry once it is due."""
        held = cred.held
        if held is None or not cred.reports:
            cred.reports.drain()
            if cred.request_audit is not None:
                cred.request_audit.flush(held)
            return NOTHING_TO_DO
        batch = cred.reports.drain()
        audit = cred.request_audit
        if audit is None:
            audit = cred.request_audit = RequestAudit(self._issuer, clock=self._clock)
        about_current = batch.counts.get(fingerprint(held.value), 0)
        cred.stats.requests_about_old_tokens += sum(batch.counts.values()) - about_current
        audit.add(batch, about_current)
        refresh_reason = self._judge_current(cred, held, about_current) if about_current else None
        audit.flush(held)
        if refresh_reason is None:
            return REPUBLISH
        cred.stats.forced_refreshes += 1
        return ReportsAnswer(refresh_reason=refresh_reason)

    def _note_refused(
        self, cred: CredentialState, held: TokenUpdate, due_at_s: float | None
    ) -> None:
        """Upstream refuses `held` but a budget holds its refresh back until `due_at_s`:
        status and metrics say so, and the refresher asks again then (`AppRefresher`)."""
        stats = cred.stats
        if stats.refused_version == held.version and stats.refused_refresh_due_at_s == due_at_s:
            return
        stats.refused_version, stats.refused_refresh_due_at_s = held.version, due_at_s
        if self._on_refused is not None:
            self._on_refused(cred.app.app_id, cred.kind, held, due_at_s)

    def _judge_current(self, cred: CredentialState, held: TokenUpdate, count: int) -> str | None:
        """What `count` reports of the current token call for: the reason of a forced
        refresh, or None (refuted, or over budget: re-publish)."""
        app, audit = cred.app, cred.request_audit
        assert audit is not None  # made by `judge`
        verdict = ProbeVerdict.UNKNOWN
        if cred.kind is TokenKind.ACCESS_TOKEN and self._probe is not None:
            verdict = self._probe.check(app, held.value)
        if verdict is ProbeVerdict.ACCEPTED:
            cred.stats.requests_refuted += count
            audit.refuted(held, count)
            return None
        sha = fingerprint(held.value)
        if (
            verdict is ProbeVerdict.REFUSED
            and held.is_valid_at(self._clock())
            and cred.foreign_logged != sha
        ):
            cred.foreign_logged = sha  # one line per token, even if its refresh fails
            log.error(
                "%s: upstream refuses %s v%d that should live %.0f s more: something else "
                "has refreshed this app (another server fetching tokens with the same "
                "secret?); refreshing it as soon as the budgets allow",
                app.app_id,
                held.masked,
                held.version,
                held.seconds_left(self._clock()),
            )
        decisions = self._spend(cred, verified=verdict is ProbeVerdict.REFUSED)
        refused = next((d for d in decisions if not d.allowed), None)
        if refused is not None:
            cred.stats.requests_over_budget += count
            reason = f"reported rejected ({count} reports); {refused.reason}"
            if verdict is ProbeVerdict.REFUSED:
                self._note_refused(cred, held, refused.refused_until_s)
            if audit.over_budget(held, count, reason):
                log.warning(
                    "%s: refresh request about %s v%d over budget (%s); re-publishing it instead",
                    app.app_id,
                    held.masked,
                    held.version,
                    refused.reason,
                )
            return None
        audit.refreshed()
        notes = "".join(f"; {d.reason}" for d in decisions)
        checked = "" if verdict is ProbeVerdict.UNKNOWN else f", upstream {verdict} it"
        log.warning(
            "%s: %s v%d reported rejected upstream (%d report(s)%s); refreshing it now%s",
            app.app_id,
            held.masked,
            held.version,
            count,
            checked,
            f" ({notes[2:]})" if notes else "",
        )
        return f"reported rejected ({count} reports{checked}){notes}"

    def _spend(self, cred: CredentialState, *, verified: bool) -> list[BudgetDecision]:
        """Our request-caused budget (access tokens), then the credential's own upstream
        count (a ticket's never spends its access token's); stops at the first refusal."""
        decisions: list[BudgetDecision] = []
        if self._budget is None:
            return decisions
        app = cred.app
        if cred.kind is TokenKind.ACCESS_TOKEN:
            decisions.append(
                self._budget.try_spend_requested(app.app_id, app.token_api, verified=verified)
            )
        if all(d.allowed for d in decisions):
            spent = cred.source.spend_on_report(app, cred.kind)
            if spent is not None:
                decisions.append(spent)
        return decisions
