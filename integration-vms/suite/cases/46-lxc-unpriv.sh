# 46-lxc-unpriv: unprivileged LXC containers (issue 17).
# 1. A root-started id-mapped busybox container runs stacked in its own
#    namespace, init is uid 0 inside and 100000 on the host, the host kernel
#    knobs of the privileged case are denied, and a mount that only the
#    profile forbids is refused without nesting and works with it.
# 2. A container an ordinary user starts, after root's one-time
#    `aa-virt lxc enable --user`, runs under its own aa-virt profile (not
#    LXC's generic one), and `aa-virt list` shows it with its owner.
# 3. The same user cannot start a container under another container's
#    profile (another user's, a privileged one's): the hooks refuse it. The
#    kernel lets any unconfined task change to any loaded profile, so
#    without the hooks the user's task does get the other label (asserted);
#    what that label could be used for, managing the other container's
#    policy namespace from a user namespace of the user's own, the kernel
#    refuses once aa-virt has set kernel.unprivileged_userns_apparmor_policy
#    = 0 ("not policy admin" in the audit log), with a control at 1.

lp=/srv/aavunpriv.$$
mkdir -p "$lp"
on_exit rm -rf "$lp"
hooklog=$CASE_TMP/hooks.log
export AA_VIRT_HOOK_LOG=$hooklog
chmod 777 "$CASE_TMP"

# With uidmap installed, LXC maps ids through newuidmap even for root, which
# then needs its own subordinate ranges (restored at the end).
for f in /etc/subuid /etc/subgid; do
    if [ -e $f ]; then cp -p $f "$CASE_TMP/${f#/etc/}.orig"; on_exit cp -p "$CASE_TMP/${f#/etc/}.orig" $f
    else on_exit rm -f $f; fi
    echo "root:100000:65536" >> $f
done

esc() { printf '%s' "$1" | sed 's/[][\.*^$/]/\\&/g'; }
sedcfg() { # CONFIG: no network; proc and sys read-write (as in 40-lxc) so
    # that a refused write is a permission error, not a read-only mount's
    sed -i -e '/^lxc\.net\.0\./d' \
        -e 's/^lxc\.mount\.auto = .*/lxc.mount.auto = cgroup:mixed proc:rw sys:rw/' "$1"
    echo 'lxc.net.0.type = empty' >> "$1"
}

# --- 1. root-started, id-mapped ---------------------------------------------
ct=u1
printf 'lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n' > "$CASE_TMP/idmap.conf"
assert_ok "lxc-create an id-mapped busybox container" lxc-create -P "$lp" -f "$CASE_TMP/idmap.conf" -t busybox -n $ct
cfg=$lp/$ct/config
on_exit lxc-destroy -P "$lp" -f -n $ct
on_exit lxc-stop -P "$lp" -k -n $ct
sedcfg "$cfg"
assert_ok "aa-virt lxc enable (id-mapped)" "$AA_VIRT" lxc enable -P "$lp" $ct --inline
ref=$("$AA_VIRT" lxc enable -P "$lp" $ct --inline 2>&1)
prof=$(sed -n 's/.*(profile \(.*\), namespace .*/\1/p' <<<"$ref")
ns=$(sed -n 's/.*, namespace \(.*\))$/\1/p' <<<"$ref")
assert_match "readable profile name" "$prof" '^lxc-u1_<.*>-aa-virt$'

assert_ok "lxc-start (id-mapped)" lxc-start -P "$lp" -n $ct -d -l DEBUG -o "$CASE_TMP/lxc-u1.log"
wait_for 30 sh -c "lxc-info -P '$lp' -n $ct -s -H | grep -qx RUNNING"
pid=$(lxc-info -P "$lp" -n $ct -p -H)
note "init pid $pid"
assert_match "init carries the stacked label" "$(aa_label "$pid")" \
    "^$(esc "$prof")//&:$(esc "$ns"):(//)?unconfined \\(enforce\\)\$"
assert_eq "root's pre-start set kernel.unprivileged_userns_apparmor_policy = 0" 0 \
    "$(sysctl -n kernel.unprivileged_userns_apparmor_policy)"
assert_exists "the container's policy namespace exists" "$AA_SECFS/policy/namespaces/$ns"
assert_eq "init is uid 100000 on the host" 100000 "$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")"
att() { lxc-attach -P "$lp" -n $ct -- "$@"; }
assert_eq "init is uid 0 inside" 0 "$(att id -u 2>&1)"
assert_hooks "hooks: pre-start then start-host" "pre-start start-host" "$hooklog"

