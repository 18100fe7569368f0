# shellcheck shell=bash disable=SC2034
# (SC2034: some of the values a helper sets are for other scenarios.)
# Sourced by run-all (after common.sh and topology.sh): the scenarios. Each one measures what
# it claims (timestamps from the agent's and the upstream's logs, PIDs from s6-svstat, kernel
# counters from the cgroup), collects every failed check with `fail`, and ends with `record`,
# which writes its row of the summary table.

PROBLEMS=()
SCENARIO=

begin() {
    SCENARIO=$1
    PROBLEMS=()
    log "scenario $SCENARIO: $2"
}

fail() {
    PROBLEMS+=("$*")
    log "scenario $SCENARIO: FAIL: $*"
}

# record RECOVERY CALLS ATTEMPTS SUCCEEDED DUPLICATED NOTES
record() {
    local result=pass notes=$6
    if [ "${#PROBLEMS[@]}" -gt 0 ]; then
        result=FAIL
        notes="$notes; $(printf '%s; ' "${PROBLEMS[@]}")"
        notes=${notes%; }
        FAILED=$((FAILED + 1))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SCENARIO" "$result" "$1" "$2" "$3" "$4" "$5" \
        "$notes" >>"$RESULTS"
    log "scenario $SCENARIO: $result ($notes)"
}

measure() {
    "$PYTHON" "$CHAOS_LIB/measure.py" "$@"
}

# steady: the agent has just completed a call (the baseline every scenario starts from).
steady() {
    local t
    t=$(now)
    interruptible measure wait-ok --agent-log "$AGENT_LOG" --after "$t" --deadline 30 >/dev/null \
        || fail "the agent was not completing calls before the fault"
}

# wait_ok_after T [--started-after]: prints when the first successful attempt after T ended
# (nothing if none came within RECOVERY_DEADLINE seconds).
wait_ok_after() {
    interruptible measure wait-ok --agent-log "$AGENT_LOG" --after "$@" \
        --deadline "$RECOVERY_DEADLINE" >"$RUN/wait-ok.out" 2>/dev/null || true
    cat "$RUN/wait-ok.out"
}

# window T0 T1 [--live-pid PID]: sets W_CALLS W_ATTEMPTS W_OK W_DUP W_ABANDONED and fails the
# scenario for each problem measure.py finds in the calls of [T0, T1].
window() {
    measure window --agent-log "$AGENT_LOG" --upstream-log "$UP_LOG" --since "$1" --until "$2" \
        "${@:3}" >"$RUN/window.out" || true
    W_CALLS=- W_ATTEMPTS=- W_OK=- W_DUP=- W_ABANDONED=-
    read -r W_CALLS W_ATTEMPTS W_OK W_DUP W_ABANDONED <"$RUN/window.out" \
        || fail "measure.py window printed nothing"
    local problem
    while IFS= read -r problem; do
        fail "$problem"
    done < <(tail -n +2 "$RUN/window.out")
}

# attempts T0 T1 [--by end|start|both]: sets A_TOTAL A_OK A_FAILED A_MEAN A_STARTS.
attempts() {
    A_TOTAL=0 A_OK=0 A_FAILED=0 A_MEAN=- A_STARTS=0
    read -r A_TOTAL A_OK A_FAILED A_MEAN A_STARTS \
        < <(measure attempts --agent-log "$AGENT_LOG" --since "$1" --until "$2" "${@:3}") \
        || fail "measure.py attempts printed nothing"
}

