#!/usr/bin/env bash
# Drive a REAL libvirtd through aa-virt's qemu hook. Run by
# tests/libvirt/hook_libvirtd.rs as:
#
#   unshare --mount --propagation private scripts/libvirtd-test.sh AA_VIRT PARSER FAKE_FS
#
# In that private mount namespace /etc and /var/lib are overlays (so
# `aa-virt install`, its manifest and the daemon's config changes never
# touch the host) and /run,
# /var/lib/libvirt, /var/log and /var/cache are private tmpfs, so this
# libvirtd (started and stopped here) is invisible to the host and to other
# runs. The guest is a tiny TCG domain with no OS.
#
# The host kernel has no AppArmor. What this proves and what it does not:
#  - libvirt really runs the hook installed by `aa-virt install` for
#    prepare/start/started/stopped/release/restore, with its real domain XML;
#  - without AppArmor and fail = "closed", the start is refused and libvirt's
#    error carries aa-virt's reason; with fail = "open" it starts, unconfined;
#  - with a stand-in kernel (FAKE_FS: the securityfs-like dir of aa-virt's
#    test-only fake kernel, which a test build of AA_VIRT finds by its marker
#    file: a load compiles with PARSER, the real apparmor_parser, then
#    records the profile as loaded), the hook writes the profile for the
#    domain's real XML, it compiles, and stop unloads it and removes .files;
#  - restore (a filter) gets the XML back unchanged and the guest comes back;
#  - a disk at /etc/shadow stops the start with aa-virt's reason in the error.
# NOT proven here: loading into a kernel and QEMU running under the profile
# (integration-vms/suite/cases/20-libvirt-hook.sh does that).
set -euo pipefail

AA_VIRT=${1:?usage: libvirtd-test.sh AA_VIRT PARSER FAKE_FS}
PARSER=${2:?}
FAKE_FS=${3:?}

pass=0
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { pass=$((pass + 1)); echo "ok $pass - $*"; }

[ "$(id -u)" = 0 ] || fail "must run as root (it starts libvirtd)"
for t in libvirtd virsh qemu-system-x86_64 qemu-img apparmor_parser; do
    command -v "$t" >/dev/null || fail "$t is missing: install libvirt-daemon-system, libvirt-clients, qemu-system-x86, qemu-utils, apparmor (CI does)"
done
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] \
    || fail "not in a private mount namespace: run under unshare --mount --propagation private"

W=$(mktemp -d /tmp/aa-virt-libvirtd.XXXXXX)
for d in /etc /var/lib; do
    n=$(basename "$d")
    mkdir -p "$W/$n-up" "$W/$n-work"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$W/$n-up,workdir=$W/$n-work" "$d" \
        || fail "cannot mount an overlay on $d"
done
for d in /run /var/lib/libvirt /var/log /var/cache; do
    mkdir -p "$d"
    mount -t tmpfs -o mode=0755 tmpfs "$d"
done
mkdir -p /run/lock /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/lib/libvirt/images

