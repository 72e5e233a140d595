"""What the CLI prints: outside text literally, and exactly one `error:` line for any failure."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from invoke.exceptions import Exit
from rich.console import Console

from vedfin_ops.checks.runner import Check
from vedfin_ops.checks.smoke import SmokeReport
from vedfin_ops.cli import output as cli
from vedfin_ops.cli import target
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.reports.tables import smoke_table, status_tables

MARKUP = "Applying migration [/app/prisma/migrations/001_init] [bold red]x[/] [link=y]"


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=buffer, width=300, markup=False))
    return buffer


def test_progress_and_rollout_lines_print_brackets_literally(captured: io.StringIO) -> None:
    cli.say(MARKUP)
    cli.LiveLines()([MARKUP])
    cli.warn(MARKUP)
    assert captured.getvalue().count(MARKUP) == 3


def test_the_smoke_and_status_tables_print_details_literally() -> None:
    report = SmokeReport("production", [Check("api /api/health", False, MARKUP, 0.1)])
    status = {"env": "production", "current": "r1", "releases": [],
              "services": [{"name": "s", "image": "[i]", "running": 1, "replicas": 1,
                            "update_state": "[/x]"}], "lock": None, "drift": [MARKUP]}
    out = io.StringIO()
    console = Console(file=out, width=400)  # markup on, as a library caller's might be
    console.print(smoke_table(report))
    console.print(status_tables(status))
    assert MARKUP in out.getvalue() and "[/x]" in out.getvalue()


@pytest.mark.parametrize(("exc", "code"), [
    (CheckFailed("deploy production failed: verify failed: x\nsecond line"), 1),
    (UsageError("--tag: 'v 1' is not a valid image tag"), 2),
    (CheckFailed("error: already prefixed"), 1),
    (KeyError("images"), 1),
    (KeyboardInterrupt(), 1),
])
def test_every_failure_is_one_error_line(exc: BaseException, code: int) -> None:
    @cli.guarded
    def task(c: Any) -> None:
        raise exc

    with pytest.raises(Exit) as info:
        task(None)
    message = str(info.value.message)
    assert info.value.code == code
    assert message.startswith("error: ") and not message.startswith("error: error:")
    assert "\n" not in message


# -- rollout progress ------------------------------------------------------------------------

def screen(written: str) -> list[str]:
    """What a terminal shows after `written`: the cursor moves and line erasing rich's Live
    uses (CR, erase line, cursor up), colours and cursor visibility dropped."""
    import re

    rows: list[str] = [""]
    y = 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", written):
        if token == "\n":
            y += 1
            if y == len(rows):
                rows.append("")
        elif token == "\r" or token.endswith("m") or token.startswith("\x1b[?"):
            continue  # column 0 is where every write starts here; colours; cursor shown/hidden
        elif token == "\x1b[2K":
            rows[y] = ""
        elif token.startswith("\x1b[") and token.endswith("A"):
            y -= int(token[2:-1] or 1)
        else:
            rows[y] += token
    return rows[:-1] if rows[-1] == "" else rows


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, force_interactive=True, width=80,
                      markup=False, soft_wrap=True)
    monkeypatch.setattr(cli, "err", console)
    return console, buffer


def assert_left_sane(console: Console, buffer: io.StringIO) -> None:
    """No live view left on the console and the cursor shown again after it was hidden."""
    written = buffer.getvalue()
    assert console._live_stack == []
    assert written.rfind("\x1b[?25h") > written.rfind("\x1b[?25l") >= 0


def test_rollout_progress_off_a_terminal_prints_each_changed_view_once(captured: io.StringIO
                                                                       ) -> None:
    with cli.LiveLines() as show:
        show(["api: 0/2 on api:v2 (starting)", "web: 1/1 done"])
        show(["api: 0/2 on api:v2 (starting)", "web: 1/1 done"])
        show(["api: 2/2 on api:v2 done", "web: 0/1 (task: exit :x: [bold]1[/])"])
    cli.LiveLines()(["outside a with: the same plain lines"])
    assert captured.getvalue() == ("  api: 0/2 on api:v2 (starting)\n  web: 1/1 done\n"
                                   "  api: 2/2 on api:v2 done\n"
                                   "  web: 0/1 (task: exit :x: [bold]1[/])\n"
                                   "  outside a with: the same plain lines\n")


def test_rollout_progress_on_a_terminal_is_one_view_redrawn_in_place(
        terminal: tuple[Console, io.StringIO]) -> None:
    console, buffer = terminal
    with cli.LiveLines() as show:
        show(["api: 0/2 on api:v2 (starting)", "web: 0/1 on web:v2 (starting)"])
        show(["api: 1/2 on api:v2 (updating)", "web: 0/1 on web:v2 (starting)"])
        show(["api: 2/2 on api:v2 done", "web: 1/1 on web:v2 done"])
        cli.say("verify: smoke checks through the edge")  # the view stays, the message after
        show(["api: 2/2 on api:v1 (rolling back)"])
    console.print("rollback: production runs r1")
    assert screen(buffer.getvalue()) == ["  api: 2/2 on api:v2 done", "  web: 1/1 on web:v2 done",
                                         "> verify: smoke checks through the edge",
                                         "  api: 2/2 on api:v1 (rolling back)",
                                         "rollback: production runs r1"]
    assert buffer.getvalue().count("(starting)") >= 2  # drawn, then redrawn over
    assert_left_sane(console, buffer)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), CheckFailed("rollout failed: api"),
                                 ValueError("a bug")])
def test_the_live_view_stops_before_the_error_line_on_ctrl_c_and_failures(
        terminal: tuple[Console, io.StringIO], exc: BaseException) -> None:
    console, buffer = terminal

    @cli.guarded
    def task(c: Any) -> None:
        with cli.LiveLines() as show:
            show(["api: 1/2 on api:v2 (updating)"])
            raise exc

    with pytest.raises(Exit) as info:
        task(None)
    assert_left_sane(console, buffer)
    console.print(info.value.message)  # what invoke prints next
    assert screen(buffer.getvalue()) == ["  api: 1/2 on api:v2 (updating)",
                                         str(info.value.message)]


def test_a_terminal_gone_while_the_view_stops_does_not_hide_the_error(
        terminal: tuple[Console, io.StringIO], monkeypatch: pytest.MonkeyPatch) -> None:
    """After SIGHUP every write raises EIO: the run's own error must still come out."""
    console, _ = terminal
    with pytest.raises(CheckFailed, match="the run's error"), cli.LiveLines() as show:
        show(["api: 1/2 (updating)"])

        def gone(*args: Any, **kwargs: Any) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(console, "_check_buffer", gone)
        raise CheckFailed("the run's error")
    assert console._live_stack == []


