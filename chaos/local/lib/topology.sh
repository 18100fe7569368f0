# shellcheck shell=bash
# Sourced by run-all (after common.sh). Builds the compose topology out of network namespaces
# and starts the three parts, each supervised as in the containers:
#
#   PREFIX-agent ns            PREFIX-gw ns                       PREFIX-up ns
#   10.201.0.2  PREFIXa0 <--> PREFIXg0  10.201.0.1:8443 (mTLS)
#   (slape-net: its only link)          10.202.0.1:9090 (admin)
#                                       PREFIXg1 <--------------> PREFIXu0  10.202.0.2:8000
#
#   agent     containers/agent's agent-svc service (run, finish, notification-fd, copied
#             unchanged) under s6-svscan, in the memory cgroup PREFIX-agent, as CHAOS_AGENT_USER;
#             /etc/hosts (bind-mounted in its own mount namespace) names only `proxy`, the
#             gateway. No default route, no resolver it can reach: like compose's internal net.
#   gateway   the slapenir binary under s6-svscan (services/gateway: run, readiness through
#             s6-notifyoncheck and data/check), cgroup PREFIX-gw;
#             IP forwarding off: it is a proxy, never a router.
#   upstream  lib/upstream.py, cgroup PREFIX-up: the API, which counts every request.
#
# The real secret is a random value written to a 0600 file that only the gateway and the
# upstream read; it is never passed on a command line or in the agent's environment.

DUMMY=sk-dummy-chaos
API_HOST=api.chaos.test
AGENT_URL=https://proxy:$PORT_LISTENER

# topo_dirs: the run directory and its layout. The agent user gets its own directory only.
topo_dirs() {
    RUN=$(mktemp -d "${TMPDIR:-/tmp}/$P-chaos.XXXXXX")
    chmod 0711 "$RUN"
    mkdir -p "$RUN/secrets" "$RUN/up" "$RUN/state" "$RUN/agent/certs" "$RUN/agent/app" \
        "$RUN/gw-scan/gateway" "$RUN/agent-scan/agent-svc"
    chmod 0700 "$RUN/secrets"
    SECRET_FILE=$RUN/secrets/chaos_api_key
    AGENT_LOG=$RUN/agent/agent.jsonl
    RESPONSES=$RUN/agent/responses.log
    UP_LOG=$RUN/up/requests.jsonl
    SIZE_FILE=$RUN/up/response-bytes
    RESULTS=$RUN/results.tsv
    : >"$RESULTS"
}

# topo_network: namespaces, veths, addresses; nothing in the host's namespace.
topo_network() {
    local ns
    for ns in "$NS_AGENT" "$NS_GW" "$NS_UP"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # IPv4 only: no link-local IPv6 path around the rules below.
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    ip link add "$IF_AGENT" netns "$NS_AGENT" type veth peer name "$IF_GW_AGENT" netns "$NS_GW"
    ip link add "$IF_GW_UP" netns "$NS_GW" type veth peer name "$IF_UP" netns "$NS_UP"
    ip -n "$NS_AGENT" addr add "$ADDR_AGENT/24" dev "$IF_AGENT"
    ip -n "$NS_GW" addr add "$ADDR_GW_AGENT/24" dev "$IF_GW_AGENT"
    ip -n "$NS_GW" addr add "$ADDR_GW_UP/24" dev "$IF_GW_UP"
    ip -n "$NS_UP" addr add "$ADDR_UP/24" dev "$IF_UP"
    ip -n "$NS_AGENT" link set "$IF_AGENT" up
    ip -n "$NS_GW" link set "$IF_GW_AGENT" up
    ip -n "$NS_GW" link set "$IF_GW_UP" up
    ip -n "$NS_UP" link set "$IF_UP" up
    ip netns exec "$NS_GW" sysctl -qw net.ipv4.ip_forward=0
    printf '127.0.0.1 localhost\n%s proxy\n' "$ADDR_GW_AGENT" >"$RUN/hosts"
}

