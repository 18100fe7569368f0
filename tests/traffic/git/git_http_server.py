#!/usr/bin/env python3
"""A git smart-HTTP server for tests: `git http-backend` (CGI) behind a small TLS server that
requires HTTP Basic auth with one user and token, as a git host does.

    git_http_server.py --cert server.crt --key server.key --root DIR --user x-access-token \
        --stats stats.jsonl

The token it accepts comes from the environment variable GIT_SERVER_TOKEN (never from argv,
never printed). It binds 127.0.0.1 on an ephemeral port and prints `PORT <n>` once it accepts
connections. Every request appends one JSON line to --stats:
{"method", "path", "auth": "ok" | "missing" | "wrong", "status"}; a request with wrong or missing
credentials gets 401 with `WWW-Authenticate: Basic`. Pushes are allowed (REMOTE_USER is set for
authenticated requests, which enables git-receive-pack). Request bodies may be chunked.
"""

import argparse
import base64
import hmac
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--root", required=True, help="GIT_PROJECT_ROOT: the bare repositories")
    p.add_argument("--user", required=True)
    p.add_argument("--stats", required=True, help="file to append one JSON line per request to")
    return p.parse_args()


def main():
    args = parse_args()
    token = os.environ.get("GIT_SERVER_TOKEN", "")
    if not token:
        print("GIT_SERVER_TOKEN is not set", file=sys.stderr)
        sys.exit(2)
    expected = b"Basic " + base64.b64encode(f"{args.user}:{token}".encode())
    stats_lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            # Paths and statuses only; headers (which hold the credentials) are never logged.
            sys.stderr.write("git-server: %s\n" % (fmt % a))

        def record(self, auth, status):
            line = json.dumps(
                {"method": self.command, "path": self.path, "auth": auth, "status": status}
            )
            with stats_lock, open(args.stats, "a", encoding="utf-8") as f:
                f.write(line + "\n")

        def read_body(self):
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                body = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(body)
                    body += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def reply(self, status, headers, body):
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def handle_any(self):
            body = self.read_body()
            got = self.headers.get("Authorization", "").encode()
            if not got:
                auth = "missing"
            elif hmac.compare_digest(got, expected):
                auth = "ok"
            else:
                auth = "wrong"
            if auth != "ok":
                self.record(auth, 401)
                self.reply(401, [("WWW-Authenticate", 'Basic realm="git"')], b"unauthorized\n")
                return
            path, _, query = self.path.partition("?")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": args.root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": args.user,
                "REMOTE_ADDR": self.client_address[0],
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
            }
            for name in ("Content-Encoding", "Git-Protocol"):
                if name in self.headers:
                    env["HTTP_" + name.upper().replace("-", "_")] = self.headers[name]
            cgi = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            )
            head, _, out = cgi.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, out = cgi.stdout.partition(b"\n\n")
            status, headers = 200, []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            if cgi.returncode != 0 and status == 200:
                status = 500
            self.record(auth, status)
            self.reply(status, headers, out)

        do_GET = do_POST = do_HEAD = handle_any

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
