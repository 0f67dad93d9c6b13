#!/bin/sh
# Run libvirt's own tests/virt-aa-helper-test, unchanged, against aa-virt's
# helper mode, and against Debian's own virt-aa-helper for comparison.
#
#   scripts/libvirt-suite.sh [--root DIR] [--fetch-only] [AA_VIRT_BINARY]
#
# The libvirt source matching the installed libvirt-daemon is fetched with
# `apt-get source` (a deb-src entry is derived from the host's existing apt
# sources when there is none) and cached, unpacked, under $LIBVIRT_SRC_CACHE
# (default /var/cache/aa-virt-test/libvirt-src: not under aa-virt's own
# /var/cache/aa-virt, which uninstalling aa-virt may purge), so reruns are quick. Nothing from
# libvirt is ever copied into this repository.
#
# With --root DIR (the Debian 13 chroot of scripts/trixie-chroot.sh), the
# libvirt, the suite, the reference helper and apparmor_parser are those of
# DIR: everything runs inside it (scripts/trixie-chroot.sh run), aa-virt too.
#
# Exit status: 0 when aa-virt passes every case the reference passes and
# fails none; 1 otherwise; 2 when the suite cannot be set up.
set -eu

cache=${LIBVIRT_SRC_CACHE:-/var/cache/aa-virt-test/libvirt-src}
ref=${VIRT_AA_HELPER_REF:-/usr/lib/libvirt/virt-aa-helper}
fetch_only= root=
if [ "${1:-}" = --root ]; then root=${2:?--root needs a directory}; shift 2; fi
if [ "${1:-}" = --fetch-only ]; then fetch_only=1; shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release/aa-virt}

die() { echo "libvirt-suite: $*" >&2; exit 2; }

# Run a command on the host, or inside the chroot with --root; paths given
# to it are the host's minus the root prefix (see inpath).
inroot() {
    if [ -n "$root" ]; then "$here/scripts/trixie-chroot.sh" run "$@"; else "$@"; fi
}
inpath() { echo "${1#"$root"}"; }

# --- the source ------------------------------------------------------------
version=$(inroot dpkg-query -W -f '${Version}' libvirt-daemon 2>/dev/null) ||
    die "libvirt-daemon is not installed${root:+ in $root} (it provides the reference helper)"
upstream=${version#*:}; upstream=${upstream%-*}
src="$cache/libvirt-$upstream"
suite="$src/tests/virt-aa-helper-test"

have_deb_src() {
    grep -rqsE '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

add_deb_src() {
    # One deb-src stanza per existing Debian "deb" stanza (deb822 files) or
    # "deb" line (one-line format), same mirror, same suites: never a
    # hard-coded host.
    out=/etc/apt/sources.list.d/aa-virt-deb-src.sources
    tmp=$(mktemp)
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        case "$f" in *aa-virt-deb-src.sources) continue ;; esac
        awk 'BEGIN{RS=""; ORS="\n\n"}
             /(^|\n)Types:[^\n]*deb/ && /(^|\n)URIs:[^\n]*debian/ {
                 gsub(/(^|\n)Types:[^\n]*/, "\nTypes: deb-src"); sub(/^\n/, "");
                 print }' "$f" >>"$tmp"
    done
    if [ -f /etc/apt/sources.list ]; then
        sed -n 's/^[[:space:]]*deb[[:space:]]\(.*debian.*\)$/deb-src \1/p' \
            /etc/apt/sources.list >"$tmp.list"
        [ -s "$tmp.list" ] && cp "$tmp.list" /etc/apt/sources.list.d/aa-virt-deb-src.list
        rm -f "$tmp.list"
    fi
    [ -s "$tmp" ] && cp "$tmp" "$out"
    rm -f "$tmp"
    have_deb_src || die "could not derive a deb-src entry from /etc/apt/sources.list*"
    echo "libvirt-suite: added deb-src entries derived from the existing apt sources" >&2
}

# Move the source unpacked in $work into the cache as $src.
install_source() {
    dir=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'libvirt-*' | head -n1)
    [ -n "$dir" ] && [ -f "$dir/tests/virt-aa-helper-test" ] ||
        { rm -rf "$work"; die "the unpacked source has no tests/virt-aa-helper-test"; }
    rm -rf "$src"
    mv "$dir" "$src"
    rm -rf "$work"
}

