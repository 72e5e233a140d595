"""A scripted Docker Engine for orchestration tests: the `docker` the fake host's shell finds.

It answers the commands `vedfin_ops.remote.commands` builds (stack deploy, service ls/inspect/ps/
scale, ps, run, rm, exec of psql, pg_dump and pg_restore; databases are created, renamed and
dropped by the SQL it is sent) from a JSON state file ($FAKE_ENGINE), and moves
one step per `service inspect`, as a real engine moves between polls. Images whose tag says
`broken` fail their health checks, so the engine rolls them back; `badmigration` fails its
migration. Its calls are answered in the test's own process (tests/fake/dispatch.py), one at a
time: a Python interpreter started per call was most of the fault matrix's time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from tests.fake import dispatch

STACK_LABEL = "com.docker.stack.namespace"
ENGINE = ""  # the state file of the call being answered
OUT = io.StringIO()  # what the call prints
ERR = io.StringIO()
STDIN = io.StringIO()


def echo(*values: object, file: io.StringIO | None = None) -> None:
    """`print` into the call's answer (never this process's own stdout)."""
    print(*values, file=file or OUT)


def load() -> dict[str, Any]:
    with open(ENGINE) as fh:
        state: dict[str, Any] = json.load(fh)
    return state


def save(state: dict[str, Any]) -> None:
    tmp = ENGINE + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=1, sort_keys=True)
    os.replace(tmp, ENGINE)


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


_NAME = r'"((?:[^"]|"")+)"|([a-z_][a-z0-9_]*)'


def _ident(match: re.Match[str], group: int) -> str:
    quoted = match.group(group)
    return quoted.replace('""', '"') if quoted is not None else match.group(group + 1)


def database_exists(state: dict[str, Any], name: str) -> bool:
    """The env databases exist (unless `no_database`); a restore's are made by its SQL."""
    if name in state.get("db_present", []):
        return True
    if name in state.get("db_absent", []) or state.get("no_database"):
        return False
    return "_restore_" not in name and "_before_" not in name and "_drill_" not in name


def _set_database(state: dict[str, Any], name: str, present: bool) -> None:
    add, drop = ("db_present", "db_absent") if present else ("db_absent", "db_present")
    state[add] = sorted(set(state.get(add, [])) | {name})
    state[drop] = sorted(set(state.get(drop, [])) - {name})


def run_sql(state: dict[str, Any], sql: str) -> int:
    """CREATE / RENAME / DROP DATABASE as PostgreSQL would, one statement at a time; a
    statement in `sql_fails` (a substring) fails the rest, as ON_ERROR_STOP does."""
    for statement in sql.split(";\n"):
        if any(bad in statement for bad in state.get("sql_fails", [])):
            echo(f"ERROR:  injected failure at {statement.strip()[:40]}", file=ERR)
            return 3
        restart = state.get("postgres_restarts_at")  # postgres restarts under this statement
        if restart and restart in statement:
            state.pop("postgres_restarts_at")
            state["postgres_container"] = f"pg{int(state.get('postgres_container', 'pg0')[2:]) + 1}"
            state["postgres_down"] = 2  # `docker ps` finds no healthy one twice, then the new
            echo("server closed the connection unexpectedly", file=ERR)
            return 2
        allow = re.match(r"\s*ALTER DATABASE (?:" + _NAME + ") WITH ALLOW_CONNECTIONS (true|false)",
                         statement)
        if allow:  # committed at once: it outlives a failed transaction after it
            closed = set(state.get("closed", [])) - {_ident(allow, 1)}
            state["closed"] = sorted(closed | ({_ident(allow, 1)} if allow.group(3) == "false"
                                               else set()))
        created = re.match(r"\s*CREATE DATABASE (?:" + _NAME + ")", statement)
        renamed = re.match(r"\s*ALTER DATABASE (?:" + _NAME + ") RENAME TO (?:" + _NAME + ")",
                           statement)
        dropped = re.match(r"\s*DROP DATABASE IF EXISTS (?:" + _NAME + ")", statement)
        if created:
            _set_database(state, _ident(created, 1), True)
        elif renamed:
            _set_database(state, _ident(renamed, 1), False)
            _set_database(state, _ident(renamed, 3), True)
            if _ident(renamed, 1) in state.get("closed", []):  # a database keeps its settings
                state["closed"] = sorted(set(state["closed"]) - {_ident(renamed, 1)}
                                         | {_ident(renamed, 3)})
        elif dropped:
            _set_database(state, _ident(dropped, 1), False)
    return 0


