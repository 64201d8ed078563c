"""Real etcd servers and clusters for integration tests (no mocks).

Every process started here runs `/usr/bin/etcd` on 127.0.0.1 under `setpriv --pdeathsig KILL`,
so that it dies with the test process even when pytest itself is killed; `stop()` and an
atexit hook end the rest by PID. Data and logs live in one temp dir per server, removed by
`cleanup()`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from pyflannel.store import Store

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
# Short raft timers: a single node elects itself at once, a cluster re-elects in < 1 s after
# its leader stops; loose enough not to flap on a busy 2-core machine.
RAFT_ARGS = ("--heartbeat-interval", "50", "--election-timeout", "500")
_LOG_TAIL = 30
_PORT_ATTEMPTS = 5

_live: set[EtcdServer] = set()


class EtcdStartError(RuntimeError):
    """etcd did not become ready; the message carries the tail of its log."""


class PortInUseError(EtcdStartError):
    """Another process took one of the ports chosen for etcd; pick new ones."""


class EtcdctlError(RuntimeError):
    """etcdctl exited non-zero."""


# -- ports --------------------------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that are free now, below the kernel's ephemeral range.

    Ports from bind(0) come from the ephemeral range, where outgoing client connections
    take their local ports too: after a kill, such a connection could hold the port that
    `restart()` needs. Random ports below that range, checked by binding, avoid this;
    a remaining race is handled by retrying on "address already in use".
    """
    low = 20000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            high = int(handle.read().split()[0]) - 1
    except (OSError, ValueError, IndexError):
        high = 32767
    ports: list[int] = []
    for _ in range(1000):
        port = random.randint(low, high)
        if port not in ports and _port_is_free(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise EtcdStartError(f"no {count} free ports found in {low}-{high}")


# -- TLS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM file paths: a CA (and its key), a server and a client cert signed by it, and an
    unrelated CA (and its key) for certificates etcd must refuse."""

    ca: str
    ca_key: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str
    other_ca_key: str

    @property
    def directory(self) -> Path:
        return Path(self.ca).parent


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: str, issuer: x509.Name, public_key: Any, expired: bool = False
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    if expired:  # valid for a day that ended an hour ago
        start, end = now - datetime.timedelta(days=1, hours=1), now - datetime.timedelta(hours=1)
    else:
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .sign(key, hashes.SHA256())
    )
    return cert, key


SERVER_SANS = (HOST, "localhost")


def _make_leaf(
    common_name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usages: list[x509.ObjectIdentifier],
    sans: Sequence[str] = (),
    expired: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(common_name, ca_cert.subject, key.public_key(), expired)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        names: list[x509.GeneralName] = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _load_ca(cert_path: str, key_path: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def make_tls(directory: str | Path) -> TlsFiles:
    """Write a fresh CA, server cert (SAN 127.0.0.1, localhost), client cert and other CA."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca = _make_ca("pyflannel test CA")
    other = _make_ca("unrelated test CA")
    server = _make_leaf(
        "etcd-server",
        ca,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        sans=SERVER_SANS,
    )
    client = _make_leaf("flannel-client", ca, [ExtendedKeyUsageOID.CLIENT_AUTH])
    files = TlsFiles(
        ca=str(out / "ca.pem"),
        ca_key=str(out / "ca-key.pem"),
        server_cert=str(out / "server.pem"),
        server_key=str(out / "server-key.pem"),
        client_cert=str(out / "client.pem"),
        client_key=str(out / "client-key.pem"),
        other_ca=str(out / "other-ca.pem"),
        other_ca_key=str(out / "other-ca-key.pem"),
    )
    for cert_path, key_path, (cert, key) in (
        (files.ca, files.ca_key, ca),
        (files.server_cert, files.server_key, server),
        (files.client_cert, files.client_key, client),
        (files.other_ca, files.other_ca_key, other),
    ):
        _write_cert(Path(cert_path), cert)
        _write_key(Path(key_path), key)
    return files


def issue_cert(
    tls: TlsFiles,
    name: str,
    *,
    by_other_ca: bool = False,
    expired: bool = False,
    server_sans: Sequence[str] | None = None,
    client_auth: bool = True,
) -> tuple[str, str]:
    """Write `<name>.pem` and `<name>-key.pem` next to `tls`'s files; returns their paths.

    A client certificate unless `server_sans` is given (then a server+client one with those
    SANs); signed by the test CA, or by the unrelated CA with `by_other_ca`. Without
    `client_auth` the extended key usage lacks clientAuth (serverAuth only).
    """
    ca = _load_ca(tls.other_ca, tls.other_ca_key) if by_other_ca else _load_ca(tls.ca, tls.ca_key)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else []
    if server_sans is not None or not client_auth:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    cert, key = _make_leaf(name, ca, usages, sans=server_sans or (), expired=expired)
    cert_path, key_path = tls.directory / f"{name}.pem", tls.directory / f"{name}-key.pem"
    _write_cert(cert_path, cert)
    _write_key(key_path, key)
    return str(cert_path), str(key_path)


# -- one etcd process ---------------------------------------------------------------------


def _temp_root() -> str | None:
    # tmpfs makes etcd's fsyncs free: faster start and no disk-latency flakes.
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class EtcdServer:
    """One etcd member on 127.0.0.1; a single-node cluster unless `initial_cluster` is given.

    `ports` (client, peer) are chosen on the first `start()` unless given; `restart()` keeps
    ports and data dir.
    """

    def __init__(
        self,
        *,
        tls: TlsFiles | None = None,
        extra_args: Sequence[str] = (),
        name: str = "etcd0",
        ports: tuple[int, int] | None = None,
        initial_cluster: str | None = None,
        cluster_token: str = "pyflannel-test",
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.tls = tls
        self.extra_args = tuple(extra_args)
        self.name = name
        self.client_port, self.peer_port = ports or (0, 0)
        self._fixed_ports = ports is not None
        self.initial_cluster = initial_cluster
        self.cluster_token = cluster_token
        self.start_timeout = start_timeout
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"pyflannel-{name}-", dir=_temp_root()))
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "etcd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    # -- addresses

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle

    def start(self, wait: bool = True) -> EtcdServer:
        """Start etcd (again, on the same ports and data once it has run) and wait until ready."""
        if self.is_running():
            raise EtcdStartError(f"{self.name} is already running (pid {self.pid})")
        if self._fixed_ports or self.client_port:
            self._launch(wait)
            return self
        for attempt in range(_PORT_ATTEMPTS):
            self.client_port, self.peer_port = free_ports(2)
            try:
                self._launch(wait)
                return self
            except PortInUseError:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _command(self) -> list[str]:
        cluster = self.initial_cluster or f"{self.name}={self.peer_url}"
        args = [
            "setpriv", "--pdeathsig", "KILL", "--",
            ETCD,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.cluster_token,
            "--logger", "zap",
            "--log-outputs", "stderr",
            *RAFT_ARGS,
        ]  # fmt: skip
        if self.tls:
            args += [
                "--client-cert-auth",
                "--trusted-ca-file", self.tls.ca,
                "--cert-file", self.tls.server_cert,
                "--key-file", self.tls.server_key,
            ]  # fmt: skip
        return args + list(self.extra_args)

    def _launch(self, wait: bool) -> None:
        self._spawn()
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.kill()  # never leave a half-started etcd behind
                raise

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"=== start {time.strftime('%H:%M:%S')} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to pytest must not hit etcd mid-test
            )
        self.frozen = False
        _live.add(self)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll /health until etcd has a leader; raise EtcdStartError with the log otherwise."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc else None
                self._raise_start_error(f"exited with code {code}")
            if self.healthy():
                return
            if time.monotonic() > deadline:
                self._raise_start_error(f"not ready after {timeout or self.start_timeout} s")
            time.sleep(0.02)

    def _raise_start_error(self, what: str) -> None:
        log = self.log_text()
        kind = PortInUseError if "address already in use" in log else EtcdStartError
        tail = "\n".join(log.splitlines()[-_LOG_TAIL:])
        raise kind(f"etcd {self.name} at {self.client_url} {what}; log {self.log_path}:\n{tail}")

    def healthy(self, timeout: float = 0.5) -> bool:
        """True when GET /health says the member has a leader (False on any error)."""
        context = None
        if self.tls:
            # A readiness probe, not a TLS test: the server certificate is not verified, so a
            # server with a deliberately wrong certificate (other CA, wrong SAN) still starts.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        try:
            with urllib.request.urlopen(
                f"{self.client_url}/health", timeout=timeout, context=context
            ) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def _signal(self, signum: int) -> None:
        if self.is_running():
            assert self.proc is not None
            os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after `timeout`; a frozen member is thawed first."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGCONT)  # a stopped process would not act on SIGTERM
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait(STOP_TIMEOUT)
        self._reaped()

    def kill(self) -> None:
        """SIGKILL: the member dies without closing its connections cleanly."""
        proc = self.proc
        if proc is None:
            return
        self._signal(signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)
        self._reaped()

    def _reaped(self) -> None:
        self.proc = None
        self.frozen = False
        _live.discard(self)

    def restart(self, wait: bool = True) -> EtcdServer:
        self.stop()
        return self.start(wait=wait)

    def freeze(self) -> None:
        """SIGSTOP: the member keeps its sockets open but answers nothing."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)
        self.frozen = False

    def cleanup(self) -> None:
        """Stop the process and remove data dir and log."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> EtcdServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"EtcdServer({self.name}, {self.client_url}, pid={self.pid})"


