"""Why a TLS connection to etcd fails, in one line an operator can act on.

Neither gRPC nor etcd says why a connection was refused: with TLS 1.3 etcd checks the client
certificate after our side of the handshake is done, and then only closes the connection or
sends "bad certificate" (the same alert for an unknown CA and an expired certificate). gRPC
reports all of these as "Unwrap failed (TSI_DATA_CORRUPTED)". So, after a failure, this module
looks itself: it checks our own files, makes one probe connection with Python's ssl to see
which side refused what, and checks our client certificate against our CA file locally (an
in-memory handshake, so OpenSSL applies the same checks a TLS server does).

Standard library only, and nothing from pyflannel: the collection's modules run it on target
hosts without the agent's virtualenv, and the agent and flannelctl import it as
pyflannel.tlscheck (a symlink to this file, resolved when the wheel is built). One copy, two
ways to import it.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# OpenSSL verify codes (X509_V_ERR_*) of a server certificate we refuse.
_HOSTNAME_MISMATCH = frozenset({62, 64})  # host name / IP address mismatch
_EXPIRED = 10
_NOT_YET_VALID = 9
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})  # issuer not found / self-signed / no chain
_PROBE_BYTES = 64


@dataclass(frozen=True)
class OptionNames:
    """How each tool calls its settings, so that messages name the flag the operator types."""

    endpoints: str
    ca: str
    cert: str
    key: str

    @classmethod
    def of(cls, names: Mapping[str, str]) -> OptionNames:
        """From etcd_options' key -> name table (flag_names() or module_names())."""
        return cls(names["endpoints"], names["cafile"], names["certfile"], names["keyfile"])


class TlsFileError(ValueError):
    """One of our own TLS files is missing, unreadable or not what it should be (one line)."""


@dataclass(frozen=True)
class TlsFiles:
    """The client side's TLS material; any of them may be None."""

    cafile: str | None
    certfile: str | None
    keyfile: str | None


def _no_password() -> str:
    # An encrypted key must fail, not prompt on the agent's terminal.
    return ""


