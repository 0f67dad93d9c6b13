#!/usr/bin/env bash
# A cached Debian 13 (trixie) chroot: the second oracle of `make test`
# (libvirt 11.3's virt-aa-helper and AppArmor 4.1's apparmor_parser).
#
#   scripts/trixie-chroot.sh           build it unless cached; print its path
#   scripts/trixie-chroot.sh --path    print its path; exit 1 when not built
#   scripts/trixie-chroot.sh run CMD…  run CMD inside it, in a private mount
#                                      namespace with the host's /proc, /sys
#                                      and /dev (so the helper sees the same
#                                      devices as Debian 12's on this host)
#
# Built once: minbase debootstrap of trixie (no --include: on a Debian 12
# host systemd's pre-dependency on an unconfigured libsystemd-shared makes
# it fail), then `apt-get install` inside. Cached outside the checkout under
# $AA_VIRT_TRIXIE_CACHE (default /var/cache/aa-virt-test/trixie-chroot), in a
# directory named after a digest of this script, so a change here rebuilds
# it. The build happens in a temporary directory renamed into place under a
# lock: a killed build never leaves a half chroot that looks finished.
# The mirror is the one the host's apt uses (AA_VIRT_MIRROR overrides).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${AA_VIRT_TRIXIE_CACHE:-/var/cache/aa-virt-test/trixie-chroot}
# ovmf: the firmware cases of libvirt's suite run only where its files exist
# (as on the Debian 12 host, scripts/install-deps.sh).
PACKAGES="apparmor libvirt-daemon libvirt-daemon-driver-qemu ovmf"
key=$(sha256sum "$0" | cut -c1-16)
dir=$cache/$key

die() { echo "trixie-chroot: $*" >&2; exit 2; }

built() { [ -x "$dir/usr/lib/libvirt/virt-aa-helper" ] && [ -x "$dir/usr/sbin/apparmor_parser" ]; }

case "${1:-}" in
--path)
    built || { echo "trixie-chroot: not built yet at $dir (run scripts/trixie-chroot.sh; make test does)" >&2; exit 1; }
    echo "$dir"; exit 0 ;;
run)
    shift
    built || die "not built yet at $dir (run scripts/trixie-chroot.sh; make test does)"
    # The mounts live and die with the namespace: the cached tree is never
    # left with anything mounted, and parallel runs do not interfere.
    exec unshare --mount --propagation private -- /bin/sh -c '
        d=$1; shift
        mount -t proc proc "$d/proc" && mount --rbind /sys "$d/sys" && mount --rbind /dev "$d/dev" || exit 125
        exec chroot "$d" "$@"' sh "$dir" "$@" ;;
"") ;;
*) die "unknown argument $1 (see the head of $0)" ;;
esac

if built; then echo "$dir"; exit 0; fi
[ "$(id -u)" = 0 ] || die "building the chroot needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/install-deps.sh)"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if built; then echo "$dir"; exit 0; fi

# shellcheck source=../integration-vms/lib/mirror.sh
. "$here/integration-vms/lib/mirror.sh"
mirror=$(debian_mirror bookworm) || die "no Debian mirror in the host's apt sources"
tmp=$(mktemp -d "$cache/.build.XXXXXX")
cleanup() {
    umount -l "$tmp/proc" 2>/dev/null || true
    rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
start=$(date +%s)
echo "trixie-chroot: debootstrap --variant=minbase trixie from $mirror" >&2
debootstrap --variant=minbase trixie "$tmp" "$mirror" >"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; rm -f "$tmp.log"; die "debootstrap failed"; }
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod 755 "$tmp/usr/sbin/policy-rc.d"
mount -t proc proc "$tmp/proc"
echo "trixie-chroot: apt-get install $PACKAGES" >&2
DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y -q --no-install-recommends $PACKAGES >"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; rm -f "$tmp.log"; die "apt-get install in the chroot failed"; }
# deb-src for the same suite, so `apt-get source libvirt` there fetches the
# source of the libvirt that is installed (scripts/libvirt-suite.sh --root).
sed 's/^Types: deb$/Types: deb-src/' "$tmp/etc/apt/sources.list.d/debian.sources" \
    >"$tmp/etc/apt/sources.list.d/deb-src.sources" 2>/dev/null ||
    sed -n 's/^deb /deb-src /p' "$tmp/etc/apt/sources.list" >"$tmp/etc/apt/sources.list.d/deb-src.list"
chroot "$tmp" apt-get update -qq >"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; rm -f "$tmp.log"; die "apt-get update (deb-src) in the chroot failed"; }
chroot "$tmp" apt-get clean
rm -f "$tmp.log"
umount "$tmp/proc"
[ -x "$tmp/usr/lib/libvirt/virt-aa-helper" ] || die "the chroot has no /usr/lib/libvirt/virt-aa-helper"
# Older builds (another digest of this script) are stale.
for old in "$cache"/*/; do
    [ "${old%/}" = "$dir" ] || rm -rf --one-file-system "${old%/}"
done
mv "$tmp" "$dir"
trap - EXIT
echo "trixie-chroot: built $dir in $(( $(date +%s) - start ))s" >&2
echo "$dir"
