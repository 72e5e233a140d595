"""`build --tag T [--push]`: the apps' images made where the tool runs, as Dokploy's push does.

Each app image (one per repository, shared by the envs that run it) is built from its
`build:` config with the user's own Docker setup, tagged `repo:T` and, with `--push` and only
once every image built, pushed to the config's registry: the digest printed is the one the
push sent, the one a deploy of T will pin. The registry login lives in a throw-away Docker
config folder (password on stdin), so no credential is left behind on the build machine.

`deploy --build` (`BuildFirst`) does the same for one env as the deploy's first step, at the
commit of the work tree that holds the config (deploy/source.py), once that tree is checked:
the env's branch, no uncommitted change. That step runs before the deploy's `Operation`
installs its signal handling, so it installs the same (`building`): SIGTERM (a CI runner
cancelling the job) and SIGHUP end it as Ctrl-C does, never Python's death on the spot, which
left the docker child pushing and the registry login on disk. Every docker child is stopped
on the way out (`stop_child`), the login's folder removed, and one line says what was pushed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vedfin_ops.config.model import Application, Build, Config
from vedfin_ops.config.names import image
from vedfin_ops.deploy import source as git_source
from vedfin_ops.errors import CheckFailed, ConfigError
from vedfin_ops.remote.command import Command, hide
from vedfin_ops.remote.commands import build as docker
from vedfin_ops.run.interrupts import signals_as_interrupts
from vedfin_ops.run.operation import RunFailed, describe

STOP_WAIT = 10.0  # seconds a docker child has to end on SIGTERM before it gets SIGKILL


class BuildError(CheckFailed):
    """docker build / push failed (exit 1); the message ends with Docker's own last line."""


@dataclass(frozen=True)
class Built:
    image: str  # repo:tag
    digest: str | None  # sha256:... as the registry serves it (None without --push)
    seconds: float


def targets(config: Config, env: str | None = None) -> list[tuple[Application, Build]]:
    """One (app, build) per image repository; two apps naming one repository with different
    build configs are refused, as one tag cannot hold two images."""
    seen: dict[str, tuple[Application, Build]] = {}
    for app in config.apps(env):
        if app.build is None:
            continue
        first = seen.setdefault(app.image_repo, (app, app.build))
        if first[1] != app.build:
            raise ConfigError(config.source, _key(config, app),
                              f"{first[0].name} builds {app.image_repo} differently (one "
                              f"tag, one image)")
    if not seen:
        raise ConfigError(config.source, "applications", "no application has a `build:` "
                          "section" + (f" in {env}" if env else ""))
    return list(seen.values())


@dataclass(frozen=True)
class BuildFirst:
    """`deploy --build`: build and push the env's images before deploying them. The flags
    that loosen its checks are explicit, each on its own."""

    # build a tree with uncommitted changes (tagged <commit>-dirty-<8 hex of the changes>)
    allow_dirty: bool = False
    any_branch: bool = False  # build whatever branch is checked out
    branch: str | None = None  # a detached HEAD's branch (default: $GITHUB_REF_NAME)


