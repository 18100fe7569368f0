#!/usr/bin/env python3
"""A real boto3 client for end-to-end tests of AWS re-signing: it talks to an S3-like endpoint,
directly or through the gateway as an HTTPS proxy with a client certificate, and prints a JSON
summary on stdout.

Keys come from the standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN) unless given as options. Behind the gateway they are the dummies; run
directly against the test upstream they are the real ones.

Modes:
  roundtrip      put_object with a body, get_object (bytes compared), head_object, and a
                 presigned GET URL made by boto3 and fetched through the same proxy
  wrong-secret   get_object signed with a secret one character off
  alter-header   put_object whose signed x-amz-meta-note header is changed after signing
  alter-body     put_object whose body is changed after signing (same length, hex payload hash)
  alter-presigned a presigned GET URL whose path is changed before it is fetched

Each step reports the HTTP status it got. ``--dump-responses FILE`` writes every response
(status, headers, body) the client received, so a test can check that no real key material
reached it. Nothing here prints a key, a secret or a token.
"""

import argparse
import json
import os
import ssl
import sys

import boto3
import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError


class Recorder:
    """Keeps what the client sent (signed header names, payload hash kind) and received."""

    def __init__(self):
        self.sent = []
        self.responses = []

    def before_send(self, request, **_):
        auth = request.headers.get("Authorization", b"")
        auth = auth.decode() if isinstance(auth, bytes) else auth
        signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0] if "SignedHeaders=" in auth else None
        payload = request.headers.get("X-Amz-Content-SHA256", b"")
        payload = payload.decode() if isinstance(payload, bytes) else payload
        encoding = request.headers.get("Content-Encoding", b"")
        encoding = encoding.decode() if isinstance(encoding, bytes) else encoding
        self.sent.append(
            {
                "method": request.method,
                "signed_headers": signed,
                "payload_hash": "hex" if len(payload) == 64 else payload,
                "content_encoding": encoding or None,
                "transfer_encoding": (request.headers.get("Transfer-Encoding") or b"").decode() or None,
                "expect": (request.headers.get("Expect") or b"").decode() or None,
            }
        )

    def after_call(self, http_response, model, **_):
        # A streaming body (get_object's) is the caller's to read; error bodies are read already.
        streaming = model.has_streaming_output and http_response.status_code < 300
        body = b"(streamed body)" if streaming else http_response.content
        self.record(http_response.status_code, dict(http_response.headers), body)

    def record(self, status, headers, body):
        self.responses.append(
            {
                "status": status,
                "headers": {str(k): str(v) for k, v in headers.items()},
                "body": body.decode("utf-8", "replace"),
            }
        )


def make_client(args, recorder, secret_key=None, checksum=None):
    config = Config(
        region_name=args.region,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": 1},
        request_checksum_calculation=checksum or args.checksum,
        proxies={"https": args.proxy} if args.proxy else None,
        proxies_config=proxy_settings(args),
    )
    client = boto3.client(
        "s3",
        endpoint_url=args.endpoint_url,
        aws_access_key_id=args.access_key_id,
        aws_secret_access_key=secret_key or args.secret_key,
        aws_session_token=args.session_token,
        verify=args.ca_bundle,
        config=config,
    )
    client.meta.events.register("before-send.s3.*", recorder.before_send)
    client.meta.events.register("after-call.s3.*", recorder.after_call)
    return client


def proxy_settings(args):
    if not args.proxy:
        return None
    settings = {}
    if args.proxy_ca:
        settings["proxy_ca_bundle"] = args.proxy_ca
    if args.proxy_cert:
        settings["proxy_client_cert"] = (args.proxy_cert, args.proxy_key) if args.proxy_key else args.proxy_cert
    return settings


def http_pool(args):
    """A urllib3 pool for presigned URLs, through the same proxy and with the same trust."""
    if not args.proxy:
        return urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=args.ca_bundle)
    proxy_tls = ssl.create_default_context(cafile=args.proxy_ca or args.ca_bundle)
    if args.proxy_cert:
        proxy_tls.load_cert_chain(args.proxy_cert, args.proxy_key)
    return urllib3.ProxyManager(
        args.proxy,
        proxy_ssl_context=proxy_tls,
        cert_reqs="CERT_REQUIRED",
        ca_certs=args.ca_bundle,
    )


def status_of(call):
    """Runs a boto3 call; returns (HTTP status, response or None)."""
    try:
        response = call()
        return response["ResponseMetadata"]["HTTPStatusCode"], response
    except ClientError as error:
        return error.response["ResponseMetadata"].get("HTTPStatusCode"), None


def fetch(pool, url, recorder):
    response = pool.request("GET", url, retries=False, preload_content=True)
    recorder.record(response.status, response.headers, response.data)
    return response.status, response.data


