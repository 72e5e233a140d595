"""`host.prepare`'s shell: each step's read-only probe and its idempotent apply.

A probe prints facts, one `key value...` line each (`host/facts.py` parses them, `host/
judge.py` decides): the shell reports, Python judges, so the plan logic is unit-tested
without a host. An apply converges one step and may run again at any point: every part
checks before it writes. Every command runs as root; a sudoer's goes through `sudo -n sh -c`
(`as_root`), never a password prompt. The paths of the host's own files are `Paths`', so a
test points them into a folder of its own.

An apply says why it failed on stderr as `fail: <why>` lines (`host/prepare.py` reads
them); ufw is enabled (and denies incoming by default) only by a command that finds the SSH
port's allow rule in place first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from vedfin_ops.remote.commands.files import all_of, audit_append
from vedfin_ops.remote.quoting import sh, sh_join

#: Docker's own packages and the other engines that ship a `docker`: host.prepare installs
#: the distribution's docker.io and refuses to put it beside any of these
OTHER_DOCKERS = ("docker-ce", "docker-ce-cli", "docker-ee", "containerd.io", "moby-engine",
                 "moby-cli", "docker-engine", "podman-docker")
KUMA_CONTAINER = "uptime-kuma"  # the name preflight knows as Dokploy's (published ports)
KUMA_VOLUME = "uptime-kuma-data"
KUMA_INSIDE = 3001  # the port Uptime Kuma listens on in its image
SWAPPINESS = 10
BACKSLASH_N = "\\n"  # dpkg-query's own escape for a line break, in its format
NETDATA_DROPIN = ("[Service]\n# netdatacli's socket (/tmp/netdata-ipc) where other users "
                  "reach it\nPrivateTmp=false\n# the unit makes / read-only: /tmp too, once "
                  "not private\nReadWritePaths=/tmp\n")


@dataclass(frozen=True)
class Paths:
    """The host's files host.prepare reads and writes (besides the config's own folders)."""

    os_release: str = "/etc/os-release"
    swapfile: str = "/swapfile"
    fstab: str = "/etc/fstab"
    sysctl: str = "/etc/sysctl.d/99-vedfin.conf"
    sudoers: str = "/etc/sudoers.d/vedfin-ops"
    netdata_dropin: str = "/etc/systemd/system/netdata.service.d/vedfin-ops.conf"
    cron_allow: str = "/etc/cron.allow"
    sendmail: str = "/usr/sbin/sendmail"  # where Netdata's alarm-notify.sh looks besides PATH
    proc: str = "/proc"

    @classmethod
    def under(cls, root: str) -> Paths:
        """Every path inside `root` (a test's stand-in for the host's disk)."""
        default = cls()
        return cls(**{f.name: root.rstrip("/") + getattr(default, f.name) for f in fields(cls)})


def as_root(command: str, sudo: bool) -> str:
    """`command` as root: as it is for root, through passwordless sudo for a sudoer."""
    return f"sudo -n sh -c {sh(command)}" if sudo else command


def lines(*commands: str) -> str:
    """A script: one command a line, each run whatever the one before did (a probe)."""
    return "\n".join(commands)


def facts(paths: Paths) -> str:
    """Who this is (root, or a sudoer without a password), the SSH connection as the server
    sees it (its last field: the port this connection came in on), and the OS. Run as the
    connecting user: sudo would drop SSH_CONNECTION."""
    return lines(
        'echo "uid $(id -u)"', 'echo "user $(id -un)"', 'echo "ssh ${SSH_CONNECTION:-}"',
        'if [ "$(id -u)" -ne 0 ]; then if sudo -n true 2>/dev/null; then echo "sudo yes"; '
        'else echo "sudo no"; fi; fi',
        f"grep -E '^(ID|VERSION_ID|PRETTY_NAME)=' {sh(paths.os_release)} 2>/dev/null "
        "| sed 's/^/os /'; true")


APT_BUSY_WAIT = 180  # seconds a probe waits for another apt/dpkg to end


def package_states(packages: Sequence[str]) -> str:
    """`pkg <name> <dpkg's status abbreviation>` per package dpkg knows (`ii`: installed),
    read once no apt or dpkg runs: an earlier run stopped by Ctrl-C or a dropped link leaves
    its apt-get running on the host (no terminal, no hangup), and half-way through, a package
    looks like a file of no package."""
    return (f"i=0; while pgrep -x 'apt-get|apt|dpkg' >/dev/null 2>&1 && "
            f"[ $i -lt {APT_BUSY_WAIT} ]; do sleep 1; i=$((i+1)); done; "
            f"dpkg-query -W -f={sh('pkg ${Package} ${db:Status-Abbrev}' + BACKSLASH_N)} "
            f"{sh_join(packages)} 2>/dev/null; true")


def service_state(name: str) -> str:
    """`svc <name> <is-enabled> <is-active>` (`none` where systemd has no answer)."""
    unit = sh(name)
    return (f"e=$(systemctl is-enabled {unit} 2>/dev/null) || true; "
            f"a=$(systemctl is-active {unit} 2>/dev/null) || true; "
            f'echo "svc {name} ${{e:-none}} ${{a:-none}}"')


def apt_update() -> str:
    return "DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120 update"


def apt_install(packages: Sequence[str]) -> str:
    """Non-interactive, waiting for another apt's lock, without recommends, keeping any
    changed config file; a dpkg run cut short before (a half-installed package) is finished
    first, as apt itself asks."""
    return ("export DEBIAN_FRONTEND=noninteractive; "
            "if [ -n \"$(dpkg -C 2>/dev/null)\" ]; then dpkg --configure -a || exit $?; fi; "
            "apt-get -q -y -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef "
            "-o Dpkg::Options::=--force-confold install --no-install-recommends "
            + sh_join(packages))


def enable_now(*services: str) -> str:
    return f"systemctl enable --now {sh_join(services)} >/dev/null 2>&1 || " \
           f"systemctl enable --now {sh_join(services)}"


# --- docker and the swarm ------------------------------------------------------------------

def docker_probe() -> str:
    """docker.io's and the other engines' package states, a snap's docker, who owns the
    `docker`/`dockerd` on the PATH, and the engine's unit."""
    return lines(
        package_states(["docker.io", *OTHER_DOCKERS]),
        "if command -v snap >/dev/null 2>&1 && snap list docker >/dev/null 2>&1; then "
        "echo 'snap docker'; fi",
        'for b in docker dockerd; do p=$(command -v "$b" 2>/dev/null) || continue; '
        'o=$(dpkg -S "$p" 2>/dev/null | cut -d: -f1 | tr -d " "); '
        '[ -n "$o" ] || o=$(dpkg -S "$(readlink -f "$p")" 2>/dev/null | cut -d: -f1 | tr -d " "); '
        'echo "bin $b $p ${o:--}"; done',
        service_state("docker"))


