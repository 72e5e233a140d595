"""The runbook's Pre-Deployment Checklist: each item ok or failed, with its reason.

Secrets, DNS, TLS, firewall (ufw, and the published ports that bypass it), monitoring and
capacity. The host is asked everything in one command; DNS goes through an injectable resolver.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from vedfin_ops.checks.endpoints import base
from vedfin_ops.checks.gate import gate
from vedfin_ops.checks.smoke import Check, Failed, Options, Transient, tls_check, trusting
from vedfin_ops.checks.smoke import SmokeReport as _Report
from vedfin_ops.config import secret_store
from vedfin_ops.config.model import Config
from vedfin_ops.remote.host import Host
from vedfin_ops.reports.capacity import capacity_report
from vedfin_ops.reports.usage import PROBE as USAGE_PROBE
from vedfin_ops.reports.usage import parse_probe

Resolver = Callable[[str], tuple[str, list[str], list[str]]]


def system_resolver(name: str) -> tuple[str, list[str], list[str]]:
    """(canonical name, aliases, addresses). `*.localhost` is loopback (RFC 6761)."""
    if name == "localhost" or name.endswith(".localhost"):
        return name, [], ["127.0.0.1"]
    return socket.gethostbyname_ex(name)


@dataclass
class PreflightReport(_Report):
    checks: list[Check] = field(default_factory=list)


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


def _sections(text: str) -> dict[str, str]:
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


# --- ufw ----------------------------------------------------------------------------------

_NEEDS_ROOT = ("need to be root", "a password is required", "is not allowed to execute",
               "is not in the sudoers file", "sudo: command not found", "sudo: not found")
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


def _open_to_all(state: UfwStatus, port: int) -> bool:
    """Reachable from anywhere? The first rule for any source that covers the port decides
    (ufw matches in order); without one, the default incoming policy."""
    for rule in state.rules:
        if rule.from_anywhere and rule.covers(port):
            return rule.opens
    return state.default_incoming == "allow"


def _exposed_by(state: UfwStatus, port: int) -> UfwRule | bool:
    """Reachable from somewhere? Any opening rule (whatever its source) before a deny for
    every source; without either, the default incoming policy."""
    for rule in state.rules:
        if not rule.covers(port):
            continue
        if rule.opens:
            return rule
        if rule.from_anywhere:
            return False
    return state.default_incoming == "allow"


def ufw_check(status: str, allow: list[int], deny: list[int], user: str | None = None) -> str:
    """Read `ufw status verbose`: active, incoming denied by default, the ports of `allow`
    open to anyone (ALLOW or LIMIT, single, listed or in a range), those of `deny` open to no
    one. `user` is who ran it, for the sudoers line when it was not allowed to."""
    text = status.strip()
    first = text.splitlines()[0] if text else "no output"
    if any(words in text for words in _NEEDS_ROOT):
        raise Failed(f"cannot read the firewall: `ufw status verbose` needs root ({first}); "
                     f"let {user or 'the deploy user'} run it without a password with the "
                     f"sudoers line `{sudoers_line(user)}` (visudo -f "
                     f"/etc/sudoers.d/vedfin-ufw)")
    if re.search(r"ufw: (command )?not found", text):
        raise Failed(f"ufw is not installed on the host ({first}); install it, or set "
                     f"firewall.check: none where another firewall guards the host")
    state = parse_ufw(status)
    if not state.active:
        raise Failed(f"ufw is not active ({first})")
    parts = []
    if state.default_incoming == "allow":
        parts.append("the default incoming policy is allow, so every port without a deny "
                     "rule is open (`ufw default deny incoming`)")
    missing = [p for p in allow if not _open_to_all(state, p)]
    exposed = []
    for port in deny:
        by = _exposed_by(state, port)
        if isinstance(by, UfwRule):
            source = "" if by.from_anywhere else f" from {by.source}"
            exposed.append(f"{port} (by {by.spec} {by.action}{source})")
        elif by:
            exposed.append(f"{port} (by the default policy)")
    if missing:
        parts.append(f"not allowed: {', '.join(map(str, missing))}")
    if exposed:
        parts.append(f"allowed but must not be: {', '.join(exposed)}")
    if parts:
        raise Failed("; ".join(parts))
    shown: list[str] = []
    for rule in state.rules:
        if rule.opens and rule.from_anywhere:
            label = rule.spec.split("/")[0].replace(",", ", ")
            label += " (limited)" if rule.action == "LIMIT" else ""
            if label not in shown:
                shown.append(label)
    return f"active; allows {', '.join(shown) or 'nothing'}"


# --- published ports ----------------------------------------------------------------------

_PUBLISHED = re.compile(r"^(?P<ip>\*|\[[0-9a-fA-F:.]*\]|[0-9a-fA-F:.]*?):(?P<lo>\d+)"
                        r"(?:-(?P<hi>\d+))?->\d+(?:-\d+)?/(?:tcp|udp|sctp)$")


def _reachable(ip: str) -> bool:
    """Published on an address that other machines reach: anything but loopback."""
    ip = ip.strip("[]")
    if ip in ("", "*"):
        return True
    try:
        return not ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return True


def _published(listing: str) -> list[tuple[str, int, int]]:
    """`NAME|PORTS` lines (`docker ps`, `docker service ls`) -> (name, first, last) for each
    port published on a reachable address."""
    out = []
    for line in listing.strip().splitlines():
        name, _, ports = line.partition("|")
        for token in ports.split(","):
            match = _PUBLISHED.match(token.strip())
            if match and _reachable(match.group("ip")):
                lo = int(match.group("lo"))
                out.append((name.strip(), lo, int(match.group("hi") or lo)))
    return out


def published_ports_check(docker_ps: str, allowed: set[int], services: str = "") -> str:
    """Docker-published ports bypass ufw: only the edge's may be published, by a container
    (`docker ps`) or by swarm's ingress (`docker service ls`). Loopback is not reachable from
    outside, so a port published on 127.0.0.1 or ::1 only is fine."""
    bad = []
    for listing, how in ((docker_ps, ""), (services, " (swarm ingress)")):
        for name, lo, hi in _published(listing):
            if any(p not in allowed for p in range(lo, hi + 1)):
                bad.append(f"{name} publishes {lo}" + (f"-{hi}" if hi != lo else "") + how)
    if bad:
        raise Failed("; ".join(sorted(set(bad))) + " (published ports bypass ufw)")
    return f"only {', '.join(map(str, sorted(allowed)))} published"


def dns_check(config: Config, env: str, resolve: Resolver) -> str:
    want = config.vps.address
    if not want:
        raise Failed("vps.address is not set: cannot tell where the domains should point")
    notes = []
    for app in config.apps(env):
        if not app.domain:
            continue
        try:
            _, _, apex_ips = resolve(app.domain)
        except OSError as exc:
            raise Failed(f"{app.domain} does not resolve ({exc})") from None
        if want not in apex_ips:
            raise Failed(f"{app.domain} -> {', '.join(apex_ips)}, not {want}")
        notes.append(f"{app.domain} -> {want}")
        for extra in app.additional_domains:
            try:
                canonical, aliases, ips = resolve(extra)
            except OSError as exc:
                raise Failed(f"{extra} does not resolve ({exc})") from None
            if canonical == app.domain or app.domain in aliases:
                notes.append(f"{extra} CNAME {app.domain}")
            elif set(ips) == set(apex_ips):
                notes.append(f"{extra} -> same A as {app.domain}")
            else:
                raise Failed(f"{extra} is neither a CNAME of {app.domain} nor the same "
                             f"address ({', '.join(ips)})")
    return "; ".join(notes) or "no domains"


def _run(name: str, fn: Callable[[], str]) -> Check:
    started = time.monotonic()
    try:
        detail = fn()
        return Check(name, True, detail, time.monotonic() - started,
                     detail.startswith("warning:"))
    except (Failed, Transient) as exc:
        return Check(name, False, str(exc), time.monotonic() - started)


def preflight(host: Host | None, config: Config, env: str, *,
              resolve: Resolver = system_resolver, options: Options | None = None,
              probe: str | None = None, force: bool = False,
              first_deploy: bool = False) -> PreflightReport:
    """Every item of the checklist. `probe` (the host's answers) can be given, e.g. recorded
    output of a real ufw, instead of asking `host`. `first_deploy` (the env has no release
    yet): no edge answers TLS before this deploy starts it, so a TLS endpoint that cannot be
    reached is pending, for verify to check after the rollout; a wrong certificate still
    fails."""
    config.require_env(env)
    options = trusting(config, options or Options())
    report = PreflightReport(env)

    def secrets() -> str:
        found = secret_store.resolve(config, env)
        missing = secret_store.missing(config, env, found)
        if missing:
            raise Failed(f"not set: {', '.join(missing)}")
        return f"{len(found)} set"

    def tls() -> str:
        if config.edge.tls == "off":
            return "skipped: edge.tls is off in this config"
        results: list[str] = []
        pending: list[str] = []
        warned = False
        for app in config.apps(env):
            for domain in app.domains:
                address = urlsplit(base(config, domain).url).hostname or domain
                try:
                    answer = tls_check(domain, address, config.edge.https_port, options)
                except Transient as exc:  # nothing answered; a wrong answer is Failed
                    if not first_deploy:
                        raise Transient(f"{domain}: {exc}") from None
                    pending.append(domain)
                    continue
                warned = warned or answer.startswith("warning:")
                results.append(f"{domain}: {answer.removeprefix('warning: ')}")
        if pending:
            results.insert(0, f"pending: first deploy, checked by verify after the rollout "
                              f"({', '.join(pending)})")
        detail = "; ".join(results) or "no domains"
        # a warning anywhere flags the whole item (Check.warning reads the start)
        return f"warning: {detail}" if pending or warned else detail

    checks: list[tuple[str, Callable[[], str]]] = [
        ("secrets", secrets), ("dns", lambda: dns_check(config, env, resolve)), ("tls", tls)]
    if probe is None and host is not None:
        ports = " ".join(str(p) for p in (config.monitoring.netdata_port,
                                          config.monitoring.uptime_kuma_port))
        probe = host.run(HOST_PROBE.replace("%PORTS%", ports), what="preflight probe")
    sections = _sections(probe or "")
    allowed = {config.edge.http_port} | ({config.edge.https_port} if config.edge.tls != "off"
                                         else set())
    user = sections.get("WHO", "").strip() or None
    if config.firewall.check == "ufw":
        checks.append(("firewall: ufw", lambda: ufw_check(
            sections.get("UFW", ""), config.firewall.allow, config.firewall.deny, user)))
    else:
        checks.append(("firewall: ufw", lambda: "skipped: firewall.check is none"))
    checks.append(("firewall: published ports",
                   lambda: published_ports_check(sections.get("PORTS", ""), allowed,
                                                 sections.get("SERVICES", ""))))
    if config.monitoring.check:
        checks.append(("monitoring", lambda: _monitoring(config, sections.get("MONITORING",
                                                                               ""))))
    else:
        checks.append(("monitoring", lambda: "skipped: monitoring.check is false"))
    usage_text = probe.split("--USAGE--", 1)[1] if probe and "--USAGE--" in probe else ""
    checks.append(("capacity", lambda: _capacity(config, env, usage_text, force)))
    report.checks = [_run(name, fn) for name, fn in checks]
    return report


def _monitoring(config: Config, answers: str) -> str:
    names = {config.monitoring.netdata_port: "Netdata",
             config.monitoring.uptime_kuma_port: "Uptime Kuma"}
    states = dict(line.split() for line in answers.strip().splitlines() if len(line.split()) == 2)
    down = [f"{names[p]} ({p})" for p in names if states.get(str(p)) != "open"]
    if down:
        raise Failed(f"not answering on the host: {', '.join(down)}")
    return "Netdata and Uptime Kuma answer"


def _capacity(config: Config, env: str, usage_text: str, force: bool) -> str:
    """Over-committed limits are the runbook's design: a warning. The gate refuses only when
    what the host uses now plus this deploy's surge does not fit in RAM + swap (gate.py);
    past the RAM alert threshold it passes with a warning; --force passes."""
    if usage_text.strip():
        result = gate(config, env, parse_probe(usage_text),
                      hard_margin_mb=config.capacity.hard_margin_mb)
        if result.ok:
            return result.reason
        if force:
            return f"warning: forced past the capacity gate: {result.reason}"
        raise Failed(f"{result.reason} (--force to deploy anyway)")
    report = capacity_report(config, env)
    if report.status == "ok":
        return f"limits {report.committed_memory_mb} MiB of {report.vps_memory_mb} MiB"
    return (f"warning: limits commit {report.committed_memory_mb} MiB (surge peak "
            f"{report.surge_peak_memory_mb} MiB) on {report.vps_memory_mb} MiB RAM + "
            f"{report.vps_swap_mb} MiB swap: over-committed, as the runbook plans")
