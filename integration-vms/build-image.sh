#!/bin/bash
# Build (or reuse) a Debian guest image for integration-vms.
#
# Release: AA_VIRT_ITEST_DEBIAN=12 (bookworm, the default) or 13 (trixie).
# Output: a directory with vmlinuz, initrd.img and root.ext4, cached under
#   ${AA_VIRT_ITEST_CACHE:-/var/cache/aa-virt-itest}/debian<N>-<hash>/
# The key is the release plus a hash of this script, lib/ and guest/, so
# editing any of them makes a new image; an unchanged builder reuses the cache. The image directory's
# path is the only thing printed on stdout; progress goes to stderr.
#
# The build runs in a temp dir next to the cache entry and is renamed into
# place only when complete, so an interrupted build never leaves a bad cache.
# No loop devices and no mounts of the image: mke2fs -d writes it from a
# directory. Needs root (debootstrap, chroot). Network: the Debian mirror the
# host's apt already uses, and nothing else.
set -euo pipefail
# stdout carries only the result path; every tool's chatter goes to stderr.
exec 3>&1 1>&2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/mirror.sh"

RELEASE=${AA_VIRT_ITEST_DEBIAN:-12}
case "$RELEASE" in
12) SUITE=bookworm ;;
13) SUITE=trixie ;;
*) echo "build-image: AA_VIRT_ITEST_DEBIAN must be 12 or 13, not '$RELEASE'" >&2; exit 2 ;;
esac
IMAGE_SIZE=3G
# Boot, AppArmor, small initrd. Installed with apt in the chroot after a
# plain minbase debootstrap: on a Debian 12 host, debootstrap --include of
# systemd-sysv for trixie fails (systemd pre-depends on libsystemd-shared,
# unpacked but not yet configured at that point; build-facts.md).
BASE_PACKAGES=(systemd-sysv udev kmod apparmor apparmor-utils linux-image-amd64 initramfs-tools zstd procps)
# Everything the suite needs, installed at build time (the guest has no
# network). Adding a package here changes the hash, hence a rebuild.
GUEST_PACKAGES=(
    lxc lxc-templates busybox-static uidmap
    libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
    dnsmasq-base iptables
)
# The initrd only has to find a virtio disk with ext4 on it.
INITRD_MODULES=(virtio_pci virtio_blk ext4 9p 9pnet_virtio)

log() { printf '[build-image %s] %s\n' "$(date +%T)" "$*" >&2; }