def swarm_probe() -> str:
    """`swarm <state> <manager?> <advertised address>`, or `swarm none` (no engine)."""
    return ("if command -v docker >/dev/null 2>&1 && s=$(docker info --format "
            "'{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeAddr}}' "
            "2>/dev/null); then echo \"swarm $s\"; else echo 'swarm none'; fi")


def swarm_init(address: str | None) -> str:
    """Its output (a worker's join token) is not kept."""
    advertise = f" --advertise-addr {sh(address)}" if address else ""
    return f"docker swarm init{advertise} >/dev/null"


# --- the deploy user -----------------------------------------------------------------------

def user_probe(user: str, key_fragment: str, base: str, audit: str) -> str:
    """The account (home, groups, whether its password field locks it: never the hash),
    its .ssh folder and authorized_keys (owner, mode, the key there), the docker group,
    the base folder and the audit log's owners."""
    u = sh(user)
    return lines(
        f"if p=$(getent passwd {u}); then h=$(echo \"$p\" | cut -d: -f6); echo \"home $h\"; "
        f'echo "groups $(id -nG {u})"; echo "group $(id -gn {u})"; '
        f"case $(getent shadow {u} | cut -d: -f2) in '!'*) echo locked;; esac; "
        '[ -d "$h/.ssh" ] && echo "sshdir $(stat -c \'%U %a\' "$h/.ssh")"; '
        'k="$h/.ssh/authorized_keys"; if [ -f "$k" ]; then '
        'echo "keys $(stat -c \'%U %a\' "$k")"; '
        f'grep -qF -- {sh(key_fragment)} "$k" && echo "key present"; fi; '
        "else echo nouser; fi",
        "getent group docker >/dev/null && echo 'dockergroup yes'",
        f"[ -d {sh(base)} ] && echo \"base $(stat -c '%U %a' {sh(base)})\"",
        f"[ -f {sh(audit)} ] && echo \"audit $(stat -c '%U' {sh(audit)})\"; true")


