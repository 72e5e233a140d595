"""A scripted Debian 12 for `host.prepare`'s fault tests: the system programs its probes and
applies call, on the fake host's PATH (tests/fake/host.py), each answering from a JSON state
file beside this host's bin folder, so a run's second pass sees what the first one did.

Files the tool writes itself (the swap file, fstab, sysctl.d, sudoers.d, the unit drop-in,
authorized_keys, the base folder) are real files under the test's folder (`Paths.under`);
what only root could do on a real machine (owners, users, packages, units, swap, ufw, the
engine) is state here.

Each program on the PATH hands its arguments to one dispatcher in the test's own process
(tests/fake/dispatch.py): tests/host call these programs about 2,800 times, and a Python
interpreter started for each call (30-50 ms) was most of their time.

Faults a test sets in the state: `apt_half` (packages whose install dpkg leaves unpacked and
fails), `swapon_refused` (a container), `sysctl_refused` (a read-only /proc/sys).
"""

from __future__ import annotations

import io
import json
import os
import threading
import traceback
from pathlib import Path
from typing import Any

from tests.fake import dispatch
from vedfin_ops.remote.quoting import sh

STATE: Path  # the JSON state; its `bin` and `fs` name the other two
BIN: Path  # the fake host's bin folder: a program appears there with its package
FS: Path  # the test's stand-in for the host's disk
ENV: dict[str, str] = {}  # the calling program's FAKE_SUDO and DEBIAN_FRONTEND
OUT = io.StringIO()  # what the program prints
ERR = io.StringIO()
EXEC = -1  # sudo's answer: the program runs its command itself (as root)
LOCK = threading.RLock()  # one call at a time, and a test's own edits between them


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(STATE.read_text())
    return data


def save(state: dict[str, Any], before: str = "") -> None:
    """Written when it changed (`before`: the text it was read from)."""
    text = json.dumps(state, sort_keys=True)
    if text != before:
        tmp = STATE.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, STATE)


def say(text: object) -> None:
    OUT.write(f"{text}\n")


def err(text: str, code: int = 1) -> int:
    ERR.write(text + "\n")
    return code


def log(state: dict[str, Any], event: str) -> None:
    state.setdefault("log", []).append(event)


def wrapper(name: str) -> None:
    """A program appears on the PATH when its package is installed."""
    install(BIN, STATE, name)


#: after the answer: a `sudo` allowed runs its command itself, its leading -n dropped, as root
#: (FAKE_SUDO)
SUDO_EXEC = """if [ "$rc" = exec ]; then
  while [ "$1" = -n ]; do shift; done
  FAKE_SUDO=1 exec "$@"
fi"""


def install(folder: Path, state: Path, name: str) -> None:
    """`name` on the PATH: this module, answering as that program (tests/fake/dispatch.py)."""
    path = folder / name
    path.write_text(dispatch.dispatcher().client(
        "debian", answer, name=f"fake {name}",
        head=f'{sh(str(state))} {sh(name)} "${{FAKE_SUDO-}}" "${{DEBIAN_FRONTEND-}}"',
        after=SUDO_EXEC))
    path.chmod(0o755)


def answer(words: list[str], stdin: str) -> tuple[str, str, str]:
    """One call, answered in the dispatcher's thread (its stdin is never read)."""
    with LOCK:
        code = run(words)
        return "exec" if code == EXEC else str(code), OUT.getvalue(), ERR.getvalue()


def run(words: list[str]) -> int:
    """One program's call: its state file, name, FAKE_SUDO, DEBIAN_FRONTEND, arguments."""
    global STATE, BIN, FS, OUT, ERR
    state_path, name, sudo, frontend, *args = words
    OUT, ERR = io.StringIO(), io.StringIO()
    ENV.clear()
    ENV.update({k: v for k, v in (("FAKE_SUDO", sudo), ("DEBIAN_FRONTEND", frontend)) if v})
    try:
        STATE = Path(state_path)
        before = STATE.read_text()
        state = json.loads(before)
        BIN, FS = Path(state["bin"]), Path(state["fs"])
        code = COMMANDS[name](state, args)
        save(state, before)
    except Exception:  # a bug in this fake: the test fails on it, never hangs
        return err(f"fake debian {name}: {traceback.format_exc()}", 70)
    return code


