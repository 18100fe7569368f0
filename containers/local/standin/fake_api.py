#!/usr/bin/env python3
"""The test's fake upstream API (containers/local): HTTPS on :443 with a certificate for the
API's host name, on the egress network under that name. Every request is appended, as one JSON
line (method, path, headers), to FAKE_API_LOG, and answered 200 with a JSON body that echoes
the Authorization header, like an API whose error page repeats the request: the gateway must
turn the real key back into the dummy before the agent sees it.

    FAKE_API_CERT, FAKE_API_KEY   its certificate chain and key (PEM)
    FAKE_API_LOG                  where requests are recorded       /var/log/fake-api/requests.jsonl
"""

import http.server
import json
import os
import ssl
import threading

LOG = os.environ.get("FAKE_API_LOG", "/var/log/fake-api/requests.jsonl")
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {"method": self.command, "path": self.path,
                  "headers": {k.lower(): v for k, v in self.headers.items()},
                  "body_bytes": len(body)}
        with LOCK, open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        answer = json.dumps({"object": "list", "path": self.path,
                             "you_sent": self.headers.get("Authorization", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def main():
    os.makedirs(os.path.dirname(LOG), exist_ok=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.environ["FAKE_API_CERT"], os.environ["FAKE_API_KEY"])
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 443), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
