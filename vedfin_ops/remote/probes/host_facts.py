"""The preflight probe: one command asks the host who runs it, ufw's status, the published
ports (containers and swarm services), what listens on which port, the monitoring ports and
the usage probe; beside it, the
parsers of its answer. The checks that judge these facts live in `checks/preflight.py`."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from vedfin_ops.remote.probes.usage import PROBE as USAGE_PROBE

# One command. ufw needs root: the deploy user asks `sudo -n` (never a password prompt), which
# the sudoers line that `ufw_check` names allows; LC_ALL=C keeps ufw's words English. Ports
# that swarm publishes through its ingress are not in `docker ps`, hence the service listing.
HOST_PROBE = r"""
echo '--WHO--'; id -un
echo '--UFW--'
export LC_ALL=C
if [ "$(id -u)" -eq 0 ]; then ufw status verbose; else sudo -n ufw status verbose; fi 2>&1 \
  | head -n 200
echo '--PORTS--'; docker ps --format '{{.Names}}|{{.Ports}}'
echo '--SERVICES--'; docker service ls --format '{{.Name}}|{{.Ports}}' 2>/dev/null
echo '--NETWORKS--'; docker network ls --format '{{.Name}}|{{.Driver}}|{{.Scope}}'
echo '--LISTEN--'
if command -v ss >/dev/null 2>&1; then ss -ltnpH 2>/dev/null; else echo 'no-ss'; fi
echo '--MONITORING--'
for p in %PORTS%; do
  if timeout 3 bash -c "</dev/tcp/127.0.0.1/$p" 2>/dev/null
  then echo "$p open"; else echo "$p closed"; fi
done
echo '--USAGE--'
""" + USAGE_PROBE

UFW_COMMAND = "/usr/sbin/ufw status verbose"


def sudoers_line(user: str | None) -> str:
    """The one sudoers line that lets `user` run the probe's `sudo -n ufw status verbose`."""
    return f"{user or '<deploy-user>'} ALL=(root) NOPASSWD: {UFW_COMMAND}"


