"""Subnet leasing in etcd v3: read the config, choose, claim, renew, reserve and release.

One implementation serves the daemon, `flannelctl` and the Ansible module `flannel_lease`.
It knows nothing of the kernel. Choice order as flannel: (1) a lease or reservation naming our
public IP, (2) the subnet of the previous subnet file, (3) a random one among the first 100 free
subnets from SubnetMin. Claims are etcd transactions "create only if absent" with an etcd lease
attached, so two nodes can never hold one subnet; a lost race is retried, not fatal.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from pyflannel.config import NetworkConfig, parse_config
from pyflannel.errors import (
    ConfigMissingError,
    FlannelError,
    OutOfSubnetsError,
    StoreUnavailableError,
)
from pyflannel.kvstore import KeyValue, KeyValueStore
from pyflannel.subnet.lease import (
    Lease,
    LeaseAttrs,
    config_key,
    lease_backend_type,
    parse_key_name,
    subnet_key,
    subnets_prefix,
)

log = logging.getLogger(__name__)

FREE_SUBNET_CANDIDATES = 100  # flannel picks at random among the first 100 free subnets


class LeaseLostError(FlannelError):
    """Our etcd lease expired or was revoked; the subnet key is gone."""


@dataclass(frozen=True)
class LeaseSettings:
    """Lease timing in seconds (the CLI speaks minutes for the margin, as flanneld)."""

    ttl: int = 24 * 3600
    renew_margin: int = 60 * 60
    renew_retry: float = 60.0
    claim_attempts: int = 50

    def renew_delay(self, expires_in: float) -> float:
        """Seconds until a lease with `expires_in` seconds left is due for renewal."""
        return max(1.0, expires_in - self.renew_margin)


class SubnetManager:
    def __init__(
        self,
        store: KeyValueStore,
        prefix: str,
        settings: LeaseSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix.rstrip("/") or "/"
        self.settings = settings or LeaseSettings()
        self._rng = rng or random.SystemRandom()

    # -- config ---------------------------------------------------------------------------

    def get_config(self) -> NetworkConfig:
        key = config_key(self.prefix)
        kv = self.store.get(key)
        if kv is None:
            raise ConfigMissingError(
                key,
                f'`etcdctl put {key} \'{{"Network":"10.5.0.0/16"}}\'` (ETCDCTL_API=3: a key '
                "written with the v2 API or `etcdctl set/mk` is invisible to v3)",
            )
        return parse_config(kv.value)

    def wait_for_config(
        self,
        stop: threading.Event,
        first_delay: float = 1.0,
        max_delay: float = 5.0,
        on_wait: Callable[[], None] | None = None,
    ) -> NetworkConfig | None:
        """Poll until the config exists and is valid; None when `stop` is set first.

        An invalid config is waited out too (the operator fixes the key, the agent picks it up).
        """
        delay = first_delay
        last_message = ""
        while not stop.is_set():
            try:
                return self.get_config()
            except (FlannelError, StoreUnavailableError) as exc:
                message = str(exc)
                if message != last_message:
                    log.error("%s (retrying every %.0f s at most)", message, max_delay)
                    last_message = message
                else:
                    log.debug("still waiting for the network config: %s", message)
            if on_wait is not None:
                on_wait()
            stop.wait(delay)
            delay = min(max_delay, delay * 2)
        return None

    # -- reading leases -------------------------------------------------------------------

    def lease_from_kv(self, kv: KeyValue) -> Lease | None:
        name = kv.key[len(subnets_prefix(self.prefix)) :]
        subnet = parse_key_name(name)
        if subnet is None:
            log.warning("ignoring key %s: not a subnet lease key", kv.key)
            return None
        try:
            attrs = LeaseAttrs.from_json(kv.value)
        except ValueError as exc:
            log.warning("ignoring lease %s: %s", kv.key, exc)
            return None
        return Lease(subnet=subnet, attrs=attrs, etcd_lease=kv.lease, mod_revision=kv.mod_revision)

    def list_leases(self) -> tuple[list[Lease], int]:
        kvs, revision = self.store.list_prefix(subnets_prefix(self.prefix))
        leases = [lease for kv in kvs if (lease := self.lease_from_kv(kv)) is not None]
        return leases, revision

    def get_lease(self, subnet: ipaddress.IPv4Network) -> Lease | None:
        kv = self.store.get(subnet_key(self.prefix, subnet))
        return self.lease_from_kv(kv) if kv else None

    def with_expiry(self, lease: Lease) -> Lease:
        if lease.is_reservation:
            return lease
        ttl = self.store.time_to_live(lease.etcd_lease)
        return replace(lease, expires_in=ttl if ttl >= 0 else None)

    # -- acquiring ------------------------------------------------------------------------

    def acquire(
        self,
        config: NetworkConfig,
        attrs: LeaseAttrs,
        previous_subnet: ipaddress.IPv4Network | None = None,
    ) -> Lease:
        """Get a subnet for `attrs.public_ip`: reuse, claim the previous one, or a free one."""
        for attempt in range(self.settings.claim_attempts):
            leases, _ = self.list_leases()
            lease = self._reuse_own(config, attrs, leases)
            if lease is not None:
                return lease
            taken = {existing.subnet for existing in leases}
            if (
                previous_subnet is not None
                and previous_subnet not in taken
                and config.contains_subnet(previous_subnet)
            ):
                lease = self._claim(previous_subnet, attrs)
                if lease is not None:
                    log.info("claimed previous subnet %s", previous_subnet)
                    return lease
                continue
            free = list(self._free_subnets(config, taken, FREE_SUBNET_CANDIDATES))
            if not free:
                raise OutOfSubnetsError(
                    f"out of subnets: all {self._pool_size(config)} /{config.subnet_len} subnets "
                    f"between SubnetMin {config.subnet_min} and SubnetMax {config.subnet_max} are "
                    "leased or reserved; widen Network/SubnetMin/SubnetMax or release stale leases "
                    "(flannelctl leases list / release)"
                )
            lease = self._claim(self._rng.choice(free), attrs)
            if lease is not None:
                return lease
            # Lost a race for that subnet: another node claimed it between list and txn.
            log.info("subnet claim lost a race (attempt %d), choosing again", attempt + 1)
            time.sleep(self._rng.uniform(0, 0.05))
        raise FlannelError(
            f"could not claim a subnet after {self.settings.claim_attempts} attempts: every "
            "claim lost a race with another node"
        )

    def _reuse_own(
        self, config: NetworkConfig, attrs: LeaseAttrs, leases: list[Lease]
    ) -> Lease | None:
        mine = [lease for lease in leases if lease.attrs.public_ip == attrs.public_ip]
        # A reservation for us wins over an ordinary lease (it is the operator's choice).
        mine.sort(key=lambda lease: not lease.is_reservation)
        for lease in mine:
            key = subnet_key(self.prefix, lease.subnet)
            if lease.is_reservation:
                if lease.subnet.prefixlen != config.subnet_len or not lease.subnet.subnet_of(
                    config.network
                ):
                    log.warning(
                        "reservation %s for %s does not fit Network %s/SubnetLen %d; ignored",
                        lease.subnet,
                        attrs.public_ip,
                        config.network,
                        config.subnet_len,
                    )
                    continue
                if lease.attrs != attrs and not self.store.replace(
                    key, attrs.to_json(), lease.mod_revision
                ):
                    continue
                log.info("using reservation %s for %s", lease.subnet, attrs.public_ip)
                self._drop_other_leases(mine, keep=lease)
                return replace(lease, attrs=attrs)
            if not config.contains_subnet(lease.subnet):
                log.info("deleting own lease %s: it no longer fits the config", lease.subnet)
                if self.store.delete(key, lease.mod_revision):
                    self._revoke_quietly(lease.etcd_lease)
                continue
            adopted = self._adopt(lease, attrs, key)
            if adopted is not None:
                return adopted
        return None

    def _drop_other_leases(self, mine: list[Lease], keep: Lease) -> None:
        """One subnet per node: a reservation supersedes our ordinary leases."""
        for other in mine:
            if other.subnet != keep.subnet and not other.is_reservation:
                key = subnet_key(self.prefix, other.subnet)
                if self.store.delete(key, other.mod_revision):
                    self._revoke_quietly(other.etcd_lease)
                    log.info(
                        "released %s: reservation %s takes its place", other.subnet, keep.subnet
                    )

    def _adopt(self, lease: Lease, attrs: LeaseAttrs, key: str) -> Lease | None:
        """Take over our existing lease (after a restart), keeping its etcd lease if alive."""
        ttl = self.store.keepalive_once(lease.etcd_lease)
        if ttl <= 0:
            return None  # expired between list and now; the key is gone with it
        if lease.attrs != attrs and not self.store.replace(
            key, attrs.to_json(), lease.mod_revision, lease.etcd_lease
        ):
            return None
        log.info("reusing own lease %s (etcd lease %x)", lease.subnet, lease.etcd_lease)
        return replace(lease, attrs=attrs, expires_in=ttl)

    def _claim(self, subnet: ipaddress.IPv4Network, attrs: LeaseAttrs) -> Lease | None:
        lease_id = self.store.grant(self.settings.ttl)
        try:
            created = self.store.create(subnet_key(self.prefix, subnet), attrs.to_json(), lease_id)
        except BaseException:
            self._revoke_quietly(lease_id)
            raise
        if not created:
            self._revoke_quietly(lease_id)
            return None
        log.info("claimed subnet %s for %s", subnet, attrs.public_ip)
        return Lease(subnet=subnet, attrs=attrs, etcd_lease=lease_id, expires_in=self.settings.ttl)

    def _revoke_quietly(self, lease_id: int) -> None:
        try:
            self.store.revoke(lease_id)
        except FlannelError:
            log.debug("could not revoke unused etcd lease %x (expires by itself)", lease_id)

    @staticmethod
    def _free_subnets(
        config: NetworkConfig, taken: set[ipaddress.IPv4Network], limit: int
    ) -> Iterator[ipaddress.IPv4Network]:
        found = 0
        step = config.subnet_size
        for start in range(int(config.subnet_min), int(config.subnet_max) + 1, step):
            subnet = ipaddress.IPv4Network((start, config.subnet_len))
            if subnet not in taken:
                yield subnet
                found += 1
                if found >= limit:
                    return

    @staticmethod
    def _pool_size(config: NetworkConfig) -> int:
        return (int(config.subnet_max) - int(config.subnet_min)) // config.subnet_size + 1

    # -- keeping ------------------------------------------------------------------------

    def renew(self, lease: Lease) -> Lease:
        """Refresh the etcd lease; LeaseLostError when it is gone (expired or revoked)."""
        if lease.is_reservation:
            if self.get_lease(lease.subnet) is None:
                raise LeaseLostError(f"reservation {lease.subnet} was deleted")
            return lease
        ttl = self.store.keepalive_once(lease.etcd_lease)
        if ttl <= 0:
            raise LeaseLostError(
                f"lease for {lease.subnet} (etcd lease {lease.etcd_lease:x}) expired or was revoked"
            )
        return replace(lease, expires_in=ttl)

    # -- administration -----------------------------------------------------------------

    def reserve(
        self, config: NetworkConfig, subnet: ipaddress.IPv4Network, public_ip: ipaddress.IPv4Address
    ) -> tuple[Lease, bool]:
        """Reserve `subnet` for `public_ip` (a key without etcd lease). Returns (lease, changed).

        An existing lease of the same node for that subnet becomes a reservation; a subnet held
        by another node is refused.
        """
        if subnet.prefixlen != config.subnet_len or not subnet.subnet_of(config.network):
            raise FlannelError(
                f"subnet {subnet} is not a /{config.subnet_len} inside Network {config.network}"
            )
        key = subnet_key(self.prefix, subnet)
        for _ in range(self.settings.claim_attempts):
            existing = self.get_lease(subnet)
            if existing is None:
                attrs = LeaseAttrs(
                    public_ip=public_ip, backend_type=lease_backend_type(config.backend.type)
                )
                if self.store.create(key, attrs.to_json()):
                    return Lease(subnet=subnet, attrs=attrs), True
                continue
            if existing.attrs.public_ip != public_ip:
                raise FlannelError(
                    f"subnet {subnet} is held by {existing.attrs.public_ip}; release it first"
                )
            if existing.is_reservation:
                return existing, False
            if self.store.replace(key, existing.attrs.to_json(), existing.mod_revision, 0):
                return replace(existing, etcd_lease=0), True
        raise FlannelError(f"could not reserve {subnet}: the key kept changing")

    def release(
        self, subnet: ipaddress.IPv4Network, public_ip: ipaddress.IPv4Address | None = None
    ) -> bool:
        """Delete the lease or reservation of `subnet` (only if it names `public_ip`, if given)."""
        existing = self.get_lease(subnet)
        if existing is None:
            return False
        if public_ip is not None and existing.attrs.public_ip != public_ip:
            raise FlannelError(
                f"subnet {subnet} is held by {existing.attrs.public_ip}, not {public_ip}; refusing"
            )
        deleted = self.store.delete(subnet_key(self.prefix, subnet), existing.mod_revision)
        if deleted and not existing.is_reservation:
            self._revoke_quietly(existing.etcd_lease)
        return deleted
