# shellcheck shell=bash disable=SC2034
# (SC2034: the names below are used by the scripts that source this file.)
# Sourced by run-all, cleanup and find-mem-limit. Owns the names of everything a run creates,
# all derived from one short prefix (default `slc<pid>`) so that two runs never collide and a
# leftover can always be traced to its run:
#
#   network namespaces   PREFIX-agent, PREFIX-gw, PREFIX-up
#   veth pairs           PREFIXa0 <-> PREFIXg0 (agent <-> gateway: the internal slape-net)
#                        PREFIXg1 <-> PREFIXu0 (gateway <-> upstream: egress)
#                        created inside the namespaces, so the host's own interfaces are never
#                        touched; nft tables and tc qdiscs live inside them too
#   memory cgroups       PREFIX-agent, PREFIX-gw, PREFIX-up, PREFIX-tools, PREFIX-build, nested
#                        under the memory cgroup the script runs in (CHAOS_CGROUP_PARENT
#                        overrides); every process a run starts is placed in one of them
#   temporary directory  ${TMPDIR:-/tmp}/PREFIX-chaos.XXXXXX
#
# chaos_cleanup PREFIX removes all of these: it kills the processes in the cgroups, removes the
# cgroups, deletes the namespaces (which takes their veths, nft tables and qdiscs with them) and
# the temporary directory.

CHAOS_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHAOS_REPO=$(cd "$CHAOS_LIB/../../.." && pwd)
CHAOS_MEMCG_ROOT=/sys/fs/cgroup/memory

# Addresses exist only inside the run's own namespaces, so fixed values cannot clash with the
# host or with another run.
ADDR_AGENT=10.201.0.2       # agent, on slape-net
ADDR_GW_AGENT=10.201.0.1    # gateway, on slape-net: the agent listener
ADDR_GW_UP=10.202.0.1       # gateway, on egress: the admin listener
ADDR_UP=10.202.0.2          # upstream test API
PORT_LISTENER=8443
PORT_ADMIN=9090
PORT_UP=8000

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

# now: wall-clock seconds with microseconds (the same clock the Python helpers use).
now() { printf '%s\n' "$EPOCHREALTIME"; }

# chaos_check_prefix PREFIX: interface names are at most 15 characters (PREFIX + 2).
chaos_check_prefix() {
    [[ $1 =~ ^[a-z][a-z0-9]{1,11}$ ]] \
        || die "prefix '$1' must be 2-12 lower-case letters or digits, starting with a letter"
}

# The memory cgroup this shell runs in: run cgroups are nested under it.
chaos_cgroup_parent() {
    if [ -n "${CHAOS_CGROUP_PARENT:-}" ]; then
        printf '%s\n' "$CHAOS_CGROUP_PARENT"
        return
    fi
    local path
    path=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
    [ -n "$path" ] || die "no memory cgroup (v1) for this process: is /sys/fs/cgroup/memory mounted?"
    printf '%s%s\n' "$CHAOS_MEMCG_ROOT" "${path%/}"
}

# chaos_names PREFIX: sets the names above for PREFIX.
chaos_names() {
    P=$1
    chaos_check_prefix "$P"
    NS_AGENT=$P-agent
    NS_GW=$P-gw
    NS_UP=$P-up
    IF_AGENT=${P}a0
    IF_GW_AGENT=${P}g0
    IF_GW_UP=${P}g1
    IF_UP=${P}u0
    NFT_TABLE=${P}chaos
    CG_PARENT=$(chaos_cgroup_parent)
    CG_AGENT=$CG_PARENT/$P-agent
    CG_GW=$CG_PARENT/$P-gw
    CG_UP=$CG_PARENT/$P-up
    CG_TOOLS=$CG_PARENT/$P-tools
    CG_BUILD=$CG_PARENT/$P-build
}

# cg_create DIR: a new memory cgroup.
cg_create() {
    mkdir "$1"
}

# cg_limit DIR BYTES: memory and memory+swap limits (equal: no swap on top, as in compose).
# The order keeps memory <= memory+swap at every step.
cg_limit() {
    local dir=$1 bytes=$2 current
    current=$(cat "$dir/memory.limit_in_bytes")
    if [ ! -e "$dir/memory.memsw.limit_in_bytes" ]; then
        echo "$bytes" >"$dir/memory.limit_in_bytes"
    elif [ "$bytes" -lt "$current" ]; then
        echo "$bytes" >"$dir/memory.limit_in_bytes"
        echo "$bytes" >"$dir/memory.memsw.limit_in_bytes"
    else
        echo "$bytes" >"$dir/memory.memsw.limit_in_bytes"
        echo "$bytes" >"$dir/memory.limit_in_bytes"
    fi
}