def check_build_first(config: Config, env: str, request: BuildFirst, tag: str | None,
                      environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """`deploy --build`'s checks, before anything is built or a host reached (exit 2): a
    registry to push to, a `build:` section on every app of `env`, and the work tree that
    holds the config on the env's branch and clean. Returns the tag to build (`tag`, else
    the commit) and what the release records of its source."""
    if config.registry is None:
        raise ConfigError(config.source, "registry", "deploy --build pushes the images it "
                          "builds: it needs a registry section")
    for app in config.apps(env):
        if app.build is None:
            raise ConfigError(config.source, _key(config, app),
                              f"{app.name} has no build section (deploy --build builds every "
                              f"app of {env})")
    targets(config, env)  # two apps building one repository differently
    source = git_source.read_source(git_source.config_folder(config))
    branch = git_source.checked_out_branch(source, request.branch, environ)
    if not request.any_branch:
        git_source.check_branch(config, env, branch, source.root)
    if not request.allow_dirty:
        git_source.check_clean(source)
    return tag or source.tag(), git_source.record(source, branch)


def _key(config: Config, app: Application) -> str:
    return f"applications[{config.applications.index(app)}].build"


def build_command(ref: str, spec: Build, tag: str) -> list[str]:
    """`docker build`'s arguments (no shell: nothing to quote)."""
    return docker.build_args(ref, str(Path(spec.context) / spec.dockerfile),
                             spec.args_for(tag), spec.context)


_PUSHED = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def _telling(text: str) -> str:
    """Docker's line worth one line: the last that says error, else the last."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def _docker(command: Command, what: str, *, docker_config: str | None = None,
            timeout: float = 1800) -> str:
    """`command` run here; `what` names it in an error, `docker_config` is the Docker config
    folder the command names (`--config`), if any."""
    stdin = command.secret_stdin.value if command.secret_stdin is not None else None
    env = None
    if docker_config:  # a throw-away config has no contexts: keep talking to the same engine
        env = {**os.environ, **({} if os.environ.get("DOCKER_HOST") else _engine_host())}
    try:
        result = _run(command.argv(), stdin, env, timeout)
    except FileNotFoundError:
        raise BuildError(f"{what}: the docker client is not installed here") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: no end in {timeout:g}s") from None
    if result.returncode != 0:
        said = hide(_telling(result.stderr or result.stdout), command.secrets)
        raise BuildError(f"{what} failed: {said}")
    return result.stdout


def _run(argv: list[str], stdin: str | None, env: dict[str, str] | None,
         timeout: float) -> subprocess.CompletedProcess[str]:
    """`argv` run to its end. On any way out before that (a timeout, an interrupt raised by a
    signal) the child is stopped first (`stop_child`): subprocess.run would SIGKILL it at
    once, leaving the engine no moment to cancel a push cleanly."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else
                               subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = process.communicate(stdin, timeout=timeout)
    except BaseException:
        stop_child(process)
        raise
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def stop_child(process: subprocess.Popen[str], wait: float | None = None) -> None:
    """SIGTERM, up to `wait` (default STOP_WAIT) seconds for it to end, then SIGKILL; reaped,
    its pipes closed. A docker push ended so never finishes after the tool has stopped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_WAIT if wait is None else wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            with suppress(OSError):
                pipe.close()


def _engine_host() -> dict[str, str]:
    """DOCKER_HOST of the user's current docker context (none for the default one)."""
    try:
        found = subprocess.run(docker.docker_context_host().argv(), capture_output=True,
                               text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"DOCKER_HOST": found} if found else {}


@contextmanager
def registry_session(server: str, username: str, password: str) -> Iterator[str]:
    """A Docker config folder logged into `server`, removed on the way out."""
    folder = tempfile.mkdtemp(prefix="vedfin-docker-")
    try:
        _docker(docker.docker_login(server, username, password, folder),
                what=f"docker login {server}", docker_config=folder, timeout=60)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def building(env: str, pushed: list[Built], say: Callable[[str], None]) -> Iterator[None]:
    """`deploy --build`'s phase before the host, under the signal handling of the deploy's
    operation: Ctrl-C, SIGTERM and SIGHUP raise `Interrupted` (the docker child is stopped and
    the login's folder removed on the way out), which ends as one RunFailed (exit 1) naming
    the images in `pushed` (filled by `build_images` as each push ends). A second signal
    meanwhile is noted, not raised."""
    with signals_as_interrupts(notice=say, busy="stopping docker") as guard:
        try:
            yield
        except KeyboardInterrupt as exc:
            with guard.shielded():
                images = ", ".join(f"{b.image}@{b.digest}" for b in pushed)
                done = f"pushed before the stop: {images}" if pushed else "nothing was pushed"
                raise RunFailed(f"deploy {env} interrupted: {describe(exc)} while building "
                                f"and pushing its images; {done}; the host was not touched",
                                interrupted=True) from None


def build_images(config: Config, tag: str, secrets: Mapping[str, str], *, push: bool = False,
                 env: str | None = None, say: Callable[[str], None] = print,
                 pushed: list[Built] | None = None) -> list[Built]:
    """Build every app image of `env` (default: all) at `tag` with the user's own Docker
    setup (context, builder); with `push`, only once all are built, push each (appended to
    `pushed` as each push ends: what an interrupted run did push)."""
    todo = targets(config, env)
    registry = config.registry
    if push and registry is None:
        raise ConfigError(config.source, "registry", "--push needs a registry section")
    for app, spec in todo:
        dockerfile = Path(spec.context) / spec.dockerfile
        if not dockerfile.is_file():
            raise ConfigError(config.source, _key(config, app) + ".dockerfile",
                              f"{dockerfile} does not exist")
    password = secrets.get(registry.password_secret, "") if registry is not None else ""
    if push and registry is not None and not password:
        raise ConfigError(config.source, "registry.password",
                          f"{registry.password} is not set")
    built = [_build_one(app, spec, tag, say) for app, spec in todo]
    if not push or registry is None:
        return built
    from vedfin_ops.remote.registry import Registry

    client = Registry(registry.server, registry.username, password, ca=registry.ca_root)
    with registry_session(registry.server, registry.username, password) as folder:
        out = []
        for item in built:
            said = _docker(docker.docker_push(item.image, folder),
                           what=f"docker push {item.image}", docker_config=folder)
            # the digest docker pushed (a parallel push of the same tag cannot swap it);
            # the registry is asked only if the client did not say
            match = _PUSHED.search(said)
            digest = match.group(1) if match else client.digest(item.image)
            say(f"pushed {item.image}@{digest}")
            out.append(Built(item.image, digest, item.seconds))
            if pushed is not None:
                pushed.append(out[-1])
        return out


def _build_one(app: Application, spec: Build, tag: str, say: Callable[[str], None]) -> Built:
    ref = image(app, tag)
    dockerfile = str(Path(spec.context) / spec.dockerfile)
    say(f"build {ref} from {dockerfile}")
    started = time.monotonic()
    _docker(docker.docker_build(ref, dockerfile, spec.args_for(tag), spec.context),
            what=f"docker build {ref}")
    return Built(ref, None, round(time.monotonic() - started, 2))
