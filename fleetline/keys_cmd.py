"""`fleetline keys`: the command-signing keys, made and signed on the operator's machine.

- `root DIR`: a root key (DIR/root.key, 0600, kept offline) and its public half
  (DIR/root.pub, base64url: what agents pin).
- `online FILE`: an online key for dispatch (PEM, 0600). Dispatch signs every command
  with it; it never goes into the database.
- `keyset --root root.key --key K [--key K ...] --version N [--days 30] --out F`: a keyset
  document listing the online keys agents may trust, signed by the root key. Upload it
  with `PUT /api/v1/admin/command-keyset`, or give it to dispatch as
  FLEETLINE_COMMAND_KEYSET_FILE.
- `show FILE ...`: key ids and the contents of keysets.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetline.secrets_cmd import write_secret_file
from fleetline.signing import (
    KEYSET_CONTEXT, b64url, b64url_decode, key_id, load_private, load_public, public_raw, sign,
)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    write_secret_file(path, pem.strip())
    return key


def make_root(directory: Path) -> Ed25519PrivateKey:
    directory.mkdir(parents=True, exist_ok=True)
    key = write_key(directory / "root.key")
    (directory / "root.pub").write_text(b64url(public_raw(key.public_key())) + "\n")
    return key


def public_key_of(path: str) -> Ed25519PublicKey:
    """A private key file (PEM) or a public key (base64url, as in root.pub)."""
    text = Path(path).read_text().strip()
    if text.startswith("-----BEGIN"):
        return load_private(path).public_key()
    return load_public(text)


def keyset(root: Ed25519PrivateKey, keys: list[Ed25519PublicKey], version: int, days: float) -> dict:
    expires = datetime.now(timezone.utc) + timedelta(days=days)
    payload = {"v": 1, "version": version, "expires_at": _rfc3339(expires),
               "keys": [{"kid": key_id(k), "public_key": b64url(public_raw(k)), "not_after": _rfc3339(expires)}
                        for k in keys]}
    return {**sign(root, KEYSET_CONTEXT, payload), "root_kid": key_id(root.public_key())}


def make_command_keys(directory: Path, days: float = 90.0) -> None:
    """Everything signed commands need, in one directory (what `fleetline up` keeps in its
    data directory): root.key and root.pub, online.key, and keyset.json (version 1)."""
    if not (directory / "root.key").exists():
        make_root(directory)
    if not (directory / "online.key").exists():
        write_key(directory / "online.key")
    if not (directory / "keyset.json").exists():
        document = keyset(load_private(str(directory / "root.key")),
                          [load_private(str(directory / "online.key")).public_key()], 1, days)
        (directory / "keyset.json").write_text(json.dumps(document, indent=1) + "\n")


def _cmd_root(args: argparse.Namespace) -> int:
    key = make_root(Path(args.dir))
    print(f"root key {key_id(key.public_key())}: private {Path(args.dir) / 'root.key'} (keep it offline), "
          f"public {Path(args.dir) / 'root.pub'}")
    return 0


def _cmd_online(args: argparse.Namespace) -> int:
    key = write_key(Path(args.file))
    print(f"online key {key_id(key.public_key())}: {args.file}")
    return 0


def _cmd_keyset(args: argparse.Namespace) -> int:
    document = keyset(load_private(args.root), [public_key_of(k) for k in args.key], args.version, args.days)
    Path(args.out).write_text(json.dumps(document, indent=1) + "\n")
    print(f"keyset version {args.version} with {len(args.key)} key(s), signed by {document['root_kid']}: {args.out}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    for name in args.files:
        text = Path(name).read_text().strip()
        if text.startswith("{"):
            document = json.loads(text)
            payload = json.loads(b64url_decode(document["payload"]))
            print(f"{name}: keyset version {payload['version']}, expires {payload['expires_at']}, "
                  f"root {document.get('root_kid')}, keys {', '.join(k['kid'] for k in payload['keys'])}")
        else:
            print(f"{name}: key {key_id(public_key_of(name))}")
    return 0


def add_parser(sub) -> None:
    keys = sub.add_parser("keys", help="command-signing keys: root, online keys, keysets").add_subparsers(
        dest="keys_command", required=True)
    p = keys.add_parser("root", help="create a root key (keep the private half offline)")
    p.add_argument("dir")
    p.set_defaults(func=_cmd_root)
    p = keys.add_parser("online", help="create an online signing key for dispatch")
    p.add_argument("file")
    p.set_defaults(func=_cmd_online)
    p = keys.add_parser("keyset", help="sign a keyset of online keys with the root key")
    p.add_argument("--root", required=True, help="the root private key")
    p.add_argument("--key", action="append", required=True, help="an online key (private PEM or public)")
    p.add_argument("--version", type=int, required=True, help="must be above the current keyset's")
    p.add_argument("--days", type=float, default=90.0, help="how long agents accept it")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_keyset)
    p = keys.add_parser("show", help="key ids and keyset contents")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_cmd_show)

