#!/usr/bin/env bash
# setup.sh is the project's one set-up path: it installs every Debian
# package and pinned tool that `make demo` and `make test` need on a bare
# Debian 12 (bookworm) machine that has Go 1.26, gcc, make, git and
# Node.js/npm. `make setup`, `make demo`, `make test` and .ci/run all come
# through here; there is no second list. For `make test` it also makes, once,
# the plain Debian root (scripts/debian-root.sh device, debootstrap into
# .cache/roots/) that the "Your first device" doc test installs the agent's
# package into, so that the test itself never touches the network.
#
# It is idempotent and quiet when everything is present: one line, no apt
# call, no network.
#
#   scripts/setup.sh [demo|test]     install what that target needs (default: test)
#   scripts/setup.sh --check TARGET  install nothing; exit 3 and name what is
#                                    missing and the command to run
#   scripts/setup.sh --print [TARGET] print the Debian packages, one a line
#
# Exit status: 0 ready, 1 an install failed, 2 usage, 3 (--check) missing.
#
# Packages are installed with --no-install-recommends, so every package
# that matters is named here, recommends included (for example
# libc6-dev-arm64-cross, which gcc-aarch64-linux-gnu only recommends and
# without which the arm64 cgo build finds no libc headers).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

# package|targets|why. "demo" packages are needed by both targets.
packages=(
  "clang|demo|the C WASM pre-processor of the example bundle (wasm32-wasi)"
  "lld|demo|wasm-ld, the linker clang uses for wasm32"
  "wasi-libc|demo|the C library for wasm32-wasi"
  "libclang-rt-dev-wasm32|demo|compiler-rt builtins for wasm32"
  "ca-certificates|demo|TLS to the Go proxy and the npm registry"
  "mosquitto|test|external-broker interop tests"
  "mosquitto-clients|test|mosquitto_pub / mosquitto_sub ACL tests"
  "wabt|test|wat2wasm for tiny hand-written WASM test modules"
  "python3-scipy|test|reference implementation for the drift statistics"
  "systemd|test|systemd-analyze verify for the unit file"
  "gcc-aarch64-linux-gnu|test|cgo cross build of the arm64 agent (cross/)"
  "libc6-dev-arm64-cross|test|arm64 libc headers for that build (only a Recommends of the compiler)"
  "qemu-user-static|test|runs the arm64 agent for the cross check"
  "qemu-system-arm|test|the emulated arm64 device of the testbed smoke"
  "qemu-utils|test|qemu-img for the device disk overlays"
  "debootstrap|test|the device image's root file system"
  "e2fsprogs|test|mkfs.ext4, debugfs, e2label for the device image"
  "curl|test|the device smoke's network-rule probe"
  "procps|test|pgrep for the process-cleanup checks"
  "protobuf-compiler|test|protoc: the test that keeps the generated gRPC code (agent/api/oipgrpc) current regenerates it"
  "chromium|test|the browser the web console's Playwright tests drive (testbed/browser); Playwright never downloads one"
)

die() { echo "setup: $1" >&2; exit "${2:-1}"; }

mode=install target=test
case "${1:-}" in
  --check) mode=check; target=${2:-test} ;;
  --print) mode=print; target=${2:-test} ;;
  demo | test) target=$1 ;;
  "") ;;
  *) die "usage: scripts/setup.sh [demo|test] | --check TARGET | --print [TARGET]" 2 ;;
esac
case "$target" in demo | test) ;; *) die "unknown target $target: want demo or test" 2 ;; esac

# wanted: the packages the target needs.
wanted=()
for p in "${packages[@]}"; do
  IFS='|' read -r name targets _ <<<"$p"
  if [ "$targets" = demo ] || [ "$target" = test ]; then
    wanted+=("$name")
  fi
done
# npm: Node.js may come from elsewhere than Debian (as on the machines
# here, where the nodejs package bundles npm); Debian's npm only when absent.
command -v npm >/dev/null || wanted+=(npm)

if [ "$mode" = print ]; then
  printf '%s\n' "${wanted[@]}"
  exit 0
fi

missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v go >/dev/null || die "go is required (Go 1.26, https://go.dev/dl/); it is not a Debian package here"

# tools_missing: the pinned Go tools (scripts/tools.sh) and Node.js apps
# (scripts/npm-apps.sh) that make test needs and that are not installed yet.
tools_missing() {
  [ "$target" = test ] || return 0
  scripts/tools.sh --missing
  scripts/npm-apps.sh --check || true
}

# device_root_missing: whether make test's plain Debian device root (the
# "Your first device" doc test; scripts/debian-root.sh device) is not
# cached yet.
device_root_missing() {
  [ "$target" = test ] || return 1
  ! scripts/debian-root.sh --check device >/dev/null 2>&1
}

cd "$root"
if [ "$mode" = check ]; then
  tools=$(tools_missing)
  root_missing=
  device_root_missing && root_missing=1
  if [ ${#missing[@]} -gt 0 ] || [ -n "$tools" ] || [ -n "$root_missing" ]; then
    what=()
    [ ${#missing[@]} -gt 0 ] && what+=("the Debian packages ${missing[*]}")
    [ -n "$tools" ] && what+=("the pinned tools $(echo $tools)")
    [ -n "$root_missing" ] && what+=("a cached Debian root for the device doc test (scripts/debian-root.sh device)")
    msg="make $target needs ${what[0]}"
    [ ${#what[@]} -gt 1 ] && msg+=" and ${what[1]}"
    [ ${#what[@]} -gt 2 ] && msg+=" and ${what[2]}"
    die "$msg: run 'sudo make setup' (scripts/setup.sh) first" 3
  fi
  exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root: run 'sudo make setup'"
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi

scripts/deps.sh
if [ "$target" = test ]; then
  scripts/tools.sh
  # onnxruntime-node, the peer make bench compares the agent with, and
  # DuckDB, the independent reader of the Parquet sample files.
  scripts/npm-apps.sh
  # The plain Debian root the "Your first device" doc test installs the
  # agent's package into (debootstrap, once; cached in .cache/roots/).
  if device_root_missing; then
    [ "$(id -u)" = 0 ] || die "making the device root (debootstrap) needs root: run 'sudo make setup'"
    scripts/debian-root.sh device >/dev/null
  fi
fi
echo "setup: ok ($target)" >&2
