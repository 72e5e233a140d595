"""Remote commands are built as exact strings, and no value can become shell syntax."""

from __future__ import annotations

import http.server
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from vedfin_ops.remote import commands
from vedfin_ops.remote.host import heredoc
from vedfin_ops.run.layout import Listing, parse_listing, parse_records


def test_stack_deploy_never_resolves_images_at_a_registry() -> None:
    assert commands.stack_deploy("/opt/vedfin/p/releases/r1/stacks/production.yml",
                                 "vedfin-production") == (
        "docker stack deploy --resolve-image never --prune -c "
        "/opt/vedfin/p/releases/r1/stacks/production.yml vedfin-production")


def test_migrate_runs_the_new_image_once_on_the_env_network() -> None:
    cmd = commands.migrate("vedfinance/api:v2", "vedfin", "/r/env/api-production.env",
                           "npx prisma migrate deploy --schema=/app/x.prisma", "api-migrate",
                           "production")
    assert cmd == ("docker run --rm --name api-migrate --label vedfin.migrate=production "
                   "--network vedfin --env-file /r/env/api-production.env --entrypoint /bin/sh "
                   "vedfinance/api:v2 -c 'npx prisma migrate deploy --schema=/app/x.prisma'")


def _sh(cmd: str) -> str:
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True,
                          check=True).stdout


def test_a_lock_is_released_only_by_the_run_that_took_it(tmp_path: Path) -> None:
    lock = str(tmp_path / "prod lock")
    assert _sh(commands.lock_acquire(lock, '{"who": "a"}', "tok-a")).startswith("acquired")
    held = _sh(commands.lock_acquire(lock, '{"who": "b"}', "tok-b")).splitlines()
    assert held[0] == "held" and held[1].isdigit() and held[2] == '{"who": "a"}'
    _sh(commands.lock_release(lock, "tok-b"))  # not b's lock: it stays
    assert Path(lock).is_dir()
    _sh(commands.lock_beat(lock, "tok-a") + " || true")
    _sh(commands.lock_release(lock, "tok-a"))
    assert not Path(lock).exists()
    assert list(tmp_path.iterdir()) == []  # the loser's makings went with it


def test_whatever_is_at_the_locks_path_holds_it(tmp_path: Path) -> None:
    """An empty folder (an older version's take, cut after its mkdir) or a file: held, never
    replaced, so the holder it may be is not run beside; `lock.release` removes it."""
    for kind in ("folder", "file"):
        lock = tmp_path / f"{kind} lock"
        lock.mkdir() if kind == "folder" else lock.write_text("")
        held = _sh(commands.lock_acquire(str(lock), '{"who": "b"}', "tok-b")).splitlines()
        assert held[0] == "held", kind
        assert lock.is_dir() == (kind == "folder") and not (tmp_path / "holder").exists()
        _sh(commands.lock_release(str(lock)))
        assert _sh(commands.lock_acquire(str(lock), '{"who": "b"}', "tok-b")).startswith(
            "acquired"), kind


# what taking a lock may run: each is a point where a dropped link can end the take
_TAKE_STEPS = ("mkdir", "mktemp", "printf", "touch", "chmod", "mv")


def _killed_at(step: int, counter: Path) -> str:
    """Shell functions that count the take's commands and kill the shell (as a dropped SSH
    link does) instead of running the `step`-th; a subshell's `$$` is the shell's too."""
    return "".join(f'{name}() {{ n=$(( $(cat {counter}) + 1 )); echo "$n" > {counter}; '
                   f'[ "$n" -lt {step} ] || kill -9 $$; command {name} "$@"; }}; '
                   for name in _TAKE_STEPS)


