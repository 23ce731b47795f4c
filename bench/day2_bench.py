"""Day-2 operations: schedules and cancel.

schedules: 1,000 active schedules on a one-minute cron (`* * * * *`), one dispatch, each
targeting one agent: for every tick, its lateness (from scheduled_for to its job's
created_at, the database's own stamps), p50 and p99 per minute; and dispatch's CPU seconds
over a minute of ticking against a minute with every schedule paused, measured side by
side in the same run (the ticker's cost is the difference).

cancel: the shipped agent (`--allow-shell`) runs `sh -c 'echo $$; sleep 600 & sleep 600;
wait'`; once its process group is known from its live output, the operator cancels it:
the time from the cancel's answer to the last process of that group gone (read from
/proc), and to the command's status `cancelled`, over RUNS runs, with free slots (the
held poll wakes) and with `--max-parallel 1` (the watcher's poll) side by side.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import psutil
import psycopg

from bench.harness import (
    FSYNC_OFF,
    UNLIMITED,
    database_url,
    print_table,
    seed_agents,
    start_stack,
    write_result,
)
from fleetline.cli.stack import Stack

SCHEDULES = 1000
MINUTES = 2
RUNS = 50
RUNAWAY = {"argv": ["sh", "-c", 'echo "group $$"; sleep 600 & sleep 600; wait'], "timeout_s": 900}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * len(ordered)) - 1))]


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def _next_minute_plus(seconds: float) -> None:
    now = time.time()
    time.sleep(60 - now % 60 + seconds)


def schedules() -> dict:
    # The seeded agents never poll, so every job a tick starts stays running: the reaper,
    # moving thousands of running jobs on every 5 s, would be most of dispatch's CPU. Quiet
    # here, so the CPU measured is the ticker's.
    stack = start_stack(FLEETLINE_DB_POOL_MAX="10", FLEETLINE_REAPER_INTERVAL_S="3600")
    try:
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        agents = seed_agents(stack, SCHEDULES)
        api = httpx.Client(base_url=f"{stack.gateway_url}/api/v1/admin", headers=admin, timeout=60)
        ids = []
        for i, agent in enumerate(agents):
            r = api.post("/schedules", json={"name": f"bench-{i:04d}", "selector": {"agent_ids": [agent["agent_id"]]},
                                             "command": {"type": "ping"}, "cron": "* * * * *", "overlap": "allow"})
            r.raise_for_status()
            ids.append(r.json()["id"])
        dispatch_pids = [c.proc.pid for c in stack.children if c.name.startswith("dispatch")]
        url = database_url(stack)
        rows = []
        _next_minute_plus(1)  # the first whole minute starts now
        for minute in range(MINUTES):
            cpu0, t0 = _cpu(dispatch_pids), time.monotonic()
            _next_minute_plus(1)
            cpu = _cpu(dispatch_pids) - cpu0
            rows.append({"window": f"minute {minute + 1}: 1,000 active", "cpu_s": round(cpu, 2),
                         "wall_s": round(time.monotonic() - t0, 1)})
        with psycopg.connect(url, autocommit=True) as conn:
            late = [r[0] for r in conn.execute(
                "SELECT extract(epoch FROM j.created_at - r.scheduled_for)::float8 FROM schedule_runs r "
                "JOIN jobs j ON j.id = r.job_id WHERE r.outcome = 'started'").fetchall()]
            per_minute = conn.execute(
                "SELECT r.scheduled_for, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY "
                "extract(epoch FROM j.created_at - r.scheduled_for)::float8), percentile_cont(0.99) WITHIN GROUP "
                "(ORDER BY extract(epoch FROM j.created_at - r.scheduled_for)::float8), max(extract(epoch FROM "
                "j.created_at - r.scheduled_for)::float8) FROM schedule_runs r JOIN jobs j ON j.id = r.job_id "
                "GROUP BY 1 ORDER BY 1").fetchall()
            twice = conn.execute("SELECT count(*) FROM (SELECT schedule_id, scheduled_for FROM jobs WHERE "
                                 "schedule_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) t").fetchone()[0]
            conn.execute("UPDATE schedules SET status = 'paused'")
        cpu0, t0 = _cpu(dispatch_pids), time.monotonic()
        _next_minute_plus(1)
        rows.append({"window": "a minute, all paused", "cpu_s": round(_cpu(dispatch_pids) - cpu0, 2),
                     "wall_s": round(time.monotonic() - t0, 1)})
        ticks = [{"tick": t.strftime("%H:%M"), "jobs": n, "p50_ms": round(p50 * 1000, 1),
                  "p99_ms": round(p99 * 1000, 1), "max_ms": round(mx * 1000, 1)} for t, n, p50, p99, mx in per_minute]
        print_table("Schedules: 1,000 on `* * * * *`, one dispatch: lateness per tick (scheduled_for -> job created)",
                    ticks, ["tick", "jobs", "p50_ms", "p99_ms", "max_ms"])
        print_table("Dispatch CPU over a minute (the ticker's cost is the difference)", rows,
                    ["window", "cpu_s", "wall_s"])
        result = {"schedules": SCHEDULES, "ticks": ticks, "cpu": rows, "ticks_started_twice": twice,
                  "lateness_ms": {"p50": round(_pct(late, 0.5) * 1000, 1), "p99": round(_pct(late, 0.99) * 1000, 1),
                                  "n": len(late)}}
        print(f"all ticks: p50 {result['lateness_ms']['p50']} ms, p99 {result['lateness_ms']['p99']} ms over "
              f"{len(late)} jobs; ticks started twice: {twice}")
        write_result("schedules", result)
        return result
    finally:
        stack.stop()


def _alive_in_group(pgid: int) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _cancel_runs(stack: Stack, admin: dict, max_parallel: str, runs: int) -> dict:
    api = httpx.Client(base_url=f"{stack.gateway_url}/api/v1/admin", headers=admin, timeout=60)
    token = api.post("/registration-tokens", json={"max_uses": 1}).json()["token"]
    state = Path(tempfile.mkdtemp(prefix="fleetline-bench-agent-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
    env["FLEETLINE_AGENT_REGISTRATION_TOKEN"] = token
    agent = subprocess.Popen([sys.executable, "-m", "agent", "--server", stack.gateway_url, "--state-dir", str(state),
                              "--machine-id", f"bench-cancel-{max_parallel}", "--allow-shell",
                              "--max-parallel", max_parallel],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (state / "state.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        agent_id = __import__("json").loads((state / "state.json").read_text())["agent_id"]
        gone_s, final_s = [], []
        for _ in range(runs):
            cmd = api.post("/commands", json={"agent_id": agent_id, "type": "shell", "params": RUNAWAY}).json()
            pgid = None
            while pgid is None:
                data = api.get(f"/commands/{cmd['id']}/output", params={"wait": 5}).json()["data"]
                line = next((ln for ln in data.splitlines() if ln.startswith("group ")), None)
                pgid = int(line.split()[1]) if line else None
            answered = api.post(f"/commands/{cmd['id']}/cancel")
            asked = time.monotonic()
            assert answered.status_code == 202, answered.text
            gone = final = None
            while gone is None or final is None:
                now = time.monotonic()
                if gone is None and not _alive_in_group(pgid):
                    gone = now - asked
                if final is None and api.get(f"/commands/{cmd['id']}").json()["status"] == "cancelled":
                    final = time.monotonic() - asked
                if now - asked > 30:
                    raise RuntimeError(f"command {cmd['id']} was not stopped within 30 s")
                time.sleep(0.005)
            gone_s.append(gone)
            final_s.append(final)
        return {"runs": runs, "gone_p50_ms": round(_pct(gone_s, 0.5) * 1000), "gone_p99_ms": round(_pct(gone_s, 0.99) * 1000),
                "cancelled_p50_ms": round(_pct(final_s, 0.5) * 1000),
                "cancelled_p99_ms": round(_pct(final_s, 0.99) * 1000),
                "gone_mean_ms": round(statistics.mean(gone_s) * 1000)}
    finally:
        agent.terminate()
        agent.wait(30)


def cancel() -> dict:
    # Unlimited check-ins: one agent running 100 commands back to back polls far more than a
    # machine does (60/minute would answer 429 and measure the agent's backoff instead).
    stack = Stack(Path(tempfile.mkdtemp(prefix="fleetline-bench-cancel-")), port=0, fast_unsafe_db=FSYNC_OFF,
                  env=UNLIMITED)
    stack.start()
    try:
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        rows = []
        for label, slots in (("free slots: the held poll wakes", "4"), ("--max-parallel 1: the watcher's poll", "1")):
            rows.append({"agent": label, **_cancel_runs(stack, admin, slots, RUNS)})
        print_table(f"Cancel: from the cancel's answer to the process group gone and to `cancelled`, {RUNS} runs each",
                    rows, ["agent", "runs", "gone_p50_ms", "gone_p99_ms", "cancelled_p50_ms", "cancelled_p99_ms"])
        result = {"at": datetime.now(timezone.utc).isoformat(), "rows": rows}
        write_result("cancel", result)
        return result
    finally:
        stack.stop()


def run() -> None:
    schedules()
    cancel()
