#!/usr/bin/env bash
# Benchmark `aa-virt list --json` against `virsh list --all` on the same
# libvirt test-driver node file with N domains (default 1000), in one run,
# and report `aa-status --json` on the same host.
#
#   scripts/bench-list.sh [N]          # AA_VIRT=path/to/aa-virt to pick a binary
#
# Target (issue 6): aa-virt within 1.5x of virsh. libvirt's own parse of the
# node file dominates both; aa-virt's per-guest work must not show.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
runs=${RUNS:-5}
bin=${AA_VIRT:-target/release/aa-virt}
if [ ! -x "$bin" ]; then
  echo "bench: building $bin (cargo build --release)" >&2
  cargo build --release --quiet
fi
for t in virsh aa-status; do
  command -v "$t" >/dev/null || { echo "bench: $t is required (apt-get install libvirt-clients apparmor)" >&2; exit 1; }
done

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
node="$dir/node.xml"
{
  echo "<node>"
  for i in $(seq 1 "$n"); do
    printf "<domain type='test'><name>bench%04d</name><uuid>00000000-0000-4000-8000-%012d</uuid><memory>65536</memory><os><type>hvm</type></os><devices><disk type='file' device='disk'><source file='/var/lib/libvirt/images/bench%04d.img'/><target dev='vda' bus='virtio'/></disk></devices></domain>\n" "$i" "$i" "$i"
  done
  echo "</node>"
} > "$node"
uri="test://$node"

# Median wall time in ms of `runs` runs of a command (stdout discarded).
median_ms() {
  local ts=() s e
  for _ in $(seq 1 "$runs"); do
    s=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    e=$(date +%s%N)
    ts+=($(( (e - s) / 1000000 )))
  done
  printf '%s\n' "${ts[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

# Sanity: both see every domain.
got=$("$bin" list --json --no-denials --connect "$uri" | grep -c '"kind": "qemu"' || true)
want=$(virsh -c "$uri" list --all --name | grep -c . || true)
[ "$got" = "$n" ] && [ "$want" = "$n" ] || { echo "bench: aa-virt saw $got, virsh saw $want, expected $n" >&2; exit 1; }

aa=$(median_ms "$bin" list --json --connect "$uri")
aa_nolog=$(median_ms "$bin" list --json --no-denials --connect "$uri")
vs=$(median_ms virsh -c "$uri" list --all)
st=$(median_ms aa-status --json)
ratio=$(awk -v a="$aa" -v v="$vs" 'BEGIN { printf "%.2f", (v > 0 ? a / v : 0) }')
echo "domains:                                 $n (median of $runs runs)"
echo "aa-virt list --json --connect URI:       ${aa} ms"
echo "aa-virt list --json --no-denials:        ${aa_nolog} ms"
echo "virsh -c URI list --all:                 ${vs} ms"
echo "ratio aa-virt / virsh:                   ${ratio} (target <= 1.5)"
# aa-status exits non-zero on a kernel without AppArmor: keep its words.
st_out=$({ aa-status --json 2>&1 || true; } | head -c 120 | tr '\n' ' ')
[ -n "$st_out" ] || st_out="no output; plain aa-status says: $({ aa-status 2>&1 || true; } | head -1)"
echo "aa-status --json:                        ${st} ms (${st_out})"
# A benchmark reports; it does not fail on a figure.
awk -v r="$ratio" 'BEGIN { print (r <= 1.5 ? "target met" : "target NOT met") }'
