"""The runbook's Pre-Deployment Checklist: each item ok or failed, with its reason.

Secrets, DNS, TLS, firewall (ufw, and the published ports that bypass it), monitoring and
capacity. The host is asked everything in one command; DNS goes through an injectable resolver.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from . import secret_store
from .capacity import capacity_report
from .config import Config
from .endpoints import base
from .gate import gate
from .host import Host
from .smoke import Check, Failed, Options, Transient, tls_check
from .smoke import SmokeReport as _Report
from .usage import PROBE as USAGE_PROBE
from .usage import parse_probe

Resolver = Callable[[str], tuple[str, list[str], list[str]]]


def system_resolver(name: str) -> tuple[str, list[str], list[str]]:
    """(canonical name, aliases, addresses). `*.localhost` is loopback (RFC 6761)."""
    if name == "localhost" or name.endswith(".localhost"):
        return name, [], ["127.0.0.1"]
    return socket.gethostbyname_ex(name)


@dataclass
class PreflightReport(_Report):
    checks: list[Check] = field(default_factory=list)


HOST_PROBE = r"""
echo '--UFW--'; (sudo -n ufw status 2>&1 || ufw status 2>&1) | head -n 60
echo '--PORTS--'; docker ps --format '{{.Names}}|{{.Ports}}'
echo '--MONITORING--'
for p in %PORTS%; do
  if timeout 3 bash -c "</dev/tcp/127.0.0.1/$p" 2>/dev/null
  then echo "$p open"; else echo "$p closed"; fi
done
echo '--USAGE--'
""" + USAGE_PROBE


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


def ufw_check(status: str, allow: list[int], deny: list[int]) -> str:
    """Read `ufw status`: active, the allowed ports allowed, the denied ones not."""
    if "Status: active" not in status:
        first = status.strip().splitlines()[0] if status.strip() else "no output"
        raise Failed(f"ufw is not active ({first})")
    allowed: set[int] = set()
    for line in status.splitlines():
        match = re.match(r"^(\d+)(?:/(?:tcp|udp))?(?:\s+\(v6\))?\s+ALLOW", line.strip())
        if match:
            allowed.add(int(match.group(1)))
        elif re.match(r"^(OpenSSH|Nginx Full|WWW Full)\b.*ALLOW", line.strip()):
            allowed |= {22} if line.strip().startswith("OpenSSH") else {80, 443}
    missing = [p for p in allow if p not in allowed]
    exposed = [p for p in deny if p in allowed]
    if missing or exposed:
        parts = []
        if missing:
            parts.append(f"not allowed: {', '.join(map(str, missing))}")
        if exposed:
            parts.append(f"allowed but must not be: {', '.join(map(str, exposed))}")
        raise Failed("; ".join(parts))
    return f"active; allows {', '.join(map(str, sorted(allowed)))}"


def published_ports_check(docker_ps: str, allowed: set[int]) -> str:
    """Docker-published ports bypass ufw: only the edge's may be published."""
    bad = []
    for line in docker_ps.strip().splitlines():
        name, _, ports = line.partition("|")
        for match in re.finditer(r"(?:[\d.]+|\[::\]|::):(\d+)->(\d+)/(tcp|udp)", ports):
            if int(match.group(1)) not in allowed:
                bad.append(f"{name} publishes {match.group(1)}")
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
              probe: str | None = None, force: bool = False) -> PreflightReport:
    """Every item of the checklist. `probe` (the host's answers) can be given, e.g. recorded
    output of a real ufw, instead of asking `host`."""
    config.require_env(env)
    options = options or Options()
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
        results = []
        for app in config.apps(env):
            for domain in app.domains:
                address = urlsplit(base(config, domain).url).hostname or domain
                answer = tls_check(domain, address, config.edge.https_port, options)
                results.append(f"{domain}: {answer}")
        return "; ".join(results) or "no domains"

    checks: list[tuple[str, Callable[[], str]]] = [
        ("secrets", secrets), ("dns", lambda: dns_check(config, env, resolve)), ("tls", tls)]
    if probe is None and host is not None:
        ports = " ".join(str(p) for p in (config.monitoring.netdata_port,
                                          config.monitoring.uptime_kuma_port))
        probe = host.run(HOST_PROBE.replace("%PORTS%", ports), what="preflight probe")
    sections = _sections(probe or "")
    allowed = {config.edge.http_port} | ({config.edge.https_port} if config.edge.tls != "off"
                                         else set())
    if config.firewall.check == "ufw":
        checks.append(("firewall: ufw", lambda: ufw_check(
            sections.get("UFW", ""), config.firewall.allow, config.firewall.deny)))
    else:
        checks.append(("firewall: ufw", lambda: "skipped: firewall.check is none"))
    checks.append(("firewall: published ports",
                   lambda: published_ports_check(sections.get("PORTS", ""), allowed)))
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
    what the host uses now plus this deploy's surge does not fit (gate.py); --force passes."""
    if usage_text.strip():
        result = gate(config, env, parse_probe(usage_text))
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
