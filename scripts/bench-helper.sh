#!/bin/sh
# Time aa-virt's helper mode against Debian's virt-aa-helper, whole process,
# one run at a time, as libvirt runs them.
#
#   scripts/bench-helper.sh [AA_VIRT_BINARY]      (default: target/release/aa-virt)
#
# aa-virt runs as AA_VIRT_BINARY through a symlink named virt-aa-helper,
# as libvirt runs it once it is in place of libvirt's helper.
#
# The reference cannot load policy on a host without AppArmor, so both run in
# the modes that work for both:
#  - dry run (-d): parse, resolve, print; nothing written or compiled;
#  - real mode with a compile-only parser: everything the tool does (files
#    written atomically, locks, the parser run) except the kernel load. The
#    parser is a wrapper that runs the real apparmor_parser with
#    --skip-kernel-load and the shipped features file, passing through every
#    other option each tool gives it (aa-virt's cache options included).
#    aa-virt runs against a temporary root and a stand-in securityfs where
#    the wrapper records loaded profiles; the reference runs in a private
#    mount namespace (unshare -m) where a copy of /etc/apparmor.d, with
#    libvirt's TEMPLATE.qemu and abstractions/libvirt-qemu from the cached
#    libvirt source, is mounted over /etc/apparmor.d and the wrapper over
#    /usr/sbin/apparmor_parser (aa-virt runs in the same namespace; it uses
#    its own root and parser and is unaffected).
# Each figure is the median wall time of $RUNS runs (default 7); the chain
# figures are the total of one pass over the chain. The "parser" column is
# apparmor_parser alone compiling the profile aa-virt wrote, with aa-virt's
# flags (the floor of a start or hotplug), and /parser aa-virt's ratio to
# it. Also printed: a restart of an unchanged guest with the compiled-policy
# cache warm against a cold -c, a guest with $DISKS disks (default 500),
# and the peak RSS (wait4) of aa-virt alone and of the parser it runs. Needs root, qemu-img and
# the libvirt source that scripts/libvirt-suite.sh caches.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
ref=${VIRT_AA_HELPER_REF:-/usr/lib/libvirt/virt-aa-helper}
runs=${RUNS:-7}
layers=${LAYERS:-150}
cache=${LIBVIRT_SRC_CACHE:-/var/cache/aa-virt-test/libvirt-src}
die() { echo "bench-helper: $*" >&2; exit 2; }

bin=$(readlink -f "${1:-$here/target/release/aa-virt}")
[ -x "$bin" ] || die "no aa-virt binary at $bin (cargo build --release)"
[ -x "$ref" ] || die "no reference helper at $ref"
[ "$(id -u)" = 0 ] || die "run as root (the reference needs a private mount namespace)"
if [ "${AA_VIRT_BENCH_NS:-}" != 1 ]; then
    # Everything runs in one private mount namespace, so the reference's
    # view of /etc/apparmor.d and apparmor_parser costs it nothing per run.
    AA_VIRT_BENCH_NS=1 exec unshare -m --propagation private sh "$0" "$bin"
fi
command -v qemu-img >/dev/null || die "qemu-img is required (qemu-utils)"
src=$(ls -d "$cache"/libvirt-*/src/security/apparmor 2>/dev/null | head -n1)
[ -n "$src" ] || die "no libvirt source under $cache (run scripts/libvirt-suite.sh --fetch-only)"
real=$(command -v apparmor_parser || echo /usr/sbin/apparmor_parser)
features=/usr/share/apparmor-features/features

w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
uuid=00000000-0000-0000-0000-0123456789ab
name=libvirt-$uuid
disks=${DISKS:-500}

