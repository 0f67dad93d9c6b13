# 81-reboot-helper: boot 2 of the reboot cases. After 80's reboot of a
# hook-mode host: aa-virt-load.service loaded every guest's policy before
# libvirtd and lxc.service started and logged, per guest, cache or compile
# and the time; libvirt autostarted the hook-mode guest confined (its
# prepare hook); the other one starts confined with `virsh start`; the
# container came back stacked in its namespace; `list --check` passes.
# Then the host switches to helper mode (hook and helper mode cannot coexist
# on one host: installing one undoes the other), two dynamic-label guests
# come in, one with autostart, and the host reboots again (82).

. "$SUITE_DIR/reboot.sh"
rb_new_boot 80-reboot-hook 2
rb_boot_unit_ran
rb_boot_log "$RB_HOOK_UUID" "$RB_COLD_UUID"

all=$(virsh list --all --name 2>&1)
assert_contains "virsh list --all has $RB_HOOK" "$all" "$RB_HOOK"
assert_contains "virsh list --all has $RB_COLD" "$all" "$RB_COLD"
assert_eq "libvirt autostarted $RB_HOOK confined: libvirt-$RB_HOOK_UUID (enforce)" \
    "libvirt-$RB_HOOK_UUID (enforce)" "$(rb_qemu_label "$RB_HOOK")"
assert_eq "$RB_COLD was not autostarted" "shut off" "$(virsh domstate "$RB_COLD" 2>&1 | head -n 1)"
assert_ok "virsh start $RB_COLD" virsh start "$RB_COLD"
assert_eq "$RB_COLD runs as libvirt-$RB_COLD_UUID (enforce)" "libvirt-$RB_COLD_UUID (enforce)" "$(rb_qemu_label "$RB_COLD")"
rb_ct_stacked
assert_ok "aa-virt list --check exits 0 after the reboot" /usr/bin/aa-virt list --check --no-denials
note "list: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"

# --- the same host, switched to helper mode ----------------------------------
# Static-label guests need hook mode: in helper mode libvirt never runs the
# helper for them and there is no hook, so nothing re-renders their rules at
# a start (libvirt's per-start domain-<id> directory, for one). A first
# version of this case kept them across the second reboot; one then failed
# to start ("master-key.aes: Permission denied" under a new domain id). So
# they go before the switch, as an admin switching modes must do.
for g in "$RB_HOOK" "$RB_COLD"; do
    assert_ok "virsh destroy $g" virsh destroy "$g"
    assert_ok "virsh undefine $g (static-label guests need hook mode)" virsh undefine "$g"
    rm -f "$RB_IMG/$g.img"
done
assert_ok "aa-virt install --mode helper (the hook goes, libvirt's helper is diverted)" \
    /usr/bin/aa-virt install --mode helper
assert_ok "libvirtd restarts" systemctl restart libvirtd
wait_for 30 virsh version || fail "libvirtd does not answer after restart"
rb_dynamic_guest "$RB_HELPER" "$RB_HELPER_UUID"
assert_ok "virsh autostart $RB_HELPER" virsh autostart "$RB_HELPER"
assert_ok "virsh start $RB_HELPER (libvirt runs aa-virt as its helper)" virsh start "$RB_HELPER"
assert_eq "$RB_HELPER runs as libvirt-$RB_HELPER_UUID (enforce)" \
    "libvirt-$RB_HELPER_UUID (enforce)" "$(rb_qemu_label "$RB_HELPER")"
# The guest without autostart has run once before the reboot, as on a real
# host: its profile file stays after the stop (the helper's -D removes only
# the rules), so the boot loads it too.
rb_dynamic_guest "$RB_HCOLD" "$RB_HCOLD_UUID"
assert_ok "virsh start $RB_HCOLD" virsh start "$RB_HCOLD"
assert_eq "$RB_HCOLD runs as libvirt-$RB_HCOLD_UUID (enforce)" \
    "libvirt-$RB_HCOLD_UUID (enforce)" "$(rb_qemu_label "$RB_HCOLD")"
assert_ok "virsh destroy $RB_HCOLD" virsh destroy "$RB_HCOLD"
reboot_after_case
