"""An ACME certificate authority for the sandbox: Debian's `pebble` (Let's Encrypt's test
server), so the edge's Caddy obtains real certificates over ACME as on a VPS (`tls: auto`).

Pebble runs on this machine, listening on the swarm's bridge gateway (docker_gwbridge), which
is where a container of the swarm reaches its host; its own TLS certificate comes from a CA
made here (the edge trusts it as `edge.acmeCARoot`). It validates every challenge without
asking (PEBBLE_VA_ALWAYS_VALID): the sandbox's names are `.localhost` and no validation
traffic may leave the machine. The root that signs the issued certificates is made anew at
each start and fetched from its management API (`edge.caRoot` for smoke and preflight).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandbox.local import SandboxError, run, started_process, terminate, wait_ready
from sandbox.registry import cert_files, make_ca_and_cert, still_valid

BINARY = "pebble"


@dataclass(frozen=True)
class Acme:
    directory: str  # https://GATEWAY:PORT/dir, as the edge asks it
    api_ca: Path  # trusted for talking to pebble (edge.acmeCARoot)
    issuing_root: Path  # signs what pebble issues (edge.caRoot)


def gateway() -> str:
    """Where a swarm container reaches this machine: the gateway of docker_gwbridge. A swarm
    just made creates that bridge a moment later (seen on a fresh machine): asked for 15 s."""
    import time

    deadline = time.monotonic() + 15
    while True:
        found = run(["docker", "network", "inspect", "docker_gwbridge", "--format",
                     "{{(index .IPAM.Config 0).Gateway}}"], check=False).stdout.strip()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SandboxError("docker_gwbridge has no gateway: is this engine a swarm?")
        time.sleep(0.5)


def running(folder: Path) -> int | None:
    return started_process(folder / "pebble.pid", [BINARY, "-config",
                                                   str(folder / "pebble.json")])


def ensure(folder: Path, port: int, management_port: int) -> Acme:
    """pebble up (started once, kept across ups) and its issuing root saved."""
    if shutil.which(BINARY) is None:
        raise SandboxError(f"{BINARY} is not installed (apt-get install pebble)")
    folder.mkdir(parents=True, exist_ok=True)
    host = gateway()
    tls = folder / "tls"
    paths = cert_files(tls)
    fresh = not (still_valid(paths[:2]) and (folder / "host").exists()
                 and (folder / "host").read_text() == host)
    if fresh:
        stop(folder)
        make_ca_and_cert(tls, host, also=("127.0.0.1",))
        (folder / "host").write_text(host)
    if running(folder) is None:
        _start(folder, host, port, management_port, paths)
    return Acme(f"https://{host}:{port}/dir", paths[0], folder / "root.pem")


def _start(folder: Path, host: str, port: int, management_port: int,
           paths: tuple[Path, Path, Path]) -> None:
    config = folder / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"{host}:{port}",
        "managementListenAddress": f"127.0.0.1:{management_port}",
        "certificate": str(paths[1]), "privateKey": str(paths[2]),
        "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}, indent=2))
    env = {**os.environ, "PEBBLE_VA_ALWAYS_VALID": "1", "PEBBLE_VA_NOSLEEP": "1"}
    with (folder / "pebble.log").open("ab") as log:
        proc = subprocess.Popen([BINARY, "-config", str(config)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    (folder / "pebble.pid").write_text(str(proc.pid))
    import requests

    def answers() -> bool:  # with its root certificate, which the sandbox keeps
        try:
            root = requests.get(f"https://127.0.0.1:{management_port}/roots/0",
                                verify=str(paths[0]), timeout=1)
        except requests.RequestException:
            return False
        if root.ok and "BEGIN CERTIFICATE" in root.text:
            (folder / "root.pem").write_text(root.text)
            return True
        return False

    wait_ready(proc, answers, name=BINARY, log=folder / "pebble.log", seconds=20)


def stop(folder: Path) -> None:
    pid = running(folder)
    if pid is not None:
        terminate(pid)
    (folder / "pebble.pid").unlink(missing_ok=True)