# The privileged case's probes. In a user namespace these files belong to
# the host's root, so the refusal is AppArmor's and DAC's both; the
# unlabelled control is recorded, not asserted.
w_sysrq='echo h > /proc/sysrq-trigger'
w_sysctl='cat /proc/sys/kernel/sysrq > /proc/sys/kernel/sysrq'
w_uevent='cat /sys/kernel/uevent_helper > /sys/kernel/uevent_helper'
for w in "$w_sysrq" "$w_sysctl" "$w_uevent"; do
    assert_denied "id-mapped: denied: $w" att sh -c "$w"
    _run lxc-attach -P "$lp" -n $ct --elevated-privileges=LSM -- sh -c "$w"
    note "unlabelled control ($w): rc=$LAST_RC ${LAST_OUT:0:100}"
done

# A mount only the profile forbids: a recursive bind of /proc/sys (the
# kernel allows it in the container's user namespace, as the unlabelled
# control shows).
m_rbind='mkdir -p /tmp/aavp && mount -o rbind /proc/sys /tmp/aavp'
u_rbind='umount -l /tmp/aavp'
assert_ok "control: the kernel allows the rbind without the label" \
    lxc-attach -P "$lp" -n $ct --elevated-privileges=LSM -- sh -c "$m_rbind && $u_rbind"
kernel_log_mark
assert_denied "without nesting the profile refuses the rbind of /proc/sys" att sh -c "$m_rbind"
assert_kernel_log "the refusal is AppArmor's (mount DENIED in the audit log)" \
    'apparmor="DENIED" operation="mount".*'"$(esc "$prof")"

assert_ok "lxc-stop (id-mapped)" lxc-stop -P "$lp" -n $ct -k
wait_for 20 sh -c "grep -q '^post-stop' '$hooklog'"
assert_hooks "hooks in order" "pre-start start-host post-stop" "$hooklog"
assert_eq "after lxc-stop the namespace is gone" no \
    "$([ -e "$AA_SECFS/policy/namespaces/$ns" ] && echo yes || echo no)"
assert_eq "after lxc-stop the profile is unloaded" "" "$(aa_profile_mode "$prof")"

# Nesting on request: the same rbind works.
assert_ok "aa-virt lxc enable --nesting" "$AA_VIRT" lxc enable -P "$lp" $ct --inline --nesting
assert_ok "lxc-start with nesting" lxc-start -P "$lp" -n $ct -d
wait_for 30 sh -c "lxc-info -P '$lp' -n $ct -s -H | grep -qx RUNNING"
assert_match "init is stacked again" "$(aa_label "$(lxc-info -P "$lp" -n $ct -p -H)")" \
    "^$(esc "$prof")//&:$(esc "$ns"):(//)?unconfined \\(enforce\\)\$"
assert_ok "with nesting the rbind works" att sh -c "$m_rbind && $u_rbind"
assert_denied "with nesting sysrq stays denied" att sh -c "$w_sysrq"
row=$("$AA_VIRT" list -P "$lp" --no-denials 2>&1 | awk -v n=$ct '$1 == n')
assert_contains "aa-virt list says unprivileged" "$row" " unprivileged "
assert_ok "lxc-stop (nesting)" lxc-stop -P "$lp" -n $ct -k
wait_for 20 sh -c "[ ! -e '$AA_SECFS/policy/namespaces/$ns' ]"