def applied(state_path: Path, packages: tuple[str, ...]) -> None:
    """As if the distribution's packages were installed already (their units running)."""
    global STATE, BIN, FS
    with LOCK:
        STATE = state_path
        state = load()
        BIN, FS = Path(state["bin"]), Path(state["fs"])
        for package in packages:
            configured(state, package)
        save(state)


# --- users and groups ----------------------------------------------------------------------

def add_group(state: dict[str, Any], name: str) -> None:
    groups = state.setdefault("groups", {})
    if name not in groups:
        groups[name] = 1000 + len(groups)


def add_user(state: dict[str, Any], name: str, home: str, shadow: str = "!") -> None:
    add_group(state, name)
    state["users"][name] = {"home": home, "groups": [name], "shadow": shadow}


def groups_of(state: dict[str, Any], user: str) -> list[str]:
    return list(state["users"][user]["groups"])


def cmd_id(state: dict[str, Any], args: list[str]) -> int:
    if args == ["-u"]:
        say(0 if ENV.get("FAKE_SUDO") else state.get("uid", 0))
    elif args == ["-un"]:
        say("root" if ENV.get("FAKE_SUDO") else state.get("user", "root"))
    elif args[:1] in (["-nG"], ["-gn"]) and len(args) == 2:
        if args[1] not in state["users"]:
            return err(f"id: '{args[1]}': no such user")
        found = groups_of(state, args[1])
        say(" ".join(found) if args[0] == "-nG" else found[0])
    else:
        return err(f"fake id: {args}", 2)
    return 0


def cmd_getent(state: dict[str, Any], args: list[str]) -> int:
    db, name = args
    if db == "passwd" and name in state["users"]:
        user = state["users"][name]
        say(f"{name}:x:1000:1000::{user['home']}:/bin/bash")
    elif db == "shadow" and name in state["users"]:
        say(f"{name}:{state['users'][name]['shadow']}:19000:0:99999:7:::")
    elif db == "group" and name in state.get("groups", {}):
        say(f"{name}:x:{state['groups'][name]}:")
    else:
        return 2
    return 0


def cmd_useradd(state: dict[str, Any], args: list[str]) -> int:
    name = args[-1]
    if name in state["users"]:
        return err(f"useradd: user '{name}' already exists", 9)
    home = FS / "home" / name
    home.mkdir(parents=True, exist_ok=True)
    add_user(state, name, str(home))
    state.setdefault("owners", {})[str(home)] = f"{name}:{name}"
    log(state, f"useradd {name}")
    return 0


def cmd_usermod(state: dict[str, Any], args: list[str]) -> int:
    name = args[-1]
    if name not in state["users"]:
        return err(f"usermod: user '{name}' does not exist", 6)
    if args[0] == "-aG":
        if args[1] not in state.get("groups", {}):
            return err(f"usermod: group '{args[1]}' does not exist", 6)
        if args[1] not in state["users"][name]["groups"]:
            state["users"][name]["groups"].append(args[1])
    elif args[0] == "-p":
        state["users"][name]["shadow"] = args[1]
    log(state, f"usermod {' '.join(args)}")
    return 0


def cmd_chown(state: dict[str, Any], args: list[str]) -> int:
    owner, paths = args[0], args[1:]
    user, _, group = owner.partition(":")
    if user not in state["users"]:
        return err(f"chown: invalid user: '{owner}'")
    group = group or groups_of(state, user)[0]
    for path in paths:
        if not Path(path).exists():
            return err(f"chown: cannot access '{path}': No such file or directory")
        state.setdefault("owners", {})[path] = f"{user}:{group}"
    return 0


def cmd_chgrp(state: dict[str, Any], args: list[str]) -> int:
    group, path = args
    owners = state.setdefault("owners", {})
    user = owners.get(path, "root:root").split(":")[0]
    owners[path] = f"{user}:{group}"
    return 0


def cmd_stat(state: dict[str, Any], args: list[str]) -> int:
    fmt, path = args[1], args[2]
    try:
        info = os.stat(path)
    except OSError:
        return err(f"stat: cannot statx '{path}': No such file or directory")
    user, _, group = state.get("owners", {}).get(path, "root:root").partition(":")
    say(fmt.replace("%U", user).replace("%G", group).replace("%a", f"{info.st_mode & 0o7777:o}")
          .replace("%s", str(info.st_size)))
    return 0


