"""etcd's TLS as provisioned (etcd_tls, the default): checked from outside Ansible.

etcd answers only TLS clients that present a certificate of the site's CA that is still valid:
plain HTTP, TLS without a certificate, a certificate of another CA and an expired certificate of
our own CA are all refused, while the provisioned admin certificate works (etcdctl, flannelctl
without flags) and every agent reaches etcd over https with its own certificate. The rogue and
expired certificates are made here with `cryptography`, on the controller, and copied to a node.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testinfra
import testinfra.utils.ansible_runner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
testinfra_hosts = RUNNER.get_hosts("etcd")

# The etcd_pki role's defaults: the CA next to the inventory, the files under /etc/pyflannel/pki.
CONTROLLER_PKI = Path(INVENTORY).parent / "pki"
NODE_PKI = "/etc/pyflannel/pki"
CA = f"{NODE_PKI}/ca.crt"
ROGUE_DIR = "/tmp/pyflannel-tls-test"

# One request to etcd's /version from the node's Python (stdlib only): "OK <body>" or
# "REFUSED <why>". Arguments: URL, CA file, client certificate, key ("" = none).
PROBE = r"""
import ssl, sys, urllib.request
url, ca, cert, key = sys.argv[1:5]
context = None
if url.startswith("https:"):
    context = ssl.create_default_context(cafile=ca or None)
    if cert:
        context.load_cert_chain(cert, key)
try:
    with urllib.request.urlopen(url + "/version", timeout=5, context=context) as answer:
        print("OK", answer.read().decode())
except Exception as exc:
    print("REFUSED", type(exc).__name__, " ".join(str(exc).split()))
"""


def _address(host: Any) -> str:
    """The member's address on the underlay (flannel_iface: eth0 on Docker nodes, eth1 on VMs)."""
    iface = RUNNER.get_variables(host.backend.get_hostname())["flannel_iface"][0]
    info = json.loads(host.check_output(f"ip -4 -j addr show dev {iface}"))[0]
    return str(info["addr_info"][0]["local"])


def _probe(host: Any, url: str, ca: str = "", cert: str = "", key: str = "") -> str:
    args = " ".join(shlex.quote(a) for a in (PROBE, url, ca, cert, key))
    return str(host.check_output(f"python3 -c {args}"))


def _etcdctl(host: Any, *args: str) -> Any:
    """etcdctl against the member's https URL with explicit TLS flags (no env file)."""
    endpoint = f"https://{_address(host)}:2379"
    return host.run(
        "ETCDCTL_API=3 etcdctl --dial-timeout=3s --command-timeout=5s "
        f"--endpoints={endpoint} " + " ".join(args)
    )