inputs_hash() {
    # Builder inputs: this script and everything it installs into the guest.
    (cd "$here" && find build-image.sh lib guest -type f -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

cache_root=${AA_VIRT_ITEST_CACHE:-/var/cache/aa-virt-itest}
key=debian$RELEASE-$(inputs_hash)
dest=$cache_root/$key

if [ "${1:-}" = --print-key ]; then echo "$key" >&3; exit 0; fi

complete() { [ -f "$1/root.ext4" ] && [ -f "$1/vmlinuz" ] && [ -f "$1/initrd.img" ] && [ -f "$1/DONE" ]; }

if complete "$dest"; then
    log "cached image $dest"
    touch "$dest" 2>/dev/null || true   # last use, for pruning
    echo "$dest" >&3
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "build-image: no cached image at $dest and building one needs root" >&2
    exit 1
fi

mkdir -p "$cache_root"
# One builder at a time per cache; a second caller waits and then reuses.
exec 9> "$cache_root/.lock"
flock 9
if complete "$dest"; then
    log "cached image $dest (built by a concurrent run)"
    echo "$dest" >&3
    exit 0
fi

# Leftovers of interrupted builds (we hold the lock, so none is live).
for old in "$cache_root"/.build-*; do
    [ -e "$old" ] || continue
    umount -R "$old/rootfs/proc" 2>/dev/null || true
    rm -rf --one-file-system "$old"
done

mirror=$(debian_archive_mirror "$SUITE")
tmp=$(mktemp -d "$cache_root/.build-$key.XXXXXX")
rootfs=$tmp/rootfs
cleanup() {
    local rc=$?
    umount "$rootfs/proc" 2>/dev/null || true
    if [ $rc -ne 0 ]; then
        log "build failed (rc=$rc); removing $tmp"
        rm -rf --one-file-system "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP   # so that cleanup runs when interrupted

t0=$(date +%s)
log "debootstrap $SUITE from $mirror into $rootfs"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" \
    > "$tmp/debootstrap.log" 2>&1 || { tail -n 30 "$tmp/debootstrap.log" >&2; exit 1; }
t1=$(date +%s); log "debootstrap took $((t1 - t0)) s"

# apt inside the chroot: same mirror, plus security updates if the host
# uses them (same host as the host's own security source).
{
    echo "deb $mirror $SUITE main"
    echo "deb $mirror $SUITE-updates main"
    if sec=$(debian_archive_mirror "$SUITE-security" 2>/dev/null); then
        echo "deb $sec $SUITE-security main"
    fi
} > "$rootfs/etc/apt/sources.list"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf" 2>/dev/null || true
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
chmod +x "$rootfs/usr/sbin/policy-rc.d"
mount -t proc proc "$rootfs/proc"

in_chroot() { DEBIAN_FRONTEND=noninteractive LC_ALL=C chroot "$rootfs" "$@"; }

log "installing base and guest packages: ${BASE_PACKAGES[*]} ${GUEST_PACKAGES[*]}"
{
    in_chroot apt-get update -q
    in_chroot apt-get install -y -q --no-install-recommends "${BASE_PACKAGES[@]}"
    in_chroot apt-get install -y -q --no-install-recommends "${GUEST_PACKAGES[@]}"
} > "$tmp/apt.log" 2>&1 || { tail -n 30 "$tmp/apt.log" >&2; exit 1; }
t2=$(date +%s); log "package install took $((t2 - t1)) s"

log "guest setup"
rm -f "$rootfs/usr/sbin/policy-rc.d"
echo aa-virt-itest > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 aa-virt-itest\n' > "$rootfs/etc/hosts"
# No fsck: the disk is a throwaway snapshot of a freshly made filesystem.
echo '/dev/vda / ext4 rw,errors=remount-ro 0 0' > "$rootfs/etc/fstab"
printf '9p\n9pnet_virtio\n' > "$rootfs/etc/modules-load.d/aa-virt-itest.conf"
# Disposable guest without network: root logs in on the serial console
# without a password (only useful with the debug flag).
in_chroot passwd -d root > /dev/null
install -m 0755 "$here/guest/aa-virt-itest-runner" "$rootfs/usr/local/sbin/aa-virt-itest-runner"
install -m 0644 "$here/guest/aa-virt-itest.service" "$rootfs/etc/systemd/system/aa-virt-itest.service"
in_chroot systemctl enable aa-virt-itest.service > /dev/null 2>&1
# Periodic jobs only cost CPU in a minutes-long throwaway guest.
for t in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
         fstrim.timer logrotate.timer man-db.timer; do
    in_chroot systemctl mask "$t" > /dev/null 2>&1 || true
done
rm -f "$rootfs/etc/resolv.conf"
in_chroot apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*_Packages "$rootfs"/var/lib/apt/lists/*_Release \
       "$rootfs"/var/lib/apt/lists/*_InRelease

log "small initrd (MODULES=list: ${INITRD_MODULES[*]})"
sed -i 's/^MODULES=.*/MODULES=list/' "$rootfs/etc/initramfs-tools/initramfs.conf"
printf '%s\n' "${INITRD_MODULES[@]}" > "$rootfs/etc/initramfs-tools/modules"
in_chroot update-initramfs -u -k all > "$tmp/initramfs.log" 2>&1 || { tail -n 30 "$tmp/initramfs.log" >&2; exit 1; }
umount "$rootfs/proc"

kver=$(basename "$(ls -1 "$rootfs"/boot/vmlinuz-* | sort -V | tail -n 1)")
kver=${kver#vmlinuz-}
install -m 0644 "$rootfs/boot/vmlinuz-$kver" "$tmp/vmlinuz"
install -m 0644 "$rootfs/boot/initrd.img-$kver" "$tmp/initrd.img"
t3=$(date +%s)

log "ext4 image ($IMAGE_SIZE) from the rootfs"
mke2fs -q -t ext4 -L aa-virt-root -d "$rootfs" "$tmp/root.ext4" "$IMAGE_SIZE"
t4=$(date +%s); log "image took $((t4 - t3)) s"

{
    echo "key=$key"
    echo "release=$RELEASE ($SUITE)"
    echo "kernel=$kver"
    echo "mirror=$mirror"
    echo "built=$(date -u +%FT%TZ)"
    echo "seconds=$((t4 - t0))"
} > "$tmp/manifest"
chroot "$rootfs" dpkg-query -W -f='${Package} ${Version}\n' > "$tmp/packages" 2>/dev/null || true
rm -rf --one-file-system "$rootfs"
touch "$tmp/DONE"
chmod 0755 "$tmp"

# Atomic publish: rename(2) of the finished directory.
rm -rf --one-file-system "$dest"
mv -T "$tmp" "$dest"
trap - EXIT
log "built $dest in $((t4 - t0)) s (kernel $kver)"

# Old images (other builder versions, e.g. other branches) are ~1 GB each:
# keep the most recently used few of this release, and never one used in the
# last hour (a concurrent run may be about to boot it).
keep_n=${AA_VIRT_ITEST_CACHE_KEEP:-2}
ls -1dt "$cache_root"/debian"$RELEASE"-*/ 2>/dev/null | tail -n +"$((keep_n + 1))" | while read -r old; do
    old=${old%/}
    [ -n "$(find "$old" -maxdepth 0 -mmin -60)" ] && continue
    log "pruning old image $old"
    rm -rf --one-file-system "$old"
done
echo "$dest" >&3
