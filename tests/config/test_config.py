"""Task 2.1 as a config: the shipped file carries the runbook's figures; bad files are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUNBOOK_SNIPPET, SHIPPED
from vedfin_ops import load_config
from vedfin_ops.config.loader import key_path
from vedfin_ops.config.units import show
from vedfin_ops.errors import ConfigError, UsageError

EXPECTED_APPS = {
    # name: (memory MiB, cpus, replicas)
    "api-dev": (512, 0.5, 1), "web-dev": (512, 0.5, 1),
    "api-staging": (768, 0.75, 1), "web-staging": (768, 0.75, 1),
    "api-production": (1536, 1.5, 2), "web-production": (1024, 1.0, 2),
}


def test_shipped_config_has_every_figure_of_the_runbook() -> None:
    config = load_config(SHIPPED)
    got = {a.name: (a.resources.memory, a.resources.cpus, a.replicas)
           for a in config.applications}
    assert got == EXPECTED_APPS
    prod_api = next(a for a in config.applications if a.name == "api-production")
    prod_web = next(a for a in config.applications if a.name == "web-production")
    assert prod_api.domain == "api.v-edfinance.com" and prod_api.branch == "main"
    assert prod_web.domains == ["v-edfinance.com", "www.v-edfinance.com"]
    assert config.postgres.image == "pgvector/pgvector:pg17"
    assert (config.postgres.resources.memory, config.postgres.resources.cpus) == (1024, 1.0)
    assert config.postgres.healthcheck.command == ["pg_isready", "-U", "postgres"]
    assert (config.redis.resources.memory, config.redis.resources.cpus) == (256, 0.25)
    assert (config.vps.memory, config.vps.cpus, config.vps.swap) == (4096, 2.0, 2048)
    assert {k: (v.memory, v.cpus) for k, v in config.overhead.items()} == {
        "monitoring": (400, 0.5), "system": (200, 0.25)}
    assert [e.database for e in config.environments.values()] == [
        "vedfinance_dev", "vedfinance_staging", "vedfinance_prod"]
    assert config.postgres.extensions == ["vector", "pg_stat_statements"]
    strategy = config.deployment_strategy
    assert (strategy.max_surge, strategy.max_unavailable, strategy.order) == (1, 0, "start-first")
    assert (config.alerts.cpu.above, config.alerts.cpu.for_) == (85, 300)
    assert (config.alerts.ram.above, config.alerts.ram.for_) == (90, 300)
    assert config.alerts.disk.above == 85
    assert (config.firewall.allow, config.firewall.deny) == ([22, 80, 443], [3000])


def test_shipped_config_declares_task_2_4_secrets_per_env() -> None:
    config = load_config(SHIPPED)
    prod = config.secret_names("production")
    assert set(prod) == {"POSTGRES_PASSWORD", "JWT_SECRET_PROD", "JWT_REFRESH_SECRET_PROD",
                         "ENCRYPTION_KEY_PROD", "R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID",
                         "R2_SECRET_ACCESS_KEY", "GEMINI_API_KEY",
                         # the backups' own token (backups.s3), shared by every env
                         "BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY",
                         # alerts.slack and Uptime Kuma's admin (monitoring.uptimeKuma)
                         "SLACK_WEBHOOK_URL", "UPTIME_KUMA_USERNAME", "UPTIME_KUMA_PASSWORD",
                         # registry.password: pushes (deploy --build) and the host's pulls
                         "REGISTRY_PASSWORD"}
    assert prod["JWT_SECRET_PROD"] == "generate" and prod["R2_ACCOUNT_ID"] == "manual"
    assert "JWT_SECRET_STAGING" in config.secret_names("staging")
    assert "JWT_SECRET_PROD" not in config.secret_names("dev")


def test_runbook_snippet_loads_as_written_with_defaults() -> None:
    config = load_config(RUNBOOK_SNIPPET)
    assert [a.name for a in config.applications] == ["api-production", "web-production"]
    api = config.applications[0]
    assert (api.app, api.env, api.image_repo, api.health.path) == (
        "api", "production", "vedfinance/api", "/api/health")
    assert config.applications[1].health.path == "/"
    assert config.environments["production"].database == "vedfinance_prod"
    assert "POSTGRES_PASSWORD" in config.secret_names("production")


def test_config_path_comes_from_flag_then_env_then_default(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^error: dokploy.yaml: no such file"):
        load_config()
    monkeypatch.setenv("VEDFIN_CONFIG", str(SHIPPED))
    assert load_config().source == str(SHIPPED)
    with pytest.raises(ConfigError, match=r"other\.yaml"):
        load_config("other.yaml")


def _error(variant: Any, change: Any) -> str:
    with pytest.raises(ConfigError) as info:
        variant(change)
    line = info.value.line()
    assert line.startswith("error: dokploy.yaml: ") and "\n" not in line
    assert info.value.exit_code == 2
    return line


def _set(path: str, value: Any) -> Any:
    """A change that sets data at a dotted path like `applications.1.resources.memory`."""
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[int(last) if last.isdigit() else last] = value
    return change


def test_bad_memory_size_names_file_key_and_value(variant: Any) -> None:
    line = _error(variant, _set("applications.1.resources.memory", "1536x"))
    assert line == ('error: dokploy.yaml: applications[1].resources.memory: "1536x" is not a '
                    'size like 1536m or 1.5g')


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("applications.0.replicas", 0, "applications[0].replicas: 0: input should be greater than"),
    ("applications.0.replicas", -2, "applications[0].replicas: -2"),
    ("applications.0.replicas", "two", 'applications[0].replicas: "two": input should be a '
                                       "valid integer"),
    ("applications.0.replicas", 1.5, "applications[0].replicas: 1.5"),
    ("applications.0.resources.memory", "0m", "applications[0].resources.memory: 0m must be "
                                              "greater than 0"),
    ("applications.0.resources.memory", "-5m", "applications[0].resources.memory: \"-5m\" is "
                                               "not a size"),
    ("applications.0.resources.memory", 1536, "applications[0].resources.memory: 1536 is not "
                                              "a size"),
    ("applications.0.resources.memory", "2m", "below Docker's minimum of 6m"),
    ("applications.0.stopGracePeriod", "0s", 'applications[0].stopGracePeriod: "0s": input '
                                             "should be greater than or equal to 1"),
    ("applications.0.stopGracePeriod", "1h", "applications[0].stopGracePeriod: "),
    ("applications.0.stopGracePeriod", "soon", 'applications[0].stopGracePeriod: "soon"'),
    ("applications.0.resources.cpus", 0, "applications[0].resources.cpus: 0 must be greater"),
    ("applications.0.resources.cpus", -1, "applications[0].resources.cpus: -1"),
    ("applications.0.resources.cpus", "lots", 'applications[0].resources.cpus: "lots"'),
    ("applications.0.resources.cpus", 3, "exceeds the VPS's 2 CPUs"),
    ("applications.0.resources", "big", 'applications[0].resources: "big": input should be '
                                        "a mapping"),
    ("applications.0.domain", "not a domain", "applications[0].domain"),
    ("applications.0.environment", ["FOO"], 'applications[0].environment: item 0 "FOO" is not '
                                            "KEY=value"),
    ("vps.memory", "4 gigs", 'vps.memory: "4 gigs" is not a size'),
    ("vps.swap", True, "vps.swap: true is not a size"),
    ("deploymentStrategy.type", "recreate", "deploymentStrategy.type"),
    ("applications", [], "applications: no applications"),
    ("applications", "api", "applications"),
    ("overhead.monitoring.cpus", 9, "overhead.monitoring.cpus: 9 exceeds"),
    ("alerts.ram.above", 120, "alerts.ram.above"),
    ("alerts.ramWarn", 95, "alerts: ramWarn (95) must be below ram.above (90)"),
    ("verify.logErrors", [".*"], 'verify.logErrors[0]: ".*" matches an empty line'),
    ("verify.logErrors", ["(x"], 'verify.logErrors[0]: "(x" is not a regular expression'),
    ("verify.corsPath", "api", 'verify.corsPath: "api" is not a URL path starting with /'),
    ("monitoring.netdataConfig", "etc; rm -rf /", "monitoring.netdataConfig"),
    ("monitoring.alarmEvery", "0s", "monitoring.alarmEvery"),
    ("applications.0.migrateStatus", 5, "applications[0].migrateStatus"),
    ("offHours.envs", ["prod"], 'offHours.envs[0]: "prod" is not an environment'),
    ("offHours.start", "6am", "offHours.start"),
    ("offHours.end", "00:00", "offHours: start and end are both 00:00: no window"),
    ("offHours.replicas", 0, "offHours.replicas"),
    ("tag", "bad tag!", "tag"),
])
def test_wrong_types_and_values_are_refused(variant: Any, path: str, value: Any,
                                            expected: str) -> None:
    assert expected in _error(variant, _set(path, value))


def test_unknown_key_suggests_the_close_one(variant: Any) -> None:
    line = _error(variant, lambda d: d["applications"][0].update(replica=3))
    assert line == ('error: dokploy.yaml: applications[0].replica: unknown key "replica" '
                    '(did you mean "replicas"?)')
    line = _error(variant, lambda d: d.update(deploymentStrategey={}))
    assert 'did you mean "deploymentStrategy"?' in line
    line = _error(variant, lambda d: d["vps"].update(memroy="4g"))
    assert 'vps.memroy: unknown key "memroy" (did you mean "memory"?)' in line
    line = _error(variant, lambda d: d["postgres"]["resources"].update(cpu=1))
    assert 'postgres.resources.cpu: unknown key "cpu" (did you mean "cpus"?)' in line
    assert "did you mean" not in _error(variant, lambda d: d.update(zzzzzz=1))


def test_missing_required_key_is_named(variant: Any) -> None:
    assert _error(variant, lambda d: d.pop("vps")).endswith("vps: required key is missing")
    line = _error(variant, lambda d: d["applications"][0].pop("resources"))
    assert "applications[0].resources: required key is missing" in line


def test_duplicate_app_names_are_refused(variant: Any) -> None:
    line = _error(variant, _set("applications.1.name", "api-production"))
    assert line == ('error: dokploy.yaml: applications[1].name: "api-production" is already '
                    "the name of applications[0]")


def test_duplicate_domains_are_refused(variant: Any) -> None:
    line = _error(variant, _set("applications.1.domain", "api.v-edfinance.com"))
    assert "applications[1].domain: api.v-edfinance.com is already served by api-production" \
        in line


@pytest.mark.parametrize("name", ["api-prod", "api", "production-api", "api-production2"])
def test_app_whose_env_cannot_be_told_is_refused(variant: Any, name: str) -> None:
    line = _error(variant, _set("applications.0.name", name))
    assert f'applications[0].name: cannot tell the environment of "{name}"' in line


def test_undeclared_secret_reference_is_refused(variant: Any) -> None:
    line = _error(variant, lambda d: d["applications"][0]["environment"].append(
        "STRIPE_KEY=${STRIPE_KEY}"))
    assert line == ("error: dokploy.yaml: applications[0].environment.STRIPE_KEY: "
                    "${STRIPE_KEY} is not a declared secret of production (declare it under "
                    "secrets.production or secrets.shared)")


def test_secret_of_another_env_is_not_visible(variant: Any) -> None:
    line = _error(variant, lambda d: d["applications"][4]["environment"].append(
        "X=${JWT_SECRET_PROD}"))
    assert "${JWT_SECRET_PROD} is not a declared secret of dev" in line


def test_strategy_that_would_leave_no_replica_is_refused(variant: Any) -> None:
    line = _error(variant, lambda d: d["deploymentStrategy"].update(maxSurge=0,
                                                                    maxUnavailable=1))
    assert line == ("error: dokploy.yaml: deploymentStrategy.maxUnavailable: 1 would leave "
                    "api-staging (1 replica) with none running during an update")
    line = _error(variant, lambda d: d["deploymentStrategy"].update(maxSurge=0,
                                                                    maxUnavailable=0))
    assert "deploymentStrategy: maxSurge and maxUnavailable are both 0" in line
    line = _error(variant, lambda d: d["deploymentStrategy"].update(maxUnavailable=-1))
    assert "deploymentStrategy.maxUnavailable: -1" in line


def test_stop_first_strategy_with_room_is_accepted(variant: Any) -> None:
    def change(data: dict[str, Any]) -> None:
        data["deploymentStrategy"].update(maxSurge=0, maxUnavailable=1)
        for app in data["applications"]:
            app["replicas"] = 2
    config = variant(change)
    assert (config.deployment_strategy.order, config.deployment_strategy.parallelism) == (
        "stop-first", 1)


@pytest.mark.parametrize(("text", "expected"), [
    ("applications: [\n  {name: api-production\n", "line 3, column 1: malformed YAML"),
    ("vps:\n\tmemory: 4g\n", "line 2, column 1: malformed YAML"),
    ("a: 1\na: 2\n", 'line 2, column 1: malformed YAML: duplicate key "a"'),
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    ("- 1\n- 2\n", "the top level must be a mapping, not a list"),
    ("just words", "the top level must be a mapping, not a str"),
])
def test_malformed_files_give_one_line_with_the_line_number(tmp_path: Path, text: str,
                                                            expected: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line().startswith(f"error: {path}: ")
    assert expected in info.value.line()


def test_unknown_env_is_a_usage_error() -> None:
    config = load_config(SHIPPED)
    with pytest.raises(UsageError, match=r'unknown env "prod" \(known: dev, staging, production\)'):
        config.require_env("prod")
    with pytest.raises(UsageError) as info:
        config.require_env("prod")
    # The CLI edge adds `error: ` once; the message itself never carries it.
    assert str(info.value).startswith(f"{SHIPPED}: environments: unknown env")


def test_key_path_reads_like_the_yaml() -> None:
    assert key_path(("applications", 1, "resources", "memory")) == \
        "applications[1].resources.memory"
    assert key_path(("vps",)) == "vps"


# --- values that would change a rendered file's structure are refused (exit 2) ---

@pytest.mark.parametrize("value", ["a\nb", "line\r", "\n", "x\r\ny", "nul\x00"])
def test_line_break_in_a_list_form_env_value_is_refused_with_its_key(
        variant: Any, value: str) -> None:
    line = _error(variant, lambda d: d["applications"][0]["environment"].append(
        f"EXTRA={value}"))
    assert line.startswith("error: dokploy.yaml: applications[0].environment.EXTRA: ")
    assert "one line" in line


def test_line_break_in_a_mapping_form_env_value_is_refused_with_its_key(variant: Any) -> None:
    def change(data: dict[str, Any]) -> None:
        data["applications"][1]["environment"] = {
            "NODE_ENV": "production",
            "DATABASE_URL": "postgresql://x@postgres/db\nINJECTED=1",
        }
    line = _error(variant, change)
    assert line.startswith("error: dokploy.yaml: applications[1].environment.DATABASE_URL: ")


def test_env_key_named_like_a_pydantic_type_keeps_its_key_path(variant: Any) -> None:
    line = _error(variant, _set("applications.1.environment", {"str": "a\nb"}))
    assert line.startswith("error: dokploy.yaml: applications[1].environment.str: ")


@pytest.mark.parametrize("key", ["1ABC", "A-B", "A B", "", "Ä", "FOO\n", "A.B"])
def test_env_keys_must_be_identifiers_in_both_forms(variant: Any, key: str) -> None:
    line = _error(variant, _set("applications.1.environment", {key: "x", "OK": "y"}))
    assert "applications[1].environment: " in line and "not a valid variable name" in line
    line = _error(variant, _set("applications.1.environment", [f"{key}=x"]))
    assert "applications[1].environment: item 0: " in line
    assert "not a valid variable name" in line


def test_mapping_env_with_identifier_keys_and_scalars_loads(variant: Any) -> None:
    config = variant(_set("applications.1.environment",
                          {"_X": "a=b", "PORT": 3000, "DEBUG": False, "EMPTY": ""}))
    assert config.applications[1].environment == {
        "_X": "a=b", "PORT": "3000", "DEBUG": "false", "EMPTY": ""}


@pytest.mark.parametrize("email", [
    "ops", "ops@", "@v-edfinance.com", "ops @v-edfinance.com", "ops@v-edfinance.com }",
    "ops@v-edfinance.com\nadmin on", "{ops}@v-edfinance.com", "ops@@v-edfinance.com",
    "ops@localhost", "ops@-bad.com", "a..b@v-edfinance.com", "", "ops@v-edfinance.com\n",
])
def test_edge_email_that_is_not_an_address_is_refused(variant: Any, email: str) -> None:
    line = _error(variant, _set("edge.email", email))
    assert line.startswith("error: dokploy.yaml: edge.email: ")
    assert "not an email address" in line


@pytest.mark.parametrize("user", ["Deployer", "x;y", "it's", "1deploy", "-deploy", "", "de ploy",
                                  "deployer\n", "a" * 33, "dépl"])
def test_a_remote_user_that_is_not_a_posix_user_name_is_refused(variant: Any, user: str) -> None:
    """It reaches host.prepare's shell, the sudoers line and chown."""
    line = _error(variant, _set("remote.user", user))
    assert line.startswith("error: dokploy.yaml: remote.user: ")
    assert "is not a user name (^[a-z_][a-z0-9_-]{0,31}$" in line


