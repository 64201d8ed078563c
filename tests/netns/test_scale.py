"""Many peers: the bulk netlink path (pyflannel/backend/nlbulk.py) against iproute2's view of
the kernel, the change monitor, and an agent joining 300 vxlan peers at once.

Speed figures are not asserted here (bench/controlplane.py measures them); what is asserted is
what breaks when the bulk path is wrong: entries missing or misread, refusals not reported,
a reconcile that "repairs" a correct kernel on every pass, changes of others not noticed.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from collections.abc import Iterator

import pytest

from pyflannel_lab import Lab
from pyflannel_lab.agents import HEALTHZ_PORT, wait_for
from pyflannel_lab.leases import CONFIG, fill, subnet

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

PEERS = 300
NETWORK = ipaddress.IPv4Network("10.128.0.0/9")

# Runs in the namespace (argv: count): builds a vxlan device, installs `count` peers through
# Kernel.replace_many plus one refused route, prints what Kernel's dumps and the refusals say.
BULK = r"""
import ipaddress, json, sys
from pyflannel.backend.netlink import FdbEntry, Kernel, Neighbour, Route
count = int(sys.argv[1])
k = Kernel()
k.ipr.link("add", ifname="flannel.1", kind="vxlan", vxlan_id=1, vxlan_port=8472)
i = k.link_index("flannel.1")
k.set_up(i)
neigh, fdb, routes = [], [], []
for n in range(count):
    net = ipaddress.IPv4Network(f"10.{128 + n // 256}.{n % 256}.0/24")
    mac = "0e:00:00:%02x:%02x:01" % (n >> 8, n & 255)
    neigh.append(Neighbour(net.network_address, mac, i))
    fdb.append(FdbEntry(mac, ipaddress.IPv4Address(f"198.51.100.{n % 250 + 2}"), i))
    routes.append(Route(net, net.network_address, i, onlink=True))
bad = Route(ipaddress.IPv4Network("10.255.0.0/24"), None, 999999, onlink=False)
refused = k.replace_many(neigh, fdb, routes + [bad])
print(json.dumps({
    "refused": [[str(entry), code] for entry, code in refused],
    "neigh": sorted([str(x.ip), x.mac] for x in k.neighbours(i)),
    "fdb": sorted([x.mac, str(x.dst)] for x in k.fdb_entries(i)),
    "routes": sorted([str(r.dst), str(r.gateway), r.onlink] for r in
                     k.routes(ipaddress.IPv4Network("10.128.0.0/9"), oif=i)),
}))
"""


def ip_json(lab: Lab, *args: str) -> list[dict]:
    return json.loads(lab.run("h1", *args).stdout or "[]")


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab(name_prefix="pfs", hosts=1, containers_per_host=0)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def test_bulk_entries_are_what_iproute2_sees(lab: Lab) -> None:
    out = json.loads(lab.run("h1", sys.executable, "-c", BULK, "200", timeout=60).stdout)
    # The one refusal is reported, with the kernel's errno (ENODEV: no such device).
    assert out["refused"] == [[str_bad_route(), 19]]
    neigh = {
        (e["dst"], e["lladdr"])
        for e in ip_json(lab, "ip", "-j", "neigh", "show", "dev", "flannel.1")
        if "PERMANENT" in e.get("state", [])
    }
    fdb = {
        (e["mac"], e["dst"])
        for e in ip_json(lab, "bridge", "-j", "fdb", "show", "dev", "flannel.1")
        if "dst" in e and e["mac"] != "00:00:00:00:00:00"
    }
    routes = {
        (e["dst"], e["gateway"], "onlink" in e.get("flags", []))
        for e in ip_json(lab, "ip", "-j", "route", "show", "dev", "flannel.1")
        if "gateway" in e
    }
    assert len(neigh) == len(fdb) == len(routes) == 200
    assert {tuple(x) for x in out["neigh"]} == neigh
    assert {tuple(x) for x in out["fdb"]} == fdb
    assert {tuple(x) for x in out["routes"]} == routes


def str_bad_route() -> str:
    return "Route(dst=IPv4Network('10.255.0.0/24'), gateway=None, oif=999999, onlink=False)"


MONITOR = r"""
import ipaddress, subprocess, sys, time
from pyflannel.backend.nlbulk import ChangeMonitor
m = ChangeMonitor(ipaddress.IPv4Network("10.128.0.0/9"))
lo = int(open("/sys/class/net/lo/ifindex").read())
def step(cmd):
    subprocess.run(cmd.split(), check=True)
    time.sleep(0.1)
    print(cmd.split()[1], m.changed({lo}))
