"""A misbehaving upstream for gateway tests, as a real process on a raw socket:
`slow` answers after 30 s; `drop` records each request in a file and closes the connection
without answering (it may have acted on it); `echo` answers with the headers it received,
two cookies and a hop-by-hop header the gateway must strip; `garbage` plays a server that
lets an agent register and then answers its polls with malformed or oversized bodies."""

import argparse
import asyncio
import json


async def handle(reader, writer, mode, count_file):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), []).append(v.strip())
    length = int(headers.get("content-length", ["0"])[0])
    if length:
        await reader.readexactly(length)
    if path != "/readyz":
        if count_file:
            with open(count_file, "a") as fh:
                fh.write(path + "\n")
        if mode == "slow":
            await asyncio.sleep(30)
        if mode == "drop":
            writer.close()
            return
        if mode == "garbage":
            await garbage(writer, path)
            return
    body = json.dumps(headers).encode()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                 b"set-cookie: a=1\r\nset-cookie: b=2\r\n"
                 b"connection: close, x-secret-hop\r\nx-secret-hop: 1\r\n"
                 + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    writer.close()


GARBAGE = [
    b'{"commands": [{"type": "ping", "params": {}}], "poll_interval_s": 5}',  # no id
    b'{"commands": [], "poll_interval_s": "soon"}',
    b'{"commands": {"id": "x"}, "poll_interval_s": 5}',
    b'["not", "an", "object"]',
    b'{"commands": [' + b'{"id": "x", "type": "ping", "params": {"pad": "' + b"x" * (17 * 1024 * 1024) + b'"}}],'
    b' "poll_interval_s": 5}',
]
_polls = [0]


async def garbage(writer, path):
    if path.endswith("/register"):
        status, body = b"201 Created", json.dumps({
            "agent_id": "00000000-0000-4000-8000-000000000001", "access_token": "t",
            "access_token_expires_at": "2099-01-01T00:00:00Z", "refresh_token": "r",
            "refresh_token_expires_at": "2099-01-01T00:00:00Z", "poll_interval_s": 1,
            # Some root key (a loopback answer: the agent pins it, with a warning).
            "root_public_key": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}).encode()
    else:
        status, body = b"200 OK", GARBAGE[_polls[0] % len(GARBAGE)]
        _polls[0] += 1
    writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
                 + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    writer.close()


async def main(port, mode, count_file):
    server = await asyncio.start_server(lambda r, w: handle(r, w, mode, count_file), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=["slow", "drop", "echo", "garbage"], required=True)
    p.add_argument("--count-file")
    a = p.parse_args()
    asyncio.run(main(a.port, a.mode, a.count_file))
