"""What every task shares: config lookup, error -> exit code mapping, the two output streams.

Results go to stdout (so `--json | jq` works); progress, warnings and errors go to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from invoke.exceptions import Exit

from vedfin_ops.errors import VedfinError

if TYPE_CHECKING:
    from invoke.context import Context
    from rich.console import Console
    from rich.live import Live

    from vedfin_ops.config.model import Config
    from vedfin_ops.remote.host import Host


class _Console:
    """A rich Console made on first use: `vedfin --list` never imports rich.

    The one configuration of both streams. markup=False and emoji=False: what we print
    includes text from outside (migration output, health bodies, engine messages);
    `[/app/prisma/migrations/001_init]` and `:x:` are data, never a style tag or an emoji.
    highlight=False: no guessed colours on numbers and paths."""

    def __init__(self, stderr: bool, **overrides: Any) -> None:
        self.stderr = stderr
        self.overrides = overrides  # tests: a file, a terminal
        self._console: Console | None = None

    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self.stderr, soft_wrap=True, markup=False,
                                    emoji=False, highlight=False, **self.overrides)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def _rich(console: Any) -> Console:
    """The rich Console behind `err` (a test may have put a plain Console there)."""
    return console.real() if isinstance(console, _Console) else console


out: Any = _Console(stderr=False)
err: Any = _Console(stderr=True)

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
    from vedfin_ops.config.loader import load_config

    return load_config(path)


def warn(message: str) -> None:
    from rich.text import Text

    _settle_live()
    err.print(Text.assemble(("warning:", "yellow"), " ", message))


def is_remote(c: Context) -> bool:
    """Under `-H HOST` the context is a fabric Connection; fabric is never imported to ask
    (a context cannot be a Connection when fabric was not loaded)."""
    fabric = sys.modules.get("fabric")
    return fabric is not None and isinstance(c, fabric.Connection)


def program_name() -> str:
    """How the user should run a remote task: the command they used when it can take a host
    (`vedfin`), else `fab` (`inv` has no hosts)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0.endswith(os.path.join("vedfin_ops", "__main__.py")):
        return "python -m vedfin_ops"
    return "vedfin" if os.path.basename(argv0) == "vedfin" else "fab"


def remote(c: Context, accept_new_host_key: bool = False,
           host_key_fingerprint: str | None = None) -> Host:
    """The Host behind `fab -H HOST`: `inv` has no host to talk to. The expected host key
    fingerprint is `host_key_fingerprint`, else $VEDFIN_HOST_KEY_FINGERPRINT."""
    from fabric import Connection

    from vedfin_ops.errors import UsageError
    from vedfin_ops.remote.host import FINGERPRINT_ENV, Host

    if not isinstance(c, Connection):
        prog = program_name()
        raise UsageError(f"this task runs on a host: {prog} -H HOST TASK "
                         f"(e.g. {prog} -S .sandbox/ssh_config -H sandbox TASK)")
    expected = host_key_fingerprint or os.environ.get(FINGERPRINT_ENV) or None
    return Host(c, accept_new_host_key, expected)


def say(message: str) -> None:
    from rich.text import Text

    _settle_live()
    err.print(Text.assemble((">", "bold"), " ", message))


_active: LiveLines | None = None  # the view being redrawn on the terminal, if any


def _settle_live() -> None:
    """A message between two rollout views: the view stays as it last was, above it."""
    if _active is not None:
        _active.settle()


class LiveLines:
    """Rollout progress, the `show` of deploy, rollback, scale (pause, resume), restart and
    cluster.drain: one line per service.

    Used as `with LiveLines() as show:`. On a terminal, one view redrawn in place (rich's
    Live); a `say` or `warn` in between leaves the view as it last was, and the next lines
    start a new one below it. Leaving the block (done, failed, Ctrl-C) stops the view and
    gives the cursor back, so the `error:` line prints after it on a sane terminal.
    Elsewhere (CI, a pipe, TERM=dumb, or called outside a `with`): each changed set of lines
    printed.
    The lines hold the engine's words: rich Text, never markup.
    """

    def __init__(self) -> None:
        self.last: list[str] = []
        self._entered = False
        self._live: Live | None = None

    def __enter__(self) -> LiveLines:
        global _active
        self._entered = True
        _active = self
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        global _active
        self.settle()
        self._entered = False
        if _active is self:
            _active = None

    def __call__(self, lines: list[str]) -> None:
        from rich.console import Group
        from rich.text import Text

        if lines == self.last:
            return
        self.last = list(lines)
        rows = [Text(f"  {line}") for line in lines]
        console = _rich(err)
        if not (self._entered and console.is_interactive):
            for row in rows:
                console.print(row)
            return
        if self._live is None:
            from rich.live import Live

            # no redirection: stdout stays the results' stream; no thread: redrawn on change
            self._live = Live(Group(*rows), console=console, auto_refresh=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start(refresh=True)
        else:
            self._live.update(Group(*rows), refresh=True)

    def settle(self) -> None:
        """Stop redrawing: the last view stays on screen, the cursor comes back."""
        live, self._live = self._live, None
        if live is not None:
            self.last = []
            with contextlib.suppress(Exception):  # a terminal gone (SIGHUP) must not mask
                live.stop()                        # the error being raised