@pytest.mark.parametrize("user", ["deployer", "root", "_ci", "ci-deploy", "a" * 32, "u1_x-"])
def test_posix_user_names_load_as_remote_user(variant: Any, user: str) -> None:
    assert variant(_set("remote.user", user)).remote.user == user


@pytest.mark.parametrize("email", ["ops@v-edfinance.com", "first.last+tag@mail.example.org",
                                   "OPS_1@Example.COM"])
def test_edge_email_addresses_load(variant: Any, email: str) -> None:
    assert variant(_set("edge.email", email)).edge.email == email


@pytest.mark.parametrize(("name", "why"), [
    ("Vedfinance_dev", "lower-case"), ("vedfinance-dev", "lower-case"),
    ("1db", "lower-case"), ("db name", "lower-case"), ("vedfinance_dev\n", "lower-case"),
    ("a" * 64, "at most 63"), ("user", "reserved word"), ("select", "reserved word"),
    ("table", "reserved word"), ("verbose", "reserved word"), ("", "lower-case"),
])
def test_database_names_must_be_lower_case_non_reserved_identifiers(
        variant: Any, name: str, why: str) -> None:
    line = _error(variant, _set("environments.dev.database", name))
    assert line.startswith("error: dokploy.yaml: environments.dev.database: ")
    assert why in line


