"""Real clients for tests/limits/client_limits.rs: raw TLS sockets (HTTP/1.1 and CONNECT), httpx over
HTTP/2, all with a client certificate, against the gateway in gateway mode (`Host: api.test`).

usage: drive.py SCENARIO PORT CERTS_DIR [ARGS...]; prints one JSON object on the last line.
"""

import asyncio
import json
import os
import socket
import ssl
import sys
import time

SCENARIO, PORT, CERTS = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ARGS = sys.argv[4:]


def ctx(agent, alpn=("http/1.1",)):
    c = ssl.create_default_context(cafile=os.path.join(CERTS, "root_ca.crt"))
    c.load_cert_chain(os.path.join(CERTS, agent + ".crt"), os.path.join(CERTS, agent + ".key"))
    c.set_alpn_protocols(list(alpn))
    return c


CTX = {}


def tls(agent):
    if agent not in CTX:
        CTX[agent] = ctx(agent)
    raw = socket.create_connection(("127.0.0.1", PORT), timeout=20)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return CTX[agent].wrap_socket(raw, server_hostname="localhost")


def read_response(s, buf=b""):
    """(status, headers dict, body, rest of buffer); None if the connection closed first."""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            return None
        buf += d
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        return status, headers, buf[:n], buf[n:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                buf += s.recv(65536)
            size, buf = buf.split(b"\r\n", 1)
            n = int(size, 16)
            while len(buf) < n + 2:
                buf += s.recv(65536)
            body += buf[:n]
            buf = buf[n + 2:]
            if n == 0:
                return status, headers, body, buf
    return status, headers, b"", buf


def get(s, path="/status/200", extra=""):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: api.test\r\n{extra}\r\n".encode())
    r = read_response(s)
    return r


def answer(r):
    if r is None:
        return {"status": None}
    status, h, body, _ = r
    return {
        "status": status,
        "refusal": h.get("x-slapenir-refusal"),
        "limit": h.get("x-slapenir-limit"),
        "retry_after": h.get("retry-after"),
        "connection": h.get("connection"),
        "body": body.decode("utf-8", "replace")[:200],
    }


def connections(n):
    """agent-1 opens n connections (each answered), then one more; agent-2 one; then agent-1
    closes one and opens another."""
    held = []
    first = []
    for _ in range(n):
        s = tls("agent-1")
        first.append(answer(get(s))["status"])
        held.append(s)
    extra = tls("agent-1")
    over = answer(get(extra))
    other = tls("agent-2")
    agent2 = answer(get(other))["status"]
    still = answer(get(held[0]))["status"]
    held.pop().close()
    again = None
    for _ in range(50):  # the gateway sees the close asynchronously
        s = tls("agent-1")
        again = answer(get(s))["status"]
        if again == 200:
            break
        s.close()
        time.sleep(0.05)
    # HTTP/2 by ALPN, over the limit: each request is answered 429.
    import httpx

    h2 = None
    c = ctx("agent-1", ("h2",))
    with httpx.Client(http2=True, verify=c, base_url=f"https://localhost:{PORT}") as client:
        try:
            r = client.get("/status/200", headers={"host": "api.test"})
            h2 = {"status": r.status_code, "version": r.http_version,
                  "refusal": r.headers.get("x-slapenir-refusal"),
                  "limit": r.headers.get("x-slapenir-limit")}
        except Exception as e:  # noqa: BLE001
            h2 = {"error": repr(e)}
    return {"first": first, "over": over, "agent2": agent2, "still": still,
            "again": again, "h2": h2}


def connect(s, host="api.test:443"):
    s.sendall(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            return None
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split()[1])
    if status == 200:
        return {"status": 200}
    lines = head.decode("latin-1").split("\r\n")
    h = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
    return {"status": status, "refusal": h.get("x-slapenir-refusal"),
            "retry_after": h.get("retry-after"), "body": rest.decode()}


def tunnels(n):
    held = []
    first = []
    for _ in range(n):
        s = tls("agent-1")
        first.append(connect(s)["status"])
        held.append(s)
    over = connect(tls("agent-1"))
    agent2 = connect(tls("agent-2"))
    return {"first": first, "over": over, "agent2": agent2["status"]}


def rate(n):
    s = tls("agent-1")
    got = [answer(get(s)) for _ in range(n)]
    other = tls("agent-2")
    agent2 = answer(get(other))["status"]
    return {"answers": got, "agent2": agent2}


def streams(n, slow_path):
    """n slow streaming responses at once, then one more; then, once they ended, another."""
    held = []
    heads = []
    for _ in range(n):
        s = tls("agent-1")
        s.sendall(f"GET {slow_path} HTTP/1.1\r\nHost: api.test\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        heads.append(int(buf.split()[1]))
        held.append(s)
    over = answer(get(tls("agent-1")))
    agent2 = answer(get(tls("agent-2")))["status"]
    for s in held:
        s.close()
    after = None
    for _ in range(100):
        after = answer(get(tls("agent-1")))["status"]
        if after == 200:
            break
        time.sleep(0.05)
    return {"heads": heads, "over": over, "agent2": agent2, "after": after}


def body(nbytes):
    s = tls("agent-1")
    payload = b"x" * nbytes
    t0 = time.monotonic()
    s.sendall(f"POST /sink HTTP/1.1\r\nHost: api.test\r\nContent-Length: {nbytes}\r\n\r\n".encode())
    s.sendall(payload)
    r = answer(read_response(s))
    return {"seconds": time.monotonic() - t0, "answer": r}


def reload_stream(slow_path, signal_file):
    """A streaming request in flight, then (after the test reloads a lower `streams` limit)
    a new request; the in-flight one must complete."""
    s1 = tls("agent-1")
    s1.sendall(f"GET {slow_path} HTTP/1.1\r\nHost: api.test\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s1.recv(4096)
    print("streaming", flush=True)
    while not os.path.exists(signal_file):  # the test writes it once the reload is done
        time.sleep(0.02)
    after = answer(get(tls("agent-1")))
    r = read_response(s1, buf)
    return {"after_reload": after, "in_flight": answer(r), "ticks": r[2].count(b"tick")}


async def flood(conns, stop_file):
    """agent-1: `conns` keep-alive connections each sending requests as fast as answered, and
    more connections than allowed being opened all the time."""
    # The flooder runs on the same two CPUs as the gateway and agent-2 here; in production it
    # sits in its own sandbox. Niced, it takes every CPU cycle the others leave idle (which is
    # most of them), so the test measures what the gateway does for agent-2 under the flood,
    # not how a Python client on the same machine competes for the CPU.
    os.nice(19)
    c = ctx("agent-1")
    counts = {"200": 0, "429": 0, "closed": 0, "refused_conn": 0}

    async def one():
        while not os.path.exists(stop_file):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", PORT, ssl=c,
                                                     server_hostname="localhost")
            except OSError:
                counts["closed"] += 1
                continue
            try:
                while not os.path.exists(stop_file):
                    w.write(b"GET /status/200 HTTP/1.1\r\nHost: api.test\r\n\r\n")
                    head = await r.readuntil(b"\r\n\r\n")
                    status = head.split()[1].decode()
                    n = 0
                    for l in head.split(b"\r\n"):
                        if l.lower().startswith(b"content-length:"):
                            n = int(l.split(b":")[1])
                    if n:
                        await r.readexactly(n)
                    counts[status] = counts.get(status, 0) + 1
                    if b"connection: close" in head.lower():
                        counts["refused_conn"] += 1
                        break
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                counts["closed"] += 1
            w.close()

    tasks = [asyncio.create_task(one()) for _ in range(conns)]
    print("flooding", flush=True)
    # Stopped at once, not when the tarpit answers the refusals still held (up to 10 s), and
    # when the test that started it is gone.
    parent = os.getppid()
    while not os.path.exists(stop_file) and os.getppid() == parent:
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counts


def measure(n, interval, warm):
    s = tls("agent-2")
    lat = []
    bad = 0
    for i in range(n + warm):
        t0 = time.perf_counter()
        r = get(s)
        dt = time.perf_counter() - t0
        if r is None or r[0] != 200:
            bad += 1
            s = tls("agent-2")
        elif i >= warm:
            lat.append(dt)
        time.sleep(interval)
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    return {"n": len(lat), "failed": bad, "p50": p(0.5), "p99": p(0.99), "max": lat[-1],
            "lat": lat}


if SCENARIO == "connections":
    out = connections(int(ARGS[0]))
elif SCENARIO == "tunnels":
    out = tunnels(int(ARGS[0]))
elif SCENARIO == "rate":
    out = rate(int(ARGS[0]))
elif SCENARIO == "streams":
    out = streams(int(ARGS[0]), ARGS[1])
elif SCENARIO == "body":
    out = body(int(ARGS[0]))
elif SCENARIO == "reload_stream":
    out = reload_stream(ARGS[0], ARGS[1])
elif SCENARIO == "flood":
    out = asyncio.run(flood(int(ARGS[0]), ARGS[1]))
elif SCENARIO == "measure":
    out = measure(int(ARGS[0]), float(ARGS[1]), int(ARGS[2]))
else:
    raise SystemExit("unknown scenario " + SCENARIO)
print(json.dumps(out), flush=True)
