"""The public surfaces are exactly what `__all__` lists, and each name is reachable: the
surface cannot grow (or lose a name) by accident."""

from __future__ import annotations

import importlib

import pytest

SURFACES = {
    "consumer_lib": {
        "BrokerError",
        "ClientSettings",
        "ClientStats",
        "ConfigError",
        "InvalidUpdate",
        "Platform",
        "ReportOutcome",
        "StoreError",
        "TokenClient",
        "TokenKind",
        "TokenSource",
        "TokenUnavailable",
        "TokenUpdate",
        "WxTokenError",
        "mask",
    },
    "consumer_lib.transport": {
        "AttachableTransport",
        "OnBody",
        "TokenReportingTransport",
        "Transport",
    },
    "producer": {"AppConfig", "ProducerService", "ProducerSettings", "TokenApi", "load_apps"},
}


@pytest.mark.parametrize("module_name", sorted(SURFACES))
def test_all_is_exact_and_every_name_resolves(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == SURFACES[module_name]
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError):
        module.NoSuchName  # noqa: B018 - the attribute access is the test
