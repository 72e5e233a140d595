"""Pure builders of the remote shell commands: strings in, strings out, all quoting via `sh`.

Nothing here runs anything, so every command can be unit-tested as the exact string the host
will see, and a value from the config can never become shell syntax.
"""

from __future__ import annotations

from vedfin_ops.remote.quoting import sh, sh_join, sql_literal

STACK_LABEL = "com.docker.stack.namespace"
SERVICE_LABEL = "com.docker.swarm.service.name"


def mkdir_p(*paths: str, mode: str = "750") -> str:
    return f"mkdir -p -m {sh(mode)} -- {sh_join(paths)}"


def lock_acquire(lock_dir: str, holder_json: str, token: str) -> str:
    """The lock is made whole in a temporary folder beside it (holder, token, heartbeat),
    then renamed into place: rename(2) is atomic and refuses a folder that holds files, so
    of two runs exactly one takes it, and a take cut at any step leaves no lock or a whole
    one (never one without its holder, which no later run could name). Whatever is at the
    lock's path already holds it, even an empty folder (an older version's take). A write
    that fails (a full disk) exits non-zero, leaving nothing. The loser prints `held`, how
    many seconds ago the holder last beat, and the holder, so it can tell a stale lock."""
    d = sh(lock_dir)
    return (f"{{ n=$(mktemp -d -- {sh(lock_dir + '.new.XXXXXX')}) || exit 1; "
            f"if ! {{ printf '%s\\n' {sh(holder_json)} > \"$n/holder\" && "
            f"printf '%s\\n' {sh(token)} > \"$n/token\" && touch -- \"$n/heartbeat\" && "
            f"chmod 750 -- \"$n\"; }}; then rm -rf -- \"$n\"; exit 1; fi; "
            f"if [ ! -e {d} ] && [ ! -L {d} ] && mv -T -- \"$n\" {d} 2>/dev/null; then "
            f"echo acquired; "
            f"else rm -rf -- \"$n\"; echo held; "
            f"t=$(stat -c %Y -- {d}/heartbeat {d} 2>/dev/null | head -n 1); "
            f"echo $(( $(date +%s) - ${{t:-$(date +%s)}} )); "
            f"cat -- {d}/holder 2>/dev/null || true; fi; }}")


def lock_beat(lock_dir: str, token: str) -> str:
    """Touch the heartbeat only while the lock is still ours; `lost` when it is not."""
    d = sh(lock_dir)
    return (f"if [ \"$(cat -- {d}/token 2>/dev/null)\" = {sh(token)} ]; then "
            f"touch -- {d}/heartbeat; else echo lost; fi")


def with_heartbeat(command: str, lock_dir: str, token: str, every: int) -> str:
    """Run `command` while a background loop on the host touches the heartbeat every `every`
    seconds. The loop ends with the command, with its shell, or when the lock stops being
    ours, so an abandoned run never keeps a lock looking alive; the exit status is the
    command's."""
    d = sh(lock_dir)
    loop = (f"while sleep {int(every)} && kill -0 $$ 2>/dev/null && "
            f"[ \"$(cat -- {d}/token 2>/dev/null)\" = {sh(token)} ]; do "
            f"touch -- {d}/heartbeat; done")
    return (f"( {loop} ) </dev/null >/dev/null 2>&1 & vedfin_beat=$!; {command}; "
            f"vedfin_rc=$?; kill $vedfin_beat 2>/dev/null; (exit $vedfin_rc)")


def lock_release(lock_dir: str, token: str | None = None) -> str:
    """With a token, only the lock this run took goes (a lock broken and re-taken by another
    run stays); without one, whatever holds it (the user's explicit `lock.release`)."""
    if token is None:
        return f"rm -rf -- {sh(lock_dir)}"
    d = sh(lock_dir)
    return (f"if [ \"$(cat -- {d}/token 2>/dev/null)\" = {sh(token)} ]; then rm -rf -- {d}; "
            f"fi")


def audit_append(log: str, line: str) -> str:
    """One short `>>` write with O_APPEND: lines from concurrent writers never interleave."""
    return f"printf '%s\\n' {sh(line)} >> {sh(log)}"


