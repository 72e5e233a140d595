"""What every task shares: config lookup, error -> exit code mapping, the two output streams.

Results go to stdout (so `--json | jq` works); progress, warnings and errors go to stderr.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.exceptions import Exit
from rich.console import Console

from .config import Config
from .errors import VedfinError
from .loader import load_config

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Turn our exceptions into the contract's exit codes with one line, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VedfinError as exc:
            message = str(exc)
            if not message.startswith("error:"):
                message = f"error: {message}"
            raise Exit(message, code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("error: interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]


def config_for(path: str | None) -> Config:
    return load_config(path)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def is_remote(c: Any) -> bool:
    from fabric import Connection

    return isinstance(c, Connection)


def remote(c: Any, accept_new_host_key: bool = False) -> Any:
    """The Host behind `fab -H HOST`: `inv` has no host to talk to."""
    from fabric import Connection

    from .errors import UsageError
    from .host import Host

    if not isinstance(c, Connection):
        raise UsageError("error: this task runs on a host: fab -H HOST TASK "
                         "(e.g. fab -S .sandbox/ssh_config -H sandbox TASK)")
    return Host(c, accept_new_host_key)


def say(message: str) -> None:
    err.print(f"[bold]>[/bold] {message}", highlight=False, markup=True)


class LiveLines:
    """Rollout progress: redrawn in place on a terminal, printed on change otherwise."""

    def __init__(self) -> None:
        self.last: list[str] = []

    def __call__(self, lines: list[str]) -> None:
        if lines == self.last:
            return
        self.last = lines
        for line in lines:
            err.print(f"  {line}", highlight=False)
