#!/usr/bin/env bash
# The memory soak of issue #20: one or more gateway builds, side by side in one run, go through
# a shortened reproduction of what the full harness (run.sh) does before its soak — small
# requests plain and over TLS, 1,000 idle connections three times (plain, TLS, plain), 10 MB
# uploads and downloads plain and over TLS — then SOAK_SECS of small plain requests, each
# gateway with its own wrk. Every 5 s the script samples each gateway's /proc/PID/smaps_rollup
# (Rss, Anonymous, Private_Dirty) and its allocator statistics (`slapenir_allocator_bytes` on
# the admin port's /metrics, when the build exports them) into a CSV, then prints for each:
# the idle-connection deltas, the least-squares slope (KiB/min) over the whole soak and over its
# last 20 minutes, and the curve every 2.5 minutes.
#
#   bash benches/compare/soak.sh NAME=BIN [NAME=BIN ...]
#
# Knobs: SOAK_SECS (default 1800), WARM_SECS (small-request cells, default 20), BODY_SECS
# (10 MB cells, default 15), IDLE_CONNS (default 1000), CONNS (wrk connections for small
# requests, default 16), BODY_CONNS (default 2), LOAD_CPU and PROXY_CPU (default 0 and 1),
# OUT (a directory to keep the CSVs in; default: a temporary one, removed). Needs nginx with
# the echo module, wrk, taskset, python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/compare/lib.sh
. "$here/lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 NAME=BIN [NAME=BIN ...]" >&2; exit 2; }
SOAK_SECS=${SOAK_SECS:-1800}
WARM_SECS=${WARM_SECS:-20}
BODY_SECS=${BODY_SECS:-15}
IDLE_CONNS=${IDLE_CONNS:-1000}
CONNS=${CONNS:-16}
BODY_CONNS=${BODY_CONNS:-2}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
export BENCH_REAL=sk-real-0123456789abcdefABCDEF0123456789
DUMMY=sk-dummy-openai
for t in nginx wrk taskset python3; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done
echo_module=/usr/lib/nginx/modules/ngx_http_echo_module.so
[ -f "$echo_module" ] || { echo "needs the nginx echo module (libnginx-mod-http-echo)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
    stop_pids "${pids[@]}"
    [ -n "${OUT:-}" ] && { mkdir -p "$OUT"; cp "$work"/*.csv "$work"/*.idle "$OUT"/ 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mem() { python3 "$here/memory.py" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 3000); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.01
    done
    echo "nothing listens on port $1" >&2
    exit 1
}
log() { echo "[$(date +%T)] $*" >&2; }

names=() bins=()
for a in "$@"; do
    names+=("${a%%=*}") bins+=("${a#*=}")
    [ -x "${a#*=}" ] || { echo "not an executable: ${a#*=}" >&2; exit 2; }
done

"${bins[0]}" pki init --dir "$work/certs" >/dev/null
crt=$work/certs/gateway.crt key=$work/certs/gateway.key
python3 - "$work" "$DUMMY" "$BENCH_REAL" <<'PY'
import sys
work, dummy, real = sys.argv[1], sys.argv[2], sys.argv[3]
def body(secret):
    out, i, size = [], 0, 0
    while size < 10 << 20:
        tail = secret if i % 64 == 0 else "x" * len(secret)
        out.append('{"line": %08d, "text": "lorem ipsum dolor sit amet", "key": "%s"}\n' % (i, tail))
        size += len(out[-1])
        i += 1
    return "".join(out)[: 10 << 20]
open(work + "/upload.bin", "w").write(body(dummy))
open(work + "/download.txt", "w").write(body(real))
PY

# The upstream, as in run.sh (keep-alive up to a million requests per connection).
up=$(free_port)
mkdir -p "$work/up"
cat >"$work/up/nginx.conf" <<CONF
load_module $echo_module;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log $work/up/error.log;
pid $work/up/nginx.pid;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    sendfile on;
    server {
        listen 127.0.0.1:$up;
        client_max_body_size 0;
        client_body_buffer_size 16m;
        location = /small { default_type application/json; return 200 '{"id":"cmpl-1","ok":true,"usage":{"tokens":12}}'; }
        location = /upload { echo_read_request_body; echo '{"ok":true}'; }
        location = /download { default_type text/plain; alias $work/download.txt; }
    }
}
CONF
taskset -c "$LOAD_CPU" nginx -p "$work/up" -c "$work/up/nginx.conf" -g 'daemon off;' &
pids+=($!)

gw_pid=() gw=() gws=() adm=()
for i in "${!bins[@]}"; do
    p=$(free_port) ps=$(free_port) pa=$(free_port)
    cat >"$work/gw$i.yaml" <<YAML
listeners:
  - name: plain
    address: 127.0.0.1:$p
  - name: tls
    address: 127.0.0.1:$ps
    tls: { cert: $crt, key: $key, client_auth: none }
admin:
  address: 127.0.0.1:$pa
upstreams:
  up: { url: "http://127.0.0.1:$up" }
credentials:
  bench:
    dummy: $DUMMY
    real: { env: BENCH_REAL }
    upstreams: [up]
routes:
  - host: bench.test
    upstream: up
limits:
  per_client:            # every bench client is one source address
    connections: unlimited
    streams: unlimited
YAML
    RUST_LOG=error taskset -c "$PROXY_CPU" "${bins[$i]}" run --config "$work/gw$i.yaml" \
        >/dev/null 2>"$work/gw$i.err" &
    gw_pid+=($!) gw+=("$p") gws+=("$ps") adm+=("$pa")
    pids+=($!)
done
wait_port "$up"
for i in "${!bins[@]}"; do wait_port "${gw[$i]}"; wait_port "${gws[$i]}"; wait_port "${adm[$i]}"; done

wrk_run() { # scheme port path conns secs [body]
    BODY_FILE=${6:-} taskset -c "$LOAD_CPU" wrk -t1 -c"$4" -d"${5}s" --timeout 60s \
        -s "$here/wrk.lua" "$1://127.0.0.1:$2$3" | grep '^RESULT' || true
}

for i in "${!bins[@]}"; do
    n=${names[$i]}
    log "$n: small requests, plain and TLS, ${WARM_SECS}s each"
    for s in "http ${gw[$i]}" "https ${gws[$i]}"; do read -r sc po <<<"$s"; wrk_run "$sc" "$po" /small "$CONNS" "$WARM_SECS" >&2; done
    log "$n: $IDLE_CONNS idle connections: plain, TLS, plain"
    : >"$work/$n.idle"
    for s in "plain ${gw[$i]}" "tls ${gws[$i]}" "plain ${gw[$i]}"; do
        read -r tr po <<<"$s"
        flag=()
        [ "$tr" = tls ] && flag=(--tls)
        out=$(taskset -c "$LOAD_CPU" python3 "$here/memory.py" idle 127.0.0.1 "$po" "$IDLE_CONNS" \
            "${gw_pid[$i]}" "${adm[$i]}" "${flag[@]}")
        echo "$tr $out" | tee -a "$work/$n.idle" >&2
    done
    log "$n: 10 MB uploads and downloads, plain and TLS, ${BODY_SECS}s each"
    for s in "http ${gw[$i]}" "https ${gws[$i]}"; do
        read -r sc po <<<"$s"
        wrk_run "$sc" "$po" /upload "$BODY_CONNS" "$BODY_SECS" "$work/upload.bin" >&2
        wrk_run "$sc" "$po" /download "$BODY_CONNS" "$BODY_SECS" >&2
    done
done

log "soak: small plain requests through each gateway for ${SOAK_SECS}s, memory every 5 s"
wrk_pids=()
for i in "${!bins[@]}"; do
    mem header >"$work/${names[$i]}.csv"
    wrk_run http "${gw[$i]}" /small "$CONNS" "$SOAK_SECS" >"$work/${names[$i]}.wrk" &
    wrk_pids+=($!)
    pids+=($!)
done
start=$(date +%s)
loads=()
while kill -0 "${wrk_pids[0]}" 2>/dev/null; do
    t=$(($(date +%s) - start))
    for i in "${!bins[@]}"; do
        echo "$t,$(mem sample "${gw_pid[$i]}" "${adm[$i]}")" >>"$work/${names[$i]}.csv"
    done
    if [ $((t % 300)) -lt 5 ]; then
        loads+=("$(cut -d' ' -f1 /proc/loadavg)")
        log "soak ${t}s: $(for i in "${!bins[@]}"; do printf '%s %s  ' "${names[$i]}" "$(tail -1 "$work/${names[$i]}.csv")"; done)"
    fi
    sleep 5
done
wait "${wrk_pids[@]}" 2>/dev/null || true

echo "Load average before: $LOADAVG_BEFORE; one-minute load every 5 min of the soak: ${loads[*]}; after: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in "${!bins[@]}"; do
    n=${names[$i]}
    echo
    echo "## $n (${bins[$i]})"
    echo
    echo "Idle connections ($IDLE_CONNS, one request each; per connection):"
    echo
    sed 's/^/    /' "$work/$n.idle"
    echo
    echo "Soak wrk: $(cat "$work/$n.wrk")"
    echo
    mem report "$work/$n.csv" 1200
done
