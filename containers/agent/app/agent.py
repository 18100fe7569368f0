#!/usr/bin/env python3
"""SLAPENIR reference agent: calls an API through the gateway, and keeps calling whatever the
network does.

It holds only the dummy key and its client certificate. Each call goes to the gateway
(gateway mode: the TLS connection is to AGENT_GATEWAY, the `Host` header names the API of
AGENT_TARGET), presents the client certificate (mTLS) and sends `Authorization: Bearer <dummy>`;
the gateway swaps the dummy for the real key on the way out.

A call that fails with a connection error, a timeout, a TLS error, or a 5xx / 408 / 429 answer
is tried again after an exponential backoff with full jitter: attempt n waits a random time in
[0, min(AGENT_BACKOFF_MAX, AGENT_BACKOFF_BASE * 2**(n-1))] seconds. Network loss never ends the
agent: with AGENT_MAX_ATTEMPTS=0 (the default) a call is retried until it gets an answer.
Every attempt is logged as one JSON line on stderr (and appended to AGENT_LOG_FILE if set):
call number, attempt number, outcome, HTTP status or error, duration, and the wait before the
next attempt. Neither the key nor response bodies are ever logged (only their sizes).

Environment (all optional):

    AGENT_GATEWAY       gateway base URL, https://HOST:PORT      https://gateway:443
    AGENT_TARGET        the API URL to call                     https://api.openai.com/v1/models
    AGENT_METHOD        HTTP method                             GET
    AGENT_BODY          request body (sent as application/json) none
    AGENT_DUMMY_KEY     the dummy credential                    sk-dummy-openai
    AGENT_NAME          certificate name                        agent-1
    AGENT_CERT_DIR      where init-certs put the certificates   /home/agent/certs
    AGENT_CERT          client certificate chain (PEM)          $AGENT_CERT_DIR/$AGENT_NAME.crt
    AGENT_KEY           its private key (PEM)                   $AGENT_CERT_DIR/$AGENT_NAME.key
    AGENT_CA            root that the gateway's cert chains to  $AGENT_CERT_DIR/root_ca.crt
    AGENT_COUNT         calls to make; 0 = forever              1
    AGENT_INTERVAL      seconds between the start of calls      5
    AGENT_TIMEOUT       seconds allowed per attempt             10
    AGENT_MAX_ATTEMPTS  attempts per call; 0 = unlimited        0
    AGENT_BACKOFF_BASE  first backoff ceiling, seconds          0.5
    AGENT_BACKOFF_MAX   backoff ceiling cap, seconds            30
    AGENT_LOG_FILE      also append the JSON lines to this file none
    AGENT_NOTIFY_FD     descriptor to write a newline to once   none (set by the agent-svc
                        the configuration is loaded (s6         run script)
                        readiness notification)

The certificate files are read again for every attempt, so a certificate renewed on disk (by
cert-renew) is used from the next attempt on.

Exit codes (the agent-svc finish script acts on them; docs/deploy.md has the policy):

    0  every call got an answer (AGENT_COUNT calls made)
    1  unexpected error (a bug; Python's own exit code for an uncaught exception)
    2  configuration error: a bad variable, a missing certificate file, an unwritable log file
    3  refused: the gateway or the API answered a 4xx other than 408/429 (e.g. 403: no route,
       or the certificate's identity is not allowed); retrying cannot help, so it stops at once
    4  gave up: AGENT_COUNT calls made, but at least one ran out of AGENT_MAX_ATTEMPTS
"""

import http.client
import json
import os
import random
import ssl
import sys
import time
import urllib.parse

EXIT_DONE = 0
EXIT_CONFIG = 2
EXIT_REFUSED = 3
EXIT_GAVE_UP = 4

# Answers worth another attempt: server errors, request timeout, rate limit.
RETRY_STATUSES = frozenset({408, 429})


class ConfigError(Exception):
    """A variable or file the agent needs is missing or invalid."""


class Config:
    """The agent's settings, read and checked once from the environment."""

    def __init__(self, env):
        self.gateway = _url(env, "AGENT_GATEWAY", "https://gateway:443")
        if self.gateway.scheme != "https":
            raise ConfigError("AGENT_GATEWAY must be an https:// URL (the gateway needs mTLS)")
        self.target = _url(env, "AGENT_TARGET", "https://api.openai.com/v1/models")
        self.method = env.get("AGENT_METHOD", "GET").upper()
        body = env.get("AGENT_BODY")
        self.body = body.encode() if body is not None else None
        self.dummy_key = env.get("AGENT_DUMMY_KEY", "sk-dummy-openai")
        name = env.get("AGENT_NAME", "agent-1")
        cert_dir = env.get("AGENT_CERT_DIR", "/home/agent/certs")
        self.cert = env.get("AGENT_CERT", os.path.join(cert_dir, name + ".crt"))
        self.key = env.get("AGENT_KEY", os.path.join(cert_dir, name + ".key"))
        self.ca = env.get("AGENT_CA", os.path.join(cert_dir, "root_ca.crt"))
        for var, path in (("AGENT_CERT", self.cert), ("AGENT_KEY", self.key), ("AGENT_CA", self.ca)):
            if not os.path.isfile(path):
                raise ConfigError(f"{var}: no file at {path}")
        self.count = _number(env, "AGENT_COUNT", "1", int, 0)
        self.interval = _number(env, "AGENT_INTERVAL", "5", float, 0)
        self.timeout = _number(env, "AGENT_TIMEOUT", "10", float, 0.001)
        self.max_attempts = _number(env, "AGENT_MAX_ATTEMPTS", "0", int, 0)
        self.backoff_base = _number(env, "AGENT_BACKOFF_BASE", "0.5", float, 0)
        self.backoff_max = _number(env, "AGENT_BACKOFF_MAX", "30", float, 0)
        self.log_file = env.get("AGENT_LOG_FILE") or None


