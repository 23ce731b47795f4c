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

from agent import main as agent_main
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
        assert services[name]["environment"]["FLEETLINE_RATE_LIMIT_STORAGE"].startswith("redis://")
    for name in ("auth", "dispatch", "gateway"):
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
    text = (ROOT / "compose.yaml").read_text()
    assert "BEGIN PRIVATE KEY" not in text and "POSTGRES_PASSWORD:" not in text


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
            assert scripts["fleetline-agent"] == "agent.main:main"
            agent_main.build_parser().parse_args(argv[1:])
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
    for secret in compose["secrets"].values():
        assert (tmp_path / Path(secret["file"]).name).exists(), secret["file"]
        assert (tmp_path / Path(secret["file"]).name).stat().st_mode & 0o777 == 0o600


def test_the_trusted_gateway_address_is_outside_the_dynamic_range(compose):
    import ipaddress

    pool = compose["networks"]["default"]["ipam"]["config"][0]
    fixed = ipaddress.ip_address(compose["services"]["gateway"]["networks"]["default"]["ipv4_address"])
    assert fixed in ipaddress.ip_network(pool["subnet"]) and fixed not in ipaddress.ip_network(pool["ip_range"])
    trusted = compose["services"]["auth"]["environment"]["FLEETLINE_TRUSTED_PROXIES"]
    assert trusted == str(fixed)


def test_services_keep_connections_longer_than_the_gateway_reuses_them(compose):
    gateway = Settings.from_env({k: str(v) for k, v in compose["services"]["gateway"]["environment"].items()})
    gateway.check_keepalive_order()
    for name in ("auth", "dispatch"):
        env = compose["services"][name]["environment"]
        assert float(env["FLEETLINE_KEEPALIVE_S"]) > gateway.upstream_keepalive_s
