"""A small OpenID Connect provider for the console's sign-on tests, run as its own process:
discovery, JWKS, an authorization endpoint that signs in whoever the test says
(`POST /test/user {"email", "email_verified"}`) without a page, and a token endpoint that
checks what a real one checks: the client's secret, the redirect URI, a code used once,
and the PKCE verifier against the challenge (S256). ID tokens are signed with PyJWT (ES256).

    python -m tests.integration.oidc_provider PORT CLIENT_ID CLIENT_SECRET_FILE
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route


def create_app(issuer: str, client_id: str, client_secret: str) -> Starlette:
    key = ec.generate_private_key(ec.SECP256R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update(kid="test-key", use="sig", alg="ES256")
    state = {"user": None, "codes": {}, "exchanged": 0, "refused": []}

    async def discovery(request: Request) -> JSONResponse:
        return JSONResponse({"issuer": issuer, "authorization_endpoint": f"{issuer}/authorize",
                             "token_endpoint": f"{issuer}/token", "jwks_uri": f"{issuer}/jwks",
                             "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
                             "id_token_signing_alg_values_supported": ["ES256"]})

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse({"keys": [public]})

    async def set_user(request: Request) -> JSONResponse:
        state["user"] = await request.json()
        return JSONResponse({"ok": True})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse({"exchanged": state["exchanged"], "refused": state["refused"]})

    async def authorize(request: Request):
        q = request.query_params
        if q.get("client_id") != client_id or q.get("response_type") != "code" or \
                q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(24)
        state["codes"][code] = {"user": state["user"], "nonce": q.get("nonce"), "redirect_uri": q["redirect_uri"],
                                "challenge": q["code_challenge"]}
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}",
                                status_code=302)

    def refuse(why: str) -> JSONResponse:
        state["refused"].append(why)
        return JSONResponse({"error": "invalid_grant", "error_description": why}, status_code=400)

    async def token(request: Request) -> JSONResponse:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        auth = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        if not secrets.compare_digest(auth, expected):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = state["codes"].pop(form.get("code", ""), None)  # a code is good once
        if grant is None:
            return refuse("unknown or used code")
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return refuse("redirect_uri")
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["challenge"]:
            return refuse("pkce")
        user, now = grant["user"] or {}, int(time.time())
        claims = {"iss": issuer, "aud": client_id, "sub": user.get("email", "nobody"), "iat": now, "exp": now + 300,
                  "nonce": grant["nonce"], "email": user.get("email"), "email_verified": user.get("email_verified")}
        state["exchanged"] += 1
        id_token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "test-key"})
        return JSONResponse({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "id_token": id_token})

    return Starlette(routes=[
        Route("/.well-known/openid-configuration", discovery), Route("/jwks", jwks),
        Route("/authorize", authorize), Route("/token", token, methods=["POST"]),
        Route("/test/user", set_user, methods=["POST"]), Route("/test/stats", stats),
    ])


if __name__ == "__main__":
    port, client, secret_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    app = create_app(f"http://127.0.0.1:{port}", client, Path(secret_file).read_text().strip())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
