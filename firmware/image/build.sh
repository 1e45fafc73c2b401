#!/usr/bin/env bash
# Builds the edgefleet arm64 device image: Debian bookworm (minbase) with
# systemd, the Debian cloud arm64 kernel, a small initramfs that loads the
# virtio drivers, and the edge-agent Debian package. See docs/device-image.md.
#
#   firmware/image/build.sh --deb dist/edge-agent_VERSION_arm64.deb [--cache .cache/image]
#
# Two stages, each cached under the cache directory and keyed by a hash of
# its inputs, so that a rebuild happens only when an input changes:
#
#   rootfs-KEY.tar   debootstrap + kernel + initramfs (minutes; key: the
#                    package list, suite, mirror and the stage's code)
#   image-KEY/       the agent package and the image's own files installed,
#                    made into an ext4 image (seconds; key: the rootfs key,
#                    the .deb, this script and the overlay files)
#
# image-KEY/ holds rootfs.img (raw ext4, the root filesystem; devices boot a
# qcow2 overlay of it), vmlinuz, initrd.img and image.json (what was built,
# and how long each step took). The last line printed is "image: DIR".
#
# Needs root (debootstrap, chroot, binfmt_misc) and the Debian packages
# debootstrap, qemu-user-static, e2fsprogs; the arm64 maintainer scripts run
# under qemu-aarch64-static, registered in binfmt_misc with the F flag.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

SUITE=bookworm
ARCH=arm64
MIRROR=${EDGEFLEET_IMAGE_MIRROR:-http://deb.debian.org/debian}
# What the device runs besides the agent: systemd as init, udev, networking
# (systemd-networkd, in the systemd package; iproute2), module loading, the
# initramfs generator, fsck for the root filesystem after a power cut,
# procps for inspection, curl for the agent's local API.
PACKAGES=(systemd-sysv udev iproute2 kmod initramfs-tools e2fsprogs procps curl)
KERNEL_PACKAGE=linux-image-cloud-arm64
# Bump to force a fresh debootstrap (e.g. after a Debian point release).
ROOTFS_EPOCH=1

CACHE=""
DEB=""
SIZE=2G
KEEP=3

usage() {
	cat >&2 <<EOF
usage: $0 --deb FILE [--cache DIR] [--size SIZE] [--keep N]
  --deb FILE   the arm64 edge-agent package (make cross-arm64)
  --cache DIR  where stages are cached (default: .cache/image in the repository)
  --size SIZE  root filesystem size (default $SIZE; the file is sparse)
  --keep N     image-* directories kept in the cache (default $KEEP; and
               every one used in the last hour)
EOF
	exit 2
}

log() { printf '%s build.sh: %s\n' "$(date +%T)" "$*" >&2; }
die() {
	printf 'build.sh: error: %s\n' "$*" >&2
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

while [ $# -gt 0 ]; do
	case $1 in
	--deb) DEB=${2:?--deb needs a file}; shift 2 ;;
	--cache) CACHE=${2:?--cache needs a directory}; shift 2 ;;
	--size) SIZE=${2:?--size needs a size}; shift 2 ;;
	--keep) KEEP=${2:?--keep needs a number}; shift 2 ;;
	-h | --help) usage ;;
	*) echo "build.sh: unknown argument $1" >&2; usage ;;
	esac
done
[ -n "$DEB" ] || usage
[ -f "$DEB" ] || die "--deb $DEB: no such file (make cross-arm64 builds it)"
DEB=$(realpath "$DEB")
[ -n "$CACHE" ] || CACHE=$(realpath -m "$HERE/../../.cache/image")
mkdir -p "$CACHE"
CACHE=$(realpath "$CACHE")
[[ $KEEP =~ ^[1-9][0-9]*$ ]] || die "--keep $KEEP: want a number >= 1"