def filters(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == "--filter"]


def tasks(svc: dict[str, Any], image: str, ready: bool, count: int) -> list[dict[str, Any]]:
    return [{"image": image, "ready": ready} for _ in range(count)]


def named_service(state: dict[str, Any], args: list[str], command: str = "service inspect"
                  ) -> dict[str, Any] | None:
    """The service `docker service inspect|ps ... NAME` names, or None after the engine's
    own words (`service ps` says them without `Error: `)."""
    svc: dict[str, Any] | None = state["services"].get(args[-1])
    if svc is None:
        prefix = "" if command == "service ps" else "Error: "
        echo(f"{prefix}no such service: {args[-1]}", file=ERR)
    return svc


def stack_configs(state: dict[str, Any], spec: dict[str, Any], stack_file: str
                  ) -> dict[str, str] | None:
    """Swarm configs as the engine keeps them: immutable, so a file whose data changed under
    a name the engine already holds is refused before anything moves (None, with the
    engine's message); else each key's name (a service's spec names it)."""
    names: dict[str, str] = {}
    held = state.setdefault("configs", {})
    for key, body in (spec.get("configs") or {}).items():
        name = body.get("name") or key
        with open(os.path.join(os.path.dirname(stack_file), body["file"]), "rb") as fh:
            data = hashlib.sha256(fh.read()).hexdigest()
        if held.get(name, data) != data:
            echo(f"failed to update config {name}: Error response from daemon: rpc error: "
                  f"code = InvalidArgument desc = only updates to Labels are allowed",
                  file=ERR)
            return None
        names[key] = name
    for key, name in names.items():
        path = os.path.join(os.path.dirname(stack_file), spec["configs"][key]["file"])
        with open(path, "rb") as fh:
            held[name] = hashlib.sha256(fh.read()).hexdigest()
    return names


def stack_deploy(state: dict[str, Any], args: list[str]) -> int:
    stack_file, stack = flag(args, "-c"), args[-1]
    assert stack_file is not None
    with open(stack_file + ".json") as fh:  # the fake host writes the YAML's JSON beside it
        spec = json.load(fh)
    configs = stack_configs(state, spec, stack_file)
    if configs is None:
        return 1
    for short, body in spec.get("services", {}).items():
        name = f"{stack}_{short}"
        if body.get("configs"):  # the spec names each config, not the file's key
            body = {**body, "configs": [{**c, "source": configs.get(c.get("source"),
                                                                  c.get("source"))}
                                        for c in body["configs"]]}
        image = body["image"]
        if "@" in image:  # pulled by digest: the engine now holds it
            ref, digest = image.split("@", 1)
            repo = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
            state.setdefault("images", {})[digest] = repo
        replicas = int(body.get("deploy", {}).get("replicas", 1))
        template = hashlib.sha256(json.dumps({k: v for k, v in body.items() if k != "deploy"},
                                             sort_keys=True).encode()).hexdigest()[:12]
        svc = state["services"].get(name)
        if svc is not None and svc.get("label") == image:
            # docker/cli: when the file's image equals the stack label, the service keeps the
            # image it runs (so an image changed by `docker service update` stays)
            image = svc["image"]
            body = {**body, "image": image}
            template = hashlib.sha256(json.dumps({k: v for k, v in body.items()
                                                  if k != "deploy"}, sort_keys=True)
                                      .encode()).hexdigest()[:12]
        constraints = body.get("deploy", {}).get("placement", {}).get("constraints", [])
        mounts = volume_sources(spec, stack, body)
        if svc is not None:
            svc["label"] = spec["services"][short]["image"]
            svc["constraints"] = constraints
            svc["mounts"] = mounts
        if svc is None:
            state["services"][name] = {"stack": stack, "image": image, "label": image,
                                       "replicas": replicas, "constraints": constraints,
                                       "template": template, "version": 1, "update": None,
                                       "tasks": tasks({}, image, "broken" not in image,
                                                      replicas), "script": [],
                                       "mounts": mounts}
            continue
        if svc["template"] == template:
            if svc["replicas"] != replicas:
                svc["replicas"] = replicas
                svc["version"] += 1
                svc["tasks"] = tasks(svc, image, True, replicas)
            continue
        old_image, old_template = svc["image"], svc["template"]
        state["clock"] += 1
        started = f"t{state['clock']}"
        svc.update(image=image, template=template, replicas=replicas,
                   version=svc["version"] + 1)
        healthy = "broken" not in image
        mixed = tasks(svc, old_image, True, replicas) + tasks(svc, image, False, 1)
        if healthy:
            svc["script"] = [
                {"update": {"State": "updating", "StartedAt": started}, "tasks": mixed},
                {"update": {"State": "completed", "StartedAt": started},
                 "tasks": tasks(svc, image, True, replicas)}]
        else:
            message = "update rolled back due to failure or early termination of task x"
            svc["script"] = [
                {"update": {"State": "updating", "StartedAt": started}, "tasks": mixed},
                {"update": {"State": "rollback_started", "StartedAt": started,
                            "Message": message}, "image": old_image,
                 "template": old_template, "tasks": mixed},
                {"update": {"State": "rollback_completed", "StartedAt": started,
                            "Message": "rollback completed"}, "image": old_image,
                 "template": old_template, "tasks": tasks(svc, old_image, True, replicas)}]
        svc["update"] = svc["script"].pop(0)["update"]
        svc["tasks"] = mixed
    save(state)
    return 0


