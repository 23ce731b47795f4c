"""Single sign-on against a provider someone else wrote and certified: panva's oidc-provider
from npm, with its default settings (claims asked for by scope only from the userinfo
endpoint, RFC 9207's `iss` on every answer, PKCE required), a client secret with `+`, `/`
and `=`, in a real Chromium, through `fleetline up`'s console (client_secret_basic) and a
second console of the same fleet authenticating with client_secret_post (the provider
registers the console with one method at a time, so it restarts between them). And what it must refuse: an
unverified email, an email no operator has, a disabled operator, a replayed callback, and
an answer whose `iss` names another issuer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fleetline.cli.pgembed import free_port
from tests.integration.certified_oidc import CertifiedProvider
from tests.integration.launch import read_ready_line, stop_launcher
from tests.integration.support import ROOT, ServiceProcess

CHROMIUM = os.environ.get("FLEETLINE_TEST_CHROMIUM", "/usr/bin/chromium")
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
SECRET = "Fl+Te/st=Secret-0123456789abcdef"  # what real providers issue: RFC 6749's encoding matters
ACCOUNTS = {"sam": {"email": "Sam@Example.com", "email_verified": True},
            "una": {"email": "una@example.com", "email_verified": False},
            "stranger": {"email": "stranger@example.com", "email_verified": True},
            "dora": {"email": "dora@example.com", "email_verified": True}}


class Site:
    def __init__(self, tmp: Path):
        self.gateway_port, self.second_port = free_port(), free_port()
        self.gateway = f"http://127.0.0.1:{self.gateway_port}"
        self.consoles = {"client_secret_basic": f"{self.gateway}/console/",
                         "client_secret_post": f"http://127.0.0.1:{self.second_port}/console/"}
        self.tmp = tmp

    def callback(self, method: str) -> str:
        return self.consoles[method] + "sign-in/oidc/callback"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return Site(tmp_path_factory.mktemp("sso"))


@pytest.fixture(scope="module")
def provider(site):
    """The certified provider, with the console registered as `fleetline-console` for the
    authentication method a test asks for (`use(method)` restarts it when that changes)."""
    started = CertifiedProvider(free_port(), site.tmp / "provider.log")

    def use(method: str) -> CertifiedProvider:
        return started.run([{"client_id": "fleetline-console", "client_secret": SECRET,
                             "redirect_uris": [site.callback(m) for m in site.consoles],
                             "token_endpoint_auth_method": method}], ACCOUNTS)

    use("client_secret_basic")
    started.use = use
    yield started
    started.stop()


@pytest.fixture(scope="module")
def fleet(site, provider):
    """`fleetline up` whose console signs in through the provider (client_secret_basic), and a
    second console of the same fleet that authenticates with client_secret_post."""
    secret_file = site.tmp / "client-secret"
    secret_file.write_text(SECRET + "\n")
    sso = {"FLEETLINE_OIDC_ISSUER": provider.url, "FLEETLINE_OIDC_CLIENT_SECRET_FILE": str(secret_file)}
    data_dir = site.tmp / "fleet"
    proc = subprocess.Popen([sys.executable, "-m", "fleetline", "up", "--data-dir", str(data_dir),
                             "--port", str(site.gateway_port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**CLEAN_ENV, **sso, "FLEETLINE_OIDC_CLIENT_ID": "fleetline-console"})
    second = None
    try:
        read_ready_line(proc)
        second = ServiceProcess("services.console", {
            **sso, "FLEETLINE_OIDC_CLIENT_ID": "fleetline-console", "FLEETLINE_OIDC_TOKEN_AUTH_METHOD": "client_secret_post",
            "FLEETLINE_CONSOLE_API_URL": site.gateway, "FLEETLINE_CONSOLE_PUBLIC_URL": site.consoles[
                "client_secret_post"].removesuffix("/console/"),
            "FLEETLINE_CONSOLE_PROXY_SECRET_FILE": str(data_dir / "console-proxy-secret")},
            site.tmp, port=site.second_port).wait_ready()
        admin = {"Authorization": f"Bearer {(data_dir / 'admin-token').read_text().strip()}"}
        for name, email in (("sso-sam", "sam@example.com"), ("sso-una", "una@example.com"),
                            ("sso-dora", "dora@example.com")):
            made = httpx.post(f"{site.gateway}/api/v1/admin/operators", headers=admin,
                              json={"name": name, "role": "viewer", "email": email})
            assert made.status_code == 201, made.text
        dora = next(o for o in httpx.get(f"{site.gateway}/api/v1/admin/operators", headers=admin).json()["operators"]
                    if o["name"] == "sso-dora")
        assert httpx.patch(f"{site.gateway}/api/v1/admin/operators/{dora['id']}", headers=admin,
                           json={"disabled": True}).status_code == 200
        site.admin = admin
        site.provider = provider
        yield site
    finally:
        if second is not None:
            second.stop()
        stop_launcher(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"the single sign-on tests need Chromium at {CHROMIUM}: apt-get install chromium"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _through_the_provider(browser, console: str, login: str, callbacks: list[str] | None = None):
    """A fresh browser signing in at the provider's own pages as `login`; the page once the
    console has answered the provider's redirect."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20000)
    if callbacks is not None:
        page.on("request", lambda r: "/oidc/callback" in r.url and callbacks.append(r.url))
    page.goto(console + "sign-in")
    page.click("a.sso")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password: the provider's development sign-in")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/(agents$|sign-in/oidc/callback)|/interaction/"))
    if "/interaction/" in page.url:  # the provider asks to share the email with the console
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/console/(agents$|sign-in/oidc/callback)"))
    return context, page


