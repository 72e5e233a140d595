"""Each step's judgement of its probe's facts (pure: unit-tested without a host).

The firewall's is in `firewall.py` (ufw's rules need a parser of their own) and Uptime Kuma's
account is asked of Kuma itself (`kuma.py`).
"""

from __future__ import annotations

from vedfin_ops.host.facts import (
    Facts,
    Verdict,
    change,
    fail,
    installed,
    missing_packages,
    ok,
    package_changes,
    package_states,
    present,
    refuse,
    service_changes,
    services,
    skip,
)
from vedfin_ops.remote.commands.host import KUMA_INSIDE, OTHER_DOCKERS, SWAPPINESS

#: (ID, VERSION_ID) of the systems host.prepare knows: their packages are the ones it names
SUPPORTED = {("debian", "12"): "Debian 12", ("ubuntu", "24.04"): "Ubuntu 24.04"}


def _unquote(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" \
        else value


def os_release(facts: Facts) -> dict[str, str]:
    out = {}
    for line in facts.get("os", []):
        key, _, value = line.partition("=")
        out[key] = _unquote(value)
    return out


def judge_os(facts: Facts) -> Verdict:
    found = os_release(facts)
    key = (found.get("ID", "").lower(), found.get("VERSION_ID", ""))
    if key in SUPPORTED:
        return ok(found.get("PRETTY_NAME") or SUPPORTED[key])
    said = found.get("PRETTY_NAME") or " ".join(k for k in key if k) or "an unknown system " \
        "(no /etc/os-release)"
    return refuse(f"{said} is not Debian 12 or Ubuntu 24.04, the systems whose packages "
                  f"host.prepare knows")


def needs_sudo(facts: Facts) -> bool:
    """False for root; True for a passwordless sudoer; a refusal for anyone else."""
    if facts.one("uid") == "0":
        return False
    if facts.one("sudo") == "yes":
        return True
    from vedfin_ops.errors import CheckFailed

    raise CheckFailed(f"host.prepare: {facts.one('user') or 'this user'} is neither root nor "
                      f"allowed passwordless sudo (`sudo -n true` failed): connect as root "
                      f"(fab -H root@HOST host.prepare) or as a sudoer without a password")


def ssh_port(facts: Facts) -> int | None:
    """The port this connection came in on, as the server sees it ($SSH_CONNECTION's last
    field): the one ufw must keep open, whatever forwarding is between."""
    words = facts.one("ssh").split()
    return int(words[3]) if len(words) == 4 and words[3].isdigit() else None


def ssh_client(facts: Facts) -> str | None:
    """The address this connection comes from, as the server sees it ($SSH_CONNECTION's
    first field)."""
    words = facts.one("ssh").split()
    return words[0] if len(words) == 4 else None


#: where docker.io puts the two programs (`dpkg -L docker.io`)
DOCKER_IO_PATHS = {"docker": "/usr/bin/docker", "dockerd": "/usr/sbin/dockerd"}


def judge_docker(facts: Facts) -> Verdict:
    states = package_states(facts)
    others = [p for p in OTHER_DOCKERS if present(states, p)]
    if others:
        return refuse(f"another Docker is installed ({', '.join(others)}): host.prepare "
                      f"installs the distribution's docker.io and never beside another; remove "
                      f"it first, or prepare this host by hand")
    if facts.has("snap"):
        return refuse("Docker is installed as a snap (snap list docker): host.prepare installs "
                      "the distribution's docker.io and never beside another; snap remove "
                      "docker first, or prepare this host by hand")
    unpacking = present(states, "docker.io") and not installed(states, "docker.io")
    for value in facts.get("bin", []):
        words = value.split()
        # a docker.io that dpkg is still unpacking owns nothing yet: not another Docker, but
        # only at docker.io's own paths (a static docker in /usr/local/bin is another one)
        if len(words) == 3 and words[2] != "docker.io" and not (
                words[2] == "-" and unpacking and DOCKER_IO_PATHS.get(words[0]) == words[1]):
            owner = "no package" if words[2] == "-" else f"package {words[2]}"
            return refuse(f"{words[1]} is from {owner}, not docker.io: another Docker is "
                          f"installed; remove it first, or prepare this host by hand")
    changes = package_changes(states, missing_packages(states, ("docker.io",)))
    changes += service_changes(facts, "docker")
    if changes:
        return change(changes, missing_packages(states, ("docker.io",)))
    return ok("docker.io, enabled and running")


def judge_swarm(facts: Facts, want: str | None) -> Verdict:
    """`want`: the address to advertise (None: the engine's own choice)."""
    words = facts.one("swarm", "none").split()
    advertised = f" advertising {want}" if want else ""
    state = words[0] if words else "none"
    if state in ("none", "inactive"):
        return change([f"start a swarm{advertised}"], address=want)
    if state != "active":
        return fail(f"the engine's swarm is {state}: left as it is (docker info says why)")
    manager = len(words) > 1 and words[1] == "true"
    address = words[2] if len(words) > 2 else ""
    if not manager:
        return fail(f"this engine is a worker of another swarm (at {address or '?'}): left as "
                    f"it is; host.prepare makes a swarm's manager")
    if want and address != want:
        return fail(f"the engine is in a swarm advertising {address}, not {want} (the "
                    f"config's address): left as it is (leaving a swarm drops its services): "
                    f"fix the config's address, or leave that swarm by hand and run again")
    return ok(f"a swarm manager advertising {address}")


def _owned(value: str, user: str, mode: str | None = None) -> bool:
    words = value.split()
    return bool(words) and words[0] == user and (mode is None or words[1:2] == [mode])


def judge_user(facts: Facts, user: str, base: str, audit: str) -> Verdict:
    changes = []
    if facts.has("nouser"):
        changes.append(f"create user {user}")
    groups = facts.one("groups").split()
    if user != "root":
        if "docker" not in groups:
            changes.append(f"add {user} to the docker group")
        if facts.has("locked"):
            changes.append(f"unlock {user} for its key (password field `*`: no password "
                           f"matches it)")
    if not _owned(facts.one("sshdir"), user, "700"):
        changes.append("its ~/.ssh folder (0700, its own)")
    if not facts.has("key"):
        changes.append("authorize the operator's key (~/.ssh/authorized_keys)")
    if not _owned(facts.one("keys"), user, "600"):
        changes.append("~/.ssh/authorized_keys 0600, its own")
    if not facts.has("base"):
        changes.append(f"create {base} (remote.baseDir), its own")
    elif not _owned(facts.one("base"), user):
        changes.append(f"give {base} (remote.baseDir) to {user}")
    if facts.has("audit") and not _owned(facts.one("audit"), user):
        changes.append(f"give {audit} to {user}")
    if changes:
        return change(changes)
    docker = ", in the docker group" if user != "root" else ""
    return ok(f"{user}{docker}, the key authorized, owns {base}")


def judge_swap(facts: Facts, mib: int, path: str, fstab: str = "/etc/fstab") -> Verdict:
    if mib <= 0:
        return skip("vps.swap is 0")
    active: dict[str, int] = {}
    for value in facts.get("active", []):
        name, _, size = value.partition(" ")
        if size.strip().isdigit():
            active[name] = int(size)
    other = sum(size for name, size in active.items() if name != path) // 2**20
    changes: list[str] = []
    make_file = other + 1 < mib  # a provider's swap partition may be enough already
    if make_file:
        words = facts.one("file").split()
        want = mib * 2**20
        if not words:
            changes.append(f"create {path} of {mib} MiB (0600, mkswap)")
        elif words[0] != str(want):
            changes.append(f"remake {path}: {int(words[0]) // 2**20} MiB, vps.swap says {mib}")
        elif words[1:2] != ["600"]:
            changes.append(f"{path} 0600 (now {words[1] if len(words) > 1 else '?'})")
        if path not in active:
            changes.append(f"swapon {path}")
        if not facts.has("fstab"):
            changes.append(f"{path} in {fstab}")
    now = facts.one("swappiness")
    if now != str(SWAPPINESS) or not facts.has("sysctl"):
        changes.append(f"vm.swappiness={SWAPPINESS} (now {now or '?'}), kept in sysctl.d")
    if changes:
        return change(changes, make_file=make_file, container=facts.one("virt", "none"))
    what = f"{path} of {mib} MiB active" if make_file else \
        f"{other} MiB of swap already (not {path})"
    return ok(f"{what}, vm.swappiness={SWAPPINESS}")


def judge_monitoring(facts: Facts, root: str, user: str, email: str | None = None) -> Verdict:
    """`email`: alerts.email. Without a `sendmail` on the host Netdata drops its alarm mail
    without a word: a warning, not a change (the mail relay is the operator's to set up)."""
    states = package_states(facts)
    warning = [] if not email or facts.has("sendmail") else [
        f"warning: alerts.email is set but this host has no sendmail: Netdata drops its alarm "
        f"mail to {email}; set up a mail relay (msmtp-mta or postfix, configured for your "
        f"mail provider)"]
    # curl: the tool reads Netdata's API from the host itself (minimal images lack it)
    packages = missing_packages(states, ("netdata", "cron", "curl"))
    changes = package_changes(states, packages)
    for name in ("netdata", "cron"):
        changes += service_changes(facts, name)
    if not facts.has("dropin"):
        changes.append("netdatacli's socket outside Netdata's private /tmp (unit drop-in)")
    if "docker" not in facts.one("ndgroups").split():
        changes.append("netdata in the docker group (its restarts alarm reads the engine)")
    elif not facts.has("ndrun") and services(facts).get("netdata", ("", ""))[1] == "active":
        changes.append("restart netdata (it runs without the docker group)")
    if user != "root":
        group = facts.one("usergroup") or user
        if "netdata" not in facts.one("usergroups").split():
            changes.append(f"{user} in the netdata group (netdatacli's socket, the "
                           f"notification file's group)")
        for value in facts.get("dir", []):
            path, _, rest = value.partition(" ")
            words = rest.split()
            mode = words[1] if len(words) > 1 else ""
            if not (words[:1] == [group] and len(mode) >= 2 and mode[-2] in "2367"):
                changes.append(f"{path} writable by {user} (group {group})")
        changes += [f"{path.split()[0]} (writable by {user})"
                    for path in facts.get("nodir", [])]
    if not facts.has("cli") and not changes:
        changes.append(f"restart netdata ({user} cannot reach netdatacli)")
    if facts.one("cronallow") == "no":
        changes.append(f"{user} in /etc/cron.allow")
    if changes:
        return change([*changes, *warning], packages)
    return ok(f"Netdata and cron running; {user} writes {root} and reaches netdatacli", *warning)


def judge_sudoers(facts: Facts, path: str, expected_sha: str) -> Verdict:
    states = package_states(facts)
    packages = missing_packages(states, ("sudo",))
    changes = package_changes(states, packages)
    words = facts.one("file").split()
    if words != ["root", "440", expected_sha]:
        changes.append(f"write {path} (the one line, 0440, checked by visudo)" if not words
                       else f"rewrite {path} (the one line, 0440, checked by visudo)")
    if changes:
        return change(changes, packages)
    if not facts.has("allowed"):
        return fail(f"{path} holds the line, but sudo does not allow it (does /etc/sudoers "
                    f"include /etc/sudoers.d?)")
    return ok(f"{path}: the firewall check's line only")


def judge_kuma_container(facts: Facts, image: str, port: int) -> Verdict | None:
    """What the container needs; None when it runs as the config says."""
    words = facts.one("kuma", "none").split()
    where = f"127.0.0.1:{port}"
    if words[:1] == ["none"] or not words:
        return change([f"run Uptime Kuma ({image}) on {where}", "create its admin account"])
    running, found_image, bindings = words[0] == "true", words[1] if len(words) > 1 else "", \
        words[2:]
    want = f"{KUMA_INSIDE}/tcp={where}"
    if found_image != image or bindings != [want]:
        was = f"{found_image} on {', '.join(bindings) or 'no port'}"
        return change([f"make the uptime-kuma container again: {image} on {where} (it runs "
                       f"{was}; its data volume is kept)"], recreate=True)
    if not running:
        return change(["start the uptime-kuma container"])
    return None


def kuma_skip(port: int | None, checked: bool) -> Verdict:
    why = "monitoring.uptimeKuma is not set"
    if port is not None and checked:
        why += (f" (preflight still asks for Uptime Kuma on {port}: add monitoring.uptimeKuma, "
                f"or set monitoring.uptimeKumaPort: null)")
    return skip(why)

