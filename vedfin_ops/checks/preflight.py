"""The runbook's Pre-Deployment Checklist: each item ok or failed, with its reason.

Secrets, DNS, TLS, firewall (ufw, and the published ports that bypass it), monitoring and
capacity. The host is asked everything in one command; DNS goes through an injectable resolver.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from vedfin_ops.checks.cloudflare import (
    Resolver,
    is_cloudflare,
    origin_tls_mode,
    proxied,
    system_resolver,
)
from vedfin_ops.checks.endpoints import tls_address
from vedfin_ops.checks.gate import GateResult, gate
from vedfin_ops.checks.runner import CertificateNotYet, Check, Failed, Transient, run_check
from vedfin_ops.checks.smoke import Options, tls_check, trusting
from vedfin_ops.checks.smoke import SmokeReport as _Report
from vedfin_ops.config import secret_store
from vedfin_ops.config.model import Config, Node, Traefik
from vedfin_ops.config.names import shared_stack_name
from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote.host import Host
from vedfin_ops.remote.probes.host_facts import (
    UfwRule,
    UfwStatus,
    listeners,
    networks,
    parse_ufw,
    published,
    sections,
    sudoers_line,
    usage_part,
)
from vedfin_ops.remote.probes.host_facts import command as probe_command
from vedfin_ops.remote.probes.usage import parse_probe
from vedfin_ops.reports.capacity import capacity_report


@dataclass
class PreflightReport(_Report):
    checks: list[Check] = field(default_factory=list)




# --- ufw ----------------------------------------------------------------------------------

_NEEDS_ROOT = ("need to be root", "a password is required", "is not allowed to execute",
               "is not in the sudoers file", "sudo: command not found", "sudo: not found")




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




def published_ports_check(docker_ps: str, allowed: set[int], services: str = "",
                          edge_service: str = "") -> str:
    """Docker-published ports bypass ufw: only the edge's may be published, by a container
    (`docker ps`) or by swarm's ingress (`docker service ls`). Loopback is not reachable from
    outside, so a port published on 127.0.0.1 or ::1 only is fine."""
    bad: list[str] = []
    dokploy: list[str] = []
    ours: list[str] = []
    for listing, how in ((docker_ps, ""), (services, " (swarm ingress)")):
        for name, lo, hi in published(listing):
            if any(p not in allowed for p in range(lo, hi + 1)):
                said = f"{name} publishes {lo}" + (f"-{hi}" if hi != lo else "") + how
                if _ours(name, edge_service):
                    ours.append(said)  # this deploy renders our edge anew: it fixes that
                elif _dokploy(name, range(lo, hi + 1)):
                    dokploy.append(said)
                else:
                    bad.append(said)
    if bad:
        raise Failed("; ".join(sorted(set(bad))) + " (published ports bypass ufw)")
    ok = f"only {', '.join(map(str, sorted(allowed)))} published"
    if ours:
        ok = (f"warning: {ok} once deployed; now {'; '.join(sorted(set(ours)))}, from an "
              f"earlier config")
    if dokploy:  # Dokploy's own UI and Uptime Kuma: not ours to fail, but said
        return (f"warning: {ok} by us; Dokploy's own, public: {'; '.join(sorted(set(dokploy)))}"
                " (bind them to 127.0.0.1 or deny them in ufw once off Dokploy)")
    return ok


def _ours(name: str, edge_service: str) -> bool:
    """Our edge: its swarm service, or one of its task containers (`<service>.<slot>.<id>`)."""
    return bool(edge_service) and name.split(".", 1)[0] == edge_service


# Dokploy's own services and the ports each publishes by default: its UI, its Traefik (with
# Traefik's dashboard) and the Uptime Kuma beside them (the runbook's 3002).
_DOKPLOY_PORTS = {"dokploy": {3000}, "dokploy-traefik": {80, 443, 8080},
                  "uptime-kuma": {3001, 3002}}


def _dokploy(name: str, ports: range) -> bool:
    """Only Dokploy's known services on their own known ports: a container merely named
    like them publishing anything else is judged as anyone's."""
    base = name.split(".", 1)[0]
    known = _DOKPLOY_PORTS.get(base) or (_DOKPLOY_PORTS["uptime-kuma"]
                                         if base.endswith("uptime-kuma") else set())
    return bool(known) and all(p in known for p in ports)


