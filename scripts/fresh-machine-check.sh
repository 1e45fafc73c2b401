#!/usr/bin/env bash
# fresh-machine-check.sh runs the README's commands on a bare machine made
# for the purpose: a clean Debian bookworm root (debootstrap, minbase) with
# only what the bare machines here start with (gcc, make, git, PostgreSQL
# 15 installed but not running; Go 1.26 and Node.js/npm copied from this
# machine), this machine's package-registry settings and certificate
# bundle (read at run time, never stored in the project), and a fresh
# clone of the repository's HEAD. Inside it, as root, it runs `make demo`
# and fails unless the demo reaches its summary; with --ci it runs
# `CI=true bash .ci/run` instead (every test).
#
#   scripts/fresh-machine-check.sh [--ci] [--keep] [--work DIR]
#
#   --ci        run .ci/run (make test) instead of make demo
#   --keep      keep the root afterwards (default: removed)
#   --work DIR  where the root goes (default: a new directory in $TMPDIR)
#
# The pristine debootstrap output is cached as a tarball in
# .cache/roots/ (scripts/debian-root.sh fresh: keyed by its package list,
# mirror, suite and machine) and unpacked anew for each run, so every run
# starts from the same clean root. The check prints how long each phase
# took and which packages the project's setup installed into the root.
# Needs root (debootstrap, chroot, mounts) and debootstrap (make setup
# installs it). Exit status: 0 passed, 1 failed, 2 usage.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mode=demo keep=0 work=
while [ $# -gt 0 ]; do
  case "$1" in
    --ci) mode=ci ;;
    --keep) keep=1 ;;
    --work) work=${2:?--work needs a directory}; shift ;;
    *) echo "usage: scripts/fresh-machine-check.sh [--ci] [--keep] [--work DIR]" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '%s fresh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot and mounts need it)"
command -v debootstrap >/dev/null || die "debootstrap not found: run 'make setup' first"
goroot=$(go env GOROOT 2>/dev/null) || die "go not found"
node=$(command -v node) || die "node not found"
npm=$(command -v npm) || die "npm not found"
[ -f /etc/ssl/certs/ca-certificates.crt ] || die "no certificate bundle at /etc/ssl/certs/ca-certificates.crt"

t0=$(date +%s)
phase_start=$t0
phases=()
phase() {
  local now
  now=$(date +%s)
  phases+=("$1: $((now - phase_start)) s")
  phase_start=$now
}

# The clean root: what the bare machines have besides Go and Node.js (the
# developers' guide): gcc, make, git, PostgreSQL 15 installed but not
# running; and Debian's certificate store, which this machine's bundle then
# replaces. scripts/debian-root.sh makes it once (debootstrap minbase) and
# caches it in .cache/roots/, shared with the other checks that start from
# a bare Debian root.
base=$("$root/scripts/debian-root.sh" fresh) || die "no clean root (scripts/debian-root.sh fresh)"
phase "clean root (debootstrap, cached as $(basename "$base"))"

[ -n "$work" ] || work=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-fresh.XXXXXX")
mkdir -p "$work"
chroot_dir="$work/root"
[ ! -e "$chroot_dir" ] || die "$chroot_dir exists; give another --work"
mkdir "$chroot_dir"

