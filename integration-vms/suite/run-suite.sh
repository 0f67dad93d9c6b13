#!/bin/bash
# Run every cases/NN-*.sh in order, each isolated in its own process with a
# time limit, and print the final "N passed, M failed" line (last line).
# Exit status 0 only if nothing failed and at least one assertion passed.
#
# Env: SHARE (set by the guest runner), AA_ITEST_CASE_TIMEOUT (s, default
# 900), AA_ITEST_ONLY (ERE on case names, to run a subset while debugging).
#
# Reboots: a case that calls reboot_after_case (lib.sh) ends, then this
# runner saves the results and log so far in $SHARE/out/reboot/, leaves
# $SHARE/out/reboot-requested for the host and reboots the guest in an
# orderly way (systemctl reboot). The host's run.sh boots the same disk
# again; there the guest's runner starts this script anew, which prints the
# earlier boots' log, takes over their results and goes on with the case
# after the one that asked (README.md, "Reboots").
set -u
SUITE_DIR=$(cd "$(dirname "$0")" && pwd)
: "${SHARE:=$(cd "$SUITE_DIR/.." && pwd)}"
AA_VIRT=$SHARE/bin/aa-virt
# Written by the host's run.sh (e.g. AA_ITEST_ONLY from AA_VIRT_ITEST_ONLY).
[ -f "$SUITE_DIR/env" ] && . "$SUITE_DIR/env"
AA_ITEST_RESULTS=$(mktemp /tmp/itest-results.XXXXXX)
export SHARE AA_VIRT AA_ITEST_RESULTS
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The kernel's audit records: Debian 12's journald reads them from its audit
# socket (lib.sh); Debian 13's systemd leaves that socket off (starting it
# in the VM failed), so the suite reads dmesg, whose printk
# copy of audit records is rate-limited (10 per 5 s): lift the limit. The
# host boots the guest with a large log buffer so that counting lines
# (kernel_log_mark) stays valid.
if ! systemctl is-active -q systemd-journald-audit.socket 2>/dev/null; then
    sysctl -q -w kernel.printk_ratelimit=0
fi
# A boot after a reboot a case asked for: the earlier boots' log and
# results, and the case to go on after.
REBOOT_STATE=$SHARE/out/reboot
AA_ITEST_BOOT=1 AA_ITEST_REBOOTED_AFTER= resume_after=
if [ -f "$REBOOT_STATE/resume-after" ]; then
    resume_after=$(cat "$REBOOT_STATE/resume-after")
    AA_ITEST_BOOT=$(( $(cat "$REBOOT_STATE/boots") + 1 ))
    AA_ITEST_REBOOTED_AFTER=$resume_after
    cat "$REBOOT_STATE/log"
    cp "$REBOOT_STATE/results" "$AA_ITEST_RESULTS"
    rm -f "$REBOOT_STATE/resume-after"
    echo "== boot $AA_ITEST_BOOT (rebooted after $resume_after), suite resumes at uptime $(cut -d' ' -f1 /proc/uptime)s"
fi
export AA_ITEST_BOOT AA_ITEST_REBOOTED_AFTER
AA_ITEST_REBOOT_REQUEST=$AA_ITEST_RESULTS.reboot
export AA_ITEST_REBOOT_REQUEST

