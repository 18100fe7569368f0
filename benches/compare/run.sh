#!/usr/bin/env bash
# The gateway next to what a user would otherwise pick, in one run on one machine: nginx
# (`proxy_pass`, `proxy_set_header` for the header, `sub_filter` for responses; it cannot
# rewrite request bodies), mitmproxy with a small replacement addon (mitm_addon.py), and a
# direct connection to the upstream as the floor. Prints one markdown report: a table of
# requests/s, latency, CPU-seconds per 10k requests and peak RSS with ratios to nginx, the SSE
# and idle-connection tables, the memory soak, the reference ceilings (memcpy, loopback TCP) and
# the issue's targets, each marked met or missed.
#
#   cargo build --release && bash benches/compare/run.sh           # full run (docs/performance.md)
#   bash benches/compare/run.sh --quick                             # a smoke run of about a minute
#
# Knobs (environment): ROUNDS, SECS (per throughput cell), LAT_SECS (per latency cell), CONNS
# (wrk connections, small requests), BODY_CONNS (10 MB bodies), IDLE_CONNS, SOAK_SECS,
# LOAD_CPU (wrk, clients, upstreams; default 0), PROXY_CPU (the proxy under test; default 1),
# SLAPENIR_BIN. Needs nginx with the sub and echo modules (Debian: nginx-light and
# libnginx-mod-http-echo), wrk, mitmdump, python3, taskset.
#
# Every proxy is pinned to PROXY_CPU and has one worker (nginx `worker_processes 1`, the gateway
# sees one CPU, mitmproxy is single-threaded), so requests/s compare at equal CPU; CPU-seconds
# are read from /proc for the proxy's processes. Variants alternate within each round (the
# order rotates every round); the report gives medians over the rounds. The gateway's audit
# lines (stdout) go to /dev/null.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/compare/lib.sh
. "$here/lib.sh"
root=$(cd "$here/../.." && pwd)

quick=0
[ "${1:-}" = "--quick" ] && quick=1
if [ "$quick" = 1 ]; then
    ROUNDS=${ROUNDS:-1} SECS=${SECS:-2} LAT_SECS=${LAT_SECS:-1}
    IDLE_CONNS=${IDLE_CONNS:-200} SOAK_SECS=${SOAK_SECS:-0}
else
    ROUNDS=${ROUNDS:-3} SECS=${SECS:-10} LAT_SECS=${LAT_SECS:-5}
    IDLE_CONNS=${IDLE_CONNS:-1000} SOAK_SECS=${SOAK_SECS:-600}
fi
CONNS=${CONNS:-16}
BODY_CONNS=${BODY_CONNS:-2}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
BIN=${SLAPENIR_BIN:-$root/target/release/slapenir}
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
export BENCH_REAL=sk-real-0123456789abcdefABCDEF0123456789
DUMMY=sk-dummy-openai

