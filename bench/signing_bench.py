"""The cost of signing a command (canonical JSON + Ed25519), per command, in-process: what
queueing pays once per command, never the poll."""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.harness import print_table, write_result
from fleetline.private_files import new_ed25519_key
from services.dispatch.signing.signer import CommandSigner

N = 20000
PARAMS = {"small": {}, "shell": {"argv": ["sh", "-c", "systemctl restart nginx"], "timeout_s": 60},
          "4 KiB": {"blob": "x" * 4096}}


def run() -> dict:
    key = Path(tempfile.mkdtemp()) / "online.key"
    new_ed25519_key(key)
    signer = CommandSigner(str(key))
    now = datetime.now(timezone.utc)
    rows = []
    for name, params in PARAMS.items():
        ids = [str(uuid.uuid4()) for _ in range(N)]
        t0 = time.perf_counter()
        for cid in ids:
            signer.sign(command_id=cid, agent_id=cid, type="shell", params=params, issued_at=now,
                        expires_at=now + timedelta(hours=4), run_timeout_s=3600)
        per = (time.perf_counter() - t0) / N
        rows.append({"params": name, "us_per_command": round(per * 1e6, 1), "commands_per_s": round(1 / per)})
    print_table(f"signing a command (canonical JSON + Ed25519), {N} each", rows,
                ["params", "us_per_command", "commands_per_s"])
    write_result("signing", {"rows": rows})
    return {"rows": rows}


if __name__ == "__main__":
    run()
