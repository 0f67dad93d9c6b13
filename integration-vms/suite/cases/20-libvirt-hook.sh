# Hook mode on a real AppArmor kernel: `aa-virt install` puts the qemu hook,
# aa-virt's own profile and the libvirtd override in place; libvirtd (under
# Debian's enforced profile) runs the hook, which loads libvirt-<uuid>
# before QEMU starts; QEMU, with a static apparmor seclabel, carries that
# label; stop unloads it; a restricted disk path does not start and the
# reason is in libvirt's error. Everything is asserted on the kernel's view.

NAME=aavt-hook
UUID=5e1f3a2b-7c4d-4e6f-8a9b-0c1d2e3f4a5b
PROFILE=libvirt-$UUID
IMG=/var/lib/libvirt/images/aavt-hook.img
FILES=/etc/apparmor.d/libvirt/$PROFILE.files

qemu-img create -q -f raw "$IMG" 16M
on_exit rm -f "$IMG"

# Cleanups run last-registered first: uninstall, then restart the daemon.
on_exit systemctl restart libvirtd
on_exit "$AA_VIRT" uninstall
assert_ok "aa-virt install" "$AA_VIRT" install
note "install: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"
assert_eq "aa-virt's own profile is loaded" enforce "$(aa_profile_mode aa-virt)"
assert_contains "libvirtd's local override includes aa-virt's snippet" \
    "$(cat /etc/apparmor.d/local/usr.sbin.libvirtd)" "usr.sbin.libvirtd.aa-virt"
assert_ok "libvirtd restarts (hooks are found at start)" systemctl restart libvirtd
wait_for 30 virsh -c qemu:///system version || fail "libvirtd does not answer after restart"
export LIBVIRT_DEFAULT_URI=qemu:///system
ldpid=$(pidof libvirtd)
assert_eq "libvirtd runs under its enforced profile" "libvirtd (enforce)" "$(aa_label "$ldpid")"

SECLABEL="<seclabel type='static' model='apparmor' relabel='no'><label>$PROFILE</label></seclabel>"
tiny_domain "$NAME" "$UUID" "$IMG" raw "" "$SECLABEL" > "$CASE_TMP/dom.xml"

# libvirt checks a static label when the domain is defined, so load the
# profile first, as the README says: the hook's own prepare, by hand.
assert_ok "preload the profile before define (aa-virt hook ... prepare)" \
    sh -c "'$AA_VIRT' hook qemu '$NAME' prepare begin - < '$CASE_TMP/dom.xml'"
assert_eq "$PROFILE is loaded" enforce "$(aa_profile_mode "$PROFILE")"
on_exit virsh undefine "$NAME"
assert_ok "virsh define with a static apparmor label" virsh define "$CASE_TMP/dom.xml"

kernel_log_mark
on_exit virsh destroy "$NAME"
assert_ok "virsh start: the prepare hook runs under libvirtd" virsh start "$NAME"
pid=$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)
assert_match "QEMU has a pid" "$pid" '^[0-9]+$'
assert_eq "QEMU carries the profile the hook loaded (kernel view)" \
    "$PROFILE (enforce)" "$(aa_label "$pid")"
assert_match "the rules name the guest's disk" "$(cat "$FILES" 2>&1)" "\"$IMG\" rwk,"
denials() { kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep 'apparmor="DENIED"'; }
assert_not_contains "nothing denied to aa-virt's profile during the hook" "$(denials)" 'profile="aa-virt"'
assert_not_contains "nothing denied to libvirtd during the start" "$(denials)" 'profile="libvirtd"'
assert_not_contains "nothing denied to the guest during the start" "$(denials)" "profile=\"$PROFILE\""

assert_ok "virsh destroy" virsh destroy "$NAME"
wait_for 10 sh -c "[ ! -e '$FILES' ]"
assert_eq "the release hook unloaded the profile" "" "$(aa_profile_mode "$PROFILE")"
assert_eq "the release hook removed the rules file" no "$([ -e "$FILES" ] && echo yes || echo no)"
assert_exists "the admin-editable profile file stays" "/etc/apparmor.d/libvirt/$PROFILE"

# A second start: the profile is not loaded, so the prepare hook must load
# it, and the kernel's record of that load names the loader's profile:
# aa-virt's, entered through the Px rule of libvirtd's override.
kernel_log_mark
assert_ok "virsh start again" virsh start "$NAME"
pid=$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)
assert_eq "QEMU carries the profile again" "$PROFILE (enforce)" "$(aa_label "$pid")"
assert_kernel_log "the hook loaded it from within aa-virt's profile (libvirtd's Px override)" \
    "apparmor=\"STATUS\" operation=\"profile_(load|replace)\" profile=\"aa-virt\" name=\"$PROFILE\""
