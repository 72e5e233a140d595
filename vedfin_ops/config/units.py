"""Size and duration parsing, done once at load time so every later layer works in MiB/seconds."""

from __future__ import annotations

import json
import math
import re

# one size grammar for the config (`1536m`, `1.5g`, `512MiB`) and Docker's output (`58.12MiB`,
# `12kB`, `0B`): a number, a unit letter (none: bytes), `i` for binary, an optional `b`
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_FACTOR_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}

SIZE_HINT = "is not a size like 1536m or 1.5g"
DURATION_HINT = "is not a duration like 30s or 5m"


def size_mib(text: str, *, decimal: bool) -> float:
    """A size in MiB. `KiB`/`MiB` are binary; `kB`/`MB` are decimal when `decimal` (Docker
    prints them so: go-units' HumanSize) and binary otherwise (Docker reads `1GB` in a memory
    limit as 1 GiB: go-units' RAMInBytes). Raises ValueError on anything else."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    number, letter, binary, _ = match.groups()
    base = 1000 if decimal and letter and not binary else 1024
    return float(number) * float(base ** _POWER[letter.lower()]) / 1048576


def parse_mib(value: object) -> int:
    """Parse `1536m`, `4GB`, `1.5g`, `512MiB` into whole MiB, binary units as Docker reads them.

    A bare number is refused rather than guessed: Docker would read it as bytes, a human as MiB.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"{show(value)} {SIZE_HINT}")
    match = _SIZE.match(value)
    if not match or not match.group(2):
        raise ValueError(f"{show(value)} {SIZE_HINT}")
    mib = size_mib(value, decimal=False)
    if not math.isfinite(mib) or mib != int(mib):
        raise ValueError(f"{show(value)} is not a whole number of MiB")
    return int(mib)


def parse_seconds(value: object) -> float:
    """Parse `30s`, `5m`, `500ms`; a bare number is seconds (YAML users write `interval: 5`)."""
    if isinstance(value, bool):
        raise ValueError(f"{show(value)} {DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _FACTOR_S[match.group(2)]
    else:
        raise ValueError(f"{show(value)} {DURATION_HINT}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{show(value)} {DURATION_HINT}")
    return seconds


def format_mib(mib: float) -> str:
    """`1536` -> `1536M`: the unit Docker's stack loader reads back to the same bytes."""
    return f"{int(mib)}M"


def format_seconds(seconds: float) -> str:
    """Swarm wants durations as strings; whole seconds where possible, else milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def format_cpus(cpus: float) -> str:
    """`1.5` -> `"1.5"`, `1.0` -> `"1"`: the stack loader takes cpus as a string."""
    return f"{cpus:g}"


def show(value: object) -> str:
    """A value as the user wrote it, quoted the way their YAML would: `"1536x"`, `-1`, `true`."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # escapes newlines: one line, always
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)
