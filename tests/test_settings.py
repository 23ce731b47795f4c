import subprocess
import sys

import pytest

from services.common.settings import Settings, SettingsError
from tests.support import ROOT


def test_defaults_match_design():
    s = Settings.from_env({})
    assert (s.access_token_ttl_s, s.refresh_token_ttl_s, s.checkin_rate_limit) == (900, 7776000, "60/minute")
    assert (s.poll_interval_s, s.rapid_poll_interval_s, s.max_body_bytes) == (300, 5, 1048576)


@pytest.mark.parametrize("name,value", [
    ("FLEETLINE_POLL_INTERVAL_S", "soon"), ("FLEETLINE_POLL_INTERVAL_S", "-1"),
    ("FLEETLINE_CHECKIN_RATE_LIMIT", "lots"), ("FLEETLINE_RATE_LIMIT_STORAGE", "mongodb://x"),
    ("FLEETLINE_DISPATCH_URLS", "ftp://x"), ("FLEETLINE_LOG_LEVEL", "LOUD"),
])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_service_refuses_to_start_with_one_clear_line():
    proc = subprocess.run([sys.executable, "-m", "services.auth", "--port", "1"], cwd=ROOT,
                          env={"FLEETLINE_POLL_INTERVAL_S": "soon", "PATH": "/usr/bin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "FLEETLINE_POLL_INTERVAL_S" in proc.stderr and "Traceback" not in proc.stderr


def test_any_setting_can_come_from_a_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    s = Settings.from_env({"FLEETLINE_ADMIN_TOKEN_FILE": str(secret)})
    assert s.admin_token == "s3cret"
    # The variable itself wins over its _FILE twin.
    s = Settings.from_env({"FLEETLINE_ADMIN_TOKEN": "direct", "FLEETLINE_ADMIN_TOKEN_FILE": str(secret)})
    assert s.admin_token == "direct"
    with pytest.raises(SettingsError, match="FLEETLINE_DATABASE_URL_FILE"):
        Settings.from_env({"FLEETLINE_DATABASE_URL_FILE": str(tmp_path / "missing")})
