"""`inv sandbox.up --nodes N`: a swarm of N engines on this machine, each in a network namespace.

Each node is what a VPS of a cluster is to the tool: its own Docker Engine (data-root,
exec-root, socket), its own address on a bridge (veth), its own sshd with its own host key,
and overlay networking to the others over that bridge. node0 is the manager, holds postgres
and publishes the edge; the others are workers.

Why a swarm of its own rather than two engines joined to the single-VPS sandbox: that engine
advertises 127.0.0.1 and publishes its edge on this machine's loopback, which a node in another
namespace cannot reach; and a cluster of its own lets the cluster's tests run beside the
single-VPS tests instead of after them. The nodes share the sandbox's registry and deploy user:
a small forwarder (forward.py) serves the registry's 127.0.0.1:PORT inside every namespace (so
image names and the registry's certificate stay as they are) and each node's sshd and the edge
on this machine's 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.local import JsonState, SandboxError, alive, ok, run, terminate
from sandbox.sshd import SSHD, SSHD_CONFIG, free_port, keygen

BRIDGE = "vedfin-br0"
SUBNET = "10.231.7"
HOST_ADDRESS = f"{SUBNET}.1"
ADDRESS_POOL = "10.232.0.0/16"  # the overlay networks' subnets, clear of the bridge's
SSH_PORT_BASE = 2301
CLUSTER_EDGE_PORT = 18180
FORWARD_RULE = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]


def netns(index: int) -> str:
    return f"vedfin-node{index}"


def name(index: int) -> str:
    """The node's hostname, as the engine and the config name it."""
    return f"node{index}"


def address(index: int) -> str:
    return f"{SUBNET}.{10 + index}"


def socket_path(index: int) -> str:
    return f"/run/vedfin-node{index}.sock"


def docker_host(index: int) -> str:
    return f"unix://{socket_path(index)}"


@dataclass
class NodesState(JsonState):
    count: int = 0
    registry_port: int = 0
    edge_port: int = 0
    ssh_ports: list[int] = field(default_factory=list)
    up_seconds: float = 0.0


def docker(index: int, *args: str, check: bool = True,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The docker CLI against node `index`'s engine."""
    return run(["docker", "-H", docker_host(index), *args], check=check, timeout=timeout)


def engine_answers(index: int) -> bool:
    return ok(["docker", "-H", docker_host(index), "info", "--format", "{{.ID}}"], timeout=10)


# --- the network ------------------------------------------------------------------------

def _link_exists(link: str) -> bool:
    return ok(["ip", "link", "show", link])


def ensure_bridge() -> None:
    if not _link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    # Docker's FORWARD policy is DROP; with br_netfilter loaded, frames between two veths of
    # the bridge (the nodes' swarm and VXLAN traffic) go through it
    if not ok(["iptables", "-C", *FORWARD_RULE]):
        run(["iptables", "-I", *FORWARD_RULE])


def ensure_namespace(index: int) -> None:
    ns, host_end, node_end = netns(index), f"vfn{index}h", f"vfn{index}c"
    if not ok(["ip", "netns", "exec", ns, "true"]):
        run(["ip", "netns", "add", ns])
    if not ok(["ip", "-n", ns, "link", "show", "eth0"]):
        with contextlib.suppress(SandboxError):  # a half-made pair from an interrupted up
            run(["ip", "link", "del", host_end])
        run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", node_end])
        run(["ip", "link", "set", node_end, "netns", ns])
        run(["ip", "-n", ns, "link", "set", node_end, "name", "eth0"])
        run(["ip", "-n", ns, "addr", "add", f"{address(index)}/24", "dev", "eth0"])
        run(["ip", "link", "set", host_end, "master", BRIDGE])
    run(["ip", "link", "set", host_end, "up"])
    for link in ("lo", "eth0"):
        run(["ip", "-n", ns, "link", "set", link, "up"])
    if "default" not in run(["ip", "-n", ns, "route", "show", "default"]).stdout:
        run(["ip", "-n", ns, "route", "add", "default", "via", HOST_ADDRESS])


def remove_network(count: int) -> None:
    for index in range(count):
        run(["ip", "netns", "del", netns(index)], check=False)
        run(["ip", "link", "del", f"vfn{index}h"], check=False)
    while ok(["iptables", "-C", *FORWARD_RULE]):
        run(["iptables", "-D", *FORWARD_RULE], check=False)
    if _link_exists(BRIDGE):
        run(["ip", "link", "del", BRIDGE], check=False)


# --- the engines --------------------------------------------------------------------------

def _engine_dir(folder: Path, index: int) -> Path:
    return folder / name(index)


def start_engine(folder: Path, index: int) -> int:
    """Start node `index`'s dockerd in its namespace (kept if it answers); returns its pid."""
    node_dir = _engine_dir(folder, index)
    pid_file = node_dir / "dockerd.pid"
    if engine_answers(index) and pid_file.exists():
        return int(pid_file.read_text())
    node_dir.mkdir(parents=True, exist_ok=True)
    config = node_dir / "daemon.json"
    config.write_text("{}\n")  # not this machine's /etc/docker/daemon.json
    log = node_dir / "dockerd.log"
    # nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroup mounts dockerd
    # needs; a UTS namespace of its own gives the engine its node name as hostname
    argv = ["nsenter", f"--net=/run/netns/{netns(index)}", "unshare", "--uts", "sh", "-c",
            'hostname "$0" && exec "$@"', name(index), "dockerd",
            "--config-file", str(config), "--data-root", str(node_dir / "data"),
            "--exec-root", f"/run/vedfin-node{index}", "--pidfile", str(pid_file),
            "-H", docker_host(index), "--group", "docker",
            # its own containerd namespaces, in case dockerd finds a system containerd
            "--containerd-namespace", netns(index),
            "--containerd-plugins-namespace", f"{netns(index)}-plugins"]
    with log.open("ab") as handle:
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f"{name(index)}: dockerd exited ({proc.returncode}); see {log}")
        if engine_answers(index):
            return proc.pid
        time.sleep(0.3)
    raise SandboxError(f"{name(index)}: dockerd did not answer within 60 s; see {log}")


