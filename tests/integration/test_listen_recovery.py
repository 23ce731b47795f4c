"""Dispatch's LISTEN connection survives a database restart: /readyz says not ready while
it is down, and afterwards a held poll is woken by NOTIFY again (not by its re-check)."""


import httpx

from fleetline.cli.migrate import migrate
from fleetline.cli.pgembed import EmbeddedPostgres
from tests.integration.conftest import ADMIN_TOKEN, signing_env
from tests.integration.fleet import Fleet
from tests.integration.support import HTTP, ServiceProcess, wait_until


def _ready(url: str) -> int:
    try:
        return HTTP.get(f"{url}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_long_polls_hear_new_commands_again_after_a_database_restart(tmp_path, key_dir):
    pg = EmbeddedPostgres(tmp_path / "pg")  # durable: a SIGKILL must not lose commits
    url = pg.start()
    migrate(url)
    env = {"FLEETLINE_DATABASE_URL": url, "FLEETLINE_ADMIN_TOKEN": ADMIN_TOKEN,
           **signing_env(key_dir)}
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

        # NOTIFY again: without LISTEN the poll would wait for a re-check (5 s) or its deadline.
        assert fleet.queue_to_held_poll(agent) < 1.0
    finally:
        dispatch.stop()
        auth.stop()
        pg.destroy()
