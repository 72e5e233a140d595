"""`inv sandbox.up --vps`: a bare Debian 12 VPS on this machine, for `host.prepare`.

Every other part of the sandbox is a machine the sandbox prepared itself, as root, before the
tool connects. This one is what a provider hands over: a Debian 12 root filesystem made by
`debootstrap` (minbase plus what a provider's image has: systemd, openssh-server, sudo,
ca-certificates, iproute2), booted by `systemd-nspawn -b` with its own systemd as PID 1, its
own users, packages and network namespace, reachable over SSH as root with a key, and nothing
else installed: no Docker, no ufw, no Netdata, no cron, no deploy user.

What stands in for a provider, and why each is not a fake of what `host.prepare` does:

- **Packages.** The VPS has no route out (the network rule: test traffic stays on this
  machine). Its apt source is a flat repository at /srv/apt of the .debs of Debian 12 that
  `host.prepare` installs (docker.io, ufw, netdata, cron and their dependencies), downloaded
  by this machine's apt from its own Debian source into a cache once. apt inside the VPS
  resolves, unpacks and configures them for real.
- **cgroups.** A VM has its cgroup controllers; nspawn mounts them read-only on a cgroup v1
  host. A unit in the root filesystem (`vedfin-sandbox-cgroups.service`, before containerd
  and docker) remounts them read-write: that is the VM's kernel, not a preparation step. The
  VPS lives in cgroups of its own (`/vedfin-vps` under each controller), with the VPS's
  memory as its limit, so its engine's containers never mix with this machine's.
- **The registry's CA.** The sandbox's registry has a certificate of its own CA; a real
  registry has a public one. The CA is put where Docker reads it for that registry
  (/etc/docker/certs.d/SERVER/ca.crt), as the sandbox's engine has it.
- **Reaching it.** The forwarder (forward.py) serves this machine's 127.0.0.1:SSH_PORT on the
  VPS's port 22 and 127.0.0.1:EDGE_PORT on its port 80, and the registry's 127.0.0.1:PORT
  inside the VPS; test traffic never leaves loopback. The VPS's edge publishes that same
  port number (the sandbox's configs all do), so 80/443 stay free for ufw's rules alone.

What it must never change on this machine, and how: swap is a kernel-wide setting, so
`swapon`/`swapoff` are refused inside the VPS by its system call filter (host.prepare reports
that step as not done, naming why) and /proc/sys stays read-only (`vm.swappiness` would be this
machine's); ufw's rules live in the VPS's own network namespace. The test compares this
machine's swap, swappiness and firewall before and after.

Ubuntu 24.04 is not built: this machine reaches Debian's packages only.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.local import JsonState, SandboxError, alive, ok, run, terminate
from sandbox.sshd import free_port, keygen

NETNS = "vedfin-vps"
HOST_END, VPS_END = "vfvps-h", "vfvps-c"
SUBNET = "10.231.9"
HOST_ADDRESS, ADDRESS = f"{SUBNET}.1", f"{SUBNET}.10"
SSH_PORT, EDGE_PORT = 2401, 18280
MACHINE = "vedfin-vps"
CGROUP = "vedfin-vps"
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")
MEMORY_LIMIT = 4 * 1024**3  # the runbook's VPS
CACHE = Path("/var/cache/vedfin-ops/vps")
SUITE = "bookworm"
# what a provider's Debian 12 image has beyond minbase
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "ca-certificates",
                 "iproute2", "procps", "kmod", "iptables")
# what host.prepare installs (vedfin_ops/host): the VPS's apt repository holds their closure
PREPARE_PACKAGES = ("docker.io", "ufw", "netdata", "cron", "curl", "acl")
CGROUP_UNIT = """[Unit]
Description=vedfin-ops sandbox: cgroup controllers read-write, as a VM's kernel has them
DefaultDependencies=no
Before=containerd.service docker.service sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for c in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$c" || true; done'

[Install]
WantedBy=sysinit.target
"""


@dataclass
class VpsState(JsonState):
    pid: int = 0
    ssh_port: int = 0
    edge_port: int = 0
    registry_port: int = 0
    rootfs: str = ""
    up_seconds: float = 0.0


def _folder(workdir: Path) -> Path:
    return workdir / "vps"


def debian_source() -> str:
    """This machine's Debian source (its first URI), the one debootstrap and apt use."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        found = re.search(r"^URIs:\s*(\S+)", deb822.read_text(), re.M)
        if found:
            return found.group(1)
    listed = Path("/etc/apt/sources.list")
    if listed.exists():
        found = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+\s+main", listed.read_text(), re.M)
        if found:
            return found.group(1)
    raise SandboxError("no Debian source in /etc/apt: the bare VPS needs one for debootstrap")


