"""`fleetline secrets DIR [--host NAME ...]`: the files compose.yaml mounts as secrets,
created once (0600 for everything private): the access-token signing key, the admin token,
the database's owner and service passwords and URLs, Redis's password, the command-signing
keys, and a private CA with the gateway's certificate (for the names agents reach it by)."""

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


def _signing_key(out: Path) -> list[str]:
    write_private_key(out / "signing-key.pem")
    return ["signing-key.pem"]


def _admin_token(out: Path) -> list[str]:
    write_secret_file(out / "admin-token", secrets.token_urlsafe(32))
    return ["admin-token"]


def _database(out: Path) -> list[str]:
    owner, service = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    write_secret_file(out / "postgres-password", owner)
    # The owner runs migrations; the services connect as fleetline_app (rows only).
    write_secret_file(out / "database-url", f"postgresql://fleetline:{owner}@postgres:5432/fleetline")
    write_secret_file(out / "service-database-password", service)
    write_secret_file(out / "service-database-url", f"postgresql://fleetline_app:{service}@postgres:5432/fleetline")
    return ["postgres-password", "database-url", "service-database-password", "service-database-url"]


def _redis(out: Path) -> list[str]:
    password = secrets.token_urlsafe(24)
    write_secret_file(out / "redis-password", password)
    write_secret_file(out / "redis.conf", f'requirepass "{password}"\nsave ""\nappendonly no')
    write_secret_file(out / "redis-url", f"redis://:{password}@redis:6379/0")
    return ["redis-password", "redis.conf", "redis-url"]


# (the first file of a group, what makes the group)
MAKERS = (("signing-key.pem", _signing_key), ("admin-token", _admin_token), ("postgres-password", _database),
          ("redis-password", _redis), ("command-signing-key.pem", _command_keys))


def run(args: argparse.Namespace) -> int:
    from fleetline.tls_files import ensure_tls

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for first, make in MAKERS:  # each group made once, whole; existing files never change
        if not (out / first).exists():
            made += make(out)
    had_tls = (out / "tls" / "gateway.pem").exists()
    ensure_tls(out / "tls", ["gateway", *args.host])
    if not had_tls:
        made += ["tls/ca.pem", "tls/ca.key", "tls/gateway.pem", "tls/gateway.key"]
    print(f"secrets in {out}: {', '.join(made) if made else 'all present, none changed'}")
    if "command-root.key" in made:
        print(f"move {out / 'command-root.key'} offline: it signs keysets (fleetline keys keyset) and "
              "no container needs it")
    if "tls/ca.key" in made:
        print(f"give {out / 'tls' / 'ca.pem'} to agents (--ca-file) and the CLI (FLEETLINE_CA_FILE); keep "
              f"{out / 'tls' / 'ca.key'} offline (it signs gateway certificates)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("secrets", help="create the secret files compose.yaml mounts")
    p.add_argument("dir", nargs="?", default="secrets")
    p.add_argument("--host", action="append", default=[], metavar="NAME",
                   help="a name or address agents reach the gateway by (repeatable); the certificate "
                        "is made again when one is added")
    p.set_defaults(func=run)
