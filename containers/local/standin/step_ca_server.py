#!/usr/bin/env python3
"""Stand-in for step-ca's HTTPS API (containers/local: step-ca cannot be installed here).

Serves on :9000 the four calls the stack makes, over TLS with a certificate from the
intermediate, and signs with the `openssl` CLI:

    GET  /health              {"status": "ok"}                     (`step ca health`)
    GET  /root/FINGERPRINT    the root, if FINGERPRINT is its SHA-256 (`step ca bootstrap`)
    POST /1.0/sign            {"csr": PEM, "ott": TOKEN} -> {"crt": PEM, "ca": PEM}
                              (`step ca certificate --token`): the token must be one the
                              entrypoint published and not used before; the certificate gets
                              the token's name as CN and SANs NAME and
                              spiffe://slapenir/agent/NAME, clientAuth only
    POST /1.0/renew           client certificate from this CA (mTLS) -> a fresh one for the same
                              key and names (`step ca renew`)

Files (under STEPPATH, written by the entrypoint): certs/root_ca.crt, certs/intermediate_ca.crt,
secrets/intermediate_ca_key, standin/server.crt/.key, standin/tokens/NAME (one token per file).
LEAF_LIFETIME (like 24h) is the certificates' life. Tokens are never logged.
"""

import hashlib
import http.server
import json
import os
import ssl
import subprocess
import sys
import tempfile

STEPPATH = os.environ.get("STEPPATH", "/home/step")
ROOT = os.path.join(STEPPATH, "certs/root_ca.crt")
INTERMEDIATE = os.path.join(STEPPATH, "certs/intermediate_ca.crt")
INTERMEDIATE_KEY = os.path.join(STEPPATH, "secrets/intermediate_ca_key")
TOKENS = os.path.join(STEPPATH, "standin/tokens")


def lifetime_days():
    value = os.environ.get("LEAF_LIFETIME", "24h")
    hours = int(value[:-1]) if value.endswith("h") else 24
    return max(1, hours // 24)


def sign(csr_pem, name):
    """The CSR's key, certified for `name` by the intermediate."""
    with tempfile.TemporaryDirectory() as tmp:
        csr = os.path.join(tmp, "req.csr")
        ext = os.path.join(tmp, "ext.cnf")
        out = os.path.join(tmp, "leaf.crt")
        with open(csr, "w") as f:
            f.write(csr_pem)
        with open(ext, "w") as f:
            f.write(
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=clientAuth\n"
                f"subjectAltName=DNS:{name},URI:spiffe://slapenir/agent/{name}\n"
            )
        subprocess.run(
            ["openssl", "x509", "-req", "-in", csr, "-CA", INTERMEDIATE, "-CAkey",
             INTERMEDIATE_KEY, "-CAcreateserial", "-CAserial", os.path.join(tmp, "serial"),
             "-days", str(lifetime_days()), "-subj", f"/CN={name}", "-extfile", ext,
             "-out", out],
            check=True, capture_output=True,
        )
        with open(out) as f:
            return f.read()


def name_of(cert_pem):
    out = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "multiline"],
                         input=cert_pem, text=True, check=True, capture_output=True).stdout
    for line in out.splitlines():
        key, _, value = line.strip().partition("=")
        if key.strip() == "commonName":
            return value.strip()
    raise ValueError("no CN")


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        print("step-ca stand-in: " + (fmt % args), file=sys.stderr, flush=True)

    def reply(self, code, body, kind="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, json.dumps({"status": "ok"}))
        if self.path.startswith("/root/"):
            with open(ROOT) as f:
                pem = f.read()
            der = ssl.PEM_cert_to_DER_cert(pem)
            if hashlib.sha256(der).hexdigest() == self.path[len("/root/"):].lower():
                return self.reply(200, json.dumps({"ca": pem}))
            return self.reply(404, json.dumps({"error": "no such root"}))
        return self.reply(404, json.dumps({"error": "not found"}))

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with open(INTERMEDIATE) as f:
            intermediate = f.read()
        if self.path == "/1.0/sign":
            name = None
            for entry in os.listdir(TOKENS):
                path = os.path.join(TOKENS, entry)
                with open(path) as f:
                    if f.read().strip() == str(body.get("ott", "")).strip():
                        name = entry
                        os.unlink(path)  # single use
                        break
            if name is None:
                return self.reply(401, json.dumps({"error": "invalid or used token"}))
            return self.reply(200, json.dumps({"crt": sign(body["csr"], name), "ca": intermediate}))
        if self.path == "/1.0/renew":
            peer = self.connection.getpeercert(binary_form=True)
            if not peer:
                return self.reply(401, json.dumps({"error": "no client certificate"}))
            pem = ssl.DER_cert_to_PEM_cert(peer)
            if "csr" not in body:
                return self.reply(400, json.dumps({"error": "csr required"}))
            return self.reply(200, json.dumps({"crt": sign(body["csr"], name_of(pem)),
                                               "ca": intermediate}))
        return self.reply(404, json.dumps({"error": "not found"}))


def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(STEPPATH, "standin/server.crt"),
                            os.path.join(STEPPATH, "standin/server.key"))
    context.load_verify_locations(ROOT)
    context.verify_mode = ssl.CERT_OPTIONAL
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 9000), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("step-ca stand-in: serving on :9000", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
