"""The deployment files and production settings: the compose file parses and mirrors the Procfile, the
image is hardened, and `check --deploy` is clean with production settings."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys

import pytest
import yaml
from cryptography.fernet import Fernet

from orchestrator.embedded import PROJECT_DIR
from tests.processes import PROCFILE

COMPOSE = PROJECT_DIR / "docker" / "compose.yaml"
DOCKERFILE = PROJECT_DIR / "docker" / "Dockerfile"
ONE_SHOT_JOBS = {"migrate", "topics"}
SERVERS = {"postgres", "redpanda", "redis"}


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as docker-compose resolves it (anchors, merges, variables), without an engine."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's docker-compose)")
    resolved = subprocess.run(
        [binary, "-f", str(COMPOSE), "config"], env=compose_env(), capture_output=True, text=True, check=True
    )
    return yaml.safe_load(resolved.stdout)


COMPOSE_SECRETS = ("SECRET_KEY", "SECRETS_ENCRYPTION_KEYS", "POSTGRES_PASSWORD", "REDIS_PASSWORD")


def compose_env(**overrides: str) -> dict[str, str]:
    secrets_ = {name: secrets.token_hex(16) for name in COMPOSE_SECRETS}
    return {**os.environ, **secrets_, "SECRETS_ENCRYPTION_KEYS": Fernet.generate_key().decode(), **overrides}


@pytest.mark.parametrize("missing", COMPOSE_SECRETS)
def test_compose_refuses_to_start_without_each_secret_naming_it(missing):
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's docker-compose)")
    env = compose_env()
    del env[missing]

    result = subprocess.run([binary, "-f", str(COMPOSE), "config"], env=env, capture_output=True, text=True)

    assert result.returncode != 0
    assert missing in result.stderr


def test_no_server_runs_with_a_default_password(compose):
    services = compose["services"]
    app_env = services["web"]["environment"]

    assert "orchestrator:orchestrator@" not in app_env["DATABASE_URL"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] in app_env["DATABASE_URL"]
    redis_password = services["redis"]["environment"]["REDISCLI_AUTH"]
    assert ["--requirepass", redis_password] == services["redis"]["command"][-2:]
    assert app_env["REDIS_URL"] == f"redis://:{redis_password}@redis:6379/0"


def test_the_compose_file_runs_every_procfile_process_as_its_own_service(compose):
    services = compose["services"]
    processes = {name for name, service in services.items() if "build" in service} - ONE_SHOT_JOBS

    assert processes == set(PROCFILE)
    for name, command_line in PROCFILE.items():
        compose_command = " ".join(services[name]["command"])
        fixed_words = [w for w in command_line.split() if "$" not in w and not w.startswith("PROCESS_NAME=")]
        assert all(word in compose_command.split() for word in fixed_words), (name, compose_command)
        assert services[name]["environment"]["PROCESS_NAME"] == name
        assert services[name]["environment"]["DEBUG"] == "false"


def test_one_proxy_is_the_public_origin_routing_sockets_to_realtime_and_the_rest_to_web(compose):
    proxy = compose["services"]["proxy"]
    nginx = (PROJECT_DIR / "docker" / "nginx.conf").read_text()
    locations = dict(re.findall(r"location (\S+) \{(.*?)\n    \}", nginx, re.DOTALL))

    assert [port["target"] for port in proxy["ports"]] == [8080]
    assert any("docker/nginx.conf:/etc/nginx/conf.d/default.conf" in str(volume) for volume in proxy["volumes"])
    assert "proxy_pass http://realtime;" in locations["/ws/"]
    assert "proxy_set_header Upgrade $http_upgrade;" in locations["/ws/"]
    assert "proxy_pass http://$api;" in locations["/"]  # web, or realtime for Prefer: wait
    assert "server web:8000;" in nginx and "server realtime:8001;" in nginx
    assert all("ports" not in compose["services"][name] for name in PROCFILE)  # only the proxy is published


def test_processes_start_only_once_servers_are_healthy_and_jobs_have_run(compose):
    services = compose["services"]

    for server in SERVERS:
        assert services[server]["healthcheck"]["test"], server
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["topics"]["depends_on"] == {"redpanda": {"condition": "service_healthy"}}
    for name in PROCFILE:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["topics"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert "createtopics" in services["topics"]["command"]
    for name in ("relay", "generator", "delivery"):  # no HTTP: their work loops beat
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "orchestrator.liveness", name, "60"]


def test_every_service_has_resource_limits(compose):
    for name, service in compose["services"].items():
        assert float(service["cpus"]) > 0, name
        assert str(service["mem_limit"]).rstrip("mgMG").isdigit(), name
    # Redpanda gets more memory than it is told to use (--memory=1G), or the kernel kills it first.
    assert "--memory=1G" in compose["services"]["redpanda"]["command"]
    assert compose["services"]["redpanda"]["mem_limit"] == "1536m"


def redpanda_is_durable(command: list[str]) -> bool:
    """Developer mode off (so acknowledged writes are fsynced), no development mode preset."""
    return "--set=redpanda.developer_mode=false" in command and not any("--mode" in word for word in command)


def test_redpanda_runs_in_production_mode(compose):
    assert redpanda_is_durable(compose["services"]["redpanda"]["command"])


def test_the_three_broker_variant_replicates_every_topic_three_times(compose):
    binary = shutil.which("docker-compose")
    cluster = PROJECT_DIR / "docker" / "compose.redpanda-cluster.yaml"
    resolved = subprocess.run(
        [binary, "-f", str(COMPOSE), "-f", str(cluster), "config"],
        env=compose_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    services = yaml.safe_load(resolved.stdout)["services"]
    brokers = ["redpanda", "redpanda-1", "redpanda-2"]

    for broker in brokers:
        command = services[broker]["command"]
        assert redpanda_is_durable(command), broker
        assert "--seeds=redpanda:33145,redpanda-1:33145,redpanda-2:33145" in command, broker
        assert f"--advertise-kafka-addr=internal://{broker}:9092" in command, broker
    volumes = [str(services[broker]["volumes"]) for broker in brokers]
    assert len({v.split(":")[0] for v in volumes}) == 3  # a disk each
    for name in [*PROCFILE, *ONE_SHOT_JOBS]:
        env = services[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "redpanda:9092,redpanda-1:9092,redpanda-2:9092", name
        assert (env["KAFKA_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2"), name
        assert env["SECRET_KEY"] and env.get("PROCESS_NAME", name) == name  # the rest of it is kept
    assert set(services["topics"]["depends_on"]) == set(brokers)


def test_the_image_is_multi_stage_pinned_non_root_and_health_checked():
    dockerfile = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)

    assert len(bases) >= 2  # a build stage and a slim runtime stage
    assert all(re.search(r":\d+\.\d+\.\d+", base) for base in bases), bases  # pinned, never :latest
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.MULTILINE)


def production_env(**overrides: str) -> dict[str, str]:
    unset = ("DEBUG", "SECRET_KEY", "SECRETS_ENCRYPTION_KEYS", "WEBHOOK_ALLOWED_NETWORKS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return {
        **env,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "SECRETS_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "PUBLIC_BASE_URL": "https://lifecycles.example.com",
        **overrides,
    }


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("missing", ["SECRET_KEY", "SECRETS_ENCRYPTION_KEYS"])
def test_production_refuses_to_start_without_each_secret_naming_it(missing):
    env = production_env()
    del env[missing]

    result = manage("check", env=env)

    assert result.returncode != 0
    assert f"{missing} is required" in result.stderr


def test_production_defaults_are_strict():
    script = (
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.WEBHOOK_ALLOWED_NETWORKS, s.SESSION_COOKIE_SECURE, "
        "s.SECURE_HSTS_SECONDS > 0, s.ALLOWED_HOSTS)"
    )

    result = manage("shell", "-c", script, env=production_env())

    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "False [] True True ['lifecycles.example.com', '127.0.0.1', 'localhost']"
