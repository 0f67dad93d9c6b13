# 75-package-upgrade: a package upgrade with guests running. aa-virt's .deb
# version N (this build, from the share: integration-vms/share-extras.sh)
# is installed with dpkg, `aa-virt install --mode helper` set up, a libvirt
# guest (with an allowance, a local/ rule and an edited config) and an LXC
# container started under it; then version N+1 (same binary, version bumped,
# abstractions/aa-virt-qemu with one more rule, its file time in the past as
# a reproducible build has it) is installed with `dpkg -i`.
#
# Asserted on the kernel's view: both keep running with the same pid and
# label, the guest on its old policy (the securityfs hash unchanged, the new
# rule not in force); `list --check` and `status` call the guest stale;
# `aa-virt reload` replaces its policy in place (same pid, new hash, the new
# rule in force); `list --check` passes again; profiles, .files, the
# allowance, local/ and the configuration are all still there. The
# container's policy includes nothing the package ships, so it is not stale;
# a changed container template makes it stale, and reload applies it in place.

. "$SUITE_DIR/busybox-container.sh"
DEBS=$SHARE/debs
NAME=aavt-upgrade
UUID=7d3c2b1a-0f9e-4d8c-b7a6-958473625140
PROFILE=libvirt-$UUID
IMG=/var/lib/libvirt/images/aavt-upgrade.img
HELPER=/usr/lib/libvirt/virt-aa-helper
PROBE=/var/lib/aa-virt-upgrade-probe
ALLOWED=/srv/aavt-upgrade-allowed
LOCAL=/srv/aavt-upgrade-local
ABS=/etc/apparmor.d/abstractions/aa-virt-qemu
export LIBVIRT_DEFAULT_URI=qemu:///system

[ -f "$DEBS/aa-virt-old.deb" ] && [ -f "$DEBS/aa-virt-new.deb" ] || {
    fail "the share has aa-virt's packages (run.sh, share-extras.sh)" "missing: $DEBS/aa-virt-{old,new}.deb"
    exit 0
}
v_old=$(dpkg-deb -f "$DEBS/aa-virt-old.deb" Version)
v_new=$(dpkg-deb -f "$DEBS/aa-virt-new.deb" Version)
note "versions: N $v_old, N+1 $v_new"
installed() { dpkg-query -W -f='${Version}' aa-virt 2>/dev/null; }
in_guest() { aa-exec -p "$PROFILE" -- "$@"; }
# The kernel's hash of the loaded profile (securityfs .../profiles/NAME.N/sha*).
khash() { cat "$AA_SECFS"/policy/profiles/"$1".*/sha* 2>/dev/null | head -n 1; }
# Everything aa-virt and the admin keep, with contents.
kept() {
    find /etc/apparmor.d/libvirt /etc/apparmor.d/local /etc/aa-virt /var/lib/aa-virt "$lp/c1/config" \
        -type f 2>/dev/null | LC_ALL=C sort | xargs -r sha256sum
}

# --- version N, set up and in use --------------------------------------------
# Cleanups, last-registered first: guests, then purge (its prerm runs
# `aa-virt uninstall`), then the safety nets and the daemon.
on_exit systemctl restart libvirtd
on_exit dpkg-divert --quiet --local --rename --remove "$HELPER"
on_exit "[ -L '$HELPER' ] && rm -f '$HELPER'"
on_exit rm -f "$PROBE" "$ALLOWED" "$LOCAL" "/etc/apparmor.d/local/$PROFILE" "/etc/apparmor.d/libvirt/$PROFILE" "/etc/apparmor.d/libvirt/$PROFILE.files"
on_exit dpkg --purge aa-virt
assert_ok "dpkg -i version N" dpkg -i "$DEBS/aa-virt-old.deb"
assert_eq "dpkg: version N is installed" "$v_old" "$(installed)"
assert_contains "systemd already knows the package's drop-in (postinst's daemon-reload)" \
    "$(systemctl show -p Wants --value libvirtd.service)" aa-virt-load.service
assert_ok "aa-virt install --mode helper (the packaged binary)" aa-virt install --mode helper
note "install: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"
# One copy of the boot unit and the daemons' drop-ins: the package's.
assert_exists "the package's boot unit" /lib/systemd/system/aa-virt-load.service
assert_eq "install wrote no second boot unit or drop-in under /etc/systemd/system" "" \
    "$(find /etc/systemd/system -name 'aa-virt-load*' 2>/dev/null)"
