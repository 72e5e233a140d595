"""Nightly backups: the schedule (stagger, midnight wrap), the crontab block (ours replaced, the
user's lines kept), the generated script run on the scripted host as cron would run it (a
backup listed like any other, the lock respected, retention), status's notes, and the disk room
a dump needs. The same script runs against the real engine and PostgreSQL in
tests/integration/test_backup_sandbox.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World
from vedfin_ops.backups.records import list_backups
from vedfin_ops.config.model import Config
from vedfin_ops.remote import commands
from vedfin_ops.remote.probes.usage import parse_disk, parse_probe
from vedfin_ops.reports.capacity import live_status
from vedfin_ops.reports.tables import _backup_notes
from vedfin_ops.schedule import crontab, nightly, offhours

v1_live, world = orchestration.v1_live, orchestration.world


def _at(config: Config, when: str | None) -> Config:
    return config.model_copy(update={"backups": config.backups.model_copy(
        update={"nightly": when})})


def test_envs_run_ten_minutes_apart_and_wrap_past_midnight(world: World) -> None:
    assert nightly.times(_at(world.config, "03:00")) == {
        "dev": (3, 0), "staging": (3, 10), "production": (3, 20)}
    assert nightly.times(_at(world.config, "23:55")) == {
        "dev": (23, 55), "staging": (0, 5), "production": (0, 15)}
    assert nightly.times(_at(world.config, None)) == {}
    late = _at(world.config, "23:55")
    assert nightly.parse_block(nightly.cron_block(late), late) == {
        "dev": "23:55", "staging": "00:05", "production": "00:15"}


def test_bad_nightly_times_name_the_key(variant: Any) -> None:
    from vedfin_ops.errors import ConfigError

    for bad in ("3:00", "24:00", "03:60", "noon", "03:00; rm -rf /"):
        with pytest.raises(ConfigError, match=r"backups\.nightly"):
            variant(lambda d, bad=bad: d.setdefault("backups", {}).update(nightly=bad))


def test_cron_runs_every_env_s_nightly_line_on_the_host(world: World) -> None:
    """Each nightly line of the installed crontab, its command run by `sh` on the scripted
    host against the scripted engine as cron runs it: one backup of each env's database."""
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    lines = [line.split() for line in (world.root / "crontab").read_text().splitlines()
             if "nightly-backup-" in line]
    assert [(f[1], f[0], f[5]) for f in lines] == [
        ("3", "0", nightly.script_path(world.config, "dev")),
        ("3", "10", nightly.script_path(world.config, "staging")),
        ("3", "20", nightly.script_path(world.config, "production"))]
    for fields in lines:
        world.host.run(" ".join(fields[5:]), what="cron")
    for env in world.config.environments:
        made = list_backups(world.host, world.config, env).backups  # type: ignore[arg-type]
        assert [b.reason for b in made].count("nightly") == 1, env
        assert made[-1].database == world.config.environments[env].database
    log = Path(nightly.log_path(world.config)).read_text().splitlines()
    assert [line.split()[1:3] for line in log] == [["dev", "ok"], ["staging", "ok"],
                                                   ["production", "ok"]]


def _crontab(world: World) -> str:
    path = world.root / "crontab"
    return path.read_text() if path.exists() else ""


def test_a_deploy_schedules_the_nightly_backups_and_keeps_the_user_s_cron_lines(
        world: World) -> None:
    (world.root / "crontab").write_text("5 4 * * * /usr/bin/certbot renew\n")
    assert world.deploy("v2").result == "ok"
    tab = _crontab(world)
    assert tab.startswith("5 4 * * * /usr/bin/certbot renew\n")
    assert nightly.parse_block(tab, world.config) == {"dev": "03:00", "staging": "03:10",
                                        "production": "03:20"}
    assert world.deploy("v1").result == "ok"  # again: replaced, not appended
    assert _crontab(world).count(crontab.begin(world.config)) == 1
    assert "offhours-production down" in _crontab(world)  # the shipped off-hours, same block
    nothing = _at(world.config, None).model_copy(update={"off_hours": None})
    installed = nightly.apply(world.host, nothing)  # type: ignore[arg-type]
    assert installed == {} and _crontab(world) == "5 4 * * * /usr/bin/certbot renew\n"
    assert not Path(nightly.script_path(world.config, "production")).exists()
    assert not Path(offhours.script_path(world.config, "production")).exists()


def _other(world: World, prefix: str = "shop") -> Config:
    """A second config on the same host: its own stack prefix and base folder."""
    remote = world.config.remote.model_copy(update={
        "stack_prefix": prefix, "base_dir": f"{world.root}/srv-{prefix}"})
    return world.config.model_copy(update={"remote": remote})


