"""The registry's multi-statement steps, each run inside the caller's transaction: an INSERT
that may meet a unique key, and the authorizer upsert built on it (portable: no dialect's
ON CONFLICT / ON DUPLICATE KEY)."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from producer.platform.db.schema import authorizers, callbacks


def upsert_authorizer(
    connection: sa.Connection,
    component_appid: str,
    authorizer_appid: str,
    values: Mapping[str, object],
    *,
    new_token: bool = True,
) -> int:
    """Update the authorizer's row, or insert it; returns its refresh token version (up by
    one when `new_token`: a compare-and-set begun before this write then fails)."""
    key = authorizer_key(component_appid, authorizer_appid)
    version = authorizers.c.refresh_token_version
    update = authorizers.update().where(key).values(**values)
    if new_token:
        update = update.values(refresh_token_version=version + 1)
    if connection.execute(update).rowcount == 0:
        insert = authorizers.insert().values(
            component_appid=component_appid,
            authorizer_appid=authorizer_appid,
            refresh_token_version=1 if new_token else 0,
            **values,
        )
        if not insert_once(connection, insert):
            connection.execute(update)  # inserted by another writer meanwhile
    return int(connection.execute(sa.select(version).where(key)).scalar_one())


def authorizer_key(component_appid: str, authorizer_appid: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        authorizers.c.component_appid == component_appid,
        authorizers.c.authorizer_appid == authorizer_appid,
    )


def insert_once(connection: sa.Connection, insert: sa.Insert) -> bool:
    """Run an INSERT in a savepoint: False (and the transaction still usable) when a unique
    key refused it."""
    try:
        with connection.begin_nested():
            connection.execute(insert)
    except sa_exc.IntegrityError:
        return False
    return True


def callback_exists(connection: sa.Connection, component_appid: str, push_id: str) -> bool:
    query = sa.select(callbacks.c.id).where(
        callbacks.c.component_appid == component_appid, callbacks.c.push_id == push_id
    )
    return connection.execute(query).first() is not None