def tail(path: str, lines: int) -> str:
    return f"tail -n {int(lines)} -- {sh(path)} 2>/dev/null || true"


def read_file(path: str) -> str:
    return f"cat -- {sh(path)} 2>/dev/null || true"


def swap_symlink(target: str, link: str) -> str:
    """Point `link` at `target` atomically: a new link, then rename(2) over the old one."""
    tmp = f"{link}.new"
    return f"ln -sfn -- {sh(target)} {sh(tmp)} && mv -Tf -- {sh(tmp)} {sh(link)}"


def release_listing(releases_dir: str, current_link: str, shared_hash_file: str) -> str:
    """Each release with its state, where `current` points and the shared stack's hash: one
    round trip. Lines: `R <id> <state>`, `current <target>`, `shared <hash>`."""
    return (f"cd -- {sh(releases_dir)} 2>/dev/null && for d in */; do [ -d \"$d\" ] || "
            f"continue; d=${{d%/}}; printf 'R %s %s\\n' \"$d\" "
            f"\"$(cat -- \"$d/state\" 2>/dev/null || echo unknown)\"; done; "
            f"printf 'current %s\\n' \"$(readlink -- {sh(current_link)} 2>/dev/null)\"; "
            f"printf 'shared %s\\n' \"$(cat -- {sh(shared_hash_file)} 2>/dev/null)\"")


def release_records(releases_dir: str, base: str) -> str:
    """What `status` shows of every release, in one round trip: per release a `rec <id>` line,
    then `rec.state`, `rec.json` (its release.json on one line) and `rec.reason` (the reason
    file, newlines as spaces; empty when there is none). First a `base yes|no` line: whether
    the base dir exists at all (a wrong --config names one that does not)."""
    return (f"if [ -d {sh(base)} ]; then echo 'base yes'; else echo 'base no'; fi; "
            f"( cd -- {sh(releases_dir)} 2>/dev/null && for d in */; do [ -d \"$d\" ] || "
            f"continue; d=${{d%/}}; printf 'rec %s\\n' \"$d\"; "
            f"printf 'rec.state %s\\n' \"$(tr '\\n' ' ' 2>/dev/null < \"$d/state\")\"; "
            f"printf 'rec.json %s\\n' \"$(tr -d '\\n' 2>/dev/null < \"$d/release.json\")\"; "
            f"printf 'rec.reason %s\\n' \"$(tr '\\n' ' ' 2>/dev/null < \"$d/reason\")\"; "
            f"done ); true")


def status_state(releases_dir: str, current_link: str, shared_hash_file: str, env: str,
                 base: str) -> str:
    """`status` in one round trip: every release's record, then `env_state`."""
    return (f"{release_records(releases_dir, base)}; "
            f"{env_state(releases_dir, current_link, shared_hash_file, env)}")


MIGRATE_LABEL = "vedfin.migrate"


def env_state(releases_dir: str, current_link: str, shared_hash_file: str, env: str) -> str:
    """`release_listing`, plus what `current` recorded (its release.json and the engine's
    task templates after its rollout, each on one line) and the env's migration containers
    still running: everything a deploy decides from, in one round trip."""
    cur = sh(current_link)
    return (f"{release_listing(releases_dir, current_link, shared_hash_file)}; "
            f"printf 'meta %s\\n' \"$(tr -d '\\n' 2>/dev/null < {cur}/release.json)\"; "
            f"printf 'engine %s\\n' \"$(tr -d '\\n' 2>/dev/null < {cur}/engine.json)\"; "
            f"printf 'migrating %s\\n' \"$({migrations_running(env)} 2>/dev/null "
            f"| tr '\\n' ' ')\"")


def migrations_running(env: str) -> str:
    return (f"docker ps --format '{{{{.Names}}}}' "
            f"--filter {sh('label=' + MIGRATE_LABEL + '=' + env)}")


