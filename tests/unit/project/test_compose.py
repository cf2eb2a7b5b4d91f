"""Static checks of the container setup: compose.yaml, Dockerfile, .dockerignore, deploy/.

No Docker engine is needed: the files are parsed and checked against the code they configure
(settings fields, console scripts, the apps-file parser, the sandbox's app list).
"""

from __future__ import annotations

import functools
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika
import pytest
import yaml

from consumer_lib.errors import ConfigError
from consumer_lib.settings import load_settings
from ops.gateway import GatewaySettings
from producer.apps import TokenApi, load_apps, parse_apps
from producer.settings import ProducerSettings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
APPS_REAL = DEPLOY / "apps.toml"
APPS_SANDBOX = DEPLOY / "apps.sandbox.toml"
RABBITMQ_DEPLOY = DEPLOY / "rabbitmq"
RABBITMQ_CONF = RABBITMQ_DEPLOY / "rabbitmq.conf"
DEFINITIONS = RABBITMQ_DEPLOY / "definitions.json"
DEFINITIONS_TEMPLATE = RABBITMQ_DEPLOY / "definitions.template.json"
RENDER_SCRIPT = RABBITMQ_DEPLOY / "render_definitions.py"
PRODUCER_PASSWORD_VARIABLE = "WXTOKEN_MQ_PRODUCER_PASSWORD"
REDIS_DEPLOY = DEPLOY / "redis"
REDIS_ACL = REDIS_DEPLOY / "users.acl"
REDIS_ACL_TEMPLATE = REDIS_DEPLOY / "users.template.acl"
REDIS_PRODUCER_PASSWORD_VARIABLE = "WXTOKEN_REDIS_PRODUCER_PASSWORD"
#: What `docker compose` needs from the environment or ./.env (stand-in values).
COMPOSE_ENV = {
    PRODUCER_PASSWORD_VARIABLE: "not-a-real-password-0123456789",
    REDIS_PRODUCER_PASSWORD_VARIABLE: "not-a-real-redis-password-0123",
    "WXTOKEN_MQ_CONSUMER_PASSWORD": "not-a-real-password-9876543210",
    "WXTOKEN_MQ_GATEWAY_PASSWORD": "not-a-real-password-5555555555",
    "WXTOKEN_REDIS_CONSUMER_PASSWORD": "not-a-real-redis-password-4567",
    "WXTOKEN_REDIS_GATEWAY_PASSWORD": "not-a-real-redis-password-8901",
    "WXTOKEN_REDIS_ADMIN_PASSWORD": "not-a-real-redis-password-2345",
}
#: Per Redis series, the oldest release with the fixes for CVE-2024-31449, CVE-2024-46981
#: and CVE-2025-49844 (7.2.5 has none of them).
PATCHED_REDIS = {(7, 2): (7, 2, 11), (7, 4): (7, 4, 6)}
BIN = Path(sys.executable).parent
REAL_WECHAT = "https://api.weixin.qq.com"

#: Services pulled from a registry, and the programs their images ship.
IMAGE_PROGRAMS = {
    "redis": {"redis-server", "redis-cli"},
    "rabbitmq": {"rabbitmq-server", "rabbitmq-diagnostics"},
}
#: Programs in our image besides the console scripts: the base image's interpreter.
OUR_IMAGE_PROGRAMS = {"python", "python3"}


# ---- loading ---------------------------------------------------------------------------------


@functools.cache
def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


@functools.cache
def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _console_scripts() -> set[str]:
    return set(_pyproject()["project"]["scripts"])


_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}"
)


class MissingVariable(ValueError):
    """`${NAME:?message}` or `${NAME?message}` with NAME missing: Compose refuses to run."""