need() { command -v "$1" >/dev/null || { echo "needs $1: $2" >&2; exit 1; }; }
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
need nginx "apt-get install nginx-light libnginx-mod-http-echo"
need wrk "apt-get install wrk"
need mitmdump "pip install mitmproxy"
need python3 "apt-get install python3"
need taskset "apt-get install util-linux"
echo_module=/usr/lib/nginx/modules/ngx_http_echo_module.so
[ -f "$echo_module" ] || { echo "needs the nginx echo module (libnginx-mod-http-echo)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
# nginx workers run as an unprivileged user: they must read the bodies under here.
chmod 755 "$work"
pids=()
cleanup() {
    stop_pids "${pids[@]}"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

py() { python3 "$here/helpers.py" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 3000); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.01
    done
    echo "nothing listens on port $1 ($2)" >&2
    exit 1
}
wait_file() {
    for _ in $(seq 1 3000); do
        [ -s "$1" ] && return 0
        sleep 0.01
    done
    echo "$1 never appeared" >&2
    exit 1
}
log() { echo "[$(date +%T)] $*" >&2; }

# --- fixtures: a dev PKI for the TLS listeners, the 10 MB bodies ---------------------------
"$BIN" pki init --dir "$work/certs" >/dev/null
crt=$work/certs/gateway.crt
key=$work/certs/gateway.key
python3 - "$work" "$DUMMY" "$BENCH_REAL" <<'PY'
import sys
work, dummy, real = sys.argv[1], sys.argv[2], sys.argv[3]
def body(secret):
    # 10 MiB of JSON-ish lines; a secret in every 64th line (about one per 4 KiB).
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

# --- upstreams (LOAD_CPU): nginx for /small, /upload, /download; Python for /events ----------
up=$(free_port)
ups=$(free_port)
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
        listen 127.0.0.1:$ups ssl;
        ssl_certificate $crt;
        ssl_certificate_key $key;
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
taskset -c "$LOAD_CPU" python3 "$here/helpers.py" sse-upstream "$work/sse.port" "$crt" "$key" &
pids+=($!)
wait_file "$work/sse.port"
read -r sse sses <"$work/sse.port"

# --- the proxies under test (PROXY_CPU) ------------------------------------------------------
ng=$(free_port)
ngs=$(free_port)
mkdir -p "$work/ng"
cat >"$work/ng/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 65536;
error_log $work/ng/error.log;
pid $work/ng/nginx.pid;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$up; keepalive 64; }
    upstream sse { server 127.0.0.1:$sse; keepalive 8; }
    server {
        listen 127.0.0.1:$ng;
        listen 127.0.0.1:$ngs ssl;
        ssl_certificate $crt;
        ssl_certificate_key $key;
        client_max_body_size 0;
        # Stream bodies both ways and keep them off the disk, as the gateway does.
        proxy_request_buffering off;
        proxy_max_temp_file_size 0;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Accept-Encoding "";
        proxy_set_header Authorization "Bearer $BENCH_REAL";
        sub_filter_types *;
        sub_filter_once off;
        sub_filter '$BENCH_REAL' '$DUMMY';
        location / { proxy_pass http://up; }
        location /events { proxy_pass http://sse; proxy_buffering off; }
    }
}
CONF
taskset -c "$PROXY_CPU" nginx -p "$work/ng" -c "$work/ng/nginx.conf" -g 'daemon off;' &
ng_pid=$!
pids+=("$ng_pid")

gw=$(free_port)
gws=$(free_port)
gw_admin=$(free_port)
cat >"$work/gw.yaml" <<YAML
admin:
  address: 127.0.0.1:$gw_admin
listeners:
  - name: plain
    address: 127.0.0.1:$gw
  - name: tls
    address: 127.0.0.1:$gws
    tls: { cert: $crt, key: $key, client_auth: none }
upstreams:
  up: { url: "http://127.0.0.1:$up" }
  sse: { url: "http://127.0.0.1:$sse" }
credentials:
  bench:
    dummy: $DUMMY
    real: { env: BENCH_REAL }
    upstreams: [up, sse]
routes:
  - host: bench.test
    upstream: up
  - host: bench.test
    path_prefix: /events
    upstream: sse
limits:
  per_client:            # every bench client is one source address
    connections: unlimited
    streams: unlimited
YAML
RUST_LOG=error taskset -c "$PROXY_CPU" "$BIN" run --config "$work/gw.yaml" >/dev/null 2>"$work/gw.err" &
gw_pid=$!
pids+=("$gw_pid")

mp=$(free_port)
BENCH_SSE_PORT=$sse taskset -c "$PROXY_CPU" mitmdump -q --mode "reverse:http://127.0.0.1:$up@$mp" \
    --set confdir="$work/mitm" --set flow_detail=0 -s "$here/mitm_addon.py" >"$work/mitm.log" 2>&1 &
mp_pid=$!
pids+=("$mp_pid")

# The framework's ceiling, when built (cargo build --release --example pingora_passthrough):
# Pingora with default settings and no filters, for small plain requests only.
pp_bin=$(dirname "$BIN")/examples/pingora_passthrough
pp="" pp_pid=""
if [ -x "$pp_bin" ]; then
    pp=$(free_port)
    taskset -c "$PROXY_CPU" "$pp_bin" "127.0.0.1:$pp" "127.0.0.1:$up" >"$work/pp.log" 2>&1 &
    pp_pid=$!
    pids+=("$pp_pid")
else
    log "no $pp_bin: the Pingora passthrough row is left out"
fi

for p in "$up" "$ups" "$ng" "$ngs" "$gw" "$gws" "$mp" $pp; do wait_port "$p" "a server of the run"; done

# The processes whose CPU time and memory count for each variant.
proc_pids() {
    case $1 in
        nginx) echo "$ng_pid" "$(pgrep -P "$ng_pid" | tr '\n' ' ')" ;;
        gateway) echo "$gw_pid" ;;
        mitmproxy) echo "$mp_pid" ;;
        pingora) echo "$pp_pid" ;;
    esac
}
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done; echo "$t"; }
reset_peak() { local p; for p in "$@"; do echo 5 >"/proc/$p/clear_refs"; done; }
peak_kib() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/^VmHWM/ { print $2 }' "/proc/$p/status"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)

