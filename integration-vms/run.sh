#!/bin/bash
# Host side of integration-vms: build aa-virt, then for each Debian release
# (12 bookworm, 13 trixie; one after the other) build or reuse the guest
# image, boot it headless under qemu (TCG) with the suite in a 9p share and
# print the guest's "N passed, M failed" line as "Debian N: ...". The very
# last line is the total over all releases, "N passed, M failed". Exit
# status is non-zero on any failure, on timeout, or when a guest left no
# result (a release that gives no result counts as one failure).
#
# Env:
#   AA_VIRT_ITEST_DEBIAN     "12", "13" or "12 13" (default): releases to run
#   CARGO_TARGET_DIR         honoured (via cargo metadata)
#   AA_VIRT_BIN=PATH         use this binary, skip cargo build
#   AA_VIRT_ITEST_TIMEOUT    hard limit for each qemu run in s (default 1800)
#   AA_VIRT_ITEST_MEM        guest RAM in MiB (default 2048)
#   AA_VIRT_ITEST_SMP        guest vCPUs (default: host cores, at most 2)
#   AA_VIRT_ITEST_ONLY       ERE: run only matching cases
#   AA_VIRT_ITEST_CASE_TIMEOUT  per-case limit inside the guest (s, default 900)
#   AA_VIRT_ITEST_KEEP=1     keep the work dir (share, logs) even on success
#   AA_VIRT_ITEST_DEBUG=1    interactive: serial console on this terminal,
#                            guest stays up after the suite (root, no password;
#                            Ctrl-a x quits qemu); needs one release
#   AA_VIRT_ITEST_CACHE      image cache root (default /var/cache/aa-virt-itest)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
timeout_s=${AA_VIRT_ITEST_TIMEOUT:-1800}
mem=${AA_VIRT_ITEST_MEM:-2048}
smp=${AA_VIRT_ITEST_SMP:-$(n=$(nproc); [ "$n" -gt 2 ] && n=2; echo "$n")}
debug=${AA_VIRT_ITEST_DEBUG:-0}

say() { printf '[itest %s] %s\n' "$(date +%T)" "$*" >&2; }
t_start=$(date +%s)

# 1. The binary under test.
if [ -n "${AA_VIRT_BIN:-}" ]; then
    bin=$AA_VIRT_BIN
else
    say "cargo build --release"
    (cd "$repo" && cargo build --release --bin aa-virt) >&2
    target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    bin=$target_dir/release/aa-virt
fi
[ -x "$bin" ] || { say "no aa-virt binary at $bin"; exit 1; }
t_cargo=$(date +%s)

# 1b. What the day-two cases (75 package upgrade, 76 canary) need in the
# share: aa-virt's .deb as version N and N+1, Debian 13's and 12's
# apparmor_parser, Debian 13's features (share-extras.sh; about 3 s). Made
# once, only when one of those cases runs; a failure fails those cases.
extras=
for c in "$here"/suite/cases/7[56]-*.sh; do
    n=$(basename "$c" .sh)
    if [ -z "${AA_VIRT_ITEST_ONLY:-}" ] || [[ $n =~ $AA_VIRT_ITEST_ONLY ]]; then
        extras=$(mktemp -d "${TMPDIR:-/tmp}/aa-virt-itest-extras.XXXXXX")
        "$here/share-extras.sh" "$bin" "$extras" >&2 || say "share-extras.sh failed: cases 75 and 76 will fail"
        break
    fi
done
t_extras=$(date +%s)


releases=${AA_VIRT_ITEST_DEBIAN:-12 13}
for r in $releases; do
    case "$r" in
    12|13) ;;
    *) say "AA_VIRT_ITEST_DEBIAN: unknown release '$r' (want 12, 13 or \"12 13\")"; exit 2 ;;
    esac
done
if [ "$debug" = 1 ] && [ "$(wc -w <<<"$releases")" != 1 ]; then
    say "AA_VIRT_ITEST_DEBUG=1 needs one release: set AA_VIRT_ITEST_DEBIAN=12 or 13"
    exit 2
