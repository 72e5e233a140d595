"""Pure builders of the remote shell commands, one module per area: strings (or a `Command`,
where a secret goes with it) in, the exact command out, every value quoted via `sh`.

Nothing here runs anything, so every command can be unit-tested as the exact string the host
will see, and a value from the config can never become shell syntax. Outside `remote/` and
the templates (`rendering/templates`) the package spells out no command (`tests/test_house.py`
holds it to that). Every builder is re-exported here: `from vedfin_ops.remote import
commands` then `commands.stack_deploy(...)`.

- `files`: folders, files, links, the audit line's append; `all_of`/`each_of`/`before` join commands
- `releases`: the env's releases and their records, read in one round trip
- `lock`: the lock on the host and its heartbeat
- `engine`: containers, images and volumes (migrations, pruning, the volume probe)
- `stack`: stacks and services (deploy, registry login, replicas, restarts)
- `swarm`: the swarm's nodes (inventory, drain, labels, join, leave)
- `postgres`: psql, backups and restores through the postgres container
- `cron`: the deploy user's crontab block and the scripts its lines run
- `netdata`: files in Netdata's config folder, and its alarms API
- `logs`: `docker service logs`
- `build`: the local `docker build`/`login`/`push` of `vedfin build` (argv, no shell)
- `host`: host.prepare's probes and applies (used as `commands.host.x`, not re-exported: a
  bare host's commands, run as root, are no deploy's)
"""

from vedfin_ops.remote.commands.cron import (
    NO_CRONTAB,
    TORN,
    cron_state,
    host_clock,
    install_block,
    install_script,
)
from vedfin_ops.remote.commands.engine import (
    MIGRATE_LABEL,
    SERVICE_LABEL,
    STACK_LABEL,
    image_inventory,
    migrate,
    migrations_running,
    remove_container,
    remove_images,
    stop_migrations,
    volume_probe,
)
from vedfin_ops.remote.commands.files import (
    all_of,
    append_once,
    audit_append,
    before,
    each_of,
    file_sha256,
    free_kib,
    keep_files,
    labelled,
    mkdir_p,
    private_folder,
    read_file,
    read_link,
    relink_or_remove,
    remove_dirs,
    remove_files,
    remove_siblings,
    swap_symlink,
    tail,
    write_text,
)
from vedfin_ops.remote.commands.lock import lock_acquire, lock_beat, lock_release, with_heartbeat
from vedfin_ops.remote.commands.logs import release_tasks_logs, service_logs
from vedfin_ops.remote.commands.netdata import (
    netdata_alarms,
    netdata_install,
    netdata_restore,
    netdata_settle,
)
from vedfin_ops.remote.commands.postgres import (
    _COUNT_ROWS,
    RESTORE_FAILED,
    UNREADABLE,
    backup_dump,
    backup_records,
    backup_retention,
    backup_state,
    database_exists,
    db_inventory,
    keep_fetched,
    postgres_container,
    psql,
    psql_rows,
    restore_counted,
    restore_dump,
)
from vedfin_ops.remote.commands.releases import (
    clean_partial_uploads,
    env_state,
    mark_release,
    release_listing,
    release_records,
    status_state,
    write_state,
)
from vedfin_ops.remote.commands.stack import (
    health_probe,
    registry_login,
    reset_stack_image_labels,
    restart_services,
    scale_services,
    service_replicas,
    stack_deploy,
    task_errors,
)
from vedfin_ops.remote.commands.swarm import (
    drain_state,
    join_token,
    manager_address,
    node_availability,
    node_inventory,
    node_labels_update,
    node_remove,
    node_tasks,
    pin_to_label,
    service_placement,
    swarm_join,
    swarm_leave,
    swarm_local_state,
    swarm_node_id,
)

__all__ = [
    "MIGRATE_LABEL",
    "NO_CRONTAB",
    "RESTORE_FAILED",
    "SERVICE_LABEL",
    "STACK_LABEL",
    "TORN",
    "UNREADABLE",
    "_COUNT_ROWS",
    "all_of",
    "append_once",
    "audit_append",
    "backup_dump",
    "backup_records",
    "backup_retention",
    "backup_state",
    "before",
    "clean_partial_uploads",
    "cron_state",
    "database_exists",
    "db_inventory",
    "drain_state",
    "each_of",
    "env_state",
    "file_sha256",
    "free_kib",
    "health_probe",
    "host_clock",
    "image_inventory",
    "install_block",
    "install_script",
    "join_token",
    "keep_fetched",
    "keep_files",
    "labelled",
    "lock_acquire",
    "lock_beat",
    "lock_release",
    "manager_address",
    "mark_release",
    "migrate",
    "migrations_running",
    "mkdir_p",
    "netdata_alarms",
    "netdata_install",
    "netdata_restore",
    "netdata_settle",
    "node_availability",
    "node_inventory",
    "node_labels_update",
    "node_remove",
    "node_tasks",
    "pin_to_label",
    "postgres_container",
    "private_folder",
    "psql",
    "psql_rows",
    "read_file",
    "read_link",
    "registry_login",
    "release_listing",
    "release_records",
    "release_tasks_logs",
    "relink_or_remove",
    "remove_container",
    "remove_dirs",
    "remove_files",
    "remove_images",
    "remove_siblings",
    "reset_stack_image_labels",
    "restart_services",
    "restore_counted",
    "restore_dump",
    "scale_services",
    "service_logs",
    "service_placement",
    "service_replicas",
    "stack_deploy",
    "status_state",
    "stop_migrations",
    "swap_symlink",
    "swarm_join",
    "swarm_leave",
    "swarm_local_state",
    "swarm_node_id",
    "tail",
    "task_errors",
    "volume_probe",
    "with_heartbeat",
    "write_state",
    "write_text",
]
