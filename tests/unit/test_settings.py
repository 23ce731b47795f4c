import pytest

from fleetline.settings import Settings, SettingsError, postgres_url


def test_defaults_match_design():
    s = Settings.from_env({})
    assert (s.access_token_ttl_s, s.refresh_token_ttl_s, s.checkin_rate_limit) == (900, 7776000, "60/minute")
    assert (s.poll_interval_s, s.rapid_poll_interval_s, s.max_body_bytes) == (300, 5, 1048576)
    assert (s.max_wait_s, s.last_seen_write_s, s.max_output_bytes) == (60, 30.0, 8 * 1024 * 1024)
    assert (s.retention_days, s.audit_retention_days) == (30.0, 365.0)
    # Per address, registrations are limited by what fails; success has a generous ceiling.
    assert (s.registration_rate_limit, s.registration_failure_limit) == ("100/second", "10/minute")
    assert (s.renew_rate_limit, s.renew_failure_limit) == ("10/minute", "10/minute")
    assert Settings.from_env({"FLEETLINE_MAX_WAIT_S": "300", "FLEETLINE_RETENTION_DAYS": "0.5"}).max_wait_s == 300


@pytest.mark.parametrize("name,value", [
    ("FLEETLINE_POLL_INTERVAL_S", "soon"), ("FLEETLINE_POLL_INTERVAL_S", "-1"),
    ("FLEETLINE_CHECKIN_RATE_LIMIT", "lots"), ("FLEETLINE_RATE_LIMIT_STORAGE", "mongodb://x"),
    ("FLEETLINE_DISPATCH_URLS", "ftp://x"), ("FLEETLINE_LOG_LEVEL", "LOUD"),
    ("FLEETLINE_MAX_WAIT_S", "301"), ("FLEETLINE_MAX_WAIT_S", "0"), ("FLEETLINE_RETENTION_DAYS", "0"),
    ("FLEETLINE_LAST_SEEN_WRITE_S", "-5"),
])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


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


@pytest.mark.parametrize("given,scheme,expected", [
    ("postgresql://u@h:5/db", "postgresql+psycopg", "postgresql+psycopg://u@h:5/db"),
    ("postgres://u@h/db", "postgresql", "postgresql://u@h/db"),
    ("postgresql+psycopg://u@h/db", "postgresql", "postgresql://u@h/db"),
    ("mysql://u@h/db", "postgresql", "mysql://u@h/db"),
])
def test_one_database_url_in_each_drivers_spelling(given, scheme, expected):
    assert postgres_url(given, scheme) == expected


def test_the_gateway_must_let_go_of_connections_before_the_services_do():
    Settings.from_env({}).check_keepalive_order()  # the defaults are in order
    with pytest.raises(SettingsError, match="FLEETLINE_UPSTREAM_KEEPALIVE_S"):
        Settings.from_env({"FLEETLINE_KEEPALIVE_S": "5", "FLEETLINE_UPSTREAM_KEEPALIVE_S": "30"}).check_keepalive_order()
