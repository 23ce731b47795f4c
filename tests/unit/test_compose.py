"""compose.yaml: valid against the Compose specification, and everything it names exists.
(No Docker engine runs here, so this is the check we can make.)"""

import importlib.util
import json
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from agent import cli as agent_cli
from fleetline.cli import build_parser
from fleetline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).resolve().parent / "data" / "compose-spec.json"  # see data/README.md
AGENT_SETTINGS = {"FLEETLINE_AGENT_SERVER", "FLEETLINE_AGENT_REGISTRATION_TOKEN", "FLEETLINE_AGENT_STATE_DIR",
                  "FLEETLINE_AGENT_MACHINE_ID", "FLEETLINE_AGENT_ALLOW_SHELL", "FLEETLINE_AGENT_LOG_LEVEL"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_validates_against_the_specification(compose):
    jsonschema.Draft7Validator(json.loads(SPEC.read_text())).validate(compose)


def test_the_shape_operators_expect(compose):
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "auth", "dispatch", "gateway", "agent"} <= set(services)
    assert services["dispatch"]["deploy"]["replicas"] == 2
    assert [name for name, s in services.items() if s.get("ports")] == ["gateway"]
    for name in ("auth", "dispatch"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["FLEETLINE_RATE_LIMIT_STORAGE_FILE"] == "/run/secrets/redis_url"
    for name in ("auth", "dispatch", "gateway"):
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
    text = (ROOT / "compose.yaml").read_text()
    assert "BEGIN PRIVATE KEY" not in text and "POSTGRES_PASSWORD:" not in text


def test_the_wire_is_tls_and_agents_reach_only_the_gateway(compose):
    services, networks = compose["services"], compose["networks"]
    gateway = services["gateway"]
    assert gateway["environment"]["FLEETLINE_TLS_CERT_FILE"] and gateway["environment"]["FLEETLINE_TLS_KEY_FILE"]
    assert "FLEETLINE_ALLOW_PLAINTEXT" not in gateway["environment"]
    assert "https://" in " ".join(gateway["healthcheck"]["test"])
    agent = services["agent"]["command"]
    assert agent[agent.index("--server") + 1].startswith("https://")
    assert "--ca-file" in agent and "--root-key-file" in agent and "--insecure-http" not in agent
    assert services["console"]["environment"]["FLEETLINE_CONSOLE_API_URL"].startswith("https://")
    # Agents and the enrolment job on the edge only; the backend has no route out.
    assert services["agent"]["networks"] == ["edge"] and services["enroll"]["networks"] == ["edge"]
    assert networks["backend"]["internal"] is True
    assert set(gateway["networks"]) == {"edge", "backend"}
    for name in ("postgres", "redis", "migrate", "auth", "dispatch", "console"):
        assert services[name]["networks"] == ["backend"], name


def test_redis_has_a_password_and_services_are_not_the_database_owner(compose):
    services = compose["services"]
    assert services["redis"]["command"] == ["redis-server", "/run/secrets/redis_conf"]
    assert "--requirepass" not in " ".join(services["redis"]["command"])  # not in argv
    for name in ("auth", "dispatch"):
        assert services[name]["environment"]["FLEETLINE_DATABASE_URL_FILE"] == "/run/secrets/service_database_url"
        assert "database_url" not in services[name]["secrets"]
    migrate = services["migrate"]
    assert migrate["environment"]["FLEETLINE_DATABASE_URL_FILE"] == "/run/secrets/database_url"
    assert migrate["environment"]["FLEETLINE_SERVICE_DATABASE_PASSWORD_FILE"]


def test_commands_and_settings_name_things_that_exist(compose):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    known_env = Settings().env_names() | AGENT_SETTINGS
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        command = service["command"]
        argv = command if isinstance(command, list) else shlex.split(command)
        if argv[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(argv[2] + ".__main__"), (name, argv)
        elif argv[0] == "fleetline":
            assert "fleetline" in scripts
            build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown option
        elif argv[0] == "fleetline-agent":
            assert scripts["fleetline-agent"] == "agent.cli:main"
            agent_cli.build_parser().parse_args(argv[1:])
        else:
            pytest.fail(f"{name}: unknown entry point {argv[0]}")
        for var in service.get("environment", {}):
            if var.startswith("FLEETLINE_"):
                base = var.removesuffix("_FILE")
                assert var in known_env or base in known_env, (name, var)
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], (name, secret)


def test_secret_files_are_the_ones_fleetline_secrets_creates(compose, tmp_path):
    from fleetline.cli import main

    assert main(["secrets", str(tmp_path)]) == 0
    public = {"ca.pem", "gateway.pem", "command-root.pub"}  # nothing secret in them
    for secret in compose["secrets"].values():
        path = tmp_path / Path(secret["file"]).relative_to("secrets")
        assert path.exists(), secret["file"]
        assert path.stat().st_mode & 0o777 == (0o644 if path.name in public else 0o600), secret["file"]
    assert "redis://:" in (tmp_path / "redis-url").read_text()
    assert (tmp_path / "service-database-url").read_text().startswith("postgresql://fleetline_app:")


def test_the_trusted_gateway_address_is_outside_the_dynamic_range(compose):
    import ipaddress

    pool = compose["networks"]["backend"]["ipam"]["config"][0]
    fixed = ipaddress.ip_address(compose["services"]["gateway"]["networks"]["backend"]["ipv4_address"])
    assert fixed in ipaddress.ip_network(pool["subnet"]) and fixed not in ipaddress.ip_network(pool["ip_range"])
    trusted = compose["services"]["auth"]["environment"]["FLEETLINE_TRUSTED_PROXIES"]
    assert trusted == str(fixed)


def test_services_keep_connections_longer_than_the_gateway_reuses_them(compose):
    gateway = Settings.from_env({k: str(v) for k, v in compose["services"]["gateway"]["environment"].items()
                                 if not k.endswith("_FILE")})  # the secrets are mounted only in compose
    gateway.check_keepalive_order()
    for name in ("auth", "dispatch"):
        env = compose["services"][name]["environment"]
        assert float(env["FLEETLINE_KEEPALIVE_S"]) > gateway.upstream_keepalive_s