# The address of a variant for a transport: "scheme port".
addr() {
    local v=$1 tr=$2 path=$3
    case $v-$tr in
        direct-plain) [ "$path" = /events ] && echo "http $sse" || echo "http $up" ;;
        direct-tls) [ "$path" = /events ] && echo "https $sses" || echo "https $ups" ;;
        nginx-plain) echo "http $ng" ;;
        nginx-tls) echo "https $ngs" ;;
        gateway-plain) echo "http $gw" ;;
        pingora-plain) echo "http $pp" ;;
        gateway-tls) echo "https $gws" ;;
        mitmproxy-plain | mitmproxy-tls) echo "$([ "$tr" = tls ] && echo https || echo http) $mp" ;;
    esac
}

results=$work/results
: >"$results"

# One wrk cell: appends a result line. Args: workload transport variant round kind conns secs.
wrk_cell() {
    local w=$1 tr=$2 v=$3 r=$4 kind=$5 conns=$6 secs=$7 path body="" scheme port out
    case $w in
        small) path=/small ;;
        upload) path=/upload body=$work/upload.bin ;;
        download) path=/download ;;
    esac
    read -r scheme port < <(addr "$v" "$tr" "$path")
    local watched=() c0=0 c1=0
    if [ "$v" != direct ]; then
        read -r -a watched < <(proc_pids "$v")
        reset_peak "${watched[@]}"
        c0=$(cpu_ticks "${watched[@]}")
    fi
    out=$(BODY_FILE=$body taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" --timeout 60s \
        -s "$here/wrk.lua" "$scheme://127.0.0.1:$port$path" | grep '^RESULT' || true)
    local rss=0
    if [ "$v" != direct ]; then
        c1=$(cpu_ticks "${watched[@]}")
        rss=$(peak_kib "${watched[@]}")
    fi
    echo "cell=$w-$tr variant=$v round=$r kind=$kind body_bytes=$([ -n "$body" ] && stat -c %s "$body" || echo 0) cpu_ticks=$((c1 - c0)) hz=$hz rss_kib=$rss ${out#RESULT }" >>"$results"
    log "$w-$tr $kind $v round $r: ${out#RESULT }"
}

sse_cell() {
    local tr=$1 v=$2 r=$3 scheme port out flag=()
    read -r scheme port < <(addr "$v" "$tr" /events)
    [ "$scheme" = https ] && flag=(--tls)
    out=$(taskset -c "$LOAD_CPU" python3 "$here/helpers.py" sse 127.0.0.1 "$port" bench.test "${flag[@]}")
    echo "cell=sse-$tr variant=$v round=$r kind=sse $out" >>"$results"
    log "sse-$tr $v round $r: $out"
}

idle_cell() {
    local tr=$1 v=$2 r=$3 scheme port out flag=() watched
    read -r scheme port < <(addr "$v" "$tr" /small)
    [ "$scheme" = https ] && flag=(--tls)
    watched=$(proc_pids "$v" | tr ' ' ',')
    out=$(taskset -c "$LOAD_CPU" python3 "$here/helpers.py" idle 127.0.0.1 "$port" bench.test \
        "$IDLE_CONNS" "$watched" "${flag[@]}")
    echo "cell=idle-$tr variant=$v round=$r kind=idle $out" >>"$results"
    log "idle-$tr $v round $r: $out"
}

