"""`fleetline secrets DIR`: the files compose.yaml mounts as secrets, created once (0600)."""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from services.auth.keys import write_private_key


def write_secret_file(path: Path | str, value: str) -> None:
    """A secret in a file created with mode 0600 (never readable by others, not even briefly)."""
    with open(path, "w", opener=lambda p, flags: os.open(p, flags, 0o600)) as fh:
        fh.write(value + "\n")


def run(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    if not (out / "signing-key.pem").exists():
        write_private_key(out / "signing-key.pem")
        made.append("signing-key.pem")
    if not (out / "admin-token").exists():
        write_secret_file(out / "admin-token", secrets.token_urlsafe(32))
        made.append("admin-token")
    if not (out / "postgres-password").exists():
        password = secrets.token_urlsafe(24)
        write_secret_file(out / "postgres-password", password)
        write_secret_file(out / "database-url", f"postgresql://fleetline:{password}@postgres:5432/fleetline")
        made += ["postgres-password", "database-url"]
    print(f"secrets in {out}: {', '.join(made) if made else 'all present, none changed'}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("secrets", help="create the secret files compose.yaml mounts")
    p.add_argument("dir", nargs="?", default="secrets")
    p.set_defaults(func=run)
