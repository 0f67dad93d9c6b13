# 45-lxc-userns: user namespaces inside a container without nesting, and
# what the policy ABI of the container's profile changes about them.
# systemd's PrivateUsers= and browser sandboxes create user namespaces in
# ordinary containers; this case records, on the kernel's view, which
# profile text lets them and which does not:
#   - the profile as aa-virt renders it: `unshare -Urm` works;
#   - (Debian 13) the same profile with abi 4.0 and without `userns,`:
#     denied, and the kernel's denial names the container's profile;
#   - (Debian 13) abi 4.0 with `userns,`: works again.
# Debian 12's AppArmor 3.0.8 has no abi/4.0 (and kernel 6.1 no userns
# mediation), so there only the rendered profile is checked.

lp=/srv/aavirtuserns.$$
mkdir -p "$lp"
on_exit rm -rf "$lp"
ct=u1
assert_ok "lxc-create (busybox template)" lxc-create -P "$lp" -t busybox -n $ct
cfg=$lp/$ct/config
on_exit lxc-destroy -P "$lp" -f -n $ct
on_exit lxc-stop -P "$lp" -k -n $ct
# No network, no nesting (as 40-lxc).
sed -i -e '/^lxc\.net\.0\./d' -e 's/^lxc\.apparmor\.allow_nesting = 1/lxc.apparmor.allow_nesting = 0/' "$cfg"
echo "lxc.net.0.type = empty" >> "$cfg"
assert_ok "aa-virt lxc enable" "$AA_VIRT" lxc enable -P "$lp" $ct --inline
ref=$("$AA_VIRT" lxc enable -P "$lp" $ct --inline 2>&1)
prof=$(sed -n 's/.*(profile \(.*\), namespace .*/\1/p' <<<"$ref")
assert_match "profile name known" "$prof" '^lxc-.*-aa-virt$'
assert_ok "lxc-start -d" lxc-start -P "$lp" -n $ct -d
wait_for 30 sh -c "lxc-info -P '$lp' -n $ct -s -H | grep -qx RUNNING"
pid=$(lxc-info -P "$lp" -n $ct -p -H)
assert_match "init carries the stacked label" "$(aa_label "$pid")" '//&:lxc-.*:(//)?unconfined \(enforce\)$'

att() { lxc-attach -P "$lp" -n $ct -- "$@"; }
userns_probe() { att /bin/busybox unshare -U -r -m /bin/busybox cat /proc/self/uid_map; }

rendered=$(grep -lF "profile \"$prof\"" /var/lib/aa-virt/lxc/* 2>/dev/null | head -n 1)
assert_exists "the rendered profile file" "${rendered:-/var/lib/aa-virt/lxc/(none for $prof)}"
note "rendered: $(grep -m1 '^abi ' "$rendered"); userns rule: $(grep -c '^ *userns,' "$rendered")"
assert_ok "rendered profile: unshare -Urm works in the container" userns_probe
assert_match "rendered profile: inside, uid 0 maps to the container's root" "$LAST_OUT" '^ *0 +0 +1$'

if [ "$DEBIAN" = 12 ]; then
    # Debian 12: AppArmor 3.0.8 has no abi/4.0; kernel 6.1 has no userns mediation.
    assert_eq "kernel 6.1 does not mediate user namespace creation" no \
        "$(grep -qw userns_create "$AA_SECFS/features/namespaces/mask" 2>/dev/null && echo yes || echo no)"
else
    on_exit apparmor_parser -r "$rendered"
    sed -e 's#^abi <abi/[0-9.]*>,#abi <abi/4.0>,#' -e '/^ *userns,$/d' "$rendered" > "$CASE_TMP/no-userns"
    assert_ok "abi 4.0 without userns: the profile replaces the running one" apparmor_parser -r "$CASE_TMP/no-userns"
    kernel_log_mark
    assert_denied "abi 4.0 without userns: unshare -Urm is denied in the container" userns_probe
    assert_kernel_log "abi 4.0 without userns: the kernel's denial names the container's profile" \
        "apparmor=\"DENIED\" operation=\"userns_create\".*profile=\"$(printf '%s' "$prof" | sed 's/[][\.*^$/]/\\&/g')\""
    sed -e 's#^abi <abi/[0-9.]*>,#abi <abi/4.0>,#' "$rendered" > "$CASE_TMP/userns"
    grep -q '^ *userns,$' "$CASE_TMP/userns" || sed -i 's/^  umount,$/  umount,\n  userns,/' "$CASE_TMP/userns"
    assert_ok "abi 4.0 with userns: the profile replaces the running one" apparmor_parser -r "$CASE_TMP/userns"
    assert_ok "abi 4.0 with userns: unshare -Urm works again" userns_probe
    assert_ok "the rendered profile is put back" apparmor_parser -r "$rendered"
fi
assert_ok "lxc-stop" lxc-stop -P "$lp" -n $ct -k
assert_ok "aa-virt lxc disable" "$AA_VIRT" lxc disable -P "$lp" $ct