def _url(env, var, default):
    value = env.get(var, default)
    url = urllib.parse.urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"{var}: {value!r} is not an http(s) URL with a host")
    try:
        url.port
    except ValueError as e:
        raise ConfigError(f"{var}: {value!r}: {e}") from None
    return url


def _number(env, var, default, kind, minimum):
    value = env.get(var, default)
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{var}: {value!r} is not a {kind.__name__}") from None
    if number < minimum:
        raise ConfigError(f"{var}: {value!r} is below {minimum}")
    return number


class Log:
    """One JSON object per line on stderr, and in the log file if one is configured."""

    def __init__(self, path):
        self.file = None
        if path:
            try:
                self.file = open(path, "a", encoding="utf-8")
            except OSError as e:
                raise ConfigError(f"AGENT_LOG_FILE: cannot open {path}: {e}") from None

    def write(self, event, **fields):
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields}
        line = json.dumps(record, sort_keys=False)
        print(line, file=sys.stderr, flush=True)
        if self.file:
            self.file.write(line + "\n")
            self.file.flush()


def backoff(config, attempt):
    """Seconds to wait after failed attempt number `attempt` (from 1): full jitter."""
    ceiling = min(config.backoff_max, config.backoff_base * (2 ** (attempt - 1)))
    return random.uniform(0, ceiling)


def attempt_once(config):
    """One request through the gateway. Returns (status, response size); raises OSError or
    http.client.HTTPException when no answer came."""
    context = ssl.create_default_context(cafile=config.ca)
    context.load_cert_chain(config.cert, config.key)
    gateway = config.gateway
    connection = http.client.HTTPSConnection(
        gateway.hostname, gateway.port or 443, timeout=config.timeout, context=context
    )
    target = config.target
    path = target.path or "/"
    if target.query:
        path += "?" + target.query
    host = target.hostname if target.port is None else f"{target.hostname}:{target.port}"
    headers = {
        "Host": host,
        "Authorization": f"Bearer {config.dummy_key}",
        "User-Agent": "slapenir-reference-agent/1",
        "Accept-Encoding": "identity",
    }
    if config.body is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(config.method, path, body=config.body, headers=headers)
        response = connection.getresponse()
        size = len(response.read())
        return response.status, size
    finally:
        connection.close()


def call(config, log, number):
    """Makes call `number` until it gets an answer, is refused or runs out of attempts.
    Returns "ok", "refused" or "gave_up"."""
    attempt = 0
    while True:
        attempt += 1
        started = time.monotonic()
        status, size, error = None, None, None
        try:
            status, size = attempt_once(config)
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            error = f"{type(e).__name__}: {e}"
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        fields = {"call": number, "attempt": attempt, "status": status, "elapsed_ms": elapsed_ms}
        if error is not None:
            fields["error"] = error
        if size is not None:
            fields["response_bytes"] = size

        if status is not None and status < 400:
            log.write("attempt", outcome="ok", **fields)
            return "ok"
        if status is not None and status < 500 and status not in RETRY_STATUSES:
            log.write("attempt", outcome="refused", **fields)
            return "refused"
        if config.max_attempts and attempt >= config.max_attempts:
            log.write("attempt", outcome="gave_up", **fields)
            return "gave_up"
        delay = backoff(config, attempt)
        log.write("attempt", outcome="retry", retry_in_s=round(delay, 3), **fields)
        time.sleep(delay)


def run(config, log):
    """Makes the configured calls; returns the exit code."""
    log.write(
        "start",
        gateway=config.gateway.geturl(),
        target=config.target.geturl(),
        count=config.count,
        interval_s=config.interval,
        max_attempts=config.max_attempts,
    )
    outcomes = {"ok": 0, "refused": 0, "gave_up": 0}
    number = 0
    while config.count == 0 or number < config.count:
        number += 1
        started = time.monotonic()
        outcome = call(config, log, number)
        outcomes[outcome] += 1
        if outcome == "refused":
            break
        if config.count == 0 or number < config.count:
            time.sleep(max(0.0, config.interval - (time.monotonic() - started)))
    if outcomes["refused"]:
        code = EXIT_REFUSED
    elif outcomes["gave_up"]:
        code = EXIT_GAVE_UP
    else:
        code = EXIT_DONE
    log.write("done", calls=number, exit_code=code, **outcomes)
    return code


def notify_ready(env):
    """Tells the supervisor the agent is up (s6 readiness notification), if it asked to know."""
    fd = env.get("AGENT_NOTIFY_FD")
    if not fd:
        return
    try:
        os.write(int(fd), b"\n")
        os.close(int(fd))
    except (ValueError, OSError):
        # Not started by s6 with a notification pipe: nobody is waiting for the newline.
        pass


def main():
    try:
        config = Config(os.environ)
        log = Log(config.log_file)
    except ConfigError as e:
        print(json.dumps({"event": "config_error", "error": str(e)}), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    notify_ready(os.environ)
    return run(config, log)


if __name__ == "__main__":
    sys.exit(main())