def test_a_lock_is_never_half_taken_wherever_the_take_is_cut(tmp_path: Path) -> None:
    """Killed at any step, a take leaves no lock or a whole one (holder, token, heartbeat):
    never a lock without its holder that no later run can name or release by token."""
    cuts = 0
    for step in range(1, 20):
        folder = tmp_path / f"cut-{step}"
        folder.mkdir()
        lock, counter = folder / "prod lock", folder / "count"
        counter.write_text("0\n")
        took = subprocess.run(["sh", "-c", _killed_at(step, counter) + commands.lock_acquire(
            str(lock), '{"who": "a"}', "tok-a")], capture_output=True, text=True, check=False)
        if lock.exists():
            assert (lock / "holder").read_text() == '{"who": "a"}\n', step
            assert (lock / "token").read_text() == "tok-a\n", step
            assert (lock / "heartbeat").is_file(), step
            held = _sh(commands.lock_acquire(str(lock), '{"who": "b"}', "tok-b")).splitlines()
            assert held[0] == "held" and held[2] == '{"who": "a"}', (step, held)
            _sh(commands.lock_release(str(lock), "tok-a"))
            assert not lock.exists(), step
        if took.returncode == 0:
            assert took.stdout.startswith("acquired"), step
            break
        cuts += 1
        assert _sh(commands.lock_acquire(str(lock), '{"who": "b"}', "tok-b")).startswith(
            "acquired"), step
    assert cuts >= 4, cuts  # the take was cut at each of its steps before it completed


def test_a_take_whose_write_fails_leaves_no_lock_and_fails(tmp_path: Path) -> None:
    """A full disk while writing the holder: an error (the run stops), not `held`, and no
    lock left behind for every later run to be refused by."""
    lock = tmp_path / "lock"
    took = subprocess.run(["sh", "-c", "printf() { return 1; }; " + commands.lock_acquire(
        str(lock), '{"who": "a"}', "tok-a")], capture_output=True, text=True, check=False)
    assert took.returncode != 0 and "acquired" not in took.stdout
    assert "held" not in took.stdout
    assert not lock.exists() and list(tmp_path.iterdir()) == []
    assert _sh(commands.lock_acquire(str(lock), '{"who": "b"}', "tok-b")).startswith("acquired")


def test_env_state_reads_corrupt_records_as_problems_not_tracebacks(tmp_path: Path) -> None:
    rel = tmp_path / "releases" / "20261128T080000Z-abc"
    rel.mkdir(parents=True)
    (rel / "state").write_text("good\n")
    (rel / "release.json").write_text('{"images": {"s_api": "api:v1"},\n "id": "x"}\n')
    (rel / "engine.json").write_text("[1, 2")
    (tmp_path / "current").symlink_to(rel)
    out = _sh(commands.env_state(str(tmp_path / "releases"), str(tmp_path / "current"),
                                 str(tmp_path / "shared.hash"), "production"))
    listing = parse_listing(out)
    assert listing.current == rel.name and listing.meta["images"] == {"s_api": "api:v1"}
    assert listing.engine == {} and listing.migrating == []
    assert listing.problems == [f"{rel.name}/engine.json is not a JSON object"]


def test_status_reads_every_release_record_in_one_command_whatever_the_path_holds(
        tmp_path: Path) -> None:
    base = tmp_path / "a base; $(touch pwned) `id` 'q'"
    releases = base / "production" / "releases"
    good, failed, bare = (releases / n for n in ("20261128T080000Z-aaa", "20261128T090000Z-bbb",
                                                 "20261128T100000Z-ccc"))
    for d in (good, failed, bare, releases / ".tmp-20261128T110000Z-ddd"):
        d.mkdir(parents=True)
    (good / "state").write_text("good\n")
    (good / "release.json").write_text('{\n  "id": "x",\n  "tag": "v1",\n  "by": "al@box",\n'
                                       '  "created": "2026-11-28T08:00:00+00:00"\n}\n')
    (failed / "state").write_text("failed\n")
    (failed / "release.json").write_text('{"tag": "v2"')
    (failed / "reason").write_text("verify failed: api: 502\nsecond [bold]line[/]\n")
    out = subprocess.run(["sh", "-c", commands.status_state(
        str(releases), str(base / "production/current"), str(base / "shared.hash"),
        "production", str(base))], cwd=tmp_path, capture_output=True, text=True,
        check=True).stdout
    records = parse_records(out)
    assert records.base_exists
    assert [(r.id, r.state) for r in records.releases] == [
        (good.name, "good"), (failed.name, "failed"), (bare.name, "unknown")]
    first, second, third = records.releases
    assert (first.text("tag"), first.text("by"), first.reason) == ("v1", "al@box", "")
    assert first.text("created") == "2026-11-28T08:00:00+00:00"
    assert not second.readable and second.meta == {}
    assert second.reason == "verify failed: api: 502 second [bold]line[/]"
    assert third.readable and third.meta == {} and third.reason == ""
    assert parse_listing(out).releases == [(r.id, r.state) for r in records.releases]
    assert not (tmp_path / "pwned").exists()
    gone = parse_records(_sh(commands.release_records(str(tmp_path / "none/p/releases"),
                                                      str(tmp_path / "none"))))
    assert gone.releases == [] and not gone.base_exists