def test_two_configs_on_one_host_keep_each_other_s_cron_lines(world: World) -> None:
    from vedfin_ops.reports.status import backups_state

    (world.root / "crontab").write_text("5 4 * * * /usr/bin/certbot renew\n")
    shop = _other(world)
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    nightly.apply(world.host, _at(shop, "02:00"))  # type: ignore[arg-type]
    tab = _crontab(world)
    assert nightly.parse_block(tab, world.config) == {"dev": "03:00", "staging": "03:10",
                                                      "production": "03:20"}
    assert nightly.parse_block(tab, shop) == {"dev": "02:00", "staging": "02:10",
                                              "production": "02:20"}
    assert offhours.parse_lines(crontab.block_of(tab, world.config))["production"][
        "down"] == "00:00"
    assert offhours.script_path(world.config, "production") in tab
    assert offhours.script_path(shop, "production") in tab
    nightly.apply(world.host, world.config)  # A again: B's block stays as it is
    assert _crontab(world).count(crontab.begin(shop)) == 1
    assert nightly.parse_block(_crontab(world), shop)["production"] == "02:20"
    said = backups_state(world.host, world.config, "production")  # type: ignore[arg-type]
    assert said["backups"]["nightly_scheduled"] == "03:20"
    nightly.apply(world.host, _at(shop, None).model_copy(update={"off_hours": None}))  # type: ignore[arg-type]
    assert nightly.parse_block(_crontab(world), shop) == {}
    assert nightly.parse_block(_crontab(world), world.config)["production"] == "03:20"
    assert _crontab(world).startswith("5 4 * * * /usr/bin/certbot renew\n")
    assert crontab.without_block(_crontab(world)) == "5 4 * * * /usr/bin/certbot renew\n"


def _legacy(config: Config) -> str:
    """The block as the tool wrote it before blocks were named per config."""
    path = nightly.script_path(config, "production")
    return (f"{crontab.LEGACY_BEGIN}\n20 3 * * * {path}\n0 0 * * * "
            f"{offhours.script_path(config, 'production')} down\n{crontab.LEGACY_END}\n")


def test_the_old_unnamed_block_is_taken_over_by_the_config_whose_scripts_it_runs(
        world: World) -> None:
    shop = _other(world)
    (world.root / "crontab").write_text("5 4 * * * /usr/bin/certbot renew\n" +
                                        _legacy(world.config) + "7 7 * * * /bin/true\n")
    nightly.apply(world.host, shop)  # type: ignore[arg-type]
    assert _legacy(world.config) in _crontab(world)  # not shop's: left to its owner
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    tab = _crontab(world)
    assert crontab.LEGACY_BEGIN not in tab and crontab.LEGACY_END not in tab
    assert tab.count(f"{nightly.script_path(world.config, 'production')}\n") == 1
    assert tab.startswith("5 4 * * * /usr/bin/certbot renew\n7 7 * * * /bin/true\n")
    assert nightly.parse_block(tab, shop)["production"] == "03:20"
    assert nightly.parse_block(tab, world.config)["production"] == "03:20"


def _run_nightly(world: World) -> str:
    job = nightly.script_path(world.config, "production")
    return world.host.run(job, what="nightly")


def test_the_nightly_script_makes_a_backup_like_any_other_and_keeps_keep(world: World
                                                                         ) -> None:
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    before = list_backups(world.host, world.config, "production").backups  # type: ignore
    _run_nightly(world)
    after = list_backups(world.host, world.config, "production").backups  # type: ignore
    assert len(after) == len(before) + 1 and after[-1].reason == "nightly"
    assert after[-1].by == f"{world.config.remote.user} (cron)"
    log = Path(nightly.log_path(world.config)).read_text().splitlines()
    assert log[-1].split()[1:4] == ["production", "ok", after[-1].id]

    folder = Path(world.config.remote.base_dir) / "backups" / "vedfinance_prod"
    for i in range(10):  # older backups than keep allows: the nightly run removes them
        record = after[-1].to_dict() | {"id": f"2020010{i}T000000Z", "size": 1}
        import json

        (folder / f"2020010{i}T000000Z.json").write_text(json.dumps(record))
        (folder / f"2020010{i}T000000Z.dump").write_text("x")
    import time

    time.sleep(1)  # a new id (ids are seconds)
    _run_nightly(world)
    kept = list_backups(world.host, world.config, "production").backups  # type: ignore
    assert len(kept) == world.config.backups.keep
    assert kept[-1].reason == "nightly" and not list(folder.glob("2020010[0-5]*"))


def test_the_nightly_script_skips_while_a_run_holds_the_lock(world: World) -> None:
    nightly.apply(world.host, world.config)  # type: ignore[arg-type]
    before = list_backups(world.host, world.config, "production").backups  # type: ignore
    Path(world.layout.lock).mkdir(parents=True)
    _run_nightly(world)
    assert list_backups(world.host, world.config, "production").backups == before  # type: ignore
    assert "skipped: another run holds the lock" in \
        Path(nightly.log_path(world.config)).read_text().splitlines()[-1]


