"""`fleetline keys`: the command-signing keys, made and signed on the operator's machine,
and the one set of names key material goes by wherever it is kept (`fleetline up`'s data
directory, `fleetline secrets`, the tests).

- `root DIR`: a root key (DIR/command-root.key, 0600, kept offline) and its public half
  (DIR/command-root.pub, base64url: what agents pin).
- `online FILE`: an online key for dispatch (PEM, 0600). Dispatch signs every command
  with it; it never goes into the database.
- `keyset --root command-root.key --key K [--key K ...] --version N [--days 30] --out F`: a
  keyset document listing the online keys agents may trust, signed by the root key. Upload
  it with `PUT /api/v1/admin/command-keyset`, or give it to dispatch as
  FLEETLINE_COMMAND_KEYSET_FILE.
- `show FILE ...`: key ids and the contents of keysets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetline.private_files import new_ed25519_key, write_private
from fleetline.signing import (
    b64url,
    b64url_decode,
    key_id,
    load_private,
    load_public,
    public_raw,
    sign_keyset,
)

ACCESS_TOKEN_KEY = "signing-key.pem"  # auth signs access tokens with it
ROOT_KEY = "command-root.key"  # signs keysets: keep it offline
ROOT_PUB = "command-root.pub"  # what agents pin (base64url)
ONLINE_KEY = "command-signing-key.pem"  # dispatch signs commands with it
KEYSET = "command-keyset.json"  # version 1, listing the online key, signed by the root


def make_root(directory: Path) -> Ed25519PrivateKey:
    directory.mkdir(parents=True, exist_ok=True)
    key = new_ed25519_key(directory / ROOT_KEY)
    (directory / ROOT_PUB).write_text(b64url(public_raw(key.public_key())) + "\n")
    return key


def public_key_of(path: str) -> Ed25519PublicKey:
    """A private key file (PEM) or a public key (base64url, as in command-root.pub)."""
    text = Path(path).read_text().strip()
    if text.startswith("-----BEGIN"):
        return load_private(path).public_key()
    return load_public(text)


def ensure_keys(directory: Path, days: float = 90.0) -> list[str]:
    """Every key the services need, in `directory`, made where missing: the access-token
    key, a root key and its public half, an online key and keyset version 1. Returns the
    names made."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    if not (directory / ACCESS_TOKEN_KEY).exists():
        new_ed25519_key(directory / ACCESS_TOKEN_KEY)
        made.append(ACCESS_TOKEN_KEY)
    if not (directory / ROOT_KEY).exists():
        make_root(directory)
        made += [ROOT_KEY, ROOT_PUB]
    if not (directory / ONLINE_KEY).exists():
        new_ed25519_key(directory / ONLINE_KEY)
        made.append(ONLINE_KEY)
    if not (directory / KEYSET).exists():
        document = sign_keyset(load_private(str(directory / ROOT_KEY)),
                          [load_private(str(directory / ONLINE_KEY)).public_key()], 1, days)
        write_private(directory / KEYSET, json.dumps(document, indent=1) + "\n")
        made.append(KEYSET)
    return made


def key_settings(directory: Path) -> dict[str, str]:
    """The FLEETLINE_* settings that point auth and dispatch at the keys in `directory`."""
    return {"FLEETLINE_JWT_PRIVATE_KEY_FILE": str(directory / ACCESS_TOKEN_KEY),
            "FLEETLINE_COMMAND_SIGNING_KEY_FILE": str(directory / ONLINE_KEY),
            "FLEETLINE_COMMAND_KEYSET_FILE": str(directory / KEYSET),
            "FLEETLINE_COMMAND_ROOT_PUBLIC_KEY_FILE": str(directory / ROOT_PUB)}


def _cmd_root(args: argparse.Namespace) -> int:
    key = make_root(Path(args.dir))
    print(f"root key {key_id(key.public_key())}: private {Path(args.dir) / ROOT_KEY} (keep it offline), "
          f"public {Path(args.dir) / ROOT_PUB}")
    return 0


def _cmd_online(args: argparse.Namespace) -> int:
    key = new_ed25519_key(Path(args.file))
    print(f"online key {key_id(key.public_key())}: {args.file}")
    return 0


def _cmd_keyset(args: argparse.Namespace) -> int:
    document = sign_keyset(load_private(args.root), [public_key_of(k) for k in args.key], args.version, args.days)
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

