#!/bin/sh
# step-ca for SLAPENIR: initialises the CA on first start (no prompt, no ACME), issues what the
# gateway and the agents need, then serves. Runs as the container's PID 1 (compose.yaml,
# service `step-ca`); every step is logged, no secret value ever is.
#
# First start (no $STEPPATH/config/ca.json):
#   step ca init: root + intermediate (ECDSA P-256), keys encrypted with the `ca_password`
#   secret, one JWK provisioner (PROVISIONER, default `agents`) whose key is encrypted with
#   the `provisioner_password` secret; no ACME provisioner.
#   Certificate lifetimes of that provisioner: LEAF_LIFETIME (default 24h, step-ca's own
#   default), at most LEAF_MAX_LIFETIME (default 168h), at least 5m.
# Every start:
#   - the CA is started and awaited (`step ca health`);
#   - $STEPPATH/slapenir-ready is removed, and written again once all of the below is done
#     (compose's health check waits for it, so the gateway starts with its certificate);
#   - gateway certificate (`proxy`, SANs proxy, gateway, localhost) into $GATEWAY_CERTS_DIR,
#     issued by the CA if missing or within a third of its life of expiry, then kept fresh by
#     `step ca renew --daemon` in the background; the gateway re-reads the files on change;
#   - the interception CA (serverAuth only, pathlen 0, signed by the root; template
#     intercept_ca.tpl), INTERCEPT_LIFETIME (default 8760h), issued if missing or expiring
#     within 30 days;
#   - the root and its fingerprint into $ENROLL_DIR, and one enrollment token per name in
#     AGENT_NAMES (comma-separated), valid ENROLL_TOKEN_LIFETIME (default 1h), single use,
#     for the agents' init-certs. An agent that enrolls later than that needs a restart of
#     step-ca (a new token) or a token minted by hand (docs/deploy.md). Tokens from an earlier
#     start are removed before the CA starts, so an agent never reads a used one.
#
# File modes: `step ca init` and `step ca certificate` write every file 0600 root:root, and a
# plain `cp` keeps that. The gateway runs as GATEWAY_UID (10001), so everything it reads is
# installed with an explicit owner and mode, on every start (which also repairs a volume
# written by an older version of this script):
#   $GATEWAY_CERTS_DIR  gateway.crt, intercept_ca.crt, root_ca.crt 0644; gateway.key,
#                       intercept_ca.key 0600; all owned by GATEWAY_UID
#   $ENROLL_DIR         root_ca.crt, root_ca.fingerprint 0644; NAME.token 0600 root
set -eu

STEPPATH=${STEPPATH:-/home/step}
export STEPPATH
SECRETS_DIR=${SECRETS_DIR:-/run/secrets}
GATEWAY_CERTS_DIR=${GATEWAY_CERTS_DIR:-/gateway-certs}
ENROLL_DIR=${ENROLL_DIR:-/enroll}
CA_NAME=${CA_NAME:-SLAPENIR}
CA_DNS_NAMES=${CA_DNS_NAMES:-step-ca,ca,localhost}
PROVISIONER=${PROVISIONER:-agents}
LEAF_LIFETIME=${LEAF_LIFETIME:-24h}
LEAF_MAX_LIFETIME=${LEAF_MAX_LIFETIME:-168h}
INTERCEPT_LIFETIME=${INTERCEPT_LIFETIME:-8760h}
ENROLL_TOKEN_LIFETIME=${ENROLL_TOKEN_LIFETIME:-1h}
AGENT_NAMES=${AGENT_NAMES:-agent-1}
GATEWAY_UID=${GATEWAY_UID:-10001}
TEMPLATES=$(dirname "$0")

ready_marker=$STEPPATH/slapenir-ready
ca_password=$SECRETS_DIR/ca_password
provisioner_password=$SECRETS_DIR/provisioner_password
ca_url=https://localhost:9000
root=$STEPPATH/certs/root_ca.crt

