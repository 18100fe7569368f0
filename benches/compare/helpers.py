"""Helpers of the proxy comparison (run.sh): an SSE upstream, the SSE and idle-connection
clients, the reference ceilings (memcpy, loopback TCP) and the small statistics the table needs.

Every subcommand prints one line of `key=value` pairs on stdout for run.sh to read; nothing
here needs anything beyond the Python standard library.

    python3 helpers.py sse-upstream PORTFILE CERT KEY  # serves /events until killed
    python3 helpers.py sse HOST PORT HOSTHDR [--tls]   # one stream: ttfb and per-event delay
    python3 helpers.py idle HOST PORT HOSTHDR N PID [--tls]   # RSS of PID with N idle conns
    python3 helpers.py memcpy                          # GB/s of one core copying 64 MiB
    python3 helpers.py loopback SECS                   # GB/s through one loopback TCP stream
    python3 helpers.py slope FILE                      # least-squares slope of `t rss` lines
    python3 helpers.py report RESULTS META SOAK_SECS   # the markdown report of a run
"""

import asyncio
import os
import socket
import ssl
import statistics
import sys
import threading
import time

# The SSE stream: EVENTS events, one every INTERVAL seconds, each carrying the monotonic time
# it was written (CLOCK_MONOTONIC is system-wide, so client and server clocks agree) and, in
# every other event, the real secret the proxies must scrub.
EVENTS = 200
INTERVAL = 0.01
REAL = os.environ.get("BENCH_REAL", "sk-real-0123456789abcdefABCDEF0123456789")


def percentile(values, p):
    """The p-th percentile (nearest rank) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


async def _sse_handler(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            await writer.drain()
            for i in range(EVENTS):
                secret = REAL if i % 2 else "none"
                data = "id: %d\ndata: {\"t\": %.9f, \"key\": \"%s\"}\n\n" % (
                    i,
                    time.monotonic(),
                    secret,
                )
                chunk = data.encode()
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                await asyncio.sleep(INTERVAL)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _sse_serve(portfile, cert, key):
    """Serves the stream in plain text and over TLS; writes `plain_port tls_port` to portfile."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    plain = await asyncio.start_server(_sse_handler, "127.0.0.1", 0)
    tls = await asyncio.start_server(_sse_handler, "127.0.0.1", 0, ssl=ctx)
    ports = [s.sockets[0].getsockname()[1] for s in (plain, tls)]
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d %d\n" % tuple(ports))
    os.rename(tmp, portfile)
    await asyncio.gather(plain.serve_forever(), tls.serve_forever())


_CLIENT_TLS = None


def _connect(host, port, tls):
    """A TCP connection, wrapped in TLS when asked (the server certificate is not checked:
    every TLS server of the run uses the same throwaway development certificate)."""
    global _CLIENT_TLS
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        if _CLIENT_TLS is None:
            _CLIENT_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            _CLIENT_TLS.check_hostname = False
            _CLIENT_TLS.verify_mode = ssl.CERT_NONE
        s = _CLIENT_TLS.wrap_socket(s)
    return s


def sse(host, port, hosthdr, tls):
    """Reads one stream; prints ttfb, per-event delay p50/p99, events held back and leaks."""
    s = _connect(host, int(port), tls)
    started = time.monotonic()
    s.sendall(
        (
            "GET /events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
            "Authorization: Bearer sk-dummy-openai\r\n\r\n" % hosthdr
        ).encode()
    )
    buf = b""
    ttfb = None
    delays = []
    leaks = 0
    while len(delays) < EVENTS:
        data = s.recv(65536)
        now = time.monotonic()
        if not data:
            break
        if ttfb is None:
            ttfb = now - started
        buf += data
        # Events are found by their `data: ` lines; chunk framing around them is ignored.
        while True:
            i = buf.find(b"data: {")
            if i < 0:
                break
            j = buf.find(b"}", i)
            if j < 0:
                break
            line = buf[i : j + 1]
            buf = buf[j + 1 :]
            t = float(line.split(b'"t": ')[1].split(b",")[0])
            delays.append(now - t)
            if REAL.encode() in line:
                leaks += 1
    s.close()
    # An event held back is one that arrived only when a later one was written.
    held = sum(1 for d in delays if d > INTERVAL)
    print(
        "events=%d ttfb_ms=%.3f delay_p50_ms=%.3f delay_p99_ms=%.3f held=%d leaks=%d"
        % (
            len(delays),
            (ttfb or 0) * 1e3,
            percentile(delays, 50) * 1e3,
            percentile(delays, 99) * 1e3,
            held,
            leaks,
        )
    )


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%s/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def idle(host, port, hosthdr, n, pids, tls):
    """Opens n keep-alive connections, one request each, holds them idle, reads the RSS."""
    pids = pids.split(",")
    before = rss_kib(pids)
    req = (
        "GET /small HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer sk-dummy-openai\r\n\r\n"
        % hosthdr
    ).encode()
    conns = []
    for _ in range(n):
        s = _connect(host, int(port), tls)
        s.sendall(req)
        conns.append(s)
    ok = 0
    for s in conns:
        s.settimeout(30)
        got = b""
        # Small fixed responses: the head and the short body arrive together.
        while b"\r\n\r\n" not in got:
            d = s.recv(65536)
            if not d:
                break
            got += d
        if got.startswith(b"HTTP/1.1 200"):
            ok += 1
    # The connections are idle now; let the proxy settle before reading its memory.
    time.sleep(1)
    after = rss_kib(pids)
    for s in conns:
        s.close()
    print(
        "ok=%d rss_before_kib=%d rss_after_kib=%d per_conn_kib=%.2f"
        % (ok, before, after, (after - before) / float(n))
    )


