#!/usr/bin/env python3
"""Network probes for the chaos harness, run inside one of its namespaces.

    probe.py wait-tcp HOST:PORT --deadline S      exit 0 once a TCP connection succeeds
    probe.py wait-http URL --deadline S           exit 0 once GET URL answers 2xx
    probe.py isolation --gateway URL --host H --cert F --key F --ca F --dummy D
                       [--blocked HOST:PORT ...] [--dns NAME ...] [--dns-server IP ...]
        One JSON line per check; exit 0 when every check came out as the sandbox requires:
        each --blocked address unreachable, each --dns name unresolvable (system resolver),
        each --dns-server unanswering (a raw UDP query), and through the gateway an mTLS
        call that succeeds and gets back the dummy, while a call without a client
        certificate is refused. An echoed value that is not the dummy is never printed.
    probe.py load --gateway URL --host H --cert F --key F --ca F --dummy D
                  --concurrency N --stop-file F
        Calls through the gateway from N threads until F exists, then prints one JSON
        summary: requests, ok, failed, the first and last failure times, and `recovered`:
        the first success after the last failure.

Times are epoch seconds (time.time()), the clock the harness uses.
"""

import argparse
import http.client
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request

CONNECT_TIMEOUT = 2.0


def hostport(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def tcp_connects(address, timeout=CONNECT_TIMEOUT):
    """(True, "") if a TCP connection to address succeeds, else (False, the error)."""
    try:
        with socket.create_connection(hostport(address), timeout=timeout):
            return True, ""
    except OSError as e:
        return False, f"{type(e).__name__}: {e}"


def wait(check, deadline, what):
    end = time.monotonic() + deadline
    last = ""
    while time.monotonic() < end:
        ok, last = check()
        if ok:
            return 0
        time.sleep(0.05)
    print(f"timed out after {deadline}s waiting for {what}: {last}", file=sys.stderr)
    return 1


def http_ok(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(url, timeout=CONNECT_TIMEOUT) as response:
            return 200 <= response.status < 300, str(response.status)
    except OSError as e:
        return False, f"{type(e).__name__}: {e}"


def gateway_call(args, with_cert=True, call_id=None):
    """One call through the gateway. Returns (status, headers, body)."""
    context = ssl.create_default_context(cafile=args.ca)
    if with_cert:
        context.load_cert_chain(args.cert, args.key)
    url = urllib.parse.urlsplit(args.gateway)
    connection = http.client.HTTPSConnection(
        url.hostname, url.port or 443, timeout=CONNECT_TIMEOUT * 2, context=context
    )
    headers = {"Host": args.host, "Authorization": f"Bearer {args.dummy}"}
    if call_id:
        headers["X-Chaos-Call"] = call_id
    try:
        connection.request("GET", "/v1/probe", headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def dns_query(server, name="example.com", timeout=CONNECT_TIMEOUT):
    """A raw DNS A query over UDP: (True, detail) if any answer came back."""
    header = struct.pack(">HHHHHH", 0x5C5C, 0x0100, 1, 0, 0, 0)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    packet = header + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, (server, 53))
            data, _ = s.recvfrom(512)
            return True, f"{len(data)}-byte answer"
        except OSError as e:
            return False, f"{type(e).__name__}: {e}"


def isolation(args):
    results = []

    def report(check, ok, detail):
        results.append(ok)
        print(json.dumps({"check": check, "ok": ok, "detail": detail}), flush=True)

    for address in args.blocked:
        connected, detail = tcp_connects(address)
        report(f"no direct connection to {address}", not connected, detail or "connected")
    for name in args.dns:
        try:
            found = socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)
            report(f"no DNS resolution of {name}", False, f"resolved to {found[0][4][0]}")
        except OSError as e:
            report(f"no DNS resolution of {name}", True, f"{type(e).__name__}: {e}")
    for server in args.dns_server:
        answered, detail = dns_query(server)
        report(f"no answer from DNS server {server}", not answered, detail)

    expected = f"Bearer {args.dummy}"
    try:
        status, headers, body = gateway_call(args, call_id="probe-mtls")
        echoed = json.loads(body).get("echo_authorization") if status == 200 else None
        ok = status == 200 and echoed == expected and headers.get("X-Echo-Authorization") == expected
        detail = f"HTTP {status}, " + (
            "the upstream's echo came back as the dummy" if ok
            else "the echoed credential is not the dummy (value withheld)"
        )
    except (OSError, ValueError, http.client.HTTPException) as e:
        ok, detail = False, f"{type(e).__name__}: {e}"
    report("mTLS call through the gateway succeeds", ok, detail)

    try:
        status, _, _ = gateway_call(args, with_cert=False, call_id="probe-nocert")
        report("a call without a client certificate is refused", False, f"HTTP {status}")
    except (OSError, http.client.HTTPException) as e:
        report("a call without a client certificate is refused", True, f"{type(e).__name__}: {e}")
    return 0 if all(results) else 1


def load(args):
    lock = threading.Lock()
    stats = {"requests": 0, "ok": 0, "failed": 0, "first_failure": None, "last_failure": None,
             "recovered": None}

    def worker(index):
        number = 0
        while not os.path.exists(args.stop_file):
            number += 1
            try:
                status, _, _ = gateway_call(args, call_id=f"load-{index}-{number}")
                ok = status == 200
            except (OSError, http.client.HTTPException):
                ok = False
            with lock:
                stats["requests"] += 1
                t = round(time.time(), 6)
                if ok:
                    stats["ok"] += 1
                    if stats["last_failure"] and not (stats["recovered"] or 0) > stats["last_failure"]:
                        stats["recovered"] = t
                else:
                    stats["failed"] += 1
                    stats["first_failure"] = stats["first_failure"] or t
                    stats["last_failure"] = t
            if not ok:
                time.sleep(0.1)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(stats), flush=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("wait-tcp")
    p.add_argument("address")
    p.add_argument("--deadline", type=float, default=10)
    p = sub.add_parser("wait-http")
    p.add_argument("url")
    p.add_argument("--deadline", type=float, default=10)
    for name in ("isolation", "load"):
        p = sub.add_parser(name)
        for option in ("--gateway", "--host", "--cert", "--key", "--ca", "--dummy"):
            p.add_argument(option, required=True)
        if name == "isolation":
            p.add_argument("--blocked", action="append", default=[])
            p.add_argument("--dns", action="append", default=[])
            p.add_argument("--dns-server", action="append", default=[])
        else:
            p.add_argument("--concurrency", type=int, default=4)
            p.add_argument("--stop-file", required=True)
    args = parser.parse_args()
    if args.command == "wait-tcp":
        return wait(lambda: tcp_connects(args.address, 0.5), args.deadline, args.address)
    if args.command == "wait-http":
        return wait(lambda: http_ok(args.url), args.deadline, args.url)
    if args.command == "isolation":
        return isolation(args)
    return load(args)


if __name__ == "__main__":
    sys.exit(main())