# --- packages and units --------------------------------------------------------------------

UNITS = {"docker.io": "docker", "netdata": "netdata", "cron": "cron"}


def configured(state: dict[str, Any], package: str) -> None:
    """What a package's postinst does (Debian enables and starts its services)."""
    state["packages"][package] = "ii "
    if package == "docker.io":
        wrapper("docker")
        add_group(state, "docker")
    if package == "ufw":
        wrapper("ufw")
    if package == "netdata":
        add_user(state, "netdata", "/var/lib/netdata")
        (Path(state["netdata_config"]) / "health.d").mkdir(parents=True, exist_ok=True)
    if package in UNITS:
        state["services"][UNITS[package]] = {"enabled": True, "active": False}
        start(state, UNITS[package])


def start(state: dict[str, Any], unit: str) -> None:
    service = state["services"][unit]
    service["active"] = True
    if unit == "netdata":  # what the new process carries
        state["netdata_pid"] = state.get("netdata_pid", 4000) + 1
        state["netdata_shared_tmp"] = bool(state.get("dropin_loaded"))
        gids = [state["groups"][g] for g in groups_of(state, "netdata")]
        status = FS / "proc" / str(state["netdata_pid"]) / "status"
        status.parent.mkdir(parents=True, exist_ok=True)
        status.write_text(f"Name:\tnetdata\nGroups:\t{' '.join(map(str, gids))} \n")


def cmd_apt_get(state: dict[str, Any], args: list[str]) -> int:
    if "update" in args:
        log(state, "apt-get update")
        return 0
    if "install" not in args:
        return err(f"fake apt-get: {args}", 2)
    if any(status.startswith("iU") for status in state["packages"].values()):
        return err("E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to "
                   "correct the problem.", 100)
    wanted = args[args.index("install") + 1:]
    wanted = [w for w in wanted if not w.startswith("-")]
    log(state, f"apt-get install {' '.join(wanted)} "
               f"[{ENV.get('DEBIAN_FRONTEND', '')}]")
    for package in wanted:
        if package not in state["repo"]:
            return err(f"E: Unable to locate package {package}", 100)
        if package in state.get("apt_half", []):
            state["apt_half"].remove(package)
            state["packages"][package] = "iU "
            save(state)
            return err("E: Sub-process /usr/bin/dpkg returned an error code (1)", 100)
        configured(state, package)
    return 0


def cmd_dpkg_query(state: dict[str, Any], args: list[str]) -> int:
    fmt = next(a for a in args if a.startswith("-f="))[3:]
    names = [a for a in args[1:] if not a.startswith("-")]
    missing = 0
    for name in names:
        if name in state["packages"]:
            OUT.write(fmt.replace("${Package}", name)
                             .replace("${db:Status-Abbrev}", state["packages"][name])
                             .replace("\\n", "\n"))
        else:
            missing = 1
    return missing


def cmd_dpkg(state: dict[str, Any], args: list[str]) -> int:
    if args == ["-C"]:
        half = [n for n, s in state["packages"].items() if s.startswith("iU")]
        if half:
            say("The following packages have been unpacked but not yet configured:")
            say("\n".join(half))
        return 0
    if args == ["--configure", "-a"]:
        for name, status in list(state["packages"].items()):
            if status.startswith("iU"):
                configured(state, name)
        log(state, "dpkg --configure -a")
        return 0
    if args[0] == "-S":
        name = Path(args[1]).name
        if name in ("docker", "dockerd") and state["packages"].get("docker.io") == "ii ":
            say(f"docker.io: {args[1]}")
            return 0
        return 1
    return err(f"fake dpkg: {args}", 2)


