"""Private `redis-server` and Redis Sentinel processes on free ports, for tests that break,
stop or fail over a server. Never the shared Redis on 6379: every server here belongs to
the test that started it, keeps its files in the test's `tmp_path`, and must be stopped
by it (use the object as a context manager, or call `stop()` in a fixture's teardown).

    with RedisServer(tmp_path).start() as server:
        client = redis.Redis.from_url(server.url)
        server.stop()            # SHUTDOWN NOSAVE ("Redis down")
        server.start()           # the same port again, empty ("Redis back")
        server.kill()            # SIGKILL: no goodbye

A server keeps its port across restarts, so clients configured with its URL reconnect.

`RedisServer(tmp_path, tls=ServerTls(...))` listens with TLS only (`--port 0 --tls-port P`);
its `url` is then `rediss://...` and `client()` speaks TLS, trusting `ServerTls.ca_file`.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import IN_CI
from tests.waiting import wait_for

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """The `redis-server` executable; skips (locally) or fails (under CI=true) without it."""
    found = shutil.which("redis-server")
    if found is None:
        message = "redis-server is not installed"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true requires it")
        pytest.skip(message)
    return found


def _quick_client(port: int, **extra: Any) -> redis.Redis:
    """A client that gives up at once: for probing and managing a private server."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=2.0,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        **extra,
    )


