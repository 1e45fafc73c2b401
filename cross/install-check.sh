#!/usr/bin/env bash
# install-check.sh: installs the edge-agent Debian package on THIS machine
# with apt, checks what the package promises, runs one prediction with the
# installed agent as the edge-agent user and its default configuration,
# reinstalls it (the upgrade path of the maintainer scripts), then purges
# it and checks that nothing is left behind but the system user (kept, as
# Debian policy asks).
#
# It really installs: run it as root on a machine (or container, or
# chroot) you may change. It refuses to touch an edge-agent that is already
# installed.
#
# Usage: cross/install-check.sh dist/edge-agent_VERSION_ARCH.deb [FLEETCTL]
#   FLEETCTL (default bin/fleetctl) builds and signs the Silero bundle;
#   run from the repository root after `make build`.
set -euo pipefail

die() { echo "install-check: FAIL: $*" >&2; exit 1; }
ok() { echo "install-check: ok: $*"; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 PACKAGE.deb [FLEETCTL]"
[ "$(id -u)" = 0 ] || die "must run as root (it installs the package)"
deb=$(realpath "$1")
fleetctl=$(realpath "${2:-bin/fleetctl}")
[ -f "$deb" ] || die "$1: no such package"
[ -x "$fleetctl" ] || die "$fleetctl: not found (make build)"
[ -f testbed/bundles/silero-vad/pre.wasm ] || die "run from the repository root after make wasm"
if [ "$(dpkg-query -W -f='${Status}' edge-agent 2>/dev/null || true)" != "" ] &&
  [ "$(dpkg-query -W -f='${Status}' edge-agent)" != "unknown ok not-installed" ]; then
  die "edge-agent is already installed here ($(dpkg-query -W -f='${Version} ${Status}' edge-agent)); not touching it"
fi

work=$(mktemp -d /tmp/edge-agent-install-check.XXXXXX)
installed=
cleanup() {
  if [ -n "$installed" ]; then
    echo "install-check: purging after a failure" >&2
    apt-get purge -y -q edge-agent >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

version=$(dpkg-deb --field "$deb" Version)
arch=$(dpkg-deb --field "$deb" Architecture)

echo "install-check: apt-get install $deb"
installed=1
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb"

# The package and its files.
[ "$(dpkg-query -W -f='${Status} ${Version} ${Architecture}' edge-agent)" = "install ok installed $version $arch" ] ||
  die "dpkg does not list edge-agent $version $arch as installed"
ok "installed edge-agent $version ($arch)"
for f in /usr/bin/edge-agent /usr/lib/edge-agent/libonnxruntime.so.1 /lib/systemd/system/edge-agent.service \
  /etc/edge-agent/config.yaml /usr/lib/sysusers.d/edge-agent.conf /usr/share/doc/edge-agent/copyright; do
  [ -f "$f" ] || die "$f missing"
done
dpkg-query -W -f='${Conffiles}\n' edge-agent | grep -q '^ /etc/edge-agent/config.yaml ' ||
  die "/etc/edge-agent/config.yaml is not a conffile"
ok "files in place; config.yaml is a conffile"

# The user, the group and the configuration directory's permissions.
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd edge-agent) || die "no edge-agent user"
getent group edge-agent >/dev/null || die "no edge-agent group"
[ "$uid" -lt 1000 ] || die "edge-agent uid $uid is not a system uid"
case "$shell" in */nologin | */false) ;; *) die "edge-agent has a login shell: $shell" ;; esac
[ "$(stat -c '%U:%G %a' /etc/edge-agent)" = "root:edge-agent 750" ] ||
  die "/etc/edge-agent is $(stat -c '%U:%G %a' /etc/edge-agent), want root:edge-agent 750"
dpkg-statoverride --list /etc/edge-agent >/dev/null || die "no statoverride for /etc/edge-agent"
ok "system user edge-agent (uid $uid, gid $gid, home $home, shell $shell); /etc/edge-agent root:edge-agent 0750"

# Enabled, so it starts at boot; started only where systemd runs.
link=/etc/systemd/system/multi-user.target.wants/edge-agent.service
[ -L "$link" ] || die "$link missing: the unit is not enabled"
ok "unit enabled ($link -> $(readlink "$link"))"
if [ -d /run/systemd/system ]; then
  systemctl is-active --quiet edge-agent || echo "install-check: note: systemd runs here, edge-agent is $(systemctl is-active edge-agent)"
else
  ok "systemd is not running here: the postinst enabled the unit without starting it"
fi

# One prediction by the installed agent, as its user, with the default
# configuration (ONNX Runtime from /usr/lib/edge-agent).
chmod 755 "$work"
EDGEFLEET_ORT_LIB=/usr/lib/edge-agent/libonnxruntime.so.1 "$fleetctl" keys generate --out "$work/keys" >/dev/null
EDGEFLEET_ORT_LIB=/usr/lib/edge-agent/libonnxruntime.so.1 "$fleetctl" bundle build testbed/bundles/silero-vad --out "$work/silero.bundle" >/dev/null
"$fleetctl" bundle sign --key "$work/keys/signing.key" "$work/silero.bundle" >/dev/null
cp testbed/bundles/silero-vad/smoke/two-sine.pcm "$work/frame.pcm"
chmod 755 "$work/keys" && chmod 644 "$work/keys/signing.pub" "$work/frame.pcm" "$work/silero.bundle" "$work/silero.bundle.sig"
/usr/bin/edge-agent version
out=$(cd "$work" && runuser -u edge-agent -- /usr/bin/edge-agent predict --bundle silero.bundle --key keys/signing.pub \
  --raw frame.pcm 2>"$work/predict.err") ||
  { cat "$work/predict.err" >&2; die "predict by the installed agent failed"; }
echo "$out" | grep -q '"name":"output","datatype":"FP32","shape":\[1,1\],"data":\[0\.0690' ||
  die "unexpected answer: ${out:0:200}"
ok "the installed agent, as user edge-agent, answers the Silero bundle: ${out:0:120}..."

# Reinstall: the postinst runs with the old version in $2 (restart path).
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall "$deb" >/dev/null
[ -L "$link" ] || die "the unit is no longer enabled after a reinstall"
ok "reinstalled; still enabled"

# Purge: everything goes but the user and group.
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q edge-agent
installed=
[ "$(dpkg-query -W -f='${Status}' edge-agent 2>/dev/null || true)" != "install ok installed" ] || die "still installed"
for f in /usr/bin/edge-agent /usr/lib/edge-agent /etc/edge-agent /lib/systemd/system/edge-agent.service \
  /usr/lib/sysusers.d/edge-agent.conf "$link" /var/lib/edge-agent; do
  [ ! -e "$f" ] && [ ! -L "$f" ] || die "$f left behind after purge"
done
! dpkg-statoverride --list /etc/edge-agent >/dev/null || die "statoverride for /etc/edge-agent left behind"
getent passwd edge-agent >/dev/null && ok "purged; the edge-agent user stays (Debian policy: userdel edge-agent to remove it)"
ok "all checks passed"