def volume_sources(spec: dict[str, Any], stack: str, body: dict[str, Any]) -> list[str]:
    """The volumes a service mounts, named as the engine names them: an external one by its
    own name, the stack's own as `<stack>_<key>`."""
    out = []
    for entry in body.get("volumes") or []:
        key = entry.split(":", 1)[0] if isinstance(entry, str) else entry.get("source", "")
        declared = (spec.get("volumes") or {}).get(key)
        if declared is None:
            continue  # a bind mount
        declared = declared or {}
        out.append(declared.get("name", key) if declared.get("external")
                   else f"{stack}_{key}")
    return out


def adoption(state: dict[str, Any], args: list[str]) -> int | None:
    """The postgres a deploy starts on an adopted volume to back it up (`adoption_server`):
    `docker run -d` of it (state["adopt_fails"] makes it exit at once), `pg_isready`, `stop`,
    `logs`; it is a user of the volume (`ps --filter volume=`) until it is removed. None
    for any other command."""
    if args[0] == "run" and "vedfin.adopt-backup" in args:
        name, mount = flag(args, "--name") or "x", flag(args, "-v") or ":"
        if state.get("adopt_fails"):
            echo("FATAL:  database files are incompatible with server", file=ERR)
            return 125
        state.setdefault("containers", {})[name] = {"volume": mount.split(":", 1)[0]}
        state.setdefault("adoption_servers", []).append(name)
        save(state)
        echo(f"{name}-id")
        return 0
    running = state.get("containers", {})
    if args[0] == "exec" and "pg_isready" in args:
        return 0 if args[1] in running else 1
    if args[0] == "stop":
        return 0 if args[-1] in running else 1
    if args[0] == "logs":
        echo(state.get("adopt_log", "LOG:  database system is shut down"))
        return 0
    return None


def task_node(state: dict[str, Any], svc: dict[str, Any]) -> str:
    """The node a service's tasks run on: `svc["node"]` where a test put it, else the first
    node its `node.labels.K == V` constraints allow, else the first manager (where a task
    started before its labels changed stays)."""
    if svc.get("node"):
        return str(svc["node"])
    nodes = state.get("nodes") or []
    wanted = [c.replace(" ", "").removeprefix("node.labels.").split("==", 1)
              for c in svc.get("constraints", [])]
    for node in nodes:
        labels = node["Spec"].get("Labels") or {}
        if wanted and all(labels.get(k) == v for k, v in wanted):
            return str(node["Description"]["Hostname"])
    managers = [n for n in nodes if n["Spec"].get("Role") == "manager"]
    return str(managers[0]["Description"]["Hostname"]) if managers else ""


