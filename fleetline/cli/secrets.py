"""`fleetline secrets DIR [--host NAME ...]`: the files compose.yaml mounts as secrets,
created once (0600 for everything private): the access-token signing key, the admin token,
the console's proxy secret (shared with the gateway),
the database's owner and service passwords and URLs, Redis's password, the command-signing
keys, and a private CA with the gateway's certificate (for the names agents reach it by)."""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from fleetline.cli.keys import ensure_keys
from fleetline.cli.tls import ensure_tls
from fleetline.private_files import write_private


def _admin_token(out: Path) -> list[str]:
    write_private(out / "admin-token", secrets.token_urlsafe(32) + "\n")
    return ["admin-token"]


def _console_proxy_secret(out: Path) -> list[str]:
    """Shared by the console and the gateway: the console's calls name the browser they serve."""
    write_private(out / "console-proxy-secret", secrets.token_urlsafe(32) + "\n")
    return ["console-proxy-secret"]


def _database(out: Path) -> list[str]:
    owner, service = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    write_private(out / "postgres-password", owner + "\n")
    # The owner runs migrations; the services connect as fleetline_app (rows only).
    write_private(out / "database-url", f"postgresql://fleetline:{owner}@postgres:5432/fleetline" + "\n")
    write_private(out / "service-database-password", service + "\n")
    write_private(out / "service-database-url", f"postgresql://fleetline_app:{service}@postgres:5432/fleetline" + "\n")
    return ["postgres-password", "database-url", "service-database-password", "service-database-url"]


def _redis(out: Path) -> list[str]:
    password = secrets.token_urlsafe(24)
    write_private(out / "redis-password", password + "\n")
    write_private(out / "redis.conf", f'requirepass "{password}"\nsave ""\nappendonly no\n')
    write_private(out / "redis-url", f"redis://:{password}@redis:6379/0" + "\n")
    return ["redis-password", "redis.conf", "redis-url"]


# (the first file of a group, what makes the group)
MAKERS = (("admin-token", _admin_token), ("postgres-password", _database), ("redis-password", _redis),
          ("console-proxy-secret", _console_proxy_secret))


def run(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    made = ensure_keys(out)
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
