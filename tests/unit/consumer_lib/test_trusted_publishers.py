"""WXTOKEN_TRUSTED_PUBLISHERS: subscribers take updates only from the named broker users."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from consumer_lib import ClientSettings, ConfigError, TokenClient
from consumer_lib.settings import load_settings
from consumer_lib.testing import StubTransport
from tests.conftest import FakeClock
from tests.unit._helpers import T0, make_update

DEAD_AMQP = "amqp://guest:guest@127.0.0.1:1/%2F"


def client_trusting(
    trusted: str, clock: FakeClock, transport: StubTransport | None = None
) -> TokenClient:
    clock.now_s = T0 + 1
    return TokenClient(
        ClientSettings(
            insecure_accept_unsigned=True, amqp_url=DEAD_AMQP, trusted_publishers=trusted
        ),
        redis_client=fakeredis.FakeRedis(),
        clock=clock,
        transport=transport,
    )


@pytest.fixture
def stub() -> StubTransport:
    return StubTransport()


@pytest.fixture
def client(clock: FakeClock, stub: StubTransport) -> Iterator[TokenClient]:
    made = client_trusting("wxtoken-producer, wxtoken-ops", clock, stub)
    yield made
    made.close()


def test_updates_from_trusted_users_are_accepted(client: TokenClient, stub: StubTransport) -> None:
    """The producer's and the operators' users may publish."""
    stub.push_raw(make_update(version=1).encode(), user_id="wxtoken-producer")
    stub.push_raw(
        make_update(version=2, value="TOKEN-override-0002").encode(), user_id="wxtoken-ops"
    )
    assert client.get_token("wxapp1", timeout=0) == "TOKEN-override-0002"
    assert client.stats.rejected == 0


@pytest.mark.parametrize("user_id", ["wxtoken-consumer", None, ""])
def test_updates_from_anyone_else_are_rejected(
    client: TokenClient, user_id: str | None, caplog: pytest.LogCaptureFixture, stub: StubTransport
) -> None:
    """Another user, or a message without user_id, is dropped, counted and logged."""
    stub.push_raw(make_update(version=1).encode(), user_id="wxtoken-producer")
    stub.push_raw(make_update(version=9, value="TOKEN-intruder-0009").encode(), user_id=user_id)
    assert client.get_token("wxapp1", timeout=0) == make_update(version=1).value
    assert client.stats.rejected == 1
    assert "untrusted user" in caplog.text
    assert "TOKEN-intruder-0009" not in caplog.text


def test_without_the_setting_any_user_may_publish(clock: FakeClock, stub: StubTransport) -> None:
    """With no trusted list the broker's permissions alone decide who may publish."""
    open_client = client_trusting("", clock, stub)
    try:
        stub.push_raw(make_update().encode(), user_id="whoever")
        assert open_client.stats.accepted == 1
    finally:
        open_client.close()


def test_malformed_list_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """A list with characters no broker user name has stops the program at start."""
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv("WXTOKEN_TRUSTED_PUBLISHERS", "wxtoken-producer; rm -rf /")
    with pytest.raises(ConfigError, match="WXTOKEN_TRUSTED_PUBLISHERS"):
        load_settings(ClientSettings)
