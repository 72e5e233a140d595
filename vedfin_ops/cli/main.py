"""The `vedfin` command (and `python -m vedfin_ops`): the task tree as a Fabric program.

`vedfin -H vps deploy.production` needs Fabric (hosts, ssh_config, keys); `vedfin --list` and
`vedfin check-config` do not, and Fabric's import (paramiko, cryptography) alone costs more
than the whole listing. So the program is Fabric's only when a Fabric flag or help is asked
for; otherwise plain Invoke over the same tree, where a remote task says how to give a host.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Fabric's own core flags (fabric.main.Fab.core_args minus Invoke's, with a namespace given);
# tests/cli/test_package.py checks this list against the installed Fabric
FABRIC_LONG = frozenset({"hosts", "ssh-config", "identity", "connect-timeout",
                         "list-agent-keys", "prompt-for-login-password",
                         "prompt-for-passphrase"})
FABRIC_SHORT = frozenset({"H", "S", "i", "t"})
HELP_LONG, HELP_SHORT = "help", "h"


def needs_fabric(args: list[str], task_names: set[str]) -> bool:
    """True when a core flag before the first task name is Fabric's, or help is asked for
    (help should list Fabric's flags too)."""
    for arg in args:
        if arg in task_names or arg == "--":
            break
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            if name in FABRIC_LONG or name == HELP_LONG:
                return True
        elif arg.startswith("-") and len(arg) > 1 and \
                set(arg[1:]) & (FABRIC_SHORT | {HELP_SHORT}):
            # `-eH vps` combines flags; a letter of a value (`-fH.yaml`) may count too, which
            # only costs Fabric's start-up: Fabric's program takes every Invoke flag as well
            return True
    return False


def program(argv: list[str]) -> Any:
    from invoke.program import Program

    from vedfin_ops import __version__
    from vedfin_ops.cli.tasks import ns

    names = set(ns.task_names)
    for aliases in ns.task_names.values():
        names.update(aliases)
    if needs_fabric(argv[1:], names):
        from fabric import Config, Executor
        from fabric.main import Fab

        return Fab(name="vedfin", version=__version__, namespace=ns, binary="vedfin",
                   executor_class=Executor, config_class=Config)
    return Program(name="vedfin", version=__version__, namespace=ns, binary="vedfin")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv if argv is None else argv)
    try:
        program(args).run(args)
    except BrokenPipeError:  # `vedfin --list | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
