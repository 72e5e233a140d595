"""The one place where values are quoted for another language (shell, YAML, env files).

Every value that reaches a remote shell or a rendered file passes through here, so a domain,
a tag or a secret can never turn into syntax.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable


def sh(value: object) -> str:
    """One shell word, whatever the value holds."""
    return shlex.quote(str(value))


def sh_join(words: Iterable[object]) -> str:
    return " ".join(sh(w) for w in words)


def yaml_str(value: object) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML): `"1.5"`, `"a: b"`."""
    return json.dumps(str(value), ensure_ascii=False)


def env_line_ok(value: str) -> bool:
    """Docker's env_file takes the rest of the line literally: only a newline can break it."""
    return "\n" not in value and "\r" not in value and "\0" not in value


def sql_literal(value: str) -> str:
    """A PostgreSQL string literal: quotes doubled (standard_conforming_strings is on by
    default since 9.1, so a backslash is an ordinary character)."""
    if "\0" in value:
        raise ValueError("a NUL cannot be in a PostgreSQL string")
    return "'" + value.replace("'", "''") + "'"


def sql_ident(value: str) -> str:
    """A PostgreSQL identifier, quoted: `"my db"`, `"a""b"`."""
    if "\0" in value:
        raise ValueError("a NUL cannot be in a PostgreSQL identifier")
    return '"' + value.replace('"', '""') + '"'
