"""Values quoted for another language: a shell word, a PostgreSQL literal or identifier, a
YAML string, and the one check an env file's value needs (it has no quoting: a line is a
variable).

Every value that reaches a remote shell passes through `sh` here, and a value put into SQL as
a literal or a quoted name through `sql_literal`/`sql_ident`, so a domain, a tag or a secret
can never turn into syntax. Elsewhere the guard is another one: strings in a rendered stack
file go through `rendering/files.yaml_scalar` (YAML's own escaping, which JSON's rules here
do not match for every character; `yaml_str` only quotes the tool's own figures, `1536M`,
`30s`), and the database and extension names db-init writes unquoted are ones the config's
model admits only as plain identifiers.
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
