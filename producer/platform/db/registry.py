"""The durable registry of third-party platforms: every push received, the newest verify
ticket, and each authorizer's state and refresh token (guarantee 8: written before a push is
answered `success` and before a token it returned is used).

Every method is one short transaction; any database failure leaves as `RegistryUnavailable`
(`database.translated`), so nothing was stored and the caller must not acknowledge. Secrets
are sealed (`sealing.py`) with their row's place as associated data.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence

import sqlalchemy as sa
from pydantic import SecretStr

from producer.app_config import AppConfig
from producer.platform.db._statements import (
    authorizer_key,
    callback_exists,
    insert_once,
    upsert_authorizer,
)
from producer.platform.db.database import STATEMENT_TIMEOUT_S, deadline, translated
from producer.platform.db.records import (
    LISTED,
    Authorizer,
    StoredCallback,
    VerifyTicket,
    authorizer_of,
)
from producer.platform.db.schema import (
    AUTHORIZER_STATES,
    AuthorizerState,
    app_secret_place,
    authorizers,
    callbacks,
    stored_apps,
    ticket_place,
    tickets,
    token_place,
)
from producer.platform.db.sealing import Sealed, Sealer
from producer.platform.errors import RegistryUnavailable, SealBroken
from producer.platform.events import PlatformEvent

#: The most rows one page of `authorizers()` or `unprocessed_callbacks()` returns.
MAX_PAGE = 1000
_REASON_CHARS = 200
#: A transaction (a few statements and the commit) that takes longer has lost its database.
TRANSACTION_DEADLINE_S = 2 * STATEMENT_TIMEOUT_S


def _non_empty(value: str, what: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value


class PlatformRegistry:
    """The registry over an engine (`database.create_engine`), a `Sealer` and a clock
    (seconds, wall time: it stamps rows)."""

    def __init__(self, engine: sa.Engine, sealer: Sealer, clock: Callable[[], float]) -> None:
        self._engine = engine
        self._sealer = sealer
        self._clock = clock

    def close(self) -> None:
        """Close the engine's pooled connections (idempotent)."""
        self._engine.dispose()

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sa.Connection]:
        with (
            translated(what),
            self._engine.connect() as connection,
            deadline(connection, TRANSACTION_DEADLINE_S),
            connection.begin(),
        ):
            yield connection

    # ------------------------------------------------------------------ callbacks
    def record_callback(self, event: PlatformEvent, encrypt_b64: str) -> bool:
        """Store a verified push (and, for a verify ticket, the ticket if newer) in one
        transaction. True when newly stored, False when this (platform, push_id) was stored
        before; `RegistryUnavailable` when nothing could be stored."""
        row = {
            "component_appid": event.component_appid,
            "push_id": event.push_id,
            "info_type": event.info_type,
            "raw_info_type": event.raw_info_type[:64],
            "authorizer_appid": event.authorizer_appid,
            "create_time_s": event.create_time_s,
            "received_at_s": event.received_at_s,
            "encrypt_b64": encrypt_b64,
        }
        with self._transaction("recording a callback") as connection:
            if not insert_once(connection, callbacks.insert().values(**row)):
                if callback_exists(connection, event.component_appid, event.push_id):
                    return False
                raise RegistryUnavailable("recording a callback: the database refused the row")
            if event.info_type == "component_verify_ticket" and event.verify_ticket:
                self._save_ticket(
                    connection,
                    event.component_appid,
                    event.verify_ticket,
                    event.create_time_s,
                    event.received_at_s,
                )
            return True

    def unprocessed_callbacks(self, limit: int = 100) -> list[StoredCallback]:
        """The oldest callbacks the leader has not acted on yet, oldest first."""
        query = (
            sa.select(callbacks)
            .where(callbacks.c.processed_at_s.is_(None))
            .order_by(callbacks.c.id)
            .limit(max(1, min(limit, MAX_PAGE)))
        )
        with self._transaction("reading unprocessed callbacks") as connection:
            return [StoredCallback(**row._mapping) for row in connection.execute(query)]

    def mark_processed(self, callback_id: int, outcome: str) -> bool:
        """Record that the leader acted on a callback; False if it was marked already."""
        update = (
            callbacks.update()
            .where(callbacks.c.id == callback_id, callbacks.c.processed_at_s.is_(None))
            .values(processed_at_s=self._clock(), outcome=outcome[:_REASON_CHARS])
        )
        with self._transaction("marking a callback processed") as connection:
            return connection.execute(update).rowcount == 1

    def prune_callbacks(self, processed_before_s: float, limit: int = MAX_PAGE) -> int:
        """Delete up to `limit` callbacks processed before `processed_before_s` (oldest
        first); unprocessed ones are never deleted. Returns how many were deleted."""
        oldest = (
            sa.select(callbacks.c.id)
            .where(callbacks.c.processed_at_s < processed_before_s)
            .order_by(callbacks.c.id)
            .limit(max(1, min(limit, MAX_PAGE)))
        )
        with self._transaction("pruning callbacks") as connection:
            ids = list(connection.execute(oldest).scalars())
            if not ids:
                return 0
            return connection.execute(callbacks.delete().where(callbacks.c.id.in_(ids))).rowcount

    # ------------------------------------------------------------------ the verify ticket
    def save_verify_ticket(self, component_appid: str, ticket: str, create_time_s: int) -> bool:
        """Keep `ticket` if it is newer (by WeChat's CreateTime) than the one held: True when
        stored, False when an equal or newer one is held (never replaced by an older)."""
        _non_empty(ticket, "a verify ticket")
        with self._transaction("saving the verify ticket") as connection:
            return self._save_ticket(
                connection, component_appid, ticket, create_time_s, self._clock()
            )

    def _save_ticket(
        self,
        connection: sa.Connection,
        component_appid: str,
        ticket: str,
        create_time_s: int,
        received_at_s: float,
    ) -> bool:
        sealed = self._sealer.seal(ticket, ticket_place(component_appid))
        values = {
            "ticket_sealed": sealed.blob,
            "ticket_key_id": sealed.key_id,
            "create_time_s": create_time_s,
            "received_at_s": received_at_s,
        }
        newer = tickets.update().where(
            tickets.c.component_appid == component_appid,
            tickets.c.create_time_s < create_time_s,
        )
        if connection.execute(newer.values(**values)).rowcount == 1:
            return True
        if insert_once(
            connection, tickets.insert().values(component_appid=component_appid, **values)
        ):
            return True
        # Another writer inserted the row meanwhile: ours wins only if it is newer.
        return connection.execute(newer.values(**values)).rowcount == 1

    def verify_ticket(self, component_appid: str) -> VerifyTicket | None:
        """The newest ticket held for the platform, with its age; None before the first."""
        query = sa.select(tickets).where(tickets.c.component_appid == component_appid)
        with self._transaction("reading the verify ticket") as connection:
            row = connection.execute(query).one_or_none()
        if row is None:
            return None
        ticket = self._sealer.open(
            Sealed(row.ticket_sealed, row.ticket_key_id), ticket_place(component_appid)
        )
        return VerifyTicket(
            ticket, row.create_time_s, row.received_at_s, self._clock() - row.received_at_s
        )

    # ------------------------------------------------------------------ authorizers
    def authorize(
        self,
        component_appid: str,
        authorizer_appid: str,
        refresh_token: str,
        *,
        auth_time_s: int | None = None,
    ) -> int:
        """Store a redeemed authorization (new, re-authorized or recovered): state
        `authorized`, this refresh token, no reason. Returns the token's version."""
        _non_empty(refresh_token, "a refresh token")
        sealed = self._sealer.seal(refresh_token, token_place(component_appid, authorizer_appid))
        values = {
            "state": "authorized",
            "refresh_token_sealed": sealed.blob,
            "refresh_token_key_id": sealed.key_id,
            "reason": None,
            "auth_time_s": auth_time_s,
            "updated_at_s": self._clock(),
        }
        with self._transaction("storing an authorization") as connection:
            return upsert_authorizer(connection, component_appid, authorizer_appid, values)

    def mark_pending_code(self, component_appid: str, authorizer_appid: str) -> int:
        """An `authorized`/`updateauthorized` push arrived whose code is not redeemed yet:
        state `pending_code` (a refresh token held is kept until the new one replaces it)."""
        values = {"state": "pending_code", "reason": None, "updated_at_s": self._clock()}
        with self._transaction("marking an authorization pending") as connection:
            return upsert_authorizer(
                connection, component_appid, authorizer_appid, values, new_token=False
            )

    def refresh_token(self, component_appid: str, authorizer_appid: str) -> tuple[str, int] | None:
        """(refresh token, its version) of an `authorized` authorizer; None otherwise (unknown,
        pending, needing re-authorization, unauthorized)."""
        columns = (
            authorizers.c.refresh_token_sealed,
            authorizers.c.refresh_token_key_id,
            authorizers.c.refresh_token_version,
        )
        query = sa.select(*columns).where(
            authorizer_key(component_appid, authorizer_appid),
            authorizers.c.state == "authorized",
        )
        with self._transaction("reading a refresh token") as connection:
            row = connection.execute(query).one_or_none()
        if row is None or row.refresh_token_sealed is None:
            return None
        token = self._sealer.open(
            Sealed(row.refresh_token_sealed, row.refresh_token_key_id),
            token_place(component_appid, authorizer_appid),
        )
        return token, int(row.refresh_token_version)

    def refresh_tokens(
        self, component_appid: str, *, after: str | None = None, limit: int = MAX_PAGE
    ) -> dict[str, tuple[str, int]]:
        """One page of a platform's `authorized` authorizers with a refresh token: authorizer
        appid -> (refresh token, version), by appid (pass the last as `after` for the next
        page). A value that does not open is left out (its refresh reads it again)."""
        query = (
            sa.select(
                authorizers.c.authorizer_appid,
                authorizers.c.refresh_token_sealed,
                authorizers.c.refresh_token_key_id,
                authorizers.c.refresh_token_version,
            )
            .where(
                authorizers.c.component_appid == component_appid,
                authorizers.c.state == "authorized",
                authorizers.c.refresh_token_sealed.is_not(None),
            )
            .order_by(authorizers.c.authorizer_appid)
            .limit(max(1, min(limit, MAX_PAGE)))
        )
        if after is not None:
            query = query.where(authorizers.c.authorizer_appid > after)
        with self._transaction("reading refresh tokens") as connection:
            rows = list(connection.execute(query))
        found: dict[str, tuple[str, int]] = {}
        for row in rows:
            place = token_place(component_appid, row.authorizer_appid)
            try:
                token = self._sealer.open(
                    Sealed(row.refresh_token_sealed, row.refresh_token_key_id), place
                )
            except SealBroken:
                continue
            found[row.authorizer_appid] = (token, int(row.refresh_token_version))
        return found

    def replace_refresh_token(
        self, component_appid: str, authorizer_appid: str, expected_version: int, new_token: str
    ) -> bool:
        """Compare-and-set: store `new_token` only if the version is still `expected_version`
        and the authorizer is still `authorized`; a stale writer gets False."""
        _non_empty(new_token, "a refresh token")
        sealed = self._sealer.seal(new_token, token_place(component_appid, authorizer_appid))
        update = (
            authorizers.update()
            .where(
                authorizer_key(component_appid, authorizer_appid),
                authorizers.c.state == "authorized",
                authorizers.c.refresh_token_version == expected_version,
            )
            .values(
                refresh_token_sealed=sealed.blob,
                refresh_token_key_id=sealed.key_id,
                refresh_token_version=authorizers.c.refresh_token_version + 1,
                updated_at_s=self._clock(),
            )
        )
        with self._transaction("replacing a refresh token") as connection:
            return connection.execute(update).rowcount == 1

    def mark_needs_reauthorization(
        self,
        component_appid: str,
        authorizer_appid: str,
        reason: str,
        *,
        version: int | None = None,
    ) -> bool:
        """61023 and the like: True the first time (state changes), False after, or when
        `version` is given and a newer authorization replaced the token that failed."""
        conditions = [
            authorizer_key(component_appid, authorizer_appid),
            authorizers.c.state == "authorized",
        ]
        if version is not None:
            conditions.append(authorizers.c.refresh_token_version == version)
        update = (
            authorizers.update()
            .where(*conditions)
            .values(
                state="needs_reauthorization",
                reason=reason[:_REASON_CHARS],
                updated_at_s=self._clock(),
            )
        )
        with self._transaction("marking an authorizer for re-authorization") as connection:
            return connection.execute(update).rowcount == 1

    def unauthorize(
        self, component_appid: str, authorizer_appid: str, reason: str = "unauthorized"
    ) -> bool:
        """The customer revoked the platform: state `unauthorized`, the refresh token erased
        (its version goes up, so no in-flight compare-and-set lands). False if already so."""
        update = (
            authorizers.update()
            .where(
                authorizer_key(component_appid, authorizer_appid),
                authorizers.c.state != "unauthorized",
            )
            .values(
                state="unauthorized",
                refresh_token_sealed=None,
                refresh_token_key_id=None,
                refresh_token_version=authorizers.c.refresh_token_version + 1,
                reason=reason[:_REASON_CHARS],
                updated_at_s=self._clock(),
            )
        )
        with self._transaction("unauthorizing") as connection:
            return connection.execute(update).rowcount == 1

    def authorizer(self, component_appid: str, authorizer_appid: str) -> Authorizer | None:
        query = sa.select(*LISTED).where(authorizer_key(component_appid, authorizer_appid))
        with self._transaction("reading an authorizer") as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else authorizer_of(row)

    def authorizers(
        self,
        component_appid: str,
        state: AuthorizerState | None = None,
        *,
        after: str | None = None,
        limit: int = 500,
    ) -> list[Authorizer]:
        """One page, by authorizer appid: pass the last appid of a page as `after` for the
        next (an empty page is the end). Keyset paging: each page costs the same."""
        query = sa.select(*LISTED).where(authorizers.c.component_appid == component_appid)
        if state is not None:
            query = query.where(authorizers.c.state == state)
        if after is not None:
            query = query.where(authorizers.c.authorizer_appid > after)
        query = query.order_by(authorizers.c.authorizer_appid).limit(max(1, min(limit, MAX_PAGE)))
        with self._transaction("listing authorizers") as connection:
            return [authorizer_of(row) for row in connection.execute(query)]

    def platforms_of(self, authorizer_appid: str) -> list[str]:
        """The platforms (component appids) for which this account is `authorized`, sorted:
        one means a service may ask by authorizer appid alone; several, it must name one."""
        query = (
            sa.select(authorizers.c.component_appid)
            .where(
                authorizers.c.authorizer_appid == authorizer_appid,
                authorizers.c.state == "authorized",
            )
            .order_by(authorizers.c.component_appid)
        )
        with self._transaction("finding an authorizer's platforms") as connection:
            return list(connection.execute(query).scalars())

    # ------------------------------------------------------------------ stored apps
    def put_apps(self, apps: Sequence[AppConfig]) -> int:
        """Store (insert or replace) plain apps, their secrets sealed, in one transaction;
        returns how many. A platform credential is refused (`ValueError`)."""
        rows = []
        now_s = self._clock()
        for app in apps:
            if app.is_platform_credential:
                raise ValueError(f"{app.app_id}: a platform's credentials are not stored apps")
            sealed = self._sealer.seal(app.secret.get_secret_value(), app_secret_place(app.app_id))
            config = app.model_dump(mode="json", exclude={"app_id", "secret"})
            rows.append(
                {
                    "app_id": app.app_id,
                    "config_json": json.dumps(config, sort_keys=True),
                    "secret_sealed": sealed.blob,
                    "secret_key_id": sealed.key_id,
                    "updated_at_s": now_s,
                }
            )
        with self._transaction("storing apps") as connection:
            for row in rows:
                key = stored_apps.c.app_id == row["app_id"]
                if connection.execute(stored_apps.update().where(key).values(**row)).rowcount == 0:
                    connection.execute(stored_apps.insert().values(**row))
        return len(rows)

    def remove_app(self, app_id: str) -> bool:
        """Delete a stored app; False when none of that id is stored."""
        delete = stored_apps.delete().where(stored_apps.c.app_id == app_id)
        with self._transaction("removing an app") as connection:
            return connection.execute(delete).rowcount == 1

    def stored_apps(self) -> tuple[list[AppConfig], list[str]]:
        """Every stored app (secrets opened), by app id; and, in words, the rows that do not
        make an app (a secret that does not open, a configuration this release refuses)."""
        query = sa.select(stored_apps).order_by(stored_apps.c.app_id)
        with self._transaction("reading stored apps") as connection:
            rows = list(connection.execute(query))
        apps: list[AppConfig] = []
        broken: list[str] = []
        for row in rows:
            try:
                secret = self._sealer.open(
                    Sealed(row.secret_sealed, row.secret_key_id), app_secret_place(row.app_id)
                )
                config = json.loads(row.config_json)
                if not isinstance(config, dict):
                    raise ValueError("its configuration is not a JSON object")
                apps.append(AppConfig(app_id=row.app_id, secret=SecretStr(secret), **config))
            except (SealBroken, ValueError) as exc:
                broken.append(
                    f"{row.app_id}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                )
        return apps, broken

    def counts(self, component_appid: str) -> dict[AuthorizerState, int]:
        """How many authorizers are in each state (every state present, zeros included)."""
        query = (
            sa.select(authorizers.c.state, sa.func.count())
            .where(authorizers.c.component_appid == component_appid)
            .group_by(authorizers.c.state)
        )
        counted: dict[AuthorizerState, int] = dict.fromkeys(AUTHORIZER_STATES, 0)
        with self._transaction("counting authorizers") as connection:
            for state, count in connection.execute(query):
                counted[state] = int(count)
        return counted