def test_a_crontab_that_refuses_is_a_warning_and_the_deploy_still_stands(world: World
                                                                         ) -> None:
    (world.host.bin / "crontab").write_text(
        "#!/bin/sh\n[ \"$1\" = - ] && { echo 'crontab: not allowed' >&2; exit 1; }\nexit 1\n")
    result = world.deploy("v2")
    assert result.result == "ok"
    warned = [m for m in world.said if "nightly backups and off-hours not scheduled" in m]
    assert warned and "fab db.schedule" in warned[0], world.said
    assert world.audit()[-1]["result"] == "ok"


def test_a_host_without_cron_is_named(tmp_path: Path, world: World) -> None:
    """No crontab on the PATH: one line naming the package, nothing written."""
    done = subprocess.run(["/bin/sh", "-c", nightly.apply_command(world.config)],
                          capture_output=True, text=True, check=False,
                          env={"PATH": str(tmp_path)})
    assert done.returncode == 3 and done.stdout.strip() == commands.NO_CRONTAB

    class NoCron:
        def run(self, command: str, **_kwargs: Any) -> str:
            return done.stdout

    with pytest.raises(Exception, match=r"the host has no cron \(apt-get install cron\)"):
        nightly.apply(NoCron(), world.config)  # type: ignore[arg-type]


def _render(notes: list[Any]) -> str:
    console = Console(width=200, record=True)
    for note in notes:
        console.print(note)
    return console.export_text()


def test_status_warns_when_a_backup_is_missing_old_or_failed() -> None:
    assert _backup_notes({}) == []
    fine = {"count": 3, "last": "20261129T032000Z", "last_reason": "nightly",
            "age_seconds": 3600, "nightly_configured": "03:00", "nightly_scheduled": "03:20",
            "last_nightly_run": "2026-11-29T03:20:01Z production ok 20261129T032000Z 12 bytes"}
    text = _render(_backup_notes(fine))
    assert "backups: last 20261129T032000Z (1 h 0 min ago, nightly), 3 on the host; nightly " \
           "at 03:20 (cron)" in text and "warning" not in text
    text = _render(_backup_notes({**fine, "nightly_scheduled": None}))
    assert "no nightly backup" in text and "fab db.schedule" in text
    text = _render(_backup_notes({**fine, "age_seconds": 3 * 86400}))
    assert "warning: the last backup is 3 days ago" in text
    failed = {**fine, "last_nightly_run": "2026-11-29T03:20:01Z production failed: [bold]x"}
    assert "last nightly run: 2026-11-29T03:20:01Z production failed: [bold]x" in \
        _render(_backup_notes(failed))  # the host's words, printed literally
    text = _render(_backup_notes({**fine, "last": None, "count": 0}))
    assert "backups: none on the host" in text


def test_the_disk_and_the_backups_share_of_it_are_read_and_judged(world: World) -> None:
    assert parse_disk("\n1048576 943718 104858\n204800\n") is not None
    disk = parse_disk("1048576 943718 104858\n204800\n")
    assert disk is not None and disk.used_percent == 90.0 and disk.backups_mb == 200.0
    assert parse_disk("") is None and parse_disk("df: no such file\n") is None
    meminfo = "MemTotal: 4000000 kB\nMemAvailable: 3000000 kB\n"
    usage = parse_probe(meminfo + "--LOAD--\n0.5 0 0\n--CPUS--\n2\n--DISK--\n"
                        "1048576 943718 104858\n204800\n--STATS--\n")
    status, reasons = live_status(world.config, usage)
    assert status == "warn"
    assert "disk 90% used" in reasons[-1] and "backups 200 MiB of it" in reasons[-1]
    quiet = parse_probe(meminfo + "--LOAD--\n0.5 0 0\n--CPUS--\n2\n--STATS--\n")
    assert quiet.disk is None and live_status(world.config, quiet)[0] == "ok"


def test_a_dump_that_would_not_fit_is_refused_before_it_starts(tmp_path: Path) -> None:
    """The room check of `commands.backup_dump` on this machine's own disk: 1.5 times the
    last dump, asked of `df` before pg_dump runs (here a `docker` that must not be called)."""
    from vedfin_ops.remote import commands

    folder = tmp_path / "b"
    folder.mkdir()
    free_kib = int(subprocess.run(["df", "-kP", str(folder)], capture_output=True, text=True,
                                  check=True).stdout.splitlines()[1].split()[3])
    last = folder / "20200101T000000Z.dump"
    with last.open("wb") as fh:  # sparse: as big as the disk's free space, costs nothing
        fh.truncate(free_kib * 1024)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\necho docker was called >&2\nexit 99\n")
    (bin_dir / "docker").chmod(0o755)
    command = commands.backup_dump("pg0", "postgres", "db", str(folder), "20260101T000000Z",
                                   "{")
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert done.returncode == 28, done.stderr
    assert "not enough room for a backup" in done.stderr
    assert "docker was called" not in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == [last.name]
