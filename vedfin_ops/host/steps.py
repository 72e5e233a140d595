"""Each step of host.prepare: its check (a probe, judged) and its apply (idempotent).

A check reads only. An apply converges its step from wherever it stands (a run cut short
half way leaves nothing a second apply trips over) and raises CheckFailed (a RemoteError
whose output has `fail:` lines, where the host said why) when it cannot; the runner
(`prepare.py`) checks again after it. Every command goes through `Run.root`: as root, or
through `sudo -n` for a sudoer. Packages come from the distribution (apt-get update once a
run, only before the first install).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vedfin_ops.config.model import Config
from vedfin_ops.errors import UsageError
from vedfin_ops.host import judge, kuma
from vedfin_ops.host.facts import Facts, Verdict, change, fail, ok, skip
from vedfin_ops.host.firewall import Peer, judge_firewall
from vedfin_ops.host.keys import PublicKey
from vedfin_ops.monitoring.uptime_kuma import Connect
from vedfin_ops.remote.commands import host as commands
from vedfin_ops.remote.commands.files import mkdir_p
from vedfin_ops.remote.host import RemoteHost
from vedfin_ops.remote.probes.host_facts import UFW_COMMAND, sudoers_line
from vedfin_ops.run.layout import Layout
from vedfin_ops.run.polling import REAL, Clock

APT_TIMEOUT = 1800  # a slow mirror and Netdata's dependencies


@dataclass(frozen=True)
class Step:
    name: str  # how `needs` and the result name it
    title: str  # how the output names it
    check: Callable[[Run], Verdict]
    apply: Callable[[Run, Verdict], None] | None
    needs: tuple[str, ...] = ()  # steps that must be done before this one can be


@dataclass
class Run:
    """One host.prepare run: the host, the config, what the facts said, what was done."""

    host: RemoteHost
    config: Config
    key: PublicKey
    facts: Facts
    sudo: bool
    ssh_port: int
    paths: commands.Paths = field(default_factory=commands.Paths)
    secrets: Mapping[str, str] = field(default_factory=dict)
    kuma_connect: Connect | None = None
    clock: Clock = REAL
    updated: bool = False  # apt-get update ran in this run

    @property
    def user(self) -> str:
        return self.config.remote.user

    @property
    def base(self) -> str:
        return Layout.of_host(self.config).base

    @property
    def audit_log(self) -> str:
        return Layout.of_host(self.config).audit

    def root(self, command: str, *, what: str, timeout: float = 600) -> str:
        return self.host.run(commands.as_root(command, self.sudo), what=what, timeout=timeout)

    def probe(self, command: str, step: str) -> Facts:
        return Facts.parse(self.root(command, what=f"{step} check"))

    def install(self, packages: tuple[str, ...] | list[str]) -> None:
        if not packages:
            return
        if not self.updated:
            self.root(commands.apt_update(), what="apt-get update", timeout=APT_TIMEOUT)
            self.updated = True
        self.root(commands.apt_install(list(packages)), what="apt-get install",
                  timeout=APT_TIMEOUT)

    def ensure_base(self) -> None:
        """The base folder, for the audit log (the user step gives it to the deploy user)."""
        self.root(mkdir_p(self.base), what="base folder")

    def audit(self, line: str) -> None:
        self.root(commands.audit_append_as(self.audit_log, line, self.user), what="audit")


# --- 1. the system -------------------------------------------------------------------------

def check_os(run: Run) -> Verdict:
    return judge.judge_os(run.facts)


# --- 2. Docker Engine ----------------------------------------------------------------------

def check_docker(run: Run) -> Verdict:
    return judge.judge_docker(run.probe(commands.docker_probe(), "docker"))


def apply_docker(run: Run, verdict: Verdict) -> None:
    run.install(verdict.packages)
    run.root(commands.enable_now("docker"), what="docker apply")


# --- 3. the swarm --------------------------------------------------------------------------

def advertise(config: Config) -> str | None:
    """The manager's address: the first manager of `nodes`, else vps.address."""
    managers = [n for n in config.nodes if n.role == "manager"]
    return (managers[0].address if managers else None) or config.vps.address


def check_swarm(run: Run) -> Verdict:
    return judge.judge_swarm(run.probe(commands.swarm_probe(), "swarm"), advertise(run.config))


def apply_swarm(run: Run, verdict: Verdict) -> None:
    run.root(commands.swarm_init(verdict.data.get("address")), what="swarm apply")


# --- 4. the deploy user --------------------------------------------------------------------

def check_user(run: Run) -> Verdict:
    facts = run.probe(commands.user_probe(run.user, run.key.fragment, run.base, run.audit_log),
                      "user")
    return judge.judge_user(facts, run.user, run.base, run.audit_log)


def apply_user(run: Run, verdict: Verdict) -> None:
    run.root(commands.user_apply(run.user, run.key.line, run.key.fragment, run.base,
                                 run.audit_log), what="user apply")


# --- 5. swap -------------------------------------------------------------------------------

def check_swap(run: Run) -> Verdict:
    if run.config.vps.swap <= 0:
        return skip("vps.swap is 0")
    return judge.judge_swap(run.probe(commands.swap_probe(run.paths), "swap"),
                            run.config.vps.swap, run.paths.swapfile, run.paths.fstab)


def apply_swap(run: Run, verdict: Verdict) -> None:
    run.root(commands.swap_apply(run.paths, run.config.vps.swap,
                                 bool(verdict.data.get("make_file"))), what="swap apply")


# --- 6. the firewall -----------------------------------------------------------------------