if [ ! -f "$suite" ] && [ -n "$root" ]; then
    # The chroot has a deb-src entry for its own suite: download there, and
    # unpack with the host's dpkg-source (the chroot has no dpkg-dev).
    command -v dpkg-source >/dev/null || die "dpkg-dev is not installed (dpkg-source unpacks the source)"
    mkdir -p "$cache"
    dl=$(mktemp -d "$root/tmp/aa-virt-src.XXXXXX")
    echo "libvirt-suite: fetching the libvirt $version source in $root (apt-get source --download-only)" >&2
    work=$(mktemp -d "$cache/.fetch.XXXXXX")
    if inroot sh -c 'cd "$1" && apt-get source --download-only -qq "libvirt=$2"' sh "$(inpath "$dl")" "$version" >"$dl.log" 2>&1; then
        (cd "$work" && dpkg-source -x "$dl"/libvirt_*.dsc >"$dl.log" 2>&1) ||
            { cat "$dl.log" >&2; rm -rf "$dl" "$dl.log" "$work"; die "dpkg-source -x of libvirt $version failed"; }
    else
        # Some mirrors serve a source package's tarballs but not its .dsc
        # (seen on the build machines' mirror, 2026-12-04). Then fetch the
        # two tarballs with apt's own downloader, checked against the
        # SHA-256 sums of the signed Sources index, and apply Debian's
        # patch series as dpkg-source would.
        echo "libvirt-suite: apt-get source failed ($(grep -m1 '^E:' "$dl.log")); fetching the tarballs by their Sources checksums" >&2
        inroot sh -c '
            cd "$1" || exit 1
            apt-cache showsrc libvirt | awk -v v="$2" "
                /^Version:/ { ok = (\$2 == v) } /^Checksums-Sha256:/ { in_ = ok; next }
                /^[^ ]/ { in_ = 0 } in_ && \$3 ~ /\\.tar\\.[a-z]+$/ { print \$1, \$3 }" >sums
            [ -s sums ] || { echo "no tarballs listed for libvirt=$2"; exit 1; }
            base=$(apt-get source --print-uris -qq "libvirt=$2" | sed -n "s/^.\(http[^ ]*\)\/libvirt_[^/ ]*\.dsc.*/\1/p" | head -n1)
            [ -n "$base" ] || { echo "no source URI for libvirt=$2"; exit 1; }
            while read -r sum file; do
                /usr/lib/apt/apt-helper download-file "$base/$file" "$file" "SHA256:$sum" || exit 1
            done <sums' sh "$(inpath "$dl")" "$version" >"$dl.log" 2>&1 ||
            { cat "$dl.log" >&2; rm -rf "$dl" "$dl.log" "$work"; die "fetching the libvirt $version tarballs failed in $root"; }
        up=${version#*:}; up=${up%-*}
        mkdir -p "$work/libvirt-$up"
        tar -xf "$dl"/libvirt_"$up".orig.tar.* -C "$work/libvirt-$up" --strip-components=1 &&
            tar -xf "$dl"/libvirt_*.debian.tar.* -C "$work/libvirt-$up" ||
            { rm -rf "$dl" "$dl.log" "$work"; die "unpacking the libvirt $version tarballs failed"; }
        if [ -f "$work/libvirt-$up/debian/patches/series" ]; then
            (cd "$work/libvirt-$up" && sed -e 's/#.*//' -e '/^[[:space:]]*$/d' debian/patches/series |
                while read -r patch opts; do patch -s -p1 ${opts:-} <"debian/patches/$patch" || exit 1; done) >"$dl.log" 2>&1 ||
                { cat "$dl.log" >&2; rm -rf "$dl" "$dl.log" "$work"; die "Debian's patch series does not apply to libvirt $up"; }
        fi
    fi
    rm -rf "$dl" "$dl.log"
    install_source
fi
if [ ! -f "$suite" ]; then
    command -v dpkg-source >/dev/null || die "dpkg-dev is not installed (apt-get source needs dpkg-source)"
    have_deb_src || add_deb_src
    apt-get update -qq >&2 || die "apt-get update failed"
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/.fetch.XXXXXX")
    echo "libvirt-suite: fetching the libvirt $version source (apt-get source)" >&2
    (cd "$work" && apt-get source -qq "libvirt=$version" >"$work.log" 2>&1) ||
        { cat "$work.log" >&2; rm -rf "$work" "$work.log"; die "apt-get source libvirt=$version failed"; }
    rm -f "$work.log"
    install_source
fi
[ -n "$fetch_only" ] && { echo "$suite"; exit 0; }

# --- the runs --------------------------------------------------------------
[ -x "$bin" ] || die "no aa-virt binary at $bin (cargo build --release, or pass its path)"
[ -x "$root$ref" ] || die "no reference helper at $root$ref (install libvirt-daemon)"
run=$(mktemp -d "$root/tmp/aa-virt-suite.XXXXXX")
trap 'rm -rf "$run"' EXIT
if [ -n "$root" ]; then
    # Inside the chroot the suite and aa-virt must be inside it too.
    cp "$(readlink -f "$bin")" "$run/virt-aa-helper"
    cp "$suite" "$run/virt-aa-helper-test"
    suite=$run/virt-aa-helper-test
else
    ln -s "$(readlink -f "$bin")" "$run/virt-aa-helper"
fi

# The suite makes a stray fifo relative to the current directory, so each
# run gets its own. -d makes it print every case ("pass" or "FAIL: ...").
runsuite() { # NAME HELPER [ENV=VALUE...]; $hostdev set: with test_hostdev
    name=$1 helper=$2; shift 2
    mkdir -p "$run/$name"
    # Through a pipe: the suite reopens /dev/stdout, which truncates a file.
    { inroot env "$@" sh -c 'cd "$1" && shift && exec sh "$@"' sh "$(inpath "$run/$name")" \
        "$(inpath "$suite")" $hostdev -d "$(inpath "$helper")" 2>&1 &&
        echo 0 >"$run/$name.rc" || echo $? >"$run/$name.rc"; } | cat >"$run/$name.out"
    # One line per case: number, verdict, title.
    # A failed case repeats its title line right after "FAIL: exited with".
    awk '/^  .*:  .--dryrun/ { if (again) { again=0; next }
                               n++; t=$0; sub(/^  /, "", t); sub(/:  .--dryrun.*/, "", t); title[n]=t; next }
         { again=0 }
         /^pass$/ { v[n]="pass" }
         /^FAIL: exited with/ { v[n]="FAIL"; again=1 }
         /^FAIL: missing rule/ { miss[n]=1 }
         END { for (i=1; i<=n; i++) printf "%d\t%s\t%s\n", i, (v[i]==""?"FAIL":v[i]), title[i] }' \
        "$run/$name.out" >"$run/$name.cases"
    p=$(grep -c '	pass	' "$run/$name.cases" || true)
    f=$(grep -c '	FAIL	' "$run/$name.cases" || true)
    echo "$p passed, $f failed"
}