def _events(site, name: str) -> list[dict]:
    return [e for e in httpx.get(f"{site.gateway}/api/v1/admin/audit", headers=site.admin,
                                 params={"action": "console.sign_in", "limit": 1000}).json()["events"]
            if e["actor"]["name"] == name]


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_the_certified_provider_with_its_default_settings_signs_an_operator_in(fleet, browser, method):
    fleet.provider.use(method)  # the console is registered there with this method
    context, page = _through_the_provider(browser, fleet.consoles[method], "sam")
    try:
        assert page.url.endswith("/console/agents"), page.content()[:2000]
        assert page.locator("header .who").get_attribute("data-operator") == "sso-sam"
        assert [c for c in context.cookies() if c["name"] == "fleetline_oidc"] == []  # the flow is spent
    finally:
        context.close()
    signed = _events(fleet, "sso-sam")
    assert signed and signed[0]["outcome"] == "ok" and signed[0]["details"]["method"] == "oidc"


def test_the_certified_providers_answers_that_must_open_nothing_open_nothing(fleet, browser):
    fleet.provider.use("client_secret_basic")
    console = fleet.consoles["client_secret_basic"]
    for login, why in (("una", "unverified email"), ("stranger", "no operator has it"), ("dora", "disabled")):
        context, page = _through_the_provider(browser, console, login)
        try:
            assert "/oidc/callback?" in page.url, (why, page.url)
            assert "not accepted" in page.locator(".error").inner_text(), why
            assert [c for c in context.cookies() if c["name"] == "fleetline_session"] == [], why
        finally:
            context.close()
    assert [e["outcome"] for e in _events(fleet, "(oidc)")].count("failed") >= 1  # the unverified email
    assert all(e["outcome"] == "failed" for e in _events(fleet, "sso-dora"))

    # A genuine answer replayed in another browser, and one whose `iss` names another issuer.
    callbacks: list[str] = []
    context, page = _through_the_provider(browser, console, "sam", callbacks)
    assert page.url.endswith("/console/agents")
    context.close()
    assert "iss=" in callbacks[0]  # the certified provider says who answers (RFC 9207)
    fresh = browser.new_context()
    replay = fresh.new_page()
    replay.goto(callbacks[0])
    assert "not started here" in replay.locator(".error").inner_text()
    assert [c for c in fresh.cookies() if c["name"] == "fleetline_session"] == []
    fresh.close()

    # The provider's answer, changed on its way back to name another issuer (a mix-up attack:
    # the answer of a provider this sign-in did not ask), in the browser that started it.
    browser_http, answer = _provider_answer(console, "sam")
    assert "iss=" in answer
    mixed = browser_http.get(re.sub(r"iss=[^&]+", "iss=https%3A%2F%2Fattacker.example", answer))
    assert mixed.status_code == 401 and "did not come from this console" in mixed.text, mixed.text
    assert "fleetline_session" not in mixed.headers.get("set-cookie", "")
    browser_http.close()


def _provider_answer(console: str, login: str) -> tuple[httpx.Client, str]:
    """What a browser does up to the provider's answer, over plain HTTP (Chromium follows a
    redirect before anything can change it): the console's sign-on start, the provider's
    sign-in and consent forms; the answer's URL, not yet requested. The client keeps both
    sites' cookies, the console's flow cookie included."""
    client = httpx.Client(timeout=30)
    url = client.get(console + "sign-in/oidc").headers["location"]
    while True:
        resp = client.get(url)
        if resp.status_code in (302, 303):
            url = httpx.URL(url).join(resp.headers["location"]).__str__()
            if "/console/sign-in/oidc/callback" in url:
                return client, url
            continue
        form = re.search(r'<form[^>]*action="([^"]+)"', resp.text).group(1)
        fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', resp.text))
        if "login" in re.findall(r'name="([^"]+)"', resp.text):
            fields.update(login=login, password="any")
        answer = client.post(httpx.URL(url).join(form), data=fields)
        url = httpx.URL(url).join(answer.headers["location"]).__str__()
