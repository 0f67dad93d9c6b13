# 76-canary: `aa-virt check` compiles every managed guest's policy against
# another release's parser and kernel feature set, loading nothing. Guests:
# a libvirt guest (hook mode, its profile written and loaded by the prepare
# hook) and an LXC container under aa-virt (its profile rendered at start).
#
# Debian 12, before an upgrade to 13: Debian 13's apparmor_parser 4.1 (from
# the share, with its own loader and libc) and Debian 13's kernel feature
# set (tests/canary/features-debian13-kernel, captured from the Debian 13
# VM's securityfs; this case checks it there). Every guest compiles (exit
# 0), and the report names the classes 6.12 mediates that 6.1 does not
# (userns, io_uring), and per guest that its pinned abi/3.0 keeps them
# unmediated for it.
#
# Debian 13: the committed feature set is this kernel's; the host's own
# parser accepts every guest; Debian 12's parser 3.0.8 with Debian 12's
# features file (a host put back on Debian 12, or a container moved to
# one) rejects the container's profile, whose remount rules name
# `nosymfollow` (rendered because 4.1 knows it) that 3.0.8 does not: exit
# 1, the container named with the parser's own message, and nothing loaded
# or changed in the kernel meanwhile. (No profile aa-virt renders on
# Debian 12 was found that 4.1 rejects: 4.1 accepted every 3.0.8 rule
# tried, so the failing direction is this one.)

. "$SUITE_DIR/busybox-container.sh"
NAME=aavt-canary
UUID=3c9a2e71-5b4d-4a8f-9e06-d1c2b3a49587
PROFILE=libvirt-$UUID
IMG=/var/lib/libvirt/images/aavt-canary.img
export LIBVIRT_DEFAULT_URI=qemu:///system

# The compact JSON object of guest NAME in `check --json` output on stdin.
jguest() {
    awk -v n="$1" '/^    \{/ { buf = ""; inb = 1 } inb { buf = buf $0 }
        /^    \}/ { if (index(buf, "\"guest\": \"" n "\"")) print buf; inb = 0 }' | tr -s ' '
}

# --- managed guests -----------------------------------------------------------
on_exit "$AA_VIRT" uninstall
on_exit rm -f "/etc/apparmor.d/libvirt/$PROFILE" "/etc/apparmor.d/libvirt/$PROFILE.files"
assert_ok "aa-virt install" "$AA_VIRT" install
qemu-img create -q -f raw "$IMG" 16M
on_exit rm -f "$IMG"
SECLABEL="<seclabel type='static' model='apparmor' relabel='no'><label>$PROFILE</label></seclabel>"
tiny_domain "$NAME" "$UUID" "$IMG" raw "" "$SECLABEL" > "$CASE_TMP/dom.xml"
on_exit sh -c "'$AA_VIRT' hook qemu '$NAME' release end - < '$CASE_TMP/dom.xml'"
assert_ok "the prepare hook writes and loads the guest's profile" \
    sh -c "'$AA_VIRT' hook qemu '$NAME' prepare begin - < '$CASE_TMP/dom.xml'"
on_exit virsh undefine "$NAME"
assert_ok "virsh define" virsh define "$CASE_TMP/dom.xml"

