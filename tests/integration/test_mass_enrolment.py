"""What a fleet enrolling at once does to the server, on a PostgreSQL that flushes its
commits as production does: a thousand fresh agents' first polls, a site of machines
behind one address registering with one token, and a token guesser beside them."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import httpx
import pytest

from agent.timing import rate_limited_delay
from fleetline.cli.keys import ACCESS_TOKEN_KEY
from fleetline.settings import Settings
from services.auth.keys import Signer
from tests.conftest import durable_databases
from tests.integration.conftest import FAST, create_registration_token
from tests.integration.support import metric


@pytest.fixture(scope="module")
def databases():
    with durable_databases() as dbs:
        yield dbs


def _fresh_agents(sql, key_dir, count: int) -> list[tuple[str, str, str]]:
    """`count` agents as registration leaves them (credentials never used): (id, machine, token)."""
    token_id = uuid.uuid4()
    sql.execute("INSERT INTO registration_tokens (id, token_hash, max_uses, uses, expires_at) "
                "VALUES (%s, %s, %s, %s, now() + interval '1 day')", (token_id, uuid.uuid4().bytes, count, count))
    agents = [(str(uuid.uuid4()), f"fresh-{i}") for i in range(count)]
    with sql.cursor() as cur:
        cur.executemany("INSERT INTO agents (id, machine_id, registration_token_id, hostname) "
                        "VALUES (%s, %s, %s, %s)", [(a, m, token_id, m) for a, m in agents])
    signer = Signer.from_file(str(key_dir / ACCESS_TOKEN_KEY), "fleetline-auth", "fleetline", 900)
    return [(a, m, signer.access_token(a, m)[0]) for a, m in agents]


def _busy_disk(sql, database_url: str, flush_ms: int) -> None:
    """Every commit in this database (its sessions from now on) waits `flush_ms` before its
    WAL flush, holding the flush lock, as on a busy disk: commits arriving meanwhile are
    flushed with it (PostgreSQL's group commit)."""
    name = database_url.rpartition("/")[2]
    sql.execute(f'ALTER DATABASE "{name}" SET commit_delay = {flush_ms * 1000}')
    sql.execute(f'ALTER DATABASE "{name}" SET commit_siblings = 0')


def test_a_thousand_fresh_agents_first_polls_at_333_per_s_share_their_first_use_commits(
        start_service, start_gateway, sql, key_dir, database_url):
    """Each first request marks the agent's credentials used before it is answered. One
    commit each, those marks queued behind the pool's connections: with 40 ms flushes, ten
    connections commit 250 marks a second, and the polls of a fleet enrolled at once waited
    (in the field, p50 9.8 s and p99 18 s). Marks seen together are now one commit, counted
    here by the statements dispatch ran (before: one per agent). What that does to the
    polls' latency is measured side by side in `bench field` (p50 1,471 ms -> 78 ms on this
    busy disk): as a test's bound it would measure the machine's other load too."""
    _busy_disk(sql, database_url, 40)
    auth = start_service("services.auth", **FAST)
    dispatch = start_service("services.dispatch", FLEETLINE_JWKS_URL=f"{auth.url}/.well-known/jwks.json",
                             FLEETLINE_DB_POOL_MAX="10", **FAST)  # the default pool
    gw = start_gateway([auth.url], [dispatch.url])
    agents = _fresh_agents(sql, key_dir, 1000)

    async def first_polls() -> list[int]:
        # aiohttp as the load: httpx's pool alone cannot keep up with 333 requests/s here.
        async with aiohttp.ClientSession(gw.url, connector=aiohttp.TCPConnector(limit=0)) as client:
            async def poll(i: int, agent_id: str, machine: str, token: str) -> int:
                await asyncio.sleep(i / 333)
                async with client.get(f"/api/v1/agents/{agent_id}/commands",
                                      headers={"Authorization": f"Bearer {token}", "X-Machine-ID": machine}) as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(*(poll(i, *a) for i, a in enumerate(agents)))

    answers = asyncio.run(first_polls())
    assert set(answers) == {200}
    # Before: one statement per agent (1,000). Now those seen while one runs share the next:
    # 43 here alone, fewer under load (slower statements gather more marks each).
    statements = metric(dispatch.url, "fleetline_first_use_statements")
    assert 1 <= statements <= 250, statements
    # Every one of them marked before it was answered: none of these machines registers again.
    assert sql.execute("SELECT count(*) FROM agents WHERE credentials_used_at IS NULL").fetchone() == (0,)


def test_a_site_of_500_machines_behind_one_address_enrols_within_a_minute_beside_a_token_guesser(
        start_service, sql):
    """At the default limits: per address, refused registrations are what is limited; a valid
    token already bounds its successes with its uses."""
    defaults = Settings.from_env({})
    auth = start_service("services.auth", FLEETLINE_REGISTRATION_RATE_LIMIT=defaults.registration_rate_limit,
                         FLEETLINE_REGISTRATION_FAILURE_LIMIT=defaults.registration_failure_limit)
    token = create_registration_token(auth.url, max_uses=500)["token"]
    limited: list[float] = []

    async def site() -> list[int]:
        """500 machines behind 127.0.0.1, 50 at a time, each as the agent does: a 429 waits
        its Retry-After plus jitter (agent.timing), then tries again."""
        rng = random.Random(5)
        gate = asyncio.Semaphore(50)
        async with httpx.AsyncClient(base_url=auth.url, timeout=60,
                                     limits=httpx.Limits(max_connections=50)) as client:
            async def machine(i: int) -> int:
                async with gate:
                    while True:
                        r = await client.post("/api/v1/agents/register", json={
                            "registration_token": token, "machine_id": f"site-{i}", "hostname": f"site-{i}"})
                        if r.status_code != 429:
                            return r.status_code
                        limited.append(float(r.headers["Retry-After"]))
                        await asyncio.sleep(rate_limited_delay(float(r.headers["Retry-After"]), rng))

            return await asyncio.gather(*(machine(i) for i in range(500)))

    began = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        enrolling = pool.submit(asyncio.run, site())
        # Meanwhile a guesser on 127.0.0.2 tries made-up tokens, one after another.
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), base_url=auth.url,
                          timeout=30) as guesser:
            guesses = [guesser.post("/api/v1/agents/register", json={
                "registration_token": f"flreg_guess-{i}", "machine_id": f"guess-{i}", "hostname": "g"}).status_code
                for i in range(30)]
        # ... and a machine on 127.0.0.3 enrols with its own token, unaffected by either.
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), base_url=auth.url,
                          timeout=30) as elsewhere:
            own = create_registration_token(auth.url)["token"]
            genuine = elsewhere.post("/api/v1/agents/register", json={
                "registration_token": own, "machine_id": "elsewhere", "hostname": "elsewhere"})
        statuses = enrolling.result(timeout=90)
    took = time.monotonic() - began
    assert statuses == [201] * 500 and took < 60, (sorted(set(statuses)), took)
    assert all(seconds <= 1 for seconds in limited)  # told to come back within a second, if at all
    assert 429 in guesses[:29] and guesses[:10] == [401] * 10 and set(guesses[10:]) == {429}, guesses
    assert genuine.status_code == 201, genuine.text
    assert sql.execute("SELECT uses FROM registration_tokens WHERE max_uses = 500").fetchone() == (500,)
    assert sql.execute("SELECT count(*) FROM agents").fetchone() == (501,)
