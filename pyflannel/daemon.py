"""flanneld: wires config, store, leasing, backend and traffic rules into one agent.

Threads and owners: the main thread owns the kernel (backend and iptables) and the lease; the
watch thread only turns etcd events into queue items; the health server only reads state.
Signal handlers only set a flag. On SIGTERM the agent stops and leaves the lease, devices and
routes in place, so a restart does not interrupt traffic.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import queue
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pyflannel import __version__
from pyflannel.backend import create_backend
from pyflannel.backend.base import Backend
from pyflannel.backend.cleanup import remove_stale_devices, remove_stale_routes
from pyflannel.backend.nlbulk import ChangeMonitor
from pyflannel.backend.settings import BackendSettings
from pyflannel.bgp.birdctl import BirdControl
from pyflannel.bgp.birdfile import retire as retire_bird
from pyflannel.config import NetworkConfig
from pyflannel.errors import (
    ConfigError,
    DataPathError,
    FlannelError,
    InterfaceError,
    OutOfSubnetsError,
    StoreUnavailableError,
    UsageError,
)
from pyflannel.flags import DaemonOptions, etcd_settings, parse_flags, usage, usage_message
from pyflannel.health import AgentState, HealthServer
from pyflannel.iface import choose_interface, ensure_ip_forward
from pyflannel.sdnotify import notify
from pyflannel.store import EtcdOptions, Store, StoreTlsError
from pyflannel.subnet.lease import Lease, LeaseAttrs, config_key
from pyflannel.subnet.manager import LeaseLostError, LeaseSettings, SubnetManager
from pyflannel.subnet.watch import LeaseEvent, LeaseWatcher
from pyflannel.subnetenv import SubnetEnv, load_subnet_env, write_subnet_env
from pyflannel.traffic import TrafficRules

log = logging.getLogger("flanneld")

CONFIG_CHECK_INTERVAL = 60.0
# After a backend switch the old device stays this long after start-up, and until the first
# lease snapshot is applied: peers still on the old backend send through it until they see our
# new lease (milliseconds), and our routes to them move to the new backend in the meantime.
STALE_DEVICE_GRACE = 1.0
# A reconcile pass compares the kernel with the peers only when netlink reported a change to
# what the backend owns, and at least every this many intervals (in case a notification was
# missed): at 5000 peers a pass costs ~0.1 s of CPU.
FULL_RECONCILE_EVERY = 30
MAX_BATCH = 10_000  # events applied in one backend call
LOG_EACH_PEER = 20  # bigger runs are one log line (each peer at debug level)
TRIM_AFTER = 1000  # peers applied at once: the burst's freed memory goes back to the system


@dataclass(frozen=True)
class _OwnRemoved:
    """Queue item: the watch saw our own subnet key deleted."""


def release_free_memory() -> None:
    """Give the C heap's free pages back (glibc's malloc_trim): a snapshot of thousands of
    leases leaves megabytes of freed parse buffers that RSS would otherwise keep counting."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class Agent:
    def __init__(self, opts: DaemonOptions, environ: Mapping[str, str] | None = None) -> None:
        self.opts = opts
        self.environ = dict(environ if environ is not None else os.environ)
        self.state = AgentState()
        self.stop_event = threading.Event()
        self.events: queue.Queue[LeaseEvent | _OwnRemoved] = queue.Queue()
        self.peers: dict[ipaddress.IPv4Network, Lease] = {}
        self.lease: Lease | None = None
        self.attrs: LeaseAttrs | None = None
        self.store: Store | None = None
        self.backend: Backend | None = None
        self.traffic: TrafficRules | None = None
        self.watcher: LeaseWatcher | None = None
        self._monitor: ChangeMonitor | None = None
        self._health: HealthServer | None = None
        self._rng = random.Random()
        self._config_change_reported = False

    # -- lifecycle --------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signal_handlers()
        margin = self.opts.subnet_lease_renew_margin * 60
        if margin >= self.opts.subnet_lease_ttl:
            raise UsageError(
                f"--subnet-lease-renew-margin: {self.opts.subnet_lease_renew_margin} min is not "
                f"shorter than the lease lifetime ({self.opts.subnet_lease_ttl} s)"
            )
        self._start_health()
        self.store = Store(EtcdOptions(**etcd_settings(self.opts)))
        manager = SubnetManager(
            self.store,
            self.opts.etcd_prefix,
            LeaseSettings(ttl=self.opts.subnet_lease_ttl, renew_margin=margin),
        )
        try:
            self._check_etcd_tls()
            return self._serve(manager)
        finally:
            self._shutdown()

    def _check_etcd_tls(self) -> None:
        """Exit at startup when TLS to etcd cannot work; wait when etcd is just not there yet.

        A refused certificate, a server certificate we refuse, http/https mixed up or a bad
        TLS file does not go away by waiting: the agent logs one line and exits (1, or 2 for a
        bad file), and systemd's restart reads the files again. An unreachable etcd is waited
        for (wait_for_config). Once running, TLS errors are retried like any outage, so an
        expired certificate renewed on disk is picked up at the next reconnect.
        """
        assert self.store is not None
        try:
            self.store.get(config_key(self.opts.etcd_prefix))
        except StoreTlsError:
            raise
        except FlannelError as exc:
            log.debug("first etcd read failed (waiting for etcd later): %s", exc)

    def _serve(self, manager: SubnetManager) -> int:
        ext = choose_interface(
            ifaces=self.opts.iface,
            regexes=self.opts.iface_regex,
            can_reach=self.opts.iface_can_reach,
            public_ip=self.opts.public_ip,
        )
        log.info(
            "using interface %s (index %d, address %s, public IP %s, MTU %d)",
            ext.name,
            ext.index,
            ext.iface_addr,
            ext.public_ip,
            ext.mtu,
        )
        self.state.info.update(interface=ext.name, public_ip=str(ext.public_ip))
        if ensure_ip_forward(log):
            self.state.inc("pyflannel_ip_forward_enabled_total")

        # Waiting for the operator is healthy: keep the /healthz heartbeat going meanwhile.
        config = manager.wait_for_config(self.stop_event, on_wait=self.state.beat)
        if config is None:
            return 0
        for warning in config.warnings:
            log.warning("network config: %s", warning)
        log.info(
            "network config: Network %s, SubnetLen %d, SubnetMin %s, SubnetMax %s, backend %s",
            config.network,
            config.subnet_len,
            config.subnet_min,
            config.subnet_max,
            config.backend.type,
        )
        self.state.info["backend"] = config.backend.type

        settings = BackendSettings(
            vxlan_disable_tx_checksum=self.opts.vxlan_disable_tx_checksum,
            userspace_fast_path=self.opts.userspace_fast_path,
            bird_config=self.opts.bgp_bird_config,
            bird_socket=self.opts.bgp_bird_socket,
        )
        self.backend = create_backend(config, ext, settings)
        self.backend.check()
        previous_env = self._previous_env()
        # Routes of the current Network stay: the backend takes them over or repairs them (a
        # peer still on the old backend keeps its direct route). The old backend's device goes
        # once our new lease is out (_main_loop): peers still send through it until then.
        remove_stale_routes(
            self.backend.kernel,
            ext_index=ext.index,
            networks=[config.network] + ([previous_env.network] if previous_env else []),
            keep_direct_routes_in=config.network,
        )
        self.attrs = self.backend.prepare()
        previous = previous_env.subnet.network if previous_env else None
        lease = self._acquire(manager, config, self.attrs, previous)
        if lease is None:
            return 0
        self._take_lease(lease)
        self.backend.activate(lease)
        self.traffic = TrafficRules(
            network=config.network,
            subnet=lease.subnet,
            ip_masq=self.opts.ip_masq,
            forward_rules=self.opts.iptables_forward_rules,
        )
        self.traffic.apply()
        self._write_subnet_env(config, lease)

        assert self.store is not None
        self.watcher = LeaseWatcher(
            manager,
            self.store,
            emit=self.events.put,
            own_subnet=lambda: self.lease.subnet if self.lease else None,
            on_own_removed=lambda: self.events.put(_OwnRemoved()),
        )
        watch_thread = threading.Thread(target=self.watcher.run, name="lease-watch", daemon=True)
        watch_thread.start()

        self.state.ready = True
        notify("READY=1", self.environ)
        log.info("ready: subnet %s, MTU %d", lease.subnet, self.backend.mtu())
        self._main_loop(manager, config)
        return 0

    def _main_loop(self, manager: SubnetManager, config: NetworkConfig) -> None:
        assert self.backend is not None and self.lease is not None and self.traffic is not None
        settings = manager.settings
        renew_at = time.monotonic() + settings.renew_delay(self.lease.expires_in or settings.ttl)
        reconcile_at = time.monotonic() + self._jitter(self.opts.reconcile_interval)
        full_reconcile_at = reconcile_at  # the first pass is a full one
        self._open_monitor(config)  # listening from now on: later changes are seen
        resync_at = time.monotonic() + self.opts.iptables_resync
        config_check_at = time.monotonic() + CONFIG_CHECK_INTERVAL
        stale_devices_at: float | None = time.monotonic() + STALE_DEVICE_GRACE
        while not self.stop_event.is_set():
            self.state.beat()
            now = time.monotonic()
            wake = min(renew_at, reconcile_at, resync_at, config_check_at)
            if stale_devices_at is not None:
                wake = min(wake, stale_devices_at)
            try:
                item = self.events.get(timeout=max(0.0, min(wake - now, 1.0)))
            except queue.Empty:
                item = None
            if item is not None:
                batch = [item]  # a burst (the first snapshot: every peer) is applied in bulk
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self.events.get_nowait())
                    except queue.Empty:
                        break
                self._handle_many(batch, manager, config)
                self.backend.commit()
                self._forget_own_changes()
                continue
            now = time.monotonic()
            # (Here the event queue is empty: the first snapshot's peers, once listed, are in.)
            if (
                stale_devices_at is not None
                and now >= stale_devices_at
                and self.watcher is not None
                and self.watcher.stats.revision > 0  # set once the snapshot is queued
            ):
                remove_stale_devices(
                    self.backend.kernel,
                    keep_device=self.backend.device,
                    ext_index=self.backend.ext.index,
                    keep_fast_path=self.backend.fast_path_attached(),
                )
                if self.backend.type != "bgp":  # BIRD's routes stayed until now, as a device
                    retire_bird(
                        Path(self.opts.bgp_bird_config),
                        BirdControl(self.opts.bgp_bird_socket),
                        self.backend.ext.public_ip,
                        config.network,
                    )
                stale_devices_at = None
            if now >= renew_at:
                renew_at = now + self._renew(manager, config)
            if now >= reconcile_at:
                self._reconcile(
                    full=now >= full_reconcile_at
                    or self.backend.settling()
                    or self._kernel_changed()
                )
                self._forget_own_changes()
                if now >= full_reconcile_at:
                    full_reconcile_at = now + FULL_RECONCILE_EVERY * self.opts.reconcile_interval
                reconcile_at = now + self._jitter(self.opts.reconcile_interval)
            if now >= resync_at:
                self._resync_rules()
                resync_at = now + self.opts.iptables_resync
            if now >= config_check_at:
                self._check_config(manager, config)
                config_check_at = now + CONFIG_CHECK_INTERVAL

    def _shutdown(self) -> None:
        notify("STOPPING=1", self.environ)
        if self.watcher is not None:
            self.watcher.stop()
        if self.backend is not None:
            self.backend.close()
        if self._health is not None:
            self._health.stop()
        if self.store is not None:
            self.store.close()
        if self.lease is not None:
            log.info("stopped; lease, devices and routes left in place")
        else:
            log.info("stopped")

    # -- steps --------------------------------------------------------------------------------

    def _acquire(
        self,
        manager: SubnetManager,
        config: NetworkConfig,
        attrs: LeaseAttrs,
        previous: ipaddress.IPv4Network | None,
    ) -> Lease | None:
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                started = time.monotonic()
                lease = manager.acquire(config, attrs, previous)
                self.state.set("pyflannel_lease_acquire_seconds", time.monotonic() - started)
                self.state.inc("pyflannel_lease_acquired_total")
                return lease
            except (StoreUnavailableError, OutOfSubnetsError) as exc:
                log.error("cannot get a subnet lease: %s (retrying in %.0f s)", exc, delay)
            self.state.beat()
            self.stop_event.wait(delay)
            delay = min(20.0, delay * 2)  # below the /healthz staleness limit
        return None

    def _take_lease(self, lease: Lease) -> None:
        self.lease = lease
        self.state.info["subnet"] = str(lease.subnet)
        self.state.set("pyflannel_lease_expires_in_seconds", float(lease.expires_in or 0))

    def _previous_env(self) -> SubnetEnv | None:
        """The subnet file of the previous run: its subnet is preferred, its Network cleaned."""
        try:
            return load_subnet_env(self.opts.subnet_file)
        except (OSError, ValueError) as exc:
            log.warning("ignoring old subnet file %s: %s", self.opts.subnet_file, exc)
            return None

    def _write_subnet_env(self, config: NetworkConfig, lease: Lease) -> None:
        assert self.backend is not None
        env = SubnetEnv(
            network=config.network,
            subnet=lease.gateway,
            mtu=self.backend.mtu(),
            ipmasq=self.opts.ip_masq,
        )
        if write_subnet_env(self.opts.subnet_file, env):
            log.info("wrote %s (FLANNEL_SUBNET=%s)", self.opts.subnet_file, lease.gateway)

    def _handle_many(
        self, items: list[LeaseEvent | _OwnRemoved], manager: SubnetManager, config: NetworkConfig
    ) -> None:
        """Events in order; runs of added/changed peers go to the backend in one call."""
        run: list[LeaseEvent] = []
        for item in [*items, None]:
            if isinstance(item, LeaseEvent) and item.kind != "removed":
                run.append(item)
                continue
            if len(run) == 1:
                self._handle(run[0], manager, config)
            elif run:
                self._apply_run(run, manager, config)
            run = []
            if item is not None:
                self._handle(item, manager, config)

    def _apply_run(
        self, run: list[LeaseEvent], manager: SubnetManager, config: NetworkConfig
    ) -> None:
        assert self.backend is not None
        started = time.monotonic()
        try:
            self.backend.apply_peers([item.lease for item in run])
        except DataPathError:
            raise
        except Exception:
            log.exception("could not apply %d peers at once; applying them one by one", len(run))
            for item in run:
                self._handle(item, manager, config)
            return
        for item in run:
            self.state.inc(f"pyflannel_peer_{item.kind}_total")
            self.peers[item.lease.subnet] = item.lease
            level = logging.INFO if len(run) <= LOG_EACH_PEER else logging.DEBUG
            log.log(
                level, "peer %s (%s) %s", item.lease.subnet, item.lease.attrs.public_ip, item.kind
            )
        if len(run) > LOG_EACH_PEER:
            log.info("%d peers added or changed at once (each at debug level, -v=1)", len(run))
        if len(run) >= TRIM_AFTER:
            release_free_memory()
        self._applied(started)

    def _applied(self, started: float) -> None:
        elapsed = time.monotonic() - started
        self.state.set("pyflannel_peers", float(len(self.peers)))
        self.state.set("pyflannel_apply_seconds", elapsed)
        self.state.observe("pyflannel_apply_duration_seconds", elapsed)

    def _handle(
        self, item: LeaseEvent | _OwnRemoved, manager: SubnetManager, config: NetworkConfig
    ) -> None:
        assert self.backend is not None
        if isinstance(item, _OwnRemoved):
            log.error("our subnet lease %s was deleted from etcd; taking it back", self.lease)
            self._reacquire(manager, config)
            return
        started = time.monotonic()
        self.state.inc(f"pyflannel_peer_{item.kind}_total")
        lease = item.lease
        try:
            if item.kind == "removed":
                self.peers.pop(lease.subnet, None)
                self.backend.remove_peer(lease)
                log.info("peer %s (%s) left", lease.subnet, lease.attrs.public_ip)
            else:
                self.peers[lease.subnet] = lease
                self.backend.apply_peer(lease)
                log.info("peer %s (%s) %s", lease.subnet, lease.attrs.public_ip, item.kind)
        except DataPathError:
            raise
        except Exception:
            # The kernel refused (e.g. a route to an unreachable gateway): the next reconcile
            # retries; the agent keeps serving the other peers.
            self.state.inc("pyflannel_apply_failures_total")
            log.exception("could not apply %s event for peer %s", item.kind, lease.subnet)
        self._applied(started)

    def _renew(self, manager: SubnetManager, config: NetworkConfig) -> float:
        """Renew the lease; returns seconds until the next attempt."""
        assert self.lease is not None
        started = time.monotonic()
        try:
            self._take_lease(manager.renew(self.lease))
            self.state.observe(
                "pyflannel_lease_renewal_duration_seconds", time.monotonic() - started
            )
            self.state.inc("pyflannel_lease_renewals_total")
            log.info("renewed lease %s (%s s left)", self.lease.subnet, self.lease.expires_in)
            return manager.settings.renew_delay(self.lease.expires_in or manager.settings.ttl)
        except LeaseLostError as exc:
            log.error("%s; taking the subnet back", exc)
            self._reacquire(manager, config)
            assert self.lease is not None
            return manager.settings.renew_delay(self.lease.expires_in or manager.settings.ttl)
        except FlannelError as exc:
            self.state.inc("pyflannel_lease_renewal_failures_total")
            log.error(
                "lease renewal failed: %s; retrying in %.0f s", exc, manager.settings.renew_retry
            )
            return manager.settings.renew_retry

    def _reacquire(self, manager: SubnetManager, config: NetworkConfig) -> None:
        assert self.lease is not None and self.backend is not None and self.attrs is not None
        old = self.lease
        lease = self._acquire(manager, config, self.attrs, old.subnet)
        if lease is None:
            return
        self.state.inc("pyflannel_lease_reacquired_total")
        self._take_lease(lease)
        if lease.subnet != old.subnet:
            log.error(
                "subnet changed from %s to %s (the old one was taken); restart Docker to move "
                "its bridge (--bip %s)",
                old.subnet,
                lease.subnet,
                lease.gateway,
            )
            if self.watcher is not None:
                self.watcher.forget_own(lease.subnet)
            self.backend.activate(lease)
            if self.traffic is not None:
                self.traffic.update(subnet=lease.subnet)
            self._write_subnet_env(config, lease)
        else:
            log.info("took back subnet %s", lease.subnet)

    def _open_monitor(self, config: NetworkConfig) -> None:
        try:
            self._monitor = ChangeMonitor(config.network)
        except OSError as exc:
            log.warning("no netlink notifications (%s): every reconcile is a full one", exc)

    def _kernel_changed(self) -> bool:
        """Did the kernel report a change to what the backend owns? (True when unsure.)"""
        assert self.backend is not None
        if self._monitor is None:
            return True
        # Our device only: the external interface's ARP churn is not ours (its routes are).
        devices = {index for index in (self.backend.device_index(),) if index}
        return self._monitor.changed(devices)

    def _forget_own_changes(self) -> None:
        """Drop the notifications of what we just changed ourselves (the kernel queues them
        before it acknowledges the change): only others' changes call for a full pass."""
        if self._monitor is not None:
            self._monitor.changed(set())

    def _reconcile(self, *, full: bool = True) -> None:
        """full: compare the kernel with the peers and repair (else only the metrics, which also
        check a userspace data path's pump: nothing the backend owns changed since the last
        full pass)."""
        assert self.backend is not None
        try:
            if full:
                started = time.monotonic()
                self.backend.reconcile(self.peers)
                self.state.observe(
                    "pyflannel_reconcile_duration_seconds", time.monotonic() - started
                )
                self.state.inc("pyflannel_reconcile_total")
            else:
                self.state.inc("pyflannel_reconcile_skipped_total")
            # (metrics() asks a userspace backend's pump too: DataPathError if it died.)
            for name, value in self.backend.metrics().items():
                if name.endswith("_total"):
                    self.state.set_total(name, value)
                else:
                    self.state.set(name, value)
        except DataPathError:
            raise
        except Exception:
            self.state.inc("pyflannel_reconcile_failures_total")
            log.exception("reconcile failed; retrying at the next interval")

    def _resync_rules(self) -> None:
        assert self.traffic is not None
        try:
            if self.traffic.apply():
                self.state.inc("pyflannel_iptables_repairs_total")
        except FlannelError as exc:
            log.error("iptables resync failed: %s", exc)

    def _check_config(self, manager: SubnetManager, config: NetworkConfig) -> None:
        try:
            current = manager.get_config()
        except FlannelError:
            return
        changed = current.raw.strip() != config.raw.strip()
        self.state.set("pyflannel_config_changed", 1.0 if changed else 0.0)
        if changed and not self._config_change_reported:
            self._config_change_reported = True
            log.warning(
                "the network config in etcd changed; restart flanneld to apply it "
                "(the provisioner does this by itself)"
            )

    # -- helpers ------------------------------------------------------------------------------

    def _start_health(self) -> None:
        if not self.opts.healthz_port:
            return
        self._health = HealthServer(self.state, self.opts.healthz_ip, self.opts.healthz_port)
        self._health.start()
        log.info(
            "serving /healthz /readyz /metrics on %s:%d", self.opts.healthz_ip, self._health.port
        )

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            self.stop_event.set()  # only a flag: the main loop notices within a second

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)

    def _jitter(self, interval: float) -> float:
        return interval * self._rng.uniform(0.8, 1.2)


def configure_logging(opts: DaemonOptions) -> None:
    level = logging.DEBUG if opts.verbosity >= 2 else logging.INFO
    handlers: list[logging.Handler] = []
    if opts.logtostderr or not opts.log_dir:
        handlers.append(logging.StreamHandler(sys.stderr))
    if opts.log_dir:
        os.makedirs(opts.log_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(opts.log_dir, "flanneld.log")))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = parse_flags(args, os.environ)
    except UsageError as exc:
        print(f"flanneld: {usage_message(exc)}", file=sys.stderr)
        return 2
    if opts.help:
        sys.stdout.write(usage())
        return 0
    if opts.version:
        print(f"pyflannel {__version__}")
        return 0
    configure_logging(opts)
    try:
        return Agent(opts).run()
    except UsageError as exc:
        log.error("%s", usage_message(exc))
        return 2
    except (ConfigError, InterfaceError, FlannelError) as exc:
        log.error("%s", exc)
        return 1
