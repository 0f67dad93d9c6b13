# From a denial to a fix, on a real kernel (issue 15). A running confined
# guest (helper mode, as in 10-libvirt-helper) is made to open a file its
# profile does not grant through QEMU's monitor; the kernel denies it;
# `aa-virt denials --json` names the path, the guest, no device and an
# `aa-virt allow` command; that command, taken from the JSON, makes the same
# monitor command succeed in the same QEMU process; `aa-virt explain`
# agrees with the kernel before and after; the allowance survives a
# destroy/start. A restricted path (/etc/shadow) gets no suggestion and
# `allow` refuses it. `aa-virt mode complain` survives a destroy/start and
# the guest's accesses show as ALLOWED in `denials`.
#
# Asserted on the kernel's view: QEMU's label and pid, the profile's mode in
# the kernel's list, the kernel log, and whether QEMU's open succeeded.

NAME=aavt-deny
UUID=3c5d7e9f-1a2b-4c3d-9e8f-7a6b5c4d3e2f
PROFILE=libvirt-$UUID
DIR=/var/lib/libvirt/images/aavt-deny
EXTRA=/srv/extra.img
LATE=/srv/complain.img
export LIBVIRT_DEFAULT_URI=qemu:///system

# --- aa-virt as libvirt's helper (cleanups run last-registered first) --------
helper_mode_cleanups
on_exit rm -rf /var/lib/aa-virt/guests
assert_ok "aa-virt install --mode helper" /usr/bin/aa-virt install --mode helper
assert_ok "libvirtd restarts" systemctl restart libvirtd
wait_for 30 virsh version || fail "libvirtd does not answer after restart"

mkdir -p "$DIR" /srv
on_exit rm -rf "$DIR" "$EXTRA" "$LATE"
qemu-img create -q -f raw "$DIR/root.img" 16M
# Images the guest is not given. QEMU runs as libvirt-qemu: make them its
# own, so that only AppArmor can refuse them.
for f in "$EXTRA" "$LATE"; do
    qemu-img create -q -f raw "$f" 8M
    chown libvirt-qemu: "$f"
done
tiny_domain "$NAME" "$UUID" "$DIR/root.img" > "$CASE_TMP/dom.xml"
on_exit virsh undefine "$NAME"
assert_ok "virsh define" virsh define "$CASE_TMP/dom.xml"
on_exit virsh destroy "$NAME"
assert_ok "virsh start" virsh start "$NAME"
pid=$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)
assert_eq "QEMU carries libvirt-<uuid> (enforce) (kernel view)" "$PROFILE (enforce)" "$(aa_label "$pid")"

hmp() { virsh qemu-monitor-command --hmp "$NAME" "$1" 2>&1; }
# field PATH KIND KEY: KEY of the `denials --json` entry for PATH and KIND
# (`null` for JSON null, `missing` when there is no such entry).
field() {
    printf '%s' "$JSON" | python3 -c '
import json, sys
path, kind, key = sys.argv[1:]
for d in json.load(sys.stdin):
    if d["path"] == path and d["kind"] == kind:
        v = d[key]
        print("null" if v is None else json.dumps(v) if isinstance(v, bool) else v)
        break
else:
    print("missing")' "$@"
}
explain() { /usr/bin/aa-virt explain "$NAME" "$1" --perms "$2" 2>&1 | head -n 1; }

# --- a denial through QEMU's monitor ------------------------------------------
kernel_log_mark
out=$(hmp "drive_add 0 if=none,id=x1,file=$EXTRA")
assert_contains "drive_add of a file the profile does not grant fails (QEMU)" "$out" "Permission denied"
assert_kernel_log "the kernel logs the denial for the guest" \
    "apparmor=\"DENIED\" operation=\"open\".*profile=\"$PROFILE\" name=\"$EXTRA\""
mask=$(kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep -F "name=\"$EXTRA\"" | grep -o 'denied_mask="[a-z]*"' | head -n 1 | cut -d'"' -f2)
note "kernel: denied_mask=$mask"
assert_match "explain says denied, as the kernel did" "$(explain "$EXTRA" "$mask")" "^DENIED: $NAME "

