#!/usr/bin/env python3
"""An S3-like test upstream over TLS that checks every request's AWS Signature Version 4 with
botocore's own signer and the *real* key pair.

It stands in for AWS in end-to-end tests of the gateway: the agent signs with dummy keys, the
gateway verifies and signs again with the real ones, and this server accepts only what botocore,
an implementation independent of the gateway's, computes from the real secret.

    sigv4_upstream.py --cert leaf.crt --key leaf.key --access-key-id AKIA... --secret-key ...
                      [--session-token ...] [--ca client_ca.crt] [--region us-east-1]

Binds 127.0.0.1 on an ephemeral port and prints ``PORT <n>`` once it accepts connections.

* ``PUT /bucket/key`` stores the body (plain, or ``aws-chunked`` with a trailing checksum, which
  is checked), ``GET`` returns it, ``HEAD`` its headers, ``DELETE`` removes it.
* Every request except ``GET /_stats`` must carry a valid signature (``Authorization`` header or
  presigned query) by the configured key id, secret and session token; a hex
  ``x-amz-content-sha256`` must match the body. Anything else gets ``403`` with an S3-style XML
  error that, as S3 does, echoes the access key id received (and, for a wrong signature, the
  string to sign and canonical request, as text and as hex bytes: the gateway must not let real
  values in them reach the agent). ``--terse-errors`` leaves out all but the key id.
* ``GET /_stats`` (no signature) returns JSON: ``verified``, ``rejected`` and ``access_key_ids``
  (every key id seen, in order).

It never prints a secret, a session token or a query string.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import ssl
import sys
import threading
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

MAX_SKEW = datetime.timedelta(minutes=15)
STREAMING_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
TRAILER_CHECKSUMS = {
    "x-amz-checksum-crc32": lambda data: zlib.crc32(data).to_bytes(4, "big"),
    "x-amz-checksum-sha256": lambda data: hashlib.sha256(data).digest(),
    "x-amz-checksum-sha1": lambda data: hashlib.sha1(data).digest(),
}


class Rejected(Exception):
    """A request that does not authenticate. ``code`` and ``message`` are S3's; ``detail``
    holds the extra elements S3 adds to the error (string to sign, canonical request)."""

    def __init__(self, status, code, message, detail=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail or {}


class Upstream:
    """The bucket contents, the configured key pair and the counters, shared by all threads."""

    def __init__(self, args):
        self.access_key_id = args.access_key_id
        self.credentials = Credentials(args.access_key_id, args.secret_key, args.session_token)
        self.session_token = args.session_token
        self.region = args.region
        self.terse_errors = args.terse_errors
        self.lock = threading.Lock()
        self.objects = {}
        self.verified = 0
        self.rejected = 0
        self.access_key_ids = []

    def count(self, ok, access_key_id):
        with self.lock:
            if ok:
                self.verified += 1
            else:
                self.rejected += 1
            if access_key_id is not None:
                self.access_key_ids.append(access_key_id)

    def stats(self):
        with self.lock:
            return {
                "verified": self.verified,
                "rejected": self.rejected,
                "access_key_ids": list(self.access_key_ids),
            }


def parse_authorization(value):
    """Credential scope, signed header names and signature of an Authorization header."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise Rejected(400, "AuthorizationHeaderMalformed", "Unsupported algorithm.")
    fields = {}
    for part in rest.split(","):
        name, _, val = part.strip().partition("=")
        fields[name] = val
    try:
        return fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError:
        raise Rejected(400, "AuthorizationHeaderMalformed", "Missing a component.") from None


