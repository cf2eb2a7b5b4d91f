"""`wxtoken keygen`: a new Ed25519 signing key pair."""

from __future__ import annotations

from pathlib import Path

import click

from consumer_lib.wire.signing import generate_keypair

from .context import CliError


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, writable=True, path_type=Path))
def keygen(path: Path) -> None:
    """Write a new Ed25519 signing key to PATH (mode 0600) and its public key to PATH.pub.

    Give PATH to the producer or an operator as WXTOKEN_SIGNING_KEY_FILE, and PATH.pub to
    every subscriber (and producer) in WXTOKEN_VERIFY_KEYS. Existing files are never
    overwritten.
    """
    try:
        private_path, public_path = generate_keypair(path)
    except FileExistsError as exc:
        raise click.UsageError(f"{exc.filename} exists; keys are never overwritten") from None
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename or path}: {exc.strerror}") from None
    click.echo(f"private key: {private_path} (keep it secret)\npublic key:  {public_path}")
