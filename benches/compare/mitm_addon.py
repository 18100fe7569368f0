"""The do-it-yourself interception proxy the comparison measures: a mitmproxy addon that swaps
the dummy for the real secret in request headers and bodies, and the real secret back to the
dummy in response bodies. Event streams are passed through chunk by chunk (a replacement that
straddles two chunks is missed: the usual shortcut of such addons, kept here on purpose).

    mitmdump --mode reverse:http://127.0.0.1:PORT -s mitm_addon.py

BENCH_REAL holds the real secret; BENCH_SSE_PORT is the upstream port for /events.
"""

import os

DUMMY = b"sk-dummy-openai"
REAL = os.environ["BENCH_REAL"].encode()
SSE_PORT = int(os.environ["BENCH_SSE_PORT"])


def request(flow):
    if flow.request.path.startswith("/events"):
        flow.request.port = SSE_PORT
    auth = flow.request.headers.get("authorization", "")
    if DUMMY.decode() in auth:
        flow.request.headers["authorization"] = auth.replace(DUMMY.decode(), REAL.decode())
    if flow.request.raw_content and DUMMY in flow.request.raw_content:
        flow.request.content = flow.request.raw_content.replace(DUMMY, REAL)


def responseheaders(flow):
    if "text/event-stream" in flow.response.headers.get("content-type", ""):
        flow.response.stream = lambda chunk: chunk.replace(REAL, DUMMY)


def response(flow):
    if flow.response.stream:
        return
    body = flow.response.raw_content
    if body and REAL in body:
        flow.response.content = body.replace(REAL, DUMMY)
