"""What every task shares: config lookup, error -> exit code mapping, the two output streams.

Results go to stdout (so `--json | jq` works); progress, warnings and errors go to stderr.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.exceptions import Exit
from rich.console import Console
from rich.text import Text

from vedfin_ops.config.loader import load_config
from vedfin_ops.config.model import Config
from vedfin_ops.errors import VedfinError

# markup=False: what we print includes text from outside (migration output, health bodies,
# engine messages); `[/app/prisma/migrations/001_init]` is data, never a style tag.
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)

F = TypeVar("F", bound=Callable[..., Any])


def error_line(message: str) -> str:
    """The one place the `error:` prefix is added: one line, whatever the message held."""
    text = " ".join(str(message).split()) or "failed"
    return text if text.startswith("error:") else f"error: {text}"


def guarded(fn: F) -> F:
    """Turn every exception into the contract's exit codes with one line, never a traceback
    (VEDFIN_DEBUG=1 shows the traceback of an unexpected one)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exit:
            raise
        except VedfinError as exc:
            raise Exit(error_line(str(exc)), code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("error: interrupted", code=1) from None
        except Exception as exc:
            if os.environ.get("VEDFIN_DEBUG") == "1":
                raise
            raise Exit(error_line(f"unexpected {type(exc).__name__}: {exc} "
                                  f"(VEDFIN_DEBUG=1 for the traceback)"), code=1) from None

    return wrapper  # type: ignore[return-value]


def config_for(path: str | None) -> Config:
    return load_config(path)


def warn(message: str) -> None:
    err.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False)


def is_remote(c: Any) -> bool:
    from fabric import Connection

    return isinstance(c, Connection)


def remote(c: Any, accept_new_host_key: bool = False,
           host_key_fingerprint: str | None = None) -> Any:
    """The Host behind `fab -H HOST`: `inv` has no host to talk to. The expected host key
    fingerprint is `host_key_fingerprint`, else $VEDFIN_HOST_KEY_FINGERPRINT."""
    from fabric import Connection

    from vedfin_ops.errors import UsageError
    from vedfin_ops.remote.host import FINGERPRINT_ENV, Host

    if not isinstance(c, Connection):
        raise UsageError("this task runs on a host: fab -H HOST TASK "
                         "(e.g. fab -S .sandbox/ssh_config -H sandbox TASK)")
    expected = host_key_fingerprint or os.environ.get(FINGERPRINT_ENV) or None
    return Host(c, accept_new_host_key, expected)


def say(message: str) -> None:
    err.print(Text.assemble((">", "bold"), " ", message), highlight=False)


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