def test_symlink_swap_is_a_rename() -> None:
    assert commands.swap_symlink("/b/p/releases/r2", "/b/p/current") == (
        "ln -sfn -- /b/p/releases/r2 /b/p/current.new && mv -Tf -- /b/p/current.new "
        "/b/p/current")


@given(st.text(min_size=1, max_size=40))
def test_any_value_stays_one_word(value: str) -> None:
    value = value.replace("\0", "")
    for cmd in (commands.audit_append("/tmp/a", value), commands.write_text("/tmp/x", value)):
        words = shlex.split(cmd)
        assert value in words


def test_hostile_values_are_quoted_for_a_real_shell(tmp_path: object) -> None:
    evil = "x'; touch /tmp/vedfin-pwned; echo '$(id)`id`"
    out = subprocess.run(["sh", "-c", commands.write_text("/dev/stdout", evil)],
                         capture_output=True, text=True, check=True).stdout
    assert out == evil + "\n"


def test_heredoc_feeds_text_verbatim_to_a_real_shell() -> None:
    text = "SELECT '$HOME' AS x; -- `id`\nVEDFIN_EOF\nend"
    out = subprocess.run(["sh", "-c", heredoc("cat", text)], capture_output=True, text=True,
                         check=True).stdout
    assert out == text + "\n"


def test_release_listing_parses_states_current_and_shared() -> None:
    listing = parse_listing("R 20261128T081500Z-aaa good\nR 20261128T082000Z-bbb failed\n"
                            "R 20261128T083000Z-ccc good\n"
                            "current /opt/vedfin/production/releases/20261128T083000Z-ccc\n"
                            "shared 1234abcd\n")
    assert listing.current == "20261128T083000Z-ccc" and listing.shared == "1234abcd"
    assert listing.previous_good() == "20261128T081500Z-aaa"


def test_prune_keeps_current_and_the_good_one_before_it() -> None:
    releases = [(f"r{i}", "good" if i in (1, 6) else "failed") for i in range(1, 8)]
    listing = Listing(releases, "r6")
    assert listing.to_prune(2) == ["r2", "r3", "r4", "r5"]
    assert Listing(releases, None).previous_good() == "r6"
    assert parse_listing("current \nshared \n") == Listing([], None, None)


def test_db_inventory_is_one_psql_session_over_every_database() -> None:
    from vedfin_ops.deploy.db_init import inventory_sql, parse_inventory
    assert commands.db_inventory("pg1", "postgres") == (
        "docker exec -i pg1 psql -X -At -v ON_ERROR_STOP=0 -U postgres -d postgres 2>&1")
    sql = inventory_sql(["vedfinance_dev", "vedfinance_prod"], vector=True)
    assert sql.count("\\connect ") == 2 and sql.count("'VEC '") == 2
    inv = parse_inventory("DB vedfinance_dev plpgsql,vector\nVEC vedfinance_dev 1\n"
                          "psql:<stdin>:4: error: connection to server failed: FATAL:  "
                          "database \"vedfinance_prod\" does not exist\n"
                          "DB vedfinance_dev plpgsql,vector\n")
    assert inv.extensions == {"vedfinance_dev": {"plpgsql", "vector"}}
    assert inv.distances == {"vedfinance_dev": 1.0}