def stop_migrations(env: str) -> str:
    """Stop the env's one-off migration containers (an interrupted migrate leaves them)."""
    return (f"ids=$(docker ps -q --filter {sh('label=' + MIGRATE_LABEL + '=' + env)}); "
            f"[ -z \"$ids\" ] || docker rm -f $ids >/dev/null")


def keep_files(source_dir: str, paths: list[str], target: str) -> str:
    """`paths` (relative to `source_dir`) copied, modes kept, into a new folder `target`
    (0700: an env file holds secrets), through a temp folder renamed into place; a folder
    already there holds the same files (its name is their hash) and is kept as it is."""
    tmp = sh(target + ".tmp")
    files = " ".join(sh(path) for path in sorted(paths))
    return (f"if [ ! -d {sh(target)} ]; then rm -rf -- {tmp} && mkdir -p -m 700 -- {tmp} && "
            f"(cd -- {sh(source_dir)} && cp -a --parents -- {files} {tmp}) && "
            f"mv -T -- {tmp} {sh(target)}; fi")


def remove_siblings(folder: str, keep: str) -> str:
    """Every entry of `folder` but `keep` removed (the shared files no link names)."""
    return (f"find {sh(folder)} -mindepth 1 -maxdepth 1 ! -name {sh(keep)} "
            f"-exec rm -rf -- {{}} + 2>/dev/null || true")


def read_link(path: str) -> str:
    return f"readlink -- {sh(path)} 2>/dev/null || true"


def relink_or_remove(target: str, link: str) -> str:
    """`link` back on `target` when that folder is there, else no link at all (a host whose
    earlier shared files were never kept: the put-back then uses the live release's)."""
    return (f"if [ -d {sh(target)} ]; then {swap_symlink(target, link)}; "
            f"else rm -f -- {sh(link)}; fi")


def write_text(path: str, text: str) -> str:
    return f"printf '%s\\n' {sh(text)} > {sh(path)}"


def write_state(release_dir: str, state: str) -> str:
    return write_text(f"{release_dir}/state", state)


def mark_release(release_dir: str, state: str, reason: str) -> str:
    """The release's state (`failed`, `interrupted`, ...) and, beside it, why."""
    return (f"{write_state(release_dir, state)} && "
            f"{write_text(release_dir + '/reason', reason)}")


def clean_partial_uploads(releases_dir: str) -> str:
    """Uploads cut off mid-way leave `.tmp-*` folders; only a lock holder calls this."""
    return f"rm -rf -- {sh(releases_dir)}/.tmp-*"


def remove_dirs(paths: list[str]) -> str:
    return f"rm -rf -- {sh_join(paths)}" if paths else "true"


def remove_files(paths: list[str]) -> str:
    return f"rm -f -- {sh_join(paths)}" if paths else "true"


_VOLUME_SAYS = ('echo "data $(cat /adopt/PG_VERSION 2>/dev/null)"; '
                'echo "entries $(ls -A /adopt | head -n 5 | tr "\\n" " ")"; '
                'echo "image $(postgres --version 2>/dev/null)"')


def volume_probe(volume: str, image: str) -> str:
    """Before adopting an existing data volume: does it exist, which containers use it, which
    PostgreSQL major its data directory holds, and which the image runs (read-only mount, no
    network)."""
    v = sh(volume)
    users = ("'user {{.Name}} {{index .Config.Labels "
             "\"com.docker.swarm.service.name\"}}'")
    mounts = ("'{{.Spec.Name}}{{range .Spec.TaskTemplate.ContainerSpec.Mounts}} "
              "{{.Source}}{{end}}'")
    return (f"if ! docker volume inspect -- {v} >/dev/null 2>&1; then echo missing; exit 0; "
            f"fi; for c in $(docker ps -aq --filter volume={v}); do docker inspect --format "
            f"{users} \"$c\"; done; "
            f"for s in $(docker service ls -q 2>/dev/null); do docker service inspect "
            f"--format {mounts} \"$s\"; done | awk -v v={v} "
            f"'{{for (i = 2; i <= NF; i++) if ($i == v) print \"service \" $1}}'; "
            f"docker run --rm --network none --user 0 --entrypoint sh "
            f"-v {sh(volume + ':/adopt:ro')} {sh(image)} -c {sh(_VOLUME_SAYS)}")


