#!/usr/bin/env python3
"""What the chaos harness measures, read from two logs: the agent's JSON lines (one per
attempt, with `ts`, `pid`, `call`, `attempt`, `outcome`, `elapsed_ms`; see chaos_agent.py) and
the upstream's request log (one line per request that reached it, with the call id; see
upstream.py). A call is identified by `<agent pid>-<call number>`.

    measure.py wait-ok --agent-log F --after T [--started-after] [--deadline S]
        Waits until the agent logs a successful attempt that ended at or after T (with
        --started-after: that started at or after T) and prints when it ended. Exit 1 at the
        deadline (default 60 s).

    measure.py attempts --agent-log F --since T0 --until T1 [--by end|start|both]
        Counts the attempts that ended (--by start: started; both: started and ended) in
        [T0, T1]. Prints one line: total ok failed mean-seconds-of-the-ok-ones agent-starts
        (agent (re)starts logged in the range; the mean is `-` without a successful attempt).

    measure.py window --agent-log F --upstream-log F --since T0 --until T1 [--live-pid PID]
        Checks every call the agent worked on in [T0, T1] (an attempt ended in the range):
          - it succeeded; with --live-pid, a call of any other agent process may also have
            been abandoned (that process was killed mid-call);
          - a successful call reached the upstream at least once (nothing lost), and no call
            reached it more often than the agent attempted it (no duplicate beyond the retry
            policy: only an attempt whose answer was lost can be delivered twice);
          - the upstream received the real secret every time;
          - the upstream saw no call the agent does not know of.
        Prints one line: calls attempts succeeded duplicated abandoned, then one line per
        problem; exit 1 if there is a problem.

    measure.py table RESULTS
        The summary table (markdown) from the harness's tab-separated results file.
"""

import argparse
import collections
import json
import sys
import time

PROBE_PREFIXES = ("probe-", "load-")


def read_json_lines(path):
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass  # a line being written right now
    except FileNotFoundError:
        pass
    return records


def attempts_of(records):
    out = []
    for r in records:
        if r.get("event") == "attempt" and "ts" in r:
            r = dict(r)
            r["start"] = r["ts"] - (r.get("elapsed_ms") or 0) / 1000
            out.append(r)
    return out


def call_id(attempt):
    return f"{attempt['pid']}-{attempt['call']}"


def wait_ok(args):
    end = time.monotonic() + args.deadline
    while True:
        for a in attempts_of(read_json_lines(args.agent_log)):
            moment = a["start"] if args.started_after else a["ts"]
            if a["outcome"] == "ok" and moment >= args.after:
                print(f"{a['ts']:.6f}")
                return 0
        if time.monotonic() >= end:
            print(f"no successful attempt after {args.after:.3f} within {args.deadline}s",
                  file=sys.stderr)
            return 1
        time.sleep(0.05)


def attempts(args):
    records = read_json_lines(args.agent_log)
    keys = {"end": ("ts",), "start": ("start",), "both": ("start", "ts")}[args.by]
    chosen = [
        a for a in attempts_of(records) if all(args.since <= a[k] <= args.until for k in keys)
    ]
    ok = [a for a in chosen if a["outcome"] == "ok"]
    starts = [
        r for r in records if r.get("event") == "start" and args.since <= r.get("ts", 0) <= args.until
    ]
    mean = f"{sum(a['elapsed_ms'] for a in ok) / len(ok) / 1000:.3f}" if ok else "-"
    print(len(chosen), len(ok), len(chosen) - len(ok), mean, len(starts))
    return 0


def window(args):
    records = read_json_lines(args.agent_log)
    all_attempts = attempts_of(records)
    known_pids = {r["pid"] for r in records if "pid" in r}
    dead_pids = known_pids - {args.live_pid} if args.live_pid else set()
    by_call = collections.defaultdict(list)
    for a in all_attempts:
        by_call[call_id(a)].append(a)
    max_call = collections.defaultdict(int)
    for a in all_attempts:
        max_call[a["pid"]] = max(max_call[a["pid"]], a["call"])
    in_window = sorted(
        {call_id(a) for a in all_attempts if args.since <= a["ts"] <= args.until},
        key=lambda c: tuple(int(x) for x in c.split("-")),
    )

    deliveries = collections.defaultdict(list)
    for r in read_json_lines(args.upstream_log):
        deliveries[r.get("call") or ""].append(r)

    problems = []
    succeeded = duplicated = abandoned = attempt_count = 0
    for cid in in_window:
        tries = by_call[cid]
        attempt_count += len(tries)
        outcome = max(tries, key=lambda a: a["attempt"])["outcome"]
        got = deliveries.get(cid, [])
        if outcome == "ok":
            succeeded += 1
            if not got:
                problems.append(f"call {cid} succeeded at the agent but never reached the upstream")
        elif tries[0]["pid"] in dead_pids:
            abandoned += 1
        else:
            problems.append(f"call {cid} did not succeed (last outcome: {outcome})")
        if len(got) > len(tries):
            problems.append(
                f"call {cid} reached the upstream {len(got)} times in {len(tries)} attempts")
        duplicated += max(0, len(got) - 1)
        wrong = [r["auth"] for r in got if r.get("auth") != "real"]
        if wrong:
            problems.append(f"call {cid} reached the upstream without the real secret: {wrong}")

    # Calls the upstream saw in the range that the agent never logged. The agent's current
    # call may not be logged yet (its number is above every logged one); a killed agent's
    # last call never will be.
    window_set = set(in_window)
    for cid, got in sorted(deliveries.items()):
        if cid.startswith(PROBE_PREFIXES) or cid in window_set or cid in by_call:
            continue
        if not any(args.since <= r["ts"] <= args.until for r in got):
            continue
        try:
            pid, number = (int(x) for x in cid.split("-"))
        except ValueError:
            problems.append(f"the upstream saw a request without a valid call id: {cid!r}")
            continue
        if pid in dead_pids:
            abandoned += 1
            duplicated += max(0, len(got) - 1)
        elif pid not in known_pids or number <= max_call[pid]:
            problems.append(f"the upstream saw call {cid} ({len(got)} times), unknown to the agent")

    print(len(in_window), attempt_count, succeeded, duplicated, abandoned)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


def table(args):
    header = ["scenario", "result", "recovery", "calls", "attempts", "succeeded", "duplicated", "notes"]
    rows = []
    with open(args.results, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            rows.append((fields + [""] * len(header))[: len(header)])
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("wait-ok")
    p.add_argument("--agent-log", required=True)
    p.add_argument("--after", type=float, required=True)
    p.add_argument("--started-after", action="store_true")
    p.add_argument("--deadline", type=float, default=60)
    p = sub.add_parser("attempts")
    p.add_argument("--agent-log", required=True)
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--until", type=float, required=True)
    p.add_argument("--by", choices=("end", "start", "both"), default="end")
    p = sub.add_parser("window")
    p.add_argument("--agent-log", required=True)
    p.add_argument("--upstream-log", required=True)
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--until", type=float, required=True)
    p.add_argument("--live-pid", type=int)
    p = sub.add_parser("table")
    p.add_argument("results")
    args = parser.parse_args()
    return {"wait-ok": wait_ok, "attempts": attempts, "window": window, "table": table}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
