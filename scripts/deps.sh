#!/usr/bin/env bash
# deps.sh fetches the pinned third-party artifacts the project runs against
# (ONNX Runtime shared libraries, the Silero VAD model) into .cache/deps.
# Every artifact is pinned by version and sha256. A cached file whose
# checksum does not match is an error, never a silent re-download.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${EDGEFLEET_CACHE:-$root/.cache/deps}
mkdir -p "$cache"

die() { echo "deps: $*" >&2; exit 1; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

# check FILE SHA256: fails loudly on mismatch.
check() {
  local got
  got=$(sha "$1")
  [ "$got" = "$2" ] || die "checksum mismatch for $1: want $2, got $got (delete the file to fetch it again)"
}

# npm_tarball SPEC FILE SHA256: fetches an npm package tarball with npm pack
# (no install scripts run) unless it is already cached.
npm_tarball() {
  local spec=$1 file=$2 want=$3
  if [ ! -f "$cache/$file" ]; then
    command -v npm >/dev/null || die "npm is required to fetch $spec (apt-get install npm)"
    echo "deps: fetching $spec" >&2
    local tmp
    tmp=$(mktemp -d "$cache/.npm.XXXXXX")
    (cd "$tmp" && npm pack --silent --ignore-scripts "$spec" >/dev/null) || { rm -rf "$tmp"; die "npm pack $spec failed"; }
    mv "$tmp/$file" "$cache/$file.part" || { rm -rf "$tmp"; die "npm pack $spec did not produce $file"; }
    rm -rf "$tmp"
    check "$cache/$file.part" "$want"
    mv "$cache/$file.part" "$cache/$file"
  fi
  check "$cache/$file" "$want"
}

# extract TARBALL MEMBER DEST SHA256: extracts one member of a tarball.
extract() {
  local tgz=$1 member=$2 dest=$3 want=$4
  if [ -f "$dest" ]; then
    check "$dest" "$want"
    return
  fi
  mkdir -p "$(dirname "$dest")"
  tar -xzf "$cache/$tgz" -O "$member" >"$dest.part" || die "extracting $member from $tgz failed"
  check "$dest.part" "$want"
  mv "$dest.part" "$dest"
}

ORT_TGZ=onnxruntime-node-1.24.1.tgz
npm_tarball onnxruntime-node@1.24.1 $ORT_TGZ 57181cf6e6e711b155c5b942d591fd63ded0b5de5c4922d51fd994e7f6ac2772
extract $ORT_TGZ package/bin/napi-v6/linux/x64/libonnxruntime.so.1 "$cache/onnxruntime/linux-amd64/libonnxruntime.so.1" 53ef1ac028dd1b05554b8da28d9159eb3876f99868193d2aaa6e67f0243c23d4
extract $ORT_TGZ package/bin/napi-v6/linux/arm64/libonnxruntime.so.1 "$cache/onnxruntime/linux-arm64/libonnxruntime.so.1" 7954e8bdedb497f830c6a679e818d98399b7f4d81ade1126c3e0be74d28111ab

VAD_TGZ=ricky0123-vad-web-0.0.31.tgz
npm_tarball @ricky0123/vad-web@0.0.31 $VAD_TGZ d1a211cf1a2ed26297da52cc08de79e75d79838a274bfc6de546feb1f828c940
extract $VAD_TGZ package/dist/silero_vad_v5.onnx "$cache/models/silero_vad_v5.onnx" 2623a2953f6ff3d2c1e61740c6cdb7168133479b267dfef114a4a3cc5bdd788f

