#!/bin/bash
# share-extras.sh BIN OUT: what the day-two cases need in the share, built
# on the host (the guests have no network and the image holds no aa-virt):
#
#   OUT/debs/aa-virt-old.deb   version N: `cargo deb --no-build` of this
#                              checkout, carrying BIN (the binary under test)
#   OUT/debs/aa-virt-new.deb   version N+1: the same files, the version bumped
#                              and abstractions/aa-virt-qemu changed (one more
#                              rule, so every libvirt guest's compiled policy
#                              changes), case 75
#   OUT/parsers/debian13/apparmor_parser
#                              Debian 13's apparmor_parser 4.1 (from the
#                              trixie chroot, scripts/trixie-chroot.sh) with
#                              its own loader and libc: it does not run on
#                              Debian 12's glibc 2.36 directly; case 76
#   OUT/parsers/debian12/apparmor_parser
#                              Debian 12's apparmor_parser 3.0.8 (this
#                              Debian 12 host's own), for Debian 13; case 76
#   OUT/features/debian13      Debian 13's kernel feature set (fixture
#                              tests/canary/features-debian13-kernel; case 76
#                              checks it against the running Debian 13 kernel)
#   OUT/features/debian12      Debian 12's features file (fixture
#                              tests/canary/features-debian12), for Debian 13
#
# Progress on stderr; exit status non-zero when something is missing.
set -euo pipefail
bin=${1:?usage: share-extras.sh BIN OUT}
out=${2:?usage: share-extras.sh BIN OUT}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out/debs" "$out/parsers/debian13/lib" "$out/parsers/debian12" "$out/features"

# --- version N and N+1 of the package ---------------------------------------
command -v cargo-deb >/dev/null || { echo "share-extras: cargo-deb is missing (cargo install cargo-deb --locked)" >&2; exit 1; }
make -s -C "$repo" docs-files AA_VIRT_DOCS_BIN="$bin" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$repo" && cargo deb --no-build --no-strip --fast -o "$tmp/cargo.deb") >&2
tree=$tmp/tree
dpkg-deb -R "$tmp/cargo.deb" "$tree"
# cargo-deb packs target/release/aa-virt; the package must carry the binary
# under test (AA_VIRT_BIN, CARGO_TARGET_DIR).
install -m 0755 "$bin" "$tree/usr/bin/aa-virt"
md5s() { (cd "$1" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$1/DEBIAN/md5sums"; }
pack() { md5s "$1"; dpkg-deb --root-owner-group -Zgzip -z1 -b "$1" "$2" >/dev/null; }
pack "$tree" "$out/debs/aa-virt-old.deb"

version=$(sed -n 's/^Version: //p' "$tree/DEBIAN/control")
upstream=${version%-*}
sed -i "s/^Version: .*/Version: $upstream.1-1/" "$tree/DEBIAN/control"
abs=$tree/etc/apparmor.d/abstractions/aa-virt-qemu
cat >> "$abs" <<'RULE'

  # Added by version N+1 (integration-vms, case 75): a rule N does not
  # have, so every libvirt guest's compiled policy changes.
  /var/lib/aa-virt-upgrade-probe r,
RULE
# A package built reproducibly (SOURCE_DATE_EPOCH) carries file times older
# than the host's compiled-policy cache: the cache must not win over it.
touch -d '2020-01-01 00:00:00 UTC' "$abs"
pack "$tree" "$out/debs/aa-virt-new.deb"
echo "share-extras: aa-virt $version and $upstream.1-1 packages" >&2

# --- Debian 13's parser, runnable on Debian 12 ------------------------------
trixie=$("$repo/scripts/trixie-chroot.sh")
libdir=$trixie/usr/lib/x86_64-linux-gnu
p13=$out/parsers/debian13
install -m 0755 "$trixie/usr/sbin/apparmor_parser" "$p13/apparmor_parser.bin"
install -m 0755 "$libdir/ld-linux-x86-64.so.2" "$p13/lib/ld-linux-x86-64.so.2"
install -m 0644 "$libdir/libc.so.6" "$p13/lib/libc.so.6"
missing=$(ldd "$trixie/usr/sbin/apparmor_parser" 2>/dev/null | awk '$1 ~ /^lib/ && $1 != "libc.so.6" { print $1 }' || true)
[ -z "$missing" ] || { echo "share-extras: Debian 13's apparmor_parser needs more than libc: $missing" >&2; exit 1; }
cat > "$p13/apparmor_parser" <<'WRAP'
#!/bin/sh
# Debian 13's apparmor_parser (4.1), run with its own loader and libc: it
# needs glibc 2.38, Debian 12 has 2.36. Made by integration-vms/share-extras.sh.
d=$(dirname "$(readlink -f "$0")")
exec "$d/lib/ld-linux-x86-64.so.2" --library-path "$d/lib" "$d/apparmor_parser.bin" "$@"
WRAP
chmod 0755 "$p13/apparmor_parser"
"$p13/apparmor_parser" --version | head -n 1 >&2

# --- Debian 12's parser, for the reverse check on Debian 13 ------------------
p12=$(command -v apparmor_parser)
"$p12" --version | head -n 1 | grep -q 'version 3\.0\.' ||
    { echo "share-extras: $p12 is not AppArmor 3.0 (Debian 12's): $("$p12" --version | head -n 1)" >&2; exit 1; }
install -m 0755 "$p12" "$out/parsers/debian12/apparmor_parser"

# --- Debian 13's kernel feature set, Debian 12's features file ----------------
cp "$repo/tests/canary/features-debian12" "$out/features/debian12"
cp "$repo/tests/canary/features-debian13-kernel" "$out/features/debian13" 2>/dev/null ||
    echo "share-extras: no tests/canary/features-debian13-kernel yet (case 76 captures it on Debian 13)" >&2
