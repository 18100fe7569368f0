"""A WebSocket upstream for tests/traffic/websocket.rs, on Python `websockets` over TLS.

Usage: ws_upstream.py CERT KEY LOG MODE, with the real key in the REAL environment variable.
Prints `PORT <n>` once listening on an ephemeral port. Every message it receives is appended to
LOG as a JSON line (kind and hex bytes), with the `Sec-WebSocket-Extensions` offer of each
handshake, and an `end` line when a connection ends. Text commands make it send the real key back in various shapes; anything else is
echoed. MODE `deflate` accepts permessage-deflate in every `101`, offered or not.
"""

import asyncio
import json
import os
import ssl
import sys

from websockets.asyncio.server import serve

cert, key, log_path, mode = sys.argv[1:5]
REAL = os.environ["REAL"]
log = open(log_path, "a", buffering=1)


def record(kind, data):
    if isinstance(data, str):
        data = data.encode()
    log.write(json.dumps({"kind": kind, "hex": data.hex()}) + "\n")


def process_request(connection, request):
    record("offer", request.headers.get("Sec-WebSocket-Extensions", ""))


def process_response(connection, request, response):
    if mode == "deflate" and "Sec-WebSocket-Extensions" not in response.headers:
        response.headers["Sec-WebSocket-Extensions"] = "permessage-deflate"


async def handler(ws):
    half = len(REAL) // 2
    try:
        async for msg in ws:
            record("text" if isinstance(msg, str) else "binary", msg)
            if msg == "send-real":
                await ws.send(f"here is {REAL} ok")
            elif msg == "send-real-fragments":
                await ws.send([f"split {REAL[:half]}", f"{REAL[half:]} end"])
            elif msg == "send-real-binary":
                await ws.send(b"\x00bin " + REAL.encode())
            elif msg == "ping-real":
                await ws.ping(f"ping {REAL}")
                await ws.send("pinged")
            elif msg == "close-real":
                await ws.close(4000, f"bye {REAL}")
                return
            else:
                await ws.send(msg)
    except Exception as e:  # the peer went away: nothing to answer
        record("error", type(e).__name__)
    finally:
        record("end", "")


async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    async with serve(
        handler,
        "127.0.0.1",
        0,
        ssl=ctx,
        process_request=process_request,
        process_response=process_response,
    ) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


asyncio.run(main())
