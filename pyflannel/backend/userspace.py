"""Parent side of the userspace data paths: a TUN device and the pump process behind it.

`TunDataPath` is a part, not a backend: udp always carries its peers through one, ipip only on
kernels without the ipip link kind; each backend keeps its own peer and route logic.
A persistent TUN (ipip) is created through pyroute2 and, with its address and routes, survives
an agent restart; the pump process attaches to it. A non-persistent one (udp) has the pump
clear the flag: the device then lives exactly as long as the pump, like flanneld's flannel0.
A pump that dies takes the agent down with it (`DataPathError`): systemd restarts the agent,
which is better than a node that looks healthy and forwards nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import multiprocessing
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from pyflannel.backend.ebpf.fastpath import (
    FastPath,
    FastPathUnavailable,
    passes_offloaded_packets,
)
from pyflannel.backend.ebpf.programs import Layout
from pyflannel.backend.netlink import Kernel, Route
from pyflannel.backend.pump import Mode, PumpSpec, serve
from pyflannel.backend.settings import BackendSettings
from pyflannel.config import NetworkConfig
from pyflannel.errors import DataPathError, FlannelError
from pyflannel.iface import ExternalInterface
from pyflannel.subnet.lease import Lease

log = logging.getLogger(__name__)

PUMP_START_TIMEOUT = 15.0
CONTROL_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class TunSpec:
    """What differs between the users of a TUN data path."""

    backend_type: str  # for messages: "udp", "ipip"
    mode: Mode  # the pump's encapsulation
    device: str
    mtu: int
    persistent: bool  # False: the device goes with the pump (udp)
    port: int = 0  # udp's port
    route_network: bool = False  # one route for the whole Network into the device (udp)


class TunDataPath:
    """A TUN device, its pump process and eBPF fast path, and the peers they carry."""

    def __init__(
        self,
        spec: TunSpec,
        *,
        config: NetworkConfig,
        ext: ExternalInterface,
        settings: BackendSettings,
        kernel: Kernel,
    ) -> None:
        self.spec = spec
        self.config = config
        self.ext = ext
        self.settings = settings
        self.kernel = kernel
        self.index = 0
        self.peers: dict[ipaddress.IPv4Network, Lease] = {}
        self.fast_path: FastPath | None = None
        self._process: BaseProcess | None = None
        self._control: Connection | None = None
        self._spare: tuple[BaseProcess, Connection] | None = None  # spawned, waiting for a spec
        self._own_lease: Lease | None = None

    # -- device --------------------------------------------------------------------------------

    def ensure_device(self) -> None:
        device = self.spec.device
        index = self.kernel.link_index(device)
        if index is not None and self.kernel.link_kind(index) != "tun":
            log.warning("%s exists but is not a TUN device; recreating it", device)
            self.kernel.delete_link(device)
            index = None
        if index is None:
            self.kernel.add_link(device, "tuntap", mode="tun", ifr={"no_pi": True})
            index = self.kernel.link_index(device)
            if index is None:
                raise FlannelError(f"{self.spec.backend_type}: could not create TUN {device}")
            log.info("created TUN device %s", device)
        self.index = index
        self.kernel.set_up(index, mtu=self.spec.mtu)
        self._accept_local()

    def _accept_local(self) -> None:
        # The pump's ICMP errors come from the TUN's own address; without accept_local the
        # kernel drops them as martians and senders see a silent blackhole.
        path = Path(f"/proc/sys/net/ipv4/conf/{self.spec.device}/accept_local")
        try:
            path.write_text("1\n")
        except OSError as exc:
            log.warning("%s: cannot set accept_local (%s); ICMP errors will be lost", path, exc)

    def activate(self, lease: Lease) -> None:
        """Address and routes for our own lease, and a pump serving it."""
        self._own_lease = lease
        if not self.spec.persistent:
            # The device goes with the old pump: bring a new one up before configuring it.
            self.stop()
            self.ensure_device()
            self._start_pump(lease)
        address = ipaddress.IPv4Interface((lease.subnet.network_address, 32))
        if self.kernel.ensure_address(self.index, address):
            log.info("%s address set to %s", self.spec.device, address)
        self._install_routes()
        if self.spec.persistent:
            self._start_pump(lease)

    def _install_routes(self) -> None:
        if self.spec.route_network:
            # Our own subnet is more specific (docker0) and wins.
            self.kernel.route_replace(Route(self.config.network, None, self.index, onlink=False))

    # -- pump and fast path ----------------------------------------------------------------------

    def _pump_spec(self, lease: Lease) -> PumpSpec:
        return PumpSpec(
            mode=self.spec.mode,
            tun_name=self.spec.device,
            network=str(self.config.network),
            subnet_len=self.config.subnet_len,
            bind_ip=str(self.ext.iface_addr),
            port=self.spec.port,
            tunnel_ip=str(lease.subnet.network_address),
            persistent=self.spec.persistent,
            # A TUN that goes with the pump takes the decap filter's target with it.
            underlay_index=0 if self.spec.persistent else self.ext.index,
        )

    def spawn_pump(self) -> None:
        """Start the pump's process now, idle until `activate` hands it our lease.

        Called from the backend's prepare, before the lease is published: peers send to us from
        the moment they read it, and a fresh interpreter is the slow part of starting a pump.
        """
        if self._spare is None or not self._spare[0].is_alive():
            self._spare = self._spawn(None)
            log.info(
                "%s packet pump process spawned ahead of our lease (pid %s)",
                self.spec.backend_type,
                self._spare[0].pid,
            )

    def _spawn(self, spec: PumpSpec | None) -> tuple[BaseProcess, Connection]:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=serve, args=(spec, child), name=f"pump-{self.spec.device}")
        process.daemon = True
        process.start()
        child.close()
        return process, parent

    def _take_spare(self, spec: PumpSpec) -> tuple[BaseProcess, Connection]:
        spare, self._spare = self._spare, None
        if spare is not None and spare[0].is_alive():
            try:
                spare[1].send(("start", spec))
                return spare
            except OSError:
                self._end_spare(spare)
        return self._spawn(spec)

    @staticmethod
    def _end_spare(spare: tuple[BaseProcess, Connection]) -> None:
        process, control = spare
        control.close()  # its recv() sees EOF and it exits
        process.join(CONTROL_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join(1)

    def _start_pump(self, lease: Lease) -> None:
        self.stop()
        kind = self.spec.backend_type
        process, parent = self._take_spare(self._pump_spec(lease))
        if not parent.poll(PUMP_START_TIMEOUT):
            process.kill()
            raise DataPathError(f"{kind}: packet pump did not start within {PUMP_START_TIMEOUT} s")
        reply, detail = parent.recv()
        if reply != "ready":
            process.join(1)
            raise DataPathError(f"{kind}: packet pump failed to start: {detail}")
        self._process, self._control = process, parent
        log.info("%s packet pump running (pid %s)", kind, process.pid)
        self._start_fast_path()
        self._push_peers()

    def _start_fast_path(self) -> None:
        """Known peers' packets in the kernel; the pump stays for the rest (and as fallback)."""
        self._stop_fast_path()
        kind = self.spec.backend_type
        if not self.settings.userspace_fast_path:
            log.info("%s data path: the packet pump (--userspace-fast-path=false)", kind)
            return
        layout = Layout(
            mode=self.spec.mode,
            network=self.config.network,
            subnet_len=self.config.subnet_len,
            local_ip=self.ext.iface_addr,
            port=self.spec.port,
            underlay_index=self.ext.index,
            tun_index=self.index,
        )
        try:
            fast_path = FastPath(layout)
            fast_path.attach(self.kernel.tc_socket)
        except FastPathUnavailable as exc:
            log.warning(
                "%s data path: the packet pump only; the kernel refused the eBPF fast path (%s)",
                kind,
                exc,
            )
            return
        self.fast_path = fast_path
        log.info(
            "%s data path: eBPF (encap on %s egress, decap on %s ingress), the pump for the rest",
            kind,
            self.spec.device,
            self.ext.name,
        )
        if passes_offloaded_packets(self.ext.name, self.kernel.link_kind(self.ext.index)):
            log.warning(
                "%s: %s is a veth with tx checksumming on: offloaded packets reach the peer "
                "unsegmented and without final checksums, which only kernel receivers take; with "
                "peers that read datagrams in userspace (%spyflannel with "
                "--userspace-fast-path=false) run `ethtool -K %s tx off` here, or "
                "--userspace-fast-path=false",
                kind,
                self.ext.name,
                "flanneld's udp backend, " if self.spec.mode == "udp" else "",
                self.ext.name,
            )

    def _stop_fast_path(self) -> None:
        """Our descriptors only: the filters stay and keep forwarding in the kernel until a new
        fast path replaces them (an agent restart), or the TUN goes (udp)."""
        if self.fast_path is not None:
            self.fast_path.close()
            self.fast_path = None

    def stop(self) -> None:
        """Stop the pump (and let go of the fast path); the device stays if persistent."""
        self._stop_fast_path()
        self._stop_running_pump()

    def close(self) -> None:
        """`stop`, and an idle pump process spawned ahead goes too."""
        self.stop()
        if self._spare is not None:
            spare, self._spare = self._spare, None
            self._end_spare(spare)

    def _stop_running_pump(self) -> None:
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
        backend = self.spec.backend_type
        if not self._process.is_alive():
            raise DataPathError(
                f"{backend}: packet pump (pid {self._process.pid}) died with exit code "
                f"{self._process.exitcode}"
            )
        try:
            self._control.send((kind, payload))
            if not self._control.poll(CONTROL_TIMEOUT):
                raise DataPathError(f"{backend}: packet pump stopped answering")
            return self._control.recv()[1]
        except (OSError, EOFError) as exc:
            raise DataPathError(f"{backend}: lost the packet pump: {exc}") from None

    def _push_peers(self) -> None:
        table = {str(subnet): str(lease.attrs.public_ip) for subnet, lease in self.peers.items()}
        self._request("peers", table)
        if self.fast_path is not None:
            self.fast_path.set_peers(table)

    # -- peers ---------------------------------------------------------------------------------

    def carry(self, lease: Lease) -> None:
        """Tunnel `lease.subnet` to its node (replace)."""
        self.peers[lease.subnet] = lease
        self._push_peers()

    def forget(self, subnet: ipaddress.IPv4Network) -> None:
        """Out of the pump's and the fast path's peer table (nothing else)."""
        if self.peers.pop(subnet, None) is not None:
            self._push_peers()

    def reconcile(self, peers: Mapping[ipaddress.IPv4Network, Lease]) -> int:
        """Device, address, routes and the peer table: exactly `peers`; returns the repairs."""
        repairs = 0
        if self.kernel.link_index(self.spec.device) != self.index:
            log.warning("%s is gone; recreating it", self.spec.device)
            self.ensure_device()
            repairs += 1
            if self._own_lease is not None:
                self.activate(self._own_lease)
        elif self._own_lease is not None:
            self.kernel.ensure_address(
                self.index, ipaddress.IPv4Interface((self._own_lease.subnet.network_address, 32))
            )
            self._install_routes()
        if dict(peers) != self.peers:
            self.peers = dict(peers)
            repairs += 1
        self._push_peers()
        return repairs

    def metrics(self) -> dict[str, float]:
        """The pump's and the fast path's counters (asking the pump also checks it is alive)."""
        values = {
            f"pyflannel_pump_{name}_total": float(value)
            for name, value in dict(self._request("stats") or {}).items()
        }
        values["pyflannel_fast_path_active"] = 1.0 if self.fast_path is not None else 0.0
        if self.fast_path is not None:
            for name, value in self.fast_path.stats().items():
                values[f"pyflannel_fast_path_{name}_total"] = float(value)
        return values
