# 50-list: `aa-virt list` reports what the kernel says. While guests run,
# an aa-virt LXC container and a libvirt QEMU guest show LOADED yes, MODE
# enforce, LABEL OK yes (and NS yes for the container), matching the
# kernel's own view of their processes; `--check` passes. An unconfined
# container and a guest whose profile was switched to complain mode are
# flagged: `--check` exits 3 naming each. Denials show up in DENIALS.

# Columns of `aa-virt list` (table): NAME KIND STATE PROFILE LOADED MODE
# LABEL-OK NS... RULES DENIALS. NS is "yes (N)", "no" or "-".
row() { # NAME ARGS... -> the table row of NAME
    local n=$1; shift
    "$AA_VIRT" list "$@" 2>/dev/null | awk -v n="$n" '$1 == n'
}
col() { awk -v i="$1" '{ print $i }'; }

# --- LXC: an aa-virt container, and an unconfined one ---
lp=$CASE_TMP/lxc
mkdir -p "$lp"
prep() { # NAME: busybox container without network
    lxc-create -P "$lp" -t busybox -n "$1" >/dev/null 2>&1 || return 1
    sed -i -e '/^lxc\.net\.0\./d' "$lp/$1/config"
    echo 'lxc.net.0.type = empty' >> "$lp/$1/config"
}
assert_ok "lxc-create c1" prep c1
# As in 40-lxc: proc and sys read-write, so that a refused write is
# AppArmor's doing and lands in the kernel log; no nesting.
sed -i -e 's/^lxc\.mount\.auto = .*/lxc.mount.auto = cgroup:mixed proc:rw sys:rw/' \
    -e 's/^lxc\.cap\.drop = .*/lxc.cap.drop = sys_module sys_time/' \
    -e 's/^lxc\.apparmor\.allow_nesting = 1/lxc.apparmor.allow_nesting = 0/' "$lp/c1/config"
on_exit lxc-destroy -P "$lp" -f -n c1
on_exit lxc-stop -P "$lp" -k -n c1
assert_ok "aa-virt lxc enable c1" "$AA_VIRT" lxc enable -P "$lp" c1 --inline
assert_ok "lxc-start c1" lxc-start -P "$lp" -n c1 -d
wait_for 30 sh -c "lxc-info -P '$lp' -n c1 -s -H | grep -qx RUNNING"
pid=$(lxc-info -P "$lp" -n c1 -p -H)
label=$(aa_label "$pid")
note "c1 init $pid runs as: $label"
prof=$(printf '%s' "$label" | sed 's#//&.*##')

r=$(row c1 -P "$lp" --no-denials)
note "list: $r"
assert_eq "c1 PROFILE is init's host-side profile" "$prof" "$(col 4 <<<"$r")"
assert_eq "c1 LOADED" yes "$(col 5 <<<"$r")"
assert_eq "c1 MODE" enforce "$(col 6 <<<"$r")"
assert_eq "kernel agrees: the profile is in enforce mode" enforce "$(aa_profile_mode "$prof")"
assert_eq "c1 LABEL OK" yes "$(col 7 <<<"$r")"
assert_match "kernel agrees: init's label is the stacked one, enforce" "$label" '^lxc-.*//&:lxc-.*:(//)?unconfined \(enforce\)$'
assert_eq "c1 NS exists" yes "$(col 8 <<<"$r")"
assert_ok "list --check passes while c1 is confined" "$AA_VIRT" list -P "$lp" --check --no-denials

# A denial inside c1 is counted. (Explicit `deny` rules are silent, so use
# a mount the profile does not allow: debugfs away from /sys/kernel/debug.)
kernel_log_mark
lxc-attach -P "$lp" -n c1 -- mkdir -p /tmp/dbg >/dev/null 2>&1
assert_denied "mounting debugfs on /tmp/dbg in c1 is denied" \
    lxc-attach -P "$lp" -n c1 -- mount -t debugfs debugfs /tmp/dbg