def peers(config: Config) -> list[Peer]:
    """The swarm's other nodes: every one of `nodes` but the first manager (this host)."""
    managers = [n for n in config.nodes if n.role == "manager"]
    return [Peer(n.name, n.address) for n in config.nodes if not managers or n is not managers[0]]


def check_firewall(run: Run) -> Verdict:
    firewall = run.config.firewall
    if firewall.check == "none":
        return skip("firewall.check is none")
    text = run.root(commands.ufw_probe(), what="firewall check")
    return judge_firewall(text, firewall.allow, firewall.deny, run.ssh_port, peers(run.config),
                          judge.ssh_client(run.facts))


def apply_firewall(run: Run, verdict: Verdict) -> None:
    """The SSH port's rule before anything that could drop it (`firewall.py`)."""
    data = verdict.data
    run.install(verdict.packages)
    if data.get("allow"):
        run.root(commands.ufw_rules("allow", data["allow"]), what="ufw allow")
    if data.get("allow_from"):
        run.root(commands.ufw_allow_from(data["allow_from"]), what="ufw allow from")
    if data.get("deny"):
        run.root(commands.ufw_rules("deny", data["deny"]), what="ufw deny")
    for rule in data.get("delete", []):
        run.root(commands.ufw_delete(rule), what="ufw delete")
    if data.get("default"):
        run.root(commands.ufw_if_ssh_allowed(run.ssh_port, commands.ufw_default_deny()),
                 what="ufw default")
    if data.get("enable"):
        run.root(commands.ufw_if_ssh_allowed(run.ssh_port, commands.ufw_enable()),
                 what="ufw enable")


# --- 7. Netdata and cron -------------------------------------------------------------------

def check_monitoring(run: Run) -> Verdict:
    root = run.config.monitoring.netdata_config
    facts = run.probe(commands.monitoring_probe(run.paths, root, run.user), "monitoring")
    return judge.judge_monitoring(facts, root, run.user, run.config.alerts.email)


def apply_monitoring(run: Run, verdict: Verdict) -> None:
    run.install(verdict.packages)
    run.root(commands.monitoring_apply(run.paths, run.config.monitoring.netdata_config,
                                       run.user), what="monitoring apply")


# --- 8. the sudoers line -------------------------------------------------------------------

def sudoers_text(user: str) -> str:
    return sudoers_line(user) + "\n"


def check_sudoers(run: Run) -> Verdict:
    if run.config.firewall.check == "none":
        return skip("firewall.check is none: the firewall check runs no sudo")
    if run.user == "root":
        return skip("the deploy user is root: no sudo needed")
    facts = run.probe(commands.sudoers_probe(run.paths, run.user, UFW_COMMAND), "sudoers")
    expected = hashlib.sha256(sudoers_text(run.user).encode()).hexdigest()
    return judge.judge_sudoers(facts, run.paths.sudoers, expected)


def apply_sudoers(run: Run, verdict: Verdict) -> None:
    run.install(verdict.packages)
    run.root(commands.sudoers_apply(run.paths, sudoers_line(run.user)), what="sudoers apply")


# --- 9. Uptime Kuma ------------------------------------------------------------------------

def check_kuma(run: Run) -> Verdict:
    monitoring = run.config.monitoring
    if monitoring.uptime_kuma is None or monitoring.uptime_kuma_port is None:
        return judge.kuma_skip(monitoring.uptime_kuma_port, monitoring.check)
    try:  # optional secrets: without them Kuma is left alone (never open to the first visitor)
        kuma.credentials(run.config, run.secrets)
    except UsageError as exc:
        return fail(str(exc).removeprefix(f"{run.config.source}: "))
    facts = run.probe(commands.kuma_probe(), "uptime-kuma")
    container = judge.judge_kuma_container(facts, monitoring.uptime_kuma_image,
                                           monitoring.uptime_kuma_port)
    if container is not None:
        return container
    account = kuma.account(run.host, run.config, run.secrets, **_connect(run))
    where = f"{monitoring.uptime_kuma_image} on 127.0.0.1:{monitoring.uptime_kuma_port}"
    if account == "missing":
        return change([f"create the admin account of the Uptime Kuma running {where}"],
                      account_only=True)
    if account == "other":
        return fail(f"Uptime Kuma ({where}) has an admin account the config's secrets do not "
                    f"log in to: left as it is")
    return ok(f"{where}, its admin account the config's")


def apply_kuma(run: Run, verdict: Verdict) -> None:
    monitoring = run.config.monitoring
    assert monitoring.uptime_kuma_port is not None
    registry = run.config.registry
    image = monitoring.uptime_kuma_image
    if not verdict.data.get("account_only") and registry is not None and \
            image.startswith(f"{registry.server}/"):
        run.host.run(commands.as_root(commands.registry_pull(image, registry.server,
                                                             registry.username), run.sudo),
                     what="uptime-kuma pull", timeout=APT_TIMEOUT,
                     secret_stdin=run.secrets.get(registry.password_secret, "") + "\n")
    if not verdict.data.get("account_only"):
        run.root(commands.kuma_run(monitoring.uptime_kuma_image, monitoring.uptime_kuma_port,
                                   bool(verdict.data.get("recreate"))),
                 what="uptime-kuma apply", timeout=APT_TIMEOUT)
    kuma.make_admin(run.host, run.config, run.secrets, clock=run.clock, **_connect(run))


def _connect(run: Run) -> dict[str, Any]:
    return {} if run.kuma_connect is None else {"connect": run.kuma_connect}
