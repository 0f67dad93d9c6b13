#!/bin/bash
# Install what the host side of integration-vms needs: debootstrap and
# e2fsprogs to build the guest image, qemu-system-x86 to boot it.
# Idempotent: does nothing (and touches no network) when all is present.
# Called by CI (.ci/run) on a fresh machine; needs root.
#
# QEMU pitfall (see build-facts.md): these machines ship qemu-utils from
# bookworm-backports, which Breaks bookworm's qemu-system-common. When the
# installed qemu-utils is a backports build we install qemu-system-x86 from
# bookworm-backports too, adding that suite from the same mirror as the
# existing apt sources.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/mirror.sh"

export DEBIAN_FRONTEND=noninteractive

need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v mke2fs      >/dev/null 2>&1 || need+=(e2fsprogs)
command -v timeout     >/dev/null 2>&1 || need+=(coreutils)
# debootstrap verifies Release signatures with this keyring.
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
want_qemu=0
command -v qemu-system-x86_64 >/dev/null 2>&1 || want_qemu=1

if [ ${#need[@]} -eq 0 ] && [ $want_qemu -eq 0 ]; then
    echo "host-deps: all present"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "host-deps: missing ${need[*]} ${want_qemu:+qemu-system-x86}; run as root" >&2
    exit 1
fi

qemu_args=()
if [ $want_qemu -eq 1 ]; then
    qemu_utils_ver=$(dpkg-query -W -f='${Status} ${Version}\n' qemu-utils 2>/dev/null \
        | awk '$3 == "installed" { print $4 }')
    case "$qemu_utils_ver" in
    *bpo12*)
        if ! debian_mirror bookworm-backports >/dev/null 2>&1; then
            mirror=$(debian_mirror bookworm)
            keyring=/usr/share/keyrings/debian-archive-keyring.gpg
            echo "host-deps: adding bookworm-backports from $mirror"
            cat > /etc/apt/sources.list.d/aa-virt-bookworm-backports.sources <<SRC
# Added by aa-virt integration-vms/host-deps.sh: qemu-system-x86 must match
# the preinstalled backports qemu-utils ($qemu_utils_ver).
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: $keyring
SRC
        fi
        qemu_args=(BACKPORTS)
        ;;
    *)
        qemu_args=(qemu-system-x86)
        ;;
    esac
fi

apt-get update -q
if [ "${qemu_args[*]}" = BACKPORTS ]; then
    # Prefer the exact version of the installed qemu-utils so nothing else
    # moves; if the mirror no longer carries it, take backports' current
    # qemu-utils together with qemu-system-x86 (they are built as a set).
    if apt-cache madison qemu-system-x86 | awk -v v="$qemu_utils_ver" '$3 == v { f = 1 } END { exit !f }'; then
        qemu_args=(-t bookworm-backports "qemu-system-x86=$qemu_utils_ver"
                   "qemu-system-common=$qemu_utils_ver" "qemu-system-data=$qemu_utils_ver")
    else
        qemu_args=(-t bookworm-backports qemu-system-x86 qemu-utils)
    fi
fi
apt-get install -y -q --no-install-recommends "${need[@]}" "${qemu_args[@]}"

qemu-system-x86_64 --version | head -n1
echo "host-deps: done"
