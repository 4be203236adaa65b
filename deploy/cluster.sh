#!/usr/bin/env bash
# Local dispatcher cluster (docker-compose.yml at the top of the repository).
#
#   deploy/cluster.sh up            build what is missing, start, wait until ready
#   deploy/cluster.sh down          remove containers, network and volumes
#   deploy/cluster.sh status        containers, /v1/cluster/members, /v1/cluster/leader
#   deploy/cluster.sh kill-leader   docker kill the leader's container, wait for a new one
#   deploy/cluster.sh start [service...]   start stopped containers again (no rebuild)
#   deploy/cluster.sh logs [-f] [service...]
#   deploy/cluster.sh build         only build the binary and the images
#
# Environment:
#   DISPATCHER_NODES=3|5        5 adds deploy/docker-compose.5nodes.yml       (default 3)
#   DISPATCHER_DEBUG_PORTS=1    publish node1..3 on 127.0.0.1:18081..18083
#   DISPATCHER_IMAGE            use this dispatcher image as is; when unset the
#                               binary is built on the host (CGO_ENABLED=0) into
#                               deploy/.build/ and packaged as dispatcher:dev
#                               with deploy/Dockerfile.prebuilt
#   DISPATCHER_BINARY           package this static binary instead of running go build
#   DISPATCHER_LB_IMAGE         load balancer image; when unset: haproxy:2.8 if
#                               present locally, else dispatcher-haproxy:local
#                               (built by deploy/build-lb-image.sh if missing)
#   DISPATCHER_AUTH_TOKEN       API token (default dev-token)
#   DISPATCHER_WAIT             seconds to wait for readiness (default 90)
#   DISPATCHER_PROJECT          compose project name (default dispatcher)
#   DISPATCHER_COMPOSE          compose command, e.g. "docker-compose" (default:
#                               "docker compose" if available, else docker-compose)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
BUILD="$HERE/.build"
PROJECT="${DISPATCHER_PROJECT:-dispatcher}"
NODES="${DISPATCHER_NODES:-3}"
WAIT="${DISPATCHER_WAIT:-90}"
TOKEN="${DISPATCHER_AUTH_TOKEN:-dev-token}"
API="http://127.0.0.1:8081"
LB_PUBLIC_IMAGE="haproxy:2.8"
LB_LOCAL_IMAGE="${DISPATCHER_LB_LOCAL_IMAGE:-dispatcher-haproxy:local}"
DEFAULT_IMAGE="dispatcher:dev"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- compose ---

COMPOSE=()
find_compose() {
  if [ -n "${DISPATCHER_COMPOSE:-}" ]; then
    read -r -a COMPOSE <<<"$DISPATCHER_COMPOSE"
  elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
  else
    die "neither 'docker compose' nor 'docker-compose' is installed (apt-get install docker-compose)"
  fi
}

# compose_files up|any: the compose files for `up`, or for commands that must
# see every service that may exist (down, logs, ps).
compose_files() {
  FILES=(-f "$REPO/docker-compose.yml")
  case "$NODES" in
    3) if [ "$1" = any ]; then FILES+=(-f "$HERE/docker-compose.5nodes.yml"); fi ;;
    5) FILES+=(-f "$HERE/docker-compose.5nodes.yml") ;;
    *) die "DISPATCHER_NODES must be 3 or 5" ;;
  esac
  if [ "${DISPATCHER_DEBUG_PORTS:-0}" = 1 ]; then FILES+=(-f "$HERE/docker-compose.debug.yml"); fi
}

compose() {
  "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$REPO" "${FILES[@]}" "$@"
}

# ------------------------------------------------------------------- http ---

need_curl() {
  command -v curl >/dev/null || die "curl is required (apt-get install curl)"
}

# api PATH: GET through the load balancer with the token; body on stdout,
# fails on connection errors and HTTP status >= 400.
api() {
  curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "$API$1"
}

pretty() {
  if command -v jq >/dev/null; then jq .
  elif command -v python3 >/dev/null; then python3 -m json.tool
  else cat; echo
  fi
}

leader_id() {
  api /v1/cluster/leader 2>/dev/null | sed -n 's/.*"id"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p'
}

# ------------------------------------------------------------------ build ---

go_cmd() {
  if command -v go >/dev/null; then echo go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else return 1
  fi
}

