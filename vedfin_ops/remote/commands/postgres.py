"""PostgreSQL through its container (`docker exec`): psql sessions, backups (dump, records,
retention) and restores (with the dump's rows counted beside them)."""

from __future__ import annotations

from vedfin_ops.remote.commands.engine import PGDATA, SERVICE_LABEL
from vedfin_ops.remote.commands.files import free_kib
from vedfin_ops.remote.quoting import sh, sql_literal


def postgres_container(service: str) -> str:
    return (f"docker ps -q --filter {sh('label=' + SERVICE_LABEL + '=' + service)} "
            f"--filter health=healthy | head -n 1")


def psql(container: str, user: str, database: str = "postgres") -> str:
    return (f"docker exec -i {sh(container)} psql -X -v ON_ERROR_STOP=1 -U {sh(user)} "
            f"-d {sh(database)}")


def psql_rows(container: str, user: str, database: str = "postgres") -> str:
    """`psql` printing bare rows (`-At`: unaligned, tuples only), one per line."""
    return psql(container, user, database) + " -At"


def db_inventory(container: str, user: str) -> str:
    """One psql session over every database (the SQL from `db_init.inventory_sql` on stdin):
    errors do not stop it, so a missing database just prints no line."""
    return (f"docker exec -i {sh(container)} psql -X -At -v ON_ERROR_STOP=0 -U {sh(user)} "
            f"-d postgres 2>&1")


def database_exists(container: str, user: str, database: str) -> str:
    """Prints `yes` when the database exists."""
    query = f"SELECT 'yes' FROM pg_database WHERE datname = {sql_literal(database)}"
    return (f"docker exec {sh(container)} psql -X -At -U {sh(user)} -d postgres "
            f"-c {sh(query)}")


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


def pin_dump(dump: str, folder: str, pin: str) -> str:
    """A restore drill's copy of a dump: a hard link in a fresh private `folder` (the same
    inode, no byte copied), so a backup's retention removing the dump meanwhile leaves the
    drill what it restores; fails when the dump is gone already."""
    return (f"rm -rf -- {sh(folder)} && mkdir -m 700 -p -- {sh(folder)} && "
            f"ln -- {sh(dump)} {sh(pin)}")


def env_file_for_database(source: str, target: str, database: str, scratch: str) -> str:
    """A private copy of an env file whose postgres URLs name `scratch` where they named
    `database` (the drill's migrate status runs against the scratch database, never the
    live one); prints how many lines name `scratch`. No value of the file is on a command
    line (database names are identifiers, checked by the config). Prints the lines that name
    `scratch` now and those that still name `database` (a URL the pattern missed, a
    `PGDATABASE=`): the drill runs nothing against a file that could reach the live one."""
    expression = (rf"s|^([A-Za-z_][A-Za-z0-9_]*=postgres(ql)?://[^/]*/){database}(\?.*)?$"
                  rf"|\1{scratch}\3|")
    still = rf"(/|=){database}([?\"'&;[:space:]]|$)"  # the live database, named elsewhere
    return (f"( umask 077 && sed -E {sh(expression)} {sh(source)} > {sh(target)} ) && "
            f"printf '%s %s\n' \"$(grep -c {sh('/' + scratch)} {sh(target)})\" "
            f"\"$(grep -cE {sh(still)} {sh(target)})\"")


def free_kib_in_data(container: str) -> str:
    """The KiB free where the postgres container keeps its data (its volume's filesystem,
    which need not be the deploy user's)."""
    inner = 'df -kP "${PGDATA:-' + PGDATA + '}"'
    return f"docker exec {sh(container)} sh -c {sh(inner)} | awk 'NR==2{{print $4}}'"
