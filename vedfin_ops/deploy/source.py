"""Where `deploy --build` builds from: the git work tree that holds the config file.

The images are tagged with the tree's commit, so a tag names the source it was built from. A
tree with changes no commit holds would make that tag a lie: it is refused (`--allow-dirty`
builds it anyway, tagged `<commit>-dirty-<8 hex>`: a hash of the changes, so two different
dirty trees of one commit never share a tag, and neither pushes over the other's image). An
app's `branch` is the branch its env deploys from: building another branch's code for it is
refused (`--any-branch` lets it through). CI checks out a detached HEAD (a pull request, a
re-run of an old commit): its branch comes from `--branch`, else `$GITHUB_REF_NAME`.

Only `git` run as a process, no shell; every failure is one line (exit 2).
"""

from __future__ import annotations

import hashlib
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
DIRTY_HASH_LENGTH = 8  # hex digits of the changes' hash in a dirty tree's tag


class SourceError(UsageError):
    """The work tree cannot be built from as asked (exit 2)."""


@dataclass(frozen=True)
class Source:
    root: Path  # the work tree's top folder
    commit: str  # HEAD, abbreviated to COMMIT_LENGTH
    branch: str | None  # HEAD's branch; None on a detached HEAD
    dirty: tuple[str, ...]  # changed tracked files and untracked ones git does not ignore
    changes: str = ""  # with `dirty`: the changes' hash (`changes_hash`)

    def tag(self) -> str:
        """The image tag of a build of this tree: its commit; with changes,
        `<commit>-dirty-<changes>` (27 characters, a valid Docker tag)."""
        return self.commit + (f"{DIRTY_SUFFIX}-{self.changes}" if self.dirty else "")


def git(folder: Path, *args: str) -> str:
    """`git -C folder ARGS`'s output; a failure is one line naming the folder."""
    return git_bytes(folder, *args).decode("utf-8", "replace")


def git_bytes(folder: Path, *args: str) -> bytes:
    """`git -C folder ARGS`'s output as bytes (a binary diff is no text)."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                              timeout=60, check=False)
    except FileNotFoundError:
        raise SourceError("deploy --build: git is not installed here (the images are tagged "
                          "with the commit)") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"{folder}: git {args[0]} did not answer in 60 s") from None
    if done.returncode != 0:
        said = (done.stderr.decode("utf-8", "replace").strip().splitlines()
                or ["no output"])[-1]
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


# the diff's bytes whatever the user's git config says of colours, drivers, renames, prefixes
DIFF_OPTIONS = ("--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
                "--src-prefix=a/", "--dst-prefix=b/")


def changes_hash(root: Path) -> str:
    """What a dirty tree holds that HEAD does not, hashed (sha256, DIRTY_HASH_LENGTH hex):
    `git diff HEAD` with binary files whole (staged or not: the tree a build reads), then
    each untracked file git does not ignore, its name and content (a link: its target).
    Two different trees of one commit get two tags, one tree always the same."""
    digest = hashlib.sha256()

    def add(kind: bytes, name: bytes, content: bytes) -> None:  # lengths: no two readings
        for part in (kind, name, str(len(content)).encode(), content):
            digest.update(part + b"\0")

    add(b"diff", b"HEAD", git_bytes(root, "-c", "core.quotePath=true", "diff", *DIFF_OPTIONS,
                                     "HEAD", "--"))
    untracked = git_bytes(root, "ls-files", "-z", "--others", "--exclude-standard")
    for name in sorted(n for n in untracked.split(b"\0") if n):
        path = root / os.fsdecode(name)
        try:
            if path.is_symlink():
                add(b"link", name, os.fsencode(os.readlink(path)))
            elif path.is_dir():  # a repository of its own inside the tree: its name only
                add(b"folder", name, b"")
            else:
                add(b"file", name, path.read_bytes())
        except OSError as exc:
            raise SourceError(f"{path}: cannot read it to tag the dirty tree "
                              f"({exc.strerror or exc})") from None
    return digest.hexdigest()[:DIRTY_HASH_LENGTH]


def read_source(folder: Path) -> Source:
    root = work_tree(folder)
    dirty = tuple(dirty_files(root))
    return Source(root, short_commit(root), current_branch(root), dirty,
                  changes_hash(root) if dirty else "")


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