def edge_ports_check(ports: list[int], docker_ps: str, services: str, listening: str,
                     edge_service: str) -> str:
    """Whatever already holds the edge's ports, named (a container, a swarm service such as
    Dokploy's `dokploy-traefik`, or a process), before the edge fails to bind them half way
    through a rollout. Our own edge holding them is fine."""
    blind = listening.strip() == "no-ss"  # docker's view only; say so
    held = {} if blind else listeners(listening)
    taken = []
    for port in ports:
        ours, others = False, []
        for listing, kind in ((docker_ps, "container"), (services, "swarm service")):
            for name, lo, hi in published(listing, tcp_only=True,
                                          loopback=True) if listing else []:
                if lo <= port <= hi:
                    if _ours(name, edge_service):
                        ours = True
                    elif f"{kind} {name}" not in others:
                        others.append(f"{kind} {name}")
        if not (ours or others):  # a listener docker does not explain is someone else's
            others = [f"process {p}" if p else "a process not visible to the deploy user"
                      for p in held.get(port, [])]
        if others:
            taken.append(f"port {port} is held by {', '.join(others)}")
    if taken:
        hint = (" (Dokploy's Traefik: stop it, or give the edge other ports with "
                "edge.httpPort/httpsPort)" if "traefik" in "; ".join(taken).lower() else
                " (free it, or give the edge other ports with edge.httpPort/httpsPort)")
        raise Failed("; ".join(taken) + hint)
    said = f"{', '.join(map(str, ports))}: free or held by our edge ({edge_service})"
    return (f"warning: {said}, as far as Docker tells (no `ss` on the host to see other "
            f"processes)") if blind else said


def traefik_check(ports: list[int], docker_ps: str, services: str, networks_listing: str,
                  traefik: Traefik, caddy: str = "") -> str:
    """`edge.mode: traefik` routes through a Traefik that must already be there: its
    container (or swarm service) publishes the edge's ports, and its network is a swarm
    overlay the apps can join. Found missing here, not as a stack deploy refused half way."""
    problems = []
    found = networks(networks_listing)
    if traefik.network not in found:
        problems.append(f"network {traefik.network} does not exist")
    elif found[traefik.network] != ("overlay", "swarm"):
        driver, scope = found[traefik.network]
        problems.append(f"network {traefik.network} is {driver}/{scope}, not a swarm "
                        f"overlay the apps' services can join")
    for port in ports:
        holders = sorted({name.split(".", 1)[0] for listing in (docker_ps, services)
                          for name, lo, hi in published(listing, tcp_only=True, loopback=True)
                          if lo <= port <= hi})
        if traefik.service not in holders:
            problems.append(f"port {port} is " + (f"held by {', '.join(holders)}, not "
                                                  f"{traefik.service}" if holders else
                                                  f"not published by {traefik.service}"))
    if problems:
        said = "; ".join(problems)
        if caddy and f"held by {caddy}" in said:
            raise Failed(f"{said} (our Caddy edge, from an earlier deploy in mode: caddy: "
                         f"Traefik mode needs the Traefik on those ports; see the README's "
                         f"\"Beside Dokploy's Traefik\")")
        raise Failed(said + " (edge.mode: traefik routes through an existing Traefik: is "
                     "Dokploy's Traefik running? edge.traefik names it)")
    return (f"{traefik.service} holds {', '.join(map(str, ports))}; apps join "
            f"{traefik.network}")


