"""`docker service logs`: what `fab logs` shows and follows, and the new tasks' lines the
deploy searches for errors (`monitoring/logs.py` reads both)."""

from __future__ import annotations

from vedfin_ops.remote.quoting import sh

# the sections of `release_tasks_logs`' answer, per service
TASKS, LOGS, END = "--VEDFIN-TASKS--", "--VEDFIN-LOGS--", "--VEDFIN-END"
_SPEC_IMAGE = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
_TASK_IMAGE = "{{.ID}} {{.Image}}"


def service_logs(names: list[str], since: str, tail: int, follow: bool) -> str:
    """One command for every service: one after the other, or all followed at once until
    the channel's stdin closes (the user's Ctrl-C closes the channel: the followers on the
    host are stopped then, not left waiting for a line to fail on)."""
    each = [f"docker service logs --timestamps --no-trunc --since {sh(since)} --tail "
            f"{int(tail)}{' --follow' if follow else ''} {sh(name)} 2>&1" for name in names]
    if follow:
        started = " ".join(f"{one} & p{i}=$!;" for i, one in enumerate(each))
        pids = " ".join(f"$p{i}" for i in range(len(each)))
        return f"{started} cat >/dev/null; kill {pids} 2>/dev/null; true"
    return "; ".join(each)


def release_tasks_logs(names: list[str], tail: int, since: dict[str, str] | None = None
                       ) -> str:
    """One command: per service, the ids of every task of its current image (running, or
    crashed and replaced: a new release's FATAL is in the task that died), then its lines
    (since its update started, when known: an earlier release of the same image must not
    count), then the logs command's exit status."""
    since = since or {}

    def after(name: str) -> str:
        return f"--since {sh(since[name])} " if since.get(name) else ""

    return "; ".join(
        f"echo {TASKS}; img=$(docker service inspect --format {sh(_SPEC_IMAGE)} {sh(name)}) "
        f"&& docker service ps --no-trunc --format {sh(_TASK_IMAGE)} {sh(name)} | "
        f"awk -v i=\"$img\" '$2 == i {{print $1}}'; echo {LOGS}; "
        f"docker service logs --timestamps --no-trunc {after(name)}--tail {int(tail)} "
        f"{sh(name)} 2>&1; echo \"{END} $?--\"" for name in names)