def engine_pid(folder: Path, index: int) -> int | None:
    try:
        pid = int((_engine_dir(folder, index) / "dockerd.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def stop_engine(folder: Path, index: int, wait: float = 40) -> None:
    """SIGTERM to the node's dockerd, as `systemctl stop docker` would: its containers stop;
    SIGKILL if it is still there after `wait` (its data-root is removed next)."""
    pid = engine_pid(folder, index)
    if pid is not None:
        terminate(pid, wait=wait)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(1)


# --- ssh into a node ------------------------------------------------------------------------

NODE_SSH_CONFIG = """Host {name}
  HostName 127.0.0.1
  Port {port}
  User {user}
  HostKeyAlias {name}
  IdentityFile {workdir}/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile {workdir}/cluster/known_hosts
  StrictHostKeyChecking yes
  ServerAliveInterval 15
"""


def start_sshd(folder: Path, index: int, user: str) -> None:
    node_dir = _engine_dir(folder, index)
    pid_file = node_dir / "sshd.pid"
    host_key = node_dir / "ssh_host_ed25519_key"
    keygen(host_key, f"vedfin-sandbox-{name(index)}")
    with contextlib.suppress(OSError, ValueError):
        if alive(int(pid_file.read_text())):
            return
    config = node_dir / "sshd_config"
    # the sandbox's own sshd config, on port 22 of the node's loopback, with the node's
    # engine as every session's DOCKER_HOST
    config.write_text(SSHD_CONFIG.format(port=22, host_key=host_key, pid_file=pid_file,
                                         user=user)
                      + f"SetEnv DOCKER_HOST={docker_host(index)}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    run([str(SSHD), "-t", "-f", str(config)])
    run(["ip", "netns", "exec", netns(index), str(SSHD), "-f", str(config)])


def write_ssh_files(workdir: Path, state: NodesState, user: str) -> Path:
    """`.sandbox/cluster/ssh_config` (one Host per node) and its known_hosts: each node's
    host key pinned under its own name (HostKeyAlias), though all sit on 127.0.0.1."""
    folder = workdir / "cluster"
    entries, known = [], []
    for index, port in enumerate(state.ssh_ports):
        entries.append(NODE_SSH_CONFIG.format(name=name(index), port=port, user=user,
                                              workdir=workdir))
        kind, key = (_engine_dir(folder, index) / "ssh_host_ed25519_key.pub") \
            .read_text().split()[:2]
        known.append(f"{name(index)} {kind} {key}\n")
    (folder / "known_hosts").write_text("".join(known))
    path = folder / "ssh_config"
    path.write_text("# vedfin-ops sandbox nodes: fab -S " + str(path) + " -H node0 TASK\n"
                    + "\n".join(entries))
    return path


# --- the forwarder ------------------------------------------------------------------------

def routes(state: NodesState) -> list[str]:
    from sandbox.forward import HOST, Route, spec

    out = []
    for index in range(state.count):
        out.append(spec(Route(netns(index), state.registry_port, HOST, "127.0.0.1",
                              state.registry_port)))
        out.append(spec(Route(HOST, state.ssh_ports[index], netns(index), "127.0.0.1", 22)))
    out.append(spec(Route(HOST, state.edge_port, netns(0), "127.0.0.1", CLUSTER_EDGE_PORT)))
    return out


def start_forwarder(folder: Path, state: NodesState) -> None:
    stop_forwarder(folder)
    log = folder / "forward.log"
    with log.open("ab") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "sandbox.forward",
                                 *routes(state)], stdout=subprocess.PIPE, stderr=handle,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    (folder / "forward.pid").write_text(str(proc.pid))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        raise SandboxError(f"the nodes' forwarder did not start; see {log}")


def stop_forwarder(folder: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        terminate(int((folder / "forward.pid").read_text()))
    (folder / "forward.pid").unlink(missing_ok=True)


# --- the swarm ------------------------------------------------------------------------------

def _swarm_state(index: int) -> str:
    return docker(index, "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


def form_swarm(count: int) -> None:
    """node0 inits (advertising its bridge address), the others join as workers; node0 gets
    the postgres and edge labels the cluster config asks for."""
    if _swarm_state(0) != "active":
        docker(0, "swarm", "init", "--advertise-addr", address(0),
               "--default-addr-pool", ADDRESS_POOL)
    token = docker(0, "swarm", "join-token", "-q", "worker").stdout.strip()
    for index in range(1, count):
        if _swarm_state(index) != "active":
            docker(index, "swarm", "join", "--token", token, "--advertise-addr",
                   address(index), f"{address(0)}:2377")
    from vedfin_ops.cluster.placement import EDGE_LABEL, POSTGRES_LABEL

    docker(0, "node", "update", "--label-add", f"{POSTGRES_LABEL}=true", "--label-add",
           f"{EDGE_LABEL}=true", name(0))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = docker(0, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
        ready = {line.split()[0] for line in lines.splitlines() if line.endswith(" Ready")}
        if ready >= {name(i) for i in range(count)}:
            return
        time.sleep(0.5)
    raise SandboxError(f"the nodes did not all become ready within 60 s: {lines.strip()}")


# --- up and down ------------------------------------------------------------------------------

def up(workdir: Path, count: int, registry_port: int, user: str,
       progress: object = print) -> NodesState:
    """The N nodes, their swarm, their sshd and forwarder; idempotent."""
    say = progress if callable(progress) else print
    if count < 1:
        raise SandboxError("the nodes: want 1 or more")
    for tool in ("ip", "iptables", "dockerd"):
        if shutil.which(tool) is None:
            raise SandboxError(f"{tool}: not installed (scripts/setup.sh installs it)")
    started = time.monotonic()
    folder = workdir / "cluster"
    state = NodesState.load(folder)
    if state.count and state.count != count:
        raise SandboxError(f"the sandbox runs {state.count} nodes; inv sandbox.down first")
    state.count, state.registry_port = count, registry_port
    state.edge_port = state.edge_port or free_port(CLUSTER_EDGE_PORT)
    while len(state.ssh_ports) < count:
        taken = set(state.ssh_ports)
        port = free_port(SSH_PORT_BASE + len(state.ssh_ports))
        while port in taken:
            port = free_port(port + 1)
        state.ssh_ports.append(port)
    state.save(folder)
    say(f"nodes: bridge {BRIDGE} ({HOST_ADDRESS}/24), {count} network namespaces")
    ensure_bridge()
    for index in range(count):
        ensure_namespace(index)
    say(f"nodes: {count} engines, each with its own data-root and socket")
    for index in range(count):
        start_engine(folder, index)
    say("nodes: forwarder (registry into each node, sshd and edge onto 127.0.0.1)")
    start_forwarder(folder, state)
    for index in range(count):
        start_sshd(folder, index, user)
    write_ssh_files(workdir, state, user)
    say(f"nodes: swarm ({name(0)} manager, the rest workers)")
    form_swarm(count)
    state.up_seconds = round(time.monotonic() - started, 2)
    state.save(folder)
    return state


def down(workdir: Path, progress: object = print) -> None:
    say = progress if callable(progress) else print
    folder = workdir / "cluster"
    state = NodesState.load(folder)
    if not state.count and not _link_exists(BRIDGE):
        return
    say(f"nodes: stopping {state.count} engines, their sshd and the forwarder")
    for index in range(state.count):
        with contextlib.suppress(OSError, ValueError):
            terminate(int((_engine_dir(folder, index) / "sshd.pid").read_text()))
    stop_forwarder(folder)
    for index in range(state.count):
        stop_engine(folder, index, wait=30)
    remove_network(max(state.count, 3))
    shutil.rmtree(folder, ignore_errors=True)
