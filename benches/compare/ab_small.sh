#!/usr/bin/env bash
# The small-request path of two gateway builds, side by side in one run: the same nginx upstream
# (a 50-byte JSON answer), the same config, the same wrk load (the dummy in `Authorization`),
# taking turns round after round; prints requests/s of each and the ratio NEW / BASE per round
# and its median. Used to price a change on the path every request takes (for example against
# the previous commit: build it in a worktree and pass its binary as BASE).
#
#   bash benches/compare/ab_small.sh BASE_BIN NEW_BIN
#
# A binary named `pingora_passthrough` (examples/pingora_passthrough.rs: the framework with
# default settings and no filters) is started as one, forwarding to the same upstream: with it as
# BASE the ratio is the gateway against the framework's own ceiling.
#
# Knobs: ROUNDS (default 7), SECS per cell (default 5), CONNS (default 16), LOAD_CPU and
# PROXY_CPU (default 0 and 1), CREDENTIALS (default 2: credentials bound to the upstream, each
# with its real value in the request rules' refusal set). Needs nginx, wrk, taskset, python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/compare/lib.sh
. "$here/lib.sh"
[ $# -eq 2 ] || { echo "usage: $0 BASE_BIN NEW_BIN" >&2; exit 2; }
base=$1 new=$2
for b in "$base" "$new"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }; done
ROUNDS=${ROUNDS:-7}
SECS=${SECS:-5}
CONNS=${CONNS:-16}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
CREDENTIALS=${CREDENTIALS:-2}
for t in nginx wrk taskset python3; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
    stop_pids "${pids[@]}"
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 3000); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.01
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

up=$(free_port)
mkdir -p "$work/up"
cat >"$work/up/nginx.conf" <<CONF
worker_processes 1;
error_log $work/up/error.log;
pid $work/up/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$up;
        location = /small { default_type application/json; return 200 '{"id":"cmpl-1","ok":true,"usage":{"tokens":12}}'; }
    }
}
CONF
taskset -c "$LOAD_CPU" nginx -p "$work/up" -c "$work/up/nginx.conf" -g 'daemon off;' &
pids+=($!)

# The same config for both: CREDENTIALS credentials on the upstream, the first one the dummy
# the load carries.
config() {
    local port=$1 i
    printf 'listeners:\n  - name: plain\n    address: 127.0.0.1:%s\n' "$port"
    printf 'upstreams:\n  up: { url: "http://127.0.0.1:%s" }\ncredentials:\n' "$up"
    for i in $(seq 1 "$CREDENTIALS"); do
        if [ "$i" = 1 ]; then
            printf '  bench:\n    dummy: sk-dummy-openai\n    real: { env: BENCH_REAL_1 }\n    upstreams: [up]\n'
        else
            printf '  bench%s:\n    dummy: sk-dummy-bench-%04d\n    real: { env: BENCH_REAL_%s }\n    upstreams: [up]\n' "$i" "$i" "$i"
        fi
    done
    printf 'routes:\n  - host: bench.test\n    upstream: up\n'
}
envs=()
for i in $(seq 1 "$CREDENTIALS"); do envs+=("BENCH_REAL_$i=sk-real-$(printf '%04d' "$i")-0123456789abcdefABCDEF01234"); done

declare -A port
for v in base new; do
    port[$v]=$(free_port)
    config "${port[$v]}" >"$work/$v.yaml"
    bin=$base
    [ "$v" = new ] && bin=$new
    if [ "$(basename "$bin")" = pingora_passthrough ]; then
        RUST_LOG=error taskset -c "$PROXY_CPU" "$bin" "127.0.0.1:${port[$v]}" "127.0.0.1:$up" \
            >/dev/null 2>"$work/$v.err" &
    else
        env "${envs[@]}" RUST_LOG=error taskset -c "$PROXY_CPU" "$bin" run --config "$work/$v.yaml" \
            >/dev/null 2>"$work/$v.err" &
    fi
    pids+=($!)
done
for p in "$up" "${port[base]}" "${port[new]}"; do wait_port "$p"; done

cell() {
    local out
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${1}s" --timeout 10s -s "$here/wrk.lua" \
        "http://127.0.0.1:${port[$2]}/small" 2>/dev/null | grep '^RESULT')
    python3 - "$out" <<'PY'
import sys
f = dict(kv.split("=") for kv in sys.argv[1].split()[1:])
if int(f["errors"]) or int(f["non2xx"]):
    sys.exit(f"errors in the cell: {sys.argv[1]}")
print(int(f["requests"]) / (int(f["duration_us"]) / 1e6))
PY
}

for v in base new; do cell 1 "$v" >/dev/null; done   # warm-up
printf '| round | base req/s | new req/s | new / base |\n|---|---|---|---|\n'
ratios=()
for r in $(seq 1 "$ROUNDS"); do
    # Alternate who goes first.
    if [ $((r % 2)) = 1 ]; then b=$(cell "$SECS" base); n=$(cell "$SECS" new)
    else n=$(cell "$SECS" new); b=$(cell "$SECS" base); fi
    ratio=$(python3 -c "print(f'{$n / $b:.3f}')")
    ratios+=("$ratio")
    printf '| %s | %.0f | %.0f | %s |\n' "$r" "$b" "$n" "$ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
printf '\nmedian new / base: %s (%s rounds of %ss, %s connections, %s credentials)\n' \
    "$median" "$ROUNDS" "$SECS" "$CONNS" "$CREDENTIALS"
