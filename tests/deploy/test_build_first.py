"""`deploy --build`: the work tree the config sits in (its commit, branch and changes, read with
real git), the checks before anything is built, the shipped config's `build:` and `registry:`
sections, and one deploy that builds (a fake build that pushes to a real registry) then
deploys on the scripted host, recorded as built from the commit."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.registry import RegistryServer
from tests.conftest import SHIPPED
from tests.deploy.test_orchestration import FakeClock, World, _secrets
from tests.fake.host import FakeHost
from tests.registry_push import push as push_image
from vedfin_ops.config.loader import config_from_dict, load_config
from vedfin_ops.config.tags import check_tag
from vedfin_ops.deploy import source
from vedfin_ops.deploy.build import BuildFirst, Built, check_build_first, targets
from vedfin_ops.deploy.options import DeployOptions
from vedfin_ops.errors import ConfigError, UsageError
from vedfin_ops.run.env_run import listing


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                          check=True).stdout


def repo(folder: Path, branch: str = "main") -> Path:
    """A work tree on `branch` with one commit (a config and a .gitignore)."""
    folder.mkdir(parents=True, exist_ok=True)
    git(folder, "init", "-q", "-b", branch)
    git(folder, "config", "user.email", "ci@example.com")
    git(folder, "config", "user.name", "ci")
    (folder / ".gitignore").write_text(".vedfin/\nnode_modules/\n")
    (folder / "dokploy.yaml").write_text("# the config\n")
    git(folder, "add", ".gitignore", "dokploy.yaml")
    git(folder, "commit", "-q", "-m", "first")
    return folder


# --- the work tree -------------------------------------------------------------------------

def test_a_clean_tree_on_a_branch(tmp_path: Path) -> None:
    root = repo(tmp_path / "r")
    (root / "node_modules").mkdir()
    (root / "node_modules" / "x.js").write_text("ignored")  # ignored: not a change
    found = source.read_source(root / "node_modules")  # any folder inside it
    assert found.root == root
    assert found.commit == git(root, "rev-parse", "--short=12", "HEAD").strip()
    assert len(found.commit) == source.COMMIT_LENGTH
    assert found.branch == "main" and found.dirty == ()
    assert found.tag() == found.commit


def test_changes_untracked_files_and_renames_are_dirty(tmp_path: Path) -> None:
    root = repo(tmp_path / "r")
    (root / "dokploy.yaml").write_text("# changed\n")
    (root / "apps" / "api").mkdir(parents=True)
    (root / "apps" / "api" / "new.ts").write_text("x")
    (root / "name with space").write_text("y")
    found = source.read_source(root)
    assert sorted(found.dirty) == ["apps/api/new.ts", "dokploy.yaml", "name with space"]
    assert re.fullmatch(re.escape(found.commit) + r"-dirty-[0-9a-f]{8}", found.tag())
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "second")
    git(root, "mv", "dokploy.yaml", "vedfin.yaml")
    assert source.dirty_files(root) == ["vedfin.yaml"]  # staged only: still no commit holds it
    with pytest.raises(UsageError, match=r"1 file\(s\) changed or untracked that no commit "
                                         r"holds \(first: vedfin.yaml\): commit them, or "
                                         r"--allow-dirty$"):
        source.check_clean(source.read_source(root))


def test_two_different_dirty_trees_of_one_commit_get_two_tags(tmp_path: Path) -> None:
    """`<commit>-dirty-<8 hex>`: the hash of `git diff HEAD` (binary) and of the untracked
    files' names and contents, so one tag never names two different builds."""
    root = repo(tmp_path / "r")
    commit = git(root, "rev-parse", "--short=12", "HEAD").strip()

    def tag() -> str:
        made = source.read_source(root).tag()
        assert re.fullmatch(re.escape(commit) + r"-dirty-[0-9a-f]{8}", made), made
        assert check_tag(made) == made and len(made) <= 128
        return made

    (root / "dokploy.yaml").write_text("# one change\n")
    one = tag()
    assert tag() == one  # the same tree, the same tag
    (root / "dokploy.yaml").write_text("# another change\n")
    another = tag()
    assert another != one
    git(root, "add", "dokploy.yaml")  # staged or not, the same change
    assert tag() == another
    (root / "logo.png").write_bytes(b"\x89PNG\x00\x01")  # an untracked file: its content
    logo = tag()
    assert logo != another
    (root / "logo.png").write_bytes(b"\x89PNG\x00\x02")
    changed = tag()
    assert changed != logo
    (root / "logo.png").rename(root / "icon.png")  # and its name
    assert tag() not in (logo, changed)
    git(root, "add", "icon.png")  # staged: in git diff HEAD, binary
    staged = tag()
    (root / "icon.png").write_bytes(b"\x89PNG\x00\x03")
    assert tag() != staged


