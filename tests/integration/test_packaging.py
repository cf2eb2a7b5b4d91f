"""The product as the image installs it, tried without a Docker engine.

The sdist and the wheel are built as `make dist` builds them; the wheel goes into a fresh venv
outside the checkout with exactly the locked, hash-checked dependencies of the image's extras
(the extras the Dockerfile exports); from there each command compose.yaml runs is started
(`wxtoken sandbox` with compose's options, `wxtoken-producer` until a token is in Redis,
`wxtoken-gateway` until `/readyz` answers, `wxtoken status`). A second venv holds only the base
install and imports `consumer_lib`. The README's install lines are the ones run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.keys import KeyLayout
from producer.platform.db.migrations import head
from tests.conftest import uv_binary
from tests.integration.platform_db import KINDS, private_database
from tests.integration.procs import REPO_ROOT
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text(encoding="utf-8"))
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: The extras the image installs: those its `uv export` names.
IMAGE_EXTRAS = frozenset(re.findall(r"--extra (\w+)", DOCKERFILE))
#: `pip install '<wheel>[extras]'` lines of the README's install table.
INSTALL_LINE = re.compile(r"`(pip install '?(dist/wxtoken-[^`'\[]+\.whl)(?:\[([\w,]+)\])?'?)`")


def _run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, stdout_only: bool = False
) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout if stdout_only else done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    """Nothing of the checkout or of the test's own venv: the venv's bin first, no PYTHONPATH."""
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }


def _readme_installs() -> list[tuple[str, frozenset[str]]]:
    """The README's `pip install 'dist/....whl[extras]'` lines, with the extras each names."""
    found = [
        (line, frozenset(extras.split(",")) if extras else frozenset())
        for line, _, extras in INSTALL_LINE.findall(README)
    ]
    assert found, "the README shows no `pip install 'dist/wxtoken-*.whl[...]'` line"
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`uv build` as `make dist` runs it: the sdist, then the wheel built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    # Without PYTHONDONTWRITEBYTECODE, whose "byte-compiling is disabled" notes are no fault.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    log = _run(
        [uv_binary(), "build", "--sdist", "--wheel", "--out-dir", str(out)], cwd=REPO_ROOT, env=env
    )
    assert not re.search(r"warning|deprecat", log, re.IGNORECASE), log
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("wxtoken-*.whl")
    return wheel