@pytest.mark.parametrize("name", ["_db", "vedfin_2", "a" * 63, "users", "name", "int"])
def test_database_names_that_postgres_keeps_as_written_load(variant: Any, name: str) -> None:
    assert variant(_set("environments.dev.database", name)).environments["dev"].database == name


@pytest.mark.parametrize("tag", ["v1\n", "v1 ", ".v1", "-v1", "a" * 129, "", "v1:2", "ü"])
def test_config_tag_follows_the_one_tag_rule(variant: Any, tag: str) -> None:
    line = _error(variant, _set("tag", tag))
    assert line.startswith("error: dokploy.yaml: tag: ")
    assert "is not a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})" in line


def test_env_whose_apps_have_no_domain_is_refused_unless_allowed(variant: Any) -> None:
    def no_dev_domains(data: dict[str, Any]) -> None:
        for app in data["applications"][4:]:
            app.pop("domain", None)
    line = _error(variant, no_dev_domains)
    assert line.startswith("error: dokploy.yaml: environments.dev: ")
    assert "verify.allowNoChecks: true" in line

    def allowed(data: dict[str, Any]) -> None:
        no_dev_domains(data)
        data["verify"] = {"allowNoChecks": True}
    config = variant(allowed)
    assert config.verify.allow_no_checks is True
    assert variant(lambda d: None).verify.allow_no_checks is False
    assert "verify.allowNoCheck" in _error(variant, lambda d: d.update(
        verify={"allowNoCheck": True}))
    assert "verify.allowNoChecks" in _error(variant, lambda d: d.update(
        verify={"allowNoChecks": "yes"}))


