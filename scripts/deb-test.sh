#!/usr/bin/env bash
# Build the .deb, install it with dpkg, use it, purge it, and check that
# nothing is left behind. Changes the system: run it on a disposable
# machine (CI) as root.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(make -s deb-path)
[ -f "$deb" ] || { echo "deb-test: $deb was not built (run make deb)" >&2; exit 1; }
fail=0
check() { if "$@"; then echo "ok: $*"; else echo "FAIL: $*"; fail=1; fi; }

# What purge removes by design (postrm): aa-virt's own configuration, cache
# and locks. They are left out of the before/after comparison, since state
# from an earlier aa-virt on this machine is meant to go with the purge,
# and checked separately: after purge none of them may exist.
PURGED=(/etc/aa-virt /var/cache/aa-virt /run/aa-virt)

snapshot() {
  # Missing directories (before install) are expected: find's status is ignored.
  { find /etc /usr /var/lib/aa-virt /var/cache/aa-virt /run/aa-virt -xdev 2>/dev/null || true; } \
    | grep -v -e '^/usr/share/man/index' -e '^/var/cache/man' \
    | grep -v -E "^($(IFS='|'; echo "${PURGED[*]}"))(/|\$)" | LC_ALL=C sort
}

dpkg -s aa-virt >/dev/null 2>&1 && { echo "deb-test: aa-virt is already installed; purge it first" >&2; exit 1; }
before=$(mktemp); after=$(mktemp)
snapshot > "$before"

dpkg -i "$deb"
echo "--- installed files:"
dpkg -L aa-virt | grep -v '/$' || true
check aa-virt --version
# The hook is shipped, not enabled: `aa-virt install` enables hook mode,
# and the drop-in helper mode must not have a hook fighting it.
check test -x /usr/share/aa-virt/libvirt-hooks/qemu
check test ! -e /etc/libvirt/hooks/qemu.d/aa-virt
check test -f /etc/apparmor.d/abstractions/aa-virt-qemu
check test -f /etc/apparmor.d/abstractions/aa-virt-qemu-gl
check man -w aa-virt
check man -w aa-virt-profile
check man -w 5 aa-virt.toml
check test -f /usr/share/bash-completion/completions/aa-virt
check test -f /usr/share/zsh/vendor-completions/_aa-virt
check test -f /usr/share/fish/vendor_completions.d/aa-virt.fish
# A dry-run render from the installed files only (no source tree).
tmp=$(mktemp -d)
cp /usr/share/doc/aa-virt/examples/web-server.xml "$tmp/"
check sh -c "cd / && aa-virt profile --check '$tmp/web-server.xml' >/dev/null"
rm -rf "$tmp"
# What `aa-virt install` sets up (hook mode, then the switch to helper
# mode), the package's removal takes back: libvirt must never be left with a
# hook or a helper that points at a binary that is gone.
helper=/usr/lib/libvirt/virt-aa-helper
hook=/etc/libvirt/hooks/qemu.d/aa-virt
[ -f "$helper" ] || { echo "deb-test: $helper is missing: install libvirt-daemon (CI does)" >&2; exit 1; }
helper_sum=$(sha256sum < "$helper")
check aa-virt install
check test -x "$hook"
# One copy of the boot unit and the daemons' drop-ins: the package's.
check test -f /lib/systemd/system/aa-virt-load.service
check test ! -e /etc/systemd/system/aa-virt-load.service
for d in libvirtd virtqemud lxc; do
  check test ! -e "/etc/systemd/system/$d.service.d/aa-virt-load.conf"
done
check aa-virt install --mode helper
check test ! -e "$hook"
check test "$(readlink "$helper")" = /usr/bin/aa-virt
check test "$(dpkg-divert --truename "$helper")" = "$helper.real"
if grep -q 'conffiles' <(dpkg-deb -I "$deb"); then
  for f in aa-virt-qemu aa-virt-qemu-gl; do
    check sh -c "dpkg-deb -I '$deb' conffiles | grep -qx /etc/apparmor.d/abstractions/$f"
  done
fi

dpkg --purge aa-virt
for p in "${PURGED[@]}"; do check test ! -e "$p"; done
check test ! -L "$helper"
check test "$(sha256sum < "$helper")" = "$helper_sum"
check test "$(dpkg-divert --truename "$helper")" = "$helper"
check test ! -e "$hook"
check test ! -e /var/lib/aa-virt/installed.json
snapshot > "$after"
if ! diff -u "$before" "$after"; then
  echo "FAIL: files left behind or removed by install+purge (diff above)"
  fail=1
else
  echo "ok: purge left the file system as it was ($(wc -l < "$before") paths compared)"
fi
rm -f "$before" "$after"
[ "$fail" = 0 ] && echo "deb-test: passed" || { echo "deb-test: FAILED"; exit 1; }