class _ServerProcess:
    """One `redis-server` process (plain or sentinel) with its own directory and log."""

    #: Shown in log file names and error messages.
    kind = "redis"

    def __init__(self, tmp_path: Path, *, port: int | None = None, name: str | None = None):
        self.port = port if port is not None else free_port()
        self.name = name or f"{self.kind}-{self.port}"
        self.dir = tmp_path / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _args(self) -> list[str]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **extra: Any) -> redis.Redis:
        """A new client of this server (no retries, short timeouts); close it when done."""
        return _quick_client(self.port, **extra)

    def start(self, timeout_s: float = 10.0) -> Self:
        """Start the process and wait until it answers PING; fails with its log if not."""
        if self.running:
            return self
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [redis_server_binary(), *self._args()],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._answers, timeout_s=timeout_s, message=f"{self.name} to answer PING")
        except AssertionError as exc:
            self.kill()
            raise AssertionError(f"{exc}\n--- {self.log_path} ---\n{self.log_text()}") from None
        return self

    def _answers(self) -> bool:
        if not self.running:
            raise AssertionError(f"{self.name} exited with {self.proc and self.proc.returncode}")
        client = self.client()
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SHUTDOWN NOSAVE, else SIGTERM, else SIGKILL; idempotent."""
        if self.running:
            client = self.client()
            with contextlib.suppress(redis.RedisError, OSError):
                client.execute_command("SHUTDOWN", "NOSAVE")  # type: ignore[no-untyped-call]
            client.close()
            self._reap(timeout_s, signal.SIGTERM)
        self._closed()

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a word, as in a crash or power loss."""
        if self.running:
            self._reap(0, signal.SIGKILL)
        self._closed()

    def _reap(self, timeout_s: float, then: signal.Signals) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            self.proc.send_signal(then)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def _closed(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Pki:
    """PEM files of a throwaway CA, a server certificate it signed for 127.0.0.1 and
    localhost, a client certificate it signed, and an unrelated CA that signed nothing."""

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path
    other_ca_file: Path

    def server_tls(self, auth_clients: Literal["no", "optional", "yes"] = "optional") -> ServerTls:
        """A `ServerTls` with these files; management connects with the client certificate."""
        return ServerTls(
            cert_file=self.server_cert_file,
            key_file=self.server_key_file,
            ca_file=self.ca_file,
            auth_clients=auth_clients,
            client_cert_file=self.client_cert_file,
            client_key_file=self.client_key_file,
        )


def make_pki(directory: Path) -> Pki:
    """Write a fresh `Pki` into `directory` (EC P-256 keys, valid for a day)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write_key(key: ec.EllipticCurvePrivateKey, filename: str) -> Path:
        path = directory / filename
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(cert: x509.Certificate, filename: str) -> Path:
        path = directory / filename
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(name(common_name))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cert, key

    def make_leaf(
        common_name: str,
        ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
        usage: x509.ObjectIdentifier,
        alt_names: list[x509.GeneralName],
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        ca_cert, ca_key = ca
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    ca = make_ca("wxtoken test CA")
    other_ca, _ = make_ca("wxtoken unrelated CA")
    server_cert, server_key = make_leaf(
        "wxtoken test redis",
        ca,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))],
    )
    client_cert, client_key = make_leaf(
        "wxtoken test client", ca, ExtendedKeyUsageOID.CLIENT_AUTH, []
    )
    return Pki(
        ca_file=write_cert(ca[0], "ca.pem"),
        server_cert_file=write_cert(server_cert, "server.pem"),
        server_key_file=write_key(server_key, "server.key"),
        client_cert_file=write_cert(client_cert, "client.pem"),
        client_key_file=write_key(client_key, "client.key"),
        other_ca_file=write_cert(other_ca, "other-ca.pem"),
    )


@dataclass(frozen=True)
class ServerTls:
    """The TLS files of a private Redis: its certificate and key, the CA it checks client
    certificates against (and the one our management client trusts), whether clients must
    present a certificate, and the client certificate that management uses then."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    auth_clients: Literal["no", "optional", "yes"] = "optional"
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    def server_args(self, port: int) -> list[str]:
        """`redis-server` options for TLS only on `port` (no plaintext listener)."""
        return [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(self.cert_file),
            "--tls-key-file",
            str(self.key_file),
            "--tls-ca-cert-file",
            str(self.ca_file),
            "--tls-auth-clients",
            self.auth_clients,
        ]

    def client_options(self) -> dict[str, Any]:
        """redis-py options of a verifying TLS client of such a server."""
        options: dict[str, Any] = {
            "ssl": True,
            "ssl_ca_certs": str(self.ca_file),
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
        }
        if self.client_cert_file is not None and self.client_key_file is not None:
            options["ssl_certfile"] = str(self.client_cert_file)
            options["ssl_keyfile"] = str(self.client_key_file)
        return options


class RedisServer(_ServerProcess):
    """A private, empty, non-persistent Redis on 127.0.0.1 (`extra_args` are appended, e.g.
    `("--replicaof", "127.0.0.1", str(master.port))`); with `tls`, a TLS-only one."""

    def __init__(
        self,
        tmp_path: Path,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        *,
        name: str | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        super().__init__(tmp_path, port=port, name=name)
        self.extra_args = list(extra_args)
        self.tls = tls

    @property
    def url(self) -> str:
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{HOST}:{self.port}/0"

    def client(self, **extra: Any) -> redis.Redis:
        """A new client of this server (TLS when the server is); close it when done."""
        if self.tls is not None:
            extra = {**self.tls.client_options(), **extra}
        return _quick_client(self.port, **extra)

    def _args(self) -> list[str]:
        listen = ["--port", str(self.port)] if self.tls is None else self.tls.server_args(self.port)
        return [
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            HOST,
            *listen,
            "--dir",
            str(self.dir),
            *self.extra_args,
        ]

    def replica_in_sync(self) -> bool:
        """True on a replica whose link to its master is up."""
        client = self.client()
        try:
            info = client.info("replication")
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
        return info.get("role") == "slave" and info.get("master_link_status") == "up"


class SentinelServer(_ServerProcess):
    """A Redis Sentinel (`redis-server sentinel.conf --sentinel`) monitoring one master."""

    kind = "sentinel"

    def __init__(
        self,
        tmp_path: Path,
        master_port: int,
        *,
        service: str = "wxm",
        port: int | None = None,
        quorum: int = 1,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        name: str | None = None,
    ) -> None:
        super().__init__(tmp_path, port=port, name=name)
        self.service = service
        self.conf_path = self.dir / "sentinel.conf"
        # Sentinel rewrites its configuration file, so it is written once, here.
        self.conf_path.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {service} {HOST} {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
        )

    def url(self, *, db: int = 0, scheme: str = "redis+sentinel") -> str:
        """The `redis+sentinel://` URL of the monitored service's master."""
        return f"{scheme}://{HOST}:{self.port}/{self.service}/{db}"

    def _args(self) -> list[str]:
        return [str(self.conf_path), "--sentinel"]

    def master_address(self) -> tuple[str, int] | None:
        """What this sentinel names as the master now (`SENTINEL get-master-addr-by-name`)."""
        client = self.client(decode_responses=True)
        try:
            reply = client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "get-master-addr-by-name", self.service
            )
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()
        if not reply:
            return None
        host, port = reply
        return str(host), int(port)

    def knows_replica(self, port: int) -> bool:
        """True once the sentinel lists a healthy replica on `port` (it can fail over)."""
        client = self.client(decode_responses=True)
        try:
            replicas = client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "replicas", self.service
            )
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
        for fields in replicas:  # redis-py parses each into a dict of strings
            flags = str(fields.get("flags", "")).split(",")
            if int(fields.get("port", 0)) == port and flags == ["slave"]:
                return bool(fields.get("master-link-status") == "ok")
        return False