def user_apply(user: str, key_line: str, key_fragment: str, base: str, audit: str) -> str:
    """The account (created with a group of its own; a locked password field set to `*`, so
    sshd without PAM takes its key: no password can match `*`), in the docker group, the key
    appended once, 0700/0600 and the user's, the base folder and the audit log its own."""
    u = sh(user)
    keys = '"$h/.ssh/authorized_keys"'
    docker_group = "" if user == "root" else \
        f"if getent group docker >/dev/null; then usermod -aG docker {u} || exit 1; fi"
    unlock = "" if user == "root" else \
        f"case $(getent shadow {u} | cut -d: -f2) in '!'*) usermod -p '*' {u} || exit 1;; esac"
    return all_of(
        f"{{ getent passwd {u} >/dev/null || useradd --create-home --shell /bin/bash "
        f"--user-group {u}; }}",
        f"{{ {unlock or 'true'}; }}",
        f"{{ {docker_group or 'true'}; }}",
        f"h=$(getent passwd {u} | cut -d: -f6)",
        '[ -n "$h" ]',
        'mkdir -p "$h/.ssh"', f"touch {keys}",
        f"{{ [ ! -s {keys} ] || [ -z \"$(tail -c 1 {keys})\" ] || echo >> {keys}; }}",
        f"{{ grep -qF -- {sh(key_fragment)} {keys} || printf '%s\\n' {sh(key_line)} >> {keys}; }}",
        'chmod 700 "$h/.ssh"', f"chmod 600 {keys}",
        f'chown {sh(user + ":")} "$h/.ssh" {keys}',
        f"mkdir -p {sh(base)}", f"chown {sh(user + ':')} {sh(base)}", f"chmod 750 {sh(base)}",
        f"{{ [ ! -f {sh(audit)} ] || chown {sh(user + ':')} {sh(audit)}; }}")


def audit_append_as(log: str, line: str, user: str) -> str:
    """One audit line, appended as root; a log not there yet is made first as the deploy
    user's (`user`, where that account exists; 0644, as its own `>>` makes it): a root-owned
    log would refuse the next deploy's line, and the next host.prepare would give it back."""
    append = audit_append(log, line)
    if user == "root":
        return append
    f = sh(log)
    return (f"if [ ! -e {f} ] && getent passwd {sh(user)} >/dev/null; then touch {f} && "
            f"chown {sh(user + ':')} {f} && chmod 644 {f}; fi; {append}")


# --- swap ----------------------------------------------------------------------------------

def swap_probe(paths: Paths) -> str:
    """Active swap (name, bytes), the swap file (bytes, mode), its fstab line, swappiness
    now and in the sysctl file, and whether this is a container."""
    p = sh(paths.swapfile)
    return lines(
        "(swapon --show=NAME,SIZE --bytes --noheadings 2>/dev/null || true) | sed 's/^/active /'",
        f"[ -e {p} ] && echo \"file $(stat -c '%s %a' {p})\"",
        f"awk -v p={p} '$1==p && $3==\"swap\" {{f=1}} END {{exit !f}}' {sh(paths.fstab)} "
        "2>/dev/null && echo 'fstab yes'",
        f"echo \"swappiness $(cat {sh(paths.proc + '/sys/vm/swappiness')} 2>/dev/null)\"",
        f"grep -qx 'vm.swappiness={SWAPPINESS}' {sh(paths.sysctl)} 2>/dev/null "
        "&& echo 'sysctl yes'",
        'v=$(systemd-detect-virt -c 2>/dev/null) || true; echo "virt ${v:-none}"')


