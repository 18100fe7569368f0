#!/usr/bin/env python3
"""Cross-checks the gateway's SigV4 code against botocore, an independent implementation.

    crosscheck.py generate --count N --seed S   JSON lines: requests signed by botocore
    crosscheck.py verify                        reads JSON lines (requests signed by the
                                                gateway's code) on stdin, checks each signature
                                                with botocore, prints one JSON line per request

A request line: {"name", "service", "region", "access_key_id", "secret_key", "session_token",
"method", "path", "query", "headers": [[name, value], ...], "body_hex"}. Paths and queries are
as on the wire; headers are every header line the request would carry, Host included.

The generated requests are random but reproducible (``--seed``): S3 and non-S3 services, header
and presigned signatures, odd white space and repeated headers, query values with reserved and
non-ASCII characters, paths with spaces, ``+``, ``%2F`` and UTF-8, bodies hashed or sent as
UNSIGNED-PAYLOAD, with and without session tokens. All keys are random test values.
"""

import argparse
import datetime
import hashlib
import hmac
import json
import random
import sys
from unittest import mock
from urllib.parse import quote, urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth, _host_from_url
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from botocore.utils import percent_encode_sequence

SERVICES = ["s3", "sts", "execute-api", "dynamodb"]
PATH_PIECES = ["a", "key", "with space", "plus+sign", "ütf-8", "ключ", "~tilde", "x.y", "a=b", "q?m",
               "semi;colon", "(paren)", "star*", "at@", "100%", "dash-_"]
QUERY_VALUES = ["", "v", "a b", "a+b", "x/y", "k=v", "&", "~", "ü", "100%", "a%2Fb", "*", "'quote'"]
HEADER_VALUES = ["value", "  padded  ", "inner   run", "\ttabbed\t", "a, b", '"q   q"', "UPPER lower"]
EPOCH = datetime.datetime(2015, 8, 30, 12, 36, 0, tzinfo=datetime.timezone.utc)


def random_path(rng, service):
    segments = [rng.choice(PATH_PIECES) for _ in range(rng.randint(1, 4))]
    if service == "s3":
        # What botocore's serializer sends for a key: UTF-8, everything but / and ~ escaped.
        # Sometimes a key segment holds an escaped slash.
        path = "/bucket/" + "/".join(quote(s, safe="~") for s in segments)
        if rng.random() < 0.2:
            path += quote("/in/key", safe="~")
        return path
    return "/" + "/".join(quote(s, safe="~") for s in segments)


def generate(count, seed):
    rng = random.Random(seed)
    for i in range(count):
        service = rng.choice(SERVICES)
        presigned = rng.random() < 0.3
        method = rng.choice(["GET", "PUT", "POST", "DELETE"] if not presigned else ["GET", "PUT"])
        key_id = "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
        secret = "".join(rng.choice("ABCabc012+/") for _ in range(40))
        token = "".join(rng.choice("ABCabc012+/=") for _ in range(60)) if rng.random() < 0.3 else None
        region = rng.choice(["us-east-1", "eu-west-3", "auto"])
        host = rng.choice(["example.amazonaws.com", "localhost:8443", "s3.slapenir.test:4443"])
        params = [(rng.choice(["a", "B", "list-type", "prefix", "x y", "ü"]), rng.choice(QUERY_VALUES))
                  for _ in range(rng.randint(0, 4))]
        query = percent_encode_sequence(params)
        if rng.random() < 0.15:
            query = (query + "&" if query else "") + "lifecycle"
        url = f"https://{host}{random_path(rng, service)}" + (f"?{query}" if query else "")
        headers = HTTPHeaders()
        for n in range(rng.randint(0, 3)):
            name = rng.choice(["X-Amz-Meta-Note", "X-Custom", "Content-Type", "x-amz-meta-other"])
            headers[name] = rng.choice(HEADER_VALUES)  # HTTPHeaders keeps repeated names
        # A presigned URL carries no body (botocore would move one into the query).
        body = rng.randbytes(rng.randint(0, 64)) if method in ("PUT", "POST") and not presigned else b""
        request = AWSRequest(method=method, url=url, headers=headers, data=body)
        # UNSIGNED-PAYLOAD is announced in a header; a presigned URL has no way to say it.
        request.context["payload_signing_enabled"] = presigned or rng.random() < 0.6
        credentials = Credentials(key_id, secret, token)
        when = EPOCH + datetime.timedelta(seconds=rng.randint(0, 10**8))
        if presigned:
            signer_class = S3SigV4QueryAuth if service == "s3" else SigV4QueryAuth
            signer = signer_class(credentials, service, region, expires=rng.randint(1, 604800))
        else:
            signer_class = S3SigV4Auth if service == "s3" else SigV4Auth
            signer = signer_class(credentials, service, region)
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            signer.add_auth(request)
        parts = urlsplit(request.url)
        wire_headers = [[k, v] for k, v in request.headers.items()]
        if not any(k.lower() == "host" for k, _ in wire_headers):
            wire_headers.insert(0, ["Host", _host_from_url(request.url)])
        yield {
            "name": f"case {i} ({service}, {'presigned' if presigned else 'header'})",
            "service": service,
            "region": region,
            "access_key_id": key_id,
            "secret_key": secret,
            "session_token": token,
            "method": method,
            "path": parts.path,
            "query": parts.query,
            "headers": wire_headers,
            "body_hex": body.hex(),
        }


def botocore_signature_ok(case):
    """Recomputes the request's signature with botocore from the request as received."""
    headers = case["headers"]
    auth = next((v for k, v in headers if k.lower() == "authorization"), None)
    pairs = case["query"].split("&") if case["query"] else []
    if auth is not None:
        fields = dict(p.strip().split("=", 1) for p in auth.split(" ", 1)[1].split(","))
        credential, signed, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
        timestamp = next(v for k, v in headers if k.lower() == "x-amz-date")
        signer_class = S3SigV4Auth if case["service"] == "s3" else SigV4Auth
    else:
        query = dict(p.split("=", 1) for p in pairs)
        credential = query["X-Amz-Credential"].replace("%2F", "/")
        signed = query["X-Amz-SignedHeaders"].replace("%3B", ";")
        signature = query["X-Amz-Signature"]
        timestamp = query["X-Amz-Date"]
        pairs = [p for p in pairs if not p.startswith("X-Amz-Signature=")]
        signer_class = S3SigV4QueryAuth if case["service"] == "s3" else SigV4QueryAuth
    key_id, _, region, service, _ = credential.split("/")
    signed_headers = HTTPHeaders()
    for name in signed.split(";"):
        for k, v in headers:
            if k.lower() == name:
                signed_headers[name] = v
    host = next(v for k, v in headers if k.lower() == "host")
    url = f"https://{host}{case['path']}" + (f"?{'&'.join(pairs)}" if pairs else "")
    request = AWSRequest(method=case["method"], url=url, headers=signed_headers,
                         data=bytes.fromhex(case["body_hex"]))
    request.context["timestamp"] = timestamp
    signer = signer_class(Credentials(key_id, case["secret_key"], case["session_token"]), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return hmac.compare_digest(expected, signature) and key_id == case["access_key_id"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--count", type=int, default=300)
    gen.add_argument("--seed", type=int, default=1)
    sub.add_parser("verify")
    args = parser.parse_args()
    if args.command == "generate":
        for case in generate(args.count, args.seed):
            print(json.dumps(case))
    else:
        for line in sys.stdin:
            case = json.loads(line)
            print(json.dumps({"name": case["name"], "ok": botocore_signature_ok(case)}), flush=True)


if __name__ == "__main__":
    main()