def roundtrip(args, recorder):
    client = make_client(args, recorder)
    body = os.urandom(1024) + b" plus text with the key name in it: " + args.key.encode()
    summary = {}
    summary["put"], _ = status_of(
        lambda: client.put_object(Bucket=args.bucket, Key=args.key, Body=body, Metadata={"note": "hello"})
    )
    summary["get"], got = status_of(lambda: client.get_object(Bucket=args.bucket, Key=args.key))
    summary["get_matches"] = bool(got) and got["Body"].read() == body
    summary["head"], _ = status_of(lambda: client.head_object(Bucket=args.bucket, Key=args.key))
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": args.bucket, "Key": args.key}, ExpiresIn=300
    )
    status, data = fetch(http_pool(args), url, recorder)
    summary["presigned_get"] = status
    summary["presigned_matches"] = data == body
    summary["missing_key"], _ = status_of(lambda: client.get_object(Bucket=args.bucket, Key=args.key + ".absent"))
    return summary


def wrong_secret(args, recorder):
    secret = args.secret_key[:-1] + ("A" if args.secret_key[-1] != "A" else "B")
    client = make_client(args, recorder, secret_key=secret)
    status, _ = status_of(lambda: client.get_object(Bucket=args.bucket, Key=args.key))
    put, _ = status_of(lambda: client.put_object(Bucket=args.bucket, Key=args.key + ".wrong", Body=b"x"))
    return {"get": status, "put": put}


def alter_header(args, recorder):
    client = make_client(args, recorder)

    def change(request, **_):
        request.headers["x-amz-meta-note"] = "altered"

    client.meta.events.register_last("before-send.s3.PutObject", change)
    status, _ = status_of(
        lambda: client.put_object(Bucket=args.bucket, Key=args.key + ".hdr", Body=b"abc", Metadata={"note": "hello"})
    )
    return {"put": status}


def alter_body(args, recorder):
    # A plain body with a hex payload hash: the default (CRC32 in an aws-chunked trailer) would
    # make the change a checksum failure instead of a payload hash mismatch.
    client = make_client(args, recorder, checksum="when_required")

    def change(request, **_):
        body = request.body
        if hasattr(body, "read"):  # botocore hands PutObject a file-like body
            position = body.tell()
            data = body.read()
            body.seek(position)
        else:
            data = body
        request.body = b"X" + data[1:]

    client.meta.events.register_last("before-send.s3.PutObject", change)
    status, _ = status_of(lambda: client.put_object(Bucket=args.bucket, Key=args.key + ".body", Body=b"original body"))
    return {"put": status}


def alter_presigned(args, recorder):
    client = make_client(args, recorder)
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": args.bucket, "Key": args.key}, ExpiresIn=300
    )
    path_end = url.index("?")
    altered = url[:path_end] + "x" + url[path_end:]
    status, _ = fetch(http_pool(args), altered, recorder)
    return {"presigned_get": status}


MODES = {
    "roundtrip": roundtrip,
    "wrong-secret": wrong_secret,
    "alter-header": alter_header,
    "alter-body": alter_body,
    "alter-presigned": alter_presigned,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="roundtrip")
    parser.add_argument("--endpoint-url", required=True, help="e.g. https://s3.example.test:8443")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--bucket", default="test-bucket")
    parser.add_argument("--key", default="dir/object name+1.bin")
    parser.add_argument("--access-key-id", default=os.environ.get("AWS_ACCESS_KEY_ID"))
    parser.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY"))
    parser.add_argument("--session-token", default=os.environ.get("AWS_SESSION_TOKEN"))
    parser.add_argument("--ca-bundle", default=os.environ.get("AWS_CA_BUNDLE"), help="trust for the endpoint")
    parser.add_argument("--proxy", default=None, help="https://host:port of the gateway")
    parser.add_argument("--proxy-ca", help="trust for the proxy's own certificate")
    parser.add_argument("--proxy-cert", help="client certificate (chain) for the proxy")
    parser.add_argument("--proxy-key", help="its private key")
    parser.add_argument("--checksum", default="when_supported", choices=["when_supported", "when_required"],
                        help="botocore request_checksum_calculation")
    parser.add_argument("--dump-responses", help="write every response received to this JSON file")
    args = parser.parse_args()
    if not (args.access_key_id and args.secret_key):
        parser.error("no access key id or secret key (options or AWS_* variables)")

    recorder = Recorder()
    summary = {"mode": args.mode, "botocore": __import__("botocore").__version__}
    summary.update(MODES[args.mode](args, recorder))
    summary["sent"] = recorder.sent
    if args.dump_responses:
        with open(args.dump_responses, "w") as out:
            json.dump(recorder.responses, out, indent=1)
    json.dump(summary, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