def _write(host: Any, path: str, data: bytes) -> None:
    host.check_output(f"mkdir -p {ROGUE_DIR} && chmod 700 {ROGUE_DIR}")
    text = data.decode()
    host.check_output(f"cat > {path} <<'PEM'\n{text}PEM\nchmod 600 {path}")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _client_cert(
    issuer_name: x509.Name,
    issuer_key: Any,
    key: ec.EllipticCurvePrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> bytes:
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyflannel-admin")]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def node() -> Iterator[Any]:
    """The first member, with the throwaway certificates removed afterwards."""
    # ansible://: the inventory's connection (docker exec, SSH), named as in the inventory.
    host = testinfra.get_host(f"ansible://{testinfra_hosts[0]}", ansible_inventory=INVENTORY)
    yield host
    host.run(f"rm -rf {ROGUE_DIR}")


@pytest.fixture(scope="module")
def rogue_files(node: Any) -> tuple[str, str]:
    """A client certificate of a throwaway CA that etcd has never seen (same subject as ours)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyflannel etcd CA")])
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = _client_cert(
        ca_name, ca_key, key, now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)
    )
    cert_path, key_path = f"{ROGUE_DIR}/rogue.crt", f"{ROGUE_DIR}/rogue.key"
    _write(node, cert_path, pem)
    _write(node, key_path, _key_pem(key))
    return cert_path, key_path


@pytest.fixture(scope="module")
def expired_files(node: Any) -> tuple[str, str]:
    """A client certificate signed by the site's own CA whose validity ended yesterday."""
    ca_cert = x509.load_pem_x509_certificate((CONTROLLER_PKI / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((CONTROLLER_PKI / "ca.key").read_bytes(), None)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = _client_cert(
        ca_cert.subject,
        ca_key,
        key,
        now - datetime.timedelta(days=3),
        now - datetime.timedelta(days=1),
    )
    cert_path, key_path = f"{ROGUE_DIR}/expired.crt", f"{ROGUE_DIR}/expired.key"
    _write(node, cert_path, pem)
    _write(node, key_path, _key_pem(key))
    return cert_path, key_path


def test_plain_http_is_refused(host: Any) -> None:
    for url in (f"http://{_address(host)}:2379", "http://127.0.0.1:2379"):
        answer = _probe(host, url)
        assert answer.startswith("REFUSED"), f"{url} answered plain HTTP: {answer}"


def test_tls_client_without_certificate_is_refused(host: Any) -> None:
    answer = _probe(host, f"https://{_address(host)}:2379", CA)
    assert answer.startswith("REFUSED"), f"etcd answered a client without certificate: {answer}"
    assert _etcdctl(host, f"--cacert={CA}", "endpoint", "health").rc != 0


def test_certificate_of_another_ca_is_refused(node: Any, rogue_files: tuple[str, str]) -> None:
    cert, key = rogue_files
    answer = _probe(node, f"https://{_address(node)}:2379", CA, cert, key)
    assert answer.startswith("REFUSED"), f"etcd accepted another CA's certificate: {answer}"
    cmd = _etcdctl(node, f"--cacert={CA}", f"--cert={cert}", f"--key={key}", "endpoint", "health")
    assert cmd.rc != 0, cmd.stdout


def test_expired_certificate_of_our_ca_is_refused(
    node: Any, expired_files: tuple[str, str]
) -> None:
    cert, key = expired_files
    answer = _probe(node, f"https://{_address(node)}:2379", CA, cert, key)
    assert answer.startswith("REFUSED"), f"etcd accepted an expired certificate: {answer}"


def test_admin_certificate_is_accepted(host: Any) -> None:
    cert, key = f"{NODE_PKI}/admin.crt", f"{NODE_PKI}/admin.key"
    for url in (f"https://{_address(host)}:2379", "https://127.0.0.1:2379"):
        answer = _probe(host, url, CA, cert, key)
        assert answer.startswith("OK"), f"{url} refused the admin certificate: {answer}"
    cmd = _etcdctl(host, f"--cacert={CA}", f"--cert={cert}", f"--key={key}", "endpoint", "health")
    assert cmd.rc == 0, cmd.stderr


def test_members_talk_https_to_each_other(host: Any) -> None:
    cmd = host.run("set -a; . /etc/etcd/etcdctl.env; set +a; etcdctl member list --write-out=json")
    assert cmd.rc == 0, cmd.stderr
    members = json.loads(cmd.stdout)["members"]
    assert len(members) == len(testinfra_hosts)
    for member in members:
        urls = member["peerURLs"] + member["clientURLs"]
        assert urls and all(url.startswith("https://") for url in urls), member
    env = host.file("/etc/etcd/etcd.conf").content_string
    assert 'ETCD_CLIENT_CERT_AUTH="true"' in env
    assert 'ETCD_PEER_CLIENT_CERT_AUTH="true"' in env


def test_member_certificate_names_every_address(host: Any) -> None:
    cert = x509.load_pem_x509_certificate(host.file(f"{NODE_PKI}/member.crt").content)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert {host.backend.hostname, "localhost"} <= dns
    assert {_address(host), "127.0.0.1"} <= ips
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
    ca = x509.load_pem_x509_certificate((CONTROLLER_PKI / "ca.crt").read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)


def test_keys_are_private_to_their_reader(host: Any) -> None:
    for name, owner in (("member", "etcd"), ("flanneld", "root"), ("admin", "root")):
        key = host.file(f"{NODE_PKI}/{name}.key")
        assert key.exists, f"{name}.key missing"
        assert (key.user, key.mode) == (owner, 0o600), f"{name}.key: {key.user} {oct(key.mode)}"
    for path in ("/etc/default/flanneld", "/etc/pyflannel/flannelctl.env"):
        assert host.file(path).mode == 0o600, path


def test_flanneld_reaches_etcd_with_its_own_certificate(host: Any) -> None:
    env = host.file("/etc/default/flanneld").content_string
    assert f'FLANNELD_ETCD_CERTFILE="{NODE_PKI}/flanneld.crt"' in env
    assert f'FLANNELD_ETCD_CAFILE="{CA}"' in env
    endpoints = env.split('FLANNELD_ETCD_ENDPOINTS="', 1)[1].split('"', 1)[0].split(",")
    assert len(endpoints) == len(testinfra_hosts)
    assert all(url.startswith("https://") for url in endpoints), endpoints
    assert host.service("flanneld").is_running


def test_flannelctl_needs_no_flags(host: Any) -> None:
    cmd = host.run("flannelctl -o json leases list")
    assert cmd.rc == 0, cmd.stderr
    leases = json.loads(cmd.stdout)
    assert len(leases) == len(RUNNER.get_hosts("flannel")), leases