build_dispatcher_image() {
  local go ctx="$BUILD/ctx" start
  if [ -n "${DISPATCHER_IMAGE:-}" ]; then
    docker image inspect "$DISPATCHER_IMAGE" >/dev/null 2>&1 ||
      log "warning: $DISPATCHER_IMAGE is not present locally; compose will try to pull it"
    return 0
  fi
  export DISPATCHER_IMAGE="$DEFAULT_IMAGE"
  if [ -z "${DISPATCHER_BINARY:-}" ] && ! go=$(go_cmd); then
    docker image inspect "$DISPATCHER_IMAGE" >/dev/null 2>&1 ||
      die "Go is not installed and $DISPATCHER_IMAGE does not exist"
    log "Go not found: using the existing $DISPATCHER_IMAGE"
    return 0
  fi
  start=$(date +%s)
  mkdir -p "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/empty"
  chmod 1777 "$ctx/rootfs/tmp"
  chmod 755 "$ctx/empty"
  printf 'root:x:0:0:root:/root:/sbin/nologin\ndispatcher:x:65532:65532:dispatcher:/data:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\ndispatcher:x:65532:\n' >"$ctx/rootfs/etc/group"
  if [ -n "${DISPATCHER_BINARY:-}" ]; then
    log "using binary $DISPATCHER_BINARY"
    cp "$DISPATCHER_BINARY" "$ctx/dispatcher"
  else
    log "go build ./cmd/dispatcher -> deploy/.build/ctx/dispatcher"
    (cd "$REPO" && CGO_ENABLED=0 GOOS=linux "$go" build -trimpath -ldflags='-s -w' -o "$ctx/dispatcher" ./cmd/dispatcher) ||
      die "go build ./cmd/dispatcher failed"
  fi
  log "docker build -f deploy/Dockerfile.prebuilt -> $DISPATCHER_IMAGE"
  docker build -q -f "$HERE/Dockerfile.prebuilt" -t "$DISPATCHER_IMAGE" "$ctx" >"$BUILD/docker-build.log" 2>&1 ||
    { cat "$BUILD/docker-build.log" >&2; die "docker build failed"; }
  log "dispatcher image ready in $(( $(date +%s) - start ))s"
}

choose_lb_image() {
  if [ -n "${DISPATCHER_LB_IMAGE:-}" ]; then
    docker image inspect "$DISPATCHER_LB_IMAGE" >/dev/null 2>&1 ||
      log "warning: $DISPATCHER_LB_IMAGE is not present locally; compose will try to pull it"
  elif docker image inspect "$LB_PUBLIC_IMAGE" >/dev/null 2>&1; then
    export DISPATCHER_LB_IMAGE="$LB_PUBLIC_IMAGE"
  else
    DISPATCHER_LB_LOCAL_IMAGE="$LB_LOCAL_IMAGE" "$HERE/build-lb-image.sh"
    export DISPATCHER_LB_IMAGE="$LB_LOCAL_IMAGE"
  fi
  log "load balancer image: $DISPATCHER_LB_IMAGE"
}

# --------------------------------------------------------------- commands ---

wait_ready() {
  local deadline=$(( $(date +%s) + WAIT )) code
  log "waiting up to ${WAIT}s for $API/v1/health/ready"
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
      -H "Authorization: Bearer $TOKEN" "$API/v1/health/ready" 2>/dev/null) || true
    if [ "$code" = 200 ]; then return 0; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "not ready after ${WAIT}s (last HTTP status: ${code:-none})"
      compose ps >&2 || true
      compose logs --tail=30 >&2 || true
      return 1
    fi
    sleep 1
  done
}

cmd_up() {
  local start
  start=$(date +%s)
  need_curl
  build_dispatcher_image
  choose_lb_image
  compose_files up
  log "starting $NODES nodes + lb (project $PROJECT, ${COMPOSE[*]})"
  compose up -d
  wait_ready
  log "ready in $(( $(date +%s) - start ))s: $API (token: Authorization: Bearer ...), stats http://127.0.0.1:8404/stats"
  local id
  id=$(leader_id) || true
  log "leader: ${id:-unknown}"
}

cmd_down() {
  compose_files any
  compose down -v --remove-orphans
}

cmd_status() {
  need_curl
  compose_files any
  compose ps
  echo "--- GET /v1/cluster/members"
  api /v1/cluster/members | pretty || log "members: request failed"
  echo "--- GET /v1/cluster/leader"
  api /v1/cluster/leader | pretty || log "leader: request failed"
}

cmd_kill_leader() {
  local id cid start deadline new=""
  need_curl
  compose_files any
  id=$(leader_id)
  [ -n "$id" ] || die "no leader reported by $API/v1/cluster/leader"
  cid=$(compose ps -q "$id" 2>/dev/null) || true
  [ -n "$cid" ] || die "leader '$id' is not a service of project $PROJECT"
  log "killing leader $id (container ${cid:0:12})"
  docker kill "$cid" >/dev/null
  start=$(date +%s)
  deadline=$(( start + WAIT ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    new=$(leader_id) || true
    if [ -n "$new" ] && [ "$new" != "$id" ]; then
      log "new leader: $new after $(( $(date +%s) - start ))s ('deploy/cluster.sh start $id' brings it back)"
      return 0
    fi
    sleep 0.5
  done
  die "no new leader within ${WAIT}s"
}

cmd_logs() {
  compose_files any
  compose logs "$@"
}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    up|down|status|kill-leader|logs|ps|start) find_compose ;;
  esac
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    kill-leader) cmd_kill_leader ;;
    logs) cmd_logs "$@" ;;
    ps) compose_files any; compose ps ;;
    start) compose_files any; compose start "$@" ;;
    build) build_dispatcher_image; choose_lb_image ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
