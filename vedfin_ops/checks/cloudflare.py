"""Cloudflare's published address ranges: a domain that resolves into them is proxied, so
its DNS answer names Cloudflare, not the VPS, and the origin is checked directly instead.

Data, kept in the package because the check must work offline. Taken from Cloudflare's
published lists (cloudflare.com/ips-v4 and /ips-v6) as they stood in September 2026 (the same
lists since 2021); this machine cannot fetch them, so they were read from public copies on
2026-11-29. If Cloudflare adds a range, a proxied domain in it fails the DNS item as "not the
VPS": update the lists and the date.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

RANGES_TAKEN = "2026-09"
IPV4 = ("173.245.48.0/20", "103.21.244.0/22", "103.22.200.0/22", "103.31.4.0/22",
        "141.101.64.0/18", "108.162.192.0/18", "190.93.240.0/20", "188.114.96.0/20",
        "197.234.240.0/22", "198.41.128.0/17", "162.158.0.0/15", "104.16.0.0/13",
        "104.24.0.0/14", "172.64.0.0/13", "131.0.72.0/22")
IPV6 = ("2400:cb00::/32", "2606:4700::/32", "2803:f800::/32", "2405:b500::/32",
        "2405:8100::/32", "2a06:98c0::/29", "2c0f:f248::/32")
_NETWORKS = tuple(ipaddress.ip_network(n) for n in (*IPV4, *IPV6))


def is_cloudflare(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in _NETWORKS if net.version == ip.version)


def proxied(addresses: Iterable[str]) -> bool:
    """Every address a name resolves to is Cloudflare's (a proxied record); none is empty."""
    found = list(addresses)
    return bool(found) and all(is_cloudflare(a) for a in found)


Resolver = Callable[[str], tuple[str, list[str], list[str]]]


def system_resolver(name: str) -> tuple[str, list[str], list[str]]:
    """(canonical name, aliases, addresses). `*.localhost` is loopback (RFC 6761)."""
    if name == "localhost" or name.endswith(".localhost"):
        return name, [], ["127.0.0.1"]
    return socket.gethostbyname_ex(name)


def origin_address(domain: str, vps_address: str | None, default: str,
                   resolve: Resolver) -> str:
    """Where to ask for `domain`'s certificate: the VPS itself when Cloudflare proxies the
    domain (else its certificate would be Cloudflare's, and an expiring origin certificate
    would go unseen until Cloudflare answers 526), otherwise `default`."""
    if not vps_address:
        return default
    try:
        addresses = resolve(domain)[2]
    except OSError:
        return default
    return vps_address if proxied(addresses) else default


def origin_tls_mode(edge_tls: str) -> str:
    """What Cloudflare's SSL/TLS mode must be for this edge, in Cloudflare's own words."""
    if edge_tls == "auto":
        return ("set Cloudflare SSL/TLS to Full (strict): the origin serves a publicly trusted "
                "certificate (ACME, HTTP-01 passes through the proxy)")
    if edge_tls == "internal":
        return ("Full (strict) fails on edge.tls internal (Caddy's own CA): use a Cloudflare "
                "Origin CA certificate, or edge.tls auto")
    return ("the origin serves HTTP only: that is Cloudflare's Flexible mode, unencrypted "
            "between Cloudflare and the VPS; use edge.tls auto and Full (strict)")