def memcpy():
    size = 64 << 20
    src = bytearray(os.urandom(1 << 20)) * 64
    dst = bytearray(size)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10):
            dst[:] = src
        best = max(best, 10 * size / (time.perf_counter() - t))
    print("gbytes_per_s=%.2f" % (best / 1e9))


def loopback(secs):
    """One TCP stream over loopback, 1 MiB writes; the receiver runs in a thread."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    got = [0]

    def recv():
        c, _ = lsock.accept()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while True:
            k = c.recv_into(view)
            if not k:
                break
            got[0] += k

    th = threading.Thread(target=recv)
    th.start()
    s = socket.create_connection(("127.0.0.1", port))
    block = b"x" * (1 << 20)
    t = time.perf_counter()
    while time.perf_counter() - t < secs:
        s.sendall(block)
    s.close()
    th.join()
    print("gbytes_per_s=%.2f" % (got[0] / (time.perf_counter() - t) / 1e9))


def slope(path):
    """Least-squares slope, in KiB per minute, of `seconds rss_kib` lines."""
    pts = [tuple(map(float, line.split())) for line in open(path) if line.strip()]
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs) or 1.0
    k = sum((x - mx) * (y - my) for x, y in pts) / den
    print(
        "slope_kib_per_min=%.1f first_kib=%d last_kib=%d samples=%d"
        % (k * 60, ys[0], ys[-1], len(pts))
    )


def _kv(line):
    return dict(f.split("=", 1) for f in line.split() if "=" in f)


def _med(rows, fn):
    vals = [fn(r) for r in rows]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _fmt(v, digits=1):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return "{:,.0f}".format(v)
    return ("%%.%df" % digits) % v


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return "%.2fx" % (a / b)


def report(results_path, meta_path, soak_secs):
    """Prints the markdown report: medians over rounds, ratios to nginx, targets."""
    rows = [_kv(line) for line in open(results_path) if line.strip()]
    meta = {}
    for line in open(meta_path):
        k, _, v = line.rstrip("\n").partition("\t")
        meta[k] = v
    # "pingora": the framework's ceiling (small plain requests only), when it was built.
    variants = ["direct", "nginx", "pingora", "gateway", "mitmproxy"]

    def pick(cell, variant, kind):
        return [r for r in rows if r["cell"] == cell and r["variant"] == variant and r["kind"] == kind]

    def secs(r):
        return int(r.get("duration_us", 0)) / 1e6 or None

    def rps(r):
        s = secs(r)
        return int(r["requests"]) / s if s and "requests" in r else None

    def mbps(r):
        # Response bytes plus, for uploads, the request bodies sent.
        s = secs(r)
        if not s or "bytes" not in r:
            return None
        return (int(r["bytes"]) + int(r["requests"]) * int(r.get("body_bytes", 0))) / s / 1e6

    def cpu10k(r):
        n = int(r.get("requests", 0))
        return int(r["cpu_ticks"]) / float(r["hz"]) / n * 1e4 if n else None

    def busy(r):
        # Share of one CPU the proxy used: below 100 % the proxy was not the bottleneck.
        s = secs(r)
        return int(r["cpu_ticks"]) / float(r["hz"]) / s * 100 if s else None

    def ms(key):
        return lambda r: int(r[key]) / 1e3 if key in r else None

    def failures(rs):
        return sum(int(r.get("errors", 0)) + int(r.get("non2xx", 0)) for r in rs)

    print("Machine: %s  " % meta.get("machine", "?"))
    print("Software: %s  " % meta.get("versions", "?"))
    print("Run: %s" % meta.get("run", "?"))
    print()
    print("Scrub check, lines still holding a real secret after one 10 MB download through each "
          "proxy: %s" % meta.get("scrub", "?").strip())
    print()
    print("Medians over the rounds. Proxies pinned to one CPU with one worker; latency of small ")
    print("requests from a separate run with one connection; *added* = the variant's p99 minus ")
    print("the direct connection's. MB/s counts the bytes of request bodies and responses.")
    print()
    print("| workload | variant | req/s | vs nginx | MB/s | p50 ms | p99 ms | added p99 ms | vs nginx "
          "| CPU-s / 10k req | vs nginx | proxy CPU % | peak RSS MiB | vs nginx | failed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for cell in ["small-plain", "small-tls", "upload-plain", "upload-tls", "download-plain", "download-tls"]:
        body = not cell.startswith("small")
        stats = {}
        for v in variants:
            tput = pick(cell, v, "tput")
            lat = tput if body else pick(cell, v, "lat")
            if not tput:
                continue
            stats[v] = {
                "rps": _med(tput, rps),
                "mbps": _med(tput, mbps),
                "p50": _med(lat, ms("p50_us")),
                "p99": _med(lat, ms("p99_us")),
                "cpu": _med(tput, cpu10k) if v != "direct" else None,
                "busy": _med(tput, busy) if v != "direct" else None,
                "rss": _med(tput, lambda r: int(r["rss_kib"]) / 1024.0) if v != "direct" else None,
                "failed": failures(tput) + (0 if body else failures(lat)),
            }
        d = stats.get("direct", {})
        for v, s in stats.items():
            s["added"] = s["p99"] - d["p99"] if v != "direct" and d.get("p99") is not None else None
        n = stats.get("nginx", {})
        for v, s in stats.items():
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
                cell, v, _fmt(s["rps"]), _ratio(s["rps"], n.get("rps")), _fmt(s["mbps"]),
                _fmt(s["p50"], 3), _fmt(s["p99"], 3), _fmt(s["added"], 3),
                _ratio(s["added"], n.get("added")) if v != "direct" else "—",
                _fmt(s["cpu"], 3), _ratio(s["cpu"], n.get("cpu")), _fmt(s["busy"], 0), _fmt(s["rss"]),
                _ratio(s["rss"], n.get("rss")), s["failed"]))
        summary[cell] = stats

    print()
    print("SSE: %d events, one every %d ms, every other one carrying a real secret to scrub; "
          "delay = arrival minus the upstream's write time." % (EVENTS, INTERVAL * 1000))
    print()
    print("| transport | variant | TTFB ms | delay p50 ms | delay p99 ms | added p99 ms | held back | "
          "unscrubbed |")
    print("|---|---|---|---|---|---|---|---|")
    for tr in ["plain", "tls"]:
        st = {}
        for v in variants:
            rs = pick("sse-" + tr, v, "sse")
            if rs:
                st[v] = {
                    "ttfb": _med(rs, lambda r: float(r["ttfb_ms"])),
                    "p50": _med(rs, lambda r: float(r["delay_p50_ms"])),
                    "p99": _med(rs, lambda r: float(r["delay_p99_ms"])),
                    "held": max(int(r["held"]) + EVENTS - int(r["events"]) for r in rs),
                    "leaks": max(int(r["leaks"]) for r in rs),
                }
        for v, s in st.items():
            added = s["p99"] - st["direct"]["p99"] if v != "direct" and "direct" in st else None
            s["added"] = added
            print("| %s | %s | %s | %s | %s | %s | %d | %d |" % (
                tr, v, _fmt(s["ttfb"], 3), _fmt(s["p50"], 3), _fmt(s["p99"], 3), _fmt(added, 3),
                s["held"], s["leaks"]))
        summary["sse-" + tr] = st

    print()
    print("Idle keep-alive connections: each made one request, then held open; RSS of the "
          "proxy's processes.")
    print()
    print("| transport | variant | connections ok | RSS before MiB | RSS with them MiB | vs nginx "
          "| KiB per connection (round 1) | vs nginx |")
    print("|---|---|---|---|---|---|---|---|")
    for tr in ["plain", "tls"]:
        st = {}
        for v in variants:
            rs = pick("idle-" + tr, v, "idle")
            if rs:
                st[v] = {
                    "ok": min(int(r["ok"]) for r in rs),
                    "before": _med(rs, lambda r: int(r["rss_before_kib"]) / 1024.0),
                    "after": _med(rs, lambda r: int(r["rss_after_kib"]) / 1024.0),
                    # Later rounds start from memory the allocator kept from earlier cells, so
                    # the growth per connection is read from the first round (a fresh process).
                    "per": min((r for r in rs), key=lambda r: int(r["round"]))["per_conn_kib"],
                }
        n = st.get("nginx", {})
        for v, s in st.items():
            print("| %s | %s | %d | %s | %s | %s | %s | %s |" % (
                tr, v, s["ok"], _fmt(s["before"]), _fmt(s["after"]), _ratio(s["after"], n.get("after")),
                _fmt(float(s["per"])), _ratio(float(s["per"]), float(n["per"]) if n else None)))
        summary["idle-" + tr] = st

    print()
    mem = _kv(meta.get("memcpy", "").strip())
    tcp = _kv(meta.get("loopback", "").strip())
    print("Reference ceilings, same run: memcpy %s GB/s (one core, 64 MiB), loopback TCP %s GB/s "
          "(one stream, 1 MiB writes)." % (mem.get("gbytes_per_s", "—"), tcp.get("gbytes_per_s", "—")))
    soak = _kv(meta.get("soak", "").strip())
    if soak:
        print()
        print("Soak: small requests through the gateway for %d s: RSS %s KiB -> %s KiB, slope %s "
              "KiB/min (%s samples)." % (soak_secs, soak["first_kib"], soak["last_kib"],
                                          soak["slope_kib_per_min"], soak["samples"]))

    print()
    print("Targets (gateway, plain / TLS):")
    print()

    def get(cell, v, k):
        return summary.get(cell, {}).get(v, {}).get(k)

    def check(name, value, ok, shown):
        mark = "—" if value is None else ("met" if ok(value) else "MISSED")
        print("- %s: %s (%s)" % (name, shown(value) if value is not None else "not measured", mark))

    def div(a, b):
        return a / b if a is not None and b else None

    x = lambda v: "%.2fx" % v
    for tr in ["plain", "tls"]:
        c = "small-" + tr
        check("small %s: req/s >= 0.9x nginx" % tr, div(get(c, "gateway", "rps"), get(c, "nginx", "rps")),
              lambda v: v >= 0.9, x)
        if tr == "plain":
            check("small plain: req/s >= 1.0x the Pingora passthrough (every feature on against none)",
                  div(get(c, "gateway", "rps"), get(c, "pingora", "rps")), lambda v: v >= 1.0, x)
            check("10 MB upload plain: throughput vs the Pingora passthrough (no target: the ceiling)",
                  div(get("upload-plain", "gateway", "rps"), get("upload-plain", "pingora", "rps")),
                  lambda v: True, x)
        check("small %s: req/s >= 50x mitmproxy" % tr,
              div(get(c, "gateway", "rps"), get(c, "mitmproxy", "rps")), lambda v: v >= 50, x)
        check("small %s: added p99 <= 1.2x nginx's" % tr,
              div(get(c, "gateway", "added"), get(c, "nginx", "added")), lambda v: v <= 1.2, x)
        for w in ["upload", "download"]:
            c = "%s-%s" % (w, tr)
            check("10 MB %s %s: throughput >= 0.5x direct" % (w, tr),
                  div(get(c, "gateway", "rps"), get(c, "direct", "rps")), lambda v: v >= 0.5, x)
        c = "sse-" + tr
        check("SSE %s: added per-event p99 < 1 ms" % tr, get(c, "gateway", "added"), lambda v: v < 1,
              lambda v: "%.3f ms" % v)
        check("SSE %s: no event held back" % tr, get(c, "gateway", "held"), lambda v: v == 0,
              lambda v: "%d held" % v)
        c = "idle-" + tr
        check("idle %s: RSS with %s connections <= 1.5x nginx's" % (tr, meta.get("idle", "the")),
              div(get(c, "gateway", "after"), get(c, "nginx", "after")), lambda v: v <= 1.5, x)
    pp = div(get("small-plain", "pingora", "rps"), get("small-plain", "nginx", "rps"))
    if pp is not None:
        print("- context: Pingora with default settings and no filters serves %s of nginx's small "
              "plain requests/s; the gateway %s of that ceiling"
              % (x(pp), x(div(get("small-plain", "gateway", "rps"), get("small-plain", "pingora", "rps")))))
    if soak:
        print("- soak: RSS slope %s KiB/min over %d s (no target value: flat is the goal)"
              % (soak["slope_kib_per_min"], soak_secs))


def main(argv):
    cmd, args = argv[1], argv[2:]
    tls = "--tls" in args
    args = [a for a in args if a != "--tls"]
    if cmd == "sse-upstream":
        asyncio.run(_sse_serve(args[0], args[1], args[2]))
    elif cmd == "sse":
        sse(args[0], args[1], args[2], tls)
    elif cmd == "idle":
        idle(args[0], args[1], args[2], int(args[3]), args[4], tls)
    elif cmd == "memcpy":
        memcpy()
    elif cmd == "loopback":
        loopback(float(args[0]))
    elif cmd == "slope":
        slope(args[0])
    elif cmd == "report":
        report(args[0], args[1], int(args[2]))
    else:
        sys.exit("unknown command %s" % cmd)


if __name__ == "__main__":
    main(sys.argv)
