"""The swarm's nodes: inventory, drain, labels, join and leave, placement."""

from __future__ import annotations

from vedfin_ops.remote.command import Command, Raw, Secret
from vedfin_ops.remote.commands.stack import _NO_SUCH_SERVICE
from vedfin_ops.remote.quoting import sh


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


def swarm_join(manager_address: str, token: str) -> Command:
    """On the joining node: the token goes on the channel's stdin (never in this command
    line); it is in `docker swarm join`'s argv on that node while the join runs, as the CLI
    takes it no other way."""
    return Command(Raw('IFS= read -r t && exec docker swarm join --token "$t"'),
                   manager_address + ":2377", secret_stdin=Secret(token + "\n"))


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
