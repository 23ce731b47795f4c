"""The console's pure decisions: presence, relative times, sessions, relative redirects,
progress bars, the cookie and HTTPS rules."""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from services.console import oidc_flow
from services.console.job_pages import bar, job_request
from services.console.operator_pages import scope_text, scope_typed
from services.console.pages import labels_typed
from services.console.presence import ago, presence
from services.console.security import CSP, cookie_attributes, over_https
from services.console.sessions import Session, csrf_for, same_secret
from services.console.web import relative

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("status,seen_s_ago,expected", [
    ("active", 10, "online"), ("active", 300 + 60, "online"), ("active", 300 + 61, "offline"),
    ("active", None, "offline"), ("revoked", 1, "revoked"),
])
def test_presence_follows_the_poll_interval_plus_a_buffer(status, seen_s_ago, expected):
    seen = NOW - timedelta(seconds=seen_s_ago) if seen_s_ago is not None else None
    assert presence(status, seen, NOW, 300) == expected


@pytest.mark.parametrize("seconds,text", [(0, "just now"), (42, "42 s ago"), (180, "3 min ago"),
                                          (7200, "2 h ago"), (3 * 86400, "3 d ago")])
def test_relative_times_read_as_people_say_them(seconds, text):
    assert ago(NOW - timedelta(seconds=seconds), NOW) == text
    assert ago(None, NOW) == "never"


def test_a_sessions_csrf_token_is_its_own_and_reveals_nothing_of_it():
    a, b = "fls_" + "a" * 43, "fls_" + "b" * 43
    assert csrf_for(a) == csrf_for(a) != csrf_for(b)
    assert a[4:12] not in csrf_for(a) and Session(a, {"role": "viewer"}).csrf == csrf_for(a)


@pytest.mark.parametrize("role,operate,admin", [("viewer", False, False), ("operator", True, False),
                                                ("admin", True, True)])
def test_what_a_session_may_follows_its_operators_role(role, operate, admin):
    session = Session("fls_x", {"role": role})
    assert (session.may_operate, session.is_admin) == (operate, admin)


def test_the_scope_form_becomes_the_api_scope_and_back():
    scope = scope_typed({"labels": "env=staging, role=web", "command_types": "ping, facts"})
    assert scope == {"labels": {"env": "staging", "role": "web"}, "command_types": ["ping", "facts"]}
    assert scope_typed({}) == {"labels": {}, "command_types": ["*"]}
    assert scope_text(scope) == {"labels": "env=staging, role=web", "command_types": "ping, facts"}


@pytest.mark.parametrize("cookie", [None, "", "%%%", "bm90IGpzb24", "W10", "eyJzdGF0ZSI6IDF9"])
def test_a_sign_on_flow_cookie_that_is_not_ours_is_no_flow(cookie):
    assert oidc_flow._unpack(cookie) is None


def test_a_sign_on_flow_cookie_round_trips():
    flow = {"state": "s", "nonce": "n", "verifier": "v"}
    assert oidc_flow._unpack(oidc_flow._pack(flow)) == flow


def test_csrf_tokens_compare_exactly():
    assert same_secret("abc", "abc") and not same_secret("abd", "abc") and not same_secret(None, "abc")


@pytest.mark.parametrize("path,target,location", [
    ("/console", "agents", "console/agents"),
    ("/console/", "sign-in", "sign-in"),
    ("/console/agents", "sign-in", "sign-in"),
    ("/console/agents/a1", "sign-in", "../sign-in"),
    ("/console/agents/a1/commands", "agents/a1", "../../agents/a1"),
])
def test_redirects_are_relative_and_land_inside_the_console(path, target, location):
    assert relative(SimpleNamespace(url=SimpleNamespace(path=path)), target) == location


def test_the_progress_bar_is_the_counts_in_order_and_fills_to_100():
    segments = bar({"succeeded": 2, "failed": 1, "running": 1, "waiting": 0}, 4)
    drawn = {s["status"]: (s["x"], s["width"]) for s in segments}
    assert drawn["succeeded"] == (0, 50) and drawn["failed"] == (50, 25) and drawn["running"][1] == 25
    assert round(sum(s["width"] for s in segments), 6) == 100
    assert all(s["width"] == 0 for s in bar({}, 0))


def test_the_job_form_becomes_the_api_request():
    assert job_request({"target": "labels", "labels": "env=prod, role=web,junk", "type": "ping",
                        "params": "", "max_in_flight": "10%", "max_failures": "2"}) == {
        "selector": {"labels": {"env": "prod", "role": "web"}},
        "command": {"type": "ping", "params": {}},
        "rollout": {"max_in_flight": "10%", "max_failures": 2}}
    assert job_request({"target": "all", "type": "ping", "max_in_flight": "3"})["selector"] == {"all_active": True}
    assert labels_typed("a=1, =x, b") == {"a": "1"}


def test_the_cookie_rules_and_the_csp():
    attrs = cookie_attributes(secure=True, max_age=43200)
    assert attrs == {"httponly": True, "samesite": "strict", "path": "/console", "secure": True, "max_age": 43200}
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "default-src 'self'" in CSP


def test_https_is_believed_from_a_trusted_proxy_only():
    assert over_https("https", None, "10.0.0.9", ())
    assert over_https("http", "https", "127.0.0.1", ("127.0.0.1",))
    assert not over_https("http", "https", "10.0.0.9", ("127.0.0.1",))
    assert not over_https("http", None, "127.0.0.1", ("127.0.0.1",))


def test_the_consoles_status_lists_are_the_apis():
    from gateway.openapi import SCHEMAS, TARGET_STATUSES
    from services.console import job_pages, pages

    assert job_pages.TARGET_STATUSES == tuple(TARGET_STATUSES)
    assert sorted(job_pages.BAR_ORDER) == sorted(TARGET_STATUSES)
    assert list(job_pages.JOB_STATUSES) == SCHEMAS["Job"]["properties"]["status"]["enum"]
    assert list(pages.COMMAND_STATUSES) == SCHEMAS["CommandState"]["properties"]["status"]["enum"]


def test_client_secret_basic_form_urlencodes_the_id_and_the_secret_before_base64_as_rfc_6749_says():
    """RFC 6749 2.3.1: a secret with `+`, `/` or `=` sent raw is another secret to a provider
    that decodes it (panva's oidc-provider does): `+` reads as a space."""
    import base64
    from types import SimpleNamespace
    from urllib.parse import unquote_plus

    from services.console.oidc_flow import client_secret_basic

    client = SimpleNamespace(client_id="console:one", client_secret="Fl+Te/st=Secret %41")
    _, headers, _ = client_secret_basic(client, "POST", "https://idp/token", {}, "grant_type=x")
    user, _, password = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode().partition(":")
    assert (user, password) == ("console%3Aone", "Fl%2BTe%2Fst%3DSecret+%2541")
    assert (unquote_plus(user), unquote_plus(password)) == ("console:one", "Fl+Te/st=Secret %41")
