"""`translated()`: the one place redis-py's exceptions become `StoreError`."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis
from redis.sentinel import MasterNotFoundError

from consumer_lib.errors import InvalidUpdate, StoreError, StoreLoginRefused
from consumer_lib.redis_errors import REDIS_ERRORS, translated

PASSWORD = "hunter2-pw"


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """A client that is never connected: only its user is read."""
    made = redis.Redis(username="svc-user", password=PASSWORD)
    yield made
    made.close()


@pytest.mark.parametrize(
    "raised",
    [
        redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis.TimeoutError("Timeout reading from socket"),
        redis.ResponseError("ERR Error running script: oops"),
        redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        redis.exceptions.OutOfMemoryError("OOM command not allowed"),
        redis.DataError("Invalid input of type: 'NoneType'."),
        redis.exceptions.InvalidResponse("Protocol Error: b'?'"),
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.WatchError("Watched variable changed."),
        MasterNotFoundError("No master found for 'wxm'"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_every_redis_failure_is_a_store_error_naming_the_action(
    client: redis.Redis, raised: Exception
) -> None:
    """Whatever redis-py (or the socket under it) raises leaves the block as a plain
    `StoreError` whose one line says what was being done and what went wrong."""
    assert isinstance(raised, REDIS_ERRORS)
    with pytest.raises(StoreError) as info, translated("reading served apps", client):
        raise raised
    assert type(info.value) is StoreError
    message = str(info.value)
    assert message.startswith(f"reading served apps: {type(raised).__name__}: ")
    assert "\n" not in message
    assert len(message) <= len("reading served apps: ") + 200
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_a_real_outage_names_the_action_and_the_error() -> None:
    """A server that drops away after connecting: the error says what failed, in one line."""
    server = fakeredis.FakeServer()
    fake = fakeredis.FakeRedis(server=server)
    try:
        fake.set("k", "v")
        server.connected = False
        with (
            pytest.raises(StoreError, match=r"^reading k: ConnectionError: "),
            translated("reading k", fake),
        ):
            fake.get("k")
    finally:
        fake.close()


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (
            redis.AuthenticationError("invalid username-password pair or user is disabled."),
            "Redis refused the login of user 'svc-user' (wrong user or password, or the user is "
            "disabled): check the user and password in WXTOKEN_REDIS_URL",
        ),
        (
            redis.exceptions.NoPermissionError(
                "User svc-user has no permissions to run the 'mget' command"
            ),
            "Redis refuses user 'svc-user' a command it needs (User svc-user has no permissions "
            "to run the 'mget' command): check the user in WXTOKEN_REDIS_URL and its ACL",
        ),
    ],
)
def test_a_refused_login_is_a_store_login_refused_naming_user_and_variable(
    client: redis.Redis, raised: Exception, said: str
) -> None:
    """WRONGPASS/NOAUTH and NOPERM become `StoreLoginRefused` (a configuration error) naming
    the user and WXTOKEN_REDIS_URL, never the password."""
    with pytest.raises(StoreLoginRefused) as info, translated("reading snapshot", client):
        raise raised
    assert str(info.value).startswith(said)
    assert PASSWORD not in str(info.value)


def test_arguments_redis_echoes_back_are_not_in_the_message(client: redis.Redis) -> None:
    """Redis quotes the start of a refused command's arguments; they never reach our message."""
    echoed = redis.ResponseError(
        "ERR unknown command 'SETX', with args beginning with: 'wxtoken:token' 'ACCESS-TOKEN-x'"
    )
    with pytest.raises(StoreError) as info, translated("writing wxapp1", client):
        raise echoed
    assert str(info.value) == "writing wxapp1: ResponseError: ERR unknown command 'SETX'"


@pytest.mark.parametrize(
    "raised",
    [ValueError("not redis"), KeyError("k"), InvalidUpdate("bad bytes"), StoreError("ours")],
    ids=lambda exc: type(exc).__name__,
)
def test_other_exceptions_pass_through_untouched(client: redis.Redis, raised: Exception) -> None:
    """Only redis-py's failures are translated: anything else leaves the block as it was."""
    with pytest.raises(type(raised)) as info, translated("reading served apps", client):
        raise raised
    assert info.value is raised


def test_a_block_that_succeeds_is_left_alone(client: redis.Redis) -> None:
    """No failure, no change: the block's result stands."""
    with translated("nothing", client):
        result = 42
    assert result == 42
