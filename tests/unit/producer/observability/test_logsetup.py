"""The entry points' logging (`wxtoken-producer`, `wxtoken-gateway`): one helper for both."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from producer.observability.logsetup import configure_logging


@pytest.fixture
def third_party_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in ("pika", "urllib3")}
    root_level = logging.getLogger().level
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().setLevel(root_level)


@pytest.mark.usefixtures("third_party_levels")
def test_pika_is_silenced_and_urllib3_never_logs_request_urls() -> None:
    """At INFO pika's reconnect tracebacks are hidden (our services say "broker unavailable"
    once) and urllib3's DEBUG lines, which hold the classic API's URL with the secret, too."""
    configure_logging("INFO")
    assert not logging.getLogger("pika").isEnabledFor(logging.ERROR)
    assert not logging.getLogger("urllib3").isEnabledFor(logging.DEBUG)


@pytest.mark.usefixtures("third_party_levels")
def test_debug_shows_pikas_own_account_but_still_no_request_urls() -> None:
    logging.getLogger("pika").setLevel(logging.NOTSET)
    configure_logging("DEBUG")
    assert logging.getLogger("pika").isEnabledFor(logging.ERROR)
    assert not logging.getLogger("urllib3").isEnabledFor(logging.DEBUG)