assert_ok "aa-virt denials $NAME --json" /usr/bin/aa-virt denials "$NAME" --json
JSON=$LAST_OUT
assert_eq "denials names the guest" "$NAME" "$(field "$EXTRA" DENIED guest)"
assert_eq "denials names the profile" "$PROFILE" "$(field "$EXTRA" DENIED profile)"
assert_eq "no device covers the path" null "$(field "$EXTRA" DENIED device)"
assert_eq "the path is not restricted" false "$(field "$EXTRA" DENIED restricted)"
suggestion=$(field "$EXTRA" DENIED suggestion)
assert_match "denials suggests aa-virt allow for it" "$suggestion" "^aa-virt allow $NAME $EXTRA --perms [rwk]+ "
assert_ok "aa-virt denials (text)" /usr/bin/aa-virt denials "$NAME"
assert_contains "the text output names the path" "$LAST_OUT" "$EXTRA"

# --- the suggested fix, as printed, on the running guest ----------------------
kernel_log_mark
assert_ok "the suggested command runs: $suggestion" sh -c "$suggestion"
note "allow: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"
out=$(hmp "drive_add 0 if=none,id=x2,file=$EXTRA")
assert_not_contains "the same drive_add now succeeds (QEMU)" "$out" "Could not open"
assert_contains "QEMU has the drive" "$(hmp 'info block')" "$EXTRA"
assert_eq "in the same QEMU process" "$pid" "$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)"
assert_eq "still enforced (kernel view)" "$PROFILE (enforce)" "$(aa_label "$pid")"
assert_eq "nothing more denied on that path (kernel log)" "" \
    "$(kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep 'apparmor="DENIED"' | grep -F "name=\"$EXTRA\"")"
assert_match "explain now says allowed, as the kernel did" "$(explain "$EXTRA" "$mask")" "^ALLOWED: $NAME "
assert_contains "explain names the allowance as the origin" \
    "$(/usr/bin/aa-virt explain "$NAME" "$EXTRA" --perms "$mask" 2>&1)" "allow:"
assert_ok "aa-virt allow --list" /usr/bin/aa-virt allow "$NAME" --list
assert_contains "the allowance is listed" "$LAST_OUT" "$EXTRA"

# --- kept across destroy/start ------------------------------------------------
assert_ok "virsh destroy" virsh destroy "$NAME"
assert_ok "virsh start" virsh start "$NAME"
pid=$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)
assert_eq "the new QEMU is enforced (kernel view)" "$PROFILE (enforce)" "$(aa_label "$pid")"
kernel_log_mark
out=$(hmp "drive_add 0 if=none,id=x3,file=$EXTRA")
assert_not_contains "after a restart the drive_add still succeeds (QEMU)" "$out" "Could not open"
assert_eq "nothing denied on that path after the restart" "" \
    "$(kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep 'apparmor="DENIED"' | grep -F "name=\"$EXTRA\"")"

# --- a restricted path: no suggestion, allow refuses it ----------------------
in_guest() { aa-exec -p "$PROFILE" -- "$@"; }
kernel_log_mark
assert_denied "/etc/shadow is denied in the guest's label" in_guest head -c 1 /etc/shadow
assert_kernel_log "the kernel logs the /etc/shadow denial" \
    "apparmor=\"DENIED\" operation=\"open\".*profile=\"$PROFILE\" name=\"/etc/shadow\""
assert_ok "aa-virt denials $NAME --json" /usr/bin/aa-virt denials "$NAME" --json
JSON=$LAST_OUT
assert_eq "/etc/shadow: attributed to the guest" "$NAME" "$(field /etc/shadow DENIED guest)"
assert_eq "/etc/shadow: restricted" true "$(field /etc/shadow DENIED restricted)"
assert_eq "/etc/shadow: no suggestion" null "$(field /etc/shadow DENIED suggestion)"
assert_fails "aa-virt allow refuses /etc/shadow" /usr/bin/aa-virt allow "$NAME" /etc/shadow --perms r
assert_contains "the refusal gives the reason" "$LAST_OUT" "/etc/shadow"
note "refusal: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"
assert_not_contains "nothing was stored for /etc/shadow" "$(/usr/bin/aa-virt allow "$NAME" --list 2>&1)" /etc/shadow