def test_a_rollout_view_on_a_terminal_shows_engine_words_literally(
        monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    # markup on, as a library caller's console might be
    console = Console(file=buffer, force_terminal=True, force_interactive=True, width=200)
    monkeypatch.setattr(cli, "err", console)
    with cli.LiveLines() as show:
        show([MARKUP])
    assert screen(buffer.getvalue()) == [f"  {MARKUP}"]


ROLLOUT_TASKS = {"deploy.production": ("vedfin_ops.deploy.pipeline", "deploy"),
                 "rollback": ("vedfin_ops.deploy.rollback", "rollback"),
                 "pause": ("vedfin_ops.deploy.scale", "scale"),
                 "resume": ("vedfin_ops.deploy.scale", "scale"),
                 "scale": ("vedfin_ops.deploy.scale", "scale")}


@pytest.mark.parametrize("name", sorted(ROLLOUT_TASKS))
def test_every_rollout_task_leaves_the_terminal_sane_on_ctrl_c(
        name: str, terminal: tuple[Console, io.StringIO],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from tests.conftest import SHIPPED
    from vedfin_ops.cli import tasks as tree

    console, buffer = terminal

    def interrupted(*args: Any, show: Any, **kwargs: Any) -> None:
        show(["api: 1/2 on api:v2 (updating)"])
        raise KeyboardInterrupt

    module, function = ROLLOUT_TASKS[name]
    monkeypatch.setattr(importlib.import_module(module), function, interrupted)
    monkeypatch.setattr(target, "remote", lambda *args, **kwargs: object())
    found = tree.ns.task_with_config(name)[0]
    with pytest.raises(Exit, match="error: interrupted"):
        found.body(None, config=str(SHIPPED))
    assert_left_sane(console, buffer)
    assert screen(buffer.getvalue()) == ["  api: 1/2 on api:v2 (updating)"]


# -- tables a person reads -------------------------------------------------------------------

LONG_IMAGE = "registry.example.com/vedfinance/api:v2@sha256:" + "0123456789abcdef" * 4
REASON = ("verify failed: api /api/health: HTTP 502 Bad Gateway from "
          "https://api.v-edfinance.com/api/health [bold]x[/]")
STATUS = {
    "env": "production", "current": "20261128T121530Z-abcdef012345",
    "releases": [
        {"id": "20261128T101530Z-0123456789ab", "state": "good", "current": False,
         "tag": "v1", "created": "2026-11-28T10:15:30+00:00", "by": "alice@laptop",
         "reason": None},
        {"id": "20261128T111530Z-abcdef012345", "state": "failed", "current": False,
         "tag": "v2-rc.1", "created": "2026-11-28T11:15:30+00:00",
         "by": "deploy@ci-runner-7f9c2", "reason": REASON},
        {"id": "20261128T121530Z-abcdef012345", "state": "good", "current": True,
         "tag": "v2", "created": "2026-11-28T12:15:30+00:00", "by": "alice@laptop",
         "reason": None}],
    "lock": {"who": "bob@box", "since": "2026-11-28T12:00:00+00:00", "action": "deploy"},
    "drift": [f"vedfin-production_api-production: runs {LONG_IMAGE}, the release has "
              "vedfinance/api:v2"],
    "problems": [],
    "services": [{"name": "vedfin-production_api-production", "image": LONG_IMAGE,
                  "running": 2, "replicas": 2, "update_state": "completed"},
                 {"name": "vedfin-shared_postgres", "image": "pgvector/pgvector:pg16",
                  "running": 1, "replicas": 1, "update_state": "rollback_completed"}],
}


def printed(renderable: Any, width: int) -> str:
    """As `out` prints it (soft wrap, no markup) on a terminal `width` columns wide."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, soft_wrap=True, markup=False).print(renderable)
    return buffer.getvalue()


def column(text: str, title: str, index: int) -> str:
    """The cells of column `index` of the table titled `title`, read top to bottom and joined
    without whitespace (so a folded or wrapped cell reads whole again)."""
    lines = text.splitlines()
    start = lines.index(title)
    pieces = []
    for line in lines[start + 1:]:
        if line.startswith("└"):
            break
        cells = line.split("│")
        if len(cells) > index + 1:
            pieces.append(cells[index + 1])
    return "".join("".join(pieces).split())


def assert_fits(text: str, width: int = 80) -> None:
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert too_long == [] and "…" not in text, too_long


def test_status_fits_80_columns_and_cuts_nothing() -> None:
    text = printed(status_tables(STATUS), 80)
    assert_fits(text)
    lines = text.splitlines()
    for rel in STATUS["releases"]:  # ids and tags whole, each on its own line
        assert any(rel["id"] in line for line in lines)
        assert any(f" {rel['tag']} " in line for line in lines)
    releases = column(text, "production: releases", 2)
    assert "".join(REASON.split()) in releases and "good,current" in releases
    created_by = column(text, "production: releases", 1)
    assert "2026-11-2811:15deploy@ci-runner-7f9c2" in created_by
    assert LONG_IMAGE in column(text, "services", 0)
    assert "".join(STATUS["drift"][0].split()) in "".join(text.split())


def test_status_on_a_wide_terminal_shows_a_release_on_one_line() -> None:
    text = printed(status_tables(STATUS), 200)
    assert_fits(text, 200)
    row = next(line for line in text.splitlines() if "20261128T111530Z" in line)
    for part in ("v2-rc.1", "2026-11-28 11:15", "deploy@ci-runner-7f9c2", "failed: verify"):
        assert part in row
    assert any(LONG_IMAGE in line for line in text.splitlines())


def test_check_config_fits_80_columns_and_cuts_nothing() -> None:
    from tests.conftest import SHIPPED
    from vedfin_ops.config.loader import load_config
    from vedfin_ops.reports.tables import config_table

    config = load_config(str(SHIPPED))
    text = printed(config_table(config, {"POSTGRES_PASSWORD"}), 80)
    assert_fits(text)
    lines = text.splitlines()
    for app in config.applications:
        assert any(f" {app.name} " in line for line in lines), app.name
        for domain in app.domains:
            assert any(f" {domain} " in line for line in lines), domain
    # per env, the secrets its deploy asks for: production's alone include the backup
    # bucket's token (backups.s3.envs)
    counts = {env: len(config.secret_names(env)) for env in ("dev", "staging", "production")}
    token = {"BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY"}
    assert token <= set(config.secret_names("production"))
    assert not token & (set(config.secret_names("dev")) | set(config.secret_names("staging")))
    assert (f"secrets set: dev 1/{counts['dev']}, staging 1/{counts['staging']}, "
            f"production 1/{counts['production']}") in text


AUDIT_LINES = "\n".join([
    '{"time": "2026-11-28T10:15:30+00:00", "who": "alice@laptop", "env": "production", '
    '"action": "deploy", "release": "20261128T101530Z-0123456789ab", "tag": "v1", '
    '"result": "ok", "detail": ""}',
    '{"time": "2026-11-28T11:15:30+00:00", "who": "ci@runner", "env": "production", '
    '"action": "deploy", "release": "20261128T111530Z-abcdef012345", "tag": "v2", '
    f'"result": "failed", "detail": {json.dumps(MARKUP)}}}',
    '{"time": "2026-11-28T11:16',  # a line cut short
    "[not json] at all",
    "42",
]) + "\n"


def test_audit_lists_time_who_env_action_release_tag_result_and_detail() -> None:
    from vedfin_ops.reports.tables import audit_entries, audit_table

    entries = audit_entries(AUDIT_LINES)
    assert len(entries) == 5
    text = printed(audit_table(entries), 220)
    assert_fits(text, 220)
    header = next(line for line in text.splitlines() if "Time" in line)
    assert [h.strip() for h in header.strip("┃").split("┃")] == [
        "Time (UTC)", "Who", "Env", "Action", "Release", "Tag", "Result", "Detail"]
    row = next(line for line in text.splitlines() if "ci@runner" in line)
    for part in ("2026-11-28 11:15", "production", "deploy", "20261128T111530Z-abcdef012345",
                 " v2 ", "failed", MARKUP):
        assert part in row
    assert_fits(printed(audit_table(entries), 80))


def test_audit_shows_a_line_that_is_not_json_as_it_is() -> None:
    from vedfin_ops.reports.tables import audit_entries, audit_table

    text = printed(audit_table(audit_entries(AUDIT_LINES)), 220)
    for raw in ('{"time": "2026-11-28T11:16', "[not json] at all", "│ 42 "):
        row = next(line for line in text.splitlines() if raw in line)
        assert "(unreadable)" in row


class _AuditHost:
    def run(self, command: str, *, what: str) -> str:
        assert what == "audit" and "tail -n 5 -- " in command
        return AUDIT_LINES


def test_audit_prints_a_table_and_with_json_the_raw_lines(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import SHIPPED
    from vedfin_ops.cli import tasks as tree

    buffer = io.StringIO()
    monkeypatch.setattr(target, "remote", lambda *args, **kwargs: _AuditHost())
    monkeypatch.setattr(tree, "stdout", Console(file=buffer, width=220, markup=False))
    tree.audit.body(None, lines=5, config=str(SHIPPED))
    assert "audit log" in buffer.getvalue() and "[not json] at all" in buffer.getvalue()
    assert capsys.readouterr().out == ""
    tree.audit.body(None, lines=5, json_=True, config=str(SHIPPED))
    assert capsys.readouterr().out == AUDIT_LINES


def test_a_dumb_terminal_gets_the_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """TERM=dumb cannot move the cursor: a live view would show nothing until the end."""
    buffer = io.StringIO()
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setattr(cli, "err", Console(file=buffer, force_terminal=True, markup=False))
    with cli.LiveLines() as show:
        show(["api: 1/2 (updating)"])
        show(["api: 2/2 done"])
    assert buffer.getvalue() == "  api: 1/2 (updating)\n  api: 2/2 done\n"


def test_the_tools_own_consoles_print_outside_words_literally(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`:x:` and `[bold]` from an engine or an app are data: no emoji, no markup, no colour."""
    import io

    from vedfin_ops.cli import output

    buffer = io.StringIO()
    stream = output._Console(stderr=True, file=buffer, force_terminal=True, width=200)
    monkeypatch.setattr(output, "err", stream)
    output.say("engine: task failed :x: [bold]exit 1[/bold] 42 /app/dist/main.js")
    # on a terminal: the prompt is bold, the outside words carry no escape code at all
    assert buffer.getvalue().endswith(
        " engine: task failed :x: [bold]exit 1[/bold] 42 /app/dist/main.js\n")
    assert "\x1b[" in buffer.getvalue()  # a terminal indeed (the bold `>`)
    buffer.truncate(0)
    buffer.seek(0)
    stream.print("deploy.production: ok: 20261129T0412Z-1a2b live in 42 s at /srv/vedfin")
    assert buffer.getvalue() == ("deploy.production: ok: 20261129T0412Z-1a2b live in 42 s at "
                                 "/srv/vedfin\n")


def test_monitoring_apply_says_which_file_it_could_not_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its exit 1 when the alarms loaded but the plugin or the notification settings did
    not install: the reason is printed (it was not: a suite run had only the exit code)."""
    from vedfin_ops.cli import tasks
    from vedfin_ops.monitoring.netdata import Loaded

    buffer = io.StringIO()
    monkeypatch.setattr(tasks, "stdout", Console(file=buffer, width=300, markup=False))
    now = Loaded(items=[("vedfin_cpu_usage", True, "loaded")],
                 errors=[f"health_alarm_notify.conf: {MARKUP}"])
    tasks._show_alarms(now, False, True)
    assert f"FAILED  health_alarm_notify.conf: {MARKUP}" in buffer.getvalue()
    assert not now.ok
