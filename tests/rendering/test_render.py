"""What render writes follows DESIGN.md's swarm rules; secret values only reach env files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from tests.conftest import SHIPPED
from vedfin_ops import load_config, render
from vedfin_ops.rendering.files import _template, monitor_seconds, placeholder

SECRETS = {"POSTGRES_PASSWORD": "pg-Sup3r$ecret", "JWT_SECRET_PROD": "jwt-6f1e0c9d",
           "GEMINI_API_KEY": "gemini-key-42"}


@pytest.fixture(scope="module")
def prod() -> Any:
    return render(load_config(SHIPPED), "production", tag="v1.2.3", secrets=SECRETS)


def _stack(files: Any, name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(files[f"stacks/{name}.yml"])
    return data


def test_render_for_one_env_writes_its_stack_and_the_shared_files(prod: Any) -> None:
    assert sorted(prod) == [
        "db/init-db.sql", "edge/Caddyfile", "env/api-production.env", "env/postgres.env",
        "env/web-production.env", "monitoring/health_alarm_notify.conf",
        "monitoring/netdata-health.conf", "monitoring/vedfin-restarts.plugin",
        "stacks/production.yml", "stacks/shared.yml"]


def test_render_without_env_covers_every_env() -> None:
    files = render(load_config(SHIPPED))
    assert {"stacks/dev.yml", "stacks/staging.yml", "stacks/production.yml",
            "env/api-dev.env", "env/web-staging.env"} <= set(files)


def test_app_services_follow_the_swarm_rules(prod: Any) -> None:
    stack = _stack(prod, "production")
    assert stack["version"] == "3.8"
    api = stack["services"]["api-production"]
    assert api["image"] == "ghcr.io/v-edfinance/api:v1.2.3"
    deploy = api["deploy"]
    assert deploy["replicas"] == 2 and deploy["endpoint_mode"] == "dnsrr"
    assert deploy["resources"]["limits"] == {"cpus": "1.5", "memory": "1536M"}
    update = deploy["update_config"]
    assert update == {"parallelism": 1, "order": "start-first", "failure_action": "rollback",
                      "monitor": "26s", "delay": "0s"}
    assert deploy["rollback_config"]["order"] == "start-first"
    assert deploy["rollback_config"]["monitor"] == update["monitor"]
    health = api["healthcheck"]
    assert "/api/health" in " ".join(health["test"])
    # monitor must let the checks fail a task that was healthy once: retries x (5 s + 3 s)
    assert float(update["monitor"][:-1]) > 3 * (5 + 3)
    web = stack["services"]["web-production"]
    assert web["deploy"]["resources"]["limits"] == {"cpus": "1", "memory": "1024M"}
    assert web["healthcheck"]["test"][0] == "CMD-SHELL"
    for service in stack["services"].values():
        assert not {"depends_on", "restart", "container_name", "build", "ports"} & set(service)
        for key in ("interval", "timeout", "start_period"):
            assert isinstance(service["healthcheck"][key], str)


def test_max_surge_zero_renders_stop_first(shipped_data: dict[str, Any]) -> None:
    import copy

    from vedfin_ops.config.loader import config_from_dict
    data = copy.deepcopy(shipped_data)
    data["deploymentStrategy"] = {"type": "rolling", "maxSurge": 0, "maxUnavailable": 1}
    for app in data["applications"]:
        app["replicas"] = 2
    stack = _stack(render(config_from_dict(data), "production"), "production")
    update = stack["services"]["api-production"]["deploy"]["update_config"]
    assert (update["order"], update["parallelism"]) == ("stop-first", 1)


def test_postgres_is_stop_first_private_and_preloads_pg_stat_statements(prod: Any) -> None:
    shared = _stack(prod, "shared")
    pg = shared["services"]["postgres"]
    assert pg["image"] == "pgvector/pgvector:pg17"
    assert pg["deploy"]["update_config"]["order"] == "stop-first"
    assert pg["deploy"]["rollback_config"]["order"] == "stop-first"
    assert pg["stop_grace_period"] == "30s"
    assert "ports" not in pg and "ports" not in shared["services"]["redis"]
    assert pg["deploy"]["resources"]["limits"] == {"cpus": "1", "memory": "1024M"}
    assert "shared_preload_libraries=pg_stat_statements" in pg["command"]
    assert pg["healthcheck"]["test"] == ["CMD", "pg_isready", "-U", "postgres"]
    assert shared["services"]["redis"]["deploy"]["resources"]["limits"] == {
        "cpus": "0.25", "memory": "256M"}


def test_only_the_edge_publishes_ports_in_host_mode(prod: Any) -> None:
    shared = _stack(prod, "shared")
    ports = shared["services"]["edge"]["ports"]
    assert {(p["published"], p["mode"]) for p in ports} == {(80, "host"), (443, "host")}
    assert shared["networks"]["shared"]["attachable"] is True


def test_configs_get_a_new_name_when_their_content_changes(variant: Any) -> None:
    before = _stack(render(variant(lambda d: None), "production"), "shared")["configs"]
    after = _stack(render(variant(lambda d: d["applications"][1].update(
        additionalDomains=["www2.v-edfinance.com"])), "production"), "shared")["configs"]
    assert before["caddyfile"]["name"] != after["caddyfile"]["name"]
    assert before["init_db"]["name"] == after["init_db"]["name"]


def test_secret_values_are_only_in_env_files(prod: Any) -> None:
    for path, text in prod.items():
        holds = [v for v in SECRETS.values() if v in text]
        if path.startswith("env/"):
            continue
        assert holds == [], path
    assert f"POSTGRES_PASSWORD={SECRETS['POSTGRES_PASSWORD']}" in prod["env/postgres.env"]
    api_env = prod["env/api-production.env"]
    assert ("DATABASE_URL=postgresql://postgres:pg-Sup3r$ecret@postgres:5432/vedfinance_prod"
            in api_env)
    assert "JWT_SECRET=jwt-6f1e0c9d" in api_env
    assert "R2_BUCKET_NAME=v-edfinance-backup" in api_env


def test_missing_secrets_get_placeholders_and_are_listed(prod: Any) -> None:
    assert "JWT_REFRESH_SECRET_PROD" in prod.missing_secrets
    assert "POSTGRES_PASSWORD" not in prod.missing_secrets
    assert f"R2_ACCOUNT_ID={placeholder('R2_ACCOUNT_ID')}" in prod["env/api-production.env"]
    assert prod.is_secret("env/api-production.env") and not prod.is_secret("stacks/shared.yml")


def test_init_db_creates_each_database_and_extension_idempotently(prod: Any) -> None:
    sql = prod["db/init-db.sql"]
    for db in ("vedfinance_dev", "vedfinance_staging", "vedfinance_prod"):
        assert f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}')\\gexec" in sql
        assert f"\\connect {db}" in sql
    assert sql.count("CREATE EXTENSION IF NOT EXISTS vector;") == 3
    assert sql.count("CREATE EXTENSION IF NOT EXISTS pg_stat_statements;") == 3


def test_caddyfile_serves_every_domain_and_redirects_www_to_apex(prod: Any) -> None:
    caddy = prod["edge/Caddyfile"]
    for domain in ("api.v-edfinance.com", "v-edfinance.com", "api.staging.v-edfinance.com",
                   "dev.v-edfinance.com"):
        assert f"\n{domain} {{" in caddy
    assert "www.v-edfinance.com {\n\tredir https://v-edfinance.com{uri} permanent" in caddy
    assert "name api-production\n\t\t\tport 3000" in caddy
    assert "email ops@v-edfinance.com" in caddy


def test_caddyfile_without_tls_redirects_to_the_public_port(variant: Any) -> None:
    config = variant(lambda d: d.update(edge={"tls": "off", "httpPort": 8080}))
    caddy = render(config, "production")["edge/Caddyfile"]
    assert "auto_https off" in caddy
    assert "http://www.v-edfinance.com {\n\tredir http://v-edfinance.com:8080{uri}" in caddy
    edge = _stack(render(config, "production"), "shared")["services"]["edge"]
    assert [p["published"] for p in edge["ports"]] == [8080]


def test_netdata_alarms_carry_the_runbook_thresholds(prod: Any) -> None:
    alarms = prod["monitoring/netdata-health.conf"]
    assert "lookup: average -5m unaligned of user,system" in alarms
    assert "warn: $this > 85\n    crit: $this > 90\n" in alarms  # RAM
    assert "on: disk.space" in alarms
    assert 'DEFAULT_RECIPIENT_EMAIL=ops@v-edfinance.com' in prod[
        "monitoring/health_alarm_notify.conf"]


def test_values_that_look_like_yaml_stay_strings(variant: Any) -> None:
    from vedfin_ops.errors import ConfigError
    with pytest.raises(ConfigError, match=r"applications\[0\].image: \"team/api: yes\""):
        variant(lambda d: d["applications"][0].update(image="team/api: yes"))
    config = variant(lambda d: d.update(tag="1e3"))
    stack = _stack(render(config, "production"), "production")
    assert stack["services"]["api-production"]["image"] == "vedfinance/api:1e3"


def test_templates_refuse_undefined_variables() -> None:
    with pytest.raises(jinja2.UndefinedError):
        _template("app.env.j2").render(header="h")


def test_monitor_outlasts_the_checks_that_fail_a_task_healthy_once() -> None:
    """A task runs only once healthy: the window must let its checks fail it from there
    (retries, each a timeout and an interval apart), its start period already behind it."""
    config = load_config(SHIPPED)
    health = config.applications[0].health
    assert monitor_seconds(health) > health.retries * (health.interval + health.timeout)
    assert monitor_seconds(health.model_copy(update={"start_period": 300.0})) == \
        monitor_seconds(health)


# --- strings the stack loader would substitute, tags that would change a file ---

def _undollar(value: Any) -> Any:
    """What `docker stack deploy` makes of a loaded value: `$$` -> `$`."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    return [_undollar(v) for v in value]