step("ip route add 198.51.100.0/24 dev eth0")      # outside the Network: not ours
step("ip route add 10.129.0.0/24 dev eth0")        # inside: ours (whoever made it)
step("ip neigh add 192.0.2.99 lladdr 02:00:00:00:00:09 dev eth0")  # another device
step("ip addr add 127.0.0.9/8 dev lo")             # a watched device
print("quiet", m.changed({lo}))
"""


def test_change_monitor_reports_only_what_the_backend_owns(lab: Lab) -> None:
    out = lab.run("h1", sys.executable, "-c", MONITOR, timeout=30).stdout.split("\n")
    assert [line for line in out if line] == [
        "route False",
        "route True",
        "neigh False",
        "addr True",
        "quiet False",
    ]


def metrics(lab: Lab) -> dict[str, float]:
    url = f"http://127.0.0.1:{HEALTHZ_PORT}/metrics"
    text = lab.run("h1", "curl", "-s", url, check=False).stdout
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and "{" not in line
    }


def test_an_agent_joins_300_peers_at_once_and_leaves_a_correct_kernel_alone() -> None:
    lab = Lab(name_prefix="pfs", hosts=1, containers_per_host=0)
    try:
        lab.up()
        lab.start_etcd()
        lab.etcdctl("put", "/coreos.com/network/config", CONFIG)
        fill(lab, 0, PEERS)
        assert lab.tmpdir is not None
        log = lab.tmpdir / "agent.log"
        agent = lab.popen(
            "h1",
            sys.executable,
            "-m",
            "pyflannel",
            f"--etcd-endpoints={lab.etcd_endpoint}",
            "--iface=eth0",
            f"--subnet-file={lab.tmpdir / 'subnet.env'}",
            f"--healthz-port={HEALTHZ_PORT}",
            "--reconcile-interval=1",
            log_path=log,
        )

        def routes() -> int:
            out = lab.run("h1", "ip", "-4", "route", "show", "dev", "flannel.1", check=False)
            return sum(" via " in line for line in out.stdout.splitlines())

        wait_for(lambda: routes() == PEERS, 20, 0.1, f"{PEERS} routes")
        # The burst's line is written once its entries are in: moments after the routes show.
        wait_for(
            lambda: f"{PEERS} peers added or changed at once" in log.read_text(),
            5,
            0.1,
            "one log line for the burst",
        )
        assert log.read_text().count(" added\n") < 5, "one log line per peer at info level"
        # Steady state: passes find nothing to repair, and most are skipped.
        time.sleep(4)
        m = metrics(lab)
        assert m["pyflannel_backend_repairs_total"] == 0, "a correct kernel was 'repaired'"
        assert m["pyflannel_reconcile_skipped_total"] >= 2
        # Someone else's change is noticed at the next pass and repaired.
        victim = ipaddress.IPv4Network(subnet(7))
        lab.run("h1", "ip", "neigh", "del", str(victim.network_address), "dev", "flannel.1")
        lab.run("h1", "ip", "route", "del", str(victim))
        wait_for(
            lambda: (
                routes() == PEERS
                and "PERMANENT"
                in lab.run("h1", "ip", "neigh", "show", str(victim.network_address)).stdout
            ),
            4,
            0.1,
            "the deleted route and neighbour back",
        )
        wait_for(
            lambda: metrics(lab).get("pyflannel_backend_repairs_total", 0) >= 1, 4, 0.3, "counted"
        )
        lab.stop(agent)
    finally:
        lab.down()
