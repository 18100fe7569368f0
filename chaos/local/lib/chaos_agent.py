#!/usr/bin/env python3
"""Runs the reference agent (CHAOS_AGENT_APP, i.e. containers/agent/app/agent.py) unchanged,
with three additions that the chaos harness measures by. The agent's own code, settings, retry
policy, log lines, exit codes and s6 readiness are untouched.

1. Every request carries `X-Chaos-Call: <pid>-<call number>`, the same for every attempt of a
   call, so the upstream can count how often each call reached it (lost / duplicated).
2. Every log line gets `ts` (epoch seconds with microseconds, when the line is written: for an
   attempt, when it ended) and `pid`; the agent's `time` field has one-second resolution.
3. Every response the agent reads (status, headers, body) is appended to CHAOS_RESPONSES, so
   the harness can prove that no real secret ever reached the agent.

Environment: CHAOS_AGENT_APP (required), CHAOS_RESPONSES (required), and the agent's own
AGENT_* variables.
"""

import http.client
import importlib.util
import os
import sys
import time


def load_agent(path):
    spec = importlib.util.spec_from_file_location("agent", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def instrument(agent, responses_path):
    current = {"call": 0}
    pid = os.getpid()

    original_call = agent.call

    def call(config, log, number):
        current["call"] = number
        return original_call(config, log, number)

    agent.call = call

    original_request = http.client.HTTPConnection.request

    def request(self, method, url, body=None, headers=None, **kwargs):
        headers = dict(headers or {})
        headers["X-Chaos-Call"] = f"{pid}-{current['call']}"
        return original_request(self, method, url, body, headers, **kwargs)

    http.client.HTTPConnection.request = request

    original_read = http.client.HTTPResponse.read

    def read(self, amt=None):
        data = original_read(self, amt)
        with open(responses_path, "ab") as f:
            head = f"{self.status} {self.reason}\n{self.headers}".encode("latin-1", "replace")
            f.write(head + data + b"\n")
        return data

    http.client.HTTPResponse.read = read

    original_write = agent.Log.write

    def write(self, event, **fields):
        fields.setdefault("ts", round(time.time(), 6))
        fields.setdefault("pid", pid)
        return original_write(self, event, **fields)

    agent.Log.write = write


def main():
    agent = load_agent(os.environ["CHAOS_AGENT_APP"])
    instrument(agent, os.environ["CHAOS_RESPONSES"])
    return agent.main()


if __name__ == "__main__":
    sys.exit(main())
