"""host.prepare on a scripted bare Debian 12 (tests/host/fake_vps.py): the plan changes
nothing, a run converges every step and a second run changes nothing, and every fault (a lost
link, Ctrl-C, SIGTERM, a bug, a half-succeeded command, an apt install dpkg left half way)
leaves the host reachable, says which steps are done and which not, and the next run finishes
the job. The real machine's part is the sandbox's bare VPS (tests/integration)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fake.host import Fault
from tests.host.fake_vps import ADDRESS, FakeVps, public_key
from vedfin_ops.checks.preflight import ufw_check
from vedfin_ops.config.model import Config
from vedfin_ops.errors import CheckFailed
from vedfin_ops.host.prepare import Prepared, PrepareFailed, prepare
from vedfin_ops.remote.probes.host_facts import sudoers_line

Variant = Callable[[Callable[[dict[str, Any]], Any]], Config]


@pytest.fixture
def vps(tmp_path: Path) -> FakeVps:
    return FakeVps(tmp_path)


@pytest.fixture
def config(vps: FakeVps, variant: Variant) -> Config:
    return variant(vps.config_change)


def run(vps: FakeVps, config: Config, *, plan: bool = False, said: list[str] | None = None,
        **kwargs: Any) -> Prepared:
    return prepare(vps.host, config, public_key=public_key(), plan=plan, paths=vps.paths,
                   say=(said.append if said is not None else lambda _m: None), **kwargs)


def fails(vps: FakeVps, config: Config, **kwargs: Any) -> PrepareFailed:
    with pytest.raises(PrepareFailed) as caught:
        run(vps, config, **kwargs)
    return caught.value


def statuses(result: Prepared) -> dict[str, str]:
    return {step.name: step.status for step in result.steps}


def prepared(vps: FakeVps) -> None:
    """Every prerequisite in place on the scripted VPS."""
    state = vps.state()
    packages = ("docker.io", "ufw", "netdata", "cron", "curl", "sudo")
    assert {p: state["packages"][p] for p in packages} == dict.fromkeys(packages, "ii ")
    assert state["swarm"] == {"state": "active", "addr": ADDRESS}
    assert set(state["users"]["deployer"]["groups"]) == {"deployer", "docker", "netdata"}
    assert state["users"]["deployer"]["shadow"] == "*"
    assert "docker" in state["users"]["netdata"]["groups"]
    keys = Path(state["users"]["deployer"]["home"]) / ".ssh" / "authorized_keys"
    assert keys.read_text().splitlines() == [public_key()]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert state["owners"][str(vps.base)] == "deployer:deployer"
    swapfile = Path(vps.paths.swapfile)
    assert swapfile.stat().st_size == 64 * 2**20 and stat.S_IMODE(swapfile.stat().st_mode) == 0o600
    assert state["swap"] == {str(swapfile): 64 * 2**20}
    assert f"{swapfile} none swap sw 0 0" in Path(vps.paths.fstab).read_text().splitlines()
    assert Path(vps.paths.sysctl).read_text() == "vm.swappiness=10\n"
    assert state["ufw"]["active"] and state["ufw"]["rules"] == [
        ["allow", "22/tcp"], ["allow", "80/tcp"], ["allow", "443/tcp"], ["deny", "3000/tcp"]]
    sudoers = Path(vps.paths.sudoers)
    assert sudoers.read_text() == sudoers_line("deployer") + "\n"
    assert stat.S_IMODE(sudoers.stat().st_mode) == 0o440
    dropin = Path(vps.paths.netdata_dropin).read_text().splitlines()
    assert "PrivateTmp=false" in dropin and "ReadWritePaths=/tmp" in dropin
    assert state["netdata_shared_tmp"]  # netdatacli's socket where the deploy user reaches it
    for folder in ("", "/health.d", "/custom-plugins.d"):
        assert state["owners"][vps.netdata_config + folder].endswith(":deployer")
        assert os.stat(vps.netdata_config + folder).st_mode & 0o020


def test_the_plan_lists_every_step_and_changes_nothing(vps: FakeVps, config: Config) -> None:
    before = sorted(str(p) for p in vps.fs.rglob("*"))
    result = run(vps, config, plan=True)
    assert statuses(result) == {"os": "ok", "docker": "would change",
                                "swarm": "would change", "user": "would change",
                                "swap": "would change", "firewall": "would change",
                                "monitoring": "would change", "sudoers": "would change",
                                "uptime-kuma": "skipped"}
    assert "install docker.io" in result["docker"].detail
    assert "allow 22, 80, 443 (TCP)" in result["firewall"].detail
    assert vps.log() == []  # not even apt-get update
    assert sorted(str(p) for p in vps.fs.rglob("*")) == before
    assert all(what.endswith(("check", "facts")) for what in vps.host.commands), \
        vps.host.commands


def test_a_run_converges_every_step_and_a_second_changes_nothing(
        vps: FakeVps, config: Config) -> None:
    said: list[str] = []
    result = run(vps, config, said=said)
    assert statuses(result) == {"os": "ok", **dict.fromkeys(
        ("docker", "swarm", "user", "swap", "firewall", "monitoring", "sudoers"), "changed"),
        "uptime-kuma": "skipped"}
    prepared(vps)
    log = vps.log()
    assert log.count("apt-get update") == 1 and log[0] == "apt-get update"
    assert all(line.endswith("[noninteractive]") for line in log if "apt-get install" in line)
    assert log.index("ufw allow 22/tcp") < log.index("ufw default deny") < \
        log.index("ufw enable")
    assert any(line == "deploy user: done" for line in said), said
    lines = [command for command in vps.host.command_lines if "apt-get" in command
             and "install" in command]
    assert all("-o DPkg::Lock::Timeout=120" in c and "--no-install-recommends" in c
               for c in lines), lines
    audit = vps.audit()  # a line as each step starts and as it ends, then the run's
    details = [(a["result"], a["detail"].split(":")[0]) for a in audit]
    for step in ("Docker engine", "swarm", "deploy user", "swap", "ufw", "netdata and cron",
                 "sudoers line"):
        assert ("started", step) in details and ("changed", step) in details, step
    assert audit[-1]["result"] == "ok" and audit[-1]["action"] == "host.prepare"

    # what preflight reads of the firewall passes on what this run left
    ufw = vps.host.run("ufw status verbose", what="test")
    assert ufw_check(ufw, config.firewall.allow, config.firewall.deny, "deployer") \
        .startswith("active")

    commands_before = len(vps.host.commands)
    again = run(vps, config, said=(said := []))
    assert set(statuses(again).values()) == {"ok", "skipped"}
    assert vps.log() == log  # nothing ran that changes anything
    assert vps.audit()[-1]["result"] == "noop"
    assert all(what.endswith(("check", "facts", "audit", "base folder"))
               for what in vps.host.commands[commands_before:])
    prepared(vps)


@pytest.mark.parametrize("after", [False, True], ids=["before-it-ran", "after-it-ran"])
def test_a_link_lost_in_the_ufw_step_never_enables_the_firewall(
        vps: FakeVps, config: Config, after: bool) -> None:
    vps.host.inject(Fault("ufw allow", kind="remote", after=after))
    failed = fails(vps, config)
    assert not vps.state().get("ufw", {}).get("active")
    assert "ufw enable" not in vps.log()
    assert not any("--force enable" in line for line in vps.host.command_lines)
    assert failed.result["firewall"].status == "failed"
    message = str(failed)
    assert message.startswith("host.prepare failed: ufw: ufw allow: Socket is closed")
    assert "done: system, Docker engine, swarm, deploy user, swap, netdata and cron, " \
           "sudoers line, uptime kuma; not done: ufw (failed)" in message
    if after:  # the next run finishes it, the SSH port first
        run(vps, config)
        prepared(vps)


def test_ufw_is_not_enabled_when_the_ssh_rule_is_not_there(vps: FakeVps, config: Config
                                                           ) -> None:
    """The enable itself checks on the host: an allow that ran yet left no rule (the host
    said yes and did nothing) leaves ufw off."""
    run(vps, config, plan=True)
    vps.host.inject(Fault("ufw allow", kind="remote", after=True))
    fails(vps, config)
    vps.set(ufw={"active": False, "default": "deny", "rules": [["allow", "80/tcp"]]})
    from vedfin_ops.remote.commands.host import ufw_enable, ufw_if_ssh_allowed

    with pytest.raises(CheckFailed, match="no rule allows the SSH port 22"):
        vps.host.run(ufw_if_ssh_allowed(22, ufw_enable()), what="ufw enable")
    assert not vps.state().get("ufw", {}).get("active")


@pytest.mark.parametrize("kind, said", [("ctrl-c", "interrupted (Ctrl-C)"),
                                        ("sigterm", "interrupted (SIGTERM)"),
                                        ("exception", "failed during swap (while changing "
                                                      "it: it may be half done): unexpected "
                                                      "ValueError")])
def test_a_run_stopped_mid_way_says_which_steps_are_done(vps: FakeVps, config: Config,
                                                        kind: str, said: str) -> None:
    vps.host.inject(Fault("swap apply", kind=kind))
    failed = fails(vps, config)
    message = str(failed)
    assert said in message, message
    assert "; done: system, Docker engine, swarm, deploy user, uptime kuma; not done: swap (" \
        in message
    assert "ufw (would change), netdata and cron (would change), sudoers line (would " \
           "change)" in message
    assert message.endswith("run it again: every step checks before it changes anything")
    assert failed.interrupted == (kind != "exception")
    assert vps.audit()[-1]["result"] == ("failed" if kind == "exception" else "interrupted")
    assert "ufw enable" not in vps.log()
    if kind == "ctrl-c":
        run(vps, config)
        prepared(vps)


def test_ctrl_c_while_checking_says_nothing_of_that_step_was_changed(
        vps: FakeVps, config: Config) -> None:
    vps.host.inject(Fault("firewall check", kind="ctrl-c"))
    failed = fails(vps, config)
    assert "interrupted during ufw (before changing it)" in str(failed)
    assert vps.log() == []  # the plan's checks come first: nothing was changed yet


def test_an_apt_install_that_dpkg_left_half_way_is_finished_by_the_next_run(
        vps: FakeVps, config: Config) -> None:
    vps.set(apt_half=["docker.io"])
    failed = fails(vps, config)
    result = failed.result
    assert result["docker"].status == "failed"
    assert "returned an error code" in result["docker"].detail
    # what needs the engine waits; the rest is done, and ufw's install finished dpkg's work
    for name in ("swarm", "user", "monitoring", "sudoers"):
        assert result[name].status == "not run", name
    assert result["swarm"].detail == "needs Docker engine"
    assert result["swap"].status == result["firewall"].status == "changed"
    log = vps.log()
    assert log.index("dpkg --configure -a") < log.index("apt-get install ufw [noninteractive]")
    run(vps, config)
    prepared(vps)


def test_the_next_run_says_it_finishes_a_half_installed_package(
        vps: FakeVps, variant: Variant) -> None:
    def change(data: dict[str, Any]) -> None:
        vps.config_change(data)
        data["firewall"] = {"check": "none"}
        data["vps"]["swap"] = "0m"

    config = variant(change)
    vps.set(apt_half=["docker.io"])
    fails(vps, config)
    assert vps.state()["packages"]["docker.io"] == "iU "
    planned = run(vps, config, plan=True)
    assert planned["docker"].detail.startswith("finish installing docker.io (dpkg state iU)")
    assert planned["swap"].detail == "vps.swap is 0"
    before = len(vps.log())
    run(vps, config)
    assert vps.log()[before:before + 4] == ["apt-get update", "dpkg --configure -a",
                                            "apt-get install docker.io [noninteractive]",
                                            "swarm init"]
    assert vps.state()["packages"]["docker.io"] == "ii "


def test_an_install_whose_link_dropped_after_it_ran_is_not_run_again(
        vps: FakeVps, config: Config) -> None:
    vps.host.inject(Fault("apt-get install", kind="remote", after=True))
    failed = fails(vps, config)
    assert failed.result["docker"].status == "failed"
    run(vps, config)
    assert [line for line in vps.log() if "docker.io" in line] == \
        ["apt-get install docker.io [noninteractive]"]
    prepared(vps)


def test_a_sudoer_runs_every_command_through_sudo(tmp_path: Path, variant: Variant) -> None:
    vps = FakeVps(tmp_path, uid=1000, sudo_ok=True)
    config = variant(vps.config_change)
    run(vps, config)
    prepared(vps)
    assert vps.host.command_lines[0].startswith("echo \"uid $(id -u)\"")  # the facts: as is
    assert all(line.startswith("sudo -n sh -c ") for line in vps.host.command_lines[1:])


def test_a_user_without_passwordless_sudo_is_told_before_anything(
        tmp_path: Path, variant: Variant) -> None:
    vps = FakeVps(tmp_path, uid=1000)
    config = variant(vps.config_change)
    with pytest.raises(CheckFailed, match="admin is neither root nor allowed passwordless "
                                          "sudo"):
        run(vps, config)
    assert vps.host.commands == ["host.prepare facts"]


@pytest.mark.parametrize("packages, said", [
    ({"docker-ce": "ii ", "containerd.io": "ii "}, "another Docker is installed (docker-ce, "
                                                  "containerd.io)"),
    ({"podman-docker": "iU "}, "another Docker is installed (podman-docker)")])
def test_another_docker_is_refused_naming_it(vps: FakeVps, config: Config,
                                             packages: dict[str, str], said: str) -> None:
    vps.set(packages=packages)
    for plan in (True, False):
        failed = fails(vps, config, plan=plan)
        assert str(failed).startswith(f"host.prepare refused: Docker engine: {said}")
        assert str(failed).endswith("; nothing was changed")
    assert vps.log() == [] and not vps.base.exists()


def test_a_system_other_than_debian_12_or_ubuntu_24_04_is_refused(
        vps: FakeVps, config: Config) -> None:
    Path(vps.paths.os_release).write_text('PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\n'
                                          'VERSION_ID="11"\nID=debian\n')
    failed = fails(vps, config)
    assert str(failed) == ("host.prepare refused: system: Debian GNU/Linux 11 (bullseye) is not "
                           "Debian 12 or Ubuntu 24.04, the systems whose packages host.prepare "
                           "knows; nothing was changed")
    assert vps.host.commands == ["host.prepare facts"]


def test_swap_a_container_may_not_enable_is_reported_not_faked(
        tmp_path: Path, variant: Variant) -> None:
    vps = FakeVps(tmp_path, swapon_refused=True, sysctl_refused=True, virt="systemd-nspawn")
    config = variant(vps.config_change)
    failed = fails(vps, config)
    swap = failed.result["swap"]
    assert swap.status == "failed"
    assert "swapon" in swap.detail and "Operation not permitted" in swap.detail
    assert "vm.swappiness" in swap.detail
    assert "this host is a container (systemd-nspawn)" in swap.detail
    assert [s.name for s in failed.result.steps if s.status not in ("changed", "ok",
                                                                    "skipped")] == ["swap"]
    assert str(vps.paths.swapfile) not in Path(vps.paths.fstab).read_text()
    assert str(failed).startswith("host.prepare failed: swap: ")
    # a second run changes nothing else, and says that swap is still not done
    log = vps.log()
    failed = fails(vps, config)
    assert str(failed).startswith("host.prepare changed nothing: swap: ")
    assert vps.log() == log


def test_a_swarm_advertising_another_address_is_reported_and_left(
        vps: FakeVps, config: Config) -> None:
    vps.installed("docker.io")
    vps.set(swarm={"state": "active", "addr": "10.9.9.9"})
    failed = fails(vps, config)
    assert failed.result["swarm"].status == "failed"
    assert "advertising 10.9.9.9, not 203.0.113.10" in failed.result["swarm"].detail
    assert vps.state()["swarm"]["addr"] == "10.9.9.9"


def test_a_plan_with_a_step_that_cannot_be_done_exits_1_naming_it(
        vps: FakeVps, config: Config) -> None:
    vps.installed("docker.io")
    vps.set(swarm={"state": "active", "addr": "10.9.9.9"})
    failed = fails(vps, config, plan=True)
    assert failed.exit_code == 1
    assert str(failed) == ("host.prepare --plan: cannot be done: swarm; 5 step(s) would "
                           "change")
    assert failed.result["swarm"].status == "failed"
    assert failed.result["swarm"].line().startswith("swarm: failed: the engine is in a swarm "
                                                    "advertising 10.9.9.9, not 203.0.113.10")
    assert vps.log() == [] and vps.audit() == []  # a plan changes and writes nothing
    vps.set(swarm={"state": "active", "addr": ADDRESS})
    assert run(vps, config, plan=True).plan_line() == \
        "host.prepare --plan: 5 step(s) would change"


def test_rules_the_config_does_not_name_are_removed_but_never_the_ssh_port(
        vps: FakeVps, config: Config) -> None:
    vps.installed("ufw")
    rules = [["allow", "22/tcp"], ["allow", "80/tcp"], ["allow", "443/tcp"], ["deny", "3000/tcp"]]
    vps.set(ufw={"active": True, "default": "deny", "rules": [
        *rules, ["allow", "8080"], ["limit", "from", "198.51.100.7", "to", "any", "port", "22"],
        ["allow", "19999/tcp"]]})
    planned = run(vps, config, plan=True)
    assert planned["firewall"].detail == ("remove `allow 8080` (the config does not name it); "
                                          "remove `allow 19999/tcp` (the config does not name "
                                          "it); kept `limit from 198.51.100.7 to any port 22` "
                                          "(from 198.51.100.7: the operator's own, never "
                                          "removed)")
    run(vps, config)
    assert vps.state()["ufw"]["rules"] == [
        *rules, ["limit", "from", "198.51.100.7", "to", "any", "port", "22"]]


def test_a_cluster_managers_swarm_ports_and_narrowed_rules_survive_a_run(
        vps: FakeVps, variant: Variant) -> None:
    """The swarm's ports opened by hand (as the docs said before), a rule from one address
    and one on an interface stay; the nodes' ports are allowed from their addresses."""
    def change(data: dict[str, Any]) -> None:
        vps.config_change(data)
        data.pop("vps")
        data["nodes"] = [
            {"name": "node0", "host": f"root@{ADDRESS}", "role": "manager", "memory": "4g",
             "cpus": 2, "swap": "64m", "public": True, "postgres": True, "address": ADDRESS},
            {"name": "node1", "host": "deployer@10.0.0.2", "memory": "4g", "cpus": 2,
             "address": "10.0.0.2"},
            {"name": "node2", "host": "deployer@10.0.0.3", "memory": "4g", "cpus": 2,
             "address": "10.0.0.3"}]
        data["registry"] = {"server": "registry.example.com", "username": "deployer",
                            "password": "${REGISTRY_PASSWORD}"}
        data["secrets"]["shared"]["REGISTRY_PASSWORD"] = "manual"
        for app in data["applications"]:
            app["image"] = f"registry.example.com/vedfin/{app['name'].split('-')[0]}"

    config = variant(change)
    vps.installed("ufw")
    rules = [["allow", "22/tcp"], ["allow", "80/tcp"], ["allow", "443/tcp"], ["deny", "3000/tcp"]]
    theirs = [["allow", "2377/tcp"], ["allow", "7946"], ["allow", "from", "10.0.0.2"],
              ["allow", "in", "on", "eth1", "to", "any", "port", "5432"]]
    vps.set(ufw={"active": True, "default": "deny", "rules": [
        *rules, *theirs, ["allow", "8080/tcp"]]})
    said: list[str] = []
    run(vps, config, said=said)
    assert vps.state()["ufw"]["rules"] == [
        *rules, *theirs, ["allow", "from", "10.0.0.3", "to", "any", "port", "4789", "proto",
                          "udp"]]  # 10.0.0.2's come from its own rule, 7946 from `allow 7946`
    line = next(line for line in said if line.startswith("ufw: changing"))
    assert "remove `allow 8080/tcp` (the config does not name it)" in line
    assert "kept `allow 2377/tcp` (a swarm port: `nodes` is set)" in line
    assert "kept `allow from 10.0.0.2` (from 10.0.0.2: the operator's own, never removed)" in line
    log = vps.log()
    again = run(vps, config)
    assert again["firewall"].status == "ok" and vps.log() == log
    assert "kept `allow in on eth1 to any port 5432`" in again["firewall"].detail