def image_inventory(base: str, repos: list[str]) -> str:
    """Every digest a release of any env on the host still names (`keep ...`), and the
    engine's images of `repos` (`image REPO DIGEST ID`), for pruning the rest."""
    if not repos:  # no filter would list every image on the host
        raise ValueError("image_inventory needs at least one repository")
    filters = " ".join(f"--filter reference={sh(r)}" for r in repos)
    return (f"grep -rhoE 'sha256:[0-9a-f]{{64}}' {sh(base)}/*/releases/*/release.json "
            f"2>/dev/null | sort -u | sed 's/^/keep /'; "
            f"docker image ls --digests --no-trunc {filters} "
            f"--format 'image {{{{.Repository}}}} {{{{.Digest}}}} {{{{.ID}}}}'")


def remove_images(ids: list[str]) -> str:
    """Images one by one, never forced: one still used by a container (or named by another
    repository) stays, and is not an error of the prune."""
    return (f"for i in {sh_join(ids)}; do docker image rm -- \"$i\" >/dev/null 2>&1 && "
            f"echo removed; done; true")


def stack_deploy(stack_file: str, stack: str, *, registry_auth: bool = False) -> str:
    """`--resolve-image never`: images are local or already pinned by digest; no registry
    round trip. `--with-registry-auth` hands the host's registry login to the engine."""
    auth = " --with-registry-auth" if registry_auth else ""
    return (f"docker stack deploy --resolve-image never --prune{auth} -c {sh(stack_file)} "
            f"{sh(stack)}")


def registry_login(server: str, username: str) -> str:
    """The password comes on stdin: never on a command line (where `ps` shows it)."""
    return (f"docker login --username {sh(username)} --password-stdin {sh(server)} "
            f">/dev/null")


def reset_stack_image_labels(services: dict[str, str]) -> str:
    """Make `docker stack deploy` see a changed image for services edited by hand: their
    stack label is set to what they run now (a service label: no task restarts)."""
    return " && ".join(f"docker service update --quiet --detach --label-add "
                       f"{sh('com.docker.stack.image=' + running)} {sh(name)} >/dev/null"
                       for name, running in sorted(services.items())) or "true"


def task_errors(service: str) -> str:
    """Why the engine's tasks of a service failed, newest first (the engine's own words)."""
    return (f"docker service ps --no-trunc --format '{{{{.Image}}}} {{{{.Error}}}}' "
            f"{sh(service)} | grep -v ' $' | head -n 3")


def postgres_container(service: str) -> str:
    return (f"docker ps -q --filter {sh('label=' + SERVICE_LABEL + '=' + service)} "
            f"--filter health=healthy | head -n 1")


def psql(container: str, user: str, database: str = "postgres") -> str:
    return (f"docker exec -i {sh(container)} psql -X -v ON_ERROR_STOP=1 -U {sh(user)} "
            f"-d {sh(database)}")


def db_inventory(container: str, user: str) -> str:
    """One psql session over every database (the SQL from `db_init.inventory_sql` on stdin):
    errors do not stop it, so a missing database just prints no line."""
    return (f"docker exec -i {sh(container)} psql -X -At -v ON_ERROR_STOP=0 -U {sh(user)} "
            f"-d postgres 2>&1")


def migrate(image: str, network: str, env_file: str, command: str, name: str,
            env: str, label: str = MIGRATE_LABEL) -> str:
    """A one-off container of the NEW image on the env's network, removed when done; labelled
    with the env so an interrupted run can stop it and the next deploy can see it (verify's
    read-only status command has a label of its own: it must not hold a deploy back)."""
    return (f"docker run --rm --name {sh(name)} --label {sh(label + '=' + env)} "
            f"--network {sh(network)} --env-file {sh(env_file)} --entrypoint /bin/sh "
            f"{sh(image)} -c {sh(command)}")


