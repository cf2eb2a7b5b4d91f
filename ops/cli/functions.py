"""`wxtoken redis-functions`: load the wxtoken Redis Functions library (the admin step).

The producer's, `wxtoken set`'s and an overriding gateway's Lua runs as the functions of
one library (`producer.store.functions`), called with FCALL; their Redis users may not load code.
An administrator loads it once per Redis (and after each upgrade that changes it) with a
login that may `FUNCTION LOAD`: `wxtoken-admin` of deploy/redis/users.template.acl, e.g.

    WXTOKEN_REDIS_URL=redis://wxtoken-admin:PASSWORD@redis:6379/0 wxtoken redis-functions

Redis keeps functions in its RDB/AOF and replicates them. Exit 0 when Redis holds this
code's library (loaded now or already), 1 when it could not be loaded.
"""

from __future__ import annotations

import click
import redis

from consumer_lib.redis_errors import translated
from producer.store.functions import LIBRARY, library_version, load_library

from .context import CliError, OpsContext


@click.command("redis-functions")
@click.pass_obj
def redis_functions(obj: OpsContext) -> None:
    """Load the wxtoken Redis Functions library unless Redis holds this version already
    (needs a login that may FUNCTION LOAD, such as wxtoken-admin)."""
    client = obj.get_redis()
    with translated(f"loading the {LIBRARY} functions", client):
        try:
            loaded = load_library(client)
        except redis.exceptions.NoPermissionError:
            raise CliError(
                f"this Redis login may not load the {LIBRARY} functions (FUNCTION LOAD): "
                "log in as wxtoken-admin (deploy/redis/README.md)"
            ) from None
    state = "loaded" if loaded else "already loaded"
    click.echo(f"{LIBRARY} functions {library_version()}: {state}")