def test_env_with_one_app_with_a_domain_is_enough(variant: Any) -> None:
    config = variant(lambda d: d["applications"][5].pop("domain"))  # web-dev
    assert [a.name for a in config.apps("dev") if a.domain] == ["api-dev"]


def test_tls_internal_needs_a_ca_root(variant: Any) -> None:
    line = _error(variant, lambda d: d["edge"].update(tls="internal"))
    assert line.startswith("error: dokploy.yaml: edge.caRoot: ")
    assert "tls: internal" in line


def test_ca_root_is_resolved_against_the_config_files_folder(
        shipped_data: dict[str, Any], tmp_path: Path) -> None:
    import yaml

    data = dict(shipped_data, edge={"tls": "internal", "caRoot": "pki/root.crt"})
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "dokploy.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path).edge.ca_root == str(tmp_path / "conf" / "pki" / "root.crt")
    data["edge"]["caRoot"] = "/etc/ssl/edge-root.pem"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path).edge.ca_root == "/etc/ssl/edge-root.pem"
    assert load_config(SHIPPED).edge.ca_root is None


@pytest.mark.parametrize("ca_root", ["", "a\nb", 5])
def test_bad_ca_root_is_refused(variant: Any, ca_root: Any) -> None:
    line = _error(variant, lambda d: d["edge"].update(caRoot=ca_root))
    assert line.startswith("error: dokploy.yaml: edge.caRoot: ")