def tick(state: dict[str, Any]) -> None:
    for svc in state["services"].values():
        if svc["script"]:
            step = svc["script"].pop(0)
            svc["update"] = step["update"]
            svc["tasks"] = step["tasks"]
            if "image" in step:
                svc["image"], svc["template"] = step["image"], step["template"]


def inspect_one(name: str, svc: dict[str, Any]) -> dict[str, Any]:
    out = {"Spec": {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": svc["image"]},
                                                   "Fake": svc["template"]},
                    "Labels": {"com.docker.stack.image": svc.get("label", "")},
                    "Mode": {"Replicated": {"Replicas": svc["replicas"]}}},
           "Version": {"Index": svc["version"]}}
    if svc.get("force"):  # `service update --force`s so far (a stack deploy keeps it)
        out["Spec"]["TaskTemplate"]["ForceUpdate"] = svc["force"]
    if svc.get("edits"):
        out["Spec"]["TaskTemplate"]["Edits"] = svc["edits"]
    if svc["update"]:
        out["UpdateStatus"] = svc["update"]
    return out


def main(args: list[str]) -> int:
    state = load()
    state.setdefault("calls", []).append(" ".join(args[:3]))
    if args[:2] == ["stack", "deploy"]:
        if "--with-registry-auth" in args:
            state["registry_auth"] = True
        return stack_deploy(state, args)
    if args[0] == "pull":  # by digest, as the deploy pulls beside its backup
        image = args[-1]
        ref, _, digest = image.partition("@")
        if not digest:
            echo(f"fake docker: pull {image}: a tag is not pulled here", file=ERR)
            return 1
        state.setdefault("images", {})[digest] = ref.rsplit(":", 1)[0]
        state.setdefault("pulls", []).append(image)
        save(state)
        return 0
    if args[0] == "login":
        password = STDIN.read().rstrip("\n")
        state.setdefault("logins", []).append({"server": args[-1], "user": flag(args, "--username"),
                                               "password": password,
                                               "stdin": "--password-stdin" in args})
        save(state)
        return 0
    # adopting a data volume (`commands.volume_probe`): state["volumes"] maps each volume to
    # the PG_VERSION its data directory holds ("" when empty); no other container uses one,
    # and the postgres image says PostgreSQL 17
    if args[:2] == ["volume", "inspect"]:
        return 0 if args[-1] in state.get("volumes", {}) else 1
    if args[0] == "ps" and any(f.startswith("volume=") for f in filters(args)):
        wanted = next(f for f in filters(args) if f.startswith("volume=")).split("=", 1)[1]
        for name, container in sorted(state.get("containers", {}).items()):
            if container.get("volume") == wanted:
                echo(name)
        return 0
    if args[0] == "inspect" and "user " in (flag(args, "--format") or ""):
        echo(f"user /{args[-1]} ")  # a plain container: no service label
        return 0
    if args[:2] == ["service", "inspect"] and "Mounts" in (flag(args, "--format") or ""):
        svc = named_service(state, args)
        if svc is None:
            return 1
        echo(" ".join([args[-1], *svc.get("mounts", [])]))
        return 0
    adopted = adoption(state, args)
    if adopted is not None:
        return adopted
    if args[0] == "run" and flag(args, "--entrypoint") == "sh" and ":/adopt:ro" in " ".join(args):
        held = state.get("volumes", {}).get((flag(args, "-v") or "").split(":", 1)[0], "")
        echo(f"data {held}\nentries {'PG_VERSION base' if held else ''}\n"
              f"image postgres (PostgreSQL) 17.2")
        return 0
    if args[:2] == ["node", "ls"]:  # state["nodes"]: the engine's node objects
        nodes = state.get("nodes")
        if nodes is None:
            echo("Error response from daemon: This node is not a swarm manager.",
                  file=ERR)
            return 1
        for node in nodes:
            echo(node["ID"])
        return 0
    if args[:2] == ["node", "inspect"]:
        by_id = {n["ID"]: n for n in state.get("nodes") or []}
        ids = [a for a in args[2:] if not a.startswith("-") and a != "{{json .}}"]
        if not ids:
            echo('"docker node inspect" requires at least 1 argument.', file=ERR)
            return 1
        for node_id in ids:
            echo(json.dumps(by_id[node_id]))
        return 0
    # joining a node (`cluster.join`): state["joinable"] is the node that `swarm join` adds
    if args[:3] == ["swarm", "join-token", "-q"]:
        echo("SWMTKN-1-fake-join-token-" + args[3])
        return 0
    if args[:2] == ["info", "--format"] and "NodeAddr" in args[2]:
        echo("10.0.0.1")
        return 0
    if args[:2] == ["info", "--format"] and "LocalNodeState" in args[2]:
        # the joining node's engine: its swarm state and name
        name = state.get("local_name") or (state.get("joinable") or {}).get(
            "Description", {}).get("Hostname", "node2")
        echo(f"{state.get('local_swarm', 'inactive')} {name}")
        return 0
    if args[:2] == ["info", "--format"] and "NodeID" in args[2]:
        echo(state.get("joined_id", ""))
        return 0
    if args[:2] == ["swarm", "join"]:
        joining = state.pop("joinable", None)
        if not (flag(args, "--token") or "").startswith("SWMTKN-1-") or joining is None:
            echo("Error response from daemon: invalid join token", file=ERR)
            return 1
        joining["Status"]["State"] = state.get("joined_state", "ready")
        state.setdefault("nodes", []).append(joining)
        state["joined_id"] = joining["ID"]
        state["joined_token"] = flag(args, "--token")
        save(state)
        return 0
    if args[:2] == ["swarm", "leave"]:
        state["left"] = state.get("left", 0) + 1
        save(state)
        return 0
    if args[:2] == ["node", "rm"]:
        state["nodes"] = [n for n in state.get("nodes", [])
                          if args[-1] not in (n["ID"], n["Description"]["Hostname"])]
        save(state)
        return 0
    if args[:2] == ["node", "update"] and ("--label-add" in args or "--label-rm" in args):
        for node in state.get("nodes") or []:
            if args[-1] in (node["ID"], node["Description"]["Hostname"]):
                labels = node["Spec"].setdefault("Labels", {})
                for i, word in enumerate(args):
                    if word == "--label-add":
                        key, _, value = args[i + 1].partition("=")
                        labels[key] = value
                    elif word == "--label-rm":
                        labels.pop(args[i + 1], None)
        save(state)
        return 0
    if args[:2] == ["node", "update"] and "--availability" in args:
        for node in state.get("nodes") or []:
            if args[-1] in (node["ID"], node["Description"]["Hostname"]):
                node["Spec"]["Availability"] = flag(args, "--availability")
                if node["Spec"]["Availability"] == "drain" and not state.get("stuck"):
                    state.setdefault("node_tasks", {})[args[-1]] = []  # moved elsewhere
        save(state)
        return 0
    if args[:2] == ["node", "ps"]:  # state["node_tasks"]: node name -> its task names
        for name in state.get("node_tasks", {}).get(args[-1], []):
            echo(name)
        return 0
    if args[:2] == ["service", "ls"] and "{{.Name}} {{.Replicas}}" in args:
        for name, svc in sorted(state["services"].items()):
            running = svc["replicas"] - (1 if state.get("stuck") else 0)
            echo(f"{name} {running}/{svc['replicas']}")
        return 0
    if args[:2] == ["service", "ls"]:
        wanted = [f.split("=", 2)[2] for f in filters(args) if f.startswith("label=" +
                                                                          STACK_LABEL)]
        for name, svc in sorted(state["services"].items()):
            if not wanted or svc["stack"] in wanted:
                echo(name)
        return 0
    if args[:2] == ["service", "inspect"] and "Replicas" in (flag(args, "--format") or ""):
        svc = named_service(state, args)  # the spec's replica count (off-hours' cron)
        if svc is None:
            return 1
        echo(svc["replicas"])
        return 0
    if args[:2] == ["service", "inspect"] and "Placement" in (flag(args, "--format") or ""):
        svc = named_service(state, args)
        if svc is None:
            return 1
        echo(json.dumps({"Constraints": svc["constraints"]} if svc.get("constraints")
                         else {}))
        return 0
    if args[:2] == ["service", "ps"] and ".Node" in (flag(args, "--format") or ""):
        svc = named_service(state, args, "service ps")
        if svc is None:
            return 1
        for line in svc.get("ps") or [f"Running|{task_node(state, svc)}|Running 3 seconds ago"
                                      for _task in svc["tasks"][:svc["replicas"]]]:
            echo(line)  # svc["ps"]: a task history a test wrote (pending, failed, moved)
        return 0
    if args[:2] == ["service", "inspect"] and "--format" in args:  # the spec's image
        svc = named_service(state, args)
        if svc is None:
            return 1
        echo(svc["image"])
        return 0
    if args[:2] == ["service", "inspect"]:
        tick(state)
        save(state)
        names = [a for a in args[2:] if not a.startswith("-")]
        echo(json.dumps([inspect_one(n, state["services"][n]) for n in names
                          if n in state["services"]]))
        return 0
    if args[:2] == ["service", "ps"] and ".DesiredState" in (flag(args, "--format") or ""):
        # a cluster's rollout: the swarm's tasks of every service, on whichever node
        names = [a for a in args[2:] if not a.startswith("-") and "{{" not in a]
        for name in names:
            for slot, task in enumerate(state["services"].get(name, {}).get("tasks", []), 1):
                # a drain scripted stuck: one task of each service never comes up elsewhere
                up = task["ready"] and not (state.get("stuck") and slot == 1)
                current = "Running 3 seconds ago" if up else "Starting 1 second ago"
                echo(f"{name}.{slot} {task['image']} Running {current}")
        return 0
    if args[:2] == ["service", "ps"] and "--format" in args:  # `<task id> <image>` per task
        svc = state["services"].get(args[-1])
        if svc is not None:  # one task per version: the current one, and older ones
            echo(f"task-v{svc['version']} {svc['image']}")
            for version in range(1, svc["version"]):
                echo(f"task-v{version} an-older-image:{version}")
            for crashed in state.get("crashed", {}).get(args[-1], []):
                echo(f"task-{crashed} {svc['image']}")
        return 0
    if args[:2] == ["service", "logs"]:  # state["logs"][service]: [(version, text), ...]
        svc = state["services"].get(args[-1], {})
        for version, text in state.get("logs", {}).get(args[-1], []):
            if version == "docker":  # the engine's own words, not a task's line
                echo(text)
                continue
            current = svc.get("version") if version == "current" else version
            task = f"task-{version}" if isinstance(version, str) and version != "current" \
                else f"task-v{current}"
            echo(f"2026-11-29T10:00:00.{sum(map(ord, task)):09d}Z {args[-1]}.1.{task}@fake"
                  f"    | {text}")
        return 0
    if args[:2] == ["service", "ps"]:
        echo(f"{state['services'].get(args[-1], {}).get('image', 'x')} task: non-zero exit (1)"
              if "broken" in json.dumps(state["services"].get(args[-1], {})) else "")
        return 0
    if args[:2] == ["service", "update"] and "--force" in args:  # a rolling restart
        # as the engine: TaskTemplate.ForceUpdate goes up by one, and any other flag changes
        # the spec too (kept as `edits`, in the spec inspect reports)
        words, edits = args[2:-1], []
        while words:
            word = words.pop(0)
            if word not in ("--force", "--detach", "-d", "--quiet", "-q"):
                edits.append(word if "=" in word or not words else f"{word}={words.pop(0)}")
        for name in args[-1:]:
            svc = state["services"][name]
            state["clock"] += 1
            started = f"t{state['clock']}"
            svc["force"] = svc.get("force", 0) + 1
            svc["edits"] = svc.get("edits", []) + edits
            svc["version"] += 1
            image, replicas = svc["image"], svc["replicas"]
            mixed = tasks(svc, image, True, replicas) + tasks(svc, image, False, 1)
            svc["script"] = [{"update": {"State": "completed", "StartedAt": started},
                              "tasks": tasks(svc, image, True, replicas)}]
            svc["update"], svc["tasks"] = {"State": "updating", "StartedAt": started}, mixed
        state.setdefault("restarts", []).extend(a for a in args[2:] if not a.startswith("-"))
        save(state)
        return 0
    if args[:2] == ["service", "update"] and "--constraint-add" in args:
        svc = state["services"][args[-1]]
        svc["constraints"] = [*svc.get("constraints", []), flag(args, "--constraint-add")]
        svc["version"] += 1
        save(state)
        return 0
    if args[:2] == ["service", "update"]:
        label = flag(args, "--label-add") or ""
        state["services"][args[-1]]["label"] = label.split("=", 1)[1]
        save(state)
        return 0
    if args[:2] == ["service", "scale"]:
        for pair in args[3:]:
            name, _, count = pair.partition("=")
            svc = state["services"][name]
            svc["replicas"], svc["version"] = int(count), svc["version"] + 1
            svc["script"] = [{"update": svc["update"],
                              "tasks": tasks(svc, svc["image"], True, int(count))}]
        save(state)
        return 0
    if args[:2] == ["image", "ls"]:
        repos = [f.split("=", 1)[1] for f in filters(args) if f.startswith("reference=")]
        for digest, repo in sorted(state.get("images", {}).items()):
            if repo in repos:
                echo(f"image {repo} {digest} id-{digest[7:19]}")
        return 0
    if args[:2] == ["image", "rm"]:
        wanted = args[-1]
        used = {svc["image"].split("@")[-1] for svc in state["services"].values()}
        for digest in list(state.get("images", {})):
            if f"id-{digest[7:19]}" == wanted:
                if digest in used:
                    echo(f"Error: image {wanted} is in use", file=ERR)
                    return 1
                del state["images"][digest]
        save(state)
        return 0
    if args[0] == "ps" and "--format" in args and not filters(args):  # containers by id
        for name, svc in sorted(state["services"].items()):
            for slot, _task in enumerate(svc["tasks"], 1):
                echo(f"fake{abs(hash(name)) % 10**6:06d}{slot} {name}.{slot}.fake")
        return 0
    if args[0] == "stats":  # no cgroup files on a scripted host: docker stats answers
        for name, svc in sorted(state["services"].items()):
            for slot, _task in enumerate(svc["tasks"], 1):
                echo(json.dumps({"Name": f"{name}.{slot}.{'x' * 25}",
                                  "MemUsage": "10MiB / 512MiB", "CPUPerc": "1.5%"}))
        return 0
    if args[0] == "ps":
        labels = [f for f in filters(args) if f.startswith("label=")]
        if any(f.startswith("label=vedfin.migrate=") for f in labels):
            env = next(f for f in labels if f.startswith("label=vedfin.migrate=")).split("=")[2]
            for name, labels_of in state.get("containers", {}).items():
                if labels_of.get("vedfin.migrate") == env:
                    echo(name)
            return 0
        if any(".service.name=" in f for f in labels):  # postgres: a restart changes its id
            if state.get("postgres_down"):
                state["postgres_down"] -= 1
                save(state)
                return 0
            echo(state.get("postgres_container", "pg0"))
            return 0
        for name, svc in sorted(state["services"].items()):
            for task in svc["tasks"]:
                health = "(healthy)" if task["ready"] else "(health: starting)"
                echo(f"{name} {task['image']} running Up 3 seconds {health}")
        return 0
    if args[0] == "exec":  # the postgres container: a database check and pg_dump
        words = [a for a in args[1:] if a != "-i"]
        if words[0] != state.get("postgres_container", words[0]) and \
                words[0] not in state.get("containers", {}):  # one that restarted
            echo(f"Error response from daemon: No such container: {words[0]}", file=ERR)
            return 1
        program = words[1]
        if program == "sh" and "df -kP" in words[-1]:  # the room of postgres's data
            echo("Filesystem 1024-blocks Used Available Capacity Mounted on")
            echo(f"overlay 104857600 1 {state.get('pg_free_kib', 50 * 2**20)} 1% /")
            return 0
        if program == "pg_dump":
            if state.get("dump_fails"):
                echo("pg_dump: error: connection to server failed", file=ERR)
                return 1
            OUT.write(f"PGDMP fake dump of {flag(words, '-d')}\n")
            return 0
        if program == "pg_restore":  # into the new database: the fake dump holds no table
            STDIN.read()
            if state.get("restore_fails"):
                echo("pg_restore: error: could not execute query", file=ERR)
                return 1
            return 0
        if program == "psql" and "-c" in words and "pg_database" in (flag(words, "-c") or ""):
            asked = re.search(r"datname = '((?:[^']|'')*)'", flag(words, "-c") or "")
            name = asked.group(1).replace("''", "'") if asked else ""
            echo("yes" if database_exists(state, name) else "")
            return 0
        if program == "psql":  # SQL on stdin: kept databases, restores, swaps, DROPs
            sql = STDIN.read()
            if "SELECT 'DB '" in sql:  # the inventory: each database with vector, a distance
                for db in re.findall(r"\\connect (\S+)", sql):
                    echo(f"DB {db} vector,pg_stat_statements")
                    if "VEC " in sql and not state.get("no_vector"):
                        echo(f"VEC {db} 1")
                return 0
            found = re.search(r"datname ~ '(\^[^']*_drill_[^']*)'", sql)
            if found:  # a drill's leftovers: the databases named as its scratch ones
                spared = set(re.findall(r"datname <> '([^']*)'", sql))
                echo("\n".join(n for n in state.get("db_present", [])
                                if re.search(found.group(1), n) and n not in spared))
                return 0
            state.setdefault("sql", []).append(sql)
            code = run_sql(state, sql)
            save(state)
            if "datname ~" in sql:
                echo("\n".join(state.get("kept_databases", [])))
            return code
    if args[0] == "rm":
        for name in args[2:]:
            state.get("containers", {}).pop(name, None)
        save(state)
        return 0
    if args[0] == "inspect" and "-f" in args:  # the image of a running container
        echo("sha256:" + "0" * 64)
        return 0
    if args[0] == "run" and flag(args, "--entrypoint") == "pg_restore":  # counting a dump
        STDIN.read()
        return 0
    if args[0] == "run":
        name = flag(args, "--name") or "x"
        label = flag(args, "--label") or "="
        image = args[args.index("-c") - 1]
        state.setdefault("containers", {})[name] = dict([label.split("=", 1)])
        save(state)
        if "migrate status" in args[-1]:  # Prisma's status: state["pending"] makes it exit 1
            state["containers"].pop(name)
            save(state)
            if state.get("pending"):
                echo("Following migration have not yet been applied: 002_vectors")
                return 1
            echo("Database schema is up to date!")
            return 0
        echo("Applying migration [/app/prisma/migrations/001_init]")
        if "badmigration" in image:
            echo("Error: P3009 migrate found failed migrations", file=ERR)
            state["containers"].pop(name)
            save(state)
            return 1
        if not state.get("hang_migrations"):
            state["containers"].pop(name)
            save(state)
        return 0
    echo(f"fake docker: unsupported: {' '.join(args)}", file=ERR)
    return 2


def answer(words: list[str], stdin: str) -> tuple[str, str, str]:
    """One call, in the dispatcher's thread (tests/fake/dispatch.py): its engine file first."""
    global ENGINE, OUT, ERR, STDIN
    ENGINE, *args = words
    OUT, ERR, STDIN = io.StringIO(), io.StringIO(), io.StringIO(stdin)
    code = main(args)
    return str(code), OUT.getvalue(), ERR.getvalue()


#: a call reads its stdin only as the real one would: `-i` or `--password-stdin`
READS_STDIN = """for a; do
  case $a in -i|--password-stdin) cat > "$c.stdin"; break ;; esac
done"""


def install(path: Path) -> None:
    """`docker` at `path`: this engine, answering from "$FAKE_ENGINE"."""
    path.write_text(dispatch.dispatcher().client("docker", answer, name="fake docker",
                                                 head='"$FAKE_ENGINE"', stdin=READS_STDIN))
    path.chmod(0o755)