# --- the world ------------------------------------------------------------
cp "$real" "$w/apparmor_parser.real"
# aa-virt: compile only, then record the profile as loaded.
aafs=$w/sys/sys/kernel/security/apparmor
mkdir -p "$w/sys/sys/module/apparmor/parameters" "$aafs/features/policy" "$w/root"
echo Y >"$w/sys/sys/module/apparmor/parameters/enabled"
: >"$aafs/profiles"
# A kernel that takes a policy set in one write: aa-virt writes a cached
# policy whose inputs are unchanged to .replace itself, as the parser
# would; here .replace is a plain file that keeps what was written.
echo yes >"$aafs/features/policy/set_load"
: >"$aafs/.replace"
# After the parser, shell builtins only: the stand-in kernel's round trip
# costs about what a real load's does, not three extra processes.
cat >"$w/parser-ours" <<EOF
#!/bin/sh
'$w/apparmor_parser.real' --skip-kernel-load --features-file $features "\$@" || exit 1
p='$w/sys/sys/kernel/security/apparmor/profiles'
while IFS= read -r l; do case \$l in "$name ("*) exit 0 ;; esac; done <"\$p"
echo "$name (enforce)" >>"\$p"
EOF
# The reference: compile only.
cat >"$w/parser-ref" <<EOF
#!/bin/sh
exec '$w/apparmor_parser.real' --skip-kernel-load --features-file $features "\$@"
EOF
chmod 755 "$w/parser-ours" "$w/parser-ref"
cp -a /etc/apparmor.d "$w/apparmor.d"
mkdir -p "$w/apparmor.d/libvirt" "$w/apparmor.d/local/abstractions"
cp "$src/TEMPLATE.qemu" "$w/apparmor.d/libvirt/TEMPLATE.qemu"
cp "$src/libvirt-qemu" "$w/apparmor.d/abstractions/libvirt-qemu"
touch "$w/apparmor.d/local/abstractions/libvirt-qemu"
mount --bind "$w/apparmor.d" /etc/apparmor.d
mount --bind "$w/parser-ref" /usr/sbin/apparmor_parser

# Images: a typical guest's disks and a chain made with qemu-img.
img=$w/img
mkdir -p "$img"
qemu-img create -q -f qcow2 "$img/base.qcow2" 64M
qemu-img create -q -f qcow2 -b "$img/base.qcow2" -F qcow2 "$img/vm.qcow2"
: >"$img/cd.iso"; : >"$img/hot.img"
prev=
i=0
while [ $i -lt "$layers" ]; do
    l=$(printf '%s/l%03d.qcow2' "$img" $i)
    if [ -n "$prev" ]; then qemu-img create -q -f qcow2 -b "$prev" -F qcow2 "$l" 1M
    else qemu-img create -q -f qcow2 "$l" 1M; fi
    prev=$l
    i=$((i + 1))
done
cat >"$w/typical.xml" <<EOF
<domain type='kvm'>
  <name>bench-vm</name>
  <uuid>$uuid</uuid>
  <memory>1048576</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/bench-vm_VARS.fd</nvram>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='$img/vm.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='$img/base.qcow2'/><backingStore/></backingStore>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='$img/cd.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/bench.org.qemu.guest_agent.0'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
EOF

# A guest with $disks disks (empty raw files).
{
    sed -n '1,/<devices>/p' "$w/typical.xml"
    awk -v n="$disks" -v img="$img" 'BEGIN {
        for (i = 0; i < n; i++) {
            t = sprintf("vd%c%c", 97 + int(i / 26), 97 + i % 26)
            printf "    <disk type=\047file\047 device=\047disk\047><driver name=\047qemu\047 type=\047raw\047/>"
            printf "<source file=\047%s/d%d.img\047/><target dev=\047%s\047 bus=\047virtio\047/></disk>\n", img, i, t
            printf "" >(img "/d" i ".img"); close(img "/d" i ".img")
        }
    }'
    sed -n '/<emulator>/,$p' "$w/typical.xml"
} >"$w/many.xml"

