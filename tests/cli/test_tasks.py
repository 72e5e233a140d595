"""The tasks as a user runs them: `inv ...` in a shell; exit codes and output per the contract."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SHIPPED
from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World
from vedfin_ops.run.lock import Lock

v1_live, world = orchestration.v1_live, orchestration.world  # the scripted host
INV = [sys.executable, "-m", "invoke", "--search-root", str(ROOT)]


def run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
        tool: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "VEDFIN_CONFIG"}
    full_env.update(env or {})
    return subprocess.run([*(tool or INV), *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=60, check=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory holding a copy of the shipped config, as a user's checkout would."""
    shutil.copy(SHIPPED, tmp_path / "dokploy.yaml")
    return tmp_path


def test_inv_and_fab_list_the_whole_contract() -> None:
    names = {"render", "check-config", "capacity-report", "smoke-test", "secrets.generate",
             "preflight", "db-init", "migrate", "deploy.production", "deploy.staging",
             "deploy.dev", "rollback", "status", "sandbox.up", "sandbox.down", "sandbox.status",
             "build"}
    for tool in (INV, [shutil.which("fab") or "fab"]):
        listing = run("--list", tool=tool).stdout
        listed = {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}
        assert names <= listed, names - listed


def test_check_config_summarises_the_shipped_file(project: Path) -> None:
    result = run("check-config", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "dokploy.yaml: valid; 6 apps in 3 envs; capacity critical" in result.stdout


def test_bad_config_exits_2_with_one_error_line_and_writes_nothing(project: Path) -> None:
    text = (project / "dokploy.yaml").read_text().replace("memory: 1024m, cpus: 1.0}\n    "
                                                          "replicas: 2", "memory: 1024x, cpus: "
                                                          "1.0}\n    replicas: 2", 1)
    (project / "dokploy.yaml").write_text(text)
    for task in (["check-config"], ["render", "--env", "production", "--out", "out"],
                 ["capacity-report", "--json"]):
        result = run(*task, cwd=project)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            'error: dokploy.yaml: applications[1].resources.memory: "1024x" is not a size like '
            "1536m or 1.5g"]
        assert "Traceback" not in result.stdout + result.stderr
    assert not (project / "out").exists()


def test_unknown_env_exits_2(project: Path) -> None:
    result = run("capacity-report", "--env", "prod", cwd=project)
    assert result.returncode == 2
    assert result.stderr.startswith('error: dokploy.yaml: environments: unknown env "prod"')


def test_config_flag_and_env_variable_pick_the_file(project: Path, tmp_path: Path) -> None:
    other = project / "other.yaml"
    (project / "dokploy.yaml").rename(other)
    assert run("check-config", cwd=project).returncode == 2
    assert run("check-config", "--config", str(other), cwd=project).returncode == 0
    assert run("check-config", cwd=project, env={"VEDFIN_CONFIG": str(other)}).returncode == 0


def test_render_writes_files_and_env_files_0600_with_placeholders(project: Path) -> None:
    result = run("render", "--env", "production", "--out", "build", "--tag", "v7", cwd=project,
                 env={"POSTGRES_PASSWORD": "from-the-environment-93"})
    assert result.returncode == 0, result.stderr
    out = project / "build"
    assert (out / "stacks/production.yml").exists() and (out / "db/init-db.sql").exists()
    for env_file in (out / "env").iterdir():
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "POSTGRES_PASSWORD=from-the-environment-93" in (out / "env/postgres.env").read_text()
    assert "from-the-environment-93" not in result.stdout + result.stderr
    assert "placeholders written" in result.stderr and "JWT_SECRET_PROD" in result.stderr
    assert "ghcr.io/v-edfinance/api:v7" in (out / "stacks/production.yml").read_text()


