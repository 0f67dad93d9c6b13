#!/bin/bash
# Host side of integration-vms: build aa-virt, build or reuse the guest
# image, boot it headless under qemu (TCG) with the suite in a 9p share,
# print the guest's "N passed, M failed" line. Exit status is non-zero on
# any failure, on timeout, or when the guest left no result.
#
# Env:
#   CARGO_TARGET_DIR         honoured (via cargo metadata)
#   AA_VIRT_BIN=PATH         use this binary, skip cargo build
#   AA_VIRT_ITEST_TIMEOUT    hard limit for the qemu run in s (default 1800)
#   AA_VIRT_ITEST_MEM        guest RAM in MiB (default 2048)
#   AA_VIRT_ITEST_SMP        guest vCPUs (default: host cores, at most 2)
#   AA_VIRT_ITEST_ONLY       ERE: run only matching cases
#   AA_VIRT_ITEST_CASE_TIMEOUT  per-case limit inside the guest (s, default 900)
#   AA_VIRT_ITEST_KEEP=1     keep the work dir (share, logs) even on success
#   AA_VIRT_ITEST_DEBUG=1    interactive: serial console on this terminal,
#                            guest stays up after the suite (root, no password;
#                            Ctrl-a x quits qemu)
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

# 2. The image.
img=$("$here/build-image.sh")
t_image=$(date +%s)

# 3. The share: what the guest sees at $SHARE (see README.md).
work=$(mktemp -d "${TMPDIR:-/tmp}/aa-virt-itest.XXXXXX")
share=$work/share
keep=${AA_VIRT_ITEST_KEEP:-0}
cleanup() { if [ "$keep" = 1 ]; then say "work dir kept: $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
mkdir -p "$share/bin" "$share/out"
install -m 0755 "$bin" "$share/bin/aa-virt"
cp -a "$here/suite" "$share/suite"
for d in templates libvirt-hooks lxc-hooks; do
    [ -d "$repo/$d" ] && cp -a "$repo/$d" "$share/$d"
done
{
    [ -n "${AA_VIRT_ITEST_ONLY:-}" ] && printf 'AA_ITEST_ONLY=%q\n' "$AA_VIRT_ITEST_ONLY"
    [ -n "${AA_VIRT_ITEST_CASE_TIMEOUT:-}" ] && printf 'AA_ITEST_CASE_TIMEOUT=%q\n' "$AA_VIRT_ITEST_CASE_TIMEOUT"
    true
} > "$share/suite/env"

# 4. Boot. snapshot=on keeps the cached image pristine; cache=unsafe because
# the guest's writes are thrown away anyway.
append="console=ttyS0 root=/dev/vda rw rootfstype=ext4 apparmor=1 security=apparmor panic=-1 quiet systemd.show_status=1"
qemu=(qemu-system-x86_64 -accel tcg -m "$mem" -smp "$smp" -nodefaults -no-user-config
      -display none -no-reboot
      -kernel "$img/vmlinuz" -initrd "$img/initrd.img"
      -drive "file=$img/root.ext4,if=virtio,format=raw,snapshot=on,cache=unsafe"
      -virtfs "local,path=$share,mount_tag=share,security_model=none,id=share")
console=$work/console.log
if [ "$debug" = 1 ]; then
    keep=1
    say "debug boot: serial console here; Ctrl-a x quits"
    "${qemu[@]}" -serial mon:stdio -append "$append aa_virt_itest.debug=1" || true
    exit 0
fi
say "booting $(basename "$img") (TCG, ${smp} vCPU, ${mem} MiB, timeout ${timeout_s}s)"
rc=0
timeout --kill-after=15 "$timeout_s" "${qemu[@]}" -serial "file:$console" -append "$append" \
    < /dev/null > "$work/qemu.log" 2>&1 || rc=$?
t_run=$(date +%s)

# 5. Results.
problem=
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    problem="guest timed out after ${timeout_s}s"
elif [ $rc -ne 0 ]; then
    problem="qemu exited with status $rc"
elif [ ! -f "$share/out/exit-code" ]; then
    problem="the guest left no result (no out/exit-code)"
fi
guest_rc=$(cat "$share/out/exit-code" 2>/dev/null || echo missing)
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$share/out/suite.log" 2>/dev/null | tail -n 1 || true)

if [ -f "$share/out/suite.log" ]; then
    echo "---- guest suite log ----"
    cat "$share/out/suite.log"
    echo "-------------------------"
fi
if [ -n "$problem" ] || [ "$guest_rc" != 0 ]; then
    keep=1
    echo "---- qemu ----";            tail -n 20 "$work/qemu.log" 2>/dev/null || true
    echo "---- guest console (tail) ----"; tail -n 60 "$console" 2>/dev/null || true
    echo "---- guest journal (tail) ----"; tail -n 40 "$share/out/journal.log" 2>/dev/null || true
fi
say "timings: cargo $((t_cargo - t_start))s, image $((t_image - t_cargo))s, vm $((t_run - t_image))s, total $((t_run - t_start))s"
if [ -n "$problem" ]; then
    say "FAILED: $problem"
    [ -n "$summary" ] && echo "$summary"
    exit 1
fi
if [ -z "$summary" ]; then
    say "FAILED: no summary line in the guest's suite log (guest exit code $guest_rc)"
    exit 1
fi
echo "$summary"
[ "$guest_rc" = 0 ] || { say "FAILED: guest suite exit code $guest_rc"; exit 1; }
