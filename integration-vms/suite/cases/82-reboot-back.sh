# 82-reboot-back: boot 3 of the reboot cases, after 81's reboot of the same
# host, now in helper mode, with two libvirt guests and the container:
#   - aavt-rb-helper (dynamic label, autostart): libvirt runs aa-virt as its
#     helper at autostart;
#   - aavt-rb-hcold (dynamic label, no autostart): starts confined with
#     `virsh start`;
#   - the container: lxc.service's autostart, aa-virt's pre-start hook.
# All asserted on the kernel's view; then everything is taken down.

. "$SUITE_DIR/reboot.sh"
on_exit rm -rf "$RB_STATE"
on_exit systemctl restart libvirtd
on_exit sed -i '/^SHUTDOWN_TIMEOUT=5$/d' /etc/default/libvirt-guests
on_exit rm -f /usr/bin/aa-virt
on_exit /usr/bin/aa-virt uninstall
on_exit lxc-destroy -P "$RB_LP" -f -n "$RB_CT"
for u in "$RB_HOOK_UUID" "$RB_COLD_UUID" "$RB_HELPER_UUID" "$RB_HCOLD_UUID"; do
    on_exit rm -f "/etc/apparmor.d/libvirt/libvirt-$u" "/etc/apparmor.d/libvirt/libvirt-$u.files"
    on_exit "echo -n libvirt-$u > $AA_SECFS/.remove"
done
for g in "$RB_HOOK" "$RB_COLD" "$RB_HELPER" "$RB_HCOLD"; do
    on_exit rm -f "$RB_IMG/$g.img"
    on_exit virsh undefine "$g"
    on_exit virsh destroy "$g"
done
rb_new_boot 81-reboot-helper 3
rb_boot_unit_ran
rb_boot_log "$RB_HELPER_UUID" "$RB_HCOLD_UUID"

all=$(virsh list --all --name 2>&1)
for g in "$RB_HELPER" "$RB_HCOLD"; do
    assert_contains "virsh list --all has $g" "$all" "$g"
done
assert_eq "libvirt autostarted $RB_HELPER confined (aa-virt as its helper)" \
    "libvirt-$RB_HELPER_UUID (enforce)" "$(rb_qemu_label "$RB_HELPER")"
assert_eq "$RB_HCOLD was not autostarted" "shut off" "$(virsh domstate "$RB_HCOLD" 2>&1 | head -n 1)"
assert_ok "virsh start $RB_HCOLD" virsh start "$RB_HCOLD"
assert_eq "$RB_HCOLD runs as libvirt-$RB_HCOLD_UUID (enforce)" \
    "libvirt-$RB_HCOLD_UUID (enforce)" "$(rb_qemu_label "$RB_HCOLD")"
rb_ct_stacked
assert_ok "aa-virt list --check exits 0 after the second reboot" /usr/bin/aa-virt list --check --no-denials
note "list: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"
denials=$(kernel_log | grep 'apparmor="DENIED"' | grep -E "profile=\"(aa-virt|libvirtd|libvirt-($RB_HELPER_UUID|$RB_HCOLD_UUID))\"")
assert_eq "nothing was denied to aa-virt, libvirtd or the guests in this boot" "" "$denials"
