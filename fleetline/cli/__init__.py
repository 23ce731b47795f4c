"""The `fleetline` command: migrations, the local launcher, and the operator CLI."""

from __future__ import annotations

import argparse
import os
import sys

from fleetline.settings import Settings, SettingsError


def _cmd_migrate(args: argparse.Namespace) -> int:
    from fleetline.cli.migrate import SERVICE_LOGIN, break_stale_lock, ensure_service_login, migrate

    # From the environment only (or FLEETLINE_DATABASE_URL_FILE): a URL holds a password,
    # and argv is visible to every local user.
    settings = Settings.from_env()
    url = settings.database_url
    if not url:
        print("fleetline migrate: set FLEETLINE_DATABASE_URL (or FLEETLINE_DATABASE_URL_FILE)", file=sys.stderr)
        return 2
    if args.break_lock:
        break_stale_lock(url)
    count = migrate(url, rollback=args.rollback, audit_retention_days=settings.audit_retention_days)
    print(f"{'rolled back' if args.rollback else 'applied'} {count} migration(s)")
    password = settings.service_database_password
    if password and not args.rollback:
        ensure_service_login(url, password)
        print(f"the services' login role {SERVICE_LOGIN} is ready")
    return 0


class Parser(argparse.ArgumentParser):
    """No abbreviated options: `--admin-token SECRET` must not pass for `--admin-token-file`
    (and then be printed back as a file name). Subcommands inherit the class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fleetline", description="Fleetline control plane")
    sub = parser.add_subparsers(dest="command", required=True)

    mig = sub.add_parser("migrate", help="apply (or roll back) the database migrations")
    mig.add_argument("--rollback", action="store_true", help="roll back every migration")
    mig.add_argument("--break-lock", action="store_true", help="clear a stale migration lock first")
    mig.set_defaults(func=_cmd_migrate)

    from fleetline.cli import admin, keys, launcher, secrets

    launcher.add_parser(sub)
    keys.add_parser(sub)
    secrets.add_parser(sub)
    admin.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args) or 0
        sys.stdout.flush()
        return code
    except SettingsError as exc:
        print(f"fleetline: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`fleetline commands list | head`): nothing to report.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
