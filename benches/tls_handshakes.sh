#!/usr/bin/env bash
# Full TLS 1.3 handshakes per second with ECDSA P-256 and a required client certificate:
# the gateway's agent listener next to nginx (`ssl_verify_client on`) with the same server
# certificate, client CA and client certificate, in one run. Servers are pinned to CPU 1 and
# the client (`openssl s_time -new`, one connection at a time, no session reuse) to CPU 0;
# rounds alternate between the two servers; the median of each is printed with the ratio.
#
#   cargo build --release && bash benches/tls_handshakes.sh      # ROUNDS=5 SECS=10 to taste
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
BIN=${SLAPENIR_BIN:-target/release/slapenir}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is needed (apt-get install nginx-light)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 500); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.01
    done
    echo "nothing listens on $1" >&2
    exit 1
}

"$BIN" pki init --dir "$work/certs" >/dev/null
c="$work/certs"
# s_time sends only the leaf of its -cert file, so both servers trust root and intermediate.
cat "$c/root_ca.crt" "$c/intermediate_ca.crt" >"$c/client_ca_bundle.crt"

gw_port=$(free_port)
cat >"$work/gw.yaml" <<YAML
listeners:
  - name: agents
    address: 127.0.0.1:$gw_port
    tls: { cert: $c/gateway.crt, key: $c/gateway.key, client_ca: $c/client_ca_bundle.crt }
upstreams:
  none:
    url: http://127.0.0.1:9
YAML
RUST_LOG=error taskset -c 1 "$BIN" run --config "$work/gw.yaml" >/dev/null 2>&1 &
pids+=($!)

ng_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$ng_port ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate $c/gateway.crt;
        ssl_certificate_key $c/gateway.key;
        ssl_client_certificate $c/client_ca_bundle.crt;
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_session_tickets off;
        ssl_session_cache off;
        location / { return 200 "ok\n"; }
    }
}
CONF
taskset -c 1 nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_port "$gw_port"
wait_port "$ng_port"

rate() {
    local out
    out=$(taskset -c 0 openssl s_time -connect "127.0.0.1:$1" -new -tls1_3 -time "$SECS" \
        -cert "$c/agent-1.crt" -key "$c/agent-1.key" -CAfile "$c/root_ca.crt" 2>/dev/null)
    # "N connections in T real seconds"
    echo "$out" | awk '/connections in .* real seconds/ { printf "%.1f\n", $1 / $4 }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

gw_rates=()
ng_rates=()
for r in $(seq 1 "$ROUNDS"); do
    gw_rates+=("$(rate "$gw_port")")
    ng_rates+=("$(rate "$ng_port")")
    echo "round $r: gateway ${gw_rates[-1]}/s, nginx ${ng_rates[-1]}/s" >&2
done
gw=$(printf '%s\n' "${gw_rates[@]}" | median)
ng=$(printf '%s\n' "${ng_rates[@]}" | median)
echo
echo "| server | full TLS 1.3 handshakes/s (mTLS, P-256), median of $ROUNDS x ${SECS}s | ratio to nginx |"
echo "|---|---|---|"
echo "| nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') (1 worker, CPU 1) | $ng | 1.00 |"
echo "| slapenir (CPU 1) | $gw | $(awk -v a="$gw" -v b="$ng" 'BEGIN { printf "%.2f", a / b }') |"
