"""host.prepare's plan logic, pure: each probe's facts judged (judge.py, firewall.py), and the
operator's public key found and checked (keys.py). No host, no shell."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import PRIVATE_KEY_HEAD
from tests.host.fake_vps import public_key
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.host import judge, keys
from vedfin_ops.host.facts import Facts, Verdict
from vedfin_ops.host.firewall import Peer, judge_firewall, parse_added, wanted


def facts(text: str) -> Facts:
    return Facts.parse(text)


# --- the system and who connects ------------------------------------------------------------

@pytest.mark.parametrize("lines, state", [
    ('os ID=debian\nos VERSION_ID="12"\nos PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"', "ok"),
    ('os ID=ubuntu\nos VERSION_ID="24.04"\nos PRETTY_NAME="Ubuntu 24.04.1 LTS"', "ok"),
    ('os ID=ubuntu\nos VERSION_ID="22.04"\nos PRETTY_NAME="Ubuntu 22.04.4 LTS"', "refuse"),
    ('os ID=debian\nos VERSION_ID="13"', "refuse"),
    ("", "refuse")])
def test_only_debian_12_and_ubuntu_24_04_are_prepared(lines: str, state: str) -> None:
    verdict = judge.judge_os(facts(lines))
    assert verdict.state == state
    if state == "refuse":
        assert verdict.text.endswith("is not Debian 12 or Ubuntu 24.04, the systems whose "
                                     "packages host.prepare knows")


def test_root_a_passwordless_sudoer_or_nobody() -> None:
    assert judge.needs_sudo(facts("uid 0\nuser root")) is False
    assert judge.needs_sudo(facts("uid 1000\nuser admin\nsudo yes")) is True
    with pytest.raises(CheckFailed, match="admin is neither root nor allowed passwordless"):
        judge.needs_sudo(facts("uid 1000\nuser admin\nsudo no"))


def test_the_ssh_port_is_the_one_the_server_saw() -> None:
    assert judge.ssh_port(facts("ssh 198.51.100.4 51234 10.0.0.5 2222")) == 2222
    assert judge.ssh_port(facts("ssh ")) is None


# --- Docker --------------------------------------------------------------------------------

def test_a_docker_io_being_unpacked_is_no_other_docker() -> None:
    verdict = judge.judge_docker(facts("pkg docker.io iU \nbin docker /usr/bin/docker -\n"
                                       "svc docker none none"))
    assert verdict.state == "change"
    assert verdict.notes[0] == "finish installing docker.io (dpkg state iU)"


def test_docker_from_the_distribution_installed_enabled_running() -> None:
    bare = judge.judge_docker(facts("svc docker none none"))
    assert bare == Verdict("change", ("install docker.io", "enable docker", "start docker"),
                           ("docker.io",))
    done = judge.judge_docker(facts("pkg docker.io ii \nbin docker /usr/bin/docker docker.io\n"
                                    "bin dockerd /usr/sbin/dockerd docker.io\n"
                                    "svc docker enabled active"))
    assert done.state == "ok"
    half = judge.judge_docker(facts("pkg docker.io iU \nsvc docker none none"))
    assert half.notes[0] == "finish installing docker.io (dpkg state iU)"


@pytest.mark.parametrize("lines, named", [
    ("pkg docker-ce ii \npkg docker-ce-cli ii \npkg containerd.io ii ",
     "another Docker is installed (docker-ce, docker-ce-cli, containerd.io)"),
    ("pkg docker-ce rc \nsnap docker", "Docker is installed as a snap"),
    ("bin docker /usr/local/bin/docker -", "/usr/local/bin/docker is from no package"),
    ("bin docker /usr/bin/docker podman-docker", "package podman-docker, not docker.io"),
    # docker.io installed (`ii`) owns its programs: a static one beside it is another Docker
    ("pkg docker.io ii \nbin docker /usr/local/bin/docker -\nbin dockerd /usr/sbin/dockerd "
     "docker.io", "/usr/local/bin/docker is from no package"),
    ("pkg docker.io ii \nbin docker /usr/bin/docker -", "/usr/bin/docker is from no package"),
    # still unpacking, yet the program is not at docker.io's own path
    ("pkg docker.io iU \nbin dockerd /usr/local/bin/dockerd -",
     "/usr/local/bin/dockerd is from no package")])
def test_another_docker_is_refused_naming_it(lines: str, named: str) -> None:
    verdict = judge.judge_docker(facts(lines + "\nsvc docker none none"))
    assert verdict.state == "refuse" and named in verdict.text, verdict.text


# --- the swarm -----------------------------------------------------------------------------

@pytest.mark.parametrize("line, want, state, said", [
    ("swarm none", "203.0.113.10", "change", "start a swarm advertising 203.0.113.10"),
    ("swarm inactive false ", None, "change", "start a swarm"),
    ("swarm active true 203.0.113.10", "203.0.113.10", "ok", "a swarm manager advertising"),
    ("swarm active true 10.0.0.4", None, "ok", "advertising 10.0.0.4"),
    ("swarm active true 10.0.0.4", "203.0.113.10", "fail", "advertising 10.0.0.4, not "
                                                           "203.0.113.10"),
    ("swarm active false 10.0.0.9", "203.0.113.10", "fail", "a worker of another swarm"),
    ("swarm locked false ", None, "fail", "swarm is locked")])
def test_a_swarm_is_started_never_left(line: str, want: str | None, state: str,
                                       said: str) -> None:
    verdict = judge.judge_swarm(facts(line), want)
    assert verdict.state == state and said in verdict.text, verdict.text


def test_the_swarm_advertises_the_first_manager_else_vps_address() -> None:
    from vedfin_ops.host.steps import advertise

    node = SimpleNamespace(role="manager", address="10.0.0.1")
    worker = SimpleNamespace(role="worker", address="10.0.0.2")
    assert advertise(SimpleNamespace(nodes=[worker, node],  # type: ignore[arg-type]
                                     vps=SimpleNamespace(address="203.0.113.10"))) == "10.0.0.1"
    assert advertise(SimpleNamespace(nodes=[],  # type: ignore[arg-type]
                                     vps=SimpleNamespace(address="203.0.113.10"))) \
        == "203.0.113.10"


# --- the deploy user -----------------------------------------------------------------------

def test_the_deploy_user_is_every_part_or_changed() -> None:
    done = ("home /home/deployer\ngroups deployer docker netdata\ngroup deployer\n"
            "sshdir deployer 700\nkeys deployer 600\nkey present\ndockergroup yes\n"
            "base deployer 750\naudit deployer")
    assert judge.judge_user(facts(done), "deployer", "/opt/vedfin", "/opt/vedfin/audit.log") \
        .state == "ok"
    bare = judge.judge_user(facts("nouser\ndockergroup yes"), "deployer", "/opt/vedfin",
                            "/opt/vedfin/audit.log")
    assert bare.notes[0] == "create user deployer"
    assert "create /opt/vedfin (remote.baseDir), its own" in bare.notes
    locked = judge.judge_user(facts(done.replace("key present", "locked")
                                    .replace("keys deployer 600", "keys deployer 644")
                                    .replace("audit deployer", "audit root")),
                              "deployer", "/opt/vedfin", "/opt/vedfin/audit.log")
    assert locked.notes == ("unlock deployer for its key (password field `*`: no password "
                            "matches it)",
                            "authorize the operator's key (~/.ssh/authorized_keys)",
                            "~/.ssh/authorized_keys 0600, its own",
                            "give /opt/vedfin/audit.log to deployer")


# --- swap ----------------------------------------------------------------------------------

SWAPFILE = "/swapfile"


def test_swap_as_vps_swap_says() -> None:
    assert judge.judge_swap(facts(""), 0, SWAPFILE) .state == "skip"
    bare = judge.judge_swap(facts("swappiness 60\nvirt none"), 2048, SWAPFILE)
    assert bare.notes == ("create /swapfile of 2048 MiB (0600, mkswap)", "swapon /swapfile",
                          "/swapfile in /etc/fstab",
                          "vm.swappiness=10 (now 60), kept in sysctl.d")
    assert bare.data["make_file"] is True
    done = (f"active /swapfile {2048 * 2**20}\nfile {2048 * 2**20} 600\nfstab yes\n"
            "swappiness 10\nsysctl yes")
    assert judge.judge_swap(facts(done), 2048, SWAPFILE).state == "ok"
    resized = judge.judge_swap(facts(done.replace(f"file {2048 * 2**20}", f"file {2**30}")),
                               2048, SWAPFILE)
    assert resized.notes == ("remake /swapfile: 1024 MiB, vps.swap says 2048",)


def test_a_providers_swap_partition_is_enough() -> None:
    verdict = judge.judge_swap(facts(f"active /dev/vda2 {4096 * 2**20}\nswappiness 10\n"
                                     "sysctl yes"), 2048, SWAPFILE)
    assert verdict == Verdict("ok", ("4096 MiB of swap already (not /swapfile), "
                                     "vm.swappiness=10",))


# --- ufw -----------------------------------------------------------------------------------

ADDED = """--ADDED--
Added user rules (see 'ufw status' for running firewall):
{rules}
--STATUS--
{status}
"""
ACTIVE = "Status: active\nLogging: on (low)\nDefault: deny (incoming), allow (outgoing)\n"


def ufw(rules: str, status: str = ACTIVE) -> str:
    return ADDED.format(rules=rules or "(None)", status=status)


def test_ufw_not_installed_is_every_rule_the_ssh_port_first() -> None:
    verdict = judge_firewall("--NOUFW--\n", [22, 80, 443], [3000], 2222)
    assert verdict.packages == ("ufw",)
    assert verdict.data["allow"] == [2222, 22, 80, 443] and verdict.data["deny"] == [3000]
    assert verdict.data["enable"] and verdict.data["default"]


def test_ufw_as_the_config_names_it_is_ok() -> None:
    rules = "ufw allow 22/tcp\nufw allow 80/tcp\nufw allow 443/tcp\nufw deny 3000/tcp"
    assert judge_firewall(ufw(rules), [22, 80, 443], [3000], 22) == \
        Verdict("ok", ("active; allows 22, 80, 443; denies 3000",))
    # a limited SSH port and a rule with a comment count too
    rules = "ufw limit 22/tcp\nufw allow 80 comment 'web'\nufw allow in 443/tcp\nufw deny 3000"
    assert judge_firewall(ufw(rules), [22, 80, 443], [3000], 22).state == "ok"


def test_ufw_inactive_or_allowing_by_default_is_changed() -> None:
    rules = "ufw allow 22/tcp\nufw allow 80/tcp\nufw allow 443/tcp\nufw deny 3000/tcp"
    inactive = judge_firewall(ufw(rules, "Status: inactive"), [22, 80, 443], [3000], 22)
    assert inactive.notes == ("deny other incoming (default is ?)", "enable ufw")
    allowing = judge_firewall(ufw(rules, ACTIVE.replace("deny (incoming)", "allow (incoming)")),
                              [22, 80, 443], [3000], 22)
    assert allowing.notes == ("deny other incoming (default is allow)",)


def test_rules_the_config_does_not_name_go_but_never_one_for_the_ssh_port() -> None:
    rules = ("ufw allow 22/tcp\nufw allow 80/tcp\nufw allow 443/tcp\nufw deny 3000/tcp\n"
             "ufw allow 3000/tcp\nufw allow from 10.0.0.0/8 to any port 5432\n"
             "ufw limit from 198.51.100.7 to any port 2222 proto tcp\nufw allow Samba\n"
             "ufw allow 80/udp\nufw allow 8000:9000/tcp")
    verdict = judge_firewall(ufw(rules), [22, 80, 443], [3000], 2222)
    assert verdict.data["allow"] == []  # 2222's rule from one address counts
    assert verdict.data["delete"] == [["allow", "3000/tcp"], ["allow", "Samba"],
                                      ["allow", "80/udp"], ["allow", "8000:9000/tcp"]]
    on_22 = judge_firewall(ufw(rules + "\nufw allow OpenSSH"), [22, 80, 443], [3000], 22)
    assert ["allow", "OpenSSH"] not in on_22.data["delete"]  # OpenSSH is port 22


def test_an_ssh_rule_the_operator_narrowed_counts_and_no_world_open_one_is_added() -> None:
    rules = ("ufw allow from 203.0.113.7 to any port 22 proto tcp\nufw allow 80/tcp\n"
             "ufw allow 443/tcp\nufw deny 3000/tcp")
    verdict = judge_firewall(ufw(rules), [22, 80, 443], [3000], 22)
    assert verdict.state == "ok" and verdict.notes[1] == (
        "kept `allow from 203.0.113.7 to any port 22 proto tcp` (from 203.0.113.7: the "
        "operator's own, never removed)")
    inactive = judge_firewall(ufw(rules, "Status: inactive"), [22, 80, 443], [3000], 22,
                              client="203.0.113.7")
    assert inactive.state == "change" and inactive.data["allow"] == []
    assert inactive.data["enable"]
    # only from the operator's office while this run comes from elsewhere: never enabled
    elsewhere = judge_firewall(ufw(rules, "Status: inactive"), [22, 80, 443], [3000], 22,
                               client="198.51.100.4")
    assert elsewhere.state == "fail" and "do not admit this connection's address " \
        "198.51.100.4: enabling it would cut this link" in elsewhere.text
    # a narrowed rule for another port, or for UDP, is no SSH rule
    other = judge_firewall(ufw("ufw allow from 203.0.113.7 to any port 2222 proto tcp\n"
                               "ufw allow 22/udp"), [80], [], 22)
    assert other.data["allow"] == [22, 80]


WORLD = "ufw allow 22/tcp\nufw allow 80/tcp\nufw allow 443/tcp\nufw deny 3000/tcp\n"
SWARM_BY_HAND = "ufw allow 2377/tcp\nufw allow 7946\nufw allow 4789/udp\n"
NARROWED = ("ufw allow from 10.0.0.2\nufw allow in on eth1 to any port 5432\n"
            "ufw allow to 10.0.0.9 port 6379 proto tcp\nufw allow out 25/tcp\n")
WORKERS = [Peer("node1", "10.0.0.2"), Peer("node2", "10.0.0.3")]


def test_a_rule_the_operator_narrowed_is_never_removed() -> None:
    verdict = judge_firewall(ufw(WORLD + NARROWED + "ufw allow 8080/tcp"), [22, 80, 443],
                             [3000], 22)
    assert verdict.data["delete"] == [["allow", "8080/tcp"]]
    assert verdict.notes[1:] == (
        "kept `allow from 10.0.0.2` (from 10.0.0.2: the operator's own, never removed)",
        "kept `allow in on eth1 to any port 5432` (on eth1: the operator's own, never removed)",
        "kept `allow to 10.0.0.9 port 6379 proto tcp` (to 10.0.0.9: the operator's own, never "
        "removed)",
        "kept `allow out 25/tcp` (outgoing: the operator's own, never removed)")
    assert judge_firewall(ufw(WORLD + NARROWED), [22, 80, 443], [3000], 22).state == "ok"


def test_a_managers_swarm_ports_are_kept_and_allowed_from_the_other_nodes() -> None:
    by_hand = judge_firewall(ufw(WORLD + SWARM_BY_HAND + NARROWED), [22, 80, 443], [3000], 22,
                             WORKERS)
    assert by_hand.state == "ok", by_hand.notes
    assert by_hand.notes[0] == ("active; allows 22, 80, 443; denies 3000; the swarm's ports "
                                "from 10.0.0.2, 10.0.0.3")
    assert "kept `allow 2377/tcp` (a swarm port: `nodes` is set)" in by_hand.notes
    assert "kept `allow 4789/udp` (a swarm port: `nodes` is set)" in by_hand.notes
    # none there: allowed from each node's address alone (10.0.0.2's by its own rule already)
    missing = judge_firewall(ufw(WORLD + "ufw allow from 10.0.0.2"), [22, 80, 443], [3000], 22,
                             [*WORKERS, Peer("node3", None)])
    assert missing.data["allow_from"] == [["10.0.0.3", 2377, "tcp"], ["10.0.0.3", 7946, "tcp"],
                                          ["10.0.0.3", 7946, "udp"], ["10.0.0.3", 4789, "udp"]]
    assert missing.notes[0] == ("allow the swarm's ports from the other nodes: 10.0.0.3 "
                                "2377/tcp, 7946/tcp, 7946/udp, 4789/udp")
    assert missing.notes[-1].startswith("node node3 has no IP address in the config")
    # a single host: the swarm's ports are ports the config does not name
    single = judge_firewall(ufw(WORLD + SWARM_BY_HAND + NARROWED), [22, 80, 443], [3000], 22)
    assert single.data["delete"] == [["allow", "2377/tcp"], ["allow", "7946"],
                                     ["allow", "4789/udp"]]


def test_the_ssh_port_is_never_denied() -> None:
    assert wanted([80, 443], [22, 3000], 22) == ([22, 80, 443], [3000])


def test_ufw_show_added_is_read_as_the_words_that_add_each_rule() -> None:
    rules = parse_added("Added user rules (see 'ufw status' for running firewall):\n"
                        "ufw allow 22/tcp comment 'ssh, from anywhere'\n(None)\n"
                        "ufw route allow in on eth0\n")
    assert [r.words for r in rules] == [["allow", "22/tcp"],
                                        ["route", "allow", "in", "on", "eth0"]]


# --- Netdata and cron, the sudoers line, Uptime Kuma ---------------------------------------

NETDATA_DONE = ("pkg netdata ii \npkg cron ii \npkg curl ii \nsvc netdata enabled active\n"
                "svc cron enabled active\nndgroups netdata docker\nndrun docker\ndropin yes\n"
                "dir /etc/netdata deployer 775\ndir /etc/netdata/health.d deployer 2775\n"
                "dir /etc/netdata/custom-plugins.d deployer 775\n"
                "usergroups deployer docker netdata\nusergroup deployer\ncli yes")


def test_netdata_and_cron_as_the_tool_needs_them() -> None:
    assert judge.judge_monitoring(facts(NETDATA_DONE), "/etc/netdata", "deployer").state == "ok"
    stale = judge.judge_monitoring(facts(NETDATA_DONE.replace("ndrun docker", "")
                                         .replace("deployer 775\ndir", "root 755\ndir", 1)),
                                   "/etc/netdata", "deployer")
    assert stale.notes == ("restart netdata (it runs without the docker group)",
                           "/etc/netdata writable by deployer (group deployer)")
    unreachable = judge.judge_monitoring(facts(NETDATA_DONE.replace("cli yes", "")),
                                         "/etc/netdata", "deployer")
    assert unreachable.notes == ("restart netdata (deployer cannot reach netdatacli)",)
    bare = judge.judge_monitoring(facts("svc netdata none none\nsvc cron none none\n"
                                        "nodir /etc/netdata"), "/etc/netdata", "deployer")
    assert bare.packages == ("netdata", "cron", "curl")


def test_alerts_email_without_sendmail_is_a_warning_not_a_change() -> None:
    email = "ops@v-edfinance.com"
    silent = judge.judge_monitoring(facts(NETDATA_DONE), "/etc/netdata", "deployer", email)
    assert silent.state == "ok" and silent.notes[1].startswith(
        "warning: alerts.email is set but this host has no sendmail")
    assert "msmtp-mta or postfix" in silent.notes[1]
    relayed = judge.judge_monitoring(facts(NETDATA_DONE + "\nsendmail yes"), "/etc/netdata",
                                     "deployer", email)
    assert relayed.notes == silent.notes[:1]
    assert judge.judge_monitoring(facts(NETDATA_DONE), "/etc/netdata", "deployer").notes == \
        silent.notes[:1]


def test_the_sudoers_file_is_exactly_the_line() -> None:
    line = "pkg sudo ii \nfile root 440 abc\nallowed yes"
    assert judge.judge_sudoers(facts(line), "/etc/sudoers.d/vedfin-ops", "abc").state == "ok"
    assert judge.judge_sudoers(facts(line), "/etc/sudoers.d/vedfin-ops", "def").notes == (
        "rewrite /etc/sudoers.d/vedfin-ops (the one line, 0440, checked by visudo)",)
    ignored = judge.judge_sudoers(facts("pkg sudo ii \nfile root 440 abc"),
                                  "/etc/sudoers.d/vedfin-ops", "abc")
    assert ignored.state == "fail" and "does /etc/sudoers include" in ignored.text


def test_uptime_kuma_runs_as_the_config_says() -> None:
    image = "louislam/uptime-kuma:1"
    assert judge.judge_kuma_container(facts("kuma none"), image, 3002) is not None
    assert judge.judge_kuma_container(
        facts(f"kuma true {image} 3001/tcp=127.0.0.1:3002"), image, 3002) is None
    stopped = judge.judge_kuma_container(
        facts(f"kuma false {image} 3001/tcp=127.0.0.1:3002"), image, 3002)
    assert stopped is not None and stopped.notes == ("start the uptime-kuma container",)
    public = judge.judge_kuma_container(facts(f"kuma true {image} 3001/tcp=:3002"), image, 3002)
    assert public is not None and public.data["recreate"] is True


# --- the operator's key --------------------------------------------------------------------

def test_a_public_key_is_checked() -> None:
    key = keys.parse(public_key("me@laptop\x1b[31m"))
    assert key.line.endswith(" me@laptop[31m") and key.fragment.count(" ") == 1
    with pytest.raises(UsageError, match="is a private key"):
        keys.parse(f"{PRIVATE_KEY_HEAD}\nb3Blbn...\n")
    with pytest.raises(UsageError, match="not an OpenSSH public key"):
        keys.parse("ssh-dss AAAA")
    wrong = base64.b64encode(b"\x00\x00\x00\x07ssh-rsa").decode()
    with pytest.raises(UsageError, match="does not say ssh-ed25519"):
        keys.parse(f"ssh-ed25519 {wrong}")
    with pytest.raises(UsageError, match="one public key line expected, found 2"):
        keys.parse(public_key() + "\n" + public_key())


def test_the_key_beside_this_connections_identity_else_the_usual_ones(tmp_path: Path) -> None:
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "id_rsa.pub").write_text(public_key("rsa-file") + "\n")
    conn = SimpleNamespace(connect_kwargs={}, ssh_config={})
    assert keys.public_key(conn, home=tmp_path).comment == "rsa-file"
    (tmp_path / "deploy").write_text("private")
    (tmp_path / "deploy.pub").write_text(public_key("beside-identity") + "\n")
    conn = SimpleNamespace(connect_kwargs={}, ssh_config={"identityfile":
                                                          [str(tmp_path / "deploy")]})
    assert keys.public_key(conn, home=tmp_path).comment == "beside-identity"
    assert keys.public_key(conn, str(tmp_path / "deploy"), home=tmp_path).comment == \
        "beside-identity"  # a private key's path: its .pub
    (ssh / "id_rsa.pub").unlink()
    with pytest.raises(UsageError, match=r"give one with --key FILE\.pub"):
        keys.public_key(SimpleNamespace(connect_kwargs={}, ssh_config={}), home=tmp_path)