def _fingerprint() -> str:
    spec = "\n".join([SUITE, *BASE_PACKAGES, "|", *PREPARE_PACKAGES, CGROUP_UNIT, "v1"])
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def base_rootfs(progress: object = print) -> Path:
    """The pristine root filesystem and its apt repository, built once into the cache (a new
    spec, a new folder); never booted itself: each `up` boots a copy."""
    say = progress if callable(progress) else print
    cache = CACHE / f"{SUITE}-{_fingerprint()}"
    rootfs = cache / "rootfs"
    if (cache / "done").exists():
        return rootfs
    for tool in ("debootstrap", "systemd-nspawn", "dpkg-scanpackages"):
        if shutil.which(tool) is None:
            raise SandboxError(f"{tool}: not installed (scripts/setup.sh installs it)")
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    source = debian_source()
    say(f"vps: debootstrap {SUITE} (minbase + {len(BASE_PACKAGES)} packages, once, ~40 s)")
    run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
         str(rootfs), source], timeout=900)
    say(f"vps: the apt repository of {', '.join(PREPARE_PACKAGES)} and what they need")
    _apt_repository(cache, rootfs, source)
    (rootfs / "etc/apt/sources.list").write_text("deb [trusted=yes] file:/srv/apt ./\n")
    unit = rootfs / "etc/systemd/system/vedfin-sandbox-cgroups.service"
    unit.write_text(CGROUP_UNIT)
    wants = rootfs / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    (rootfs / "etc/hostname").write_text("vps\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 vps\n")
    # no getty on nspawn's console: the VPS is reached over SSH only
    (rootfs / "etc/systemd/system/console-getty.service").symlink_to("/dev/null")
    (rootfs / "var/lib/apt/lists").mkdir(parents=True, exist_ok=True)
    (cache / "done").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    return rootfs


def _apt_repository(cache: Path, rootfs: Path, source: str) -> None:
    """The .debs apt would fetch to install PREPARE_PACKAGES on this root filesystem, as a flat
    repository at rootfs/srv/apt. This machine's apt downloads them (its state apart, against
    the root filesystem's dpkg status), so nothing runs inside the root filesystem."""
    work = cache / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "etc"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "etc/vps.sources").write_text(
        f"Types: deb\nURIs: {source}\nSuites: {SUITE}\nComponents: main\n"
        f"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    options = ["-o", f"Dir::State={work}/state", "-o",
               f"Dir::State::status={rootfs}/var/lib/dpkg/status",
               "-o", f"Dir::Cache={work}/cache", "-o", "Dir::Etc::SourceList=/dev/null",
               "-o", f"Dir::Etc::SourceParts={work}/etc", "-o", "APT::Install-Recommends=false"]
    run(["apt-get", *options, "update", "-qq"], timeout=600)
    run(["apt-get", *options, "install", "-y", "-qq", "--download-only", *PREPARE_PACKAGES],
        timeout=900)
    repo = rootfs / "srv/apt"
    repo.mkdir(parents=True, exist_ok=True)
    for deb in (work / "cache/archives").glob("*.deb"):
        shutil.copy2(deb, repo / deb.name)
    index = run(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=repo).stdout
    (repo / "Packages").write_text(index)
    shutil.rmtree(work, ignore_errors=True)


# --- the network and the cgroups ---------------------------------------------------------

def _network() -> None:
    if not ok(["ip", "netns", "exec", NETNS, "true"]):
        run(["ip", "netns", "add", NETNS])
    if not ok(["ip", "-n", NETNS, "link", "show", "eth0"]):
        with contextlib.suppress(SandboxError):
            run(["ip", "link", "del", HOST_END])
        run(["ip", "link", "add", HOST_END, "type", "veth", "peer", "name", VPS_END])
        run(["ip", "link", "set", VPS_END, "netns", NETNS])
        run(["ip", "-n", NETNS, "link", "set", VPS_END, "name", "eth0"])
        run(["ip", "-n", NETNS, "addr", "add", f"{ADDRESS}/24", "dev", "eth0"])
        run(["ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", HOST_END])
    run(["ip", "link", "set", HOST_END, "up"])
    for link in ("lo", "eth0"):
        run(["ip", "-n", NETNS, "link", "set", link, "up"])
    # no default route: the VPS reaches nothing but this machine's end of its veth


def _cgroups() -> list[Path]:
    made = []
    for controller in CONTROLLERS:
        root = Path("/sys/fs/cgroup") / controller
        if not root.is_dir():
            continue
        group = root / CGROUP
        group.mkdir(exist_ok=True)
        if controller == "cpuset":  # a new cpuset has no cpus or mems until given them
            for key in ("cpuset.cpus", "cpuset.mems"):
                (group / key).write_text((root / key).read_text())
        if controller == "memory":
            (group / "memory.limit_in_bytes").write_text(str(MEMORY_LIMIT))
        made.append(group)
    return made


