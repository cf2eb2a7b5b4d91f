"""GatewaySettings and the producer's metrics settings refuse garbage in one line."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from consumer_lib import ConfigError
from consumer_lib.settings import load_settings
from ops.gateway import GatewaySettings
from producer.settings import ProducerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("WXTOKEN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults(tmp_path: Path) -> None:
    """Only the keys file is required; the port is the origin server's."""
    settings = load_settings(GatewaySettings, gateway_keys_file=tmp_path / "keys.json")
    assert settings.gateway_port == 8777
    assert settings.gateway_host == "127.0.0.1"
    assert not settings.gateway_legacy_anonymous


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({}, "WXTOKEN_GATEWAY_KEYS_FILE"),
        ({"WXTOKEN_GATEWAY_PORT": "70000"}, "WXTOKEN_GATEWAY_PORT"),
        ({"WXTOKEN_GATEWAY_PORT": "http"}, "WXTOKEN_GATEWAY_PORT"),
        ({"WXTOKEN_GATEWAY_RATE_PER_S": "0"}, "WXTOKEN_GATEWAY_RATE_PER_S"),
        ({"WXTOKEN_GATEWAY_MAX_BODY_BYTES": "10"}, "WXTOKEN_GATEWAY_MAX_BODY_BYTES"),
        ({"WXTOKEN_GATEWAY_OPERATOR": "has space"}, "WXTOKEN_GATEWAY_OPERATOR"),
        ({"WXTOKEN_GATEWAY_TLS_CERT_FILE": "/nonexistent.pem"}, "WXTOKEN_GATEWAY_TLS_CERT_FILE"),
    ],
)
def test_garbage_is_one_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variables: dict[str, str], named: str
) -> None:
    """Each bad value is a ConfigError that names its variable."""
    if "WXTOKEN_GATEWAY_KEYS_FILE" not in variables and variables:
        monkeypatch.setenv("WXTOKEN_GATEWAY_KEYS_FILE", str(tmp_path / "keys.json"))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        load_settings(GatewaySettings)


def test_tls_files_go_together(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A certificate without its key, or a client CA without a certificate, is refused."""
    pem = tmp_path / "x.pem"
    pem.write_text("not used")
    monkeypatch.setenv("WXTOKEN_GATEWAY_KEYS_FILE", str(tmp_path / "keys.json"))
    monkeypatch.setenv("WXTOKEN_GATEWAY_TLS_CERT_FILE", str(pem))
    with pytest.raises(ConfigError, match="go together"):
        load_settings(GatewaySettings)
    monkeypatch.delenv("WXTOKEN_GATEWAY_TLS_CERT_FILE")
    monkeypatch.setenv("WXTOKEN_GATEWAY_TLS_CLIENT_CA_FILE", str(pem))
    with pytest.raises(ConfigError, match="mTLS"):
        load_settings(GatewaySettings)


@pytest.mark.parametrize("port", ["-1", "65536", "nine"])
def test_producer_metrics_port_garbage(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, port: str
) -> None:
    """WXTOKEN_METRICS_PORT must be a port number."""
    monkeypatch.setenv("WXTOKEN_APPS_FILE", str(tmp_path / "apps.toml"))
    monkeypatch.setenv("WXTOKEN_METRICS_PORT", port)
    with pytest.raises(ConfigError, match="WXTOKEN_METRICS_PORT"):
        load_settings(ProducerSettings)


def test_metrics_are_served_on_a_listener_of_their_own(tmp_path: Path) -> None:
    """`WXTOKEN_GATEWAY_METRICS_PORT` serves /metrics, /healthz and /readyz on loopback by
    default; without it no listener is opened (issue 18, item 10)."""
    from ops.gateway._wiring import start_metrics_listener

    gateway = _MetricsGateway()
    keys = tmp_path / "keys.json"
    off = load_settings(GatewaySettings, gateway_keys_file=keys)
    assert off.gateway_metrics_port is None
    assert start_metrics_listener(off, gateway) is None  # type: ignore[arg-type]
    on = load_settings(GatewaySettings, gateway_keys_file=keys, gateway_metrics_port=0)
    assert on.gateway_metrics_host == "127.0.0.1"
    server = start_metrics_listener(on, gateway)  # type: ignore[arg-type]
    assert server is not None
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:  # noqa: S310
            assert answer.read() == b"wxtoken_gateway_keys 1.0\n"
        with urllib.request.urlopen(base + "/readyz", timeout=5) as answer:  # noqa: S310
            assert answer.status == 200
    finally:
        server.close()


def test_a_metrics_port_without_prometheus_client_is_a_config_error(tmp_path: Path) -> None:
    from ops.gateway._wiring import start_metrics_listener

    gateway = _MetricsGateway()
    gateway.metrics = None
    settings = load_settings(
        GatewaySettings, gateway_keys_file=tmp_path / "keys.json", gateway_metrics_port=0
    )
    with pytest.raises(ConfigError, match="WXTOKEN_GATEWAY_METRICS_PORT needs prometheus"):
        start_metrics_listener(settings, gateway)  # type: ignore[arg-type]


class _MetricsGateway:
    """What the metrics listener reads of a `Gateway`."""

    def __init__(self) -> None:
        self.metrics: Callable[[], tuple[bytes, str]] | None = lambda: (
            b"wxtoken_gateway_keys 1.0\n",
            "text/plain; version=0.0.4",
        )
        self.view = SimpleNamespace(valid_count=lambda: 1)
