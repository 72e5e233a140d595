"""`fab logs`: the runbook's "watch logs for errors" / "check logs", through the engine.

`docker service logs --timestamps` of the env's apps (or one), each line with the task it came
from (`<service>.<slot>.<task id>@<node>`) and its time; the services' lines merged in time
order, or followed as they come. `--grep` is a Python regular expression applied here, never
sent to the host. Lines are the apps' own words: printed literally, secrets masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from vedfin_ops.config.model import Config
from vedfin_ops.config.names import stack_name
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.remote import commands
from vedfin_ops.remote.commands.logs import END, LOGS, TASKS
from vedfin_ops.remote.host import RemoteHost

# docker's --since: a duration (10m, 1h30m, 45s) or a date/time (2026-11-29, ...T12:00:00Z)
_SINCE = re.compile(r"^(\d+[smhd])+$|^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z?)?$")
# `<time> <service>.<slot>.<task>@<node>    | <message>`, as `docker service logs
# --timestamps` prints it
_LINE = re.compile(r"^(?P<time>\d{4}-\d{2}-\d{2}T\S+)\s+(?P<task>\S+)\s+\|\s?(?P<text>.*)$")


def check_since(since: str) -> str:
    if not _SINCE.match(since):
        raise UsageError(f"logs --since: {since!r} is neither a duration (10m, 2h, 1h30m) nor "
                         f"a date (2026-11-29, 2026-11-29T12:00:00Z)")
    return since


def check_grep(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"logs --grep: {pattern!r} is not a regular expression ({exc})") \
            from None


def services(config: Config, env: str, app: str | None = None, option: str = "logs --app"
             ) -> list[str]:
    """The env's app services (`<stack>_<app>`), or the one named; an unknown app is bad
    input naming the ones there are."""
    apps = [a.name for a in config.apps(config.require_env(env))]
    if app is not None and app not in apps:
        raise UsageError(f"{option}: {env} has no app {app!r} (it has: {', '.join(apps)})")
    return [f"{stack_name(config, env)}_{name}" for name in ([app] if app else apps)]


def command(names: list[str], since: str, tail: int, follow: bool) -> str:
    """`fab logs`' command (`commands.service_logs`)."""
    return commands.service_logs(names, since, tail, follow)


ERROR_TAIL = 2000  # lines per task: a new task's start is recent, its history short


def release_tasks_logs(names: list[str], tail: int = ERROR_TAIL,
                       since: dict[str, str] | None = None) -> str:
    """The new tasks' ids and lines, per service (`commands.release_tasks_logs`)."""
    return commands.release_tasks_logs(names, tail, since)


def task_id(task: str) -> str:
    """`<service>.<slot>.<task id>@<node>` -> the task id."""
    return task.split("@", 1)[0].rsplit(".", 1)[-1]


class LogsNotRead(Exception):
    """What makes "no error lines" unprovable: a service whose tasks or logs were not read."""


def error_lines(output: str, patterns: list[str]) -> list[str]:
    """The lines of the current image's tasks that match an error pattern. Old tasks' lines
    are left out: a deploy that fixed an error must not be blamed for the release it replaced.
    Raises LogsNotRead when a service's answer is incomplete."""
    compiled = [re.compile(p) for p in patterns]
    found: list[str] = []
    for section in output.split(TASKS)[1:]:
        ids_part, _, rest = section.partition(LOGS)
        logs_part, _, status = rest.partition(END)
        tasks = set(ids_part.split())
        if not tasks:
            raise LogsNotRead("no task of the service's current image was listed")
        if status.strip().removesuffix("--").strip() != "0":
            raise LogsNotRead(f"docker service logs failed: {_first(logs_part)}")
        for line in (raw.rstrip("\r") for raw in logs_part.split("\n")):
            # an app's carriage return or form feed stays inside its line (not splitlines)
            match = _LINE.match(line)
            if match is None:
                if line.strip():  # docker's own words: an unreadable log, a gone service
                    raise LogsNotRead(f"docker said: {line.strip()[:160]}")
                continue
            if task_id(match.group("task")) in tasks and any(
                    c.search(match.group("text")) for c in compiled):
                found.append(line)
    return ordered("\n".join(found))


def _first(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no output"


def log_errors(host: RemoteHost, config: Config, env: str, names: list[str] | None = None,
               since: dict[str, str] | None = None) -> list[str]:
    """The runbook's "no errors in logs": what the tasks of the current release of the env's
    apps (or the services named) logged that matches `verify.logErrors`, secrets masked.
    Raises CheckFailed when the logs could not be read."""
    patterns = config.verify.log_errors
    names = services(config, env) if names is None else names
    if not patterns or not names:
        return []
    output = host.run(release_tasks_logs(names, since=since), what="read the new tasks' logs",
                      timeout=120)
    try:
        lines = error_lines(output, patterns)
    except LogsNotRead as exc:
        raise CheckFailed(f"logs not read: {host.redact(str(exc))}") from None
    return [host.redact(line) for line in lines]


def ordered(text: str) -> list[str]:
    """The services' lines merged by their time (stable: a service's own order is kept);
    a line docker printed without a task and time (an engine message) keeps its place."""
    keyed: list[tuple[str, int, str]] = []
    last = ""
    lines = text.split("\n")  # not splitlines: an app's \r or \x0c stays in its line
    for line in lines[:-1] if lines and lines[-1] == "" else lines:
        match = _LINE.match(line)
        if match:
            last = match.group("time")
        keyed.append((last, len(keyed), line))
    return [line for _, _, line in sorted(keyed)]


def show_logs(host: RemoteHost, config: Config, env: str, *, app: str | None = None,
              since: str = "10m", tail: int = 200, follow: bool = False,
              grep: str | None = None, out: Callable[[str], None] = print) -> int:
    """Print the env's logs; returns how many lines were shown."""
    names = services(config, env, app)
    check_since(since)
    pattern = check_grep(grep)
    if tail < 0:
        raise UsageError("logs --lines: must be 0 or more")
    shown = 0

    def emit(line: str) -> None:
        """Masked first, then matched: `--grep` sees only what would be shown, so a search
        for a secret's value can never tell which lines hold it (follow mode's lines come
        masked from the host already; masking is idempotent)."""
        nonlocal shown
        line = host.redact(line)
        if pattern is None or pattern.search(line):
            out(line)
            shown += 1

    run = command(names, since, tail, follow)
    if follow:
        from vedfin_ops.run.interrupts import signals_as_interrupts

        try:  # Ctrl-C is how a follow ends: the channel is closed, the host's followers stop
            with signals_as_interrupts(on_signal=getattr(host, "cancel_running", None)):
                host.run(run, what="follow logs", stream=emit, timeout=None)
        except KeyboardInterrupt:
            pass
        return shown
    for line in ordered(host.run(run, what="logs", timeout=120)):
        emit(line)
    return shown
