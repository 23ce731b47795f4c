"""A candidate only, for the gateway benchmark: the same buffered proxy shape as the
gateway, with a tuned httpx.AsyncClient as upstream client. Not used by Fleetline."""

from __future__ import annotations

import argparse

import httpx
import uvicorn

HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"host", b"content-length", b"te"}


def make_app(upstream: str):
    client = httpx.AsyncClient(
        base_url=upstream,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        timeout=30.0,
        cookies=None,
    )

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP]
        url = scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        resp = await client.request(scope["method"], url, headers=headers, content=body or None)
        out = [(k.lower(), v) for k, v in resp.headers.raw if k.lower() not in HOP]
        out.append((b"content-length", str(len(resp.content)).encode()))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": resp.content})

    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    a = p.parse_args()
    uvicorn.run(make_app(a.upstream), host="127.0.0.1", port=a.port, log_level="warning",
                access_log=False, proxy_headers=False, server_header=False, date_header=False)
