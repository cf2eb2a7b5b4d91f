#!/usr/bin/env python3
"""Pin every pulled image by digest: `make pin-images`.

Rewrites each `image: name:tag` of compose.yaml and the Dockerfile's
`ARG PYTHON_IMAGE=name:tag` to `name:tag@sha256:<digest>`, the digest of the tag's
multi-platform manifest list as the registry serves it now (`docker buildx imagetools
inspect`). An image already pinned is resolved again from its tag, so re-running after a
tag bump updates the digest. Needs docker with buildx and registry access; standard library
only. Review the diff, rebuild, test, commit.

    python3 deploy/pin_images.py [--check]    # --check: exit 1 if anything is unpinned
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = (ROOT / "compose.yaml", ROOT / "Dockerfile")
# `image: ref` in compose, `ARG PYTHON_IMAGE=ref` in the Dockerfile.
_REFERENCE = re.compile(
    r"(?P<lead>^\s*image:\s*|^ARG PYTHON_IMAGE=)"
    r"(?P<ref>[\w./-]+:[\w.-]+)(?:@sha256:[0-9a-f]{64})?\s*$",
    re.MULTILINE,
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def registry_digest(ref: str) -> str:
    """The digest the registry serves for `ref` now (docker buildx imagetools inspect)."""
    docker = shutil.which("docker")
    if docker is None:
        raise RuntimeError("docker is not installed")
    result = subprocess.run(
        [docker, "buildx", "imagetools", "inspect", ref, "--format", "{{.Manifest.Digest}}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    digest = result.stdout.strip()
    if result.returncode != 0 or not _DIGEST.fullmatch(digest):
        raise RuntimeError(f"cannot resolve {ref}: {result.stderr.strip() or digest!r}")
    return digest


def pin(text: str, resolve: Callable[[str], str]) -> str:
    """`text` with every image reference pinned to the digest `resolve` gives its tag."""

    def replace(match: re.Match[str]) -> str:
        return f"{match['lead']}{match['ref']}@{resolve(match['ref'])}"

    return _REFERENCE.sub(replace, text)


def unpinned(text: str) -> list[str]:
    """The image references of `text` without a digest."""
    return [m["ref"] for m in _REFERENCE.finditer(text) if "@sha256:" not in m[0]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report unpinned images")
    args = parser.parse_args(argv)
    if args.check:
        missing = [f"{p.name}: {ref}" for p in FILES for ref in unpinned(p.read_text())]
        for line in missing:
            print(f"not pinned by digest: {line}", file=sys.stderr)
        return 1 if missing else 0
    try:
        for path in FILES:
            path.write_text(pin(path.read_text(), registry_digest))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"pin_images: {exc}", file=sys.stderr)
        return 1
    print("pinned; review `git diff`, rebuild and test before committing", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
