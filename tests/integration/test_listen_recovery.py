"""Dispatch's LISTEN connection survives a database restart: /readyz says not ready while
it is down, and afterwards a held poll is woken by NOTIFY again (not by its re-check)."""

import threading
import time

import httpx

from fleetline.migrate import migrate
from fleetline.pgembed import EmbeddedPostgres
from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.fleet import Fleet
from tests.integration.support import ServiceProcess, held_polls, wait_until


def _ready(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_long_polls_hear_new_commands_again_after_a_database_restart(tmp_path, key_dir):
    pg = EmbeddedPostgres(tmp_path / "pg")  # durable: a SIGKILL must not lose commits
    url = pg.start()
    migrate(url)
    env = {"FLEETLINE_DATABASE_URL": url, "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN,
           "FLEETLINE_JWT_PRIVATE_KEY_FILE": str(key_dir / "signing.pem")}
    auth = ServiceProcess("services.auth", env, tmp_path).wait_ready()
    dispatch = ServiceProcess("services.dispatch", {**env, "FLEETLINE_JWKS_URL": f"{auth.url}/.well-known/jwks.json"},
                              tmp_path).wait_ready()
    try:
        fleet = Fleet(auth.url, dispatch.url)
        agent = fleet.register()
        pg.proc.kill()
        pg.proc.wait()
        wait_until(lambda: _ready(dispatch.url) == 503, 15, what="dispatch to say it is not ready")
        pg.start()  # the same port, as fleetline up restarts it
        wait_until(lambda: _ready(dispatch.url) == 200, 30, what="dispatch ready again")

        answer = {}

        def hold():
            answer["body"] = fleet.poll(agent, wait=30)
            answer["at"] = time.monotonic()

        th = threading.Thread(target=hold)
        th.start()
        wait_until(lambda: held_polls(dispatch.url) == 1, 10, what="the poll to park")
        queued = time.monotonic()
        cmd = fleet.queue(agent)
        th.join(35)
        assert [c["id"] for c in answer["body"]["commands"]] == [cmd["id"]]
        assert answer["at"] - queued < 1.0  # NOTIFY again; the re-check would take up to 5 s
    finally:
        dispatch.stop()
        auth.stop()
        pg.destroy()
