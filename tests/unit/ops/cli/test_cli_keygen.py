"""`wxtoken keygen`: a key pair with safe modes, never overwriting, clear errors."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from consumer_lib.wire.signing import UpdateCodec, load_private_key, load_public_keys
from ops.cli import main
from tests.unit._helpers import make_update


def test_keygen_writes_a_working_pair(tmp_path: Path) -> None:
    """The pair signs and verifies, the private key is 0600, and the output names both."""
    result = CliRunner().invoke(main, ["keygen", str(tmp_path / "ops.key")])
    assert result.exit_code == 0, result.output
    private_path, public_path = tmp_path / "ops.key", tmp_path / "ops.key.pub"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert str(public_path) in result.output
    signed = UpdateCodec(signer=load_private_key(private_path)).encode(make_update())
    assert UpdateCodec(verify_keys=load_public_keys([public_path])).decode(signed)


def test_keygen_never_overwrites_either_file(tmp_path: Path) -> None:
    """An existing public key file stops keygen before a private key is written."""
    (tmp_path / "ops.key.pub").write_text("keep me")
    result = CliRunner().invoke(main, ["keygen", str(tmp_path / "ops.key")])
    assert result.exit_code == 2
    assert "never overwritten" in result.output
    assert not (tmp_path / "ops.key").exists()
    assert (tmp_path / "ops.key.pub").read_text() == "keep me"


def test_keygen_into_a_missing_folder_is_one_line_exit_1(tmp_path: Path) -> None:
    """A folder that does not exist gives one error line and exit code 1."""
    result = CliRunner().invoke(main, ["keygen", str(tmp_path / "nope" / "ops.key")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: cannot write")
