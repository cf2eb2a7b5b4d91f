"""The relay's wiring: no Redis or broker, upstream settings checked in one line, `/readyz`
and a metric saying when the upstream is unreachable, overrides refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from consumer_lib import ConfigError
from consumer_lib._client.http_transport import GatewayStream
from consumer_lib.settings import load_settings
from consumer_lib.wire.signing import generate_keypair
from ops.gateway import GatewaySettings, add_key
from ops.gateway._routes import build_app
from ops.gateway._wiring import make_gateway

UPSTREAM_KEY = "wxgw_" + "u" * 43


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("WXTOKEN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def relay_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    _, public = generate_keypair(tmp_path / "k")
    key = add_key(tmp_path / "keys.json", "svc", apps=["wx*"], scopes=["read", "override"])
    for name, value in {
        "WXTOKEN_GATEWAY_KEYS_FILE": str(tmp_path / "keys.json"),
        "WXTOKEN_VERIFY_KEYS": str(public),
        # Nothing listens on port 1: a relay must not need Redis or the broker.
        "WXTOKEN_REDIS_URL": "redis://127.0.0.1:1/0",
        "WXTOKEN_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F",
        "WXTOKEN_GATEWAY_UPSTREAM_URL": "http://127.0.0.1:1",
        "WXTOKEN_GATEWAY_UPSTREAM_API_KEY": UPSTREAM_KEY,
    }.items():
        monkeypatch.setenv(name, value)
    return key


def test_a_relay_is_fed_by_its_upstream_and_says_when_it_is_unreachable(relay_env: str) -> None:
    gateway = make_gateway(load_settings(GatewaySettings))
    assert isinstance(gateway.client._subscriber, GatewayStream)
    assert gateway.overrider is None
    with TestClient(build_app(gateway)) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503  # nothing held yet
        assert ready.json()["upstream"] == "unreachable"
        assert gateway.metrics is not None  # served on the metrics listener, not here
        assert b"wxtoken_gateway_upstream_connected 0.0" in gateway.metrics()[0]
        override = http.post(
            "/v1/apps/wxapp1/access_token",
            headers={"Authorization": f"Bearer {relay_env}"},
            json={"access_token": "TOKEN-" + "z" * 30, "expires_in": 600},
        )
        assert override.status_code == 501
        assert UPSTREAM_KEY not in ready.text


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"WXTOKEN_GATEWAY_UPSTREAM_API_KEY": ""}, "WXTOKEN_GATEWAY_UPSTREAM_API_KEY"),
        ({"WXTOKEN_GATEWAY_UPSTREAM_URL": "redis://h"}, "WXTOKEN_GATEWAY_UPSTREAM_URL"),
        ({"WXTOKEN_TRUSTED_PUBLISHERS": "wxtoken-producer"}, "TRUSTED_PUBLISHERS"),
    ],
)
def test_bad_relay_settings_are_one_line_config_errors(
    relay_env: str, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named) as caught:
        make_gateway(load_settings(GatewaySettings))
    assert UPSTREAM_KEY not in str(caught.value)
    assert "\n" not in str(caught.value)
