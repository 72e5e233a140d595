"""Where `deploy --build` builds from: the git work tree that holds the config file.

The images are tagged with the tree's commit, so a tag names the source it was built from. A
tree with changes no commit holds would make that tag a lie: it is refused (`--allow-dirty`
builds it anyway, tagged `<commit>-dirty`). An app's `branch` is the branch its env deploys
from: building another branch's code for it is refused (`--any-branch` lets it through). CI
checks out a detached HEAD (a pull request, a re-run of an old commit): its branch comes from
`--branch`, else `$GITHUB_REF_NAME`.

Only `git` run as a process, no shell; every failure is one line (exit 2).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vedfin_ops.config.model import Config
from vedfin_ops.errors import ConfigError, UsageError

BRANCH_ENV = "GITHUB_REF_NAME"  # the branch a GitHub Actions run was started for
COMMIT_LENGTH = 12  # one length everywhere: a laptop's clone and CI's shallow one tag alike
DIRTY_SUFFIX = "-dirty"


class SourceError(UsageError):
    """The work tree cannot be built from as asked (exit 2)."""


@dataclass(frozen=True)
class Source:
    root: Path  # the work tree's top folder
    commit: str  # HEAD, abbreviated to COMMIT_LENGTH
    branch: str | None  # HEAD's branch; None on a detached HEAD
    dirty: tuple[str, ...]  # changed tracked files and untracked ones git does not ignore

    def tag(self) -> str:
        """The image tag of a build of this tree: its commit (`-dirty` when it has changes)."""
        return self.commit + (DIRTY_SUFFIX if self.dirty else "")


def git(folder: Path, *args: str) -> str:
    """`git -C folder ARGS`'s output; a failure is one line naming the folder."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                              text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise SourceError("deploy --build: git is not installed here (the images are tagged "
                          "with the commit)") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"{folder}: git {args[0]} did not answer in 60 s") from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceError(f"{folder}: git {args[0]} failed: {said}")
    return done.stdout


def work_tree(folder: Path) -> Path:
    """The top of the git work tree holding `folder`."""
    try:
        return Path(git(folder, "rev-parse", "--show-toplevel").strip())
    except SourceError:
        raise SourceError(f"{folder} is not in a git work tree: deploy --build builds from "
                          f"the repository that holds the config file") from None


def short_commit(root: Path) -> str:
    try:
        return git(root, "rev-parse", f"--short={COMMIT_LENGTH}", "--verify", "HEAD").strip()
    except SourceError:
        raise SourceError(f"{root}: no commit yet: deploy --build tags the images with "
                          f"HEAD's commit") from None


def current_branch(root: Path) -> str | None:
    """HEAD's branch, or None when HEAD is detached."""
    try:
        return git(root, "symbolic-ref", "--quiet", "--short", "HEAD").strip() or None
    except SourceError:
        return None


def dirty_files(root: Path) -> list[str]:
    """Tracked files with changes (staged or not) and untracked files git does not ignore,
    as `git status --porcelain` lists them (a rename: its new name)."""
    out = git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    entries = out.split("\0")
    names: list[str] = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        names.append(entry[3:])
        if entry[0] in "RC":  # a rename or copy: its old name follows
            i += 1
    return names


def read_source(folder: Path) -> Source:
    root = work_tree(folder)
    return Source(root, short_commit(root), current_branch(root), tuple(dirty_files(root)))


def config_folder(config: Config) -> Path:
    """The config file's folder: builds resolve their contexts from there."""
    return Path(config.source).resolve().parent


def checked_out_branch(source: Source, given: str | None = None,
                       environ: Mapping[str, str] | None = None) -> str | None:
    """The branch being built: HEAD's; on a detached HEAD, `given` (`--branch`), else
    $GITHUB_REF_NAME; None when nothing names it."""
    environ = os.environ if environ is None else environ
    if source.branch is not None:
        if given and given != source.branch:
            raise SourceError(f"--branch {given}, but {source.root} has {source.branch} "
                              f"checked out (--branch names the branch of a detached HEAD)")
        return source.branch
    return given or environ.get(BRANCH_ENV) or None


def check_branch(config: Config, env: str, branch: str | None, root: Path) -> None:
    """Every app of `env` deploys from its configured `branch` (exit 2 naming the first that
    does not)."""
    for app in config.apps(env):
        if branch is None:
            raise SourceError(f"{root}: HEAD is detached and nothing names its branch: "
                              f"--branch {app.branch} (CI: ${BRANCH_ENV}), or --any-branch")
        if app.branch != branch:
            raise ConfigError(config.source,
                              f"applications[{config.applications.index(app)}].branch",
                              f"{app.name} deploys branch {app.branch}, but {branch} is "
                              f"checked out in {root} (git switch {app.branch}, or "
                              f"--any-branch)")


def check_clean(source: Source) -> None:
    if source.dirty:
        raise SourceError(f"{source.root}: {len(source.dirty)} file(s) changed or untracked "
                          f"that no commit holds (first: {source.dirty[0]}): commit them, or "
                          f"--allow-dirty")


def record(source: Source, branch: str | None) -> dict[str, Any]:
    """What the release keeps of its source (`release.json`'s `built_from`)."""
    return {"commit": source.commit, "branch": branch, "dirty": len(source.dirty)}
