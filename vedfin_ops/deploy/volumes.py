"""Adopting an existing PostgreSQL data volume (`postgres.volume: {name, external: true}`):
the path off Dokploy keeps the database that is already there instead of starting an empty
one. Judged before anything changes: the volume exists, no other container uses it (two
postgres on one data directory corrupt it) and its data is of the image's major version (a
major upgrade needs pg_upgrade or a dump, never just a new image)."""

from __future__ import annotations

import re

from vedfin_ops.errors import CheckFailed

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def major_of(version: str) -> str | None:
    """`postgres (PostgreSQL) 16.4 (Debian)` -> `16`; `... 9.6.24` -> `9.6`."""
    match = _VERSION.search(version)
    if match is None:
        return None
    first, second = match.group(1), match.group(2)
    return first if int(first) >= 10 or second is None else f"{first}.{second}"


def judge_adoption(answer: str, volume: str, image: str, own_service: str) -> str:
    """The answer of `commands.volume_probe` -> what adopting means, or CheckFailed."""
    lines = [line.strip() for line in answer.strip().splitlines()]
    if lines[:1] == ["missing"]:
        raise CheckFailed(f"postgres.volume: {volume} does not exist on the host (docker "
                          f"volume ls)")
    others = []
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "user":  # a container, running or stopped (a restart policy wakes it)
            name, _, service = rest.partition(" ")
            if service.strip() != own_service:
                others.append(name.lstrip("/"))
        elif kind == "service" and rest.strip() != own_service:
            others.append(f"service {rest.strip()}")
    if others:
        raise CheckFailed(f"postgres.volume: {volume} is in use by {', '.join(others)}: "
                          f"remove it first, a stopped container too (two postgres on one "
                          f"data directory corrupt it)")
    data = next((line[5:].strip() for line in lines if line.startswith("data")), "")
    said = next((line[6:] for line in lines if line.startswith("image ")), "")
    runs = major_of(said)
    if runs is None:
        raise CheckFailed(f"postgres.volume: cannot tell which PostgreSQL {image} runs "
                          f"(postgres --version said {said.strip()[:80]!r})")
    entries = next((line[8:].split() for line in lines if line.startswith("entries")), [])
    if not data and entries:
        raise CheckFailed(f"postgres.volume: {volume} is not empty but has no PG_VERSION at "
                          f"its root (found {', '.join(entries[:5])}): the data directory "
                          f"must be the volume's root, as postgres images mount it")
    if not data:
        return f"{volume}: empty, PostgreSQL {runs} initialises it"
    if data != runs:
        raise CheckFailed(
            f"postgres.volume: {volume} holds PostgreSQL {data} data and {image} runs "
            f"PostgreSQL {runs}: upgrade the data first (pg_upgrade, or pg_dump with a "
            f"PostgreSQL {data} image and restore into {runs}), or set postgres.image to a "
            f"PostgreSQL {data} image")
    return f"{volume}: PostgreSQL {data} data, adopted as it is"


def moves_onto(answer: str, own_service: str) -> bool:
    """The answer of `commands.volume_probe` says the volume holds data (a `PG_VERSION`) that
    the shared postgres (`own_service`) does not run on yet: the shared stack is about to move
    onto it, and its databases must be backed up from the volume itself first."""
    lines = [line.strip() for line in answer.strip().splitlines()]
    data = next((line[5:].strip() for line in lines if line.startswith("data")), "")
    return bool(data) and f"service {own_service}" not in lines
