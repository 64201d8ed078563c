"""iptables rules: flannel's masquerade (nat FLANNEL-POSTRTG) and forward (filter FLANNEL-FWD).

Applied as one `iptables-restore --noflush -w` transaction per table: our chains are declared,
flushed and refilled in the same commit, so a changed Network or subnet never leaves old rules
behind and there is no moment without rules. Docker and kube-proxy write the same tables, so we
only ever touch our own chains plus one jump rule each, identified by its comment.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from pyflannel.errors import FlannelError

log = logging.getLogger(__name__)

MASQ_CHAIN = "FLANNEL-POSTRTG"
FWD_CHAIN = "FLANNEL-FWD"
MASQ_COMMENT = "flanneld masq"
FWD_COMMENT = "flanneld forward"
KUBE_MASQ_MARK = "0x4000/0x4000"  # packets kube-proxy already marked for masquerading


def masquerade_rules(
    network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network, random_fully: bool
) -> list[str]:
    """flannel's FLANNEL-POSTRTG rules (iptables-save syntax, without the `-A CHAIN`)."""
    comment = f'-m comment --comment "{MASQ_COMMENT}"'
    masq = "-j MASQUERADE --random-fully" if random_fully else "-j MASQUERADE"
    n, s = str(network), str(subnet)
    return [
        f"-m mark --mark {KUBE_MASQ_MARK} {comment} -j RETURN",
        f"-s {s} -d {n} {comment} -j RETURN",  # own containers to the Network: no NAT
        f"-s {n} -d {s} {comment} -j RETURN",  # Network to own containers: no NAT
        f"! -s {n} -d {s} {comment} -j RETURN",  # outside to own containers (DNAT'ed): no NAT
        f"-s {n} ! -d 224.0.0.0/4 {comment} {masq}",  # Network to outside: NAT, not multicast
        f"! -s {n} -d {n} {comment} {masq}",  # host to a remote container: NAT to host address
    ]


def forward_rules(network: ipaddress.IPv4Network) -> list[str]:
    comment = f'-m comment --comment "{FWD_COMMENT}"'
    return [f"-s {network} {comment} -j ACCEPT", f"-d {network} {comment} -j ACCEPT"]


def supports_random_fully(version_text: str) -> bool:
    """`iptables v1.8.9 (nf_tables)` -> True; --random-fully exists since iptables 1.6.2."""
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", version_text)
    if not match:
        return False
    return tuple(int(part) for part in match.groups()) >= (1, 6, 2)


@dataclass
class TrafficRules:
    network: ipaddress.IPv4Network
    subnet: ipaddress.IPv4Network
    ip_masq: bool
    forward_rules: bool
    iptables: str = "iptables"
    _random_fully: bool | None = field(default=None, init=False, repr=False)

    def update(self, subnet: ipaddress.IPv4Network) -> None:
        self.subnet = subnet
        self.apply()

    @property
    def random_fully(self) -> bool:
        if self._random_fully is None:
            version = self._run([self.iptables, "--version"]).stdout
            self._random_fully = supports_random_fully(version)
        return self._random_fully

    def desired(self) -> dict[str, dict[str, list[str]]]:
        """table -> chain -> rules."""
        tables: dict[str, dict[str, list[str]]] = {}
        if self.ip_masq:
            tables["nat"] = {
                MASQ_CHAIN: masquerade_rules(self.network, self.subnet, self.random_fully)
            }
        if self.forward_rules:
            tables["filter"] = {FWD_CHAIN: forward_rules(self.network)}
        return tables

    def apply(self) -> bool:
        """Make the rules match; returns True when something had to be (re)written."""
        if shutil.which(self.iptables) is None:
            raise FlannelError(f"{self.iptables} not found; install iptables for --ip-masq")
        changed = False
        desired = self.desired()
        for table, parent, chain, comment in (
            ("nat", "POSTROUTING", MASQ_CHAIN, MASQ_COMMENT),
            ("filter", "FORWARD", FWD_CHAIN, FWD_COMMENT),
        ):
            rules = desired.get(table, {}).get(chain)
            if rules is None:
                changed |= self._remove(table, parent, chain, comment)
                continue
            if self._current(table, chain) != [f"-A {chain} {rule}" for rule in rules]:
                self._restore(table, chain, rules)
                changed = True
            changed |= self._ensure_jump(table, parent, chain, comment)
        return changed

    def _current(self, table: str, chain: str) -> list[str] | None:
        result = self._run([self.iptables, "-w", "-t", table, "-S", chain], check=False)
        if result.returncode != 0:
            return None
        return [line for line in result.stdout.splitlines() if line.startswith("-A ")]

    def _restore(self, table: str, chain: str, rules: list[str]) -> None:
        lines = [f"*{table}", f":{chain} - [0:0]", f"-F {chain}"]
        lines += [f"-A {chain} {rule}" for rule in rules]
        lines.append("COMMIT")
        self._run([f"{self.iptables}-restore", "--noflush", "-w"], stdin="\n".join(lines) + "\n")
        log.info("iptables: wrote %d rules to %s/%s", len(rules), table, chain)

    def _ensure_jump(self, table: str, parent: str, chain: str, comment: str) -> bool:
        jump = ["-m", "comment", "--comment", comment, "-j", chain]
        check = self._run([self.iptables, "-w", "-t", table, "-C", parent, *jump], check=False)
        if check.returncode == 0:
            return False
        # First position: our RETURN rules must run before anybody else's MASQUERADE/DROP.
        self._run([self.iptables, "-w", "-t", table, "-I", parent, "1", *jump])
        log.info("iptables: added jump %s -> %s in table %s", parent, chain, table)
        return True

    def _remove(self, table: str, parent: str, chain: str, comment: str) -> bool:
        if self._current(table, chain) is None:
            return False
        jump = ["-m", "comment", "--comment", comment, "-j", chain]
        while (
            self._run(
                [self.iptables, "-w", "-t", table, "-D", parent, *jump], check=False
            ).returncode
            == 0
        ):
            pass
        self._run([self.iptables, "-w", "-t", table, "-F", chain], check=False)
        self._run([self.iptables, "-w", "-t", table, "-X", chain], check=False)
        log.info("iptables: removed chain %s from table %s (option turned off)", chain, table)
        return True

    @staticmethod
    def _run(
        argv: list[str], stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
        if check and result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            raise FlannelError(
                f"{' '.join(argv[:4])} failed (exit {result.returncode}): "
                f"{lines[-1] if lines else 'no output'}"
            )
        return result