# Where aa-virt differs from the reference on purpose, with the reason.
# The only one: guest names with [ ] { } ? ^ , " * are escaped, not refused
# (AA_VIRT_HELPER_STRICT_NAMES=1 restores the refusal, checked below).
# With test_hostdev, the suite's USB device 002/004 and PCI device
# 0000:00:19.0 are reported as absent (exit 1) when the host does not have
# them, where the reference silently drops the USB device and grants every
# IOMMU group for the PCI one.
intended() {
    case "$1" in
    "-c with invalid domain name char "[!/]) return 0 ;;
    "create hostdev (USB)")
        [ ! -e /dev/bus/usb/002/004 ] ;;
    "create hostdev (PCI)") [ ! -e /sys/bus/pci/devices/0000:00:19.0 ] ;;
    *) return 1 ;;
    esac
}

compare() { # NAME STRICT: every case the reference passes must pass here
    fail=0
    while IFS='	' read -r n verdict title; do
        refv=$(awk -F'\t' -v n="$n" '$1==n {print $2}' "$run/ref.cases")
        [ "$refv" = pass ] || continue
        if [ "$verdict" != pass ]; then
            if [ "$2" = lenient ] && intended "$title"; then
                echo "  intended difference: case $n: $title"
            else
                echo "  REGRESSION: case $n: $title (the reference passes it)"
                fail=1
            fi
        fi
    done <"$run/$1.cases"
    return $fail
}