# --- 2. started by an ordinary user -------------------------------------------
as() { # USER CMD...: CMD as USER, with USER's home
    local u=$1; shift
    runuser -u "$u" -- env HOME="$(getent passwd "$u" | cut -d: -f6)" "$@"
}
mkuser() { # USER SUBID: an account with subordinate ids from SUBID and an
    # LXC default config mapping them; LXC's lxcpath under its home
    local u=$1 sub=$2 h
    assert_ok "useradd $u" useradd -m -s /bin/sh "$u"
    on_exit userdel -r -f "$u"
    h=$(getent passwd "$u" | cut -d: -f6)
    echo "$u:$sub:65536" >> /etc/subuid
    echo "$u:$sub:65536" >> /etc/subgid
    # The mapped root must traverse to the rootfs.
    chmod 711 "$h"
    as "$u" mkdir -p "$h/.config/lxc" "$h/.local/share/lxc"
    chmod 711 "$h/.local" "$h/.local/share"
    printf 'lxc.idmap = u 0 %s 65536\nlxc.idmap = g 0 %s 65536\nlxc.net.0.type = empty\n' "$sub" "$sub" \
        > "$h/.config/lxc/default.conf"
    chown "$u": "$h/.config/lxc/default.conf"
}
ucreate() { # USER CONTAINER: the user's lxc-create (busybox, proc and sys rw)
    local ulp
    ulp=$(getent passwd "$1" | cut -d: -f6)/.local/share/lxc
    assert_ok "$1's lxc-create $2" as "$1" lxc-create -t busybox -n "$2"
    as "$1" sed -i 's/^lxc\.mount\.auto = .*/lxc.mount.auto = cgroup:mixed proc:rw sys:rw/' "$ulp/$2/config"
}
user=aavuser
mkuser $user 200000
home=$(getent passwd $user | cut -d: -f6)
as_user() { as $user "$@"; }
ulp=$home/.local/share/lxc
for c in uc1 uc2; do ucreate $user $c; done

# The user's lxc-start needs a cgroup of its own: root makes one, gives it
# to the user, and starts the user's command in it.
cg=/sys/fs/cgroup/aavuser.$$
mkdir -p "$cg/shell"
chown -R $user: "$cg"
on_exit rmdir "$cg/shell" "$cg"
ustart() { # CONTAINER [lxc-start args]: the user's lxc-start
    local c=$1; shift
    sh -c 'echo $$ > "$1/shell/cgroup.procs" && shift && exec "$@"' sh "$cg" \
        runuser -u $user -- env HOME="$home" AA_VIRT_HOOK_LOG="$CASE_TMP/user-hooks.log" \
        lxc-start -n "$c" -d -l DEBUG -o "$CASE_TMP/lxc-$c.log" "$@"
}

# Before root's step: LXC's generated profile cannot be loaded by the user.
_run ustart uc1
note "before enable --user: lxc-start rc=$LAST_RC ${LAST_OUT:0:160}"
[ "$LAST_RC" -eq 0 ] && { note "label before: $(aa_label "$(lxc-info -P "$ulp" -n uc1 -p -H)")"; lxc-stop -P "$ulp" -n uc1 -k; }

# The user's hooks run aa-virt as the user: a copy they can execute (the
# share may not be theirs to traverse); --inline names the running binary.
ubin=/usr/local/bin/aa-virt-itest.$$
install -m 755 "$AA_VIRT" "$ubin"
on_exit rm -f "$ubin"
# The kernel's default lets root of a user namespace manage policy; root's
# step closes it (part 1's root-started container already did).
sysctl -qw kernel.unprivileged_userns_apparmor_policy=1
ref=$("$ubin" lxc enable --user $user uc1 --inline 2>&1)
assert_contains "root: aa-virt lxc enable --user registers and loads" "$ref" "registered to user $user and loaded"
assert_eq "enable --user set kernel.unprivileged_userns_apparmor_policy = 0" 0 \
    "$(sysctl -n kernel.unprivileged_userns_apparmor_policy)"
uprof=$(sed -n 's/.*(profile \(.*\), namespace .*/\1/p' <<<"$ref")
uns=$(sed -n 's/.*, namespace \([^)]*\)).*/\1/p' <<<"$ref")
assert_eq "the user's profile is loaded before the user starts anything" enforce "$(aa_profile_mode "$uprof")"
assert_eq "the config stays the user's" "$user" "$(stat -c %U "$ulp/uc1/config")"

assert_ok "the user's lxc-start (no privilege)" ustart uc1
wait_for 30 sh -c "lxc-info -P '$ulp' -n uc1 -s -H | grep -qx RUNNING"
upid=$(lxc-info -P "$ulp" -n uc1 -p -H)
ulabel=$(aa_label "$upid")
note "user container init $upid: $ulabel"
assert_match "the user's container runs under its own aa-virt profile, stacked" "$ulabel" \
    "^$(esc "$uprof")//&:$(esc "$uns"):(//)?unconfined \\(enforce\\)\$"
assert_not_contains "not LXC's generic profile" "$ulabel" "lxc-container-default"
assert_eq "its init is uid 200000 on the host" 200000 "$(awk '/^Uid:/ { print $2 }' "/proc/$upid/status")"
assert_contains "the user's hooks checked, not loaded" "$(cat "$CASE_TMP/user-hooks.log" 2>&1)" \
    "registered to user $user"