lp=/srv/aavtcanary.$$
busybox_container "$lp" c1
assert_ok "aa-virt lxc enable c1" "$AA_VIRT" lxc enable -P "$lp" c1 --inline
assert_ok "lxc-start c1 (renders and loads its profile)" lxc-start -P "$lp" -n c1 -d
wait_for 30 sh -c "lxc-info -P '$lp' -n c1 -s -H | grep -qx RUNNING"
where=(-c qemu:///system -P "$lp")
profiles_before=$(LC_ALL=C sort "$AA_SECFS/profiles")

if [ "$DEBIAN" = 13 ]; then
    # --- Debian 13: the fixture, the host's own parser, Debian 12's parser -----
    aa-features-abi -x -w "$CASE_TMP/kernel-features"
    cp "$CASE_TMP/kernel-features" "$SHARE/out/features-debian13-kernel"
    assert_eq "tests/canary/features-debian13-kernel is this kernel's feature set" \
        "$(cat "$CASE_TMP/kernel-features")" "$(cat "$SHARE/features/debian13" 2>&1)"

    assert_ok "check with the host's own parser and kernel: every guest compiles" \
        "$AA_VIRT" check "${where[@]}"
    assert_contains "it names the libvirt guest" "$LAST_OUT" "ok    $NAME (qemu"
    assert_contains "it names the container" "$LAST_OUT" "ok    c1 (lxc"

    p12=$SHARE/parsers/debian12/apparmor_parser
    assert_contains "Debian 12's parser is 3.0" "$("$p12" --version 2>&1 | head -n 1)" "version 3.0."
    assert_fails "check with Debian 12's parser and features fails" \
        "$AA_VIRT" check "${where[@]}" --parser "$p12" --features "$SHARE/features/debian12" --json
    assert_eq "exit status 1" 1 "$LAST_RC"
    json=$(printf '%s\n' "$LAST_OUT" | sed -n '/^{/,/^}/p')
    c1=$(jguest c1 <<<"$json")
    note "c1: $c1"
    assert_match "JSON: c1 does not compile" "$c1" '"ok": false'
    assert_contains "stderr names the guest and its file" "$LAST_OUT" "aa-virt: guest c1 (lxc):"
    assert_match "JSON: the libvirt guest is checked too" "$(jguest "$NAME" <<<"$json")" '"ok": (true|false)'
    # The reason: the container's remount rules list nosymfollow where the
    # parser knows it (4.1); 3.0.8 does not ("unsupported mount options").
    cpath=$(sed -n 's/.*"path": "\([^"]*\)".*/\1/p' <<<"$c1")
    err=$(sed -n 's/.*"error": "\([^"]*\)".*/\1/p' <<<"$c1")
    assert_match "JSON: the parser's message" "$err" '[a-z]'
    direct=$("$p12" -Q -K -M "$SHARE/features/debian12" -o /dev/null "$cpath" 2>&1)
    note "Debian 12's parser on $cpath: $direct"
    assert_contains "it is what Debian 12's parser says about the file itself" "$direct" "$err"
    assert_contains "the container's profile has the option 3.0.8 does not know" "$(cat "$cpath" 2>&1)" "nosymfollow"
else
    # --- Debian 12: Debian 13's parser and kernel features ---------------------
    p13=$SHARE/parsers/debian13/apparmor_parser
    assert_contains "Debian 13's parser runs here (own loader and libc)" \
        "$("$p13" --version 2>&1 | head -n 1)" "version 4.1"
    assert_exists "Debian 13's kernel feature set is in the share" "$SHARE/features/debian13"
    assert_ok "check with Debian 13's parser and kernel features: every guest compiles" \
        "$AA_VIRT" check "${where[@]}" --parser "$p13" --features "$SHARE/features/debian13" --json
    json=$LAST_OUT
    assert_contains "JSON: the parser is 4.1" "$json" '"parser_version": "AppArmor parser version 4.1'
    for g in "$NAME" c1; do
        assert_match "JSON: $g is named and compiles" "$(jguest "$g" <<<"$json")" '"ok": true'
    done
    nm=$(printf '%s\n' "$json" | sed -n '/"newly_mediated"/,/\]/p' | tr -d ' \n')
    note "newly mediated: $nm"
    assert_contains "JSON: userns is newly mediated" "$nm" '"userns"'
    assert_contains "JSON: io_uring is newly mediated" "$nm" '"io_uring"'
    # Both guests pin abi/3.0 (no userns, no io_uring): the 6.12 kernel
    # leaves those unmediated for them (case 70 and 45 show it on Debian 13),
    # so neither class is new for either guest.
    for g in "$NAME" c1; do
        assert_match "JSON: $g pins abi/3.0, nothing new applies to it" "$(jguest "$g" <<<"$json")" \
            '"abi": "abi/3.0", "new_mediation": \[\]'
    done
    assert_ok "the text report" "$AA_VIRT" check "${where[@]}" --parser "$p13" --features "$SHARE/features/debian13"
    assert_contains "text: what the new classes mean per guest" "$LAST_OUT" \
        "c1 (lxc): its policy pins abi/3.0: userns, io_uring stay unmediated for it"
    assert_match "text: the summary" "$LAST_OUT" "^0 of [0-9]+ guests would fail to compile$"
fi
assert_eq "check loaded and removed nothing (the kernel's profile list)" \
    "$profiles_before" "$(LC_ALL=C sort "$AA_SECFS/profiles")"