def restart_services(names: list[str]) -> str:
    """A rolling restart: the same spec, new tasks, by the service's own update_config
    (start-first: each new task healthy before an old one stops)."""
    return " && ".join(f"docker service update --force --detach --quiet {sh(name)} >/dev/null"
                       for name in names)


# the engine's own words for a service that does not exist (`Error: no such service: x`)
_NO_SUCH_SERVICE = "*[Nn]'o such service'*"


def service_replicas(name: str) -> str:
    """The replica count the service's spec asks for (`0` for a paused env), or `absent`
    when there is no such service. Any other failure fails the command, the engine's words
    on stderr: an engine that does not answer must not read as "not deployed"."""
    return (f"( r=$(docker service inspect --format '{{{{.Spec.Mode.Replicated.Replicas}}}}' "
            f"-- {sh(name)} 2>&1) || case \"$r\" in {_NO_SUCH_SERVICE}) echo absent; exit 0;; "
            f"*) printf '%s\\n' \"$r\" >&2; exit 1;; esac; printf '%s\\n' \"$r\" )")


def scale_services(wanted: dict[str, int]) -> str:
    """One command for every service: `docker service scale --detach a=1 b=1`."""
    return "docker service scale --detach " + " ".join(
        sh(f"{name}={count}") for name, count in sorted(wanted.items()))



_NO_ROOM = ("not enough room for a backup: %s KiB free in %s, 1.5 times the last dump is %s "
            "KiB (lower backups.keep or free the disk)\\n")


def backup_dump(container: str, user: str, database: str, folder: str, backup_id: str,
                record_prefix: str) -> str:
    """`pg_dump -Fc` in the postgres container, streamed to a partial file (0600) on the host;
    its sha256 and size go into `<id>.json` (the record, `record_prefix` + those two fields),
    and the dump is renamed into place only once whole. A failed dump (a full disk, the
    container gone) removes the partial file; a killed one leaves it for the next backup of
    the database to remove. Before it starts, the folder's filesystem must have room for
    1.5 times the database's last dump (exit 28, ENOSPC's number, with one line saying so):
    a disk filled by a backup takes postgres down with it. Prints `sha256 size`."""
    part, dump = f"{folder}/.partial-{backup_id}.dump", f"{folder}/{backup_id}.dump"
    record = f"{folder}/{backup_id}.json"
    return (f"umask 077 && mkdir -p -- {sh(folder)} && chmod 700 -- {sh(folder)} && "
            f"find {sh(folder)} -maxdepth 1 \\( -name '.partial-*' -o -name '*.json.tmp' \\) "
            f"-delete && "
            f"last=$(ls -1t -- {sh(folder)}/*.dump 2>/dev/null | head -n 1) && need=0 && "
            f"if [ -n \"$last\" ]; then need=$(( $(stat -c %s \"$last\") * 3 / 2048 )); fi && "
            f"free=$({free_kib(folder)}) && "
            f"if [ \"${{free:-0}}\" -lt \"$need\" ]; then printf {sh(_NO_ROOM)} "
            f"\"${{free:-0}}\" {sh(folder)} \"$need\" >&2; exit 28; fi && "
            f"if docker exec {sh(container)} pg_dump -U {sh(user)} -Fc -d {sh(database)} "
            f"> {sh(part)}; then "
            f"sum=$(sha256sum < {sh(part)} | cut -d' ' -f1) && size=$(stat -c %s {sh(part)}) && "
            f"{{ printf '%s' {sh(record_prefix)}; "
            f"printf '\"sha256\": \"%s\", \"size\": %s}}\\n' \"$sum\" \"$size\"; }} "
            f"> {sh(record + '.tmp')} && mv -- {sh(part)} {sh(dump)} && "
            f"mv -- {sh(record + '.tmp')} {sh(record)} && printf '%s %s\\n' \"$sum\" \"$size\"; "
            f"else rc=$?; rm -f -- {sh(part)} {sh(record + '.tmp')}; exit $rc; fi")


def private_folder(path: str) -> str:
    """A backup folder: made if missing, 0700 either way."""
    return f"mkdir -p -- {sh(path)} && chmod 700 -- {sh(path)}"