def swap_apply(paths: Paths, mib: int, make_file: bool) -> str:
    """vm.swappiness first (its own failure does not stop the swap file), then, when asked,
    the swap file: made beside its place and renamed in (a file at the place always has a
    swap signature), another size's file swapped off and replaced, 0600, swapon, then its
    fstab line once (only once swapon worked: a line for a swap that cannot be enabled would
    fail at every boot). Exits 1 with a `fail:` line per part that did not work."""
    p, tmp = sh(paths.swapfile), sh(paths.swapfile + ".new")
    bytes_ = int(mib) * 1024 * 1024
    script = [
        "rc=0",
        f"mkdir -p {sh(paths.sysctl.rsplit('/', 1)[0])} && "
        f"printf 'vm.swappiness={SWAPPINESS}\\n' > {sh(paths.sysctl)} || "
        f"{{ echo 'fail: cannot write {paths.sysctl}' >&2; rc=1; }}",
        f"if ! out=$(sysctl -w vm.swappiness={SWAPPINESS} 2>&1); then "
        "echo \"fail: vm.swappiness: $out\" >&2; rc=1; fi"]
    if make_file:
        active = f"swapon --show=NAME --noheadings 2>/dev/null | grep -qxF -- {p}"
        script += [
            f"if [ -e {p} ] && [ \"$(stat -c %s {p})\" != {bytes_} ]; then "
            f"if {active}; then swapoff {p} || {{ echo 'fail: cannot swapoff {paths.swapfile} "
            f"to resize it' >&2; exit 1; }}; fi; rm -f {p}; fi",
            f"if [ ! -e {p} ]; then rm -f {tmp}; "
            f"{{ fallocate -l {int(mib)}M {tmp} 2>/dev/null || "
            f"dd if=/dev/zero of={tmp} bs=1M count={int(mib)} status=none; }} && "
            f"chmod 600 {tmp} && mkswap {tmp} >/dev/null && mv -f {tmp} {p} || "
            f"{{ rm -f {tmp}; echo 'fail: cannot make {paths.swapfile} ({int(mib)} MiB)' >&2; "
            "exit 1; }; fi",
            f"chmod 600 {p}",
            f"if ! {active}; then if ! out=$(swapon {p} 2>&1); then "
            f"echo \"fail: swapon {paths.swapfile}: $out\" >&2; exit 1; fi; fi",
            f"awk -v p={p} '$1==p && $3==\"swap\" {{f=1}} END {{exit !f}}' {sh(paths.fstab)} "
            f"2>/dev/null || printf '%s\\n' {sh(paths.swapfile + ' none swap sw 0 0')} "
            f">> {sh(paths.fstab)}"]
    return "\n".join([*script, "exit $rc"])


# --- ufw -----------------------------------------------------------------------------------

def ufw_probe() -> str:
    """The rules as added (`ufw show added`: the same words that add them, active or not)
    and the firewall's state; `--NOUFW--` when it is not installed."""
    return lines("if command -v ufw >/dev/null 2>&1; then echo '--ADDED--'; "
                 "ufw show added 2>&1 || true; echo '--STATUS--'; "
                 "LC_ALL=C ufw status verbose 2>&1 || true; else echo '--NOUFW--'; fi")


def ufw_rules(action: str, ports: Sequence[int]) -> str:
    """`allow` or `deny` each port's TCP (ufw's rule for v4 and v6)."""
    return all_of(*(f"ufw {sh(action)} {int(p)}/tcp >/dev/null" for p in ports))


