"""Secret values: from the process environment first, then the git-ignored secrets file.

Only names ever leave this module in messages. Values go only to what needs them (`render`'s
env files and Netdata's notify settings, the registry login, the off-site bucket's client,
Uptime Kuma's login and notifications) and to the host's list of values to mask
(`Host.secrets`), so that whatever a host or a server prints back has them hidden.
"""

from __future__ import annotations

import os
import re
import secrets as _random
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vedfin_ops.config.model import Config
from vedfin_ops.errors import ConfigError, UsageError
from vedfin_ops.remote.command import hide
from vedfin_ops.remote.quoting import env_line_ok


def secrets_path(config: Config) -> Path:
    """The secrets file, relative to the config file's folder so any working directory works."""
    path = Path(config.secrets_file)
    return path if path.is_absolute() else Path(config.source).resolve().parent / path


def read_file(path: Path) -> dict[str, str]:
    """NAME=value lines; none when the file does not exist. Refused (exit 2) when it is not a
    UTF-8 file or others may read it (as ssh refuses a private key others can read)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the secrets file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise UsageError(f"{path}: the secrets file is {what} (secretsFile names a file of "
                         f"NAME=value lines)")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise UsageError(f"{path}: the secrets file has mode {mode:04o}, open to group or "
                         f"others; chmod 600 {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: the secrets file is not UTF-8 text (byte {exc.start}); "
                         f"write it as UTF-8 NAME=value lines") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the secrets file: {exc.strerror or exc}") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            # The line may hold a value: name the line, never print it.
            raise ConfigError(str(path), f"line {number}", "not NAME=value")
        out[key.strip()] = value
    return out


def resolve(config: Config, env: str | None = None,
            environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Values for the secrets `env` declares; those found nowhere are simply absent."""
    environ = os.environ if environ is None else environ
    stored = read_file(secrets_path(config))
    out: dict[str, str] = {}
    for name in config.secret_names(env):
        value = environ.get(name) or stored.get(name)
        if value:
            if not env_line_ok(value):
                raise UsageError(f"secret {name}: its value holds a newline, which an "
                                 f"env file cannot carry")
            out[name] = value
    return out


def missing(config: Config, env: str | None, found: Mapping[str, str]) -> list[str]:
    """Required secrets without a value (`optional` ones are the using step's business)."""
    return [name for name, source in config.secret_names(env).items()
            if name not in found and source != "optional"]


def not_set(config: Config, env: str, names: list[str]) -> str:
    """The message for required secrets without a value: how to fill them, and for the
    off-host copies' token, what it is and how not to need it."""
    text = (f"{config.source}: secrets.{env}: not set: {', '.join(names)} "
            f"(inv secrets.generate --env {env}, or export them)")
    token = [name for name in names if name in config.offsite_only_secrets(env)]
    if token:
        text += (f"; {', '.join(token)}: backups.s3's token for the off-host copies of "
                 f"{env}'s backups (an R2 API token scoped to the backup bucket: "
                 f"docs/backups.md), or leave {env} out of backups.s3.envs")
    return text


@dataclass(frozen=True)
class Generated:
    path: Path
    generated: list[str]
    kept: list[str]
    to_fill_by_hand: list[str]


def generate(config: Config, env: str) -> Generated:
    """Fill the missing `generate` secrets of `env` (the runbook's `openssl rand -hex 32`).

    Written 0600; refused (nothing written) when the file would sit in a git work tree without
    being git-ignored, so `git add .` can never commit it."""
    config.require_env(env)
    path = secrets_path(config)
    stored = read_file(path)
    generated, kept, manual = [], [], []
    for name, source in config.secret_names(env).items():
        if stored.get(name):
            kept.append(name)
        elif source == "generate":
            stored[name] = _random.token_hex(32)
            generated.append(name)
        elif not os.environ.get(name):
            manual.append(name)
    if generated:
        refuse_unless_git_ignored(path)
        try:
            write_file(path, stored)
        except OSError as exc:
            raise UsageError(f"{path}: cannot write the secrets file: "
                             f"{exc.strerror or exc}") from None
    return Generated(path, generated, kept, manual)


def write_file(path: Path, values: dict[str, str]) -> None:
    """The secrets file `read_file` reads: `NAME=value` lines, 0600 from the first byte."""
    write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` as 0600, atomically: never a moment readable by others."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              check=False)
    except OSError:  # no git here: nothing can commit the file by accident either
        return None


def git_exposure(path: Path) -> tuple[str, Path, str] | None:
    """Whether git could commit a file at `path`: `("tracked" | "not ignored", work tree,
    path in it)`, or None (ignored, or in no work tree)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None or top.returncode != 0 or not top.stdout.strip():
        return None  # not in a work tree
    root = Path(top.stdout.strip())
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    if rel.startswith(".."):
        return None
    tracked = _git(root, "ls-files", "--error-unmatch", "--", rel)
    if tracked is not None and tracked.returncode == 0:
        return "tracked", root, rel
    ignored = _git(root, "check-ignore", "-q", "--", rel)
    if ignored is not None and ignored.returncode == 1:
        return "not ignored", root, rel
    return None


def refuse_unless_git_ignored(path: Path) -> None:
    """Refuse a secrets file inside a git work tree that git does not ignore (or tracks)."""
    exposed = git_exposure(path)
    if exposed is None:
        return
    how, root, rel = exposed
    if how == "tracked":
        raise UsageError(f"{path}: the secrets file is tracked by git in {root}: "
                         f"`git rm --cached {rel}`, add /{rel} to {root}/.gitignore, and "
                         f"change every secret it held")
    raise UsageError(f"{path}: the secrets file would be in the git work tree {root} but is "
                     f"not git-ignored: add /{rel} to {root}/.gitignore (or point "
                     f"secretsFile outside the repository), then run again")


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:)(?P<password>\S*)@")


def mask_urls(text: str) -> str:
    """`scheme://user:password@host` -> `scheme://user:***@host`, anywhere in `text`.

    The password runs to the last `@` before whitespace (a password may hold `@`, `:` or `/`
    unencoded), so when in doubt more is masked, never less. Idempotent."""
    return _URL_PASSWORD.sub(lambda match: f"{match.group('head')}***@", text)


def masked(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value (4 characters or more, as it is and as the shell quotes
    it; see `remote.command.hide`, the one masking of values) and every URL password replaced
    by `***`."""
    return mask_urls(hide(text, secrets))
