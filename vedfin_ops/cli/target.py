"""The options every task shares, stated once.

Every task takes `--config F`; a task that runs on a host also takes `--accept-new-host-key`
and `--host-key-fingerprint`. `@on_host(...)` and `@local(...)` make an Invoke task of a body
that states only its own options: the body's first argument is a `Target` (Invoke's context,
the config, the host) instead of the context, and the task's signature is the body's own
options followed by the shared ones, with their help. Invoke builds the flags from that
signature (`inspect.signature` reads `__signature__`) and gives out short flags in its order,
so every flag is what it was when each task spelled the shared options itself. Both decorators
also turn errors into the contract's exit codes (`guarded`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from invoke.tasks import Task, task

from vedfin_ops.cli.output import config_for, guarded, is_remote, remote

if TYPE_CHECKING:
    from invoke.context import Context

    from vedfin_ops.config.model import Config
    from vedfin_ops.remote.host import Host

CONFIG_HELP = {"config": "config file (default: $VEDFIN_CONFIG, else dokploy.yaml)"}
HOST_HELP = {**CONFIG_HELP,
             "accept_new_host_key": "pin the host key of a host never seen before",
             "host_key_fingerprint": "require this host key (SHA256:... as ssh-keygen -l "
                                     "prints it), pinned if new (default: "
                                     "$VEDFIN_HOST_KEY_FINGERPRINT)"}

# the shared options in the order they close every task's signature, with their defaults
_LOCAL: dict[str, Any] = {"config": None}
_HOST: dict[str, Any] = {"accept_new_host_key": False, "host_key_fingerprint": None,
                         "config": None}


class Target:
    """What a task's body gets: the context, the config and the host, each made on first
    use, so a body checks its own options before the config is read and before a host is
    reached, in the order it states."""

    def __init__(self, c: Context, config: str | None = None, accept_new_host_key: bool = False,
                 host_key_fingerprint: str | None = None) -> None:
        self.c = c
        self.config_path = config
        self.accept_new_host_key = accept_new_host_key
        self.host_key_fingerprint = host_key_fingerprint

    @functools.cached_property
    def config(self) -> Config:
        """`--config F`, else $VEDFIN_CONFIG, else dokploy.yaml: loaded and validated."""
        return config_for(self.config_path)

    @functools.cached_property
    def host(self) -> Host:
        """The host of `fab -H HOST`, its key checked as the two flags say (bad input under
        `inv`, which has no host)."""
        return remote(self.c, self.accept_new_host_key, self.host_key_fingerprint)

    @property
    def is_remote(self) -> bool:
        """Under `fab -H HOST` (a task that also runs locally asks before using `host`)."""
        return is_remote(self.c)


def _make_task(shared: dict[str, Any], shared_help: dict[str, str],
               help: dict[str, str] | None, task_options: dict[str, Any]
               ) -> Callable[[Callable[..., None]], Task[Any]]:
    def decorate(body: Callable[..., None]) -> Task[Any]:
        own = list(inspect.signature(body).parameters.values())[1:]  # after the Target
        clash = sorted(set(shared) & {p.name for p in own})
        if clash:
            raise TypeError(f"{body.__name__}: {', '.join(clash)} is a shared option")
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        signature = inspect.Signature([
            inspect.Parameter("c", kind), *own,
            *(inspect.Parameter(name, kind, default=default) for name, default in shared.items())])

        def call(*args: Any, **kwargs: Any) -> None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            target = Target(values.pop("c"), **{name: values.pop(name) for name in shared})
            body(target, **values)

        functools.update_wrapper(call, body)
        call.__signature__ = signature  # type: ignore[attr-defined]
        made: Task[Any] = task(help={**shared_help, **(help or {})}, **task_options)(
            guarded(call))
        return made

    return decorate


def on_host(*, help: dict[str, str] | None = None, **task_options: Any
            ) -> Callable[[Callable[..., None]], Task[Any]]:
    """A task that runs on a host: its own options, then `--accept-new-host-key`,
    `--host-key-fingerprint` and `--config`. `task_options` go to Invoke's `@task` (name)."""
    return _make_task(_HOST, HOST_HELP, help, task_options)


def local(*, help: dict[str, str] | None = None, **task_options: Any
          ) -> Callable[[Callable[..., None]], Task[Any]]:
    """A task that runs here (or reads a host only when there is one): its own options, then
    `--config`."""
    return _make_task(_LOCAL, CONFIG_HELP, help, task_options)
