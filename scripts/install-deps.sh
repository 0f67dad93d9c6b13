#!/usr/bin/env bash
# Install, idempotently, every Debian package aa-virt needs to build and to
# run its tests on a fresh Debian 12 machine. Only missing packages are
# installed; run as root.
set -euo pipefail

# lxc-dev + clang/libclang-dev: lxc-sys runs bindgen on lxccontainer.h (only
# its struct layout is used). libvirt and liblxc are dlopen'ed at run time,
# not linked, so libvirt-dev is not needed to build.
BUILD="pkg-config lxc-dev liblxc1 clang libclang-dev"
# apparmor: the real apparmor_parser compiles every profile a test renders.
# libvirt-daemon: Debian's virt-aa-helper, the differential oracle.
# libvirt-daemon-system + libvirt-clients: the real libvirtd the hook tests drive.
# qemu-utils: real qcow2/qed/vmdk chains. ovmf: libvirt's firmware test cases.
# lxc + busybox-static: real containers. dpkg-dev: apt-get source for libvirt's suite.
# debootstrap: the Debian 13 chroot, the second oracle (scripts/trixie-chroot.sh).
TEST="apparmor apparmor-utils libvirt-daemon libvirt-daemon-system libvirt-clients qemu-utils ovmf lxc busybox-static dpkg-dev jq debootstrap"

missing=()
for p in $BUILD $TEST; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is not on PATH; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
# qemu-system-x86: the real-libvirtd hook test (tests/libvirt/hook_libvirtd.rs) boots
# a tiny TCG guest. integration-vms/host-deps.sh installs it and handles the
# backports qemu-utils pitfall (build-facts.md).
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  "$(dirname "$0")/../integration-vms/host-deps.sh"
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Services in packages must not start during installation (containers, CI).
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; made_policy=1
fi
trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}"
