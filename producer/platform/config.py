"""The platforms file (`WXTOKEN_PLATFORMS_FILE`): one `[[platforms]]` table per third-party
platform, its values from the environment or from files, like the apps file's secrets.

    [[platforms]]
    component_appid = "wx1234567890abcdef"
    secret_env = "WX_PLATFORM_SECRET"              # or: secret_file = "/run/secrets/..."
    token_env = "WX_PLATFORM_TOKEN"                # or: token_file = ...
    encoding_aes_key_env = "WX_PLATFORM_AES_KEY"   # or: encoding_aes_key_file = ...
    authorizer_tickets = ["jsapi"]                 # optional: tickets kept per authorizer

Each value comes from exactly one of its `*_env` / `*_file`; a relative file is relative to
the platforms file's folder. The callback receiver loads only the token and the
EncodingAESKey (`with_secret=False`): the component secret is named in the file but never
read there. Values are held as `SecretStr`; no error message repeats one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from consumer_lib.errors import ConfigError
from consumer_lib.wire.kinds import TICKET_NAMES, TokenKind
from producer.config_files import read_toml, secret_from
from producer.platform.crypto import ENCODING_AES_KEY

#: A component appid as WeChat issues them: "wx" and 16 letters or digits.
COMPONENT_APPID = r"^wx[A-Za-z0-9]{16}$"
#: WeChat's rule for the message-check token: 3-32 letters and digits.
_TOKEN = re.compile(r"^[A-Za-z0-9]{3,32}$")
_ENV_NAME = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]

Value = Literal["secret", "token", "encoding_aes_key"]


class PlatformConfig(BaseModel):
    """One platform as the receiver (and the producer) hold it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    component_appid: Annotated[str, Field(pattern=COMPONENT_APPID)]
    token: SecretStr
    encoding_aes_key: SecretStr
    #: None when loaded without it (the receiver never needs the component secret).
    secret: SecretStr | None = None
    #: The tickets the producer keeps for each authorizer, besides its access token.
    authorizer_tickets: tuple[TokenKind, ...] = ()


class _Entry(BaseModel):
    """A `[[platforms]]` table as written, before its values are read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    component_appid: Annotated[str, Field(pattern=COMPONENT_APPID)]
    secret_env: _ENV_NAME | None = None
    secret_file: Path | None = None
    token_env: _ENV_NAME | None = None
    token_file: Path | None = None
    encoding_aes_key_env: _ENV_NAME | None = None
    encoding_aes_key_file: Path | None = None
    authorizer_tickets: list[Literal["jsapi", "wx_card"]] = []


def load_platforms(
    path: Path, *, environ: Mapping[str, str] | None = None, with_secret: bool = True
) -> list[PlatformConfig]:
    """Read and check the platforms file; any problem raises one-line `ConfigError`."""
    environ = os.environ if environ is None else environ
    data = read_toml(path, what="platforms file")
    return parse_platforms(
        data, source=str(path), environ=environ, base_dir=path.parent, with_secret=with_secret
    )


def parse_platforms(
    data: dict[str, Any],
    *,
    source: str,
    environ: Mapping[str, str],
    base_dir: Path | None = None,
    with_secret: bool = True,
) -> list[PlatformConfig]:
    """Turn parsed TOML into platform configs, reading each value it needs."""
    unknown = set(data) - {"platforms"}
    if unknown:
        raise ConfigError(f"platforms file {source}: unknown top-level keys {sorted(unknown)}")
    tables = data.get("platforms")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"platforms file {source}: needs at least one [[platforms]] table")
    platforms: list[PlatformConfig] = []
    for index, table in enumerate(tables):
        where = f"platforms file {source}: platforms[{index}]"
        named = table.get("component_appid") if isinstance(table, dict) else None
        if isinstance(named, str) and re.fullmatch(COMPONENT_APPID, named):
            where = f"{where} ({named})"
        try:
            entry = _Entry.model_validate(table)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'table'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ConfigError(f"{where}: {problems}") from None
        if any(p.component_appid == entry.component_appid for p in platforms):
            raise ConfigError(f"{where}: duplicate component_appid")
        read = _Reader(entry, where=where, environ=environ, base_dir=base_dir)
        secret: SecretStr | None = None
        if with_secret:
            secret = read("secret")
        else:
            read.named("secret")  # one of secret_env / secret_file must be there; not read
        token = read("token")
        if not _TOKEN.fullmatch(token.get_secret_value()):
            raise ConfigError(f"{where}: the token is 3-32 letters and digits")
        key = read("encoding_aes_key")
        length = len(key.get_secret_value())
        if not ENCODING_AES_KEY.fullmatch(key.get_secret_value()):
            raise ConfigError(
                f"{where}: the EncodingAESKey is 43 characters of A-Z a-z 0-9 + / "
                f"(this one has {length})"
            )
        platforms.append(
            PlatformConfig(
                component_appid=entry.component_appid,
                token=token,
                encoding_aes_key=key,
                secret=secret,
                authorizer_tickets=tuple(
                    dict.fromkeys(TICKET_NAMES[name] for name in entry.authorizer_tickets)
                ),
            )
        )
    return platforms


class _Reader:
    """Reads one value of an entry from its `*_env` or `*_file`."""

    def __init__(
        self, entry: _Entry, *, where: str, environ: Mapping[str, str], base_dir: Path | None
    ) -> None:
        self._entry, self._where, self._environ, self._base_dir = entry, where, environ, base_dir

    def named(self, value: Value) -> tuple[str | None, Path | None]:
        env: str | None = getattr(self._entry, f"{value}_env")
        file: Path | None = getattr(self._entry, f"{value}_file")
        if (env is None) == (file is None):
            raise ConfigError(f"{self._where}: give exactly one of {value}_env, {value}_file")
        if file is not None and self._base_dir is not None:
            file = self._base_dir / file
        return env, file

    def __call__(self, value: Value) -> SecretStr:
        env, file = self.named(value)
        return secret_from(
            env=env, file=file, value=value, where=self._where, environ=self._environ
        )