assert_not_contains "nothing denied to aa-virt, libvirtd or the guest during the second start" \
    "$(denials | grep -E "profile=\"(aa-virt|libvirtd|$PROFILE)\"")" 'apparmor="DENIED"'

# aa-virt reload: an admin's local/ addition reaches the running guest only
# through a reload; a local/ file that does not compile keeps the old policy.
LOCAL=/etc/apparmor.d/local/$PROFILE
PROBE=$CASE_TMP/reload-probe
echo probe > "$PROBE"
on_exit rm -f "$LOCAL"
in_guest() { aa-exec -p "$PROFILE" -- "$@"; }
assert_denied "the probe file is not the guest's" in_guest cat "$PROBE"
printf '  "%s" r,\n' "$PROBE" > "$LOCAL"
assert_denied "a local/ edit alone changes nothing in the kernel" in_guest cat "$PROBE"
assert_ok "aa-virt reload --dry-run" "$AA_VIRT" reload --dry-run
assert_contains "the dry run names the running guest" "$LAST_OUT" "$PROFILE"
assert_denied "the dry run loaded nothing" in_guest cat "$PROBE"
assert_ok "aa-virt reload $NAME" "$AA_VIRT" reload "$NAME"
assert_eq "after reload the guest's label reads the probe" probe "$(in_guest cat "$PROBE" 2>&1)"
assert_eq "QEMU still carries the profile, enforced" "$PROFILE (enforce)" "$(aa_label "$pid")"
echo "  this is not a rule" >> "$LOCAL"
assert_fails "aa-virt reload with a local/ file that does not compile" "$AA_VIRT" reload "$NAME"
assert_contains "the error names the guest's profile" "$LAST_OUT" "$PROFILE"
assert_eq "the previous policy stays in force" probe "$(in_guest cat "$PROBE" 2>&1)"
rm -f "$LOCAL"
assert_ok "aa-virt reload after the local/ file is removed" "$AA_VIRT" reload "$NAME"
assert_denied "the probe is denied again (the cache did not bring the rule back)" in_guest cat "$PROBE"

# The same across restarts: the hook loads through the compiled-policy
# cache, which must not bring back a local/ rule that was removed.
printf '  "%s" r,\n' "$PROBE" > "$LOCAL"
assert_ok "virsh destroy (a local/ rule added)" virsh destroy "$NAME"
assert_ok "virsh start with the local/ rule" virsh start "$NAME"
assert_eq "the hook loaded the local/ rule" probe "$(in_guest cat "$PROBE" 2>&1)"
rm -f "$LOCAL"
assert_ok "virsh destroy (the local/ rule removed)" virsh destroy "$NAME"
assert_ok "virsh start without it" virsh start "$NAME"
assert_denied "the removed rule is not loaded back from the cache" in_guest cat "$PROBE"
assert_ok "virsh start again, nothing changed" sh -c "virsh destroy '$NAME' && virsh start '$NAME'"
assert_denied "still denied when the cache is used" in_guest cat "$PROBE"
assert_ok "virsh destroy again" virsh destroy "$NAME"

# A restricted disk path: no start, aa-virt's reason in libvirt's error.
BAD=aavt-hook-bad
BAD_UUID=6f2a4b3c-8d5e-4f70-9bac-1d2e3f4a5b6c
tiny_domain "$BAD" "$BAD_UUID" /etc/shadow raw "" "<seclabel type='none' model='apparmor'/>" > "$CASE_TMP/bad.xml"
on_exit virsh undefine "$BAD"
assert_ok "virsh define a guest whose disk is /etc/shadow" virsh define "$CASE_TMP/bad.xml"
assert_fails "virsh start refuses it" virsh start "$BAD"
assert_contains "libvirt's error carries aa-virt's reason" "$LAST_OUT" "refusing /etc/shadow"
assert_eq "no profile was loaded for it" "" "$(aa_profile_mode "libvirt-$BAD_UUID")"

assert_ok "virsh undefine" virsh undefine "$NAME"
assert_ok "aa-virt uninstall" "$AA_VIRT" uninstall
assert_eq "aa-virt's profile is unloaded" "" "$(aa_profile_mode aa-virt)"
assert_not_contains "libvirtd's override is gone" \
    "$(cat /etc/apparmor.d/local/usr.sbin.libvirtd)" "aa-virt"
