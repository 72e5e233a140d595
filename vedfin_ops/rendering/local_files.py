"""Writing a render to a local folder (`inv render --out DIR`)."""

from __future__ import annotations

import os
from pathlib import Path

from vedfin_ops.config.secret_store import git_exposure, write_private
from vedfin_ops.errors import UsageError
from vedfin_ops.rendering.files import Rendered


def write_tree(rendered: Rendered, out: Path) -> list[Path]:
    """Write every file; those that may hold secrets (`Rendered.is_secret`: the env files,
    Netdata's notification settings) as 0600 from their first byte.

    A folder that cannot be written is bad input (exit 2): one line naming the path and the
    system's reason. So is a folder where git could commit one of the secret files
    (`refuse_committable`), before anything is written."""
    refuse_committable(rendered, out)
    written = []
    for rel, text in sorted(rendered.items()):
        path = out / rel
        try:
            if rendered.is_secret(rel):
                write_private(path, text)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        except OSError as exc:
            where = exc.filename or path
            raise UsageError(f"--out {out}: cannot write {where}: "
                             f"{exc.strerror or exc}") from None
        written.append(path)
    return written


def refuse_committable(rendered: Rendered, out: Path) -> None:
    """The files that hold secrets (`Rendered.is_secret`: the env files, Netdata's
    notification settings): inside a git work tree they must be git-ignored and untracked, or
    `git add .` commits them (the check `secrets.generate` makes for its file)."""
    for rel in sorted(r for r in rendered if rendered.is_secret(r)):
        exposed = git_exposure(out / rel)
        if exposed is None:
            continue
        how, root, in_root = exposed
        folder = os.path.relpath(os.path.realpath(out), os.path.realpath(root))
        ignore = f"add /{folder + '/' if folder != '.' else in_root} to {root}/.gitignore"
        if how == "tracked":
            raise UsageError(f"--out {out}: {out / rel} is tracked by git in {root}: `git rm "
                             f"--cached {in_root}`, {ignore}, and change every secret it held")
        raise UsageError(f"--out {out}: {out / rel} would hold secrets in the git work tree "
                         f"{root} but is not git-ignored: {ignore} (or render outside the "
                         f"repository)")
