"""The console in a real headless Chromium, against `fleetline up` with two demo agents and
a single sign-on provider of its own (oidc_provider.py, a process): sign in (as the first
admin `fleetline up` made, by password; with an operator token; through the provider),
agents online, a ping from an agent's page turning `succeeded` without a reload, a job on a
label filling its progress bar, a cancelled job, operators and the audit trail, roles that
hide what they may not do, sessions that survive a console restart and end when their
operator is disabled, sign-out; on every page the CSP header and no console error. And its
security rules checked over plain HTTP.

A screenshot of each page is saved under tests/screenshots/ (git-ignored)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from fleetline.cli.pgembed import free_port
from tests.integration.launch import read_ready_line, stop_launcher
from tests.integration.support import ROOT, cmdline, stop_process, wait_until

CHROMIUM = os.environ.get("FLEETLINE_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "tests" / "screenshots"
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}



class Fleet:
    def __init__(self, proc: subprocess.Popen, data_dir: Path, fields: dict[str, str], provider: str,
                 client_secret: str = ""):
        self.proc, self.data_dir, self.provider, self.client_secret = proc, data_dir, provider, client_secret
        self.gateway = fields["gateway"]
        self.console = f"{self.gateway}/console/"
        self.token = (data_dir / "admin-token").read_text().strip()
        self.password = Path(fields["admin_password_file"]).read_text().strip()

    def api(self, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
        return httpx.request(method, f"{self.gateway}/api/v1/admin{path}",
                             headers={"Authorization": f"Bearer {token or self.token}"}, timeout=30, **kw)

    def operator(self, name: str, role: str, **fields) -> dict:
        """A new operator (with a token of its own in "token")."""
        made = self.api("POST", "/operators", json={"name": name, "role": role, **fields})
        assert made.status_code == 201, made.text
        token = self.api("POST", f"/operators/{made.json()['id']}/tokens", json={"note": "test"}).json()["token"]
        return {**made.json(), "token": token}

    def events(self, **filters) -> list[dict]:
        return self.api("GET", "/audit", params={"limit": 1000, **filters}).json()["events"]

    def console_process(self) -> psutil.Process:
        return next(p for p in psutil.Process(self.proc.pid).children(recursive=True)
                    if "services.console" in cmdline(p))

    def agent_process(self, machine_id: str) -> psutil.Process:
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            if machine_id in cmdline(child):
                return child
        raise AssertionError(f"no agent process for {machine_id}")


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    """The organisation's sign-on provider, as its own process."""
    secret_file = tmp_path_factory.mktemp("oidc") / "client-secret"
    secret_file.write_text(os.urandom(16).hex())
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.oidc_provider", str(port), "fleetline-console",
                             str(secret_file)], cwd=ROOT, env=CLEAN_ENV)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{url}/jwks"), 20, 0.1, "the sign-on provider")
    yield url, secret_file
    stop_process(proc)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, provider):
    data_dir = tmp_path_factory.mktemp("console") / "fleet"
    issuer, secret_file = provider
    env = {**CLEAN_ENV, "FLEETLINE_LAST_SEEN_FLUSH_S": "1", "FLEETLINE_REAPER_INTERVAL_S": "1",
           "FLEETLINE_OIDC_ISSUER": issuer, "FLEETLINE_OIDC_CLIENT_ID": "fleetline-console",
           "FLEETLINE_OIDC_CLIENT_SECRET_FILE": str(secret_file)}
    proc = subprocess.Popen([sys.executable, "-m", "fleetline", "up", "--data-dir", str(data_dir),
                             "--port", "0", "--agents", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        running = Fleet(proc, data_dir, read_ready_line(proc), issuer, secret_file.read_text().strip())
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

    def sign_in(self, name: str, password: str) -> None:
        self.page.goto(self.base)
        assert self.page.url.endswith("/console/sign-in")
        self.shot("sign-in")
        self.page.fill("#name", name)
        self.page.fill("#password", password)
        self.page.click("form.password button[type=submit]")
        self.page.wait_for_url(re.compile(r"/console/agents$"))
        assert self.page.locator("header .who").get_attribute("data-operator") == name

    def sign_in_with_token(self, token: str) -> None:
        self.page.goto(self.base + "sign-in")
        self.page.click("details.with-token summary")
        self.page.fill("#token", token)
        self.page.click("form.token button[type=submit]")

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
    w.sign_in("admin", fleet.password)
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
    w.sign_in("admin", fleet.password)
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
    _run_sleep_job(page, "env=demo", seconds=60, window=1)
    job_id = page.url.rsplit("/", 1)[1]
    page.on("dialog", lambda d: d.accept())
    page.click("form.cancel-job button")
    page.wait_for_load_state()
    page.locator("section[data-job] [data-job-status].status-cancelled").wait_for()
    job = fleet.api("GET", f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["counts"]["waiting"] == job["counts"]["pending"] == 0
    # The target still waiting for the window, at once; the one running, once its agent has
    # stopped it (a job's cancel reaches what runs).
    assert job["counts"]["cancelled"] + job["counts"]["running"] == 2
    wait_until(lambda: fleet.api("GET", f"/jobs/{job_id}").json()["counts"]["cancelled"] == 2, 20, 0.2,
               "the running target stopped by its agent")

    page.click("nav >> text=Jobs")
    assert page.locator(f'tr[data-job="{job_id}"] [data-job-status]').inner_text() == "cancelled"
    w.shot("jobs")
    w.check_clean()


def test_a_running_command_shows_cancelling_until_its_agent_has_stopped_it(fleet, browser):
    """Cancel asked, the agent still at work (held still here): `cancelling...`, and no
    second Cancel button; once the agent stopped it and reported: `cancelled`."""
    agent = next(a for a in fleet.api("GET", "/agents").json()["agents"] if a["labels"].get("env") == "demo")
    cmd = fleet.api("POST", "/commands", json={"agent_id": agent["id"], "type": "sleep",
                                               "params": {"seconds": 120}}).json()
    wait_until(lambda: fleet.api("GET", f"/commands/{cmd['id']}").json()["status"] == "running", 30, 0.2,
               "the sleep to run")
    process = fleet.agent_process(agent["machine_id"])
    w = Watched(browser, fleet.console)
    w.sign_in("admin", fleet.password)
    page = w.page
    process.suspend()
    try:
        page.goto(f"{fleet.console}commands/{cmd['id']}")
        page.on("dialog", lambda d: d.accept())
        page.click("main form button.danger")
        page.wait_for_url(re.compile(rf"/console/commands/{cmd['id']}$"))
        heading = page.locator("h1 [data-field=status]")
        assert heading.inner_text() == "cancelling..." and "status-cancelling" in heading.get_attribute("class")
        assert page.locator("main form button.danger").count() == 0
        assert fleet.api("GET", f"/commands/{cmd['id']}").json()["status"] == "running"
        w.shot("command-cancelling")
    finally:
        process.resume()
    wait_until(lambda: fleet.api("GET", f"/commands/{cmd['id']}").json()["status"] == "cancelled", 30, 0.2,
               "the agent to stop it")
    page.reload()
    assert page.locator("h1 [data-field=status]").inner_text() == "cancelled"
    w.check_clean()


def test_a_schedule_made_on_its_page_runs_and_its_runs_lead_to_their_jobs(fleet, browser):
    """Through the form, as an operator would: a schedule every 2 s on the demo agents, its
    first run on its page linking to the job, then paused. Its name, hostile on purpose,
    is shown as text."""
    w = Watched(browser, fleet.console)
    w.sign_in("admin", fleet.password)
    page = w.page
    page.click("nav >> text=Schedules")
    page.wait_for_url(re.compile(r"/console/schedules$"))
    name = "<img src=x onerror=alert(1)> nightly"
    page.fill("#schedule-name", name)
    page.check("input[name=timing][value=every]")
    page.fill("#every", "2")
    page.fill("#schedule-labels", "env=demo")
    page.select_option("#schedule-type", "ping")
    page.click("form.new-schedule button[type=submit]")
    page.wait_for_url(re.compile(r"/console/schedules/[0-9a-f-]{36}$"))
    assert page.locator("h1").inner_text().startswith(f"Schedule {name}")
    assert page.locator("h1 img").count() == 0

    def started() -> bool:
        page.reload()
        return page.locator("table.runs [data-field=outcome]", has_text="started").count() > 0

    wait_until(started, 30, 0.5, "a started run on the schedule's page")
    w.shot("schedule")
    page.locator("table.runs a").first.click()
    page.wait_for_url(re.compile(r"/console/jobs/[0-9a-f-]{36}$"))
    job = fleet.api("GET", f"/jobs/{page.url.rsplit('/', 1)[1]}").json()
    assert job["schedule_id"] and job["command"]["type"] == "ping"
    page.go_back()
    page.click("button.pause")
    page.wait_for_load_state()
    assert page.locator("h1 [data-field=status]").inner_text() == "paused"
    assert "paused by admin" in page.locator("[data-field=paused_reason]").inner_text()
    page.click("nav >> text=Schedules")
    row = page.locator("table.schedules tr", has_text="nightly")
    assert "paused" in row.inner_text() and "started" in row.inner_text()
    w.shot("schedules")
    w.check_clean()


def test_an_agents_facts_and_labels_on_its_page_and_where_names_machines_before_a_job_runs(fleet, browser):
    """The demo agents report their facts; an operator sees them on an agent's page, gives it
    an operator label there, finds it with a where filter, and asks the new-job form which
    machines a where selector means before running anything."""
    agents = fleet.api("GET", "/agents").json()["agents"]
    wait_until(lambda: all(a["facts_updated_at"] for a in fleet.api("GET", "/agents").json()["agents"]
                           if a["labels"].get("env") == "demo"), 30, 0.2, "the demo agents' facts")
    target = next(a for a in agents if a["labels"].get("env") == "demo")
    w = Watched(browser, fleet.console)
    w.sign_in("admin", fleet.password)
    page = w.page
    page.goto(f"{fleet.console}agents/{target['id']}")
    assert '"cpu_count"' in page.locator("pre.facts-json").inner_text()
    page.fill("#set-labels", "tier=gold")
    page.click("form.operator-labels button")
    page.wait_for_load_state()
    assert "tier=gold" in page.locator("[data-field=labels]").inner_text()
    page.goto(f"{fleet.console}agents?where=labels.tier%20%3D%20gold")
    assert page.locator("table.agents tbody tr").count() == 1 and target["hostname"] in page.inner_text("table.agents")
    page.goto(f"{fleet.console}agents?where=labels.tier%20%3D")
    assert "position" in page.locator("p.error").inner_text()  # the expression's fault, and where
    assert w.errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    w.errors.clear()  # that 400 was the point: a malformed filter is the request's fault
    page.click("nav >> text=Jobs")
    page.check("input[name=target][value=where]")
    page.fill("#job-where", "labels.tier = gold, facts.cpu_count >= 1")
    page.click("button.preview")
    page.wait_for_load_state()
    assert page.locator("[data-field=target_count]").inner_text() == "1"
    assert page.locator(".preview-targets").inner_text().strip() == target["hostname"]
    jobs = fleet.api("GET", "/jobs", params={"limit": 1000}).json()["jobs"]
    assert not [j for j in jobs if "where" in j["selector"]]  # a preview runs nothing
    # As one types: the count and the names, then what is wrong, then nobody.
    live = page.locator("[data-field=live_count]")
    page.fill("#job-where", "labels.tier = gold")
    page.locator("[data-field=live_count]", has_text="1 machines:").wait_for()
    assert target["hostname"] in live.inner_text()
    page.fill("#job-where", "labels.tier = ")
    page.locator("[data-field=live_count]", has_text="position").wait_for()
    page.fill("#job-where", "labels.tier = lead")
    page.locator("[data-field=live_count]", has_text="0 machines").wait_for()
    w.shot("where-preview")
    w.check_clean()


def test_releases_are_listed_versions_shown_and_an_upgrade_job_of_an_unknown_version_refused(fleet, browser):
    """An uploaded release on the releases page (its digest whole), the fleet's versions on
    the agents page, and the new-job form's agent.upgrade refused, saying why, for a version
    nobody uploaded: nothing is created."""
    from tests.integration.test_releases_api import zipapp

    uploaded = fleet.api("POST", "/agent-releases", params={"version": "3.1.4", "platform": "linux-x86_64"},
                         content=zipapp(5000))
    assert uploaded.status_code == 201, uploaded.text
    demo_version = fleet.api("GET", "/agents").json()["agents"][0]["agent_version"]
    w = Watched(browser, fleet.console)
    w.sign_in("admin", fleet.password)
    page = w.page
    page.click("nav >> text=Releases")
    row = page.locator("tr[data-release='3.1.4/linux-x86_64']")
    assert uploaded.json()["sha256"] in row.inner_text()
    page.click("nav >> text=Agents")
    assert demo_version in page.locator("[data-field=versions]").inner_text()
    assert page.locator("td[data-field=version]", has_text=demo_version).count() >= 2
    jobs_before = len(fleet.api("GET", "/jobs", params={"limit": 1000}).json()["jobs"])
    page.click("nav >> text=Jobs")
    page.check("input[name=target][value=all]")
    page.select_option("#job-type", "agent.upgrade")
    page.fill("#job-params", '{"version": "9.9.9"}')
    page.click("form.new-job button[type=submit]:not(.preview)")
    page.wait_for_load_state()
    assert "No release 9.9.9 has been uploaded" in page.locator("p.error").inner_text()
    assert w.errors and all("400" in e for e in w.errors)  # the refusal was the point
    w.errors.clear()
    assert len(fleet.api("GET", "/jobs", params={"limit": 1000}).json()["jobs"]) == jobs_before
    w.shot("releases")
    w.check_clean()
    assert fleet.api("DELETE", "/agent-releases/3.1.4/linux-x86_64").status_code == 204


def test_an_admin_sees_a_webhook_and_its_attempts_with_a_hostile_url_shown_as_text(fleet, browser):
    hostile = 'https://example.invalid/hook?"><script>document.title="owned"</script>'
    made = fleet.api("POST", "/webhooks", json={"url": hostile, "events": ["audit.registration_token.create"],
                                                "description": "pager <b>"})
    assert made.status_code == 201, made.text
    hook = made.json()
    fleet.api("POST", "/registration-tokens", json={"max_uses": 1})  # an event: its attempt fails to resolve
    wait_until(lambda: fleet.api("GET", f"/webhooks/{hook['id']}/deliveries").json()["deliveries"][0]["error"],
               30, 0.2, "an attempt")
    w = Watched(browser, fleet.console)
    w.sign_in("admin", fleet.password)
    page = w.page
    page.click("nav >> text=Webhooks")
    assert hostile in page.locator(f"tr[data-webhook='{hook['id']}']").inner_text()
    page.click(f"tr[data-webhook='{hook['id']}'] a")
    assert page.locator("[data-field=url]").inner_text() == hostile
    row = page.locator("table.deliveries tbody tr").first
    assert "audit.registration_token.create" in row.inner_text() and "resolve" in row.inner_text()
    assert page.title() != "owned"
    w.shot("webhook")
    w.check_clean()
    assert fleet.api("DELETE", f"/webhooks/{hook['id']}").status_code == 204


def test_sign_out_ends_the_session(fleet, browser):
    w = Watched(browser, fleet.console)
    w.sign_in("admin", fleet.password)
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


def _sign_in(fleet, browser_address: str | None = None, **fields: str) -> tuple[httpx.Client, httpx.Response]:
    """A fresh client through the sign-in form (its CSRF token and cookie) with `fields`
    (name and password, or token), from `browser_address` when given."""
    transport = httpx.HTTPTransport(local_address=browser_address) if browser_address else None
    client = httpx.Client(base_url=fleet.console, timeout=30, transport=transport)
    form = client.get("sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return client, client.post("sign-in", data={"csrf": csrf, **fields})


def _signed_in(fleet, **fields: str) -> httpx.Client:
    client, done = _sign_in(fleet, **(fields or {"name": "admin", "password": fleet.password}))
    assert done.status_code == 303 and done.headers["location"] == "agents", done.text
    return client


def test_the_session_cookie_follows_the_rules_and_never_holds_the_token(fleet):
    token = fleet.operator("cookie-check", "viewer")["token"]
    client, done = _sign_in(fleet, token=token)
    cookie = next(v for k, v in done.headers.multi_items() if k == "set-cookie" and v.startswith("fleetline_session="))
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= set(attributes)
    assert attributes["path"] == "Path=/console" and attributes["samesite"].lower() == "samesite=strict"
    assert 0 < int(attributes["max-age"].split("=")[1]) <= 12 * 3600
    assert "secure" not in attributes  # plain HTTP here
    assert token not in cookie and token not in client.get("agents").text


def test_forms_without_the_sessions_csrf_token_change_nothing(fleet):
    client = _signed_in(fleet)
    agent_id = fleet.api("GET", "/agents").json()["agents"][0]["id"]
    def queued() -> list[str]:  # ids only: an earlier test's command may still be finishing
        return [c["id"] for c in fleet.api("GET", "/commands", params={"agent_id": agent_id}).json()["commands"]]

    before = queued()
    for csrf in (None, "forged"):
        data = {"type": "ping", "params": "{}", **({"csrf": csrf} if csrf else {})}
        refused = client.post(f"agents/{agent_id}/commands", data=data)
        assert refused.status_code == 403
    assert client.post(f"agents/{agent_id}/revoke", data={"confirm": "yes"}).status_code == 403
    assert queued() == before
    assert fleet.api("GET", f"/agents/{agent_id}").json()["status"] == "active"


def test_a_wrong_password_or_token_opens_no_session_and_is_recorded(fleet):
    for fields in ({"name": "admin", "password": fleet.password + "x"}, {"token": "flop_" + "A" * 43},
                   {"name": "nobody", "password": "whatever-it-is"}):
        client, refused = _sign_in(fleet, **fields)
        assert refused.status_code == 401 and "not accepted" in refused.text
        assert "fleetline_session" not in refused.headers.get("set-cookie", "")
        assert client.get("agents").status_code == 303
    failed = [e for e in fleet.events(action="console.sign_in") if e["outcome"] == "failed"]
    assert {"admin", "nobody"} <= {e["actor"]["name"] for e in failed}
    assert not any(fleet.password in str(e) for e in failed)


def test_one_browsers_failed_sign_ins_lock_out_no_other_browser_and_each_is_audited_with_its_address(fleet):
    """The console is a proxy the gateway believes (on their shared secret): auth limits and
    records the browser's address, not the console's. It used to see every browser as the
    console (127.0.0.1): ten wrong passwords from one browser locked everyone out."""
    for i in range(10):
        _, refused = _sign_in(fleet, "127.0.0.2", name=f"guesser-{i}", password="not-the-password")
        assert refused.status_code == 401, refused.text
    _, past_limit = _sign_in(fleet, "127.0.0.2", name="guesser-x", password="not-the-password")
    assert past_limit.status_code == 429
    _, admitted = _sign_in(fleet, "127.0.0.3", name="admin", password=fleet.password)
    assert admitted.status_code == 303 and admitted.headers["location"] == "agents", admitted.text
    signs = fleet.events(action="console.sign_in")
    assert {e["source_ip"] for e in signs if e["actor"]["name"].startswith("guesser-")} == {"127.0.0.2"}
    assert [e["source_ip"] for e in signs if e["actor"]["name"] == "admin" and e["outcome"] == "ok"][0] == "127.0.0.3"
    # Anyone else claiming a browser's address to the gateway is not believed, secret or no.
    for claim in ({}, {"Fleetline-Console-Proxy": "guessed"}):
        op = fleet.operator(f"claimer-{len(claim)}", "viewer")
        refused = httpx.post(f"{fleet.gateway}/api/v1/admin/registration-tokens", json={}, headers={
            "Authorization": f"Bearer {op['token']}", "X-Forwarded-For": "203.0.113.9", **claim})
        assert refused.status_code == 403  # a refusal is an audit event, with its address
        assert {e["source_ip"] for e in fleet.events(actor=op["name"])} == {"127.0.0.1"}


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
    before = [c["id"] for c in fleet.api("GET", "/commands", params={"agent_id": agent_id, "limit": 1000}).json()["commands"]]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body, headers in ((b"csrf=%ff%fe&type=ping", form), (b"type=ping&params=" + b"x" * 300_000, form),
                          (b'{"type": "ping"}', {"Content-Type": "application/json"}), (b"\x00\x01", form)):
        resp = client.post(f"agents/{agent_id}/commands", content=body, headers=headers)
        assert 400 <= resp.status_code < 500, (resp.status_code, body[:40])
        assert resp.headers["content-security-policy"]
    assert client.get("jobs?status=%ff&before=zz").status_code < 500
    assert client.get("agents?status=nope&label=%00").status_code < 500
    after = [c["id"] for c in fleet.api("GET", "/commands", params={"agent_id": agent_id, "limit": 1000}).json()["commands"]]
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
        page.fill("#name", "admin")
        page.fill("#password", Path(fields["admin_password_file"]).read_text().strip())
        page.click("form.password button[type=submit]")
        page.wait_for_url(re.compile(r"/console/agents$"))
        (cookie,) = [c for c in context.cookies() if c["name"] == "fleetline_session"]
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        context.close()
    finally:
        stop_launcher(proc)


# --- operators: roles, sessions, single sign-on --------------------------------------------------


def test_a_viewer_sees_no_action_and_a_forged_one_is_refused_and_recorded(fleet, browser):
    fleet.operator("vera", "viewer", password="vera-password-1")
    w = Watched(browser, fleet.console)
    w.sign_in("vera", "vera-password-1")
    page = w.page
    assert page.locator("header .who .role").inner_text() == "viewer"
    assert page.locator("nav >> text=Operators").count() == 0
    page.click("table.agents a >> nth=0")
    page.wait_for_url(re.compile(r"/console/agents/[0-9a-f-]{36}$"))
    assert page.locator("form.queue").count() == 0 and page.locator("form.revoke").count() == 0
    agent_id = page.url.rsplit("/", 1)[1]
    page.click("nav >> text=Jobs")
    assert page.locator("form.new-job").count() == 0
    w.check_clean()
    # The form is hidden, not the rule: posted anyway (with a valid CSRF token), the API refuses.
    client = _signed_in(fleet, name="vera", password="vera-password-1")
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("agents").text).group(1)
    before = [c["id"] for c in fleet.api("GET", "/commands", params={"agent_id": agent_id}).json()["commands"]]
    refused = client.post(f"agents/{agent_id}/commands", data={"csrf": csrf, "type": "ping", "params": "{}"})
    assert refused.status_code == 403
    assert [c["id"] for c in fleet.api("GET", "/commands", params={"agent_id": agent_id}).json()["commands"]] == before
    (event,) = fleet.events(actor="vera", action="command.create")
    assert event["outcome"] == "forbidden"


def test_an_admin_adds_an_operator_makes_it_a_token_and_watches_the_audit_trail_live(fleet, browser):
    w = Watched(browser, fleet.console)
    w.sign_in("admin", fleet.password)
    page = w.page
    page.click("nav >> text=Operators")
    page.fill("#name", "olga")
    page.select_option("#role", "operator")
    page.fill("#labels", "env=demo")
    page.fill("#command_types", "ping, facts")
    page.fill("#password", "olga-password-1")
    page.click("form.new-operator button[type=submit]")
    page.wait_for_url(re.compile(r"/console/operators/[0-9a-f-]{36}$"))
    olga = fleet.api("GET", page.url.split("/console")[1]).json()
    assert (olga["role"], olga["scope"]) == ("operator", {"labels": {"env": "demo"}, "command_types": ["ping", "facts"]})
    page.fill("#note", "laptop")
    page.click("form.new-token button[type=submit]")
    secret = page.locator("[data-secret]").inner_text()
    assert secret.startswith("flop_")
    assert fleet.api("GET", "/whoami", token=secret).json()["name"] == "olga"
    page.goto(fleet.console + f"operators/{olga['id']}")  # shown once: not again
    assert page.locator("[data-secret]").count() == 0 and secret not in page.content()
    w.shot("operator")

    page.click("nav >> text=Audit")
    page.wait_for_url(re.compile(r"/console/audit$"))
    rows = page.locator("table.audit tbody tr")
    assert "operator.create" in page.locator("table.audit").inner_text()
    page.evaluate("window.notReloaded = true")
    page.wait_for_function("document.body.dataset.live === 'on'")
    made = fleet.api("POST", "/registration-tokens", json={"max_uses": 1, "note": "<script>alert(1)</script>"})
    page.locator('tr[data-event] >> text=registration_token.create').first.wait_for()
    assert page.evaluate("window.notReloaded") is True
    assert made.json()["token"] not in page.content()  # never a secret in the trail
    assert page.locator("table.audit script").count() == 0  # a hostile note stays text
    assert rows.count() >= 3
    w.shot("audit")
    w.check_clean()


def test_a_session_survives_a_console_restart_and_ends_when_its_operator_is_disabled(fleet, browser):
    pat = fleet.operator("pat", "operator", password="pat-password-12")
    w = Watched(browser, fleet.console)
    w.sign_in("pat", "pat-password-12")
    old = fleet.console_process()
    old.kill()  # SIGKILL: the console keeps nothing a session needs
    wait_until(lambda: _console_back(fleet, old.pid), 60, 0.2, "the console restarted")
    w.page.goto(fleet.console + "jobs")
    assert w.page.url.endswith("/console/jobs")
    assert w.page.locator("header .who").get_attribute("data-operator") == "pat"
    fleet.api("PATCH", f"/operators/{pat['id']}", json={"disabled": True})

    def signed_out() -> bool:
        w.page.goto(fleet.console + "jobs")
        return w.page.url.endswith("/console/sign-in")

    wait_until(signed_out, 8, 0.5, "the disabled operator signed out")


def _console_back(fleet, old_pid: int) -> bool:
    try:
        return fleet.console_process().pid != old_pid and \
            httpx.get(fleet.console + "sign-in", timeout=2).status_code == 200
    except (StopIteration, httpx.HTTPError):
        return False


def _as_user(fleet, email: str | None, verified: bool = True) -> None:
    httpx.post(f"{fleet.provider}/test/user", json={"email": email, "email_verified": verified}).raise_for_status()


def test_single_sign_on_lets_in_an_operator_with_that_verified_email_and_no_one_else(fleet, browser):
    fleet.operator("sso-sam", "viewer", email="Sam@Example.com")
    context = browser.new_context()
    page = context.new_page()
    callbacks: list[str] = []
    page.on("request", lambda r: "/oidc/callback" in r.url and callbacks.append(r.url))
    _as_user(fleet, "sam@example.com")
    page.goto(fleet.console + "sign-in")
    page.click("a.sso")
    page.wait_for_url(re.compile(r"/console/agents$"))
    assert page.locator("header .who").get_attribute("data-operator") == "sso-sam"
    assert [c for c in context.cookies() if c["name"] == "fleetline_oidc"] == []  # spent
    (signed,) = [e for e in fleet.events(action="console.sign_in") if e["actor"]["name"] == "sso-sam"]
    assert signed["outcome"] == "ok" and signed["details"]["method"] == "oidc"

    # The same callback again (a replayed code): the flow is spent, nothing opens.
    fresh = browser.new_context()
    replay = fresh.new_page()
    replay.goto(callbacks[0])
    assert replay.url.endswith("/oidc/callback?" + callbacks[0].split("?", 1)[1])
    assert "not started here" in replay.locator(".error").inner_text()
    assert [c for c in fresh.cookies() if c["name"] == "fleetline_session"] == []
    fresh.close()

    def refused() -> str:
        ctx = browser.new_context()
        p = ctx.new_page()
        p.goto(fleet.console + "sign-in")
        p.click("a.sso")
        p.locator(".error").wait_for()
        assert "/oidc/callback?" in p.url  # the refusal is shown where the provider sent us back
        text = p.locator(".error").inner_text()
        assert [c for c in ctx.cookies() if c["name"] == "fleetline_session"] == []
        ctx.close()
        return text

    _as_user(fleet, "stranger@example.com")
    assert "not accepted" in refused()
    _as_user(fleet, "sam@example.com", verified=False)
    assert "not accepted" in refused()
    context.close()


def test_a_sign_on_answer_with_another_state_is_refused_before_any_code_is_exchanged(fleet):
    """Login CSRF: a provider answer this browser did not start (its state is not the one in
    this browser's flow cookie) opens nothing, and its code is never spent."""
    fleet.operator("sso-sue", "viewer", email="sue@example.com")
    _as_user(fleet, "sue@example.com")
    client = httpx.Client(base_url=fleet.console, timeout=30)
    started = client.get("sign-in/oidc")
    assert started.status_code == 303 and started.headers["location"].startswith(fleet.provider)
    flow_cookie = started.headers["set-cookie"].lower()
    assert "httponly" in flow_cookie and "samesite=lax" in flow_cookie and "path=/console/sign-in" in flow_cookie
    back = httpx.get(started.headers["location"]).headers["location"]
    assert "code=" in back and "state=" in back
    exchanged = httpx.get(f"{fleet.provider}/test/stats").json()["exchanged"]
    forged = client.get(re.sub(r"state=[^&]+", "state=forged", back.split("/console/", 1)[1]))
    assert forged.status_code == 401 and "not started here" in forged.text
    assert "fleetline_session" not in forged.headers.get("set-cookie", "")
    assert httpx.get(f"{fleet.provider}/test/stats").json()["exchanged"] == exchanged  # never exchanged
    # Without the flow cookie at all (another browser), the genuine answer opens nothing either.
    stranger = httpx.get(fleet.console + back.split("/console/", 1)[1])
    assert stranger.status_code == 401 and "fleetline_session" not in stranger.headers.get("set-cookie", "")


def _id_token(fleet, nonce: str) -> str:
    """An ID token of the provider for `nonce`, got the way its holder would: an
    authorization request of one's own, and the code exchanged with the client's secret."""
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = fleet.console + "sign-in/oidc/callback"
    back = httpx.get(f"{fleet.provider}/authorize", params={
        "client_id": "fleetline-console", "response_type": "code", "redirect_uri": redirect_uri, "nonce": nonce,
        "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"}).headers["location"]
    code = re.search(r"code=([^&]+)", back).group(1)
    answer = httpx.post(f"{fleet.provider}/token", auth=("fleetline-console", fleet.client_secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier})
    assert answer.status_code == 200, answer.text
    return answer.json()["id_token"]


def test_an_id_token_signs_in_only_with_a_nonce_auth_issued_and_only_once(fleet):
    """A bare ID token with a nonce its holder chose opened a session (and one token opened
    two): sign-in takes only a nonce auth issued for the console, once."""
    fleet.operator("sso-ida", "viewer", email="ida@example.com")
    _as_user(fleet, "ida@example.com")
    sign_in = f"{fleet.gateway}/api/v1/operators/sign-in"
    chosen = _id_token(fleet, "a-nonce-of-my-own")
    refused = httpx.post(sign_in, json={"method": "oidc", "id_token": chosen, "nonce": "a-nonce-of-my-own"})
    assert refused.status_code == 401
    issued = httpx.post(f"{fleet.gateway}/api/v1/operators/sign-in/oidc-nonce")
    assert issued.status_code == 201
    nonce = issued.json()["nonce"]
    token = _id_token(fleet, nonce)
    first = httpx.post(sign_in, json={"method": "oidc", "id_token": token, "nonce": nonce})
    again = httpx.post(sign_in, json={"method": "oidc", "id_token": token, "nonce": nonce})
    assert (first.status_code, again.status_code) == (201, 401), (first.text, again.text)
    opened = [e for e in fleet.events(action="console.sign_in") if e["actor"]["name"] == "sso-ida"]
    assert [e["outcome"] for e in opened] == ["ok"]
    reasons = [e["details"].get("reason", "") for e in fleet.events(action="console.sign_in")
               if e["actor"]["name"] == "(oidc)"]
    assert sum("nonce" in r for r in reasons) >= 2


def test_one_operator_asks_a_second_approves_and_the_progress_bar_fills(fleet, browser):
    fleet.api("PUT", "/approval-policy", json={"rules": [{"command_types": ["facts"]}], "approvals": 1})
    try:
        fleet.operator("asker", "operator", password="asker-password-1")
        fleet.operator("checker", "operator", password="checker-password-1")
        asker = Watched(browser, fleet.console)
        asker.sign_in("asker", "asker-password-1")
        page = asker.page
        page.click("nav >> text=Jobs")
        page.fill("#labels", "env=demo")
        page.select_option("#job-type", "facts")
        page.click("form.new-job button[type=submit]")
        page.wait_for_url(re.compile(r"/console/jobs/[0-9a-f-]{36}$"))
        job_id = page.url.rsplit("/", 1)[1]
        assert page.locator("[data-job-status]").inner_text() == "awaiting_approval"
        assert page.locator("form.approve").count() == 0  # not for its own request
        assert "Another operator must approve it" in page.locator(".awaiting").inner_text()
        page.evaluate("window.notReloaded = true")
        page.wait_for_function("document.body.dataset.live === 'on'")

        checker = Watched(browser, fleet.console)
        checker.sign_in("checker", "checker-password-1")
        other = checker.page
        other.click("nav >> text=Jobs")
        row = other.locator(f'tr[data-awaiting-job="{job_id}"]')
        assert "asker" in row.inner_text() and "facts" in row.inner_text()
        row.locator("a >> text=review").click()
        other.wait_for_url(re.compile(rf"/console/jobs/{job_id}$"))
        assert other.locator("table.targets").inner_text().count("awaiting_approval") == 2  # which targets
        other.fill("form.approve input[name=comment]", "looks fine")
        other.click("form.approve button[type=submit]")
        other.locator("[data-job-status].status-completed").wait_for()
        checker.shot("approved")

        # The asker's page followed along without a reload: approved, run, complete.
        page.locator("section[data-job] [data-job-status].status-completed").wait_for()
        assert page.evaluate("window.notReloaded") is True
        assert page.locator("[data-awaiting]").count() == 0
        assert float(page.locator('section[data-job] rect[data-status="succeeded"]').get_attribute("width")) == 100
        job = fleet.api("GET", f"/jobs/{job_id}").json()
        assert [a["operator"]["name"] for a in job["approvals"]] == ["checker"]
        assert job["approvals"][0]["comment"] == "looks fine"
        asker.check_clean()
        checker.check_clean()
    finally:
        fleet.api("PUT", "/approval-policy", json={"rules": []})


def test_a_running_commands_output_grows_live_on_its_page_as_text(fleet, browser, tmp_path):
    from tests.integration.agentproc import AgentProcess

    token = fleet.api("POST", "/registration-tokens", json={"max_uses": 1}).json()["token"]
    agent = AgentProcess(fleet.gateway, tmp_path / "shell-agent", "machine-shell", token, allow_shell=True)
    try:
        agent.wait_log("agent_started")
        agent_id = next(a["id"] for a in fleet.api("GET", "/agents").json()["agents"]
                        if a["machine_id"] == "machine-shell")
        argv = ["sh", "-c", "echo '<img src=x onerror=alert(1)>'; for i in $(seq 1 12); do echo line $i; "
                            "sleep 0.4; done"]
        cid = fleet.api("POST", "/commands", json={"agent_id": agent_id, "type": "shell",
                                                   "params": {"argv": argv}}).json()["id"]
        wait_until(lambda: fleet.api("GET", f"/commands/{cid}").json()["status"] == "running", 30, 0.1,
                   "the command to start")
        w = Watched(browser, fleet.console)
        w.sign_in("admin", fleet.password)
        page = w.page
        page.goto(f"{fleet.console}commands/{cid}")
        pre = page.locator("pre[data-output]")
        page.locator("pre[data-output]", has_text="line 3").wait_for()
        assert fleet.api("GET", f"/commands/{cid}").json()["status"] == "running"  # seen live
        assert pre.inner_text().startswith("<img src=x onerror=alert(1)>\nline 1\nline 2\nline 3")
        assert page.locator("main img").count() == 0  # text, never markup
        w.shot("command-output")
        page.locator("h2", has_text="Result: exit code 0").wait_for()  # complete: reloaded with its result
        assert "line 12" in page.locator("pre.output").inner_text()
        w.check_clean()
    finally:
        agent.stop()
