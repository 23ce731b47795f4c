"""Events out: what the outbox costs and how fast one dispatch delivers.

outbox row: what an audited change pays for its event: ROW_EVENTS audit events appended in
one transaction that is then rolled back (so nothing is sent and the sender stays idle),
with no endpoint against one subscribed (each append then writes its delivery row in the
trigger), ROUNDS rounds alternating: microseconds an append.

queue cost: commands queued through the gateway (16 at a time, ROUNDS rounds alternating)
with no webhook endpoint against one subscribed to `audit.command.create`, each queued
command writing its delivery in its own transaction and the sender sending it to a local
receiver meanwhile, on the same two cores: commands a second and the ratio.

throughput: EVENTS audit events appended in one transaction (EVENTS deliveries due at
once); from the commit to the last one received by a local receiver (a threaded
http.server answering 200), one dispatch sending.

latency: commands queued one at a time; from each answer (the commit is before it) to its
event's receipt, p50 and p99, at the default FLEETLINE_WEBHOOK_INTERVAL_S (0.5 s).
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from bench.harness import FSYNC_OFF, database_url, print_table, start_stack, write_result
from tests.integration.webhook_receiver import Receiver

ROUNDS = 3
ROW_EVENTS = 5000
QUEUED = 2000
EVENTS = 5000
LATENCY_RUNS = 200


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * len(ordered)) - 1))]


def _queue(api: httpx.Client, agent_id: str, n: int) -> float:
    def one(_: int) -> None:
        api.post("/commands", json={"agent_id": agent_id, "type": "ping", "ttl_s": 60}).raise_for_status()

    began = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - began)


def run() -> dict:
    stack = start_stack(FLEETLINE_WEBHOOK_ALLOW_PRIVATE="1")
    receiver = Receiver().start()
    try:
        api = httpx.Client(base_url=f"{stack.gateway_url}/api/v1/admin", timeout=60,
                           headers={"Authorization": f"Bearer {stack.admin_token}"},
                           limits=httpx.Limits(max_connections=32))
        token = api.post("/registration-tokens", json={"max_uses": 1}).json()["token"]
        agent_id = httpx.post(f"{stack.gateway_url}/api/v1/agents/register", headers={"X-Machine-ID": "bench-wh"},
                              json={"registration_token": token, "machine_id": "bench-wh",
                                    "hostname": "bench"}).json()["agent_id"]
        hook = api.post("/webhooks", json={"url": receiver.url, "events": ["audit.command.create"]}).json()
        api.patch(f"/webhooks/{hook['id']}", json={"enabled": False}).raise_for_status()
        _queue(api, agent_id, 200)  # warm
        row_rounds = []
        with psycopg.connect(database_url(stack), autocommit=True) as sql:
            for _ in range(ROUNDS):
                row_rounds.append({"without_us": _appends_us(sql, api, hook, False),
                                   "with_row_us": _appends_us(sql, api, hook, True)})
                row_rounds[-1]["added_us"] = round(row_rounds[-1]["with_row_us"] - row_rounds[-1]["without_us"], 1)
        print_table(f"An audit event appended ({ROW_EVENTS} in a rolled-back transaction): without a subscribed "
                    "endpoint, and with one (the delivery row written by its trigger)", row_rounds,
                    ["without_us", "with_row_us", "added_us"])
        rounds = []
        for _ in range(ROUNDS):
            api.patch(f"/webhooks/{hook['id']}", json={"enabled": False}).raise_for_status()
            without = _queue(api, agent_id, QUEUED)
            api.patch(f"/webhooks/{hook['id']}", json={"enabled": True, "events": ["audit.command.create"]}
                      ).raise_for_status()
            received = len(receiver.got)
            with_row = _queue(api, agent_id, QUEUED)
            _until(lambda n=received + QUEUED: len(receiver.got) >= n, 120)
            rounds.append({"without_per_s": round(without), "with_outbox_per_s": round(with_row),
                           "ratio": round(with_row / without, 3)})
        print_table(f"Queueing {QUEUED} commands, 16 at a time: without a webhook, and with one subscribed "
                    "(its delivery written in each command's transaction, sent meanwhile)", rounds,
                    ["without_per_s", "with_outbox_per_s", "ratio"])

        api.patch(f"/webhooks/{hook['id']}", json={"events": ["audit.bench.event"]}).raise_for_status()
        receiver.got.clear()
        with psycopg.connect(database_url(stack), autocommit=True) as sql:
            with sql.transaction():
                sql.execute("INSERT INTO audit_events (id, actor_type, actor_name, action, outcome) "
                            "SELECT gen_random_uuid(), 'operator', 'bench', 'bench.event', 'ok' "
                            "FROM generate_series(1, %s)", (EVENTS,))
            committed = time.perf_counter()
        _until(lambda: len(receiver.got) >= EVENTS, 300)
        took = time.perf_counter() - committed
        throughput = {"events": EVENTS, "seconds": round(took, 2), "per_s": round(EVENTS / took)}
        print_table("Deliveries one dispatch sends to a local receiver", [throughput], ["events", "seconds", "per_s"])

        api.patch(f"/webhooks/{hook['id']}", json={"events": ["audit.command.create"]}).raise_for_status()
        latencies = []
        for _ in range(LATENCY_RUNS):
            before = len(receiver.got)
            api.post("/commands", json={"agent_id": agent_id, "type": "ping", "ttl_s": 60}).raise_for_status()
            answered = time.perf_counter()
            _until(lambda n=before: len(receiver.got) > n, 30, 0.001)
            latencies.append((time.perf_counter() - answered) * 1000)
        latency = {"runs": LATENCY_RUNS, "p50_ms": round(statistics.median(latencies), 1),
                   "p99_ms": round(_pct(latencies, 0.99), 1), "max_ms": round(max(latencies), 1)}
        print_table("From a command's answer (its commit) to its event received", [latency],
                    ["runs", "p50_ms", "p99_ms", "max_ms"])
    finally:
        receiver.stop()
        stack.stop()
    result = {"outbox_row": row_rounds, "queue": rounds, "throughput": throughput, "latency": latency,
              "postgres": "fsync off" if FSYNC_OFF else "durable"}
    write_result("webhooks", result)
    return result


def _appends_us(sql, api: httpx.Client, hook: dict, subscribed: bool) -> float:
    api.patch(f"/webhooks/{hook['id']}", json={"enabled": subscribed, "events": ["audit.bench.row"]}
              ).raise_for_status()
    with sql.transaction():
        began = time.perf_counter()
        sql.execute("INSERT INTO audit_events (id, actor_type, actor_name, action, outcome) "
                    "SELECT gen_random_uuid(), 'operator', 'bench', 'bench.row', 'ok' FROM generate_series(1, %s)",
                    (ROW_EVENTS,))
        took = time.perf_counter() - began
        raise psycopg.Rollback()
    return round(took / ROW_EVENTS * 1e6, 1)


def _until(check, timeout: float, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(every)
