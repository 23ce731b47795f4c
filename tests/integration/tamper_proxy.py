"""A hostile network between agents and the gateway, as a real process: it forwards every
request and, according to the mode in a file (read on every request, so a test can
switch it), rewrites poll answers and keysets on their way to the agent.

Modes (any combination, space-separated): `unsigned` (rewrite the unsigned copy), `payload` (rewrite the signed
payload without re-signing), `replay` (put another agent's signed command, from the file
`replay.json`, on this one), `unknown-kid`, `foreign-keyset` / `old-keyset` (serve the keyset in
`keyset.json` instead of the real one), `swap-root` (a registration answer offers the root key
and keyset in `attacker.json` instead of the real ones: the first-contact attack),
`forge-cancels` (add the cancels in `cancels.json` to every poll answer).

`python -m tests.integration.tamper_proxy --port N --upstream URL --dir DIR`
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def tamper(modes: set[str], body: dict, folder: Path) -> dict:
    if "forge-cancels" in modes:
        body["cancels"] = body.get("cancels", []) + json.loads((folder / "cancels.json").read_text())
    for command in body.get("commands", []):
        signed = command.get("signed") or {}
        if "unsigned" in modes:
            command["type"], command["params"] = "shell", {"argv": ["sh", "-c", "echo tampered-copy"]}
        if "payload" in modes:
            payload = json.loads(_unb64(signed["payload"]))
            payload["params"] = {"argv": ["sh", "-c", "echo tampered-payload"]}
            signed["payload"] = _b64(json.dumps(payload).encode())
        if "replay" in modes:
            command["signed"] = json.loads((folder / "replay.json").read_text())
        if "unknown-kid" in modes:
            signed["kid"] = "not-a-key-anyone-knows"
    return body


def build(upstream: str, folder: Path) -> Starlette:
    client = httpx.AsyncClient(base_url=upstream, timeout=120)

    async def forward(request: Request) -> Response:
        modes = set((folder / "mode").read_text().split()) if (folder / "mode").exists() else set()
        path = request.url.path
        if path == "/api/v1/agents/keyset" and modes & {"foreign-keyset", "old-keyset"}:
            return Response((folder / "keyset.json").read_bytes(), media_type="application/json")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        resp = await client.request(request.method, path, params=request.query_params,
                                    headers=headers, content=await request.body())
        content = resp.content
        # Read again now: a long poll may have been held since before the mode changed.
        modes = set((folder / "mode").read_text().split()) if (folder / "mode").exists() else set()
        if path == "/api/v1/agents/register" and resp.status_code == 201 and "swap-root" in modes:
            content = json.dumps({**json.loads(content), **json.loads((folder / "attacker.json").read_text())}).encode()
        if request.method == "GET" and path.endswith("/commands") and resp.status_code == 200:
            body = json.loads(content)
            if body.get("commands") or "forge-cancels" in modes:
                content = json.dumps(tamper(modes, body, folder)).encode()
        out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP}
        return Response(content, status_code=resp.status_code, headers=out)

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE"])])


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--dir", type=Path, required=True)
    a = p.parse_args()
    uvicorn.run(build(a.upstream, a.dir), host="127.0.0.1", port=a.port, log_level="warning")
