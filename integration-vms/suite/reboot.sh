# shellcheck shell=bash
# Shared by the reboot cases 80-82 (sourced by them, after lib.sh): the
# guests they set up in one boot and look at in the next. State that must
# survive a reboot lives on the guest's disk under $RB_STATE.

RB_STATE=/var/lib/aavt-reboot
RB_LP=/var/lib/lxc          # lxc.service autostarts containers of the default lxcpath
RB_CT=aavtrb                # the LXC container (lxc.start.auto = 1)
RB_HOOK=aavt-rb-hook        # static label, autostart (hook mode, then helper mode)
RB_HOOK_UUID=8a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d
RB_COLD=aavt-rb-cold        # static label, no autostart
RB_COLD_UUID=9b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e
RB_HELPER=aavt-rb-helper    # dynamic label (helper mode), autostart
RB_HELPER_UUID=ac2d3e4f-5a6b-4c7d-8e8f-9a0b1c2d3e4f
RB_HCOLD=aavt-rb-hcold      # dynamic label (helper mode), no autostart
RB_HCOLD_UUID=bd3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f60
RB_IMG=/var/lib/libvirt/images
export LIBVIRT_DEFAULT_URI=qemu:///system

# rb_dynamic_guest NAME UUID: the smallest guest without a seclabel
# (libvirt's dynamic label: helper mode), defined.
rb_dynamic_guest() {
    qemu-img create -q -f raw "$RB_IMG/$1.img" 16M
    tiny_domain "$1" "$2" "$RB_IMG/$1.img" > "$CASE_TMP/$1.xml"
    assert_ok "$1: virsh define (no seclabel: libvirt's dynamic label)" virsh define "$CASE_TMP/$1.xml"
}

# rb_static_guest NAME UUID: the smallest guest with a static apparmor label,
# its profile written and loaded by hand (the hook's own prepare, as the
# README says: libvirt checks a static label at define), then defined.
rb_static_guest() {
    local xml=$CASE_TMP/$1.xml
    qemu-img create -q -f raw "$RB_IMG/$1.img" 16M
    tiny_domain "$1" "$2" "$RB_IMG/$1.img" raw "" \
        "<seclabel type='static' model='apparmor' relabel='no'><label>libvirt-$2</label></seclabel>" > "$xml"
    assert_ok "$1: profile written and loaded before define (aa-virt hook ... prepare)" \
        sh -c "/usr/bin/aa-virt hook qemu '$1' prepare begin - < '$xml'"
    assert_ok "$1: virsh define (static label libvirt-$2)" virsh define "$xml"
}

# rb_qemu_label NAME: the kernel's label of the guest's QEMU (waits up to
# 120 s for libvirt's autostart to get it running).
rb_qemu_label() {
    wait_for 120 sh -c "virsh domstate '$1' 2>/dev/null | grep -qx running"
    local pid
    pid=$(cat "/run/libvirt/qemu/$1.pid" 2>/dev/null)
    [ -n "$pid" ] && aa_label "$pid"
}

# rb_ct_label: the kernel's label of the container's init (waits for it).
rb_ct_label() {
    wait_for 120 sh -c "lxc-info -P '$RB_LP' -n '$RB_CT' -s -H 2>/dev/null | grep -qx RUNNING"
    local pid
    pid=$(lxc-info -P "$RB_LP" -n "$RB_CT" -p -H 2>/dev/null)
    [ -n "$pid" ] && aa_label "$pid"
}

# rb_new_boot PREV_CASE N: this boot is the one PREV_CASE asked for (else the
# case cannot assert anything and says why), and the kernel booted anew.
rb_new_boot() {
    if ! rebooted_after "$1"; then
        fail "$CASE asserts after the reboot $1 asks for: run them together (AA_VIRT_ITEST_ONLY='^8[0-2]-')"
        exit 0
    fi
    assert_ne "a new kernel boot (boot_id differs from boot $(($2 - 1))'s)" \
        "$(cat "$RB_STATE/boot_id" 2>&1)" "$(cat /proc/sys/kernel/random/boot_id)"
    cat /proc/sys/kernel/random/boot_id > "$RB_STATE/boot_id"
    note "boot $AA_ITEST_BOOT; uptime $(cut -d' ' -f1 /proc/uptime)s"
}

# rb_boot_unit_ran: aa-virt-load.service ran at this boot, succeeded, and
# was done before libvirtd and lxc.service started.
rb_boot_unit_ran() {
    assert_eq "aa-virt-load.service ran at boot and succeeded" "active success" \
        "$(systemctl show -p ActiveState --value aa-virt-load.service) $(systemctl show -p Result --value aa-virt-load.service)"
    local done_at d at
    done_at=$(systemctl show -p ExecMainExitTimestampMonotonic --value aa-virt-load.service)
    for d in libvirtd lxc; do
        at=$(systemctl show -p ExecMainStartTimestampMonotonic --value "$d.service")
        if [ "${done_at:-0}" -gt 0 ] && [ "${at:-0}" -gt "$done_at" ]; then
            pass "aa-virt-load.service was done before $d.service started"
        else
            fail "aa-virt-load.service was done before $d.service started" \
                "aa-virt-load exited at ${done_at}us, $d started at ${at}us (monotonic)"
        fi
    done
}

# rb_boot_log UUID...: aa-virt-load.service's journal says, for each
# guest, whether its policy came from the cache or was compiled, and how
# long it took.
rb_boot_log() {
    local log u
    log=$(journalctl -b -u aa-virt-load.service --no-pager -o cat 2>&1)
    note "aa-virt-load.service: $(printf '%s' "$log" | grep -E 'libvirt-|loaded, ' | sed 's/^ *INFO //' | awk '!seen[$0]++' | tr '\n' ';')"
    for u in "$@"; do
        assert_match "the boot log says cache or compile, and the time, for libvirt-$u" \
            "$log" "libvirt-$u: (loaded from cache|compiled and loaded) in [0-9]+ ms"
    done
}

# rb_ct_stacked: the container came back through lxc.service's autostart,
# its init stacked in its own namespace, enforced.
rb_ct_stacked() {
    local label ns
    label=$(rb_ct_label)
    assert_match "the container ($RB_CT, lxc.start.auto = 1) came back with its init stacked, enforced" \
        "$label" '^lxc-.*//&:lxc-.*:(//)?unconfined \(enforce\)$'
    ns=$(printf '%s' "$label" | sed -n 's#.*//&:\([^:]*\):.*#\1#p')
    assert_exists "the container's policy namespace exists" "$AA_SECFS/policy/namespaces/$ns"
    assert_eq "its host-side profile is loaded, enforced" enforce "$(aa_profile_mode "${label%%//&*}")"
}