def test_an_ssh_rule_the_operator_narrowed_is_enough_to_enable_ufw(
        vps: FakeVps, config: Config) -> None:
    """No world-open SSH rule beside the operator's own, and the guard on the host takes it."""
    vps.installed("ufw")
    narrowed = ["allow", "from", "203.0.113.7", "to", "any", "port", "22", "proto", "tcp"]
    vps.set(ufw={"active": False, "default": "allow", "rules": [narrowed]})
    run(vps, config)
    ufw = vps.state()["ufw"]
    assert ufw["active"] and ufw["default"] == "deny"
    assert ufw["rules"] == [narrowed, ["allow", "80/tcp"], ["allow", "443/tcp"],
                            ["deny", "3000/tcp"]]
    assert run(vps, config)["firewall"].status == "ok"


def test_an_audit_log_made_after_the_user_step_is_the_deploy_users(
        vps: FakeVps, config: Config) -> None:
    """The user and baseDir there, no audit.log: a later step's audit line (as root) makes it
    the deploy user's, 0644, so its next deploy appends and the next run changes nothing."""
    run(vps, config)
    log = vps.base / "audit.log"
    log.unlink()
    vps.set(owners={k: v for k, v in vps.state()["owners"].items() if k != str(log)})
    Path(vps.paths.sysctl).unlink()  # the swap step, after the user step, has a change
    first = run(vps, config)
    assert statuses(first)["user"] == "ok" and statuses(first)["swap"] == "changed"
    assert vps.state()["owners"].get(str(log), "root:root") == "deployer:deployer"
    assert stat.S_IMODE(log.stat().st_mode) == 0o644
    assert [a["result"] for a in vps.audit()] == ["started", "changed", "ok"]
    again = run(vps, config)
    assert set(statuses(again).values()) == {"ok", "skipped"}, statuses(again)