def start_server(tls: TlsFiles | None = None, extra_args: Sequence[str] = ()) -> EtcdServer:
    """A started single-node server; cleaned up if it fails to start."""
    server = EtcdServer(tls=tls, extra_args=extra_args)
    try:
        return server.start()
    except BaseException:
        server.cleanup()
        raise


# -- a cluster ----------------------------------------------------------------------------


class EtcdCluster:
    """`size` members on 127.0.0.1 bootstrapped with a static --initial-cluster."""

    def __init__(self, size: int = 3, extra_args: Sequence[str] = ()) -> None:
        self.size = size
        self.extra_args = tuple(extra_args)
        self.members: list[EtcdServer] = []

    @property
    def client_urls(self) -> list[str]:
        return [member.client_url for member in self.members]

    def start(self, timeout: float = START_TIMEOUT) -> EtcdCluster:
        for attempt in range(_PORT_ATTEMPTS):
            self._create_members()
            for member in self.members:
                member.start(wait=False)
            try:
                self.wait_healthy(timeout)
                return self
            except PortInUseError:
                self.cleanup()
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _create_members(self) -> None:
        ports = free_ports(2 * self.size)
        names = [f"member{i}" for i in range(self.size)]
        peers = ",".join(f"{n}=http://{HOST}:{ports[2 * i + 1]}" for i, n in enumerate(names))
        token = f"pyflannel-{os.getpid()}-{ports[0]}"
        self.members = [
            EtcdServer(
                name=name,
                ports=(ports[2 * i], ports[2 * i + 1]),
                initial_cluster=peers,
                cluster_token=token,
                extra_args=self.extra_args,
            )
            for i, name in enumerate(names)
        ]

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every running member reports a leader."""
        deadline = time.monotonic() + timeout
        pending = [m for m in self.members if m.is_running() and not m.frozen]
        while pending:
            for member in pending:
                if not member.is_running():
                    member.wait_ready(0)  # raises with the member's log
            pending = [m for m in pending if not m.healthy()]
            if pending and time.monotonic() > deadline:
                pending[0].wait_ready(0)
            if pending:
                time.sleep(0.02)

    def stop_member(self, index: int) -> None:
        self.members[index].stop()

    def start_member(self, index: int) -> None:
        self.members[index].start()

    def heal(self) -> None:
        """Thaw and start every member again and wait for the cluster: undo a test's damage."""
        for member in self.members:
            if member.frozen:
                member.thaw()
            if not member.is_running():
                member.start(wait=False)
        self.wait_healthy()

    def cleanup(self) -> None:
        errors: list[BaseException] = []
        for member in self.members:
            try:
                member.cleanup()
            except BaseException as exc:  # stop the others before reporting
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def start_cluster(size: int = 3, extra_args: Sequence[str] = ()) -> EtcdCluster:
    cluster = EtcdCluster(size, extra_args)
    try:
        return cluster.start()
    except BaseException:
        cluster.cleanup()
        raise


