"""`vedfin init --ci github`: the workflow rendered from the config (its secrets, host, branch
and extras), what it never holds (a secret's value, accept-new), its key step run in bash as
the runner runs it, and `init`'s refusals. tests/integration/test_ci_recipe.py runs the whole
workflow against the sandbox."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.test_tasks import run
from tests.conftest import PRIVATE_KEY_HEAD, PRIVATE_KEY_TAIL, SHIPPED
from vedfin_ops import __version__
from vedfin_ops.config.loader import load_config
from vedfin_ops.errors import ConfigError, UsageError
from vedfin_ops.rendering.ci import workflow, write_workflow


def _parsed(text: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(text)
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads a bare `on` as true
    return data


@pytest.fixture
def shipped_workflow() -> dict[str, Any]:
    return _parsed(workflow(load_config(SHIPPED), "github").text)


def _step(data: dict[str, Any], word: str) -> dict[str, Any]:
    return next(s for s in data["jobs"]["deploy"]["steps"] if word in s["name"])


def test_the_shipped_configs_workflow_deploys_production_on_a_push_to_main(
        shipped_workflow: dict[str, Any]) -> None:
    data = shipped_workflow
    assert data["on"]["push"] == {"branches": ["main"]}
    assert data["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    assert data["permissions"] == {"contents": "read"}
    job = data["jobs"]["deploy"]
    assert job["env"] == {"VPS": "deployer@103.54.153.248", "VEDFIN_CONFIG": "dokploy.yaml"}
    uses = [s["uses"] for s in job["steps"] if "uses" in s]
    assert uses == ["actions/checkout@v4", "actions/setup-python@v5"]
    assert _step(data, "install")["run"] == (
        f"python -m pip install 'vedfin-ops[s3,uptime-kuma]=={__version__}'")
    deploy = _step(data, "deploy")
    assert deploy["run"] == 'vedfin -i ~/.ssh/vedfin_deploy -H "$VPS" deploy.production --build'


def test_every_secret_of_production_and_shared_comes_from_the_repository_secret(
        shipped_workflow: dict[str, Any]) -> None:
    env = _step(shipped_workflow, "deploy")["env"]
    names = set(load_config(SHIPPED).secret_names("production"))
    assert "REGISTRY_PASSWORD" in names and "JWT_SECRET_STAGING" not in names
    assert set(env) == names | {"VEDFIN_HOST_KEY_FINGERPRINT"}
    assert all(value == f"${{{{ secrets.{name} }}}}" for name, value in env.items())


def test_no_secret_value_reaches_the_workflow(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    config_file = tmp_path / "dokploy.yaml"
    shutil.copy(SHIPPED, config_file)
    config = load_config(config_file)
    values = {name: f"value-of-{name.lower()}-9f8e7d" for name in config.secret_names()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    (tmp_path / ".vedfin").mkdir()
    secrets_file = tmp_path / ".vedfin" / "secrets.env"
    secrets_file.write_text("POSTGRES_PASSWORD=from-the-file-5c4b3a\n")
    secrets_file.chmod(0o600)
    text = workflow(config, "github").text
    assert not [v for v in [*values.values(), "from-the-file-5c4b3a"] if v in text]


def test_the_job_runs_in_the_github_environment_it_deploys(tmp_path: Path) -> None:
    """Repository secrets reach any workflow a writer pushes on any branch: the deploy's
    secrets belong to a GitHub environment of the env's name, whose deployment branch rule
    keeps them to the deploy branch; the header and the key step's errors say so."""
    text = workflow(load_config(SHIPPED), "github").text
    assert _parsed(text)["jobs"]["deploy"]["environment"] == "production"
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "The job runs in the GitHub environment `production`, which holds" in header
    assert "Selected branches and tags, with the rule main alone" in header
    assert "Required reviewers            (optional)" in header
    assert "Environment secrets           every secret below; never as repository" in header
    assert "Repository secrets (" not in text and "set the repository secret" not in text
    shutil.copy(SHIPPED, tmp_path / "dokploy.yaml")
    staging = workflow(load_config(tmp_path / "dokploy.yaml"), "github", env="staging").text
    assert _parsed(staging)["jobs"]["deploy"]["environment"] == "staging"
    assert "with the rule staging alone" in staging


def test_the_host_key_is_pinned_never_accepted(shipped_workflow: dict[str, Any]) -> None:
    text = yaml.safe_dump(shipped_workflow)
    assert "accept-new" not in text and "StrictHostKeyChecking" not in text
    keys = _step(shipped_workflow, "host key")
    assert keys["env"]["VEDFIN_HOST_KEY"] == "${{ secrets.VEDFIN_HOST_KEY }}"
    assert ">> ~/.ssh/known_hosts" in keys["run"]


def _key_step(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The key step's script as GitHub runs it (bash -eo pipefail), in an empty HOME."""
    script = _step(_parsed(workflow(load_config(SHIPPED), "github").text), "host key")["run"]
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          env={"PATH": os.environ["PATH"], "HOME": str(home),
                               "VEDFIN_SSH_KEY": "", "VEDFIN_HOST_KEY": "",
                               "VEDFIN_HOST_KEY_FINGERPRINT": "", **env},
                          capture_output=True, text=True, timeout=30, check=False)


