# Drop-in helper mode on a real AppArmor kernel, set up the way a user
# does it: `aa-virt install --mode helper` diverts libvirt's
# /usr/lib/libvirt/virt-aa-helper (dpkg-divert) and puts a symlink to the
# installed /usr/bin/aa-virt in its place; libvirtd's AppArmor driver runs it
# with dynamic labels (no seclabel in the domain) at start, hotplug, unplug
# and stop. libvirtd execs the symlink, the kernel resolves it to
# /usr/bin/aa-virt, and the daemon override install ships
# (local/usr.sbin.libvirtd.aa-virt: `/usr/bin/aa-virt Px -> aa-virt`) runs it
# under aa-virt's own profile; Debian's usr.lib.libvirt.virt-aa-helper
# profile attaches to the path /usr/lib/libvirt/virt-aa-helper and never
# sees it. Helper mode installs no hook, so everything below is the
# helper's work alone.
#
# Asserted on the kernel's view: QEMU's label, reads from inside that label
# (aa-exec), the kernel's DENIED and STATUS records, the profile list.

NAME=aavt-helper
UUID=0a7c1e52-3b9d-4f60-8e21-5c4d3b2a1f10
PROFILE=libvirt-$UUID
DIR=/var/lib/libvirt/images/aavt-helper
FILES=/etc/apparmor.d/libvirt/$PROFILE.files
HELPER=/usr/lib/libvirt/virt-aa-helper
export LIBVIRT_DEFAULT_URI=qemu:///system

# --- put aa-virt in place of virt-aa-helper ----------------------------------
# Cleanups run last-registered first: guest, uninstall, binary, daemon; the
# divert and symlink cleanups are a safety net if uninstall cannot run.
helper_sum=$(sha256sum < "$HELPER")
helper_mode_cleanups
assert_ok "aa-virt install --mode helper (abstraction, own profile, libvirtd override, diversion)" \
    /usr/bin/aa-virt install --mode helper
note "install: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"
assert_eq "libvirt's helper is diverted to $HELPER.real" "$HELPER.real" "$(dpkg-divert --truename "$HELPER")"
assert_eq "$HELPER is a symlink to /usr/bin/aa-virt" /usr/bin/aa-virt "$(readlink "$HELPER")"
assert_eq "libvirt's helper is kept byte for byte" "$helper_sum" "$(sha256sum < "$HELPER.real")"
assert_eq "helper mode installs no hook" no "$([ -e /etc/libvirt/hooks/qemu.d/aa-virt ] && echo yes || echo no)"
assert_contains "called as virt-aa-helper, aa-virt speaks the helper's command line" \
    "$("$HELPER" -h 2>&1)" "virt-aa-helper"
assert_exists "the abstraction is installed" /etc/apparmor.d/abstractions/aa-virt-qemu
assert_eq "aa-virt's own profile is loaded" enforce "$(aa_profile_mode aa-virt)"
assert_contains "libvirtd's override execs /usr/bin/aa-virt under aa-virt's profile" \
    "$(cat /etc/apparmor.d/local/usr.sbin.libvirtd.aa-virt 2>&1)" "\"/usr/bin/aa-virt\" Px -> aa-virt"
assert_ok "aa-virt install --mode helper again changes nothing" /usr/bin/aa-virt install --mode helper
assert_contains "the second install says so" "$LAST_OUT" "nothing changed"
assert_ok "libvirtd restarts" systemctl restart libvirtd
wait_for 30 virsh version || fail "libvirtd does not answer after restart"
assert_eq "libvirtd runs under its enforced profile" "libvirtd (enforce)" "$(aa_label "$(pidof libvirtd)")"