def test_a_long_command_keeps_the_lock_heartbeat_fresh_and_keeps_its_exit_status(
        tmp_path: Path) -> None:
    import os
    import time

    lock = tmp_path / "a lock; $(x)"
    lock.mkdir()
    (lock / "token").write_text("t0k\n")
    (lock / "heartbeat").touch()
    os.utime(lock / "heartbeat", (0, 0))
    started = time.time()
    run = subprocess.run(["sh", "-c", commands.with_heartbeat("sleep 2.5; exit 3", str(lock),
                                                              "t0k", 1)],
                         capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 3 and run.stdout == ""
    assert (lock / "heartbeat").stat().st_mtime >= started - 1
    # the lock taken away: the loop stops touching it
    (lock / "token").write_text("other\n")
    os.utime(lock / "heartbeat", (0, 0))
    subprocess.run(["sh", "-c", commands.with_heartbeat("sleep 2.5", str(lock), "t0k", 1)],
                   timeout=30, check=True)
    assert (lock / "heartbeat").stat().st_mtime == 0


def test_a_heartbeat_on_a_lost_lock_says_lost(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("theirs\n")
    out = subprocess.run(["sh", "-c", commands.lock_beat(str(tmp_path), "mine")],
                         capture_output=True, text=True, check=False).stdout
    assert out.strip() == "lost"


def test_commands_join_and_prefix_as_the_callers_wrote_them() -> None:
    assert commands.all_of("a", "b c") == "a && b c"
    assert commands.before(commands.mkdir_p("/x y")) == "mkdir -p -m 750 -- '/x y' && "
    assert commands.psql_rows("c1", "postgres") == commands.psql("c1", "postgres") + " -At"
    one = commands.task_errors("a")
    assert commands.task_errors("a", "b") == f"{one} ; {one.replace(' a |', ' b |')}"
    assert commands.remove_container("m 1") == "docker rm -f 'm 1' >/dev/null 2>&1 || true"
    probe = commands.health_probe("http://127.0.0.1:3000/health")
    assert probe.startswith("if command -v wget >/dev/null; then wget -q -O /dev/null "
                            "http://127.0.0.1:3000/health; elif")
    assert probe.endswith(" http://127.0.0.1:3000/health; fi || exit 1")
    assert commands.host_clock() == "date +%H:%M"



def _probe_with_only(tmp_path: Path, tools: dict[str, str], url: str) -> int:
    """The default healthcheck run by a real sh whose PATH holds only `tools` (name -> the
    host's program), as in an image that ships just those."""
    bin_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    for name, program in tools.items():
        found = shutil.which(program)
        assert found, f"{program} is not installed here"
        (bin_dir / name).symlink_to(found)
    shell = shutil.which("sh")
    assert shell
    return subprocess.run([shell, "-c", commands.health_probe(url)], capture_output=True,
                          env={**os.environ, "PATH": str(bin_dir)}, timeout=20).returncode


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/health" else 503)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_the_default_healthcheck_works_in_an_image_with_only_node(tmp_path: Path) -> None:
    """node:20-slim has neither wget nor curl: the probe falls back to node's own fetch and
    still tells a 200 from a 503 and from nothing listening, as busybox's wget does."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        for tools in ({"node": "node"}, {"wget": "busybox"}):
            assert _probe_with_only(tmp_path, tools, f"{base}/api/health") == 0, tools
            assert _probe_with_only(tmp_path, tools, f"{base}/down") == 1, tools
    finally:
        server.shutdown()
        server.server_close()
    assert _probe_with_only(tmp_path, {"node": "node"}, f"{base}/api/health") == 1


def test_the_images_are_pulled_at_once_and_a_failed_pull_fails_the_command(tmp_path: Path
                                                                            ) -> None:
    """Run in `sh` with a `docker` that refuses one image: every pull is waited for, the
    status is the failure's, and a wrapper's cleanup after it still runs."""
    import subprocess

    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\necho "$@" >> "$LOG"\n'
                    'case "$3" in *missing*) echo "manifest unknown" >&2; exit 1;; esac\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LOG": str(tmp_path / "log")}
    good = ["r/api:v2@sha256:" + "a" * 64, "r/web:v2@sha256:" + "b" * 64]
    pulled = subprocess.run(["sh", "-c", commands.pull_images(good)], env=env,
                            capture_output=True, text=True, check=False)
    assert pulled.returncode == 0
    assert sorted((tmp_path / "log").read_text().split("\n")[:-1]) == [
        f"pull --quiet {image}" for image in good]
    wrapped = commands.pull_images([good[0], "r/missing:v2@sha256:" + "c" * 64]) + \
        "; echo cleanup-ran"
    refused = subprocess.run(["sh", "-c", f"( {wrapped} )"], env=env, capture_output=True,
                             text=True, check=False)
    assert "manifest unknown" in refused.stderr and "cleanup-ran" in refused.stdout
    last = subprocess.run(["sh", "-c", commands.pull_images(["r/missing@sha256:" + "c" * 64])],
                          env=env, capture_output=True, text=True, check=False)
    assert last.returncode == 1
