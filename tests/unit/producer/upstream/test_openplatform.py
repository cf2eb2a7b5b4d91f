"""The component API's answers judged strictly: anything that is not what WeChat documents is
a transient `UpstreamError` naming the field (never echoing a token), refused tokens are
TOKEN_INVALID, and 61023 is a configuration error the caller acts on."""

from __future__ import annotations

import pytest
import responses

from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import UpstreamError
from producer.upstream.openplatform import OpenPlatformClient

BASE = "https://api.weixin.qq.com"
CGI = f"{BASE}/cgi-bin/component"
COMPONENT = "wxcomponent0000001"
GOOD_INFO = {
    "authorizer_appid": "wxcustomer00000001",
    "authorizer_access_token": "A" * 40,
    "expires_in": 7200,
    "authorizer_refresh_token": "refresh@@@one",
}


@pytest.fixture
def client() -> OpenPlatformClient:
    return OpenPlatformClient(BASE)


@responses.activate
@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"authorization_info": "x"}, "lacks authorization_info"),
        ({"authorization_info": {**GOOD_INFO, "authorizer_refresh_token": ""}}, "empty"),
        ({"authorization_info": {**GOOD_INFO, "authorizer_refresh_token": "a b"}}, "whitespace"),
        ({"authorization_info": {**GOOD_INFO, "authorizer_refresh_token": 5}}, "usable"),
        ({"authorization_info": {**GOOD_INFO, "authorizer_appid": "wx/../x"}}, "not an appid"),
        ({"authorization_info": {**GOOD_INFO, "authorizer_access_token": ""}}, "usable"),
        ({"authorization_info": {**GOOD_INFO, "expires_in": "soon"}}, "expires_in"),
    ],
)
def test_a_malformed_query_auth_answer_is_transient(
    client: OpenPlatformClient, answer: dict[str, object], said: str
) -> None:
    responses.post(f"{CGI}/api_query_auth", json=answer)
    with pytest.raises(UpstreamError, match=said) as raised:
        client.query_auth("C" * 40, COMPONENT, "code")
    assert raised.value.kind is FailureKind.TRANSIENT
    assert "refresh@@@one" not in str(raised.value)


@responses.activate
@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"total_count": True, "list": []}, "total_count"),
        ({"total_count": -1, "list": []}, "total_count"),
        ({"total_count": 1, "list": "x"}, "usable list"),
        ({"total_count": 1, "list": ["x"]}, "not an object"),
        ({"total_count": 1, "list": [{"refresh_token": "r"}]}, "authorizer_appid"),
        ({"total_count": 2, "list": [{"authorizer_appid": "wxa"}] * 3}, "usable list"),
    ],
)
def test_a_malformed_authorizer_list_is_transient(
    client: OpenPlatformClient, answer: dict[str, object], said: str
) -> None:
    responses.post(f"{CGI}/api_get_authorizer_list", json=answer)
    with pytest.raises(UpstreamError, match=said) as raised:
        client.authorizer_list("C" * 40, COMPONENT, offset=0, count=2)
    assert raised.value.kind is FailureKind.TRANSIENT


def test_a_page_size_beyond_wechats_is_refused_before_any_call(
    client: OpenPlatformClient,
) -> None:
    with pytest.raises(ValueError, match="count"):
        client.authorizer_list("C" * 40, COMPONENT, offset=0, count=501)
    with pytest.raises(ValueError, match="offset"):
        client.authorizer_list("C" * 40, COMPONENT, offset=-1)


@responses.activate
@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        (40001, FailureKind.TOKEN_INVALID),
        (42001, FailureKind.TOKEN_INVALID),
        (61023, FailureKind.CONFIG),
        (-1, FailureKind.TRANSIENT),
    ],
)
def test_refusals_of_an_authorizer_refresh_are_classified(
    client: OpenPlatformClient, errcode: int, kind: FailureKind
) -> None:
    responses.post(f"{CGI}/api_authorizer_token", json={"errcode": errcode, "errmsg": "no"})
    with pytest.raises(UpstreamError) as raised:
        client.authorizer_token("C" * 40, COMPONENT, "wxcustomer00000001", "refresh@@@one")
    assert (raised.value.errcode, raised.value.kind) == (errcode, kind)
    assert "refresh@@@one" not in str(raised.value)


@responses.activate
def test_a_returned_refresh_token_is_optional_but_checked(client: OpenPlatformClient) -> None:
    base = {"authorizer_access_token": "A" * 40, "expires_in": 7200}
    responses.post(f"{CGI}/api_authorizer_token", json=base)
    assert client.authorizer_token("C" * 40, COMPONENT, "wxc", "r")[1] == ""
    responses.post(f"{CGI}/api_authorizer_token", json={**base, "authorizer_refresh_token": "x\ny"})
    with pytest.raises(UpstreamError, match="whitespace or control"):
        client.authorizer_token("C" * 40, COMPONENT, "wxc", "r")
