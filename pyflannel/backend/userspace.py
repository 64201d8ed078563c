"""Parent side of the userspace data paths (udp, ipip fallback): TUN device + pump process.

The TUN device is created persistent through pyroute2, so it (with its address and routes)
survives an agent restart; the pump process attaches to it. A backend with persistent_tun False
(udp) has the pump clear the flag: the device then lives exactly as long as the pump, like
flanneld's flannel0. A pump that dies takes the agent down with it (`DataPathError`): systemd
restarts the agent, which is better than a node that looks healthy and forwards nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import multiprocessing
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, ClassVar

from pyflannel.backend.base import Backend
from pyflannel.backend.ebpf.fastpath import (
    FastPath,
    FastPathUnavailable,
    passes_offloaded_packets,
)
from pyflannel.backend.ebpf.programs import Layout
from pyflannel.backend.pump import Mode, PumpSpec, serve
from pyflannel.errors import DataPathError, FlannelError
from pyflannel.subnet.lease import Lease

log = logging.getLogger(__name__)

PUMP_START_TIMEOUT = 15.0
CONTROL_TIMEOUT = 5.0


class TunBackend(Backend):
    """Common parts of udp and userspace ipip: device, pump process, peer table."""

    mode: Mode
    device: str
    persistent_tun: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.index = 0
        self.peers: dict[ipaddress.IPv4Network, Lease] = {}
        self._process: BaseProcess | None = None
        self._control: Connection | None = None
        self.fast_path: FastPath | None = None

    # -- device and pump ----------------------------------------------------------------------

    def ensure_tun(self) -> None:
        index = self.kernel.link_index(self.device)
        if index is not None and self.kernel.link_kind(index) != "tun":
            log.warning("%s exists but is not a TUN device; recreating it", self.device)
            self.kernel.delete_link(self.device)
            index = None
        if index is None:
            self.kernel.add_link(self.device, "tuntap", mode="tun", ifr={"no_pi": True})
            index = self.kernel.link_index(self.device)
            if index is None:
                raise FlannelError(f"{self.type}: could not create TUN device {self.device}")
            log.info("created TUN device %s", self.device)
        self.index = index
        self.kernel.set_up(index, mtu=self.mtu())
        self._accept_local()

    def _accept_local(self) -> None:
        # The pump's ICMP errors come from the TUN's own address; without accept_local the
        # kernel drops them as martians and senders see a silent blackhole.
        path = Path(f"/proc/sys/net/ipv4/conf/{self.device}/accept_local")
        try:
            path.write_text("1\n")
        except OSError as exc:
            log.warning("%s: cannot set accept_local (%s); ICMP errors will be lost", path, exc)

    def pump_spec(self, lease: Lease) -> PumpSpec:
        raise NotImplementedError

    def start_pump(self, lease: Lease) -> None:
        self.stop_pump()
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=serve, args=(self.pump_spec(lease), child), name=f"pump-{self.device}"
        )
        process.daemon = True
        process.start()
        child.close()
        if not parent.poll(PUMP_START_TIMEOUT):
            process.kill()
            raise DataPathError(
                f"{self.type}: packet pump did not start within {PUMP_START_TIMEOUT} s"
            )
        kind, detail = parent.recv()
        if kind != "ready":
            process.join(1)
            raise DataPathError(f"{self.type}: packet pump failed to start: {detail}")
        self._process, self._control = process, parent
        log.info("%s packet pump running (pid %s)", self.type, process.pid)
        self.start_fast_path()
        self._push_peers()

    def start_fast_path(self) -> None:
        """Known peers' packets in the kernel; the pump stays for the rest (and as fallback)."""
        self.stop_fast_path()
        if not self.settings.userspace_fast_path:
            log.info("%s data path: the packet pump (--userspace-fast-path=false)", self.type)
            return
        layout = Layout(
            mode=self.mode,
            network=self.config.network,
            subnet_len=self.config.subnet_len,
            local_ip=self.ext.iface_addr,
            port=getattr(self, "port", 0),
            underlay_index=self.ext.index,
            tun_index=self.index,
        )
        try:
            fast_path = FastPath(layout)
            fast_path.attach(self.kernel.tc_socket)
        except FastPathUnavailable as exc:
            log.warning(
                "%s data path: the packet pump only; the kernel refused the eBPF fast path (%s)",
                self.type,
                exc,
            )
            return
        self.fast_path = fast_path
        log.info(
            "%s data path: eBPF (encap on %s egress, decap on %s ingress), the pump for the rest",
            self.type,
            self.device,
            self.ext.name,
        )
        if passes_offloaded_packets(self.ext.name, self.kernel.link_kind(self.ext.index)):
            log.warning(
                "%s: %s is a veth with tx checksumming on: offloaded packets reach the peer "
                "unsegmented and without final checksums, which only kernel receivers take; with "
                "peers that read datagrams in userspace (%spyflannel with "
                "--userspace-fast-path=false) run `ethtool -K %s tx off` here, or "
                "--userspace-fast-path=false",
                self.type,
                self.ext.name,
                "flanneld's udp backend, " if self.mode == "udp" else "",
                self.ext.name,
            )

    def stop_fast_path(self) -> None:
        """Our descriptors only: the filters stay and keep forwarding in the kernel until a new
        fast path replaces them (an agent restart), or the TUN goes (udp)."""
        if self.fast_path is not None:
            self.fast_path.close()
            self.fast_path = None

    def stop_pump(self) -> None:
        self.stop_fast_path()
        if self._process is None or self._control is None:
            return
        try:
            self._control.send(("stop", None))
            if self._control.poll(CONTROL_TIMEOUT):
                self._control.recv()
        except (OSError, EOFError):
            pass
        self._process.join(CONTROL_TIMEOUT)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(1)
        self._control.close()
        self._process = self._control = None

    def _request(self, kind: str, payload: Any = None) -> Any:
        if self._process is None or self._control is None:
            return None
        if not self._process.is_alive():
            raise DataPathError(
                f"{self.type}: packet pump (pid {self._process.pid}) died with exit code "
                f"{self._process.exitcode}"
            )
        try:
            self._control.send((kind, payload))
            if not self._control.poll(CONTROL_TIMEOUT):
                raise DataPathError(f"{self.type}: packet pump stopped answering")
            return self._control.recv()[1]
        except (OSError, EOFError) as exc:
            raise DataPathError(f"{self.type}: lost the packet pump: {exc}") from None

    def _push_peers(self) -> None:
        table = {str(subnet): str(lease.attrs.public_ip) for subnet, lease in self.peers.items()}
        self._request("peers", table)
        if self.fast_path is not None:
            self.fast_path.set_peers(table)

    def pump_stats(self) -> dict[str, int]:
        return dict(self._request("stats") or {})

    def metrics(self) -> dict[str, float]:
        values = super().metrics()
        for name, value in self.pump_stats().items():
            values[f"pyflannel_pump_{name}_total"] = float(value)
        values["pyflannel_fast_path_active"] = 1.0 if self.fast_path is not None else 0.0
        if self.fast_path is not None:
            for name, value in self.fast_path.stats().items():
                values[f"pyflannel_fast_path_{name}_total"] = float(value)
        return values

    # -- Backend interface --------------------------------------------------------------------

    def activate(self, lease: Lease) -> None:
        self.own_lease = lease
        if not self.persistent_tun:
            # The device goes with the old pump: bring a new one up before configuring it.
            self.stop_pump()
            self.ensure_tun()
            self.start_pump(lease)
        address = ipaddress.IPv4Interface((lease.subnet.network_address, 32))
        if self.kernel.ensure_address(self.index, address):
            log.info("%s address set to %s", self.device, address)
        self.install_routes(lease)
        if self.persistent_tun:
            self.start_pump(lease)

    def install_routes(self, lease: Lease) -> None:
        """Routes that exist independently of peers (udp: the whole Network)."""

    def apply_peer(self, lease: Lease) -> None:
        if not self.serves(lease):
            self.apply_mixed_peer(lease)  # more specific than any route into our device
            self.pump_forget(lease.subnet)
            return
        self.peers[lease.subnet] = lease
        self._push_peers()
        self.forget_mixed_peer(lease.subnet)  # the pump carries it now

    def remove_peer(self, lease: Lease) -> None:
        self.forget_mixed_peer(lease.subnet)
        self.pump_forget(lease.subnet)

    def pump_forget(self, subnet: ipaddress.IPv4Network) -> None:
        """Out of the pump's peer table (nothing else)."""
        if self.peers.pop(subnet, None) is not None:
            self._push_peers()

    def reconcile(self, peers: Mapping[ipaddress.IPv4Network, Lease]) -> None:
        own, mixed = self.split_peers(peers)
        self.reconcile_pump(own)
        self.mixed = set(mixed)
        self.repairs += self.direct.sync(mixed)

    def reconcile_pump(self, peers: Mapping[ipaddress.IPv4Network, Lease]) -> None:
        """The device, its address and routes, and the pump's peer table: exactly `peers`."""
        if self.kernel.link_index(self.device) != self.index:
            log.warning("%s is gone; recreating it", self.device)
            self.ensure_tun()
            self.repairs += 1
            if self.own_lease is not None:
                self.activate(self.own_lease)
        elif self.own_lease is not None:
            self.kernel.ensure_address(
                self.index, ipaddress.IPv4Interface((self.own_lease.subnet.network_address, 32))
            )
            self.install_routes(self.own_lease)
        if dict(peers) != self.peers:
            self.peers = dict(peers)
            self.repairs += 1
        self._push_peers()

    def close(self) -> None:
        self.stop_pump()
        super().close()
