#!/bin/sh
# The sandbox's tooling checks (Phase 3 of the plan), for the image build or by hand:
#
#   docker run --rm --entrypoint /usr/local/bin/verify.sh slapenir/agent:local
#
#   1. gcc compiles a C program and the program runs (build-base works);
#   2. `pip install torch` works and `import torch` runs a tensor operation: the manylinux
#      wheels need glibc, which is why the sandbox is Wolfi and not a musl distribution.
#
# Step 2 installs torch from PyPI (several hundred MB; VERIFY_TORCH_INDEX picks another index,
# e.g. https://download.pytorch.org/whl/cpu for the CPU-only wheel) into a throwaway directory;
# set VERIFY_SKIP_TORCH=1 to run only step 1 (the image build does). Inside the compose stack
# PyPI is reachable only through the gateway (HTTPS_PROXY), so run the full check where the
# container has a network of its own, as above. Exits non-zero at the first failed check.
set -eu

python=${VERIFY_PYTHON:-python3}

# The image points SSL_CERT_FILE, REQUESTS_CA_BUNDLE and PIP_CERT at the bundle init-certs
# writes when the stack starts (system roots + the deployment's root). Run on its own
# (`docker run --entrypoint verify.sh`, or during the image build) that file does not exist
# and pip would fail on it, so a variable naming a missing file is replaced by the system roots.
system_bundle=${VERIFY_SYSTEM_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
for var in SSL_CERT_FILE REQUESTS_CA_BUNDLE PIP_CERT; do
    eval "value=\${$var:-}"
    if [ -n "$value" ] && [ ! -s "$value" ]; then
        echo "verify: $var=$value does not exist (written when the stack starts): using $system_bundle"
        eval "$var=\$system_bundle"
        export "${var?}"
    fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "verify: gcc compile-and-run"
cat >"$work/hello.c" <<'C'
#include <stdio.h>
int main(void) {
    long sum = 0;
    for (int i = 1; i <= 100; i++) sum += i;
    printf("%ld\n", sum);
    return sum == 5050 ? 0 : 1;
}
C
gcc -O2 -o "$work/hello" "$work/hello.c"
out=$("$work/hello")
[ "$out" = 5050 ] || { echo "verify: FAILED: compiled program printed '$out', expected 5050" >&2; exit 1; }
echo "verify: gcc OK"

if [ "${VERIFY_SKIP_TORCH:-0}" = 1 ]; then
    echo "verify: torch check skipped (VERIFY_SKIP_TORCH=1)"
    exit 0
fi
echo "verify: pip install torch and import it"
set -- --quiet --no-cache-dir --target "$work/site"
if [ -n "${VERIFY_TORCH_INDEX:-}" ]; then
    set -- "$@" --index-url "$VERIFY_TORCH_INDEX"
fi
"$python" -m pip install "$@" torch
PYTHONPATH="$work/site" "$python" -c '
import platform, torch
x = torch.arange(4.0)
assert float((x * x).sum()) == 14.0, "tensor arithmetic is wrong"
print("verify: torch", torch.__version__, "on glibc", platform.libc_ver()[1], "OK")
'