assert_ok "libvirtd restarts" systemctl restart libvirtd
wait_for 30 virsh version || fail "libvirtd does not answer after restart"
echo '# site: kept across upgrades (case 75)' >> /etc/aa-virt/aa-virt.toml

echo probe > "$PROBE"
echo allowed > "$ALLOWED"
echo local > "$LOCAL"
printf '  %s r,\n' "$LOCAL" > "/etc/apparmor.d/local/$PROFILE"
qemu-img create -q -f raw "$IMG" 16M
on_exit rm -f "$IMG"
tiny_domain "$NAME" "$UUID" "$IMG" > "$CASE_TMP/dom.xml"
on_exit virsh undefine "$NAME"
assert_ok "virsh define" virsh define "$CASE_TMP/dom.xml"
on_exit virsh destroy "$NAME"
assert_ok "virsh start (libvirt runs aa-virt as its helper)" virsh start "$NAME"
qpid=$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)
assert_eq "kernel: QEMU runs as $PROFILE (enforce)" "$PROFILE (enforce)" "$(aa_label "$qpid")"
assert_ok "aa-virt allow: one more path, in force at once" \
    aa-virt allow "$NAME" "$ALLOWED" --perms r --reason "case 75"
assert_eq "kernel: the allowance is in force" allowed "$(in_guest cat "$ALLOWED" 2>&1)"
assert_eq "kernel: the local/ rule is in force" local "$(in_guest cat "$LOCAL" 2>&1)"
assert_denied "kernel: N's policy has no rule for the probe" in_guest cat "$PROBE"

lp=/srv/aavtupg.$$
busybox_container "$lp" c1
assert_ok "aa-virt lxc enable c1 (the packaged hooks)" aa-virt lxc enable -P "$lp" c1
assert_ok "lxc-start c1" lxc-start -P "$lp" -n c1 -d
wait_for 30 sh -c "lxc-info -P '$lp' -n c1 -s -H | grep -qx RUNNING"
cpid=$(lxc-info -P "$lp" -n c1 -p -H)
clabel=$(aa_label "$cpid")
assert_match "kernel: c1's init is stacked in its namespace" "$clabel" '^lxc-.*//&:lxc-.*:(//)?unconfined \(enforce\)$'

assert_ok "list --check passes before the upgrade" aa-virt list -P "$lp" -c qemu:///system --check --no-denials
h_old=$(khash "$PROFILE")
assert_match "securityfs has the guest profile's hash" "$h_old" '^[0-9a-f]{20,}$'
kept > "$CASE_TMP/kept.before"

# --- version N+1 --------------------------------------------------------------
kernel_log_mark
assert_ok "dpkg -i version N+1 with the guests running" dpkg -i "$DEBS/aa-virt-new.deb"
note "dpkg: $(printf '%s' "$LAST_OUT" | tail -n 3 | tr '\n' ';')"
assert_eq "dpkg: version N+1 is installed" "$v_new" "$(installed)"
assert_contains "N+1's abstraction is on disk (an unmodified conffile is upgraded)" \
    "$(cat "$ABS")" "$PROBE r,"
note "abstraction mtime $(stat -c %y "$ABS"); cache $(ls -ld --time-style=full-iso /var/cache/aa-virt/apparmor 2>&1 | awk '{ print $6, $7 }')"

assert_eq "QEMU still runs, same pid" "$qpid" "$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)"
assert_ok "kernel: the pid is alive" kill -0 "$qpid"
assert_eq "kernel: QEMU keeps its label" "$PROFILE (enforce)" "$(aa_label "$qpid")"
assert_eq "kernel: the loaded policy is N's (hash unchanged)" "$h_old" "$(khash "$PROFILE")"
assert_denied "kernel: N+1's rule is not in force yet" in_guest cat "$PROBE"
assert_eq "c1 still runs, same pid" "$cpid" "$(lxc-info -P "$lp" -n c1 -p -H)"
assert_eq "kernel: c1's init keeps its label" "$clabel" "$(aa_label "$cpid")"

assert_fails "list --check fails: the guest's policy is stale" \
    aa-virt list -P "$lp" -c qemu:///system --check --no-denials
assert_eq "--check exits 4 (stale)" 4 "$LAST_RC"
assert_contains "--check names the guest" "$LAST_OUT" "stale policy: $NAME"
assert_not_contains "--check does not call c1 stale (nothing it compiles from changed)" "$LAST_OUT" "stale policy: c1"
st=$(aa-virt status "$NAME" 2>&1)
assert_match "status: the guest's policy is stale, because of what it includes" "$st" 'policy: +stale: .*changed'

