# Crash and restart, in hook mode (issue 7, case 6): a guest confined by
# aa-virt's qemu hook (static libvirt-<uuid> seclabel, as in 20-libvirt-hook)
# keeps running and confined when libvirtd is SIGKILLed and started again
# (the hook's `reconnect` finds the profile loaded and leaves it so), and
# when all AppArmor policy is reloaded (`systemctl reload apparmor`);
# `aa-virt list --check` still reports it correctly; destroy cleans up.
# Asserted on the kernel's view (label, profile list, STATUS records) and on
# the hook's own journal lines.

NAME=aavt-crash
UUID=3c9e5d71-0b2a-4c8f-9d6e-7a1b2c3d4e5f
PROFILE=libvirt-$UUID
IMG=/var/lib/libvirt/images/aavt-crash.img
FILES=/etc/apparmor.d/libvirt/$PROFILE.files
export LIBVIRT_DEFAULT_URI=qemu:///system

hooklog() { journalctl -q --no-pager -o cat -t aa-virt 2>/dev/null; }
hooklog_since() { hooklog | tail -n +"$(($1 + 1))"; }

qemu-img create -q -f raw "$IMG" 16M
on_exit rm -f "$IMG"

# Cleanups run last-registered first: guest, uninstall, daemon restart.
on_exit systemctl restart libvirtd
on_exit "$AA_VIRT" uninstall
assert_ok "aa-virt install (hook mode)" "$AA_VIRT" install
assert_exists "the qemu hook is installed" /etc/libvirt/hooks/qemu.d/aa-virt
assert_ok "libvirtd restarts (hooks are found at start)" systemctl restart libvirtd
wait_for 30 virsh version || fail "libvirtd does not answer after restart"

tiny_domain "$NAME" "$UUID" "$IMG" raw "" \
    "<seclabel type='static' model='apparmor' relabel='no'><label>$PROFILE</label></seclabel>" \
    > "$CASE_TMP/dom.xml"
# libvirt checks a static label at define time: load it first (the hook's prepare).
assert_ok "preload the profile (aa-virt hook ... prepare)" \
    sh -c "'$AA_VIRT' hook qemu '$NAME' prepare begin - < '$CASE_TMP/dom.xml'"
on_exit virsh undefine "$NAME"
assert_ok "virsh define" virsh define "$CASE_TMP/dom.xml"
on_exit virsh destroy "$NAME"
assert_ok "virsh start" virsh start "$NAME"
qpid=$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)
assert_match "QEMU has a pid" "$qpid" '^[0-9]+$'
assert_eq "QEMU carries $PROFILE (enforce)" "$PROFILE (enforce)" "$(aa_label "$qpid")"

# --- SIGKILL libvirtd while the guest runs, then start it again ---------------
ldpid=$(pidof libvirtd)
assert_match "libvirtd has a pid" "$ldpid" '^[0-9]+$'
hl=$(hooklog | wc -l)
assert_ok "kill -KILL libvirtd" kill -KILL "$ldpid"
wait_for 10 sh -c "! kill -0 $ldpid" || fail "libvirtd ($ldpid) survived SIGKILL"
assert_ok "QEMU survives the daemon's death" kill -0 "$qpid"
assert_eq "QEMU keeps its label with no daemon" "$PROFILE (enforce)" "$(aa_label "$qpid")"
assert_eq "the profile stays loaded with no daemon" enforce "$(aa_profile_mode "$PROFILE")"
# systemd may restart it by itself (Restart=on-failure); start is idempotent.
assert_ok "systemctl start libvirtd" systemctl start libvirtd
wait_for 60 virsh version || fail "libvirtd does not answer after the restart"
newpid=$(pidof libvirtd)
assert_ne "a new libvirtd runs" "$ldpid" "$newpid"
wait_for 30 sh -c "journalctl -q --no-pager -o cat -t aa-virt | tail -n +$((hl + 1)) | grep -q 'reconnect hook: guest $NAME:'"
assert_contains "the reconnect hook found the profile loaded and kept it" \
    "$(hooklog_since "$hl")" "reconnect hook: guest $NAME: profile $PROFILE verified (already loaded, unchanged)"
assert_eq "libvirt reconnected: the guest is running" running "$(virsh domstate "$NAME" 2>&1 | head -n 1)"
assert_eq "same QEMU process" "$qpid" "$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)"
assert_eq "QEMU still carries $PROFILE (enforce)" "$PROFILE (enforce)" "$(aa_label "$qpid")"
assert_eq "the profile is still loaded in enforce mode" enforce "$(aa_profile_mode "$PROFILE")"
assert_contains "libvirt talks to the guest's QEMU again" \
    "$(virsh qemu-monitor-command --hmp "$NAME" 'info status' 2>&1)" "VM status: running"

# --- reload all AppArmor policy -----------------------------------------------
kernel_log_mark
assert_ok "systemctl reload apparmor" systemctl reload apparmor
# The reload is `apparmor_parser --replace /etc/apparmor.d`, which parses the
# files directly in that directory: libvirtd's and aa-virt's profiles are
# replaced, the guest profiles in the libvirt/ subdirectory are not.
assert_kernel_log "the reload replaced libvirtd's profile" \
    "apparmor=\"STATUS\" operation=\"profile_replace\".* name=\"libvirtd\""
assert_kernel_log "the reload replaced aa-virt's profile" \
    "apparmor=\"STATUS\" operation=\"profile_replace\".* name=\"aa-virt\""
status=$(kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep 'apparmor="STATUS"' | grep -F "name=\"$PROFILE\"")
note "guest profile records during the reload: ${status:-none}"
assert_eq "the reload did not touch the guest's profile (it lives in libvirt/)" "" "$status"
assert_eq "the guest's profile is still loaded in enforce mode" enforce "$(aa_profile_mode "$PROFILE")"
assert_eq "QEMU still carries $PROFILE (enforce)" "$PROFILE (enforce)" "$(aa_label "$qpid")"
assert_eq "the guest is still running" running "$(virsh domstate "$NAME" 2>&1 | head -n 1)"

# aa-virt list: columns NAME KIND STATE PROFILE LOADED MODE LABEL-OK ...
row=$("$AA_VIRT" list -c qemu:///system --no-denials 2>&1 | awk -v n="$NAME" '$1 == n')
note "list: $row"
assert_eq "list: profile" "$PROFILE" "$(awk '{print $4}' <<<"$row")"
assert_eq "list: loaded" yes "$(awk '{print $5}' <<<"$row")"
assert_eq "list: mode" enforce "$(awk '{print $6}' <<<"$row")"
assert_eq "list: label ok" yes "$(awk '{print $7}' <<<"$row")"
assert_ok "aa-virt list --check exits 0" "$AA_VIRT" list -c qemu:///system --check

# --- destroy: the release hook cleans up --------------------------------------
hl=$(hooklog | wc -l)
assert_ok "virsh destroy" virsh destroy "$NAME"
wait_for 20 sh -c "[ ! -e '$FILES' ]"
assert_eq "the profile is unloaded" "" "$(aa_profile_mode "$PROFILE")"
assert_eq "the rules file is removed" no "$([ -e "$FILES" ] && echo yes || echo no)"
assert_ok "QEMU is gone" sh -c "! kill -0 $qpid 2>/dev/null"
assert_contains "the hook logged the unload" "$(hooklog_since "$hl")" "guest $NAME: profile $PROFILE unloaded"
assert_ok "virsh undefine" virsh undefine "$NAME"
