#!/usr/bin/env python3
"""A hostile upstream for the adversarial tests: it answers each request with exactly the bytes
(HTTP/1.1) or frames (HTTP/2) a script file says, however malformed.

Usage: hostile_upstream.py --cert CERT --key KEY --scripts DIR [--alpn h2,http/1.1]

Listens with TLS on 127.0.0.1:0 (ALPN offered in the order given) and prints `PORT <n>` once
it accepts connections. The script for a request is DIR/<name>.json, where <name> is the last
segment of the request path (query ignored); no such file gives a plain 404.

Script format (JSON object; either key may be missing):

  "h1": steps for a request that arrived over HTTP/1.1, written to the socket in order:
        {"text": "..."}     the string's code points (all below 256) as bytes, so JSON's
                            "\\r\\n" and "\\u00ff" are the bytes 0d 0a and ff
        {"b64": "..."}      base64-decoded bytes
        {"pause": 0.05}     seconds to wait (lets bytes leave in separate TCP segments)
        {"keep_alive": true} as the last step: read the next request on the connection
                            (otherwise the connection is closed after the last step)
  "h2": steps for a request that arrived over HTTP/2, all on the request's stream:
        {"headers": [[name, value], ...], "end_stream": false}
                            a header block: a 1xx block, the final one, or trailers;
                            names and values are sent as given (h2's validation and
                            normalisation are off), so upper case and odd bytes go out
        {"data": {"text": ...} or {"b64": ...}, "end_stream": false}
                            one DATA frame
        {"pause": 0.05}
        {"reset": 0}        RST_STREAM with that error code

The request body, if any, is read and ignored. Only the Python standard library and `h2`.
"""

import argparse
import base64
import json
import os
import socket
import ssl
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions


def payload(step):
    if "b64" in step:
        return base64.b64decode(step["b64"])
    return step["text"].encode("latin-1")


def load_script(scripts, path):
    name = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    file = os.path.join(scripts, os.path.basename(name) + ".json")
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except OSError:
        return None


# ---- HTTP/1.1 ---------------------------------------------------------------------------


def read_request(sock, buf):
    """Reads one request; returns (path, rest of the buffer) or (None, b"") on close."""
    while b"\r\n\r\n" not in buf:
        more = sock.recv(65536)
        if not more:
            return None, b""
        buf += more
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    path = lines[0].split(b" ")[1].decode("latin-1")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip().lower()
    if b"chunked" in fields.get(b"transfer-encoding", b""):
        while not rest.endswith(b"0\r\n\r\n"):
            more = sock.recv(65536)
            if not more:
                break
            rest += more
        rest = b""
    else:
        length = int(fields.get(b"content-length", b"0") or 0)
        while len(rest) < length:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
        rest = rest[length:]
    return path, rest


def serve_h1(sock, scripts):
    buf = b""
    while True:
        path, buf = read_request(sock, buf)
        if path is None:
            return
        script = load_script(scripts, path)
        steps = (script or {}).get("h1")
        if steps is None:
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            continue
        keep_alive = False
        for step in steps:
            if "pause" in step:
                time.sleep(step["pause"])
            elif step.get("keep_alive"):
                keep_alive = True
            else:
                sock.sendall(payload(step))
        if not keep_alive:
            return


# ---- HTTP/2 -----------------------------------------------------------------------------


def serve_h2(sock, scripts):
    config = h2.config.H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65536)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(event.headers)
                path = headers.get(b":path", b"/").decode("latin-1")
                answer_h2(conn, sock, event.stream_id, load_script(scripts, path))
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
        sock.sendall(conn.data_to_send())


def answer_h2(conn, sock, stream_id, script):
    steps = (script or {}).get("h2")
    if steps is None:
        conn.send_headers(stream_id, [(b":status", b"404")], end_stream=True)
        return
    for step in steps:
        if "pause" in step:
            sock.sendall(conn.data_to_send())
            time.sleep(step["pause"])
        elif "headers" in step:
            block = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in step["headers"]]
            conn.send_headers(stream_id, block, end_stream=step.get("end_stream", False))
        elif "data" in step:
            conn.send_data(stream_id, payload(step["data"]), end_stream=step.get("end_stream", False))
        elif "reset" in step:
            conn.reset_stream(stream_id, error_code=step["reset"])
    sock.sendall(conn.data_to_send())


# ---- listener ---------------------------------------------------------------------------


def handle(raw, tls, scripts):
    try:
        sock = tls.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError):
        raw.close()
        return
    try:
        if sock.selected_alpn_protocol() == "h2":
            serve_h2(sock, scripts)
        else:
            serve_h1(sock, scripts)
    except (ssl.SSLError, OSError, h2.exceptions.ProtocolError):
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--scripts", required=True)
    parser.add_argument("--alpn", default="h2,http/1.1")
    args = parser.parse_args()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    tls.set_alpn_protocols(args.alpn.split(","))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=handle, args=(raw, tls, args.scripts), daemon=True).start()


if __name__ == "__main__":
    main()