# --- the guest: qcow2 chain top -> base, a serial log file, a 9p share -------
mkdir -p "$DIR/share"
on_exit rm -rf "$DIR"
echo "9p-share-file" > "$DIR/share/hello"
qemu-img create -q -f qcow2 "$DIR/base.qcow2" 16M
qemu-img create -q -f qcow2 -b "$DIR/base.qcow2" -F qcow2 "$DIR/top.qcow2"
qemu-img create -q -f qcow2 "$DIR/neighbour.qcow2" 16M
qemu-img create -q -f raw "$DIR/hot.img" 8M
printf HOT | dd of="$DIR/hot.img" conv=notrunc status=none
: > "$DIR/serial.log"
tiny_domain "$NAME" "$UUID" "$DIR/top.qcow2" qcow2 "\
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <filesystem type='mount' accessmode='passthrough'>
      <source dir='$DIR/share'/>
      <target dir='share'/>
    </filesystem>
    <serial type='file'>
      <source path='$DIR/serial.log'/>
      <target port='0'/>
    </serial>" > "$CASE_TMP/dom.xml"

START_MARK=$(kernel_log | wc -l)
on_exit virsh undefine "$NAME"
assert_ok "virsh define (no seclabel: libvirt's dynamic AppArmor label)" virsh define "$CASE_TMP/dom.xml"
kernel_log_mark
on_exit virsh destroy "$NAME"
assert_ok "virsh start: libvirt runs aa-virt as its helper" virsh start "$NAME"
pid=$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)
assert_match "QEMU has a pid" "$pid" '^[0-9]+$'
assert_eq "QEMU carries libvirt-<uuid> (enforce) (kernel view)" "$PROFILE (enforce)" "$(aa_label "$pid")"
assert_eq "the kernel lists the profile in enforce mode" enforce "$(aa_profile_mode "$PROFILE")"
assert_kernel_log "the helper loaded it from within aa-virt's profile (libvirtd's Px override)" \
    "apparmor=\"STATUS\" operation=\"profile_(load|replace)\" profile=\"aa-virt\" name=\"$PROFILE\""
assert_contains "the helper wrote aa-virt's .files" "$(head -n 1 "$FILES" 2>&1)" "MANAGED BY aa-virt"
files=$(cat "$FILES" 2>&1)
assert_contains "the rules grant the top image" "$files" "\"$DIR/top.qcow2\" rwk,"
assert_contains "the rules grant the backing file read-only" "$files" "\"$DIR/base.qcow2\" rk,"
assert_contains "the rules grant the serial log" "$files" "\"$DIR/serial.log\" rw,"
assert_contains "the rules grant the 9p share" "$files" "\"$DIR/share/**\" rwl,"
assert_not_contains "the rules do not name the neighbour" "$files" neighbour
sleep 2
assert_eq "the guest runs (libvirt)" running "$(virsh domstate "$NAME" 2>&1 | head -n 1)"
assert_contains "the guest runs (QEMU's monitor)" \
    "$(virsh qemu-monitor-command --hmp "$NAME" 'info status' 2>&1)" "VM status: running"
assert_ok "QEMU is alive" kill -0 "$pid"

# --- from inside the guest's label -------------------------------------------
in_guest() { aa-exec -p "$PROFILE" -- "$@"; }
assert_eq "the top image is readable in the label (qcow2 magic)" QFI \
    "$(in_guest head -c 3 "$DIR/top.qcow2" 2>&1)"
assert_eq "the backing file is readable in the label" QFI \
    "$(in_guest head -c 3 "$DIR/base.qcow2" 2>&1)"
assert_eq "the 9p share is readable in the label" 9p-share-file \
    "$(in_guest cat "$DIR/share/hello" 2>&1)"
assert_eq "root can read /etc/shadow unconfined (so a denial is AppArmor's)" 0 \
    "$(head -c 1 /etc/shadow >/dev/null 2>&1; echo $?)"