def test_the_key_step_writes_a_0600_key_and_pins_the_host_key_line(tmp_path: Path) -> None:
    key = f"{PRIVATE_KEY_HEAD}\nb3BlbnNzaC1rZXktdjE=\n{PRIVATE_KEY_TAIL}"
    line = "[203.0.113.10]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOb"
    done = _key_step(tmp_path, VEDFIN_SSH_KEY=key, VEDFIN_HOST_KEY=line)
    assert done.returncode == 0, done.stderr
    ssh = tmp_path / ".ssh"
    assert (ssh / "vedfin_deploy").read_text() == key + "\n"
    assert (ssh / "known_hosts").read_text() == line + "\n"
    for path in (ssh / "vedfin_deploy", ssh / "known_hosts"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ssh.stat().st_mode) == 0o700
    assert key not in done.stdout + done.stderr


def test_the_key_step_stops_without_a_key_or_any_host_key(tmp_path: Path) -> None:
    nothing = _key_step(tmp_path / "a")
    assert nothing.returncode == 1 and "::error::set the secret VEDFIN_SSH_KEY of the GitHub " \
        "environment production" in nothing.stdout
    no_host = _key_step(tmp_path / "b", VEDFIN_SSH_KEY="k")
    assert no_host.returncode == 1 and "VEDFIN_HOST_KEY" in no_host.stdout
    assert not (tmp_path / "b" / ".ssh" / "known_hosts").exists()
    fingerprint = _key_step(tmp_path / "c", VEDFIN_SSH_KEY="k",
                            VEDFIN_HOST_KEY_FINGERPRINT="SHA256:" + "A" * 43)
    assert fingerprint.returncode == 0, fingerprint.stderr  # the tool pins it on first contact


def test_host_branch_and_extras_follow_the_config(tmp_path: Path) -> None:
    data = yaml.safe_load(SHIPPED.read_text())
    for app in data["applications"]:
        app["branch"] = "release" if app["name"].endswith("-production") else app["branch"]
    data["backups"].pop("s3")
    data["monitoring"].pop("uptimeKuma")
    data["remote"]["user"] = "ops"
    (tmp_path / "dokploy.yaml").write_text(yaml.safe_dump(data))
    config = load_config(tmp_path / "dokploy.yaml")
    parsed = _parsed(workflow(config, "github").text)
    assert parsed["on"]["push"]["branches"] == ["release"]
    assert parsed["jobs"]["deploy"]["env"]["VPS"] == "ops@103.54.153.248"
    assert _step(parsed, "install")["run"] == (
        f"python -m pip install vedfin-ops=={__version__}")
    other = _parsed(workflow(config, "github", host="ci@vps.example:2222").text)
    assert other["jobs"]["deploy"]["env"]["VPS"] == "ci@vps.example:2222"
    data["vps"].pop("address")
    (tmp_path / "dokploy.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"vps\.address: not set: the workflow deploys to it"):
        workflow(load_config(tmp_path / "dokploy.yaml"), "github")
    data["applications"][1]["branch"] = "main"
    (tmp_path / "dokploy.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"production's apps deploy from different branches "
                                          r"\(main, release\)"):
        workflow(load_config(tmp_path / "dokploy.yaml"), "github", host="x@y")


def test_the_workflow_goes_to_the_repository_root_naming_the_config_from_there(
        tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "deploy").mkdir()
    shutil.copy(SHIPPED, tmp_path / "deploy" / "dokploy.yaml")
    made = workflow(load_config(tmp_path / "deploy" / "dokploy.yaml"), "github")
    assert made.path == tmp_path / ".github" / "workflows" / "deploy.yml"
    assert _parsed(made.text)["jobs"]["deploy"]["env"]["VEDFIN_CONFIG"] == "deploy/dokploy.yaml"
    assert write_workflow(made) == made.path and made.path.read_text() == made.text
    with pytest.raises(UsageError, match=r"deploy\.yml exists: init --force to overwrite it"):
        write_workflow(made)


def test_init_writes_once_and_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    shutil.copy(SHIPPED, tmp_path / "dokploy.yaml")
    written = tmp_path / ".github" / "workflows" / "deploy.yml"
    first = run("init", "--ci", "github", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (f"init: {written} (store the secrets its header lists as "
                                    f"secrets of the GitHub environment production)")
    written.write_text("# edited by hand\n")
    again = run("init", "--ci", "github", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: {written} exists: init --force to overwrite it"
    assert written.read_text() == "# edited by hand\n"
    forced = run("init", "--ci", "github", "--force", cwd=tmp_path)
    assert forced.returncode == 0 and "deploy.production --build" in written.read_text()


def test_init_refuses_an_unknown_or_missing_ci(tmp_path: Path) -> None:
    shutil.copy(SHIPPED, tmp_path / "dokploy.yaml")
    unknown = run("init", "--ci", "gitlab", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: init: --ci 'gitlab': unknown CI (known: github)"
    missing = run("init", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: init: --ci is required (one of: github)"
    assert not (tmp_path / ".github").exists()
