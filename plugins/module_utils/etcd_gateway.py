"""A small etcd v3 client over etcd's JSON gateway (`/v3/...`), for the provisioner's modules.

Standard library only: Ansible runs modules on the target hosts, which may have nothing but
python3 (no grpc, no etcd client package). The agent itself talks gRPC through
`pyflannel.store`; this is the provisioner-side access to the same keys.

What it does: range / put / deleterange / txn on single keys, endpoints tried in order with a
timeout each (the next one on connection errors, timeouts, TLS failures and 5xx answers), https
with a CA and client certificate, and username/password authentication (the token goes in the
`Authorization` header; simple tokens are per member, so one per endpoint). The gateway encodes
keys and values as base64 and 64-bit integers as JSON strings, and omits zero values.

Every error is an `EtcdGatewayError` whose message is one line naming the endpoint(s). When TLS
fails, `etcd_tls` (the agent's pyflannel/tlscheck.py, linked) says which side refused what.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from ansible_collections.pyflannel.overlay.plugins.module_utils.etcd_options import (
    MODULE_REQUIRED_TOGETHER,
    module_argument_spec,
    module_names,
    split_endpoint,
)
from ansible_collections.pyflannel.overlay.plugins.module_utils.etcd_tls import (
    OptionNames,
    TlsFileError,
    TlsFiles,
    check_files,
    diagnose,
)

API = "/v3"
# How modules reach etcd (etcd_key and flannel_lease take the same options and rules), from
# the table that flanneld's flags and flannelctl use too; the key prefix only where a module
# has one.
CONNECTION_ARGUMENT_SPEC: dict[str, Any] = module_argument_spec(with_prefix=False)
CONNECTION_REQUIRED_TOGETHER = MODULE_REQUIRED_TOGETHER
MODULE_OPTIONS = OptionNames.of(module_names())

# gRPC status codes the gateway reports in its error body (etcd's rpctypes).
_CODE_UNAUTHENTICATED = 16
_INVALID_TOKEN = "invalid auth token"


class EtcdGatewayError(Exception):
    """etcd refused a request, or a setting is wrong; the message is one line."""


class EtcdUnavailableError(EtcdGatewayError):
    """No endpoint answered."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int

    @property
    def text(self) -> str:
        return self.value.decode("utf-8", "replace")


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _int(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(raw.get("key")).decode("utf-8", "replace"),
        value=_unb64(raw.get("value")),
        mod_revision=_int(raw.get("mod_revision")),
        create_revision=_int(raw.get("create_revision")),
        version=_int(raw.get("version")),
        lease=_int(raw.get("lease")),
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _check_url(url: str) -> str:
    try:
        split_endpoint(url)
    except ValueError as exc:
        raise EtcdGatewayError(f"endpoints: {exc}") from None
    return url.strip().rstrip("/")


def _reason(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed connection ('connection refused', 'TLS: ...')."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return "TLS: " + _one_line(str(exc))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return _one_line(str(exc)) or type(exc).__name__


class EtcdGateway:
    """etcd v3 over HTTP(S)/JSON; `endpoints` are tried in order for every request."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        ca_cert: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise EtcdGatewayError("endpoints: at least one etcd URL is needed")
        if (username is None) != (password is None):
            raise EtcdGatewayError("username and password must be given together")
        self.endpoints = [_check_url(url) for url in endpoints]
        self.username = username
        self.password = password
        self.timeout = float(timeout)
        self._tls = TlsFiles(ca_cert or None, client_cert or None, client_key or None)
        self._context: ssl.SSLContext | None = None
        self._tokens: dict[str, str] = {}

    # -- transport ------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            try:
                check_files(self._tls, MODULE_OPTIONS)
            except TlsFileError as exc:
                raise EtcdGatewayError(str(exc)) from None
            context = ssl.create_default_context(cafile=self._tls.cafile)
            if self._tls.certfile and self._tls.keyfile:
                context.load_cert_chain(self._tls.certfile, self._tls.keyfile)
            self._context = context
        return self._context

    def _post(self, url: str, path: str, body: dict[str, Any], token: str | None) -> Any:
        """One HTTP request; returns the decoded JSON answer or raises HTTPError/OSError."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        request = urllib.request.Request(
            url + API + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        context = self._ssl_context() if url.startswith("https:") else None
        with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
            return json.loads(response.read() or b"{}")

    def _token(self, url: str) -> str | None:
        if self.username is None:
            return None
        if url not in self._tokens:
            body = {"name": self.username, "password": self.password or ""}
            try:
                answer = self._post(url, "/auth/authenticate", body, None)
            except urllib.error.HTTPError as exc:
                message, _ = _http_error(exc)
                raise EtcdGatewayError(
                    f"etcd {url}: authentication as {self.username!r} failed: {message}"
                ) from None
            self._tokens[url] = str(answer.get("token", ""))
        return self._tokens[url]

    def call(self, path: str, body: dict[str, Any], what: str) -> Any:
        """POST `body` to `path` on the first endpoint that answers; `what` names it in errors."""
        failures: list[str] = []
        tls_failures: list[str] = []
        for url in self.endpoints:
            for attempt in range(2):  # a second time only after a rejected (expired) token
                try:
                    return self._post(url, path, body, self._token(url))
                except urllib.error.HTTPError as exc:
                    message, code = _http_error(exc)
                    if exc.code >= 500:
                        failures.append(f"{url}: {message}")
                        break
                    expired = code == _CODE_UNAUTHENTICATED or _INVALID_TOKEN in message
                    if attempt == 0 and expired and self._tokens.pop(url, ""):
                        continue
                    raise EtcdGatewayError(f"etcd {url}: {what} failed: {message}") from None
                except (OSError, ssl.SSLError, ValueError) as exc:
                    # URLError, timeouts, TLS failures, a non-JSON answer: try the next member.
                    tls_problem = self._tls_problem(url, exc)
                    if tls_problem:
                        tls_failures.append(tls_problem)
                    failures.append(tls_problem or f"{url}: {_reason(exc, self.timeout)}")
                    break
        if tls_failures and len(tls_failures) == len(failures):
            raise EtcdUnavailableError(f"etcd {what} failed: {'; '.join(tls_failures)}")
        raise EtcdUnavailableError(
            f"etcd {what}: no endpoint reachable ({'; '.join(failures)}); check the endpoints, "
            "TLS settings and that etcd is running"
        )

    def _tls_problem(self, url: str, exc: BaseException) -> str | None:
        """Why TLS to `url` failed, when it did (see etcd_tls); None for other failures."""
        if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
            exc = exc.reason
        if isinstance(exc, ssl.SSLError):
            return diagnose(url, self._tls, MODULE_OPTIONS, self.timeout)
        unreachable = TimeoutError | ConnectionRefusedError | socket.gaierror
        if isinstance(exc, unreachable | ValueError):  # ValueError: an answer that is not JSON
            return None  # unreachable or not etcd: no TLS question to answer
        return diagnose(url, self._tls, MODULE_OPTIONS, self.timeout)

    # -- keys -----------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        answer = self.call("/kv/range", {"key": b64(key)}, f"get {key}")
        kvs = answer.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def put(self, key: str, value: str | bytes) -> int:
        """Unconditional put; returns the new store revision."""
        answer = self.call("/kv/put", {"key": b64(key), "value": b64(value)}, f"put {key}")
        return _int(answer.get("header", {}).get("revision"))

    def delete(self, key: str) -> int:
        """Unconditional delete; returns how many keys were deleted (0 or 1)."""
        answer = self.call("/kv/deleterange", {"key": b64(key)}, f"delete {key}")
        return _int(answer.get("deleted"))

    def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
        what: str = "transaction",
    ) -> tuple[bool, list[dict[str, Any]]]:
        """A raw transaction (gateway JSON); returns (succeeded, responses)."""
        body = {"compare": compare, "success": success, "failure": failure or []}
        answer = self.call("/kv/txn", body, what)
        return bool(answer.get("succeeded", False)), list(answer.get("responses") or [])

    def put_if_unchanged(self, key: str, value: str | bytes, mod_revision: int) -> bool:
        """Put only if the key's mod revision is still `mod_revision` (0: the key is absent)."""
        succeeded, _ = self.txn(
            [_mod_equals(key, mod_revision)],
            [{"request_put": {"key": b64(key), "value": b64(value)}}],
            what=f"put {key}",
        )
        return succeeded

    def delete_if_unchanged(self, key: str, mod_revision: int) -> bool:
        """Delete only if the key's mod revision is still `mod_revision`."""
        succeeded, _ = self.txn(
            [_mod_equals(key, mod_revision)],
            [{"request_delete_range": {"key": b64(key)}}],
            what=f"delete {key}",
        )
        return succeeded


def _mod_equals(key: str, mod_revision: int) -> dict[str, Any]:
    return {
        "key": b64(key),
        "result": "EQUAL",
        "target": "MOD",
        "mod_revision": str(mod_revision),
    }


def _http_error(exc: urllib.error.HTTPError) -> tuple[str, int]:
    """The gateway's error text and gRPC code ({"error": ..., "code": ...}), or the HTTP status."""
    try:
        body = json.loads(exc.read() or b"{}")
        text, code = body.get("error") or body.get("message"), int(body.get("code", 0))
    except (ValueError, AttributeError, TypeError, OSError):
        text, code = None, 0
    return _one_line(text or f"HTTP {exc.code} {exc.reason}"), code
