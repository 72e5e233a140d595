"""`fab logs`: bad input refused before any connection (unknown app, malformed pattern, a
`--since` docker would not take), the services' lines merged in time order, the command
quoted. The engine's real logs are read in tests/integration/test_checks_on_sandbox.py."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from vedfin_ops.errors import UsageError
from vedfin_ops.steps import logs

from . import test_orchestration as orchestration
from .test_orchestration import World

v1_live, world = orchestration.v1_live, orchestration.world


def test_bad_input_is_refused_naming_the_option(world: World) -> None:
    with pytest.raises(UsageError, match=r"logs --app: production has no app 'nope' \(it has: "
                                         r"api-production, web-production\)"):
        logs.services(world.config, "production", "nope")
    with pytest.raises(UsageError, match="logs --grep"):
        logs.check_grep("(unclosed")
    for since in ("yesterday", "10", "-5m", "10m; rm -rf /", "2026-13"):
        with pytest.raises(UsageError, match="logs --since"):
            logs.check_since(since)
    for since in ("10m", "2h", "1h30m", "45s", "2026-11-29", "2026-11-29T12:00:00Z"):
        assert logs.check_since(since) == since


def test_every_app_of_the_env_or_the_one_named(world: World) -> None:
    assert logs.services(world.config, "production") == [
        "vedfin-production_api-production", "vedfin-production_web-production"]
    assert logs.services(world.config, "production", "web-production") == [
        "vedfin-production_web-production"]


def test_the_command_is_quoted_and_follows_all_at_once() -> None:
    once = logs.command(["a_b", "c'd"], "10m", 50, follow=False)
    assert [shlex.split(part)[-2] for part in once.split("; ")] == ["a_b", "c'd"]
    assert "--follow" not in once and "--timestamps" in once and "--tail 50" in once
    followed = logs.command(["a", "b"], "1h", 5, follow=True)
    assert followed.count("--follow") == 2
    assert followed.endswith("cat >/dev/null; kill $p0 $p1 2>/dev/null; true")


def test_lines_are_merged_by_time_and_an_engine_message_keeps_its_place() -> None:
    text = ("2026-11-29T16:43:28.44Z s_api.1.x@vm    | api [bold]started\n"
            "2026-11-29T16:43:29.00Z s_api.1.x@vm    | api second\n"
            "error from daemon: task gone\n"
            "2026-11-29T16:43:28.10Z s_web.1.y@vm    | web started\n")
    assert logs.ordered(text) == [
        "2026-11-29T16:43:28.10Z s_web.1.y@vm    | web started",
        "2026-11-29T16:43:28.44Z s_api.1.x@vm    | api [bold]started",
        "2026-11-29T16:43:29.00Z s_api.1.x@vm    | api second",
        "error from daemon: task gone"]


def test_grep_filters_here_and_secrets_are_masked(world: World) -> None:
    class Host:
        def run(self, command: str, **_kwargs: Any) -> str:
            return ("2026-11-29T16:43:28Z s_api.1.x@vm    | ERROR password hunter2-secret\n"
                    "2026-11-29T16:43:29Z s_api.1.x@vm    | fine\n")

        def redact(self, text: str) -> str:
            return text.replace("hunter2-secret", "***")

    shown: list[str] = []
    count = logs.show_logs(Host(), world.config, "production",  # type: ignore[arg-type]
                           grep="ERROR|FATAL", out=shown.append)
    assert count == 1 and shown == ["2026-11-29T16:43:28Z s_api.1.x@vm    | ERROR password ***"]