# --- complain mode, kept across destroy/start --------------------------------
assert_ok "aa-virt mode $NAME complain" /usr/bin/aa-virt mode "$NAME" complain
kernel_log_mark
note "mode: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"
assert_eq "the running guest is in complain mode at once (kernel view)" complain "$(aa_profile_mode "$PROFILE")"
assert_ok "virsh destroy" virsh destroy "$NAME"
assert_ok "virsh start" virsh start "$NAME"
pid=$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)
assert_eq "after a restart the kernel lists the profile in complain mode" complain "$(aa_profile_mode "$PROFILE")"
assert_eq "the new QEMU carries the profile in complain mode" "$PROFILE (complain)" "$(aa_label "$pid")"
sleep 2
assert_eq "in complain mode QEMU's start needed nothing beyond its profile (no ALLOWED record)" "" \
    "$(kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep 'apparmor="ALLOWED"' | grep -F "profile=\"$PROFILE\"")"
kernel_log_mark
out=$(hmp "drive_add 0 if=none,id=c1,file=$LATE")
assert_not_contains "in complain mode an ungranted drive_add succeeds (QEMU)" "$out" "Could not open"
assert_kernel_log "the kernel logs it as ALLOWED" \
    "apparmor=\"ALLOWED\" operation=\"open\".*profile=\"$PROFILE\" name=\"$LATE\""
assert_ok "aa-virt denials $NAME --json" /usr/bin/aa-virt denials "$NAME" --json
JSON=$LAST_OUT
assert_eq "denials shows the access as ALLOWED for the guest" "$NAME" "$(field "$LATE" ALLOWED guest)"
assert_match "with an allow suggestion for the review" "$(field "$LATE" ALLOWED suggestion)" "^aa-virt allow $NAME $LATE "
assert_ok "aa-virt denials (text)" /usr/bin/aa-virt denials "$NAME"
assert_match "the text output marks it ALLOWED" "$(printf '%s\n' "$LAST_OUT" | grep -F "$LATE")" ALLOWED
assert_ok "aa-virt mode $NAME enforce" /usr/bin/aa-virt mode "$NAME" enforce
assert_eq "back in enforce mode at once (kernel view)" enforce "$(aa_profile_mode "$PROFILE")"

# --- disallow -----------------------------------------------------------------
assert_ok "aa-virt disallow" /usr/bin/aa-virt disallow "$NAME" "$EXTRA"
assert_denied "after disallow the guest's label cannot read it (kernel)" in_guest head -c 1 "$EXTRA"
assert_match "explain says denied again" "$(explain "$EXTRA" r)" "^DENIED: $NAME "

assert_ok "virsh destroy" virsh destroy "$NAME"
assert_ok "virsh undefine" virsh undefine "$NAME"

# --- an LXC container: its denials attributed, an allowance loaded ----------
# (as in 40-lxc: no network, proc and sys read-write so that a refused write
# is AppArmor's doing, not a read-only mount's).
lp=/srv/aavtdeny.$$
ct=d1
mkdir -p "$lp"
on_exit rm -rf "$lp"
assert_ok "lxc-create (busybox template)" lxc-create -P "$lp" -t busybox -n $ct
on_exit lxc-destroy -P "$lp" -f -n $ct
on_exit lxc-stop -P "$lp" -k -n $ct
# Nesting off (Debian's default.conf turns it on, and a nesting profile
# allows the mount below).
sed -i -e '/^lxc\.net\.0\./d' -e 's/^lxc\.mount\.auto = .*/lxc.mount.auto = cgroup:mixed proc:rw sys:rw/' \
    -e 's/^lxc\.apparmor\.allow_nesting = 1/lxc.apparmor.allow_nesting = 0/' "$lp/$ct/config"
echo "lxc.net.0.type = empty" >> "$lp/$ct/config"
assert_ok "aa-virt lxc enable" /usr/bin/aa-virt lxc enable -P "$lp" $ct --inline
ctprof=$(/usr/bin/aa-virt lxc enable -P "$lp" $ct --inline 2>&1 | sed -n 's/.*(profile \(.*\), namespace .*/\1/p')
assert_match "the container's profile is aa-virt's" "$ctprof" '^lxc-.*-aa-virt$'
assert_ok "lxc-start -d" lxc-start -P "$lp" -n $ct -d
wait_for 30 sh -c "lxc-info -P '$lp' -n $ct -s -H | grep -qx RUNNING"
ctpid=$(lxc-info -P "$lp" -n $ct -p -H)
att() { lxc-attach -P "$lp" -n $ct -- "$@"; }
# The profile's explicit deny rules (sysrq-trigger...) are silent in the
# kernel log; a mount the profile does not allow is logged: a recursive
# bind of /proc/sys (as in 46-lxc-unpriv; the kernel itself allows it).
kernel_log_mark
assert_denied "inside the container, an rbind of /proc/sys is denied" \
    att sh -c 'mkdir -p /tmp/aavp && mount -o rbind /proc/sys /tmp/aavp'