def free_kib(path: str) -> str:
    """Prints the KiB free on `path`'s filesystem."""
    return f"df -kP {sh(path)} | awk 'NR==2{{print $4}}'"


def keep_fetched(partial: str, dump: str, record: str, record_json: str) -> str:
    """A fetched dump (checked) renamed into place, then its record (0600) written beside it:
    a backup is listed only once both are there."""
    return (f"umask 077 && mv -- {sh(partial)} {sh(dump)} && "
            f"printf '%s\\n' {sh(record_json)} > {sh(record + '.tmp')} && "
            f"mv -- {sh(record + '.tmp')} {sh(record)}")


def backup_records(root: str) -> str:
    """Every backup record under `<base>/backups` (`<database>/<id>.json`), one per line as
    `RECORD <path> <size of its dump, or -> <json>` (a record counts as a backup only with
    its whole dump beside it: a dump deleted by hand leaves its record), and each dump
    without a record as `ORPHAN <path>`."""
    return (f"[ -d {sh(root)} ] || exit 0; cd -- {sh(root)} && "
            f"for f in */*.json; do [ -f \"$f\" ] && printf 'RECORD %s %s %s\\n' \"$f\" "
            f"\"$(stat -c %s -- \"${{f%.json}}.dump\" 2>/dev/null || echo -)\" "
            f"\"$(tr -d '\\n' < \"$f\")\"; done; "
            f"for f in */*.dump; do [ -f \"$f\" ] && [ ! -f \"${{f%.dump}}.json\" ] && "
            f"printf 'ORPHAN %s\\n' \"$f\"; done; true")


def append_once(path: str, line: str) -> str:
    """`line` appended to `path` unless it is there already (a retried upload)."""
    return (f"grep -qxF -- {sh(line)} {sh(path)} 2>/dev/null || "
            f"printf '%s\\n' {sh(line)} >> {sh(path)}")


def backup_state(root: str, release_json: str) -> str:
    """`backup_records`, then the host's UTC time (`NOW 20261129T123500Z`: a backup's id is
    the host's time, as the nightly script's is, so ids from both sort by one clock) and
    the live release's record on one line (`LIVE <json>`: its pre-deploy backup is what
    `rollback --restore-db` restores, so retention keeps it)."""
    return (f"( {backup_records(root)} ); printf 'NOW %s\\n' \"$(date -u +%Y%m%dT%H%M%SZ)\"; "
            f"printf 'LIVE %s\\n' \"$(tr -d '\\n' 2>/dev/null < {sh(release_json)})\"")


def backup_retention(folder: str, keep: int, release_json: str) -> str:
    """The nightly script's retention, as `backup.to_remove` judges: of the records whose
    dump is there at the size they say, all but the newest `keep` go (dump and record),
    except the live release's pre-deploy backup (`backup` in its record: what
    `rollback --restore-db` restores). A record without its whole dump is left alone."""
    f = sh(folder)
    return (f"live=$(tr -d '\\n' 2>/dev/null < {sh(release_json)} | "
            f"sed -n 's/.*\"backup\": *\"\\([0-9TZ.]*\\)\".*/\\1/p'); "
            f"ls -1 -- {f} | grep -E '^[0-9]{{8}}T[0-9]{{6}}Z([.][0-9]+)?[.]json$' "
            f"| sort -t. -k1,1 -k2,2n | while read -r f; do "
            f"size=$(sed -n 's/.*\"size\": *\\([0-9][0-9]*\\).*/\\1/p' {f}/\"$f\"); "
            f"[ -n \"$size\" ] && [ \"$(stat -c %s -- {f}/\"${{f%.json}}.dump\" 2>/dev/null)\" "
            f"= \"$size\" ] && printf '%s\\n' \"$f\"; done "
            f"| head -n -{int(keep)} | while read -r f; do "
            f"[ \"${{f%.json}}\" = \"$live\" ] || rm -f -- {f}/\"$f\" {f}/\"${{f%.json}}.dump\"; "
            f"done")


