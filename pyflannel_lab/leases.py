"""Many vxlan peer leases in a lab's etcd at once, for scale tests and the control-plane bench.

Lease n is subnet 10.(128 + n // 256).(n % 256).0/24 of Network 10.128.0.0/9, VtepMAC
0e:00:<n>:01, public IP cycling through 198.51.100.0/24 and 203.0.113.0/24 (kernel state
only: nothing is ever sent to them). Written from inside a lab host (the etcd listens there).
"""

from __future__ import annotations

import json
import sys

from pyflannel_lab.lab import Lab

NETWORK = "10.128.0.0/9"
CONFIG = json.dumps({"Network": NETWORK, "SubnetLen": 24, "Backend": {"Type": "vxlan"}})


def subnet(n: int) -> str:
    return f"10.{128 + n // 256}.{n % 256}.0/24"


PUBLIC = [f"198.51.100.{i}" for i in range(2, 255)] + [
    f"203.0.113.{i}" for i in range(1, 255) if i != 80
]
# Runs in a lab host: writes leases [first, first+count) (argv: endpoint first count).
FILL = r"""
import json, sys
from pyflannel.store import EtcdOptions, Store
endpoint, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
public = json.loads(sys.argv[4])
store = Store(EtcdOptions(endpoints=(endpoint,)))
lease = store.grant(86400)
for n in range(first, first + count):
    key = f"/coreos.com/network/subnets/10.{128 + n // 256}.{n % 256}.0-24"
    mac = "0e:00:%02x:%02x:%02x:01" % (n >> 16, (n >> 8) & 255, n & 255)
    value = {"PublicIP": public[n % len(public)], "PublicIPv6": None, "BackendType": "vxlan",
             "BackendData": {"VNI": 1, "VtepMAC": mac}}
    store.put(key, json.dumps(value, separators=(",", ":")), lease)
"""


def fill(lab: Lab, first: int, count: int) -> None:
    """Leases first .. first + count - 1, from lab host h1, in one etcd lease of 24 h."""
    lab.run(
        "h1",
        sys.executable,
        "-c",
        FILL,
        lab.etcd_endpoint,
        str(first),
        str(count),
        json.dumps(PUBLIC),
        timeout=300,
    )
