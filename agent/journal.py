"""The journal: every command this machine has seen, so none runs twice here.

SQLite from the standard library, synchronous=FULL: `running` is on disk before a
command starts. Statuses: received (seen, not started) -> running -> done (result kept
until the server accepted it) | skipped (the server said it is final; never run).
A verified cancel is recorded (`cancels`) before the agent acts on it: a command it names
never starts here, whenever it arrives.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('received', 'running', 'done', 'skipped')),
    result      TEXT,
    reported    INTEGER NOT NULL DEFAULT 0,
    executions  INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cancels (
    id          TEXT PRIMARY KEY,
    received_at REAL NOT NULL
)
"""


class Journal:
    """One connection shared by the poll loop and the command threads, one statement at a
    time under a lock."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        for name in (path.name, path.name + "-wal", path.name + "-shm"):
            if (path.parent / name).exists():
                (path.parent / name).chmod(0o600)  # command outputs are nobody else's

    def _run(self, sql: str, args: tuple = ()) -> list:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def status(self, command_id: str) -> str | None:
        rows = self._run("SELECT status FROM commands WHERE id = ?", (command_id,))
        return rows[0][0] if rows else None

    def receive(self, command_id: str, ctype: str) -> None:
        self._run("INSERT OR IGNORE INTO commands (id, type, status, updated_at) VALUES (?, ?, 'received', ?)",
                        (command_id, ctype, time.time()))

    def start(self, command_id: str) -> None:
        """Durable before the command runs: after a crash it is `running`, never re-run."""
        self._run("UPDATE commands SET status = 'running', executions = executions + 1, updated_at = ? "
                        "WHERE id = ? AND status = 'received'", (time.time(), command_id))

    def finish(self, command_id: str, result: dict) -> None:
        self._run("UPDATE commands SET status = 'done', result = ?, updated_at = ? WHERE id = ?",
                        (json.dumps(result), time.time(), command_id))

    def skip(self, command_id: str) -> None:
        self._run("UPDATE commands SET status = 'skipped', reported = 1, updated_at = ? WHERE id = ?",
                        (time.time(), command_id))

    def cancel(self, command_id: str) -> bool:
        """Durable before the agent acts on it; False when it was recorded already."""
        with self._lock:
            cursor = self.db.execute("INSERT OR IGNORE INTO cancels (id, received_at) VALUES (?, ?)",
                                     (command_id, time.time()))
            return cursor.rowcount == 1

    def cancelled(self, command_id: str) -> bool:
        return bool(self._run("SELECT 1 FROM cancels WHERE id = ?", (command_id,)))

    def reported(self, command_id: str) -> None:
        self._run("UPDATE commands SET reported = 1 WHERE id = ?", (command_id,))

    def result(self, command_id: str) -> dict | None:
        rows = self._run("SELECT result FROM commands WHERE id = ?", (command_id,))
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    def interrupted(self) -> list[str]:
        """Commands that were running when a previous process died."""
        return [r[0] for r in self._run("SELECT id FROM commands WHERE status = 'running'")]

    def unreported(self) -> list[tuple[str, dict]]:
        rows = self._run("SELECT id, result FROM commands WHERE status = 'done' AND reported = 0")
        return [(r[0], json.loads(r[1])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self.db.close()