# Rotates a list by n: the variants' order changes every round.
rotate() { local n=$1; shift; local a=("$@"); local k=$((n % ${#a[@]})); echo "${a[@]:k}" "${a[@]:0:k}"; }

# Each proxy must really scrub: count real secrets left in one 10 MB download through it.
scrub="(of $(grep -c "$BENCH_REAL" "$work/download.txt") sent by the upstream)"
for v in nginx gateway mitmproxy; do
    read -r scheme port < <(addr "$v" plain /download)
    n=$(curl -sS -H "Host: bench.test" -H "Authorization: Bearer $DUMMY" \
        "$scheme://127.0.0.1:$port/download" | grep -c "$BENCH_REAL" || true)
    scrub="$scrub $v=$n"
done

variants=(direct nginx gateway mitmproxy)
proxies=(nginx gateway mitmproxy)
log "warm-up"
small_plain=("${variants[@]}")
[ -n "$pp" ] && small_plain+=(pingora)
for v in "${small_plain[@]}"; do wrk_cell small plain "$v" 0 warmup 4 1 >/dev/null 2>&1; done
: >"$results"
for r in $(seq 1 "$ROUNDS"); do
    read -r -a order < <(rotate "$r" "${variants[@]}")
    read -r -a porder < <(rotate "$r" "${proxies[@]}")
    for tr in plain tls; do
        small=("${order[@]}")
        [ "$tr" = plain ] && read -r -a small < <(rotate "$r" "${small_plain[@]}")
        for v in "${small[@]}"; do wrk_cell small "$tr" "$v" "$r" tput "$CONNS" "$SECS"; done
        for v in "${small[@]}"; do wrk_cell small "$tr" "$v" "$r" lat 1 "$LAT_SECS"; done
        # Idle connections before the 10 MB bodies, whose buffers some proxies keep afterwards.
        for v in "${porder[@]}"; do idle_cell "$tr" "$v" "$r"; done
        for v in "${order[@]}"; do sse_cell "$tr" "$v" "$r"; done
        for w in upload download; do
            # The framework's ceiling for bodies too (plain only, like its small row).
            for v in "${small[@]}"; do wrk_cell "$w" "$tr" "$v" "$r" tput "$BODY_CONNS" "$SECS"; done
        done
    done
done

soak=""
if [ "$SOAK_SECS" -gt 0 ]; then
    log "soak: small requests through the gateway for ${SOAK_SECS}s, memory every 5 s"
    : >"$work/soak"
    python3 "$here/memory.py" header >"$work/soak.csv"
    start=$(date +%s)
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SOAK_SECS}s" --timeout 60s -s "$here/wrk.lua" \
        "http://127.0.0.1:$gw/small" >/dev/null &
    soak_pid=$!
    pids+=("$soak_pid")
    while kill -0 "$soak_pid" 2>/dev/null; do
        t=$(($(date +%s) - start))
        sample="$t $(awk '/^VmRSS/ { print $2 }' "/proc/$gw_pid/status")"
        echo "$sample" >>"$work/soak"
        # smaps_rollup and the allocator's own statistics (`slapenir_allocator_bytes`).
        echo "$t,$(python3 "$here/memory.py" sample "$gw_pid" "$gw_admin")" >>"$work/soak.csv"
        log "soak: second and RSS KiB: $sample"
        sleep 5
    done
    soak=$(py slope "$work/soak")
    # The memory curve and its slopes (whole soak, last 20 minutes), printed after the report.
    python3 "$here/memory.py" report "$work/soak.csv" 1200 >"$work/soak.md"
fi

ceil_memcpy=$(taskset -c "$LOAD_CPU" python3 "$here/helpers.py" memcpy)
ceil_tcp=$(python3 "$here/helpers.py" loopback 3)

{
    printf 'machine\t%s\n' "$(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/^Mem/ { print $2 }') GiB RAM, $(uname -sr)"
    printf 'versions\t%s\n' "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), $(mitmdump --version 2>/dev/null | head -1), $("$BIN" --version 2>/dev/null || echo slapenir), $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }')"
    printf 'run\t%s\n' "$ROUNDS rounds, ${SECS}s per throughput cell (small: $CONNS connections, bodies: $BODY_CONNS), ${LAT_SECS}s per latency cell (1 connection), $IDLE_CONNS idle connections; load average before: $LOADAVG_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'idle\t%s\n' "$IDLE_CONNS"
    printf 'memcpy\t%s\n' "$ceil_memcpy"
    printf 'loopback\t%s\n' "$ceil_tcp"
    printf 'soak\t%s\n' "$soak"
    printf 'scrub\t%s\n' "$scrub"
} >"$work/meta"
py report "$results" "$work/meta" "$SOAK_SECS"
if [ -s "$work/soak.md" ]; then
    printf '\n### The soak: memory every 5 s (smaps_rollup, allocator)\n\n'
    cat "$work/soak.md"
fi