# nft_fault RULE: one table in the gateway's namespace applying RULE to every packet between
# the agent and the gateway, both directions. nft_clear removes it.
nft_fault() {
    ip netns exec "$NS_GW" nft -f - <<NFT
table inet $NFT_TABLE {
    chain input {
        type filter hook input priority -10; policy accept;
        iifname "$IF_GW_AGENT" $1
    }
    chain output {
        type filter hook output priority -10; policy accept;
        oifname "$IF_GW_AGENT" $1
    }
}
NFT
}
nft_clear() {
    ip netns exec "$NS_GW" nft delete table inet "$NFT_TABLE" 2>/dev/null || true
}
# nft_dropped: packets the fault table has dropped so far.
nft_dropped() {
    ip netns exec "$NS_GW" nft list table inet "$NFT_TABLE" \
        | awk '/counter packets/ { for (i = 1; i < NF; i++) if ($i == "packets") n += $(i + 1) } END { print n + 0 }'
}

# start_load NAME: 4 more clients calling through the gateway from the agent's namespace, as
# the agent's user, until stop_load. stop_load sets LOAD_REQUESTS, LOAD_OK and LOAD_OUTAGE
# (seconds from the first failure to the first success after the last one; 0 without failures).
start_load() {
    LOAD_NAME=$1
    rm -f "$RUN/state/load.stop"
    in_cgroup "$CG_TOOLS" "${IN_SANDBOX[@]}" s6-setuidgid "$AGENT_USER" "$AGENT_PYTHON" \
        "$RUN/agent/app/probe.py" load --gateway "$AGENT_URL" --host "$API_HOST" --dummy "$DUMMY" \
        --cert "$RUN/agent/certs/agent-1.crt" --key "$RUN/agent/certs/agent-1.key" \
        --ca "$RUN/agent/certs/root_ca.crt" --concurrency 4 --stop-file "$RUN/state/load.stop" \
        >"$RUN/load.$LOAD_NAME.json" 2>"$RUN/load.$LOAD_NAME.err" &
    LOAD_PID=$!
}
stop_load() {
    touch "$RUN/state/load.stop"
    wait_child "$LOAD_PID" || true
    LOAD_REQUESTS=0 LOAD_OK=0 LOAD_OUTAGE=-
    # shellcheck disable=SC2034 # the values are read by the scenarios
    read -r LOAD_REQUESTS LOAD_OK LOAD_OUTAGE < <("$PYTHON" -c 'import json, sys
s = json.load(open(sys.argv[1]))
outage = (s["recovered"] or s["last_failure"]) - s["first_failure"] if s["failed"] else 0
print(s["requests"], s["ok"], "%.2f" % outage)' "$RUN/load.$LOAD_NAME.json" 2>/dev/null) \
        || fail "the load generator reported nothing: $(tail -3 "$RUN/load.$LOAD_NAME.err")"
}

# ---------------------------------------------------------------------------------------------

scenario_isolation() {
    begin isolation "the agent's only way out is the gateway, with mTLS"
    local resolvers=() line checks=0 bad=0 out=$RUN/isolation.jsonl
    # Control: from the gateway's side the upstream answers, so a failure from the agent's
    # side is isolation, not a dead upstream.
    ip netns exec "$NS_GW" "$PYTHON" "$CHAOS_LIB/probe.py" wait-tcp "$ADDR_UP:$PORT_UP" --deadline 5 \
        || fail "control: the upstream is not reachable even from the gateway"
    [ "$(ip netns exec "$NS_GW" sysctl -n net.ipv4.ip_forward)" = 0 ] || fail "the gateway forwards IP"
    [ -z "$(ip -n "$NS_AGENT" route show default)" ] || fail "the agent has a default route"
    while read -r line; do
        resolvers+=(--dns-server "$line")
    done < <(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ { print $2 }' /etc/resolv.conf)
    interruptible as_agent "$AGENT_PYTHON" "$RUN/agent/app/probe.py" isolation \
        --gateway "$AGENT_URL" --host "$API_HOST" --dummy "$DUMMY" \
        --cert "$RUN/agent/certs/agent-1.crt" --key "$RUN/agent/certs/agent-1.key" \
        --ca "$RUN/agent/certs/root_ca.crt" \
        --blocked "$ADDR_UP:$PORT_UP" --blocked "$ADDR_GW_UP:$PORT_ADMIN" \
        --blocked "$ADDR_GW_AGENT:$PORT_ADMIN" --blocked 1.1.1.1:443 --blocked 8.8.8.8:53 \
        --blocked 169.254.169.254:80 \
        --dns api.openai.com --dns "$API_HOST" --dns-server 8.8.8.8 "${resolvers[@]}" \
        >"$out" 2>"$RUN/isolation.err" || true
    while IFS= read -r line; do
        checks=$((checks + 1))
        if [[ $line != *'"ok": true'* ]]; then
            bad=$((bad + 1))
            fail "$line"
        fi
    done <"$out"
    [ "$checks" -ge 12 ] || fail "only $checks isolation checks ran: $(tail -3 "$RUN/isolation.err")"
    record - - - - - "$((checks - bad))/$checks checks held (direct TCP to upstream, admin and internet, DNS, mTLS through the gateway)"
}

# The 100% and 30% loss scenarios differ only in the rule and in what must hold during it.
network_loss() {
    local name=$1 rule=$2 what=$3
    begin "$name" "$what for ${DURATION}s between agent and gateway"
    steady
    local pid0 sup0 t0 t1 tok dropped recovery=-
    pid0=$(agent_pid)
    sup0=$(supervisor_pid "$RUN/agent-scan/agent-svc")
    t0=$(now)
    nft_fault "$rule"
    # Under partial loss 4 more clients call too: whether calls get through is measured over
    # many calls, not only the agent's few.
    [ "$name" = loss ] || start_load "$name"
    pause "$DURATION"
    [ "$name" = loss ] || stop_load
    dropped=$(nft_dropped)
    t1=$(now)
    nft_clear
    tok=$(wait_ok_after "$t1")
    if [ -n "$tok" ]; then
        recovery="$(elapsed "$t1" "$tok") s"
    else
        fail "no call succeeded within ${RECOVERY_DEADLINE}s after the link came back"
        tok=$(now)
    fi
    [ "$dropped" -gt 0 ] || fail "nft dropped no packet: the fault was not applied"
    [ "$(agent_pid)" = "$pid0" ] || fail "the agent's PID changed ($pid0 -> $(agent_pid)): it crashed"
    [ "$(supervisor_pid "$RUN/agent-scan/agent-svc")" = "$sup0" ] || fail "s6-supervise changed"
    attempts "$t0" "$t1" --by both
    local during_ok=$A_OK during_failed=$A_FAILED
    attempts "$t0" "$tok"
    [ "$A_STARTS" = 0 ] || fail "the agent restarted $A_STARTS times"
    window "$t0" "$tok"
    local notes
    if [ "$name" = loss ]; then
        [ "$during_ok" = 0 ] || fail "$during_ok attempts succeeded while every packet was dropped"
        [ "$during_failed" -gt 0 ] || fail "the agent did not retry during the loss"
        notes="$during_failed failed attempts (retries) in ${DURATION}s, $dropped packets dropped; same PID $pid0; pending call completed"
    else
        [ "$LOAD_OK" -gt 0 ] || fail "no call got through during 30% loss"
        notes="during the loss: agent $during_ok/$((during_ok + during_failed)) attempts ok, 4 more clients $LOAD_OK/$LOAD_REQUESTS calls ok; $dropped packets dropped; same PID $pid0"
    fi
    record "$recovery" "$W_CALLS" "$W_ATTEMPTS" "$W_OK" "$W_DUP" "$notes"
}

scenario_loss() {
    network_loss loss "counter drop" "100% packet loss"
}

scenario_partial_loss() {
    network_loss partial-loss "numgen random mod 100 < 30 counter drop" "30% packet loss"
}

scenario_bandwidth() {
    begin bandwidth "${BANDWIDTH_KBIT} kbit/s (tc tbf) both ways for ${DURATION}s, 256 KiB answers"
    local bytes=262144 tb t0 t1 tok recovery=- expected base
    echo "$bytes" >"$SIZE_FILE"
    steady
    tb=$(now)
    pause 3
    attempts "$tb" "$(now)" --by start
    base=$A_MEAN
    t0=$(now)
    local dev
    for dev in "$NS_GW:$IF_GW_AGENT" "$NS_AGENT:$IF_AGENT"; do
        tc -n "${dev%%:*}" qdisc add dev "${dev#*:}" root tbf rate "${BANDWIDTH_KBIT}kbit" \
            burst 16kb latency 500ms
    done
    pause "$DURATION"
    t1=$(now)
    for dev in "$NS_GW:$IF_GW_AGENT" "$NS_AGENT:$IF_AGENT"; do
        tc -n "${dev%%:*}" qdisc del dev "${dev#*:}" root
    done
    attempts "$t0" "$t1" --by both
    local during_ok=$A_OK during_failed=$A_FAILED during_mean=$A_MEAN
    tok=$(wait_ok_after "$t1" --started-after)
    echo 256 >"$SIZE_FILE"
    if [ -n "$tok" ]; then
        recovery="$(elapsed "$t1" "$tok") s"
    else
        fail "no call succeeded after the limit was lifted"
        tok=$(now)
    fi
    # The answer's bytes at the limited rate: a lower bound for a call under the limit.
    expected=$(awk -v b="$bytes" -v r="$BANDWIDTH_KBIT" 'BEGIN { printf "%.2f", b * 8 / (r * 1000) }')
    if [ "$during_ok" -eq 0 ]; then
        fail "no call completed under the bandwidth limit"
    elif awk -v m="$during_mean" -v e="$expected" 'BEGIN { exit !(m < 0.8 * e) }'; then
        fail "calls took ${during_mean}s under the limit, less than the ${expected}s the answer needs: the limit was not applied"
    fi
    window "$t0" "$tok"
    record "$recovery" "$W_CALLS" "$W_ATTEMPTS" "$W_OK" "$W_DUP" \
        "a call took ${base}s unlimited, ${during_mean}s limited (answer alone needs ${expected}s); $during_failed failed attempts"
}

scenario_kill_agent() {
    begin kill-agent "kill -9 the agent's Python process; s6 restarts it"
    steady
    local pid0 sup0 sup_start0 t0 tup pid1 tok recovery=- restart
    pid0=$(agent_pid)
    sup0=$(supervisor_pid "$RUN/agent-scan/agent-svc")
    sup_start0=$(process_start "$sup0")
    t0=$(now)
    kill -KILL "$pid0"
    if wait_until 5 agent_restarted "$pid0"; then
        tup=$(now)
        restart=$(elapsed "$t0" "$tup")
        awk -v r="$restart" 'BEGIN { exit !(r <= 1.0) }' || fail "s6 took ${restart}s to restart the agent (limit 1 s)"
    else
        fail "s6 did not restart the agent within 5 s"
        restart=-
    fi
    pid1=$(agent_pid)
    if [ "$(supervisor_pid "$RUN/agent-scan/agent-svc")" != "$sup0" ] \
        || [ "$(process_start "$sup0")" != "$sup_start0" ]; then
        fail "s6-supervise did not survive (its uptime broke)"
    fi
    grep -q "agent killed by signal 9: restarting" "$RUN/agent-svscan.log" \
        || fail "the finish script did not log the kill"
    tok=$(wait_ok_after "$t0")
    if [ -n "$tok" ]; then
        recovery="$(elapsed "$t0" "$tok") s"
    else
        fail "the restarted agent made no successful call"
        tok=$(now)
    fi
    window "$t0" "$tok" --live-pid "$pid1"
    record "$recovery" "$W_CALLS" "$W_ATTEMPTS" "$W_OK" "$W_DUP" \
        "restarted in ${restart}s (PID $pid0 -> $pid1), same s6-supervise $sup0; $W_ABANDONED call(s) abandoned by the killed process"
}

agent_restarted() {
    local pid
    pid=$(agent_pid)
    [ -n "$pid" ] && [ "$pid" != "$1" ] && [ "$pid" != -1 ] && [ "$(svc_field "$RUN/agent-scan/agent-svc" up)" = true ]
}

gateway_restarted() {
    local pid
    pid=$(gateway_pid)
    [ -n "$pid" ] && [ "$pid" != "$1" ] && [ "$pid" != -1 ]
}

# gateway_ready_again OLD_PID: a new gateway process whose /healthz answered (s6 readiness).
gateway_ready_again() {
    gateway_restarted "$1" && [ "$(svc_field "$RUN/gw-scan/gateway" up,ready)" = "true true" ]
}

# process_start PID: the process's start time in clock ticks since boot (same PID and same
# start time: the same process, never restarted).
process_start() {
    awk '{ sub(/.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null || true
}

scenario_kill_gateway() {
    begin kill-gateway "kill -9 the gateway under load; s6 restarts it, the agent recovers by itself"
    local gpid0 apid0 t0 trestart=- tgw=- tok recovery=- failed_for=-
    start_load kill-gateway
    steady
    pause 1
    gpid0=$(gateway_pid)
    apid0=$(agent_pid)
    t0=$(now)
    kill -KILL "$gpid0"
    if wait_until 10 gateway_restarted "$gpid0"; then
        trestart=$(elapsed "$t0" "$(now)")
        if wait_until 10 gateway_ready_again "$gpid0"; then
            tgw=$(elapsed "$t0" "$(now)")
        else
            fail "the restarted gateway did not become ready (GET /healthz) within 10 s"
        fi
    else
        fail "s6 did not restart the gateway within 10 s"
    fi
    tok=$(wait_ok_after "$t0" --started-after)
    if [ -n "$tok" ]; then
        recovery="$(elapsed "$t0" "$tok") s"
        failed_for=$(elapsed "$t0" "$tok")
    else
        fail "the agent made no successful call after the gateway restart"
        tok=$(now)
    fi
    pause 1
    stop_load
    [ "$(agent_pid)" = "$apid0" ] || fail "the agent restarted: it must recover by itself"
    attempts "$t0" "$tok"
    local agent_failed=$A_FAILED
    window "$t0" "$tok"
    record "$recovery" "$W_CALLS" "$W_ATTEMPTS" "$W_OK" "$W_DUP" \
        "s6 restarted the gateway in ${trestart}s, ready (GET /healthz) after ${tgw}s; agent: $agent_failed failed attempts, first success ${failed_for}s after the kill, same PID; load (4 clients): $LOAD_OK/$LOAD_REQUESTS ok, calls failed for ${LOAD_OUTAGE}s"
}

scenario_oom() {
    begin oom "a build beyond the agent cgroup's memory limit: the kernel kills inside it, not the gateway"
    local build=$RUN/build pid0 sup0 gpid0 kills0 gw_kills0 t0 tend tok recovery=- kills pid1 code=0
    "$PYTHON" "$CHAOS_LIB/cbuild.py" "$build" --units 2 --functions 2 --statements 1000
    chown -R "$AGENT_USER" "$build"
    steady
    pid0=$(agent_pid)
    sup0=$(supervisor_pid "$RUN/agent-scan/agent-svc")
    gpid0=$(gateway_pid)
    kills0=$(cg_oom_kills "$CG_AGENT")
    gw_kills0=$(cg_oom_kills "$CG_GW")
    # The agent is made the kernel's first choice, as it would be if it were the biggest
    # process in the sandbox, so that the scenario always covers s6 restarting an OOM-killed
    # agent; the compiler processes are killed next.
    echo 1000 >"/proc/$pid0/oom_score_adj"
    cg_limit "$CG_AGENT" "$OOM_LIMIT"
    t0=$(now)
    in_cgroup "$CG_AGENT" "${IN_SANDBOX[@]}" s6-setuidgid "$AGENT_USER" make -C "$build" -j2 >"$RUN/oom-build.log" 2>&1 &
    wait_child "$!" || code=$?
    tend=$(now)
    cg_limit "$CG_AGENT" "$AGENT_MEM_LIMIT"
    kills=$(($(cg_oom_kills "$CG_AGENT") - kills0))
    [ "$kills" -gt 0 ] || fail "no OOM kill in the agent cgroup (build exit $code)"
    [ "$code" != 0 ] || fail "the build completed under ${OOM_LIMIT} bytes: it cannot show memory pressure"
    [ "$(cg_oom_kills "$CG_GW")" = "$gw_kills0" ] || fail "the kernel killed in the gateway's cgroup"
    [ "$(gateway_pid)" = "$gpid0" ] || fail "the gateway's PID changed"
    wait_gateway 5 || fail "the gateway is not healthy after the build"
    wait_until 10 agent_restarted "$pid0" || fail "the OOM-killed agent was not restarted"
    pid1=$(agent_pid)
    [ "$(supervisor_pid "$RUN/agent-scan/agent-svc")" = "$sup0" ] || fail "s6-supervise did not survive"
    tok=$(wait_ok_after "$tend")
    if [ -n "$tok" ]; then
        recovery="$(elapsed "$tend" "$tok") s"
    else
        fail "the agent made no successful call after the build"
        tok=$(now)
    fi
    window "$t0" "$tok" --live-pid "$pid1"
    record "$recovery" "$W_CALLS" "$W_ATTEMPTS" "$W_OK" "$W_DUP" \
        "limit $((OOM_LIMIT / 1048576)) MiB: $kills OOM kill(s) in the agent cgroup, build exit $code; agent $pid0 -> $pid1 under the same s6-supervise; gateway PID $gpid0 unchanged, no kill in its cgroup"
}

# Runs last: nothing the agent logged, read or printed holds the real secret; the gateway's
# log and metrics do not either; the upstream got the real secret every time.
scenario_secrets() {
    begin secrets "the real secret reached the upstream only"
    local patterns=$RUN/state/secret.pattern echoes leaks=() file upstream_total upstream_real
    head -n 1 "$SECRET_FILE" >"$patterns"
    [ "$(wc -c <"$patterns")" -gt 20 ] || fail "the secret pattern is empty"
    ip netns exec "$NS_GW" "$PYTHON" -c 'import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
sys.stdout.write(opener.open(sys.argv[1], timeout=5).read().decode())' \
        "http://$ADDR_GW_UP:$PORT_ADMIN/metrics" >"$RUN/metrics.txt" || fail "cannot read /metrics"
    for file in "$AGENT_LOG" "$RESPONSES" "$RUN/agent-svscan.log" "$RUN/gateway.log" \
        "$RUN/metrics.txt" "$RUN"/isolation.* "$RUN"/load.*; do
        [ -e "$file" ] || continue
        if grep -qF -f "$patterns" "$file"; then
            leaks+=("${file#"$RUN"/}")
        fi
    done
    [ "${#leaks[@]}" = 0 ] || fail "the real secret appears in: ${leaks[*]}"
    echoes=$(grep -cF "Bearer $DUMMY" "$RESPONSES" || true)
    [ "$echoes" -gt 0 ] || fail "no echoed credential in the agent's responses: the check proves nothing"
    # The agent keeps calling while this runs: count only the lines complete now (the last one
    # may be half written), the same lines for both counts.
    upstream_total=$(wc -l <"$UP_LOG")
    upstream_real=$(head -n "$upstream_total" "$UP_LOG" | grep -c '"auth": "real"' || true)
    [ "$upstream_total" = "$upstream_real" ] \
        || fail "$((upstream_total - upstream_real)) of $upstream_total requests reached the upstream without the real secret"
    record - - - - - \
        "upstream got the real secret in $upstream_real/$upstream_total requests; its echo reached the agent as the dummy ($echoes lines); secret in no agent log/response, gateway log or metrics"
}