def test_dollar_in_stack_strings_is_doubled_and_env_files_keep_it(variant: Any) -> None:
    def change(data: dict[str, Any]) -> None:
        data["applications"][0]["healthcheck"] = {"command": ["sh", "-c", "test $HOME = /"]}
        data["applications"][1]["healthcheck"] = {"path": "/health?x=$y"}
        data["applications"][1]["environment"].append("GREETING=cost: $5 $HOME x")
        data["postgres"]["image"] = "registry.local/$ORG/pgvector:pg17"
        data["postgres"]["healthcheck"] = {"command": ["pg_isready", "-d", "$DB"]}
        data["redis"] = {"image": "redis:$TAG"}
        data["edge"] = {"image": "caddy:${EDGE}", "tls": "auto"}
    files = render(variant(change), "production")
    stack = _stack(files, "production")["services"]
    assert stack["api-production"]["healthcheck"]["test"] == [
        "CMD", "sh", "-c", "test $$HOME = /"]
    web_test = stack["web-production"]["healthcheck"]["test"]
    assert "/health?x=$$y" in web_test[1] and "$y" not in web_test[1].replace("$$", "")
    shared = _stack(files, "shared")["services"]
    assert shared["postgres"]["image"] == "registry.local/$$ORG/pgvector:pg17"
    assert shared["postgres"]["healthcheck"]["test"] == ["CMD", "pg_isready", "-d", "$$DB"]
    assert shared["redis"]["image"] == "redis:$$TAG"
    assert shared["edge"]["image"] == "caddy:$${EDGE}"
    assert _undollar(shared["edge"]["image"]) == "caddy:${EDGE}"
    # env files are read by env_file, which substitutes nothing: `$` stays single there
    assert "GREETING=cost: $5 $HOME x\n" in files["env/web-production.env"]