def dns_check(config: Config, env: str, resolve: Resolver) -> str:
    """Each domain points at the VPS, or is proxied by Cloudflare (then its answer names
    Cloudflare, and the TLS item checks the origin at vps.address instead)."""
    want = config.vps.address
    if not want:
        raise Failed("vps.address is not set: cannot tell where the domains should point")
    notes = []
    behind = False
    for app in config.apps(env):
        if not app.domain:
            continue
        try:
            _, _, apex_ips = resolve(app.domain)
        except OSError as exc:
            raise Failed(f"{app.domain} does not resolve ({exc})") from None
        if proxied(apex_ips):
            behind = True
            notes.append(f"{app.domain}: proxied by Cloudflare (origin {want} checked "
                         f"directly)")
        elif any(is_cloudflare(ip) for ip in apex_ips):
            raise Failed(f"{app.domain} -> {', '.join(apex_ips)}: some addresses are "
                         f"Cloudflare's, some not (a proxied and an unproxied record?)")
        elif want not in apex_ips:
            raise Failed(f"{app.domain} -> {', '.join(apex_ips)}, not {want}")
        else:
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
            elif proxied(ips):
                behind = True
                notes.append(f"{extra}: proxied by Cloudflare")
            elif want in ips and not any(is_cloudflare(ip) for ip in ips):
                notes.append(f"{extra} -> {want}")
            else:
                raise Failed(f"{extra} is neither a CNAME of {app.domain} nor the same "
                             f"address ({', '.join(ips)})")
    if behind:
        notes.append(origin_tls_mode(config.edge.tls))
        if config.edge.tls != "auto":
            return "warning: " + "; ".join(notes)
    return "; ".join(notes) or "no domains"