def _interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    """Resolve `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?err}` and
    `${NAME?err}` the way Compose does."""
    environ = environ or {}

    def substitute(match: re.Match[str]) -> str:
        name, op, default = match["name"], match["op"], match["default"] or ""
        if op == ":-":
            return environ.get(name) or default
        if op == "-":
            return environ.get(name, default)
        if op == ":?" and not environ.get(name):
            raise MissingVariable(f"{name}: {default}")
        if op == "?" and name not in environ:
            raise MissingVariable(f"{name}: {default}")
        return environ.get(name, "")

    resolved = _INTERPOLATION.sub(substitute, value.replace("$$", "\0"))
    assert "$" not in resolved, f"unsupported interpolation in {value!r}"
    return resolved.replace("\0", "$")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment:` as written (map or KEY=VALUE list), values unresolved."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _resolved_environment(
    service: dict[str, Any], environ: dict[str, str] | None = None
) -> dict[str, str]:
    return {k: _interpolate(v, environ) for k, v in _environment(service).items()}


def _documented_sandbox_overrides() -> dict[str, str]:
    """The `WXTOKEN_X=value` lines compose.yaml's comments give for running on the sandbox."""
    found = re.findall(
        r"^#\s+(WXTOKEN_[A-Z_]+)=(\S+)", COMPOSE.read_text(encoding="utf-8"), re.MULTILINE
    )
    return dict(found)


def _option(command: list[str], flag: str) -> str:
    """The value following `flag` in an exec-form command."""
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def _is_pinned(ref: str) -> bool:
    """An image reference naming an exact x.y.z tag AND its digest (`name:tag@sha256:...`):
    the tag says what it is, the digest that nobody can move it."""
    match = re.fullmatch(r"(?P<name>[\w./-]+):(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}", ref)
    if match is None:
        return False
    tag = match["tag"]
    return tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag) is not None


# ---- Dockerfile parsing ----------------------------------------------------------------------


@functools.cache
def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, rest = pending.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions grouped by stage; stage 0 holds what precedes the first FROM (ARGs)."""
    stages: list[list[tuple[str, str]]] = [[]]
    for instruction in _dockerfile():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _global_args() -> dict[str, str]:
    args = {}
    for keyword, rest in _dockerfile_stages()[0]:
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def _from_image(rest: str) -> str:
    words = [w for w in rest.split() if not w.startswith("--")]
    image = words[0]
    for name, value in _global_args().items():
        image = image.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return image


def _copy_sources(rest: str) -> list[str]:
    if rest.startswith("["):
        words = json.loads(rest)
    else:
        words = [w for w in rest.split() if not w.startswith("--")]
    return words[:-1]


# ---- compose: shape --------------------------------------------------------------------------


def test_compose_has_the_services_and_no_version_key() -> None:
    """The stack is RabbitMQ, Redis and the producer, plus the sandbox behind a profile."""
    data = _compose()
    assert "version" not in data
    services = _services()
    assert {"rabbitmq", "redis", "producer", "sandbox"} <= set(services)
    for name in ("rabbitmq", "redis", "producer"):
        assert not services[name].get("profiles"), f"{name} must start without a profile"
    assert services["sandbox"]["profiles"] == ["sandbox"]


def test_pulled_images_are_pinned_to_exact_versions() -> None:
    """Every image pulled from a registry names an exact x.y.z version or a digest."""
    pulled = {n: s["image"] for n, s in _services().items() if "image" in s and "build" not in s}
    assert {"rabbitmq", "redis"} <= set(pulled)
    for name, ref in pulled.items():
        assert _is_pinned(_interpolate(ref)), f"{name}: image {ref!r} is not pinned"
    assert pulled["rabbitmq"].startswith("rabbitmq:3.13.")
    assert pulled["rabbitmq"].partition("@")[0].endswith("-management")


def test_our_services_build_the_image_from_this_repository() -> None:
    """The producer, the gateway and the sandbox run the image built from ./Dockerfile."""
    for name in ("producer", "gateway", "sandbox"):
        assert _services()[name]["build"] == ".", name


def test_every_wxtoken_variable_is_a_settings_field() -> None:
    """Each `WXTOKEN_*` variable a service sets names a field of that program's settings
    (`GatewaySettings` for the gateway, `ProducerSettings` for the others)."""
    known = {f"WXTOKEN_{name.upper()}" for name in ProducerSettings.model_fields}
    gateway_known = {f"WXTOKEN_{name.upper()}" for name in GatewaySettings.model_fields}
    seen = set()
    for name, service in _services().items():
        fields = gateway_known if name == "gateway" else known
        for variable in _environment(service):
            if variable.startswith("WXTOKEN_"):
                assert variable in fields, f"{name}: {variable} is not a settings field"
                if name != "gateway":
                    seen.add(variable)
    required = {"REDIS_URL", "AMQP_URL", "APPS_FILE", "WECHAT_BASE_URL", "LOG_LEVEL"}
    assert {f"WXTOKEN_{v}" for v in required} <= seen
    for variable in _documented_sandbox_overrides():
        assert variable in known, f"compose.yaml comment: {variable} is not a settings field"


def test_producer_environment_is_valid_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The producer's environment, by default and with the sandbox overrides, passes validation."""
    for variable in list(os.environ):
        if variable.startswith("WXTOKEN_"):
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)  # no stray .env
    producer = _services()["producer"]
    mounted = {m["target"] for m in producer["volumes"] if isinstance(m, dict)}

    for variable, value in _resolved_environment(producer, COMPOSE_ENV).items():
        monkeypatch.setenv(variable, value)
    settings = load_settings(ProducerSettings)
    assert settings.wechat_base_url == REAL_WECHAT
    redis_password = COMPOSE_ENV[REDIS_PRODUCER_PASSWORD_VARIABLE]
    assert settings.redis_url == f"redis://wxtoken-producer:{redis_password}@redis:6379/0"
    password = COMPOSE_ENV[PRODUCER_PASSWORD_VARIABLE]
    assert settings.amqp_url == f"amqp://wxtoken-producer:{password}@rabbitmq:5672/wxtoken"
    assert str(settings.apps_file) == "/etc/wxtoken/apps.toml"
    assert str(settings.apps_file) in mounted

    overrides = _documented_sandbox_overrides()
    assert set(overrides) == {"WXTOKEN_WECHAT_BASE_URL", "WXTOKEN_APPS_FILE"}
    for variable, value in _resolved_environment(producer, {**COMPOSE_ENV, **overrides}).items():
        monkeypatch.setenv(variable, value)
    settings = load_settings(ProducerSettings)
    sandbox_port = _option(_services()["sandbox"]["command"], "--port")
    assert settings.wechat_base_url == f"http://sandbox:{sandbox_port}"
    assert str(settings.apps_file) in mounted


def test_commands_are_console_scripts_or_the_images_own() -> None:
    """Our image runs declared console scripts; pulled images run their own programs."""
    scripts = _console_scripts()
    for name, service in _services().items():
        command = service.get("command")
        if command is None:
            continue
        assert isinstance(command, list), f"{name}: use the exec (list) form"
        assert all(isinstance(word, str) for word in command), f"{name}: quote numbers"
        if "build" in service:
            assert command[0] in scripts, f"{name}: {command[0]} is no console script"
        else:
            repository = service["image"].rsplit("/", 1)[-1].split(":")[0]
            assert command[0] in IMAGE_PROGRAMS[repository], f"{name}: {command[0]}"
    assert _services()["producer"]["command"] == ["wxtoken-producer"]
    assert _services()["sandbox"]["command"][:2] == ["wxtoken", "sandbox"]


def test_healthchecks_use_programs_the_images_have() -> None:
    """Healthchecks are exec form and call programs that exist in the service's image."""
    scripts = _console_scripts()
    for name, service in _services().items():
        check = service.get("healthcheck")
        if check is None:
            continue
        test = check["test"]
        assert isinstance(test, list), f"{name}: use the exec (list) form"
        assert test[0] == "CMD", name
        if "build" in service:
            assert test[1] in scripts | OUR_IMAGE_PROGRAMS, f"{name}: {test[1]}"
        else:
            repository = service["image"].rsplit("/", 1)[-1].split(":")[0]
            assert test[1] in IMAGE_PROGRAMS[repository], f"{name}: {test[1]}"
    assert _services()["rabbitmq"]["healthcheck"]["test"][1:] == [
        "rabbitmq-diagnostics",
        "-q",
        "ping",
    ]
    assert _services()["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]


def test_redis_persists_with_appendonly_on_a_named_volume() -> None:
    """Redis runs with `--appendonly yes` and keeps /data on a named volume."""
    redis = _services()["redis"]
    command = redis["command"]
    assert _option(command, "--appendonly") == "yes"
    volumes = [v for v in redis["volumes"] if isinstance(v, str) and v.endswith(":/data")]
    assert len(volumes) == 1
    assert volumes[0].split(":")[0] in (_compose().get("volumes") or {})


def test_producer_waits_for_healthy_dependencies_and_restarts() -> None:
    """The producer starts once RabbitMQ and Redis are healthy and the admin step loaded
    the Redis functions, and restarts unless stopped."""
    producer = _services()["producer"]
    assert producer["depends_on"] == {
        "rabbitmq": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "redis-functions": {"condition": "service_completed_successfully"},
    }
    assert producer["restart"] == "unless-stopped"
    assert re.fullmatch(r"\d+s", producer["stop_grace_period"])
    assert producer.get("deploy", {}).get("replicas", 1) == 1


def test_ports_are_published_on_loopback_only() -> None:
    """Every published port binds to 127.0.0.1."""
    for name, service in _services().items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
    published = {str(p).split(":")[1] for s in _services().values() for p in s.get("ports") or []}
    assert {"5672", "15672", "6379"} <= published


def test_apps_files_and_secrets_are_mounted_read_only() -> None:
    """The apps files are read-only bind mounts and app secrets are file-based compose secrets."""
    producer = _services()["producer"]
    binds = {m["target"]: m for m in producer["volumes"] if isinstance(m, dict)}
    for target, source in (
        ("/etc/wxtoken/apps.toml", APPS_REAL),
        ("/etc/wxtoken/apps.sandbox.toml", APPS_SANDBOX),
    ):
        mount = binds[target]
        assert mount["type"] == "bind"
        assert mount["read_only"] is True
        assert (ROOT / mount["source"]).resolve() == source
        assert source.is_file()

    declared = _compose()["secrets"]
    used = [s if isinstance(s, str) else s["source"] for s in producer["secrets"]]
    assert used, "the producer gets no secrets"
    for name in used:
        path = (ROOT / declared[name]["file"]).resolve()
        assert path.parent == DEPLOY / "secrets", f"secret {name}: {path}"
        assert path.suffix in (".secret", ".key")  # app secrets, the signing key


def test_secret_files_are_ignored_by_git() -> None:
    """Git ignores secret files in deploy/secrets/ but keeps its README."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")

    def ignored(relative: str) -> bool:
        result = subprocess.run(
            [git, "check-ignore", "--no-index", "-q", relative],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if result.returncode == 128:
            pytest.skip("not a git work tree")
        return result.returncode == 0

    for secret in _compose()["secrets"].values():
        assert ignored(str(Path(secret["file"]))), secret["file"]
    assert ignored("deploy/secrets/example.secret")
    assert not ignored("deploy/secrets/README.md")
    assert "printf %s" in (DEPLOY / "secrets" / "README.md").read_text(encoding="utf-8")


# ---- RabbitMQ: users from definitions, no guest ---------------------------------------------


def _rabbitmq_binds() -> dict[str, dict[str, Any]]:
    """The rabbitmq service's bind mounts by target."""
    volumes = _services()["rabbitmq"]["volumes"]
    return {m["target"]: m for m in volumes if isinstance(m, dict) and m["type"] == "bind"}


def _conf_settings() -> dict[str, str]:
    """The `key = value` lines of deploy/rabbitmq/rabbitmq.conf."""
    settings = {}
    for line in RABBITMQ_CONF.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not a key = value line: {line!r}"
            settings[key.strip()] = value.strip()
    return settings


def _strings(node: Any) -> Iterator[str]:
    """Every key and string value in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def test_rabbitmq_mounts_its_config_and_definitions_read_only() -> None:
    """RabbitMQ mounts deploy/rabbitmq/rabbitmq.conf in conf.d and the definitions, read-only."""
    binds = _rabbitmq_binds()
    conf = [m for m in binds.values() if (ROOT / m["source"]).resolve() == RABBITMQ_CONF]
    assert len(conf) == 1, "rabbitmq.conf is not mounted"
    # After the image's conf.d/10-defaults.conf (which lets guest in from anywhere).
    assert re.fullmatch(r"/etc/rabbitmq/conf\.d/[2-9]\d-[\w.-]+\.conf", conf[0]["target"])
    assert conf[0]["read_only"] is True
    assert RABBITMQ_CONF.is_file()

    settings = _conf_settings()
    target = settings["load_definitions"]
    assert (ROOT / binds[target]["source"]).resolve() == DEFINITIONS
    assert binds[target]["read_only"] is True
    assert settings["loopback_users.guest"] == "true"
    assert not {"default_user", "default_pass"} & set(settings)
    assert DEFINITIONS_TEMPLATE.is_file()
    assert RENDER_SCRIPT.is_file()
    assert str(RENDER_SCRIPT.relative_to(ROOT)) in COMPOSE.read_text(encoding="utf-8")


def test_producer_logs_in_as_wxtoken_producer_on_vhost_wxtoken() -> None:
    """The producer logs in as wxtoken-producer on vhost wxtoken, its password from the env."""
    producer = _services()["producer"]
    raw = _environment(producer)["WXTOKEN_AMQP_URL"]
    assert "${" + PRODUCER_PASSWORD_VARIABLE + ":?" in raw, "the password comes from the env"
    with pytest.raises(MissingVariable, match=PRODUCER_PASSWORD_VARIABLE):
        _resolved_environment(producer, {REDIS_PRODUCER_PASSWORD_VARIABLE: "x" * 20})
    url = _resolved_environment(producer, COMPOSE_ENV)["WXTOKEN_AMQP_URL"]
    params = pika.URLParameters(url)
    assert params.credentials.username == "wxtoken-producer"
    assert params.credentials.password == COMPOSE_ENV[PRODUCER_PASSWORD_VARIABLE]
    assert params.virtual_host == "wxtoken"
    assert (params.host, params.port) == ("rabbitmq", 5672)

    template = json.loads(DEFINITIONS_TEMPLATE.read_text(encoding="utf-8"))
    assert "wxtoken-producer" in {u["name"] for u in template["users"]}
    assert {"user": "wxtoken-producer", "vhost": "wxtoken"}.items() <= next(
        p for p in template["permissions"] if p["user"] == "wxtoken-producer"
    ).items()


def test_no_guest_user_in_compose_or_definitions() -> None:
    """Nothing in compose.yaml logs in as or creates guest, and the definitions have no guest."""
    for text in _strings(_compose()):
        assert "guest" not in text.lower(), f"compose.yaml: {text!r}"
    for name, service in _services().items():
        assert not {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"} & set(
            _environment(service)
        ), name
    template = json.loads(DEFINITIONS_TEMPLATE.read_text(encoding="utf-8"))
    assert "guest" not in {u["name"] for u in template["users"]}


def test_rendered_definitions_are_ignored_by_git() -> None:
    """Git ignores the rendered definitions.json (password hashes) but keeps its sources."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")

    def ignored(path: Path) -> bool:
        result = subprocess.run(
            [git, "check-ignore", "--no-index", "-q", str(path.relative_to(ROOT))],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if result.returncode == 128:
            pytest.skip("not a git work tree")
        return result.returncode == 0

    assert ignored(DEFINITIONS)
    for kept in (DEFINITIONS_TEMPLATE, RABBITMQ_CONF, RENDER_SCRIPT, RABBITMQ_DEPLOY / "README.md"):
        assert not ignored(kept), kept


# ---- Redis users ------------------------------------------------------------------------------


def test_redis_image_has_the_lua_cve_fixes() -> None:
    """compose's Redis is a 7.2 or 7.4 release at or after the one fixing the Lua CVEs."""
    image = _services()["redis"]["image"]
    assert _is_pinned(image), image
    tag = image.split("@", 1)[0].rsplit(":", 1)[1]
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:-[\w.-]+)?", tag)
    assert match, tag
    version = tuple(int(part) for part in match.groups())
    assert version[:2] in PATCHED_REDIS, f"a series this test does not know: {tag}"
    assert version >= PATCHED_REDIS[version[:2]], f"{tag} predates the Lua CVE fixes"


def test_redis_loads_the_shipped_acl_file_read_only() -> None:
    """Redis starts with --aclfile, the file bind-mounted read-only from deploy/redis/."""
    redis_service = _services()["redis"]
    aclfile = _option(redis_service["command"], "--aclfile")
    binds = {
        m["target"]: m
        for m in redis_service["volumes"]
        if isinstance(m, dict) and m.get("type") == "bind"
    }
    assert aclfile in binds, f"{aclfile} is not mounted"
    assert (ROOT / binds[aclfile]["source"]).resolve() == REDIS_ACL
    assert binds[aclfile]["read_only"] is True
    assert REDIS_ACL_TEMPLATE.is_file()
    assert "deploy/redis/render_acl.py" in COMPOSE.read_text(encoding="utf-8")
    # The healthcheck needs no password: the default user may PING and nothing else.
    default = next(
        line.split()
        for line in REDIS_ACL_TEMPLATE.read_text(encoding="utf-8").splitlines()
        if line.startswith("user default ")
    )
    assert {"-@all", "+ping", "resetkeys"} <= set(default)
    assert [w for w in default if w.startswith("+")] == ["+ping"]
    assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_producer_logs_in_to_redis_as_wxtoken_producer() -> None:
    """The producer's Redis URL names user wxtoken-producer, its password from the env."""
    producer = _services()["producer"]
    raw = _environment(producer)["WXTOKEN_REDIS_URL"]
    assert "${" + REDIS_PRODUCER_PASSWORD_VARIABLE + ":?" in raw
    with pytest.raises(MissingVariable, match=REDIS_PRODUCER_PASSWORD_VARIABLE):
        _resolved_environment(producer, {PRODUCER_PASSWORD_VARIABLE: "x" * 20})
    url = urlsplit(_resolved_environment(producer, COMPOSE_ENV)["WXTOKEN_REDIS_URL"])
    assert (url.username, url.password) == (
        "wxtoken-producer",
        COMPOSE_ENV[REDIS_PRODUCER_PASSWORD_VARIABLE],
    )
    assert (url.hostname, url.port) == ("redis", 6379)
    assert "user wxtoken-producer " in REDIS_ACL_TEMPLATE.read_text(encoding="utf-8")


def test_producer_trusts_the_operators_keys_by_default() -> None:
    """Without WXTOKEN_OPS_PUBLIC_KEYS the producer verifies with every key in deploy/keys."""
    producer = _services()["producer"]
    keys = _resolved_environment(producer, COMPOSE_ENV)["WXTOKEN_VERIFY_KEYS"]
    assert keys, "the producer would trust only its own key and delete every override"
    mounted = {
        m["target"]: m["source"]
        for m in producer["volumes"]
        if isinstance(m, dict) and m.get("type") == "bind"
    }
    assert (ROOT / mounted[keys]).resolve() == DEPLOY / "keys"


def test_rendered_redis_acl_is_ignored_by_git() -> None:
    """Git ignores the rendered users.acl (password hashes) but keeps its sources."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    for path, ignored in (
        (REDIS_ACL, True),
        (REDIS_ACL_TEMPLATE, False),
        (REDIS_DEPLOY / "render_acl.py", False),
        (REDIS_DEPLOY / "README.md", False),
    ):
        result = subprocess.run(
            [git, "check-ignore", "--no-index", "-q", str(path.relative_to(ROOT))],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if result.returncode == 128:
            pytest.skip("not a git work tree")
        assert (result.returncode == 0) is ignored, path


# ---- deploy/ apps files ----------------------------------------------------------------------


def test_real_apps_file_reads_secrets_from_mounted_compose_secrets(tmp_path: Path) -> None:
    """deploy/apps.toml uses stable tokens and `secret_file`s that are the producer's secrets."""
    data = tomllib.loads(APPS_REAL.read_text(encoding="utf-8"))
    producer = _services()["producer"]
    targets = {
        f"/run/secrets/{s}"
        if isinstance(s, str)
        else s.get("target", f"/run/secrets/{s['source']}")
        for s in producer["secrets"]
    }
    assert data["apps"]
    for entry in data["apps"]:
        assert set(entry) == {"app_id", "secret_file", "token_api"}, entry
        assert entry["secret_file"].startswith("/run/secrets/")
        assert entry["secret_file"] in targets
        assert entry["token_api"] == TokenApi.STABLE

    # The real parser, with each /run/secrets/<name> swapped for a local stand-in file.
    for entry in data["apps"]:
        stand_in = tmp_path / Path(entry["secret_file"]).name
        stand_in.write_text("not-a-real-secret\n", encoding="utf-8")
        entry["secret_file"] = str(stand_in)
    apps = parse_apps(data, source=str(APPS_REAL), wechat_base_url=REAL_WECHAT, environ={})
    assert [a.secret.get_secret_value() for a in apps] == ["not-a-real-secret"] * len(apps)


def test_sandbox_apps_file_loads_against_the_sandbox() -> None:
    """deploy/apps.sandbox.toml loads completely with the sandbox as upstream."""
    apps = load_apps(APPS_SANDBOX, wechat_base_url="http://sandbox:8080", environ={})
    assert len(apps) >= 1
    assert {TokenApi.STABLE, TokenApi.CLASSIC} <= {a.token_api for a in apps}, "both WeChat APIs"


def test_sandbox_apps_file_is_refused_against_real_wechat() -> None:
    """The inline secrets of the sandbox apps file are refused when upstream is the real WeChat."""
    with pytest.raises(ConfigError, match="inline secret"):
        load_apps(APPS_SANDBOX, wechat_base_url=REAL_WECHAT, environ={})


def test_sandbox_command_matches_sandbox_apps_file() -> None:
    """The sandbox's `--apps` are exactly the app ids and secrets of deploy/apps.sandbox.toml."""
    spec = _option(_services()["sandbox"]["command"], "--apps")
    served = dict(entry.split(":", 1) for entry in spec.split(","))
    apps = load_apps(APPS_SANDBOX, wechat_base_url="http://sandbox:8080", environ={})
    assert {a.app_id: a.secret.get_secret_value() for a in apps} == served


def test_sandbox_command_options() -> None:
    """The sandbox listens on all interfaces at the published port with a short token life."""
    sandbox = _services()["sandbox"]
    command = sandbox["command"]
    assert _option(command, "--host") == "0.0.0.0"
    port = _option(command, "--port")
    assert sandbox["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert int(_option(command, "--overlap")) < int(_option(command, "--expires-in"))


def test_sandbox_cli_accepts_the_compose_options() -> None:
    """`wxtoken sandbox --help` lists every option the compose command passes."""
    result = subprocess.run(
        [str(BIN / "wxtoken"), "sandbox", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for word in _services()["sandbox"]["command"][2:]:
        if word.startswith("--"):
            assert word in result.stdout, f"{word} not in `wxtoken sandbox --help`"


def _healthcheck(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )


def test_sandbox_command_runs_natively_and_passes_its_healthcheck(tmp_path: Path) -> None:
    """The sandbox service's command serves, passes its healthcheck, and stops on SIGTERM."""
    sandbox = _services()["sandbox"]
    command = list(sandbox["command"])
    url = f"http://127.0.0.1:{_option(command, '--port')}"
    test = sandbox["healthcheck"]["test"]
    assert test[1:3] == ["python", "-c"]
    assert f"{url}/sandbox/stats" in test[3]
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = "0"  # a free port; the sandbox prints its URL

    env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [str(BIN / command[0]), *command[1:]],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                assert selector.select(timeout=30), "the sandbox printed nothing in 30 s"
            first_line = process.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:\d+", first_line)
            assert match, f"no URL in {first_line!r}"
            live = _healthcheck(test[3].replace(url, match[0]))
            assert live.returncode == 0, live.stderr
        finally:
            process.terminate()
            try:
                returncode = process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    assert returncode == 0, process.stderr.read() if process.stderr else ""
    dead = _healthcheck(test[3].replace(url, match[0]))
    assert dead.returncode != 0, "the healthcheck passes with no sandbox listening"


# ---- Dockerfile and .dockerignore ------------------------------------------------------------


def test_dockerfile_base_images_are_pinned() -> None:
    """Every FROM names a pinned python:3.11 slim image or an earlier stage."""
    stage_names: set[str] = set()
    froms = [rest for keyword, rest in _dockerfile() if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for rest in froms:
        image = _from_image(rest)
        if image not in stage_names:
            assert _is_pinned(image), f"FROM {image} is not pinned"
            assert image.startswith("python:3.11."), image
            assert "-slim" in image, image
        words = rest.split()
        if len(words) >= 3 and words[-2].upper() == "AS":
            stage_names.add(words[-1])


def test_dockerfile_final_stage_runs_producer_as_non_root() -> None:
    """The final stage switches to a non-root USER and its CMD is exactly `wxtoken-producer`."""
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in _dockerfile())
    final = _dockerfile_stages()[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage sets no USER"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0"), users[-1]
    assert group not in ("root", "0"), users[-1]
    cmds = [rest for keyword, rest in final if keyword == "CMD"]
    assert cmds, "the final stage sets no CMD"
    assert json.loads(cmds[-1]) == ["wxtoken-producer"]
    assert json.loads(cmds[-1])[0] in _console_scripts()


def test_dockerfile_copies_code_but_no_configuration_or_secrets() -> None:
    """COPY/ADD bring in the packages and metadata only: no apps file, secret or .env."""
    sources = [
        source
        for keyword, rest in _dockerfile()
        if keyword in ("COPY", "ADD") and "--from=" not in rest
        for source in _copy_sources(rest)
    ]
    for source in sources:
        assert source not in (".", "./", "*"), "copy named paths, not the whole context"
        assert not re.search(r"deploy|secret|\.env|apps.*\.toml", source), source
    copied = {s.rstrip("/") for s in sources}
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    assert packages <= copied, f"packages not copied: {packages - copied}"
    assert {"pyproject.toml", "uv.lock", "README.md", "LICENSE"} <= copied
    for keyword, rest in _dockerfile():
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"secret|password|passwd", rest, re.IGNORECASE), rest


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    """.dockerignore excludes the venv, git, caches, .env and deploy/ (secrets)."""
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    required = {".venv", ".git", ".env", "deploy", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
    assert required <= patterns, required - patterns
    assert not any(p.startswith("!") for p in patterns), "no re-includes"


# ---- the producer's command, run natively ----------------------------------------------------


def test_producer_command_reports_a_missing_apps_file_in_one_line(tmp_path: Path) -> None:
    """`wxtoken-producer` with the compose environment and no apps file exits 2 with one line."""
    producer = _services()["producer"]
    script = BIN / producer["command"][0]
    assert script.is_file(), f"{script} missing; is the project installed in this venv?"
    missing = tmp_path / "no-such-dir" / "apps.toml"
    env = {
        "PATH": os.environ.get("PATH", ""),
        **_resolved_environment(producer, COMPOSE_ENV),
        "WXTOKEN_APPS_FILE": str(missing),
    }
    result = subprocess.run(
        [str(script), *producer["command"][1:]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "configuration error" in lines[0]
    assert str(missing) in lines[0]
    assert "Traceback" not in result.stderr


def test_producer_signs_with_a_mounted_key() -> None:
    """The producer's signing key is a compose secret, never an image file or a variable."""
    producer = _compose()["services"]["producer"]
    assert producer["environment"]["WXTOKEN_SIGNING_KEY_FILE"] == "/run/secrets/wxtoken_signing_key"
    assert "wxtoken_signing_key" in producer["secrets"]
    assert _compose()["secrets"]["wxtoken_signing_key"]["file"].startswith("./deploy/secrets/")
    assert (DEPLOY / "keys" / "README.md").is_file()


# ---- image digests (make pin-images) ---------------------------------------------------------


def _load_pin_images() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("pin_images", DEPLOY / "pin_images.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pin_images_pins_every_pulled_image_and_keeps_the_files_valid() -> None:
    """`make pin-images` rewrites every compose image and the Dockerfile's base image to
    tag@digest (here with a stand-in registry), and the pinned files still parse."""
    pin_images = _load_pin_images()
    asked: list[str] = []

    def resolve(ref: str) -> str:
        asked.append(ref)
        return "sha256:" + "ab" * 32

    compose = pin_images.pin(COMPOSE.read_text(encoding="utf-8"), resolve)
    dockerfile = pin_images.pin(DOCKERFILE.read_text(encoding="utf-8"), resolve)
    tags = {s["image"].partition("@")[0] for s in _services().values() if "image" in s}
    assert tags | {_global_args()["PYTHON_IMAGE"].partition("@")[0]} == set(asked)
    assert pin_images.unpinned(compose) == []
    assert pin_images.unpinned(dockerfile) == []
    services = yaml.safe_load(compose)["services"]
    for tag in tags:
        assert any(s.get("image") == f"{tag}@sha256:{'ab' * 32}" for s in services.values())
    assert pin_images.pin(compose, resolve) == compose, "re-pinning is stable"
    assert "make pin-images" in DOCKERFILE.read_text(encoding="utf-8")
    assert "pin-images:" in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_dockerfile_uses_a_current_python_3_11_patch_release() -> None:
    """The base image is Python 3.11.17 or later (3.11.7 lacked two years of fixes)."""
    image = _global_args()["PYTHON_IMAGE"]
    match = re.match(r"python:3\.11\.(\d+)-", image)
    assert match, image
    assert int(match[1]) >= 17


# ---- the gateway -----------------------------------------------------------------------------


def test_gateway_environment_is_valid_gateway_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The gateway's environment passes validation: it listens on all interfaces of its
    container, on the port compose publishes, and logs in as the gateway user on the broker
    (its own allowance of refresh requests) and on Redis (reads only)."""
    for variable in list(os.environ):
        if variable.startswith("WXTOKEN_"):
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)
    gateway = _services()["gateway"]
    for variable, value in _resolved_environment(gateway, COMPOSE_ENV).items():
        monkeypatch.setenv(variable, value)
    settings = load_settings(GatewaySettings)
    assert settings.gateway_host == "0.0.0.0"
    metrics_port = settings.gateway_metrics_port
    assert metrics_port is not None
    assert metrics_port != settings.gateway_port, "metrics apart from the API (issue 18)"
    assert gateway["ports"] == [
        f"127.0.0.1:{settings.gateway_port}:{settings.gateway_port}",
        f"127.0.0.1:{metrics_port}:{metrics_port}",
    ]
    params = pika.URLParameters(settings.amqp_url)
    assert params.credentials.username == "wxtoken-gateway"
    redis_password = COMPOSE_ENV["WXTOKEN_REDIS_GATEWAY_PASSWORD"]
    assert settings.redis_url == f"redis://wxtoken-gateway:{redis_password}@redis:6379/0"
    assert settings.signing_key_file is None, "the gateway cannot publish: no operator key"
    # The keys file's directory is mounted, not the file (a compose file secret): the CLI
    # replaces the file by rename, which a single-file mount never shows (issue 18.6).
    keys_file = settings.gateway_keys_file
    assert str(keys_file) == "/run/wxtoken/gateway/keys.json"
    keys_mount = next(
        m
        for m in gateway["volumes"]
        if isinstance(m, dict) and m["target"] == str(keys_file.parent)
    )
    assert keys_mount["type"] == "bind"
    assert keys_mount["source"] == "./deploy/secrets/gateway"
    assert keys_mount["read_only"] is True
    assert "gateway_keys" not in gateway.get("secrets", [])
    assert "gateway_keys" not in _compose()["secrets"]
    verify = settings.verify_key_files()
    mounted = {m["target"] for m in gateway["volumes"] if isinstance(m, dict)}
    assert verify
    assert all(any(str(p).startswith(t + "/") for t in mounted) for p in verify)


def test_gateway_healthcheck_asks_readyz_on_its_port() -> None:
    """Compose calls the gateway healthy only once /readyz answers on its own port."""
    gateway = _services()["gateway"]
    port = _environment(gateway)["WXTOKEN_GATEWAY_PORT"]
    test = gateway["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{port}/readyz" in test[3]
    assert gateway["command"] == ["wxtoken-gateway"]
    assert gateway["depends_on"] == {
        "rabbitmq": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


def test_image_installs_the_gateway_extra() -> None:
    """The image carries the producer's, the ops CLI's and the gateway's locked dependencies,
    hash-checked, so `wxtoken-producer`, `wxtoken` and `wxtoken-gateway` all run in it."""
    runs = " ".join(rest for keyword, rest in _dockerfile() if keyword == "RUN")
    assert "--frozen" in runs
    assert set(re.findall(r"--extra (\w+)", runs)) == {"producer", "ops", "gateway", "platform"}
    assert runs.count("--require-hashes") == 2, "downloaded and installed against the lock"


def test_producer_healthcheck_asks_readyz_on_its_metrics_port() -> None:
    """The producer serves /readyz on WXTOKEN_METRICS_PORT and compose's healthcheck asks it."""
    producer = _services()["producer"]
    env = _environment(producer)
    port = env["WXTOKEN_METRICS_PORT"]
    assert env["WXTOKEN_METRICS_HOST"] == "0.0.0.0"
    assert f"http://127.0.0.1:{port}/readyz" in producer["healthcheck"]["test"][3]
    assert f"127.0.0.1:{port}:{port}" in producer["ports"]


def test_every_redis_user_of_compose_is_in_the_acl_template() -> None:
    """Each service's Redis URL names a user the ACL template defines (a user missing from
    it could not log in), and the gateway has a user of its own, not the consumer's."""
    template = REDIS_ACL_TEMPLATE.read_text(encoding="utf-8")
    defined = {line.split()[1] for line in template.splitlines() if line.startswith("user ")}
    used = {}
    for name, service in _services().items():
        url = _environment(service).get("WXTOKEN_REDIS_URL")
        if url:
            used[name] = url.split("//", 1)[1].split(":", 1)[0]
    assert used["gateway"] == "wxtoken-gateway"
    assert set(used.values()) <= defined, used
    gateway_line = next(x for x in template.splitlines() if x.startswith("user wxtoken-gateway "))
    # No write at all, the audit trail included (XADD ... MAXLEN 0 would erase it).
    assert not {"+xadd", "+set", "+evalsha", "+eval", "+del", "+xrevrange", "+@write"} & set(
        gateway_line.split()
    )
    assert not any(w.startswith(("%W~", "%RW~", "~")) for w in gateway_line.split())


def test_the_admin_step_loads_the_redis_functions_as_wxtoken_admin() -> None:
    """A one-shot service runs `wxtoken redis-functions` as wxtoken-admin (the only user that
    may FUNCTION LOAD) once Redis is healthy; the roles' users get FCALL of named functions
    and no way to run Lua of their own (EVAL, EVALSHA, SCRIPT LOAD, FUNCTION LOAD)."""
    step = _services()["redis-functions"]
    assert step["command"] == ["wxtoken", "redis-functions"]
    assert step["restart"] == "no"
    assert step["depends_on"] == {"redis": {"condition": "service_healthy"}}
    url = _resolved_environment(step, COMPOSE_ENV)["WXTOKEN_REDIS_URL"]
    password = COMPOSE_ENV["WXTOKEN_REDIS_ADMIN_PASSWORD"]
    assert url == f"redis://wxtoken-admin:{password}@redis:6379/0"
    template = REDIS_ACL_TEMPLATE.read_text(encoding="utf-8")
    users = {
        line.split()[1]: set(line.split())
        for line in template.splitlines()
        if line.startswith("user ")
    }
    own_lua = {"+eval", "+evalsha", "+eval_ro", "+evalsha_ro", "+script|load", "+@scripting"}
    own_lua |= {"+function|load", "+function", "+script", "+fcall", "+fcall_ro", "+@all"}
    for user, rights in users.items():
        if user != "wxtoken-admin":
            assert not own_lua & rights, user
    assert {"+function|load", "+script|kill", "+function|kill"} <= users["wxtoken-admin"]
    assert "+fcall|wxtoken_lease_acquire" in users["wxtoken-producer"]