def test_stack_files_of_the_shipped_config_hold_no_lone_dollar() -> None:
    files = render(load_config(SHIPPED))
    for path, text in files.items():
        if path.startswith("stacks/"):
            body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
            assert "$" not in body.replace("$$", ""), path


@pytest.mark.parametrize("tag", ["v1\n", "v1 2", "", "-x", ".x", "a" * 129, "v1\r", "ü"])
def test_render_refuses_a_tag_outside_the_one_rule(tag: str) -> None:
    from vedfin_ops.errors import UsageError
    config = load_config(SHIPPED)
    with pytest.raises(UsageError) as info:
        render(config, "production", tag=tag)
    message = str(info.value)
    assert message.startswith("--tag: ") and not message.startswith("error: ")
    assert message.endswith("is not a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})")


@pytest.mark.parametrize("tag", ["v1", "1e3", "_", "a" * 128, "V1.2-rc_3"])
def test_render_takes_any_tag_in_docker_grammar(tag: str) -> None:
    stack = _stack(render(load_config(SHIPPED), "production", tag=tag), "production")
    assert stack["services"]["api-production"]["image"] == f"ghcr.io/v-edfinance/api:{tag}"


def test_render_without_a_tag_uses_the_configs(variant: Any) -> None:
    stack = _stack(render(variant(lambda d: d.update(tag="v9")), "production"), "production")
    assert stack["services"]["web-production"]["image"] == "vedfinance/web:v9"


