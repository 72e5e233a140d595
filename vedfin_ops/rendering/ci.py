"""`vedfin init --ci github`: a CI workflow that builds, pushes and deploys production on a push.

Rendered from the config, so the workflow names exactly the secrets a deploy of the env needs
(the env's and the shared ones, each from the secret of the same name), the host the tool
deploys to, the branch the env's apps deploy from (the push that triggers it) and the extras
the config's features need. The job runs in the GitHub environment of the env's name: its
secrets are that environment's, which its deployment branch rule keeps from a workflow pushed
on any other branch (repository secrets reach every workflow of every branch). The workflow's
steps are plain shell a test can run as the runner would (tests/integration/test_ci_recipe.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vedfin_ops import __version__, extras
from vedfin_ops.config.model import Config
from vedfin_ops.errors import ConfigError, UsageError

#: CI name -> where its workflow goes in the repository
WORKFLOWS = {"github": ".github/workflows/deploy.yml"}
TEMPLATES = {"github": "github-deploy.yml.j2"}
SEED_TASKS = ("production", "staging", "dev")  # `deploy.<env>`; another env: `deploy --env E`


@dataclass(frozen=True)
class Workflow:
    path: Path  # where it is written
    text: str


def check_ci(ci: str | None) -> str:
    if not ci:
        raise UsageError(f"init: --ci is required (one of: {', '.join(WORKFLOWS)})")
    if ci not in WORKFLOWS:
        raise UsageError(f"init: --ci {ci!r}: unknown CI (known: {', '.join(WORKFLOWS)})")
    return ci


def default_host(config: Config) -> str:
    """`remote.user@vps.address`: the host `fab -H` reaches (port 22)."""
    if not config.vps.address:
        raise ConfigError(config.source, "vps.address", "not set: the workflow deploys to it "
                          "(or give init --host USER@HOST[:PORT])")
    return f"{config.remote.user}@{config.vps.address}"


def env_branch(config: Config, env: str) -> str:
    """The branch the env's apps deploy from: the one whose pushes deploy it."""
    branches = sorted({app.branch for app in config.apps(env)})
    if not branches:
        raise ConfigError(config.source, "applications", f"no application in {env}")
    if len(branches) > 1:
        raise ConfigError(config.source, "applications", f"{env}'s apps deploy from "
                          f"different branches ({', '.join(branches)}): one push cannot "
                          f"deploy them all")
    return branches[0]


def repository_root(folder: Path) -> Path:
    """The git work tree holding `folder` (the folder itself outside any)."""
    from vedfin_ops.deploy.source import SourceError, work_tree

    try:
        return work_tree(folder)
    except SourceError:
        return folder


def workflow(config: Config, ci: str, *, host: str | None = None,
             env: str = "production") -> Workflow:
    """The workflow file of `ci` for `env`, placed at the root of the repository holding the
    config (its path in the workflow relative to that root)."""
    from vedfin_ops.rendering.files import host_script

    check_ci(ci)
    config.require_env(env)
    config_file = Path(config.source).resolve()
    root = repository_root(config_file.parent)
    task = f"deploy.{env}" if env in SEED_TASKS else f"deploy --env {env}"
    wanted = extras.needed(config)
    requirement = f"vedfin-ops{'[' + ','.join(wanted) + ']' if wanted else ''}=={__version__}"
    text = host_script(TEMPLATES[ci], version=__version__, env=env, task=task,
                       branch=env_branch(config, env), host=host or default_host(config),
                       config_path=os.path.relpath(config_file, root),
                       requirement=requirement, secrets=list(config.secret_names(env)))
    return Workflow(root / WORKFLOWS[ci], text)


def write_workflow(made: Workflow, *, force: bool = False) -> Path:
    """Written whole; an existing file is kept unless `force` (exit 2 naming it)."""
    if made.path.exists() and not force:
        raise UsageError(f"{made.path} exists: init --force to overwrite it")
    try:
        made.path.parent.mkdir(parents=True, exist_ok=True)
        made.path.write_text(made.text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {made.path}: {exc.strerror or exc}") from None
    return made.path