# reboot_now CASE: save this boot's results and log, tell the host, and
# reboot in an orderly way. Never returns.
reboot_now() {
    mkdir -p "$REBOOT_STATE"
    echo "== $1 asked for a reboot: rebooting (boot $((AA_ITEST_BOOT + 1)) goes on after $1)"
    cp "$AA_ITEST_RESULTS" "$REBOOT_STATE/results"
    echo "$AA_ITEST_BOOT" > "$REBOOT_STATE/boots"
    echo "$1" > "$REBOOT_STATE/resume-after"
    journalctl -b --no-pager > "$SHARE/out/journal-boot$AA_ITEST_BOOT.log" 2>&1
    dmesg > "$SHARE/out/dmesg-boot$AA_ITEST_BOOT.log" 2>&1
    # The guest's runner writes this script's output to out/suite.log.
    cp "$SHARE/out/suite.log" "$REBOOT_STATE/log"
    echo "$((AA_ITEST_BOOT + 1))" > "$SHARE/out/reboot-requested"
    sync
    # When systemd stops the runner's unit on the way down, the runner would
    # run its exit trap, a forced poweroff, and cut the orderly shutdown
    # short: for this boot, end the unit with SIGKILL (no trap) and count
    # that as success so no FailureAction fires.
    local d=/run/systemd/system/aa-virt-itest.service.d
    mkdir -p "$d"
    printf '[Service]\nKillSignal=SIGKILL\nSuccessExitStatus=SIGKILL\nFailureAction=none\n' > "$d/reboot.conf"
    systemctl daemon-reload
    systemctl reboot
    sleep 600
    echo "the reboot did not happen within 600 s"
    exit 1
}

echo "debian: $(cat /etc/debian_version) (asked for ${AA_ITEST_DEBIAN:-?}); apparmor_parser: $(apparmor_parser --version 2>&1 | head -n 1)"
echo "kernel: $(uname -r); lsm: $(cat /sys/kernel/security/lsm 2>/dev/null); audit log: $(. "$SUITE_DIR/lib.sh"; echo "$AA_KLOG_SOURCE")"
for c in "$SUITE_DIR"/cases/[0-9][0-9]-*.sh; do
    [ -e "$c" ] || continue
    name=$(basename "$c" .sh)
    if [ -n "${AA_ITEST_ONLY:-}" ] && ! [[ $name =~ $AA_ITEST_ONLY ]]; then continue; fi
    if [ -n "$resume_after" ]; then
        [ "$name" = "$resume_after" ] && resume_after=
        continue
    fi
    echo "== $name"
    before=$(wc -l < "$AA_ITEST_RESULTS")
    start=$(date +%s)
    rc=0
    timeout --kill-after=10 "${AA_ITEST_CASE_TIMEOUT:-900}" bash "$SUITE_DIR/run-case.sh" "$c" || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "FAIL $name: timed out after ${AA_ITEST_CASE_TIMEOUT:-900}s" >> "$AA_ITEST_RESULTS"
        echo "  FAIL - timed out"
    elif [ "$rc" -ne 0 ]; then
        echo "FAIL $name: case exited with status $rc" >> "$AA_ITEST_RESULTS"
        echo "  FAIL - case exited with status $rc"
    elif [ "$(wc -l < "$AA_ITEST_RESULTS")" -eq "$before" ]; then
        echo "FAIL $name: case recorded no result" >> "$AA_ITEST_RESULTS"
        echo "  FAIL - case recorded no result"
    fi
    echo "   ($(( $(date +%s) - start )) s)"
    if [ -e "$AA_ITEST_REBOOT_REQUEST" ]; then
        rm -f "$AA_ITEST_REBOOT_REQUEST"
        reboot_now "$name"
    fi
done
if [ -n "$resume_after" ]; then
    echo "FAIL suite: rebooted after case $resume_after, which is not in the suite" >> "$AA_ITEST_RESULTS"
fi

passed=$(grep -c '^PASS ' "$AA_ITEST_RESULTS")
failed=$(grep -c '^FAIL ' "$AA_ITEST_RESULTS")
skipped=$(grep -c '^SKIP ' "$AA_ITEST_RESULTS")
echo
if [ "$failed" -gt 0 ]; then
    echo "Failures:"
    grep '^FAIL ' "$AA_ITEST_RESULTS" | sed 's/^FAIL /  /'
fi
if [ "$skipped" -gt 0 ]; then
    echo "Skipped (not counted as passed): $skipped"
    grep '^SKIP ' "$AA_ITEST_RESULTS" | sed 's/^SKIP /  /'
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