def _read(path: str, name: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("ascii", "replace")
    except OSError as exc:
        raise TlsFileError(f"{name}: cannot read {path}: {exc.strerror}") from None


def check_files(files: TlsFiles, names: OptionNames) -> None:
    """Raise TlsFileError when a given file is unreadable, not PEM, or key and cert differ."""
    if bool(files.certfile) != bool(files.keyfile):
        raise TlsFileError(f"{names.cert} and {names.key} must be given together")
    if files.cafile:
        text = _read(files.cafile, names.ca)
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise TlsFileError(
                f"{names.ca}: {files.cafile} holds no PEM certificate; give the CA certificate "
                "that signed etcd's server certificate"
            )
        try:
            ssl.create_default_context().load_verify_locations(cafile=files.cafile)
        except ssl.SSLError as exc:
            raise TlsFileError(
                f"{names.ca}: {files.cafile} is not a valid CA certificate: {_ssl_reason(exc)}"
            ) from None
    if not (files.certfile and files.keyfile):
        return
    if "-----BEGIN CERTIFICATE-----" not in _read(files.certfile, names.cert):
        raise TlsFileError(
            f"{names.cert}: {files.certfile} holds no PEM certificate; give this client's "
            "certificate"
        )
    key_text = _read(files.keyfile, names.key)
    if "PRIVATE KEY-----" not in key_text:
        raise TlsFileError(
            f"{names.key}: {files.keyfile} holds no PEM private key; give the key of "
            f"{files.certfile}"
        )
    if "ENCRYPTED" in key_text:
        raise TlsFileError(
            f"{names.key}: {files.keyfile} is encrypted with a passphrase; give an unencrypted "
            "key (mode 0600)"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            files.certfile, files.keyfile, password=_no_password
        )
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsFileError(
                f"{names.key}: {files.keyfile} is not the private key of {names.cert} "
                f"{files.certfile}; give the key that was issued with this certificate"
            ) from None
        raise TlsFileError(
            f"{names.cert}/{names.key}: cannot load {files.certfile} with {files.keyfile}: "
            f"{_ssl_reason(exc)}"
        ) from None


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return " ".join(str(exc).split()) or type(exc).__name__


# -- the probe ----------------------------------------------------------------------------


def diagnose(url: str, files: TlsFiles, names: OptionNames, timeout: float) -> str | None:
    """One line on why TLS to `url` fails, or None when it is not a TLS problem.

    None means: the endpoint cannot be reached at all (then the caller's "unreachable" message
    is the right one), or TLS works with these files (then the failure lies elsewhere).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 2379
    timeout = max(0.5, min(timeout, 5.0))
    try:
        check_files(files, names)
    except TlsFileError as exc:
        return str(exc)
    try:
        if parts.scheme == "https":
            return _Probe(url, host, port, files, names, timeout).https()
        if _speaks_tls(host, port, timeout):
            return (
                f"etcd at {url} speaks TLS, not plain HTTP; write https://{parts.netloc} in "
                f"{names.endpoints} and give {names.ca}, {names.cert} and {names.key}"
            )
    except (OSError, ValueError):  # ssl.SSLError included: the caller's own reason stands
        return None
    return None


def _connect(host: str, port: int, timeout: float) -> socket.socket | None:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None


def _client_context(files: TlsFiles, check_hostname: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=files.cafile or None)
    context.check_hostname = check_hostname
    if files.certfile and files.keyfile:
        context.load_cert_chain(files.certfile, files.keyfile, password=_no_password)
    return context


def _is_alert(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLError) and "ALERT" in str(exc.reason or "")


def _speaks_plain_http(host: str, port: int, timeout: float) -> bool:
    sock = _connect(host, port, timeout)
    if sock is None:
        return False
    try:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return sock.recv(_PROBE_BYTES).startswith(b"HTTP/")
    except OSError:
        return False
    finally:
        sock.close()


def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    sock = _connect(host, port, timeout)
    if sock is None:
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.wrap_socket(sock, server_hostname=host).close()
        return True
    except ssl.SSLError as exc:
        return _is_alert(exc)  # a TLS alert is TLS too
    except OSError:
        return False
    finally:
        sock.close()


@dataclass(frozen=True)
class _Probe:
    """One https endpoint to look at with our TLS files."""

    url: str
    host: str
    port: int
    files: TlsFiles
    names: OptionNames
    timeout: float

    def https(self) -> str | None:
        sock = _connect(self.host, self.port, self.timeout)
        if sock is None:
            return None
        try:
            try:
                conn = _client_context(self.files).wrap_socket(sock, server_hostname=self.host)
            except ssl.SSLCertVerificationError as exc:
                return self._server_refused(exc)
            except (ssl.SSLError, ConnectionError) as exc:
                if _speaks_plain_http(self.host, self.port, self.timeout):
                    return (
                        f"etcd at {self.url} answers plain HTTP, not TLS; write "
                        f"http://{urlsplit(self.url).netloc} in {self.names.endpoints}, or turn "
                        "on TLS in etcd (--cert-file, --key-file)"
                    )
                if _is_alert(exc):  # TLS 1.2: the server refuses our certificate in the handshake
                    return _client_refused(self.url, self.files, self.names)
                return f"TLS handshake with etcd at {self.url} failed: {_ssl_reason(exc)}"
            except OSError:
                return None  # a timeout: the caller says unreachable
            sock = conn
            # TLS 1.3: etcd checks our certificate after our handshake is done; its verdict (an
            # alert or a closed connection) arrives with the first read.
            try:
                conn.sendall(f"GET /health HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
                answer = conn.recv(_PROBE_BYTES)
            except (ssl.SSLError, ConnectionError):
                return _client_refused(self.url, self.files, self.names)
            except OSError:
                return None
            return None if answer else _client_refused(self.url, self.files, self.names)
        finally:
            sock.close()

    def _server_refused(self, exc: ssl.SSLCertVerificationError) -> str:
        url, names, files = self.url, self.names, self.files
        code = exc.verify_code
        if code in _HOSTNAME_MISMATCH:
            sans = self._server_names()
            listed = f" (it names {', '.join(sans)})" if sans else ""
            return (
                f"etcd at {url} presents a server certificate that is not valid for "
                f"{self.host}{listed}; reach etcd by a name or address in its certificate "
                f"({names.endpoints}) or reissue etcd's certificate with {self.host} in its "
                "subject alternative names"
            )
        if code == _EXPIRED:
            return f"etcd at {url} presents an expired server certificate; renew etcd's certificate"
        if code == _NOT_YET_VALID:
            return (
                f"etcd at {url} presents a server certificate that is not valid yet; check the "
                "clocks of this host and of etcd"
            )
        if code in _UNKNOWN_ISSUER:
            ca = f"the CA in {names.ca} ({files.cafile})" if files.cafile else "a CA we trust"
            return (
                f"we refused etcd at {url}: its server certificate is not signed by {ca}; give "
                f"the CA that issued etcd's certificate as {names.ca}"
            )
        return (
            f"we refused etcd at {url}: its server certificate fails verification: "
            f"{exc.verify_message}"
        )

    def _server_names(self) -> list[str]:
        """The SANs of the server certificate (its chain is fine, only its names are wrong)."""
        sock = _connect(self.host, self.port, self.timeout)
        if sock is None:
            return []
        try:
            with _client_context(self.files, check_hostname=False).wrap_socket(sock) as conn:
                cert: dict[str, Any] = dict(conn.getpeercert() or {})
            return [str(value) for _kind, value in cert.get("subjectAltName", ())]
        except OSError:
            return []
        finally:
            sock.close()


def _client_refused(url: str, files: TlsFiles, names: OptionNames) -> str:
    if not files.certfile:
        return (
            f"etcd at {url} requires a client certificate (client-cert-auth is on) and we sent "
            f"none; give {names.cert} and {names.key} (a certificate issued by etcd's CA)"
        )
    refused = f"etcd at {url} refused our client certificate {files.certfile}"
    try:
        problem = own_certificate_problem(files)
    except (OSError, ValueError) as exc:  # could not check it here; say what we know
        return (
            f"{refused} ({_ssl_reason(exc)} when checking it here); use a valid certificate "
            "issued by etcd's CA"
        )
    if problem is None:
        return (
            f"{refused} although it is valid and signed by the CA in {names.ca}: etcd trusts "
            "another CA for clients (etcd's --trusted-ca-file); use a certificate issued by that "
            "CA"
        )
    message, code = problem
    if code == _EXPIRED:
        return f"{refused}: it has expired; renew it (a new certificate from etcd's CA)"
    if code == _NOT_YET_VALID:
        return f"{refused}: it is not valid yet; check this host's clock"
    if code in _UNKNOWN_ISSUER:
        ca = f"the CA in {names.ca} ({files.cafile})" if files.cafile else "a CA this host trusts"
        return (
            f"{refused}: it is not signed by {ca}, so not by a CA etcd trusts (etcd's "
            "--trusted-ca-file); use a certificate issued by etcd's CA"
        )
    if "purpose" in message:
        return (
            f"{refused}: it is not made for client authentication (extended key usage "
            "clientAuth is missing); reissue it for client use"
        )
    return f"{refused}: {message}; use a valid certificate issued by etcd's CA"


def own_certificate_problem(files: TlsFiles) -> tuple[str, int] | None:
    """What a TLS server would hold against our client certificate: (message, verify code).

    An in-memory handshake: a server that trusts our CA file and demands a client certificate,
    and our client with its certificate. None when the certificate passes.
    """
    assert files.certfile and files.keyfile
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.certfile, files.keyfile, password=_no_password)
    server.verify_mode = ssl.CERT_REQUIRED
    if files.cafile:
        server.load_verify_locations(cafile=files.cafile)
    else:
        server.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.load_cert_chain(files.certfile, files.keyfile, password=_no_password)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    ours = client.wrap_bio(to_client, to_server)
    theirs = server.wrap_bio(server_in, server_out, server_side=True)
    done = {"ours": False, "theirs": False}
    for _ in range(10):
        for name, side in (("ours", ours), ("theirs", theirs)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as exc:  # only the server side verifies
                return str(exc.verify_message), int(exc.verify_code)
            except ssl.SSLError:
                if side is theirs:
                    raise
                done[name] = True  # the server's alert about our certificate reached us
        server_in.write(to_server.read())
        to_client.write(server_out.read())
        if done["theirs"]:
            return None
    return None
