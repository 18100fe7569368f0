"""A WebSocket client (Python `websockets`) for tests/traffic/websocket.rs: the agent.

Usage: ws_agent.py SCENARIO, configured by environment variables:
  WS_URL      the wss:// URL (its host is the routed API host)
  WS_TRUST    CA file to trust for the server (the gateway's or the upstream's)
  WS_CONNECT  host:port to connect to instead of the URL's (gateway mode), optional
  WS_SNI      TLS server name to expect there, optional
  WS_PROXY    https:// proxy URL (CONNECT), optional
  WS_CERT, WS_KEY  client certificate for the gateway, optional
Prints one JSON line per observation: {"what": ..., "hex": ...}. It offers permessage-deflate
(the library's default), which the gateway must strip.
"""

import asyncio
import json
import logging
import os
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

scenario = sys.argv[1]
DUMMY = "sk-dummy-openai"


def say(what, data=b""):
    if isinstance(data, str):
        data = data.encode()
    print(json.dumps({"what": what, "hex": data.hex()}), flush=True)


class Frames(logging.Handler):
    """Reports control frames the library answers by itself (it logs each frame it reads)."""

    def emit(self, record):
        if record.msg == "< %s" and record.args:
            frame = record.args[0]
            name = getattr(getattr(frame, "opcode", None), "name", "")
            if name in ("PING", "PONG"):
                say("frame-" + name.lower(), frame.data)


logger = logging.getLogger("ws-agent")
logger.setLevel(logging.DEBUG)
logger.addHandler(Frames())


def tls(trust, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=trust)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


async def exchange(ws):
    if scenario == "swap":
        for msg in [f"Bearer {DUMMY}", f"\x00bin {DUMMY}".encode(), ["x sk-dum", "my-openai y"]]:
            await ws.send(msg)
            say("echo", await ws.recv())
        for cmd in ["send-real", "send-real-fragments", "send-real-binary", "ping-real"]:
            await ws.send(cmd)
            say(cmd, await ws.recv())
        await ws.send("close-real")
        try:
            say("unexpected", await ws.recv())
        except ConnectionClosed as e:
            say("close-reason", e.rcvd.reason if e.rcvd else "")
            say("close-code", str(e.rcvd.code if e.rcvd else 0))
    elif scenario == "foreign":
        await ws.send("key ghp-dummy-github")
        try:
            say("unexpected", await asyncio.wait_for(ws.recv(), 20))
        except ConnectionClosed as e:
            say("closed", str(e.rcvd.code if e.rcvd else 1006))
    elif scenario == "deflate":
        await ws.send("send-real")
        say("send-real", await ws.recv())


async def main():
    env = os.environ
    kwargs = {"ssl": tls(env["WS_TRUST"]), "logger": logger, "open_timeout": 20}
    if env.get("WS_PROXY"):
        kwargs["proxy"] = env["WS_PROXY"]
        kwargs["proxy_ssl"] = tls(env["WS_TRUST"], env.get("WS_CERT"), env.get("WS_KEY"))
    else:
        kwargs["proxy"] = None
        if env.get("WS_CERT"):
            kwargs["ssl"] = tls(env["WS_TRUST"], env["WS_CERT"], env["WS_KEY"])
        if env.get("WS_CONNECT"):
            host, port = env["WS_CONNECT"].rsplit(":", 1)
            kwargs["host"], kwargs["port"] = host, int(port)
        if env.get("WS_SNI"):
            kwargs["server_hostname"] = env["WS_SNI"]
    try:
        async with connect(env["WS_URL"], **kwargs) as ws:
            say("extensions", ws.response.headers.get("Sec-WebSocket-Extensions", ""))
            await exchange(ws)
    except InvalidStatus as e:
        say("status", str(e.response.status_code))


asyncio.run(asyncio.wait_for(main(), 60))
