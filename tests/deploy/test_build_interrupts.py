"""`deploy --build` stopped by a signal while it builds and pushes, before any host: SIGTERM
(a CI runner cancelling the job) and SIGHUP (a closed terminal) end it as Ctrl-C does. The
docker child is stopped (SIGTERM, a bounded wait, SIGKILL), the throw-away Docker config
holding the registry login is removed, and one line says which images were pushed and that
the host was not touched (exit 1, as the tool's other interrupts).

`docker` is a shell script first on PATH: builds and logins succeed at once, the push of the
web image (or, with `SLOW_BUILD`, a build) does not end for SLEEPS seconds (`exec sleep`: the
process is the one the tool started; `DEAF_TO_SIGTERM` makes it ignore SIGTERM). The signal
is real: sent to this process (the pipeline called as a function) or to a `fab` process
running the task."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.test_build_first import git, repo
from tests.fake.host import FakeHost
from vedfin_ops.config.loader import load_config
from vedfin_ops.deploy.build import BuildFirst
from vedfin_ops.deploy.options import DeployOptions
from vedfin_ops.run.operation import RunFailed

SERVER = "registry.example:5000"
DIGEST = "sha256:" + "0" * 63 + "7"
SLEEPS = 30  # the slow push's own end: a test that never signals still ends

FAKE_DOCKER = r"""#!/bin/sh
config="" SLOW_BUILD=${SLOW_BUILD:-no build is slow} SLOW_PUSH=${SLOW_PUSH:-no push is slow}
if [ "$1" = "--config" ]; then config=$2; shift 2; fi
printf '%s %s\n' "$1" "$config" >> "$FAKE_DOCKER_LOG"
case "$1" in
  context) exit 0 ;;
  build)
    case "$3" in
      *"$SLOW_BUILD"*) echo $$ > "$FAKE_DOCKER_LOG.sleeping"; exec sleep "$FAKE_DOCKER_SLEEPS" ;;
    esac ;;
  login)
    cat > /dev/null
    printf '{"auths": {"%s": {"auth": "Y2k6czNjcmV0"}}}\n' "$5" > "$config/config.json"
    echo "Login Succeeded" ;;
  push)
    case "$2" in
      *"$SLOW_PUSH"*)
        [ -z "$DEAF_TO_SIGTERM" ] || trap '' TERM
        echo $$ > "$FAKE_DOCKER_LOG.sleeping"
        exec sleep "$FAKE_DOCKER_SLEEPS" ;;
    esac
    echo "$2: digest: sha256:$(printf '%064d' 7) size: 528" ;;
