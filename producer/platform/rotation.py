"""Key rotation: re-seal every sealed secret of the registry under the key file's first key.

Put a new key first in `WXTOKEN_PLATFORM_KEY_FILE`, keep the old ones below it, restart the
producers (they now seal with the new key and open with all), run `rotate_keys` (from a
shell: `python -m producer.platform.rotation`, with the producer's two WXTOKEN_PLATFORM_*
variables), and drop the old lines once it reports nothing left under them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from consumer_lib.errors import ConfigError, WxTokenError
from producer.platform.database import create_engine, database_url, translated
from producer.platform.errors import SealBroken
from producer.platform.schema import (
    app_secret_place,
    authorizers,
    stored_apps,
    ticket_place,
    tickets,
    token_place,
)
from producer.platform.sealing import SETTING as KEY_SETTING
from producer.platform.sealing import Sealed, Sealer

#: (table, sealed column, key id column, place of a row, key columns)
_SEALED: tuple[tuple[sa.Table, str, str, Callable[..., bytes], tuple[str, ...]], ...] = (
    (tickets, "ticket_sealed", "ticket_key_id", ticket_place, ("component_appid",)),
    (
        authorizers,
        "refresh_token_sealed",
        "refresh_token_key_id",
        token_place,
        ("component_appid", "authorizer_appid"),
    ),
    (stored_apps, "secret_sealed", "secret_key_id", app_secret_place, ("app_id",)),
)


@dataclass
class RotationReport:
    #: Values re-sealed under the first key.
    resealed: int = 0
    #: Rows whose value did not open (a key the file lacks, or a broken value), left as they
    #: were: "table: key columns: why".
    unopened: list[str] = field(default_factory=list)


def rotate_keys(engine: sa.Engine, sealer: Sealer, *, batch: int = 500) -> RotationReport:
    """Re-seal every value not under `sealer`'s first key, a batch per transaction; a row
    changed meanwhile (already re-sealed by a writer) is left to that writer."""
    report = RotationReport()
    current = sealer.sealing_key_id
    for table, column, key_id, place_of, keys in _SEALED:
        key_columns = [table.c[k] for k in keys]
        last: tuple[str, ...] | None = None
        while True:
            query = (
                sa.select(*key_columns, table.c[column], table.c[key_id])
                .where(table.c[key_id].is_not(None), table.c[key_id] != current)
                .order_by(*key_columns)
                .limit(batch)
            )
            if last is not None:
                query = query.where(sa.tuple_(*key_columns) > sa.tuple_(*last))
            with translated("rotating keys"), engine.begin() as connection:
                rows = connection.execute(query).all()
                for row in rows:
                    values = tuple(row._mapping[k] for k in keys)
                    old = Sealed(row._mapping[column], row._mapping[key_id])
                    where = place_of(*values)
                    try:
                        plain = sealer.open(old, where)
                    except SealBroken as exc:
                        report.unopened.append(f"{table.name}: {'/'.join(values)}: {exc}")
                        continue
                    new = sealer.seal(plain, where)
                    update = (
                        table.update()
                        .where(*(c == v for c, v in zip(key_columns, values, strict=True)))
                        .where(table.c[key_id] == old.key_id, table.c[column] == old.blob)
                        .values({column: new.blob, key_id: new.key_id})
                    )
                    report.resealed += connection.execute(update).rowcount
            if len(rows) < batch:
                break
            last = tuple(rows[-1]._mapping[k] for k in keys)
    return report


def main(environ: dict[str, str] | None = None) -> int:
    """`python -m producer.platform.rotation`: rotate the database that
    WXTOKEN_PLATFORM_DB_URL names with the keys of WXTOKEN_PLATFORM_KEY_FILE. Exit 0 when
    every value is under the first key, 1 when some did not open (listed), 2 on a bad
    setting, 3 when the database did not answer."""
    env = os.environ if environ is None else environ
    try:
        url = database_url(env.get("WXTOKEN_PLATFORM_DB_URL", ""))
        key_file = env.get(KEY_SETTING)
        if not key_file:
            raise ConfigError(f"{KEY_SETTING} must be set")
        sealer = Sealer.from_file(Path(key_file))
    except ConfigError as exc:
        print(f"rotation: configuration error: {exc}", file=sys.stderr)
        return 2
    engine = create_engine(url)
    try:
        report = rotate_keys(engine, sealer)
    except WxTokenError as exc:
        print(f"rotation: {exc}", file=sys.stderr)
        return 3
    finally:
        engine.dispose()
    print(f"re-sealed {report.resealed} value(s) under key {sealer.sealing_key_id}")
    for line in report.unopened:
        print(f"not opened: {line}")
    return 1 if report.unopened else 0


if __name__ == "__main__":
    sys.exit(main())