kernel_log_mark
assert_denied "the neighbouring image is denied" in_guest head -c 3 "$DIR/neighbour.qcow2"
assert_denied "/etc/shadow is denied" in_guest head -c 3 /etc/shadow
assert_kernel_log "the kernel logs the neighbour denial" \
    "apparmor=\"DENIED\" operation=\"open\".*profile=\"$PROFILE\" name=\"$DIR/neighbour.qcow2\""
assert_kernel_log "the kernel logs the /etc/shadow denial" \
    "apparmor=\"DENIED\" operation=\"open\".*profile=\"$PROFILE\" name=\"/etc/shadow\""

# --- hotplug: SCSI, so that unplug needs no guest OS to acknowledge it --------
assert_denied "before hotplug, the new disk is denied" in_guest head -c 3 "$DIR/hot.img"
assert_ok "virsh attach-disk --live" virsh attach-disk "$NAME" "$DIR/hot.img" sda \
    --targetbus scsi --subdriver raw --live
assert_contains "the guest has the disk (QEMU's view)" \
    "$(virsh qemu-monitor-command --hmp "$NAME" 'info block' 2>&1)" "$DIR/hot.img"
assert_contains "the helper's -F added it to .files" "$(cat "$FILES" 2>&1)" "\"$DIR/hot.img\" rwk,"
assert_eq "the hotplugged disk is readable in the label" HOT "$(in_guest head -c 3 "$DIR/hot.img" 2>&1)"
assert_eq "QEMU still carries the profile" "$PROFILE (enforce)" "$(aa_label "$pid")"

assert_ok "virsh detach-disk --live" virsh detach-disk "$NAME" sda --live
wait_for 20 sh -c "! virsh domblklist '$NAME' | grep -q '$DIR/hot.img'"
assert_not_contains "the guest no longer has the disk (libvirt's view)" \
    "$(virsh domblklist "$NAME" 2>&1)" "$DIR/hot.img"
wait_for 20 sh -c "! grep -q hot.img '$FILES'"
assert_not_contains "the helper's -r dropped it from .files" "$(cat "$FILES" 2>&1)" hot.img
kernel_log_mark
assert_denied "after unplug, the disk is denied again" in_guest head -c 3 "$DIR/hot.img"
assert_kernel_log "the kernel logs that denial" \
    "apparmor=\"DENIED\".*profile=\"$PROFILE\" name=\"$DIR/hot.img\""
assert_eq "the top image is still readable" QFI "$(in_guest head -c 3 "$DIR/top.qcow2" 2>&1)"

# --- destroy: the helper's -D unloads the profile -----------------------------
denials=$(kernel_log | tail -n +"$((START_MARK + 1))" | grep 'apparmor="DENIED"' | grep -E 'profile="(aa-virt|libvirtd)"')
assert_eq "nothing was denied to aa-virt or libvirtd while the guest ran" "" "$denials"
assert_ok "virsh destroy" virsh destroy "$NAME"
wait_for 10 sh -c "! grep -q '^$PROFILE ' $AA_SECFS/profiles"
assert_eq "the profile is unloaded (gone from the kernel's list)" "" "$(aa_profile_mode "$PROFILE")"
assert_eq "the generated .files is removed" no "$([ -e "$FILES" ] && echo yes || echo no)"
assert_exists "the admin-editable profile file stays (as with libvirt)" "/etc/apparmor.d/libvirt/$PROFILE"

# --- put libvirt's helper back (on_exit does it too if the case dies early) ---
assert_ok "virsh undefine" virsh undefine "$NAME"
assert_ok "aa-virt uninstall (puts libvirt's helper back)" /usr/bin/aa-virt uninstall
assert_eq "libvirt's helper is back byte for byte" "$helper_sum" "$(sha256sum < "$HELPER" 2>&1)"
assert_eq "$HELPER is libvirt's own binary again" "regular file, not diverted" \
    "$([ -f "$HELPER" ] && [ ! -L "$HELPER" ] && echo "regular file")$([ "$(dpkg-divert --truename "$HELPER")" = "$HELPER" ] && echo ", not diverted")"
