"""Uptime Kuma's admin account, made from the config's secrets on its first-run setup.

A new Uptime Kuma waits for its first visitor to name an admin; host.prepare is that visitor,
through the run's own SSH link (a tunnel to 127.0.0.1:`monitoring.uptimeKumaPort`) with the
tool's Uptime Kuma client (`monitoring/uptime_kuma.connect`, Socket.IO), as the sandbox does
for its own Kuma. The account is never replaced: a Kuma whose admin the secrets do not log in
to is reported, not reset.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from vedfin_ops.config.model import Config
from vedfin_ops.config.secret_store import masked
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.monitoring.uptime_kuma import Connect
from vedfin_ops.monitoring.uptime_kuma import connect as real_connect
from vedfin_ops.remote.host import RemoteHost
from vedfin_ops.run.polling import REAL, Clock, TimedOut, until

Account = Literal["missing", "ok", "other"]
FIRST_START = 180.0  # a new Kuma migrates its database before it answers


def credentials(config: Config, secrets: Mapping[str, str]) -> tuple[str, str]:
    """The admin's username and password from the config's secrets (bad input without)."""
    kuma = config.monitoring.uptime_kuma
    assert kuma is not None
    user = secrets.get(kuma.username[2:-1], "")
    password = secrets.get(kuma.password[2:-1], "")
    if not user or not password:
        raise UsageError(f"{config.source}: monitoring.uptimeKuma: the username and password "
                         f"secrets ({kuma.username}, {kuma.password}) need values: host.prepare "
                         f"makes Uptime Kuma's admin account from them")
    return user, password


@contextmanager
def client(host: RemoteHost, config: Config, connect: Connect, timeout: float) -> Iterator[Any]:
    """A client of the host's Kuma through an SSH tunnel, disconnected at the end."""
    port = config.monitoring.uptime_kuma_port
    forward = getattr(host, "forward", None)
    if forward is None or port is None:
        raise CheckFailed("uptime kuma: this host cannot forward a port")
    with forward(port) as local:
        api = connect(f"http://127.0.0.1:{local}", timeout)
        try:
            yield api
        finally:
            with contextlib.suppress(Exception):
                api.disconnect()


def account(host: RemoteHost, config: Config, secrets: Mapping[str, str], *,
            connect: Connect = real_connect) -> Account:
    """Read only: `missing` (Kuma waits for its setup), `ok` (the secrets log in), `other`."""
    user, password = credentials(config, secrets)
    hide = [v for v in secrets.values() if v]
    try:
        with client(host, config, connect, 30.0) as api:
            if api.need_setup():
                return "missing"
            try:
                api.login(user, password)
            except Exception:
                return "other"
            return "ok"
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(f"uptime kuma did not answer on the host's 127.0.0.1:"
                          f"{config.monitoring.uptime_kuma_port}: {masked(_line(exc), hide)}"
                          ) from None


def make_admin(host: RemoteHost, config: Config, secrets: Mapping[str, str], *,
               connect: Connect = real_connect, clock: Clock = REAL,
               wait: float = FIRST_START) -> str:
    """Wait for a (new) Kuma to answer, make its admin when it asks for one, and log in as it
    to prove it; returns what was done."""
    user, password = credentials(config, secrets)
    hide = [v for v in secrets.values() if v]

    def answers() -> str | None:
        with client(host, config, connect, 10.0) as api:  # not answering yet: transient
            made = "admin account there already"
            if api.need_setup():
                api.setup(user, password)
                made = "admin account made"
            try:
                api.login(user, password)
            except Exception as exc:  # an answer, not a delay: said at once
                return f"refused: {_line(exc)}"
            return made

    try:
        done = until(answers, timeout=wait, interval=2.0, clock=clock, transient=(Exception,))
    except TimedOut as exc:
        raise CheckFailed(f"uptime kuma: no admin account after {wait:g} s: "
                          f"{masked(exc.last.splitlines()[0] if exc.last else 'no answer', hide)}"
                          ) from None
    if done.startswith("refused: "):
        raise CheckFailed(f"uptime kuma: its admin account does not take the config's secrets "
                          f"({masked(done.removeprefix('refused: '), hide)}): another admin "
                          f"was made first; left as it is")
    return done


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
