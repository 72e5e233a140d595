"""The CI recipe run as GitHub's runner would run it, against the sandbox.

A repository shaped as V-EdFinance's (the sandbox's config at its root as `dokploy.yaml`, the
stand-in apps' sources beside it under `apps/`, committed on `main`) gets its workflow from
the installed `vedfin init --ci github`, committed too. Then, as the runner does: a fresh
clone (actions/checkout), the wheel's virtualenv first on PATH (actions/setup-python), an
empty HOME, and each `run:` step of the rendered YAML in bash (`bash --noprofile --norc -eo
pipefail`, GitHub's default shell) in the clone, with the job's and the step's `env:` and each
`${{ secrets.NAME }}` taken from the repository secrets: the sandbox's secrets file, its
deploy key and its host key's known_hosts line. Nothing else of this machine's environment
reaches the steps (no secrets file in the clone, no ssh_config, no agent): what deploys is the
workflow's own files and variables.

The install step runs for real with pip pointed at this checkout's wheel and no index (the
wheel is what a release publishes; the extras it names are installed on this machine already).

One deploy (`deploy.production --build`): the stand-in images built at the clone's commit,
pushed to the sandbox's registry, production deployed pinned by digest, its release recorded
as built from that commit on main. The module switches production off the default config's
tag, as the HTTPS and Traefik modules switch its edge (tests/conftest.py SWITCHING_MODULES).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from .conftest import ROOT, SANDBOX_DIR, SWITCHED, docker, sandbox_host

pytestmark = pytest.mark.integration

EXPRESSION = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def repository(folder: Path) -> Path:
    """V-EdFinance's layout: `dokploy.yaml` (the sandbox's) at the root, `apps/` beside it."""
    data = yaml.safe_load((SANDBOX_DIR / "dokploy.yaml").read_text())
    for app in data["applications"]:
        app["build"]["context"] = "apps"
    folder.mkdir()
    (folder / "dokploy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copytree(ROOT / "sandbox" / "apps", folder / "apps")
    (folder / ".gitignore").write_text(".vedfin/\nsecrets.env\n")
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "ci@example.com")
    git(folder, "config", "user.name", "ci")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "V-EdFinance with its dokploy.yaml")
    return folder


def repository_secrets() -> dict[str, str]:
    """What the team would paste into the repository's secrets."""
    from vedfin_ops.config import secret_store

    known_hosts = (SANDBOX_DIR / "known_hosts").read_text().splitlines()
    return {**secret_store.read_file(SANDBOX_DIR / "secrets.env"),
            "VEDFIN_SSH_KEY": (SANDBOX_DIR / "id_ed25519").read_text().strip(),
            "VEDFIN_HOST_KEY": next(line for line in known_hosts
                                    if line.startswith("[127.0.0.1]:"))}


def evaluated(env: dict[str, Any] | None, secrets: dict[str, str]) -> dict[str, str]:
    """A step's `env:` as the runner evaluates it: a secret not set is an empty string; any
    other expression would be this test's blind spot, so none is allowed."""
    out = {}
    for name, value in (env or {}).items():
        text = EXPRESSION.sub(lambda m: secrets.get(m.group(1), ""), str(value))
        assert "${{" not in text, f"{name}: an expression this test cannot evaluate: {value}"
        out[name] = text
    return out


def run_step(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                          check=False)


def test_the_workflow_builds_pushes_and_deploys_production_as_the_runner_would(
        sandbox_up: dict[str, Any], installed: Any, tmp_path: Path) -> None:
    from vedfin_ops.config.loader import load_config
    from vedfin_ops.run.env_run import listing
    from vedfin_ops.run.layout import Layout

    config = load_config(SANDBOX_DIR / "dokploy.yaml")
    origin = repository(tmp_path / "v-edfinance")
    host = f"{config.remote.user}@127.0.0.1:{sandbox_up['ssh_port']}"
    clean = {k: v for k, v in os.environ.items()
             if k not in ("VEDFIN_CONFIG", "PYTHONPATH", "VIRTUAL_ENV")}
    init = subprocess.run([str(installed.vedfin), "init", "--ci", "github", "--host", host],
                          cwd=origin, capture_output=True, text=True, timeout=120, check=False,
                          env=clean)
    assert init.returncode == 0, init.stderr
    workflow_file = origin / ".github" / "workflows" / "deploy.yml"
    git(origin, "add", ".github")
    git(origin, "commit", "-q", "-m", "the deploy workflow")

    workspace = tmp_path / "runner" / "work"  # actions/checkout: a clone on its branch
    git(tmp_path, "clone", "-q", str(origin), str(workspace))
    commit = git(workspace, "rev-parse", "--short=12", "HEAD").strip()
    home = tmp_path / "runner" / "home"
    home.mkdir()

    workflow = yaml.safe_load(workflow_file.read_text())
    job = workflow["jobs"]["deploy"]
    secrets = repository_secrets()
    runner = {"PATH": f"{installed.venv / 'bin'}:{os.environ['PATH']}", "HOME": str(home),
              "LANG": "C.UTF-8", "CI": "true", "GITHUB_ACTIONS": "true",
              "GITHUB_REF_NAME": "main", "GITHUB_WORKSPACE": str(workspace), "COLUMNS": "200"}
    said = []
    try:
        for step in job["steps"]:
            if "uses" in step:  # done above: the clone and the wheel's virtualenv
                assert step["uses"].split("@")[0] in ("actions/checkout",
                                                      "actions/setup-python")
                continue
            env = {**runner, **evaluated(job.get("env"), secrets),
                   **evaluated(step.get("env"), secrets)}
            if "pip install" in step["run"]:  # this checkout's wheel, no index (no network)
                assert "vedfin-ops" in step["run"]
                env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(installed.wheel.parent),
                           PIP_DISABLE_PIP_VERSION_CHECK="1")
            done = run_step(step["run"], env, workspace)
            said.append(done.stdout + done.stderr)
            assert done.returncode == 0, f"step {step['name']!r}: {done.stderr[-3000:]}"
    finally:  # production may run the commit's tag now, not the default config's
        SWITCHED.write_text("test_ci_recipe.py\n")
    deployed = said[-1]
    assert "deploy.production: ok:" in deployed, deployed[-3000:]
    assert f"build: production's images at {commit}" in deployed
    for name, value in secrets.items():  # no step printed a secret
        if len(value) >= 8:
            assert value not in "".join(said), name
    key = home / ".ssh" / "vedfin_deploy"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # pinned, never accepted: known_hosts holds the one line the repository gave
    assert (home / ".ssh" / "known_hosts").read_text() == secrets["VEDFIN_HOST_KEY"] + "\n"

    ids = docker("service", "ls", "-q", "--filter",
                 "label=com.docker.stack.namespace=vedfin-production").stdout.split()
    images = docker("service", "inspect", "--format",
                    "{{.Spec.TaskTemplate.ContainerSpec.Image}}", *ids).stdout.split()
    assert images and all(f":{commit}@sha256:" in ref for ref in images), images
    answer = requests.get(f"http://127.0.0.1:{config.edge.http_port}/version",
                          headers={"Host": "api.v-edfinance.localhost"}, timeout=5)
    assert answer.text.strip() == f"api {commit}"  # VERSION={tag}: the commit, built here
    conn = sandbox_host(sandbox_up)
    try:
        meta = listing(conn, Layout.of(config, "production")).meta
    finally:
        conn.close()
    assert meta["built_from"] == {"commit": commit, "branch": "main", "dirty": 0}
    assert meta["tag"] == commit
