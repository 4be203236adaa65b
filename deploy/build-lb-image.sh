#!/usr/bin/env bash
# Build a LOCAL load-balancer image equivalent to the public haproxy image
# (same config path, entrypoint semantics and stop signal), for machines that
# cannot pull from a container registry. It debootstraps a minimal Debian root
# from the apt mirror this machine already uses, installs Debian's haproxy
# package into it and imports the trimmed root with `docker import`.
#
#   deploy/build-lb-image.sh            build unless the image already exists
#   deploy/build-lb-image.sh --force    rebuild
#
# Environment:
#   DISPATCHER_LB_LOCAL_IMAGE  tag to build       (default dispatcher-haproxy:local)
#   DEBIAN_SUITE               Debian suite       (default bookworm)
#   DEBIAN_MIRROR              override the mirror read from /etc/apt/sources.list(.d)
#   LB_SECURITY_UPDATES=0      skip applying <suite>-security/-updates (faster)
#
# Needs root, docker and debootstrap (installed with apt-get when missing).
set -euo pipefail

TAG="${DISPATCHER_LB_LOCAL_IMAGE:-dispatcher-haproxy:local}"
SUITE="${DEBIAN_SUITE:-bookworm}"
SECURITY="${LB_SECURITY_UPDATES:-1}"
FORCE=0

log() { printf '[build-lb-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "${1:-}" in
  --force|-f) FORCE=1 ;;
  "") ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) die "unknown argument: $1 (use --force or --help)" ;;
esac

command -v docker >/dev/null || die "docker is not installed"
if [ "$FORCE" = 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  log "$TAG already exists (use --force to rebuild)"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot)"

if ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || die "debootstrap is missing and apt-get is not available"
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null; } ||
    die "could not install debootstrap"
fi

# find_mirror SUITE: first URI of an enabled "deb" source of this machine that
# carries SUITE, in one-line (.list) or deb822 (.sources) format.
find_mirror() {
  local suite="$1" f out=""
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    out+=$(awk -v s="$suite" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == s) { print $i; exit }
      }' "$f")$'\n'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    out+=$(awk -v s="$suite" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (n = 1; n <= NF; n++) {
          line = $n
          if (line ~ /^#/ || line !~ /:/) continue
          key = tolower(substr(line, 1, index(line, ":") - 1))
          val = substr(line, index(line, ":") + 1)
          if (key == "types") types = " " val " "
          else if (key == "uris") uris = val
          else if (key == "suites") suites = " " val " "
          else if (key == "enabled") enabled = val
        }
        gsub(/[ \t]+/, " ", types); gsub(/[ \t]+/, " ", suites)
        if (enabled ~ /no/ || types !~ / deb / || suites !~ (" " s " ")) next
        split(uris, u, " "); for (k in u) if (u[k] != "") { print u[k]; exit }
      }' "$f")$'\n'
  done
  out=$(printf '%s' "$out" | sed '/^$/d')
  printf '%s' "${out%%$'\n'*}"
}

MIRROR="${DEBIAN_MIRROR:-$(find_mirror "$SUITE")}"
if [ -z "$MIRROR" ]; then
  MIRROR="http://deb.debian.org/debian"
  log "warning: no apt source for '$SUITE' on this machine; falling back to $MIRROR (set DEBIAN_MIRROR to override)"
fi
SECURITY_MIRROR="$(find_mirror "$SUITE-security")"
UPDATES_MIRROR="$(find_mirror "$SUITE-updates")"
log "suite $SUITE, mirror $MIRROR${SECURITY_MIRROR:+, security $SECURITY_MIRROR}"

# Honour an apt proxy configured on this machine (debootstrap uses wget).
if [ -z "${http_proxy:-}" ] && command -v apt-config >/dev/null; then
  proxy=$(apt-config shell P Acquire::http::Proxy | sed -n "s/^P='\(.*\)'$/\1/p")
  if [ -n "$proxy" ]; then export http_proxy="$proxy"; fi
fi