def database_exists(container: str, user: str, database: str) -> str:
    """Prints `yes` when the database exists."""
    query = f"SELECT 'yes' FROM pg_database WHERE datname = {sql_literal(database)}"
    return (f"docker exec {sh(container)} psql -X -At -U {sh(user)} -d postgres "
            f"-c {sh(query)}")


def labelled(label: str, command: str) -> str:
    """`<label> <what command printed>` on one line: two questions in one round trip."""
    return f"printf '%s %s\\n' {sh(label)} \"$({command})\""


def file_sha256(path: str) -> str:
    """Prints the file's sha256, or nothing when it cannot be read."""
    return f"sha256sum < {sh(path)} 2>/dev/null | cut -d' ' -f1"


def restore_dump(container: str, user: str, database: str, dump: str) -> str:
    """A bare `pg_restore` of a custom-format dump into a new, empty database, all or nothing:
    the baseline of `python bench/run.py backup`."""
    return (f"docker exec -i {sh(container)} pg_restore -U {sh(user)} -d {sh(database)} "
            f"--exit-on-error --single-transaction --no-owner < {sh(dump)}")


RESTORE_FAILED = "__vedfin_pg_restore_failed__"

# The rows of each `COPY <table> (<columns>) FROM stdin;` block up to its `\.`; the table is
# what precedes the column list, found from the end (a quoted name may hold parentheses).
_COUNT_ROWS = r"""
$0 == "MARK" { print "FAILED"; next }
!on && /^COPY .* FROM stdin;$/ {
  t = substr($0, 6); sub(/ FROM stdin;$/, "", t)
  if (substr(t, length(t)) == ")") {
    depth = 0; inq = 0
    for (i = length(t); i > 0; i--) {
      c = substr(t, i, 1)
      if (c == "\"") inq = !inq
      else if (!inq && c == ")") depth++
      else if (!inq && c == "(") { depth--; if (depth == 0) { t = substr(t, 1, i - 2); break } }
    }
  }
  n = 0; on = 1; next
}
on && $0 == "\\." { print n, t; on = 0; next }
on { n++ }
""".replace("MARK", RESTORE_FAILED)


UNREADABLE = "__vedfin_dump_unreadable__"


def restore_counted(container: str, user: str, database: str, dump: str) -> str:
    """The dump restored into a new, empty database by `pg_restore` (one transaction, stop
    at the first error) while, beside it, the dump's own rows are counted per table: its data
    as SQL (`pg_restore -f - --data-only`), each COPY block counted (COPY's text format escapes
    line breaks: a row is a line). The counting runs in a one-off container of the running
    postgres's image, without a network, the dump mounted read-only, so neither the database
    container's CPU limit nor dockerd's streams are shared with the restore. Prints `<rows>
    <table>` lines once the restore is done, `FAILED` when the dump could not be read through
    to its end; exits as the restore did."""
    count = (f"[ -r /vedfin-dump ] || {{ echo {UNREADABLE}; exit 0; }}; "
             f"{{ pg_restore -f - --data-only /vedfin-dump || echo {RESTORE_FAILED}; }} | "
             f"awk {sh(_COUNT_ROWS)}")
    counter = (f"docker run --rm --network none -v {sh(dump + ':/vedfin-dump:ro')} "
               f"--entrypoint sh \"$(docker inspect -f '{{{{.Image}}}}' {sh(container)})\" "
               f"-c {sh(count)}")
    return (f"counts=$(mktemp) || exit 1; {{ {counter} > \"$counts\" 2>&1; }} & counting=$!; "
            f"docker exec -i {sh(container)} pg_restore -U {sh(user)} -d {sh(database)} "
            f"--exit-on-error --single-transaction --no-owner < {sh(dump)}; rc=$?; "
            f"wait $counting; cat \"$counts\"; rm -f \"$counts\"; exit $rc")


def node_inventory() -> str:
    """Every node of the swarm, one JSON line each (a manager answers; a worker cannot)."""
    return ("ids=$(docker node ls -q) && docker node inspect --format "
            "'{{json .}}' $ids")