# cleanup kills whatever still runs inside the root, unmounts it and,
# unless --keep, removes it.
cleanup() {
  local status=$?
  local pids=() p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$chroot_dir" ] && pids+=("${p#/proc/}")
  done
  if [ ${#pids[@]} -gt 0 ]; then
    log "stopping ${#pids[@]} process(es) left in the root: ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 1
  fi
  # Deepest mounts first.
  awk -v r="$chroot_dir" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [ "$keep" = 1 ]; then
    log "kept $chroot_dir"
  else
    rm -rf "$work"
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tar -C "$chroot_dir" -xf "$base"

# Go and Node.js/npm, as the bare machine has them.
mkdir -p "$chroot_dir/usr/local"
cp -a "$goroot" "$chroot_dir/usr/local/go"
node_prefix=$(dirname "$(dirname "$node")")
npm_dir=$(dirname "$(dirname "$(readlink -f "$npm")")")   # .../lib/node_modules/npm
mkdir -p "$chroot_dir/usr/bin" "$chroot_dir/usr/lib/node_modules"
cp -a "$node" "$chroot_dir/usr/bin/node"
cp -a "$npm_dir" "$chroot_dir/usr/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$chroot_dir/usr/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$chroot_dir/usr/bin/npx"

# This machine's registry settings and certificate bundle.
copy_if() { # copy_if PATH...: copies each that exists to the same path in the root
  local f
  for f in "$@"; do
    [ -e "$f" ] || continue
    if [ -d "$f" ]; then
      mkdir -p "$chroot_dir$f"
      cp -aL "$f/." "$chroot_dir$f/"
    else
      mkdir -p "$chroot_dir$(dirname "$f")"
      cp -aL "$f" "$chroot_dir$f"
    fi
  done
}
# The root's apt sources are replaced by this machine's, not added to.
rm -rf "$chroot_dir/etc/apt/sources.list" "$chroot_dir/etc/apt/sources.list.d"
copy_if /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/apt.conf.d /etc/apt/preferences.d \
  /etc/npmrc "$node_prefix/etc/npmrc" /root/.npmrc /root/.config/go/env \
  /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates /etc/resolv.conf /etc/hosts
# (The local CA certificates too: a package that runs update-ca-certificates
# in the root rebuilds the bundle from them.)
# Sources this machine switched off stay off.
rm -f "$chroot_dir"/etc/apt/sources.list.d/*.disabled*
phase "Go, Node.js, registry settings and certificates copied in"

git clone -q --no-local "$root" "$chroot_dir/root/edgefleet"
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]; then
  log "note: the working tree has uncommitted changes; the clone checks HEAD ($(git -C "$root" rev-parse --short HEAD)) only"
fi

mount -t proc proc "$chroot_dir/proc"
mount -t sysfs sysfs "$chroot_dir/sys"
mount --rbind /dev "$chroot_dir/dev"
mount --make-rslave "$chroot_dir/dev"
mount -t tmpfs tmpfs "$chroot_dir/run"
mount -t tmpfs -o size=8g tmpfs "$chroot_dir/dev/shm"

# The environment of a root login on the bare machine, with this
# machine's registry and certificate variables.
envs=(HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM=dumb
  PATH=/usr/local/go/bin:/root/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
while IFS= read -r v; do envs+=("$v"); done < <(env | grep -E '^(GOPROXY|GOSUMDB|GONOSUMDB|GOPRIVATE|GONOPROXY|GOINSECURE|GOFLAGS|GOTOOLCHAIN|[Nn][Pp][Mm]_[Cc][Oo][Nn][Ff][Ii][Gg]_[A-Za-z_]+|[A-Za-z_]*(CA_BUNDLE|CA_CERTS|CAINFO|CERT_FILE|CERT_DIR|CA_CERTS_FILE|SSL_ROOTS_FILE_PATH)|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)=' || true)

before=$(chroot "$chroot_dir" dpkg-query -W -f='${Package}\n' | sort)
case "$mode" in
  demo) cmd='cd /root/edgefleet && make demo' ;;
  ci) cmd='cd /root/edgefleet && CI=true bash .ci/run' ;;
esac
log "running '$cmd' in $chroot_dir (output: $work/run.log)"
set +e
chroot "$chroot_dir" /usr/bin/env -i "${envs[@]}" /bin/bash -c "$cmd" 2>&1 | tee "$work/run.log"
status=${PIPESTATUS[0]}
set -e
phase "$mode run"
after=$(chroot "$chroot_dir" dpkg-query -W -f='${Package}\n' | sort)
installed=$(comm -13 <(echo "$before") <(echo "$after") | tr '\n' ' ')

log "phases:"
for p in "${phases[@]}"; do log "  $p"; done
log "total: $(( $(date +%s) - t0 )) s"
log "the project's setup installed $(echo "$installed" | wc -w) Debian packages: $installed"
[ "$status" = 0 ] || die "'$cmd' exited $status"
if [ "$mode" = demo ]; then
  grep -q 'every step did what it said' "$work/run.log" || die "make demo exited 0 without reaching its summary"
  if grep -E '\[E:onnxruntime|providers_shared\.so' "$work/run.log"; then
    die "make demo printed ONNX Runtime errors (above)"
  fi
fi
log "PASSED ($mode)"