def cmd_systemctl(state: dict[str, Any], args: list[str]) -> int:
    services = state["services"]
    if args[0] in ("is-enabled", "is-active"):
        unit = services.get(args[1])
        if unit is None:
            return 1
        on = unit["enabled"] if args[0] == "is-enabled" else unit["active"]
        say(("enabled" if on else "disabled") if args[0] == "is-enabled" else
              ("active" if on else "inactive"))
        return 0 if on else 1
    if args[:2] == ["enable", "--now"]:
        for name in args[2:]:
            if name not in services:
                return err(f"Failed to enable unit: Unit file {name}.service does not exist.")
        for name in args[2:]:
            services[name]["enabled"] = True
            if not services[name]["active"]:
                start(state, name)
        return 0
    if args[0] == "restart":
        start(state, args[1])
        log(state, f"restart {args[1]}")
        return 0
    if args[0] == "daemon-reload":
        dropin = Path(state["dropin"])
        text = dropin.read_text() if dropin.is_file() else ""
        state["dropin_loaded"] = "PrivateTmp=false" in text and "ReadWritePaths=/tmp" in text
        return 0
    if args[:2] == ["show", "-p"]:
        unit = services.get(args[-1])
        say(state.get("netdata_pid", 0) if unit and unit["active"] else 0)
        return 0
    return err(f"fake systemctl: {args}", 2)


# --- swap, sysctl, the container -----------------------------------------------------------

def cmd_swapon(state: dict[str, Any], args: list[str]) -> int:
    active = state.setdefault("swap", {})
    if args and args[0].startswith("--show"):
        for name, size in active.items():
            say(f"{name} {size}" if "SIZE" in args[0] else name)
        return 0
    if state.get("swapon_refused"):
        return err(f"swapon: {args[0]}: swapon failed: Operation not permitted", 255)
    active[args[0]] = os.stat(args[0]).st_size
    return 0


def cmd_swapoff(state: dict[str, Any], args: list[str]) -> int:
    state.setdefault("swap", {}).pop(args[0], None)
    return 0


def cmd_fallocate(state: dict[str, Any], args: list[str]) -> int:
    size = int(args[1].rstrip("M")) * 2**20
    with open(args[2], "wb") as fh:
        fh.truncate(size)
    return 0


def cmd_sysctl(state: dict[str, Any], args: list[str]) -> int:
    if state.get("sysctl_refused"):
        return err('sysctl: permission denied on key "vm.swappiness"', 255)
    value = args[1].split("=", 1)[1]
    path = FS / "proc" / "sys" / "vm" / "swappiness"
    path.write_text(value + "\n")
    return 0


def cmd_systemd_detect_virt(state: dict[str, Any], args: list[str]) -> int:
    say(state.get("virt", "none"))
    return 0 if state.get("virt", "none") != "none" else 1


# --- ufw -----------------------------------------------------------------------------------

def cmd_ufw(state: dict[str, Any], args: list[str]) -> int:
    ufw = state.setdefault("ufw", {"active": False, "default": "deny", "rules": []})
    rules: list[list[str]] = ufw["rules"]
    args = [a for a in args if a != "--force"]
    if args == ["show", "added"]:
        say("Added user rules (see 'ufw status' for running firewall):")
        say("\n".join("ufw " + " ".join(r) for r in rules) or "(None)")
        return 0
    if args[:1] == ["status"]:
        if not ufw["active"]:
            say("Status: inactive")
            return 0
        say(f"Status: active\nLogging: on (low)\nDefault: {ufw['default']} (incoming), allow "
              "(outgoing), disabled (routed)\nNew profiles: skip\n\nTo Action From\n-- ------ ----")
        for action, *spec in rules:
            say(f"{' '.join(spec)} {action.upper()} IN Anywhere")
        return 0
    if args[0] in ("allow", "deny", "limit", "reject"):
        if args not in rules:
            rules.append(args)
        log(state, "ufw " + " ".join(args))
        return 0
    if args[0] == "delete":
        if args[1:] in rules:
            rules.remove(args[1:])
        log(state, "ufw " + " ".join(args))
        return 0
    if args[:2] == ["default", "deny"]:
        ufw["default"] = "deny"
        log(state, "ufw default deny")
        return 0
    if args == ["enable"]:
        ufw["active"] = True
        log(state, "ufw enable")
        return 0
    return err(f"fake ufw: {args}", 2)


# --- the engine, sudo, netdata -------------------------------------------------------------

