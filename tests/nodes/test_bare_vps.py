"""From a bare VPS to production: a Debian 12 root filesystem booted by systemd-nspawn
(sandbox/vps.py) with nothing but sshd, root's key and a provider's base packages, taken by
`host.prepare` to every prerequisite, then deployed to by the deploy user it made, twice, the
second time under load through its edge.

The VPS is a machine of its own (its systemd, users, packages, engine, firewall, network
namespace); what it cannot do here is said where it shows: `swapon` is refused (swap is this
machine's kernel's), so the swap step reports that and the rest is checked. This machine's
swap, swappiness and firewall are compared before and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http_load import Load
from tests.integration.conftest import ROOT, SANDBOX_DIR, unavailable
from tests.nodes.beside import beside_the_sandbox
from vedfin_ops import load_config

# the first test's setup may wait for the other worker's sandbox.up
pytestmark = [pytest.mark.integration, pytest.mark.timeout(40 * 60)]

ENV = "production"


def _this_machine() -> dict[str, str]:
    """What the VPS must never change here: swap, swappiness, the firewall's rules."""
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    # the counters and docker's own chains move on their own: the rule lines of ufw only
    ufw = [line for line in rules.splitlines() if "ufw" in line]
    return {"swaps": Path("/proc/swaps").read_text(),
            "swappiness": Path("/proc/sys/vm/swappiness").read_text(),
            "ufw": hashlib.sha256("\n".join(ufw).encode()).hexdigest(),
            "input": subprocess.run(["iptables", "-S", "INPUT"], capture_output=True,
                                    text=True, check=False).stdout}


@pytest.fixture(scope="module")
def vps() -> Iterator[dict[str, Any]]:
    """The bare VPS, booted for this module (a fresh copy of the cached root filesystem), on
    the unit tests' worker beside the sandbox's tests (an engine of its own); the real apps'
    images built first (a lock keeps the other worker's real-app module from building them
    at the same time)."""
    from sandbox import lifecycle

    if os.geteuid() != 0 or shutil.which("systemd-nspawn") is None:
        unavailable("the bare VPS needs root and systemd-nspawn (scripts/setup.sh)")
    with beside_the_sandbox():
        lifecycle.up_real(SANDBOX_DIR, progress=lambda _m: None)
        lifecycle.down_vps(SANDBOX_DIR, progress=lambda _m: None)  # bare, never a kept one
        before = _this_machine()
        path = lifecycle.up_vps(SANDBOX_DIR, progress=lambda _m: None)
        folder = SANDBOX_DIR / "vps"
        try:
            yield {"config": str(path), "ssh_config": str(folder / "ssh_config"),
                   "key": str(folder / "id_ed25519.pub")}
        finally:
            lifecycle.down_vps(SANDBOX_DIR, progress=lambda _m: None)
            assert _this_machine() == before
            # no process of the VPS outlives it (nspawn's death alone left its init, dockerd,
            # containers and Netdata running, whose Netdata other tests' `ps` then saw)
            assert not [p for p in Path("/proc").glob("[0-9]*/cgroup")
                        if _in_the_vps(p)], "processes of the VPS left running"


def _in_the_vps(cgroup: Path) -> bool:
    try:
        return ":/vedfin-vps" in cgroup.read_text()
    except OSError:  # a process that ended while read
        return False