def read_chunked(rfile):
    """Reads an HTTP/1.1 chunked body (trailers are read and dropped)."""
    out = bytearray()
    while True:
        size = int(rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return bytes(out)
        out += rfile.read(size)
        rfile.readline()


def decode_aws_chunked(body):
    """Decodes an ``aws-chunked`` body with unsigned chunks; returns (data, trailers)."""
    data = bytearray()
    pos = 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        pos = end + 2
        if size == 0:
            break
        data += body[pos : pos + size]
        pos += size + 2
    trailers = {}
    for line in body[pos:].split(b"\r\n"):
        if line:
            name, _, value = line.decode("ascii").partition(":")
            trailers[name.strip().lower()] = value.strip()
    return bytes(data), trailers


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sigv4-upstream"
    upstream = None  # set in main()

    def log_message(self, fmt, *args):
        # The request line holds the query (a presigned URL's credential): log the path only.
        sys.stderr.write(f"{self.command} {urlsplit(self.path).path} {args[1] if len(args) > 1 else ''}\n")

    def do_GET(self):
        self.handle_request()

    def do_PUT(self):
        self.handle_request()

    def do_HEAD(self):
        self.handle_request()

    def do_DELETE(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    def handle_request(self):
        body = self.read_body()
        path = urlsplit(self.path).path
        if self.command == "GET" and path == "/_stats":
            return self.send(200, json.dumps(self.upstream.stats()).encode(), "application/json")
        access_key_id = None
        try:
            access_key_id, data = self.authenticate(body)
        except Rejected as rejected:
            self.upstream.count(False, access_key_id or self.claimed_key_id())
            return self.send_error_xml(rejected, access_key_id or self.claimed_key_id())
        self.upstream.count(True, access_key_id)
        self.serve(path, data)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return read_chunked(self.rfile)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def claimed_key_id(self):
        """The access key id the request names, for the error body and the counters."""
        auth = self.headers.get("Authorization", "")
        if "Credential=" in auth:
            return auth.split("Credential=", 1)[1].split("/", 1)[0]
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        credential = query.get("X-Amz-Credential")
        return credential.split("/", 1)[0] if credential else None

    def authenticate(self, body):
        """Checks the signature with botocore and the body against its declared hash.
        Returns (access key id, object data)."""
        up = self.upstream
        url = urlsplit(self.path)
        pairs = url.query.split("&") if url.query else []
        auth = self.headers.get("Authorization")
        presigned = any(p.startswith("X-Amz-Signature=") for p in pairs)
        if auth and presigned:
            raise Rejected(400, "InvalidArgument", "Only one auth mechanism allowed.")
        if presigned:
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            credential = query.get("X-Amz-Credential", "")
            signed_headers = query.get("X-Amz-SignedHeaders", "")
            signature = query.get("X-Amz-Signature", "")
            timestamp = query.get("X-Amz-Date", "")
            token = query.get("X-Amz-Security-Token")
            if query.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
                raise Rejected(400, "AuthorizationQueryParametersError", "Bad X-Amz-Algorithm.")
            # The canonical query has every parameter but the signature, as sent.
            pairs = [p for p in pairs if not p.startswith("X-Amz-Signature=")]
            signer_class = S3SigV4QueryAuth
        elif auth:
            credential, signed_headers, signature = parse_authorization(auth)
            timestamp = self.headers.get("X-Amz-Date", "")
            token = self.headers.get("X-Amz-Security-Token")
            signer_class = S3SigV4Auth
        else:
            raise Rejected(403, "AccessDenied", "Access Denied")

        scope = credential.split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            raise Rejected(400, "AuthorizationHeaderMalformed", "Malformed credential.")
        access_key_id, date, region, service = scope[:4]
        if access_key_id != up.access_key_id:
            raise Rejected(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        if region != up.region or date != timestamp[:8]:
            raise Rejected(400, "AuthorizationHeaderMalformed", "Wrong region or date in the scope.")
        if (token or None) != up.session_token:
            raise Rejected(403, "InvalidToken", "The provided token is malformed or otherwise invalid.")
        self.check_time(timestamp, presigned)

        # Rebuild the request as botocore would have signed it: the signed headers with the
        # values received, the path and query as sent.
        headers = HTTPHeaders()
        for name in signed_headers.split(";"):
            values = self.headers.get_all(name)
            if not values:
                raise Rejected(403, "AccessDenied", f"Signed header {name} is missing.")
            for value in values:
                headers[name] = value
        request = AWSRequest(
            method=self.command,
            url=f"https://{self.headers.get('Host', 'localhost')}{url.path}"
            + (f"?{'&'.join(pairs)}" if pairs else ""),
            headers=headers,
        )
        request.context["timestamp"] = timestamp
        signer = signer_class(up.credentials, service, region)
        canonical_request = signer.canonical_request(request)
        string_to_sign = signer.string_to_sign(request, canonical_request)
        expected = signer.signature(string_to_sign, request)
        if not hmac.compare_digest(expected, signature):
            raise Rejected(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
                {
                    "StringToSign": string_to_sign,
                    "SignatureProvided": signature,
                    "StringToSignBytes": " ".join(f"{b:02x}" for b in string_to_sign.encode()),
                    "CanonicalRequest": canonical_request,
                    "CanonicalRequestBytes": " ".join(f"{b:02x}" for b in canonical_request.encode()),
                },
            )
        return access_key_id, self.check_payload(body, presigned)

    def check_time(self, timestamp, presigned):
        try:
            when = datetime.datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
        except ValueError:
            raise Rejected(400, "AuthorizationHeaderMalformed", "Bad X-Amz-Date.") from None
        now = datetime.datetime.now(datetime.timezone.utc)
        if presigned:
            query = dict(parse_qsl(urlsplit(self.path).query))
            expires = int(query.get("X-Amz-Expires", "0"))
            if now > when + datetime.timedelta(seconds=expires):
                raise Rejected(403, "AccessDenied", "Request has expired")
        elif abs(now - when) > MAX_SKEW:
            raise Rejected(403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")

    def check_payload(self, body, presigned):
        """The object data, after checking the body against x-amz-content-sha256."""
        declared = self.headers.get("x-amz-content-sha256")
        if declared is None:
            if presigned:
                return body
            raise Rejected(400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
        if declared == "UNSIGNED-PAYLOAD":
            return body
        if declared == STREAMING_TRAILER:
            if "aws-chunked" not in self.headers.get("Content-Encoding", ""):
                raise Rejected(400, "InvalidRequest", "Expected an aws-chunked body.")
            data, trailers = decode_aws_chunked(body)
            name = self.headers.get("x-amz-trailer", "").lower()
            checksum = TRAILER_CHECKSUMS.get(name)
            if checksum is None or name not in trailers:
                raise Rejected(400, "InvalidRequest", "Unsupported or missing trailing checksum.")
            if base64.b64encode(checksum(data)).decode() != trailers[name]:
                raise Rejected(400, "BadDigest", "The checksum of the body does not match its trailer.")
            return data
        if declared.startswith("STREAMING-"):
            raise Rejected(501, "NotImplemented", "Chunk-signed uploads are not implemented here.")
        if hashlib.sha256(body).hexdigest() != declared:
            raise Rejected(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        return body

    def serve(self, path, data):
        objects = self.upstream.objects
        key = path
        if self.command == "PUT":
            with self.upstream.lock:
                objects[key] = data
            return self.send(200, b"", None, {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})
        if self.command == "DELETE":
            with self.upstream.lock:
                objects.pop(key, None)
            return self.send(204, b"", None)
        with self.upstream.lock:
            data = objects.get(key)
        if data is None:
            error = Rejected(404, "NoSuchKey", "The specified key does not exist.")
            return self.send_error_xml(error, None)
        self.send(200, data, "application/octet-stream", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def send_error_xml(self, error, access_key_id):
        parts = [f"<Code>{error.code}</Code>", f"<Message>{escape(error.message)}</Message>"]
        if access_key_id is not None:
            parts.append(f"<AWSAccessKeyId>{escape(access_key_id)}</AWSAccessKeyId>")
        if not self.upstream.terse_errors:
            parts += [f"<{k}>{escape(v)}</{k}>" for k, v in error.detail.items()]
        parts.append(f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId>")
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>' + "".join(parts) + "</Error>").encode()
        self.send(error.status, body, "application/xml")

    def send(self, status, body, content_type, extra=None):
        self.send_response(status)
        self.send_header("x-amz-request-id", uuid.uuid4().hex[:16].upper())
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument("--ca", help="require client certificates issued by this CA (PEM)")
    parser.add_argument("--access-key-id", required=True, help="the real access key id")
    parser.add_argument("--secret-key", required=True, help="the real secret access key")
    parser.add_argument("--session-token", help="the real session token, if the keys need one")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--terse-errors", action="store_true", help="error bodies echo only the key id")
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    if args.ca:
        context.load_verify_locations(cafile=args.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    Handler.upstream = Upstream(args)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # The handshake runs in each connection's thread, on its first read, so one slow client
    # cannot hold up accept().
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
