"""Images from the sandbox's registry, as a VPS gets them (issue 12): built and pushed by the
tool's own `build --push`, pulled by the engine with the host's login, pinned by digest. The
registry is Debian's Distribution with TLS and htpasswd; nothing here is faked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox import images
from vedfin_ops import load_config
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.remote.host import Host, connect

from .conftest import (
    ROOT,
    SANDBOX_DIR,
    docker,
    docker_logged_in,
    fab,
    registry_password,
    sandbox_image,
)
from .test_deploy import _version

pytestmark = pytest.mark.integration

API = "vedfin-production_api-production"
WEB = "vedfin-production_web-production"


@pytest.fixture(scope="module")
def config(sandbox_up: dict[str, Any]) -> Any:
    return load_config(sandbox_up["config"])


def _inv_build(sandbox_up: dict[str, Any], tag: str) -> dict[str, str]:
    """`inv build --tag T --push`, as a user runs it; {repo:tag: digest} from its output."""
    result = subprocess.run(["inv", "-r", str(ROOT), "build", "--tag", tag, "--push"],
                            capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, "VEDFIN_CONFIG": sandbox_up["config"]})
    assert result.returncode == 0, result.stderr
    assert registry_password() not in result.stdout + result.stderr
    out = {}
    for line in result.stdout.splitlines():
        ref, _, digest = line.split()[0].partition("@")
        out[ref] = digest
    assert set(out) == {sandbox_image(f"api:{tag}"), sandbox_image(f"web:{tag}")}, out
    assert all(d.startswith("sha256:") for d in out.values()), out
    return out


def _engine_has(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def _forget_locally(built: dict[str, str]) -> None:
    """The engine loses the images (as a fresh VPS never had them)."""
    for ref, digest in built.items():
        for name in (ref, f"{ref.rsplit(':', 1)[0]}@{digest}"):
            docker("image", "rm", "-f", name, check=False)
        assert not _engine_has(ref) and not _engine_has(f"{ref.rsplit(':', 1)[0]}@{digest}")


def _service_images() -> dict[str, str]:
    out = docker("service", "inspect", "--format",
                 "{{.Spec.Name}} {{.Spec.TaskTemplate.ContainerSpec.Image}}", API, WEB).stdout
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def _current(config: Any) -> str:
    return Path(config.remote.base_dir, "production", "current").resolve().name


class PsWatch:
    """Samples every process's command line on the host (this machine) while a deploy runs:
    the registry password must never be in one."""

    def __init__(self, secret: str) -> None:
        self.secret, self.seen, self.samples = secret, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.samples < 20000:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if self.secret in text:
                    self.seen.append(text)
            self.samples += 1
            time.sleep(0.02)

    def __enter__(self) -> PsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_build_push_then_deploy_pulls_images_the_engine_never_had(
        sandbox_up: dict[str, Any], config: Any) -> None:
    """The git-to-production path: `inv build --push --tag T`, then `deploy.production --tag
    T` on an engine that has never seen T; the password in no process, output or audit."""
    built = _inv_build(sandbox_up, "v3")
    _forget_locally(built)
    password = registry_password()
    with PsWatch(password) as watch:
        result = fab(sandbox_up, "deploy.production", "--tag", "v3")
    assert result.returncode == 0, result.stderr
    assert _version(config) == "api v3" and _version(config, "web") == "web v3"
    for ref, digest in built.items():  # pulled by digest: the engine holds exactly it
        assert _engine_has(f"{ref.rsplit(':', 1)[0]}@{digest}")
    assert set(_service_images().values()) == {f"{ref}@{d}" for ref, d in built.items()}
    assert watch.samples > 10 and watch.seen == []
    audit = Path(config.remote.base_dir, "audit.log").read_text()
    assert password not in result.stdout + result.stderr + audit
    status = fab(sandbox_up, "status", "--env", "production", "--json")
    services = {s["name"]: s for s in json.loads(status.stdout)["services"]}
    assert services[API]["digest"] == built[sandbox_image("api:v3")]


@pytest.mark.parametrize("problem", ["wrong password", "missing tag"])
def test_a_refused_login_or_a_missing_tag_changes_nothing(
        sandbox_up: dict[str, Any], config: Any, problem: str) -> None:
    before = (_current(config), _service_images(), _version(config))
    audit_before = Path(config.remote.base_dir, "audit.log").read_text()
    wrong = {"REGISTRY_PASSWORD": "wrong-password-4711"} if problem == "wrong password" else {}
    tag = "v404" if problem == "missing tag" else "v1"
    result = fab(sandbox_up, "deploy.production", "--tag", tag, extra_env=wrong)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    if problem == "missing tag":
        assert f"image {sandbox_image('api:v404')} not found in registry" in last
    else:
        assert "login refused" in last and "wrong-password-4711" not in result.stderr
    assert (_current(config), _service_images(), _version(config)) == before
    assert Path(config.remote.base_dir, "audit.log").read_text() == audit_before


def test_a_re_pushed_tag_deploys_as_new_and_rollback_runs_the_old_digest(
        sandbox_up: dict[str, Any], config: Any) -> None:
    assert fab(sandbox_up, "deploy.production", "--tag", "v3").returncode == 0
    assert _version(config) == "api v3"
    ref = sandbox_image("api:v3")
    docker("build", "--tag", ref, "--build-arg", "APP=api", "--build-arg", "VERSION=v3",
           "--build-arg", "NOTE=rebuilt", str(images.APPS_DIR), timeout=300)
    docker_logged_in("push", ref)
    again = fab(sandbox_up, "deploy.production", "--tag", "v3")
    assert again.returncode == 0 and "deploy.production: ok:" in again.stdout, again.stderr
    assert _version(config) == "api v3 rebuilt"
    back = fab(sandbox_up, "rollback", "--env", "production")
    assert back.returncode == 0, back.stderr
    assert _version(config) == "api v3"


def _registry_pid() -> int:
    return int((SANDBOX_DIR / "registry" / "registry.pid").read_text())


def test_the_registry_stopped_mid_deploy_ends_on_the_release_before(
        sandbox_up: dict[str, Any], config: Any) -> None:
    """The images of v5 are only in the registry; it stops once their digests are resolved,
    before the host pulls them (beside the backup, so that the rollout never waits on the
    registry): the deploy ends failed on the release that ran before, nothing pulled."""

    from tests.sandbox_sync import registry_lock

    _forget_locally(_inv_build(sandbox_up, "v5"))
    with registry_lock(exclusive=True):  # never while the nodes' tests pull from it
        _stop_the_registry_mid_deploy(sandbox_up, config)


def _stop_the_registry_mid_deploy(sandbox_up: dict[str, Any], config: Any) -> None:
    import sandbox

    before = (_current(config), _service_images(), _version(config))
    env = {**os.environ, "VEDFIN_CONFIG": sandbox_up["config"], "COLUMNS": "200"}
    proc = subprocess.Popen(["fab", "-r", str(ROOT), "-S", sandbox_up["ssh_config"], "-H",
                             "sandbox", "deploy.production", "--tag", "v5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stopped = False
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("> preflight:") and not stopped:
                os.kill(_registry_pid(), signal.SIGTERM)
                stopped = True
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
        sandbox.up(use_existing=True, workdir=SANDBOX_DIR, shipped=ROOT / "dokploy.yaml",
                   progress=lambda _m: None)  # the registry back for the next tests
    assert stopped, "the deploy never reached its preflight"
    assert proc.returncode == 1
    assert (_current(config), _service_images(), _version(config)) == before
    assert not _engine_has(sandbox_image("web:v5"))


def test_prune_keeps_every_image_a_kept_release_names_and_removes_the_rest(
        sandbox_up: dict[str, Any], config: Any) -> None:
    """keepReleases 1: two deploys later, the engine holds app images only of releases still
    on the host, and those of the current and the previous good release for sure."""
    unnamed = list(_inv_build(sandbox_up, "v6"))
    assert all(_engine_has(ref) for ref in unnamed)
    config.remote.keep_releases = 1
    host = Host(connect("sandbox", sandbox_up["ssh_config"]))
    try:
        for tag in ("v1", "v2"):
            assert deploy(host, config, "production", tag, say=lambda _m: None).result == "ok"
    finally:
        host.close()
        config.remote.keep_releases = load_config(sandbox_up["config"]).remote.keep_releases
    named = set()
    for record in Path(config.remote.base_dir).glob("*/releases/*/release.json"):
        named |= {ref.split("@")[1] for ref in json.loads(record.read_text())["images"].values()
                  if "@" in ref}
    releases = sorted(Path(config.remote.base_dir, "production", "releases").iterdir())
    assert len(releases) == 2  # current and previous good: the rest were pruned
    for rel in releases:
        pinned = json.loads((rel / "release.json").read_text())["images"].values()
        for ref in pinned:
            assert _engine_has(ref), f"{ref} of a kept release was pruned"
    held = docker("image", "ls", "--digests", "--no-trunc", "--format", "{{.Digest}} {{.ID}}",
                  "--filter", f"reference={sandbox_image('api')}", "--filter",
                  f"reference={sandbox_image('web')}").stdout.splitlines()
    containers = docker("ps", "-aq").stdout.split()
    in_use = set(docker("inspect", "--format", "{{.Image}}", *containers).stdout.split()
                 ) if containers else set()
    # what is left is named by a kept release, or used by a container (swarm keeps stopped
    # tasks of old releases in its history; a prune never forces them away)
    left = [line.split() for line in held if line.startswith("sha256:")]
    assert left and all(d in named or i in in_use for d, i in left), (left, named, in_use)
    for ref in unnamed:  # built and pushed, but no release ever ran it: pruned
        assert not _engine_has(ref), f"{ref} is still on the engine"


def test_a_digest_set_by_hand_under_the_release_tag_is_put_back_by_a_redeploy(
        sandbox_up: dict[str, Any], config: Any) -> None:
    """`docker service update --image api:v1@<v2's digest>` keeps the tag and changes the
    image: the redeploy of v1 must see it and run v1's digest again, not say ok over it."""
    assert fab(sandbox_up, "deploy.production", "--tag", "v2").returncode == 0
    v2 = _service_images()[API]
    assert fab(sandbox_up, "deploy.production", "--tag", "v1").returncode == 0
    v1 = _service_images()[API]
    assert _version(config) == "api v1"
    by_hand = f"{v1.split('@')[0]}@{v2.split('@')[1]}"
    docker_logged_in("service", "update", "--quiet", "--with-registry-auth", "--image", by_hand,
                     API, timeout=300)
    assert _version(config) == "api v2"  # v2's bits under the v1 tag
    again = fab(sandbox_up, "deploy.production", "--tag", "v1")
    assert again.returncode == 0 and "deploy.production: ok:" in again.stdout, again.stderr
    assert _service_images()[API] == v1
    assert _version(config) == "api v1"
