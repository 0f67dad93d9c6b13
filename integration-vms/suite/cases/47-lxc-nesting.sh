# 47-lxc-nesting: the workloads that broke on other container managers
# under AppArmor 4, in an aa-virt-confined container. The outer container
# shares the guest's root file system (lxc.rootfs.path = dir:/, its init a
# shell that sleeps), so LXC and apparmor_parser are there inside it.
#   - nesting on (lxc.apparmor.allow_nesting = 1): inside, lxc-start of a
#     busybox container works; the nested init's label is the outer's
#     stacked label with LXC's own profile for the inner container inside
#     the outer's policy namespace; `unshare -Urm` works;
#   - (Debian 13) the same with the outer profile on abi 4.0 (userns kept);
#   - nesting off: the nested lxc-start fails, and the kernel's denial names
#     the outer container's profile.
# Asserted on the kernel's view (attr/current, securityfs, kernel log).

lp=/srv/aavirtnest.$$
inner_lp=/srv/aavirtnest-inner.$$
mkdir -p "$lp/outer" "$inner_lp"
on_exit rm -rf "$lp" "$inner_lp"
cfg=$lp/outer/config

# outer_config NESTING: a container whose rootfs is the guest's own root.
outer_config() {
    cat > "$cfg" <<CFG
lxc.uts.name = outer
lxc.rootfs.path = dir:/
lxc.net.0.type = empty
lxc.autodev = 1
lxc.pty.max = 16
lxc.tty.max = 0
lxc.mount.auto = proc:rw sys:rw cgroup:rw:force
lxc.mount.entry = securityfs sys/kernel/security securityfs rw,nosuid,nodev,noexec,optional 0 0
lxc.mount.entry = tmpfs run tmpfs rw,nosuid,nodev,mode=755 0 0
lxc.mount.entry = tmpfs tmp tmpfs rw,nosuid,nodev 0 0
lxc.apparmor.allow_nesting = $1
lxc.init.cmd = $lp/init
CFG
}
# The outer's init, a file (with a quoted `sh -c` line in lxc.init.cmd the
# outer ran on LXC 6.0 but not on 5.0); it
# moves itself out of the cgroup namespace's root, so that LXC inside can
# enable controllers for the nested container's cgroups, then sleeps.
printf '#!/bin/sh\nmkdir -p /sys/fs/cgroup/init && echo $$ > /sys/fs/cgroup/init/cgroup.procs\nexec sleep infinity\n' > "$lp/init"
chmod 0755 "$lp/init"

# The inner container, created inside the outer one on the shared disk.
inner_create() {
    att lxc-create -P "$inner_lp" -t busybox -n inner > "$CASE_TMP/inner-create.log" 2>&1
    sed -i -e '/^lxc\.net\.0\./d' "$inner_lp/inner/config"
    cat >> "$inner_lp/inner/config" <<CFG
lxc.net.0.type = empty
lxc.apparmor.profile = generated
lxc.apparmor.allow_nesting = 0
CFG
}
att() { lxc-attach -P "$lp" -n outer -- "$@"; }
re_escape() { printf '%s' "$1" | sed 's/[][\.*^$/|()+?{}]/\\&/g'; }

on_exit lxc-stop -P "$lp" -n outer -k
on_exit "lxc-stop -P '$inner_lp' -n inner -k; lxc-destroy -P '$inner_lp' -n inner -f"

# --- nesting on ------------------------------------------------------------------
outer_config 1
assert_ok "aa-virt lxc enable (nesting on)" "$AA_VIRT" lxc enable -P "$lp" outer --inline
ref=$("$AA_VIRT" lxc enable -P "$lp" outer --inline 2>&1)
prof=$(sed -n 's/.*(profile \(.*\), namespace .*/\1/p' <<<"$ref")
ns=$(sed -n 's/.*, namespace \(.*\))$/\1/p' <<<"$ref")
assert_match "outer profile and namespace named" "$prof $ns" '^lxc-.*-aa-virt lxc-.*-aa-virt$'
# outer_running LOG: wait for RUNNING; if not, show LXC's errors.
outer_running() {
    if wait_for 30 sh -c "lxc-info -P '$lp' -n outer -s -H | grep -qx RUNNING"; then
        pass "the outer container runs"
    else
        fail "the outer container runs" "$(grep -E 'ERROR|WARN' "$1" | tail -n 12)" \
            "$(kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep DENIED | tail -n 4)"
    fi
}
kernel_log_mark
assert_ok "lxc-start the outer container" lxc-start -P "$lp" -n outer -d -l DEBUG -o "$CASE_TMP/outer.log"
outer_running "$CASE_TMP/outer.log"
opid=$(lxc-info -P "$lp" -n outer -p -H)
assert_match "outer init carries the stacked label" "$(aa_label "$opid")" \
    "^$(re_escape "$prof")//&:$(re_escape "$ns"):(//)?unconfined \\(enforce\\)\$"
assert_eq "inside, the outer sees its own namespace" "$ns" "$(att cat /sys/kernel/security/apparmor/.ns_name 2>&1)"