esac
"""


@dataclass
class Project:
    root: Path  # a work tree holding the config and the apps' Dockerfiles
    env: dict[str, str]  # what the tool's process needs: PATH, TMPDIR, the secrets
    log: Path  # the fake docker's calls
    tmp: Path  # TMPDIR: where the throw-away Docker config is made
    commit: str

    @property
    def sleeping(self) -> Path:
        return Path(f"{self.log}.sleeping")

    def image(self, kind: str) -> str:
        return f"{SERVER}/vedfin/{kind}:{self.commit}"

    def configs(self) -> list[str]:
        """The Docker config folders the fake docker was handed."""
        return sorted({line.split()[1] for line in self.log.read_text().splitlines()
                       if len(line.split()) > 1})


@pytest.fixture
def project(tmp_path: Path, shipped_data: dict[str, Any]) -> Iterator[Project]:
    root = repo(tmp_path / "repo")
    data = copy.deepcopy(shipped_data)
    for app in data["applications"]:
        kind = app["name"].split("-")[0]
        app["image"] = f"{SERVER}/vedfin/{kind}"
        app["build"] = {"context": f"apps/{kind}"}
        (root / "apps" / kind).mkdir(parents=True, exist_ok=True)
        (root / "apps" / kind / "Dockerfile").write_text("FROM scratch\n")
    data["registry"] = {"server": SERVER, "username": "ci", "password": "${REGISTRY_PASSWORD}"}
    data["secrets"]["shared"]["REGISTRY_PASSWORD"] = "manual"
    (root / "dokploy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "config and apps")
    config = load_config(root / "dokploy.yaml")
    local_bin, tmp = tmp_path / "local-bin", tmp_path / "tmp"
    local_bin.mkdir()
    tmp.mkdir()
    (local_bin / "docker").write_text(FAKE_DOCKER)
    (local_bin / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    log.touch()
    env = {"PATH": f"{local_bin}:{os.environ['PATH']}", "TMPDIR": str(tmp),
           "FAKE_DOCKER_LOG": str(log), "SLOW_PUSH": "/vedfin/web:",
           "FAKE_DOCKER_SLEEPS": str(SLEEPS), "VEDFIN_CONFIG": str(root / "dokploy.yaml"),
           **{name: f"s3cret-value-{name.lower()}" for name in config.secret_names("production")}}
    made = Project(root, env, log, tmp, git(root, "rev-parse", "--short=12", "HEAD").strip())
    yield made
    if made.sleeping.exists():  # a failed test's push: never left running
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(made.sleeping.read_text()), signal.SIGKILL)


def _wait_for(path: Path, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists() or not path.read_text().strip():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _said(project: Project, signame: str) -> str:
    return (f"deploy production interrupted: interrupted ({signame}) while building and "
            f"pushing its images; pushed before the stop: {project.image('api')}@{DIGEST}; "
            f"the host was not touched")


@pytest.mark.parametrize("deaf", [False, True], ids=["docker-stops", "docker-ignores-sigterm"])
def test_sigterm_while_pushing_stops_docker_removes_the_login_and_says_what_was_pushed(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deaf: bool) -> None:
    from vedfin_ops.deploy import build
    from vedfin_ops.deploy.pipeline import deploy

    for name, value in project.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GITHUB_REF_NAME", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr("tempfile.tempdir", None)  # TMPDIR read again
    if deaf:
        monkeypatch.setenv("DEAF_TO_SIGTERM", "1")
        monkeypatch.setattr(build, "STOP_WAIT", 1.0)
    host, config = FakeHost(tmp_path / "host"), load_config(project.root / "dokploy.yaml")
    said: list[str] = []

    def unhandled(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("SIGTERM reached the test: the build phase does not handle it")

    def send_sigterm() -> None:
        if _wait_for(project.sleeping):
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, unhandled)
    sender = threading.Thread(target=send_sigterm, daemon=True)
    started = time.monotonic()
    try:
        sender.start()
        with pytest.raises(RunFailed) as stopped:
            deploy(host, config, "production", None,  # type: ignore[arg-type]
                   DeployOptions(build=BuildFirst()), say=said.append)
    finally:
        signal.signal(signal.SIGTERM, previous)
        sender.join(timeout=5)
    took = time.monotonic() - started
    assert str(stopped.value) == _said(project, "SIGTERM")
    assert stopped.value.interrupted and stopped.value.exit_code == 1
    assert _gone(int(project.sleeping.read_text()))  # stopped, and reaped
    assert took < SLEEPS - 5 and (not deaf or took >= 1.0)  # the bounded wait, then SIGKILL
    assert project.configs() and not any(Path(c).exists() for c in project.configs())
    assert list(project.tmp.iterdir()) == []  # the login's folder is gone
    assert f"pushed {project.image('api')}@{DIGEST}" in said
    assert host.command_lines == []


def test_ctrl_c_while_building_pushes_nothing_and_makes_no_login(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped during `docker build` (SIGINT, as a terminal sends it): no push, no login."""
    from vedfin_ops.deploy.pipeline import deploy

    for name, value in {**project.env, "SLOW_BUILD": "/vedfin/api:"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GITHUB_REF_NAME", raising=False)
    monkeypatch.setattr("tempfile.tempdir", None)
    host, config = FakeHost(tmp_path / "host"), load_config(project.root / "dokploy.yaml")
    sender = threading.Thread(daemon=True, target=lambda: _wait_for(project.sleeping)
                              and os.kill(os.getpid(), signal.SIGINT))
    sender.start()
    with pytest.raises(RunFailed) as stopped:
        deploy(host, config, "production", None,  # type: ignore[arg-type]
               DeployOptions(build=BuildFirst()))
    sender.join(timeout=5)
    assert str(stopped.value) == (
        "deploy production interrupted: interrupted (Ctrl-C) while building and pushing its "
        "images; nothing was pushed; the host was not touched")
    assert _gone(int(project.sleeping.read_text()))
    assert [line.split()[0] for line in project.log.read_text().splitlines()] == ["build"]
    assert list(project.tmp.iterdir()) == [] and host.command_lines == []


def _stopped(project: Project, argv: list[str], sig: signal.Signals) -> tuple[int, str]:
    """`argv` run in the project as a user runs it, sent `sig` once the slow docker runs:
    its exit code and stderr (bounded: killed if it outlives the fake's own sleep)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VEDFIN_CONFIG", "GITHUB_REF_NAME", "DOCKER_HOST")}
    env.update(project.env, COLUMNS="500")
    proc = subprocess.Popen(argv, cwd=project.root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(project.sleeping), proc.communicate(timeout=SLEEPS + 30)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=SLEEPS + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err
    assert _gone(int(project.sleeping.read_text()))
    assert list(project.tmp.iterdir()) == []  # the login's folder is gone
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_fab_deploy_build_stopped_by_a_signal_ends_in_one_line_exit_1(
        project: Project, sig: signal.Signals) -> None:
    code, err = _stopped(project, [shutil.which("fab") or "fab", "-r", str(ROOT), "-H",
                                   "nobody@127.0.0.1:1", "deploy.production", "--build"], sig)
    assert code == 1, err
    assert err.strip().splitlines()[-1] == f"error: {_said(project, sig.name)}", err


def test_inv_build_push_stopped_by_sigterm_stops_docker_and_removes_the_login(
        project: Project) -> None:
    """`inv build --push` shares the push and its login: the same way out (exit 1)."""
    code, err = _stopped(project, [shutil.which("inv") or "inv", "-r", str(ROOT), "build",
                                   "--tag", "t1", "--push"], signal.SIGTERM)
    assert code == 1, err
    assert err.strip().splitlines()[-1] == "error: interrupted", err
    assert f"pushed {SERVER}/vedfin/api:t1@{DIGEST}" in err
