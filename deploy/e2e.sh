#!/usr/bin/env bash
# End-to-end robustness suite (e2e/, build tag e2e): brings the compose
# cluster up with deploy/cluster.sh (DISPATCHER_DEBUG_PORTS=1), runs a
# concurrent workload through the load balancer while killing, pausing,
# partitioning and restarting nodes, checks the history with porcupine and
# every acknowledged submission, and tears the cluster down (down -v).
#
#   deploy/e2e.sh            long mode: every fault once, then 30 random faults
#                            (seed 1); writes deploy/RESULTS.md (about 6 min)
#   deploy/e2e.sh --short    short mode for CI: every fault once (about 2 min);
#                            writes deploy/.build/e2e/results-short.md
#
# Environment: E2E_SEED, E2E_FAULTS, E2E_CLIENTS, E2E_CLEAN=1 (remove an
# existing 'dispatcher' compose project first), plus cluster.sh's variables
# (DISPATCHER_COMPOSE, DISPATCHER_IMAGE, DISPATCHER_LB_IMAGE, ...).
# Needs Go, Docker and docker-compose (or the compose plugin), curl; it
# installs nothing (cluster.sh builds the images, and the haproxy image with
# debootstrap when neither haproxy:2.8 nor dispatcher-haproxy:local exists).
# On failure the compose logs are kept in deploy/.build/e2e/cluster-logs.txt
# and non-linearizable histories as deploy/.build/e2e/violation-*.html.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
cd "$REPO"

GO=go
command -v go >/dev/null || GO=/usr/local/go/bin/go

args=(test -tags e2e ./e2e -run 'TestE2E$' -count=1 -timeout 20m -v)
if [ "${1:-}" = "--short" ] || [ "${E2E_SHORT:-0}" = 1 ]; then
  export E2E_SHORT=1
  export E2E_COMMAND="deploy/e2e.sh --short   # = E2E_SHORT=1 go ${args[*]}"
else
  export E2E_COMMAND="deploy/e2e.sh   # = go ${args[*]}"
fi
mkdir -p "$HERE/.build/e2e"
# Keep the whole verbose output next to the results.
"$GO" "${args[@]}" 2>&1 | tee "$HERE/.build/e2e/last-run.log"
exit "${PIPESTATUS[0]}"
