# 80-reboot-hook: boot 1 of the reboot cases (80, 81, 82). A host in hook
# mode, set up the way an admin does it, then rebooted for real (an orderly
# `systemctl reboot`; the suite goes on in 81 after the second boot):
#   - aavt-rb-hook: static label, autostart, running at the reboot;
#   - aavt-rb-cold: static label, no autostart, defined only;
#   - aavtrb: an LXC container enabled by aa-virt, lxc.start.auto = 1,
#     running at the reboot.
# Nothing is cleaned up here: 82 does it after the last reboot.
#
# Hook and helper mode cannot coexist on one host (installing one mode
# undoes the other: helper mode has no hook), so the helper-mode guests come
# in 81, after this host switched to helper mode, and 82 looks at them after
# a second reboot.

. "$SUITE_DIR/reboot.sh"
mkdir -p "$RB_STATE"
cat /proc/sys/kernel/random/boot_id > "$RB_STATE/boot_id"

# aa-virt from the disk: at boot the share is not mounted yet when the
# hook, the LXC hooks and aa-virt-load.service run.
install -m 0755 "$AA_VIRT" /usr/bin/aa-virt
assert_ok "aa-virt install (hook mode)" /usr/bin/aa-virt install
assert_exists "install put aa-virt-load.service in place" /etc/systemd/system/aa-virt-load.service
for d in libvirtd lxc; do
    assert_contains "$d.service wants aa-virt-load.service (install's drop-in)" \
        "$(cat "/etc/systemd/system/$d.service.d/aa-virt-load.conf" 2>&1)" "Wants=aa-virt-load.service"
done
systemctl daemon-reload
assert_contains "systemd orders aa-virt-load.service before libvirtd" \
    "$(systemctl show -p Before --value aa-virt-load.service)" libvirtd.service
# The tiny guests have no OS to answer libvirt-guests' ACPI shutdown at the
# reboot: give up after 5 s instead of 300 (they then go down with the host,
# as guests that ignore shutdown do on a real host).
echo 'SHUTDOWN_TIMEOUT=5' >> /etc/default/libvirt-guests
assert_ok "libvirtd restarts (hooks are found at start)" systemctl restart libvirtd
wait_for 30 virsh version || fail "libvirtd does not answer after restart"

rb_static_guest "$RB_HOOK" "$RB_HOOK_UUID"
assert_ok "virsh autostart $RB_HOOK" virsh autostart "$RB_HOOK"
assert_ok "virsh start $RB_HOOK (the prepare hook loads its policy)" virsh start "$RB_HOOK"
assert_eq "$RB_HOOK runs as libvirt-$RB_HOOK_UUID (enforce)" "libvirt-$RB_HOOK_UUID (enforce)" "$(rb_qemu_label "$RB_HOOK")"
rb_static_guest "$RB_COLD" "$RB_COLD_UUID"

# The container, in the default lxcpath, which lxc.service autostarts.
assert_ok "lxc-create $RB_CT (busybox)" lxc-create -P "$RB_LP" -t busybox -n "$RB_CT"
cfg=$RB_LP/$RB_CT/config
sed -i -e '/^lxc\.net\.0\./d' "$cfg"
printf 'lxc.net.0.type = empty\nlxc.start.auto = 1\n' >> "$cfg"
assert_ok "aa-virt lxc enable $RB_CT" /usr/bin/aa-virt lxc enable -P "$RB_LP" "$RB_CT" --inline
assert_ok "lxc-start $RB_CT" lxc-start -P "$RB_LP" -n "$RB_CT" -d
assert_match "$RB_CT's init is stacked before the reboot" "$(rb_ct_label)" \
    '^lxc-.*//&:lxc-.*:(//)?unconfined \(enforce\)$'

assert_ok "aa-virt list --check passes before the reboot" /usr/bin/aa-virt list --check --no-denials
reboot_after_case
