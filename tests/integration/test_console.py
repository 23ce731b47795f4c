"""The console in a real headless Chromium, against `fleetline up` with two demo agents:
sign in, agents online, a ping from an agent's page turning `succeeded` without a reload,
a job on a label filling its progress bar, a cancelled job, sign-out; on every page the
CSP header and no console error. And its security rules checked over plain HTTP.

A screenshot of each page is saved under tests/screenshots/ (git-ignored)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.launch import read_ready_line, stop_launcher
from tests.integration.support import ROOT, cmdline, wait_until

CHROMIUM = os.environ.get("FLEETLINE_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "tests" / "screenshots"
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}



class Fleet:
    def __init__(self, proc: subprocess.Popen, data_dir: Path, fields: dict[str, str]):
        self.proc, self.data_dir = proc, data_dir
        self.gateway = fields["gateway"]
        self.console = f"{self.gateway}/console/"
        self.token = (data_dir / "admin-token").read_text().strip()

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, f"{self.gateway}/api/v1/admin{path}",
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=30, **kw)

    def agent_process(self, machine_id: str) -> psutil.Process:
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            if machine_id in cmdline(child):
                return child
        raise AssertionError(f"no agent process for {machine_id}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("console") / "fleet"
    env = {**CLEAN_ENV, "FLEETLINE_LAST_SEEN_FLUSH_S": "1", "FLEETLINE_REAPER_INTERVAL_S": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fleetline", "up", "--data-dir", str(data_dir),
                             "--port", "0", "--agents", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        running = Fleet(proc, data_dir, read_ready_line(proc))
        wait_until(lambda: len([a for a in running.api("GET", "/agents").json()["agents"]
                                if a["last_seen_at"]]) == 2, 60, 0.2, "two demo agents seen")
        yield running
    finally:
        stop_launcher(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Not skipped when missing: CI always runs these (.ci/run installs the package).
    assert Path(CHROMIUM).exists(), f"the console tests need Chromium at {CHROMIUM}: apt-get install chromium"

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Watched:
    """A page whose console errors, page errors and document responses are recorded."""

    def __init__(self, browser, base: str):
        self.page = browser.new_page(viewport={"width": 1280, "height": 860})
        self.page.set_default_timeout(20000)
        self.errors: list[str] = []
        self.documents: list[httpx.Headers] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", lambda r: r.request.resource_type == "document"
                     and self.documents.append(r.headers))
        self.base = base

    def shot(self, name: str) -> None:
        SHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def sign_in(self, token: str) -> None:
        self.page.goto(self.base)
        assert self.page.url.endswith("/console/sign-in")
        self.shot("sign-in")
        self.page.fill("#admin_token", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(re.compile(r"/console/agents$"))

    def check_clean(self) -> None:
        assert self.errors == []
        assert self.documents, "no page was loaded"
        for headers in self.documents:
            csp = headers.get("content-security-policy", "")
            assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert headers.get("x-content-type-options") == "nosniff"
            assert headers.get("referrer-policy") == "no-referrer"
            assert headers.get("cache-control") == "no-store"


def test_an_operator_signs_in_sees_the_agents_and_watches_a_ping_succeed_live(fleet, browser):
    w = Watched(browser, fleet.console)
    w.sign_in(fleet.token)
    page = w.page
    def both_online() -> bool:
        page.reload()
        return page.locator("table.agents .status-online").count() == 2

    wait_until(both_online, 30, 0.5, "both demo agents online")
    assert page.locator("table.agents").inner_text().count("env=demo") == 2
    w.shot("agents")

    page.click("table.agents a >> nth=0")
    page.wait_for_url(re.compile(r"/console/agents/[0-9a-f-]{36}$"))
    machine = page.locator("dl.facts").inner_text().split("Machine")[1].split()[0]
    agent = fleet.agent_process(machine)
    agent.suspend()  # so the page shows the command before the agent takes it
    try:
        page.select_option("#type", "ping")
        page.click("form.queue button[type=submit]")
        page.wait_for_load_state()
        row = page.locator("table.commands tbody tr >> nth=0")
        assert row.locator("[data-field=status]").inner_text() in ("pending", "sent")
        page.evaluate("window.notReloaded = true")
        page.wait_for_function("document.body.dataset.live === 'on'")
    finally:
        agent.resume()
    row.locator("[data-field=status].status-succeeded").wait_for()
    assert page.evaluate("window.notReloaded") is True  # updated live, not by a reload
    assert row.locator("[data-field=exit_code]").inner_text() == "0"
    w.shot("agent")

    row.locator("a").click()
    page.wait_for_url(re.compile(r"/console/commands/[0-9a-f-]{36}$"))
    assert "exit code 0" in page.locator("main").inner_text()
    w.shot("command")
    page.click("nav >> text=Commands")
    page.wait_for_url(re.compile(r"/console/commands$"))
    w.shot("commands")
    w.check_clean()


def _run_sleep_job(page, labels: str, seconds: int, window: int) -> None:
    """Through the jobs page's form, as an operator would; ends on the new job's page."""
    page.click("nav >> text=Jobs")
    page.fill("#labels", labels)
    page.select_option("#job-type", "sleep")
    page.fill("#job-params", f'{{"seconds": {seconds}}}')
    page.fill("#max_in_flight", str(window))
    page.click("form.new-job button[type=submit]")
    page.wait_for_url(re.compile(r"/console/jobs/[0-9a-f-]{36}$"))


def test_a_job_on_a_label_fills_its_progress_bar_and_another_is_cancelled(fleet, browser):
    w = Watched(browser, fleet.console)
    w.sign_in(fleet.token)
    page = w.page
    _run_sleep_job(page, "env=demo", seconds=1, window=1)
    page.evaluate("window.notReloaded = true")
    status = page.locator("section[data-job] [data-job-status]")
    assert status.inner_text() == "running"
    page.locator("section[data-job] [data-job-status].status-completed").wait_for()
    assert page.evaluate("window.notReloaded") is True
    assert page.locator('section[data-job] [data-count="succeeded"]').get_attribute("data-n") == "2"
    assert float(page.locator('section[data-job] rect[data-status="succeeded"]').get_attribute("width")) == 100
    assert page.locator("table.targets").inner_text().count("succeeded") == 2
    w.shot("job")

    # A long job, one at a time: cancel it while the first target runs.
    _run_sleep_job(page, "env=demo", seconds=3, window=1)
    job_id = page.url.rsplit("/", 1)[1]
    page.on("dialog", lambda d: d.accept())
    page.click("form.cancel-job button")
    page.wait_for_load_state()
    page.locator("section[data-job] [data-job-status].status-cancelled").wait_for()
    job = fleet.api("GET", f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["counts"]["waiting"] == job["counts"]["pending"] == 0
    assert job["counts"]["cancelled"] == 1  # the target still waiting for the window

    page.click("nav >> text=Jobs")
    assert page.locator(f'tr[data-job="{job_id}"] [data-job-status]').inner_text() == "cancelled"
    w.shot("jobs")
    w.check_clean()


def test_sign_out_ends_the_session(fleet, browser):
    w = Watched(browser, fleet.console)
    w.sign_in(fleet.token)
    cookie = next(c for c in w.page.context.cookies() if c["name"] == "fleetline_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert fleet.token not in cookie["value"]
    w.page.click("form.sign-out button")
    w.page.wait_for_url(re.compile(r"/console/sign-in$"))
    w.page.goto(fleet.console + "agents")
    assert w.page.url.endswith("/console/sign-in")
    # The old cookie opens nothing any more.
    old = httpx.get(fleet.console + "agents", cookies={"fleetline_session": cookie["value"]})
    assert old.status_code == 303 and old.headers["location"] == "sign-in"
    w.check_clean()


# --- the same rules over plain HTTP --------------------------------------------------------


def _sign_in(fleet, token: str) -> tuple[httpx.Client, httpx.Response]:
    """A fresh client through the sign-in form (its CSRF token and cookie) with `token`."""
    client = httpx.Client(base_url=fleet.console, timeout=30)
    form = client.get("sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return client, client.post("sign-in", data={"csrf": csrf, "admin_token": token})


def _signed_in(fleet) -> httpx.Client:
    client, done = _sign_in(fleet, fleet.token)
    assert done.status_code == 303 and done.headers["location"] == "agents"
    return client


def test_the_session_cookie_follows_the_rules_and_never_holds_the_token(fleet):
    client, done = _sign_in(fleet, fleet.token)
    cookie = next(v for k, v in done.headers.multi_items() if k == "set-cookie" and v.startswith("fleetline_session="))
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= set(attributes)
    assert attributes["path"] == "Path=/console" and attributes["samesite"].lower() == "samesite=strict"
    assert 0 < int(attributes["max-age"].split("=")[1]) <= 12 * 3600
    assert "secure" not in attributes  # plain HTTP here
    assert fleet.token not in cookie and fleet.token not in client.get("agents").text


def test_forms_without_the_sessions_csrf_token_change_nothing(fleet):
    client = _signed_in(fleet)
    agent_id = fleet.api("GET", "/agents").json()["agents"][0]["id"]
    before = fleet.api("GET", "/commands", params={"agent_id": agent_id}).json()["commands"]
    for csrf in (None, "forged"):
        data = {"type": "ping", "params": "{}", **({"csrf": csrf} if csrf else {})}
        refused = client.post(f"agents/{agent_id}/commands", data=data)
        assert refused.status_code == 403
    assert client.post(f"agents/{agent_id}/revoke", data={"confirm": "yes"}).status_code == 403
    assert fleet.api("GET", "/commands", params={"agent_id": agent_id}).json()["commands"] == before
    assert fleet.api("GET", f"/agents/{agent_id}").json()["status"] == "active"


def test_a_wrong_token_opens_no_session(fleet):
    client, refused = _sign_in(fleet, "not-the-token")
    assert refused.status_code == 401 and "not accepted" in refused.text
    assert "fleetline_session" not in refused.headers.get("set-cookie", "")
    assert client.get("agents").status_code == 303


def test_the_cookie_is_secure_behind_an_https_proxy(fleet):
    # The console believes X-Forwarded-Proto only from a trusted proxy (the gateway's
    # address); here we call it directly from 127.0.0.1, which is one.
    direct = next(p for p in psutil.Process(fleet.proc.pid).children(recursive=True)
                  if "services.console" in cmdline(p))
    port = direct.cmdline()[direct.cmdline().index("--port") + 1]
    resp = httpx.get(f"http://127.0.0.1:{port}/console/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert "secure" in resp.headers["set-cookie"].lower()


def test_console_paths_never_redirect_outside_the_console(fleet):
    client = _signed_in(fleet)
    for path in ("", "agents/not-an-id", "jobs/nope", "commands/x"):
        resp = client.get(path)
        assert resp.status_code in (200, 303, 404)
        location = resp.headers.get("location", "")
        assert not location.startswith(("/", "http")), location
    assert httpx.get(fleet.gateway + "/console").headers["location"] == "console/"


def test_hostile_forms_are_a_4xx_page_and_change_nothing(fleet):
    client = _signed_in(fleet)
    agent_id = fleet.api("GET", "/agents").json()["agents"][0]["id"]
    before = fleet.api("GET", "/commands", params={"agent_id": agent_id, "limit": 1000}).json()["commands"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body, headers in ((b"csrf=%ff%fe&type=ping", form), (b"type=ping&params=" + b"x" * 300_000, form),
                          (b'{"type": "ping"}', {"Content-Type": "application/json"}), (b"\x00\x01", form)):
        resp = client.post(f"agents/{agent_id}/commands", content=body, headers=headers)
        assert 400 <= resp.status_code < 500, (resp.status_code, body[:40])
        assert resp.headers["content-security-policy"]
    assert client.get("jobs?status=%ff&before=zz").status_code < 500
    assert client.get("agents?status=nope&label=%00").status_code < 500
    after = fleet.api("GET", "/commands", params={"agent_id": agent_id, "limit": 1000}).json()["commands"]
    assert after == before


def test_over_https_the_session_cookie_is_secure(browser, tmp_path):
    """`fleetline up --tls`: the console behind the gateway's own TLS marks its cookie Secure
    and calls the admin API over HTTPS it verifies."""
    data_dir = tmp_path / "tls-fleet"
    proc = subprocess.Popen([sys.executable, "-m", "fleetline", "up", "--data-dir", str(data_dir), "--port", "0",
                             "--tls"], cwd=ROOT, env=CLEAN_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        fields = read_ready_line(proc)
        assert fields["gateway"].startswith("https://") and fields["ca_file"]
        context = browser.new_context(ignore_https_errors=True)  # a private CA the browser lacks
        page = context.new_page()
        page.goto(fields["console"])
        page.fill("#admin_token", (data_dir / "admin-token").read_text().strip())
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/console/agents$"))
        (cookie,) = [c for c in context.cookies() if c["name"] == "fleetline_session"]
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        context.close()
    finally:
        stop_launcher(proc)
