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


def _command_keys(out: Path) -> list[str]:
    """The root key (to keep offline), dispatch's online key and keyset version 1."""
    import json

    from fleetline.keys_cmd import keyset, write_key
    from fleetline.signing import b64url, public_raw

    root = write_key(out / "command-root.key")
    write_secret_file(out / "command-root.pub", b64url(public_raw(root.public_key())))
    online = write_key(out / "command-signing-key.pem")
    write_secret_file(out / "command-keyset.json", json.dumps(keyset(root, [online.public_key()], 1, 90)))
    return ["command-root.key", "command-root.pub", "command-signing-key.pem", "command-keyset.json"]


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
    if not (out / "command-signing-key.pem").exists():
        made += _command_keys(out)
    print(f"secrets in {out}: {', '.join(made) if made else 'all present, none changed'}")
    if "command-root.key" in made:
        print(f"move {out / 'command-root.key'} offline: it signs keysets (fleetline keys keyset) and "
              "no container needs it")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("secrets", help="create the secret files compose.yaml mounts")
    p.add_argument("dir", nargs="?", default="secrets")
    p.set_defaults(func=run)
