"""Shared fixtures: a fake clock for unit tests, and per-test isolation on the real services.

Integration tests use the local Redis and RabbitMQ. When one is absent they are skipped,
except under `CI=true`, where an absent service is a failure: CI must run them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, settings

# Input generation on a cold, busy two-core machine is slow; that is not a failure.
settings.register_profile("wxtoken", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("wxtoken")

REDIS_URL = os.environ.get("WXTOKEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("WXTOKEN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class FakeClock:
    """A clock tests move by hand: `clock()` reads it, `advance(s)` moves it."""

    def __init__(self, now_s: float = 1_800_000_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1.0):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    """Skip (locally) or fail (under CI=true) when `url` does not answer."""
    if _reachable(url):
        return
    message = f"{name} is not reachable at {urlsplit(url).netloc}"
    if IN_CI:
        pytest.fail(f"{message}, and CI=true requires it")
    pytest.skip(message)


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", REDIS_URL)
    return REDIS_URL


@pytest.fixture
def amqp_url() -> str:
    require_service("RabbitMQ", AMQP_URL)
    return AMQP_URL


@pytest.fixture
def isolation() -> Iterator[dict[str, str]]:
    """A fresh key prefix and exchange name, so tests never see each other's tokens."""
    tag = uuid.uuid4().hex[:10]
    names = {"key_prefix": f"wxtest-{tag}", "exchange": f"wxtest.{tag}"}
    yield names
    _cleanup(names)


def _cleanup(names: dict[str, str]) -> None:
    """Delete the test's Redis keys and exchange, when the services are there."""
    if _reachable(REDIS_URL):
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{names['key_prefix']}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    if _reachable(AMQP_URL):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        connection.channel().exchange_delete(names["exchange"])
        connection.close()


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One Ed25519 key pair for the session: (private key file, public key file)."""
    from consumer_lib.wire.signing import generate_keypair

    return generate_keypair(tmp_path_factory.mktemp("keys") / "wxtoken-test.key")


@pytest.fixture
def service_env(
    redis_url: str, amqp_url: str, isolation: dict[str, str], signing_keys: tuple[Path, Path]
) -> dict[str, str]:
    """WXTOKEN_* variables pointing a child process at the test's isolated names, with
    signing on: producers and `wxtoken set` sign, subscribers verify."""
    private_key, public_key = signing_keys
    return {
        "WXTOKEN_REDIS_URL": redis_url,
        "WXTOKEN_AMQP_URL": amqp_url,
        "WXTOKEN_EXCHANGE": isolation["exchange"],
        "WXTOKEN_KEY_PREFIX": isolation["key_prefix"],
        "WXTOKEN_SIGNING_KEY_FILE": str(private_key),
        "WXTOKEN_VERIFY_KEYS": str(public_key),
    }


def uv_binary() -> str:
    """The pinned uv the Makefile installs in .tools/ (or one on PATH); skipped locally
    when absent, a failure under CI=true."""
    import shutil

    root = Path(__file__).resolve().parents[1]
    found = shutil.which("uv", path=str(root / ".tools" / "bin")) or shutil.which("uv")
    if found is None:
        message = "uv is not installed (the Makefile puts it in .tools/)"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true requires it")
        pytest.skip(message)
    return found
