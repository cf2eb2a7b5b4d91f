"""The wxtoken Redis Functions library (`producer.store.functions`) on fakeredis: loaded before the
first call where the login may, loaded again when Redis lost it or holds another version."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from producer.store.functions import (
    BODIES,
    VERSION_FUNCTION,
    FunctionLibrary,
    FunctionsNotLoaded,
    function_name,
    library_code,
    library_version,
    load_library,
)


def test_every_body_is_a_function_of_the_library() -> None:
    """Each producer/store/lua body is registered under its name, with the library's version."""
    client = fakeredis.FakeRedis()
    assert load_library(client)
    assert not load_library(client), "the same version is not loaded twice"
    listed = repr(client.function_list(library="wxtoken"))
    for name in [function_name(n) for n in BODIES] + [VERSION_FUNCTION]:
        assert f"b'{name}'" in listed, name
    assert client.fcall(VERSION_FUNCTION, 0) == library_version().encode()


def test_the_first_call_loads_the_library_and_a_lost_one_is_loaded_again() -> None:
    """Where the login may FUNCTION LOAD, a call finds the library missing (a fresh Redis,
    FUNCTION FLUSH) and loads it; the call's answer is the function's."""
    client = fakeredis.FakeRedis()
    release = FunctionLibrary(client).function("lease_release")
    client.set("lease", "1|me")
    assert release(keys=["lease"], args=["other"]) == 0
    client.function_flush()
    assert release(keys=["lease"], args=["me"]) == 1
    assert client.get("lease") is None


def test_another_version_is_replaced() -> None:
    """A library of another version (older code loaded it) is replaced before the first call."""
    client = fakeredis.FakeRedis()
    stale = library_code().replace(library_version(), "0" * 16)
    client.function_load(stale, replace=True)
    FunctionLibrary(client).function("lease_release")(keys=["x"], args=["me"])
    assert client.fcall(VERSION_FUNCTION, 0) == library_version().encode()


class _NoLoading(fakeredis.FakeRedis):
    """A login that may FCALL but not FUNCTION LOAD (as the shipped ACL users)."""

    def function_load(self, code: str, replace: bool | None = False) -> str:  # type: ignore[override]
        raise redis.exceptions.NoPermissionError("no permissions to run 'function|load'")


def test_a_login_that_may_not_load_names_the_admin_step() -> None:
    """Without the library and without the right to load it, the call fails, saying what to
    run; once an admin loaded it, the same object works."""
    server = fakeredis.FakeServer()
    client = _NoLoading(server=server)
    acquire = FunctionLibrary(client).function("lease_release")
    with pytest.raises(FunctionsNotLoaded, match="run `wxtoken redis-functions` as wxtoken-admin"):
        acquire(keys=["lease"], args=["me"])
    assert load_library(fakeredis.FakeRedis(server=server))  # the admin step
    assert acquire(keys=["lease"], args=["me"]) == 0