def test_alerts_email_without_a_sendmail_on_the_host_is_a_warning(
        vps: FakeVps, config: Config) -> None:
    """Netdata would drop its alarm mail without a word; no MTA is installed for it."""
    assert config.alerts.email == "ops@v-edfinance.com"
    said: list[str] = []
    first = run(vps, config, said=said)
    warning = ("warning: alerts.email is set but this host has no sendmail: Netdata drops its "
               "alarm mail to ops@v-edfinance.com; set up a mail relay (msmtp-mta or postfix")
    assert first["monitoring"].status == "changed" and warning in first["monitoring"].detail
    again = run(vps, config, said=(said := []))
    assert again["monitoring"].status == "ok" and warning in again["monitoring"].detail
    assert any(line.startswith("netdata and cron: ok (") and warning in line for line in said)
    assert not any("postfix" in line or "msmtp" in line for line in vps.log())
    sendmail = Path(vps.paths.sendmail)  # a relay set up: /usr/sbin/sendmail, off root's PATH
    sendmail.parent.mkdir(parents=True)
    sendmail.write_text("#!/bin/sh\n")
    sendmail.chmod(0o755)
    assert "warning" not in run(vps, config)["monitoring"].detail


def test_the_ssh_port_this_connection_came_in_on_is_allowed_first(
        vps: FakeVps, config: Config) -> None:
    run(vps, config, ssh_port=2222)
    rules = vps.state()["ufw"]["rules"]
    assert rules[0] == ["allow", "2222/tcp"] and ["allow", "22/tcp"] in rules