WORK=$(mktemp -d /var/tmp/dispatcher-lb.XXXXXX)
ROOT="$WORK/root"
cleanup() {
  local m
  # Unmount anything left mounted inside the root (deepest first), then remove it.
  awk -v r="$ROOT" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
log "debootstrap (minbase + haproxy), first stage"
debootstrap --variant=minbase --foreign --include=haproxy --components=main \
  "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
  { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap first stage failed"; }

# Never let package scripts start services on this machine during the install.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"

log "debootstrap second stage (unpack + configure)"
chroot "$ROOT" /debootstrap/debootstrap --second-stage >"$WORK/debootstrap2.log" 2>&1 ||
  { tail -n 30 "$WORK/debootstrap2.log" >&2; tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    die "debootstrap second stage failed"; }

{
  echo "deb $MIRROR $SUITE main"
  if [ -n "$UPDATES_MIRROR" ]; then echo "deb $UPDATES_MIRROR $SUITE-updates main"; fi
  if [ -n "$SECURITY_MIRROR" ]; then echo "deb $SECURITY_MIRROR $SUITE-security main"; fi
} >"$ROOT/etc/apt/sources.list"

if [ "$SECURITY" != 0 ] && { [ -n "$SECURITY_MIRROR" ] || [ -n "$UPDATES_MIRROR" ]; }; then
  log "applying $SUITE-security/-updates"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  mount -t proc proc "$ROOT/proc"
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    ${http_proxy:+http_proxy="$http_proxy"} \
    sh -c 'apt-get -q -o Acquire::Languages=none update && apt-get -q -y -o Dpkg::Options::=--force-confold upgrade' \
    >"$WORK/upgrade.log" 2>&1 || { tail -n 30 "$WORK/upgrade.log" >&2; die "apt-get upgrade in the chroot failed"; }
  umount "$ROOT/proc"
fi

version=$(chroot "$ROOT" /usr/sbin/haproxy -v) || die "haproxy does not run in the new root"
log "${version%%$'\n'*}"
id_line=$(chroot "$ROOT" /usr/bin/id haproxy) || die "the haproxy package did not create the haproxy user"
log "user: $id_line"

# Same layout as the official image: config in /usr/local/etc/haproxy, a
# docker-entrypoint.sh that adds -W -db, run as user haproxy, SIGUSR1 to stop.
mkdir -p "$ROOT/usr/local/etc/haproxy" "$ROOT/usr/local/bin"
cat >"$ROOT/usr/local/etc/haproxy/haproxy.cfg" <<'EOF'
# Placeholder: mount your own configuration over this file.
global
    log stdout format raw local0
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend stats
    bind :8404
    stats enable
    stats uri /stats
EOF
cat >"$ROOT/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
# first arg is `-f` or `--some-option`
if [ "${1#-}" != "$1" ]; then
    set -- haproxy "$@"
fi
if [ "$1" = 'haproxy' ]; then
    shift # "haproxy"
    # if the user wants "haproxy", let's add a couple useful flags
    #   -W  -- "master-worker mode" (similar to the old "haproxy-systemd-wrapper"; allows for reload via "SIGUSR2")
    #   -db -- disables background mode
    set -- haproxy -W -db "$@"
fi
exec "$@"
EOF
chmod 755 "$ROOT/usr/local/bin/docker-entrypoint.sh"

log "trimming"
rm -f "$ROOT/usr/sbin/policy-rc.d" "$ROOT/etc/resolv.conf" "$ROOT/etc/hostname"
rm -rf "$ROOT/debootstrap" "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* \
  "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/log/* "$ROOT"/tmp/* "$ROOT"/var/tmp/* \
  "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/* \
  "$ROOT"/usr/share/doc-base "$ROOT"/usr/share/lintian "$ROOT"/usr/share/bash-completion
# Keep the copyright files, drop the rest of the documentation.
find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
: >"$ROOT/etc/machine-id" 2>/dev/null || true

log "docker import -> $TAG"
# `docker import --change` cannot set STOPSIGNAL, so import the root under a
# temporary tag and set the image configuration with a registry-free build.
tmp_tag="${TAG%%:*}-rootfs:tmp-$$"
tar --numeric-owner --xattrs -C "$ROOT" -c . | docker import - "$tmp_tag" >/dev/null
docker build -q -t "$TAG" - >"$WORK/build.log" 2>&1 <<DOCKERFILE || { cat "$WORK/build.log" >&2; die "docker build failed"; }
FROM $tmp_tag
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /var/lib/haproxy
USER haproxy
STOPSIGNAL SIGUSR1
LABEL org.opencontainers.image.description="haproxy from Debian $SUITE, built by deploy/build-lb-image.sh"
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
DOCKERFILE
docker rmi "$tmp_tag" >/dev/null

log "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')) in $(( $(date +%s) - start ))s"
