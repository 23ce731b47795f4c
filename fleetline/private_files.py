"""Every secret Fleetline writes to disk (keys, tokens, passwords, the agent's state) is
written by `write_private`: mode 0600 from the first byte, and atomically (a crash leaves
the old file or the new one, never a torn or briefly readable one). Standard library only:
the agent writes its credentials with it too."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: Path | str, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_ed25519_key(path: Path | str):
    """A new Ed25519 private key, written to `path` (PEM, PKCS#8, 0600); returned."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode())
    return key
