"""Sealing the platform's secrets at rest: the key file, AES-GCM bound to a place, rotation's
key order."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from consumer_lib.errors import ConfigError
from producer.platform.db.sealing import Sealed, Sealer, key_id, new_key_line, place
from producer.platform.errors import SealBroken


def _key_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "platform.keys"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_key_file_holds_base64_keys_the_first_seals_all_open(tmp_path: Path) -> None:
    """Comments and blank lines are skipped; the first key seals; a value sealed under the
    second still opens."""
    first, second = new_key_line(), new_key_line()
    old = Sealer([base64.b64decode(second)])
    sealed_before = old.seal("refresh-token", place("t", "c", "row"))
    sealer = Sealer.from_file(_key_file(tmp_path, "# newest first", first, "", second))
    assert sealer.sealing_key_id == key_id(base64.b64decode(first))
    assert sealer.key_ids == [key_id(base64.b64decode(k)) for k in (first, second)]
    assert sealer.open(sealed_before, place("t", "c", "row")) == "refresh-token"
    assert sealer.seal("x", b"p").key_id == sealer.sealing_key_id


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), "holds no key"),
        (("not base64!",), "line 1 is not base64"),
        (("# c", base64.b64encode(b"short").decode()), "line 2 holds 5 bytes, not 32"),
    ],
)
def test_a_bad_key_file_is_a_config_error_naming_the_line(
    tmp_path: Path, lines: tuple[str, ...], message: str
) -> None:
    """An empty file, a line that is not base64 or a key of the wrong size are refused."""
    with pytest.raises(ConfigError, match=message):
        Sealer.from_file(_key_file(tmp_path, *lines))


def test_a_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    """The setting and the path are named."""
    with pytest.raises(ConfigError, match="WXTOKEN_PLATFORM_KEY_FILE: cannot read"):
        Sealer.from_file(tmp_path / "absent")


def test_a_sealed_value_opens_only_in_its_place_and_unaltered() -> None:
    """Another row's place, a flipped bit or an unknown key id: SealBroken, never a wrong
    plaintext; the plaintext is not in the blob."""
    sealer = Sealer([os.urandom(32)])
    here = place("platform_authorizers", "refresh_token_sealed", "wxc1", "wxa1")
    sealed = sealer.seal("REFRESH-SECRET", here)
    assert b"REFRESH-SECRET" not in sealed.blob
    assert sealer.open(sealed, here) == "REFRESH-SECRET"
    elsewhere = place("platform_authorizers", "refresh_token_sealed", "wxc1", "wxa2")
    with pytest.raises(SealBroken, match="another row"):
        sealer.open(sealed, elsewhere)
    flipped = bytes([sealed.blob[0] ^ 1]) + sealed.blob[1:]
    with pytest.raises(SealBroken):
        sealer.open(Sealed(flipped, sealed.key_id), here)
    with pytest.raises(SealBroken, match="does not hold"):
        sealer.open(Sealed(sealed.blob, "0123456789abcdef"), here)


def test_places_are_unambiguous() -> None:
    """Length-prefixed parts: ("ab", "c") and ("a", "bc") are different places."""
    assert place("ab", "c") != place("a", "bc")
    assert place("a", "b") == place("a", "b")