# --- running each tool ----------------------------------------------------
guest=typical
ln -s "$bin" "$w/virt-aa-helper"
exe=$w/virt-aa-helper
ours() { # ARGS...: one helper run as libvirt makes it
    AA_VIRT_ROOT="$w/root" AA_VIRT_SYSROOT="$w/sys" AA_VIRT_PARSER="$w/parser-ours" \
        AA_VIRT_CONFIG="$w/none.toml" "$exe" "$@" <"$w/$guest.xml" >/dev/null 2>"$w/err" ||
        { cat "$w/err" >&2; die "aa-virt failed: $*"; }
}
refrun() { # ARGS...: the reference
    "$ref" "$@" <"$w/$guest.xml" >/dev/null 2>"$w/err" ||
        { cat "$w/err" >&2; die "reference failed: $*"; }
}
ours_files=$w/root/etc/apparmor.d/libvirt
ref_files=$w/apparmor.d/libvirt
# A cold start: no files, nothing loaded, and no compiled policy of this
# guest cached (identical inputs would otherwise load from the cache, see
# the restart); the cache directory itself stays, as on a host that has
# started guests before.
reset_ours() {
    rm -f "$ours_files/$name" "$ours_files/$name.files"; : >"$aafs/profiles"
    rm -f "$w/root/var/cache/aa-virt/apparmor"/*/"$name"
}
reset_ref() { rm -f "$ref_files/$name" "$ref_files/$name.files"; }

now() { date +%s%N; }
# median MS of the commands "$@" run $runs times, each preceded by $setup
median() { # SETUP CMD...
    setup=$1; shift
    n=0; : >"$w/times"
    while [ $n -lt "$runs" ]; do
        eval "$setup"
        t0=$(now); "$@"; t1=$(now)
        echo $(((t1 - t0) / 1000)) >>"$w/times"
        n=$((n + 1))
    done
    sort -n "$w/times" | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}
# MS for one pass of -r -F over every layer, top first
chainpass() { # ours|refrun
    t0=$(now)
    for l in $(ls -r "$img"/l*.qcow2); do "$1" -r -u "$name" -F "$l"; done
    t1=$(now)
    echo $(((t1 - t0) / 1000000))
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

# The cache directory aa-virt's parser writes (its own, under the root).
mkdir -p "$w/root/var/cache/aa-virt/apparmor"
# Sanity: both tools produce a profile with the typical guest.
reset_ours; ours -c -u "$name"; reset_ref; refrun -c -u "$name"

# The parser alone compiling the profile aa-virt wrote, with aa-virt's
# flags: the floor of any start or hotplug that compiles.
parser_only() { "$w/apparmor_parser.real" $(parser_args) || die "the parser alone failed on $guest"; }
parser_args() {
    echo -Q -K --features-file "$features" -O no-expr-simplify \
        -I "$w/root/etc/apparmor.d" -I /etc/apparmor.d -o /dev/null "$ours_files/$name"
}
# Peak RSS (KiB) of one run of "$@" and its children, from wait4.
rss() { /usr/bin/time -f %M -o "$w/rss" "$@" >/dev/null 2>&1 || die "failed: $*"; tail -n1 "$w/rss"; }
# aa-virt's own peak RSS for -c: the parser replaced by /bin/true.
rss_helper() {
    reset_ours
    AA_VIRT_ROOT="$w/root" AA_VIRT_SYSROOT="$w/sys" AA_VIRT_PARSER=/bin/true AA_VIRT_CONFIG="$w/none.toml" \
        /usr/bin/time -f %M -o "$w/rss" "$exe" -c -u "$name" <"$w/$guest.xml" >/dev/null 2>&1 ||
        die "aa-virt failed (RSS run, $guest)"
    tail -n1 "$w/rss"
}

# CPU time (task-clock, children included, from perf) of one run: steadier
# than wall time on a loaded machine, where waiting for a core dominates.
cpu_ours() {
    AA_VIRT_ROOT="$w/root" AA_VIRT_SYSROOT="$w/sys" AA_VIRT_PARSER="$w/parser-ours" AA_VIRT_CONFIG="$w/none.toml" \
        perf stat -x, -e task-clock -o "$w/cpu" "$exe" "$@" <"$w/$guest.xml" >/dev/null 2>&1 ||
        die "aa-virt failed (CPU run): $*"
    awk -F, '/task-clock/ {print $1 * 1000}' "$w/cpu" >>"$w/times"
}
cpu_parser() {
    perf stat -x, -e task-clock -o "$w/cpu" "$w/apparmor_parser.real" $(parser_args) >/dev/null 2>&1 ||
        die "the parser alone failed (CPU run)"
    awk -F, '/task-clock/ {print $1 * 1000}' "$w/cpu" >>"$w/times"
}
# median of the figures "$@" appends to $w/times, $runs runs after SETUP
median_cpu() { # SETUP CMD...
    setup=$1; shift
    n=0; : >"$w/times"
    while [ $n -lt "$runs" ]; do eval "$setup"; "$@"; n=$((n + 1)); done
    sort -n "$w/times" | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

row() { # NAME AA-VIRT REFERENCE [PARSER-ONLY]
    p=${4:--}
    r=-; [ "$p" = - ] || r=$(ratio "$2" "$p")
    q=-; [ "$3" = - ] || q=$(ratio "$2" "$3")
    printf '%-44s %9s %9s %9s %7s %7s\n' "$1" "$2" "$3" "$p" "$q" "$r"
}
printf '%-44s %9s %9s %9s %7s %7s\n' "operation (ms, median of $runs)" aa-virt reference parser /ref /parser
a=$(median 'reset_ours' ours -d -c -u "$name"); b=$(median 'reset_ref' refrun -d -c -u "$name")
row "dry run -c, typical guest" "$a" "$b"
a=$(median : ours -d -r -u "$name" -F "$img/hot.img"); b=$(median : refrun -d -r -u "$name" -F "$img/hot.img")
row "dry run -r -F one file" "$a" "$b"
a=$(median 'reset_ours' ours -c -u "$name"); b=$(median 'reset_ref' refrun -c -u "$name")
p=$(median : parser_only)
cold=$a
row "-c typical guest, with compile" "$a" "$b" "$p"
a=$(median 'reset_ours; ours -c -u "$name"' ours -r -u "$name" -F "$img/hot.img")
b=$(median 'reset_ref; refrun -c -u "$name"' refrun -r -u "$name" -F "$img/hot.img")
p=$(median : parser_only)
row "-r -F one new file, with compile" "$a" "$b" "$p"
# A restart of an unchanged guest: its files stay, the kernel dropped the
# profile at stop, the cache is warm; the start re-renders and loads.
reset_ours; ours -c -u "$name"; : >"$aafs/.replace"
a=$(median ': >"$aafs/profiles"' ours -r -u "$name")
b=$(median : refrun -r -u "$name")
row "-r restart, unchanged guest, warm cache" "$a" "$b"
echo "cache hit: restart $a ms / cold -c $cold ms = $(ratio "$a" "$cold")"
direct=no; [ -s "$aafs/.replace" ] && direct=yes
echo "(restart: the cached policy was written to .replace without the parser: $direct)"
guest=many
a=$(median 'reset_ours' ours -c -u "$name"); b=$(median 'reset_ref' refrun -c -u "$name")
p=$(median : parser_only)
row "-c $disks-disk guest, with compile" "$a" "$b" "$p"
if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then
    for guest in typical many; do
        reset_ours; ours -c -u "$name"
        p=$(median_cpu : cpu_parser)
        a=$(median_cpu reset_ours cpu_ours -c -u "$name")
        label=typical; [ "$guest" = many ] && label=$disks-disk
        [ "$guest" = typical ] && cold_cpu=$a
        row "CPU ms: -c $label guest, with compile" "$a" - "$p"
    done
    guest=typical
    reset_ours; ours -c -u "$name"; ours -r -u "$name" -F "$img/hot.img"
    p=$(median_cpu : cpu_parser)
    a=$(median_cpu 'reset_ours; ours -c -u "$name"' cpu_ours -r -u "$name" -F "$img/hot.img")
    row "CPU ms: -r -F one new file, with compile" "$a" - "$p"
    reset_ours; ours -c -u "$name"
    a=$(median_cpu ': >"$aafs/profiles"' cpu_ours -r -u "$name")
    row "CPU ms: -r restart, unchanged, warm cache" "$a" - "$p"
    echo "cache hit (CPU): restart $a ms / cold -c $cold_cpu ms = $(ratio "$a" "$cold_cpu")"
else
    echo "(no perf: CPU figures left out)"
fi
for guest in typical many; do
    reset_ours; ours -c -u "$name"
    label=typical; [ "$guest" = many ] && label=$disks-disk
    echo "peak RSS ($label guest, KiB): aa-virt $(rss_helper), the parser alone $(rss "$w/apparmor_parser.real" $(parser_args))"
done
guest=typical
# A chain libvirt hotplugs: every layer is new, one run per layer; then a
# block job or snapshot re-sends every layer, all already granted.
reset_ours; ours -c -u "$name"; a1=$(chainpass ours); a2=$(chainpass ours)
reset_ref; refrun -c -u "$name"; b1=$(chainpass refrun); b2=$(chainpass refrun)
row "-r -F $layers-layer chain, first time (total)" "$a1" "$b1"
row "-r -F $layers-layer chain, re-sent (total)" "$a2" "$b2"
echo "(aa-virt: $(wc -l <"$ours_files/$name.files") lines in .files after the chain)"