def ufw_allow_from(rules: Sequence[Sequence[str | int]]) -> str:
    """`allow from ADDRESS to any port PORT proto PROTO` each ([address, port, proto]): the
    swarm's ports, from another node only."""
    return all_of(*(f"ufw allow from {sh(address)} to any port {int(port)} proto {sh(proto)} "
                    ">/dev/null" for address, port, proto in rules))


def ufw_default_deny() -> str:
    return "ufw default deny incoming >/dev/null"


def ufw_delete(rule: Sequence[str]) -> str:
    """A rule as `ufw show added` spells it (its words after `ufw`), deleted."""
    return f"ufw --force delete {sh_join(rule)} >/dev/null"


def ufw_enable() -> str:
    return "ufw --force enable >/dev/null"


def ssh_rule_pattern(ssh_port: int) -> str:
    """A line of `ufw show added` that lets TCP in to the SSH port: an allow or limit rule,
    incoming, for the port alone (`22`, `22/tcp`, in a list `22,80/tcp`) or from a source,
    on an interface or to an address the operator narrowed it to (`allow from 203.0.113.7 to
    any port 22 proto tcp`, `allow from 10.0.0.2`: every port from there), or OpenSSH's
    profile (port 22). A range (`20:30/tcp`) is not read. An extended regular expression that
    Python's `re` reads alike: host.prepare's judge (`host/firewall.py`) and the guard below
    count the same rules."""
    port = int(ssh_port)
    listed = f"([0-9:]+,)*{port}(,[0-9:]+)*"
    app = "|OpenSSH" if port == 22 else ""
    app_to = "| app OpenSSH" if port == 22 else ""
    head, tail = "^ufw (allow|limit)", "( comment .*)?$"
    short = f"{head}( in)?( log(-all)?)? ({listed}(/tcp)?{app}){tail}"
    long = (f"{head}( in on [^ ]+)?( log(-all)?)?( from [^ ]+)?"
            f"( to [^ ]+( port {listed}{app_to})?)?( proto tcp)?{tail}")
    return f"({short})|({long})"


def ufw_if_ssh_allowed(ssh_port: int, command: str) -> str:
    """`command` (enable, or deny incoming by default) only when ufw lists a rule allowing
    the SSH port (`ssh_rule_pattern`, a narrowed one included): the link this run talks over
    must never be the first thing it drops."""
    port = int(ssh_port)
    allowed = f"ufw show added 2>/dev/null | grep -qE {sh(ssh_rule_pattern(port))}"
    return (f"if {allowed}; then {command}; else echo 'fail: no rule allows the SSH port "
            f"{port}: ufw left as it was' >&2; exit 3; fi")


# --- Netdata and cron ----------------------------------------------------------------------

def _netdata_dirs(root: str) -> list[str]:
    """The folders the tool writes into (`monitoring/netdata.py`): the alarms in health.d,
    the restarts plugin in custom-plugins.d, the notification settings in the root."""
    root = root.rstrip("/")
    return [root, f"{root}/health.d", f"{root}/custom-plugins.d"]


def _cli_reaches(user: str) -> str:
    """netdatacli's `ping` as the deploy user: what `netdatacli reload-health` needs."""
    if user == "root":
        return "timeout 10 netdatacli ping >/dev/null 2>&1"
    return f"runuser -u {sh(user)} -- timeout 10 netdatacli ping >/dev/null 2>&1"


def _netdata_has_docker(paths: Paths) -> str:
    """The running netdata process carries the docker group (added to the account after it
    started, it does not)."""
    return ("pid=$(systemctl show -p MainPID --value netdata 2>/dev/null); "
            "gid=$(getent group docker | cut -d: -f3); "
            '[ -n "$pid" ] && [ "$pid" != 0 ] && [ -n "$gid" ] && '
            f"awk -v g=\"$gid\" '/^Groups:/ {{for (i = 2; i <= NF; i++) if ($i == g) f = 1}} "
            f"END {{exit !f}}' {sh(paths.proc)}/\"$pid\"/status 2>/dev/null")