# cg_oom_kills DIR: how many processes the kernel's OOM killer has killed in the cgroup.
cg_oom_kills() {
    awk '$1 == "oom_kill" { print $2; found = 1 } END { if (!found) print 0 }' "$1/memory.oom_control"
}

# in_cgroup DIR CMD...: runs CMD as a member of the cgroup (the shell moves itself in, then execs).
in_cgroup() {
    local dir=$1
    shift
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" "$@"
}

# cg_kill_all DIR: SIGKILL every process in the cgroup until none is left (a supervisor may
# respawn a child between two reads), then remove the cgroup.
cg_kill_all() {
    local dir=$1 pids pid deadline=$((SECONDS + 20))
    [ -d "$dir" ] || return 0
    while pids=$(cat "$dir/cgroup.procs" 2>/dev/null) && [ -n "$pids" ]; do
        for pid in $pids; do
            kill -KILL "$pid" 2>/dev/null || true
        done
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "cleanup: processes left in $dir: $pids"
            return 1
        fi
        sleep 0.05
    done
    # rmdir can race the last exit for a moment.
    while ! rmdir "$dir" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "cleanup: cannot remove cgroup $dir"
            return 1
        fi
        sleep 0.05
    done
}

# chaos_cleanup PREFIX: removes everything a run with PREFIX created. Safe to call again.
chaos_cleanup() {
    local prefix=$1 status=0 dir ns
    chaos_check_prefix "$prefix"
    # Processes first: a namespace with a process in it lives on after `ip netns del`.
    while IFS= read -r dir; do
        cg_kill_all "$dir" || status=1
    done < <(find "$CHAOS_MEMCG_ROOT" -mindepth 1 -maxdepth 8 -type d -name "$prefix-*" 2>/dev/null)
    while IFS= read -r ns; do
        ip netns del "$ns" 2>/dev/null || { log "cleanup: cannot delete namespace $ns"; status=1; }
    done < <(ip netns list | awk -v p="$prefix-" 'index($1, p) == 1 { print $1 }')
    for dir in "${TMPDIR:-/tmp}/$prefix-chaos".*; do
        [ -e "$dir" ] && rm -rf "$dir"
    done
    return "$status"
}

# chaos_leftovers PREFIX: prints whatever of a run with PREFIX still exists (nothing when the
# clean-up was complete): namespaces, host interfaces, host nft tables, cgroups, temp dirs.
chaos_leftovers() {
    local prefix=$1 dir
    ip netns list | awk -v p="$prefix-" 'index($1, p) == 1 { print "namespace " $1 }'
    ip -o link show | awk -F': ' -v p="$prefix" '$2 ~ "^" p "[agu][0-9](@|$)" { print "interface " $2 }'
    if command -v nft >/dev/null; then
        nft list tables 2>/dev/null | awk -v t="${prefix}chaos" '$3 == t { print "nft table " $2 " " $3 }'
    fi
    find "$CHAOS_MEMCG_ROOT" -mindepth 1 -maxdepth 8 -type d -name "$prefix-*" 2>/dev/null \
        | sed 's/^/cgroup /'
    for dir in "${TMPDIR:-/tmp}/$prefix-chaos".*; do
        [ -e "$dir" ] && echo "directory $dir"
    done
    return 0
}

# interruptible CMD...: runs CMD as a child and waits for it with `wait`, which a trapped
# signal interrupts at once (bash delays a trap until a foreground command ends). The child's
# PID is in CHILD meanwhile, for the exit trap to stop it.
CHILD=
interruptible() {
    local rc=0
    "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=
    return "$rc"
}

# wait_child PID: waits for a background child, interruptibly, with its status.
wait_child() {
    local rc=0
    CHILD=$1
    wait "$1" || rc=$?
    CHILD=
    return "$rc"
}

# pause SECONDS: an interruptible sleep (for the duration of a fault, never to synchronise).
pause() {
    interruptible sleep "$1"
}

# wait_until SECONDS CMD...: polls CMD every 10 ms until it succeeds; 1 at the deadline.
wait_until() {
    local deadline
    deadline=$(awk -v n="$EPOCHREALTIME" -v s="$1" 'BEGIN { printf "%.6f", n + s }')
    shift
    until "$@"; do
        if awk -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN { exit !(n >= d) }'; then
            return 1
        fi
        sleep 0.01
    done
}

# elapsed FROM TO: TO - FROM in seconds, two decimals.
elapsed() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'
}
