"""The parts of a Redis or broker URL that redis-py or pika would drop without a word.

`redis://127.0.0.1:6379/notadb` connects to database 0 (redis-py ignores a path that is not
a number, and reads `/1/2` as 12); `amqp://host/prod/extra` uses vhost `prod`; a
`#fragment` (a `#` left unencoded in a password), an empty `?db=` and the second of two
`?heartbeat=` are dropped; pika options that our connection code sets itself (heartbeat,
timeouts, attempts, client properties) would be overwritten. Each such URL is refused at
settings load, in words that never repeat the URL (it may hold a password):

- Redis (`redis://`, `rediss://`): the path is empty or `/DB` (a number); `unix://`: a
  socket path and no host; the query only redis-py's own options, each once, with a value
  (`db` in the query and the path must agree).
- AMQP: the path is empty or `/VHOST` (one segment: a `/` inside a vhost is `%2F`); the
  query only pika's options we do not set ourselves, each once, with a value; a user
  comes with a password.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import SplitResult, parse_qsl, urlsplit

from redis.connection import URL_QUERY_ARGUMENT_PARSERS as _REDIS_PARSERS

#: redis-py's URL options and the function that reads each (the rest go to the
#: connection class and fail at the first command, or are silently dropped when blank).
URL_QUERY_ARGUMENT_PARSERS: dict[str, Callable[[str], object]] = dict(_REDIS_PARSERS)  # type: ignore[arg-type]

#: pika's URL options that `amqp.params.connection_parameters` leaves alone.
AMQP_QUERY_OPTIONS = frozenset({"channel_max", "frame_max", "locale", "tcp_options"})
#: pika's URL options our connection code sets itself (the URL's value would be lost).
AMQP_OPTIONS_WE_SET = frozenset(
    {
        "heartbeat",
        "socket_timeout",
        "stack_timeout",
        "blocked_connection_timeout",
        "connection_attempts",
        "retry_delay",
        "client_properties",
    }
)
_DB_PATH = re.compile(r"^/(\d{1,9})/?$")
_NO_FRAGMENT = "a #fragment is not read (a '#' in a password must be written %23)"


def _query(parts: SplitResult) -> dict[str, str]:
    """The query's options by name; a repeated or blank one is a `ValueError`."""
    found: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in found:
            raise ValueError(f"URL option {name!r} is given twice (only the first would count)")
        if not value:
            raise ValueError(f"URL option {name!r} has no value (it would be ignored)")
        found[name] = value
    return found


def check_redis_parts(url: str) -> None:
    """Refuse what redis-py would ignore in a `redis://`, `rediss://` or `unix://` URL."""
    if "#" in url:
        raise ValueError(_NO_FRAGMENT)
    parts = urlsplit(url)
    options = _query(parts)
    for name, value in options.items():
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
        if parser is None:
            known = ", ".join(sorted(n for n in URL_QUERY_ARGUMENT_PARSERS if n[:3] != "ssl"))
            raise ValueError(f"unknown URL option {name!r} (redis-py reads {known})")
        try:
            parser(value)
        except (TypeError, ValueError):
            raise ValueError(f"URL option {name!r} has a bad value") from None
    if parts.scheme == "unix":
        if parts.netloc.rpartition("@")[2]:
            raise ValueError("a unix:// URL names a socket path, not a host: unix:///path?db=N")
        if not parts.path.strip("/"):
            raise ValueError("no socket path: the form is unix:///path/to/redis.sock?db=N")
        return
    if parts.path in ("", "/"):
        return
    match = _DB_PATH.match(parts.path)
    if match is None:
        raise ValueError("the path must be /DB, a database number (redis-py would use 0)")
    if "db" in options and int(options["db"]) != int(match.group(1)):
        raise ValueError("the database in the path and in ?db= differ")


def check_amqp_parts(url: str) -> None:
    """Refuse what pika (or our connection code) would ignore in one AMQP URL."""
    if "#" in url:
        raise ValueError(_NO_FRAGMENT)
    parts = urlsplit(url)
    if parts.username is not None and parts.password is None:
        raise ValueError("a user without a password: the form is amqp://user:password@host")
    if parts.path.count("/") > 1:
        raise ValueError(
            "the path is /VHOST, one segment (pika would drop the rest): a '/' inside the "
            "vhost is written %2F"
        )
    for name in _query(parts):
        if name in AMQP_OPTIONS_WE_SET:
            raise ValueError(
                f"URL option {name!r} is set by wxtoken from its own settings (the URL's "
                "value would be overwritten): remove it"
            )
        if name not in AMQP_QUERY_OPTIONS:
            known = ", ".join(sorted(AMQP_QUERY_OPTIONS))
            raise ValueError(f"unknown URL option {name!r} (pika reads {known} from a URL)")