assert_kernel_log "the denial is in the kernel log" 'apparmor="DENIED".*operation="mount".*/tmp/dbg'
r=$(row c1 -P "$lp")
assert_match "c1 DENIALS counts it" "$(awk '{ print $NF }' <<<"$r")" '^[1-9][0-9]*$'
st=$("$AA_VIRT" status c1 -P "$lp" 2>&1)
assert_contains "status c1: confined" "$st" "confined:  yes"
assert_contains "status c1: the denial with its path" "$st" "/tmp/dbg"

assert_ok "lxc-create c2" prep c2
on_exit lxc-destroy -P "$lp" -f -n c2
on_exit lxc-stop -P "$lp" -k -n c2
echo 'lxc.apparmor.profile = unconfined' >> "$lp/c2/config"
assert_ok "lxc-start c2 (unconfined)" lxc-start -P "$lp" -n c2 -d
wait_for 30 sh -c "lxc-info -P '$lp' -n c2 -s -H | grep -qx RUNNING"
assert_eq "kernel agrees: c2's init is unconfined" unconfined "$(aa_label "$(lxc-info -P "$lp" -n c2 -p -H)")"
assert_eq "c2 LABEL OK is no" no "$(row c2 -P "$lp" --no-denials | col 7)"
assert_fails "list --check fails with c2 running unconfined" "$AA_VIRT" list -P "$lp" --check --no-denials
assert_eq "--check exits 3" 3 "$LAST_RC"
assert_contains "--check names c2" "$LAST_OUT" "not confined: c2"
assert_not_contains "--check does not name c1" "$LAST_OUT" "not confined: c1"

# --- libvirt: a QEMU guest (TCG, no disk) confined by libvirt's security driver ---
uri=qemu:///system
cat > "$CASE_TMP/t1.xml" <<'XML'
<domain type='qemu'>
  <name>aa-list-t1</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><graphics type='vnc' port='-1' listen='127.0.0.1'/></devices>
</domain>
XML
assert_ok "virsh define" virsh -c $uri define "$CASE_TMP/t1.xml"
on_exit virsh -c $uri undefine aa-list-t1
on_exit virsh -c $uri destroy aa-list-t1
assert_ok "virsh start" virsh -c $uri start aa-list-t1
uuid=$(virsh -c $uri domuuid aa-list-t1 | head -1)
qpid=$(cat /run/libvirt/qemu/aa-list-t1.pid 2>/dev/null)
note "qemu pid $qpid, label $(aa_label "$qpid" 2>&1)"
assert_eq "kernel: QEMU runs as libvirt-<uuid> (enforce)" "libvirt-$uuid (enforce)" "$(aa_label "$qpid")"
r=$(row aa-list-t1 -c $uri --no-denials)
note "list: $r"
assert_eq "t1 PROFILE" "libvirt-$uuid" "$(col 4 <<<"$r")"
assert_eq "t1 LOADED" yes "$(col 5 <<<"$r")"
assert_eq "t1 MODE" enforce "$(col 6 <<<"$r")"
assert_eq "t1 LABEL OK" yes "$(col 7 <<<"$r")"
assert_contains "JSON: the label came from procfs" "$("$AA_VIRT" list -c $uri --json --no-denials)" '"label_source": "procfs"'
assert_ok "list --check passes for t1" "$AA_VIRT" list -c $uri --check --no-denials

# Complain mode is not confinement: flagged.
prof_file=/etc/apparmor.d/libvirt/libvirt-$uuid
assert_ok "reload t1's profile in complain mode" apparmor_parser -r -C "$prof_file"
assert_eq "kernel: the profile is in complain mode" complain "$(aa_profile_mode "libvirt-$uuid")"
assert_eq "t1 MODE complain" complain "$(row aa-list-t1 -c $uri --no-denials | col 6)"
assert_fails "list --check fails with t1 in complain mode" "$AA_VIRT" list -c $uri --check --no-denials
assert_eq "--check exits 3" 3 "$LAST_RC"
assert_contains "--check names t1" "$LAST_OUT" "not confined: aa-list-t1"
