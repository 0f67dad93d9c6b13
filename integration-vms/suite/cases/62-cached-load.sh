# A load whose inputs are unchanged, on a real AppArmor kernel: aa-virt
# writes the policy the parser cached at the last load straight to
# securityfs .replace (src/apparmor/kernel.rs) instead of starting
# apparmor_parser. Proven here in helper mode: the parser does not run for
# that load, the kernel then holds the very policy the parser loaded (the
# kernel's own hash) and enforces it; a local/ rule added still compiles,
# and taking it out again does not bring it back from the cache.

NAME=aavt-cached
UUID=3c9e2d1a-4b5f-4a6e-9d7c-8b1a2f3e4d5c
PROFILE=libvirt-$UUID
IMG=/var/lib/libvirt/images/aavt-cached.img
LOCAL=/etc/apparmor.d/local/$PROFILE
PROBE=$CASE_TMP/cached-probe
RUNS=$CASE_TMP/parser-runs

# The helper never opens a raw disk: a small file that cat can show.
echo disk > "$IMG"
on_exit rm -f "$IMG"
echo probe > "$PROBE"
tiny_domain "$NAME" "$UUID" "$IMG" raw > "$CASE_TMP/dom.xml"

# The abstractions the helper writes where missing: removed again at the
# end only when this case made them.
for a in aa-virt-qemu aa-virt-qemu-gl; do
    [ -e "/etc/apparmor.d/abstractions/$a" ] || on_exit rm -f "/etc/apparmor.d/abstractions/$a"
done
on_exit rm -f "/etc/apparmor.d/libvirt/$PROFILE" "$LOCAL"
on_exit "$AA_VIRT" helper -D -u "$PROFILE"

# The real parser behind a wrapper that counts its runs.
cat > "$CASE_TMP/apparmor_parser" <<EOF
#!/bin/sh
echo "\$*" >> '$RUNS'
exec /sbin/apparmor_parser "\$@"
EOF
chmod 755 "$CASE_TMP/apparmor_parser"
runs() { [ -e "$RUNS" ] && wc -l < "$RUNS" || echo 0; }
helper() { AA_VIRT_PARSER=$CASE_TMP/apparmor_parser "$AA_VIRT" helper "$@" < "$CASE_TMP/dom.xml"; }
in_guest() { aa-exec -p "$PROFILE" -- "$@"; }
# The kernel's hash of the loaded profile (CONFIG_SECURITY_APPARMOR_HASH).
policy_hash() {
    local d
    for d in "$AA_SECFS"/policy/profiles/*/; do
        [ "$(cat "$d/name" 2>/dev/null)" = "$PROFILE" ] || continue
        cat "$d/sha256" 2>/dev/null || cat "$d/sha1" 2>/dev/null
        return
    done
}

assert_ok "helper -c: the first load compiles" helper -c -u "$PROFILE"
assert_eq "the parser ran once" 1 "$(runs)"
assert_eq "$PROFILE is loaded" enforce "$(aa_profile_mode "$PROFILE")"
first=$(policy_hash)
note "kernel hash after the parser's load: ${first:-none}"
assert_ok "helper -R: unloaded (the guest stopped)" helper -R -u "$PROFILE"
assert_eq "$PROFILE is gone from the kernel" "" "$(aa_profile_mode "$PROFILE")"

note "cache record: $(tr '\n' ';' < "/var/cache/aa-virt/apparmor/aa-virt-inputs/$PROFILE" 2>&1)"
note "cache: $(cd /var/cache/aa-virt/apparmor && ls -d */* 2>&1 | tr '\n' ' ')"
note "set_load: $(cat "$AA_SECFS/features/policy/set_load" 2>&1)"
kernel_log_mark
assert_ok "helper -r, nothing changed: loads from the cache" helper -r -u "$PROFILE"
assert_eq "the parser did not run for it" 1 "$(runs)"
assert_eq "$PROFILE is loaded again, enforced" enforce "$(aa_profile_mode "$PROFILE")"
assert_kernel_log "the kernel logged the load" \
    "apparmor=\"STATUS\" operation=\"profile_(load|replace)\".* name=\"$PROFILE\""
if [ -n "$first" ]; then
    assert_eq "the kernel holds the same policy as after the parser's load" "$first" "$(policy_hash)"
else
    note "this kernel keeps no policy hash; the rules below show what is enforced"
fi
assert_eq "the guest's disk is readable under the profile" disk "$(in_guest cat "$IMG" 2>&1)"
assert_denied "the probe file is not the guest's" in_guest cat "$PROBE"
assert_denied "/etc/shadow is denied" in_guest cat /etc/shadow

# local/ edits change the inputs: compiled, and never from the cache.
# Each -r follows a -R, as at a guest's restart (a loaded profile whose
# rules did not change is not reloaded).
printf '  "%s" r,\n' "$PROBE" > "$LOCAL"
assert_ok "helper -R" helper -R -u "$PROFILE"
assert_ok "helper -r after a local/ rule is added" helper -r -u "$PROFILE"
assert_eq "the parser ran for it" 2 "$(runs)"
assert_eq "the local/ rule is in force" probe "$(in_guest cat "$PROBE" 2>&1)"
rm -f "$LOCAL"
assert_ok "helper -R again" helper -R -u "$PROFILE"
assert_ok "helper -r after the local/ rule is removed" helper -r -u "$PROFILE"
assert_eq "the parser ran again" 3 "$(runs)"
assert_denied "the removed rule did not come back from the cache" in_guest cat "$PROBE"
if [ -n "$first" ]; then
    assert_eq "the kernel holds the first policy again" "$first" "$(policy_hash)"
fi