assert_ok "inside: unshare -Urm works (nesting on)" att unshare -Urm cat /proc/self/uid_map
inner_create
assert_exists "inside: lxc-create made the nested busybox container" "$inner_lp/inner/rootfs/bin/busybox"
kernel_log_mark
_run att lxc-start -P "$inner_lp" -n inner -d -l DEBUG -o "/tmp/inner.log"
if [ "$LAST_RC" = 0 ]; then pass "inside: lxc-start of the nested container"
else fail "inside: lxc-start of the nested container" "rc $LAST_RC: $LAST_OUT" \
    "$(att tail -n 15 /tmp/inner.log 2>&1)" "$(kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep DENIED | tail -n 5)"; fi
wait_for 30 sh -c "lxc-attach -P '$lp' -n outer -- lxc-info -P '$inner_lp' -n inner -s -H | grep -qx RUNNING"
ipid_in=$(att lxc-info -P "$inner_lp" -n inner -p -H 2>/dev/null)
# The outer has its own pid namespace: find the inner init on the host by
# its label, not by its pid inside the outer.
ilabel=$(for p in /proc/[0-9]*; do l=$(cat "$p/attr/apparmor/current" 2>/dev/null) || continue
    case $l in "$prof//&:$ns:"*lxc-inner*) printf '%s\n' "$l"; break ;; esac; done)
note "inner init pid (outer's view) $ipid_in, label $ilabel"
assert_match "the nested init is stacked: outer profile & LXC's inner profile in the outer's namespace" \
    "$ilabel" "^$(re_escape "$prof")//&:$(re_escape "$ns"):(//)?lxc-inner_<.*> \\(enforce\\)\$"
assert_match "LXC's inner profile is loaded in the outer's namespace (securityfs)" \
    "$(ls "$AA_SECFS/policy/namespaces/$ns/profiles/" 2>&1)" '^lxc-inner'
assert_ok "inside: lxc-stop of the nested container" att lxc-stop -P "$inner_lp" -n inner -k

# The same under abi 4.0 (userns kept), the ABI that broke nested workloads
# elsewhere. Debian 12: AppArmor 3.0.8 has no abi/4.0, nothing to compare.
if [ "$DEBIAN" != 12 ]; then
    rendered=$(grep -lF "profile \"$prof\"" /var/lib/aa-virt/lxc/* 2>/dev/null | head -n 1)
    on_exit apparmor_parser -r "$rendered"
    sed -e 's#^abi <abi/[0-9.]*>,#abi <abi/4.0>,#' "$rendered" > "$CASE_TMP/outer4"
    grep -q '^ *userns,$' "$CASE_TMP/outer4" || sed -i 's/^  umount,$/  umount,\n  userns,/' "$CASE_TMP/outer4"
    assert_ok "abi 4.0: the outer profile (with userns) replaces the running one" apparmor_parser -r "$CASE_TMP/outer4"
    kernel_log_mark
    assert_ok "abi 4.0: inside, unshare -Urm works" att unshare -Urm cat /proc/self/uid_map
    _run att lxc-start -P "$inner_lp" -n inner -d -l DEBUG -o /tmp/inner4.log
    if [ "$LAST_RC" = 0 ]; then pass "abi 4.0: inside, lxc-start of the nested container"
    else fail "abi 4.0: inside, lxc-start of the nested container" "rc $LAST_RC: $LAST_OUT" \
        "$(att tail -n 15 /tmp/inner4.log 2>&1)"; fi
    wait_for 30 sh -c "lxc-attach -P '$lp' -n outer -- lxc-info -P '$inner_lp' -n inner -s -H | grep -qx RUNNING"
    assert_ok "abi 4.0: inside, lxc-stop of the nested container" att lxc-stop -P "$inner_lp" -n inner -k
    assert_eq "abi 4.0: nothing denied to the outer container or its nested one" "" \
        "$(kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep 'apparmor="DENIED"' | grep -F "profile=\"$prof")"
    assert_ok "the rendered outer profile is put back" apparmor_parser -r "$rendered"
fi
assert_ok "lxc-stop the outer container" lxc-stop -P "$lp" -n outer -k

# --- nesting off -----------------------------------------------------------------
"$AA_VIRT" lxc disable -P "$lp" outer > /dev/null 2>&1
outer_config 0
assert_ok "aa-virt lxc enable (nesting off)" "$AA_VIRT" lxc enable -P "$lp" outer --inline
kernel_log_mark
assert_ok "lxc-start the outer container (nesting off)" lxc-start -P "$lp" -n outer -d -l DEBUG -o "$CASE_TMP/outer-off.log"
outer_running "$CASE_TMP/outer-off.log"
kernel_log_mark
assert_fails "inside: lxc-start of the nested container fails (nesting off)" \
    att lxc-start -P "$inner_lp" -n inner -d -l DEBUG -o /tmp/inner-off.log
assert_kernel_log "the kernel's denial names the outer container's profile" \
    "apparmor=\"DENIED\".*profile=\"$(re_escape "$prof")\""
note "denials: $(kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep DENIED | sed 's/.*apparmor="DENIED" //' | cut -c1-160 | head -n 4 | tr '\n' '|')"
assert_ok "lxc-stop the outer container (nesting off)" lxc-stop -P "$lp" -n outer -k
assert_ok "aa-virt lxc disable" "$AA_VIRT" lxc disable -P "$lp" outer
