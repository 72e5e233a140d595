"""`fab logs`: bad input refused before any connection (unknown app, malformed pattern, a
`--since` docker would not take), the services' lines merged in time order, the command
quoted. The engine's real logs are read in tests/integration/test_checks_on_sandbox.py."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World
from vedfin_ops.errors import UsageError
from vedfin_ops.monitoring import logs

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
    """Through the masking every step uses (`as_env_host`: the env's secret values and any
    URL's password), on the scripted engine's log lines."""
    from vedfin_ops.run.env_run import as_env_host

    _fake_logs(world, {"api-production": [
        ("current", "ERROR login with s3cret-value-jwt_secret_prod to "
                    "postgresql://app:pw-in-a-url@db/x"),
        ("current", "fine")]})
    host = as_env_host(world.host, world.config, "production")
    shown: list[str] = []
    count = logs.show_logs(host, world.config, "production", app="api-production",
                           grep="ERROR|FATAL", out=shown.append)
    assert count == 1 and len(shown) == 1
    assert shown[0].endswith("| ERROR login with *** to postgresql://app:***@db/x"), shown


@pytest.mark.parametrize("grep", ["s3cret-value", "jwt_secret_prod", "pw-in-a-url",
                                  r"value-\w+ to"])
def test_grep_never_tells_which_lines_hold_a_secret(world: World, grep: str) -> None:
    """The pattern is matched against what would be shown (masked), as in follow mode: a
    search for a secret's value finds nothing rather than confirming it."""
    from vedfin_ops.run.env_run import as_env_host

    _fake_logs(world, {"api-production": [
        ("current", "login with s3cret-value-jwt_secret_prod to "
                    "postgresql://app:pw-in-a-url@db/x")]})
    shown: list[str] = []
    host = as_env_host(world.host, world.config, "production")
    assert logs.show_logs(host, world.config, "production", grep=grep, out=shown.append) == 0
    assert shown == []
    assert logs.show_logs(host, world.config, "production", grep=r"\*\*\*",
                          out=shown.append) == 1


def _fake_logs(world: World, lines: dict[str, list[tuple[Any, str]]]) -> None:
    engine = world.host.engine()
    engine["logs"] = {f"vedfin-production_{app}": said for app, said in lines.items()}
    world.host.set_engine(**engine)


def test_a_deploy_warns_with_the_new_tasks_error_lines_and_goes_live(world: World) -> None:
    _fake_logs(world, {"api-production": [
        (1, "ERROR the old release's error, not this one's"),
        ("current", "api v2 listening on 3000"),
        ("current", "ERROR [ExceptionsHandler] [bold]token s3cret-value-jwt_secret_prod[/bold]"),
        ("current", "UnhandledPromiseRejection: boom")]})
    assert world.deploy("v2").result == "ok"
    said = "\n".join(world.said)
    assert "warning: 2 error line(s) in the new tasks' logs (verify.logErrors):" in said
    assert "[bold]token ***[/bold]" in said and "s3cret-value" not in said
    assert "old release's error" not in said and "listening" not in said


def test_error_lines_fail_the_deploy_where_the_config_says_so(world: World) -> None:
    world.config.verify.log_errors_fail = True
    _fake_logs(world, {"web-production": [("current", "FATAL cannot reach the api")]})
    with pytest.raises(Exception) as raised:
        world.deploy("v2")
    orchestration.assert_back_on_v1(world, raised.value, "failed")
    assert "logs: 1 error line(s) in the new tasks' logs (verify.logErrors)" in str(
        raised.value)


def test_logs_that_cannot_be_read_only_warn(world: World) -> None:
    from tests.fake.host import Fault

    _fake_logs(world, {"api-production": [("current", "api v2 listening on 3000")]})
    world.host.inject(Fault("read the new tasks' logs", 1, "remote"))
    assert world.deploy("v2").result == "ok"
    assert any(s.startswith("warning: the new tasks' logs not read (") for s in world.said)


def test_clean_logs_say_so(world: World) -> None:
    world.config.verify.log_errors_fail = True
    _fake_logs(world, {"api-production": [("current", "api v2 listening on 3000")]})
    assert world.deploy("v2").result == "ok"
    assert "verify: no error lines in the new tasks' logs" in world.said


def test_an_unreadable_log_fails_the_deploy_where_error_lines_would(world: World) -> None:
    from tests.fake.host import Fault

    world.config.verify.log_errors_fail = True
    world.host.inject(Fault("read the new tasks' logs", 1, "remote"))
    with pytest.raises(Exception) as raised:
        world.deploy("v2")
    orchestration.assert_back_on_v1(world, raised.value, "failed")
    assert "logs: not read (" in str(raised.value)


def test_error_lines_come_only_from_the_current_images_tasks_and_match_per_line() -> None:
    output = ("--VEDFIN-TASKS--\nt2\nt3\n--VEDFIN-LOGS--\n"
              "2026-11-29T10:00:01Z s_api.1.t1@vm    | ERROR old task\n"
              "2026-11-29T10:00:02Z s_api.1.t2@vm    | all fine, no ERRORS here\n"
              "2026-11-29T10:00:03Z s_api.2.t2@vm    | Unhandled rejection\n"
              "2026-11-29T10:00:04Z s_api.2.t3@vm    | FATAL crashed, replaced by t2\n"
              "--VEDFIN-END 0--\n")
    assert logs.error_lines(output, [r"\bERROR\b", r"\bFATAL\b", "Unhandled"]) == [
        "2026-11-29T10:00:03Z s_api.2.t2@vm    | Unhandled rejection",
        "2026-11-29T10:00:04Z s_api.2.t3@vm    | FATAL crashed, replaced by t2"]
    assert logs.task_id("vedfin-production_api-production.2.abc123def@node-1") == "abc123def"


def test_a_carriage_return_inside_an_app_line_stays_in_that_line() -> None:
    output = ("--VEDFIN-TASKS--\nt2\n--VEDFIN-LOGS--\n"
              "2026-11-29T10:00:02Z s_api.1.t2@vm    | progress 10%\rprogress 100%\x0cdone\r\n"
              "2026-11-29T10:00:03Z s_api.1.t2@vm    | FATAL x\u2028y\n--VEDFIN-END 0--\n")
    assert logs.error_lines(output, ["FATAL"]) == [
        "2026-11-29T10:00:03Z s_api.1.t2@vm    | FATAL x\u2028y"]


@pytest.mark.parametrize(("output", "why"), [
    ("--VEDFIN-TASKS--\n--VEDFIN-LOGS--\n--VEDFIN-END 0--\n",
     "no task of the service's current image was listed"),
    ("--VEDFIN-TASKS--\nt1\n--VEDFIN-LOGS--\nError: No such service: s_api\n"
     "--VEDFIN-END 1--\n", "docker service logs failed: Error: No such service: s_api"),
    ("--VEDFIN-TASKS--\nt1\n--VEDFIN-LOGS--\n"
     "error from daemon in stream: Error grabbing logs: invalid character\n"
     "--VEDFIN-END 0--\n", "docker said: error from daemon in stream: Error grabbing logs"),
])
def test_logs_that_were_not_read_whole_are_never_clean(output: str, why: str) -> None:
    with pytest.raises(logs.LogsNotRead, match=re.escape(why)):
        logs.error_lines(output, ["ERROR"])


def test_a_new_task_that_crashed_and_was_replaced_is_still_read(world: World) -> None:
    engine = world.host.engine()
    engine["crashed"] = {"vedfin-production_api-production": ["crashed1"]}
    world.host.set_engine(**engine)
    _fake_logs(world, {"api-production": [("crashed1", "FATAL cannot start: [red]no db[/red]"),
                                          ("current", "api v2 listening on 3000")]})
    assert world.deploy("v2").result == "ok"
    assert any("| FATAL cannot start: [red]no db[/red]" in s for s in world.said), world.said


def test_an_engine_message_in_the_logs_is_a_log_not_read(world: World) -> None:
    _fake_logs(world, {"web-production": [("docker", "error from daemon in stream: boom")]})
    assert world.deploy("v2").result == "ok"
    assert any(s.startswith("warning: the new tasks' logs not read (") and "boom" in s
               for s in world.said), world.said