# -- TLS failure cases ----------------------------------------------------------------------

WRONG_SANS = ("etcd.example", "198.51.100.7")


@dataclass(frozen=True)
class TlsCase:
    """One way TLS to etcd goes wrong, and the words each tool's one-line message must hold.

    `words` are templates: {ca}, {cert}, {key}, {endpoints} become the tool's option names
    (flags or module options), {url}/{netloc} the endpoint, {certfile}/{keyfile}/{cafile}
    the files. `local` cases are our own bad files (a usage error, no endpoint named).
    """

    name: str
    url: str
    cafile: str | None
    certfile: str | None
    keyfile: str | None
    words: tuple[str, ...]
    local: bool = False

    def expected(self, ca: str, cert: str, key: str, endpoints: str) -> list[str]:
        netloc = self.url.split("//", 1)[1]
        values = {
            "ca": ca, "cert": cert, "key": key, "endpoints": endpoints, "url": self.url,
            "netloc": netloc, "certfile": self.certfile, "keyfile": self.keyfile,
            "cafile": self.cafile,
        }  # fmt: skip
        words = [word.format(**values) for word in self.words]
        return words if self.local else [self.url, *words]


@dataclass
class TlsLab:
    """Real etcd servers for every TLS failure case, and the certificates they need.

    - `etcd`: TLS with client-cert-auth and the right certificate (the one to refuse us);
    - `plain`: plain http;
    - `foreign`: serves a certificate from the unrelated CA;
    - `misnamed`: serves a certificate of our CA whose SANs miss 127.0.0.1.
    """

    tls: TlsFiles
    servers: dict[str, EtcdServer] = field(default_factory=dict)

    @classmethod
    def start(cls, directory: Path) -> TlsLab:
        lab = cls(make_tls(directory))
        try:
            foreign = issue_cert(
                lab.tls, "foreign-server", by_other_ca=True, server_sans=SERVER_SANS
            )
            misnamed = issue_cert(lab.tls, "misnamed-server", server_sans=WRONG_SANS)
            lab.servers["etcd"] = start_server(tls=lab.tls)
            lab.servers["plain"] = start_server()
            for name, (cert, key) in (("foreign", foreign), ("misnamed", misnamed)):
                lab.servers[name] = start_server(
                    tls=replace(lab.tls, server_cert=cert, server_key=key)
                )
        except BaseException:
            lab.cleanup()
            raise
        return lab

    def url(self, name: str) -> str:
        return self.servers[name].client_url

    def cases(self) -> list[TlsCase]:
        tls = self.tls
        other_cert, other_key = issue_cert(tls, "other-ca-client", by_other_ca=True)
        old_cert, old_key = issue_cert(tls, "expired-client", expired=True)
        server_only_cert, server_only_key = issue_cert(tls, "server-only", client_auth=False)
        not_a_cert = tls.directory / "not-a-cert.pem"
        not_a_cert.write_text("this is not a certificate\n")
        missing = str(tls.directory / "missing.pem")
        etcd, plain = self.url("etcd"), self.url("plain")
        good = (tls.ca, tls.client_cert, tls.client_key)
        return [
            TlsCase(
                "no-client-cert", etcd, tls.ca, None, None,
                ("requires a client certificate", "we sent none", "{cert}", "{key}"),
            ),
            TlsCase(
                "client-cert-of-other-ca", etcd, tls.ca, other_cert, other_key,
                ("refused our client certificate {certfile}", "not signed by the CA in {ca}",
                 "--trusted-ca-file", "use a certificate issued by etcd's CA"),
            ),
            TlsCase(
                "expired-client-cert", etcd, tls.ca, old_cert, old_key,
                ("refused our client certificate {certfile}", "it has expired", "renew it"),
            ),
            TlsCase(
                "client-cert-without-client-auth", etcd, tls.ca, server_only_cert,
                server_only_key,
                ("refused our client certificate {certfile}",
                 "not made for client authentication", "clientAuth"),
            ),
            TlsCase(
                "server-cert-of-other-ca", self.url("foreign"), *good,
                ("we refused etcd", "server certificate is not signed by the CA in {ca}",
                 "{cafile}"),
            ),
            TlsCase(
                "server-name-not-in-sans", self.url("misnamed"), *good,
                ("server certificate that is not valid for 127.0.0.1", "etcd.example",
                 "198.51.100.7", "{endpoints}", "subject alternative names"),
            ),
            TlsCase(
                "http-to-tls-port", etcd.replace("https://", "http://"), *good,
                ("speaks TLS, not plain HTTP", "write https://{netloc} in {endpoints}"),
            ),
            TlsCase(
                "https-to-plain-port", plain.replace("http://", "https://"), *good,
                ("answers plain HTTP, not TLS", "write http://{netloc} in {endpoints}"),
            ),
            TlsCase(
                "cert-file-missing", etcd, tls.ca, missing, tls.client_key,
                ("{cert}: cannot read {certfile}", "No such file"), local=True,
            ),
            TlsCase(
                "key-not-of-cert", etcd, tls.ca, tls.client_cert, tls.server_key,
                ("{key}: {keyfile} is not the private key of {cert} {certfile}",), local=True,
            ),
            TlsCase(
                "ca-not-a-cert", etcd, str(not_a_cert), tls.client_cert, tls.client_key,
                ("{ca}: {cafile} holds no PEM certificate",), local=True,
            ),
        ]  # fmt: skip

    def cleanup(self) -> None:
        for server in self.servers.values():
            server.cleanup()


