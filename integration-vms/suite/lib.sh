# shellcheck shell=bash
# Tiny test library for the integration-vms suite. Sourced by run-case.sh
# before each case; cases never source it themselves.
#
# Every assertion appends one line to $AA_ITEST_RESULTS ("PASS|FAIL|SKIP
# <case>: <message>") and prints a human line. Counting happens in the
# runner from that file, so a case that crashes or exits early keeps the
# results it already recorded.
#
# Message first, always:
#   pass MSG / fail MSG [DETAIL...]
#   assert_eq MSG EXPECTED ACTUAL
#   assert_ne MSG UNEXPECTED ACTUAL
#   assert_contains MSG HAYSTACK NEEDLE      (fixed string)
#   assert_not_contains MSG HAYSTACK NEEDLE
#   assert_match MSG STRING ERE               (grep -E)
#   assert_exists MSG PATH
#   assert_ok MSG CMD [ARGS...]               (exit status 0)
#   assert_fails MSG CMD [ARGS...]            (exit status != 0)
#   assert_denied MSG CMD [ARGS...]           (fails with EACCES/EPERM text)
#   assert_kernel_log MSG ERE [TIMEOUT_S]     (kernel log gains a matching line)
#   skip REASON                               (records SKIP, ends the case)
# Helpers:
#   on_exit CMD...          run at case end, even on failure (LIFO)
#   aa_label PID            the kernel's label for PID
#   aa_profile_mode NAME    "enforce"/"complain"/... from .../apparmor/profiles,
#                           empty if not loaded, an error text if no AppArmor
#   kernel_log              the kernel's audit records (journald's audit
#                           transport, else dmesg; see below)
#   kernel_log_mark         remember the current log length; assert_kernel_log
#                           only looks at lines after the last mark
#   wait_for TIMEOUT_S CMD...   poll CMD until it succeeds
#   tiny_domain NAME UUID DISK [FORMAT] [DEVICES] [TOPLEVEL]
#                           the smallest guest XML (tiny-domain.sh)
#   hooks_seen LOG          the LXC hook types aa-virt logged to LOG
#                           ($AA_VIRT_HOOK_LOG), in order, one line
#   assert_hooks MSG EXPECTED LOG   hooks_seen LOG is EXPECTED
#   helper_mode_cleanups    install $AA_VIRT as /usr/bin/aa-virt and register
#                           the cleanups of a helper-mode install (uninstall,
#                           binary, diversion, libvirtd restart); the case
#                           then runs `aa-virt install --mode helper` itself
#   reboot_after_case       when this case ends, reboot the guest; the suite
#                           goes on with the next case in the next boot
#   rebooted_after CASE     true when this boot began with the reboot CASE
#                           asked for (AA_ITEST_BOOT: 1, 2, ... this boot)
#   DEBIAN                  the guest's Debian major release (12, 13), from
#                           its /etc/debian_version; a case that expects
#                           something else on one release says why in a line
#
# Environment: $SHARE (the 9p share), $AA_VIRT (= $SHARE/bin/aa-virt),
# $CASE (case name), $CASE_TMP (scratch dir, removed after the case).

AA_SECFS=/sys/kernel/security/apparmor
DEBIAN=$(cut -d. -f1 /etc/debian_version 2>/dev/null)
# shellcheck source=tiny-domain.sh
. "$SUITE_DIR/tiny-domain.sh"

_record() { # STATUS MSG
    printf '%s %s: %s\n' "$1" "$CASE" "$2" >> "$AA_ITEST_RESULTS"
}

pass() {
    _record PASS "$1"
    printf '  ok   - %s\n' "$1"
}

fail() {
    local msg=$1; shift
    _record FAIL "$msg"
    printf '  FAIL - %s\n' "$msg"
    local d
    for d in "$@"; do printf '         %s\n' "$d"; done
}

skip() {
    _record SKIP "$1"
    printf '  SKIP - %s\n' "$1"
    exit 0
}

# Informational line, never counted.
note() { printf '  note - %s\n' "$*"; }

assert_eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected: '$2'" "actual:   '$3'"; fi
}

assert_ne() {
    if [ "$2" != "$3" ]; then pass "$1"; else fail "$1" "expected anything but: '$2'"; fi
}

assert_contains() {
    case "$2" in
    *"$3"*) pass "$1" ;;
    *) fail "$1" "missing: '$3'" "in: $(printf '%s' "$2" | head -c 2000)" ;;
    esac
}

assert_not_contains() {
    case "$2" in
    *"$3"*) fail "$1" "unexpected: '$3'" "in: $(printf '%s' "$2" | head -c 2000)" ;;
    *) pass "$1" ;;
    esac
}

assert_match() {
    if printf '%s\n' "$2" | grep -Eq -- "$3"; then pass "$1"
    else fail "$1" "no match for /$3/" "in: $(printf '%s' "$2" | head -c 2000)"; fi
}

assert_exists() {
    if [ -e "$2" ]; then pass "$1"; else fail "$1" "does not exist: $2"; fi
}