def _kill_cgroup_processes(seconds: float = 30.0) -> int:
    """SIGKILL every process in the VPS's cgroups until none is left; returns how many were
    killed. nspawn's own death does not end the machine: its init (PID 1 of the VPS's PID
    namespace) is nspawn's child and lives on with dockerd, containers and Netdata."""
    killed: set[int] = set()
    deadline = time.monotonic() + seconds
    while True:
        pids = set()
        for group in _existing_groups():
            for procs in group.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids |= {int(line) for line in procs.read_text().split()}
        pids.discard(os.getpid())
        if not pids or time.monotonic() > deadline:
            return len(killed)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.2)


def _existing_groups() -> list[Path]:
    """The VPS's cgroup in each controller that has one (what `_cgroups` made)."""
    groups = (Path("/sys/fs/cgroup") / controller / CGROUP for controller in CONTROLLERS)
    return [group for group in groups if group.is_dir()]


def _remove_cgroups() -> None:
    for group in _existing_groups():
        for child in sorted(group.rglob("*"), key=lambda p: -len(p.parts)):
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        with contextlib.suppress(OSError):
            group.rmdir()


# --- boot and stop --------------------------------------------------------------------------

def _boot(rootfs: Path, folder: Path) -> int:
    groups = _cgroups()
    log = folder / "nspawn.log"
    procs = " ".join(str(group / "cgroup.procs") for group in groups)
    # the launcher moves itself into the VPS's cgroups, then becomes nspawn
    script = f'for f in {procs}; do echo $$ > "$f"; done; exec "$@"'
    argv = ["/bin/sh", "-c", script, "vps", "systemd-nspawn", "--quiet", "-D", str(rootfs),
            "-b", f"--machine={MACHINE}", "--register=no", "--keep-unit",
            f"--network-namespace-path=/run/netns/{NETNS}", "--capability=all",
            "--system-call-filter=@keyring bpf", "--system-call-filter=~@swap",
            "--console=read-only"]
    with log.open("ab") as handle:
        proc = subprocess.Popen(argv, stdout=handle, stderr=handle, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc.pid


def _wait_ssh(port: int, timeout: float = 90) -> None:
    """Until the VPS's sshd answers through the forwarder with its banner."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), \
                socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            if sock.recv(64).startswith(b"SSH-"):
                return
        time.sleep(0.5)
    raise SandboxError(f"the bare VPS's sshd did not answer in {timeout:g}s "
                       f"(see .sandbox/vps/nspawn.log)")


def routes(state: VpsState) -> list[str]:
    from sandbox.forward import HOST, Route, spec

    return [spec(Route(NETNS, state.registry_port, HOST, "127.0.0.1", state.registry_port)),
            spec(Route(HOST, state.ssh_port, NETNS, "127.0.0.1", 22)),
            spec(Route(HOST, state.edge_port, NETNS, "127.0.0.1", state.edge_port))]


def _start_forwarder(folder: Path, state: VpsState) -> None:
    _stop_forwarder(folder)
    log = folder / "forward.log"
    with log.open("ab") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "sandbox.forward", *routes(state)],
                                stdout=subprocess.PIPE, stderr=handle, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (folder / "forward.pid").write_text(str(proc.pid))
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise SandboxError(f"the bare VPS's forwarder did not start; see {log}")


def _stop_forwarder(folder: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        terminate(int((folder / "forward.pid").read_text()))
    (folder / "forward.pid").unlink(missing_ok=True)


SSH_CONFIG = """# vedfin-ops sandbox: the bare VPS. As root: fab -S {path} -H vps-root host.prepare
# then as the deploy user host.prepare made: fab -S {path} -H vps deploy.production
Host vps-root
  User root
Host vps
  User deployer
Host vps-root vps
  HostName 127.0.0.1
  Port {port}
  HostKeyAlias vedfin-vps
  IdentityFile {key}
  IdentitiesOnly yes
  UserKnownHostsFile {known}
  StrictHostKeyChecking yes
"""


def host_key(state: VpsState) -> str:
    """The VPS's ed25519 host key line (`type base64`)."""
    kind, key = (Path(state.rootfs) / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    return f"{kind} {key}"


def up(workdir: Path, registry_port: int, registry_ca: Path | None = None,
       progress: object = print) -> VpsState:
    """Boot a fresh copy of the bare VPS (an existing one running is kept)."""
    say = progress if callable(progress) else print
    started = time.monotonic()
    folder = _folder(workdir.resolve())
    state = VpsState.load(folder)
    if state.pid and alive(state.pid):
        return state
    base = base_rootfs(say)
    folder.mkdir(parents=True, exist_ok=True)
    rootfs = folder / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    say("vps: a fresh copy of the bare root filesystem")
    run(["cp", "-a", "--reflink=auto", str(base), str(rootfs)], timeout=600)
    key = folder / "id_ed25519"
    keygen(key, "vedfin-sandbox-vps-root")
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    if registry_ca is not None:
        certs = rootfs / f"etc/docker/certs.d/127.0.0.1:{registry_port}"
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(registry_ca, certs / "ca.crt")
    state = VpsState(ssh_port=free_port(SSH_PORT), edge_port=free_port(EDGE_PORT),
                     registry_port=registry_port, rootfs=str(rootfs))
    _network()
    say("vps: booting (systemd-nspawn -b: its own systemd, users, network namespace)")
    state.pid = _boot(rootfs, folder)
    state.save(folder)
    _start_forwarder(folder, state)
    _wait_ssh(state.ssh_port)
    known = folder / "known_hosts"
    known.write_text(f"vedfin-vps {host_key(state)}\n")
    (folder / "ssh_config").write_text(SSH_CONFIG.format(
        path=folder / "ssh_config", port=state.ssh_port, key=key, known=known))
    state.up_seconds = round(time.monotonic() - started, 2)
    state.save(folder)
    say(f"vps: up in {state.up_seconds:g}s; ssh -F {folder / 'ssh_config'} root@vps")
    return state


def down(workdir: Path, progress: object = print) -> None:
    """Stop the VPS and remove every trace: its processes, network, cgroups, files."""
    say = progress if callable(progress) else print
    folder = _folder(workdir)
    state = VpsState.load(folder)
    if state.pid and alive(state.pid):
        say("vps: stopping")
        # nothing on it is kept: nspawn killed, then every process of the VPS's cgroups
        # (a clean poweroff waits for each container's grace period, a minute)
        with contextlib.suppress(OSError):
            os.killpg(state.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    _kill_cgroup_processes()
    _stop_forwarder(folder)
    run(["ip", "netns", "del", NETNS], check=False)
    run(["ip", "link", "del", HOST_END], check=False)
    _remove_cgroups()
    shutil.rmtree(folder, ignore_errors=True)


def vps_config(real: dict[str, Any], shipped: dict[str, Any], *, edge_port: int,
               kuma_image: str | None = None) -> dict[str, Any]:
    """The real apps' sandbox config (real.py) as a team's first config for a new VPS: the
    shipped remote folder, deploy user, swap, firewall and monitoring, the VPS's address, and
    the edge on the forwarded port. Alerts leave out the webhook and mail sinks, which sit on
    this machine's loopback where the VPS has no route. `kuma_image`: Uptime Kuma's image in
    the sandbox's registry (none: the VPS's config asks for no Uptime Kuma)."""
    data = copy.deepcopy(real)
    data["remote"] = {**shipped["remote"], "rolloutTimeout": data["remote"]["rolloutTimeout"]}
    # the address its domains resolve to: through the forwarder, this machine's loopback (a
    # real VPS's public address is on its interface; swarm advertises it too)
    data["vps"] = {**shipped["vps"], "address": "127.0.0.1"}
    data["firewall"] = dict(shipped["firewall"])
    data["edge"] = {**data["edge"], "httpPort": edge_port}
    # the api's CORS origin is the web's URL through this edge (the web's build keeps the
    # main sandbox's API URL: no browser runs against the VPS)
    for app in data["applications"]:
        app["environment"] = [
            re.sub(r":\d+$", f":{edge_port}", item) if str(item).startswith("CORS_ORIGINS=")
            else item for item in app.get("environment", [])]
    monitoring = {key: value for key, value in shipped["monitoring"].items()
                  if key not in ("uptimeKuma", "uptimeKumaPort")}
    data["monitoring"] = {**monitoring, "uptimeKumaPort": None, "check": True, "apply": True}
    if kuma_image:  # Uptime Kuma as Dokploy runs it, from the sandbox's registry
        data["monitoring"].update(uptimeKumaPort=shipped["monitoring"]["uptimeKumaPort"],
                                  uptimeKuma=shipped["monitoring"]["uptimeKuma"],
                                  uptimeKumaImage=kuma_image)
    data["alerts"] = {key: value for key, value in data.get("alerts", {}).items()
                      if key not in ("slack", "pagerDuty", "pagerDutyUrl", "email")}
    data.pop("secretsFile", None)
    data["secretsFile"] = "secrets.env"
    return data