def test_capacity_report_json_is_the_contract_object(project: Path) -> None:
    result = run("capacity-report", "--env", "production", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["committed"]["memory_mb"] == 7000
    assert report["services_only"] == {"memory_mb": 6400, "cpus": 6.25}
    assert report["status"] == "critical"


def test_capacity_report_table_shows_the_runbook_rows(project: Path) -> None:
    result = run("capacity-report", "--env", "production", cwd=project,
                 env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    assert "1536m" in result.stdout and "3072m" in result.stdout and "7000m" in result.stdout
    assert "pause dev and staging" in result.stdout


def test_secrets_generate_fills_a_private_file_and_prints_names_only(project: Path) -> None:
    first = run("secrets.generate", "--env", "production", cwd=project)
    assert first.returncode == 0, first.stderr
    path = project / ".vedfin" / "secrets.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in path.read_text().splitlines())
    assert set(values) == {"POSTGRES_PASSWORD", "JWT_SECRET_PROD", "JWT_REFRESH_SECRET_PROD",
                           "ENCRYPTION_KEY_PROD"}
    for value in values.values():
        assert len(value) == 64 and int(value, 16) >= 0
        assert value not in first.stdout + first.stderr
    assert "fill by hand  GEMINI_API_KEY" in first.stdout
    second = run("secrets.generate", "--env", "production", cwd=project)
    assert "kept       JWT_SECRET_PROD" in second.stdout
    assert dict(line.split("=", 1) for line in path.read_text().splitlines()) == values
    rendered = run("render", "--env", "production", "--out", "b", cwd=project)
    assert f"JWT_SECRET={values['JWT_SECRET_PROD']}" in (project / "b/env/api-production.env"
                                                         ).read_text()
    assert values["JWT_SECRET_PROD"] not in rendered.stdout + rendered.stderr


def test_capacity_chart_is_written_as_png_and_html(project: Path) -> None:
    for name in ("chart.png", "chart.html"):
        result = run("capacity-report", "--env", "production", "--chart", name, cwd=project)
        assert result.returncode == 0, result.stderr
        data = (project / name).read_bytes()
        assert data.startswith(b"\x89PNG") if name.endswith(".png") else b"<svg" in data
    html = (project / "chart.html").read_text()
    assert "api-production committed: 3072 MiB" in html and "RAM 4096 MiB" in html
    bad = run("capacity-report", "--chart", "chart.gif", cwd=project)
    assert bad.returncode == 2 and "use a .png, .svg or .html file" in bad.stderr


@pytest.mark.parametrize("task", ["deploy.production", "db-init", "rollback", "status",
                                  "preflight"])
def test_remote_tasks_without_a_host_say_how_to_give_one(project: Path, task: str) -> None:
    result = run(task, cwd=project)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: this task runs on a host: fab -H HOST TASK (e.g. "
                                     "fab -S .sandbox/ssh_config -H sandbox TASK)")


def test_fab_resolves_deploy_production_to_the_same_task(project: Path) -> None:
    fab = shutil.which("fab") or "fab"
    result = run("-r", str(ROOT), "deploy.production", cwd=project, tool=[fab])
    assert result.returncode == 2 and "this task runs on a host" in result.stderr


def test_deploy_with_a_missing_secret_exits_2_before_touching_the_host(project: Path) -> None:
    fab = shutil.which("fab") or "fab"
    # a host that does not exist: the secrets check must fail first, without connecting
    result = run("-r", str(ROOT), "-H", "nobody@127.0.0.1:1", "deploy.production", cwd=project,
                 tool=[fab])
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: dokploy.yaml: secrets.production: not set: ")


# Every task's flags as `inv --help TASK` lists them (`=`: takes a value). Users and their
# scripts type these: a change here is a change of the interface. Invoke gives out the short
# flags in the order of a task's signature, so the shared options (cli/target.py) close it.
FLAGS = {
    "audit": ("-l --lines=  -j --json  -a --accept-new-host-key  -h --host-key-fingerprint=  "
              "-c --config="),
    "build": "-t --tag=  -p --push  -e --env=  -c --config=",
    "capacity-report": "-e --env=  -j --json  -c --chart=  -o --config=",
    "check-config": "-c --config=",
    "cluster.drain": ("-n --node=  -a --accept-new-host-key  -h --host-key-fingerprint=  "
                      "-c --config="),
    "cluster.join": ("-n --node=  -a --accept-new-host-key  -h --host-key-fingerprint=  "
                     "-c --config="),
    "cluster.status": ("-j --json  -a --accept-new-host-key  -h --host-key-fingerprint=  "
                       "-c --config="),
    "db-init": "-a --accept-new-host-key  -h --host-key-fingerprint=  -c --config=",
    "db.backup": "-e --env=  -a --accept-new-host-key  -h --host-key-fingerprint=  -c --config=",
    "db.backups": ("-e --env=  -j --json  -s --s3  -a --accept-new-host-key  "
                   "-h --host-key-fingerprint=  -c --config="),
    "db.drill": "-e --env=  -f --from=  -a --accept-new-host-key  -h --host-key-fingerprint=  "
                "-c --config=",
    "db.restore": ("-e --env=  -f --from=  -i --into=  -y --yes  -a --accept-new-host-key  "
                   "-h --host-key-fingerprint=  -c --config="),
    "db.schedule": "-a --accept-new-host-key  -h --host-key-fingerprint=  -c --config=",
    "deploy.dev": ("-t --tag=  -s --skip-preflight  -f --force  -a --allow-shared  "
                   "-n --no-backup  -u --full-replicas  -b --build  -l --allow-dirty  "
                   "-y --any-branch  -r --branch=  -e --require-zero-downtime  "
                   "-c --accept-new-host-key  "
                   "-h --host-key-fingerprint=  -o --config="),
    "deploy.env": ("-e --env=  -t --tag=  -s --skip-preflight  -f --force  -a --allow-shared  "
                   "-n --no-backup  -u --full-replicas  -b --build  -l --allow-dirty  "
                   "-y --any-branch  -r --branch=  -q --require-zero-downtime  "
                   "-c --accept-new-host-key  "
                   "-h --host-key-fingerprint=  -o --config="),
    "deploy.production": ("-t --tag=  -s --skip-preflight  -f --force  -a --allow-shared  "
                          "-n --no-backup  -u --full-replicas  -b --build  -l --allow-dirty  "
                          "-y --any-branch  -r --branch=  -e --require-zero-downtime  "
                   "-c --accept-new-host-key  "
                          "-h --host-key-fingerprint=  -o --config="),
    "deploy.staging": ("-t --tag=  -s --skip-preflight  -f --force  -a --allow-shared  "
                       "-n --no-backup  -u --full-replicas  -b --build  -l --allow-dirty  "
                       "-y --any-branch  -r --branch=  -e --require-zero-downtime  "
                   "-c --accept-new-host-key  "
                       "-h --host-key-fingerprint=  -o --config="),
    "init": "-c --ci=  -h --host=  -f --force  -o --config=",
    "host.prepare": ("-p --plan  -k --key=  -a --accept-new-host-key  "
                     "-h --host-key-fingerprint=  -c --config="),
    "lock.release": ("-e --env=  -s --shared  -a --accept-new-host-key  "
                     "-h --host-key-fingerprint=  -c --config="),
    "logs": ("-e --env=  -a --app=  -s --since=  -l --lines=  -f --follow  -g --grep=  "
             "-c --accept-new-host-key  -h --host-key-fingerprint=  -o --config="),
    "migrate": ("-e --env=  -t --tag=  -a --accept-new-host-key  -h --host-key-fingerprint=  "
                "-c --config="),
    "monitoring.apply": ("-j --json  -a --accept-new-host-key  -h --host-key-fingerprint=  "
                         "-c --config="),
    "monitoring.status": ("-j --json  -a --accept-new-host-key  -h --host-key-fingerprint=  "
                          "-c --config="),
    "pause": ("-e --env=  -f --force  -a --accept-new-host-key  -h --host-key-fingerprint=  "
              "-c --config="),
    "preflight": ("-e --env=  -j --json  -a --accept-new-host-key  -h --host-key-fingerprint=  "
                  "-c --config="),
    "render": "-e --env=  -o --out=  -t --tag=  -c --config=",
    "report": ("-e --env=  -h --html=  -a --accept-new-host-key  -o --host-key-fingerprint=  "
               "-c --config="),
    "restart": ("-e --env=  -a --app=  -c --accept-new-host-key  -h --host-key-fingerprint=  "
                "-o --config="),
    "resume": "-e --env=  -a --accept-new-host-key  -h --host-key-fingerprint=  -c --config=",
    "rollback": ("-e --env=  -r --restore-db  -a --accept-new-host-key  "
                 "-h --host-key-fingerprint=  -c --config="),
    "scale": ("-e --env=  -r --replicas=  -f --force  -a --accept-new-host-key  "
              "-h --host-key-fingerprint=  -c --config="),
    "secrets.generate": "-e --env=  -c --config=",
    "smoke-test": "-e --env=  -j --json  -d --database-url=  -c --config=",
    "status": ("-e --env=  -j --json  -a --accept-new-host-key  -h --host-key-fingerprint=  "
               "-c --config="),
    "verify": ("-e --env=  -j --json  -a --accept-new-host-key  -h --host-key-fingerprint=  "
               "-c --config="),
}


def _arguments(found: Any) -> list[Any]:
    """A task's arguments as Invoke parses them, the task left as it was (Invoke's
    `get_arguments` hands each help text out once)."""
    import copy

    task = copy.copy(found)
    task.help = dict(found.help)
    return list(task.get_arguments())


def _flags(found: Any) -> str:
    def flag(arg: Any) -> str:
        short = [n for n in arg.names if len(n) == 1]
        long = next(n for n in arg.names if len(n) > 1)
        return (f"-{short[0]} " if short else "") + f"--{long}" + ("" if arg.kind is bool
                                                                   else "=")

    return "  ".join(flag(a) for a in _arguments(found))


def test_every_task_keeps_its_flags() -> None:
    from vedfin_ops.cli.tasks import ns

    assert {name: _flags(ns[name]) for name in ns.task_names} == FLAGS


def test_every_host_task_takes_both_host_key_flags_with_their_help() -> None:
    """A host-key flag missing on one task would leave its user only the environment
    variable; the shared options come from one place, help included."""
    from vedfin_ops.cli.target import HOST_HELP
    from vedfin_ops.cli.tasks import ns

    on_a_host = 0
    for name in ns.task_names:
        args = {a.attr_name or a.name: a for a in _arguments(ns[name])}
        assert args["config"].help == HOST_HELP["config"], name
        shared = {"accept_new_host_key", "host_key_fingerprint"} & set(args)
        if shared:
            on_a_host += 1
            assert len(shared) == 2, name
            for option in shared:
                assert args[option].help == HOST_HELP[option], (name, option)
    assert on_a_host == 29  # 25 tasks, deploy.production, .staging, .dev and deploy --env


def test_help_lists_each_flag_with_its_help(project: Path) -> None:
    """`vedfin --help TASK` (Fabric's program) and `inv --help TASK` read the signature the
    shared options' decorator gives each task."""
    vedfin = [sys.executable, "-m", "vedfin_ops"]
    for tool, task in ((vedfin, "deploy.production"), (vedfin, "deploy"), (INV, "status")):
        shown = run("--help", task, cwd=project, tool=tool)
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        for words in ("-c, --accept-new-host-key pin the host key of a host never seen before",
                      "--host-key-fingerprint=STRING require this host key",
                      "--config=STRING config file (default: $VEDFIN_CONFIG, else "
                      "dokploy.yaml)"):
            assert words.removeprefix("-c, ") in text, (task, words)
    deploy_help = " ".join(run("--help", "deploy", cwd=project, tool=vedfin).stdout.split())
    assert "-e STRING, --env=STRING an env the config names under environments:" in deploy_help
    assert "-u, --full-replicas inside the off-hours window" in deploy_help


def test_deploy_env_is_listed_as_the_deploy_collections_default() -> None:
    listing = run("--list").stdout
    assert "deploy.env (deploy)" in listing
    for name in ("deploy.production", "deploy.staging", "deploy.dev"):
        assert name in listing


def test_deploy_of_an_env_the_config_does_not_name_exits_2_before_any_host(
        project: Path) -> None:
    fab = shutil.which("fab") or "fab"
    # a host that does not exist: the env check must fail first, without connecting
    for extra in (["--env", "qa"], ["--env", "qa", "--tag", "v2", "--force"]):
        result = run("-r", str(ROOT), "-H", "nobody@127.0.0.1:1", "deploy", *extra,
                     cwd=project, tool=[fab])
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            'error: dokploy.yaml: environments: unknown env "qa" (known: dev, staging, '
            'production)']
    missing = run("-r", str(ROOT), "-H", "nobody@127.0.0.1:1", "deploy", cwd=project,
                  tool=[fab])
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("error: deploy: --env is required: one of dev, staging, "
                                      "production (dokploy.yaml: environments)")


def test_deploy_env_runs_the_pipeline_of_an_env_beyond_the_seeds_three(project: Path) -> None:
    """A fourth env under `environments:` is deployable as `deploy --env qa`: the pipeline's
    first check (its secrets) answers for qa, before any connection."""
    import yaml

    data = yaml.safe_load((project / "dokploy.yaml").read_text())
    data["environments"]["qa"] = {"database": "vedfinance_qa"}
    data["secrets"]["qa"] = data["secrets"]["dev"]
    for app in [a for a in data["applications"] if a["name"].endswith("-dev")]:
        data["applications"].append({**app, "name": app["name"].replace("-dev", "-qa"),
                                     "domain": app["domain"].replace("dev.", "qa.")})
    (project / "dokploy.yaml").write_text(yaml.safe_dump(data))
    fab = shutil.which("fab") or "fab"
    result = run("-r", str(ROOT), "-H", "nobody@127.0.0.1:1", "deploy", "--env", "qa",
                 cwd=project, tool=[fab])
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: dokploy.yaml: secrets.qa: not set: ")


def test_build_needs_a_tag_and_shows_its_help(project: Path) -> None:
    assert "--push" in run("build", "--help", cwd=project).stdout
    missing = run("build", cwd=project)
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("error: build: --tag is required (e.g. --tag "
                                      "$(git rev-parse --short HEAD))")
    bad = run("build", "--tag", "no good", cwd=project)
    assert bad.returncode == 2 and "not a valid image tag" in bad.stderr
    # the shipped file builds V-EdFinance's apps/api and apps/web, beside the config
    none = run("build", "--tag", "v1", cwd=project)
    assert none.returncode == 2
    assert none.stderr.strip() == (f"error: dokploy.yaml: applications[0].build.dockerfile: "
                                   f"{project}/apps/api/Dockerfile does not exist")


def _lock_of(world: World, kind: str) -> Lock:
    """A fresh lock object of `kind` as the tool's runs make it (with the hint they print)."""
    from vedfin_ops.cluster.membership import Drain
    from vedfin_ops.run.lock import shared_lock
    from vedfin_ops.run.operation import Operation

    if kind == "cluster":
        return Drain(world.host, world.config, "node1").lock
    if kind == "shared":
        return shared_lock(world.host, world.layout.shared_lock, action="deploy production")
    return Operation(world.host, world.config, kind).lock


@pytest.mark.parametrize("half", [False, True], ids=["whole", "half-taken"])
@pytest.mark.parametrize("kind", ["production", "shared", "cluster"])
def test_a_stale_lock_goes_with_the_command_its_refusal_prints(world: World, kind: str,
                                                                half: bool) -> None:
    """The way out a refused run names must work: `lock.release` with the printed flags
    removes that lock (and only it), audited. Half-taken: an empty folder, as an older
    version's take cut after its mkdir left it (refused as held, not a remote error)."""
    import inspect
    import re
    import shlex

    from vedfin_ops.cli.tasks import lock_release as task
    from vedfin_ops.remote import commands
    from vedfin_ops.reports.status import release_lock
    from vedfin_ops.run.lock import LockHeld

    stale = _lock_of(world, kind)
    folder = stale.path.rsplit("/", 1)[0]
    if half:
        Path(stale.path).mkdir(parents=True)
    else:
        stale.acquire(prefix=commands.mkdir_p(folder) + " && ")  # its run was killed
    refused = _lock_of(world, kind).try_acquire()
    assert isinstance(refused, LockHeld)
    printed = re.search(r"fab -H HOST lock\.release([^)]*)\)", str(refused))
    assert printed, str(refused)
    words = shlex.split(printed.group(1))
    flags = {"env": "production", "shared": False}
    while words:
        flag = words.pop(0).removeprefix("--")
        assert flag in inspect.signature(task.body).parameters, flag
        flags[flag] = True if flag == "shared" else words.pop(0)
    release_lock(world.host, world.config, **flags)
    assert not Path(stale.path).exists()
    assert "lock.release" in json.dumps(world.audit()[-1])
    assert _lock_of(world, kind).try_acquire() is None  # the next run takes it



def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


def test_render_refuses_to_write_env_files_git_would_commit(project: Path) -> None:
    """`inv render --out DIR` writes env files that hold the secrets: inside a git work tree
    they must be git-ignored (and untracked), as secrets.generate insists for its file;
    refused before anything is written, bad input (exit 2), one line saying what to do."""
    _git(project, "init", "-q")
    env = {"POSTGRES_PASSWORD": "from-the-environment-93"}
    refused = run("render", "--env", "production", "--out", "build", cwd=project, env=env)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: --out build: build/env/api-production.env would hold secrets in the git work "
        f"tree {project.resolve()} but is not git-ignored: add /build/ to "
        f"{project.resolve()}/.gitignore (or render outside the repository)"]
    assert not (project / "build").exists()

    (project / ".gitignore").write_text("/build/\n")
    written = run("render", "--env", "production", "--out", "build", cwd=project, env=env)
    assert written.returncode == 0, written.stderr
    assert "POSTGRES_PASSWORD=from-the-environment-93" in (
        project / "build/env/postgres.env").read_text()

    _git(project, "add", "-f", "build/env/postgres.env")  # tracked: ignoring it is not enough
    tracked = run("render", "--env", "production", "--out", "build", cwd=project, env=env)
    assert tracked.returncode == 2
    assert tracked.stderr.startswith("error: --out build: build/env/postgres.env is tracked "
                                     "by git in ")
    assert "from-the-environment-93" not in tracked.stdout + tracked.stderr


def test_render_outside_any_work_tree_writes_as_before(project: Path, tmp_path: Path) -> None:
    _git(project, "init", "-q")
    out = tmp_path.parent / f"{tmp_path.name}-out"  # beside the repository, not in it
    result = run("render", "--env", "production", "--out", str(out), cwd=project)
    assert result.returncode == 0, result.stderr
    assert (out / "env/api-production.env").is_file()
