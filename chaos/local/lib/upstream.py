#!/usr/bin/env python3
"""The chaos harness's test API: it runs in the upstream namespace, behind the gateway, and is
where lost and duplicated requests are counted.

Every request except GET /__ready is recorded as one JSON line in --log, flushed at once:

    {"ts": 1700000000.123456, "call": "<X-Chaos-Call>", "auth": "real", "method": "GET", "path": "/v1/data"}

`call` is the id the agent sends with each attempt (chaos_agent.py adds it); `auth` says which
credential the Authorization header carried: "real" (the secret in --secret-file, as the gateway
must send it), "dummy", "none" or "other". The value itself is never written anywhere.

Answers:
    200  the request carried the real secret. The JSON body echoes the Authorization header
         and is padded to the size in --size-file (bytes, re-read for every request so the
         harness can switch between small and large answers); the header X-Echo-Authorization
         echoes it too. The gateway must turn the echoed real secret back into the dummy on
         the way to the agent.
    401  it did not: the agent treats that as a refusal and stops, which the harness reports.
    204  GET /__ready (readiness probe; not recorded).

Usage: upstream.py --listen HOST:PORT --secret-file FILE --dummy DUMMY --log FILE --size-file FILE
"""

import argparse
import hmac
import http.server
import json
import threading
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--secret-file", required=True, help="the real secret (one line)")
    parser.add_argument("--dummy", required=True, help="the dummy the agent holds")
    parser.add_argument("--log", required=True, help="JSON lines, one per request")
    parser.add_argument("--size-file", required=True, help="response body size in bytes")
    return parser.parse_args()


def main():
    args = parse_args()
    with open(args.secret_file, encoding="utf-8") as f:
        real = "Bearer " + f.read().strip()
    dummy = "Bearer " + args.dummy
    log = open(args.log, "a", encoding="utf-8")
    lock = threading.Lock()

    def classify(auth):
        if auth is None:
            return "none"
        if hmac.compare_digest(auth.encode(), real.encode()):
            return "real"
        return "dummy" if auth == dummy else "other"

    def body_size():
        try:
            with open(args.size_file, encoding="utf-8") as f:
                return max(0, int(f.read().strip() or 0))
        except (OSError, ValueError):
            return 0

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the gateway pools its connections

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            pass  # the JSON log is the record; the default would print to stderr

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.path == "/__ready":
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            auth = self.headers.get("Authorization")
            kind = classify(auth)
            record = {
                "ts": round(time.time(), 6),
                "call": self.headers.get("X-Chaos-Call"),
                "auth": kind,
                "method": self.command,
                "path": self.path,
            }
            with lock:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if kind != "real":
                payload = json.dumps({"error": f"expected the real secret, got {kind}"}).encode()
                self.send_response(401)
            else:
                echo = {"call": record["call"], "echo_authorization": auth}
                head = json.dumps(echo)[:-1] + ', "pad": "'
                pad = max(0, body_size() - len(head) - 2)
                payload = (head + "x" * pad + '"}').encode()
                self.send_response(200)
                self.send_header("X-Echo-Authorization", auth)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = handle_any

    host, port = args.listen.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