fi

keep=${AA_VIRT_ITEST_KEEP:-0}
works=()
cleanup() {
    local w
    [ -z "$extras" ] || rm -rf "$extras"
    for w in "${works[@]}"; do
        if [ "$keep" = 1 ] || [ -e "$w/.keep" ]; then say "work dir kept: $w"; else rm -rf "$w"; fi
    done
}
trap cleanup EXIT

# run_release N: build or reuse the image for Debian N, boot it, print the
# guest's log and "Debian N: X passed, Y failed". Sets R_PASSED, R_FAILED,
# R_OK (1 when the run gave a clean result) and R_TIMES.
run_release() {
    local release=$1 img work share t0 t_image t_run rc problem guest_rc summary
    R_PASSED=0 R_FAILED=0 R_OK=0 R_TIMES=
    t0=$(date +%s)
    # 2. The image.
    if ! img=$(AA_VIRT_ITEST_DEBIAN=$release "$here/build-image.sh"); then
        say "Debian $release: FAILED: no guest image"
        R_FAILED=1
        return 0
    fi
    t_image=$(date +%s)

    # 3. The share: what the guest sees at $SHARE (see README.md).
    work=$(mktemp -d "${TMPDIR:-/tmp}/aa-virt-itest.XXXXXX")
    works+=("$work")
    share=$work/share
    mkdir -p "$share/bin" "$share/out"
    install -m 0755 "$bin" "$share/bin/aa-virt"
    cp -a "$here/suite" "$share/suite"
    local d
    for d in templates libvirt-hooks lxc-hooks; do
        [ -d "$repo/$d" ] && cp -a "$repo/$d" "$share/$d"
    done
    [ -z "$extras" ] || cp -a "$extras/." "$share/"
    {
        printf 'AA_ITEST_DEBIAN=%q\n' "$release"
        [ -n "${AA_VIRT_ITEST_ONLY:-}" ] && printf 'AA_ITEST_ONLY=%q\n' "$AA_VIRT_ITEST_ONLY"
        [ -n "${AA_VIRT_ITEST_CASE_TIMEOUT:-}" ] && printf 'AA_ITEST_CASE_TIMEOUT=%q\n' "$AA_VIRT_ITEST_CASE_TIMEOUT"
        true
    } > "$share/suite/env"

    # 4. Boot. A qcow2 overlay in the work dir keeps the cached image
    # pristine and carries the guest's writes from one boot to the next
    # when a case asks for a reboot; cache=unsafe because the overlay is
    # thrown away with the work dir. A long audit
    # backlog and a large kernel log: Debian 13 ships over a hundred
    # profiles, reloading them all must not drop the records the cases look
    # for, and there the suite reads them from dmesg (run-suite.sh).
    local append="console=ttyS0 root=/dev/vda rw rootfstype=ext4 apparmor=1 security=apparmor panic=-1 quiet systemd.show_status=1 audit_backlog_limit=8192 log_buf_len=16M"
    local qemu=(qemu-system-x86_64 -accel tcg -m "$mem" -smp "$smp" -nodefaults -no-user-config
          -display none -no-reboot
          -kernel "$img/vmlinuz" -initrd "$img/initrd.img"
          -drive "file=$work/disk.qcow2,if=virtio,format=qcow2,cache=unsafe"
          -virtfs "local,path=$share,mount_tag=share,security_model=none,id=share")
    qemu-img create -q -f qcow2 -b "$img/root.ext4" -F raw "$work/disk.qcow2"
    local console=$work/console.log
    if [ "$debug" = 1 ]; then
        touch "$work/.keep"
        say "debug boot of Debian $release: serial console here; Ctrl-a x quits"
        "${qemu[@]}" -serial mon:stdio -append "$append aa_virt_itest.debug=1" || true
        exit 0
    fi
    say "Debian $release: booting $(basename "$img") (TCG, ${smp} vCPU, ${mem} MiB, timeout ${timeout_s}s)"
    # A case may ask for reboots (suite/run-suite.sh): the guest then leaves
    # out/reboot-requested and goes down, -no-reboot ends qemu, and the
    # same disk boots again. The hard timeout covers all boots together.
    local boot=1 deadline=$(( $(date +%s) + timeout_s )) left
    problem=
    while :; do
        left=$(( deadline - $(date +%s) ))
        [ "$left" -gt 0 ] || { problem="guest timed out after ${timeout_s}s (boot $boot)"; break; }
        rc=0
        timeout --kill-after=15 "$left" "${qemu[@]}" -serial "file:$console" -append "$append" \
            < /dev/null >> "$work/qemu.log" 2>&1 || rc=$?
        cat "$console" >> "$work/console-all.log" 2>/dev/null
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            problem="guest timed out after ${timeout_s}s (boot $boot)"
        elif [ $rc -ne 0 ]; then
            problem="qemu exited with status $rc (boot $boot)"
        elif [ ! -f "$share/out/exit-code" ] && [ -f "$share/out/reboot-requested" ] && [ "$boot" -lt 8 ]; then
            rm -f "$share/out/reboot-requested"
            boot=$((boot + 1))
            say "Debian $release: the guest asked for a reboot: boot $boot"
            continue
        elif [ ! -f "$share/out/exit-code" ]; then
            problem="the guest left no result (no out/exit-code) in boot $boot"
        fi
        break
    done
    t_run=$(date +%s)

    # 5. Results.
    guest_rc=$(cat "$share/out/exit-code" 2>/dev/null || echo missing)
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$share/out/suite.log" 2>/dev/null | tail -n 1 || true)

    if [ -f "$share/out/suite.log" ]; then
        echo "---- Debian $release: guest suite log ----"
        cat "$share/out/suite.log"
        echo "-------------------------"
    fi
    if [ -n "$problem" ] || [ "$guest_rc" != 0 ]; then
        touch "$work/.keep"
        echo "---- Debian $release: qemu ----";               tail -n 20 "$work/qemu.log" 2>/dev/null || true
        echo "---- Debian $release: guest console (tail) ----"; tail -n 60 "$console" 2>/dev/null || true
        echo "---- Debian $release: guest journal (tail) ----"; tail -n 40 "$share/out/journal.log" 2>/dev/null || true
    fi
    R_TIMES="image $((t_image - t0))s, vm $((t_run - t_image))s"
    say "Debian $release: timings: $R_TIMES"
    if [ -n "$summary" ]; then
        R_PASSED=${summary%% passed*}
        R_FAILED=${summary#*passed, }
        R_FAILED=${R_FAILED%% failed}
    fi
    if [ -n "$problem" ] || [ -z "$summary" ]; then
        [ -n "$problem" ] || problem="no summary line in the suite log of the guest (exit code $guest_rc)"
        say "Debian $release: FAILED: $problem"
        # A run that gave no clean result counts as one failure on top.
        R_FAILED=$((R_FAILED + 1))
    elif [ "$guest_rc" = 0 ]; then
        R_OK=1
    else
        say "Debian $release: FAILED: guest suite exit code $guest_rc"
    fi
    echo "Debian $release: $R_PASSED passed, $R_FAILED failed"
}

total_passed=0 total_failed=0 all_ok=1 lines=()
for r in $releases; do
    run_release "$r"
    total_passed=$((total_passed + R_PASSED))
    total_failed=$((total_failed + R_FAILED))
    [ "$R_OK" = 1 ] || all_ok=0
    lines+=("Debian $r: $R_PASSED passed, $R_FAILED failed ($R_TIMES)")
done
say "timings: cargo $((t_cargo - t_start))s, share extras $((t_extras - t_cargo))s, total $(($(date +%s) - t_start))s"
for l in "${lines[@]}"; do echo "$l"; done
echo "$total_passed passed, $total_failed failed"
[ "$all_ok" = 1 ] && [ "$total_failed" = 0 ]
