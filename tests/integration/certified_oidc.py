"""panva's oidc-provider (OpenID Certified), from npm, as the single sign-on tests' provider:
installed by the test run itself (`npm ci` from certified_provider/package-lock.json) into
a cache directory outside the checkout, once per version of its files, and run with
Node.js as its own process (certified_provider/provider.mjs says how it is configured).
Needs `node` and `npm` (.ci/run installs them when missing): fails, never skips."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.integration.support import stop_process

HERE = Path(__file__).resolve().parent / "certified_provider"
FILES = ("package.json", "package-lock.json", "provider.mjs")
CACHE = Path(os.environ.get("FLEETLINE_TEST_CACHE") or Path.home() / ".cache" / "fleetline-tests")


def installed() -> Path:
    """A directory holding provider.mjs beside its node_modules, made once per content."""
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"the single sign-on tests need {tool}: apt-get install nodejs npm"
    key = hashlib.sha256(b"".join((HERE / f).read_bytes() for f in FILES)).hexdigest()[:16]
    target = CACHE / f"oidc-provider-{key}"
    if (target / "node_modules" / "oidc-provider").is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="oidc-provider-", dir=CACHE))
    for name in FILES:
        shutil.copy(HERE / name, work / name)
    done = subprocess.run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"], cwd=work,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    try:
        work.rename(target)  # whole, or not at all; a second test worker may have won
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
    return target


def signing_jwks() -> dict:
    """A private signing key for the provider, as a JWK set: kept across its restarts, so a
    relying party's cached keys stay good. RSA: its clients' default ID token algorithm is
    RS256."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048)))
    return {"keys": [{**jwk, "kid": "fleetline-test", "use": "sig", "alg": "RS256"}]}


class CertifiedProvider:
    """The provider on one port; `run(config)` (re)starts it with another configuration."""

    def __init__(self, port: int, log: Path):
        self.where = installed()
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"
        self.jwks = signing_jwks()
        self.proc: subprocess.Popen | None = None
        self.config: dict | None = None

    def run(self, clients: list[dict], accounts: dict[str, dict]) -> "CertifiedProvider":
        config = {"port": self.port, "clients": clients, "accounts": accounts, "jwks": self.jwks}
        if config == self.config and self.proc is not None and self.proc.poll() is None:
            return self
        self.stop()
        path = self.log.with_suffix(".json")
        path.write_text(json.dumps(config))
        self.proc = subprocess.Popen(["node", "provider.mjs", str(path)], cwd=self.where,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        self.config = config
        return self._wait_ready()

    def _wait_ready(self) -> "CertifiedProvider":
        import httpx

        from tests.integration.support import wait_until

        def up() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return httpx.get(f"{self.url}/.well-known/openid-configuration").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, 0.1, "the certified OpenID provider")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
