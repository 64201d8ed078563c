"""flannelctl leases list, reserve and release: the table, the JSON and SUBNET/IP parsing."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from typing import Any

from pyflannel.ctl.context import EXIT_OK, PROG, Context, _emit_json
from pyflannel.errors import FlannelError, UsageError
from pyflannel.flags import convert_ipv4
from pyflannel.subnet.lease import Lease, parse_key_name, subnets_prefix


def format_ttl(seconds: int) -> str:
    """86340 -> '23h59m', 125 -> '2m5s', 7 -> '7s' (minutes are enough once hours show)."""
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _expires(lease: Lease) -> str:
    if lease.is_reservation:
        return "reserved"
    if lease.expires_in is None:
        return "expired"  # the etcd lease is gone; its key goes with it in a moment
    return format_ttl(lease.expires_in)


def _vtep_mac(lease: Lease) -> str:
    data = lease.attrs.backend_data or {}
    mac = data.get("VtepMAC") if lease.attrs.backend_type == "vxlan" else None
    return str(mac) if mac else "-"


def _lease_json(lease: Lease) -> dict[str, Any]:
    data = lease.attrs.backend_data
    return {
        "subnet": str(lease.subnet),
        "public_ip": str(lease.attrs.public_ip),
        "backend": lease.attrs.backend_type,
        "expires_in": None if lease.is_reservation else lease.expires_in,
        "reserved": lease.is_reservation,
        "backend_data": dict(data) if data is not None else None,
    }


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def cmd_leases_list(ctx: Context, args: argparse.Namespace) -> int:
    manager = ctx.manager
    leases, _ = manager.list_leases()
    leases = sorted((manager.with_expiry(lease) for lease in leases), key=lambda x: x.subnet)
    if ctx.json_output:
        _emit_json([_lease_json(lease) for lease in leases])
        return EXIT_OK
    if not leases:
        print(f"no subnet leases under {subnets_prefix(ctx.prefix)}")
        return EXIT_OK
    rows = [
        [
            str(lease.subnet),
            str(lease.attrs.public_ip),
            lease.attrs.backend_type or "-",
            _expires(lease),
            _vtep_mac(lease),
        ]
        for lease in leases
    ]
    print(format_table(("SUBNET", "PUBLIC-IP", "BACKEND", "EXPIRES", "VTEP-MAC"), rows))
    return EXIT_OK


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """'10.5.3.0/24' or flannel's key name '10.5.3.0-24'; UsageError otherwise."""
    subnet = parse_key_name(text) if "-" in text else None
    if subnet is not None:
        return subnet
    if "/" not in text:
        raise UsageError(f"SUBNET: {text!r} has no prefix length; write it as e.g. 10.5.3.0/24")
    try:
        return ipaddress.IPv4Network(text)
    except ipaddress.NetmaskValueError:
        raise UsageError(f"SUBNET: {text!r} has an invalid prefix length") from None
    except ValueError:
        try:
            masked = ipaddress.IPv4Network(text, strict=False)
        except ValueError:
            raise UsageError(f"SUBNET: {text!r} is not an IPv4 subnet like 10.5.3.0/24") from None
        raise UsageError(f"SUBNET: {text!r} has host bits set; did you mean {masked}?") from None


def parse_public_ip(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(convert_ipv4(text))
    except ValueError as exc:
        raise UsageError(f"{what}: {text!r} {exc}") from None


def cmd_leases_reserve(ctx: Context, args: argparse.Namespace) -> int:
    subnet = parse_subnet(args.subnet)
    public_ip = parse_public_ip(args.public_ip, "PUBLIC_IP")
    manager = ctx.manager
    config = manager.get_config()
    before = manager.get_lease(subnet)
    lease, changed = manager.reserve(config, subnet, public_ip)
    if not changed:
        message = f"unchanged: {subnet} is already reserved for {public_ip}"
    elif before is not None:
        message = f"reserved {subnet} for {public_ip} (its lease became a reservation)"
    else:
        message = f"reserved {subnet} for {public_ip}"
    if ctx.json_output:
        _emit_json({**_lease_json(lease), "changed": changed})
    else:
        print(message)
    return EXIT_OK


def cmd_leases_release(ctx: Context, args: argparse.Namespace) -> int:
    subnet = parse_subnet(args.subnet)
    public_ip = parse_public_ip(args.public_ip, "--public-ip") if args.public_ip else None
    manager = ctx.manager
    existing = manager.get_lease(subnet)
    if existing is None:
        if not args.ignore_missing:
            raise FlannelError(
                f"no lease or reservation for {subnet} under {subnets_prefix(ctx.prefix)}; "
                f"see `{PROG} leases list` (or pass --ignore-missing)"
            )
        released = False
        message = f"unchanged: no lease or reservation for {subnet}"
    else:
        if not manager.release(subnet, public_ip):
            raise FlannelError(f"{subnet} changed while releasing it; nothing deleted, retry")
        released = True
        kind = "reservation" if existing.is_reservation else "lease"
        message = f"released {subnet} ({kind} of {existing.attrs.public_ip})"
        if not existing.is_reservation:
            message += "; if its flanneld still runs it will claim a subnet again"
    if ctx.json_output:
        _emit_json(
            {
                "subnet": str(subnet),
                "released": released,
                "public_ip": str(existing.attrs.public_ip) if existing else None,
                "reserved": existing.is_reservation if existing else None,
            }
        )
    else:
        print(message)
    return EXIT_OK