assert_denied "the user's container: sysrq denied" \
    lxc-attach -P "$ulp" -n uc1 -- sh -c "$w_sysrq"
row=$("$AA_VIRT" list --no-denials 2>&1 | awk '$1 == "uc1"')
note "list: $row"
assert_contains "aa-virt list shows the container with its owner" "$row" " user:$user "

# --- 3. the user against other containers' profiles --------------------------
# Victims: another user's registered container (oc1 of aavother) and a
# running privileged container (p1, root's).
other=aavother
mkuser $other 300000
ucreate $other oc1
oref=$("$ubin" lxc enable --user $other oc1 --inline 2>&1)
assert_contains "root registers aavother's oc1" "$oref" "registered to user $other and loaded"
oprof=$(sed -n 's/.*(profile \(.*\), namespace .*/\1/p' <<<"$oref")
ons=$(sed -n 's/.*, namespace \([^)]*\)).*/\1/p' <<<"$oref")
on_exit "$AA_VIRT" lxc disable -P "$(getent passwd $other | cut -d: -f6)/.local/share/lxc" oc1
assert_ok "lxc-create the privileged busybox p1" lxc-create -P "$lp" -t busybox -n p1
on_exit lxc-destroy -P "$lp" -f -n p1
on_exit lxc-stop -P "$lp" -k -n p1
sedcfg "$lp/p1/config"
pref=$("$AA_VIRT" lxc enable -P "$lp" p1 --inline 2>&1)
pprof=$(sed -n 's/.*(profile \(.*\), namespace .*/\1/p' <<<"$pref")
pns=$(sed -n 's/.*, namespace \(.*\))$/\1/p' <<<"$pref")
assert_ok "lxc-start p1 (privileged)" lxc-start -P "$lp" -n p1 -d
wait_for 30 sh -c "lxc-info -P '$lp' -n p1 -s -H | grep -qx RUNNING"
assert_match "p1 runs stacked in its namespace" "$(aa_label "$(lxc-info -P "$lp" -n p1 -p -H)")" \
    "^$(esc "$pprof")//&:$(esc "$pns"):"

# a. With aa-virt's hooks in the user's config: the hooks refuse any label
#    but the container's own registered one, before LXC switches to it.
ublock=$(sed -n '/^# BEGIN aa-virt/,/^# END aa-virt/p' "$ulp/uc1/config")
for victim in "$oprof//&:$ons:" "$pprof//&:$pns:" "$uprof//&:$uns:"; do
    as_user sh -c "sed -i '/^# BEGIN aa-virt/,/^# END aa-virt/d; /^lxc.apparmor.profile/d' '$ulp/uc2/config'"
    printf '%s\n' "$ublock" | sed "s#^lxc.apparmor.profile = .*#lxc.apparmor.profile = $victim#" \
        | as_user sh -c "cat >> '$ulp/uc2/config'"
    assert_fails "the user cannot start uc2 under ${victim%%//*}" ustart uc2
    assert_contains "the refusal names the label" "$(cat "$CASE_TMP/lxc-uc2.log" 2>&1)" "not aa-virt's label"
    assert_ne "uc2 is not running" RUNNING "$(lxc-info -P "$ulp" -n uc2 -s -H 2>&1)"
done

# b. Without aa-virt's hooks (the user edits them out), the kernel decides.
#    It lets any unconfined task change to any loaded profile (6.1 and
#    6.12 alike), so the user's task does get into the other label: that is
#    asserted, not hidden. What the label would give them, managing the
#    other container's policy namespace from a user namespace of their own,
#    is what the kernel refuses once aa-virt has closed the switch.
entered() { # LABEL: the label, as root sees it, of a task the user put under LABEL
    local f=$CASE_TMP/entered.pid
    rm -f "$f"
    as_user aa-exec -p "$1" -- sh -c "echo \$\$ > $f; exec sleep 3" &
    wait_for 10 test -s "$f"
    aa_label "$(cat "$f")"
    wait
}
printf 'profile aavprobe /nonexistent/aavprobe {\n  /tmp/** r,\n}\n' > "$CASE_TMP/probe.sd"
apparmor_parser -Q -S "$CASE_TMP/probe.sd" > "$CASE_TMP/probe.bin"
chmod 644 "$CASE_TMP/probe.bin"
manage() { # LABEL: as the user, under LABEL, in a new user namespace, load a profile
    as_user aa-exec -p "$1" -- unshare -Ur sh -c "cat '$CASE_TMP/probe.bin' > $AA_SECFS/.replace"
}
nsprofiles() { ls "$AA_SECFS/policy/namespaces/$1/profiles" 2>&1 | tr '\n' ' '; }
for v in "oc1 $oprof $ons" "p1 $pprof $pns"; do
    read -r vn vprof vns <<<"$v"
    assert_match "residual: the kernel lets the user's task into $vn's label" \
        "$(entered "$vprof//&:$vns:")" "^$(esc "$vprof")//&:$(esc "$vns"):(//)?unconfined \\(enforce\\)\$"
    before=$(nsprofiles "$vns")
    kernel_log_mark
    assert_denied "under $vn's label the user cannot load policy into its namespace" manage "$vprof//&:$vns:"
    assert_kernel_log "the kernel refused it as not policy admin, under $vn's label" \
        'operation="profile_replace".*info="not policy admin".*label="'"$(esc "$vprof")//&:$(esc "$vns"):"
    assert_eq "$vn's namespace holds the same profiles" "$before" "$(nsprofiles "$vns")"
