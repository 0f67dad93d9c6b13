# 70-abi-qemu: what the policy ABI a guest profile declares means for a
# confined QEMU on this kernel. Helper mode (as in 10-libvirt-helper); the
# admin-editable /etc/apparmor.d/libvirt/libvirt-<uuid> carries the abi line
# and the helper loads from it at every start and hotplug, so the case sets
# the line there, as an admin would. The guest has an io_uring disk and
# gets a disk hotplugged; QEMU's monitor is a unix socket.
#
# abi 3.0 (both releases): the kernel does not mediate user namespace
# creation for the profile, so `unshare -U` in the guest's label works.
# abi 4.0 (Debian 13 only; Debian 12's AppArmor 3.0.8 has no abi/4.0 and
# kernel 6.1 no userns mediation): `unshare -U` in the label is denied and
# logged, while QEMU starts, runs, hotplugs and stops with no other denial.
# Asserted on the kernel's view (features, attr/current, kernel log).

NAME=aavt-abi
UUID=7d3e9f10-2a4b-4c5d-8e6f-1a2b3c4d5e6f
PROFILE=libvirt-$UUID
DIR=/var/lib/libvirt/images/aavt-abi
TEMPLATE=/etc/apparmor.d/libvirt/$PROFILE
QEMU=$(command -v qemu-system-x86_64)
export LIBVIRT_DEFAULT_URI=qemu:///system

# --- what this kernel and parser offer ---------------------------------------
# has DIR WORD: the kernel lists WORD in features/DIR/mask.
has() { grep -qw "$2" "$AA_SECFS/features/$1/mask" 2>/dev/null && echo yes || echo no; }
note "Debian $DEBIAN, kernel $(uname -r), $(apparmor_parser --version 2>&1 | head -n 1)"
note "features: $(ls "$AA_SECFS/features" | tr '\n' ' ')"
note "features/namespaces/mask: $(cat "$AA_SECFS/features/namespaces/mask" 2>/dev/null)"
note "features/network: $(ls "$AA_SECFS/features/network" 2>/dev/null | tr '\n' ' ')"
note "features/io_uring/mask: $(cat "$AA_SECFS/features/io_uring/mask" 2>/dev/null)"
note "abi files: $(ls /etc/apparmor.d/abi 2>/dev/null | tr '\n' ' ')"
note "kernel.apparmor_restrict_unprivileged_userns=$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns 2>/dev/null || echo absent)" \
    "kernel.io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo absent)"
case $DEBIAN in
13)
    assert_eq "kernel 6.12 mediates user namespace creation (features/namespaces/mask)" yes "$(has namespaces userns_create)"
    assert_eq "kernel 6.12 mediates io_uring sqpoll (features/io_uring/mask)" yes "$(has io_uring sqpoll)"
    assert_exists "AppArmor 4.1 ships abi/4.0" /etc/apparmor.d/abi/4.0
    ;;
*)
    # Debian 12: kernel 6.1 and AppArmor 3.0.8 predate the AppArmor 4 classes.
    assert_eq "kernel 6.1 does not mediate user namespace creation" no "$(has namespaces userns_create)"
    assert_eq "kernel 6.1 does not mediate io_uring" no "$(has io_uring sqpoll)"
    assert_eq "AppArmor 3.0.8 has no abi/4.0" no "$([ -e /etc/apparmor.d/abi/4.0 ] && echo yes || echo no)"
    ;;
esac
assert_ok "control: unconfined root creates a user namespace" unshare -U "$QEMU" --version

# --- aa-virt as libvirt's helper ----------------------------------------------
helper_mode_cleanups
assert_ok "aa-virt install --mode helper" /usr/bin/aa-virt install --mode helper
assert_ok "libvirtd restarts" systemctl restart libvirtd
wait_for 30 virsh version || fail "libvirtd does not answer after restart"

mkdir -p "$DIR"
on_exit rm -rf "$DIR"
qemu-img create -q -f raw "$DIR/root.img" 16M
qemu-img create -q -f raw "$DIR/hot.img" 8M
printf HOT | dd of="$DIR/hot.img" conv=notrunc status=none
# The system disk through io_uring (QEMU's io_uring_setup at start).
tiny_domain "$NAME" "$UUID" "$DIR/root.img" raw \
    "    <controller type='scsi' index='0' model='virtio-scsi'/>" \
    | sed "s#<driver name='qemu' type='raw'/>#<driver name='qemu' type='raw' io='io_uring'/>#" \
    > "$CASE_TMP/dom.xml"
assert_contains "the domain asks for io_uring" "$(cat "$CASE_TMP/dom.xml")" "io='io_uring'"
on_exit virsh undefine "$NAME"
assert_ok "virsh define" virsh define "$CASE_TMP/dom.xml"
on_exit virsh destroy "$NAME"
assert_ok "virsh start (creates the admin-editable profile file)" virsh start "$NAME"
assert_exists "the helper created $TEMPLATE" "$TEMPLATE"
note "abi line aa-virt rendered: $(grep -m1 '^abi ' "$TEMPLATE")"
assert_ok "virsh destroy" virsh destroy "$NAME"

