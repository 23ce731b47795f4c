"""The agent as one file: its size, its memory at rest, and an upgrade's time.

size: `make agent-release`'s files for both platforms (every Python from 3.9 to 3.14).

memory at rest: the resident set (RSS, from /proc) of an enrolled agent holding its long
poll, 20 s after it started: run from the .pyz by its launcher (the launcher and the
agent, each and together) against `python -m agent` from a virtualenv, on the same
Python, side by side in one run; and the .pyz on Python 3.9.

upgrade: an agent installed from the .pyz, moved between two releases by `agent.upgrade`
(alternately up and, with allow_downgrade, down), RUNS times: from the command's creation
to its `succeeded` (reported by the new version after its first authenticated poll), the
new release's first start (its code unpacked under the prefix; the wheels it shares with
the release before are not unpacked again) apart from the later ones.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.harness import FSYNC_OFF, UNLIMITED, print_table, write_result
from fleetline import agent_release
from fleetline.cli.stack import Stack
from fleetline.release_names import file_name
from tests.integration.releases import PLATFORM, Installed, python

RUNS = 6
AT_REST_S = 20


def _rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def _token(api: httpx.Client) -> str:
    return api.post("/registration-tokens", json={"max_uses": 1}).json()["token"]


def _until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _wait_command(api: httpx.Client, cid: str) -> dict:
    return _until(lambda: (c := api.get(f"/commands/{cid}").json())["status"] in
                  ("succeeded", "failed", "timed_out", "rejected") and c, 180, f"command {cid}")


def sizes(out: Path) -> list[dict]:
    rows = []
    for platform in sorted(agent_release.PLATFORMS):
        path = agent_release.build("1.0.0", platform, out)
        rows.append({"file": path.name, "bytes": path.stat().st_size,
                     "MiB": round(path.stat().st_size / 2**20, 1)})
    return rows


def _venv_agent(stack: Stack, api: httpx.Client, state: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
    env["FLEETLINE_AGENT_REGISTRATION_TOKEN"] = _token(api)
    return subprocess.Popen([sys.executable, "-m", "agent", "--server", stack.gateway_url, "--state-dir", str(state),
                             "--machine-id", "bench-venv"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def memory(stack: Stack, api: httpx.Client, pyz: Path, work: Path) -> list[dict]:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    started = []
    venv = _venv_agent(stack, api, work / "venv-state")
    for py in (here, "3.9"):
        inst = Installed(pyz, work / f"rest-{py}", py)
        started.append((py, inst.start(stack.gateway_url, f"bench-rest-{py}", _token(api))))
    try:
        for _, inst in started:
            inst.agent_id()
        _until(lambda: (work / "venv-state" / "state.json").exists(), 60, "the venv agent")
        time.sleep(AT_REST_S)  # at rest: enrolled, holding its poll (what is measured is the idle state)
        rows = [{"agent": f"python -m agent from a virtualenv (Python {here})", "agent_MiB": round(
            _rss_mib(venv.pid), 1), "launcher_MiB": "", "total_MiB": round(_rss_mib(venv.pid), 1)}]
        for py, inst in started:
            assert inst.proc is not None
            agent, launcher = _rss_mib(inst.child().pid), _rss_mib(inst.proc.pid)
            rows.append({"agent": f".pyz run by its launcher (Python {py})", "agent_MiB": round(agent, 1),
                         "launcher_MiB": round(launcher, 1), "total_MiB": round(agent + launcher, 1)})
        return rows
    finally:
        venv.terminate()
        venv.wait(30)
        for _, inst in started:
            inst.stop()


def upgrades(stack: Stack, api: httpx.Client, old: Path, new: Path, work: Path) -> dict:
    inst = Installed(old, work / "upgrading", "3.9").start(stack.gateway_url, "bench-upgrading", _token(api))
    try:
        agent_id = inst.agent_id()
        # Past its first poll (jittered after a start, up to 30 s): what is timed is the upgrade.
        ping = api.post("/commands", json={"agent_id": agent_id, "type": "ping"})
        ping.raise_for_status()
        assert _wait_command(api, ping.json()["id"])["status"] == "succeeded"
        first: list[float] = []
        later: list[float] = []
        for n in range(RUNS):
            version, down = ("1.0.1", False) if n % 2 == 0 else ("1.0.0", True)
            began = time.monotonic()
            r = api.post("/commands", json={"agent_id": agent_id, "type": "agent.upgrade",
                                            "params": {"version": version, **({"allow_downgrade": True} if down
                                                                              else {})}})
            r.raise_for_status()
            done = _wait_command(api, r.json()["id"])
            took = time.monotonic() - began
            assert done["status"] == "succeeded", done
            (first if n == 0 else later).append(took)
        return {"runs": RUNS, "first_start_s": round(first[0], 2),
                "later_p50_s": round(statistics.median(later), 2), "later_max_s": round(max(later), 2)}
    finally:
        inst.stop()


def run() -> dict:
    work = Path(tempfile.mkdtemp(prefix="fleetline-bench-release-"))
    size_rows = sizes(work / "dist")
    print_table("The agent's file, per platform (wheels for CPython 3.9 to 3.14)", size_rows, ["file", "bytes", "MiB"])
    here = PLATFORM
    old = work / "dist" / file_name("1.0.0", here)
    new = agent_release.build("1.0.1", here, work / "dist")
    stack = Stack(work / "stack", port=0, fast_unsafe_db=FSYNC_OFF, env=UNLIMITED)
    stack.start()
    try:
        api = httpx.Client(base_url=f"{stack.gateway_url}/api/v1/admin", timeout=60,
                           headers={"Authorization": f"Bearer {stack.admin_token}"})
        for version, path in (("1.0.0", old), ("1.0.1", new)):
            api.post("/agent-releases", params={"version": version, "platform": here}, content=path.read_bytes(),
                     headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        mem_rows = memory(stack, api, old, work)
        print_table(f"Memory at rest (RSS, {AT_REST_S} s after start, enrolled and holding its poll)", mem_rows,
                    ["agent", "agent_MiB", "launcher_MiB", "total_MiB"])
        timing = upgrades(stack, api, old, new, work)
        print_table("An upgrade: from the command's creation to `succeeded` from the new version (its first poll)",
                    [timing], ["runs", "first_start_s", "later_p50_s", "later_max_s"])
    finally:
        stack.stop()
    result = {"sizes": size_rows, "memory": mem_rows, "upgrade": timing, "python": python("3.9")}
    write_result("release", json.loads(json.dumps(result)))
    return result