def test_runbook_snippet_still_loads_with_envs_that_have_no_apps() -> None:
    config = load_config(RUNBOOK_SNIPPET)
    assert config.apps("dev") == [] and config.verify.allow_no_checks is False


def test_user_keys_named_like_pydantic_types_keep_their_key_path(variant: Any) -> None:
    line = _error(variant, lambda d: d["secrets"]["shared"].update({"str": 5}))
    assert line.startswith("error: dokploy.yaml: secrets.shared.str: ")
    line = _error(variant, lambda d: d["overhead"].update({"int": {"memory": "1m", "cpus": 1}}))
    assert line.startswith("error: dokploy.yaml: overhead.int.memory: ")


def test_two_envs_naming_one_database_are_refused(variant: Any) -> None:
    """One database for two envs: their locks would not serialize its backups, and a restore
    of the lesser env would replace the other's data without `--yes`."""
    line = _error(variant, _set("environments.staging.database", "vedfinance_prod"))
    assert line == ('error: dokploy.yaml: environments.production.database: '
                    '"vedfinance_prod" is already the database of staging: each env needs '
                    'its own (locks, backups and restores are per env)')


@pytest.mark.parametrize("name", ["../etc", "prod;x", "Prod Env", "prod-", "-prod", "prod--x",
                                  "1prod", "prod_x", "prod\n", "", "pröd", "a/b"])
