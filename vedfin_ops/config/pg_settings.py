"""`postgres.settings`: server options as PostgreSQL writes them (`shared_buffers: 256MB`).

PostgreSQL's own units: memory in kB, MB, GB, TB (powers of 1024) and time in us, ms, s, min,
h, d. A value is normalised the way `SHOW` prints it (the largest unit that divides it
exactly), so the running server can be compared with the config after a restart.
"""

from __future__ import annotations

import re

MEMORY_KB = {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}
TIME_US = {"us": 1, "ms": 1000, "s": 1000**2, "min": 60 * 1000**2, "h": 3600 * 1000**2,
           "d": 86400 * 1000**2}
NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?")
_VALUE = re.compile(r"(?P<number>\d+)\s*(?P<unit>[A-Za-z]+)?")
_WORD = re.compile(r"[A-Za-z0-9_.+-]+")
# settings whose meaning is memory, used for the budget against the container's limit
BUDGET = ("shared_buffers", "maintenance_work_mem", "work_mem", "max_connections")


def check_value(name: str, value: str) -> str:
    """The value as it will be passed (`-c name=value`), or ValueError saying why not: a
    number with one of PostgreSQL's units, or a plain word; nothing a shell or PostgreSQL's
    option parser would read as more than one value."""
    if NAME.fullmatch(name) is None:
        raise ValueError(f"{name!r} is not a PostgreSQL setting name")
    match = _VALUE.fullmatch(value)
    if match and match.group("unit") and match.group("unit") not in {**MEMORY_KB, **TIME_US}:
        raise ValueError(f"{value!r}: unit {match.group('unit')!r} is not one of PostgreSQL's "
                         f"({', '.join([*MEMORY_KB, *TIME_US])})")
    if not match and _WORD.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a number with a unit or a plain word")
    return value


def normalised(value: str) -> str:
    """`262144kB` -> `256MB`, `60s` -> `1min`, `20` -> `20`, `On` -> `on`: as SHOW prints."""
    match = _VALUE.fullmatch(value.strip())
    if match is None:
        return value.strip().lower()
    number, unit = int(match.group("number")), match.group("unit")
    for table in (MEMORY_KB, TIME_US):
        if unit in table:
            base = number * table[unit]
            for name, size in sorted(table.items(), key=lambda kv: -kv[1]):
                if base % size == 0 and (base or name == unit):
                    return f"{base // size}{name}"
    return str(number) if unit is None else f"{number}{unit}"


def memory_mib(value: str) -> float | None:
    match = _VALUE.fullmatch(value.strip())
    if match is None or match.group("unit") not in MEMORY_KB:
        return None
    return int(match.group("number")) * MEMORY_KB[match.group("unit")] / 1024


def budget_mib(settings: dict[str, str]) -> float:
    """shared_buffers + maintenance_work_mem + max_connections x work_mem: what the server
    may hold at once beyond its own code and caches (PostgreSQL's defaults where unset)."""
    def mib(name: str, default: str) -> float:
        return memory_mib(settings.get(name, default)) or 0.0

    connections = int(settings.get("max_connections", "100"))
    return (mib("shared_buffers", "128MB") + mib("maintenance_work_mem", "64MB")
            + connections * mib("work_mem", "4MB"))
