"""Errors that map to the contract's exit codes.

Tasks catch these at the edge and turn them into one line and an exit code, so a user never
reads a traceback for a mistake that is theirs (exit 2) or a check that failed (exit 1).
"""

from __future__ import annotations


class VedfinError(Exception):
    """Base class; `exit_code` is what the task exits with."""

    exit_code = 1


class ConfigError(VedfinError):
    """Bad input: names the file and the key path, so the user can go straight to it."""

    exit_code = 2

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        super().__init__(self.line())

    def line(self) -> str:
        where = f"{self.file}: {self.key}: " if self.key else f"{self.file}: "
        # One line whatever a key or value held: a newline would split the message.
        return f"error: {where}{self.message}".replace("\n", "\\n").replace("\r", "\\r")


class UsageError(VedfinError):
    """Bad flags or arguments (unknown env, bad tag): also the user's to fix."""

    exit_code = 2


class CheckFailed(VedfinError):
    """A check, a deploy or a lock said no: exit 1."""

    exit_code = 1
