"""The producer's Lua code, shipped as one Redis Functions library (Redis 7.0+).

The bodies live in producer/store/lua/*.lua (package data). `library_code()` joins them into the
library `wxtoken`: the shared helpers (store_versions.lua) once at the top, then each body
registered as a function `wxtoken_<name>` whose parameters are named KEYS and ARGV, so a body
reads like the script it was. `wxtoken_version` answers the library's version (a hash of its
code), so a process finds out whether Redis holds the code it was built with.

Why functions, not EVAL: a login that may `SCRIPT LOAD` + `EVALSHA` may run any Lua (a
`while true do end` makes Redis answer BUSY to every client). With functions, a role is
granted `FCALL` of the named functions only (`+fcall|wxtoken_lease_acquire` in
deploy/redis/users.template.acl) and no EVAL, EVALSHA, SCRIPT LOAD or FUNCTION LOAD: the
only Lua it can run is the code an admin loaded. The commands inside a function are still
checked against the caller's ACL.

Who loads the library: `wxtoken redis-functions` (the admin step, as `wxtoken-admin`), or
any process at its first call when its login may `FUNCTION LOAD` (an unrestricted Redis:
development, tests, `make demo`). A process whose login may not, and finds the library
missing or of another version, fails its calls with `FunctionsNotLoaded` (a Redis error, so
every caller's handling of a Redis failure applies) naming the admin step.

    functions = FunctionLibrary(client)
    acquire = functions.function("lease_acquire")
    acquire(keys=[...], args=[...])            # FCALL wxtoken_lease_acquire n keys... args...
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any, Protocol

import redis

LIBRARY = "wxtoken"
#: Function name (without the `wxtoken_` prefix) -> its body in producer/store/lua.
BODIES: dict[str, str] = {
    "lease_acquire": "lease_acquire.lua",
    "lease_release": "lease_release.lua",
    "store_next_version": "store_next_version.lua",
    "store_compare_and_set": "store_compare_and_set.lua",
    "store_delete_if_equal": "store_delete_if_equal.lua",
    "budget_spend": "budget_spend.lua",
    "ticket_budget_spend": "ticket_budget_spend.lua",
}
#: Loaded once at the top of the library: helpers the store's bodies use.
_HELPERS = ("store_versions.lua",)
VERSION_FUNCTION = f"{LIBRARY}_version"
ADMIN_STEP = "run `wxtoken redis-functions` as wxtoken-admin (deploy/redis/README.md)"


def function_name(name: str) -> str:
    """lease_acquire -> wxtoken_lease_acquire, the name FCALL and the ACL use."""
    if name not in BODIES:
        raise KeyError(f"no Redis function {name!r} in the {LIBRARY} library")
    return f"{LIBRARY}_{name}"


def load_lua(*names: str) -> str:
    """The text of the named files of producer/store/lua, joined in order."""
    return _load_lua(names)


@functools.cache
def _load_lua(names: tuple[str, ...]) -> str:
    folder = resources.files(__package__ or "producer").joinpath("lua")
    return "\n".join(folder.joinpath(name).read_text(encoding="utf-8") for name in names)


@functools.cache
def _library() -> tuple[str, str]:
    parts = [load_lua(*_HELPERS)]
    for name, body in BODIES.items():
        parts.append(
            f"redis.register_function('{function_name(name)}', function(KEYS, ARGV)\n"
            f"{load_lua(body)}\nend)"
        )
    code = "\n".join(parts)
    version = hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]
    header = f"#!lua name={LIBRARY}\n"
    version_fn = f"redis.register_function('{VERSION_FUNCTION}', function() return '{version}' end)"
    return header + code + "\n" + version_fn + "\n", version


def library_code() -> str:
    """The library's code, for `FUNCTION LOAD REPLACE`."""
    return _library()[0]


def library_version() -> str:
    """What `FCALL wxtoken_version 0` answers once this code is loaded."""
    return _library()[1]


class FunctionsNotLoaded(redis.exceptions.ResponseError):
    """Redis lacks this code's library (or holds another version) and this login may not
    load it."""


def is_missing_function(exc: BaseException) -> bool:
    """Whether a Redis error says the function called does not exist."""
    return isinstance(exc, redis.exceptions.ResponseError) and "function not found" in (
        str(exc).lower()
    )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def loaded_version(client: redis.Redis) -> str | None:
    """The version of the library Redis holds; None when it holds none."""
    try:
        return _text(client.fcall(VERSION_FUNCTION, 0))
    except redis.exceptions.ResponseError as exc:
        if is_missing_function(exc):
            return None
        raise


def load_library(client: redis.Redis) -> bool:
    """Load this code's library (`FUNCTION LOAD REPLACE`) unless Redis holds it already;
    True when loaded now. Raises what redis-py raises (NoPermissionError without the right)."""
    if loaded_version(client) == library_version():
        return False
    client.function_load(library_code(), replace=True)
    return True


class RedisScript(Protocol):
    """What runs one of the library's functions: `ReplicaWait` runs it in a pipeline."""

    def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any: ...

    def forget_loaded(self) -> None:
        """The library was found missing: check (and load) it again before the next call."""


class FunctionLibrary:
    """The library on one Redis client: checked (and loaded where the login may) before the
    first call, and again after a call finds a function missing (Redis restarted without
    its data, `FUNCTION FLUSH`)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._ready = False
        self._lock = threading.Lock()

    @property
    def client(self) -> redis.Redis:
        return self._client

    def function(self, name: str) -> RedisFunction:
        """A callable running `wxtoken_<name>` with FCALL."""
        return RedisFunction(self, function_name(name))

    def ensure(self) -> None:
        """Make sure Redis holds this code's library; `FunctionsNotLoaded` if it does not
        and this login may not load it."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            found = loaded_version(self._client)
            if found != library_version():
                try:
                    self._client.function_load(library_code(), replace=True)
                except redis.exceptions.NoPermissionError:
                    state = "lacks" if found is None else f"holds {found}, not"
                    raise FunctionsNotLoaded(
                        f"Redis {state} the {LIBRARY} functions {library_version()} "
                        f"and this login may not load them: {ADMIN_STEP}"
                    ) from None
            self._ready = True

    def forget_loaded(self) -> None:
        self._ready = False


class RedisFunction:
    """One function of the library, called like a redis-py `Script`:
    `fn(keys=[...], args=[...])`, or queued in a pipeline with `client=pipe`."""

    def __init__(self, library: FunctionLibrary, name: str) -> None:
        self._library = library
        self.name = name

    def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        self._library.ensure()
        if client is not None:  # a pipeline: the answer comes with its execute()
            return client.fcall(self.name, len(keys), *keys, *args)
        try:
            return self._library.client.fcall(self.name, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            if not is_missing_function(exc):
                raise
        # Lost since we checked (a restart without data, FUNCTION FLUSH): once more.
        self._library.forget_loaded()
        self._library.ensure()
        return self._library.client.fcall(self.name, len(keys), *keys, *args)

    def forget_loaded(self) -> None:
        self._library.forget_loaded()
