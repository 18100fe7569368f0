#!/usr/bin/env python3
"""Reads and writes the agent service's memory limits in the compose file, keeping every other
line (and comment) as it is.

    compose_mem.py read FILE
        Prints the agent's mem_limit in bytes (compose's units: b, k, m, g; with or without
        a trailing "b").
    compose_mem.py write FILE VALUE COMMENT...
        Sets the agent's mem_limit and memswap_limit to VALUE (e.g. 768m), with COMMENT on the
        line above them (replacing a comment left there by an earlier write).
"""

import re
import sys

UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MARK = "# mem_limit/memswap_limit measured:"


def agent_block(lines):
    """(first, end) line indexes of the agent service's body."""
    start = next((i for i, l in enumerate(lines) if l.rstrip() == "  agent:"), None)
    if start is None:
        sys.exit("compose_mem.py: no `  agent:` service in the file")
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(r"^ {0,2}\S", lines[i])), len(lines)
    )
    return start + 1, end


def to_bytes(value):
    m = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", value.strip().strip("\"'").lower())
    if not m:
        sys.exit(f"compose_mem.py: cannot read the size {value!r}")
    return int(m.group(1)) * UNITS[m.group(2)]


def read(path):
    lines = open(path, encoding="utf-8").read().splitlines()
    first, end = agent_block(lines)
    for line in lines[first:end]:
        m = re.match(r"^    mem_limit:\s*(\S+)", line)
        if m:
            print(to_bytes(m.group(1)))
            return 0
    sys.exit("compose_mem.py: the agent service has no mem_limit")


def write(path, value, comment):
    to_bytes(value)
    lines = open(path, encoding="utf-8").read().splitlines()
    first, end = agent_block(lines)
    kept, at, in_comment = [], None, False
    for line in lines[first:end]:
        if line.strip().startswith(MARK):
            in_comment = True
            at = len(kept) if at is None else at
            continue
        if in_comment and line.startswith("    #   "):
            continue
        in_comment = False
        if re.match(r"^    (mem_limit|memswap_limit):", line):
            at = len(kept) if at is None else at
            continue
        kept.append(line)
    new = [f"    {MARK} {comment[0]}"]
    new += [f"    #   {c}" for c in comment[1:]]
    new += [f"    mem_limit: {value}", f"    memswap_limit: {value}"]
    at = len(kept) if at is None else at
    kept[at:at] = new
    lines[first:end] = kept
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return 0


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "read":
        return read(sys.argv[2])
    if len(sys.argv) >= 5 and sys.argv[1] == "write":
        return write(sys.argv[2], sys.argv[3], sys.argv[4:])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
