#!/usr/bin/env python3
"""Memory of a gateway process, for benches/compare/soak.sh.

  memory.py sample PID ADMIN_PORT              one CSV line: KiB from smaps_rollup, allocator bytes
  memory.py idle HOST PORT N PID ADMIN_PORT [--tls]
                                               N keep-alive connections, one request each, held
                                               idle: per-connection deltas of each column
  memory.py report CSV [LAST_SECS]             slopes (whole soak, last LAST_SECS) and a table

Columns: Rss, Anonymous and Private_Dirty of /proc/PID/smaps_rollup (KiB), then the
`slapenir_allocator_bytes{kind}` gauges read from the admin port's /metrics (bytes; empty when
the build does not export them).
"""

import socket
import ssl
import statistics
import sys
import time
import urllib.request

SMAPS = ("Rss", "Anonymous", "Private_Dirty")
ALLOC = ("allocated", "active", "metadata", "resident", "mapped", "retained")
HEADER = "t_s," + ",".join(k.lower() + "_kib" for k in SMAPS) + "," + ",".join(
    "alloc_" + k for k in ALLOC
)


def smaps(pid):
    out = {}
    with open("/proc/%s/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0].rstrip(":") in SMAPS:
                out[parts[0].rstrip(":")] = int(parts[1])
    return [out.get(k, 0) for k in SMAPS]


def allocator(admin_port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % admin_port, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return [None] * len(ALLOC)
    got = {}
    for line in text.splitlines():
        if line.startswith("slapenir_allocator_bytes{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            got[kind] = int(float(line.rsplit(" ", 1)[1]))
    return [got.get(k) for k in ALLOC]


def row(pid, admin_port):
    return smaps(pid) + allocator(admin_port)


def fmt(values):
    return ",".join("" if v is None else str(v) for v in values)


def idle(host, port, n, pid, admin_port, tls):
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    req = b"GET /small HTTP/1.1\r\nHost: bench.test\r\nAuthorization: Bearer sk-dummy-openai\r\n\r\n"
    before = row(pid, admin_port)
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        if ctx:
            s = ctx.wrap_socket(s)
        s.sendall(req)
        conns.append(s)
    ok = 0
    for s in conns:
        s.settimeout(30)
        got = b""
        while b"\r\n\r\n" not in got:
            d = s.recv(65536)
            if not d:
                break
            got += d
        ok += got.startswith(b"HTTP/1.1 200")
    time.sleep(1)  # let the gateway settle: nothing to wait for, the connections are idle
    with_them = row(pid, admin_port)
    for s in conns:
        s.close()
    names = [k.lower() for k in SMAPS] + ["alloc_" + k for k in ALLOC]
    deltas = []
    for name, a, b in zip(names, before, with_them):
        if a is None or b is None:
            continue
        per = (b - a) / float(n) / (1 if name in [k.lower() for k in SMAPS] else 1024.0)
        deltas.append("%s=%.1f" % (name, per))
    print("ok=%d rss_before_kib=%d rss_with_kib=%d per_conn_kib: %s"
          % (ok, before[0], with_them[0], " ".join(deltas)))
    if ok != n:
        # Per-connection numbers over refused connections mean nothing (a per-client
        # `connections` limit, for one).
        sys.exit("only %d of %d idle connections were answered 200" % (ok, n))


def fit(pts):
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs) or 1.0
    return sum((x - mx) * (y - my) for x, y in pts) / den * 60.0


def report(path, last_secs):
    lines = [line.strip().split(",") for line in open(path) if line.strip()]
    head, rows = lines[0], lines[1:]
    cols = {name: i for i, name in enumerate(head)}
    t = [float(r[0]) for r in rows]
    end = t[-1]

    def series(name, scale=1.0):
        i = cols[name]
        return [(t[k], float(r[i]) / scale) for k, r in enumerate(rows) if r[i] != ""]

    print("samples=%d span_s=%d" % (len(rows), end - t[0]))
    print()
    print("| series | first | last | min | max | slope KiB/min, whole | slope KiB/min, last %d min |"
          % (last_secs // 60))
    print("|---|---|---|---|---|---|---|")
    for name, scale in [("rss_kib", 1), ("anonymous_kib", 1), ("private_dirty_kib", 1)] + [
        ("alloc_" + k, 1024.0) for k in ALLOC
    ]:
        pts = series(name, scale)
        if len(pts) < 2:
            continue
        last = [p for p in pts if p[0] >= end - last_secs]
        ys = [p[1] for p in pts]
        print("| %s (KiB) | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f |"
              % (name.replace("_kib", ""), ys[0], ys[-1], min(ys), max(ys), fit(pts),
                 fit(last) if len(last) > 1 else float("nan")))
    print()
    print("| minute | RSS MiB | anonymous MiB | allocated MiB | active MiB | resident MiB | retained MiB |")
    print("|---|---|---|---|---|---|---|")
    step, nxt = 150.0, t[0]
    for k, r in enumerate(rows):
        if t[k] + 1e-9 < nxt and k != len(rows) - 1:
            continue
        nxt = t[k] + step

        def mib(name, scale):
            v = r[cols[name]]
            return "—" if v == "" else "%.1f" % (float(v) / scale)

        print("| %.1f | %s | %s | %s | %s | %s | %s |" % (
            t[k] / 60.0, mib("rss_kib", 1024.0), mib("anonymous_kib", 1024.0),
            mib("alloc_allocated", 1 << 20), mib("alloc_active", 1 << 20),
            mib("alloc_resident", 1 << 20), mib("alloc_retained", 1 << 20)))


def main(argv):
    cmd, args = argv[1], argv[2:]
    tls = "--tls" in args
    args = [a for a in args if a != "--tls"]
    if cmd == "header":
        print(HEADER)
    elif cmd == "sample":
        print(fmt(row(args[0], args[1])))
    elif cmd == "idle":
        idle(args[0], args[1], int(args[2]), args[3], args[4], tls)
    elif cmd == "report":
        report(args[0], int(args[1]) if len(args) > 1 else 1200)
    else:
        sys.exit("unknown command %s" % cmd)


if __name__ == "__main__":
    main(sys.argv)