def preflight(host: Host | None, config: Config, env: str, *,
              resolve: Resolver = system_resolver, options: Options | None = None,
              probe: str | None = None, force: bool = False,
              first_deploy: bool = False) -> PreflightReport:
    """Every item of the checklist. `probe` (the host's answers) can be given, e.g. recorded
    output of a real ufw, instead of asking `host`. `first_deploy`: no edge serves these
    domains' TLS before this deploy (a deploy passes `Deploy.edge_starts`: the env's first
    release, new shared stack files, the edge's among them, or in Traefik mode new routes),
    so a TLS endpoint that cannot be reached, or that serves Traefik's default certificate,
    is pending, for verify to check after the rollout; any other wrong certificate still
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
                # a proxied domain resolves to Cloudflare: its certificate is Cloudflare's,
                # so the origin's is asked for at the VPS, with the domain as SNI
                address = tls_address(config, domain, resolve)
                try:
                    answer = tls_check(domain, address, config.edge.https_port, options)
                except Transient as exc:  # nothing answered; a wrong answer is Failed
                    if not first_deploy:
                        raise Transient(f"{domain}: {exc}") from None
                    pending.append(domain)
                    continue
                except CertificateNotYet:
                    # Traefik's self-signed default certificate: no router for the domain
                    # yet, which this deploy adds; verify checks it after the rollout. Any
                    # other wrong certificate is a failure, first deploy or not.
                    if not first_deploy:
                        raise
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
        probe = host.run(probe_command(monitored_ports(config)),
                         what="preflight probe")
    answer = sections(probe or "")
    allowed = {config.edge.http_port} | ({config.edge.https_port} if config.edge.tls != "off"
                                         else set())
    user = answer.get("WHO", "").strip() or None
    if config.firewall.check == "ufw":
        checks.append(("firewall: ufw", lambda: ufw_check(
            answer.get("UFW", ""), config.firewall.allow, config.firewall.deny, user)))
    else:
        checks.append(("firewall: ufw", lambda: "skipped: firewall.check is none"))
    # our Caddy: in Traefik mode an earlier deploy's, which this one removes (so its ports are
    # a warning, not a finding)
    edge_service = f"{shared_stack_name(config)}_edge"
    checks.append(("firewall: published ports",
                   lambda: published_ports_check(answer.get("PORTS", ""), allowed,
                                                 answer.get("SERVICES", ""), edge_service)))
    if config.edge.mode == "traefik":
        checks.append(("edge: traefik", lambda: traefik_check(
            sorted(allowed), answer.get("PORTS", ""), answer.get("SERVICES", ""),
            answer.get("NETWORKS", ""), config.edge.traefik, edge_service)))
    elif "LISTEN" in answer:  # a probe recorded before this item existed has no answer for it
        checks.append(("edge ports", lambda: edge_ports_check(
            sorted(allowed), answer.get("PORTS", ""), answer.get("SERVICES", ""),
            answer["LISTEN"], edge_service)))
    if config.monitoring.check:
        checks.append(("monitoring", lambda: _monitoring(config, answer.get("MONITORING",
                                                                               ""))))
    else:
        checks.append(("monitoring", lambda: "skipped: monitoring.check is false"))
    usage_text = usage_part(probe or "")
    if usage_text.strip():
        checks.append(("swap", lambda: swap_check(config, parse_probe(usage_text).swap_total_mb)))
    checks.append(("capacity", lambda: _capacity(config, env, usage_text, force)))
    if config.multi_node and host is not None:
        checks.extend(node_checks(host, config, env, usage_text, force))
    report.checks = [run_check(name, fn) for name, fn in checks]
    return report


def node_checks(host: Host, config: Config, env: str, usage_text: str,
                force: bool) -> list[tuple[str, Callable[[], str]]]:
    """On a cluster, an item per node: each reached over its own SSH link (its host key
    checked), its memory now plus the tasks this deploy starts there (where placement puts
    the surge) against its own RAM + swap. The manager's answers are the probe's."""
    from vedfin_ops.checks.gate import node_gate
    from vedfin_ops.cluster.nodes import first_manager, measure_node
    from vedfin_ops.cluster.placement import place

    plans = {p.node.name: p for p in place(config, env)}
    manager = first_manager(config)

    def check(node: Node) -> str:
        own_link = node.name == manager.name
        try:
            usage = parse_probe(usage_text) if own_link and usage_text.strip() else \
                measure_node(host, node, own_link=own_link)
        except CheckFailed as exc:  # its message names the node
            raise Failed(str(exc)) from None
        plan = plans[node.name]
        result = node_gate(node.name, usage, plan.surge_mb, plan.surging,
                           hard_margin_mb=config.capacity.hard_margin_mb)
        return _passed(result, force)

    return [(f"node {node.name}", lambda node=node: check(node))  # type: ignore[misc]
            for node in config.nodes]


def monitored_ports(config: Config) -> list[int]:
    return [p for p in (config.monitoring.netdata_port, config.monitoring.uptime_kuma_port)
            if p is not None]


def _monitoring(config: Config, answers: str) -> str:
    names = {config.monitoring.netdata_port: "Netdata"}
    if config.monitoring.uptime_kuma_port is not None:
        names[config.monitoring.uptime_kuma_port] = "Uptime Kuma"
    states = dict(line.split() for line in answers.strip().splitlines() if len(line.split()) == 2)
    down = [f"{names[p]} ({p})" for p in names if states.get(str(p)) != "open"]
    if down:
        raise Failed(f"not answering on the host: {', '.join(down)}")
    return " and ".join(names.values()) + (" answers" if len(names) == 1 else " answer")


def swap_check(config: Config, host_swap_mb: float) -> str:
    """The runbook's plan relies on `vps.swap` (2 GB) beside the 4 GB of RAM: a host with less
    makes the offline capacity report count memory that is not there (the live gate measures
    the real swap, so this warns rather than fails)."""
    planned = config.vps.swap
    if host_swap_mb + 1 >= planned:
        return f"{host_swap_mb:.0f} MiB (vps.swap plans {planned} MiB)"
    return (f"warning: the host has {host_swap_mb:.0f} MiB of swap, vps.swap plans {planned} "
            f"MiB (add a swap file: fallocate -l {max(1, round(planned / 1024))}G /swapfile, "
            f"chmod 600, mkswap, swapon, /etc/fstab; or set vps.swap to what the host has)")


def _passed(result: GateResult, force: bool) -> str:
    """A gate's verdict as a checklist item: a refusal fails it, unless --force."""
    if result.ok:
        return result.reason
    if force:
        return f"warning: forced past the capacity gate: {result.reason}"
    raise Failed(f"{result.reason} (--force to deploy anyway)")


def _capacity(config: Config, env: str, usage_text: str, force: bool) -> str:
    """Over-committed limits are the runbook's design: a warning. The gate refuses only when
    what the host uses now plus this deploy's surge does not fit in RAM + swap (checks/gate.py);
    past the RAM alert threshold it passes with a warning; --force passes."""
    if usage_text.strip():
        result = gate(config, env, parse_probe(usage_text),
                      hard_margin_mb=config.capacity.hard_margin_mb)
        return _passed(result, force)
    report = capacity_report(config, env)
    if report.status == "ok":
        return f"limits {report.committed_memory_mb} MiB of {report.vps_memory_mb} MiB"
    return (f"warning: limits commit {report.committed_memory_mb} MiB (surge peak "
            f"{report.surge_peak_memory_mb} MiB) on {report.vps_memory_mb} MiB RAM + "
            f"{report.vps_swap_mb} MiB swap: over-committed, as the runbook plans")
