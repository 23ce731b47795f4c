"""A running stack for the benchmarks, with agents seeded in bulk and tokens minted."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from fleetline.cli.keys import ACCESS_TOKEN_KEY, ONLINE_KEY
from fleetline.cli.stack import Stack
from services.auth.keys import Signer

RESULTS = Path(__file__).resolve().parent / "results"
UNLIMITED = {
    "FLEETLINE_CHECKIN_RATE_LIMIT": "100000000/minute",
    "FLEETLINE_REPORT_RATE_LIMIT": "100000000/minute",
    "FLEETLINE_REGISTRATION_RATE_LIMIT": "100000000/minute",
    "FLEETLINE_RENEW_RATE_LIMIT": "100000000/minute",
    "FLEETLINE_LOG_LEVEL": "WARNING",
    "FLEETLINE_DB_POOL_MAX": "40",
    # The seeded agents' tokens live an hour (a run is longer than the default 15 minutes);
    # dispatch refuses tokens living longer than this.
    "FLEETLINE_ACCESS_TOKEN_TTL_S": "3600",
    # The load generator is thousands of agents on one address (real agents are one per
    # machine): a herd of them reconnecting over TLS on a loaded machine can wait more
    # than 2 s for its handshakes, and the gateway's cap on stalled connections per
    # address would close the oldest.
    "FLEETLINE_MAX_STALLED_PER_ADDRESS": "1000000",
}


# PostgreSQL durable (fsync and synchronous_commit on, as in production) unless
# FLEETLINE_BENCH_FSYNC_OFF=1: the headline figures are durable; fsync off compares code
# with code where the disk would only add noise. Every result file says which.
FSYNC_OFF = os.environ.get("FLEETLINE_BENCH_FSYNC_OFF") == "1"
POSTGRES = "fsync off" if FSYNC_OFF else "durable"


def start_stack(replicas: int = 1, **env: str) -> Stack:
    stack = Stack(Path(tempfile.mkdtemp(prefix="fleetline-bench-")), port=0, fast_unsafe_db=FSYNC_OFF,
                  dispatch_replicas=replicas, env={**UNLIMITED, **env})
    stack.start()
    return stack


def database_url(stack: Stack) -> str:
    return stack.pg.url if stack.pg else stack.env.get("FLEETLINE_DATABASE_URL", "")


def seed_agents(stack: Stack, n: int) -> list[dict]:
    """n agents straight into the tables, with access tokens signed by the stack's key."""
    url = database_url(stack)
    signer = Signer.from_file(str(stack.data_dir / "keys" / ACCESS_TOKEN_KEY), "fleetline-auth", "fleetline", 3600)
    agents = [{"agent_id": str(uuid.uuid4()), "machine_id": f"bench-{i}"} for i in range(n)]
    with psycopg.connect(url, autocommit=True) as conn:
        token_id = uuid.uuid4()
        conn.execute("INSERT INTO registration_tokens (id, token_hash, max_uses, expires_at) "
                     "VALUES (%s, %s, 100000, now() + interval '1 day')", (token_id, uuid.uuid4().bytes))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO agents (id, machine_id, registration_token_id, hostname) VALUES (%s, %s, %s, 'bench')",
                [(a["agent_id"], a["machine_id"], token_id) for a in agents])
        conn.execute("ANALYZE agents")
    for a in agents:
        token, _ = signer.access_token(a["agent_id"], a["machine_id"])
        a["headers"] = {"Authorization": f"Bearer {token}", "X-Machine-ID": a["machine_id"]}
    return agents


def _a_signature(stack: Stack) -> str:
    """A real signature of a ping, so claimed rows carry what a queued command carries."""
    from services.dispatch.signing.signer import CommandSigner

    signer = CommandSigner(str(stack.data_dir / "keys" / ONLINE_KEY))
    now = datetime.now(timezone.utc)
    return json.dumps(signer.sign(command_id=str(uuid.uuid4()), agent_id=str(uuid.uuid4()), type="ping",
                                  params={}, issued_at=now, expires_at=now, run_timeout_s=3600))


def seed_backlog(stack: Stack, agents: list[dict], per_agent: int) -> int:
    with psycopg.connect(database_url(stack), autocommit=True) as conn:
        conn.execute("TRUNCATE command_output, deliveries, commands")
        conn.execute(
            """INSERT INTO commands (id, agent_id, type, max_retries, ack_timeout_s, run_timeout_s,
                                     expires_at, visible_at, created_at, signed)
               SELECT gen_random_uuid(), a::uuid, 'ping', 5, 3600, 3600, now() + interval '1 day',
                      now(), now() - make_interval(secs => g), %s::jsonb
                 FROM unnest(%s::text[]) a, generate_series(1, %s) g""",
            (_a_signature(stack), [a["agent_id"] for a in agents], per_agent))
        conn.execute("VACUUM ANALYZE commands")
    return len(agents) * per_agent


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "postgres": payload.pop("postgres", POSTGRES),
               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
               **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n{title}")
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))


def ratio_summary(numerators: list, denominators: list) -> dict:
    """Per-round ratios (each round measured both sides back to back), their median and range:
    steadier than comparing each side's best on a shared, noisy machine."""
    ratios = sorted(n.rate / d.rate for n, d in zip(numerators, denominators, strict=True))
    return {"median": round(ratios[len(ratios) // 2], 3), "min": round(ratios[0], 3),
            "max": round(ratios[-1], 3), "rounds": len(ratios)}