# IN_SANDBOX CMD...: CMD in the agent's network namespace, with the sandbox's /etc/hosts
# bind-mounted in a private mount namespace (nothing under the host's /etc changes). An array,
# so that in_cgroup can exec it.
sandbox_prefix() {
    # shellcheck disable=SC2016 # expanded by the inner sh
    IN_SANDBOX=(ip netns exec "$NS_AGENT" unshare --mount --propagation private
        sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$RUN/hosts")
}

# as_agent CMD...: CMD in the sandbox as the agent's user.
as_agent() {
    "${IN_SANDBOX[@]}" s6-setuidgid "$AGENT_USER" "$@"
}

topo_cgroups() {
    local cg
    for cg in "$CG_AGENT" "$CG_GW" "$CG_UP" "$CG_TOOLS"; do
        cg_create "$cg"
    done
    cg_limit "$CG_AGENT" "$AGENT_MEM_LIMIT"
}

# topo_files: PKI, secret, gateway config, service directories, the agent's files.
topo_files() {
    "$SLAPENIR_BIN" pki init --dir "$RUN/pki" >"$RUN/pki-init.log"
    (umask 077 && printf 'sk-real-chaos-%s\n' "$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" >"$SECRET_FILE")
    echo 256 >"$SIZE_FILE"
    cat >"$RUN/gateway.yaml" <<YAML
# One chaos run's gateway: the agent listener on slape-net, admin and upstream on egress.
listeners:
  - name: agents
    address: $ADDR_GW_AGENT:$PORT_LISTENER
    tls:
      cert: "$RUN/pki/gateway.crt"
      key: "$RUN/pki/gateway.key"
      client_ca: "$RUN/pki/root_ca.crt"
admin:
  address: $ADDR_GW_UP:$PORT_ADMIN
upstreams:
  chaos-api:
    url: http://$ADDR_UP:$PORT_UP
    connect_timeout: 2s
    read_timeout: 10s
credentials:
  chaos:
    dummy: $DUMMY
    real: { file: "$SECRET_FILE" }
    upstreams: [chaos-api]
routes:
  - host: $API_HOST
    upstream: chaos-api
    clients: [spiffe://slapenir/agent/agent-1]
YAML
    "$SLAPENIR_BIN" check --config "$RUN/gateway.yaml" >"$RUN/check.log" 2>&1 \
        || { cat "$RUN/check.log" >&2; die "slapenir check refused the generated config"; }
    cp -R "$CHAOS_LIB/../services/gateway/." "$RUN/gw-scan/gateway/"

    local svc=$AGENT_SVC_DIR
    cp "$svc/run" "$svc/finish" "$svc/notification-fd" "$RUN/agent-scan/agent-svc/"
    cp "$RUN/pki/agent-1.crt" "$RUN/pki/agent-1.key" "$RUN/pki/root_ca.crt" "$RUN/agent/certs/"
    cp "$AGENT_APP" "$RUN/agent/app/agent.py"
    cp "$CHAOS_LIB/chaos_agent.py" "$CHAOS_LIB/probe.py" "$RUN/agent/app/"
    : >"$AGENT_LOG"
    : >"$RESPONSES"
    chown -R "$AGENT_USER" "$RUN/agent"
    chmod 0755 "$RUN/agent" "$RUN/agent/app"
    chmod 0700 "$RUN/agent/certs"
    # Stand-in for s6-overlay's halt, which the finish script calls when the agent stops for
    # good: the harness reports it (the agent must never stop during a run).
    # shellcheck disable=SC2016 # expanded when the stand-in runs
    printf '#!/bin/sh\necho "halt $(date +%%s)" >>"%s"\n' "$RUN/state/halt.log" >"$RUN/state/halt"
    chmod 0755 "$RUN/state/halt"
}

start_upstream() {
    in_cgroup "$CG_UP" ip netns exec "$NS_UP" "$PYTHON" "$CHAOS_LIB/upstream.py" \
        --listen "$ADDR_UP:$PORT_UP" --secret-file "$SECRET_FILE" --dummy "$DUMMY" \
        --log "$UP_LOG" --size-file "$SIZE_FILE" >"$RUN/upstream.log" 2>&1 &
    interruptible ip netns exec "$NS_GW" "$PYTHON" "$CHAOS_LIB/probe.py" wait-http \
        "http://$ADDR_UP:$PORT_UP/__ready" --deadline 20 \
        || die "the upstream did not start: $(tail -5 "$RUN/upstream.log")"
}

start_gateway() {
    in_cgroup "$CG_GW" env -i PATH="$PATH" RUST_LOG=info \
        CHAOS_GATEWAY_BIN="$SLAPENIR_BIN" CHAOS_GATEWAY_CONFIG="$RUN/gateway.yaml" \
        CHAOS_GATEWAY_HEALTHZ="http://$ADDR_GW_UP:$PORT_ADMIN/healthz" \
        ip netns exec "$NS_GW" s6-svscan "$RUN/gw-scan" >"$RUN/gateway.log" 2>&1 &
    wait_gateway 30 || die "the gateway did not start: $(tail -5 "$RUN/gateway.log")"
}

# wait_gateway SECONDS: the admin endpoint answers and the agent listener accepts.
wait_gateway() {
    interruptible ip netns exec "$NS_GW" "$PYTHON" "$CHAOS_LIB/probe.py" wait-http \
        "http://$ADDR_GW_UP:$PORT_ADMIN/healthz" --deadline "$1" \
        && interruptible ip netns exec "$NS_GW" "$PYTHON" "$CHAOS_LIB/probe.py" wait-tcp \
            "$ADDR_GW_AGENT:$PORT_LISTENER" --deadline "$1"
}

start_agent() {
    in_cgroup "$CG_AGENT" env -i PATH="$PATH" HOME=/ \
        AGENT_USER="$AGENT_USER" AGENT_PYTHON="$AGENT_PYTHON" \
        AGENT_APP="$RUN/agent/app/chaos_agent.py" CHAOS_AGENT_APP="$RUN/agent/app/agent.py" \
        CHAOS_RESPONSES="$RESPONSES" \
        AGENT_GATEWAY="$AGENT_URL" AGENT_TARGET="https://$API_HOST/v1/data" \
        AGENT_DUMMY_KEY="$DUMMY" AGENT_NAME=agent-1 AGENT_CERT_DIR="$RUN/agent/certs" \
        AGENT_COUNT=0 AGENT_INTERVAL=0.2 AGENT_TIMEOUT=2 \
        AGENT_BACKOFF_BASE=0.2 AGENT_BACKOFF_MAX=2 AGENT_LOG_FILE="$AGENT_LOG" \
        S6_OVERLAY_RESULTS="$RUN/state/exitcode" S6_OVERLAY_HALT="$RUN/state/halt" \
        "${IN_SANDBOX[@]}" s6-svscan "$RUN/agent-scan" >"$RUN/agent-svscan.log" 2>&1 &
    local started
    started=$(now)
    wait_until 15 agent_is_ready || die "the agent did not start: $(tail -5 "$RUN/agent-svscan.log")"
    interruptible "$PYTHON" "$CHAOS_LIB/measure.py" wait-ok --agent-log "$AGENT_LOG" \
        --after "$started" --deadline 30 >/dev/null \
        || die "the agent made no successful call: $(tail -5 "$RUN/agent-svscan.log")"
}

# svc_field SERVICEDIR FIELD: one field of s6-svstat -o (empty while s6-supervise is not up).
svc_field() {
    s6-svstat -o "$2" "$1" 2>/dev/null || true
}
agent_pid() { svc_field "$RUN/agent-scan/agent-svc" pid; }
gateway_pid() { svc_field "$RUN/gw-scan/gateway" pid; }
agent_is_ready() { [ "$(svc_field "$RUN/agent-scan/agent-svc" up,ready)" = "true true" ]; }

# supervisor_pid SERVICEDIR: the s6-supervise process watching SERVICEDIR.
supervisor_pid() {
    local proc
    for proc in /proc/[0-9]*; do
        if [ "$(cat "$proc/comm" 2>/dev/null)" = s6-supervise ] \
            && [ "$(readlink "$proc/cwd" 2>/dev/null)" = "$1" ]; then
            echo "${proc#/proc/}"
            return
        fi
    done
}

topo_up() {
    topo_dirs
    sandbox_prefix
    topo_network
    topo_cgroups
    topo_files
    start_upstream
    start_gateway
    start_agent
}