in_guest() { aa-exec -p "$PROFILE" -- "$@"; }
guest_denials() { kernel_log | tail -n +"$((START + 1))" | grep 'apparmor="DENIED"' | grep -F "profile=\"$PROFILE\""; }

# set_abi FILE ABI: the file's abi line becomes ABI ("none": no abi line).
set_abi() {
    sed -i '/^abi </d' "$1"
    [ "$2" = none ] || sed -i "s#^\#include <tunables/global>#abi <abi/$2>,\n&#" "$1"
}
# start_with ABI: set the abi line, start, and check the guest runs confined.
start_with() {
    set_abi "$TEMPLATE" "$1"
    if [ "$1" = none ]; then want=; else want="abi <abi/$1>,"; fi
    assert_eq "the profile file declares abi $1" "$want" "$(grep -m1 '^abi ' "$TEMPLATE")"
    START=$(kernel_log | wc -l)
    assert_ok "abi $1: virsh start" virsh start "$NAME"
    pid=$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)
    assert_eq "abi $1: QEMU carries libvirt-<uuid> (enforce) (kernel view)" "$PROFILE (enforce)" "$(aa_label "$pid")"
    sleep 2
    assert_contains "abi $1: QEMU runs and answers on its unix monitor socket" \
        "$(virsh qemu-monitor-command --hmp "$NAME" 'info status' 2>&1)" "VM status: running"
    assert_contains "abi $1: QEMU holds an io_uring instance (kernel view: its fds)" \
        "$(ls -l "/proc/$pid/fd" 2>&1)" "anon_inode:[io_uring]"
}

# --- abi 3.0 ------------------------------------------------------------------
start_with 3.0
assert_ok "abi 3.0: unshare -U in the guest's label works (no userns mediation in 3.0)" \
    in_guest unshare -U "$QEMU" --version
assert_eq "abi 3.0: nothing denied to the guest" "" "$(guest_denials)"
assert_ok "abi 3.0: virsh destroy" virsh destroy "$NAME"

# --- no abi line (as libvirt's own TEMPLATE.qemu): the parser's pinned
# policy-features (/etc/apparmor/parser.conf) decide -----------------------------
start_with none
_run in_guest unshare -U "$QEMU" --version
note "no abi line: unshare -U in the label: rc=$LAST_RC $(printf '%s' "$LAST_OUT" | head -n 1)"
note "no abi line: guest denials: $(guest_denials | sed 's/.*apparmor="DENIED" //' | cut -c1-120 | tr '\n' '|')"
assert_eq "no abi line: nothing denied to the guest but userns_create" "" \
    "$(guest_denials | grep -v 'operation="userns_create"')"
assert_ok "no abi line: virsh destroy" virsh destroy "$NAME"

# --- abi 4.0 ------------------------------------------------------------------
if [ "$DEBIAN" = 12 ]; then
    # Debian 12: AppArmor 3.0.8 has no abi/4.0, so no 4.0 profile can be built.
    assert_fails "Debian 12: a profile declaring abi 4.0 does not compile" \
        sh -c "cp '$TEMPLATE' '$CASE_TMP/p4' && sed -i '/^abi </d; s|^#include <tunables/global>|abi <abi/4.0>,\n&|' '$CASE_TMP/p4' && apparmor_parser -Q -K '$CASE_TMP/p4'"
else
    start_with 4.0
    kernel_log_mark
    assert_denied "abi 4.0: unshare -U in the guest's label is denied" in_guest unshare -U "$QEMU" --version
    assert_kernel_log "abi 4.0: the kernel logs the userns_create denial for the guest" \
        "apparmor=\"DENIED\" operation=\"userns_create\".*profile=\"$PROFILE\""
    assert_ok "abi 4.0: virsh attach-disk --live" virsh attach-disk "$NAME" "$DIR/hot.img" sda \
        --targetbus scsi --subdriver raw --live
    assert_contains "abi 4.0: the guest has the hotplugged disk (QEMU's view)" \
        "$(virsh qemu-monitor-command --hmp "$NAME" 'info block' 2>&1)" "$DIR/hot.img"
    assert_eq "abi 4.0: the hotplugged disk is readable in the label" HOT "$(in_guest head -c 3 "$DIR/hot.img" 2>&1)"
    assert_ok "abi 4.0: virsh detach-disk --live" virsh detach-disk "$NAME" sda --live
    assert_eq "abi 4.0: QEMU still carries the profile" "$PROFILE (enforce)" "$(aa_label "$pid")"
    assert_eq "abi 4.0: nothing but the provoked userns_create was denied to the guest" "" \
        "$(guest_denials | grep -v 'operation="userns_create"')"
    assert_ok "abi 4.0: virsh destroy" virsh destroy "$NAME"
fi
wait_for 10 sh -c "! grep -q '^$PROFILE ' $AA_SECFS/profiles"
assert_eq "the profile is unloaded after destroy" "" "$(aa_profile_mode "$PROFILE")"
assert_ok "virsh undefine" virsh undefine "$NAME"
rm -f "$TEMPLATE"
assert_ok "aa-virt uninstall" /usr/bin/aa-virt uninstall
