# Hostile paths on a real AppArmor kernel: aa-virt's escaped rules open
# exactly the files the domain names and deny their neighbours, which a
# verbatim rule writer would have matched as globs, alternations or
# character classes. The profile is made and loaded by aa-virt itself (the
# hook's prepare step); processes run under it with aa-exec. Every claim is
# checked on the kernel's view (label, open() result, audit log).

NAME='aavt hostile [1]*'
UUID=3a7e0b1c-5d2f-4e6a-9b8c-7d6e5f4a3b2c
PROFILE=libvirt-$UUID
DIR=/var/lib/libvirt/images/aavt-hostile
LOCAL=/etc/apparmor.d/local/$PROFILE

mkdir -p "$DIR"
on_exit rm -rf "$DIR"
# The disks, with names full of AppArmor syntax ...
printf 'disk-glob\n' > "$DIR/vm[1]*.img"
printf 'disk-alt\n' > "$DIR/a{b,c}.img"
printf 'disk-bs\n' > "$DIR/tail\\"
printf 'disk-q\n' > "$DIR/q\"uote, x"
# ... and the neighbours those names would match if written verbatim.
for n in vm1x.img vm1.img 'vm[1]x.img' ab.img ac.img 'a{b,c}x.img' tail 'q"uote'; do
    printf 'neighbour\n' > "$DIR/$n"
done

xml() { # UUID NAME DISKS...
    local u=$1 n=$2 i=0 d; shift 2
    printf "<domain type='qemu'><name>%s</name><uuid>%s</uuid><memory unit='MiB'>64</memory>" "$n" "$u"
    printf "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
    for d in "$@"; do
        d=$(printf '%s' "$d" | sed -e 's/&/\&amp;/g' -e "s/'/\&apos;/g" -e 's/"/\&quot;/g')
        printf "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='%s'/><target dev='vd%s'/></disk>" \
            "$d" "$(printf "\\x$(printf %x $((97 + i)))")"
        i=$((i + 1))
    done
    printf "</devices></domain>\n"
}

# Let the test's tools run under the guest's profile (the admin's local
# file, which aa-virt includes and never writes).
cat > "$LOCAL" <<'RULES'
  /{usr/,}bin/cat mrix,
  /{usr/,}bin/dd mrix,
  /{usr/,}bin/sleep mrix,
RULES
# Files no abstraction grants (nameservice grants /etc/passwd, so that would
# prove nothing), outside the guest's disks.
printf 'host-secret\n' > /etc/aavt-secret
printf 'host-secret\n' > /root/aavt-secret
on_exit rm -f /etc/aavt-secret /root/aavt-secret
on_exit rm -f "$LOCAL" "/etc/apparmor.d/libvirt/$PROFILE" "/etc/apparmor.d/libvirt/$PROFILE.files"
on_exit apparmor_parser -R "/etc/apparmor.d/libvirt/$PROFILE"

xml "$UUID" "$NAME" "$DIR/vm[1]*.img" "$DIR/a{b,c}.img" "$DIR/tail\\" "$DIR/q\"uote, x" \
    '/**' '/{etc,tmp}/shadow' > "$CASE_TMP/dom.xml"
assert_ok "aa-virt hook prepare renders and loads the hostile guest's profile" \
    sh -c "'$AA_VIRT' hook qemu '$NAME' prepare begin - < '$CASE_TMP/dom.xml'"
assert_eq "the kernel has $PROFILE in enforce mode" enforce "$(aa_profile_mode "$PROFILE")"
note "rules: $(grep -v '^#' "/etc/apparmor.d/libvirt/$PROFILE.files" 2>/dev/null | tr '\n' ' ')"

run() { aa-exec -p "$PROFILE" -- "$@"; }
aa-exec -p "$PROFILE" -- sleep 30 &
sleeper=$!
on_exit kill "$sleeper"
sleep 0.5
assert_eq "a process under aa-exec carries the label (kernel view)" "$PROFILE (enforce)" \
    "$(aa_label "$sleeper")"

assert_eq "vm[1]*.img (escaped) opens" disk-glob "$(run cat "$DIR/vm[1]*.img" 2>&1)"
assert_eq "a{b,c}.img (escaped) opens" disk-alt "$(run cat "$DIR/a{b,c}.img" 2>&1)"
assert_eq "a name ending in a backslash opens" disk-bs "$(run cat "$DIR/tail\\" 2>&1)"
assert_eq "a name with a quote and a comma opens" disk-q "$(run cat "$DIR/q\"uote, x" 2>&1)"
assert_ok "the disk is writable (rwk)" \
    sh -c "printf 'w' | aa-exec -p '$PROFILE' -- dd of='$DIR/vm[1]*.img' bs=1 seek=20 conv=notrunc status=none"

kernel_log_mark
for n in vm1x.img vm1.img 'vm[1]x.img' ab.img ac.img 'a{b,c}x.img' tail 'q"uote'; do
    assert_denied "neighbour '$n' is denied" run cat "$DIR/$n"
done
assert_denied "/etc/shadow is denied despite a disk named /{etc,tmp}/shadow" run cat /etc/shadow
assert_denied "/etc/aavt-secret is denied despite a disk named /**" run cat /etc/aavt-secret
assert_denied "/root/aavt-secret is denied despite a disk named /**" run cat /root/aavt-secret
assert_kernel_log "the kernel logs the denial of vm1x.img" \
    "apparmor=\"DENIED\".*profile=\"$PROFILE\" name=\"$DIR/vm1x.img\""
assert_kernel_log "the kernel logs the denial of /etc/shadow" \
    "apparmor=\"DENIED\".*profile=\"$PROFILE\" name=\"/etc/shadow\""

# Paths that resolve into restricted places are refused before anything is
# written or loaded, with the reason naming the guest, the device and the path.
U2=3a7e0b1c-5d2f-4e6a-9b8c-7d6e5f4a3b2d
ln -sfn /etc "$DIR/etc-link"
for bad in /etc/../etc/shadow /usr/share/OVMF/../../../etc/shadow "$DIR/etc-link/shadow"; do
    xml "$U2" aavt-refused "$bad" > "$CASE_TMP/bad.xml"
    assert_fails "a disk at $bad is refused" \
        sh -c "'$AA_VIRT' hook qemu aavt-refused prepare begin - < '$CASE_TMP/bad.xml'"
    assert_contains "the reason names the guest" "$LAST_OUT" aavt-refused
    assert_contains "the reason names the device" "$LAST_OUT" vda
    assert_contains "the reason names the resolved path" "$LAST_OUT" /etc/shadow
    assert_eq "nothing is loaded for the refused guest" "" "$(aa_profile_mode "libvirt-$U2")"
    assert_fails "nothing is written for the refused guest" test -e "/etc/apparmor.d/libvirt/libvirt-$U2.files"
done
