"""The one place redis-py's exceptions become ours.

Everything redis-py raises for a server that is away, slow, confused or refusing us is in
`REDIS_ERRORS`; `translated(what, client)` turns any of them into a `StoreError` whose
message says what we were doing ("reading served apps: ConnectionError: ...").

A refused login (WRONGPASS, NOAUTH) or command (NOPERM) becomes `StoreLoginRefused`
instead, naming the user and WXTOKEN_REDIS_URL, without `what`: it is a configuration
error, not an outage, and the one line says what to fix.

Messages carry no secret: the exception's class and the first line of its text, cut short,
never the arguments Redis echoes back; a caller's `what` names apps, never tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.sentinel import MasterNotFoundError

from .errors import StoreError, StoreLoginRefused

#: What redis-py raises for a server that is away, slow or confused.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)

#: Redis echoes the start of a command's arguments after this in some errors.
_ECHOED_ARGS = ", with args beginning with"


def describe_redis_error(exc: BaseException) -> str:
    """A short, secret-free description of a redis-py failure."""
    text = f"{exc.__class__.__name__}: {exc}".splitlines()[0]
    if isinstance(exc, MasterNotFoundError):
        text = text.split(" : ", 1)[0]  # not the repr of every sentinel client
    text = text.split(_ECHOED_ARGS, 1)[0]
    return text[:200]


def _login_refused(exc: BaseException, client: redis.Redis) -> str | None:
    """What to tell an operator when `exc` is Redis refusing `client`'s login or a command
    (an ACL problem: a configuration error); None for any other failure."""
    if not isinstance(exc, (redis.AuthenticationError, redis.exceptions.NoPermissionError)):
        return None
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    user = kwargs.get("username") or "default"
    if isinstance(exc, redis.AuthenticationError):
        return (
            f"Redis refused the login of user {user!r} (wrong user or password, or the user "
            "is disabled): check the user and password in WXTOKEN_REDIS_URL"
        )
    command = describe_redis_error(exc).partition(": ")[2][:120] or "NOPERM"
    return (
        f"Redis refuses user {user!r} a command it needs ({command}): check the user in "
        "WXTOKEN_REDIS_URL and its ACL (deploy/redis/users.template.acl)"
    )


@contextmanager
def translated(what: str, client: redis.Redis) -> Iterator[None]:
    """Run the body (commands sent through `client`); any redis-py failure leaves it as a
    `StoreError` saying `what` failed, or `StoreLoginRefused` naming `client`'s user."""
    try:
        yield
    except REDIS_ERRORS as exc:
        refused = _login_refused(exc, client)
        if refused is not None:
            raise StoreLoginRefused(refused) from None
        raise StoreError(f"{what}: {describe_redis_error(exc)}") from None
