"""Reading the producer's TOML files (the apps file, the platforms file) and the secrets
they name: each secret comes from an environment variable (`*_env`) or a file (`*_file`).

Every problem is one `ConfigError` line naming the file and entry (`where`), never the
secret itself.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from consumer_lib.errors import ConfigError


def read_toml(path: Path, *, what: str) -> dict[str, Any]:
    """The TOML document at `path` (`what`: "apps file", ...)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: not valid TOML ({exc})") from None


def secret_from(
    *,
    env: str | None,
    file: Path | None,
    value: str,
    where: str,
    environ: Mapping[str, str],
) -> SecretStr:
    """The secret `value` ("secret", "token", ...) from the variable `env` or the `file`
    (exactly one given): stripped, one word of printable characters."""
    if env is not None:
        text = environ.get(env, "")
        if not text.strip():
            # Variable names are upper case; anything else may be a secret pasted by mistake.
            shown = env if env.isupper() and len(env) <= 64 else f"named by {value}_env"
            raise ConfigError(f"{where}: environment variable {shown} is not set")
    else:
        assert file is not None
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc.__class__.__name__
            raise ConfigError(f"{where}: cannot read {value}_file {file} ({reason})") from None
        if not text.strip():
            raise ConfigError(f"{where}: {value}_file {file} is empty")
    return checked_secret(text, value=value, where=where)


def checked_secret(text: str, *, value: str, where: str) -> SecretStr:
    """`text` stripped, refused when empty or with whitespace or control characters inside."""
    text = text.strip()
    if not text or any(c.isspace() for c in text) or not text.isprintable():
        raise ConfigError(f"{where}: the {value} is empty or has whitespace inside")
    return SecretStr(text)