done
ppid=$(lxc-info -P "$lp" -n p1 -p -H)
assert_denied "under p1's label the user still cannot signal p1's init" \
    as_user aa-exec -p "$pprof//&:$pns:" -- sh -c "kill -0 $ppid"
# The control: with the switch open (the kernel's default) the same user
# does load policy into p1's namespace.
sysctl -qw kernel.unprivileged_userns_apparmor_policy=1
assert_ok "control: with the switch at 1 the user loads policy into p1's namespace" manage "$pprof//&:$pns:"
sysctl -qw kernel.unprivileged_userns_apparmor_policy=0
assert_contains "control: the probe is in p1's namespace" "$(nsprofiles "$pns")" aavprobe
printf aavprobe > "$AA_SECFS/policy/namespaces/$pns/.remove"
# Debian 13's kernel has apparmor_restrict_unprivileged_unconfined: it
# turns the change into a stack on unconfined, which still lands in the
# other container's namespace, so aa-virt does not rely on it.
if [ -e /proc/sys/kernel/apparmor_restrict_unprivileged_unconfined ]; then
    sysctl -qw kernel.apparmor_restrict_unprivileged_unconfined=1
    assert_match "restrict_unprivileged_unconfined=1: the user's task still lands in p1's namespace" \
        "$(entered "$pprof//&:$pns:")" "^$(esc "$pprof")//&.*:$(esc "$pns"):"
    sysctl -qw kernel.apparmor_restrict_unprivileged_unconfined=0
else
    note "Debian $DEBIAN: no kernel.apparmor_restrict_unprivileged_unconfined"
fi
# LXC without the hooks does the same as aa-exec: the residual, asserted.
as_user sh -c "sed -i '/^# BEGIN aa-virt/,/^# END aa-virt/d; /^lxc.apparmor.profile/d' '$ulp/uc2/config'; echo 'lxc.apparmor.profile = $oprof//&:$ons:' >> '$ulp/uc2/config'"
assert_ok "residual: without the hooks the user's lxc-start of uc2 under oc1's label succeeds" ustart uc2
wait_for 30 sh -c "lxc-info -P '$ulp' -n uc2 -s -H | grep -qx RUNNING"
assert_match "residual: uc2's init runs under oc1's label" \
    "$(aa_label "$(lxc-info -P "$ulp" -n uc2 -p -H 2>/dev/null)" 2>&1)" \
    "^$(esc "$oprof")//&:$(esc "$ons"):(//)?unconfined \\(enforce\\)\$"
assert_ok "the user's lxc-stop of uc2" as_user lxc-stop -n uc2 -k
assert_ok "lxc-stop p1" lxc-stop -P "$lp" -n p1 -k

# The switch stays closed for the user's own container: it still runs.
assert_eq "uc1 still runs" RUNNING "$(lxc-info -P "$ulp" -n uc1 -s -H 2>&1)"
assert_ok "the user's lxc-stop" as_user lxc-stop -n uc1 -k
wait_for 20 sh -c "grep -q '^post-stop' '$CASE_TMP/user-hooks.log'"
assert_eq "the user's post-stop leaves root's policy loaded" enforce "$(aa_profile_mode "$uprof")"
assert_ok "root: aa-virt lxc disable unloads it" "$AA_VIRT" lxc disable -P "$ulp" uc1
assert_eq "after disable the user's profile is unloaded" "" "$(aa_profile_mode "$uprof")"
