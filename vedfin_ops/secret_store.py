"""Secret values: from the process environment first, then the git-ignored secrets file.

Only names ever leave this module in messages; values go to `render` and nowhere else.
"""

from __future__ import annotations

import os
import secrets as _random
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import ConfigError, UsageError
from .quoting import env_line_ok


def secrets_path(config: Config) -> Path:
    """The secrets file, relative to the config file's folder so any working directory works."""
    path = Path(config.secrets_file)
    return path if path.is_absolute() else Path(config.source).resolve().parent / path


def read_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
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
                raise UsageError(f"error: secret {name}: its value holds a newline, which an "
                                 f"env file cannot carry")
            out[name] = value
    return out


def missing(config: Config, env: str | None, found: Mapping[str, str]) -> list[str]:
    return [name for name in config.secret_names(env) if name not in found]


@dataclass(frozen=True)
class Generated:
    path: Path
    generated: list[str]
    kept: list[str]
    to_fill_by_hand: list[str]


def generate(config: Config, env: str) -> Generated:
    """Fill the missing `generate` secrets of `env` (the runbook's `openssl rand -hex 32`)."""
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
        write_private(path, "".join(f"{k}={v}\n" for k, v in stored.items()))
    return Generated(path, generated, kept, manual)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` as 0600, atomically: never a moment readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