assert_kernel_log "the kernel logs the container's denial" \
    "apparmor=\"DENIED\" operation=\"mount\".*profile=\"$ctprof\".* name=\"/tmp/aavp/\""
note "record: $(kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep 'operation="mount"' | sed 's/.*apparmor=/apparmor=/' | head -n 1)"
assert_ok "aa-virt denials $ct --json" /usr/bin/aa-virt denials $ct --json
JSON=$LAST_OUT
assert_eq "the container's denial is attributed to it" "$ct" "$(field /tmp/aavp/ DENIED guest)"
assert_eq "no allow suggestion for a container's mount" null "$(field /tmp/aavp/ DENIED suggestion)"
assert_denied "inside the container, sysrq-trigger is denied (silently: an explicit deny)" \
    att sh -c 'echo h > /proc/sysrq-trigger'
assert_fails "aa-virt allow refuses the kernel knob for the container" \
    /usr/bin/aa-virt allow -P "$lp" $ct /proc/sysrq-trigger --perms w
note "refusal: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"

echo data > /srv/aavtdeny-ct.txt
on_exit rm -f /srv/aavtdeny-ct.txt
kernel_log_mark
assert_ok "aa-virt allow for the running container" \
    /usr/bin/aa-virt allow -P "$lp" $ct /srv/aavtdeny-ct.txt --perms r --reason "ct data"
note "allow: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"
assert_contains "it reloads the running container's profile" "$LAST_OUT" "in force now"
assert_kernel_log "the kernel replaced the container's profile" \
    "apparmor=\"STATUS\" operation=\"profile_replace\".* name=\"$ctprof\""
ctfile=$(grep -lF "LXC container \"$ct\" in $lp." /var/lib/aa-virt/lxc/* 2>/dev/null | head -n 1)
assert_contains "the loaded profile file carries the allowance with its origin" \
    "$(cat "$ctfile" 2>&1)" '"/srv/aavtdeny-ct.txt" r,  # allow: ct data'
assert_eq "init still carries the container's label" yes \
    "$(aa_label "$ctpid" | grep -qF "$ctprof//&:" && echo yes)"
assert_ok "lxc-stop" lxc-stop -P "$lp" -n $ct
assert_ok "lxc-start again" lxc-start -P "$lp" -n $ct -d
wait_for 30 sh -c "lxc-info -P '$lp' -n $ct -s -H | grep -qx RUNNING"
assert_eq "after a restart the profile is loaded, enforced" enforce "$(aa_profile_mode "$ctprof")"
assert_contains "after a restart the profile still carries the allowance" \
    "$(cat "$ctfile" 2>&1)" '"/srv/aavtdeny-ct.txt" r,  # allow: ct data'
assert_ok "aa-virt disallow for the container" /usr/bin/aa-virt disallow -P "$lp" $ct /srv/aavtdeny-ct.txt
assert_not_contains "the allowance is gone from the loaded file" "$(cat "$ctfile" 2>&1)" "allow: ct data"
assert_ok "lxc-stop" lxc-stop -P "$lp" -n $ct

# Save what the kernel logged for these guests, for the unit tests' fixtures.
kernel_log | grep -F -e "$PROFILE" -e "$ctprof" -e "lxc-$ct" > "$SHARE/out/35-records.log" 2>/dev/null || true
dmesg | grep -F -e "$PROFILE" -e "lxc-$ct" > "$SHARE/out/35-dmesg.log" 2>/dev/null || true
journalctl -b -o json --no-pager _TRANSPORT=kernel _TRANSPORT=audit 2>/dev/null \
    | grep -F -e "$PROFILE" -e "lxc-$ct" > "$SHARE/out/35-journal.json" || true