def test_detached_head_has_no_branch(tmp_path: Path) -> None:
    root = repo(tmp_path / "r")
    git(root, "checkout", "-q", "--detach")
    found = source.read_source(root)
    assert found.branch is None
    assert source.checked_out_branch(found, None, {}) is None
    assert source.checked_out_branch(found, None, {"GITHUB_REF_NAME": "main"}) == "main"
    assert source.checked_out_branch(found, "staging", {"GITHUB_REF_NAME": "main"}) == "staging"


def test_branch_flag_on_another_checked_out_branch_is_refused(tmp_path: Path) -> None:
    found = source.read_source(repo(tmp_path / "r", branch="develop"))
    assert source.checked_out_branch(found, None, {"GITHUB_REF_NAME": "main"}) == "develop"
    with pytest.raises(UsageError, match=r"--branch main, but .* has develop checked out"):
        source.checked_out_branch(found, "main", {})


def test_no_work_tree_or_no_commit_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(UsageError, match="is not in a git work tree: deploy --build builds "
                                         "from the repository that holds the config file"):
        source.read_source(tmp_path / "plain")
    git(tmp_path, "init", "-q", str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="no commit yet"):
        source.read_source(tmp_path / "empty")


# --- the checks before a build -------------------------------------------------------------

def _built_config(root: Path, shipped_data: dict[str, Any], **change: Any) -> Any:
    """The shipped config's build sections, written into `root` (a work tree) and committed."""
    data = yaml.safe_load(SHIPPED.read_text())
    data.get("backups", {}).pop("s3", None)
    data["monitoring"] = shipped_data["monitoring"]
    data.update(change)
    (root / "dokploy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    git(root, "commit", "-q", "-am", "config")
    return load_config(root / "dokploy.yaml")


def test_the_commit_is_the_tag_on_the_envs_branch(tmp_path: Path,
                                                  shipped_data: dict[str, Any]) -> None:
    root = repo(tmp_path / "r")
    config = _built_config(root, shipped_data)
    tag, made = check_build_first(config, "production", BuildFirst(), None, {})
    commit = git(root, "rev-parse", "--short=12", "HEAD").strip()
    assert (tag, made) == (commit, {"commit": commit, "branch": "main", "dirty": 0})
    assert check_build_first(config, "production", BuildFirst(), "v7", {})[0] == "v7"


def test_another_branch_is_refused_naming_the_app_and_both_branches(
        tmp_path: Path, shipped_data: dict[str, Any]) -> None:
    root = repo(tmp_path / "r")
    config = _built_config(root, shipped_data)
    git(root, "switch", "-q", "-c", "feature")
    with pytest.raises(ConfigError) as refused:
        check_build_first(config, "production", BuildFirst(), None, {})
    assert refused.value.line() == (
        f"error: {root}/dokploy.yaml: applications[0].branch: api-production deploys branch "
        f"main, but feature is checked out in {root} (git switch main, or --any-branch)")
    assert refused.value.exit_code == 2
    _, made = check_build_first(config, "production", BuildFirst(any_branch=True), None, {})
    assert made["branch"] == "feature"
    with pytest.raises(ConfigError, match=r"applications\[2\]\.branch: api-staging deploys "
                                          r"branch staging, but feature"):
        check_build_first(config, "staging", BuildFirst(), None, {})


def test_a_detached_head_needs_its_branch_named(tmp_path: Path,
                                                shipped_data: dict[str, Any]) -> None:
    root = repo(tmp_path / "r")
    config = _built_config(root, shipped_data)
    git(root, "checkout", "-q", "--detach")
    with pytest.raises(UsageError, match=r"HEAD is detached and nothing names its branch: "
                                         r"--branch main \(CI: \$GITHUB_REF_NAME\), or "
                                         r"--any-branch$"):
        check_build_first(config, "production", BuildFirst(), None, {})
    assert check_build_first(config, "production", BuildFirst(), None,
                             {"GITHUB_REF_NAME": "main"})[1]["branch"] == "main"
    assert check_build_first(config, "production", BuildFirst(branch="main"), None,
                             {})[1]["branch"] == "main"
    with pytest.raises(ConfigError, match="deploys branch main, but develop is checked out"):
        check_build_first(config, "production", BuildFirst(), None,
                          {"GITHUB_REF_NAME": "develop"})


def test_a_dirty_tree_is_refused_unless_allowed_and_then_tagged_dirty(
        tmp_path: Path, shipped_data: dict[str, Any]) -> None:
    root = repo(tmp_path / "r")
    config = _built_config(root, shipped_data)
    (root / "notes.txt").write_text("not committed")
    with pytest.raises(UsageError, match=r"1 file\(s\) changed or untracked .*notes.txt"):
        check_build_first(config, "production", BuildFirst(), None, {})
    tag, made = check_build_first(config, "production", BuildFirst(allow_dirty=True), None, {})
    assert re.fullmatch(made["commit"] + r"-dirty-[0-9a-f]{8}", tag) and made["dirty"] == 1


def test_no_registry_or_an_app_without_a_build_section_is_refused(
        tmp_path: Path, shipped_data: dict[str, Any]) -> None:
    root = repo(tmp_path / "r")
    config = _built_config(root, shipped_data, registry=None)
    with pytest.raises(ConfigError, match="registry: deploy --build pushes the images it "
                                          "builds: it needs a registry section"):
        check_build_first(config, "production", BuildFirst(), None, {})
    data = yaml.safe_load((root / "dokploy.yaml").read_text())
    data["registry"] = yaml.safe_load(SHIPPED.read_text())["registry"]
    del data["applications"][1]["build"]
    config = config_from_dict(data, str(root / "dokploy.yaml"))
    with pytest.raises(ConfigError, match=r"applications\[1\]\.build: web-production has no "
                                          r"build section \(deploy --build builds every app "
                                          r"of production\)"):
        check_build_first(config, "production", BuildFirst(), None, {})


# --- the shipped config --------------------------------------------------------------------

def test_the_shipped_config_builds_v_edfinances_apps_and_each_envs_web_on_its_own() -> None:
    config = load_config(SHIPPED)
    assert config.registry is not None and config.registry.server == "ghcr.io"
    assert config.secrets["shared"][config.registry.password_secret] == "manual"
    root = SHIPPED.parent
    for app in config.applications:
        assert app.build is not None, app.name
        assert app.build.context == str(root / "apps" / app.app)
        assert app.build.dockerfile == "Dockerfile"
        assert app.build.args["APP_VERSION"] == "{tag}"
        assert "NEXT_PUBLIC_API_URL" not in app.environment  # fixed at build time, not here
        if app.app == "web":  # the URL of the same env's api, baked into the bundle
            api = next(a for a in config.apps(app.env) if a.app == "api")
            assert app.build.args["NEXT_PUBLIC_API_URL"] == f"https://{api.domain}"
            assert app.image_repo == f"ghcr.io/v-edfinance/web-{app.env}"
        else:
            assert app.image_repo == "ghcr.io/v-edfinance/api"
    # one image per repository: the api is shared, each web is its own
    assert sorted(a.image_repo for a, _ in targets(config)) == [
        "ghcr.io/v-edfinance/api", "ghcr.io/v-edfinance/web-dev",
        "ghcr.io/v-edfinance/web-production", "ghcr.io/v-edfinance/web-staging"]
    branches = {env: {a.branch for a in config.apps(env)} for env in config.environments}
    assert branches == {"production": {"main"}, "staging": {"staging"}, "dev": {"develop"}}


def test_the_example_dockerfiles_take_the_shipped_build_args() -> None:
    """The shipped `build:` sections match examples/v-edfinance/ (the runbook's layout)."""
    example = SHIPPED.parent / "examples" / "v-edfinance"
    config = load_config(SHIPPED)
    for app in config.apps("production"):
        assert app.build is not None
        dockerfile = (example / "apps" / app.app / app.build.dockerfile).read_text()
        for arg in app.build.args:
            assert f"ARG {arg}" in dockerfile, (app.name, arg)


# --- one deploy --build on the scripted host ----------------------------------------------

@pytest.fixture
def built_world(tmp_path: Path, shipped_data: dict[str, Any], registry: RegistryServer,
                monkeypatch: pytest.MonkeyPatch) -> tuple[World, Path, list[str]]:
    """A work tree holding the shipped config (images in a local registry), a scripted host,
    and `docker build` + push replaced by a push of a tiny image to that registry."""
    root = repo(tmp_path / "repo")
    data = copy.deepcopy(shipped_data)
    data.setdefault("remote", {})["baseDir"] = str(tmp_path / "srv")
    for app in data["applications"]:
        kind = app["name"].split("-")[0]
        app["image"] = f"{registry.server}/vedfin/{kind}"
        app["build"] = {"context": f"apps/{kind}", "args": {"APP_VERSION": "{tag}"}}
    data["registry"] = {"server": registry.server, "username": registry.username,
                        "password": "${REGISTRY_PASSWORD}", "caRoot": str(registry.ca)}
    data["secrets"]["shared"]["REGISTRY_PASSWORD"] = "manual"
    (root / "dokploy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    git(root, "commit", "-q", "-am", "config")
    config = load_config(root / "dokploy.yaml")
    _secrets(monkeypatch, config)
    monkeypatch.setenv("REGISTRY_PASSWORD", registry.password)
    built: list[str] = []

    def fake_build(config: Any, tag: str, secrets: Any, *, push: bool = False,
                   env: str | None = None, say: Any = print,
                   pushed: list[Built] | None = None) -> list[Built]:
        assert push and secrets["REGISTRY_PASSWORD"] == registry.password
        made = []
        for app, _ in targets(config, env):
            repository = app.image_repo.split("/", 1)[1]
            digest = push_image(registry.server, (registry.username, registry.password),
                                str(registry.ca), repository, tag, f"{app.name} {tag}")
            built.append(f"{repository}:{tag}")
            made.append(Built(f"{app.image_repo}:{tag}", digest, 0.0))
        return made

    monkeypatch.setattr("vedfin_ops.deploy.pipeline.build_images", fake_build)
    return World(tmp_path, config, FakeHost(tmp_path), FakeClock()), root, built


def _deploy(world: World, build: BuildFirst | None) -> Any:
    from vedfin_ops.deploy.pipeline import deploy

    return deploy(world.host, world.config, "production", None, DeployOptions(build=build),
                  say=world.said.append, hooks=world.hooks(), clock=world.clock.clock())


def test_deploy_build_builds_the_commit_then_deploys_it_pinned_and_records_it(
        built_world: tuple[World, Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    world, root, built = built_world
    monkeypatch.delenv("GITHUB_REF_NAME", raising=False)
    commit = git(root, "rev-parse", "--short=12", "HEAD").strip()
    result = _deploy(world, BuildFirst())
    assert result.result == "ok" and result.tag == commit
    assert built == [f"vedfin/api:{commit}", f"vedfin/web:{commit}"]
    images = world.env_images()
    assert all(f":{commit}@sha256:" in ref for ref in images.values()), images
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.meta["built_from"] == {"commit": commit, "branch": "main", "dirty": 0}
    assert world.audit()[-1]["detail"].endswith(f"; built from {commit} (main)")


def test_the_images_this_run_pushed_are_pinned_not_a_later_push_of_the_same_tag(
        built_world: tuple[World, Path, list[str]], registry: RegistryServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two --build deploys of one commit (staging's and production's) push the api under one
    tag, and a build is not reproducible: a deploy pins the digests its own push returned,
    never whatever the tag names in the registry once the other run pushed over it."""
    from vedfin_ops.deploy import pipeline

    world, _, _ = built_world
    monkeypatch.delenv("GITHUB_REF_NAME", raising=False)
    ours = pipeline.build_images
    pushed: list[Built] = []
    theirs: list[str] = []

    def and_another_run_pushes_the_same_tags(*args: Any, **kwargs: Any) -> list[Built]:
        made: list[Built] = ours(*args, **kwargs)
        pushed.extend(made)
        for item in made:
            ref, _, tag = item.image.rpartition(":")
            theirs.append(push_image(registry.server, (registry.username, registry.password),
                                     str(registry.ca), ref.split("/", 1)[1], tag,
                                     f"another build of {item.image}"))
        return made

    monkeypatch.setattr(pipeline, "build_images", and_another_run_pushes_the_same_tags)
    result = _deploy(world, BuildFirst())
    assert result.result == "ok" and len(pushed) == 2
    assert set(world.env_images().values()) == {f"{b.image}@{b.digest}" for b in pushed}
    assert not {b.digest for b in pushed} & set(theirs)
    assert "registry: 2 images of production pinned by digest: 2 as this run pushed them, " \
        "0 found in" in "\n".join(world.said)


def test_a_refused_tree_or_a_missing_secret_builds_nothing_and_touches_no_host(
        built_world: tuple[World, Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    world, root, built = built_world
    monkeypatch.delenv("GITHUB_REF_NAME", raising=False)
    (root / "wip.ts").write_text("x")
    with pytest.raises(UsageError, match="1 file"):
        _deploy(world, BuildFirst())
    (root / "wip.ts").unlink()
    monkeypatch.delenv("JWT_SECRET_PROD")
    with pytest.raises(UsageError, match=r"secrets\.production: not set: JWT_SECRET_PROD"):
        _deploy(world, BuildFirst())
    assert built == [] and world.host.command_lines == []


def test_without_build_nothing_is_built(built_world: tuple[World, Path, list[str]],
                                       registry: RegistryServer) -> None:
    world, _, built = built_world
    from vedfin_ops.deploy.pipeline import deploy

    result = deploy(world.host, world.config, "production", "v1", say=world.said.append,
                    hooks=world.hooks(), clock=world.clock.clock())
    assert result.result == "ok" and built == []
    assert "built_from" not in listing(world.host, world.layout).meta  # type: ignore[arg-type]


def test_the_build_flags_need_build(tmp_path: Path) -> None:
    from tests.cli.test_tasks import run

    (tmp_path / "dokploy.yaml").write_text(SHIPPED.read_text())
    for flag in ("--allow-dirty", "--any-branch", "--branch=main"):
        result = run("-r", str(SHIPPED.parent), "-H", "nobody@127.0.0.1:1", "deploy.production",
                     flag, cwd=tmp_path, tool=["fab"])
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == ("error: deploy.production: --allow-dirty, "
                                         "--any-branch and --branch go with --build")