# -- clients ------------------------------------------------------------------------------


class TlsEtcd(NamedTuple):
    """What the `etcd_tls` fixture gives: the server and its TLS files."""

    server: EtcdServer
    tls: TlsFiles

    @property
    def client_url(self) -> str:
        return self.server.client_url


Target = EtcdServer | EtcdCluster | TlsEtcd | str | Sequence[str]


def endpoints_of(target: Target) -> list[str]:
    if isinstance(target, EtcdServer | TlsEtcd):
        return [target.client_url]
    if isinstance(target, EtcdCluster):
        return target.client_urls
    if isinstance(target, str):
        return [target]
    return list(target)


def _tls_of(target: Target) -> TlsFiles | None:
    if isinstance(target, EtcdServer):
        return target.tls
    if isinstance(target, TlsEtcd):
        return target.tls
    return None


def etcdctl(
    target: Target,
    *args: str,
    user: str | None = None,
    check: bool = True,
    timeout: float = 15.0,
) -> str:
    """Run `etcdctl` (API v3) against `target` and return its stdout.

    `user` is "name:password"; TLS files come from the server. Raises EtcdctlError with
    stderr when etcdctl fails and `check` is true.
    """
    command = [
        ETCDCTL,
        f"--endpoints={','.join(endpoints_of(target))}",
        "--dial-timeout=2s",
        "--command-timeout=5s",
    ]
    tls = _tls_of(target)
    if tls:
        command += [f"--cacert={tls.ca}", f"--cert={tls.client_cert}", f"--key={tls.client_key}"]
    if user:
        command.append(f"--user={user}")
    env = {**os.environ, "ETCDCTL_API": "3"}
    result = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise EtcdctlError(
            f"etcdctl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout


def make_store(target: Target, **opts: Any) -> Store:
    """A pyflannel Store for `target`; TLS files default to the server's, timeout to 2 s."""
    # Imported here: tests that only need the harness (or no etcd) skip loading grpc.
    from pyflannel.store import EtcdOptions, Store

    tls = _tls_of(target)
    if tls:
        opts.setdefault("cafile", tls.ca)
        opts.setdefault("certfile", tls.client_cert)
        opts.setdefault("keyfile", tls.client_key)
    opts.setdefault("timeout", 2.0)
    opts.setdefault("endpoints", tuple(endpoints_of(target)))
    return Store(EtcdOptions(**opts))


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.kill()