kept > "$CASE_TMP/kept.after"
assert_eq "nothing lost: profiles, .files, local/, allowances, config unchanged" "" \
    "$(diff "$CASE_TMP/kept.before" "$CASE_TMP/kept.after")"
assert_contains "the admin's config line is kept" "$(cat /etc/aa-virt/aa-virt.toml)" "kept across upgrades"
assert_contains "the allowance is still listed" "$(aa-virt allow "$NAME" --list 2>&1)" "$ALLOWED"
assert_eq "the helper is still diverted to aa-virt" /usr/bin/aa-virt "$(readlink "$HELPER")"

# --- reload --------------------------------------------------------------------
assert_ok "aa-virt reload" aa-virt reload -c qemu:///system -P "$lp"
note "reload: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"
assert_eq "QEMU runs on, same pid" "$qpid" "$(cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null)"
assert_eq "kernel: same label" "$PROFILE (enforce)" "$(aa_label "$qpid")"
h_new=$(khash "$PROFILE")
assert_match "securityfs has a hash after reload" "$h_new" '^[0-9a-f]{20,}$'
assert_ne "kernel: the loaded policy changed (hash)" "$h_old" "$h_new"
assert_eq "kernel: N+1's rule is in force" probe "$(in_guest cat "$PROBE" 2>&1)"
assert_eq "kernel: the allowance is still in force" allowed "$(in_guest cat "$ALLOWED" 2>&1)"
assert_eq "kernel: the local/ rule is still in force" local "$(in_guest cat "$LOCAL" 2>&1)"
assert_eq "c1 runs on, same pid" "$cpid" "$(lxc-info -P "$lp" -n c1 -p -H)"
assert_ok "list --check passes after reload" aa-virt list -P "$lp" -c qemu:///system --check --no-denials

# --- a new container template ---------------------------------------------------
# A container's profile is rendered from aa-virt's template at each start, so
# an aa-virt with a changed template leaves the stored file as it was. Here
# the configuration's `templates` stands in for a new built-in template: one
# more deny rule. c1's stored file and the kernel still agree, yet its profile
# renders differently now: list calls c1 stale, and reload renders and loads
# it into the running container (same pid), where the kernel enforces it.
TPL=/etc/aa-virt/aavt-templates
on_exit rm -rf "$TPL"
mkdir -p "$TPL/lxc"
awk '/^}$/ { print "  # added by case 75: a changed container template"; print "  deny /aavt-template-probe r," } { print }' \
    "$SHARE/templates/lxc/container.hbs" > "$TPL/lxc/container.hbs"
assert_contains "the changed template has the new rule" "$(cat "$TPL/lxc/container.hbs")" "deny /aavt-template-probe r,"
echo probe > "$lp/c1/rootfs/aavt-template-probe"
cat_in_c1() { lxc-attach -P "$lp" -n c1 -- cat /aavt-template-probe; }
assert_eq "c1 reads the probe under the old template's policy" probe "$(cat_in_c1 2>&1)"
echo "templates = \"$TPL\"" >> /etc/aa-virt/aa-virt.toml
assert_fails "list --check: c1's profile renders differently now" \
    aa-virt list -P "$lp" -c qemu:///system --check --no-denials
assert_eq "--check exits 4 (stale)" 4 "$LAST_RC"
assert_contains "--check names c1 and why" "$LAST_OUT" "renders differently now"
assert_contains "--check names c1" "$LAST_OUT" "stale policy: c1"
assert_eq "c1 still reads the probe: nothing reloaded yet" probe "$(cat_in_c1 2>&1)"
assert_ok "aa-virt reload c1" aa-virt reload -P "$lp" c1
note "reload: $(printf '%s' "$LAST_OUT" | tr '\n' ';')"
assert_eq "c1 runs on, same pid, after the template reload" "$cpid" "$(lxc-info -P "$lp" -n c1 -p -H)"
assert_eq "kernel: c1's init keeps its label" "$clabel" "$(aa_label "$cpid")"
assert_denied "kernel: the new template's deny rule is in force in the running c1" cat_in_c1
assert_ok "list --check passes after the template reload" aa-virt list -P "$lp" -c qemu:///system --check --no-denials
sed -i "\|^templates = \"$TPL\"|d" /etc/aa-virt/aa-virt.toml