def _venv(tmp: Path, dist: Path, extras: frozenset[str]) -> Path:
    """A fresh venv with the locked dependencies of `extras` (hashes checked), then the README's
    install lines whose extras it holds, run with the venv's own pip from `tmp`."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp)
    requirements = tmp / "requirements.txt"
    export = [
        uv_binary(),
        "export",
        "--frozen",
        "--no-dev",
        "--no-emit-project",
        "-o",
        str(requirements),
    ]
    _run(export + [f"--extra={extra}" for extra in sorted(extras)], cwd=REPO_ROOT)
    assert "--hash=sha256:" in requirements.read_text(encoding="utf-8")
    install = [uv_binary(), "pip", "install", "--python", str(venv / "bin" / "python")]
    _run([*install, "--require-hashes", "-r", str(requirements)], cwd=tmp)
    shutil.copytree(dist, tmp / "dist")
    env = _clean_env(venv, tmp)
    for line, line_extras in _readme_installs():
        if line_extras <= extras:
            _run(["sh", "-c", line], cwd=tmp, env=env)
    return venv


@pytest.fixture(scope="module")
def image_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert IMAGE_EXTRAS, "the Dockerfile exports no extras"
    return _venv(tmp_path_factory.mktemp("image"), dist, IMAGE_EXTRAS)


@contextmanager
def _running(args: list[str], *, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    log = (cwd / f"{Path(args[0]).name}-{len(list(cwd.glob('*.log')))}.log").open("w")
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def _answers(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(proc: subprocess.Popen[str], cwd: Path) -> None:
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in cwd.glob("*.log"))
    assert proc.poll() is None, f"{proc.args} exited {proc.returncode}:\n{logs}"


def test_the_wheel_holds_every_package_its_data_and_the_license(dist: Path) -> None:
    """Every package of the checkout, the Lua scripts, py.typed and an SPDX license are in the
    wheel; no tests."""
    names = set(zipfile.ZipFile(_wheel(dist)).namelist())
    for init in REPO_ROOT.glob("*/**/__init__.py"):
        relative = init.relative_to(REPO_ROOT).as_posix()
        if relative.split("/")[0] in ("producer", "consumer_lib", "ops"):
            assert relative in names, f"{relative} is not in the wheel"
    for lua in (REPO_ROOT / "producer").rglob("*.lua"):
        assert lua.relative_to(REPO_ROOT).as_posix() in names
    # The platform registry's migrations run from the installed package: env.py, the
    # template and every revision.
    migrations = REPO_ROOT / "producer" / "platform" / "db" / "migrations"
    shipped = [p for p in migrations.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert migrations / "script.py.mako" in shipped
    for path in shipped:
        assert path.relative_to(REPO_ROOT).as_posix() in names, f"{path} is not in the wheel"
    for package in ("producer", "consumer_lib", "ops"):
        assert f"{package}/py.typed" in names
    assert not any(name.startswith(("tests/", "bench/", "deploy/")) for name in names)
    (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(_wheel(dist)).read(metadata).decode()
    assert "License-Expression: MIT" in text


def test_the_readme_install_lines_name_real_extras() -> None:
    """Each README install line names the wheel `make dist` builds and extras pyproject has."""
    version = PYPROJECT["project"]["version"]
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for line, line_extras in _readme_installs():
        assert f"dist/wxtoken-{version}-py3-none-any.whl" in line, line
        assert line_extras <= extras, line


def test_the_base_install_imports_consumer_lib_without_the_producers_libraries(
    dist: Path, tmp_path: Path
) -> None:
    """A service's install (no extras) imports consumer_lib from the venv, and has no requests
    or click."""
    venv = _venv(tmp_path, dist, frozenset())
    python = str(venv / "bin" / "python")
    env = _clean_env(venv, tmp_path)
    out = _run(
        [
            python,
            "-c",
            "import consumer_lib; print(consumer_lib.__file__, consumer_lib.TokenClient)",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert str(venv) in out, out
    for absent in ("requests", "click"):
        done = subprocess.run(
            [python, "-c", f"import {absent}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            check=False,
        )
        assert done.returncode != 0, f"the base install pulls in {absent}"


@pytest.mark.parametrize("kind", KINDS)
def test_the_platform_extra_migrates_a_database_from_the_installed_wheel(
    dist: Path, tmp_path: Path, kind: str
) -> None:
    """`wxtoken[producer,platform]` installed from the wheel, run outside the checkout with no
    alembic.ini: migrate() brings a new database to the newest revision, check() reads it."""
    venv = _venv(tmp_path, dist, frozenset({"producer", "platform"}))
    env = _clean_env(venv, tmp_path)
    script = (
        "import sys, producer\n"
        "from producer.platform.db.migrations import check, migrate\n"
        "print(producer.__file__, migrate(sys.argv[1]), check(sys.argv[1]))\n"
    )
    with private_database(kind) as url:
        out = _run(
            [str(venv / "bin" / "python"), "-c", script, url.render_as_string(False)],
            cwd=tmp_path,
            env=env,
            stdout_only=True,
        )
    where, migrated, checked = out.split()
    assert where.startswith(str(venv)), where
    assert migrated == checked == head()


def test_the_image_commands_run_from_the_installed_wheel(
    image_venv: Path,
    tmp_path: Path,
    redis_url: str,
    amqp_url: str,
    isolation: dict[str, str],
) -> None:
    """From the image's venv, outside the checkout: compose's sandbox, a producer storing the
    sandbox apps' tokens, a gateway ready and serving one, and `wxtoken status`."""
    bin_dir = image_venv / "bin"
    env = _clean_env(image_venv, tmp_path)
    where = _run(
        [str(bin_dir / "python"), "-c", "import producer; print(producer.__file__)"],
        cwd=tmp_path,
        env=env,
    )
    assert str(image_venv) in where, where

    # compose's sandbox command, on a free loopback port instead of 0.0.0.0:8080.
    sandbox_args = list(COMPOSE["services"]["sandbox"]["command"])
    port = _free_port()
    sandbox_args[sandbox_args.index("--host") + 1] = "127.0.0.1"
    sandbox_args[sandbox_args.index("--port") + 1] = str(port)
    sandbox_url = f"http://127.0.0.1:{port}"
    key = tmp_path / "signing.key"
    _run([str(bin_dir / "wxtoken"), "keygen", str(key)], cwd=tmp_path, env=env)
    common = {
        **env,
        "WXTOKEN_REDIS_URL": redis_url,
        "WXTOKEN_AMQP_URL": amqp_url,
        "WXTOKEN_KEY_PREFIX": isolation["key_prefix"],
        "WXTOKEN_EXCHANGE": isolation["exchange"],
        "WXTOKEN_VERIFY_KEYS": f"{key}.pub",
    }
    producer_env = {
        **common,
        "WXTOKEN_APPS_FILE": str(REPO_ROOT / "deploy" / "apps.sandbox.toml"),
        "WXTOKEN_WECHAT_BASE_URL": sandbox_url,
        "WXTOKEN_SIGNING_KEY_FILE": str(key),
        "WXTOKEN_METRICS_HOST": "127.0.0.1",
        "WXTOKEN_METRICS_PORT": str(_free_port()),
    }
    apps = ["wxsandbox00000001", "wxsandbox00000002"]
    keys_file = tmp_path / "gateway-keys.json"
    api_key = _run(
        [
            str(bin_dir / "wxtoken"),
            "gateway-key",
            "add",
            "reader",
            "--apps",
            "wxsandbox*",
            "--file",
            str(keys_file),
        ],
        cwd=tmp_path,
        env=env,
        stdout_only=True,
    ).strip()
    gateway_port = _free_port()
    gateway_env = {
        **common,
        "WXTOKEN_GATEWAY_KEYS_FILE": str(keys_file),
        "WXTOKEN_GATEWAY_HOST": "127.0.0.1",
        "WXTOKEN_GATEWAY_PORT": str(gateway_port),
    }
    store = redis.Redis.from_url(redis_url)
    reader = SnapshotReader(store, KeyLayout(isolation["key_prefix"]))
    with _running(
        [str(bin_dir / sandbox_args[0]), *sandbox_args[1:]], cwd=tmp_path, env=env
    ) as sandbox:
        wait_for(
            lambda: _alive(sandbox, tmp_path) or _answers(f"{sandbox_url}/sandbox/stats"),
            timeout_s=30,
            message="the sandbox",
        )
        with _running(
            [str(bin_dir / "wxtoken-producer")], cwd=tmp_path, env=producer_env
        ) as producer:
            for app_id in apps:
                wait_for(
                    lambda a=app_id: _alive(producer, tmp_path) or reader.read(a),
                    timeout_s=60,
                    message=f"the producer to store {app_id}",
                )
            with _running(
                [str(bin_dir / "wxtoken-gateway")], cwd=tmp_path, env=gateway_env
            ) as gateway:
                base = f"http://127.0.0.1:{gateway_port}"
                wait_for(
                    lambda: _alive(gateway, tmp_path) or _answers(f"{base}/readyz"),
                    timeout_s=60,
                    message="/readyz 200",
                )
                auth = {"Authorization": f"Bearer {api_key}"}
                assert _answers(f"{base}/v1/apps/{apps[0]}/access_token", auth)
            status = _run([str(bin_dir / "wxtoken"), "status"], cwd=tmp_path, env=common)
            for app_id in apps:
                assert app_id in status, status
    store.close()