def _is_dropin(paths: Paths) -> str:
    """The unit's drop-in holds exactly what host.prepare writes there."""
    return (f"[ \"$(cat {sh(paths.netdata_dropin)} 2>/dev/null)\" = "
            f"\"$(printf '%s' {sh(NETDATA_DROPIN)})\" ]")


def monitoring_probe(paths: Paths, root: str, user: str) -> str:
    u = sh(user)
    dirs = " ".join(sh(d) for d in _netdata_dirs(root))
    return lines(
        package_states(["netdata", "cron", "curl"]), service_state("netdata"),
        service_state("cron"),
        'echo "ndgroups $(id -nG netdata 2>/dev/null)"',
        f"{_netdata_has_docker(paths)} && echo 'ndrun docker'",
        f"{_is_dropin(paths)} && echo 'dropin yes'",
        f"for d in {dirs}; do if [ -d \"$d\" ]; then echo \"dir $d $(stat -c '%G %a' \"$d\")\"; "
        "else echo \"nodir $d\"; fi; done",
        f'echo "usergroups $(id -nG {u} 2>/dev/null)"',
        f'echo "usergroup $(id -gn {u} 2>/dev/null)"',
        f"getent passwd {u} >/dev/null && {_cli_reaches(user)} && echo 'cli yes'",
        f"{{ command -v sendmail >/dev/null 2>&1 || [ -x {sh(paths.sendmail)} ]; }} && "
        "echo 'sendmail yes'",
        f"if [ -f {sh(paths.cron_allow)} ]; then grep -qx -- {u} {sh(paths.cron_allow)} && "
        "echo 'cronallow yes' || echo 'cronallow no'; fi; true")


def monitoring_apply(paths: Paths, root: str, user: str) -> str:
    """netdatacli's socket out of Netdata's private /tmp (a unit drop-in), netdata in the
    docker group (its restarts plugin runs `docker events`), the deploy user in netdata's
    group (the socket is 0770 netdata:netdata; the notification file goes to that group)
    and, through its own group, allowed to write the three folders the tool writes into;
    both services enabled and running; netdata restarted when its unit, its groups or its
    socket need it, then waited for (30 s) until the deploy user reaches netdatacli."""
    u = sh(user)
    drop = sh(paths.netdata_dropin)
    unreachable = (f"fail: {user} cannot reach netdatacli (its socket /tmp/netdata-ipc) 30 s "
                   "after netdata started")
    parts = [
        "restart=0",
        f"if ! {_is_dropin(paths)}; then "
        f"mkdir -p {sh(paths.netdata_dropin.rsplit('/', 1)[0])} && "
        f"printf '%s' {sh(NETDATA_DROPIN)} > {drop} && systemctl daemon-reload || "
        "{ echo 'fail: cannot write the netdata unit drop-in' >&2; exit 1; }; restart=1; fi",
        "if ! id -nG netdata | tr ' ' '\\n' | grep -qx docker; then "
        "usermod -aG docker netdata || exit 1; restart=1; fi"]
    if user != "root":
        parts += [
            f"if ! id -nG {u} | tr ' ' '\\n' | grep -qx netdata; then "
            f"usermod -aG netdata {u} || exit 1; fi",
            f"g=$(id -gn {u}) || exit 1",
            *(f"mkdir -p {sh(d)} && chgrp \"$g\" {sh(d)} && chmod g+w {sh(d)} || exit 1"
              for d in _netdata_dirs(root))]
    parts += [
        f"if [ -f {sh(paths.cron_allow)} ] && ! grep -qx -- {u} {sh(paths.cron_allow)}; then "
        f"printf '%s\\n' {u} >> {sh(paths.cron_allow)}; fi",
        enable_now("netdata", "cron") + " || exit 1",
        f"{_netdata_has_docker(paths)} || restart=1",
        f"{_cli_reaches(user)} || restart=1",
        "if [ $restart = 1 ]; then systemctl restart netdata || exit 1; fi",
        f"i=0; until {_cli_reaches(user)}; do i=$((i + 1)); if [ $i -ge 30 ]; then "
        f"echo {sh(unreachable)} >&2; exit 1; fi; sleep 1; done"]
    return "\n".join(parts)


