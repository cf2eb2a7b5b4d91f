"""The gateway's keys file, its key lookup, the rate limiter and `wxtoken gateway-key`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from consumer_lib import ConfigError
from ops.cli import main
from ops.gateway import KeyRing, Scope, add_key
from ops.gateway._ratelimit import RateLimiter
from tests.conftest import FakeClock


def test_added_key_is_found_and_stored_only_hashed(tmp_path: Path) -> None:
    """The key returned works, the file is 0600 and never contains the key."""
    path = tmp_path / "keys.json"
    key = add_key(path, "billing", apps=["wx*"], scopes=["read", "report"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key not in path.read_text()
    found = KeyRing(path).find(key)
    assert found is not None
    assert found.name == "billing"
    assert found.scopes == {Scope.READ, Scope.REPORT}
    assert KeyRing(path).find(key + "x") is None


def test_app_patterns(tmp_path: Path) -> None:
    """`*` and `?` patterns match app ids, case-sensitively; nothing else matches."""
    path = tmp_path / "keys.json"
    key = add_key(path, "k", apps=["wxa*", "wxb?"], scopes=["read"])
    api_key = KeyRing(path).find(key)
    assert api_key is not None
    assert api_key.may_use("wxa123")
    assert api_key.may_use("wxb1")
    assert not api_key.may_use("wxb12")
    assert not api_key.may_use("WXA123")
    assert not api_key.may_use("wxc1")


@pytest.mark.parametrize(
    ("name", "apps", "scopes", "problem"),
    [
        ("bad name", ["wx*"], ["read"], "name"),
        ("k", ["wx[ab]"], ["read"], "apps"),
        ("k", [], ["read"], "apps"),
        ("k", ["wx*"], ["admin"], "unknown scope"),
        ("k", ["wx*"], [], "scopes"),
    ],
)
def test_add_refuses_garbage(
    tmp_path: Path, name: str, apps: list[str], scopes: list[str], problem: str
) -> None:
    """Bad names, patterns and scopes are a ValueError naming the problem; no file written."""
    path = tmp_path / "keys.json"
    with pytest.raises(ValueError, match=problem):
        add_key(path, name, apps=apps, scopes=scopes)
    assert not path.exists()


def test_duplicate_name_is_refused(tmp_path: Path) -> None:
    """A second key with a used name is refused and the first key keeps working."""
    path = tmp_path / "keys.json"
    key = add_key(path, "k", apps=["wx*"], scopes=["read"])
    with pytest.raises(ValueError, match="exists already"):
        add_key(path, "k", apps=["wx*"], scopes=["read"])
    assert KeyRing(path).find(key) is not None


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "[]",
        '{"keys": [{"name": "k"}]}',
        '{"keys": [], "extra": 1}',
        '{"keys": [{"name": "k", "sha256": "00", "apps": ["wx*"], "scopes": ["read"]}]}',
        json.dumps(
            {
                "keys": [
                    {"name": "k", "sha256": "a" * 64, "apps": ["wx*"], "scopes": ["read"]},
                    {"name": "k", "sha256": "b" * 64, "apps": ["wx*"], "scopes": ["read"]},
                ]
            }
        ),
        json.dumps(
            {
                "keys": [
                    {"name": "k1", "sha256": "a" * 64, "apps": ["wx*"], "scopes": ["read"]},
                    {"name": "k2", "sha256": "a" * 64, "apps": ["wx*"], "scopes": ["read"]},
                ]
            }
        ),
    ],
)
def test_malformed_keys_file_is_one_config_error(tmp_path: Path, content: str) -> None:
    """Every malformed file is a ConfigError naming the file."""
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="keys file"):
        KeyRing(path)


def test_reload_keeps_the_keys_in_force_when_the_file_breaks(tmp_path: Path) -> None:
    """A changed file is re-read; a broken one raises and the old keys stay."""
    path = tmp_path / "keys.json"
    first = add_key(path, "a", apps=["wx*"], scopes=["read"])
    ring = KeyRing(path)
    assert not ring.reload_if_changed()
    second = add_key(path, "b", apps=["wx*"], scopes=["read"])
    os.utime(path, ns=(1, 1))  # a distinct mtime even on a coarse clock
    assert ring.reload_if_changed()
    assert ring.find(second) is not None
    path.write_text("broken")
    os.utime(path, ns=(2, 2))
    with pytest.raises(ConfigError):
        ring.reload_if_changed()
    assert ring.find(first) is not None


def test_rate_limiter_bursts_then_refills(clock: FakeClock) -> None:
    """Twice the rate passes at once, then one more per 1/rate seconds."""
    limiter = RateLimiter(clock=clock)
    assert [limiter.allow("k", 2.0) for _ in range(4)] == [0.0] * 4
    wait_s = limiter.allow("k", 2.0)
    assert wait_s == pytest.approx(0.5)
    assert limiter.allow("other", 2.0) == 0.0
    clock.advance(0.5)
    assert limiter.allow("k", 2.0) == 0.0
    assert limiter.allow("k", 2.0) > 0


def test_cli_add_prints_the_key_once_and_list_never(tmp_path: Path) -> None:
    """`gateway-key add` prints a working key; `list` shows names and scopes, not keys."""
    path = tmp_path / "keys.json"
    runner = CliRunner()
    added = runner.invoke(
        main,
        ["gateway-key", "add", "svc", "--apps", "wx*,wy*", "--scopes", "read,report"],
        env={"WXTOKEN_GATEWAY_KEYS_FILE": str(path)},
    )
    assert added.exit_code == 0, added.output
    key = added.stdout.strip()
    assert KeyRing(path).find(key) is not None
    listed = runner.invoke(main, ["gateway-key", "list", "--file", str(path)])
    assert listed.exit_code == 0
    assert "svc: apps=wx*,wy* scopes=read,report" in listed.output
    assert key not in listed.output
    removed = runner.invoke(main, ["gateway-key", "remove", "svc", "--file", str(path)])
    assert removed.exit_code == 0
    assert KeyRing(path).find(key) is None


def test_cli_garbage_exits_2(tmp_path: Path) -> None:
    """A bad scope or name, or a broken keys file, is one line and exit 2."""
    path = tmp_path / "keys.json"
    runner = CliRunner()
    bad_scope = runner.invoke(
        main, ["gateway-key", "add", "k", "--apps", "wx*", "--scopes", "root", "--file", str(path)]
    )
    assert bad_scope.exit_code == 2
    assert "unknown scope" in bad_scope.output
    path.write_text("{")
    broken = runner.invoke(main, ["gateway-key", "list", "--file", str(path)])
    assert broken.exit_code == 2
    assert "keys file" in broken.output


def test_an_in_place_rewrite_keeping_the_mtime_is_seen(tmp_path: Path) -> None:
    """Changes are found by content: a key removed by rewriting the same inode, with the
    mtime set back, is refused at the next look."""
    path = tmp_path / "keys.json"
    kept = add_key(path, "kept", apps=["wx*"], scopes=["read"])
    leaked = add_key(path, "leaked", apps=["wx*"], scopes=["read"])
    ring = KeyRing(path)
    before = path.stat()
    document = json.loads(path.read_text())
    document["keys"] = [k for k in document["keys"] if k["name"] != "leaked"]
    with path.open("r+") as handle:
        handle.write(json.dumps(document))
        handle.truncate()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert ring.reload_if_changed()
    assert ring.find(leaked) is None
    assert ring.find(kept) is not None
    assert not ring.reload_if_changed(), "the same content again: nothing to do"


def test_a_key_removed_by_rename_shows_through_the_directory_not_a_file_mount(
    tmp_path: Path,
) -> None:
    """`gateway-key remove` replaces the file by rename. Seen through its directory (a link
    to it, as compose now mounts deploy/secrets/gateway/) the key is refused at the next
    look; through a single-file mount (the old compose file secret: the same inode, here a
    hard link) the old content stays forever, which is why compose mounts the directory."""
    host = tmp_path / "host"
    host.mkdir()
    keys_file = host / "keys.json"
    leaked = add_key(keys_file, "leaked", apps=["wx*"], scopes=["read"])
    add_key(keys_file, "kept", apps=["wx*"], scopes=["read"])
    directory_mount = tmp_path / "mounted"
    directory_mount.symlink_to(host, target_is_directory=True)
    file_mount = tmp_path / "file-mounted.json"
    os.link(keys_file, file_mount)
    through_directory = KeyRing(directory_mount / "keys.json")
    through_file = KeyRing(file_mount)
    removed = CliRunner().invoke(
        main, ["gateway-key", "remove", "leaked", "--file", str(keys_file)]
    )
    assert removed.exit_code == 0, removed.output
    assert through_directory.reload_if_changed()
    assert through_directory.find(leaked) is None
    assert not through_file.reload_if_changed()
    assert through_file.find(leaked) is not None


def test_rewriting_the_file_keeps_its_mode(tmp_path: Path) -> None:
    """`add` and `remove` replace the file with one of the same mode (a gateway running as
    another uid that could read the old file reads the new one); a new file is 0600."""
    path = tmp_path / "keys.json"
    add_key(path, "a", apps=["wx*"], scopes=["read"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o640)
    add_key(path, "b", apps=["wx*"], scopes=["read"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    removed = CliRunner().invoke(main, ["gateway-key", "remove", "a", "--file", str(path)])
    assert removed.exit_code == 0, removed.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"], "no temporary file left"