check_tools() {
	[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot and binfmt_misc need it)"
	local tool pkg missing=()
	for tool in debootstrap:debootstrap qemu-aarch64-static:qemu-user-static mkfs.ext4:e2fsprogs \
		dpkg-deb:dpkg flock:util-linux chroot:coreutils sha256sum:coreutils tar:tar; do
		pkg=${tool#*:}
		tool=${tool%%:*}
		command -v "$tool" >/dev/null || missing+=("$tool (Debian package $pkg)")
	done
	[ ${#missing[@]} = 0 ] || die "missing: ${missing[*]}; apt-get install debootstrap qemu-user-static e2fsprogs"
	[ "$(dpkg-deb --field "$DEB" Architecture)" = "$ARCH" ] ||
		die "--deb $DEB: Architecture is $(dpkg-deb --field "$DEB" Architecture), want $ARCH"
}

# binfmt registers qemu-aarch64-static for arm64 ELF files with the F flag
# (the kernel opens the interpreter now, so it works inside a chroot too).
binfmt() {
	local dir=/proc/sys/fs/binfmt_misc
	if [ ! -e $dir/register ]; then
		mount -t binfmt_misc binfmt_misc $dir || die "cannot mount binfmt_misc on $dir"
	fi
	if [ -e $dir/qemu-aarch64 ]; then
		if grep -q '^enabled' $dir/qemu-aarch64 && grep -q '^flags:.*F' $dir/qemu-aarch64; then
			return
		fi
		log "re-registering qemu-aarch64 in binfmt_misc with the F flag"
		echo -1 >$dir/qemu-aarch64
	fi
	# Debian's qemu-user-static ships the registration (binfmt.d format,
	# flags OPF); the magic and mask below are the same.
	local conf=/usr/lib/binfmt.d/qemu-aarch64.conf line
	if [ -f $conf ]; then
		line=$(grep -v '^#' $conf | head -1)
	else
		line=':qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'$(command -v qemu-aarch64-static)':F'
	fi
	case ${line##*:} in *F*) ;; *) line=${line}F ;; esac
	echo "$line" >$dir/register || die "registering qemu-aarch64 in binfmt_misc failed"
	log "registered qemu-aarch64 in binfmt_misc: $(grep -E '^(interpreter|flags)' $dir/qemu-aarch64 | tr '\n' ' ')"
}

# Mounts for running maintainer scripts in the chroot, undone by unmount_all
# (also on exit).
MOUNTS=()
mount_chroot() {
	local root=$1 m
	for m in proc sys dev dev/pts; do
		mkdir -p "$root/$m"
	done
	mount -t proc proc "$root/proc" && MOUNTS+=("$root/proc")
	mount -t sysfs sysfs "$root/sys" && MOUNTS+=("$root/sys")
	mount --bind /dev "$root/dev" && MOUNTS+=("$root/dev")
	mount -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666 && MOUNTS+=("$root/dev/pts")
}
unmount_all() {
	local i
	for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
		umount -l "${MOUNTS[i]}" 2>/dev/null || true
	done
	MOUNTS=()
}

WORK=""
cleanup() {
	unmount_all
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		rm -rf --one-file-system "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_root() {
	local root=$1
	shift
	LC_ALL=C DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
		PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" "$@"
}

# Stage 1: debootstrap, then the kernel and the initramfs. Everything this
# stage does is in rootfs_stage and the files under initramfs/, which the
# stage's key hashes.
rootfs_stage() {
	local root=$1 times=$2 t
	t=$(now)
	debootstrap --arch="$ARCH" --variant=minbase --include="$(
		IFS=,
		echo "${PACKAGES[*]}"
	)" "$SUITE" "$root" "$MIRROR" >&2
	echo "debootstrap $(since "$t")" >>"$times"

	# The initramfs loads only the listed modules (virtio, ext4), gzip:
	# quick to make under emulation and to unpack at boot.
	cp -rT "$HERE/initramfs" "$root/etc/initramfs-tools"
	t=$(now)
	cp /etc/resolv.conf "$root/etc/resolv.conf"
	mount_chroot "$root"
	in_root "$root" apt-get update -qq >&2
	in_root "$root" apt-get install -y -qq --no-install-recommends "$KERNEL_PACKAGE" >&2
	in_root "$root" apt-get clean
	unmount_all
	rm -rf "$root"/var/lib/apt/lists/* "$root/etc/resolv.conf"
	ls "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-* >/dev/null || die "no kernel or initramfs in /boot after installing $KERNEL_PACKAGE"
	echo "kernel $(since "$t")" >>"$times"
}

rootfs_key() {
	{
		echo "epoch $ROOTFS_EPOCH $SUITE $ARCH $MIRROR ${PACKAGES[*]} $KERNEL_PACKAGE"
		declare -f rootfs_stage mount_chroot in_root
		(cd "$HERE/initramfs" && find . -type f | LC_ALL=C sort | xargs sha256sum)
	} | sha256sum | cut -c1-16
}

# Stage 2: the agent package and the image's files, then the ext4 image.
image_stage() {
	local root=$1 out=$2 times=$3 t
	t=$(now)
	cp "$DEB" "$root/tmp/edge-agent.deb"
	mount_chroot "$root"
	# Its dependencies (libc6, libstdc++6, libgcc-s1, systemd) are in the
	# root filesystem already.
	in_root "$root" dpkg -i /tmp/edge-agent.deb >&2 || die "dpkg -i $(basename "$DEB") in the image failed"
	rm "$root/tmp/edge-agent.deb"

	# The device's own files (rootfs/) and the testbed's (testbed/): seed
	# disk, command channel. A production image would leave out testbed/.
	cp -rT --preserve=mode "$HERE/rootfs" "$root"
	cp -rT --preserve=mode "$HERE/testbed" "$root"
	# A per-device identity comes at first boot: systemd makes a machine id
	# when the file is empty; the seed sets the hostname.
	: >"$root/etc/machine-id"
	rm -f "$root/var/lib/dbus/machine-id"
	in_root "$root" systemctl enable systemd-networkd.service edgefleet-seed.service edgefleet-shell.service >&2
	# No first-boot prompts on the console, no background apt, no timers
	# that compete with the agent for a small CPU.
	in_root "$root" systemctl mask systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer \
		e2scrub_all.timer e2scrub_reap.service fstrim.timer >&2
	in_root "$root" systemctl is-enabled edge-agent.service >/dev/null ||
		die "the edge-agent package did not enable edge-agent.service"
	unmount_all
	rm -rf "$root"/var/cache/apt/*.bin "$root"/var/log/*.log "$root"/var/cache/debconf/*-old "$root"/tmp/* "$root"/var/tmp/*
	echo "agent $(since "$t")" >>"$times"

	cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" "$out/vmlinuz"
	cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)" "$out/initrd.img"
	t=$(now)
	mkfs.ext4 -q -L edgefleet-root -d "$root" "$out/rootfs.img" "$SIZE" >&2
	echo "mkfs $(since "$t")" >>"$times"
}

image_key() {
	{
		echo "rootfs $1 size $SIZE"
		sha256sum <"$DEB"
		declare -f image_stage mount_chroot in_root
		(cd "$HERE" && find rootfs testbed -type f | LC_ALL=C sort | xargs sha256sum)
		(cd "$HERE" && find rootfs testbed -type f -perm -u+x | LC_ALL=C sort)
	} | sha256sum | cut -c1-16
}

json_times() {
	awk 'BEGIN { printf "{" } { printf "%s\"%s\": %s", (NR > 1 ? ", " : ""), $1, $2 } END { printf "}" }' "$1"
}

prune() {
	# Keep the newest $KEEP images, and any used (touched) in the last
	# hour: a test may be about to boot one. Then the rootfs tarballs no
	# kept image uses.
	local old d
	mapfile -t old < <(ls -1dt "$CACHE"/image-* 2>/dev/null | tail -n +$((KEEP + 1)))
	for d in "${old[@]}"; do
		if [ -n "$(find "$d" -maxdepth 0 -mmin +60)" ]; then
			log "pruning $d"
			rm -rf "$d"
		fi
	done
	local keep_rootfs f k
	keep_rootfs=$(cat "$CACHE"/image-*/image.json 2>/dev/null | sed -n 's/.*"rootfsKey": "\([0-9a-f]*\)".*/\1/p' | sort -u)
	for f in "$CACHE"/rootfs-*.tar; do
		[ -e "$f" ] || continue
		k=${f##*/rootfs-}
		k=${k%.tar}
		if [ "$k" != "$1" ] && ! grep -qx "$k" <<<"$keep_rootfs"; then
			log "pruning $f"
			rm -f "$f"
		fi
	done
}

main() {
	check_tools
	exec 9>"$CACHE/lock"
	flock 9
	binfmt

	local total key1 key2 tarball out times
	total=$(now)
	WORK=$(mktemp -d "$CACHE/work.XXXXXX")
	times=$WORK/times
	: >"$times"
	key1=$(rootfs_key)
	tarball=$CACHE/rootfs-$key1.tar
	if [ -f "$tarball" ]; then
		log "root filesystem $key1: cached"
		echo "debootstrap 0" >>"$times"
		echo "kernel 0" >>"$times"
	else
		log "root filesystem $key1: debootstrap $SUITE $ARCH (a few minutes)"
		rootfs_stage "$WORK/rootfs" "$times"
		tar -C "$WORK/rootfs" --numeric-owner --xattrs -cpf "$tarball.tmp" .
		mv "$tarball.tmp" "$tarball"
		rm -rf --one-file-system "$WORK/rootfs"
	fi

	key2=$(image_key "$key1")
	out=$CACHE/image-$key2
	if [ -f "$out/image.json" ]; then
		log "image $key2: cached"
		touch "$out"
		echo "image: $out"
		return
	fi
	log "image $key2: installing $(basename "$DEB")"
	local t
	t=$(now)
	mkdir -p "$WORK/root" "$WORK/out"
	tar -C "$WORK/root" --numeric-owner --xattrs -xpf "$tarball"
	echo "extract $(since "$t")" >>"$times"
	image_stage "$WORK/root" "$WORK/out" "$times"

	local kver
	kver=$(basename "$(ls "$WORK"/root/boot/vmlinuz-* | sort -V | tail -1)")
	kver=${kver#vmlinuz-}
	cat >"$WORK/out/image.json" <<EOF
{
  "key": "$key2",
  "rootfsKey": "$key1",
  "suite": "$SUITE",
  "arch": "$ARCH",
  "kernelVersion": "$kver",
  "rootDevice": "/dev/vda",
  "deb": "$(basename "$DEB")",
  "debSHA256": "$(sha256sum <"$DEB" | cut -d' ' -f1)",
  "agentVersion": "$(dpkg-deb --field "$DEB" Version)",
  "size": "$SIZE",
  "usedBytes": $(du -sb --exclude=./proc --exclude=./sys "$WORK/root" | cut -f1),
  "seconds": $(json_times "$times"),
  "built": "$(date -u +%FT%TZ)"
}
EOF
	rm -rf --one-file-system "$WORK/root"
	mv "$WORK/out" "$out"
	log "image $key2: done in $(since "$total") s ($(tr '\n' ' ' <"$times"))"
	prune "$key1"
	echo "image: $out"
}

main
