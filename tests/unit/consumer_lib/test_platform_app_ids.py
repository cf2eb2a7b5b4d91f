"""A third-party platform customer's token asked for by its own appid: the one platform's
credential held for it (`{component}.{authorizer}`); several platforms: a clear error."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from consumer_lib import ClientSettings, TokenClient
from consumer_lib.testing import StubTransport
from consumer_lib.wire.authorizers import authorizer_app_id, split_authorizer_app_id

CUSTOMER = "wxcustomer00000001"
FIRST = authorizer_app_id("wxcomponent0000001", CUSTOMER)
SECOND = authorizer_app_id("wxcomponent0000002", CUSTOMER)


@pytest.fixture
def stub() -> StubTransport:
    return StubTransport()


@pytest.fixture
def client(stub: StubTransport) -> Iterator[TokenClient]:
    made = TokenClient(
        ClientSettings(
            insecure_accept_unsigned=True,
            exchange="wx.test",
            amqp_url="amqp://guest:guest@127.0.0.1:1/%2F",
        ),
        redis_client=fakeredis.FakeRedis(),
        transport=stub,
    )
    yield made
    made.close()


def test_the_app_id_names_platform_and_customer() -> None:
    assert f"wxcomponent0000001.{CUSTOMER}" == FIRST
    assert split_authorizer_app_id(FIRST) == ("wxcomponent0000001", CUSTOMER)
    assert split_authorizer_app_id(CUSTOMER) is None
    with pytest.raises(ValueError, match="not an appid"):
        authorizer_app_id("wx.comp", CUSTOMER)


def test_a_customer_of_one_platform_is_found_by_its_own_appid(
    client: TokenClient, stub: StubTransport
) -> None:
    stub.push_token(FIRST, "A" * 40)
    assert client.resolve_app_id(CUSTOMER) == FIRST
    assert client.get_token(CUSTOMER, timeout=1) == "A" * 40
    assert client.get(CUSTOMER, timeout=1).app_id == FIRST
    held = client.held_until(CUSTOMER)
    assert held is not None
    assert held[0].app_id == FIRST
    assert client.resolve_app_id("wxsomethingelse01") == "wxsomethingelse01"


def test_a_customer_of_two_platforms_must_be_named_in_full(
    client: TokenClient, stub: StubTransport
) -> None:
    stub.push_token(FIRST, "A" * 40)
    stub.push_token(SECOND, "B" * 40)
    with pytest.raises(ValueError, match="several platforms"):
        client.get_token(CUSTOMER, timeout=0.1)
    assert client.get_token(SECOND, timeout=1) == "B" * 40


def test_an_app_held_under_that_very_id_wins(client: TokenClient, stub: StubTransport) -> None:
    stub.push_token(FIRST, "A" * 40)
    stub.push_token(CUSTOMER, "P" * 40)
    assert client.get_token(CUSTOMER, timeout=1) == "P" * 40