log() { printf 'step-ca entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for f in "$ca_password" "$provisioner_password"; do
    [ -s "$f" ] || die "secret $f is missing or empty (docs/deploy.md, step 1)"
done

# A JWK provisioner's one-time token may be valid for at most one hour: step-ca refuses a
# longer one when it is used ("token expiration ... exceeds maximum"), so a longer setting
# would only fail later, in every agent. Accept NUMBER followed by s, m or h, up to 1h.
token_seconds() {
    case $1 in
        *[!0-9smh]* | [smh]* | *[0-9]) return 1 ;;
    esac
    number=${1%?}
    case $number in '' | *[!0-9]*) return 1 ;; esac
    case $1 in
        *s) echo "$number" ;;
        *m) echo $((number * 60)) ;;
        *h) echo $((number * 3600)) ;;
    esac
}
seconds=$(token_seconds "$ENROLL_TOKEN_LIFETIME") \
    || die "ENROLL_TOKEN_LIFETIME=$ENROLL_TOKEN_LIFETIME: expected a number followed by s, m or h"
if [ "$seconds" -lt 60 ] || [ "$seconds" -gt 3600 ]; then
    die "ENROLL_TOKEN_LIFETIME=$ENROLL_TOKEN_LIFETIME: must be between 1m and 1h (step's limit for one-time tokens)"
fi