# The local/ snippet aa-virt ships for running under libvirt's own helper
# profile must compile inside that profile (taken from the same source).
snippet=$here/templates/apparmor.d/local/usr.lib.libvirt.virt-aa-helper.aa-virt
mkdir -p "$run/aa/local"
sed -e 's|@libexecdir@|/usr/lib/libvirt|g' -e 's|@sysconfdir@|/etc|g' \
    "$src/src/security/apparmor/usr.lib.libvirt.virt-aa-helper.in" >"$run/aa/usr.lib.libvirt.virt-aa-helper"
cp "$snippet" "$run/aa/local/usr.lib.libvirt.virt-aa-helper"
if inroot apparmor_parser -Q -K -M /usr/share/apparmor-features/features -I "$(inpath "$run/aa")" -I /etc/apparmor.d \
    -o /dev/null "$(inpath "$run/aa/usr.lib.libvirt.virt-aa-helper")" 2>"$run/aa.err"; then
    echo "templates/apparmor.d/local/usr.lib.libvirt.virt-aa-helper.aa-virt compiles inside libvirt's helper profile ($(inroot apparmor_parser --version | head -n1))"
else
    cat "$run/aa.err"
    echo "FAIL: the local snippet does not compile inside libvirt's helper profile"
    exit 1
fi

hostdev=
echo "libvirt $version tests/virt-aa-helper-test${root:+ (in $root)}, case by case:"
echo "  reference $ref: $(runsuite ref "$ref")"
[ "$(wc -l <"$run/ref.cases")" -gt 50 ] || { cat "$run/ref.out"; die "the reference run did not produce the expected cases"; }
echo "  aa-virt, AA_VIRT_HELPER_STRICT_NAMES=1: $(runsuite strict "$run/virt-aa-helper" AA_VIRT_HELPER_STRICT_NAMES=1)"
echo "  aa-virt, default: $(runsuite ours "$run/virt-aa-helper" AA_VIRT_HELPER_STRICT_NAMES=0)"
rc=0
compare strict strict || rc=1
compare ours lenient || rc=1
ref_cases=$run/ref.cases
hostdev=test_hostdev
echo "with test_hostdev:"
echo "  reference $ref: $(runsuite ref_hd "$ref")"
echo "  aa-virt, default: $(runsuite ours_hd "$run/virt-aa-helper" AA_VIRT_HELPER_STRICT_NAMES=0)"
cp "$run/ref_hd.cases" "$run/ref.cases"
compare ours_hd lenient || rc=1
cp "$ref_cases" "$run/ref.cases" 2>/dev/null || true
if [ "$rc" -ne 0 ]; then
    echo "--- aa-virt transcript ---"
    cat "$run/strict.out"
fi
exit $rc
