"""The agent's flags that shape a backend, as one typed value the daemon hands over.

Every backend gets the same value and reads the fields that concern it, so the daemon needs no
per-backend branches.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackendSettings:
    # vxlan: turn tx-checksum-ip-generic off on the device (--vxlan-disable-tx-checksum).
    vxlan_disable_tx_checksum: bool = False
    # udp and userspace ipip: the eBPF fast path in front of the pump (--userspace-fast-path).
    userspace_fast_path: bool = True
    # bgp: the BIRD configuration file the agent writes and BIRD's control socket.
    bird_config: str = "/etc/bird/bird.conf"
    bird_socket: str = "/run/bird/bird.ctl"