def vfab(vps: dict[str, Any], host: str, *args: str, timeout: float = 900
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEDFIN_CONFIG": vps["config"], "COLUMNS": "200"}
    return subprocess.run([shutil.which("fab") or "fab", "-r", str(ROOT), "-S",
                           vps["ssh_config"], "-H", host, *args], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def on_vps(vps: dict[str, Any], command: str, user_host: str = "vps-root") -> str:
    """A command on the VPS over SSH (its pinned host key, root's key)."""
    result = subprocess.run(["ssh", "-F", vps["ssh_config"], "-o", "BatchMode=yes", user_host,
                             command], capture_output=True, text=True, timeout=120, check=False)
    return result.stdout + result.stderr


def test_plan_lists_every_step_and_changes_nothing(vps: dict[str, Any]) -> None:
    planned = vfab(vps, "vps-root", "host.prepare", "--plan", "--key", vps["key"])
    said = planned.stdout + planned.stderr
    assert planned.returncode == 0, said
    for step in ("docker", "swarm", "deploy user", "swap", "ufw", "netdata", "sudoers"):
        assert step in said.lower(), (step, said)
    assert "would" in said.lower(), said
    # nothing installed, no user, no swap file, no firewall
    state = on_vps(vps, "command -v docker ufw netdata; id deployer; ls /swapfile; "
                        "ls /etc/sudoers.d; echo end")
    assert "/usr/bin/docker" not in state and "uid=" not in state, state
    assert "No such file" in state, state


def test_prepare_interrupted_says_what_was_done_and_a_rerun_converges(
        vps: dict[str, Any]) -> None:
    """Ctrl-C while apt installs Docker (dpkg half-way): one line naming the steps done, the
    host still reachable over SSH, and the next run finishes the job."""
    env = {**os.environ, "VEDFIN_CONFIG": vps["config"], "COLUMNS": "200"}
    proc = subprocess.Popen([shutil.which("fab") or "fab", "-r", str(ROOT), "-S",
                             vps["ssh_config"], "-H", "vps-root", "host.prepare", "--key",
                             vps["key"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        seen.append(line)
        if "docker" in line.lower() and time.monotonic() < deadline:
            time.sleep(3)  # inside apt-get install docker.io
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=300)
    said = "".join(seen) + rest
    assert proc.returncode not in (0, None), said
    assert "interrupted" in said.lower() or "stopped" in said.lower(), said
    assert "uid=0" in on_vps(vps, "id"), "the host must stay reachable over SSH"

    done = vfab(vps, "vps-root", "host.prepare", "--key", vps["key"])
    said = done.stdout + done.stderr
    # swapon is refused inside the sandbox's VPS (this machine's swap): that step alone fails
    assert "swap" in said.lower() and "not permitted" in said.lower(), said
    state = on_vps(vps, "systemctl is-active docker netdata cron; "
                        "docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.NodeAddr}}'; "
                        "id deployer; id netdata; ufw status; stat -c '%a %U' /swapfile "
                        "/etc/sudoers.d/*; grep -c swapfile /etc/fstab; dpkg --audit; echo end")
    assert state.count("active\n") >= 3, state
    assert "active 127.0.0.1" in state, state
    assert "(docker)" in state.split("uid=", 2)[1], state  # deployer in the docker group
    assert "docker" in state.split("uid=", 3)[2], state  # netdata reads the engine
    assert "Status: active" in state and "3000" in state, state
    for port in ("22", "80", "443"):
        assert f"{port}/tcp" in state or f"{port} " in state, (port, state)
    assert "600 root" in state and "440 root" in state, state


def test_second_prepare_changes_nothing(vps: dict[str, Any]) -> None:
    """Every step ok but swap, which the sandbox's VPS refuses each time (exit 1, said)."""
    again = vfab(vps, "vps-root", "host.prepare", "--key", vps["key"])
    said = (again.stdout + again.stderr).lower()
    assert "changed nothing" in said, said
    changing = [line for line in said.splitlines() if "changing:" in line or "changed:" in line]
    assert all(line.lstrip("> ").startswith("swap") for line in changing), said
    failed = {line.lstrip("> ").split(":")[0] for line in said.splitlines() if ": failed:" in line}
    assert failed == {"swap"}, said


def test_the_deploy_user_passes_preflight_and_deploys_the_real_apps_with_no_failed_request(
        vps: dict[str, Any]) -> None:
    """The README's main job, on the host host.prepare made: v1, then v2 under load from 8
    clients through the VPS's edge."""
    checked = vfab(vps, "vps", "preflight", "--env", ENV)
    said = checked.stdout + checked.stderr
    assert "firewall: ufw" in said, said
    first = vfab(vps, "vps", "deploy.production", "--tag", "v1")
    assert first.returncode == 0, first.stdout + first.stderr
    config = load_config(vps["config"])
    with Load(config.edge.http_port, clients=8, rate=25, max_requests=20000,
              version_path="/api/version") as load:
        time.sleep(2)
        second = vfab(vps, "vps", "deploy.production", "--tag", "v2")
        time.sleep(2)
    assert second.returncode == 0, second.stdout + second.stderr
    assert load.sent >= 1000, load.sent
    assert not load.failed, load.failed[:5]
    assert any('"v2"' in seen for seen in load.versions), load.versions
