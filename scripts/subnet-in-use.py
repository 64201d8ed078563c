"""Print why SUBNET must not become a Docker network here; exit 1 when it must not.

A Docker network adds a route on this machine: one that overlaps a route the machine already
uses (its own network) or the address of its package proxy would cut it off from apt and pip.
Used by lab.sh and molecule-all.sh before they create their networks.
"""

import ipaddress
import socket
import subprocess
import sys


def clashes(subnet: ipaddress.IPv4Network) -> list[str]:
    found = []
    routes = subprocess.run(
        ["ip", "-4", "route", "show"], capture_output=True, text=True, check=True
    ).stdout
    for line in routes.splitlines():
        dest = line.split()[0]
        if dest != "default" and subnet.overlaps(ipaddress.ip_network(dest, strict=False)):
            found.append(f"route {line.strip()}")
    for host in ("pypi.org", "deb.debian.org"):
        try:
            address = ipaddress.ip_address(socket.gethostbyname(host))
        except OSError:
            continue
        if address in subnet:
            found.append(f"{host} resolves to {address}")
    return found


if __name__ == "__main__":
    found = clashes(ipaddress.IPv4Network(sys.argv[1]))
    print("; ".join(found))
    sys.exit(1 if found else 0)