def sections(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    current = ""
    for line in text.split("--USAGE--")[0].splitlines():
        match = re.fullmatch(r"--([A-Z]+)--", line.strip())
        if match:
            current = match.group(1)
            out[current] = ""
        elif current:
            out[current] += line + "\n"
    return out

_RULE = re.compile(r"^(?P<to>\S.*?)\s+(?P<action>ALLOW|DENY|REJECT|LIMIT)"
                   r"(?:\s+(?P<dir>IN|OUT|FWD))?(?:\s+(?P<src>\S.*?))?\s*$")
_PORTS = re.compile(r"^(?:(?P<addr>\S+)\s+)?(?P<ports>\d+(?::\d+)?(?:,\d+(?::\d+)?)*)"
                    r"(?:/(?P<proto>tcp|udp|ah|esp|gre|ipv6|igmp))?$")
# `ufw status` (not verbose) names application profiles instead of their ports.
_APPS = {"OpenSSH": "22", "Nginx Full": "80,443", "Nginx HTTP": "80", "Nginx HTTPS": "443",
         "WWW Full": "80,443", "WWW": "80", "WWW Secure": "443", "Apache Full": "80,443",
         "Apache": "80", "Apache Secure": "443"}


@dataclass(frozen=True)
class UfwRule:
    """One incoming rule: the TCP port ranges it covers, its action, its source."""

    spec: str  # as ufw prints its To column, without the (v6) / profile suffix
    ranges: tuple[tuple[int, int], ...]
    action: str  # ALLOW, LIMIT, DENY, REJECT
    source: str  # "Anywhere" or an address

    def covers(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ranges)

    @property
    def opens(self) -> bool:
        return self.action in ("ALLOW", "LIMIT")  # LIMIT allows, rate-limited

    @property
    def from_anywhere(self) -> bool:
        return self.source.startswith("Anywhere")


@dataclass(frozen=True)
class UfwStatus:
    active: bool
    default_incoming: str | None  # allow, deny, reject; None when not shown (not verbose)
    rules: tuple[UfwRule, ...]


ALL_PORTS = ((1, 65535),)


def _tcp_ranges(to: str) -> tuple[tuple[int, int], ...] | None:
    """The TCP ports a To column covers; None when it covers none (another protocol, a
    profile not known here)."""
    to = re.sub(r"\s*\(.*\)\s*$", "", to).split(" on ")[0].strip()  # (v6), (App), on IFACE
    to = _APPS.get(to, to)
    match = _PORTS.match(to)
    if match is None:
        # `Anywhere`, or a destination address alone: every port of it
        everything = to == "Anywhere" or re.fullmatch(r"[0-9a-fA-F:.]+(/\d+)?", to)
        return ALL_PORTS if everything else None
    if match.group("proto") not in (None, "tcp"):
        return None
    ranges = []
    for part in match.group("ports").split(","):
        lo, _, hi = part.partition(":")
        ranges.append((int(lo), int(hi or lo)))
    return tuple(ranges)


def parse_ufw(status: str) -> UfwStatus:
    """`ufw status verbose` (or plain `ufw status`) -> state, default policy, incoming rules."""
    default = re.search(r"^Default:\s*(\w+)\s*\(incoming\)", status, re.M)
    rules = []
    for line in status.splitlines():
        match = _RULE.match(line.strip())
        if not match or match.group("dir") in ("OUT", "FWD"):
            continue
        ranges = _tcp_ranges(match.group("to"))
        if ranges is None:
            continue
        spec = re.sub(r"\s*\(.*\)\s*$", "", match.group("to")).strip()
        rules.append(UfwRule(spec, ranges, match.group("action"),
                             match.group("src") or "Anywhere"))
    return UfwStatus(bool(re.search(r"^Status: active", status, re.M)),
                     default.group(1).lower() if default else None, tuple(rules))


_PUBLISHED = re.compile(r"^(?P<ip>\*|\[[0-9a-fA-F:.]*\]|[0-9a-fA-F:.]*?):(?P<lo>\d+)"
                        r"(?:-(?P<hi>\d+))?->\d+(?:-\d+)?/(?P<proto>tcp|udp|sctp)$")


def _reachable(ip: str) -> bool:
    """Published on an address that other machines reach: anything but loopback."""
    ip = ip.strip("[]")
    if ip in ("", "*"):
        return True
    try:
        return not ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return True


def published(listing: str, tcp_only: bool = False, loopback: bool = False
              ) -> list[tuple[str, int, int]]:
    """`NAME|PORTS` lines (`docker ps`, `docker service ls`) -> (name, first, last) for each
    port published on a reachable address (TCP only if asked: what an HTTP edge binds; on
    loopback too if asked: it holds the port all the same)."""
    out = []
    for line in listing.strip().splitlines():
        name, _, ports = line.partition("|")
        for token in ports.split(","):
            match = _PUBLISHED.match(token.strip())
            if match and (loopback or _reachable(match.group("ip"))) and not (
                    tcp_only and match.group("proto") != "tcp"):
                lo = int(match.group("lo"))
                out.append((name.strip(), lo, int(match.group("hi") or lo)))
    return out


def networks(listing: str) -> dict[str, tuple[str, str]]:
    """`NAME|DRIVER|SCOPE` lines (`docker network ls`) -> {name: (driver, scope)}."""
    out = {}
    for line in listing.strip().splitlines():
        name, _, rest = line.partition("|")
        driver, _, scope = rest.partition("|")
        out[name.strip()] = (driver.strip(), scope.strip())
    return out


_USER = re.compile(r'\("([^"]+)",pid=\d+')


def listeners(ss_output: str) -> dict[int, list[str]]:
    """`ss -ltnpH` -> {port: [process names]} (an empty name: the socket's process is not
    visible to the probing user, as `ss -p` shows only one's own without root)."""
    out: dict[int, list[str]] = {}
    for line in ss_output.strip().splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].startswith("LISTEN"):
            continue
        port = fields[3].rpartition(":")[2]
        if not port.isdigit():
            continue
        names = _USER.findall(line) or [""]
        known = out.setdefault(int(port), [])
        known.extend(n for n in names if n not in known)
    return out


def command(ports: list[int]) -> str:
    """The probe, asking about these monitoring ports (integers: nothing to quote)."""
    return HOST_PROBE.replace("%PORTS%", " ".join(str(int(p)) for p in ports))


def usage_part(answer: str) -> str:
    """The usage probe's share of the answer (parsed by `probes.usage.parse_probe`)."""
    return answer.split("--USAGE--", 1)[1] if "--USAGE--" in answer else ""