daemon_pid=
cleanup() {
    set +e
    if [ -n "$daemon_pid" ]; then
        for d in $(virsh list --name 2>/dev/null); do virsh destroy "$d" >/dev/null 2>&1; done
        kill "$daemon_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$daemon_pid" 2>/dev/null
    fi
    # QEMU children of the daemon, if any survived it.
    for p in $(pgrep -f "guest=aavt-$$" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT

# --- the daemon's private configuration -------------------------------------
rm -f /etc/libvirt/qemu/networks/autostart/*.xml
cat >> /etc/libvirt/qemu.conf <<'EOF'
# aa-virt libvirtd-test: run QEMU as root (images are in a private temp dir),
# write QEMU's stdout to a file (no virtlogd here).
user = "root"
group = "root"
stdio_handler = "file"
remember_owner = 0
EOF
cat >> /etc/libvirt/libvirtd.conf <<'EOF'
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF

# --- aa-virt install (into the overlay /etc, as on a real host) -------------
out=$("$AA_VIRT" install 2>&1) || fail "aa-virt install: $out"
echo "$out" | sed 's/^/  install: /'
[ -x /etc/libvirt/hooks/qemu.d/aa-virt ] || fail "install did not write the hook"
grep -q "created   /etc/libvirt/hooks/qemu.d/aa-virt" <<<"$out" || fail "install did not report the hook"
grep -q "usr.sbin.libvirtd.aa-virt" /etc/apparmor.d/local/usr.sbin.libvirtd \
    || fail "install did not add the daemon override include"
apparmor_parser -Q -K -M /usr/share/apparmor-features/features -o /dev/null \
    /etc/apparmor.d/usr.sbin.libvirtd /etc/apparmor.d/usr.bin.aa-virt \
    || fail "the installed daemon profile or aa-virt's profile does not compile"
ok "aa-virt install wrote the hook, the overrides and profiles that compile"

# Hooks are discovered when the daemon starts: start it now.
libvirtd -d -p /run/aa-virt-test-libvirtd.pid || fail "libvirtd does not start"
for _ in $(seq 100); do
    [ -S /run/libvirt/libvirt-sock ] && [ -s /run/aa-virt-test-libvirtd.pid ] && break
    sleep 0.1
done
daemon_pid=$(cat /run/aa-virt-test-libvirtd.pid 2>/dev/null) || fail "libvirtd wrote no pid file"
export LIBVIRT_DEFAULT_URI=qemu:///system
virsh version >/dev/null || fail "virsh cannot reach the daemon"
ok "libvirtd $(libvirtd --version | awk '{print $NF}') is up with the hook installed"

conf=/etc/aa-virt/aa-virt.toml
set_conf() { printf '%s\n' "$@" > "$conf"; }
NAME=aavt-$$
UUID=$(cat /proc/sys/kernel/random/uuid)
PROFILE=libvirt-$UUID
qemu-img create -q -f raw "$W/disk.img" 16M
# shellcheck source=../integration-vms/suite/tiny-domain.sh
. "$(dirname "$0")/../integration-vms/suite/tiny-domain.sh"
tiny_domain "$NAME" "$UUID" "$W/disk.img" > "$W/dom.xml"
virsh define "$W/dom.xml" >/dev/null || fail "virsh define"

# --- 1. no AppArmor, fail closed (the default): the start is refused ---------
rm -f "$conf"
if err=$(virsh start "$NAME" 2>&1); then fail "started without AppArmor although fail is closed: $err"; fi
grep -q "would run unconfined" <<<"$err" || fail "libvirt's error lacks aa-virt's reason: $err"
grep -qi "apparmor" <<<"$err" || fail "libvirt's error does not say AppArmor is missing: $err"
[ "$(virsh domstate "$NAME")" = "shut off" ] || fail "guest is not shut off after a refused start"
ok "fail closed: start refused, libvirt says: $(grep -o 'aa-virt: error: .*' <<<"$err" | head -c 200)"

# --- 2. no AppArmor, fail open: starts unconfined, nothing written -----------
set_conf 'fail = "open"'
virsh start "$NAME" >/dev/null || fail "fail open: the guest did not start"
[ "$(virsh domstate "$NAME")" = running ] || fail "fail open: guest not running"
[ ! -e "/etc/apparmor.d/libvirt/$PROFILE" ] || fail "fail open without AppArmor wrote a profile"
warn=$("$AA_VIRT" hook qemu "$NAME" prepare begin - < "$W/dom.xml" 2>&1) || fail "fail open hook exited non-zero"
grep -q "runs UNCONFINED" <<<"$warn" || fail "fail open: no warning: $warn"
virsh destroy "$NAME" >/dev/null
ok "fail open: guest started, unconfined, with the warning: $warn"

# --- 3. stand-in kernel: profile for the real XML, compiled, then removed ----
: > "$FAKE_FS/profiles"
: > "$FAKE_FS/.remove"
set_conf "securityfs = \"$FAKE_FS\"" "apparmor_parser = \"$PARSER\""
virsh start "$NAME" >/dev/null || fail "guest did not start with the stand-in kernel"
id=$(virsh domid "$NAME")
files=/etc/apparmor.d/libvirt/$PROFILE.files
[ -s "/etc/apparmor.d/libvirt/$PROFILE" ] || fail "no profile file for $NAME"
[ -s "$files" ] || fail "no .files for $NAME"
grep -q "^  \"$W/disk.img\" rwk," "$files" || fail ".files lacks the disk: $(cat "$files")"
grep -q "domain-$id-$NAME" "$files" || fail ".files lacks the runtime dir for domain id $id: $(cat "$files")"
grep -q "^$PROFILE (enforce)" "$FAKE_FS/profiles" || fail "the hook did not load $PROFILE"
apparmor_parser -Q -K -M /usr/share/apparmor-features/features -o /dev/null "/etc/apparmor.d/libvirt/$PROFILE" \
    || fail "the profile the hook wrote does not compile"
# The rules match what aa-virt renders from the live XML libvirt reports.
virsh dumpxml "$NAME" > "$W/live.xml"
"$AA_VIRT" profile --files-only "$W/live.xml" > "$W/expected.files" || fail "aa-virt profile on the live XML"
diff -u "$W/expected.files" "$files" || fail "the hook's .files differs from the live XML's rules"
ok "prepare: $PROFILE written for the real XML (disk, domain-$id-$NAME), compiled, loaded in the stand-in"

virsh destroy "$NAME" >/dev/null
for _ in $(seq 50); do [ -e "$files" ] || break; sleep 0.1; done
[ ! -e "$files" ] || fail "stopped/release left $files"
[ -e "/etc/apparmor.d/libvirt/$PROFILE" ] || fail "the admin-editable profile file was removed"
[ "$(cat "$FAKE_FS/.remove")" = "$PROFILE" ] || fail "the profile was not unloaded: .remove has '$(cat "$FAKE_FS/.remove")'"
ok "destroy: profile unloaded, .files removed, profile file kept"

# --- 4. restore (a filter): XML back unchanged, guest back up ---------------
echo "$PROFILE (enforce)" > "$FAKE_FS/profiles"
"$AA_VIRT" hook qemu "$NAME" restore begin - < "$W/live.xml" > "$W/echo.xml" 2>/dev/null \
    || fail "restore hook failed"
cmp -s "$W/live.xml" "$W/echo.xml" || fail "the restore hook changed the XML"
: > "$FAKE_FS/profiles"
virsh start "$NAME" >/dev/null || fail "start before save"
virsh save "$NAME" "$W/saved.img" >/dev/null || fail "virsh save"
[ ! -e "$files" ] || fail "save (which stops the guest) left $files"
virsh restore "$W/saved.img" >/dev/null || fail "virsh restore (the hook is a filter there)"
[ "$(virsh domstate "$NAME")" = running ] || fail "guest not running after restore"
[ -s "$files" ] || fail "restore did not prepare the profile"
virsh destroy "$NAME" >/dev/null
ok "restore: the hook echoed the XML unchanged and the guest came back with its profile"

# --- 5. a restricted disk: no start, aa-virt's reason in libvirt's error ----
BAD=aavt-$$-bad
BAD_UUID=$(cat /proc/sys/kernel/random/uuid)
tiny_domain "$BAD" "$BAD_UUID" /etc/shadow > "$W/bad.xml"
virsh define "$W/bad.xml" >/dev/null || fail "virsh define (bad)"
for mode in closed open; do
    set_conf "fail = \"$mode\"" "securityfs = \"$FAKE_FS\"" "apparmor_parser = \"$PARSER\""
    if err=$(virsh start "$BAD" 2>&1); then fail "fail $mode: a guest with /etc/shadow as its disk started"; fi
    grep -q "refusing /etc/shadow" <<<"$err" || fail "fail $mode: libvirt's error lacks aa-virt's reason: $err"
    [ ! -e "/etc/apparmor.d/libvirt/libvirt-$BAD_UUID" ] || fail "fail $mode: a refused guest got a profile"
done
ok "restricted disk: start refused (fail closed and open), libvirt says: $(grep -o 'aa-virt: error: .*' <<<"$err" | head -c 200)"

virsh undefine "$BAD" >/dev/null
virsh undefine "$NAME" >/dev/null
echo "libvirtd-test: $pass passed"