# The health check (compose.yaml) passes only once everything below has been issued, and the
# agents' init-certs wait for their token: neither may see what an earlier start left.
rm -f "$ready_marker"
mkdir -p "$ENROLL_DIR"
rm -f "$ENROLL_DIR"/*.token "$ENROLL_DIR"/*.token.tmp

if [ ! -f "$STEPPATH/config/ca.json" ]; then
    log "first start: creating the root and intermediate CA '$CA_NAME' for $CA_DNS_NAMES"
    step ca init --deployment-type standalone --name "$CA_NAME" \
        --dns "$CA_DNS_NAMES" --address :9000 \
        --provisioner "$PROVISIONER" \
        --password-file "$ca_password" \
        --provisioner-password-file "$provisioner_password"
    log "provisioner '$PROVISIONER': certificates last $LEAF_LIFETIME by default, $LEAF_MAX_LIFETIME at most"
    step ca provisioner update "$PROVISIONER" \
        --x509-min-dur 5m --x509-default-dur "$LEAF_LIFETIME" --x509-max-dur "$LEAF_MAX_LIFETIME"
fi

log "starting step-ca"
step-ca --password-file "$ca_password" "$STEPPATH/config/ca.json" &
ca_pid=$!
renew_pid=
# shellcheck disable=SC2317 # called by the trap below
stop() {
    log "stopping"
    if [ -n "$renew_pid" ]; then kill -TERM "$renew_pid" 2>/dev/null || true; fi
    kill -TERM "$ca_pid" 2>/dev/null || true
}
trap stop TERM INT

tries=0
until step ca health --ca-url "$ca_url" --root "$root" >/dev/null 2>&1; do
    kill -0 "$ca_pid" 2>/dev/null || die "step-ca exited during start-up"
    tries=$((tries + 1))
    [ "$tries" -le 60 ] || die "step-ca not healthy after 60 s"
    sleep 1
done
log "step-ca is up"

mkdir -p "$GATEWAY_CERTS_DIR"
chmod 0755 "$GATEWAY_CERTS_DIR" "$ENROLL_DIR"

# The gateway's server certificate, issued through the CA (so `step ca renew` accepts it).
gw_crt=$GATEWAY_CERTS_DIR/gateway.crt
gw_key=$GATEWAY_CERTS_DIR/gateway.key
if [ ! -s "$gw_crt" ] || step certificate needs-renewal "$gw_crt" >/dev/null 2>&1; then
    log "issuing the gateway certificate"
    step ca certificate proxy "$gw_crt" "$gw_key" \
        --san proxy --san gateway --san localhost \
        --provisioner "$PROVISIONER" --provisioner-password-file "$provisioner_password" \
        --ca-url "$ca_url" --root "$root" --force
fi
install -m 0644 -o "$GATEWAY_UID" -g "$GATEWAY_UID" "$root" "$GATEWAY_CERTS_DIR/root_ca.crt"

# The interception CA: a second CA under the root that can only issue server certificates.
ic_crt=$GATEWAY_CERTS_DIR/intercept_ca.crt
ic_key=$GATEWAY_CERTS_DIR/intercept_ca.key
if [ ! -s "$ic_crt" ] || step certificate needs-renewal "$ic_crt" --expires-in 720h >/dev/null 2>&1; then
    log "issuing the interception CA ($INTERCEPT_LIFETIME)"
    # The template alone makes the CA: `step certificate create` refuses --profile together
    # with --template ("flag '--profile' is incompatible with '--template'", since step 0.15).
    step certificate create "$CA_NAME Interception CA" "$ic_crt" "$ic_key.sec1" \
        --template "$TEMPLATES/intercept_ca.tpl" \
        --ca "$root" --ca-key "$STEPPATH/secrets/root_ca_key" \
        --ca-password-file "$ca_password" \
        --not-after "$INTERCEPT_LIFETIME" --no-password --insecure --force
    # The gateway reads PKCS#8, the form `slapenir pki init` writes.
    step crypto key format "$ic_key.sec1" --pkcs8 --pem --no-password --insecure \
        --out "$ic_key" --force
    rm -f "$ic_key.sec1"
fi
chown "$GATEWAY_UID:$GATEWAY_UID" "$gw_crt" "$gw_key" "$ic_crt" "$ic_key"
chmod 0644 "$gw_crt" "$ic_crt"
chmod 0600 "$gw_key" "$ic_key"

# What an agent needs to enroll: the root's fingerprint and a single-use token per name.
step certificate fingerprint "$root" >"$ENROLL_DIR/root_ca.fingerprint.tmp"
chmod 0644 "$ENROLL_DIR/root_ca.fingerprint.tmp"
mv "$ENROLL_DIR/root_ca.fingerprint.tmp" "$ENROLL_DIR/root_ca.fingerprint"
install -m 0644 "$root" "$ENROLL_DIR/root_ca.crt"
old_ifs=$IFS
IFS=,
for name in $AGENT_NAMES; do
    IFS=$old_ifs
    log "minting an enrollment token for $name (valid $ENROLL_TOKEN_LIFETIME)"
    step ca token "$name" --san "$name" --san "spiffe://slapenir/agent/$name" \
        --provisioner "$PROVISIONER" --provisioner-password-file "$provisioner_password" \
        --not-after "$ENROLL_TOKEN_LIFETIME" --ca-url "$ca_url" --root "$root" \
        >"$ENROLL_DIR/$name.token.tmp"
    chmod 0600 "$ENROLL_DIR/$name.token.tmp"
    mv "$ENROLL_DIR/$name.token.tmp" "$ENROLL_DIR/$name.token"
done
IFS=$old_ifs
touch "$ready_marker"
log "ready: gateway certificate, interception CA and enrollment tokens issued"

# Keep the gateway certificate fresh: renewed at two thirds of its life, files rewritten in
# place, which the gateway notices within two seconds.
step ca renew --daemon --ca-url "$ca_url" --root "$root" \
    --exec "chown $GATEWAY_UID:$GATEWAY_UID $gw_crt $gw_key" "$gw_crt" "$gw_key" &
renew_pid=$!

# PID 1 stays until step-ca exits; a TERM interrupts `wait`, so wait again until it has.
status=0
while kill -0 "$ca_pid" 2>/dev/null; do
    wait "$ca_pid" || status=$?
done
exit "$status"