def test_an_env_name_that_is_not_a_plain_name_is_refused_saying_why(variant: Any,
                                                                    name: str) -> None:
    """An env name becomes a stack name, a folder and a cron script's name on the host: even
    an env with no apps (its name is then in no app's name) must follow the rule."""
    line = _error(variant, lambda d: d["environments"].update({name: {"database": "qa_db"}}))
    assert line == ConfigError("dokploy.yaml", f"environments.{name}", (
        f"{show(name)} is not an environment name: lower-case letters and digits, words "
        f"joined by single hyphens, starting with a letter (it names stacks, folders and "
        f"cron scripts on the host)")).line()


@pytest.mark.parametrize(("name", "why"), [
    ("cluster", "cluster runs lock and audit under it"),
    ("shared", "secrets.shared is every env's scope"),
    ("backups", "<remote.baseDir>/backups holds the backups"),
    ("bin", "<remote.baseDir>/bin holds the cron scripts"),
])
def test_an_env_named_like_the_tools_own_folders_is_refused(variant: Any, name: str,
                                                            why: str) -> None:
    line = _error(variant, lambda d: d["environments"].update({name: {"database": "qa_db"}}))
    assert line == f"error: dokploy.yaml: environments.{name}: a reserved name ({why})"


def test_an_env_without_apps_and_with_a_plain_name_loads(variant: Any) -> None:
    config = variant(lambda d: d["environments"].update({"qa-2": {"database": "qa_db"}}))
    assert config.apps("qa-2") == [] and config.environments["qa-2"].database == "qa_db"


def test_a_bad_key_of_a_users_mapping_names_the_rule_not_itself(variant: Any) -> None:
    line = _error(variant, lambda d: d["overhead"].update({"Big X": {"memory": "8m",
                                                                     "cpus": 0.1}}))
    assert line == ('error: dokploy.yaml: overhead.Big X: "Big X" is not a valid key of '
                    'overhead (^[a-z][a-z0-9]*(-[a-z0-9]+)*$)')