# --- sudoers -------------------------------------------------------------------------------

def sudoers_probe(paths: Paths, user: str, command: str) -> str:
    """sudo's package state, the file (owner, mode, sha256) and whether sudo itself lets
    `user` run `command` (`sudo -l -U`: asked of sudo, not guessed from the file)."""
    f = sh(paths.sudoers)
    return lines(
        package_states(["sudo"]),
        f"[ -f {f} ] && echo \"file $(stat -c '%U %a' {f}) $(sha256sum < {f} | cut -d' ' -f1)\"",
        f"command -v sudo >/dev/null 2>&1 && getent passwd {sh(user)} >/dev/null && "
        f"sudo -n -l -U {sh(user)} -- {sh_join(command.split())} >/dev/null 2>&1 && "
        "echo 'allowed yes'; true")


def sudoers_apply(paths: Paths, line: str) -> str:
    """Written to a temp file in the folder (a name with a dot: sudo skips it), 0440,
    checked by `visudo -cf`, then renamed into place: sudo never reads a broken file."""
    f = sh(paths.sudoers)
    folder = sh(paths.sudoers.rsplit("/", 1)[0])
    return all_of(
        f"mkdir -p {folder}", f"t=$(mktemp {sh(paths.sudoers + '.XXXXXX')})",
        f"{{ printf '%s\\n' {sh(line)} > \"$t\" && chmod 440 \"$t\" && chown root:root \"$t\" "
        "&& visudo -cf \"$t\" >/dev/null || { rm -f \"$t\"; echo 'fail: visudo refused the "
        "sudoers line' >&2; exit 1; }; }",
        f'mv -f "$t" {f}')


# --- Uptime Kuma ---------------------------------------------------------------------------

def kuma_probe() -> str:
    """`kuma <running> <image> <port>=<host ip>:<host port>...`, or `kuma none`."""
    return ("if command -v docker >/dev/null 2>&1 && k=$(docker container inspect --format "
            "'{{.State.Running}} {{.Config.Image}} {{range $p, $b := .HostConfig.PortBindings}}"
            "{{range $b}}{{$p}}={{.HostIp}}:{{.HostPort}} {{end}}{{end}}' "
            f"{KUMA_CONTAINER} 2>/dev/null); then echo \"kuma $k\"; else echo 'kuma none'; fi")


def registry_pull(image: str, server: str, username: str) -> str:
    """`image` pulled with a login to the config's registry that lives only for the pull (a
    throw-away Docker config folder, the password on stdin): Uptime Kuma's image from the
    team's own registry, where root has no login of its own."""
    return (f"d=$(mktemp -d) && {{ docker --config \"$d\" login --username {sh(username)} "
            f"--password-stdin {sh(server)} >/dev/null && docker --config \"$d\" pull --quiet "
            f"{sh(image)} >/dev/null; }}; rc=$?; rm -rf \"$d\"; exit $rc")


def kuma_run(image: str, port: int, recreate: bool) -> str:
    """The container as Dokploy runs Uptime Kuma: its data in a named volume (kept when the
    container is made again), restarted unless stopped, published on the host's loopback
    only (reached over SSH; a port Docker publishes bypasses ufw)."""
    name = sh(KUMA_CONTAINER)
    run = (f"docker run -d --name {name} --restart unless-stopped "
           f"-p {sh(f'127.0.0.1:{int(port)}:{KUMA_INSIDE}')} "
           f"-v {sh(f'{KUMA_VOLUME}:/app/data')} {sh(image)} >/dev/null")
    return all_of(
        f"docker volume create {sh(KUMA_VOLUME)} >/dev/null",
        *([f"{{ docker rm -f {name} >/dev/null 2>&1 || true; }}"] if recreate else []),
        f"if docker container inspect {name} >/dev/null 2>&1; then "
        f"docker start {name} >/dev/null; else {run}; fi")
