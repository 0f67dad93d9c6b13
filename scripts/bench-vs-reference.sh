#!/usr/bin/env bash
# Whole-process timing: `aa-virt profile` against Debian's
# `virt-aa-helper --dryrun` on the same domain XMLs, in one run, with the
# ratio. Targets (issue 2): typical guest <= 0.2 of the reference's time;
# 500 disks <= 20 ms absolute.
#
# Usage: scripts/bench-vs-reference.sh [RUNS]   (default 30 runs per case)
# Uses hyperfine when installed, otherwise a loop timed with date +%s%N.
# Build first: cargo build --release (or set AA_VIRT_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
bin=${AA_VIRT_BIN:-target/release/aa-virt}
ref=${AA_VIRT_REFERENCE:-/usr/lib/libvirt/virt-aa-helper}
[ -x "$bin" ] || { echo "bench: $bin not built (cargo build --release)" >&2; exit 1; }
[ -x "$ref" ] || { echo "bench: $ref missing (apt-get install libvirt-daemon)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The typical guest is the README's example; the big one has 500 qcow2
# disks, each on a one-layer backing chain given in the XML.
cp examples/web-server.xml "$work/typical.xml"
# libvirt's disk names: vda..vdz, vdaa.. (the reference refuses others)
disk_name() {
  local n=$(( $1 + 1 )) s=""
  while [ "$n" -gt 0 ]; do
    n=$(( n - 1 ))
    s=$(printf "\\$(printf %o $(( 97 + n % 26 )))")$s
    n=$(( n / 26 ))
  done
  echo "vd$s"
}

names=$(for i in $(seq 0 499); do disk_name "$i"; done)
{
  echo "<domain type='kvm'><name>bench-500</name><uuid>00000000-0000-4000-8000-000000000500</uuid>"
  echo "<memory>1048576</memory><os><type arch='x86_64'>hvm</type></os><devices>"
  echo "<emulator>/usr/bin/qemu-system-x86_64</emulator>"
  i=0
  for dev in $names; do
    echo "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
    echo "<source file='/var/lib/libvirt/images/bench/disk$i.qcow2'/>"
    echo "<backingStore type='file'><format type='qcow2'/><source file='/var/lib/libvirt/images/bench/base$i.qcow2'/><backingStore/></backingStore>"
    echo "<target dev='$dev' bus='virtio'/></disk>"
    i=$((i + 1))
  done
  echo "</devices></domain>"
} > "$work/disks500.xml"

uuid_of() { sed -n 's:.*<uuid>\(.*\)</uuid>.*:\1:p' "$1" | head -n1; }

# mean wall time of a command in milliseconds (3 warm-up runs first); the
# fallback loop includes one `sh -c` start per run for both sides alike
mean_ms() {
  if command -v hyperfine >/dev/null 2>&1; then
    # shell mode (the reference reads stdin); hyperfine subtracts the shell's own startup
    hyperfine --warmup 3 --runs "$runs" --export-json "$work/h.json" "$1" >/dev/null
    python3 -c "import json;print('%.2f'%(json.load(open('$work/h.json'))['results'][0]['mean']*1000))"
  else
    for _ in 1 2 3; do sh -c "$1" >/dev/null 2>&1; done
    local t0 t1
    t0=$(date +%s%N)
    for _ in $(seq "$runs"); do sh -c "$1" >/dev/null 2>&1; done
    t1=$(date +%s%N)
    echo "$t0 $t1 $runs" | awk '{printf "%.2f\n", ($2-$1)/1e6/$3}'
  fi
}

printf '%-10s %12s %16s %8s\n' case aa-virt-ms reference-ms ratio
for case in typical disks500; do
  x="$work/$case.xml"
  u=$(uuid_of "$x")
  # Both must succeed on the input before they are timed.
  "$bin" profile --files-only "$x" >/dev/null
  "$ref" --dryrun -r -u "libvirt-$u" <"$x" >/dev/null 2>&1
  ours=$(mean_ms "$bin profile --files-only $x")
  theirs=$(mean_ms "$ref --dryrun -r -u libvirt-$u < $x")
  ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN{printf "%.3f", a/b}')
  printf '%-10s %12s %16s %8s\n' "$case" "$ours" "$theirs" "$ratio"
done
echo "targets: typical ratio <= 0.2; disks500 aa-virt <= 20 ms"