def test_header_stays_one_comment_line_whatever_the_file_name(variant: Any) -> None:
    config = variant(lambda d: None)
    config._source = "evil\nservices: {}\n.yaml"
    files = render(config, "production")
    for path in ("stacks/production.yml", "stacks/shared.yml", "edge/Caddyfile"):
        assert "\nservices: {}\n" not in files[path], path
    assert set(_stack(files, "production")["services"]) == {"api-production", "web-production"}


def test_an_acme_ca_is_an_explicit_issuer_per_site_with_its_root_shipped(
        shipped_data: dict[str, Any], tmp_path: Path) -> None:
    import copy

    from vedfin_ops.config.loader import config_from_dict
    from vedfin_ops.errors import ConfigError

    root = tmp_path / "acme-root.pem"
    root.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    data = copy.deepcopy(shipped_data)
    data["edge"] = {**data["edge"], "acmeCA": "https://acme.internal:14000/dir",
                    "acmeCARoot": "acme-root.pem"}
    files = render(config_from_dict(data, str(tmp_path / "dokploy.yaml")))
    caddyfile = files["edge/Caddyfile"]
    assert caddyfile.count("issuer acme {") == 7  # 6 domains of 3 envs, and www
    assert "dir https://acme.internal:14000/dir" in caddyfile
    assert "trusted_roots /etc/caddy/acme-ca-root.pem" in caddyfile
    assert files["edge/acme-ca-root.pem"] == root.read_text()
    shared = yaml.safe_load(files["stacks/shared.yml"])
    assert {"source": "acme_ca_root", "target": "/etc/caddy/acme-ca-root.pem"} in \
        shared["services"]["edge"]["configs"]
    assert shared["configs"]["acme_ca_root"]["file"] == "../edge/acme-ca-root.pem"
    assert "issuer acme" not in render(config_from_dict(copy.deepcopy(shipped_data),
                                                        "d.yaml"))["edge/Caddyfile"]
    root.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"edge\.acmeCARoot: .* holds no PEM certificate"):
        render(config_from_dict(data, str(tmp_path / "dokploy.yaml")))
    data["edge"]["acmeCA"] = "http://plain.example/dir"
    with pytest.raises(ConfigError, match=r"edge\.acmeCA"):
        config_from_dict(data, str(tmp_path / "dokploy.yaml"))


def test_images_the_registry_pinned_are_deployed_by_digest_never_by_tag() -> None:
    """With a registry, deploy resolves each image to its digest first (deploy/images): the
    stack file must name that digest, or the engine would run whatever the tag names when it
    pulls (a tag moved meanwhile, a digest set by hand) and call it this release."""
    config = load_config(SHIPPED)
    digest = {"api-production": "sha256:" + "a" * 64, "web-production": "sha256:" + "b" * 64}
    pins = {f"{app.image_repo}:v7": f"{app.image_repo}:v7@{digest[app.name]}"
            for app in config.apps("production")}  # as resolve_pins keys them
    stack = _stack(render(config, "production", tag="v7", secrets=SECRETS, pins=pins),
                   "production")
    assert {name: svc["image"] for name, svc in stack["services"].items()} == {
        "api-production": f"ghcr.io/v-edfinance/api:v7@{digest['api-production']}",
        "web-production": f"ghcr.io/v-edfinance/web-production:v7@{digest['web-production']}"}
    other = _stack(render(config, "production", tag="v8", secrets=SECRETS, pins=pins),
                   "production")  # pins of another tag: never a digest that was not asked for
    assert other["services"]["api-production"]["image"] == "ghcr.io/v-edfinance/api:v8"


def test_each_app_gets_its_own_stop_grace_period_after_sigterm() -> None:
    """An app whose requests or keep-alive outlast 10 s says so; the others keep 10 s."""
    from vedfin_ops.config.loader import config_from_dict

    data = yaml.safe_load(SHIPPED.read_text())
    data["applications"][0]["stopGracePeriod"] = "25s"
    files = render(config_from_dict(data, str(SHIPPED)), "production", tag="v1",
                   secrets=SECRETS)
    services = _stack(files, "production")["services"]
    assert services["api-production"]["stop_grace_period"] == "25s"
    assert services["web-production"]["stop_grace_period"] == "10s"
    assert "stop_signal" not in services["api-production"]  # SIGTERM, the engine's default