# Last command output (stdout+stderr) and status, for callers that want more.
LAST_OUT=
LAST_RC=0
_run() { LAST_RC=0; LAST_OUT=$("$@" 2>&1) || LAST_RC=$?; }

assert_ok() {
    local msg=$1; shift
    _run "$@"
    if [ "$LAST_RC" -eq 0 ]; then pass "$msg"
    else fail "$msg" "command: $*" "exit status $LAST_RC" "output: $(printf '%s' "$LAST_OUT" | tail -n 5)"; fi
}

assert_fails() {
    local msg=$1; shift
    _run "$@"
    if [ "$LAST_RC" -ne 0 ]; then pass "$msg"
    else fail "$msg" "command: $*" "unexpectedly succeeded" "output: $(printf '%s' "$LAST_OUT" | tail -n 5)"; fi
}

# Denied by the kernel, not merely failing: the error must be EACCES/EPERM.
assert_denied() {
    local msg=$1; shift
    _run "$@"
    if [ "$LAST_RC" -ne 0 ] && printf '%s' "$LAST_OUT" | grep -Eqi 'permission denied|operation not permitted'; then
        pass "$msg"
    else
        fail "$msg" "command: $*" "exit status $LAST_RC (want a permission error)" \
            "output: $(printf '%s' "$LAST_OUT" | tail -n 5)"
    fi
}

# The kernel's audit records. When journald listens on the audit netlink
# socket (Debian's default), read them from there: the printk copy in dmesg
# is rate-limited by the kernel (10 per 5 s, "kauditd_printk_skb: N
# callbacks suppressed") and loses denials during busy phases such as boot.
# Without journald's audit socket, fall back to dmesg.
if systemctl is-active -q systemd-journald-audit.socket 2>/dev/null; then
    AA_KLOG_SOURCE=journal-audit
else
    AA_KLOG_SOURCE=dmesg
fi
kernel_log() {
    if [ "$AA_KLOG_SOURCE" = journal-audit ]; then
        journalctl -b -q --no-pager -o cat _TRANSPORT=audit 2>/dev/null
    else
        dmesg 2>/dev/null
    fi
}

_KLOG_MARK=0
kernel_log_mark() { _KLOG_MARK=$(kernel_log | wc -l); }

# Wait (default 10 s) for a kernel log line after the last mark matching ERE.
assert_kernel_log() {
    local msg=$1 re=$2 t=${3:-10} i
    for ((i = 0; i <= t * 2; i++)); do
        if kernel_log | tail -n +"$((_KLOG_MARK + 1))" | grep -Eq -- "$re"; then
            pass "$msg"; return 0
        fi
        sleep 0.5
    done
    fail "$msg" "no kernel log line ($AA_KLOG_SOURCE) matching /$re/ within ${t}s" \
        "last lines: $(kernel_log | tail -n 3)"
}

wait_for() {
    local t=$1 i; shift
    for ((i = 0; i < t * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

aa_label() {
    cat "/proc/$1/attr/apparmor/current" 2>/dev/null || cat "/proc/$1/attr/current"
}

aa_profile_mode() {
    # Lines look like "NAME (enforce)"; names may contain spaces.
    [ -r "$AA_SECFS/profiles" ] || { echo "(no $AA_SECFS/profiles)"; return 2; }
    awk -v n="$1" '{ m = $NF; sub(/ \([^)]*\)$/, ""); if ($0 == n) { gsub(/[()]/, "", m); print m; exit } }' \
        "$AA_SECFS/profiles"
}

_ON_EXIT=()
on_exit() { _ON_EXIT=("$*" "${_ON_EXIT[@]}"); }
_run_on_exit() {
    local c
    for c in "${_ON_EXIT[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
}

# --- LXC hook log (aa-virt writes one line per hook to $AA_VIRT_HOOK_LOG,
# the hook type first) ---------------------------------------------------------
hooks_seen() { # LOG
    cut -d' ' -f1 "$1" | tr '\n' ' ' | sed 's/ $//'
}

assert_hooks() { # MSG EXPECTED LOG
    assert_eq "$1" "$2" "$(hooks_seen "$3")"
}
# Reboots (run-suite.sh does them, between cases).
reboot_after_case() { : > "$AA_ITEST_REBOOT_REQUEST"; note "reboot requested: the suite goes on after a reboot"; }
rebooted_after() { [ "${AA_ITEST_REBOOTED_AFTER:-}" = "$1" ]; }

# A helper-mode install's cleanups (they run last-registered first:
# uninstall, binary, then the diversion and symlink as a safety net if
# uninstall cannot run, and libvirtd last), and the binary in place.
helper_mode_cleanups() {
    local helper=/usr/lib/libvirt/virt-aa-helper
    on_exit systemctl restart libvirtd
    on_exit dpkg-divert --quiet --local --rename --remove "$helper"
    on_exit "[ -L '$helper' ] && rm -f '$helper'"
    install -m 0755 "$AA_VIRT" /usr/bin/aa-virt
    on_exit rm -f /usr/bin/aa-virt
    on_exit /usr/bin/aa-virt uninstall
}
