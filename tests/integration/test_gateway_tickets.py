"""The gateway's ticket reads and signed wx.config over real HTTP, against a running gateway
in front of the real stack: a jsapi ticket the sandbox issued, provided with `wxtoken set
--kind jsapi`, reaches the gateway through the exchange, and the wx.config it signs is one
the sandbox (as WeChat) accepts."""

from __future__ import annotations

import requests

from tests.waiting import wait_for

from .gateway_stack import RunningGateway, gateway
from .test_ticket_kinds import wxtoken_set_kind

__all__ = ["gateway"]

PAGE = "https://h5.example.com/pay?order=42"


def _provide_jsapi_ticket(gw: RunningGateway, app_id: str) -> str:
    """A ticket fetched from the sandbox with the app's token, stored and published."""
    token = gw.get(f"/v1/apps/{app_id}/access_token").json()["access_token"]
    answer = requests.get(
        f"{gw.stack.sandbox.base_url}/cgi-bin/ticket/getticket",
        params={"access_token": token, "type": "jsapi"},
        timeout=5,
    ).json()
    assert answer["errcode"] == 0, answer
    wxtoken_set_kind(gw.stack, app_id, "jsapi", answer["ticket"], int(answer["expires_in"]))
    ticket: str = answer["ticket"]
    return ticket


def test_ticket_and_signed_jssdk_config_over_http(gateway: RunningGateway) -> None:
    """Before the ticket: 503 for both routes; after: the ticket served with its version and
    a wx.config whose signature the sandbox accepts; the access token is untouched."""
    app_id = gateway.stack.app_ids[0]
    before = gateway.get(f"/v1/apps/{app_id}/access_token").json()
    assert gateway.get(f"/v1/apps/{app_id}/tickets/jsapi").status_code in (404, 503)
    ticket = _provide_jsapi_ticket(gateway, app_id)
    wait_for(
        lambda: gateway.get(f"/v1/apps/{app_id}/tickets/jsapi").status_code == 200,
        timeout_s=20,
        message="the gateway serving the ticket",
    )
    served = gateway.get(f"/v1/apps/{app_id}/tickets/jsapi").json()
    assert served["ticket"] == ticket
    assert served["expires_in"] > 0
    assert served["version"] >= 1
    answer = gateway.get(f"/v1/apps/{app_id}/jssdk-config", params={"url": PAGE + "#/confirm"})
    assert answer.status_code == 200, answer.text
    config = answer.json()
    assert config["appId"] == app_id
    accepted = gateway.stack.sandbox.state.verify_signature(
        app_id,
        "jsapi",
        PAGE,
        str(config["nonceStr"]),
        str(config["timestamp"]),
        str(config["signature"]),
    )
    print(f"\n[gateway tickets] {app_id} jsapi v{served['version']} wx.config accepted: {accepted}")
    assert accepted
    after = gateway.get(f"/v1/apps/{app_id}/access_token").json()
    assert after["version"] >= before["version"]
    assert gateway.stack.sandbox.state.calls("getticket/jsapi", app_id) == 1


def test_ticket_routes_refuse_bad_input_over_http(gateway: RunningGateway) -> None:
    """Bad page URLs 422, unknown ticket types 404, no key 401, another app's key 403; the
    gateway still serves afterwards."""
    app_id = gateway.stack.app_ids[0]
    for url in ("", "/relative", "javascript:alert(1)", "https://h5.example.com/a b"):
        answer = gateway.get(f"/v1/apps/{app_id}/jssdk-config", params={"url": url})
        assert answer.status_code == 422, (url, answer.text)
        assert answer.json()["reason"]
    assert gateway.get(f"/v1/apps/{app_id}/jssdk-config").status_code == 422
    assert gateway.get(f"/v1/apps/{app_id}/tickets/nope").status_code == 404
    assert gateway.get(f"/v1/apps/{app_id}/tickets/jsapi", role=None).status_code == 401
    assert gateway.get(f"/v1/apps/{app_id}/tickets/jsapi", role="stranger").status_code == 403
    assert (
        gateway.get(
            f"/v1/apps/{app_id}/jssdk-config", role="stranger", params={"url": PAGE}
        ).status_code
        == 403
    )
    assert gateway.get(f"/v1/apps/{app_id}/access_token").status_code == 200