def cmd_docker(state: dict[str, Any], args: list[str]) -> int:
    if not state["services"].get("docker", {}).get("active"):
        return err("Cannot connect to the Docker daemon", 1)
    swarm = state.setdefault("swarm", {"state": "inactive", "addr": ""})
    containers = state.setdefault("containers", {})
    if args[0] == "info":
        manager = "true" if swarm["state"] == "active" else "false"
        say(f"{swarm['state']} {manager} {swarm['addr']}")
    elif args[:2] == ["swarm", "init"]:
        swarm.update(state="active", addr=args[3] if "--advertise-addr" in args else "10.0.0.2")
        log(state, "swarm init")
    elif args[:2] == ["container", "inspect"]:
        found = containers.get(args[-1])
        if found is None:
            return err(f"Error: No such container: {args[-1]}")
        if "--format" in args:
            say(f"{'true' if found['running'] else 'false'} {found['image']} "
                  f"3001/tcp={found['bind'].rsplit(':', 1)[0]} ")
    elif args[:2] == ["volume", "create"]:
        pass
    elif args[0] == "run":
        name = args[args.index("--name") + 1]
        containers[name] = {"running": True, "image": args[-1],
                            "bind": args[args.index("-p") + 1]}
        log(state, f"docker run {name}")
    elif args[0] == "start":
        containers[args[-1]]["running"] = True
    elif args[:2] == ["rm", "-f"]:
        containers.pop(args[-1], None)
    else:
        return err(f"fake docker: {args}", 2)
    return 0


def sudoers_allows(user: str, command: list[str]) -> bool:
    path = Path(load()["sudoers"])
    return path.is_file() and f"{user} ALL=(root) NOPASSWD: {' '.join(command)}" in \
        path.read_text()


def cmd_sudo(state: dict[str, Any], args: list[str]) -> int:
    if "-l" in args:
        user = args[args.index("-U") + 1]
        command = args[args.index("--") + 1:]
        return 0 if sudoers_allows(user, command) else 1
    if not state.get("sudo_ok"):
        return err("sudo: a password is required")
    return EXEC  # the program drops its -n and runs the rest, as root (FAKE_SUDO)


def cmd_visudo(state: dict[str, Any], args: list[str]) -> int:
    text = Path(args[-1]).read_text()
    ok = text.endswith("\n") and "NOPASSWD:" in text and len(text.splitlines()) == 1
    return 0 if ok else err(f"{args[-1]}: syntax error", 1)


def reaches_netdata(state: dict[str, Any], user: str) -> bool:
    running = state["services"].get("netdata", {}).get("active")
    return bool(running and state.get("netdata_shared_tmp")) and (
        user == "root" or "netdata" in groups_of(state, user))


def cmd_runuser(state: dict[str, Any], args: list[str]) -> int:
    user = args[args.index("-u") + 1]
    command = args[args.index("--") + 1:]
    if "netdatacli" in command:
        return 0 if reaches_netdata(state, user) else 1
    return err(f"fake runuser: {command}", 2)


def cmd_netdatacli(state: dict[str, Any], args: list[str]) -> int:
    if args == ["ping"]:
        return 0 if reaches_netdata(state, "root") else 1
    with open(FS.parent / "netdata-reloads", "a") as fh:
        fh.write(" ".join(args) + "\n")
    return 0


def cmd_ok(state: dict[str, Any], args: list[str]) -> int:
    return 0


COMMANDS = {"id": cmd_id, "getent": cmd_getent, "useradd": cmd_useradd,
            "usermod": cmd_usermod, "chown": cmd_chown, "chgrp": cmd_chgrp, "stat": cmd_stat,
            "apt-get": cmd_apt_get, "dpkg-query": cmd_dpkg_query, "dpkg": cmd_dpkg,
            "systemctl": cmd_systemctl, "swapon": cmd_swapon, "swapoff": cmd_swapoff,
            "mkswap": cmd_ok, "fallocate": cmd_fallocate, "sysctl": cmd_sysctl,
            "systemd-detect-virt": cmd_systemd_detect_virt, "ufw": cmd_ufw,
            "docker": cmd_docker, "sudo": cmd_sudo, "visudo": cmd_visudo,
            "runuser": cmd_runuser, "netdatacli": cmd_netdatacli}
#: on the PATH from the start (a bare Debian 12 has them); ufw and docker come with packages
BASE = ("id", "getent", "useradd", "usermod", "chown", "chgrp", "stat", "apt-get",
        "dpkg-query", "dpkg", "systemctl", "swapon", "swapoff", "mkswap", "fallocate", "sysctl",
        "systemd-detect-virt", "sudo", "visudo", "runuser", "netdatacli")