def node_tasks() -> str:
    """`<node id> <task name>` for every task meant to run, node by node."""
    return ("for id in $(docker node ls -q); do docker node ps --filter desired-state=running "
            "--format \"$id {{.Name}}\" \"$id\" || exit $?; done")


def node_availability(node: str, availability: str) -> str:
    return f"docker node update --availability {sh(availability)} -- {sh(node)}"


def drain_state(node: str) -> str:
    """The node's tasks still meant to run there, every service's replicas, then the swarm's
    tasks: a drain is done when the first part is empty and each service runs what it wants
    (counted from the tasks, Running and meant to run: `service ls` still counts a task
    that is being shut down on the drained node)."""
    return (f"docker node ps --filter desired-state=running --format '{{{{.Name}}}}' "
            f"-- {sh(node)} && echo --SERVICES-- && "
            f"docker service ls --format '{{{{.Name}}}} {{{{.Replicas}}}}' && "
            f"echo --SWARM-TASKS-- && ids=$(docker service ls -q) && "
            f"if [ -n \"$ids\" ]; then docker service ps $ids --no-trunc --format "
            f"'{{{{.Name}}}} {{{{.Image}}}} {{{{.DesiredState}}}} {{{{.CurrentState}}}}'; fi")


def manager_address() -> str:
    return "docker info --format '{{.Swarm.NodeAddr}}'"


def join_token(role: str) -> str:
    """On the manager: the join token for `role`, alone in its output (a secret: the caller
    masks it before anything else can print it back)."""
    return f"docker swarm join-token -q {sh(role)}"


def swarm_local_state() -> str:
    """On a node: its swarm state and the engine's name (`inactive node2`)."""
    return "docker info --format '{{.Swarm.LocalNodeState}} {{.Name}}'"


def swarm_node_id() -> str:
    return "docker info --format '{{.Swarm.NodeID}}'"


def swarm_join(manager_address: str) -> str:
    """On the joining node: the token comes on the channel's stdin (never in this command
    line); it is in `docker swarm join`'s argv on that node while the join runs, as the CLI
    takes it no other way."""
    return (f"IFS= read -r t && exec docker swarm join --token \"$t\" "
            f"{sh(manager_address + ':2377')}")


def swarm_leave() -> str:
    return "docker swarm leave --force"


def node_remove(node: str) -> str:
    return f"docker node rm --force -- {sh(node)}"


def node_labels_update(node: str, add: dict[str, str], remove: list[str]) -> str:
    """By node ID where the caller has it: a name can match a stale entry too."""
    flags = [*(f"--label-add {sh(f'{k}={v}')}" for k, v in sorted(add.items())),
             *(f"--label-rm {sh(k)}" for k in sorted(remove))]
    return f"docker node update {' '.join(flags)} -- {sh(node)}"


def service_placement(service: str) -> str:
    """`placement <json>` (the service's placement: its constraints), then one line per task,
    `<desired state>|<node>|<current state>`, newest first in each slot; or `absent` when
    there is no such service. Any other failure fails the command: a postgres that could not
    be read must not read as "not deployed"."""
    name = sh(service)
    return (f"p=$(docker service inspect --format '{{{{json .Spec.TaskTemplate.Placement}}}}' "
            f"-- {name} 2>&1) || case \"$p\" in {_NO_SUCH_SERVICE}) echo absent; exit 0;; "
            f"*) printf '%s\\n' \"$p\" >&2; exit 1;; esac; printf 'placement %s\\n' \"$p\" && "
            f"docker service ps --format "
            f"'{{{{.DesiredState}}}}|{{{{.Node}}}}|{{{{.CurrentState}}}}' -- {name}")


def pin_to_label(service: str, node: str, label: str) -> str:
    """What pins a running service to its node by label (printed for the user to run: it
    restarts the service, which only a deploy may do)."""
    return (f"docker node update --label-add {sh(label + '=true')} {sh(node)} && "
            f"docker service update --constraint-add {sh(f'node.labels.{label} == true')} "
            f"{sh(service)}")
