# Shell functions shared by the scripts of benches/compare (sourced, not run).
# shellcheck shell=bash

# Stops the processes whose PIDs are given: SIGTERM, then SIGKILL for any still up after 3 s
# (the Pingora passthrough answers SIGTERM with a graceful shutdown that waits out its grace
# period, 5 minutes), then waits for them.
stop_pids() {
    local p alive
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 30); do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
