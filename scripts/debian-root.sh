#!/usr/bin/env bash
# debian-root.sh makes (once) and finds the pristine Debian bookworm roots
# that the checks on "a bare machine" start from, and prints the path of
# the tarball. Each is debootstrap's minbase output plus a profile's
# packages, cached as a tarball in .cache/roots/ and keyed by its package
# list, the Debian mirror, suite, variant and machine, so every user
# unpacks the same clean root and a change of any of these makes a new one.
#
#   scripts/debian-root.sh PROFILE           make it if missing (root, debootstrap, network); print its path
#   scripts/debian-root.sh --check PROFILE   make nothing: print its path, or exit 3 saying how to make it
#
# Profiles:
#   fresh   what the bare machines here start with (gcc, make, git,
#           PostgreSQL 15 installed but not running): the root of
#           scripts/fresh-machine-check.sh
#   device  a plain Debian box for the edge agent's package (systemd
#           installed but not running, curl): the device of the "Your
#           first device" doc test (cross/firstdevice_test.go)
#
# The mirror is this machine's own (deb822 or one-line apt sources), else
# deb.debian.org. debootstrap's log goes to .cache/roots/debootstrap-PROFILE.log.
# Exit status: 0 ready, 1 failed, 2 usage, 3 (--check) not made yet.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "debian-root: $1" >&2; exit "${2:-1}"; }

check=0
if [ "${1:-}" = --check ]; then
  check=1
  shift
fi
[ $# -eq 1 ] || die "usage: scripts/debian-root.sh [--check] fresh|device" 2
profile=$1
case "$profile" in
  fresh) packages=gcc,libc6-dev,make,git,ca-certificates,postgresql-15 ;;
  device) packages=systemd,curl ;;
  *) die "unknown profile $profile: want fresh or device" 2 ;;
esac
suite=bookworm variant=minbase

mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

cache="$root/.cache/roots"
key=$(printf '%s\n' "$packages" "$mirror" "$suite" "$variant" "$(uname -m)" | sha256sum | cut -c1-16)
tarball="$cache/$suite-$profile-$key.tar"
if [ -f "$tarball" ]; then
  echo "$tarball"
  exit 0
fi
if [ "$check" = 1 ]; then
  die "the $profile root ($suite $variant + $packages from $mirror) is not made yet: run 'sudo scripts/setup.sh' (or scripts/debian-root.sh $profile as root)" 3
fi
[ "$(id -u)" = 0 ] || die "making the $profile root needs root (debootstrap): run 'sudo scripts/setup.sh'"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap (scripts/setup.sh installs it)"

mkdir -p "$cache"
echo "debian-root: debootstrap $suite ($variant + $packages) from $mirror" >&2
tmp=$(mktemp -d "$cache/.debootstrap.XXXXXX")
chmod 0755 "$tmp" # a root directory, as on a real machine (mktemp makes it 0700)
# kill_inside kills whatever runs with the new root as its root (package
# scripts may start daemons, e.g. PostgreSQL): the roots are pristine, with
# nothing running.
kill_inside() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$tmp" ] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  return 0
}
cleanup() {
  kill_inside
  # debootstrap unmounts what it mounted; a failed run may leave some.
  awk -v r="$tmp" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if awk -v r="$tmp" '$5 == r || index($5, r "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    echo "debian-root: mounts left under $tmp; not removing it" >&2
  else
    rm -rf "$tmp"
  fi
  rm -f "$tarball.part"
}
trap cleanup EXIT
debootstrap --variant="$variant" --include="$packages" "$suite" "$tmp" "$mirror" >"$cache/debootstrap-$profile.log" 2>&1 ||
  die "debootstrap failed; see $cache/debootstrap-$profile.log"
kill_inside
tar -C "$tmp" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
echo "$tarball"
